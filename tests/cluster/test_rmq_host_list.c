/* A rabbitmq:// URL with several hosts, on the shared broker: three relays
 * in front of it play three nodes, and breaking a relay plays a node going.
 * The transport connects to the first node that answers, moves on to the
 * next one (not back to the one that just went) when its connection goes,
 * wraps around the list, waits out a round where none answers, and keeps
 * handling events on every node. A list on a transport that takes one host
 * (or on stomp:// and amqp:// with another dialect than rabbitmq), and a
 * list with an empty entry, are refused by ew_manager_new. */
#include "support.h"
#include "relay.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

typedef struct node_log {
    _Atomic int port;     /* the port of the last node connected to */
    _Atomic int connects;
} node_log;

static void node_log_fn(void *user, ew_log_level level, const char *msg)
{
    (void)level;
    node_log *nl = user;
    const char *at = strstr(msg, "connected to node ");
    if (at) {
        const char *colon = strrchr(at, ':');
        const char *paren = strstr(at, " (");
        if (colon && paren && colon < paren) {
            atomic_store(&nl->port, atoi(colon + 1));
            atomic_fetch_add(&nl->connects, 1);
        }
    }
}

/* The manager is connected to node `want` (0-based) of relays r. */
static void on_node(node_log *nl, relay *const *r, int want, const char *when)
{
    int port = atomic_load(&nl->port);
    if (port != relay_port(r[want]))
        fail_msg("%s: connected to port %d, expected node %d (port %d); nodes are ports "
                 "%d, %d, %d",
                 when, port, want + 1, relay_port(r[want]), relay_port(r[0]), relay_port(r[1]),
                 relay_port(r[2]));
}

/* Sends event id and waits until it is handled. */
static void send_and_see(ew_manager *m, const ew_event_desc *ev, tally *t, int64_t id)
{
    conf_event e = {.id = id, .text = "hosts"};
    ew_err rc = ew_send(m, ev, &e);
    if (rc != EW_OK)
        fail_msg("ew_send(%lld): %s", (long long)id, ew_strerror(rc));
    if (!tally_wait_ids(t, (size_t)id, (size_t)id + 1, 20000))
        fail_msg("event %lld was not handled within 20 s", (long long)id);
}

/* scheme: "rabbitmq", "stomp" (dialect=rabbitmq; its administration
 * connection goes straight to the broker) or "amqp" (dialect=rabbitmq: the
 * relays carry AMQP 1.0 and the administration's AMQP 0-9-1 alike). */
static void moves_through_the_list_on(const char *scheme)
{
    bool stomp = strcmp(scheme, "stomp") == 0;
    int target = stomp ? 61613 : 5672;
    relay *r[3];
    r[0] = relay_new(0, target, false); /* node 1 is down at start */
    r[1] = relay_new(0, target, true);
    r[2] = relay_new(0, target, true);
    for (int i = 0; i < 3; i++)
        assert_non_null(r[i]);
    char url[512];
    snprintf(url, sizeof url,
             "%s://guest:guest@127.0.0.1:%d,127.0.0.1:%d,127.0.0.1:%d/"
             "?reconnect_max_ms=500%s",
             scheme, relay_port(r[0]), relay_port(r[1]), relay_port(r[2]),
             strcmp(scheme, "rabbitmq") == 0 ? ""
             : stomp                         ? "&dialect=rabbitmq&amqp_port=5672"
                                             : "&dialect=rabbitmq");
    node_log nl = {0};
    capture c;
    capture_init(&c);
    ew_options o = {.log = node_log_fn, .log_user = &nl, .log_level = EW_LOG_INFO,
                    .on_error = capture_error, .error_user = &c,
                    .start_timeout_ms = 20000, .send_timeout_ms = 30000};
    ew_manager *m = mgr_new_opts(url, "hosts", &o);
    char base[32];
    snprintf(base, sizeof base, "HostList_%s", scheme);
    EV(ev, base, true);
    tally t;
    tally_init(&t, 16);
    listen_tally(m, &ev, "Count", false, 1, &t);
    assert_int_equal(ew_manager_start(m), EW_OK);

    /* Node 1 refuses: the first that answers is node 2. */
    on_node(&nl, r, 1, "at start, node 1 down");
    send_and_see(m, &ev, &t, 0);

    /* Node 2 goes while node 1 is back: the next one, node 3, comes first. */
    relay_restore(r[0]);
    int before = atomic_load(&nl.connects);
    relay_break(r[1]);
    WAIT_FOR(atomic_load(&nl.connects) > before, 20000, "no reconnect after node 2 went");
    on_node(&nl, r, 2, "after node 2 went");
    send_and_see(m, &ev, &t, 1);

    /* Node 3 goes: the list wraps around to node 1. */
    before = atomic_load(&nl.connects);
    relay_break(r[2]);
    WAIT_FOR(atomic_load(&nl.connects) > before, 20000, "no reconnect after node 3 went");
    on_node(&nl, r, 0, "after node 3 went");
    send_and_see(m, &ev, &t, 2);

    /* Every node goes: rounds fail until one is back, and the events sent
     * meanwhile arrive. */
    before = atomic_load(&nl.connects);
    size_t lost_before = capture_count(&c, EW_EDISCONNECTED);
    relay_break(r[0]);
    WAIT_FOR(capture_count(&c, EW_EDISCONNECTED) > lost_before, 20000,
             "the loss of node 1 was not reported");
    conf_event e = {.id = 3, .text = "hosts"};
    assert_int_equal(ew_send_async(m, &ev, NULL, &e, NULL, NULL), EW_OK);
    relay_restore(r[1]);
    WAIT_FOR(atomic_load(&nl.connects) > before, 20000, "no reconnect once node 2 was back");
    on_node(&nl, r, 1, "after every node went and node 2 came back");
    if (!tally_wait_ids(&t, 3, 4, 20000))
        fail_msg("the event sent while every node was down was not handled");
    send_and_see(m, &ev, &t, 4);
    /* At least once: a delivery whose acknowledgement died with its node's
     * connection comes again from the next one. */
    print_message("handled twice: %zu\n", tally_dups(&t));

    ew_manager_free(m);
    tally_free(&t);
    for (int i = 0; i < 3; i++)
        relay_free(r[i]);
    const char *ls[] = {"Count", NULL};
    rmq_cleanup(0, ev_name, ls);
}

static void moves_through_the_list(void **state)
{
    (void)state;
    moves_through_the_list_on("rabbitmq");
}

static void stomp_moves_through_the_list(void **state)
{
    (void)state;
    moves_through_the_list_on("stomp");
}

static void amqp_moves_through_the_list(void **state)
{
    (void)state;
    moves_through_the_list_on("amqp");
}

/* A certificate for DNS:localhost only, signed by the test CA, made in the
 * certificates' directory: localhost-only.pem and .key. */
static void make_localhost_only_cert(char *pem, size_t pemlen, char *key, size_t keylen)
{
    const char *dir = support_certs();
    snprintf(pem, pemlen, "%s/localhost-only.pem", dir);
    snprintf(key, keylen, "%s/localhost-only.key", dir);
    if (access(pem, R_OK) == 0 && access(key, R_OK) == 0)
        return;
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "cd '%s' && openssl req -newkey rsa:2048 -nodes -sha256 -keyout localhost-only.key "
             "-out lo.csr -subj /CN=localhost 2>/dev/null && "
             "printf 'basicConstraints = CA:FALSE\nextendedKeyUsage = serverAuth\n"
             "subjectAltName = DNS:localhost\n' > lo.ext && "
             "openssl x509 -req -in lo.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
             "-CAserial lo.srl -days 1 -sha256 -extfile lo.ext -out localhost-only.pem "
             "2>/dev/null && rm -f lo.csr lo.ext lo.srl",
             dir);
    if (system(cmd) != 0)
        fail_msg("could not make a certificate for localhost only: %s", cmd);
}

/* TLS on a host list: node 1 (127.0.0.1) is down, node 2 (localhost) has a
 * certificate for localhost only. The check must be made against the node
 * dialled: against node 1's name, 127.0.0.1, the certificate would be
 * refused (EW_ETLS at start). The administration connection of the stomp
 * and amqp rabbitmq dialects goes over the same kind of list. */
static void tls_checks_the_node_dialled_on(const char *scheme)
{
    bool stomp = strcmp(scheme, "stomp+ssl") == 0;
    bool amqp = strcmp(scheme, "amqps") == 0;
    char pem[1024], key[1024], ca[1024];
    make_localhost_only_cert(pem, sizeof pem, key, sizeof key);
    support_cert(ca, sizeof ca, "ca.pem");
    relay *down = relay_new(0, 5672, false);
    relay *front = relay_new_tls(0, stomp ? 61613 : 5672, true, pem, key);
    relay *admin = stomp ? relay_new_tls(0, 5672, true, pem, key) : NULL;
    assert_non_null(down);
    assert_non_null(front);
    char extra[128] = "";
    if (stomp)
        snprintf(extra, sizeof extra, "&dialect=rabbitmq&amqp_port=%d,%d", relay_port(down),
                 relay_port(admin));
    else if (amqp)
        snprintf(extra, sizeof extra, "&dialect=rabbitmq");
    char url[2048];
    snprintf(url, sizeof url,
             "%s://guest:guest@127.0.0.1:%d,localhost:%d/?ca=%s&reconnect_max_ms=500%s", scheme,
             relay_port(down), relay_port(front), ca, extra);
    node_log nl = {0};
    capture c;
    capture_init(&c);
    ew_options o = {.log = node_log_fn, .log_user = &nl, .log_level = EW_LOG_INFO,
                    .on_error = capture_error, .error_user = &c,
                    .start_timeout_ms = 20000, .send_timeout_ms = 30000};
    ew_manager *m = mgr_new_opts(url, "hosts", &o);
    char base[32];
    snprintf(base, sizeof base, "HostListTls_%s", amqp ? "amqps" : stomp ? "stomps" : "rmqs");
    EV(ev, base, true);
    tally t;
    tally_init(&t, 4);
    listen_tally(m, &ev, "Count", false, 1, &t);
    ew_err rc = ew_manager_start(m);
    if (rc != EW_OK) {
        capture_print(&c);
        fail_msg("%s: start on node 2 (localhost, a certificate for localhost only): %s", url,
                 ew_strerror(rc));
    }
    if (atomic_load(&nl.port) != relay_port(front))
        fail_msg("connected to port %d, expected node 2 (port %d)", atomic_load(&nl.port),
                 relay_port(front));
    send_and_see(m, &ev, &t, 0);
    ew_manager_free(m);
    tally_free(&t);
    relay_free(down);
    relay_free(front);
    if (admin)
        relay_free(admin);
    const char *ls[] = {"Count", NULL};
    rmq_cleanup(0, ev_name, ls);
}

static void tls_checks_the_node_dialled(void **state)
{
    (void)state;
    tls_checks_the_node_dialled_on("rabbitmqs");
    tls_checks_the_node_dialled_on("stomp+ssl");
    tls_checks_the_node_dialled_on("amqps");
}

static void lists_refused_where_they_do_not_apply(void **state)
{
    (void)state;
    ew_manager *m = NULL;
    ew_options o = {0};
    assert_int_equal(ew_manager_new(&m, "rabbitmq://127.0.0.1:5672,,127.0.0.1:5673/", &o),
                     EW_EINVAL);
    assert_null(m);
    assert_int_equal(ew_manager_new(&m, "rabbitmq://127.0.0.1:5672,127.0.0.1:0/", &o),
                     EW_EINVAL);
    assert_null(m);
    /* stomp:// takes a list as a RabbitMQ cluster or an Artemis primary
     * and its backups, not with ActiveMQ 5 (tests/cluster's artemis_failover
     * tests the Artemis pair). */
    assert_int_equal(
        ew_manager_new(&m, "stomp://127.0.0.1:61613,127.0.0.1:61614?dialect=activemq", &o),
        EW_EINVAL);
    assert_null(m);
    /* One administration port for every host, or one per host. */
    assert_int_equal(ew_manager_new(&m, "stomp://127.0.0.1:61613,127.0.0.1:61614"
                                        "?dialect=rabbitmq&amqp_port=5672,5673,5674",
                                    &o),
                     EW_EINVAL);
    assert_null(m);
    assert_int_equal(ew_manager_new(&m, "local://a,b", &o), EW_EINVAL);
    assert_null(m);
}

int main(void)
{
    support_init("rabbitmq://guest:guest@127.0.0.1:5672/");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(lists_refused_where_they_do_not_apply),
        cmocka_unit_test(moves_through_the_list),
        cmocka_unit_test(stomp_moves_through_the_list),
        cmocka_unit_test(amqp_moves_through_the_list),
        cmocka_unit_test(tls_checks_the_node_dialled),
    };
    return cmocka_run_group_tests_name("rabbitmq: host lists", tests, NULL, NULL);
}
