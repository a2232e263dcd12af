/* A service that stops while its listener still has messages in hand (read
 * ahead, not handled) gives them back to the broker at once: another
 * instance of the listener gets every one of them promptly, nothing is lost.
 * On activemq a STOMP NACK would dead-letter, so the transport gives them
 * back by closing the subscription; it delivers nothing new meanwhile, so
 * that this happens as soon as core settled what it holds.
 * usage: test_stomp_requeue rabbitmq|activemq */
#include "stomp_test.h"

static const char *DIALECT;

static size_t handled_by_either(tally *a, tally *b)
{
    size_t n = 0;
    pthread_mutex_lock(&a->mu);
    pthread_mutex_lock(&b->mu);
    for (size_t i = 0; i < a->n; i++)
        n += a->seen[i] || b->seen[i];
    pthread_mutex_unlock(&b->mu);
    pthread_mutex_unlock(&a->mu);
    return n;
}

static void stop_gives_unhandled_messages_back(void **state)
{
    (void)state;
    EV(ev, "StompRequeue", true);
    enum { N = 30 };
    tally a, b;
    tally_init(&a, N);
    tally_init(&b, N);
    tally_slow(&a, 200); /* most of them are still waiting at the stop */
    ew_options o = {.server_name = "q1", .start_timeout_ms = 20000};
    ew_manager *m1 = NULL, *m2 = NULL;
    assert_int_equal(ew_manager_new(&m1, stomp_test_url(DIALECT), &o), EW_OK);
    listen_tally(m1, &ev, "L", false, 1, &a);
    assert_int_equal(ew_manager_start(m1), EW_OK);
    send_range(m1, &ev, 0, N);
    int64_t deadline = ewi_now_ms() + 20000;
    while (handled_by_either(&a, &b) < 2 && ewi_left_ms(deadline) > 0)
        usleep(20000);
    int64_t t0 = ewi_now_ms();
    assert_int_equal(ew_manager_stop(m1, 10000), EW_OK);
    int64_t stop_ms = ewi_now_ms() - t0;
    size_t by_first = handled_by_either(&a, &b);
    print_message("stop took %lld ms; %zu of %d handled before it\n", (long long)stop_ms,
                  by_first, N);
    assert_true(by_first < N); /* some were in hand, unhandled */
    assert_true(stop_ms < 5000);

    /* Another instance of the same listener takes over. */
    o.server_name = "q2";
    assert_int_equal(ew_manager_new(&m2, stomp_test_url(DIALECT), &o), EW_OK);
    listen_tally(m2, &ev, "L", false, 4, &b);
    t0 = ewi_now_ms();
    assert_int_equal(ew_manager_start(m2), EW_OK);
    deadline = ewi_now_ms() + 20000;
    while (handled_by_either(&a, &b) < N && ewi_left_ms(deadline) > 0)
        usleep(20000);
    print_message("the rest arrived within %lld ms\n", (long long)(ewi_now_ms() - t0));
    assert_int_equal(handled_by_either(&a, &b), N);
    ew_manager_free(m2);
    ew_manager_free(m1);
    stomp_test_cleanup(stomp_test_url(DIALECT), ev.name, (const char *const[]){"L"}, 1);
    tally_free(&a);
    tally_free(&b);
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
        cmocka_unit_test(stop_gives_unhandled_messages_back),
    };
    return cmocka_run_group_tests_name(DIALECT, tests, NULL, NULL);
}
