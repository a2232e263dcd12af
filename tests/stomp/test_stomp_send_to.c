/* ew_send_to a listener that exists reaches it alone; to one that does not
 * exist fails with EW_ENOTFOUND instead of vanishing (RabbitMQ would drop the
 * SEND silently, ActiveMQ would create a queue that then collects every
 * event), also from a second service that never saw the listener.
 * usage: test_stomp_send_to rabbitmq|activemq */
#include "stomp_test.h"

static const char *DIALECT;

static void send_to_unknown_listener_fails(void **state)
{
    (void)state;
    EV(ev, "StompSendTo", true);
    tally a;
    tally_init(&a, 3);
    ew_manager *m = mgr_new(stomp_test_url(DIALECT), "t1");
    listen_tally(m, &ev, "There", false, 1, &a);
    assert_int_equal(ew_manager_start(m), EW_OK);
    /* Another service, which only sends. */
    ew_manager *other = mgr_new(stomp_test_url(DIALECT), "t2");
    assert_int_equal(ew_manager_start(other), EW_OK);
    for (int64_t i = 0; i < 3; i++)
        assert_int_equal(ew_send_to(other, &ev, "There", &(conf_event){.id = i, .text = "x"}),
                         EW_OK);
    assert_true(tally_wait_all(&a, 30000));
    assert_int_equal(ew_send_to(other, &ev, "Nowhere", &(conf_event){.id = 0, .text = "x"}),
                     EW_ENOTFOUND);
    assert_int_equal(ew_send_to(m, &ev, "Nowhere", &(conf_event){.id = 0, .text = "x"}),
                     EW_ENOTFOUND);
    ew_manager_free(other);
    ew_manager_free(m);
    stomp_test_cleanup(stomp_test_url(DIALECT), ev.name,
                       (const char *const[]){"There", "Nowhere"}, 2);
    tally_free(&a);
}

int main(int argc, char **argv)
{
    if (argc != 2 || (strcmp(argv[1], "rabbitmq") && strcmp(argv[1], "activemq"))) {
        fprintf(stderr, "usage: %s rabbitmq|activemq\n", argv[0]);
        return 2;
    }
    DIALECT = argv[1];
    support_init(stomp_test_url(DIALECT));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(send_to_unknown_listener_fails),
    };
    return cmocka_run_group_tests_name(DIALECT, tests, NULL, NULL);
}
