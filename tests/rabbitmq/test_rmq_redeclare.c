/* After a reconnect, rabbitmq:// declares the exchanges of the events it
 * sent again (a restarted broker may have lost them), all in one round
 * trip; an exchange the broker refuses is reported with its event and the
 * others are still declared. The manager talks to RabbitMQ through a relay
 * (tests/faults/relay.c) that the test breaks and restores: only this
 * test's connection is cut. */
#include "rmq_test.h"
#include "relay.h"

#include <stdatomic.h>

enum { NEV = 5 };

static atomic_int reconnected;

static void watch_log(void *user, ew_log_level level, const char *msg)
{
    (void)user, (void)level;
    if (strstr(msg, "reconnected after"))
        atomic_store(&reconnected, 1);
}

/* Whether exchange name exists (a passive declare on a fresh connection). */
static bool exchange_exists(const char *name)
{
    amqp_connection_state_t c = raw_connect();
    amqp_exchange_declare(c, 1, amqp_cstring_bytes(name), amqp_cstring_bytes("topic"), 1, 0,
                          0, 0, amqp_empty_table);
    bool ok = raw_ok(c);
    if (ok)
        raw_close(c);
    else
        amqp_destroy_connection(c);
    return ok;
}

static void exchanges_come_back_after_a_reconnect(void **state)
{
    (void)state;
    char names[NEV][64];
    ew_event_desc evs[NEV];
    for (int i = 0; i < NEV; i++) {
        snprintf(names[i], sizeof names[i], "Redeclare%d_%s", i, support_run_id);
        evs[i] = (ew_event_desc){.type = &conf_event_type, .name = names[i]};
    }
    relay *r = relay_new(0, 5672, true);
    if (!r)
        fail_msg("cannot start the relay");
    char url[256];
    snprintf(url, sizeof url, "rabbitmq://guest:guest@127.0.0.1:%d/", relay_port(r));
    capture cap;
    capture_init(&cap);
    atomic_store(&reconnected, 0);
    ew_options o = {.on_error = capture_error, .error_user = &cap, .log = watch_log,
                    .log_level = EW_LOG_WARN};
    ew_manager *m = mgr_new_opts(url, "rd1", &o);
    assert_int_equal(ew_manager_start(m), EW_OK);
    for (int i = 0; i < NEV; i++)
        assert_int_equal(ew_send(m, &evs[i], &(conf_event){.id = i, .text = "x"}), EW_OK);

    /* The broker loses them; one comes back as a direct exchange, which the
     * manager's declaration of it (a topic exchange) cannot match. */
    for (int i = 0; i < NEV; i++)
        raw_delete(names[i], true);
    amqp_connection_state_t c = raw_connect();
    amqp_exchange_declare(c, 1, amqp_cstring_bytes(names[2]), amqp_cstring_bytes("direct"), 0,
                          0, 0, 0, amqp_empty_table);
    if (!raw_ok(c))
        fail_msg("cannot declare the direct exchange %s", names[2]);
    raw_close(c);

    relay_break(r);
    int64_t t0 = ewi_now_ms();
    while (!capture_has(&cap, "lost") && ewi_now_ms() - t0 < 15000)
        ewi_sleep_ms(20);
    if (!capture_has(&cap, "lost"))
        fail_msg("the cut was not noticed within 15 s; reports:\n%s", cap.text);
    relay_restore(r);
    t0 = ewi_now_ms();
    while (!atomic_load(&reconnected) && ewi_now_ms() - t0 < 30000)
        ewi_sleep_ms(20);
    if (!atomic_load(&reconnected))
        fail_msg("no reconnect within 30 s; reports:\n%s", cap.text);

    for (int i = 0; i < NEV; i++)
        if (i != 2 && !exchange_exists(names[i]))
            fail_msg("exchange %s was not declared again after the reconnect; reports:\n%s",
                     names[i], cap.text);
    if (!capture_has(&cap, names[2]))
        fail_msg("the refused declaration of %s was not reported; reports:\n%s", names[2],
                 cap.text);
    print_message("reports:\n%s", cap.text);
    /* The others still send. */
    for (int i = 0; i < NEV; i++)
        if (i != 2)
            assert_int_equal(ew_send(m, &evs[i], &(conf_event){.id = 10 + i, .text = "y"}),
                             EW_OK);
    ew_manager_free(m);
    relay_free(r);
    for (int i = 0; i < NEV; i++)
        raw_delete(names[i], true);
}

int main(void)
{
    support_init(rmq_test_url());
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(exchanges_come_back_after_a_reconnect),
    };
    return cmocka_run_group_tests_name("rabbitmq redeclare", tests, NULL, NULL);
}
