/* bench_rabbitmq: eventwire over rabbitmq:// against a raw librabbitmq
 * producer and consumer with the same settings, in the same run, on the
 * local RabbitMQ (scripts/brokers/rabbitmq.sh start).
 *
 *   bench_rabbitmq [options] [events] [rounds]
 *     -n N        events per throughput run (default 100,000)
 *     -r N        rounds, 1..15 (default 3); raw and eventwire alternate
 *     -s BYTES    body size, 16..1048576 (default 100)
 *     -c N        listener concurrency, 1..64 (default 1): eventwire's
 *                 listener workers; the raw side runs N consumers
 *     -m MODE     transient, durable or both (default both)
 *     -l N        events of the latency run, 0 for none (default 5000)
 *     -R N        send rate of the latency run, events/s (default 1000)
 *     --no-direct leave out the raw run through the default exchange
 *     --only raw|ew   one side only (for callgrind)
 *     --raw-batch     the raw client runs under SCHED_BATCH, as eventwire's
 *                     own threads do by default
 *     --raw-headers   the raw client sends eventwire's content type and
 *                 framework headers too (the broker's share of the gap)
 *     -h, --help  this text
 *
 * (a) transient: non-persistent messages, no confirms, manual ack of every
 *     message, prefetch 1000.
 * (b) durable: durable queue, persistent messages, publisher confirms
 *     (raw: waits for the confirms every 1000 messages; eventwire: its
 *     pipelined confirms), manual ack, prefetch 1000.
 * Producer and consumer are separate connections on separate threads. The
 * rate is events / (last receive - first send); each figure is the median
 * of the rounds, and the ratio eventwire / raw. Every run is a child
 * process of its own, so that its CPU time (user + system, all threads,
 * per event) and peak RSS belong to that side alone. The latency runs (as
 * many rounds per side, alternating; medians of each percentile) send
 * at a fixed rate (eventwire: ew_send_async) and measure from the send
 * call to the listener (raw: to the consumer), p50 / p99 / p99.9. Lines
 * starting with "@ " carry the same figures as JSON for scripts/bench. */
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "../common/bench.h"
#include "codec_internal.h"
#include "ewi.h"

#define PREFETCH 1000
#define CONFIRM_EVERY 1000

/* --raw-headers: the raw client sends eventwire's content type and four
 * framework headers too. */
static bool raw_headers;

static const char *url(void)
{
    const char *u = getenv("EW_TEST_RABBITMQ_URL");
    return u && *u ? u : "rabbitmq://guest:guest@127.0.0.1:5672/";
}

static void die(const char *what)
{
    fprintf(stderr, "bench_rabbitmq: %s (is RabbitMQ running? scripts/brokers/rabbitmq.sh start)\n",
            what);
    exit(1);
}

/* What one run does. */
typedef struct job {
    bool durable;
    bool topic;      /* raw: through a topic exchange as eventwire routes */
    long n;          /* events */
    long size;       /* body bytes */
    int concurrency; /* listener workers / raw consumers */
    long rate;       /* > 0: a latency run at this rate */
} job;

/* ---- raw librabbitmq ----------------------------------------------------- */

static amqp_connection_state_t raw_open(void)
{
    amqp_connection_state_t c = amqp_new_connection();
    amqp_socket_t *s = amqp_tcp_socket_new(c);
    if (!s || amqp_socket_open(s, "127.0.0.1", 5672) != AMQP_STATUS_OK)
        die("raw: cannot connect to 127.0.0.1:5672");
    if (amqp_login(c, "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, "guest", "guest")
            .reply_type != AMQP_RESPONSE_NORMAL)
        die("raw: login failed");
    amqp_channel_open(c, 1);
    if (amqp_get_rpc_reply(c).reply_type != AMQP_RESPONSE_NORMAL)
        die("raw: channel.open failed");
    return c;
}

static void raw_close(amqp_connection_state_t c)
{
    amqp_channel_close(c, 1, AMQP_REPLY_SUCCESS);
    amqp_connection_close(c, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(c);
}

/* Shared by the raw consumers of one run. */
typedef struct raw_shared {
    const char *queue;
    long n;
    _Atomic long got;
    _Atomic int ready;
    _Atomic int64_t last_ns;
    bench_lat *lat; /* latency run: the send time is the body's first 8 bytes */
} raw_shared;

typedef struct raw_consumer {
    raw_shared *sh;
    amqp_connection_state_t c;
} raw_consumer;

static void *raw_consume(void *arg)
{
    raw_consumer *rc = arg;
    raw_shared *sh = rc->sh;
    amqp_connection_state_t c = rc->c;
    amqp_basic_qos(c, 1, 0, PREFETCH, 0);
    amqp_basic_consume(c, 1, amqp_cstring_bytes(sh->queue), amqp_empty_bytes, 0, 0, 0,
                       amqp_empty_table);
    if (amqp_get_rpc_reply(c).reply_type != AMQP_RESPONSE_NORMAL)
        die("raw: basic.consume failed");
    atomic_fetch_add(&sh->ready, 1);
    while (atomic_load(&sh->got) < sh->n) {
        amqp_envelope_t env;
        struct timeval tv = {.tv_sec = 0, .tv_usec = 100000};
        amqp_maybe_release_buffers(c);
        amqp_rpc_reply_t r = amqp_consume_message(c, &env, &tv, 0);
        if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && r.library_error == AMQP_STATUS_TIMEOUT)
            continue;
        if (r.reply_type != AMQP_RESPONSE_NORMAL)
            die("raw: consume failed");
        if (sh->lat && env.message.body.len >= sizeof(int64_t)) {
            int64_t sent;
            memcpy(&sent, env.message.body.bytes, sizeof sent);
            bench_lat_add(sh->lat, sent);
        }
        if (amqp_basic_ack(c, 1, env.delivery_tag, 0) != AMQP_STATUS_OK)
            die("raw: ack failed");
        amqp_destroy_envelope(&env);
        if (atomic_fetch_add(&sh->got, 1) + 1 == sh->n)
            atomic_store(&sh->last_ns, bench_now_ns());
    }
    return NULL;
}

/* Reads frames until every publish up to `upto` is confirmed. */
static void raw_wait_confirms(amqp_connection_state_t c, uint64_t upto, uint64_t *acked)
{
    while (*acked < upto) {
        amqp_frame_t f;
        if (amqp_simple_wait_frame(c, &f) != AMQP_STATUS_OK)
            die("raw: waiting for confirms failed");
        if (f.frame_type != AMQP_FRAME_METHOD)
            continue;
        if (f.payload.method.id == AMQP_BASIC_NACK_METHOD)
            die("raw: the broker nacked a message");
        if (f.payload.method.id == AMQP_BASIC_ACK_METHOD) {
            const amqp_basic_ack_t *a = f.payload.method.decoded;
            if (a->multiple || a->delivery_tag > *acked)
                *acked = a->delivery_tag > *acked ? a->delivery_tag : *acked;
        }
        amqp_maybe_release_buffers(c);
    }
}

/* topic: through a topic exchange with a '#' binding, as eventwire routes;
 * else straight to the queue through the default exchange. */
static void raw_run(void *arg, bench_result *res)
{
    bench_raw_sched();
    const job *j = arg;
    bool durable = j->durable, topic = j->topic;
    long n = j->n;
    char queue[64];
    snprintf(queue, sizeof queue, "bench.raw.%s.%d", durable ? "durable" : "transient",
             (int)getpid());
    amqp_connection_state_t pc = raw_open();
    amqp_queue_declare(pc, 1, amqp_cstring_bytes(queue), 0, durable, 0, 0, amqp_empty_table);
    if (amqp_get_rpc_reply(pc).reply_type != AMQP_RESPONSE_NORMAL)
        die("raw: queue.declare failed");
    if (topic) {
        amqp_exchange_declare(pc, 1, amqp_cstring_bytes(queue), amqp_cstring_bytes("topic"), 0,
                              durable, 0, 0, amqp_empty_table);
        amqp_queue_bind(pc, 1, amqp_cstring_bytes(queue), amqp_cstring_bytes(queue),
                        amqp_cstring_bytes("#"), amqp_empty_table);
        if (amqp_get_rpc_reply(pc).reply_type != AMQP_RESPONSE_NORMAL)
            die("raw: exchange.declare / queue.bind failed");
    }
    bench_lat lat;
    raw_shared sh = {.queue = queue, .n = n, .lat = j->rate ? &lat : NULL};
    if (j->rate)
        bench_lat_init(&lat, n);
    raw_consumer rc[64];
    pthread_t th[64];
    for (int k = 0; k < j->concurrency; k++) {
        rc[k] = (raw_consumer){.sh = &sh, .c = raw_open()};
        pthread_create(&th[k], NULL, raw_consume, &rc[k]);
    }
    while (atomic_load(&sh.ready) < j->concurrency)
        ewi_sleep_ms(1);
    if (durable) {
        amqp_confirm_select(pc, 1);
        if (amqp_get_rpc_reply(pc).reply_type != AMQP_RESPONSE_NORMAL)
            die("raw: confirm.select failed");
    }
    char *body = malloc((size_t)j->size);
    if (!body)
        die("out of memory");
    memset(body, 'x', (size_t)j->size);
    amqp_basic_properties_t p = {._flags = AMQP_BASIC_DELIVERY_MODE_FLAG,
                                 .delivery_mode = durable ? 2 : 1};
    /* --raw-headers: what eventwire's publish carries besides (the broker
     * decodes and, durable, stores it with every message). */
    char mid[48] = "", at[24] = "";
    amqp_table_entry_t hdr[4] = {
        {amqp_cstring_bytes("ew-event"), {.kind = AMQP_FIELD_KIND_UTF8, .value.bytes = amqp_cstring_bytes(queue)}},
        {amqp_cstring_bytes("ew-message-id"), {.kind = AMQP_FIELD_KIND_UTF8}},
        {amqp_cstring_bytes("ew-sent-at"), {.kind = AMQP_FIELD_KIND_UTF8}},
        {amqp_cstring_bytes("ew-attempt"), {.kind = AMQP_FIELD_KIND_UTF8, .value.bytes = amqp_cstring_bytes("1")}},
    };
    if (raw_headers) {
        p._flags |= AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_HEADERS_FLAG;
        p.content_type = amqp_cstring_bytes("application/msgpack");
        p.headers = (amqp_table_t){4, hdr};
    }
    uint64_t acked = 0;
    int64_t t0 = bench_now_ns();
    for (long i = 0; i < n; i++) {
        if (j->rate) {
            bench_pace(t0, i, j->rate);
            int64_t now = bench_now_ns();
            memcpy(body, &now, sizeof now);
        } else {
            memcpy(body, &i, sizeof i);
        }
        if (raw_headers) {
            snprintf(mid, sizeof mid, "00000000-0000-4000-8000-%012ld", i);
            snprintf(at, sizeof at, "%lld", (long long)ewi_wall_ms());
            hdr[1].value.value.bytes = amqp_cstring_bytes(mid);
            hdr[2].value.value.bytes = amqp_cstring_bytes(at);
        }
        if (amqp_basic_publish(pc, 1, topic ? amqp_cstring_bytes(queue) : amqp_empty_bytes,
                               amqp_cstring_bytes(queue), 0, 0, &p,
                               (amqp_bytes_t){(size_t)j->size, body}) != AMQP_STATUS_OK)
            die("raw: publish failed");
        if (durable && (i + 1) % CONFIRM_EVERY == 0)
            raw_wait_confirms(pc, (uint64_t)i + 1, &acked);
    }
    if (durable)
        raw_wait_confirms(pc, (uint64_t)n, &acked);
    for (int k = 0; k < j->concurrency; k++)
        pthread_join(th[k], NULL);
    int64_t dt = atomic_load(&sh.last_ns) - t0;
    res->rate = (double)n * 1e9 / (double)(dt > 0 ? dt : 1);
    if (j->rate) {
        res->p50 = bench_lat_pct(&lat, 0.50);
        res->p99 = bench_lat_pct(&lat, 0.99);
        res->p999 = bench_lat_pct(&lat, 0.999);
    }
    for (int k = 0; k < j->concurrency; k++)
        raw_close(rc[k].c);
    amqp_queue_delete(pc, 1, amqp_cstring_bytes(queue), 0, 0);
    if (topic)
        amqp_exchange_delete(pc, 1, amqp_cstring_bytes(queue), 0);
    raw_close(pc);
    free(body);
}

/* ---- eventwire ----------------------------------------------------------- */

typedef struct {
    int64_t id; /* latency run: bench_now_ns() at the send */
    const char *text;
} bench_event;

EW_TYPE(bench_event, EW_FIELD(bench_event, id, EW_INT64), EW_FIELD(bench_event, text, EW_STRING));

typedef struct counter {
    _Atomic long got;
    long n;
    _Atomic int64_t last_ns;
    bench_lat *lat;
} counter;

static ew_err on_event(ew_delivery *d, const void *event, void *user)
{
    (void)d;
    counter *c = user;
    if (c->lat)
        bench_lat_add(c->lat, ((const bench_event *)event)->id);
    if (atomic_fetch_add(&c->got, 1) + 1 == c->n)
        atomic_store(&c->last_ns, bench_now_ns());
    return EW_OK;
}

static _Atomic long send_failures;

static void on_sent(void *user, ew_err err)
{
    (void)user;
    if (err != EW_OK)
        send_failures++;
}

static ew_manager *ew_open(const char *server)
{
    ew_manager *m = NULL;
    ew_options o = {.server_name = server, .send_timeout_ms = 60000};
    if (ew_manager_new(&m, url(), &o) != EW_OK)
        die("eventwire: ew_manager_new failed");
    return m;
}

/* A text for which the encoded event is `size` bytes (msgpack). */
static char *text_for(long size)
{
    size_t len = size > 40 ? (size_t)size - 40 : 1;
    for (int pass = 0; pass < 3; pass++) {
        char *t = malloc(len + 1);
        if (!t)
            die("out of memory");
        memset(t, 'x', len);
        t[len] = 0;
        bench_event e = {.id = INT64_MAX, .text = t};
        ewi_buf buf = {0};
        if (ewi_encode(&bench_event_type, EW_FORMAT_MSGPACK, &e, &buf, NULL, 0) != EW_OK)
            die("cannot encode the event");
        long over = (long)buf.len - size;
        ewi_buf_free(&buf);
        if (over == 0 || (long)len - over < 1)
            return t;
        free(t);
        len = (size_t)((long)len - over);
    }
    char *t = malloc(len + 1);
    if (!t)
        die("out of memory");
    memset(t, 'x', len);
    t[len] = 0;
    return t;
}

static void ew_run(void *arg, bench_result *res)
{
    const job *j = arg;
    bool durable = j->durable;
    long n = j->n;
    char name[64];
    snprintf(name, sizeof name, "BenchEw%s_%d", durable ? "Durable" : "Transient",
             (int)getpid());
    ew_event_desc ev = {.type = &bench_event_type, .name = name, .durable = durable};
    bench_lat lat;
    counter c = {.n = n, .lat = j->rate ? &lat : NULL};
    if (j->rate)
        bench_lat_init(&lat, n);
    char *text = text_for(j->size);
    ew_manager *recv = ew_open("bench-recv"), *send = ew_open("bench-send");
    ew_listener_desc l = {.event = &ev, .name = "Count", .concurrency = (uint32_t)j->concurrency,
                          .prefetch = PREFETCH};
    if (ew_listen(recv, &l, on_event, &c) != EW_OK || ew_manager_start(recv) != EW_OK ||
        ew_manager_start(send) != EW_OK)
        die("eventwire: start failed");
    send_failures = 0;
    int64_t t0 = bench_now_ns();
    for (long i = 0; i < n; i++) {
        bench_event e = {.id = i, .text = text};
        if (j->rate) {
            bench_pace(t0, i, j->rate);
            e.id = bench_now_ns();
        }
        if (ew_send_async(send, &ev, NULL, &e, on_sent, NULL) != EW_OK)
            die("eventwire: ew_send_async failed");
    }
    if (ew_flush(send, 120000) != EW_OK || send_failures)
        die("eventwire: sends failed");
    int64_t deadline = ewi_now_ms() + 120000;
    while (atomic_load(&c.got) < n && ewi_left_ms(deadline) > 0)
        ewi_sleep_ms(1);
    if (atomic_load(&c.got) < n)
        die("eventwire: not every event arrived");
    int64_t dt = atomic_load(&c.last_ns) - t0;
    res->rate = (double)n * 1e9 / (double)(dt > 0 ? dt : 1);
    if (j->rate) {
        res->p50 = bench_lat_pct(&lat, 0.50);
        res->p99 = bench_lat_pct(&lat, 0.99);
        res->p999 = bench_lat_pct(&lat, 0.999);
    }
    ew_manager_free(send);
    ew_manager_free(recv);
    free(text);
    /* Leave nothing behind on the shared broker. */
    amqp_connection_state_t rc = raw_open();
    char q[128];
    snprintf(q, sizeof q, "%s::Count", name);
    amqp_queue_delete(rc, 1, amqp_cstring_bytes(q), 0, 0);
    snprintf(q, sizeof q, "%s::Count.dlq", name);
    amqp_queue_delete(rc, 1, amqp_cstring_bytes(q), 0, 0);
    amqp_exchange_delete(rc, 1, amqp_cstring_bytes(name), 0);
    raw_close(rc);
}

/* ---- main ---------------------------------------------------------------- */

static void usage(FILE *f, const char *argv0)
{
    fprintf(f,
            "usage: %s [options] [events] [rounds]\n"
            "  -n N        events per throughput run (default 100000)\n"
            "  -r N        rounds, 1..15 (default 3)\n"
            "  -s BYTES    body size, 16..1048576 (default 100)\n"
            "  -c N        listener concurrency / raw consumers, 1..64 (default 1)\n"
            "  -m MODE     transient, durable or both (default both)\n"
            "  -l N        events of the latency run, 0 for none (default 5000)\n"
            "  -R N        send rate of the latency run, events/s (default 1000)\n"
            "  --no-direct leave out the raw run through the default exchange\n"
            "  --only raw|ew  one side only\n"
            "  --raw-headers  the raw client also sends eventwire's content type and\n"
            "              four framework headers (ew-event, ew-message-id,\n"
            "              ew-sent-at, ew-attempt), so that the broker handles the\n"
            "              same properties on both sides\n"
            "  --raw-batch    the raw client runs under SCHED_BATCH, as eventwire's\n"
            "              own threads do by default (EW_THREADS)\n"
            "  -h, --help  this text\n"
            "RabbitMQ at $EW_TEST_RABBITMQ_URL, else rabbitmq://guest:guest@127.0.0.1:5672/\n",
            argv0);
}

int main(int argc, char **argv)
{
    long n = 100000, rounds = 3, size = 100, conc = 1, lat_n = 5000, lat_rate = 1000;
    const char *only = "", *mode_arg = "both";
    bool direct_run = true;
    int positional = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool ok = true;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout, argv[0]);
            return 0;
        } else if (strcmp(a, "-n") == 0) {
            ok = bench_count(v, 100000000, &n), i++;
        } else if (strcmp(a, "-r") == 0) {
            ok = bench_count(v, 15, &rounds), i++;
        } else if (strcmp(a, "-s") == 0) {
            ok = bench_count(v, 1048576, &size) && size >= 16, i++;
        } else if (strcmp(a, "-c") == 0) {
            ok = bench_count(v, 64, &conc), i++;
        } else if (strcmp(a, "-l") == 0) {
            ok = v && (strcmp(v, "0") == 0 ? (lat_n = 0, true) : bench_count(v, 10000000, &lat_n)),
            i++;
        } else if (strcmp(a, "-R") == 0) {
            ok = bench_count(v, 10000000, &lat_rate), i++;
        } else if (strcmp(a, "-m") == 0) {
            ok = v && (strcmp(v, "transient") == 0 || strcmp(v, "durable") == 0 ||
                       strcmp(v, "both") == 0),
            mode_arg = v, i++;
        } else if (strcmp(a, "--raw-headers") == 0) {
            raw_headers = true;
        } else if (strcmp(a, "--raw-batch") == 0) {
            bench_raw_batch = true;
        } else if (strcmp(a, "--no-direct") == 0) {
            direct_run = false;
        } else if (strcmp(a, "--only") == 0) {
            ok = v && (strcmp(v, "raw") == 0 || strcmp(v, "ew") == 0), only = v, i++;
        } else if (a[0] != '-' && positional == 0) {
            ok = bench_count(a, 100000000, &n), positional++;
        } else if (a[0] != '-' && positional == 1) {
            ok = bench_count(a, 15, &rounds), positional++;
        } else {
            ok = false;
        }
        if (!ok) {
            fprintf(stderr, "%s: bad argument '%s'\n", argv[0], a);
            usage(stderr, argv[0]);
            return 2;
        }
    }
    char *text = text_for(size);
    bench_event e = {.id = n, .text = text};
    ewi_buf buf = {0};
    if (ewi_encode(&bench_event_type, EW_FORMAT_MSGPACK, &e, &buf, NULL, 0) != EW_OK)
        die("cannot encode the event");
    printf("bench_rabbitmq: %ld events, %ld round(s), prefetch %d, concurrency %ld, on %s\n"
           "  raw body %ld bytes; eventwire body %zu bytes (msgpack) + its ew-* headers\n",
           n, rounds, PREFETCH, conc, url(), size, buf.len);
    ewi_buf_free(&buf);
    free(text);
    const char *names[2] = {"(a) transient, manual ack", "(b) durable, confirms"};
    const char *cases[2] = {"transient", "durable"};
    char labels[96];
    snprintf(labels, sizeof labels, "\"size\":%ld,\"concurrency\":%ld", size, conc);
    bool run_raw = strcmp(only, "ew") != 0, run_ew = strcmp(only, "raw") != 0;
    for (int mode = 0; mode < 2; mode++) {
        if (strcmp(mode_arg, "both") != 0 && strcmp(mode_arg, cases[mode]) != 0)
            continue;
        double direct[15] = {0}, topic[15] = {0}, ew[15] = {0}, raw_cpu[15] = {0},
               ew_cpu[15] = {0}, raw_rss[15] = {0}, ew_rss[15] = {0};
        for (int r = 0; r < rounds; r++) {
            job jd = {.durable = mode == 1, .topic = false, .n = n, .size = size,
                      .concurrency = (int)conc};
            job jt = jd, je = jd;
            jt.topic = true;
            if (run_raw && direct_run) {
                bench_result x = bench_in_child(raw_run, &jd);
                direct[r] = x.rate;
                bench_emit_rate("rabbitmq", cases[mode], "raw-default-exchange", labels, r + 1,
                                n, &x);
            }
            if (run_raw) {
                bench_result x = bench_in_child(raw_run, &jt);
                topic[r] = x.rate;
                raw_cpu[r] = x.cpu_s * 1e6 / (double)n;
                raw_rss[r] = (double)x.rss_kb;
                bench_emit_rate("rabbitmq", cases[mode], bench_raw_impl(raw_headers), labels, r + 1, n, &x);
            }
            if (run_ew) {
                bench_result x = bench_in_child(ew_run, &je);
                ew[r] = x.rate;
                ew_cpu[r] = x.cpu_s * 1e6 / (double)n;
                ew_rss[r] = (double)x.rss_kb;
                bench_emit_rate("rabbitmq", cases[mode], "eventwire", labels, r + 1, n, &x);
            }
            printf("  %s round %d: raw %.0f/s (default exchange), raw %.0f/s (topic exchange, "
                   "%.1f us CPU/msg), eventwire %.0f/s (%.1f us CPU/msg)\n",
                   names[mode], r + 1, direct[r], topic[r], raw_cpu[r], ew[r], ew_cpu[r]);
            fflush(stdout);
        }
        int k = (int)rounds;
        double md = bench_median(direct, k), mt = bench_median(topic, k),
               me = bench_median(ew, k);
        printf("%s:\n"
               "  raw librabbitmq, default exchange    %8.0f msgs/s\n"
               "  raw librabbitmq, topic exchange '#'  %8.0f msgs/s   (eventwire's topology)\n"
               "  eventwire                            %8.0f events/s\n"
               "  ratio eventwire / raw: %.2f (same topology), %.2f (default exchange)\n"
               "  client CPU per message: raw %.1f us, eventwire %.1f us (medians)\n"
               "  peak RSS: raw %.0f KiB, eventwire %.0f KiB\n",
               names[mode], md, mt, me, mt > 0 ? me / mt : 0, md > 0 ? me / md : 0,
               bench_median(raw_cpu, k), bench_median(ew_cpu, k), bench_median(raw_rss, k),
               bench_median(ew_rss, k));
        if (lat_n > 0) {
            job jl = {.durable = mode == 1, .topic = true, .n = lat_n, .size = size,
                      .concurrency = (int)conc, .rate = lat_rate};
            bench_result lr, le;
            bench_latency_rounds("rabbitmq", cases[mode], labels,
                                 bench_raw_impl(raw_headers), lat_n, lat_rate, (int)rounds,
                                 run_raw ? raw_run : NULL, run_ew ? ew_run : NULL, &jl, &lr, &le);
            printf("  latency, %ld events at %ld/s, send to listener, medians of %d rounds, "
                   "p50 / p99 / p99.9:\n"
                   "    raw       %8.0f %8.0f %8.0f us\n"
                   "    eventwire %8.0f %8.0f %8.0f us\n",
                   lat_n, lat_rate, (int)rounds, lr.p50, lr.p99, lr.p999, le.p50, le.p99, le.p999);
        }
        fflush(stdout);
    }
    return 0;
}
