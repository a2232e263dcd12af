/* stomp+ssl://: TLS through OpenSSL with a CA file (?ca=). The local brokers
 * have no TLS listener, so tests/amqp/proxy.sh puts socat in front of
 * ActiveMQ's STOMP port with a freshly made CA and server certificate.
 *   - trusting that CA, by IP address and by host name: start, send,
 *     receive, over TLS only;
 *   - trusting another CA: start fails at once and says it is the
 *     certificate;
 *   - verify=false: connects whatever the certificate.
 * usage: test_stomp_tls tests/amqp/proxy.sh */
#include "stomp_test.h"

static const char *PROXY;
static char dir[256];
static int port;

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/eventwire-stomp-tls-%d", (int)getpid());
    port = 20000 + (int)((getpid() * 7) % 20000);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s start tls %s %d 61614 >/dev/null", PROXY, dir, port);
    if (system(cmd) != 0) {
        fprintf(stderr, "proxy.sh start failed (openssl and socat needed)\n");
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s stop %s; rm -rf %s", PROXY, dir, dir);
    return system(cmd) == 0 ? 0 : -1;
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
             "stomp+ssl://127.0.0.1:%d?dialect=activemq&ca=%s/other-ca.pem", port, dir);
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
             "stomp+ssl://127.0.0.1:%d?dialect=activemq&ca=%s/other-ca.pem&verify=false", port,
             dir);
    round_trip(url);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s tests/amqp/proxy.sh\n", argv[0]);
        return 2;
    }
    PROXY = argv[1];
    support_init("stomp+ssl");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(trusted_ca_by_ip_and_by_name),
        cmocka_unit_test(untrusted_ca_fails_fast_and_says_why),
        cmocka_unit_test(verify_false_connects),
    };
    return cmocka_run_group_tests_name("stomp_tls", tests, setup, teardown);
}
