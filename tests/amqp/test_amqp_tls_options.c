/* amqps:// with a client certificate (?cert=, ?key=) against RabbitMQ's own
 * TLS listener (127.0.0.1:5671, certificates of scripts/brokers/certs.sh):
 *   - the certificate and key are loaded into proton's SSL domain and events
 *     travel (the rabbitmq dialect's declarations go over TLS to the same
 *     port);
 *   - a key of another certificate, or a key file that is not there, is
 *     refused by ew_manager_new with EW_EINVAL naming the file.
 * The shared listener does not ask for client certificates
 * (ssl_options.verify = verify_none), so the broker's check of the
 * certificate is not exercised here. */
#include "amqp_test.h"

#include "tls_client_cert.h"

static void events_travel_with_a_client_certificate(void **state)
{
    (void)state;
    client_cert cc;
    client_cert_make(&cc);
    char url[2048];
    snprintf(url, sizeof url,
             "amqps://guest:guest@localhost:5671?dialect=rabbitmq&ca=%s/ca.pem&cert=%s&key=%s",
             cc.ca_dir, cc.cert, cc.key);
    char name[64];
    snprintf(name, sizeof name, "TlsClientCert_%s", support_run_id);
    ew_event_desc ev = {.type = &conf_event_type, .name = name, .durable = true};
    tally t;
    tally_init(&t, 10);
    ew_manager *m = mgr_new(url, "cc");
    listen_tally(m, &ev, "L", false, 1, &t);
    assert_int_equal(ew_manager_start(m), EW_OK);
    send_range(m, &ev, 0, 10);
    assert_true(tally_wait_all(&t, 20000));
    ew_manager_free(m);
    tally_free(&t);
    char q[160];
    snprintf(q, sizeof q, "%s::L", name);
    rmq_delete("queue", q);
    rmq_delete("queue", strcat(q, ".dlq"));
    rmq_delete("exchange", name);

    snprintf(url, sizeof url,
             "amqps://guest:guest@localhost:5671?dialect=rabbitmq&ca=%s/ca.pem&cert=%s&key=%s",
             cc.ca_dir, cc.cert, cc.other_key);
    client_cert_refused(url, "cannot be used");
    snprintf(url, sizeof url,
             "amqps://guest:guest@localhost:5671?dialect=rabbitmq&ca=%s/ca.pem&cert=%s"
             "&key=%s.missing",
             cc.ca_dir, cc.cert, cc.key);
    client_cert_refused(url, ".missing: No such file");
    client_cert_free(&cc);
}

int main(void)
{
    support_init(amqp_test_url());
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(events_travel_with_a_client_certificate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
