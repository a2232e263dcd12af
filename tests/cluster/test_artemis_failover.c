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
#include "failover.h"


enum { N = 4000, STALL_MS = 60000 };

static const char *SCRIPT;

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

static void failover(const char *url, const char *label)
{
    ftarget tg = ftarget_of(url);
    snprintf(tg.name, sizeof tg.name, "%s", label);
    EV(ev, "ArtemisFailover", true);
    /* The second half lasts through the failover (the backup activates
     * within about a second). */
    fo_init(N, (fo_pacing){{100, 100}, {20, 50}});
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
    assert_int_equal(ew_listen(recv, &ld, fo_listener, fo_tref()), EW_OK);
    assert_int_equal(ew_manager_start(recv), EW_OK);
    assert_int_equal(ew_manager_start(snd), EW_OK);

    int64_t t0 = ewi_now_ms();
    fo_send_start(snd, &ev);
    bool underway = fo_wait_ready_to_kill(120000);
    int64_t k0 = ewi_now_ms();
    int krc = run_script("kill primary");
    fo_killed();
    print_message("%s: primary killed in %lld ms (rc %d)\n", label,
                  (long long)(ewi_now_ms() - k0), krc);

    bool all = fo_wait_all(STALL_MS);
    fo_send_join();
    /* Late redeliveries still count as duplicates. */
    all = all && fo_wait_all(STALL_MS);
    fo_tally r;
    fo_count(&r);
    bool ok_all = underway && krc == 0 && all && r.lost == 0 && r.pending == 0 &&
                  r.no_service_ms >= 0 && cr.disconnects >= 1 && r.failed_arrived == 0;
    fault_result("artemis-failover", &tg,
                 "pair=replication killed=primary sent=%d ok=%zu indoubt=%zu "
                 "indoubt_arrived=%zu failed=%zu failed_arrived=%zu handled=%zu lost=%zu "
                 "duplicated=%zu redelivered=%zu no_service_ms=%lld handled_at_kill=%zu "
                 "failed_codes=%s total_ms=%lld status=%s",
                 N, r.ok, r.indoubt, r.indoubt_arrived, r.failed, r.failed_arrived, r.handled,
                 r.lost, r.duplicated, r.redelivered, (long long)r.no_service_ms,
                 r.handled_at_kill, r.codes, (long long)(ewi_now_ms() - t0),
                 ok_all ? "pass" : "fail");
    if (!ok_all) {
        fo_explain(&r, underway, krc, all, STALL_MS);
        if (cr.disconnects < 1)
            print_message("the receiver reported no lost connection\n");
        print_message("receiver reports:\n%s\nreceiver log:\n%s\nsender reports:\n%s\n"
                      "sender log:\n%s\n",
                      cr.text, lr.text, cs.text, ls.text);
    }
    ew_manager_free(snd);
    ew_manager_free(recv);
    fo_free();
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
