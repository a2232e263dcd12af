/* aspyx-event's wire form against RabbitMQ's AMQP 1.0 plugin, played by a
 * stand-in with Debian's python3-qpid-proton (the library aspyx-event uses):
 * real aspyx-event cannot work with that plugin (tests/amqp/
 * aspyx_wire_standin.py says why); tests/aspyx runs the real one against
 * Artemis.
 *   - Python sends {"world": "..."} as an amqp-value string with an
 *     application property, as aspyx-event does; a C listener receives the
 *     typed event and the header.
 *   - A C service sends a JSON event; Python reads it from the queue of a
 *     listener named the aspyx way (queue_naming=aspyx) and decodes it.
 * usage: test_amqp_interop PEER_SCRIPT (tests/amqp/aspyx_wire_standin.py) */
#include "amqp_test.h"

typedef struct {
    char *world;
} hello_event;

EW_TYPE(hello_event, EW_FIELD(hello_event, world, EW_STRING));

static const char *PEER;

/* Runs the peer with /usr/bin/python3 and returns its first stdout line. */
static void run_peer(const char *args, char *out, size_t outlen)
{
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s %s", PEER, args);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    if (out) {
        out[0] = '\0';
        if (!fgets(out, (int)outlen, p))
            out[0] = '\0';
    }
    int st = pclose(p);
    if (st != 0)
        fail_msg("python peer failed (status %d): %s", st, cmd);
}

typedef struct got {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    char world[256], session[256], ct[64];
} got;

static ew_err on_hello(ew_delivery *d, const void *event, void *user)
{
    const hello_event *h = event;
    got *g = user;
    pthread_mutex_lock(&g->mu);
    snprintf(g->world, sizeof g->world, "%s", h->world ? h->world : "(null)");
    const char *s = ew_delivery_header(d, "session");
    snprintf(g->session, sizeof g->session, "%s", s ? s : "(none)");
    snprintf(g->ct, sizeof g->ct, "%s", ew_envelope_content_type(ew_delivery_envelope(d)));
    g->done = true;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
    return EW_OK;
}

static bool got_wait(got *g, int timeout_ms)
{
    int64_t deadline = ewi_now_ms() + timeout_ms;
    pthread_mutex_lock(&g->mu);
    while (!g->done && ewi_now_ms() < deadline) {
        pthread_mutex_unlock(&g->mu);
        ewi_sleep_ms(20);
        pthread_mutex_lock(&g->mu);
    }
    bool done = g->done;
    pthread_mutex_unlock(&g->mu);
    return done;
}

static void python_sends_c_listener_receives(void **state)
{
    (void)state;
    char name[64], exch[160], pyurl[256], args[1024];
    snprintf(name, sizeof name, "Hello_%s", support_run_id);
    ew_event_desc ev = {.type = &hello_event_type, .name = name, .durable = true,
                        .format = EW_FORMAT_JSON};
    got g = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    ew_manager *m = mgr_new(amqp_test_url(), "c1");
    assert_int_equal(ew_listen(m, &(ew_listener_desc){.event = &ev, .name = "HelloListener"},
                               on_hello, &g),
                     EW_OK);
    assert_int_equal(ew_manager_start(m), EW_OK);

    /* aspyx-event's send: the object's fields, headers as properties. */
    amqp_test_python_url(pyurl, sizeof pyurl);
    snprintf(exch, sizeof exch, "/exchange/%s/%s", name, name);
    snprintf(args, sizeof args,
             "send '%s' '%s' '{\"world\": \"from python é\"}' 'session=py-42 ü'", pyurl,
             exch);
    run_peer(args, NULL, 0);

    assert_true(got_wait(&g, 15000));
    assert_string_equal(g.world, "from python é");
    assert_string_equal(g.session, "py-42 ü");
    assert_string_equal(g.ct, EW_CONTENT_TYPE_JSON);
    ew_manager_free(m);
    rmq_cleanup(0, name, (const char *const[]){"HelloListener", NULL});
}

static ew_err stamp(void *user, ew_envelope *env, const ew_event_desc *ev)
{
    (void)ev;
    return ew_envelope_set_header(env, "session", user);
}

static void c_sends_python_reads_the_aspyx_named_queue(void **state)
{
    (void)state;
    char name[64], reader[64], url[512], pyurl[256], args[1024], line[4096];
    snprintf(name, sizeof name, "Hello_%s", support_run_id);
    snprintf(reader, sizeof reader, "PyReader_%s", support_run_id);
    ew_event_desc ev = {.type = &hello_event_type, .name = name, .durable = true,
                        .format = EW_FORMAT_JSON};
    amqp_test_url_with(url, sizeof url, "queue_naming=aspyx");

    /* A listener named the aspyx way declares the queue "<reader>" (not
     * "<event>::<reader>"); its service then goes away, the queue stays. */
    got unused = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    ew_manager *m = mgr_new(url, "c1");
    assert_int_equal(ew_listen(m, &(ew_listener_desc){.event = &ev, .name = reader},
                               on_hello, &unused),
                     EW_OK);
    assert_int_equal(ew_manager_start(m), EW_OK);
    ew_manager_free(m);

    m = mgr_new(url, "c2");
    ew_pipeline p = {.name = "stamp", .send = stamp};
    static char session[] = "c-7 漢字";
    assert_int_equal(ew_add_pipeline(m, &p, session), EW_OK);
    assert_int_equal(ew_manager_start(m), EW_OK);
    char world[] = "from C ü";
    assert_int_equal(ew_send(m, &ev, &(hello_event){.world = world}), EW_OK);

    amqp_test_python_url(pyurl, sizeof pyurl);
    snprintf(args, sizeof args, "receive '%s' '/amq/queue/%s' 15", pyurl, reader);
    run_peer(args, line, sizeof line);
    print_message("python saw: %s", line);
    /* A str body that json.loads turned into exactly the event's object. */
    assert_non_null(strstr(line, "\"body_type\": \"str\""));
    assert_non_null(strstr(line, "\"json\": {\"world\": \"from C ü\"}"));
    assert_non_null(strstr(line, "\"session\": \"c-7 漢字\""));
    char subject[128];
    snprintf(subject, sizeof subject, "\"subject\": \"%s\"", name);
    assert_non_null(strstr(line, subject));
    assert_non_null(strstr(line, "\"durable\": true"));
    ew_manager_free(m);
    rmq_delete("queue", reader);
    char dlq[160];
    snprintf(dlq, sizeof dlq, "%s::%s.dlq", name, reader);
    rmq_delete("queue", dlq);
    rmq_delete("exchange", name);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s aspyx_wire_standin.py\n", argv[0]);
        return 2;
    }
    PEER = argv[1];
    support_init(amqp_test_url());
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(python_sends_c_listener_receives),
        cmocka_unit_test(c_sends_python_reads_the_aspyx_named_queue),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
