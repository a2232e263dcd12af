/* The STOMP transport's pure parts: URL options, each dialect's addressing
 * and name rules, heart-beat negotiation, and envelopes as SEND frames and
 * back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "transports/stomp/stomp.h"

static ew_err parse(const char *text, stomp_options *o, char *err, size_t errlen)
{
    ewi_url u;
    assert_int_equal(ewi_url_parse(text, &u, err, errlen), EW_OK);
    ew_err rc = stomp_options_parse(NULL, &u, o, err, errlen);
    ewi_url_free(&u);
    return rc;
}

/* ---- options ------------------------------------------------------------- */

static void options_defaults_and_values(void **state)
{
    (void)state;
    stomp_options o;
    char err[512];
    assert_int_equal(parse("stomp://guest:pw@127.0.0.1?dialect=rabbitmq", &o, err, sizeof err),
                     EW_OK);
    assert_int_equal(o.dialect, STOMP_RABBITMQ);
    assert_int_equal(o.port, 61613);
    assert_false(o.tls);
    assert_string_equal(o.login, "guest");
    assert_string_equal(o.passcode, "pw");
    assert_string_equal(o.vhost, "/");
    assert_int_equal(o.heartbeat_ms, 10000);
    assert_int_equal(o.max_inflight, 512);
    assert_int_equal(o.max_inflight_bytes, 16L << 20);
    assert_int_equal(o.expires_ms, 60000);
    assert_int_equal(o.amqp_port, 5672);
    stomp_options_free(&o);

    /* prefetch is core's option (sub->prefetch): the transport accepts it. */
    assert_int_equal(parse("stomp://h?dialect=rabbitmq&prefetch=50", &o, err, sizeof err),
                     EW_OK);
    stomp_options_free(&o);

    /* ca must name a readable file: this test's own source will do. */
    assert_int_equal(parse("stomp+ssl://h:1234/prod?dialect=rabbitmq&ca=" __FILE__ "&heartbeat_ms=0"
                           "&max_inflight=5&max_inflight_bytes=4096&per_process_expires_ms=5000&amqp_port=5671",
                           &o, err, sizeof err),
                     EW_OK);
    assert_true(o.tls);
    assert_true(o.verify);
    assert_int_equal(o.port, 1234);
    assert_string_equal(o.vhost, "prod");
    assert_string_equal(o.ca_file, __FILE__);
    assert_int_equal(o.heartbeat_ms, 0);
    assert_int_equal(o.max_inflight, 5);
    assert_int_equal(o.max_inflight_bytes, 4096);
    assert_int_equal(o.expires_ms, 5000);
    assert_int_equal(o.amqp_port, 5671);
    assert_null(o.login);
    stomp_options_free(&o);

    /* activemq and artemis: the host header is the broker's host name. */
    assert_int_equal(parse("stomp://broker.example:61614?dialect=activemq", &o, err, sizeof err),
                     EW_OK);
    assert_int_equal(o.dialect, STOMP_ACTIVEMQ);
    assert_string_equal(o.vhost, "broker.example");
    assert_int_equal(o.amqp_port, 0);
    stomp_options_free(&o);
    assert_int_equal(parse("stomp+ssl://a?dialect=artemis&verify=false", &o, err, sizeof err),
                     EW_OK);
    assert_int_equal(o.dialect, STOMP_ARTEMIS);
    assert_false(o.verify);
    assert_int_equal(o.port, 61614);
    stomp_options_free(&o);

    /* A RabbitMQ cluster: every host with its port (the default where it
     * has none), the administration connection on each host's amqp_port. */
    assert_int_equal(parse("stomp://h1:61682,h2,h3:61684?dialect=rabbitmq&queue_type=quorum"
                           "&amqp_port=5682,5683,5684",
                           &o, err, sizeof err),
                     EW_OK);
    assert_int_equal(o.hosts.n, 3);
    assert_string_equal(o.hosts.v[1].host, "h2");
    assert_int_equal(o.hosts.v[0].port, 61682);
    assert_int_equal(o.hosts.v[1].port, 61613);
    assert_int_equal(o.admin_hosts.n, 3);
    assert_string_equal(o.admin_hosts.v[2].host, "h3");
    assert_int_equal(o.admin_hosts.v[2].port, 5684);
    assert_int_equal(o.amqp_port, 5682);
    assert_true(o.quorum);
    stomp_options_free(&o);
    assert_int_equal(parse("stomp://h1,h2?dialect=rabbitmq", &o, err, sizeof err), EW_OK);
    assert_int_equal(o.admin_hosts.v[0].port, 5672);
    assert_int_equal(o.admin_hosts.v[1].port, 5672);
    stomp_options_free(&o);
    assert_int_equal(parse("stomp://h1,h2?dialect=rabbitmq&amqp_port=1,2,3", &o, err, sizeof err),
                     EW_EINVAL);
    assert_non_null(strstr(err, "3 ports for 2 hosts"));
    stomp_options_free(&o);
    assert_int_equal(parse("stomp://h1?dialect=rabbitmq&amqp_port=56x", &o, err, sizeof err),
                     EW_EINVAL);
    stomp_options_free(&o);
    /* A list is a RabbitMQ cluster or an Artemis primary and its backups,
     * not ActiveMQ 5's; queue types are RabbitMQ's. */
    assert_int_equal(parse("stomp://h1,h2:61624?dialect=artemis", &o, err, sizeof err), EW_OK);
    assert_int_equal(o.hosts.n, 2);
    assert_int_equal(o.hosts.v[1].port, 61624);
    stomp_options_free(&o);
    assert_int_equal(parse("stomp://h1,h2?dialect=activemq", &o, err, sizeof err), EW_EINVAL);
    assert_non_null(strstr(err, "needs dialect=rabbitmq"));
    stomp_options_free(&o);
    assert_int_equal(parse("stomp://h1?dialect=activemq&queue_type=quorum", &o, err, sizeof err),
                     EW_EINVAL);
    stomp_options_free(&o);
}

static void options_refused_with_reasons(void **state)
{
    (void)state;
    static const struct {
        const char *url, *says;
    } bad[] = {
        {"stomp://h", "needs ?dialect="},
        {"stomp://h?dialect=qpid", "dialect must be one of"},
        {"stomp://h?dialect=rabbitmq&prefetch_count=3", "unknown option 'prefetch_count'"},
        {"stomp://h?dialect=rabbitmq&heartbeat_ms=-1", "heartbeat_ms must be"},
        {"stomp://h?dialect=rabbitmq&max_inflight=0", "max_inflight must be"},
        {"stomp://h?dialect=rabbitmq&ca=/x", "needs stomp+ssl"},
        {"stomp+ssl://h?dialect=rabbitmq&verify=maybe", "verify must be"},
        {"stomp://h?dialect=activemq&amqp_port=5672", "rabbitmq only"},
        {"stomp://a%0Ab:c@h?dialect=rabbitmq", "line breaks"},
        {"amqp://h?dialect=rabbitmq", "not stomp"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        stomp_options o;
        char err[512] = "";
        ew_err rc = parse(bad[i].url, &o, err, sizeof err);
        stomp_options_free(&o);
        if (rc != EW_EINVAL || !strstr(err, bad[i].says))
            fail_msg("%s: %d '%s', want EINVAL saying '%s'", bad[i].url, rc, err, bad[i].says);
    }
}

/* ---- addressing ------------------------------------------------------------ */

static const char *hdr(const stomp_target *t, const char *key)
{
    for (size_t i = 0; i < t->n; i++)
        if (strcmp(t->h[i].key, key) == 0)
            return t->h[i].value;
    return NULL;
}

/* amqp_port=0: nothing declares for the adapter, so its SUBSCRIBE and SEND do. */
static void addressing_rabbitmq(void **state)
{
    (void)state;
    stomp_options o = {.dialect = STOMP_RABBITMQ, .expires_ms = 60000};
    stomp_target t;
    assert_int_equal(stomp_send_target(&o, EWI_DEST_EVENT, "E", NULL, true, &t), EW_OK);
    assert_string_equal(t.dest, "/exchange/E/E");
    assert_string_equal(hdr(&t, "persistent"), "true");
    assert_int_equal(stomp_send_target(&o, EWI_DEST_EVENT, "E", NULL, false, &t), EW_OK);
    assert_null(hdr(&t, "persistent"));
    assert_int_equal(stomp_send_target(&o, EWI_DEST_LISTENER, "E", "E::L", false, &t), EW_OK);
    assert_string_equal(t.dest, "/amq/queue/E::L");
    assert_int_equal(stomp_send_target(&o, EWI_DEST_DLQ, "E", "E::L.dlq", false, &t), EW_OK);
    assert_string_equal(t.dest, "/queue/E::L.dlq");
    /* Dead letters persist even for a non-durable event. */
    assert_string_equal(hdr(&t, "persistent"), "true");

    ewi_sub sub = {.event = "E", .listener = "L", .queue = "E::L-s1", .dlq = "E::L.dlq",
                   .per_process = true, .durable = true, .prefetch = 7};
    assert_int_equal(stomp_sub_target(&o, &sub, &t), EW_OK);
    assert_string_equal(t.dest, "/exchange/E/#");
    assert_string_equal(hdr(&t, "x-queue-name"), "E::L-s1");
    assert_string_equal(hdr(&t, "durable"), "true");
    assert_string_equal(hdr(&t, "auto-delete"), "false");
    assert_string_equal(hdr(&t, "x-expires"), "60000");
    assert_string_equal(hdr(&t, "prefetch-count"), "7");
    sub.per_process = false;
    sub.durable = false;
    assert_int_equal(stomp_sub_target(&o, &sub, &t), EW_OK);
    assert_null(hdr(&t, "x-expires"));
    assert_string_equal(hdr(&t, "durable"), "false");

    assert_int_equal(stomp_dlq_target(&o, "E", "E::L.dlq", 10, &t), EW_OK);
    assert_string_equal(t.dest, "/queue/E::L.dlq");
    assert_string_equal(hdr(&t, "prefetch-count"), "10");
    assert_true(stomp_requeue_by_nack(STOMP_RABBITMQ));
}

/* With the administration connection (amqp_port, the default) the queues are
 * declared over AMQP 0-9-1: STOMP only consumes and sends through
 * /amq/queue/, and no frame carries a queue property. */
static void addressing_rabbitmq_declared(void **state)
{
    (void)state;
    stomp_options o = {.dialect = STOMP_RABBITMQ, .expires_ms = 60000, .amqp_port = 5672};
    stomp_target t;
    ewi_sub sub = {.event = "E", .listener = "L", .queue = "E::L-s1", .dlq = "E::L.dlq",
                   .per_process = true, .durable = true, .prefetch = 7};
    assert_int_equal(stomp_sub_target(&o, &sub, &t), EW_OK);
    assert_string_equal(t.dest, "/amq/queue/E::L-s1");
    assert_string_equal(hdr(&t, "prefetch-count"), "7");
    assert_int_equal(t.n, 1);
    assert_int_equal(stomp_send_target(&o, EWI_DEST_DLQ, "E", "E::L.dlq", false, &t), EW_OK);
    assert_string_equal(t.dest, "/amq/queue/E::L.dlq");
    assert_string_equal(hdr(&t, "persistent"), "true");
    assert_int_equal(stomp_dlq_target(&o, "E", "E::L.dlq", 10, &t), EW_OK);
    assert_string_equal(t.dest, "/amq/queue/E::L.dlq");
    assert_int_equal(stomp_send_target(&o, EWI_DEST_EVENT, "E", NULL, true, &t), EW_OK);
    assert_string_equal(t.dest, "/exchange/E/E");
    assert_int_equal(stomp_send_target(&o, EWI_DEST_LISTENER, "E", "E::L", false, &t), EW_OK);
    assert_string_equal(t.dest, "/amq/queue/E::L");
}

static void addressing_activemq(void **state)
{
    (void)state;
    stomp_options o = {.dialect = STOMP_ACTIVEMQ};
    stomp_target t;
    assert_int_equal(stomp_send_target(&o, EWI_DEST_EVENT, "E", NULL, true, &t), EW_OK);
    assert_string_equal(t.dest, "/topic/VirtualTopic.E");
    assert_string_equal(hdr(&t, "persistent"), "true");
    assert_int_equal(stomp_send_target(&o, EWI_DEST_LISTENER, "E", "E::L", true, &t), EW_OK);
    assert_string_equal(t.dest, "/queue/Consumer.E::L.VirtualTopic.E");
    assert_int_equal(stomp_send_target(&o, EWI_DEST_DLQ, "E", "E::L.dlq", true, &t), EW_OK);
    assert_string_equal(t.dest, "/queue/E::L.dlq");
    ewi_sub sub = {.event = "E", .listener = "L", .queue = "E::L-s1", .prefetch = 3};
    assert_int_equal(stomp_sub_target(&o, &sub, &t), EW_OK);
    assert_string_equal(t.dest, "/queue/Consumer.E::L-s1.VirtualTopic.E");
    assert_string_equal(hdr(&t, "activemq.prefetchSize"), "3");
    assert_int_equal(stomp_dlq_target(&o, "E", "E::L.dlq", 5, &t), EW_OK);
    assert_string_equal(t.dest, "/queue/E::L.dlq");
    /* NACK would send the message to ActiveMQ.DLQ (a poison ack). */
    assert_false(stomp_requeue_by_nack(STOMP_ACTIVEMQ));
}

static void addressing_artemis(void **state)
{
    (void)state;
    stomp_options o = {.dialect = STOMP_ARTEMIS};
    stomp_target t;
    assert_int_equal(stomp_send_target(&o, EWI_DEST_EVENT, "E", NULL, true, &t), EW_OK);
    assert_string_equal(t.dest, "E");
    assert_string_equal(hdr(&t, "destination-type"), "MULTICAST");
    assert_string_equal(hdr(&t, "persistent"), "true");
    /* Artemis reads every "::" as address::queue: the queue is E:L. */
    assert_int_equal(stomp_send_target(&o, EWI_DEST_LISTENER, "E", "E::L", false, &t), EW_OK);
    assert_string_equal(t.dest, "E::E:L");
    assert_int_equal(stomp_send_target(&o, EWI_DEST_DLQ, "E", "E::L.dlq", false, &t), EW_OK);
    assert_string_equal(t.dest, "E.dlq::E:L.dlq");
    assert_string_equal(hdr(&t, "destination-type"), "ANYCAST");
    ewi_sub sub = {.event = "E", .listener = "L", .queue = "E::L", .prefetch = 3};
    assert_int_equal(stomp_sub_target(&o, &sub, &t), EW_OK);
    assert_string_equal(t.dest, "E::E:L");
    assert_string_equal(hdr(&t, "subscription-type"), "MULTICAST");
    assert_int_equal(stomp_dlq_target(&o, "E", "E::L.dlq", 5, &t), EW_OK);
    assert_string_equal(t.dest, "E.dlq::E:L.dlq");
    assert_string_equal(hdr(&t, "subscription-type"), "ANYCAST");
    /* A queue that is not the event's is refused, not mangled. */
    assert_int_equal(stomp_send_target(&o, EWI_DEST_LISTENER, "E", "F::L", false, &t),
                     EW_EINVAL);
    /* Artemis discards a NACKed message. */
    assert_false(stomp_requeue_by_nack(STOMP_ARTEMIS));
}

static void names_per_dialect(void **state)
{
    (void)state;
    char err[256];
    assert_int_equal(stomp_check_names(STOMP_ACTIVEMQ, "order.created", NULL, err, sizeof err),
                     EW_EINVAL);
    assert_non_null(strstr(err, "contains '.'"));
    assert_int_equal(stomp_check_names(STOMP_ACTIVEMQ, "Order", "a.b", err, sizeof err),
                     EW_EINVAL);
    assert_int_equal(stomp_check_names(STOMP_ACTIVEMQ, "Order", "L", err, sizeof err), EW_OK);
    assert_int_equal(stomp_check_names(STOMP_RABBITMQ, "order.created", "L", err, sizeof err),
                     EW_OK);
    assert_int_equal(stomp_check_names(STOMP_ARTEMIS, "x.dlq", NULL, err, sizeof err), EW_EINVAL);
    assert_int_equal(stomp_check_names(STOMP_ARTEMIS, "order.created", "L", err, sizeof err),
                     EW_OK);
}

/* ---- heart-beats ----------------------------------------------------------- */

static void heartbeat_negotiation(void **state)
{
    (void)state;
    stomp_heartbeat hb;
    assert_int_equal(stomp_heartbeat_negotiate(10000, 10000, "4000,20000", &hb), EW_OK);
    assert_int_equal(hb.send_ms, 20000);  /* max(cx, sy) */
    assert_int_equal(hb.expect_ms, 10000); /* max(cy, sx) */
    assert_int_equal(stomp_heartbeat_negotiate(10000, 10000, "0,0", &hb), EW_OK);
    assert_int_equal(hb.send_ms, 0);
    assert_int_equal(hb.expect_ms, 0);
    assert_int_equal(stomp_heartbeat_negotiate(0, 5000, "1000,1000", &hb), EW_OK);
    assert_int_equal(hb.send_ms, 0);
    assert_int_equal(hb.expect_ms, 5000);
    assert_int_equal(stomp_heartbeat_negotiate(5000, 5000, NULL, &hb), EW_OK);
    assert_int_equal(hb.send_ms, 0);
    assert_int_equal(stomp_heartbeat_negotiate(5000, 5000, "10, 10", &hb), EW_EPROTO);
    assert_int_equal(stomp_heartbeat_negotiate(5000, 5000, "10", &hb), EW_EPROTO);
    assert_int_equal(stomp_heartbeat_negotiate(5000, 5000, "-1,0", &hb), EW_EPROTO);
    assert_int_equal(stomp_heartbeat_negotiate(5000, 5000, "99999999999999,0", &hb), EW_EPROTO);
    assert_int_equal(stomp_heartbeat_grace_ms(0), 0);
    assert_true(stomp_heartbeat_grace_ms(10000) > 10000);
}

/* ---- messages ---------------------------------------------------------------- */

static void message_round_trip(void **state)
{
    (void)state;
    ew_envelope *env = ewi_envelope_new();
    ewi_envelope_set_body(env, "a\0b", 3);
    ewi_envelope_set_content_type(env, "application/msgpack");
    ewi_envelope_put(env, "session", 7, "s:1\n\\", 5);
    ewi_envelope_put(env, "ew-event", 8, "E", 1);
    stomp_options o = {.dialect = STOMP_RABBITMQ};
    stomp_target to;
    assert_int_equal(stomp_send_target(&o, EWI_DEST_EVENT, "E", NULL, true, &to), EW_OK);
    ewi_buf out = {0};
    char err[256];
    assert_int_equal(stomp_message_write(&out, &to, "p1", env, err, sizeof err), EW_OK);

    /* As the broker delivers it: a MESSAGE with its own headers added. */
    ewi_stomp_parser *p = ewi_stomp_parser_new(NULL);
    size_t used;
    assert_int_equal(ewi_stomp_parse(p, out.data, out.len, &used), EWI_STOMP_FRAME);
    ewi_stomp_frame *f = ewi_stomp_parser_take(p);
    assert_int_equal(f->cmd, EWI_STOMP_SEND);
    assert_string_equal(ewi_stomp_frame_get(f, "destination"), "/exchange/E/E");
    assert_string_equal(ewi_stomp_frame_get(f, "receipt"), "p1");
    assert_string_equal(ewi_stomp_frame_get(f, "persistent"), "true");
    f->cmd = EWI_STOMP_MESSAGE;
    ew_envelope *got = ewi_envelope_new();
    assert_int_equal(stomp_message_read(f, got), EW_OK);
    size_t blen;
    const void *body = ew_envelope_body(got, &blen);
    assert_int_equal(blen, 3);
    assert_memory_equal(body, "a\0b", 3);
    assert_string_equal(ew_envelope_content_type(got), "application/msgpack");
    assert_string_equal(ew_envelope_header(got, "session"), "s:1\n\\");
    assert_string_equal(ew_envelope_header(got, "ew-event"), "E");
    /* the broker's and STOMP's own headers are not event headers */
    assert_null(ew_envelope_header(got, "destination"));
    assert_null(ew_envelope_header(got, "receipt"));
    assert_null(ew_envelope_header(got, "persistent"));
    assert_null(ew_envelope_header(got, "content-length"));
    ewi_stomp_frame_free(f);
    ewi_envelope_unref(got);

    /* first of repeated headers wins */
    static const char twice[] = "MESSAGE\nk:first\nk:second\nmessage-id:9\n\n\0";
    ewi_stomp_parser_reset(p);
    assert_int_equal(ewi_stomp_parse(p, (const uint8_t *)twice, sizeof twice - 1, &used),
                     EWI_STOMP_FRAME);
    f = ewi_stomp_parser_take(p);
    got = ewi_envelope_new();
    assert_int_equal(stomp_message_read(f, got), EW_OK);
    assert_string_equal(ew_envelope_header(got, "k"), "first");
    assert_null(ew_envelope_header(got, "message-id"));
    ewi_stomp_frame_free(f);
    ewi_envelope_unref(got);

    /* past one batch of headers, a repeat in a later batch still loses */
    char many[1024];
    size_t at = (size_t)snprintf(many, sizeof many, "MESSAGE\nsubscription:1\n");
    for (int i = 0; i < 40; i++)
        at += (size_t)snprintf(many + at, sizeof many - at, "h%d:v%d\n", i % 30, i);
    memcpy(many + at, "\n", 2);
    ewi_stomp_parser_reset(p);
    assert_int_equal(ewi_stomp_parse(p, (const uint8_t *)many, at + 2, &used), EWI_STOMP_FRAME);
    f = ewi_stomp_parser_take(p);
    got = ewi_envelope_new();
    assert_int_equal(stomp_message_read(f, got), EW_OK);
    assert_int_equal(ew_envelope_header_count(got), 30);
    assert_string_equal(ew_envelope_header(got, "h0"), "v0");
    assert_string_equal(ew_envelope_header(got, "h5"), "v5");
    assert_string_equal(ew_envelope_header(got, "h29"), "v29");
    const char *k, *v;
    assert_int_equal(ew_envelope_header_at(got, 17, &k, &v), EW_OK);
    assert_string_equal(k, "h17");
    ewi_stomp_frame_free(f);
    ewi_envelope_unref(got);

    /* receipt ids, as snprintf "p%" PRIu64 writes them */
    const uint64_t ids[] = {0, 9, 10, 12345, UINT64_MAX};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        char mine[STOMP_RECEIPT_LEN], want[32];
        stomp_receipt_text(mine, ids[i]);
        snprintf(want, sizeof want, "p%llu", (unsigned long long)ids[i]);
        assert_string_equal(mine, want);
    }

    /* a reserved name is refused, and out is left as it was */
    size_t before = out.len;
    ewi_envelope_put(env, "destination", 11, "/queue/evil", 11);
    assert_int_equal(stomp_message_write(&out, &to, "p2", env, err, sizeof err), EW_EINVAL);
    assert_non_null(strstr(err, "'destination' is reserved"));
    assert_int_equal(out.len, before);
    ewi_buf_free(&out);
    ewi_stomp_parser_free(p);
    ewi_envelope_unref(env);
}

static void error_text(void **state)
{
    (void)state;
    static const char e[] = "ERROR\nmessage:not_found\ncontent-length:26\n\nNOT_FOUND - no\nexchange X\n\0";
    ewi_stomp_parser *p = ewi_stomp_parser_new(NULL);
    size_t used;
    assert_int_equal(ewi_stomp_parse(p, (const uint8_t *)e, sizeof e - 1, &used), EWI_STOMP_FRAME);
    ewi_stomp_frame *f = ewi_stomp_parser_take(p);
    char buf[128];
    stomp_error_text(f, buf, sizeof buf);
    assert_string_equal(buf, "not_found: NOT_FOUND - no exchange X");
    stomp_error_text(f, buf, 12);
    assert_true(strlen(buf) < 12 && strncmp(buf, "not_found", 9) == 0);
    ewi_stomp_frame_free(f);
    ewi_stomp_parser_free(p);
}

/* Every reserved name and prefix, and names next to them that are not. */
static void reserved_headers(void **state)
{
    (void)state;
    static const char *const yes[] = {
        "ack", "amqp-message-id", "content-length", "content-type", "destination",
        "destination-type", "expiration", "expires", "id", "message-id",
        "original-destination", "originalExpiration", "persistent", "priority", "receipt",
        "receipt-id", "redelivered", "reply-to", "subscription", "subscription-type",
        "timestamp", "transaction", "transformation", "user-id", "x-queue-name", "x-expires",
        "x-message-ttl", "x-dead-letter-exchange", "x-dead-letter-routing-key", "x-death",
        "x-max-length", "activemq.", "activemq.x", "JMS", "JMSType", "_AMQ", "_AMQ_x",
        "__AMQ", "__AMQ_CID", "AMQ_", "AMQ_SCHEDULED"};
    static const char *const no[] = {
        "", "a", "ac", "acks", "Ack", "activemq", "content", "content-lengths", "dest",
        "ew-id", "ew-sent", "expire", "i", "idx", "ID", "message", "priorities", "receipts",
        "reply", "sub", "time", "user", "x-death2", "x-queue", "x-", "JM", "jms", "_AM",
        "__AM", "AMQ", "amq_", "session", "type", "correlation-id", "traceparent", "zzz"};
    for (size_t i = 0; i < sizeof yes / sizeof *yes; i++)
        if (!stomp_reserved_header(yes[i], strlen(yes[i])))
            fail_msg("'%s' should be reserved", yes[i]);
    for (size_t i = 0; i < sizeof no / sizeof *no; i++)
        if (stomp_reserved_header(no[i], strlen(no[i])))
            fail_msg("'%s' should not be reserved", no[i]);
    /* The length given counts, not a NUL. */
    assert_true(stomp_reserved_header("ack-and-more", 3));
    assert_false(stomp_reserved_header("ack", 2));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(options_defaults_and_values),
        cmocka_unit_test(options_refused_with_reasons),
        cmocka_unit_test(addressing_rabbitmq),
        cmocka_unit_test(addressing_rabbitmq_declared),
        cmocka_unit_test(addressing_activemq),
        cmocka_unit_test(addressing_artemis),
        cmocka_unit_test(names_per_dialect),
        cmocka_unit_test(heartbeat_negotiation),
        cmocka_unit_test(message_round_trip),
        cmocka_unit_test(error_text),
        cmocka_unit_test(reserved_headers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
