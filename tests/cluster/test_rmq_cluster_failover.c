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
#include "failover.h"


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
    /* A stream, not one burst: the second half lasts through the failover
     * (about 12 s: RabbitMQ 3.10 takes about 10 s to route to a quorum
     * queue's new leader). */
    fo_init(N, (fo_pacing){{200, 25}, {40, 100}});
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
    assert_int_equal(ew_listen(recv, &ld, fo_listener, fo_tref()), EW_OK);
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

    int64_t t0 = ewi_now_ms();
    fo_send_start(snd, &ev);
    bool underway = fo_wait_ready_to_kill(120000);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s kill %d >/dev/null 2>&1", SCRIPT, killed);
    int connects_before = atomic_load(&lr.connects);
    int64_t k0 = ewi_now_ms();
    int krc = system(cmd);
    fo_killed();
    print_message("node %d (port %d) killed in %lld ms (rc %d)\n", killed, first_port,
                  (long long)(ewi_now_ms() - k0), krc);

    bool all = fo_wait_all(STALL_MS);
    fo_send_join();
    /* Late redeliveries still count as duplicates. */
    all = all && fo_wait_all(STALL_MS);
    fo_tally r;
    fo_count(&r);
    int now_port = atomic_load(&lr.port);
    bool moved = atomic_load(&lr.connects) > connects_before && now_port != first_port;
    bool ok_all = underway && krc == 0 && all && r.lost == 0 && r.pending == 0 && moved &&
                  r.no_service_ms >= 0 && cr.disconnects >= 1 && r.failed_arrived == 0;
    fault_result("cluster-failover", &tg,
                 "scheme=%s nodes=3 queue_type=quorum killed=node%d sent=%d ok=%zu indoubt=%zu "
                 "indoubt_arrived=%zu failed=%zu failed_arrived=%zu handled=%zu lost=%zu "
                 "duplicated=%zu redelivered=%zu delivery_counted=%zu no_service_ms=%lld "
                 "failed_until_ms=%lld handled_at_kill=%zu moved_to=node%d failed_codes=%s "
                 "total_ms=%lld status=%s",
                 SCHEME, killed, N, r.ok, r.indoubt, r.indoubt_arrived, r.failed,
                 r.failed_arrived, r.handled, r.lost, r.duplicated, r.redelivered,
                 r.delivery_counted, (long long)r.no_service_ms, (long long)r.failed_until_ms,
                 r.handled_at_kill, now_port - BASE_PORT, r.codes,
                 (long long)(ewi_now_ms() - t0), ok_all ? "pass" : "fail");
    if (!ok_all) {
        fo_explain(&r, underway, krc, all, STALL_MS);
        if (!moved)
            print_message("the receiver did not connect to another node (port %d, then %d)\n",
                          first_port, now_port);
        if (cr.disconnects < 1)
            print_message("the receiver reported no lost connection\n");
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
    fo_free();
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
