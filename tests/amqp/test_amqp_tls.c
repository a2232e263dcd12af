/* amqps://: TLS (OpenSSL, below proton) with a CA file (?ca=), and for
 * the rabbitmq dialect the topology connection over TLS too. A TLS front
 * (the tests' relay, OpenSSL) stands before the local RabbitMQ's plain
 * port with the certificates of scripts/brokers/certs.sh made for this run.
 *   - trusting that CA: start, send, receive, over TLS only;
 *   - trusting another CA: start fails, and says it is the certificate;
 *   - an IP address with the name check: matched against the certificate's
 *     IP addresses, so 127.0.0.1 connects; verify=peer connects too. */
#include "amqp_test.h"

static const char *dir;
static relay *front;
static int port;

static int setup(void **state)
{
    (void)state;
    dir = support_certs();
    front = support_tls_front(5672, "server");
    port = relay_port(front);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    relay_free(front);
    return 0;
}

/* host "localhost": the certificate's DNS name (the front listens on
 * 127.0.0.1 only). */
static void url_with_ca(char *buf, size_t len, const char *host, const char *ca)
{
    ewi_url u;
    char err[128];
    if (ewi_url_parse(amqp_test_url(), &u, err, sizeof err) != EW_OK)
        fail_msg("bad EW_TEST_AMQP_URL: %s", err);
    snprintf(buf, len, "amqps://%s:%s@%s:%d?dialect=rabbitmq&ca=%s/%s",
             u.user ? u.user : "guest", u.password ? u.password : "guest", host, port,
             dir, ca);
    ewi_url_free(&u);
}

static void trusted_ca_round_trip(void **state)
{
    (void)state;
    EV(ev, "Tls", true);
    char url[600];
    url_with_ca(url, sizeof url, "localhost", "ca.pem");
    tally t;
    tally_init(&t, 20);
    ew_manager *m = mgr_new(url, "t1");
    listen_tally(m, &ev, "L", false, 1, &t);
    assert_int_equal(ew_manager_start(m), EW_OK);
    send_range(m, &ev, 0, 20);
    assert_true(tally_wait_all(&t, 20000));
    assert_int_equal(tally_dups(&t), 0);
    ew_manager_free(m);
    tally_free(&t);
    rmq_cleanup(0, ev.name, (const char *const[]){"L", NULL});
}

static void untrusted_certificate_fails_start(void **state)
{
    (void)state;
    char url[600];
    url_with_ca(url, sizeof url, "localhost", "wrong-ca.pem");
    capture c;
    capture_init(&c);
    ew_options o = {.on_error = capture_error, .error_user = &c, .log = capture_log,
                    .log_user = &c, .start_timeout_ms = 3000};
    ew_manager *m = mgr_new_opts(url, "t2", &o);
    int64_t t0 = ewi_now_ms();
    ew_err rc = ew_manager_start(m);
    capture_print(&c);
    assert_int_equal(rc, EW_ETLS);
    if (!strstr(ew_last_error(), "certificate"))
        fail_msg("ew_last_error does not name the certificate: \"%s\"", ew_last_error());
    /* An untrusted certificate is final: start does not retry it. */
    assert_true(ewi_now_ms() - t0 < 2500);
    /* The reason names the certificate, not a vague connection failure. */
    assert_true(capture_has(&c, "certificate not trusted"));
    ew_manager_free(m);
}

static void ip_host_with_name_check_connects(void **state)
{
    (void)state;
    char url[600];
    url_with_ca(url, sizeof url, "127.0.0.1", "ca.pem");
    ew_manager *m = mgr_new(url, "t3");
    ew_err rc = ew_manager_start(m);
    if (rc != EW_OK)
        fail_msg("amqps://127.0.0.1 with the name check: %s: %s", ew_strerror(rc),
                 ew_last_error());
    ew_manager_free(m);
    char peer[700];
    snprintf(peer, sizeof peer, "%s&verify=peer", url);
    m = mgr_new(peer, "t4");
    assert_int_equal(ew_manager_start(m), EW_OK);
    ew_manager_free(m);
}

int main(void)
{
    support_init(amqp_test_url());
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(trusted_ca_round_trip),
        cmocka_unit_test(untrusted_certificate_fails_start),
        cmocka_unit_test(ip_host_with_name_check_connects),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
