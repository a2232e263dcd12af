/* Fault 9: truthful send outcomes across an outage longer than the send
 * timeout. A sender streams durable events (ew_send from one thread,
 * ew_send_async from another) with a short send timeout; in the middle of
 * the stream the broker goes away for longer than that timeout, then comes
 * back; the streams go on throughout. Counted by id afterwards:
 *
 *   EW_ETIMEDOUT, EW_ECLOSED  "never written, never will be": must never
 *                             arrive (not after the reconnect either)
 *   EW_OK                     must arrive
 *   EW_EINDOUBT               written, unconfirmed: counted either way
 *
 *   fault_send_outcome BROKER_SCRIPT URL   the broker is killed (kill -9
 *                                          through BROKER_SCRIPT kill) and
 *                                          started again
 *   fault_send_outcome --cut URL           the sender's path to the broker is
 *                                          broken by a relay instead; the
 *                                          broker itself is not touched
 *
 * Once every send has completed, the sender sends a sentinel on the same
 * connection: whatever the broker took before it (also a wrong resend) is
 * handled before it, by the receiver's single worker. Not for local://. */
#include "faults.h"

enum {
    MAXN = 40000,
    SEND_TIMEOUT_MS = 1500,
    OUTAGE_MS = 3 * SEND_TIMEOUT_MS, /* down for longer than the send timeout */
    BEFORE = 300,                    /* outcomes seen before the outage starts */
    AFTER_MS = 2000,                 /* the streams go on this long after it */
    PACE_MS = 2
};

static const char *SCRIPT; /* NULL: --cut */
static const char *URL;

/* Outcome per id: 0 pending, else 1 + the ew_err. */
static _Atomic int outcome[MAXN];
/* When each outcome came (ewi_now_ms), for the report of a failure. */
static _Atomic int64_t done_at[MAXN];
static _Atomic size_t next_id, completed;
static _Atomic bool stop_streams;

static void record(size_t id, ew_err err)
{
    atomic_store(&done_at[id], ewi_now_ms());
    atomic_store(&outcome[id], 1 + (int)err);
    atomic_fetch_add(&completed, 1);
}

static void async_done(void *user, ew_err err)
{
    record((size_t)(uintptr_t)user, err);
}

typedef struct stream {
    ew_manager *m;
    const ew_event_desc *ev;
    bool async;
} stream;

static void *stream_main(void *arg)
{
    stream *s = arg;
    while (!atomic_load(&stop_streams)) {
        size_t id = atomic_fetch_add(&next_id, 1);
        if (id >= MAXN)
            break;
        conf_event e = {.id = (int64_t)id, .text = s->async ? "async" : "sync"};
        if (s->async) {
            ew_err rc = ew_send_async(s->m, s->ev, NULL, &e, async_done, (void *)(uintptr_t)id);
            if (rc != EW_OK)
                record(id, rc); /* the callback never runs then */
        } else {
            record(id, ew_send(s->m, s->ev, &e));
        }
        ewi_sleep_ms(PACE_MS); /* a stream, not a burst */
    }
    return NULL;
}

static bool before_done_(void *arg)
{
    (void)arg;
    return atomic_load(&completed) >= BEFORE;
}

static const char *code_name(int err)
{
    switch (err) {
    case EW_OK: return "ok";
    case EW_ETIMEDOUT: return "timedout";
    case EW_ECLOSED: return "closed";
    case EW_EINDOUBT: return "indoubt";
    default: return ew_strerror(err);
    }
}

/* Prints the runs of ids reported EW_OK that never arrived, with when their
 * outcomes came relative to the kill/cut (t=0) and the broker's return. */
static void report_lost(tally *t, size_t sent, int64_t k0, int64_t back)
{
    size_t runs = 0;
    pthread_mutex_lock(&t->mu);
    for (size_t i = 0; i < sent && runs < 8;) {
        if (atomic_load(&outcome[i]) != 1 + EW_OK || t->seen[i] > 0) {
            i++;
            continue;
        }
        size_t j = i, n = 0;
        for (; j < sent; j++) {
            int o = atomic_load(&outcome[j]);
            if (o == 1 + EW_OK && t->seen[j] > 0)
                break; /* an id that was confirmed and arrived ends the run */
            n += o == 1 + EW_OK;
        }
        print_message("lost: ids %zu..%zu (%zu reported EW_OK), outcomes at %+lld..%+lld ms "
                      "from the outage's start (it ended at %+lld ms)\n",
                      i, j - 1, n, (long long)(atomic_load(&done_at[i]) - k0),
                      (long long)(atomic_load(&done_at[j - 1]) - k0), (long long)(back - k0));
        runs++;
        i = j;
    }
    pthread_mutex_unlock(&t->mu);
}

static void outcomes_are_truthful(void **state)
{
    (void)state;
    ftarget tg = ftarget_of(URL);
    assert_false(tg.local);
    fpath path = {0};
    const char *hb = fast_heartbeat_supported(&tg);
    char surl[512];
    if (SCRIPT) {
        url_with(surl, sizeof surl, URL, 0, hb);
    } else {
        fpath_open(&path, &tg, true, hb);
        snprintf(surl, sizeof surl, "%s", path.url);
    }

    EV(ev, "FaultOutcome", true);
    flow f;
    flow_init(&f, MAXN + 1);
    fcapture cs, cr;
    fcapture_init(&cs);
    fcapture_init(&cr);
    ew_options so = {.on_error = fcapture_error, .error_user = &cs, .log = fcapture_log,
                     .log_user = &cs, .send_timeout_ms = SEND_TIMEOUT_MS,
                     .start_timeout_ms = 20000};
    ew_options ro = {.on_error = fcapture_error, .error_user = &cr, .start_timeout_ms = 20000};
    char rurl[512];
    url_with(rurl, sizeof rurl, URL, 0, hb);
    ew_manager *recv = mgr_new_opts(rurl, "receiver", &ro);
    ew_manager *sender = mgr_new_opts(surl, "sender", &so);
    /* One worker: the queue's order is the order of handling. */
    flow_listen(recv, &ev, "Count", 1, 0, &f, "receiver");
    assert_int_equal(ew_manager_start(recv), EW_OK);
    assert_int_equal(ew_manager_start(sender), EW_OK);

    stream ss = {sender, &ev, false}, sa = {sender, &ev, true};
    pthread_t ts, ta;
    assert_int_equal(pthread_create(&ts, NULL, stream_main, &ss), 0);
    assert_int_equal(pthread_create(&ta, NULL, stream_main, &sa), 0);

    bool underway = wait_until(before_done_, NULL, 60000);
    int64_t k0 = ewi_now_ms();
    /* In UTC, as the log lines on stderr: the receiver's reconnect lines up
     * with the times report_lost gives relative to this. */
    int64_t wall = ewi_wall_ms();
    print_message("outage starts at %02d:%02d:%02d.%03d UTC\n", (int)(wall / 3600000 % 24),
                  (int)(wall / 60000 % 60), (int)(wall / 1000 % 60), (int)(wall % 1000));
    int src = 0;
    if (SCRIPT) {
        char cmd[1024];
        snprintf(cmd, sizeof cmd, "%s kill >/dev/null 2>&1", SCRIPT);
        src = system(cmd);
        /* Down for longer than the send timeout (the fault's length, not a
         * synchronisation), then started again whatever the kill did. */
        ewi_sleep_ms(OUTAGE_MS);
        snprintf(cmd, sizeof cmd, "%s start >/dev/null 2>&1", SCRIPT);
        if (system(cmd) != 0)
            src = 9;
    } else {
        fpath_break(&path);
        ewi_sleep_ms(OUTAGE_MS);
        fpath_restore(&path);
    }
    int64_t outage_ms = ewi_now_ms() - k0;
    print_message("outage of %lld ms (rc %d)\n", (long long)outage_ms, src);

    /* The streams go on until sends succeed again, and a little longer. */
    int64_t t_back = ewi_now_ms();
    size_t ok_after = 0;
    while (ewi_now_ms() - t_back < 60000) {
        size_t n = atomic_load(&next_id), k = 0;
        for (size_t i = n > 200 ? n - 200 : 0; i < n && i < MAXN; i++)
            k += atomic_load(&outcome[i]) == 1 + EW_OK;
        ok_after = k;
        if (k >= 50)
            break;
        ewi_sleep_ms(50);
    }
    ewi_sleep_ms(AFTER_MS);
    atomic_store(&stop_streams, true);
    pthread_join(ts, NULL);
    pthread_join(ta, NULL);
    ew_err flush_rc = ew_flush(sender, 4 * SEND_TIMEOUT_MS);
    size_t sent = atomic_load(&next_id);
    if (sent > MAXN)
        sent = MAXN;

    /* The sentinel, retried while the path settles (each try is new). */
    conf_event last = {.id = MAXN, .text = "sentinel"};
    ew_err last_rc = EW_ETIMEDOUT;
    for (int i = 0; i < 20 && last_rc != EW_OK; i++)
        last_rc = ew_send(sender, &ev, &last);
    bool sentinel = last_rc == EW_OK && tally_wait_ids(&f.t, MAXN, MAXN + 1, 90000);

    size_t ok = 0, ok_lost = 0, not_sent = 0, not_sent_arrived = 0, in_doubt = 0,
           in_doubt_arrived = 0, other = 0, other_arrived = 0, pending = 0;
    pthread_mutex_lock(&f.t.mu);
    for (size_t i = 0; i < sent; i++) {
        int o = atomic_load(&outcome[i]);
        bool arrived = f.t.seen[i] > 0;
        if (o == 0) {
            pending++;
            continue;
        }
        switch (o - 1) {
        case EW_OK:
            ok++;
            ok_lost += !arrived;
            break;
        case EW_ETIMEDOUT:
        case EW_ECLOSED:
            not_sent++;
            if (arrived && not_sent_arrived++ < 5)
                print_message("id %zu: reported %s, yet it arrived\n", i,
                              code_name(o - 1));
            break;
        case EW_EINDOUBT:
            in_doubt++;
            in_doubt_arrived += arrived;
            break;
        default:
            other++;
            other_arrived += arrived;
            if (other < 5)
                print_message("id %zu: %s\n", i, ew_strerror(o - 1));
        }
    }
    pthread_mutex_unlock(&f.t.mu);
    if (ok_lost)
        report_lost(&f.t, sent, k0, k0 + outage_ms);
    size_t dups = tally_dups(&f.t), handled = 0;
    pthread_mutex_lock(&f.t.mu);
    for (size_t i = 0; i < sent; i++)
        handled += f.t.seen[i] > 0;
    pthread_mutex_unlock(&f.t.mu);
    bool ok_all = underway && src == 0 && flush_rc == EW_OK && pending == 0 && sentinel &&
                  ok_lost == 0 && not_sent_arrived == 0 && other_arrived == 0 &&
                  not_sent > 0 && ok_after > 0;
    fault_result(SCRIPT ? "send-outcome" : "send-outcome-cut", &tg,
                 "mode=%s sent=%zu handled=%zu lost=%zu ok=%zu not_sent=%zu "
                 "not_sent_arrived=%zu in_doubt=%zu in_doubt_arrived=%zu other=%zu "
                 "other_arrived=%zu duplicated=%zu outage_ms=%lld send_timeout_ms=%d status=%s",
                 SCRIPT ? "kill" : "cut", sent, handled, ok_lost, ok, not_sent,
                 not_sent_arrived, in_doubt, in_doubt_arrived, other, other_arrived, dups,
                 (long long)outage_ms, SEND_TIMEOUT_MS, ok_all ? "pass" : "fail");
    if (!ok_all) {
        char text[4096];
        fcapture_copy(&cs, text, sizeof text);
        print_message("sender saw:\n%s\n", text);
    }
    ew_manager_free(sender);
    ew_manager_free(recv);
    fpath_close(&path);
    const char *ls[] = {"Count", NULL};
    cleanup_event(&tg, ev.name, ls);
    tally_free(&f.t);

    if (!underway)
        fail_msg("the streams did not get %d outcomes before the outage", BEFORE);
    if (src != 0)
        fail_msg("%s kill/start failed (rc %d)", SCRIPT, src);
    if (flush_rc != EW_OK || pending)
        fail_msg("%zu sends had no outcome %d ms after the streams stopped", pending,
                 4 * SEND_TIMEOUT_MS);
    if (!sentinel)
        fail_msg("the sentinel was not handled (send: %s)", ew_strerror(last_rc));
    if (not_sent_arrived)
        fail_msg("%zu sends reported not sent (EW_ETIMEDOUT/EW_ECLOSED) arrived", not_sent_arrived);
    if (ok_lost)
        fail_msg("%zu sends reported EW_OK never arrived", ok_lost);
    if (other_arrived)
        fail_msg("%zu sends that failed otherwise arrived", other_arrived);
    if (!not_sent)
        fail_msg("no send failed as not sent: the outage did not outlast the send timeout");
    if (!ok_after)
        fail_msg("no send succeeded after the outage");
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s BROKER_SCRIPT|--cut URL\n", argv[0]);
        return 2;
    }
    SCRIPT = strcmp(argv[1], "--cut") == 0 ? NULL : argv[1];
    URL = argv[2];
    support_init(URL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(outcomes_are_truthful),
    };
    return cmocka_run_group_tests_name("fault: send outcomes", tests, NULL, NULL);
}
