/* URL options and declarations a mixed deployment relies on:
 *   - ?prefetch=N (core's option, parsed from every URL) is accepted by
 *     stomp:// and events travel with it;
 *   - rabbitmq only: a non-durable event used first through rabbitmq:// and
 *     then through stomp:// on the same broker works (both declare the
 *     exchange durable; a differing flag would be a 406 PRECONDITION_FAILED);
 *   - rabbitmq only, against RabbitMQ's STOMP TLS listener (127.0.0.1:61612,
 *     certificates of scripts/brokers/certs.sh): a client certificate and key
 *     (?cert=, ?key=) are loaded and events travel with them; a key of
 *     another certificate, or a key file that is not there, is refused by
 *     ew_manager_new with EW_EINVAL naming the file. The shared listener does
 *     not ask for client certificates (ssl_options.verify = verify_none), so
 *     the broker's check of the certificate is not exercised here.
 * usage: test_stomp_options rabbitmq|activemq */
#include "stomp_test.h"

#include "tls_client_cert.h"

static const char *DIALECT;

static void prefetch_in_the_url_is_accepted(void **state)
{
    (void)state;
    EV(ev, "StompPrefetch", true);
    char url[512];
    snprintf(url, sizeof url, "%s&prefetch=5", stomp_test_url(DIALECT));
    ew_manager *m = NULL;
    ew_options o = {.server_name = "p1", .start_timeout_ms = 20000};
    ew_err rc = ew_manager_new(&m, url, &o);
    if (rc != EW_OK)
        fail_msg("ew_manager_new(%s): %s", url, ew_strerror(rc));
    tally t;
    tally_init(&t, 40);
    listen_tally(m, &ev, "L", false, 4, &t);
    assert_int_equal(ew_manager_start(m), EW_OK);
    send_range(m, &ev, 0, 40);
    assert_true(tally_wait_all(&t, 30000));
    ew_manager_free(m);
    tally_free(&t);
    stomp_test_cleanup(url, ev.name, (const char *const[]){"L"}, 1);
}

static void non_durable_event_shared_with_rabbitmq_transport(void **state)
{
    (void)state;
    if (strcmp(DIALECT, "rabbitmq") != 0)
        return; /* the exchange declaration is the rabbitmq dialect's alone */
    EV(ev, "StompMixed", false);
    const char *rurl = getenv("EW_TEST_RABBITMQ_URL");
    if (!rurl || !*rurl)
        rurl = "rabbitmq://guest:guest@127.0.0.1:5672/";
    capture c;
    capture_init(&c);
    ew_options o1 = {.server_name = "r1", .start_timeout_ms = 20000};
    ew_options o2 = {.server_name = "s1", .start_timeout_ms = 20000, .on_error = capture_error,
                     .error_user = &c};
    ew_manager *r = NULL, *s = NULL;
    assert_int_equal(ew_manager_new(&r, rurl, &o1), EW_OK);
    tally tr, ts;
    tally_init(&tr, 6);
    tally_init(&ts, 6);
    listen_tally(r, &ev, "ViaAmqp", false, 1, &tr);
    assert_int_equal(ew_manager_start(r), EW_OK); /* declares exchange E first */
    send_range(r, &ev, 0, 3);
    assert_true(tally_wait_ids(&tr, 0, 3, 30000));

    assert_int_equal(ew_manager_new(&s, stomp_test_url(DIALECT), &o2), EW_OK);
    listen_tally(s, &ev, "ViaStomp", false, 1, &ts);
    ew_err rc = ew_manager_start(s);
    capture_print(&c);
    assert_int_equal(rc, EW_OK);
    /* Both ways: a stomp:// send reaches both listeners, and so does a
     * rabbitmq:// one. */
    send_range(s, &ev, 3, 6);
    send_range(r, &ev, 0, 3);
    assert_true(tally_wait_all(&tr, 30000));
    assert_true(tally_wait_all(&ts, 30000));
    assert_false(capture_has(&c, "PRECONDITION_FAILED"));
    ew_manager_free(s);
    ew_manager_free(r);
    tally_free(&tr);
    tally_free(&ts);
    stomp_test_cleanup(stomp_test_url(DIALECT), ev.name,
                       (const char *const[]){"ViaAmqp", "ViaStomp"}, 2);
}

static void client_certificate_over_tls(void **state)
{
    (void)state;
    if (strcmp(DIALECT, "rabbitmq") != 0)
        return; /* the TLS listener is RabbitMQ's */
    client_cert cc;
    client_cert_make(&cc);
    char url[2048];
    snprintf(url, sizeof url,
             "stomp+ssl://guest:guest@localhost:61612/?dialect=rabbitmq&ca=%s/ca.pem"
             "&cert=%s&key=%s",
             cc.ca_dir, cc.cert, cc.key);
    EV(ev, "StompClientCert", true);
    tally t;
    tally_init(&t, 10);
    ew_manager *m = mgr_new(url, "cc1");
    listen_tally(m, &ev, "L", false, 1, &t);
    assert_int_equal(ew_manager_start(m), EW_OK);
    send_range(m, &ev, 0, 10);
    assert_true(tally_wait_all(&t, 30000));
    ew_manager_free(m);
    tally_free(&t);
    stomp_test_cleanup(stomp_test_url(DIALECT), ev.name, (const char *const[]){"L"}, 1);

    /* A key of another certificate, and a key file that is not there. */
    snprintf(url, sizeof url,
             "stomp+ssl://guest:guest@localhost:61612/?dialect=rabbitmq&ca=%s/ca.pem"
             "&cert=%s&key=%s",
             cc.ca_dir, cc.cert, cc.other_key);
    client_cert_refused(url, "does not belong to the certificate");
    snprintf(url, sizeof url,
             "stomp+ssl://guest:guest@localhost:61612/?dialect=rabbitmq&ca=%s/ca.pem"
             "&cert=%s&key=%s.missing",
             cc.ca_dir, cc.cert, cc.key);
    client_cert_refused(url, ".missing: No such file");
    client_cert_free(&cc);
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
        cmocka_unit_test(prefetch_in_the_url_is_accepted),
        cmocka_unit_test(non_durable_event_shared_with_rabbitmq_transport),
        cmocka_unit_test(client_certificate_over_tls),
    };
    return cmocka_run_group_tests_name(DIALECT, tests, NULL, NULL);
}
