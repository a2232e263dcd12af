/* Fault 6: the broker is absent when the manager starts.
 *  a) Nothing ever listens on the port: ew_manager_start retries, then
 *     fails with EW_ECONNECT after start_timeout_ms, and the log says where
 *     it tried to connect.
 *  b) The broker appears (a relay starts listening) a while after start
 *     began: start succeeds then, and events flow.
 * The shared brokers are not disturbed: the absent broker is a port where
 * nothing listens, then a relay to the real one.
 *
 *   fault_absent_broker URL
 *
 * Not for local://: its broker is inside the process, never absent. */
#include "faults.h"

enum { FAIL_TIMEOUT_MS = 3000, SLACK_MS = 3000, APPEAR_MS = 2000, N = 50 };

static const char *URL;

typedef struct appear {
    fpath *path;
    int64_t up_at;
} appear;

static void *appear_later(void *arg)
{
    appear *a = arg;
    ewi_sleep_ms(APPEAR_MS);
    fpath_restore(a->path);
    a->up_at = ewi_now_ms();
    return NULL;
}

/* ew_manager_start on a thread, so that a start that never returns is
 * reported as a hang (with a RESULT line) instead of a ctest timeout. */
typedef struct starter {
    ew_manager *m;
    ew_err rc;
    _Atomic bool done;
} starter;

static void *start_thread(void *arg)
{
    starter *s = arg;
    s->rc = ew_manager_start(s->m);
    atomic_store(&s->done, true);
    return NULL;
}

/* ew_manager_start(m) bounded by limit_ms; false when it hung. */
static bool start_bounded(ew_manager *m, int limit_ms, ew_err *rc, const ftarget *tg,
                          const char *what)
{
    starter *s = calloc(1, sizeof *s);
    assert_non_null(s);
    s->m = m;
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, start_thread, s), 0);
    int64_t deadline = ewi_now_ms() + limit_ms;
    while (!atomic_load(&s->done) && ewi_left_ms(deadline) > 0)
        ewi_sleep_ms(10);
    if (!atomic_load(&s->done)) {
        /* The thread and the manager are left behind: the process ends. */
        fault_result("absent-broker", tg, "start_error=HANG status=fail");
        fail_msg("%s: ew_manager_start did not return within %d ms", what, limit_ms);
    }
    pthread_join(th, NULL);
    *rc = s->rc;
    free(s);
    return true;
}

static void absent_broker_fails_in_time_then_start_waits_for_it(void **state)
{
    (void)state;
    ftarget tg = ftarget_of(URL);
    assert_false(tg.local);
    EV(ev, "FaultAbsent", true);

    /* a) Never there: relays that stay down hold ports where connects are
     * refused (no other socket can take them meanwhile). */
    fpath never;
    fpath_open(&never, &tg, false, NULL);
    int port = relay_port(never.main);
    const char *url = never.url;
    fcapture ca;
    fcapture_init(&ca);
    ew_options oa = {.on_error = fcapture_error, .error_user = &ca, .log = fcapture_log,
                     .log_user = &ca, .start_timeout_ms = FAIL_TIMEOUT_MS};
    ew_manager *m = mgr_new_opts(url, "absent", &oa);
    flow fa;
    flow_init(&fa, 1);
    flow_listen(m, &ev, "Count", 1, 0, &fa, "absent");
    int64_t t0 = ewi_now_ms();
    ew_err rc_a;
    start_bounded(m, FAIL_TIMEOUT_MS + SLACK_MS + 10000, &rc_a, &tg, "a) no broker");
    int64_t fail_ms = ewi_now_ms() - t0;
    char port_text[16];
    snprintf(port_text, sizeof port_text, "%d", port);
    bool names_port = fcapture_has(&ca, port_text);
    char text_a[1024];
    fcapture_copy(&ca, text_a, sizeof text_a);
    ew_manager_free(m);
    tally_free(&fa.t);
    fpath_close(&never);

    /* b) There after APPEAR_MS. */
    fpath path;
    fpath_open(&path, &tg, false, NULL);
    fcapture cb;
    fcapture_init(&cb);
    ew_options ob = {.on_error = fcapture_error, .error_user = &cb, .start_timeout_ms = 20000};
    m = mgr_new_opts(path.url, "late", &ob);
    flow fb;
    flow_init(&fb, N);
    flow_listen(m, &ev, "Count", 1, 0, &fb, "late");
    appear ap = {.path = &path};
    pthread_t th;
    int64_t t1 = ewi_now_ms();
    assert_int_equal(pthread_create(&th, NULL, appear_later, &ap), 0);
    ew_err rc_b;
    start_bounded(m, 30000, &rc_b, &tg, "b) late broker");
    int64_t start_ms = ewi_now_ms() - t1;
    pthread_join(th, NULL);
    int64_t after_up_ms = ewi_now_ms() - ap.up_at;
    size_t send_failed = 0;
    if (rc_b == EW_OK)
        for (int64_t i = 0; i < N; i++)
            send_failed += ew_send(m, &ev, &(conf_event){.id = i, .text = "x"}) != EW_OK;
    bool all = rc_b == EW_OK && tally_wait_all(&fb.t, 20000);
    size_t dups = tally_dups(&fb.t), distinct = tally_total(&fb.t) - dups;

    bool a_ok = rc_a == EW_ECONNECT && fail_ms >= FAIL_TIMEOUT_MS * 9 / 10 &&
                fail_ms <= FAIL_TIMEOUT_MS + SLACK_MS && names_port;
    bool b_ok = rc_b == EW_OK && start_ms >= APPEAR_MS && all && send_failed == 0;
    fault_result("absent-broker", &tg,
                 "sent=%d handled=%zu lost=%zu duplicated=%zu start_error=%s fail_ms=%lld "
                 "start_timeout_ms=%d appear_ms=%d start_ms=%lld resume_ms=%lld status=%s",
                 N, distinct, (size_t)N - distinct, dups, err_name(rc_a),
                 (long long)fail_ms, FAIL_TIMEOUT_MS, APPEAR_MS, (long long)start_ms,
                 (long long)(start_ms - APPEAR_MS), a_ok && b_ok ? "pass" : "fail");
    print_message("a) start without a broker: %s after %lld ms; the log said:\n%s\n",
                  ew_strerror(rc_a), (long long)fail_ms, text_a);
    print_message("b) broker there after %d ms: start %s after %lld ms (%lld ms after it "
                  "appeared)\n",
                  APPEAR_MS, ew_strerror(rc_b), (long long)start_ms, (long long)after_up_ms);
    if (!b_ok)
        print_message("b) saw:\n%s\n", cb.text);
    ew_manager_free(m);
    fpath_close(&path);
    const char *ls[] = {"Count", NULL};
    cleanup_event(&tg, ev.name, ls);

    /* Freed before the checks: a failure reports no leak of its own. */
    tally_free(&fb.t);
    if (rc_a != EW_ECONNECT)
        fail_msg("start without a broker returned %s, want %s", ew_strerror(rc_a),
                 ew_strerror(EW_ECONNECT));
    if (fail_ms < FAIL_TIMEOUT_MS * 9 / 10 || fail_ms > FAIL_TIMEOUT_MS + SLACK_MS)
        fail_msg("start without a broker gave up after %lld ms; start_timeout_ms is %d",
                 (long long)fail_ms, FAIL_TIMEOUT_MS);
    if (!names_port)
        fail_msg("the start failure did not name port %d", port);
    assert_int_equal(rc_b, EW_OK);
    assert_true(start_ms >= APPEAR_MS);
    assert_int_equal(send_failed, 0);
    assert_true(all);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s URL\n", argv[0]);
        return 2;
    }
    URL = argv[1];
    support_init(URL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(absent_broker_fails_in_time_then_start_waits_for_it),
    };
    return cmocka_run_group_tests_name("fault: broker absent at start", tests, NULL, NULL);
}
