/* A three-node RabbitMQ cluster loses the node a service is connected to in
 * the middle of a durable stream, by kill -9.
 *
 *   rmq_cluster_failover CLUSTER_SCRIPT [rabbitmq|stomp|amqp]
 *
 * The scheme (rabbitmq by default) picks the URL: rabbitmq:// on the nodes'
 * AMQP ports, stomp://…?dialect=rabbitmq on their STOMP ports (with
 * amqp_port naming each node's AMQP port for the administration
 * connection), amqp://…?dialect=rabbitmq on their AMQP ports (AMQP 1.0 and
 * the administration's 0-9-1 share them). Each lists the three nodes.
 *
 * The program starts the cluster with CLUSTER_SCRIPT (scripts/brokers/
 * rabbitmq-cluster.sh) and stops it again at the end, also when a check
 * fails (EW_CLUSTER_KEEP=1 leaves it running). A receiver with a competing
 * listener of a durable event and a sender run on the URL with
 * queue_type=quorum; the listener queue must be a quorum queue. The sender streams N events and
 * records each send's outcome by id (ok, in doubt, failed); once half of
 * them are out and some were handled, the node the receiver is connected
 * to is killed, and the second half goes out into the failover. Then:
 *   - the receiver is connected to another node, and handles again;
 *   - every id whose send returned EW_OK is handled at least once (lost 0);
 *   - no id whose send failed other than in doubt is handled;
 *   - duplicates, in-doubt and failed sends, redelivered handlings and the
 *     time without service (kill to the first handling after it) are
 *     reported in a RESULT line. */
#include "faults.h"


enum { N = 6000, NODES = 3, AMQP_BASE = 5681, STOMP_BASE = 61681, STALL_MS = 60000 };

static const char *SCRIPT;
static const char *SCHEME = "rabbitmq";
static char URL[512];
/* Node N's port in the URL is BASE_PORT + N. */
static int BASE_PORT = AMQP_BASE;

/* ---- which node a manager is connected to (from its log) ---------------- */

typedef struct node_log {
    _Atomic int port;      /* the AMQP port of the last node connected to */
    _Atomic int connects;  /* connections made */
    capture cap;           /* warnings and errors, printed on failure */
} node_log;

static void node_log_fn(void *user, ew_log_level level, const char *msg)
{
    node_log *nl = user;
    /* Each transport logs "…: connected to node HOST:PORT (K of N)"; STOMP
     * once per connection, and the consuming one is the receiver's. */
    const char *at = strstr(msg, "connected to node ");
    if (at && strstr(msg, "STOMP publishing connection"))
        at = NULL;
    if (at) {
        const char *colon = strrchr(at, ':');
        const char *paren = strstr(at, " (");
        if (colon && paren && colon < paren) {
            atomic_store(&nl->port, atoi(colon + 1));
            atomic_fetch_add(&nl->connects, 1);
        }
    }
    if (level <= EW_LOG_WARN)
        capture_log(&nl->cap, level, msg);
}

/* The receiver's tally and activity marks. */
static flow F;

/* ---- sends: the outcome of each id -------------------------------------- */

/* 0 pending, else 1 + the ew_err. */
static _Atomic int outcome[N];
static _Atomic size_t completed;
static _Atomic bool half_sent;
/* The sender waits here after the first half until the kill is done. */
static bool killing;
static pthread_mutex_t kill_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t kill_cv = PTHREAD_COND_INITIALIZER;

/* The last failed outcome (monotonic ms): the end of the window in which
 * the broker refused sends. */
static _Atomic int64_t last_failed_ms;

static void send_done(void *user, ew_err err)
{
    atomic_store(&outcome[(uintptr_t)user], 1 + (int)err);
    if (err != EW_OK && err != EW_EINDOUBT)
        atomic_store(&last_failed_ms, ewi_now_ms());
    atomic_fetch_add(&completed, 1);
    /* The end wait watches completions too. */
    pthread_mutex_lock(&F.t.mu);
    pthread_cond_broadcast(&F.t.cv);
    pthread_mutex_unlock(&F.t.mu);
}

typedef struct sender {
    ew_manager *m;
    const ew_event_desc *ev;
} sender;

static void *send_stream(void *arg)
{
    sender *s = arg;
    for (size_t i = 0; i < N; i++) {
        conf_event e = {.id = (int64_t)i, .text = FAULTS_TEXT};
        ew_err rc = ew_send_async(s->m, s->ev, NULL, &e, send_done, (void *)(uintptr_t)i);
        if (rc != EW_OK)
            send_done((void *)(uintptr_t)i, rc); /* the callback never runs then */
        /* A stream, not one burst: the kill lands inside it, and the second
         * half lasts through the failover (about 12 s: RabbitMQ 3.10 takes
         * about 10 s to route to a quorum queue's new leader). */
        if (i < N / 2 ? i % 200 == 199 : i % 25 == 24)
            ewi_sleep_ms(i < N / 2 ? 40 : 100);
        if (i == N / 2 - 1) {
            atomic_store(&half_sent, true);
            pthread_mutex_lock(&kill_mu);
            while (!killing)
                pthread_cond_wait(&kill_cv, &kill_mu);
            pthread_mutex_unlock(&kill_mu);
        }
    }
    ew_flush(s->m, 180000);
    return NULL;
}

/* ---- the receiver -------------------------------------------------------- */

static _Atomic size_t redelivered; /* handlings with attempt > 1 */
/* Handlings whose message carried the quorum queue's x-delivery-count. */
static _Atomic size_t delivery_counted;

/* When the first event sent after the kill (the second half) was handled:
 * the end of the time without service. */
static _Atomic int64_t first_after_kill_ms;

static ew_err count_listener(ew_delivery *d, const void *event, void *user)
{
    if (ew_delivery_attempt(d) > 1)
        atomic_fetch_add(&redelivered, 1);
    if (ew_delivery_header(d, "x-delivery-count"))
        atomic_fetch_add(&delivery_counted, 1);
    ew_err rc = flow_listener(d, event, user);
    int64_t zero = 0;
    if (((const conf_event *)event)->id >= N / 2)
        atomic_compare_exchange_strong(&first_after_kill_ms, &zero, ewi_now_ms());
    return rc;
}

static bool ready_to_kill_(void *arg)
{
    (void)arg;
    return atomic_load(&half_sent) && tally_total(&F.t) >= N / 5;
}

/* Every id sent with EW_OK handled, every send completed (F.t.mu held). */
static bool ok_ones_handled_locked(void)
{
    if (atomic_load(&completed) < N)
        return false;
    for (size_t i = 0; i < N; i++)
        if (atomic_load(&outcome[i]) == 1 + EW_OK && !F.t.seen[i])
            return false;
    return true;
}

/* Waits on the tally's condition (handlings and send completions signal
 * it) until every EW_OK send was handled, or nothing happened for
 * stall_ms. */
static bool wait_ok_ones_or_stall(int stall_ms)
{
    pthread_mutex_lock(&F.t.mu);
    bool ok;
    while (!(ok = ok_ones_handled_locked())) {
        int64_t last = atomic_load(&F.last_ms), mark = atomic_load(&F.mark_ms);
        int64_t until = (last > mark ? last : mark) + stall_ms;
        if (ewi_left_ms(until) <= 0)
            break;
        ewi_cond_wait_until(&F.t.cv, &F.t.mu, until);
    }
    pthread_mutex_unlock(&F.t.mu);
    return ok;
}

/* The type RabbitMQ gives queue q, through node `node`'s rabbitmqctl. */
static bool queue_type_of(int node, const char *q, char *type, size_t len)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s ctl %d list_queues -q --no-table-headers name type 2>&1",
             SCRIPT, node);
    FILE *p = popen(cmd, "r");
    if (!p)
        return false;
    char line[512];
    bool found = false;
    while (fgets(line, sizeof line, p)) {
        char name[256], t[64];
        if (sscanf(line, "%255s %63s", name, t) == 2 && strcmp(name, q) == 0) {
            snprintf(type, len, "%s", t);
            found = true;
        }
    }
    pclose(p);
    return found;
}

static void failover_loses_nothing(void **state)
{
    (void)state;
    ftarget tg = ftarget_of(URL);
    snprintf(tg.name, sizeof tg.name, "%s-rabbitmq-cluster", SCHEME);
    EV(ev, "ClusterFailover", true);
    flow_init(&F, N);
    node_log lr = {0}, ls = {0};
    capture_init(&lr.cap);
    capture_init(&ls.cap);
    fcapture cr, cs;
    fcapture_init(&cr);
    fcapture_init(&cs);
    /* Sends may wait out the failover: a reconnect and the queue's new
     * leader. */
    ew_options so = {.on_error = fcapture_error, .error_user = &cs, .log = node_log_fn,
                     .log_user = &ls, .log_level = EW_LOG_INFO, .send_timeout_ms = 60000,
                     .start_timeout_ms = 20000};
    ew_options ro = {.on_error = fcapture_error, .error_user = &cr, .log = node_log_fn,
                     .log_user = &lr, .log_level = EW_LOG_INFO, .start_timeout_ms = 20000};
    ew_manager *recv = mgr_new_opts(URL, "receiver", &ro);
    ew_manager *snd = mgr_new_opts(URL, "sender", &so);
    ew_listener_desc ld = {.event = &ev, .name = "Count", .concurrency = 4};
    assert_int_equal(ew_listen(recv, &ld, count_listener, tref(&F.t, "receiver")), EW_OK);
    assert_int_equal(ew_manager_start(recv), EW_OK);
    assert_int_equal(ew_manager_start(snd), EW_OK);
    int first_port = atomic_load(&lr.port);
    if (first_port < BASE_PORT + 1 || first_port > BASE_PORT + NODES)
        fail_msg("the receiver logged no node it connected to (port %d)", first_port);
    int killed = first_port - BASE_PORT;

    /* queue_type=quorum made the listener queue a quorum queue. */
    char qname[EW_MAX_QUEUE_NAME], qtype[64] = "";
    snprintf(qname, sizeof qname, "%s::Count", ev_name);
    bool typed = queue_type_of(killed, qname, qtype, sizeof qtype);
    if (!typed || strcmp(qtype, "quorum") != 0)
        fail_msg("queue %s: type '%s' (expected quorum)", qname, typed ? qtype : "not found");

    sender s = {snd, &ev};
    pthread_t th;
    int64_t t0 = ewi_now_ms();
    assert_int_equal(pthread_create(&th, NULL, send_stream, &s), 0);
    bool underway = wait_until(ready_to_kill_, NULL, 120000);
    size_t at_kill = tally_total(&F.t);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s kill %d >/dev/null 2>&1", SCRIPT, killed);
    int connects_before = atomic_load(&lr.connects);
    int64_t k0 = ewi_now_ms();
    int krc = system(cmd);
    flow_mark(&F);
    int64_t kill_ms = ewi_now_ms() - k0;
    pthread_mutex_lock(&kill_mu);
    killing = true;
    pthread_cond_signal(&kill_cv);
    pthread_mutex_unlock(&kill_mu);
    print_message("node %d (port %d) killed in %lld ms (rc %d) after %zu handlings\n", killed,
                  first_port, (long long)kill_ms, krc, at_kill);

    bool all = wait_ok_ones_or_stall(STALL_MS);
    pthread_join(th, NULL);
    /* Late redeliveries still count as duplicates. */
    all = all && wait_ok_ones_or_stall(STALL_MS);
    size_t ok = 0, indoubt = 0, failed = 0, pending = 0, indoubt_arrived = 0,
           failed_arrived = 0, lost = 0;
    pthread_mutex_lock(&F.t.mu);
    for (size_t i = 0; i < N; i++) {
        int o = atomic_load(&outcome[i]);
        bool seen = F.t.seen[i] > 0;
        if (o == 0) {
            pending++;
        } else if (o == 1 + EW_OK) {
            ok++;
            lost += !seen;
        } else if (o == 1 + EW_EINDOUBT) {
            indoubt++;
            indoubt_arrived += seen;
        } else {
            failed++;
            failed_arrived += seen;
        }
    }
    pthread_mutex_unlock(&F.t.mu);
    size_t dups = tally_dups(&F.t), distinct = tally_total(&F.t) - dups;
    int64_t lf = atomic_load(&last_failed_ms);
    int64_t refused_until = lf ? lf - atomic_load(&F.mark_ms) : 0;
    int64_t first = atomic_load(&first_after_kill_ms);
    int64_t resume = first ? first - atomic_load(&F.mark_ms) : -1;
    /* The codes of the sends that failed, for the report. */
    char codes[512] = "";
    size_t by_code[64] = {0};
    for (size_t i = 0; i < N; i++) {
        int o = atomic_load(&outcome[i]);
        if (o > 1 + EW_OK && o != 1 + EW_EINDOUBT && o - 1 < 64)
            by_code[o - 1]++;
    }
    for (int c = 0; c < 64; c++)
        if (by_code[c])
            snprintf(codes + strlen(codes), sizeof codes - strlen(codes), "%s%s:%zu",
                     codes[0] ? "," : "", err_name((ew_err)c), by_code[c]);
    int now_port = atomic_load(&lr.port);
    bool moved = atomic_load(&lr.connects) > connects_before && now_port != first_port;
    bool ok_all = underway && krc == 0 && all && lost == 0 && pending == 0 && moved &&
                  resume >= 0 && cr.disconnects >= 1 && failed_arrived == 0;
    fault_result("cluster-failover", &tg,
                 "scheme=%s nodes=3 queue_type=quorum killed=node%d sent=%d ok=%zu indoubt=%zu "
                 "indoubt_arrived=%zu failed=%zu failed_arrived=%zu handled=%zu lost=%zu "
                 "duplicated=%zu redelivered=%zu delivery_counted=%zu no_service_ms=%lld "
                 "failed_until_ms=%lld "
                 "handled_at_kill=%zu "
                 "moved_to=node%d failed_codes=%s total_ms=%lld status=%s",
                 SCHEME, killed, N, ok, indoubt, indoubt_arrived, failed, failed_arrived, distinct,
                 lost, dups, (size_t)atomic_load(&redelivered),
                 (size_t)atomic_load(&delivery_counted), (long long)resume,
                 (long long)refused_until, at_kill,
                 now_port - BASE_PORT, codes[0] ? codes : "none", (long long)(ewi_now_ms() - t0),
                 ok_all ? "pass" : "fail");
    if (!ok_all) {
        if (!underway)
            print_message("the stream never got under way (%zu handled)\n", at_kill);
        if (krc != 0)
            print_message("'%s' failed with %d\n", cmd, krc);
        if (!all)
            print_message("no progress for %d ms with sends or handlings missing\n", STALL_MS);
        if (!moved)
            print_message("the receiver did not connect to another node (port %d, then %d)\n",
                          first_port, now_port);
        if (resume < 0)
            print_message("nothing was handled after the kill\n");
        if (cr.disconnects < 1)
            print_message("the receiver reported no lost connection\n");
        if (failed_arrived)
            print_message("%zu sends that failed (not in doubt: %s) arrived\n", failed_arrived,
                          codes);
        if (lost || pending)
            print_message("%zu ids sent with EW_OK never handled, %zu sends pending\n", lost,
                          pending);
        /* What the cluster says of the queue now, through the node the
         * receiver moved to. */
        snprintf(cmd, sizeof cmd,
                 "%s ctl %d list_queues -q name type leader members online messages 2>&1",
                 SCRIPT, now_port > BASE_PORT ? now_port - BASE_PORT : killed % NODES + 1);
        print_message("$ %s\n", cmd);
        fflush(stdout);
        if (system(cmd) != 0)
            print_message("(failed)\n");
        print_message("receiver reports:\n%s\nreceiver log:\n%s\nsender reports:\n%s\n"
                      "sender log:\n%s\n",
                      cr.text, lr.cap.text, cs.text, ls.cap.text);
    }
    ew_manager_free(snd);
    ew_manager_free(recv);
    tally_free(&F.t);
    assert_true(ok_all);
}

int main(int argc, char **argv)
{
    if (argc != 2 && argc != 3) {
        fprintf(stderr, "usage: %s CLUSTER_SCRIPT [rabbitmq|stomp|amqp]\n", argv[0]);
        return 2;
    }
    SCRIPT = argv[1];
    SCHEME = argc == 3 ? argv[2] : "rabbitmq";
    const char *extra = "";
    char stomp_extra[128];
    if (strcmp(SCHEME, "stomp") == 0) {
        BASE_PORT = STOMP_BASE;
        snprintf(stomp_extra, sizeof stomp_extra, "&dialect=rabbitmq&amqp_port=%d,%d,%d",
                 AMQP_BASE + 1, AMQP_BASE + 2, AMQP_BASE + 3);
        extra = stomp_extra;
    } else if (strcmp(SCHEME, "amqp") == 0) {
        extra = "&dialect=rabbitmq";
    } else if (strcmp(SCHEME, "rabbitmq") != 0) {
        fprintf(stderr, "%s: scheme '%s' is not rabbitmq, stomp or amqp\n", argv[0], SCHEME);
        return 2;
    }
    snprintf(URL, sizeof URL,
             "%s://guest:guest@127.0.0.1:%d,127.0.0.1:%d,127.0.0.1:%d/?queue_type=quorum%s",
             SCHEME, BASE_PORT + 1, BASE_PORT + 2, BASE_PORT + 3, extra);
    support_init(URL);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s start", SCRIPT);
    int64_t t0 = ewi_now_ms();
    int rc = system(cmd);
    int64_t start_ms = ewi_now_ms() - t0;
    printf("cluster start: %lld ms (rc %d)\n", (long long)start_ms, rc);
    fflush(stdout);
    int failed = 1;
    if (rc == 0) {
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(failover_loses_nothing),
        };
        char group[64];
        snprintf(group, sizeof group, "cluster: failover on %s://", SCHEME);
        failed = cmocka_run_group_tests_name(group, tests, NULL, NULL);
    } else {
        fprintf(stderr, "'%s' failed (rc %d): no cluster to test\n", cmd, rc);
    }
    /* EW_CLUSTER_KEEP=1 leaves the cluster running, to look at it. */
    const char *keep = getenv("EW_CLUSTER_KEEP");
    snprintf(cmd, sizeof cmd, "%s stop >/dev/null", SCRIPT);
    if (keep && strcmp(keep, "1") == 0)
        fprintf(stderr, "EW_CLUSTER_KEEP=1: the cluster still runs (%s stop)\n", SCRIPT);
    else if (system(cmd) != 0)
        fprintf(stderr, "'%s' failed: the cluster may still run\n", cmd);
    return failed ? 1 : 0;
}
