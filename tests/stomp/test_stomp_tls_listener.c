/* stomp+ssl:// against the test RabbitMQ's own STOMP TLS listener
 * (127.0.0.1:61612, started by scripts/brokers/rabbitmq.sh with the
 * certificates of scripts/brokers/certs.sh). dialect=rabbitmq also opens an
 * AMQP 0-9-1 connection for declarations: with TLS it goes to 5671 (the
 * AMQP TLS listener) with the same CA and checks.
 *   - trusting the test CA, verification on, by IP address and by name:
 *     events travel;
 *   - trusting the wrong CA: start fails at once and names the certificate;
 *   - a host name the certificate does not carry ("127.1" reaches
 *     127.0.0.1 but the certificate only names localhost): refused.
 * A broker without the TLS listener fails these tests.
 * usage: stomp_tls_listener [CERT_DIR]   (default: $EW_BROKER_STATE/tls,
 * else /tmp/eventwire-brokers/tls) */
#include "stomp_test.h"

#define STOMPS_PORT 61612

static char certs[512];

static int setup(void **state)
{
    (void)state;
    return broker_tls_ready(certs, (const int[]){STOMPS_PORT, 5671, 0});
}

static void round_trip(const char *host)
{
    EV(ev, "StompTlsL", true);
    char url[1024];
    snprintf(url, sizeof url,
             "stomp+ssl://guest:guest@%s:%d/?dialect=rabbitmq&ca=%s/ca.pem", host,
             STOMPS_PORT, certs);
    tally t;
    tally_init(&t, 20);
    ew_manager *m = mgr_new(url, "tls1");
    listen_tally(m, &ev, "L", false, 1, &t);
    assert_int_equal(ew_manager_start(m), EW_OK);
    send_range(m, &ev, 0, 20);
    assert_true(tally_wait_all(&t, 30000));
    assert_int_equal(tally_dups(&t), 0);
    ew_manager_free(m);
    tally_free(&t);
    const char *ls[] = {"L"};
    stomp_test_cleanup(stomp_test_url("rabbitmq"), ev.name, ls, 1);
}

static void events_travel_with_verification_by_ip(void **state)
{
    (void)state;
    round_trip("127.0.0.1");
}

static void events_travel_with_verification_by_name(void **state)
{
    (void)state;
    round_trip("localhost");
}

/* Start against URL fails with EW_ETLS before its timeout (a
 * certificate that does not verify is final), and says why, to the caller
 * too (ew_last_error). */
static void refused(const char *url, const char *why)
{
    capture c;
    capture_init(&c);
    ew_options o = {.on_error = capture_error, .error_user = &c, .start_timeout_ms = 20000,
                    .log_level = EW_LOG_ERROR};
    ew_manager *m = mgr_new_opts(url, "tls1", &o);
    EV(ev, "StompTlsRefused", false);
    tally t;
    tally_init(&t, 1);
    listen_tally(m, &ev, "L", false, 1, &t);
    int64_t t0 = ewi_now_ms();
    assert_int_equal(ew_manager_start(m), EW_ETLS);
    assert_true(ewi_now_ms() - t0 < 10000);
    capture_print(&c);
    assert_true(capture_has(&c, why));
    if (!strstr(ew_last_error(), why))
        fail_msg("ew_last_error does not say '%s': \"%s\"", why, ew_last_error());
    ew_manager_free(m);
    tally_free(&t);
}

static void the_wrong_ca_is_refused(void **state)
{
    (void)state;
    char url[1024];
    snprintf(url, sizeof url,
             "stomp+ssl://guest:guest@127.0.0.1:%d/?dialect=rabbitmq&ca=%s/wrong-ca.pem",
             STOMPS_PORT, certs);
    refused(url, "certificate");
}

static void a_host_name_not_in_the_certificate_is_refused(void **state)
{
    (void)state;
    char url[1024];
    snprintf(url, sizeof url,
             "stomp+ssl://guest:guest@127.1:%d/?dialect=rabbitmq&ca=%s/ca.pem", STOMPS_PORT,
             certs);
    refused(url, "certificate");
}

int main(int argc, char **argv)
{
    if (argc > 1) {
        snprintf(certs, sizeof certs, "%s", argv[1]);
    } else {
        const char *st = getenv("EW_BROKER_STATE");
        snprintf(certs, sizeof certs, "%s/tls", st && *st ? st : "/tmp/eventwire-brokers");
    }
    support_init("stomp+ssl");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(events_travel_with_verification_by_ip),
        cmocka_unit_test(events_travel_with_verification_by_name),
        cmocka_unit_test(the_wrong_ca_is_refused),
        cmocka_unit_test(a_host_name_not_in_the_certificate_is_refused),
    };
    return cmocka_run_group_tests_name("stomp_tls_listener", tests, setup, NULL);
}
