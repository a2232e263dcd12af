/* Fault 7: sends during an outage. The sender reaches the broker through a
 * relay that breaks (connections closed, new ones refused); the receiver is
 * connected directly. A send during the outage waits up to send_timeout_ms,
 * then fails with an error a user can read (return code, log line naming
 * the event). After the relay is restored sends succeed again, every send
 * reported successful is handled, and a send reported failed was not
 * delivered (ew_send's contract).
 *
 *   fault_send_outage URL
 *
 * Not for local://: there is no network to lose. */
#include "faults.h"

enum { N = 400, SEND_TIMEOUT_MS = 3000, SLACK_MS = 3000 };

static const char *URL;

static void sends_during_outage_fail_bounded_and_lose_nothing(void **state)
{
    (void)state;
    ftarget tg = ftarget_of(URL);
    assert_false(tg.local);
    fpath path;
    fpath_open(&path, &tg, true, NULL);

    EV(ev, "FaultOutage", true);
    flow f;
    flow_init(&f, N);
    fsends s;
    fsends_init(&s, N);
    fcapture cs, cr;
    fcapture_init(&cs);
    fcapture_init(&cr);
    ew_options so = {.on_error = fcapture_error, .error_user = &cs, .log = fcapture_log,
                     .log_user = &cs, .send_timeout_ms = SEND_TIMEOUT_MS,
                     .start_timeout_ms = 20000};
    ew_options ro = {.on_error = fcapture_error, .error_user = &cr, .start_timeout_ms = 20000};
    ew_manager *recv = mgr_new_opts(URL, "receiver", &ro);
    ew_manager *sender = mgr_new_opts(path.url, "sender", &so);
    flow_listen(recv, &ev, "Count", 2, 0, &f, "receiver");
    assert_int_equal(ew_manager_start(recv), EW_OK);
    assert_int_equal(ew_manager_start(sender), EW_OK);

    /* Before: plain sends. */
    size_t before_failed = 0;
    for (size_t i = 0; i < 100; i++) {
        conf_event e = {.id = (int64_t)i, .text = "before"};
        ew_err rc = ew_send(sender, &ev, &e);
        atomic_store(&s.state[i], rc == EW_OK ? 1 : 2);
        before_failed += rc != EW_OK;
    }

    /* The outage: a synchronous send waits its bound, then fails. */
    fpath_break(&path);
    fcapture_clear(&cs);
    int64_t t0 = ewi_now_ms();
    conf_event e100 = {.id = 100, .text = "during"};
    ew_err sync_rc = ew_send(sender, &ev, &e100);
    int64_t sync_ms = ewi_now_ms() - t0;
    atomic_store(&s.state[100], sync_rc == EW_OK ? 1 : 2);
    bool sync_logged = fcapture_has(&cs, ev.name);
    char sync_text[512];
    fcapture_copy(&cs, sync_text, sizeof sync_text);

    /* Asynchronous ones: each completes, with an error, by its bound. */
    int64_t t1 = ewi_now_ms();
    for (size_t i = 101; i < 300; i++)
        fsend_async(sender, &ev, &s, i);
    ew_err flush_rc = ew_flush(sender, SEND_TIMEOUT_MS + SLACK_MS);
    int64_t async_ms = ewi_now_ms() - t1;
    size_t async_ok = 0, async_failed = 0;
    for (size_t i = 101; i < 300; i++) {
        uint8_t st = atomic_load(&s.state[i]);
        async_ok += st == 1;
        async_failed += st == 2;
    }

    /* Back: sends succeed again (a user retries what failed; so do we,
     * until the transport has reconnected). */
    fpath_restore(&path);
    int64_t t2 = ewi_now_ms();
    int64_t resume_ms = -1;
    size_t after_failed = 0;
    for (size_t i = 300; i < N; i++) {
        conf_event e = {.id = (int64_t)i, .text = "after"};
        ew_err rc;
        int tries = 0;
        while ((rc = ew_send(sender, &ev, &e)) != EW_OK && ++tries < 10)
            ;
        if (rc == EW_OK && resume_ms < 0)
            resume_ms = ewi_now_ms() - t2;
        atomic_store(&s.state[i], rc == EW_OK ? 1 : 2);
        after_failed += rc != EW_OK;
    }

    /* Everything reported sent arrives; nothing reported failed does. */
    int64_t deadline = ewi_now_ms() + 30000;
    while (lost_of(&s, &f) > 0 && ewi_left_ms(deadline) > 0)
        ewi_sleep_ms(50);
    ewi_sleep_ms(1000);
    size_t lost = lost_of(&s, &f), failed_delivered = 0, reported_ok = 0;
    pthread_mutex_lock(&f.t.mu);
    for (size_t i = 0; i < N; i++) {
        uint8_t st = atomic_load(&s.state[i]);
        reported_ok += st == 1;
        failed_delivered += st == 2 && f.t.seen[i];
    }
    pthread_mutex_unlock(&f.t.mu);
    size_t dups = tally_dups(&f.t), distinct = tally_total(&f.t) - dups;

    bool sync_bounded = sync_rc != EW_OK && sync_ms >= SEND_TIMEOUT_MS * 9 / 10 &&
                        sync_ms <= SEND_TIMEOUT_MS + SLACK_MS;
    bool async_bounded = flush_rc == EW_OK && async_ok == 0 && async_failed == 199;
    bool ok = before_failed == 0 && sync_bounded && sync_logged && async_bounded &&
              after_failed == 0 && lost == 0 && failed_delivered == 0 && resume_ms >= 0;
    fault_result("send-outage", &tg,
                 "sent=%zu handled=%zu lost=%zu duplicated=%zu send_wait_ms=%lld "
                 "send_error=%s async_failed=%zu/199 async_wait_ms=%lld "
                 "failed_but_delivered=%zu resume_ms=%lld send_timeout_ms=%d status=%s",
                 reported_ok, distinct, lost, dups, (long long)sync_ms,
                 err_name(sync_rc), async_failed, (long long)async_ms, failed_delivered,
                 (long long)resume_ms, SEND_TIMEOUT_MS, ok ? "pass" : "fail");
    print_message("ew_send during the outage: %s after %lld ms; the log said:\n%s\n",
                  ew_strerror(sync_rc), (long long)sync_ms, sync_text);
    if (!ok)
        print_message("sender saw:\n%s\n", cs.text);
    ew_manager_free(sender);
    ew_manager_free(recv);
    fpath_close(&path);
    const char *ls[] = {"Count", NULL};
    cleanup_event(&tg, ev.name, ls);

    /* Freed before the checks: a failure reports no leak of its own. */
    tally_free(&f.t);
    fsends_free(&s);
    assert_int_equal(before_failed, 0);
    if (!sync_bounded)
        fail_msg("ew_send during the outage returned %s after %lld ms (want a failure after "
                 "%d..%d ms)",
                 ew_strerror(sync_rc), (long long)sync_ms, SEND_TIMEOUT_MS * 9 / 10,
                 SEND_TIMEOUT_MS + SLACK_MS);
    if (!sync_logged)
        fail_msg("the failed send logged nothing that names event %s", ev.name);
    if (!async_bounded)
        fail_msg("asynchronous sends during the outage: flush %s, %zu ok, %zu failed of 199",
                 ew_strerror(flush_rc), async_ok, async_failed);
    assert_int_equal(after_failed, 0);
    assert_int_equal(lost, 0);
    if (failed_delivered)
        fail_msg("%zu sends reported failed were delivered after all", failed_delivered);
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
        cmocka_unit_test(sends_during_outage_fail_bounded_and_lose_nothing),
    };
    return cmocka_run_group_tests_name("fault: sends during an outage", tests, NULL, NULL);
}
