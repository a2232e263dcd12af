/* Fault 8: a graceful stop under load. While a sender streams durable
 * events to a listener with slow handlers, its manager is stopped:
 * ew_manager_stop must return in time with every handler that started
 * finished, no handler may run after it returned, and a new manager (the
 * restarted service) must get every event the first one did not handle.
 * Nothing acknowledged without being handled shows as a lost event.
 *
 *   fault_graceful_stop URL */
#include "faults.h"

enum { N = 3000, STOP_AT = 500, STOP_TIMEOUT_MS = 10000, RESUME_BOUND_MS = 15000 };

static const char *URL;

typedef struct stream {
    ew_manager *m;
    ew_event_desc *ev;
    fsends *s;
} stream;

static void *send_stream(void *arg)
{
    stream *st = arg;
    for (size_t i = 0; i < N; i++) {
        fsend_async(st->m, st->ev, st->s, i);
        if (i % 100 == 99)
            ewi_sleep_ms(20);
    }
    ew_flush(st->m, 60000);
    return NULL;
}

static bool reached_(void *arg)
{
    flow *f = arg;
    pthread_mutex_lock(&f->t.mu);
    bool ok = f->t.finished >= STOP_AT;
    pthread_mutex_unlock(&f->t.mu);
    return ok;
}

static void stop_under_load_finishes_in_flight_and_loses_nothing(void **state)
{
    (void)state;
    ftarget tg = ftarget_of(URL);
    EV(ev, "FaultStop", true);
    flow f;
    flow_init(&f, N);
    tally_slow(&f.t, 3);
    fsends s;
    fsends_init(&s, N);
    /* The sender also keeps local://'s broker alive across the restart. */
    ew_manager *sender = mgr_new(URL, "sender");
    ew_manager *m1 = mgr_new(URL, "first");
    flow_listen(m1, &ev, "Work", 4, 32, &f, "first");
    assert_int_equal(ew_manager_start(m1), EW_OK);
    assert_int_equal(ew_manager_start(sender), EW_OK);
    stream st = {sender, &ev, &s};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, send_stream, &st), 0);
    bool underway = wait_until(reached_, &f, 60000);

    pthread_mutex_lock(&f.t.mu);
    size_t in_flight = f.t.started - f.t.finished;
    pthread_mutex_unlock(&f.t.mu);
    int64_t t0 = ewi_now_ms();
    ew_err stop_rc = ew_manager_stop(m1, STOP_TIMEOUT_MS);
    int64_t stop_ms = ewi_now_ms() - t0;
    pthread_mutex_lock(&f.t.mu);
    size_t started = f.t.started, finished = f.t.finished;
    pthread_mutex_unlock(&f.t.mu);
    size_t handled_first = tally_total(&f.t);
    ewi_sleep_ms(500);
    pthread_mutex_lock(&f.t.mu);
    size_t started_later = f.t.started - started;
    pthread_mutex_unlock(&f.t.mu);
    ew_manager_free(m1);

    /* The service comes back. */
    tally_slow(&f.t, 0);
    flow_mark(&f);
    ew_manager *m2 = mgr_new(URL, "second");
    flow_listen(m2, &ev, "Work", 4, 32, &f, "second");
    assert_int_equal(ew_manager_start(m2), EW_OK);
    bool all = tally_wait_all(&f.t, 60000);
    pthread_join(th, NULL);
    ewi_sleep_ms(300);
    int64_t resume = flow_resume_ms(&f);
    size_t dups = tally_dups(&f.t), distinct = tally_total(&f.t) - dups;
    size_t lost = lost_of(&s, &f), failed = atomic_load(&s.failed);
    bool ok = underway && stop_rc == EW_OK && started == finished && started_later == 0 &&
              handled_first < N && all && lost == 0 && failed == 0 && resume >= 0 &&
              resume <= RESUME_BOUND_MS;
    fault_result("graceful-stop", &tg,
                 "sent=%d handled=%zu lost=%zu duplicated=%zu resume_ms=%lld stop_ms=%lld "
                 "in_flight_at_stop=%zu handled_before_stop=%zu runs_after_stop=%zu "
                 "status=%s",
                 N, distinct, lost, dups, (long long)resume, (long long)stop_ms, in_flight,
                 handled_first, started_later, ok ? "pass" : "fail");
    ew_manager_free(m2);
    ew_manager_free(sender);
    const char *ls[] = {"Work", NULL};
    cleanup_event(&tg, ev.name, ls);

    /* Freed before the checks: a failure reports no leak of its own. */
    tally_free(&f.t);
    fsends_free(&s);
    assert_true(underway);
    assert_int_equal(stop_rc, EW_OK);
    assert_int_equal(started, finished);
    assert_int_equal(started_later, 0);
    assert_true(handled_first < N);
    assert_int_equal(failed, 0);
    assert_true(all);
    assert_int_equal(lost, 0);
    assert_true(resume >= 0 && resume <= RESUME_BOUND_MS);
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
        cmocka_unit_test(stop_under_load_finishes_in_flight_and_loses_nothing),
    };
    return cmocka_run_group_tests_name("fault: graceful stop", tests, NULL, NULL);
}
