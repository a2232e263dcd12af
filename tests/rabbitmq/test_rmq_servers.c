/* Two managers in one process acting as two servers on one RabbitMQ:
 * per_process listeners get a copy each in their own expiring queue;
 * ordinary listeners compete on one shared queue.
 * usage: rabbitmq_servers BROKER_SCRIPT (scripts/brokers/rabbitmq.sh) */
#include "rmq_test.h"

static const char *SCRIPT;

static void per_process_gives_each_server_its_own_queue(void **state)
{
    (void)state;
    EV(ev, "Cache", true);
    enum { N = 50 };
    tally t1, t2;
    tally_init(&t1, N);
    tally_init(&t2, N);
    ew_manager *m1 = mgr_new(rmq_test_url(), "srv1"), *m2 = mgr_new(rmq_test_url(), "srv2");
    listen_tally(m1, &ev, "Invalidate", true, 1, &t1);
    listen_tally(m2, &ev, "Invalidate", true, 1, &t2);
    assert_int_equal(ew_manager_start(m1), EW_OK);
    assert_int_equal(ew_manager_start(m2), EW_OK);

    char q1[256], q2[256], row[512];
    snprintf(q1, sizeof q1, "%s::Invalidate-srv1", ev.name);
    snprintf(q2, sizeof q2, "%s::Invalidate-srv2", ev.name);
    char *qs = ctl(SCRIPT, "list_queues name consumers arguments");
    assert_non_null(ctl_row(qs, q1, row, sizeof row));
    print_message("%s\n", row);
    assert_non_null(strstr(row, "\t1\t[{\"x-expires\","));
    assert_non_null(ctl_row(qs, q2, row, sizeof row));
    print_message("%s\n", row);
    assert_non_null(strstr(row, "\t1\t[{\"x-expires\","));
    free(qs);

    send_range(m1, &ev, 0, N);
    assert_true(tally_wait_all(&t1, 30000));
    assert_true(tally_wait_all(&t2, 30000));
    assert_int_equal(tally_dups(&t1), 0);
    assert_int_equal(tally_dups(&t2), 0);
    assert_string_equal(t1.last_queue, q1);
    assert_string_equal(t2.last_queue, q2);

    ew_manager_free(m2);
    ew_manager_free(m1);
    tally_free(&t1);
    tally_free(&t2);
    /* Not waiting out the 60 s expiry (the next test checks it). */
    raw_delete(q1, false);
    raw_delete(q2, false);
    snprintf(q1, sizeof q1, "%s::Invalidate.dlq", ev.name);
    raw_delete(q1, false);
    raw_delete(ev.name, true);
}

static void expiry_is_configurable_and_removes_a_dead_servers_queue(void **state)
{
    (void)state;
    EV(ev, "Expire", true);
    char url[512], q[256], row[512];
    snprintf(url, sizeof url, "%s%squeue_expires=1500", rmq_test_url(),
             strchr(rmq_test_url(), '?') ? "&" : "?");
    tally t;
    tally_init(&t, 1);
    ew_manager *m = mgr_new(url, "gone");
    listen_tally(m, &ev, "L", true, 1, &t);
    assert_int_equal(ew_manager_start(m), EW_OK);
    snprintf(q, sizeof q, "%s::L-gone", ev.name);
    char *qs = ctl(SCRIPT, "list_queues name arguments");
    assert_non_null(ctl_row(qs, q, row, sizeof row));
    assert_non_null(strstr(row, "[{\"x-expires\",1500}]"));
    free(qs);
    ew_manager_free(m);
    /* The server is gone; within a few seconds so is its queue. */
    bool vanished = false;
    for (int i = 0; i < 40 && !vanished; i++) {
        ewi_sleep_ms(250);
        qs = ctl(SCRIPT, "list_queues name");
        vanished = !ctl_row(qs, q, row, sizeof row);
        free(qs);
    }
    assert_true(vanished);
    tally_free(&t);
    snprintf(q, sizeof q, "%s::L.dlq", ev.name);
    raw_delete(q, false);
    raw_delete(ev.name, true);
}

static void competing_consumers_share_one_queue(void **state)
{
    (void)state;
    EV(ev, "Job", true);
    enum { N = 400 };
    tally t;
    tally_init(&t, N);
    tally_slow(&t, 1);
    ew_manager *m1 = mgr_new(rmq_test_url(), "w1"), *m2 = mgr_new(rmq_test_url(), "w2");
    ew_listener_desc d = {.event = &ev, .name = "Worker", .concurrency = 2, .prefetch = 8};
    assert_int_equal(ew_listen(m1, &d, tally_listener, tref(&t, "w1")), EW_OK);
    assert_int_equal(ew_listen(m2, &d, tally_listener, tref(&t, "w2")), EW_OK);
    assert_int_equal(ew_manager_start(m1), EW_OK);
    assert_int_equal(ew_manager_start(m2), EW_OK);

    char q[256], row[512];
    snprintf(q, sizeof q, "%s::Worker", ev.name);
    char *qs = ctl(SCRIPT, "list_queues name consumers");
    assert_non_null(ctl_row(qs, q, row, sizeof row));
    print_message("%s\n", row);
    assert_non_null(strstr(row, "\t2")); /* one queue, two consumers */
    free(qs);

    send_range_async(m2, &ev, 0, N);
    assert_true(tally_wait_all(&t, 60000));
    /* Counted once both stopped: every handler that started has finished. */
    assert_int_equal(ew_manager_stop(m1, 10000), EW_OK);
    assert_int_equal(ew_manager_stop(m2, 10000), EW_OK);
    size_t on1 = tally_by_label(&t, "w1"), on2 = tally_by_label(&t, "w2");
    print_message("competing: %zu on w1, %zu on w2, %zu duplicates\n", on1, on2,
                  tally_dups(&t));
    assert_int_equal(tally_dups(&t), 0);
    assert_true(on1 > N / 10 && on2 > N / 10);
    assert_int_equal(on1 + on2, N);
    ew_manager_free(m1);
    ew_manager_free(m2);
    tally_free(&t);
    raw_delete(q, false);
    snprintf(q, sizeof q, "%s::Worker.dlq", ev.name);
    raw_delete(q, false);
    raw_delete(ev.name, true);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s BROKER_SCRIPT\n", argv[0]);
        return 2;
    }
    SCRIPT = argv[1];
    support_init(rmq_test_url());
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(per_process_gives_each_server_its_own_queue),
        cmocka_unit_test(expiry_is_configurable_and_removes_a_dead_servers_queue),
        cmocka_unit_test(competing_consumers_share_one_queue),
    };
    return cmocka_run_group_tests_name("rabbitmq servers", tests, NULL, NULL);
}
