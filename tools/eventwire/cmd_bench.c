/* eventwire bench: sends N events through the broker to one listener of
 * this process and measures the rate (first send to last receipt) and the
 * latency from send to listener. */
#include "cli.h"

#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define STALL_MS 30000 /* no receipt for this long: the run failed */

static void help(FILE *f)
{
    fprintf(f,
            "Usage: eventwire bench URL [options]\n"
            "\n"
            "Sends N events of B bytes to a per-process listener of this command and\n"
            "waits for all of them. On a terminal it shows a live progress bar;\n"
            "otherwise it prints a progress line at every tenth. Then one summary line:\n"
            "  bench: N events of B bytes in T s: R events/s, latency p50 X ms, p99 Y ms\n"
            "Events of other runs on the same event are ignored.\n"
            "\n"
            "  --events N          events to send (default 10000)\n"
            "  --size B            body size in bytes (default 100)\n"
            "  --event NAME        the event name (default eventwire-bench)\n"
            "  --durable           durable events: persistent, broker-confirmed\n"
            CLI_COMMON_HELP
            "\n"
            "Example:\n"
            "  eventwire bench rabbitmq://guest:guest@127.0.0.1/ --events 100000\n"
            "\n" CLI_EXIT_CODES);
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

typedef struct bench {
    ew_event_desc desc;
    ew_listener_desc l;
    char run[64];
    long n;
    double *lat_ms;
    atomic_long received, sent, failed;
    pthread_mutex_t mu;
    pthread_cond_t cv;
} bench;

static ew_err stamp(void *user, ew_envelope *env, const ew_event_desc *event)
{
    (void)event;
    const bench *b = user;
    char t[32];
    snprintf(t, sizeof t, "%" PRId64, now_ns());
    ew_err rc = ew_envelope_set_header(env, "bench-t", t);
    return rc != EW_OK ? rc : ew_envelope_set_header(env, "bench-run", b->run);
}

static ew_err on_event(ew_delivery *d, const void *event, void *user)
{
    (void)event;
    bench *b = user;
    const char *run = ew_delivery_header(d, "bench-run");
    const char *t = ew_delivery_header(d, "bench-t");
    if (!run || !t || strcmp(run, b->run) != 0)
        return EW_OK; /* another run's */
    double ms = (double)(now_ns() - strtoll(t, NULL, 10)) / 1e6;
    long i = atomic_fetch_add(&b->received, 1);
    if (i < b->n)
        b->lat_ms[i] = ms;
    if (i + 1 >= b->n) {
        pthread_mutex_lock(&b->mu);
        pthread_cond_signal(&b->cv);
        pthread_mutex_unlock(&b->mu);
    }
    return EW_OK;
}

static void sent(void *user, ew_err err)
{
    bench *b = user;
    atomic_fetch_add(err == EW_OK ? &b->sent : &b->failed, 1);
}

static int setup(ew_manager *m, void *user)
{
    bench *b = user;
    ew_pipeline p = {.name = "eventwire-bench", .send = stamp};
    ew_err rc = ew_add_pipeline(m, &p, b);
    if (rc == EW_OK)
        rc = ew_listen(m, &b->l, on_event, b);
    return rc == EW_OK ? CLI_OK : cli_fail_ew("bench", rc, "listener");
}

typedef struct progress {
    bool tty;
    int last_tenth;
} progress;

static void show(progress *p, const bench *b, bool final)
{
    long s = atomic_load(&b->sent), r = atomic_load(&b->received);
    if (r > b->n)
        r = b->n;
    if (p->tty) {
        int width = 30, fill = (int)(r * width / b->n);
        char bar[64];
        memset(bar, '#', (size_t)fill);
        memset(bar + fill, '.', (size_t)(width - fill));
        bar[width] = '\0';
        printf("\r[%s] %3ld%%  sent %ld/%ld  received %ld/%ld", bar, r * 100 / b->n, s, b->n,
               r, b->n);
        if (final)
            printf("\n");
        fflush(stdout);
        return;
    }
    int tenth = (int)(r * 10 / b->n);
    if (tenth > p->last_tenth || final) {
        if (tenth == p->last_tenth && final)
            return;
        p->last_tenth = tenth;
        printf("bench: sent %ld/%ld received %ld/%ld\n", s, b->n, r, b->n);
        fflush(stdout);
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int cli_bench(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"events", required_argument, NULL, 'n'}, {"size", required_argument, NULL, 's'},
        {"event", required_argument, NULL, 'e'},  {"durable", no_argument, NULL, 'd'},
        {"help", no_argument, NULL, 'h'},         CLI_COMMON_LONGOPTS,
        {NULL, 0, NULL, 0}};
    cli_common c;
    cli_common_init(&c, "bench");
    long n = 10000, size = 100;
    const char *event = "eventwire-bench";
    bool durable = false;
    int opt;
    optind = 1;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":hv", longopts, NULL)) != -1) {
        int r = cli_common_opt(&c, opt, optarg);
        if (r < 0)
            return CLI_USAGE;
        if (r > 0)
            continue;
        switch (opt) {
        case 'n':
            if ((n = cli_number(c.cmd, "--events", optarg, 1, 100000000)) < 0)
                return CLI_USAGE;
            break;
        case 's':
            if ((size = cli_number(c.cmd, "--size", optarg, 0, 64L << 20)) < 0)
                return CLI_USAGE;
            break;
        case 'e': event = optarg; break;
        case 'd': durable = true; break;
        case 'h': help(stdout); return CLI_OK;
        default: return cli_bad_option(c.cmd, argv, opt);
        }
    }
    if (argc - optind != 1)
        return cli_fail(c.cmd, CLI_USAGE, "expected URL (see eventwire bench --help)");

    bench *b = calloc(1, sizeof *b);
    double *lat = b ? malloc((size_t)n * sizeof *lat) : NULL;
    /* The body: a msgpack map {"data": <size bytes>}. */
    json_t *obj = json_object();
    char *pad = malloc((size_t)size + 1);
    if (!b || !lat || !obj || !pad) {
        free(b);
        free(lat);
        free(pad);
        json_decref(obj);
        return cli_fail(c.cmd, CLI_ERROR, "out of memory for %ld events", n);
    }
    memset(pad, 'x', (size_t)size);
    pad[size] = '\0';
    json_object_set_new(obj, "data", json_string(pad));
    free(pad);
    char *body = NULL, err[256];
    size_t body_len = 0;
    int pr = cli_json_to_body(obj, EW_FORMAT_MSGPACK, &body, &body_len, err, sizeof err);
    json_decref(obj);
    if (pr < 0) {
        free(b);
        free(lat);
        return cli_fail(c.cmd, CLI_ERROR, "%s", err);
    }
    b->n = n;
    b->lat_ms = lat;
    b->desc = (ew_event_desc){.type = &ew_raw_type, .name = event, .durable = durable};
    b->l = (ew_listener_desc){.event = &b->desc, .name = "bench", .per_process = true,
                              .concurrency = 1};
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, NULL);
    ew_manager *m;
    int code = cli_manager(&c, argv[optind], &m, setup, b);
    if (code != CLI_OK)
        goto out;
    snprintf(b->run, sizeof b->run, "%s", ew_manager_server_name(m));

    progress p = {.tty = isatty(STDOUT_FILENO) != 0, .last_tenth = 0};
    ew_raw_event raw = {body, body_len, EW_FORMAT_MSGPACK};
    int64_t t0 = now_ns(), last_show = t0;
    ew_err rc = EW_OK;
    for (long i = 0; i < n; i++) {
        if ((rc = ew_send_async(m, &b->desc, NULL, &raw, sent, b)) != EW_OK) {
            atomic_fetch_add(&b->failed, 1);
            break;
        }
        if (p.tty && now_ns() - last_show > 100000000) {
            last_show = now_ns();
            show(&p, b, false);
        } else if (!p.tty) {
            show(&p, b, false);
        }
    }
    if (rc != EW_OK) {
        code = cli_fail_ew(c.cmd, rc, "send");
        ew_manager_stop(m, 1000);
        ew_manager_free(m);
        goto out;
    }
    /* Until every event arrived, or none came for STALL_MS. */
    long seen = -1;
    int64_t stall_since = now_ns();
    pthread_mutex_lock(&b->mu);
    for (;;) {
        long r = atomic_load(&b->received);
        if (r >= n || atomic_load(&b->failed) > 0)
            break;
        if (r != seen) {
            seen = r;
            stall_since = now_ns();
        } else if (now_ns() - stall_since > (int64_t)STALL_MS * 1000000) {
            break;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_nsec -= 1000000000;
            ts.tv_sec++;
        }
        pthread_cond_timedwait(&b->cv, &b->mu, &ts);
        pthread_mutex_unlock(&b->mu);
        show(&p, b, false);
        pthread_mutex_lock(&b->mu);
    }
    pthread_mutex_unlock(&b->mu);
    int64_t t1 = now_ns();
    show(&p, b, true);
    ew_flush(m, c.send_timeout_ms);
    ew_manager_stop(m, 5000);
    ew_manager_free(m);
    long got = atomic_load(&b->received), failed = atomic_load(&b->failed);
    if (got > n)
        got = n;
    if (failed > 0 || got < n) {
        code = cli_fail(c.cmd, CLI_ERROR, "%ld of %ld events received (%ld sends failed)", got,
                        n, failed);
        goto out;
    }
    qsort(lat, (size_t)n, sizeof *lat, cmp_double);
    double secs = (double)(t1 - t0) / 1e9;
    double p50 = lat[(size_t)((double)(n - 1) * 0.50)];
    double p99 = lat[(size_t)((double)(n - 1) * 0.99)];
    printf("bench: %ld events of %ld bytes in %.3f s: %.0f events/s, latency p50 %.3f ms, "
           "p99 %.3f ms\n",
           n, size, secs, (double)n / secs, p50, p99);
    fflush(stdout);
out:
    pthread_mutex_destroy(&b->mu);
    pthread_cond_destroy(&b->cv);
    free(body);
    free(lat);
    free(b);
    return code;
}
