/* Fault 1: the broker is hard-killed and started again in the middle of a
 * stream of durable events, with listeners running. Every event sent must
 * be handled (none lost), duplicates are counted, and the listeners must
 * resume by themselves within RESUME_BOUND_MS of the broker being back.
 *
 *   fault_broker_restart BROKER_SCRIPT URL [URL...]
 *
 * Every URL must point at the broker BROKER_SCRIPT runs; each gets its own
 * sender and receiver manager and its own stream of N events, all at once,
 * so one kill serves every transport of that broker (kills disturb the
 * other engineers' tests; they are kept few). local:// does not apply: its
 * broker lives inside the process. */
#include "faults.h"

enum { N = 20000, RESUME_BOUND_MS = 20000, MAX_TARGETS = 4 };

static const char *SCRIPT;
/* Set just before the kill: the second half of every stream waits for it,
 * so that every transport has events to handle after the restart. */
static _Atomic bool killing;
static const char *URLS[MAX_TARGETS];
static size_t NURLS;

typedef struct stream {
    ftarget tg;
    char event[96];
    ew_event_desc ev;
    ew_manager *sender, *recv;
    fcapture cs, cr;
    flow f;
    fsends s;
    pthread_t th;
    int64_t send_ms;
    _Atomic bool half_sent;
} stream;

static void *send_stream(void *arg)
{
    stream *st = arg;
    int64_t t0 = ewi_now_ms();
    for (size_t i = 0; i < N; i++) {
        ew_err rc = fsend_async(st->sender, &st->ev, &st->s, i);
        if (rc != EW_OK)
            print_message("%s: ew_send_async(%zu): %s\n", st->tg.name, i, ew_strerror(rc));
        if (i % 1000 == 999)
            ewi_sleep_ms(150); /* a stream, not one burst: the kill lands inside it */
        if (i == N / 2 - 1) {
            st->half_sent = true;
            while (!atomic_load(&killing))
                ewi_sleep_ms(5);
        }
    }
    ew_flush(st->sender, 180000);
    st->send_ms = ewi_now_ms() - t0;
    return NULL;
}

static bool all_reached_(void *arg)
{
    stream *sts = arg;
    for (size_t i = 0; i < NURLS; i++) {
        pthread_mutex_lock(&sts[i].f.t.mu);
        size_t done = sts[i].f.t.finished;
        pthread_mutex_unlock(&sts[i].f.t.mu);
        if (done < N / 5 || !atomic_load(&sts[i].half_sent))
            return false;
    }
    return true;
}

/* Waits until every id is handled, or nothing was handled for stall_ms. */
static bool wait_all_or_stall(flow *f, int stall_ms, int cap_ms)
{
    int64_t cap = ewi_now_ms() + cap_ms;
    while (flow_missing(f) > 0) {
        int64_t last = atomic_load(&f->last_ms), mark = atomic_load(&f->mark_ms);
        int64_t since = ewi_now_ms() - (last > mark ? last : mark);
        if (since > stall_ms || ewi_left_ms(cap) == 0)
            return false;
        ewi_sleep_ms(50);
    }
    return true;
}

static void restart_mid_stream_loses_nothing(void **state)
{
    (void)state;
    stream *sts = calloc(NURLS, sizeof *sts);
    assert_non_null(sts);
    for (size_t i = 0; i < NURLS; i++) {
        stream *st = &sts[i];
        st->tg = ftarget_of(URLS[i]);
        assert_false(st->tg.local);
        snprintf(st->event, sizeof st->event, "FaultRestart_%s_%zu", support_run_id, i);
        st->ev = (ew_event_desc){.type = &conf_event_type, .name = st->event, .durable = true};
        fcapture_init(&st->cs);
        fcapture_init(&st->cr);
        flow_init(&st->f, N);
        fsends_init(&st->s, N);
        /* Sends may wait out the whole outage: a kill, then a cold start. */
        ew_options so = {.on_error = fcapture_error, .error_user = &st->cs,
                         .send_timeout_ms = 90000, .start_timeout_ms = 20000};
        ew_options ro = so;
        ro.error_user = &st->cr;
        st->sender = mgr_new_opts(URLS[i], "sender", &so);
        st->recv = mgr_new_opts(URLS[i], "receiver", &ro);
        flow_listen(st->recv, &st->ev, "Count", 4, 0, &st->f, "receiver");
        assert_int_equal(ew_manager_start(st->recv), EW_OK);
        assert_int_equal(ew_manager_start(st->sender), EW_OK);
    }
    int64_t t0 = ewi_now_ms();
    for (size_t i = 0; i < NURLS; i++)
        assert_int_equal(pthread_create(&sts[i].th, NULL, send_stream, &sts[i]), 0);

    /* Kill once every stream is well under way on both sides; the second
     * halves go out from then on, into the outage. */
    bool underway = wait_until(all_reached_, sts, 120000);
    char cmd[1024];
    /* Whatever the kill did, the broker is started again: others need it. */
    snprintf(cmd, sizeof cmd,
             "%s kill >/dev/null 2>&1; k=$?; %s start >/dev/null 2>&1 || exit 9; exit $k",
             SCRIPT, SCRIPT);
    int64_t k0 = ewi_now_ms();
    size_t at_kill[MAX_TARGETS];
    for (size_t i = 0; i < NURLS; i++)
        at_kill[i] = tally_total(&sts[i].f.t);
    atomic_store(&killing, true);
    int src = system(cmd);
    int64_t outage_ms = ewi_now_ms() - k0;
    for (size_t i = 0; i < NURLS; i++)
        flow_mark(&sts[i].f);
    print_message("broker killed and back in %lld ms (rc %d)\n", (long long)outage_ms, src);

    bool all_ok = underway && src == 0;
    for (size_t i = 0; i < NURLS; i++) {
        stream *st = &sts[i];
        bool all = wait_all_or_stall(&st->f, 30000, 180000);
        pthread_join(st->th, NULL);
        ewi_sleep_ms(300); /* late redeliveries still count as duplicates */
        size_t dups = tally_dups(&st->f.t), distinct = tally_total(&st->f.t) - dups;
        size_t lost = lost_of(&st->s, &st->f), failed = atomic_load(&st->s.failed);
        int64_t resume = flow_resume_ms(&st->f);
        bool ok = all && lost == 0 && failed == 0 && distinct == N && resume >= 0 &&
                  resume <= RESUME_BOUND_MS && st->cr.disconnects >= 1;
        fault_result("broker-restart", &st->tg,
                     "sent=%d handled=%zu lost=%zu duplicated=%zu resume_ms=%lld "
                     "outage_ms=%lld send_failed=%zu handled_at_kill=%zu total_ms=%lld "
                     "status=%s",
                     N, distinct, lost, dups, (long long)resume,
                     (long long)outage_ms, failed, at_kill[i],
                     (long long)(ewi_now_ms() - t0), ok ? "pass" : "fail");
        if (!ok)
            print_message("%s: receiver saw:\n%s\nsender saw:\n%s\n", st->tg.name, st->cr.text,
                          st->cs.text);
        all_ok = all_ok && ok;
    }
    for (size_t i = 0; i < NURLS; i++) {
        stream *st = &sts[i];
        ew_manager_free(st->sender);
        ew_manager_free(st->recv);
        const char *ls[] = {"Count", NULL};
        cleanup_event(&st->tg, st->event, ls);
    }
    for (size_t i = 0; i < NURLS; i++) {
        stream *st = &sts[i];
        size_t dups = tally_dups(&st->f.t);
        print_message("%s: %zu missing, %zu duplicates, %zu sends failed, resume %lld ms\n",
                      st->tg.name, flow_missing(&st->f), dups,
                      (size_t)atomic_load(&st->s.failed), (long long)flow_resume_ms(&st->f));
    }
    /* Checked after freeing everything: a failure leaves no leak report. */
    for (size_t i = 0; i < NURLS; i++) {
        tally_free(&sts[i].f.t);
        fsends_free(&sts[i].s);
    }
    free(sts);
    assert_true(underway);
    assert_int_equal(src, 0);
    assert_true(all_ok);
}

int main(int argc, char **argv)
{
    if (argc < 3 || (size_t)argc - 2 > MAX_TARGETS) {
        fprintf(stderr, "usage: %s BROKER_SCRIPT URL [URL...] (at most %d URLs)\n", argv[0],
                MAX_TARGETS);
        return 2;
    }
    SCRIPT = argv[1];
    NURLS = (size_t)argc - 2;
    for (size_t i = 0; i < NURLS; i++)
        URLS[i] = argv[2 + i];
    support_init(URLS[0]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(restart_mid_stream_loses_nothing),
    };
    return cmocka_run_group_tests_name("fault: broker restart", tests, NULL, NULL);
}
