/* Fault 4: a listener that always fails for one event. The event is tried
 * as its retry policy says (3 runs), then lands in the dead-letter queue
 * with the reason; the other events keep flowing past it (concurrency 1:
 * the retries sit in the one worker's way, and still everything else is
 * handled); afterwards nothing comes back: the handler runs for the poison
 * event stay at 3 while we watch, and no second dead letter appears.
 *
 *   fault_poison_listener URL */
#include "faults.h"

enum { N = 2000, POISON = 13, ATTEMPTS = 3, WATCH_MS = 2000 };

static const char *URL;

static void always_failing_event_is_dead_lettered_once(void **state)
{
    (void)state;
    ftarget tg = ftarget_of(URL);
    EV(ev, "FaultPoison", true);
    flow f;
    flow_init(&f, N);
    f.t.fail_always = POISON;
    fsends s;
    fsends_init(&s, N);
    ew_manager *keeper = mgr_new(URL, "sender");
    ew_manager *m = mgr_new(URL, "s1");
    ew_listener_desc d = {.event = &ev, .name = "Picky", .concurrency = 1,
                          .retry = {.attempts = ATTEMPTS, .backoff_ms = 20}};
    assert_int_equal(ew_listen(m, &d, flow_listener, tref(&f.t, "s1")), EW_OK);
    assert_int_equal(ew_manager_start(m), EW_OK);
    assert_int_equal(ew_manager_start(keeper), EW_OK);
    int64_t t0 = ewi_now_ms();
    for (size_t i = 0; i < N; i++)
        fsend_async(keeper, &ev, &s, i);
    assert_int_equal(ew_flush(keeper, 60000), EW_OK);
    bool others = tally_wait_ids(&f.t, 0, POISON, 60000) &&
                  tally_wait_ids(&f.t, POISON + 1, N, 60000);
    int64_t flow_ms = ewi_now_ms() - t0;

    fdlq dl = {0};
    fdlq_take(m, &ev, "Picky", &dl, 1, 10000);
    /* Watch: no more runs of the poison event, no second dead letter. */
    pthread_mutex_lock(&f.t.mu);
    uint32_t runs_at_dlq = f.t.attempts[POISON];
    pthread_mutex_unlock(&f.t.mu);
    size_t extra = fdlq_take(m, &ev, "Picky", &dl, 5, WATCH_MS);
    pthread_mutex_lock(&f.t.mu);
    uint32_t runs_after = f.t.attempts[POISON];
    size_t runs_total = f.t.started;
    pthread_mutex_unlock(&f.t.mu);

    size_t dups = tally_dups(&f.t), distinct = tally_total(&f.t) - dups;
    size_t lost = 0;
    pthread_mutex_lock(&f.t.mu);
    for (size_t i = 0; i < N; i++)
        lost += i != POISON && !f.t.seen[i];
    pthread_mutex_unlock(&f.t.mu);
    char want_queue[EW_MAX_QUEUE_NAME];
    snprintf(want_queue, sizeof want_queue, "%s::Picky", ev.name);
    bool dlq_ok = dl.n == 1 && dl.by_reason[0] == 1 && dl.nids == 1 && dl.ids[0] == POISON &&
                  strcmp(dl.attempts[0], "3") == 0 && strcmp(dl.queue, want_queue) == 0 &&
                  dl.error[0][0] != '\0';
    bool ok = others && lost == 0 && dlq_ok && extra == 0 && runs_at_dlq == ATTEMPTS &&
              runs_after == ATTEMPTS && atomic_load(&s.failed) == 0;
    fault_result("poison-listener", &tg,
                 "sent=%d handled=%zu lost=%zu duplicated=%zu poison_runs=%u "
                 "poison_runs_after_watch=%u dead_letters=%zu handler_runs=%zu flow_ms=%lld "
                 "status=%s",
                 N, distinct, lost, dups, runs_at_dlq, runs_after, dl.n, runs_total,
                 (long long)flow_ms, ok ? "pass" : "fail");
    print_message("dead letter: reason=%s attempts=%s queue=%s error=\"%s\"\n",
                  dl.by_reason[0] ? "listener-failed" : "?", dl.nids ? dl.attempts[0] : "",
                  dl.queue, dl.error[0]);
    ew_manager_free(m);
    ew_manager_free(keeper);
    const char *ls[] = {"Picky", NULL};
    cleanup_event(&tg, ev.name, ls);

    /* Freed before the checks: a failure reports no leak of its own. */
    tally_free(&f.t);
    fsends_free(&s);
    assert_true(others);
    assert_int_equal(lost, 0);
    assert_int_equal(dl.n, 1);
    assert_int_equal(dl.by_reason[0], 1);
    assert_int_equal(dl.nids, 1);
    assert_int_equal(dl.ids[0], POISON);
    assert_string_equal(dl.attempts[0], "3");
    assert_string_equal(dl.queue, want_queue);
    assert_true(dl.error[0][0] != '\0');
    assert_int_equal(runs_at_dlq, ATTEMPTS);
    assert_int_equal(extra, 0);
    assert_int_equal(runs_after, ATTEMPTS);
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
        cmocka_unit_test(always_failing_event_is_dead_lettered_once),
    };
    return cmocka_run_group_tests_name("fault: poison listener", tests, NULL, NULL);
}
