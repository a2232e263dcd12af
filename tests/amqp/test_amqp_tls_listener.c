/* amqps:// against RabbitMQ's own TLS listener (127.0.0.1:5671, where the
 * AMQP 1.0 plugin serves too) with the certificates of
 * scripts/brokers/certs.sh, not a TLS front:
 *   - by the name localhost, verification on (the default verify=name):
 *     events travel, the rabbitmq dialect's 0-9-1 topology connection goes
 *     over TLS to 5671 with the same CA;
 *   - by IP address: verify=name matches the certificate's IP address
 *     (IP:127.0.0.1) and events travel; verify=peer works too;
 *   - the wrong CA, and a name not in the certificate (127.1), are refused
 *     at once with EW_ETLS, saying it is the certificate.
 * usage: test_amqp_tls_listener [CERT_DIR] (default $EW_BROKER_STATE/tls) */
#include "amqp_test.h"


enum { TLS_PORT = 5671 };

static char certs[512];

static int setup(void **state)
{
    (void)state;
    return broker_tls_ready(certs, (const int[]){TLS_PORT, 0});
}

static void url_for(char *buf, size_t len, const char *host, const char *ca,
                    const char *extra)
{
    snprintf(buf, len, "amqps://guest:guest@%s:%d?dialect=rabbitmq&ca=%s/%s%s", host,
             TLS_PORT, certs, ca, extra);
}

static void round_trip(const char *url, const char *base)
{
    char name[64];
    snprintf(name, sizeof name, "%s_%s", base, support_run_id);
    ew_event_desc ev = {.type = &conf_event_type, .name = name, .durable = true};
    tally t;
    tally_init(&t, 20);
    ew_manager *m = mgr_new(url, "tl");
    listen_tally(m, &ev, "L", false, 1, &t);
    assert_int_equal(ew_manager_start(m), EW_OK);
    send_range(m, &ev, 0, 20);
    assert_true(tally_wait_all(&t, 20000));
    ew_manager_free(m);
    tally_free(&t);
    rmq_cleanup(0, name, (const char *const[]){"L", NULL});
}

static void refused(const char *url, const char *why)
{
    capture c;
    capture_init(&c);
    ew_options o = {.on_error = capture_error, .error_user = &c, .log = capture_log,
                    .log_user = &c, .start_timeout_ms = 8000};
    ew_manager *m = mgr_new_opts(url, "tr", &o);
    int64_t t0 = ewi_now_ms();
    assert_int_equal(ew_manager_start(m), EW_ETLS);
    /* A certificate problem is final: no retrying until the timeout. */
    assert_true(ewi_now_ms() - t0 < 4000);
    if (!capture_has(&c, why))
        fail_msg("the failure does not say '%s':\n%s", why, c.text);
    if (!strstr(ew_last_error(), why))
        fail_msg("ew_last_error does not say '%s': \"%s\"", why, ew_last_error());
    assert_false(capture_has(&c, "guest:guest"));
    ew_manager_free(m);
}

static void events_travel_verified_by_name(void **state)
{
    (void)state;
    char url[800];
    url_for(url, sizeof url, "localhost", "ca.pem", "");
    round_trip(url, "TlsName");
}

static void by_ip_address_name_check_and_verify_peer_work(void **state)
{
    (void)state;
    char url[800];
    url_for(url, sizeof url, "127.0.0.1", "ca.pem", "");
    round_trip(url, "TlsIp");
    url_for(url, sizeof url, "127.0.0.1", "ca.pem", "&verify=peer");
    round_trip(url, "TlsPeer");
}

static void the_wrong_ca_is_refused(void **state)
{
    (void)state;
    char url[800];
    url_for(url, sizeof url, "localhost", "wrong-ca.pem", "");
    refused(url, "certificate not trusted");
}

static void a_name_not_in_the_certificate_is_refused(void **state)
{
    (void)state;
    char url[800];
    url_for(url, sizeof url, "127.1", "ca.pem", "");
    refused(url, "certificate not trusted");
}

int main(int argc, char **argv)
{
    if (argc > 1) {
        snprintf(certs, sizeof certs, "%s", argv[1]);
    } else {
        const char *st = getenv("EW_BROKER_STATE");
        snprintf(certs, sizeof certs, "%s/tls", st && *st ? st : "/tmp/eventwire-brokers");
    }
    support_init(amqp_test_url());
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(events_travel_verified_by_name),
        cmocka_unit_test(by_ip_address_name_check_and_verify_peer_work),
        cmocka_unit_test(the_wrong_ca_is_refused),
        cmocka_unit_test(a_name_not_in_the_certificate_is_refused),
    };
    return cmocka_run_group_tests_name("amqps_listener", tests, setup, NULL);
}
