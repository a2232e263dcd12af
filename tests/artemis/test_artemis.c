/* ActiveMQ Artemis as the artemis dialects use it, checked through the
 * broker's own management (the instance's `artemis queue stat --json`, run
 * by scripts/brokers/artemis.sh ctl) as well as through eventwire:
 *   - listener L of E is the durable MULTICAST queue E:L on address E
 *     (Artemis cannot hold "E::L": it reads every "::" as address::queue),
 *     and two events' listeners of one name have a queue each;
 *   - a per_process queue is deleted by the broker after its process;
 *   - dead letters land in the ANYCAST queue E:L.dlq on address E.dlq;
 *   - send_to reaches one listener's queue only;
 *   - Artemis's delivery count feeds ew_delivery_attempt (AMQP): a message
 *     given back by a stopping manager is attempt 2 for the next one (over
 *     STOMP it is handled again, but Artemis does not flag it);
 *   - a 2 MiB body (a large message in Artemis's large-messages store)
 *     round-trips;
 *   - a wrong password fails ew_manager_start at once with EW_EAUTH;
 *   - TLS against the Artemis TLS acceptor with the test CA works, and a
 *     CA that did not sign the broker's certificate is refused at once.
 *
 *   test_artemis URL ARTEMIS_SH
 *
 * URL is an amqp://…?dialect=artemis or stomp://…?dialect=artemis URL with
 * user and password; the TLS acceptors are on EW_ARTEMIS_AMQPS_PORT (5675)
 * and EW_ARTEMIS_STOMPS_PORT (61625), the test CA in $EW_BROKER_STATE/tls. */
#include "support.h"

#include <dirent.h>
#include <jansson.h>

static const char *URL, *SH;
static bool AMQP;

/* ---- the broker's management ------------------------------------------ */

/* The queues whose name contains `part`, as `artemis queue stat --json`
 * reports them (a JSON array; caller json_decref's). */
static json_t *queues(const char *part)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "%s ctl queue stat --json --silent --maxRows 1000 --field NAME "
             "--operation CONTAINS --value '%s' 2>&1",
             SH, part);
    FILE *p = popen(cmd, "r");
    if (!p)
        fail_msg("popen(%s) failed", cmd);
    size_t cap = 1 << 16, len = 0;
    char *out = malloc(cap);
    size_t n;
    while (out && (n = fread(out + len, 1, cap - len - 1, p)) > 0) {
        len += n;
        if (len + 1 == cap) {
            char *bigger = realloc(out, cap *= 2);
            if (!bigger) {
                free(out);
                out = NULL;
            }
            out = bigger;
        }
    }
    int st = pclose(p);
    if (!out)
        fail_msg("out of memory");
    out[len] = '\0';
    /* The CLI prints a connection line before the JSON. */
    const char *js = strchr(out, '{');
    json_error_t jerr;
    json_t *root = js ? json_loads(js, 0, &jerr) : NULL;
    json_t *data = root ? json_incref(json_object_get(root, "data")) : NULL;
    json_decref(root);
    if (st != 0 || !json_is_array(data))
        fail_msg("`%s` failed (status %d):\n%s", cmd, st, out);
    free(out);
    return data;
}

/* The entry of queue `name` in list, or NULL. */
static json_t *queue_in(json_t *list, const char *name)
{
    size_t i;
    json_t *q;
    json_array_foreach(list, i, q) {
        const char *n = json_string_value(json_object_get(q, "name"));
        if (n && strcmp(n, name) == 0)
            return q;
    }
    return NULL;
}

static const char *field(json_t *q, const char *key)
{
    const char *v = json_string_value(json_object_get(q, key));
    return v ? v : "";
}

/* Asserts queue name exists with these attributes (NULL: any). */
static void expect_queue(json_t *list, const char *name, const char *address,
                         const char *routing, const char *durable, const char *added)
{
    json_t *q = queue_in(list, name);
    if (!q) {
        char *dump = json_dumps(list, JSON_INDENT(1));
        fail_msg("the broker has no queue %s; it has: %s", name, dump ? dump : "?");
    }
    if (address && strcmp(field(q, "address"), address) != 0)
        fail_msg("queue %s is on address %s, not %s", name, field(q, "address"), address);
    if (routing && strcmp(field(q, "routingType"), routing) != 0)
        fail_msg("queue %s routes %s, not %s", name, field(q, "routingType"), routing);
    if (durable && strcmp(field(q, "durable"), durable) != 0)
        fail_msg("queue %s: durable %s, not %s", name, field(q, "durable"), durable);
    if (added && strcmp(field(q, "messagesAdded"), added) != 0)
        fail_msg("queue %s: %s messages added, not %s", name, field(q, "messagesAdded"),
                 added);
}

/* URL with extra query parameters appended. */
static void url_plus(char *buf, size_t len, const char *extra)
{
    snprintf(buf, len, "%s%s%s", URL, strchr(URL, '?') ? "&" : "?", extra);
}

/* ---- topology ----------------------------------------------------------- */

static void listener_queue_is_multicast_on_the_event_address(void **state)
{
    (void)state;
    EV(ev, "ArtTopo", true);
    EV(ev2, "ArtTopo2", true);
    tally a, b, a2;
    tally_init(&a, 3);
    tally_init(&b, 3);
    tally_init(&a2, 3);
    ew_manager *m = mgr_new(URL, "t1");
    listen_tally(m, &ev, "A", false, 1, &a);
    listen_tally(m, &ev, "B", false, 1, &b);
    /* Another event's listener of the same name: its own queue. */
    listen_tally(m, &ev2, "A", false, 1, &a2);
    assert_int_equal(ew_manager_start(m), EW_OK);
    send_range(m, &ev, 0, 3);
    send_range(m, &ev2, 0, 2);
    assert_true(tally_wait_all(&a, 30000));
    assert_true(tally_wait_all(&b, 30000));
    assert_true(tally_wait_ids(&a2, 0, 2, 30000));
    ew_manager_free(m);

    char q[128];
    json_t *list = queues(support_run_id);
    snprintf(q, sizeof q, "%s:A", ev.name);
    expect_queue(list, q, ev.name, "MULTICAST", "true", "3");
    snprintf(q, sizeof q, "%s:B", ev.name);
    expect_queue(list, q, ev.name, "MULTICAST", "true", "3");
    snprintf(q, sizeof q, "%s:A", ev2.name);
    expect_queue(list, q, ev2.name, "MULTICAST", "true", "2");
    /* Listener queues stay when their listener is gone. */
    snprintf(q, sizeof q, "%s:A", ev.name);
    assert_string_equal(field(queue_in(list, q), "autoDelete"), "false");
    json_decref(list);
    tally_free(&a);
    tally_free(&b);
    tally_free(&a2);
}

/* ---- per_process ------------------------------------------------------- */

static void per_process_queue_goes_after_its_process(void **state)
{
    (void)state;
    EV(ev, "ArtPerProc", true);
    char url[600], q[128];
    url_plus(url, sizeof url, "per_process_expires_ms=1000");
    tally t;
    tally_init(&t, 2);
    ew_manager *m = mgr_new(url, "pp1");
    listen_tally(m, &ev, "Cache", true, 1, &t);
    assert_int_equal(ew_manager_start(m), EW_OK);
    send_range(m, &ev, 0, 2);
    assert_true(tally_wait_all(&t, 30000));
    snprintf(q, sizeof q, "%s:Cache-pp1", ev.name);
    json_t *list = queues(ev.name);
    expect_queue(list, q, ev.name, "MULTICAST", NULL, "2");
    assert_string_equal(field(queue_in(list, q), "autoDelete"), "true");
    json_decref(list);
    ew_manager_free(m);

    /* Deleted within the expiry (1 s) plus the broker's scan period (5 s). */
    int64_t deadline = ewi_now_ms() + 60000;
    bool gone = false;
    while (!gone && ewi_now_ms() < deadline) {
        list = queues(ev.name);
        gone = queue_in(list, q) == NULL;
        json_decref(list);
    }
    if (!gone)
        fail_msg("per_process queue %s still exists 60 s after its manager stopped", q);
    tally_free(&t);
}

/* ---- dead letters ------------------------------------------------------ */

static void dead_letters_land_in_the_anycast_dlq(void **state)
{
    (void)state;
    EV(ev, "ArtDlq", true);
    tally t;
    tally_init(&t, 1);
    t.fail_always = 0;
    ew_manager *m = mgr_new(URL, "d1");
    ew_listener_desc d = {.event = &ev, .name = "F", .retry = {.attempts = 1}};
    assert_int_equal(ew_listen(m, &d, tally_listener, tref(&t, "d1")), EW_OK);
    assert_int_equal(ew_manager_start(m), EW_OK);
    send_range(m, &ev, 0, 1);
    dlq_box box = {0};
    size_t got = 0;
    ew_dead_letter_options dopt = {.event = &ev, .listener = "F", .max = 1, .timeout_ms = 30000,
                                  .fn = dlq_collect, .user = &box};
    assert_int_equal(ew_dead_letters(m, &dopt, &got), EW_OK);
    assert_int_equal(got, 1);
    assert_int_equal(box.ids[0], 0);
    assert_string_equal(box.reason[0], "listener-failed");
    ew_manager_free(m);

    /* The letter was taken: the queue had it, on its own anycast address. */
    char q[128], addr[128];
    snprintf(q, sizeof q, "%s:F.dlq", ev.name);
    snprintf(addr, sizeof addr, "%s.dlq", ev.name);
    json_t *list = queues(ev.name);
    expect_queue(list, q, addr, "ANYCAST", "true", "1");
    json_decref(list);
    tally_free(&t);
}

/* ---- send_to ------------------------------------------------------------ */

static void send_to_reaches_one_queue(void **state)
{
    (void)state;
    EV(ev, "ArtSendTo", true);
    tally a, b;
    tally_init(&a, 3);
    tally_init(&b, 3);
    ew_manager *m = mgr_new(URL, "s1");
    listen_tally(m, &ev, "A", false, 1, &a);
    listen_tally(m, &ev, "B", false, 1, &b);
    assert_int_equal(ew_manager_start(m), EW_OK);
    for (int64_t i = 0; i < 3; i++)
        assert_int_equal(ew_send_to(m, &ev, "A", &(conf_event){.id = i, .text = "a"}),
                         EW_OK);
    assert_true(tally_wait_all(&a, 30000));
    /* No listener C: an error, and no queue made for it. */
    assert_int_equal(ew_send_to(m, &ev, "C", &(conf_event){.id = 0, .text = "c"}),
                     EW_ENOTFOUND);
    ew_manager_free(m);

    char q[128];
    json_t *list = queues(ev.name);
    snprintf(q, sizeof q, "%s:A", ev.name);
    expect_queue(list, q, ev.name, "MULTICAST", "true", "3");
    snprintf(q, sizeof q, "%s:B", ev.name);
    expect_queue(list, q, ev.name, "MULTICAST", "true", "0");
    snprintf(q, sizeof q, "%s:C", ev.name);
    if (queue_in(list, q))
        fail_msg("a send to the missing listener C created queue %s", q);
    json_decref(list);
    assert_int_equal(tally_total(&b), 0);
    tally_free(&a);
    tally_free(&b);
}

/* ---- the broker's delivery count --------------------------------------- */

static void broker_redelivery_is_the_next_attempt(void **state)
{
    (void)state;
    EV(ev, "ArtAttempt", true);
    tally t1, t2;
    tally_init(&t1, 1);
    tally_init(&t2, 1);
    t1.fail_always = 0;
    /* The first manager's listener fails attempt 1 and waits out a long
     * backoff; stopping then gives the message back to the broker. */
    ew_manager *m1 = mgr_new(URL, "r1");
    ew_listener_desc d = {.event = &ev, .name = "W",
                          .retry = {.attempts = 5, .backoff_ms = 600000}};
    assert_int_equal(ew_listen(m1, &d, tally_listener, tref(&t1, "r1")), EW_OK);
    assert_int_equal(ew_manager_start(m1), EW_OK);
    send_range(m1, &ev, 0, 1);
    pthread_mutex_lock(&t1.mu);
    while (t1.finished < 1)
        pthread_cond_wait(&t1.cv, &t1.mu);
    pthread_mutex_unlock(&t1.mu);
    assert_int_equal(ew_manager_stop(m1, 10000), EW_OK);
    ew_manager_free(m1);

    /* A new manager shares nothing with the first but the broker. */
    ew_manager *m2 = mgr_new(URL, "r2");
    d.retry = (ew_retry_policy){.attempts = 5, .backoff_ms = 10};
    assert_int_equal(ew_listen(m2, &d, tally_listener, tref(&t2, "r2")), EW_OK);
    assert_int_equal(ew_manager_start(m2), EW_OK);
    assert_true(tally_wait_all(&t2, 30000));
    ew_manager_free(m2);
    uint32_t seen = t2.max_attempt_seen[0];
    tally_free(&t1);
    tally_free(&t2);
    /* AMQP: the stopping manager settles it modified (delivery-failed), and
     * Artemis hands it out again with delivery-count 1. STOMP: the stopping
     * manager UNSUBSCRIBEs, and Artemis then redelivers it without
     * redelivered:true (it flags only the oldest unacknowledged message of a
     * connection that ended), so the attempt count cannot know. */
    if (AMQP && seen != 2)
        fail_msg("the message given back once came as attempt %u, not 2", seen);
    if (!AMQP)
        print_message("stomp: the message given back came as attempt %u\n", seen);
}

/* ---- a large message ------------------------------------------------------ */

typedef struct big_box {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t len;
    bool same;
    int got;
} big_box;

static char *big_text;
enum { BIG = 2 * 1024 * 1024 };

static ew_err big_listener(ew_delivery *d, const void *event, void *user)
{
    (void)d;
    big_box *b = user;
    const conf_event *e = event;
    pthread_mutex_lock(&b->mu);
    b->len = strlen(e->text);
    b->same = b->len == BIG && memcmp(e->text, big_text, BIG) == 0;
    b->got++;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
    return EW_OK;
}

/* The names of the files in the instance's large-messages directory, one
 * per line (another test may add and remove its own meanwhile: names, not
 * counts, tell ours). */
static void large_files(char *names, size_t len)
{
    const char *st = getenv("EW_BROKER_STATE");
    char dir[512];
    snprintf(dir, sizeof dir, "%s/artemis/instance/data/large-messages",
             st && *st ? st : "/tmp/eventwire-brokers");
    names[0] = '\0';
    DIR *dp = opendir(dir);
    if (!dp)
        return;
    size_t used = 0;
    struct dirent *e;
    while ((e = readdir(dp)))
        if (e->d_name[0] != '.') {
            int n = snprintf(names + used, len - used, "%s\n", e->d_name);
            if (n < 0 || (size_t)n >= len - used)
                break;
            used += (size_t)n;
        }
    closedir(dp);
}

/* Whether after names a file that before does not. */
static bool new_large_file(const char *before, const char *after)
{
    for (const char *p = after; *p;) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        bool seen = false;
        for (const char *q = before; *q && !seen;) {
            const char *ql = strchr(q, '\n');
            size_t m = ql ? (size_t)(ql - q) : strlen(q);
            seen = m == n && memcmp(p, q, n) == 0;
            q += m + (ql ? 1 : 0);
        }
        if (!seen)
            return true;
        p += n + (nl ? 1 : 0);
    }
    return false;
}

static void two_mib_body_round_trips(void **state)
{
    (void)state;
    EV(ev, "ArtLarge", true);
    big_text = malloc(BIG + 1);
    assert_non_null(big_text);
    for (size_t i = 0; i < BIG; i++)
        big_text[i] = (char)('a' + (i * 7 + i / 977) % 26);
    big_text[BIG] = '\0';
    big_box box = {.mu = PTHREAD_MUTEX_INITIALIZER};
    ewi_cond_init_mono(&box.cv);
    ew_options o = {.max_body = 4 * 1024 * 1024};
    ew_listener_desc d = {.event = &ev, .name = "Big"};

    /* The listener's queue first; then the message waits in it. */
    ew_manager *m = mgr_new_opts(URL, "l1", &o);
    assert_int_equal(ew_listen(m, &d, big_listener, &box), EW_OK);
    assert_int_equal(ew_manager_start(m), EW_OK);
    ew_manager_free(m);
    static char before[8192], after[8192];
    large_files(before, sizeof before);
    ew_manager *s = mgr_new_opts(URL, "l2", &o);
    assert_int_equal(ew_manager_start(s), EW_OK);
    assert_int_equal(ew_send(s, &ev, &(conf_event){.id = 1, .text = big_text}), EW_OK);
    large_files(after, sizeof after);
    if (!new_large_file(before, after))
        fail_msg("no new file in the broker's large-messages store (before:\n%safter:\n%s)",
                 before, after);

    m = mgr_new_opts(URL, "l1", &o);
    assert_int_equal(ew_listen(m, &d, big_listener, &box), EW_OK);
    assert_int_equal(ew_manager_start(m), EW_OK);
    pthread_mutex_lock(&box.mu);
    int64_t until = ewi_now_ms() + 60000;
    while (box.got < 1 && ewi_now_ms() < until)
        ewi_cond_wait_until(&box.cv, &box.mu, until);
    pthread_mutex_unlock(&box.mu);
    ew_manager_free(m);
    ew_manager_free(s);
    assert_int_equal(box.got, 1);
    if (!box.same)
        fail_msg("the 2 MiB text came back as %zu bytes, or changed", box.len);
    free(big_text);
}

/* ---- credentials and TLS -------------------------------------------------- */

/* URL with user:password replaced. */
static void url_with_password(char *buf, size_t len, const char *password)
{
    const char *at = strchr(URL, '@'), *scheme_end = strstr(URL, "://");
    const char *colon = scheme_end ? strchr(scheme_end + 3, ':') : NULL;
    if (!at || !colon || colon > at)
        fail_msg("URL %s has no user:password", URL);
    snprintf(buf, len, "%.*s:%s%s", (int)(colon - URL), URL, password, at);
}

/* 20 times: the refusal is EW_EAUTH every time, never a connection error
 * (and LeakSanitizer finds nothing left behind at exit). */
static void wrong_password_fails_start_at_once(void **state)
{
    (void)state;
    EV(ev, "ArtAuth", true);
    char url[600];
    url_with_password(url, sizeof url, "not-the-password");
    for (int i = 0; i < 20; i++) {
        tally t;
        tally_init(&t, 1);
        ew_options o = {.start_timeout_ms = 30000};
        ew_manager *m = mgr_new_opts(url, "a1", &o);
        listen_tally(m, &ev, "L", false, 1, &t);
        int64_t t0 = ewi_now_ms();
        ew_err rc = ew_manager_start(m);
        int64_t took = ewi_now_ms() - t0;
        char why[1024];
        snprintf(why, sizeof why, "%s", ew_last_error());
        ew_manager_free(m);
        tally_free(&t);
        if (rc != EW_EAUTH)
            fail_msg("start %d with a wrong password: %s, not EW_EAUTH (%s)", i + 1,
                     ew_strerror(rc), why);
        if (took > 5000)
            fail_msg("start %d with a wrong password took %lld ms: not at once", i + 1,
                     (long long)took);
        if (strstr(why, "not-the-password"))
            fail_msg("the password is in the reason: \"%s\"", why);
    }
}

/* The TLS URL for the same broker and credentials, trusting ca_file. */
static void tls_url(char *buf, size_t len, const char *ca_file)
{
    ewi_url u;
    char err[128];
    if (ewi_url_parse(URL, &u, err, sizeof err) != EW_OK)
        fail_msg("bad URL %s: %s", URL, err);
    const char *st = getenv("EW_BROKER_STATE");
    const char *pe = getenv(AMQP ? "EW_ARTEMIS_AMQPS_PORT" : "EW_ARTEMIS_STOMPS_PORT");
    int port = pe && *pe ? atoi(pe) : AMQP ? 5675 : 61625;
    /* proton checks the certificate against DNS names only: localhost. */
    snprintf(buf, len, "%s://%s:%s@%s:%d?dialect=artemis&ca=%s/tls/%s",
             AMQP ? "amqps" : "stomp+ssl", u.user, u.password,
             AMQP ? "localhost" : "127.0.0.1", port, st && *st ? st : "/tmp/eventwire-brokers",
             ca_file);
    ewi_url_free(&u);
}

static void tls_with_the_test_ca(void **state)
{
    (void)state;
    EV(ev, "ArtTls", true);
    char url[700];
    tls_url(url, sizeof url, "ca.pem");
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

static void tls_with_a_wrong_ca_is_refused(void **state)
{
    (void)state;
    EV(ev, "ArtTlsBad", true);
    char url[700];
    tls_url(url, sizeof url, "wrong-ca.pem");
    tally t;
    tally_init(&t, 1);
    ew_options o = {.start_timeout_ms = 30000};
    ew_manager *m = mgr_new_opts(url, "tls2", &o);
    listen_tally(m, &ev, "L", false, 1, &t);
    int64_t t0 = ewi_now_ms();
    ew_err rc = ew_manager_start(m);
    int64_t took = ewi_now_ms() - t0;
    char why[1024];
    snprintf(why, sizeof why, "%s", ew_last_error());
    ew_manager_free(m);
    tally_free(&t);
    if (rc == EW_OK)
        fail_msg("a broker certificate the CA did not sign was accepted");
    print_message("wrong CA: %s after %lld ms: %s\n", ew_strerror(rc), (long long)took, why);
    if (rc != EW_ETLS)
        fail_msg("wrong CA: %s, not EW_ETLS (%s)", ew_strerror(rc), why);
    if (!strstr(why, "certificate"))
        fail_msg("the reason does not name the certificate: \"%s\"", why);
    if (took > 5000)
        fail_msg("the refusal took %lld ms: not at once", (long long)took);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s URL ARTEMIS_SH\n", argv[0]);
        return 2;
    }
    URL = argv[1];
    SH = argv[2];
    AMQP = strncmp(URL, "amqp", 4) == 0;
    support_init(URL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(listener_queue_is_multicast_on_the_event_address),
        cmocka_unit_test(send_to_reaches_one_queue),
        cmocka_unit_test(dead_letters_land_in_the_anycast_dlq),
        cmocka_unit_test(broker_redelivery_is_the_next_attempt),
        cmocka_unit_test(two_mib_body_round_trips),
        cmocka_unit_test(wrong_password_fails_start_at_once),
        cmocka_unit_test(tls_with_the_test_ca),
        cmocka_unit_test(tls_with_a_wrong_ca_is_refused),
        cmocka_unit_test(per_process_queue_goes_after_its_process),
    };
    return cmocka_run_group_tests_name(URL, tests, NULL, NULL);
}
