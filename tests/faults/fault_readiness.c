/* Fault 10: readiness means consumption. A manager with NL listeners
 * consumes through a relay (relay.h). The relay breaks the path (every
 * connection closed, connects refused) for a while and then restores it.
 *
 *   - ew_manager_ready is true after start, with every listener consuming;
 *   - it turns false once the connection is cut, and every listener's
 *     consuming gauge drops;
 *   - it stays false while the path is broken;
 *   - after the restore it turns true again only in a state where every
 *     listener consumes (checked in the same read of the metrics), never
 *     while the connection is up but a listener is not subscribed again;
 *   - events sent as soon as it is true reach every listener.
 *
 * NLATE of the listeners are added after start (ew_listen on the running
 * manager): they count for readiness and are subscribed again after the
 * reconnect like the others. One more, added after start and removed with
 * ew_unlisten before the cut, is neither counted nor subscribed again.
 *
 *   fault_readiness URL
 *
 * The URL gets the transport's shortest heart-beat option. Not for
 * local://: no network. */
#include "faults.h"
#include "metrics_probe.h"

enum { NL = 20, NLATE = 5, PER_ROUND = 50, BROKEN_MS = 2000, DETECT_BOUND_MS = 15000,
       RESUME_BOUND_MS = 30000, FLOW_BOUND_MS = 30000 };

static const char *URL;

/* One read of the metrics: readiness, connections, and how many listeners
 * consume. */
typedef struct sample {
    uint64_t ready, connects, reconnects, disconnects;
    size_t listeners, consuming;
} sample;

static void sample_fn(void *user, const ew_metric *x)
{
    sample *s = user;
    if (strcmp(x->name, "eventwire.manager.ready") == 0)
        s->ready = x->value;
    else if (strcmp(x->name, "eventwire.client.connects") == 0)
        s->connects = x->value;
    else if (strcmp(x->name, "eventwire.client.reconnects") == 0)
        s->reconnects = x->value;
    else if (strcmp(x->name, "eventwire.client.disconnects") == 0)
        s->disconnects = x->value;
    else if (strcmp(x->name, "eventwire.listener.consuming") == 0) {
        s->listeners++;
        s->consuming += x->value == 1;
    }
}

static sample read_sample(ew_manager *m)
{
    sample s = {0};
    assert_int_equal(ew_metrics_visit(m, sample_fn, &s), EW_OK);
    return s;
}

/* Every listener handled ids [from, to) (t->mu held). */
static bool all_handled_locked(tally *t, int64_t from, int64_t to)
{
    for (int64_t i = from; i < to; i++)
        if (t->seen[i] < NL)
            return false;
    return true;
}

/* Waits on the tally's condition until all_handled_locked or timeout_ms. */
static bool wait_until_all(tally *t, int64_t from, int64_t to, int timeout_ms)
{
    int64_t deadline = ewi_now_ms() + timeout_ms;
    pthread_mutex_lock(&t->mu);
    bool ok;
    while (!(ok = all_handled_locked(t, from, to)) && ewi_left_ms(deadline) > 0)
        ewi_cond_wait_until(&t->cv, &t->mu, deadline);
    pthread_mutex_unlock(&t->mu);
    return ok;
}

static void send_round(ew_manager *m, const ew_event_desc *ev, int64_t from)
{
    for (int64_t i = from; i < from + PER_ROUND; i++) {
        conf_event e = {.id = i, .text = "readiness"};
        ew_err rc = ew_send(m, ev, &e);
        if (rc != EW_OK)
            fail_msg("ew_send(%lld): %s (%s)", (long long)i, ew_strerror(rc), ew_last_error());
    }
}

static void readiness_means_consumption(void **state)
{
    (void)state;
    ftarget tg = ftarget_of(URL);
    assert_false(tg.local);
    const char *hb = fast_heartbeat_supported(&tg);
    fpath path;
    fpath_open(&path, &tg, true, hb);
    print_message("through the relay: %s\n", path.url);

    EV(ev, "FaultReady", true);
    tally t;
    tally_init(&t, 2 * PER_ROUND);
    fcapture cap;
    fcapture_init(&cap);
    ew_options o = {.on_error = fcapture_error, .error_user = &cap, .send_timeout_ms = 30000,
                    .start_timeout_ms = 20000};
    ew_manager *m = mgr_new_opts(path.url, "ready", &o);
    const char *names[NL + 1];
    char namebuf[NL][16];
    for (int i = 0; i < NL; i++) {
        snprintf(namebuf[i], sizeof namebuf[i], "R%02d", i);
        names[i] = namebuf[i];
        if (i < NL - NLATE)
            listen_tally(m, &ev, namebuf[i], false, 1, &t);
    }
    names[NL] = NULL;
    assert_false(ew_manager_ready(m));
    assert_int_equal(ew_manager_start(m), EW_OK);
    for (int i = NL - NLATE; i < NL; i++)
        listen_tally(m, &ev, namebuf[i], false, 1, &t);
    tally gone;
    tally_init(&gone, 2 * PER_ROUND);
    listen_tally(m, &ev, "Gone", true, 1, &gone);
    ew_listener_desc gone_desc = {.event = &ev, .name = "Gone", .per_process = true};
    assert_int_equal(ew_unlisten(m, &gone_desc, 0), EW_OK);

    /* 1. Ready after start, every listener consuming; events flow. */
    sample s0 = read_sample(m);
    bool ready_at_start = s0.ready == 1 && s0.consuming == NL && s0.listeners == NL;
    send_round(m, &ev, 0);
    bool flow_before = wait_until_all(&t, 0, PER_ROUND, 30000);

    /* 2. The cut: readiness drops, and so does every listener. */
    int64_t t_break = ewi_now_ms();
    fpath_break(&path);
    int64_t drop_ms = -1, all_lost_ms = -1;
    sample s;
    while (ewi_now_ms() - t_break < DETECT_BOUND_MS) {
        s = read_sample(m);
        if (drop_ms < 0 && s.ready == 0)
            drop_ms = ewi_now_ms() - t_break;
        if (drop_ms >= 0 && s.consuming == 0) {
            all_lost_ms = ewi_now_ms() - t_break;
            break;
        }
        ewi_sleep_ms(5);
    }

    /* 3. Not ready while the path stays broken. */
    size_t ready_while_broken = 0;
    int64_t t_broken = ewi_now_ms();
    while (ewi_now_ms() - t_broken < BROKEN_MS) {
        ready_while_broken += ew_manager_ready(m);
        ewi_sleep_ms(10);
    }

    /* 4. Restored: ready again only with every listener consuming. */
    uint64_t connects_before = read_sample(m).connects;
    fpath_restore(&path);
    int64_t t_restore = ewi_now_ms();
    int64_t up_ms = -1, ready_ms = -1;
    size_t bad_ready = 0, connected_not_ready = 0, samples = 0;
    size_t consuming_at_ready = 0;
    while (ewi_now_ms() - t_restore < RESUME_BOUND_MS) {
        s = read_sample(m);
        samples++;
        if (up_ms < 0 && s.connects > connects_before)
            up_ms = ewi_now_ms() - t_restore;
        if (s.ready == 1) {
            ready_ms = ewi_now_ms() - t_restore;
            consuming_at_ready = s.consuming;
            bad_ready += s.consuming != NL;
            break;
        }
        connected_not_ready += s.connects > connects_before;
        ewi_sleep_ms(1);
    }

    /* 5. Events sent the moment it is ready reach every listener. */
    int64_t t_send = ewi_now_ms();
    bool flow_after = false;
    if (ready_ms >= 0) {
        send_round(m, &ev, PER_ROUND);
        flow_after = wait_until_all(&t, PER_ROUND, 2 * PER_ROUND, FLOW_BOUND_MS);
    }
    int64_t flow_ms = ewi_now_ms() - t_send;
    sample end = read_sample(m);

    size_t gone_got = tally_total(&gone);
    bool ok = ready_at_start && flow_before && drop_ms >= 0 && all_lost_ms >= 0 &&
              ready_while_broken == 0 && ready_ms >= 0 && bad_ready == 0 && flow_after &&
              end.reconnects >= 1 && end.disconnects >= 1 && end.listeners == NL &&
              gone_got == 0;
    fault_result("readiness", &tg,
                 "listeners=%d drop_ms=%lld all_lost_ms=%lld ready_while_broken=%zu "
                 "conn_up_ms=%lld ready_ms=%lld connected_not_ready_samples=%zu of %zu "
                 "consuming_at_ready=%zu flow_ms=%lld connects=%llu reconnects=%llu "
                 "disconnects=%llu removed_listener_got=%zu heartbeat_option=%s status=%s",
                 NL, (long long)drop_ms, (long long)all_lost_ms, ready_while_broken,
                 (long long)up_ms, (long long)ready_ms, connected_not_ready, samples,
                 consuming_at_ready, (long long)flow_ms, (unsigned long long)end.connects,
                 (unsigned long long)end.reconnects, (unsigned long long)end.disconnects,
                 gone_got, hb ? hb : "none", ok ? "pass" : "fail");
    if (!ok)
        print_message("the manager saw:\n%s\n", cap.text);
    ew_manager_free(m);
    fpath_close(&path);
    cleanup_event(&tg, ev.name, names);
    tally_free(&t);
    tally_free(&gone);

    if (!ready_at_start)
        fail_msg("after start: ready %llu, %zu of %d listeners consuming",
                 (unsigned long long)s0.ready, s0.consuming, NL);
    assert_true(flow_before);
    if (drop_ms < 0)
        fail_msg("still ready %d ms after the path was cut", DETECT_BOUND_MS);
    if (all_lost_ms < 0)
        fail_msg("%zu listener(s) still counted as consuming %d ms after the cut", s.consuming,
                 DETECT_BOUND_MS);
    if (ready_while_broken)
        fail_msg("ready in %zu samples while the path was broken", ready_while_broken);
    if (ready_ms < 0)
        fail_msg("not ready again %d ms after the restore (%zu of %d listeners consuming)",
                 RESUME_BOUND_MS, s.consuming, NL);
    if (bad_ready)
        fail_msg("ready with only %zu of %d listeners consuming", consuming_at_ready, NL);
    if (!flow_after)
        fail_msg("events sent once ready did not reach every listener within %d ms",
                 FLOW_BOUND_MS);
    assert_true(end.reconnects >= 1 && end.disconnects >= 1);
    if (end.listeners != NL)
        fail_msg("%zu listeners in the metrics, %d registered", end.listeners, NL);
    if (gone_got)
        fail_msg("the removed listener handled %zu event(s)", gone_got);
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
        cmocka_unit_test(readiness_means_consumption),
    };
    return cmocka_run_group_tests_name("fault: readiness", tests, NULL, NULL);
}
