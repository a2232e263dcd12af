/* stomp+ssl://: TLS through OpenSSL with a CA file (?ca=). A TLS front
 * (the tests' relay, OpenSSL) stands before ActiveMQ's plain STOMP port
 * with the certificates of scripts/brokers/certs.sh made for this run.
 *   - trusting that CA, by IP address and by host name: start, send,
 *     receive, over TLS only;
 *   - trusting another CA: start fails at once and says it is the
 *     certificate;
 *   - verify=false: connects whatever the certificate. */
#include "stomp_test.h"

static const char *dir;
static relay *front;
static int port;

static int setup(void **state)
{
    (void)state;
    dir = support_certs();
    front = support_tls_front(61614, "server");
    port = relay_port(front);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    relay_free(front);
    return 0;
}

static void round_trip(const char *url)
{
    EV(ev, "StompTls", true);
    tally t;
    tally_init(&t, 5);
    ew_manager *m = mgr_new(url, "tls1");
    listen_tally(m, &ev, "L", false, 1, &t);
    assert_int_equal(ew_manager_start(m), EW_OK);
    send_range(m, &ev, 0, 5);
    assert_true(tally_wait_all(&t, 30000));
    ew_manager_free(m);
    tally_free(&t);
}

static void trusted_ca_by_ip_and_by_name(void **state)
{
    (void)state;
    char url[512];
    snprintf(url, sizeof url, "stomp+ssl://127.0.0.1:%d?dialect=activemq&ca=%s/ca.pem", port,
             dir);
    round_trip(url);
    snprintf(url, sizeof url, "stomp+ssl://localhost:%d?dialect=activemq&ca=%s/ca.pem", port,
             dir);
    round_trip(url);
}

static void untrusted_ca_fails_fast_and_says_why(void **state)
{
    (void)state;
    char url[512];
    snprintf(url, sizeof url,
             "stomp+ssl://127.0.0.1:%d?dialect=activemq&ca=%s/wrong-ca.pem", port, dir);
    capture c;
    capture_init(&c);
    ew_options o = {.on_error = capture_error, .error_user = &c, .start_timeout_ms = 20000};
    ew_manager *m = NULL;
    assert_int_equal(ew_manager_new(&m, url, &o), EW_OK);
    int64_t t0 = ewi_now_ms();
    assert_int_equal(ew_manager_start(m), EW_ETLS);
    /* A certificate that is not trusted is final: no waiting out the start
     * timeout. */
    assert_true(ewi_now_ms() - t0 < 5000);
    if (!strstr(ew_last_error(), "certificate"))
        fail_msg("ew_last_error does not name the certificate: \"%s\"", ew_last_error());
    capture_print(&c);
    assert_true(capture_has(&c, "certificate"));
    ew_manager_free(m);
    /* Plain STOMP to the TLS port is no way around it either. */
    snprintf(url, sizeof url, "stomp://127.0.0.1:%d?dialect=activemq&connect_timeout_ms=500",
             port);
    capture_init(&c);
    o.start_timeout_ms = 2000;
    assert_int_equal(ew_manager_new(&m, url, &o), EW_OK);
    assert_int_not_equal(ew_manager_start(m), EW_OK);
    ew_manager_free(m);
}

static void verify_false_connects(void **state)
{
    (void)state;
    char url[512];
    snprintf(url, sizeof url,
             "stomp+ssl://127.0.0.1:%d?dialect=activemq&ca=%s/wrong-ca.pem&verify=false", port,
             dir);
    round_trip(url);
}

int main(void)
{
    support_init("stomp+ssl");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(trusted_ca_by_ip_and_by_name),
        cmocka_unit_test(untrusted_ca_fails_fast_and_says_why),
        cmocka_unit_test(verify_false_connects),
    };
    return cmocka_run_group_tests_name("stomp_tls", tests, setup, teardown);
}
