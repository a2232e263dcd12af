/* bench_local: events per second from ew_send to the listener on local://,
 * next to a bare msgpack-c pack + unpack + decode loop of the same struct
 * in the same run, and the ratio; then the latency from ew_send to the
 * listener at a fixed rate below saturation.
 *
 *   bench_local [-n events] [-r rounds] [-R rate] [-L latency-events]
 *               [-c max-concurrency] [-P pool-threads] [-I events] [events]
 *
 *   -n  hello events per round (default 1,000,000; orders get a fifth)
 *   -r  rounds (default 3): each round runs the bare loop and eventwire at
 *       each concurrency in turn, and the figures printed are the medians
 *   -R  events/s of the latency run (default 1,000; 0 skips it)
 *   -L  events of the latency run (default 5,000)
 *   -c  the highest listener concurrency (default 4: runs 1, 2, 4)
 *   -P  also run each concurrency with the manager's shared worker pool of
 *       this many threads (ew_options.worker_pool), beside the listener's
 *       own threads in the same round (default 0: own threads only)
 *   -I  also count instructions per event with valgrind's callgrind, which
 *       counts the same on a busy machine as on an idle one: each figure is
 *       one run of this program under callgrind with that many hello events
 *       (orders: a fifth), counted from the first send to the last event
 *       handled, every thread included (0, the default: skip)
 *
 * The eventwire figure covers everything an application pays: encode, the
 * framework headers (message id, send time), the pipelines (none here), the
 * in-process queue, the hand-off to a worker thread, decode into a freshly
 * allocated struct, the listener and the acknowledgement. The bare loop
 * does only the codec work, on one thread, with no allocation per event.
 *
 * The latency run sends a durable event with ew_send on a fixed schedule
 * (absolute deadlines, so a late send does not shift the later ones) to one
 * listener of concurrency 1, which takes the difference between the
 * monotonic clock and the send time carried in the event; each percentile
 * printed is the median over the rounds. */
#include <errno.h>
#include <msgpack.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#if __has_include(<valgrind/callgrind.h>)
#include <valgrind/callgrind.h>
#define HAVE_CALLGRIND 1
#else
#define CALLGRIND_ZERO_STATS
#define CALLGRIND_DUMP_STATS_AT(s)
#define HAVE_CALLGRIND 0
#endif

#include "ewi.h"

/* ---- the two events ----------------------------------------------------- */

typedef struct {
    const char *world;
    int64_t count;
} hello_event;

EW_TYPE(hello_event, EW_FIELD(hello_event, world, EW_STRING),
        EW_FIELD(hello_event, count, EW_INT64));

typedef struct {
    const char *sku;
    uint32_t qty;
    double price;
} line_item;

typedef struct {
    int64_t id;
    const char *customer;
    line_item *items;
    size_t items_count;
} order_event;

EW_TYPE(line_item, EW_FIELD(line_item, sku, EW_STRING), EW_FIELD(line_item, qty, EW_UINT32),
        EW_FIELD(line_item, price, EW_DOUBLE));
EW_TYPE(order_event, EW_FIELD(order_event, id, EW_INT64),
        EW_FIELD(order_event, customer, EW_STRING),
        EW_NESTED_ARRAY(order_event, items, line_item, items_count));

static line_item items3[3] = {{"SKU-000001", 2, 9.99}, {"SKU-000002", 1, 19.5},
                              {"SKU-000003", 7, 1.25}};

/* ---- counting instructions ---------------------------------------------- */

/* Under callgrind (-I), a child runs one measurement: the counts start at
 * its first event and are written out when its last one is handled. */
static bool counting;

static void count_start(void)
{
    if (counting)
        CALLGRIND_ZERO_STATS;
}

static void count_stop(void)
{
    if (counting)
        CALLGRIND_DUMP_STATS_AT("measured");
}

/* ---- bare msgpack-c baselines ------------------------------------------- */

static bool key_is(const msgpack_object_kv *kv, const char *k)
{
    size_t n = strlen(k);
    return kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == n &&
           memcmp(kv->key.via.str.ptr, k, n) == 0;
}

static double bare_hello(long n)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    volatile int64_t sink = 0;
    count_start();
    int64_t t0 = ewi_now_ms();
    for (long i = 0; i < n; i++) {
        hello_event in = {"world", i}, out = {0};
        msgpack_sbuffer_clear(&sb);
        msgpack_pack_map(&pk, 2);
        msgpack_pack_str_with_body(&pk, "world", 5);
        msgpack_pack_str_with_body(&pk, in.world, strlen(in.world));
        msgpack_pack_str_with_body(&pk, "count", 5);
        msgpack_pack_int64(&pk, in.count);
        size_t off = 0;
        if (msgpack_unpack_next(&up, sb.data, sb.size, &off) != MSGPACK_UNPACK_SUCCESS)
            abort();
        msgpack_object_map *m = &up.data.via.map;
        for (uint32_t k = 0; k < m->size; k++) {
            if (key_is(&m->ptr[k], "world"))
                out.world = m->ptr[k].val.via.str.ptr;
            else if (key_is(&m->ptr[k], "count"))
                out.count = m->ptr[k].val.via.i64;
        }
        sink += out.count + (out.world != NULL);
    }
    int64_t ms = ewi_now_ms() - t0;
    count_stop();
    msgpack_unpacked_destroy(&up);
    msgpack_sbuffer_destroy(&sb);
    return n * 1000.0 / (ms ? ms : 1);
}

static double bare_order(long n)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    volatile int64_t sink = 0;
    count_start();
    int64_t t0 = ewi_now_ms();
    for (long i = 0; i < n; i++) {
        order_event in = {i, "ACME Corporation", items3, 3}, out = {0};
        line_item got[3];
        msgpack_sbuffer_clear(&sb);
        msgpack_pack_map(&pk, 3);
        msgpack_pack_str_with_body(&pk, "id", 2);
        msgpack_pack_int64(&pk, in.id);
        msgpack_pack_str_with_body(&pk, "customer", 8);
        msgpack_pack_str_with_body(&pk, in.customer, strlen(in.customer));
        msgpack_pack_str_with_body(&pk, "items", 5);
        msgpack_pack_array(&pk, 3);
        for (int k = 0; k < 3; k++) {
            msgpack_pack_map(&pk, 3);
            msgpack_pack_str_with_body(&pk, "sku", 3);
            msgpack_pack_str_with_body(&pk, in.items[k].sku, strlen(in.items[k].sku));
            msgpack_pack_str_with_body(&pk, "qty", 3);
            msgpack_pack_uint32(&pk, in.items[k].qty);
            msgpack_pack_str_with_body(&pk, "price", 5);
            msgpack_pack_double(&pk, in.items[k].price);
        }
        size_t off = 0;
        if (msgpack_unpack_next(&up, sb.data, sb.size, &off) != MSGPACK_UNPACK_SUCCESS)
            abort();
        msgpack_object_map *m = &up.data.via.map;
        for (uint32_t k = 0; k < m->size; k++) {
            msgpack_object *v = &m->ptr[k].val;
            if (key_is(&m->ptr[k], "id"))
                out.id = v->via.i64;
            else if (key_is(&m->ptr[k], "customer"))
                out.customer = v->via.str.ptr;
            else if (key_is(&m->ptr[k], "items")) {
                out.items = got;
                out.items_count = v->via.array.size;
                for (uint32_t j = 0; j < v->via.array.size && j < 3; j++) {
                    msgpack_object_map *im = &v->via.array.ptr[j].via.map;
                    for (uint32_t q = 0; q < im->size; q++) {
                        if (key_is(&im->ptr[q], "sku"))
                            got[j].sku = im->ptr[q].val.via.str.ptr;
                        else if (key_is(&im->ptr[q], "qty"))
                            got[j].qty = (uint32_t)im->ptr[q].val.via.u64;
                        else if (key_is(&im->ptr[q], "price"))
                            got[j].price = im->ptr[q].val.via.f64;
                    }
                }
            }
        }
        sink += out.id + (long)out.items_count;
    }
    int64_t ms = ewi_now_ms() - t0;
    count_stop();
    msgpack_unpacked_destroy(&up);
    msgpack_sbuffer_destroy(&sb);
    return n * 1000.0 / (ms ? ms : 1);
}

/* ---- eventwire ---------------------------------------------------------- */

static atomic_long received;

static ew_err on_event(ew_delivery *d, const void *event, void *user)
{
    (void)d;
    (void)event;
    (void)user;
    atomic_fetch_add_explicit(&received, 1, memory_order_relaxed);
    return EW_OK;
}

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* Events/s; *cpu_ns gets the CPU time of all the process's threads per
 * event (polling workers included), a figure the machine's load disturbs
 * less than the elapsed time. */
static double eventwire(const ew_type *type, const void *(*make)(long, void *), long n,
                        uint32_t concurrency, uint32_t pool, const char *name,
                        double *cpu_ns)
{
    ew_manager *m;
    char url[64];
    snprintf(url, sizeof url, "local://bench-%s-%u-%u", name, concurrency, pool);
    if (ew_manager_new(&m, url, &(ew_options){.worker_pool = pool}) != EW_OK)
        abort();
    ew_event_desc ev = {.type = type, .name = name};
    ew_listener_desc l = {.event = &ev, .name = "Bench", .concurrency = concurrency,
                          .prefetch = 1000};
    if (ew_listen(m, &l, on_event, NULL) != EW_OK || ew_manager_start(m) != EW_OK)
        abort();
    atomic_store(&received, 0);
    char scratch[256];
    double c0 = cpu_s();
    count_start();
    int64_t t0 = ewi_now_ms();
    for (long i = 0; i < n; i++)
        if (ew_send(m, &ev, make(i, scratch)) != EW_OK)
            abort();
    while (atomic_load(&received) < n)
        ewi_sleep_ms(1);
    int64_t ms = ewi_now_ms() - t0;
    count_stop();
    *cpu_ns = (cpu_s() - c0) * 1e9 / (double)n;
    ew_manager_free(m);
    return n * 1000.0 / (ms ? ms : 1);
}

static const void *make_hello(long i, void *scratch)
{
    hello_event *h = scratch;
    *h = (hello_event){"world", i};
    return h;
}

static const void *make_order(long i, void *scratch)
{
    order_event *o = scratch;
    *o = (order_event){i, "ACME Corporation", items3, 3};
    return o;
}

#define MAX_ROUNDS 99

/* ---- latency ------------------------------------------------------------ */

typedef struct {
    int64_t sent_ns;
    int64_t seq;
} ping_event;

EW_TYPE(ping_event, EW_FIELD(ping_event, sent_ns, EW_INT64),
        EW_FIELD(ping_event, seq, EW_INT64));

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

typedef struct {
    int64_t *lat_ns;
    long n;
    atomic_long got;
} ping_sink;

static ew_err on_ping(ew_delivery *d, const void *event, void *user)
{
    (void)d;
    const ping_event *p = event;
    ping_sink *s = user;
    int64_t lat = now_ns() - p->sent_ns;
    if (p->seq >= 0 && p->seq < s->n)
        s->lat_ns[p->seq] = lat;
    atomic_fetch_add_explicit(&s->got, 1, memory_order_release);
    return EW_OK;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static double pct_us(const int64_t *sorted, long n, double p)
{
    long i = (long)(p * (double)n + 0.5) - 1;
    if (i < 0)
        i = 0;
    if (i >= n)
        i = n - 1;
    return (double)sorted[i] / 1000.0;
}

/* One latency run: p50, p99, p99.9 and the maximum in us. */
static void latency_run(long rate, long n, double out[4])
{
    ew_manager *m;
    if (ew_manager_new(&m, "local://bench-latency", NULL) != EW_OK)
        abort();
    ew_event_desc ev = {.type = &ping_event_type, .name = "ping", .durable = true};
    ew_listener_desc l = {.event = &ev, .name = "Bench", .concurrency = 1};
    ping_sink sink = {.lat_ns = calloc((size_t)n, sizeof(int64_t)), .n = n};
    if (!sink.lat_ns || ew_listen(m, &l, on_ping, &sink) != EW_OK ||
        ew_manager_start(m) != EW_OK)
        abort();
    int64_t period = 1000000000 / rate, next = now_ns() + period;
    for (long i = 0; i < n; i++, next += period) {
        struct timespec ts = {(time_t)(next / 1000000000), (long)(next % 1000000000)};
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) != 0) {
        }
        ping_event p = {now_ns(), i};
        if (ew_send(m, &ev, &p) != EW_OK)
            abort();
    }
    while (atomic_load_explicit(&sink.got, memory_order_acquire) < n)
        ewi_sleep_ms(1);
    ew_manager_free(m);
    qsort(sink.lat_ns, (size_t)n, sizeof *sink.lat_ns, cmp_i64);
    out[0] = pct_us(sink.lat_ns, n, 0.50);
    out[1] = pct_us(sink.lat_ns, n, 0.99);
    out[2] = pct_us(sink.lat_ns, n, 0.999);
    out[3] = (double)sink.lat_ns[n - 1] / 1000.0;
    free(sink.lat_ns);
}

static double median(double *v, int n);

static void latency(long rate, long n, long rounds)
{
    double r[4][MAX_ROUNDS];
    for (long i = 0; i < rounds; i++) {
        double one[4];
        latency_run(rate, n, one);
        for (int k = 0; k < 4; k++)
            r[k][i] = one[k];
    }
    printf("latency ew_send -> listener, durable, %ld events at %ld/s, median of %ld "
           "rounds: p50 %.1f us  p99 %.1f us  p99.9 %.1f us  max %.1f us\n",
           n, rate, rounds, median(r[0], (int)rounds), median(r[1], (int)rounds),
           median(r[2], (int)rounds), median(r[3], (int)rounds));
}

/* ---- instructions per event ---------------------------------------------- */

/* The instructions a child run under callgrind counted for its measurement
 * ("-M event:concurrency", concurrency 0 for the bare loop) of n events, per
 * event; a negative value when it could not be counted (*why says why). */
static double instructions(const char *event, unsigned conc, unsigned pool, long n,
                           const char **why)
{
    char self[4096], dir[] = "/tmp/bench_local_cg.XXXXXX", out[4200], mode[64], num[32];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len <= 0 || !mkdtemp(dir)) {
        *why = "no temporary directory";
        return -1;
    }
    self[len] = 0;
    snprintf(out, sizeof out, "--callgrind-out-file=%s/cg.%%p", dir);
    if (pool)
        snprintf(mode, sizeof mode, "%s:%u:%u", event, conc, pool);
    else
        snprintf(mode, sizeof mode, "%s:%u", event, conc);
    snprintf(num, sizeof num, "%ld", n);
    fflush(stdout); /* or the child's freopen writes what is buffered again */
    pid_t pid = fork();
    if (pid == 0) {
        freopen("/dev/null", "w", stdout);
        freopen("/dev/null", "w", stderr);
        execlp("valgrind", "valgrind", "--tool=callgrind", out, self, "-M", mode, "-n", num,
               (char *)NULL);
        _exit(127);
    }
    int st = 0;
    while (pid > 0 && waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    double per = -1;
    *why = pid < 0 ? "fork failed"
           : WIFEXITED(st) && WEXITSTATUS(st) == 127 ? "valgrind is not installed"
           : !WIFEXITED(st) || WEXITSTATUS(st) != 0 ? "the run under valgrind failed"
                                                    : "callgrind wrote no count";
    /* The dump the measurement asked for names its trigger. */
    for (int part = 1; part <= 2 && pid > 0; part++) {
        char path[4300], line[512];
        snprintf(path, sizeof path, "%s/cg.%d.%d", dir, (int)pid, part);
        FILE *f = fopen(path, "r");
        bool measured = false;
        while (f && fgets(line, sizeof line, f)) {
            if (strstr(line, "Client Request: measured"))
                measured = true;
            if (measured && (strncmp(line, "totals:", 7) == 0 || strncmp(line, "summary:", 8) == 0)) {
                per = strtod(strchr(line, ':') + 1, NULL) / (double)n;
                break;
            }
        }
        if (f)
            fclose(f);
        unlink(path);
    }
    char path[4300];
    snprintf(path, sizeof path, "%s/cg.%d", dir, (int)pid);
    unlink(path);
    rmdir(dir);
    return per;
}

/* ---- main ---------------------------------------------------------------- */

static long peak_rss_kb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

static double median(double *v, int n)
{
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && v[j - 1] > v[j]; j--) {
            double t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: bench_local [-n events] [-r rounds] [-R rate] [-L latency-events] "
               "[-c max-concurrency] [-P pool-threads] [-I events] [events]\n"
               "  -n  hello events per round, >= 1000 (default 1000000; orders: n/5)\n"
               "  -r  rounds, 1..99 (default 3); medians are printed\n"
               "  -R  events/s of the latency run, 0..100000 (default 1000; 0: skip)\n"
               "  -L  events of the latency run, >= 100 (default 5000)\n"
               "  -c  highest listener concurrency, 1..64 (default 4: runs 1, 2, 4)\n"
               "  -P  also run each concurrency on a shared worker pool of this many\n"
               "      threads, 1..1024, beside the listener's own threads (default 0: no)\n"
               "  -I  also count instructions per event under valgrind's callgrind,\n"
               "      with this many hello events, >= 1000 (orders: a fifth; default 0: skip)\n");
}

static bool num_arg(const char *s, long lo, long hi, long *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

int main(int argc, char **argv)
{
    long n = 1000000, rounds = 3, rate = 1000, lat_n = 5000, max_conc = 4, cg_n = 0,
         pool = 0;
    const char *measure = NULL;
    int opt;
    if (argc > 1 && strcmp(argv[1], "--help") == 0) {
        usage(stdout);
        return 0;
    }
    while ((opt = getopt(argc, argv, "n:r:R:L:c:P:I:M:h")) != -1) {
        bool ok = true;
        switch (opt) {
        case 'n': ok = num_arg(optarg, 1000, 1000000000, &n); break;
        case 'r': ok = num_arg(optarg, 1, MAX_ROUNDS, &rounds); break;
        case 'R': ok = num_arg(optarg, 0, 100000, &rate); break;
        case 'L': ok = num_arg(optarg, 100, 100000000, &lat_n); break;
        case 'c': ok = num_arg(optarg, 1, 64, &max_conc); break;
        case 'P': ok = num_arg(optarg, 0, 1024, &pool); break;
        case 'I': ok = num_arg(optarg, 0, 100000000, &cg_n) && (cg_n == 0 || cg_n >= 1000); break;
        case 'M': measure = optarg; break; /* a child of -I */
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
        if (!ok) {
            fprintf(stderr, "bench_local: bad value '%s' for -%c\n", optarg, opt);
            usage(stderr);
            return 2;
        }
    }
    /* The older form: bench_local [events]. */
    if (optind == argc - 1 && num_arg(argv[optind], 1000, 1000000000, &n))
        optind++;
    if (optind < argc) {
        fprintf(stderr, "bench_local: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    uint32_t concs[8];
    int nconc = 0;
    for (uint32_t c = 1; c <= (uint32_t)max_conc && nconc < 8; c *= 2)
        concs[nconc++] = c;

    struct {
        const char *name;
        const ew_type *type;
        const void *(*make)(long, void *);
        double (*bare)(long);
        long n;
    } cases[] = {{"hello", &hello_event_type, make_hello, bare_hello, n},
                 {"orders", &order_event_type, make_order, bare_order, n / 5}};
    if (measure) {
        /* One measurement under callgrind: "event:concurrency[:pool]",
         * concurrency 0 the bare loop. */
        char *colon = strchr(measure, ':'), *colon2 = colon ? strchr(colon + 1, ':') : NULL;
        long conc, mpool = 0;
        if (colon2) {
            *colon2 = 0;
            if (!num_arg(colon2 + 1, 1, 1024, &mpool)) {
                fprintf(stderr, "bench_local: bad value '%s' for -M\n", measure);
                return 2;
            }
        }
        size_t c = 0;
        while (c < 2 && (!colon || strncmp(measure, cases[c].name, (size_t)(colon - measure)) != 0 ||
                         cases[c].name[colon - measure] != 0))
            c++;
        if (c == 2 || !num_arg(colon + 1, 0, 64, &conc)) {
            fprintf(stderr, "bench_local: bad value '%s' for -M\n", measure);
            return 2;
        }
        counting = true;
        double cpu;
        if (conc == 0)
            cases[c].bare(n);
        else
            eventwire(cases[c].type, cases[c].make, n, (uint32_t)conc, (uint32_t)mpool,
                      cases[c].name, &cpu);
        return 0;
    }
    printf("bench_local: events/s from ew_send to the listener on local://, "
           "median of %ld rounds\n", rounds);
    printf("%-8s %-12s %-10s %10s %14s %14s %7s %12s\n", "event", "concurrency", "threads",
           "events", "eventwire/s", "bare codec/s", "ratio", "CPU ns/event");
    /* Per concurrency the listener's own threads, then (-P) the pool. */
    int nmodes = pool > 0 ? 2 : 1;
    for (size_t c = 0; c < 2; c++) {
        double bare[MAX_ROUNDS], ew[8][2][MAX_ROUNDS], cpu[8][2][MAX_ROUNDS];
        for (long r = 0; r < rounds; r++) {
            bare[r] = cases[c].bare(cases[c].n);
            for (int k = 0; k < nconc; k++)
                for (int p = 0; p < nmodes; p++)
                    ew[k][p][r] = eventwire(cases[c].type, cases[c].make, cases[c].n,
                                            concs[k], p ? (uint32_t)pool : 0,
                                            cases[c].name, &cpu[k][p][r]);
        }
        double b = median(bare, (int)rounds);
        for (int k = 0; k < nconc; k++)
            for (int p = 0; p < nmodes; p++) {
                char threads[16];
                snprintf(threads, sizeof threads, p ? "pool %ld" : "own", pool);
                double e = median(ew[k][p], (int)rounds);
                printf("%-8s %-12u %-10s %10ld %14.0f %14.0f %7.2f %12.0f\n", cases[c].name,
                       concs[k], threads, cases[c].n, e, b, e / b,
                       median(cpu[k][p], (int)rounds));
            }
        fflush(stdout);
    }
    if (rate > 0)
        latency(rate, lat_n, rounds);
    if (cg_n > 0 && !HAVE_CALLGRIND) {
        fprintf(stderr, "bench_local: built without valgrind/callgrind.h: -I cannot count\n");
        return 1;
    }
    for (size_t c = 0; c < 2 && cg_n > 0; c++) {
        long events = c == 0 ? cg_n : cg_n / 5;
        const char *why = "";
        double bare = instructions(cases[c].name, 0, 0, events, &why);
        if (bare < 0) {
            fprintf(stderr, "bench_local: -I: %s\n", why);
            return 1;
        }
        printf("instructions/event (callgrind, %ld events) %-6s bare codec %.0f", events,
               cases[c].name, bare);
        for (int k = 0; k < nconc; k++) {
            for (int p = 0; p < nmodes; p++) {
                double ew = instructions(cases[c].name, concs[k], p ? (unsigned)pool : 0,
                                         events, &why);
                if (ew < 0) {
                    fprintf(stderr, "\nbench_local: -I: %s\n", why);
                    return 1;
                }
                if (p)
                    printf("  pool%ld c%u %.0f (%.1fx)", pool, concs[k], ew, ew / bare);
                else
                    printf("  eventwire c%u %.0f (%.1fx)", concs[k], ew, ew / bare);
                fflush(stdout);
            }
        }
        printf("\n");
    }
    printf("peak RSS %ld KiB\n", peak_rss_kb());
    return 0;
}
