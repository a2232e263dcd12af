/* rabbitmq[s]:// URL options against the local RabbitMQ and its own TLS
 * listener (127.0.0.1:5671, certificates of scripts/brokers/certs.sh):
 *   - old names (heartbeat in seconds, cacert, queue_expires, reconnect_max,
 *     verify=1) still work: events travel, and each is logged once as a
 *     warning naming the canonical option;
 *   - an unknown option is refused by ew_manager_new with its name and the
 *     options rabbitmq:// takes;
 *   - verify=peer checks the chain only: a host name the certificate does not
 *     carry connects, where verify=name refuses it;
 *   - a client certificate and key are loaded and events travel with them;
 *     a key of another certificate, or a key file that is not there, is
 *     refused by ew_manager_new with EW_EINVAL naming the file. The shared
 *     listener does not ask for client certificates (ssl_options.verify =
 *     verify_none), so the broker's check of the certificate is not
 *     exercised here. */
#include "rmq_test.h"

#include "tls_client_cert.h"

typedef struct warnings {
    pthread_mutex_t mu;
    char text[16384];
    size_t len;
} warnings;

static void keep_warning(void *user, ew_log_level level, const char *msg)
{
    warnings *w = user;
    if (level > EW_LOG_WARN)
        return;
    pthread_mutex_lock(&w->mu);
    int n = snprintf(w->text + w->len, sizeof w->text - w->len, "%s\n", msg);
    if (n > 0 && (size_t)n < sizeof w->text - w->len)
        w->len += (size_t)n;
    pthread_mutex_unlock(&w->mu);
}

static int occurrences(const char *text, const char *needle)
{
    int n = 0;
    for (const char *p = strstr(text, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

static void round_trip(const char *url, const char *base, ew_options *o)
{
    EV(ev, base, true);
    tally t;
    tally_init(&t, 10);
    ew_manager *m = mgr_new_opts(url, "opt1", o);
    listen_tally(m, &ev, "L", true, 1, &t);
    ew_err rc = ew_manager_start(m);
    if (rc != EW_OK)
        fail_msg("start %s: %s", url, ew_strerror(rc));
    send_range(m, &ev, 0, 10);
    assert_true(tally_wait_all(&t, 30000));
    ew_manager_free(m);
    tally_free(&t);
    char q[256];
    snprintf(q, sizeof q, "%s::L.dlq", ev.name);
    raw_delete(q, false);
    raw_delete(ev.name, true);
}

static const char *certs(void)
{
    static char dir[256];
    const char *st = getenv("EW_BROKER_STATE");
    snprintf(dir, sizeof dir, "%s/tls", st && *st ? st : "/tmp/eventwire-brokers");
    return dir;
}

static void old_names_work_and_are_warned_once_each(void **state)
{
    (void)state;
    warnings w = {.len = 0};
    pthread_mutex_init(&w.mu, NULL);
    ew_options o = {.log = keep_warning, .log_user = &w, .log_level = EW_LOG_WARN};
    char url[1024];
    snprintf(url, sizeof url,
             "rabbitmqs://guest:guest@localhost:5671/?heartbeat=5&cacert=%s/ca.pem"
             "&queue_expires=30000&reconnect_max=300&verify=1",
             certs());
    round_trip(url, "RmqOldNames", &o);
    static const char *const says[] = {
        "heartbeat=5 is an old name, read as heartbeat_ms=5000",
        "'cacert' is an old name: use ca=",
        "'queue_expires' is an old name: use per_process_expires_ms=30000",
        "'reconnect_max' is an old name: use reconnect_max_ms=300",
        "verify=1 is an old value: use verify=name"};
    for (size_t i = 0; i < sizeof says / sizeof says[0]; i++)
        if (occurrences(w.text, says[i]) != 1)
            fail_msg("want one warning saying \"%s\"; the log:\n%s", says[i], w.text);
    pthread_mutex_destroy(&w.mu);
}

static void an_unknown_option_is_refused_by_name(void **state)
{
    (void)state;
    client_cert_refused("rabbitmq://guest:guest@127.0.0.1:5672/?heartbeats=5",
                        "unknown option 'heartbeats' (rabbitmq:// takes: prefetch, "
                        "heartbeat_ms, connect_timeout_ms, rpc_timeout_ms");
    client_cert_refused("rabbitmq://guest:guest@127.0.0.1:5672/?dialect=rabbitmq",
                        "unknown option 'dialect' here");
}

static void verify_peer_checks_the_chain_only(void **state)
{
    (void)state;
    char url[1024];
    /* 127.1 is not a dotted quad, so it is a name, and not the
     * certificate's: the chain is good, the name is not. */
    snprintf(url, sizeof url, "rabbitmqs://guest:guest@127.1:5671/?ca=%s/ca.pem&verify=peer",
             certs());
    ew_options o = {0};
    round_trip(url, "RmqVerifyPeer", &o);
    snprintf(url, sizeof url, "rabbitmqs://guest:guest@127.1:5671/?ca=%s/ca.pem", certs());
    ew_options o2 = {.start_timeout_ms = 3000, .log_level = EW_LOG_ERROR};
    ew_manager *m = mgr_new_opts(url, "opt2", &o2);
    assert_int_not_equal(ew_manager_start(m), EW_OK);
    ew_manager_free(m);
}

static void a_client_certificate_is_loaded(void **state)
{
    (void)state;
    client_cert cc;
    client_cert_make(&cc);
    char url[2048];
    snprintf(url, sizeof url, "rabbitmqs://guest:guest@localhost:5671/?ca=%s/ca.pem&cert=%s&key=%s",
             cc.ca_dir, cc.cert, cc.key);
    ew_options o = {0};
    round_trip(url, "RmqClientCert", &o);
    snprintf(url, sizeof url, "rabbitmqs://guest:guest@localhost:5671/?ca=%s/ca.pem&cert=%s&key=%s",
             cc.ca_dir, cc.cert, cc.other_key);
    client_cert_refused(url, "does not belong to the certificate");
    snprintf(url, sizeof url,
             "rabbitmqs://guest:guest@localhost:5671/?ca=%s/ca.pem&cert=%s&key=%s.missing",
             cc.ca_dir, cc.cert, cc.key);
    client_cert_refused(url, ".missing: No such file");
    client_cert_free(&cc);
}

int main(void)
{
    support_init(rmq_test_url());
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(old_names_work_and_are_warned_once_each),
        cmocka_unit_test(an_unknown_option_is_refused_by_name),
        cmocka_unit_test(verify_peer_checks_the_chain_only),
        cmocka_unit_test(a_client_certificate_is_loaded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
