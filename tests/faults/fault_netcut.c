/* Fault 2: the network between the managers and the broker goes silent
 * without the broker noticing at first, then breaks, then comes back.
 * Traffic goes through a relay (relay.h) the test controls: while a stream
 * of durable events runs, the relay freezes (forwards nothing, keeps the
 * sockets); heart-beats must make both managers give the silent connection
 * up within DETECT_BOUND_MS; then the relay breaks (refuses connections) for
 * a while and is restored. Nothing sent may be lost; listeners resume.
 *
 *   fault_netcut URL
 *
 * The URL gets the transport's shortest heart-beat option (about 1 s), see
 * fast_heartbeat(); $EW_FAULT_DETECT_BOUND_MS overrides the bound (to
 * measure a transport that has none). Not for local://: no network. */
#include "faults.h"

enum { N = 6000, BROKEN_MS = 2000, RESUME_BOUND_MS = 20000 };

static const char *URL;

/* Events of about 4 KB: a publisher streaming into the frozen path fills
 * its socket buffers before its in-flight window, as a busy one would. */
static char BIG_TEXT[4000];

typedef struct stream {
    ew_manager *m;
    ew_event_desc *ev;
    fsends *s;
} stream;

static void *send_stream(void *arg)
{
    stream *st = arg;
    for (size_t i = 0; i < N; i++) {
        fsend_async_text(st->m, st->ev, st->s, i, BIG_TEXT);
        if (i % 200 == 199)
            ewi_sleep_ms(100); /* about 3 s of stream: the cut lands inside it */
    }
    ew_flush(st->m, 120000);
    return NULL;
}

static bool quarter_handled_(void *arg)
{
    flow *f = arg;
    pthread_mutex_lock(&f->t.mu);
    bool ok = f->t.finished >= N / 4;
    pthread_mutex_unlock(&f->t.mu);
    return ok;
}

static void freeze_break_restore_loses_nothing(void **state)
{
    (void)state;
    ftarget tg = ftarget_of(URL);
    assert_false(tg.local);
    int detect_bound = 10000;
    if (getenv("EW_FAULT_DETECT_BOUND_MS"))
        detect_bound = atoi(getenv("EW_FAULT_DETECT_BOUND_MS"));
    /* amqp:// gained its heartbeat_ms option late: without it, the test
     * runs with the default and says so (heartbeat_option=none). */
    const char *hb = fast_heartbeat_supported(&tg);
    fpath path;
    fpath_open(&path, &tg, true, hb);
    print_message("through the relay: %s\n", path.url);

    EV(ev, "FaultNetcut", true);
    flow f;
    flow_init(&f, N);
    fsends s;
    fsends_init(&s, N);
    fcapture cs, cr;
    fcapture_init(&cs);
    fcapture_init(&cr);
    ew_options so = {.on_error = fcapture_error, .error_user = &cs, .send_timeout_ms = 60000,
                     .start_timeout_ms = 20000};
    ew_options ro = so;
    ro.error_user = &cr;
    ew_manager *sender = mgr_new_opts(path.url, "sender", &so);
    ew_manager *recv = mgr_new_opts(path.url, "receiver", &ro);
    flow_listen(recv, &ev, "Count", 4, 0, &f, "receiver");
    assert_int_equal(ew_manager_start(recv), EW_OK);
    assert_int_equal(ew_manager_start(sender), EW_OK);

    stream st = {sender, &ev, &s};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, send_stream, &st), 0);
    bool underway = wait_until(quarter_handled_, &f, 60000);

    /* Silence. Both managers hold connections through the relay. */
    size_t frozen_conns = relay_open_clients(path.main);
    cs.first_disconnect_ms = cr.first_disconnect_ms = 0; /* (no threads report now) */
    int64_t t_freeze = ewi_now_ms();
    fpath_freeze(&path);
    /* Detected: each manager reported its connection lost (the relay cannot
     * tell: a client's FIN waits behind its unsent data in a frozen path). */
    int64_t detect_ms = -1;
    while (ewi_now_ms() - t_freeze < detect_bound) {
        pthread_mutex_lock(&cs.mu);
        int64_t a = cs.first_disconnect_ms;
        pthread_mutex_unlock(&cs.mu);
        pthread_mutex_lock(&cr.mu);
        int64_t b = cr.first_disconnect_ms;
        pthread_mutex_unlock(&cr.mu);
        if (a && b) {
            detect_ms = (a > b ? a : b) - t_freeze;
            break;
        }
        ewi_sleep_ms(20);
    }
    int64_t relay_closed = relay_frozen_all_closed_ms(path.main);
    size_t handled_frozen = tally_total(&f.t);

    /* Then a broken network: connections refused for a while. */
    fpath_break(&path);
    ewi_sleep_ms(BROKEN_MS);
    fpath_restore(&path);
    flow_mark(&f);
    int64_t t_restore = ewi_now_ms();

    bool all = tally_wait_all(&f.t, 90000);
    pthread_join(th, NULL);
    ewi_sleep_ms(300);
    size_t dups = tally_dups(&f.t), distinct = tally_total(&f.t) - dups;
    size_t lost = lost_of(&s, &f), failed = atomic_load(&s.failed);
    int64_t resume = flow_resume_ms(&f);
    bool detect_ok = detect_ms >= 0;
    bool ok = underway && detect_ok && all && lost == 0 && failed == 0 && resume >= 0 &&
              resume <= RESUME_BOUND_MS;
    fault_result("netcut", &tg,
                 "sent=%d handled=%zu lost=%zu duplicated=%zu detect_ms=%lld resume_ms=%lld "
                 "frozen_ms=%lld broken_ms=%d send_failed=%zu heartbeat_option=%s status=%s",
                 N, distinct, lost, dups, (long long)detect_ms, (long long)resume,
                 (long long)(t_restore - t_freeze - BROKEN_MS), BROKEN_MS, failed,
                 hb ? hb : "none", ok ? "pass" : "fail");
    print_message("%zu connections frozen; %zu events handled at the freeze; the relay saw "
                  "them all closed %lld ms after the freeze; %zu connections in all\n",
                  frozen_conns, handled_frozen,
                  (long long)(relay_closed ? relay_closed - t_freeze : -1),
                  relay_accepted(path.main));
    if (!ok)
        print_message("receiver saw:\n%s\nsender saw:\n%s\n", cr.text, cs.text);
    ew_manager_free(sender);
    ew_manager_free(recv);
    fpath_close(&path);
    const char *ls[] = {"Count", NULL};
    cleanup_event(&tg, ev.name, ls);

    /* Freed before the checks: a failure reports no leak of its own. */
    tally_free(&f.t);
    fsends_free(&s);
    assert_true(underway);
    if (!detect_ok)
        fail_msg("%s: the frozen connections were not given up within %d ms "
                 "(heart-beat option: %s)",
                 tg.name, detect_bound, hb ? hb : "none (the transport refuses heartbeat_ms)");
    assert_true(all);
    assert_int_equal(lost, 0);
    assert_int_equal(failed, 0);
    assert_true(resume >= 0 && resume <= RESUME_BOUND_MS);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s URL\n", argv[0]);
        return 2;
    }
    URL = argv[1];
    memset(BIG_TEXT, 'n', sizeof BIG_TEXT - 1);
    support_init(URL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(freeze_break_restore_loses_nothing),
    };
    return cmocka_run_group_tests_name("fault: network cut", tests, NULL, NULL);
}
