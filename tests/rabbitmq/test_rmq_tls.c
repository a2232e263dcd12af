/* rabbitmqs:// through a real TLS handshake: a TLS front (the tests'
 * relay, OpenSSL) before the test RabbitMQ's plain port, with the
 * certificates of scripts/brokers/certs.sh made for this run. Events travel
 * with the CA trusted and host name verification on; a client trusting
 * another CA refuses the server at start; a certificate for another host is
 * refused by the name check. */
#include "rmq_test.h"

static const char *dir;
static relay *front, *other_front; /* server.pem; other-host.pem (other.example) */
static int port;

static int setup(void **state)
{
    (void)state;
    dir = support_certs();
    front = support_tls_front(5672, "server");
    other_front = support_tls_front(5672, "other-host");
    port = relay_port(front);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    relay_free(front);
    relay_free(other_front);
    return 0;
}

static void events_travel_over_tls(void **state)
{
    (void)state;
    EV(ev, "Tls", true);
    char url[512];
    snprintf(url, sizeof url, "rabbitmqs://guest:guest@127.0.0.1:%d/?cacert=%s/ca.pem", port,
             dir);
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

static void an_untrusted_server_is_refused(void **state)
{
    (void)state;
    char url[512];
    snprintf(url, sizeof url, "rabbitmqs://guest:guest@127.0.0.1:%d/?cacert=%s/wrong-ca.pem",
             port, dir);
    capture cap;
    capture_init(&cap);
    /* An untrusted certificate stays so: start fails at once with EW_ETLS,
     * long before its 30 s start timeout, and says why. */
    ew_options o = {.on_error = capture_error, .error_user = &cap, .start_timeout_ms = 30000,
                    .log_level = EW_LOG_ERROR};
    ew_manager *m = mgr_new_opts(url, "s1", &o);
    int64_t t0 = ewi_now_ms();
    assert_int_equal(ew_manager_start(m), EW_ETLS);
    int64_t took = ewi_now_ms() - t0;
    print_message("failed after %lld ms: %s\n", (long long)took, cap.text);
    assert_true(took < 15000);
    assert_true(capture_has(&cap, "verification failed"));
    char want[128];
    snprintf(want, sizeof want, "cannot connect to 127.0.0.1:%d", port);
    assert_true(capture_has(&cap, want));
    ew_manager_free(m);
}

static void a_certificate_for_another_host_is_refused(void **state)
{
    (void)state;
    /* This front presents a certificate from the trusted CA, but for
     * other.example only: the name check must refuse it. */
    char url[512];
    snprintf(url, sizeof url, "rabbitmqs://guest:guest@127.0.0.1:%d/?cacert=%s/ca.pem",
             relay_port(other_front), dir);
    capture cap;
    capture_init(&cap);
    ew_options o = {.on_error = capture_error, .error_user = &cap, .start_timeout_ms = 30000,
                    .log_level = EW_LOG_ERROR};
    ew_manager *m = mgr_new_opts(url, "s1", &o);
    int64_t t0 = ewi_now_ms();
    assert_int_equal(ew_manager_start(m), EW_ETLS);
    int64_t took = ewi_now_ms() - t0;
    print_message("failed after %lld ms: %s\n", (long long)took, cap.text);
    assert_true(took < 15000);
    assert_true(capture_has(&cap, "verification failed"));
    ew_manager_free(m);
    /* verify=0 accepts it (and says so in the URL). */
    snprintf(url, sizeof url, "rabbitmqs://guest:guest@127.0.0.1:%d/?verify=0",
             relay_port(other_front));
    m = mgr_new(url, "s1");
    assert_int_equal(ew_manager_start(m), EW_OK);
    ew_manager_free(m);
}

static void a_missing_ca_file_is_refused_at_creation(void **state)
{
    (void)state;
    char url[512];
    snprintf(url, sizeof url, "rabbitmqs://guest:guest@127.0.0.1:%d/?cacert=%s/nope.pem", port,
             dir);
    ew_manager *m = NULL;
    ew_options o = {.log_level = EW_LOG_ERROR};
    assert_int_equal(ew_manager_new(&m, url, &o), EW_EINVAL);
    assert_null(m);
}

int main(void)
{
    support_init(rmq_test_url());
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(events_travel_over_tls),
        cmocka_unit_test(an_untrusted_server_is_refused),
        cmocka_unit_test(a_certificate_for_another_host_is_refused),
        cmocka_unit_test(a_missing_ca_file_is_refused_at_creation),
    };
    return cmocka_run_group_tests_name("rabbitmqs", tests, setup, teardown);
}
