/* An Artemis primary/backup pair with replication loses its primary, by
 * kill -9, in the middle of a durable stream; the service fails over to the
 * backup through a URL that names both brokers.
 *
 *   artemis_failover PAIR_SCRIPT
 *
 * For each of amqp:// and stomp:// (dialect artemis) the program starts a
 * fresh pair with PAIR_SCRIPT (scripts/brokers/artemis-pair.sh: primary on
 * 5701/61701, backup on 5711/61711) and stops it at the end, also when a
 * check fails (EW_CLUSTER_KEEP=1 leaves it running). A receiver with a
 * competing listener of a durable event and a sender stream N events and
 * record each send's outcome by id (ok, in doubt, failed); once half of
 * them are out and some were handled, the primary is killed, and the second
 * half goes out into the failover. Then:
 *   - events sent after the kill are handled (the backup serves both);
 *   - every id whose send returned EW_OK is handled at least once (lost 0);
 *   - no id whose send failed other than in doubt is handled;
 *   - duplicates, in-doubt and failed sends and the time without service
 *     (kill to the first handling of an event sent after it) are reported
 *     in a RESULT line. */
#include "faults.h"


enum { N = 4000, STALL_MS = 60000 };

static const char *SCRIPT;

static flow F;

/* 0 pending, else 1 + the ew_err. */
static _Atomic int outcome[N];
static _Atomic size_t completed;
static _Atomic bool half_sent;
/* The sender waits after the first half until the kill is done. */
static bool killing;
static pthread_mutex_t kill_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t kill_cv = PTHREAD_COND_INITIALIZER;
static _Atomic int64_t first_after_kill_ms;

static void send_done(void *user, ew_err err)
{
    atomic_store(&outcome[(uintptr_t)user], 1 + (int)err);
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
        /* A stream, not one burst: the second half lasts through the
         * failover (the backup activates within about a second). */
        if (i % 100 == 99)
            ewi_sleep_ms(i < N / 2 ? 20 : 50);
        if (i == N / 2 - 1) {
            atomic_store(&half_sent, true);
            pthread_mutex_lock(&kill_mu);
            while (!killing)
                pthread_cond_wait(&kill_cv, &kill_mu);
            pthread_mutex_unlock(&kill_mu);
        }
    }
    ew_flush(s->m, 120000);
    return NULL;
}

static ew_err count_listener(ew_delivery *d, const void *event, void *user)
{
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

/* Every send completed and every id sent with EW_OK handled (F.t.mu held). */
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

static int run_script(const char *args)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s %s >/dev/null 2>&1", SCRIPT, args);
    return system(cmd);
}

/* A fresh pair for each case: the last one ended with its primary dead. */
static int pair_up(void **state)
{
    (void)state;
    run_script("stop");
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s start", SCRIPT);
    int64_t t0 = ewi_now_ms();
    int rc = system(cmd);
    printf("pair start: %lld ms (rc %d)\n", (long long)(ewi_now_ms() - t0), rc);
    fflush(stdout);
    return rc == 0 ? 0 : -1;
}

static void reset(void)
{
    for (size_t i = 0; i < N; i++)
        atomic_store(&outcome[i], 0);
    atomic_store(&completed, 0);
    atomic_store(&half_sent, false);
    atomic_store(&first_after_kill_ms, 0);
    killing = false;
}

static void failover(const char *url, const char *label)
{
    reset();
    ftarget tg = ftarget_of(url);
    snprintf(tg.name, sizeof tg.name, "%s", label);
    EV(ev, "ArtemisFailover", true);
    flow_init(&F, N);
    capture lr, ls;
    capture_init(&lr);
    capture_init(&ls);
    fcapture cr, cs;
    fcapture_init(&cr);
    fcapture_init(&cs);
    ew_options so = {.on_error = fcapture_error, .error_user = &cs, .log = capture_log,
                     .log_user = &ls, .send_timeout_ms = 60000, .start_timeout_ms = 20000};
    ew_options ro = {.on_error = fcapture_error, .error_user = &cr, .log = capture_log,
                     .log_user = &lr, .start_timeout_ms = 20000};
    ew_manager *recv = mgr_new_opts(url, "receiver", &ro);
    ew_manager *snd = mgr_new_opts(url, "sender", &so);
    ew_listener_desc ld = {.event = &ev, .name = "Count", .concurrency = 4};
    assert_int_equal(ew_listen(recv, &ld, count_listener, tref(&F.t, "receiver")), EW_OK);
    assert_int_equal(ew_manager_start(recv), EW_OK);
    assert_int_equal(ew_manager_start(snd), EW_OK);

    sender s = {snd, &ev};
    pthread_t th;
    int64_t t0 = ewi_now_ms();
    assert_int_equal(pthread_create(&th, NULL, send_stream, &s), 0);
    bool underway = wait_until(ready_to_kill_, NULL, 120000);
    size_t at_kill = tally_total(&F.t);
    int64_t k0 = ewi_now_ms();
    int krc = run_script("kill primary");
    flow_mark(&F);
    int64_t kill_ms = ewi_now_ms() - k0;
    pthread_mutex_lock(&kill_mu);
    killing = true;
    pthread_cond_signal(&kill_cv);
    pthread_mutex_unlock(&kill_mu);
    print_message("%s: primary killed in %lld ms (rc %d) after %zu handlings\n", label,
                  (long long)kill_ms, krc, at_kill);

    bool all = wait_ok_ones_or_stall(STALL_MS);
    pthread_join(th, NULL);
    /* Late redeliveries still count as duplicates. */
    all = all && wait_ok_ones_or_stall(STALL_MS);
    size_t ok = 0, indoubt = 0, failed = 0, pending = 0, indoubt_arrived = 0,
           failed_arrived = 0, lost = 0;
    char codes[512] = "";
    size_t by_code[64] = {0};
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
            if (o - 1 < 64)
                by_code[o - 1]++;
        }
    }
    pthread_mutex_unlock(&F.t.mu);
    for (int c = 0; c < 64; c++)
        if (by_code[c])
            snprintf(codes + strlen(codes), sizeof codes - strlen(codes), "%s%s:%zu",
                     codes[0] ? "," : "", err_name((ew_err)c), by_code[c]);
    size_t dups = tally_dups(&F.t), distinct = tally_total(&F.t) - dups;
    int64_t first = atomic_load(&first_after_kill_ms);
    int64_t resume = first ? first - atomic_load(&F.mark_ms) : -1;
    bool ok_all = underway && krc == 0 && all && lost == 0 && pending == 0 && resume >= 0 &&
                  cr.disconnects >= 1 && failed_arrived == 0;
    fault_result("artemis-failover", &tg,
                 "pair=replication killed=primary sent=%d ok=%zu indoubt=%zu "
                 "indoubt_arrived=%zu failed=%zu failed_arrived=%zu handled=%zu lost=%zu "
                 "duplicated=%zu no_service_ms=%lld handled_at_kill=%zu failed_codes=%s "
                 "total_ms=%lld status=%s",
                 N, ok, indoubt, indoubt_arrived, failed, failed_arrived, distinct, lost, dups,
                 (long long)resume, at_kill, codes[0] ? codes : "none",
                 (long long)(ewi_now_ms() - t0), ok_all ? "pass" : "fail");
    if (!ok_all) {
        if (!underway)
            print_message("the stream never got under way (%zu handled)\n", at_kill);
        if (krc != 0)
            print_message("'%s kill primary' failed with %d\n", SCRIPT, krc);
        if (!all)
            print_message("no progress for %d ms with sends or handlings missing\n", STALL_MS);
        if (resume < 0)
            print_message("no event sent after the kill was handled\n");
        if (cr.disconnects < 1)
            print_message("the receiver reported no lost connection\n");
        if (failed_arrived)
            print_message("%zu sends that failed (not in doubt: %s) arrived\n", failed_arrived,
                          codes);
        if (lost || pending)
            print_message("%zu ids sent with EW_OK never handled, %zu sends pending\n", lost,
                          pending);
        print_message("receiver reports:\n%s\nreceiver log:\n%s\nsender reports:\n%s\n"
                      "sender log:\n%s\n",
                      cr.text, lr.text, cs.text, ls.text);
    }
    ew_manager_free(snd);
    ew_manager_free(recv);
    tally_free(&F.t);
    assert_true(ok_all);
}

static void amqp_fails_over(void **state)
{
    (void)state;
    failover("amqp://artemis:artemis@127.0.0.1:5701,127.0.0.1:5711/?dialect=artemis",
             "amqp-artemis-pair");
}

static void stomp_fails_over(void **state)
{
    (void)state;
    failover("stomp://artemis:artemis@127.0.0.1:61701,127.0.0.1:61711/?dialect=artemis",
             "stomp-artemis-pair");
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s PAIR_SCRIPT\n", argv[0]);
        return 2;
    }
    SCRIPT = argv[1];
    support_init("amqp://artemis:artemis@127.0.0.1:5701,127.0.0.1:5711/?dialect=artemis");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(amqp_fails_over, pair_up),
        cmocka_unit_test_setup(stomp_fails_over, pair_up),
    };
    int failed = cmocka_run_group_tests_name("artemis: primary/backup failover", tests, NULL,
                                             NULL);
    /* EW_CLUSTER_KEEP=1 leaves the pair running, to look at it. */
    const char *keep = getenv("EW_CLUSTER_KEEP");
    if (keep && strcmp(keep, "1") == 0)
        fprintf(stderr, "EW_CLUSTER_KEEP=1: the pair still runs (%s stop)\n", SCRIPT);
    else if (run_script("stop") != 0)
        fprintf(stderr, "'%s stop' failed: the pair may still run\n", SCRIPT);
    return failed ? 1 : 0;
}
