/* bench_stomp: events per second over STOMP 1.2, from the first send to the
 * last receive, on RabbitMQ, ActiveMQ and ActiveMQ Artemis, in one run:
 *   raw       a minimal STOMP client written for this benchmark: a producer
 *             connection sending persistent SENDs with receipts (at most 1000
 *             unreceipted, like eventwire's window) and a consumer
 *             connection with ack:client-individual, prefetch 1000, an ACK
 *             per message
 *   eventwire ew_send_async of a durable event and a listener with prefetch
 *             1000 (encode, framework headers, the I/O thread hand-offs, a
 *             worker, decode, ACK)
 * Same addressing for both (the dialect's: /exchange/E/E and x-queue-name on
 * RabbitMQ, a virtual topic on ActiveMQ, a multicast address and an FQQN
 * subscription on Artemis), ~100-byte payloads. Raw and eventwire run
 * `rounds` times alternately; the medians are compared. Every run has a
 * listener name of its own (queue names are unique per broker on Artemis).
 * aspyx-event has no STOMP figure: no version's STOMP provider works (its
 * sends carry no headers and its consumer fails on every message in
 * 0.9.0-0.9.3; 0.9.4-0.9.8 cannot construct it).
 *
 * Every run is a child process of its own, so that its CPU time (user +
 * system, all threads, per message) and peak RSS belong to that side alone.
 * Latency runs per broker (as many rounds per side, alternating) send at a
 * fixed rate and measure from the send to the consumer / listener, p50 /
 * p99 / p99.9, medians over the rounds. Lines starting
 * with "@ " carry the figures as JSON for scripts/bench.
 *
 *   bench_stomp [-n events] [-r rounds] [-l latency events] [-R rate]
 *               [--only raw|ew] [--raw-headers] [--raw-batch]
 *               [rabbitmq] [activemq] [artemis]
 *   --raw-headers has the raw client send eventwire's five headers as well,
 *   to tell the broker's extra work for them from the client's.
 *   (-h for the defaults)
 *   URLs: $EW_TEST_STOMP_RABBITMQ_URL, $EW_TEST_STOMP_ACTIVEMQ_URL,
 *         $EW_TEST_ARTEMIS_STOMP_URL, else the local brokers of
 *         scripts/brokers (Artemis: artemis:artemis@127.0.0.1:61623). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <amqp.h>
#include <amqp_tcp_socket.h>

#include "../common/bench.h"
#include "ewi.h"
#include "transports/stomp/stomp.h"
#include "transports/rmqadmin/rmqadmin.h"

#define WINDOW 1000
#define PREFETCH 1000
#define PAYLOAD 100

static char run_id[32];
/* --raw-headers: the raw client sends eventwire's five headers too. */
static bool raw_headers;

static void die(const char *fmt, ...) EWI_PRINTF(1, 2);

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "bench_stomp: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

/* Deletes a run's exchange and queues on RabbitMQ (over AMQP 0-9-1, as
 * STOMP cannot), so that benchmarks leave no durable queues behind. */
static void rabbit_cleanup(const stomp_options *o, const char *event, const char *listener)
{
    if (o->dialect != STOMP_RABBITMQ || !o->amqp_port)
        return;
    amqp_connection_state_t c = amqp_new_connection();
    amqp_socket_t *sock = amqp_tcp_socket_new(c);
    if (!sock || amqp_socket_open(sock, o->host, o->amqp_port) ||
        amqp_login(c, o->vhost, 0, 131072, 0, AMQP_SASL_METHOD_PLAIN,
                   o->login ? o->login : "guest", o->passcode ? o->passcode : "guest")
                .reply_type != AMQP_RESPONSE_NORMAL) {
        amqp_destroy_connection(c);
        return;
    }
    amqp_channel_open(c, 1);
    amqp_get_rpc_reply(c);
    char q[256];
    const char *suffix[] = {"", ".dlq"};
    for (int i = 0; i < 2; i++) {
        snprintf(q, sizeof q, "%s::%s%s", event, listener, suffix[i]);
        amqp_queue_delete(c, 1, amqp_cstring_bytes(q), 0, 0);
        amqp_get_rpc_reply(c);
    }
    amqp_exchange_delete(c, 1, amqp_cstring_bytes(event), 0);
    amqp_get_rpc_reply(c);
    amqp_channel_close(c, 1, AMQP_REPLY_SUCCESS);
    amqp_connection_close(c, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(c);
}

/* ---- the raw client ---------------------------------------------------------- */

typedef struct raw {
    int fd;
    ewi_stomp_parser *p;
    uint8_t buf[65536];
    size_t off, len; /* unparsed bytes in buf */
} raw;

static void raw_write(raw *r, const void *data, size_t len)
{
    const char *d = data;
    while (len) {
        ssize_t n = send(r->fd, d, len, MSG_NOSIGNAL);
        if (n <= 0)
            die("%s", "raw client: send failed");
        d += n;
        len -= (size_t)n;
    }
}

/* Next frame; NULL when none arrived within timeout_ms. */
static ewi_stomp_frame *raw_next(raw *r, int timeout_ms)
{
    for (;;) {
        while (r->off < r->len) {
            size_t used;
            ewi_stomp_status st = ewi_stomp_parse(r->p, r->buf + r->off, r->len - r->off, &used);
            r->off += used;
            if (st == EWI_STOMP_FRAME) {
                ewi_stomp_frame *f = ewi_stomp_parser_take(r->p);
                if (f->cmd == EWI_STOMP_ERROR)
                    die("raw client: ERROR %s: %.*s", ewi_stomp_frame_get(f, "message"),
                        (int)f->body_len, (const char *)f->body);
                return f;
            }
            if (st != EWI_STOMP_MORE)
                die("raw client: %s", ewi_stomp_parser_error(r->p));
        }
        struct pollfd pf = {.fd = r->fd, .events = POLLIN};
        if (poll(&pf, 1, timeout_ms) <= 0)
            return NULL;
        ssize_t n = recv(r->fd, r->buf, sizeof r->buf, 0);
        if (n <= 0)
            die("%s", "raw client: connection closed");
        r->off = 0;
        r->len = (size_t)n;
    }
}

static void raw_open(raw *r, const stomp_options *o)
{
    memset(r, 0, sizeof *r);
    r->p = ewi_stomp_parser_new(NULL);
    r->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)o->port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    if (connect(r->fd, (struct sockaddr *)&sa, sizeof sa) != 0)
        die("raw client: cannot connect to %s", o->host);
    int one = 1;
    setsockopt(r->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char f[512];
    int n = snprintf(f, sizeof f, "CONNECT\naccept-version:1.2\nhost:%s\nheart-beat:0,0\n%s%s%s%s%s\n",
                     o->vhost, o->login ? "login:" : "", o->login ? o->login : "",
                     o->login ? "\npasscode:" : "", o->passcode ? o->passcode : "",
                     o->login ? "\n" : "");
    raw_write(r, f, (size_t)n + 1);
    ewi_stomp_frame *c = raw_next(r, 5000);
    if (!c || c->cmd != EWI_STOMP_CONNECTED)
        die("%s", "raw client: no CONNECTED");
    ewi_stomp_frame_free(c);
}

static void raw_close(raw *r)
{
    close(r->fd);
    ewi_stomp_parser_free(r->p);
}

typedef struct raw_run {
    const stomp_options *o;
    const char *event;
    int n;
    raw cons;
    int64_t last_rx;
    bench_lat *lat; /* latency run: the send time is the body's first 8 bytes */
} raw_run;

/* What one run does. */
typedef struct job {
    const stomp_options *o;
    const char *url;
    int n, round;
    long rate; /* > 0: a latency run at this rate */
} job;

static void *raw_consume(void *arg)
{
    raw_run *rr = arg;
    ewi_buf out = {0};
    for (int got = 0; got < rr->n;) {
        ewi_stomp_frame *f = raw_next(&rr->cons, 60000);
        if (!f)
            die("%s", "raw consumer: stalled");
        if (f->cmd == EWI_STOMP_MESSAGE) {
            got++;
            if (rr->lat && f->body_len >= sizeof(int64_t)) {
                int64_t sent;
                memcpy(&sent, f->body, sizeof sent);
                bench_lat_add(rr->lat, sent);
            }
            out.len = 0;
            ewi_stomp_writer w;
            ewi_stomp_write_begin(&w, &out, EWI_STOMP_ACK);
            ewi_stomp_write_header(&w, "id", ewi_stomp_frame_get(f, "ack"));
            ewi_stomp_write_end(&w, NULL, 0, false);
            raw_write(&rr->cons, out.data, out.len);
        }
        ewi_stomp_frame_free(f);
    }
    rr->last_rx = bench_now_ns();
    ewi_buf_free(&out);
    return NULL;
}

static void run_raw(void *arg, bench_result *res)
{
    bench_raw_sched();
    const job *j = arg;
    const stomp_options *o = j->o;
    int n = j->n, round = j->round;
    char event[64];
    snprintf(event, sizeof event, "StompBenchRaw_%s_%d", run_id, round);
    char listener[80];
    snprintf(listener, sizeof listener, "L_%s", event);
    stomp_target send, sub;
    ewi_sub s = {.event = event, .listener = listener, .queue = NULL, .durable = true,
                 .prefetch = PREFETCH};
    char queue[192];
    snprintf(queue, sizeof queue, "%s::%s", event, listener);
    s.queue = queue;
    if (o->dialect == STOMP_RABBITMQ) {
        char err[512];
        rmqa *tp = stomp_admin_new(o);
        /* The listener queue too, as eventwire declares it: with an
         * administration connection the subscription names /amq/queue/Q. */
        rmqa_decl d = {.kind = RMQA_LISTENER, .event = event, .queue = queue, .durable = true};
        if (!tp || rmqa_ensure(tp, &d, err, sizeof err) != EW_OK)
            die("declare: %s", tp ? err : "out of memory");
        rmqa_free(tp);
    }
    stomp_send_target(o, EWI_DEST_EVENT, event, NULL, true, &send);
    stomp_sub_target(o, &s, &sub);

    bench_lat lat;
    raw_run rr = {.o = o, .event = event, .n = n, .lat = j->rate ? &lat : NULL};
    if (j->rate)
        bench_lat_init(&lat, n);
    raw_open(&rr.cons, o);
    ewi_buf out = {0};
    ewi_stomp_writer w;
    ewi_stomp_write_begin(&w, &out, EWI_STOMP_SUBSCRIBE);
    ewi_stomp_write_header(&w, "id", "1");
    ewi_stomp_write_header(&w, "destination", sub.dest);
    ewi_stomp_write_header(&w, "ack", "client-individual");
    ewi_stomp_write_header(&w, "receipt", "sub");
    for (size_t i = 0; i < sub.n; i++)
        ewi_stomp_write_header(&w, sub.h[i].key, sub.h[i].value);
    ewi_stomp_write_end(&w, NULL, 0, false);
    raw_write(&rr.cons, out.data, out.len);
    ewi_stomp_frame *rc = raw_next(&rr.cons, 5000);
    if (!rc || rc->cmd != EWI_STOMP_RECEIPT)
        die("%s", "raw consumer: no RECEIPT for SUBSCRIBE");
    ewi_stomp_frame_free(rc);

    raw prod;
    raw_open(&prod, o);
    pthread_t th;
    pthread_create(&th, NULL, raw_consume, &rr);
    char payload[PAYLOAD];
    memset(payload, 'x', sizeof payload);
    int64_t t0 = bench_now_ns();
    int inflight = 0, receipts = 0;
    for (int i = 0; i < n; i++) {
        while (inflight >= WINDOW) {
            ewi_stomp_frame *f = raw_next(&prod, 60000);
            if (!f)
                die("%s", "raw producer: no receipts");
            if (f->cmd == EWI_STOMP_RECEIPT) {
                inflight--;
                receipts++;
            }
            ewi_stomp_frame_free(f);
        }
        if (j->rate) {
            bench_pace(t0, i, j->rate);
            int64_t now = bench_now_ns();
            memcpy(payload, &now, sizeof now);
        }
        char rid[24];
        snprintf(rid, sizeof rid, "%d", i);
        out.len = 0;
        ewi_stomp_write_begin(&w, &out, EWI_STOMP_SEND);
        ewi_stomp_write_header(&w, "destination", send.dest);
        ewi_stomp_write_header(&w, "receipt", rid);
        for (size_t k = 0; k < send.n; k++)
            ewi_stomp_write_header(&w, send.h[k].key, send.h[k].value);
        if (raw_headers) {
            /* What eventwire's SEND carries besides the raw client's: the
             * broker parses and keeps these for every message. */
            char mid[40], at[24];
            snprintf(mid, sizeof mid, "00000000-0000-4000-8000-%012d", i);
            snprintf(at, sizeof at, "%lld", (long long)ewi_wall_ms());
            ewi_stomp_write_header(&w, "content-type", "application/msgpack");
            ewi_stomp_write_header(&w, "ew-event", event);
            ewi_stomp_write_header(&w, "ew-message-id", mid);
            ewi_stomp_write_header(&w, "ew-sent-at", at);
            ewi_stomp_write_header(&w, "ew-attempt", "1");
        }
        ewi_stomp_write_end(&w, payload, sizeof payload, true);
        raw_write(&prod, out.data, out.len);
        inflight++;
    }
    while (receipts < n) {
        ewi_stomp_frame *f = raw_next(&prod, 60000);
        if (!f)
            die("%s", "raw producer: receipts stopped");
        receipts += f->cmd == EWI_STOMP_RECEIPT;
        ewi_stomp_frame_free(f);
    }
    pthread_join(th, NULL);
    res->rate = n * 1e9 / (double)(rr.last_rx - t0 > 0 ? rr.last_rx - t0 : 1);
    if (j->rate) {
        res->p50 = bench_lat_pct(&lat, 0.50);
        res->p99 = bench_lat_pct(&lat, 0.99);
        res->p999 = bench_lat_pct(&lat, 0.999);
    }
    raw_close(&prod);
    raw_close(&rr.cons);
    ewi_buf_free(&out);
    rabbit_cleanup(o, event, listener);
}

/* ---- eventwire ----------------------------------------------------------------- */

typedef struct {
    int64_t id;
    char *text;
} bench_event;

static const ew_field bench_fields[] = {
    EW_FIELD(bench_event, id, EW_INT64),
    EW_FIELD(bench_event, text, EW_STRING),
};
static const ew_type bench_type = {"bench_event", sizeof(bench_event), bench_fields, 2};

typedef struct counter {
    atomic_int got;
    int n;
    _Atomic int64_t last;
    bench_lat *lat;
} counter;

static ew_err on_event(ew_delivery *d, const void *event, void *user)
{
    (void)d;
    counter *c = user;
    if (c->lat)
        bench_lat_add(c->lat, ((const bench_event *)event)->id);
    if (atomic_fetch_add(&c->got, 1) + 1 == c->n)
        atomic_store(&c->last, bench_now_ns());
    return EW_OK;
}

static void run_ew(void *arg, bench_result *res)
{
    const job *j = arg;
    const stomp_options *o = j->o;
    const char *url = j->url;
    int n = j->n, round = j->round;
    char name[64];
    snprintf(name, sizeof name, "StompBenchEw_%s_%d", run_id, round);
    ew_event_desc ev = {.type = &bench_type, .name = name, .durable = true};
    bench_lat lat;
    counter c = {.n = n, .lat = j->rate ? &lat : NULL};
    if (j->rate)
        bench_lat_init(&lat, n);
    ew_options opt = {.send_timeout_ms = 60000};
    ew_manager *m;
    if (ew_manager_new(&m, url, &opt) != EW_OK)
        die("cannot create a manager for %s", url);
    char listener[80];
    snprintf(listener, sizeof listener, "L_%s", name);
    ew_listener_desc l = {.event = &ev, .name = listener, .concurrency = 1, .prefetch = PREFETCH};
    if (ew_listen(m, &l, on_event, &c) != EW_OK || ew_manager_start(m) != EW_OK)
        die("cannot start on %s", url);
    /* ~100 bytes on the wire: id plus 90 characters, as msgpack. */
    char text[91];
    memset(text, 'x', 90);
    text[90] = 0;
    int64_t t0 = bench_now_ns();
    for (int i = 0; i < n; i++) {
        bench_event e = {.id = i, .text = text};
        if (j->rate) {
            bench_pace(t0, i, j->rate);
            e.id = bench_now_ns();
        }
        if (ew_send_async(m, &ev, NULL, &e, NULL, NULL) != EW_OK)
            die("%s", "ew_send_async failed");
    }
    if (ew_flush(m, 120000) != EW_OK)
        die("%s", "ew_flush timed out");
    while (atomic_load(&c.got) < n)
        ewi_sleep_ms(1);
    res->rate = n * 1e9 / (double)(atomic_load(&c.last) - t0 > 0 ? atomic_load(&c.last) - t0 : 1);
    if (j->rate) {
        res->p50 = bench_lat_pct(&lat, 0.50);
        res->p99 = bench_lat_pct(&lat, 0.99);
        res->p999 = bench_lat_pct(&lat, 0.999);
    }
    ew_manager_free(m);
    rabbit_cleanup(o, name, listener);
}

/* ---- main -------------------------------------------------------------------- */

static bool run_raw_side = true, run_ew_side = true;
static long lat_n = 5000, lat_rate = 1000;

static void bench(const char *dialect, int n, int rounds)
{
    bool rabbit = strcmp(dialect, "rabbitmq") == 0, art = strcmp(dialect, "artemis") == 0;
    const char *url = getenv(rabbit ? "EW_TEST_STOMP_RABBITMQ_URL"
                             : art  ? "EW_TEST_ARTEMIS_STOMP_URL"
                                    : "EW_TEST_STOMP_ACTIVEMQ_URL");
    if (!url || !*url)
        url = rabbit ? "stomp://guest:guest@127.0.0.1:61613/?dialect=rabbitmq"
              : art  ? "stomp://artemis:artemis@127.0.0.1:61623?dialect=artemis"
                     : "stomp://127.0.0.1:61614?dialect=activemq";
    ewi_url u;
    stomp_options o;
    char err[512];
    if (ewi_url_parse(url, &u, err, sizeof err) != EW_OK ||
        stomp_options_parse(NULL, &u, &o, err, sizeof err) != EW_OK)
        die("bad URL: %s", err);
    double raw_r[16] = {0}, ew_r[16] = {0}, raw_c[16] = {0}, ew_c[16] = {0}, raw_m[16] = {0},
           ew_m[16] = {0};
    for (int i = 0; i < rounds; i++) {
        job jb = {.o = &o, .url = url, .n = n, .round = i};
        if (run_raw_side) {
            bench_result x = bench_in_child(run_raw, &jb);
            raw_r[i] = x.rate;
            raw_c[i] = x.cpu_s * 1e6 / n;
            raw_m[i] = (double)x.rss_kb;
            bench_emit_rate("stomp", dialect, bench_raw_impl(raw_headers), "", i + 1, n, &x);
        }
        if (run_ew_side) {
            bench_result x = bench_in_child(run_ew, &jb);
            ew_r[i] = x.rate;
            ew_c[i] = x.cpu_s * 1e6 / n;
            ew_m[i] = (double)x.rss_kb;
            bench_emit_rate("stomp", dialect, "eventwire", "", i + 1, n, &x);
        }
        /* Client CPU per message: on a small machine the broker and the
         * client share the cores, so this bounds the rate too. */
        printf("  %-8s round %d: raw %8.0f/s (%.1f us CPU/msg)   eventwire %8.0f/s "
               "(%.1f us CPU/msg)\n",
               dialect, i + 1, raw_r[i], raw_c[i], ew_r[i], ew_c[i]);
        fflush(stdout);
    }
    double mr = bench_median(raw_r, rounds), me = bench_median(ew_r, rounds);
    printf("%-8s %d events of ~%d bytes, durable, receipts, client-individual acks, "
           "prefetch %d: raw %.0f/s, eventwire %.0f/s, ratio %.2f\n"
           "         client CPU per message: raw %.1f us, eventwire %.1f us; "
           "peak RSS: raw %.0f KiB, eventwire %.0f KiB (medians)\n",
           dialect, n, PAYLOAD, PREFETCH, mr, me, mr > 0 ? me / mr : 0,
           bench_median(raw_c, rounds), bench_median(ew_c, rounds),
           bench_median(raw_m, rounds), bench_median(ew_m, rounds));
    if (lat_n > 0) {
        job jl = {.o = &o, .url = url, .n = (int)lat_n, .round = 100, .rate = lat_rate};
        bench_result lr, le;
        bench_latency_rounds("stomp", dialect, "", bench_raw_impl(raw_headers), lat_n,
                             lat_rate, rounds, run_raw_side ? run_raw : NULL,
                             run_ew_side ? run_ew : NULL, &jl, &lr, &le);
        printf("         latency, %ld events at %ld/s, medians of %d rounds, p50 / p99 / p99.9: raw %.0f / %.0f / %.0f us, "
               "eventwire %.0f / %.0f / %.0f us\n",
               lat_n, lat_rate, rounds, lr.p50, lr.p99, lr.p999, le.p50, le.p99, le.p999);
    }
    fflush(stdout);
    stomp_options_free(&o);
    ewi_url_free(&u);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: bench_stomp [options] [rabbitmq] [activemq] [artemis]\n"
               "  -n N           events per throughput run (default 100000)\n"
               "  -r N           rounds, 1..16 (default 3); raw and eventwire alternate\n"
               "  -l N           events of the latency run, 0 for none (default 5000)\n"
               "  -R N           send rate of the latency run, events/s (default 1000)\n"
               "  --only raw|ew  one side only\n"
               "  --raw-headers  the raw client also sends eventwire's five headers\n"
               "                 (content-type, ew-event, ew-message-id, ew-sent-at,\n"
               "                 ew-attempt), so that the broker handles the same\n"
               "                 headers on both sides\n"
               "  --raw-batch    the raw client runs under SCHED_BATCH, as eventwire's\n"
               "                 own threads do by default (EW_THREADS)\n"
               "  -h, --help     this text\n"
               "no broker named: all three\n");
}

int main(int argc, char **argv)
{
    long n = 100000, rounds = 3;
    bool rabbit = false, amq = false, art = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool ok = true;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "-n") == 0) {
            ok = bench_count(v, 100000000, &n), i++;
        } else if (strcmp(a, "-r") == 0) {
            ok = bench_count(v, 16, &rounds), i++;
        } else if (strcmp(a, "-l") == 0) {
            ok = v && (strcmp(v, "0") == 0 ? (lat_n = 0, true) : bench_count(v, 10000000, &lat_n)),
            i++;
        } else if (strcmp(a, "-R") == 0) {
            ok = bench_count(v, 10000000, &lat_rate), i++;
        } else if (strcmp(a, "--only") == 0) {
            ok = v && (strcmp(v, "raw") == 0 || strcmp(v, "ew") == 0), i++;
            if (ok) {
                run_raw_side = strcmp(v, "raw") == 0;
                run_ew_side = !run_raw_side;
            }
        } else if (strcmp(a, "--raw-headers") == 0) {
            raw_headers = true;
        } else if (strcmp(a, "--raw-batch") == 0) {
            bench_raw_batch = true;
        } else if (strcmp(a, "rabbitmq") == 0) {
            rabbit = true;
        } else if (strcmp(a, "activemq") == 0) {
            amq = true;
        } else if (strcmp(a, "artemis") == 0) {
            art = true;
        } else {
            ok = false;
        }
        if (!ok) {
            fprintf(stderr, "bench_stomp: bad argument '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!rabbit && !amq && !art)
        rabbit = amq = art = true;
    snprintf(run_id, sizeof run_id, "%x", (unsigned)getpid());
    if (rabbit)
        bench("rabbitmq", (int)n, (int)rounds);
    if (amq)
        bench("activemq", (int)n, (int)rounds);
    if (art) {
        bench("artemis", (int)n, (int)rounds);
        printf("artemis  aspyx-event: no figure, no version's STOMP provider works\n");
    }
    return 0;
}
