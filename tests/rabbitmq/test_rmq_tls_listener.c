/* rabbitmqs:// against the test RabbitMQ's own TLS listener (127.0.0.1:5671,
 * started by scripts/brokers/rabbitmq.sh with the certificates of
 * scripts/brokers/certs.sh: a test CA, a server certificate for localhost
 * and 127.0.0.1, and a wrong CA that signed nothing).
 *   - trusting the test CA, verification on, by IP address and by name:
 *     events travel;
 *   - trusting the wrong CA: start fails at once with EW_ETLS and says the
 *     certificate did not verify;
 *   - a host name the certificate does not carry ("127.1" reaches 127.0.0.1
 *     but is a name, not an address, and the certificate only names
 *     localhost): refused the same way.
 * A broker without the TLS listener fails these tests.
 * usage: rabbitmq_tls_listener [CERT_DIR]   (default: $EW_BROKER_STATE/tls,
 * else /tmp/eventwire-brokers/tls) */
#include "rmq_test.h"


#define TLS_PORT 5671

static char certs[512];

static int setup(void **state)
{
    (void)state;
    return broker_tls_ready(certs, (const int[]){TLS_PORT, 0});
}

static void round_trip(const char *host)
{
    EV(ev, "TlsL", true);
    char url[1024];
    snprintf(url, sizeof url, "rabbitmqs://guest:guest@%s:%d/?cacert=%s/ca.pem", host,
             TLS_PORT, certs);
    tally t;
    tally_init(&t, 20);
    ew_manager *m = mgr_new(url, "s1");
    listen_tally(m, &ev, "L", false, 1, &t);
    assert_int_equal(ew_manager_start(m), EW_OK);
    send_range(m, &ev, 0, 20);
    assert_true(tally_wait_all(&t, 30000));
    assert_int_equal(tally_dups(&t), 0);
    ew_manager_free(m);
    tally_free(&t);
    rmq_cleanup(0, ev.name, (const char *const[]){"L", NULL});
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

/* Start against URL must fail with EW_ETLS at once (long before its 30 s
 * start timeout: a certificate does not become trusted by retrying), and the error
 * handler must say which check refused the certificate (librabbitmq's
 * texts: "SSL peer cert verification failed" for the chain, "SSL hostname
 * verification failed" for the name). */
static void refused(const char *url, const char *why)
{
    capture cap;
    capture_init(&cap);
    ew_options o = {.on_error = capture_error, .error_user = &cap, .start_timeout_ms = 30000,
                    .log_level = EW_LOG_ERROR};
    ew_manager *m = mgr_new_opts(url, "s1", &o);
    EV(ev, "TlsRefused", false);
    tally t;
    tally_init(&t, 1);
    listen_tally(m, &ev, "L", false, 1, &t);
    int64_t t0 = ewi_now_ms();
    assert_int_equal(ew_manager_start(m), EW_ETLS);
    assert_true(ewi_now_ms() - t0 < 15000);
    print_message("%s", cap.text);
    assert_true(capture_has(&cap, why));
    ew_manager_free(m);
    tally_free(&t);
}

static void the_wrong_ca_is_refused(void **state)
{
    (void)state;
    char url[1024];
    snprintf(url, sizeof url, "rabbitmqs://guest:guest@127.0.0.1:%d/?cacert=%s/wrong-ca.pem",
             TLS_PORT, certs);
    refused(url, "peer cert verification failed");
    snprintf(url, sizeof url, "rabbitmqs://guest:guest@localhost:%d/?cacert=%s/wrong-ca.pem",
             TLS_PORT, certs);
    refused(url, "peer cert verification failed");
}

static void a_host_name_not_in_the_certificate_is_refused(void **state)
{
    (void)state;
    char url[1024];
    snprintf(url, sizeof url, "rabbitmqs://guest:guest@127.1:%d/?cacert=%s/ca.pem", TLS_PORT,
             certs);
    refused(url, "hostname verification failed");
}

static void without_a_ca_the_test_ca_is_not_trusted(void **state)
{
    (void)state;
    /* No cacert: the system's CAs, which never signed the test CA. */
    char url[256];
    snprintf(url, sizeof url, "rabbitmqs://guest:guest@127.0.0.1:%d/", TLS_PORT);
    refused(url, "peer cert verification failed");
}

int main(int argc, char **argv)
{
    if (argc > 1) {
        snprintf(certs, sizeof certs, "%s", argv[1]);
    } else {
        const char *st = getenv("EW_BROKER_STATE");
        snprintf(certs, sizeof certs, "%s/tls", st && *st ? st : "/tmp/eventwire-brokers");
    }
    support_init(rmq_test_url());
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(events_travel_with_verification_by_ip),
        cmocka_unit_test(events_travel_with_verification_by_name),
        cmocka_unit_test(the_wrong_ca_is_refused),
        cmocka_unit_test(a_host_name_not_in_the_certificate_is_refused),
        cmocka_unit_test(without_a_ca_the_test_ca_is_not_trusted),
    };
    return cmocka_run_group_tests_name("rabbitmqs_listener", tests, setup, NULL);
}
