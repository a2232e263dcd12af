/* bench_start: how long ew_manager_start takes with many listeners of one
 * event on the RabbitMQ-backed transports, beside raw librabbitmq making
 * the same topology on the same broker as fast as it can, in the same run.
 *
 *   bench_start [-n LISTENERS] [-r ROUNDS] [-c CHANNELS] [-d] [URL...]
 *
 * With EW_BENCH_BROKER_PID=PID (the broker's process, e.g. the beam.smp of
 * `pgrep -f 'beam.*rabbit'`), the CPU time that process spent on each start
 * is printed too: on a machine shared with other work it varies much less
 * than the elapsed time, and it shows the cost a start puts on the broker.
 *
 * URLs default to rabbitmq://, stomp://...?dialect=rabbitmq and
 * amqp://...?dialect=rabbitmq on 127.0.0.1 (guest/guest). The raw floor
 * talks AMQP 0-9-1 to the host and port of EW_BENCH_RAW (default
 * 127.0.0.1:5672) as guest. One round runs the raw floor and then each URL,
 * the order rotated every round; each time is the median of the rounds,
 * each ratio the median of the rounds' ratios to the floor.
 *
 * The topology, as eventwire makes it at start for N listeners L0..L(N-1)
 * of event E: a durable topic exchange E; per listener a queue E::Li
 * (transient, or durable with -d) bound to E with '#', and a consumer on
 * E::Li (a listener's dead-letter queue E::Li.dlq is declared by its first
 * dead letter, not at start). The raw floor: one connection, the exchange
 * declared once (one round trip), then every queue.declare and queue.bind
 * with nowait and a basic.consume per listener, spread round robin over CHANNELS channels (default 64), all
 * written before the first consume-ok is read. Its time runs from the TCP
 * connect to the last consume-ok; eventwire's is the ew_manager_start call
 * (its connections included). Each round's names are new, and everything
 * declared is deleted after the round. */
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "eventwire/eventwire.h"

#define MAX_ROUNDS 25
#define MAX_URLS 8
#define MAX_LISTENERS 20000

static const char *defaults[] = {
    "rabbitmq://guest:guest@127.0.0.1:5672/",
    "stomp://guest:guest@127.0.0.1:61613/?dialect=rabbitmq",
    "amqp://guest:guest@127.0.0.1:5672/?dialect=rabbitmq",
};

static char raw_host[256] = "127.0.0.1";
static int raw_port = 5672;
static int nlisteners = 500, nrounds = 3, nchannels = 64;
static bool durable;
static int broker_pid; /* 0: the broker's CPU is not measured */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CPU seconds (user + system) the broker process has used; < 0 unknown. */
static double broker_cpu_s(void)
{
    if (!broker_pid)
        return -1;
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", broker_pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    /* Fields after the command's closing parenthesis: utime and stime are
     * the 12th and 13th of them. */
    const char *p = strrchr(buf, ')');
    unsigned long long ut, st;
    if (!p || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut,
                     &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static void die(const char *what)
{
    fprintf(stderr, "bench_start: %s (is RabbitMQ running? scripts/brokers/rabbitmq.sh start)\n",
            what);
    exit(1);
}

static amqp_bytes_t b(const char *s)
{
    return amqp_cstring_bytes(s);
}

/* ---- raw librabbitmq ------------------------------------------------------ */

static amqp_connection_state_t raw_open(int channels)
{
    amqp_connection_state_t c = amqp_new_connection();
    amqp_socket_t *s = amqp_tcp_socket_new(c);
    if (!s || amqp_socket_open(s, raw_host, raw_port) != AMQP_STATUS_OK)
        die("raw: cannot connect");
    if (amqp_login(c, "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, "guest", "guest")
            .reply_type != AMQP_RESPONSE_NORMAL)
        die("raw: login failed");
    /* The opens pipelined too: write them all, then read the open-oks. */
    amqp_channel_open_t open = {.out_of_band = amqp_empty_bytes};
    for (int k = 1; k <= channels; k++)
        if (amqp_send_method(c, (amqp_channel_t)k, AMQP_CHANNEL_OPEN_METHOD, &open) !=
            AMQP_STATUS_OK)
            die("raw: channel.open failed");
    for (int got = 0; got < channels;) {
        amqp_frame_t f;
        if (amqp_simple_wait_frame(c, &f) != AMQP_STATUS_OK)
            die("raw: waiting for open-ok failed");
        if (f.frame_type != AMQP_FRAME_METHOD)
            continue;
        if (f.payload.method.id != AMQP_CHANNEL_OPEN_OK_METHOD)
            die("raw: channel.open refused");
        got++;
    }
    return c;
}

static void raw_close(amqp_connection_state_t c)
{
    amqp_connection_close(c, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(c);
}

static void queue_name(char *buf, size_t len, const char *event, int i, bool dlq)
{
    snprintf(buf, len, "%s::L%d%s", event, i, dlq ? ".dlq" : "");
}

/* Reads method frames until `want` of them carried method `id`; anything
 * else that is not a channel's routine reply is fatal. */
static void raw_wait(amqp_connection_state_t c, amqp_method_number_t id, int want,
                     const char *what)
{
    for (int got = 0; got < want;) {
        amqp_frame_t f;
        if (amqp_simple_wait_frame(c, &f) != AMQP_STATUS_OK)
            die(what);
        if (f.frame_type != AMQP_FRAME_METHOD)
            continue;
        if (f.payload.method.id == id)
            got++;
        else if (f.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD ||
                 f.payload.method.id == AMQP_CONNECTION_CLOSE_METHOD)
            die(what);
    }
    amqp_maybe_release_buffers(c);
}

/* The floor: seconds from connect to the last consume-ok. The connection
 * is returned open (the consumers alive until the cleanup). */
static double raw_start(const char *event, amqp_connection_state_t *out)
{
    double t0 = now_s();
    int nk = nchannels < nlisteners ? nchannels : nlisteners;
    amqp_connection_state_t c = raw_open(nk);
    amqp_exchange_declare_t x = {.exchange = b(event), .type = b("topic"), .durable = 1,
                                 .arguments = amqp_empty_table};
    if (amqp_send_method(c, 1, AMQP_EXCHANGE_DECLARE_METHOD, &x) != AMQP_STATUS_OK)
        die("raw: exchange.declare failed");
    raw_wait(c, AMQP_EXCHANGE_DECLARE_OK_METHOD, 1, "raw: exchange.declare failed");
    char q[256];
    for (int i = 0; i < nlisteners; i++) {
        amqp_channel_t ch = (amqp_channel_t)(i % nk + 1);
        queue_name(q, sizeof q, event, i, false);
        amqp_queue_declare_t qd = {.queue = b(q), .durable = durable, .nowait = 1,
                                   .arguments = amqp_empty_table};
        amqp_queue_bind_t bd = {.queue = b(q), .exchange = b(event), .routing_key = b("#"),
                                .nowait = 1, .arguments = amqp_empty_table};
        amqp_basic_consume_t bc = {.queue = b(q), .consumer_tag = amqp_empty_bytes,
                                   .arguments = amqp_empty_table};
        if (amqp_send_method(c, ch, AMQP_QUEUE_DECLARE_METHOD, &qd) != AMQP_STATUS_OK ||
            amqp_send_method(c, ch, AMQP_QUEUE_BIND_METHOD, &bd) != AMQP_STATUS_OK ||
            amqp_send_method(c, ch, AMQP_BASIC_CONSUME_METHOD, &bc) != AMQP_STATUS_OK)
            die("raw: writing the declarations failed");
    }
    raw_wait(c, AMQP_BASIC_CONSUME_OK_METHOD, nlisteners, "raw: a declaration was refused");
    *out = c;
    return now_s() - t0;
}

/* Deletes event's exchange and every queue of its listeners (a missing
 * dead-letter queue is no error), pipelined. */
static void cleanup(const char *event)
{
    int nk = nchannels < nlisteners ? nchannels : nlisteners;
    amqp_connection_state_t c = raw_open(nk);
    char q[256];
    for (int i = 0; i < 2 * nlisteners; i++) {
        queue_name(q, sizeof q, event, i / 2, i % 2);
        amqp_queue_delete_t d = {.queue = b(q), .nowait = 1};
        if (amqp_send_method(c, (amqp_channel_t)(i % nk + 1), AMQP_QUEUE_DELETE_METHOD, &d) !=
            AMQP_STATUS_OK)
            die("cleanup: writing queue.delete failed");
    }
    amqp_exchange_delete_t x = {.exchange = b(event), .nowait = 1};
    amqp_send_method(c, 1, AMQP_EXCHANGE_DELETE_METHOD, &x);
    /* One round trip per channel: the deletes before it are done. */
    amqp_basic_qos_t qos = {0};
    for (int k = 1; k <= nk; k++)
        amqp_send_method(c, (amqp_channel_t)k, AMQP_BASIC_QOS_METHOD, &qos);
    raw_wait(c, AMQP_BASIC_QOS_OK_METHOD, nk, "cleanup: a delete was refused");
    raw_close(c);
}

/* ---- eventwire --------------------------------------------------------------- */

typedef struct nothing {
    int64_t id;
} nothing;

EW_TYPE(nothing, EW_FIELD(nothing, id, EW_INT64));

static ew_err on_event(ew_delivery *d, const void *event, void *user)
{
    (void)d;
    (void)event;
    (void)user;
    return EW_OK;
}

/* Seconds ew_manager_start took; < 0: this build has no such transport. */
static double ew_start(const char *url, const char *event, double *cpu_after)
{
    ew_options o = {.server_name = "bench-start", .start_timeout_ms = 120000,
                    .log_level = EW_LOG_WARN};
    ew_event_desc ev = {.type = &nothing_type, .name = event, .durable = durable};
    ew_manager *m = NULL;
    ew_err rc = ew_manager_new(&m, url, &o);
    if (rc == EW_ENOTFOUND)
        return -1;
    if (rc != EW_OK) {
        fprintf(stderr, "bench_start: %s: %s\n", url, ew_strerror(rc));
        exit(1);
    }
    char name[32];
    for (int i = 0; i < nlisteners; i++) {
        snprintf(name, sizeof name, "L%d", i);
        ew_listener_desc l = {.event = &ev, .name = name, .concurrency = 1};
        if (ew_listen(m, &l, on_event, NULL) != EW_OK)
            die("eventwire: ew_listen failed");
    }
    double t0 = now_s();
    rc = ew_manager_start(m);
    double took = now_s() - t0;
    *cpu_after = broker_cpu_s();
    if (rc != EW_OK) {
        fprintf(stderr, "bench_start: %s: ew_manager_start: %s\n", url, ew_strerror(rc));
        ew_manager_free(m);
        cleanup(event);
        exit(1);
    }
    ew_manager_stop(m, 10000);
    ew_manager_free(m);
    return took;
}

/* ---- main ------------------------------------------------------------------ */

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(const double *v, int k)
{
    double s[MAX_ROUNDS];
    memcpy(s, v, (size_t)k * sizeof *v);
    qsort(s, (size_t)k, sizeof *s, cmp);
    return k % 2 ? s[k / 2] : (s[k / 2 - 1] + s[k / 2]) / 2;
}

static int usage(const char *argv0, FILE *to, int code)
{
    fprintf(to,
            "usage: %s [-n LISTENERS] [-r ROUNDS] [-c CHANNELS] [-d] [URL...]\n"
            "  -n  listeners of one event (1..%d, default 500)\n"
            "  -r  rounds, the median is printed (1..%d, default 3)\n"
            "  -c  channels of the raw floor (1..2000, default 64)\n"
            "  -d  durable event (durable listener queues; default transient)\n"
            "  URL RabbitMQ-backed eventwire URLs (default: rabbitmq://, stomp:// and\n"
            "      amqp:// with dialect=rabbitmq on 127.0.0.1, guest/guest)\n"
            "  EW_BENCH_RAW=HOST:PORT  where the raw floor connects (127.0.0.1:5672)\n"
            "  EW_BENCH_BROKER_PID=PID the broker's process: its CPU time per start is\n"
            "                          printed too\n",
            argv0, MAX_LISTENERS, MAX_ROUNDS);
    return code;
}

/* A whole decimal number in [lo, hi], else false. */
static bool number(const char *s, int lo, int hi, int *out)
{
    if (!s || !*s)
        return false;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return false;
    *out = (int)v;
    return true;
}

int main(int argc, char **argv)
{
    const char *urls[MAX_URLS];
    int nurls = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help"))
            return usage(argv[0], stdout, 0);
        if (!strcmp(a, "-d")) {
            durable = true;
        } else if (!strcmp(a, "-n") || !strcmp(a, "-r") || !strcmp(a, "-c")) {
            int *to = a[1] == 'n' ? &nlisteners : a[1] == 'r' ? &nrounds : &nchannels;
            int hi = a[1] == 'n' ? MAX_LISTENERS : a[1] == 'r' ? MAX_ROUNDS : 2000;
            if (!number(i + 1 < argc ? argv[i + 1] : NULL, 1, hi, to)) {
                fprintf(stderr, "%s: %s needs a number from 1 to %d\n", argv[0], a, hi);
                return usage(argv[0], stderr, 2);
            }
            i++;
        } else if (a[0] == '-') {
            fprintf(stderr, "%s: unknown option %s\n", argv[0], a);
            return usage(argv[0], stderr, 2);
        } else if (!strstr(a, "://")) {
            fprintf(stderr, "%s: %s is not a URL\n", argv[0], a);
            return usage(argv[0], stderr, 2);
        } else if (nurls == MAX_URLS) {
            fprintf(stderr, "%s: at most %d URLs\n", argv[0], MAX_URLS);
            return usage(argv[0], stderr, 2);
        } else {
            urls[nurls++] = a;
        }
    }
    if (!nurls)
        for (size_t i = 0; i < sizeof defaults / sizeof *defaults; i++)
            urls[nurls++] = defaults[i];
    const char *raw = getenv("EW_BENCH_RAW");
    if (raw && *raw) {
        const char *colon = strrchr(raw, ':');
        if (!colon || (size_t)(colon - raw) >= sizeof raw_host ||
            !number(colon + 1, 1, 65535, &raw_port)) {
            fprintf(stderr, "%s: EW_BENCH_RAW=%s is not HOST:PORT\n", argv[0], raw);
            return 2;
        }
        snprintf(raw_host, sizeof raw_host, "%.*s", (int)(colon - raw), raw);
    }
    const char *bp = getenv("EW_BENCH_BROKER_PID");
    if (bp && *bp && (!number(bp, 1, 1 << 30, &broker_pid) || broker_cpu_s() < 0)) {
        fprintf(stderr, "%s: EW_BENCH_BROKER_PID=%s is not a running process\n", argv[0], bp);
        return 2;
    }
    printf("bench_start: %d listeners of one event (%s listener queues), %d round(s), raw floor on %s:%d over %d channel(s)\n",
           nlisteners, durable ? "durable" : "transient", nrounds, raw_host, raw_port,
           nchannels < nlisteners ? nchannels : nlisteners);
    /* Column 0 is the raw floor, then the URLs. */
    double t[MAX_URLS + 1][MAX_ROUNDS], cpu[MAX_URLS + 1][MAX_ROUNDS];
    bool absent[MAX_URLS + 1] = {false};
    int ncols = nurls + 1;
    for (int r = 0; r < nrounds; r++) {
        printf("  round %d:", r + 1);
        for (int j = 0; j < ncols; j++) {
            int col = (j + r) % ncols; /* rotated: none always runs first */
            char event[64];
            snprintf(event, sizeof event, "BenchStart_%d_%d_%d", (int)getpid(), r, col);
            double c0 = broker_cpu_s();
            if (col == 0) {
                amqp_connection_state_t c;
                t[0][r] = raw_start(event, &c);
                cpu[0][r] = broker_cpu_s() - c0;
                raw_close(c);
                printf("%s raw %.3f s", j ? " |" : "", t[0][r]);
            } else {
                t[col][r] = ew_start(urls[col - 1], event, &cpu[col][r]);
                cpu[col][r] -= c0;
                absent[col] = t[col][r] < 0;
                if (!absent[col])
                    printf("%s %s %.3f s", j ? " |" : "", urls[col - 1], t[col][r]);
            }
            if (broker_pid && !absent[col])
                printf(" (broker CPU %.3f s)", cpu[col][r]);
            cleanup(event);
            fflush(stdout);
        }
        printf("\n");
    }
    double floor_s = median(t[0], nrounds);
    printf("median of %d round(s), %d listeners:\n", nrounds, nlisteners);
    printf("  %-58s %7.3f s", "raw librabbitmq (the broker's floor)", floor_s);
    if (broker_pid)
        printf("   broker CPU %.3f s", median(cpu[0], nrounds));
    printf("\n");
    for (int col = 1; col < ncols; col++) {
        if (absent[col]) {
            printf("  %-58s   (transport not in this build)\n", urls[col - 1]);
            continue;
        }
        /* The ratio of each round, then their median: a load that changes
         * between rounds moves the floor and eventwire together. */
        double ratio[MAX_ROUNDS];
        for (int r = 0; r < nrounds; r++)
            ratio[r] = t[col][r] / t[0][r];
        printf("  %-58s %7.3f s   %.2f x the floor", urls[col - 1], median(t[col], nrounds),
               median(ratio, nrounds));
        if (broker_pid)
            printf("   broker CPU %.3f s", median(cpu[col], nrounds));
        printf("\n");
    }
    return 0;
}
