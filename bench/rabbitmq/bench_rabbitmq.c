/* bench_rabbitmq: eventwire over rabbitmq:// against a raw librabbitmq
 * producer and consumer with the same settings, in the same run, on the
 * local RabbitMQ (scripts/brokers/rabbitmq.sh start).
 *
 *   bench_rabbitmq [events] [rounds]      (default 100,000 events, 3 rounds)
 *
 * (a) transient: non-persistent messages, no confirms, manual ack of every
 *     message, prefetch 1000.
 * (b) durable: durable queue, persistent messages, publisher confirms
 *     (raw: waits for the confirms every 1000 messages; eventwire: its
 *     pipelined confirms), manual ack, prefetch 1000.
 * Producer and consumer are separate connections on separate threads, the
 * messages ~100 bytes. The rate is events / (last receive - first send);
 * each figure is the median of the rounds, and the ratio eventwire / raw. */
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "codec_internal.h"
#include "ewi.h"

#define PREFETCH 1000
#define CONFIRM_EVERY 1000
#define TEXT "the quick brown fox jumps over the lazy dog, twice: the quick brown fox jumps over."

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

typedef struct raw_consumer {
    const char *queue;
    long n;
    amqp_connection_state_t c;
    _Atomic int ready;
    int64_t last_ms;
} raw_consumer;

static void *raw_consume(void *arg)
{
    raw_consumer *rc = arg;
    amqp_connection_state_t c = rc->c;
    amqp_basic_qos(c, 1, 0, PREFETCH, 0);
    amqp_basic_consume(c, 1, amqp_cstring_bytes(rc->queue), amqp_empty_bytes, 0, 0, 0,
                       amqp_empty_table);
    if (amqp_get_rpc_reply(c).reply_type != AMQP_RESPONSE_NORMAL)
        die("raw: basic.consume failed");
    atomic_store(&rc->ready, 1);
    for (long got = 0; got < rc->n;) {
        amqp_envelope_t env;
        amqp_maybe_release_buffers(c);
        amqp_rpc_reply_t r = amqp_consume_message(c, &env, NULL, 0);
        if (r.reply_type != AMQP_RESPONSE_NORMAL)
            die("raw: consume failed");
        if (amqp_basic_ack(c, 1, env.delivery_tag, 0) != AMQP_STATUS_OK)
            die("raw: ack failed");
        amqp_destroy_envelope(&env);
        got++;
    }
    rc->last_ms = ewi_now_ms();
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
static double raw_run(bool durable, bool topic, long n)
{
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
    raw_consumer rc = {.queue = queue, .n = n, .c = raw_open()};
    pthread_t th;
    pthread_create(&th, NULL, raw_consume, &rc);
    while (!atomic_load(&rc.ready))
        ewi_sleep_ms(1);
    if (durable) {
        amqp_confirm_select(pc, 1);
        if (amqp_get_rpc_reply(pc).reply_type != AMQP_RESPONSE_NORMAL)
            die("raw: confirm.select failed");
    }
    char body[100];
    memset(body, 'x', sizeof body);
    amqp_basic_properties_t p = {._flags = AMQP_BASIC_DELIVERY_MODE_FLAG,
                                 .delivery_mode = durable ? 2 : 1};
    uint64_t acked = 0;
    int64_t t0 = ewi_now_ms();
    for (long i = 0; i < n; i++) {
        memcpy(body, &i, sizeof i);
        if (amqp_basic_publish(pc, 1, topic ? amqp_cstring_bytes(queue) : amqp_empty_bytes,
                               amqp_cstring_bytes(queue), 0, 0, &p,
                               (amqp_bytes_t){sizeof body, body}) != AMQP_STATUS_OK)
            die("raw: publish failed");
        if (durable && (i + 1) % CONFIRM_EVERY == 0)
            raw_wait_confirms(pc, (uint64_t)i + 1, &acked);
    }
    if (durable)
        raw_wait_confirms(pc, (uint64_t)n, &acked);
    pthread_join(th, NULL);
    double rate = (double)n * 1000.0 / (double)(rc.last_ms - t0 > 0 ? rc.last_ms - t0 : 1);
    raw_close(rc.c);
    amqp_queue_delete(pc, 1, amqp_cstring_bytes(queue), 0, 0);
    if (topic)
        amqp_exchange_delete(pc, 1, amqp_cstring_bytes(queue), 0);
    raw_close(pc);
    return rate;
}

/* ---- eventwire ----------------------------------------------------------- */

typedef struct {
    int64_t id;
    const char *text;
} bench_event;

EW_TYPE(bench_event, EW_FIELD(bench_event, id, EW_INT64), EW_FIELD(bench_event, text, EW_STRING));

typedef struct counter {
    _Atomic long got;
    long n;
    _Atomic int64_t last_ms;
} counter;

static ew_err on_event(ew_delivery *d, const void *event, void *user)
{
    (void)d;
    (void)event;
    counter *c = user;
    if (atomic_fetch_add(&c->got, 1) + 1 == c->n)
        atomic_store(&c->last_ms, ewi_now_ms());
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

static double ew_run(bool durable, long n)
{
    char name[64];
    snprintf(name, sizeof name, "BenchEw%s_%d", durable ? "Durable" : "Transient",
             (int)getpid());
    ew_event_desc ev = {.type = &bench_event_type, .name = name, .durable = durable};
    counter c = {.n = n};
    ew_manager *recv = ew_open("bench-recv"), *send = ew_open("bench-send");
    ew_listener_desc l = {.event = &ev, .name = "Count", .concurrency = 1, .prefetch = PREFETCH};
    if (ew_listen(recv, &l, on_event, &c) != EW_OK || ew_manager_start(recv) != EW_OK ||
        ew_manager_start(send) != EW_OK)
        die("eventwire: start failed");
    send_failures = 0;
    int64_t t0 = ewi_now_ms();
    for (long i = 0; i < n; i++) {
        bench_event e = {.id = i, .text = TEXT};
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
    int64_t last = atomic_load(&c.last_ms);
    double rate = (double)n * 1000.0 / (double)(last - t0 > 0 ? last - t0 : 1);
    ew_manager_free(send);
    ew_manager_free(recv);
    /* Leave nothing behind on the shared broker. */
    amqp_connection_state_t rc = raw_open();
    char q[128];
    snprintf(q, sizeof q, "%s::Count", name);
    amqp_queue_delete(rc, 1, amqp_cstring_bytes(q), 0, 0);
    snprintf(q, sizeof q, "%s::Count.dlq", name);
    amqp_queue_delete(rc, 1, amqp_cstring_bytes(q), 0, 0);
    amqp_exchange_delete(rc, 1, amqp_cstring_bytes(name), 0);
    raw_close(rc);
    return rate;
}

/* ---- main ---------------------------------------------------------------- */

/* CPU time of this process (all threads), ms. */
static double cpu_ms(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000.0 +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1000.0;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int k)
{
    qsort(v, (size_t)k, sizeof *v, cmp);
    return k % 2 ? v[k / 2] : (v[k / 2 - 1] + v[k / 2]) / 2;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 100000;
    int rounds = argc > 2 ? atoi(argv[2]) : 3;
    const char *only = argc > 3 ? argv[3] : ""; /* "raw" or "ew": one side only */
    if (n <= 0 || rounds <= 0 || rounds > 15) {
        fprintf(stderr, "usage: %s [events] [rounds (1..15)]\n", argv[0]);
        return 2;
    }
    bench_event e = {.id = n, .text = TEXT};
    ewi_buf buf = {0};
    if (ewi_encode(&bench_event_type, EW_FORMAT_MSGPACK, &e, &buf, NULL, 0) != EW_OK)
        die("cannot encode the event");
    printf("bench_rabbitmq: %ld events, %d round(s), prefetch %d, on %s\n"
           "  raw body 100 bytes; eventwire body %zu bytes (msgpack) + its ew-* headers\n",
           n, rounds, PREFETCH, url(), buf.len);
    ewi_buf_free(&buf);
    const char *names[2] = {"(a) transient, manual ack", "(b) durable, confirms"};
    bool run_raw = strcmp(only, "ew") != 0, run_ew = strcmp(only, "raw") != 0;
    for (int mode = 0; mode < 2; mode++) {
        double direct[15], topic[15], ew[15], raw_cpu = 0, ew_cpu = 0;
        for (int r = 0; r < rounds; r++) {
            direct[r] = run_raw ? raw_run(mode == 1, false, n) : 1;
            double c0 = cpu_ms();
            topic[r] = run_raw ? raw_run(mode == 1, true, n) : 1;
            double c1 = cpu_ms();
            ew[r] = run_ew ? ew_run(mode == 1, n) : 1;
            double c2 = cpu_ms();
            raw_cpu += c1 - c0;
            ew_cpu += c2 - c1;
            printf("  %s round %d: raw %.0f/s (default exchange), raw %.0f/s (topic exchange), "
                   "eventwire %.0f/s\n",
                   names[mode], r + 1, direct[r], topic[r], ew[r]);
            fflush(stdout);
        }
        double md = median(direct, rounds), mt = median(topic, rounds), me = median(ew, rounds);
        printf("%s:\n"
               "  raw librabbitmq, default exchange    %8.0f msgs/s\n"
               "  raw librabbitmq, topic exchange '#'  %8.0f msgs/s   (eventwire's topology)\n"
               "  eventwire                            %8.0f events/s\n"
               "  ratio eventwire / raw: %.2f (same topology), %.2f (default exchange)\n"
               "  client CPU per 1000 messages: raw %.1f ms, eventwire %.1f ms\n",
               names[mode], md, mt, me, me / mt, me / md,
               raw_cpu * 1000.0 / ((double)n * rounds), ew_cpu * 1000.0 / ((double)n * rounds));
        fflush(stdout);
    }
    return 0;
}
