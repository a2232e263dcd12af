/* Dialect addressing, the README's AMQP 1.0 columns: what each broker sees
 * for sends, listeners and dead letters, with both queue namings. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "transports/amqp/amqp10.h"

static amqp10_options opts(amqp10_dialect d, amqp10_naming n)
{
    amqp10_options o;
    memset(&o, 0, sizeof o);
    o.dialect = d;
    o.naming = n;
    return o;
}

static void expect(ew_err rc, const amqp10_addr *a, const char *addr, amqp10_cap cap)
{
    assert_int_equal(rc, EW_OK);
    assert_string_equal(a->addr, addr);
    assert_int_equal(a->cap, cap);
}

static void artemis_uses_fqqn_with_the_event_inside_the_queue(void **state)
{
    (void)state;
    amqp10_options o = opts(AMQP10_DIALECT_ARTEMIS, AMQP10_NAMING_EVENTWIRE);
    amqp10_addr a;
    char q[EW_MAX_QUEUE_NAME];
    expect(amqp10_target_of(&o, EWI_DEST_EVENT, "order.created", NULL, &a), &a,
           "order.created", AMQP10_CAP_TOPIC);
    /* Artemis reads every "::" as address::queue: its queue is E:L. */
    expect(amqp10_target_of(&o, EWI_DEST_LISTENER, "E", "E::L", &a), &a, "E::E:L",
           AMQP10_CAP_TOPIC);
    expect(amqp10_target_of(&o, EWI_DEST_DLQ, "E", "E::L.dlq", &a), &a, "E.dlq::E:L.dlq",
           AMQP10_CAP_QUEUE);
    assert_int_equal(amqp10_listener_queue(&o, "E", "E::L-s1", q, sizeof q), EW_OK);
    assert_string_equal(q, "E:L-s1");
    expect(amqp10_source_of_listener(&o, "E", q, &a), &a, "E::E:L-s1", AMQP10_CAP_TOPIC);
    expect(amqp10_source_of_dlq(&o, "E", "E::L.dlq", &a), &a, "E.dlq::E:L.dlq",
           AMQP10_CAP_QUEUE);
    expect(amqp10_target_of(&o, EWI_DEST_LISTENER, "order.created", "order.created::Audit",
                          &a), &a, "order.created::order.created:Audit", AMQP10_CAP_TOPIC);
    /* A queue that is not the event's is refused, not mangled. */
    assert_int_equal(amqp10_listener_queue(&o, "E", "F::L", q, sizeof q), EW_EINVAL);
}

static void rabbitmq_sends_to_the_exchange_and_reads_declared_queues(void **state)
{
    (void)state;
    amqp10_options o = opts(AMQP10_DIALECT_RABBITMQ, AMQP10_NAMING_EVENTWIRE);
    amqp10_addr a;
    char q[EW_MAX_QUEUE_NAME];
    expect(amqp10_target_of(&o, EWI_DEST_EVENT, "E", NULL, &a), &a, "/exchange/E/E",
           AMQP10_CAP_NONE);
    expect(amqp10_target_of(&o, EWI_DEST_LISTENER, "E", "E::L", &a), &a, "/amq/queue/E::L",
           AMQP10_CAP_NONE);
    expect(amqp10_target_of(&o, EWI_DEST_DLQ, "E", "E::L.dlq", &a), &a,
           "/amq/queue/E::L.dlq", AMQP10_CAP_NONE);
    assert_int_equal(amqp10_listener_queue(&o, "E", "E::L", q, sizeof q), EW_OK);
    expect(amqp10_source_of_listener(&o, "E", q, &a), &a, "/amq/queue/E::L", AMQP10_CAP_NONE);
    expect(amqp10_source_of_dlq(&o, "E", "E::L.dlq", &a), &a, "/amq/queue/E::L.dlq",
           AMQP10_CAP_NONE);
    /* Never a /exchange or /topic source: those make queues nobody deletes. */
    assert_null(strstr(a.addr, "/exchange/"));
}

static void aspyx_naming_drops_the_event_from_the_queue(void **state)
{
    (void)state;
    amqp10_options o = opts(AMQP10_DIALECT_ARTEMIS, AMQP10_NAMING_ASPYX);
    amqp10_addr a;
    char q[EW_MAX_QUEUE_NAME];
    assert_int_equal(amqp10_listener_queue(&o, "HelloEvent", "HelloEvent::HelloListener",
                                         q, sizeof q),
                     EW_OK);
    assert_string_equal(q, "HelloListener");
    expect(amqp10_source_of_listener(&o, "HelloEvent", q, &a), &a,
           "HelloEvent::HelloListener", AMQP10_CAP_TOPIC);
    expect(amqp10_target_of(&o, EWI_DEST_LISTENER, "E", "E::L", &a), &a, "E::L",
           AMQP10_CAP_TOPIC);
    /* Dead letters keep eventwire's names. */
    expect(amqp10_target_of(&o, EWI_DEST_DLQ, "E", "E::L.dlq", &a), &a, "E.dlq::E:L.dlq",
           AMQP10_CAP_QUEUE);
    assert_int_equal(amqp10_listener_queue(&o, "E", "E::L-s2", q, sizeof q), EW_OK);
    assert_string_equal(q, "L-s2");

    o = opts(AMQP10_DIALECT_RABBITMQ, AMQP10_NAMING_ASPYX);
    expect(amqp10_target_of(&o, EWI_DEST_LISTENER, "E", "E::L", &a), &a, "/amq/queue/L",
           AMQP10_CAP_NONE);
    /* A queue that is not the event's is refused, not mangled. */
    assert_int_equal(amqp10_listener_queue(&o, "E", "F::L", q, sizeof q), EW_EINVAL);
    assert_int_equal(amqp10_listener_queue(&o, "E", "E::", q, sizeof q), EW_EINVAL);
}

static void names_that_do_not_fit_are_refused(void **state)
{
    (void)state;
    amqp10_options o = opts(AMQP10_DIALECT_ARTEMIS, AMQP10_NAMING_EVENTWIRE);
    char q[8];
    assert_int_equal(amqp10_listener_queue(&o, "Event", "Event::Listener", q, sizeof q),
                     EW_EINVAL);
    amqp10_addr a;
    assert_int_equal(amqp10_target_of(&o, EWI_DEST_LISTENER, "E", NULL, &a), EW_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(artemis_uses_fqqn_with_the_event_inside_the_queue),
        cmocka_unit_test(rabbitmq_sends_to_the_exchange_and_reads_declared_queues),
        cmocka_unit_test(aspyx_naming_drops_the_event_from_the_queue),
        cmocka_unit_test(names_that_do_not_fit_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
