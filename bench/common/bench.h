/* bench.h: what the benchmark programs share (header only).
 *
 * - bench_count(): strict parsing of a positive count for the options.
 * - bench_in_child(): runs one measurement in a forked child, so that the
 *   CPU time (user + system, all threads) and the peak RSS reported belong
 *   to that one side (eventwire or its baseline) and nothing else.
 * - bench_lat_*: send-to-listener latency samples and their percentiles;
 *   bench_latency_rounds(): both sides' latency runs, alternating, medians.
 * - bench_pace(): sends at a fixed rate.
 * - bench_raw_sched(), bench_raw_impl(): --raw-batch, the raw client under
 *   SCHED_BATCH as eventwire's own threads are by default.
 * - bench_emit(): one machine-readable line per figure, "@ {json}", which
 *   scripts/bench collects; the human-readable lines stay as they are. */
#ifndef EW_BENCH_COMMON_H
#define EW_BENCH_COMMON_H

#include <errno.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* --raw-batch: the raw client's process runs under SCHED_BATCH, the policy
 * eventwire gives its own threads by default (EW_THREADS), so that both
 * sides are scheduled alike. */
static bool bench_raw_batch;

/* Called first in a raw side's child: under --raw-batch its threads (this
 * one, and those it starts, which inherit the policy) become SCHED_BATCH. */
static inline void bench_raw_sched(void)
{
    struct sched_param sp = {.sched_priority = 0};
    if (bench_raw_batch && sched_setscheduler(0, SCHED_BATCH, &sp) != 0)
        perror("bench: sched_setscheduler(SCHED_BATCH)");
}

/* The raw side's name in the "@" lines: raw, raw-headers, raw-batch or
 * raw-headers-batch. */
static inline const char *bench_raw_impl(bool headers)
{
    return headers ? (bench_raw_batch ? "raw-headers-batch" : "raw-headers")
                   : (bench_raw_batch ? "raw-batch" : "raw");
}

/* *out = s as a whole decimal number in 1..max; false otherwise. */
static inline bool bench_count(const char *s, long max, long *out)
{
    if (!s || !*s)
        return false;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < 1 || v > max)
        return false;
    *out = v;
    return true;
}

static inline int64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Sleeps until event i of a run at `rate` per second that started at t0_ns
 * is due; returns at once when it is already late. */
static inline void bench_pace(int64_t t0_ns, long i, long rate)
{
    int64_t due = t0_ns + (int64_t)((double)i * 1e9 / (double)rate);
    struct timespec ts = {.tv_sec = due / 1000000000, .tv_nsec = due % 1000000000};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

/* ---- latency samples ------------------------------------------------------ */

typedef struct bench_lat {
    int64_t *ns;
    long cap;
    _Atomic long n;
} bench_lat;

static inline void bench_lat_init(bench_lat *l, long cap)
{
    l->ns = calloc((size_t)cap, sizeof *l->ns);
    l->cap = cap;
    atomic_store(&l->n, 0);
    if (!l->ns) {
        fprintf(stderr, "bench: out of memory\n");
        exit(1);
    }
}

/* Records one sample: the time from sent_ns (bench_now_ns() at the send,
 * carried in the message) to now. */
static inline void bench_lat_add(bench_lat *l, int64_t sent_ns)
{
    long i = atomic_fetch_add(&l->n, 1);
    if (i < l->cap)
        l->ns[i] = bench_now_ns() - sent_ns;
}

static inline int bench_cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* p in 0..1; microseconds. Sorts the samples. */
static inline double bench_lat_pct(bench_lat *l, double p)
{
    long n = atomic_load(&l->n);
    if (n > l->cap)
        n = l->cap;
    if (n == 0)
        return 0;
    qsort(l->ns, (size_t)n, sizeof *l->ns, bench_cmp_i64);
    long k = (long)(p * (double)n);
    if (k >= n)
        k = n - 1;
    return (double)l->ns[k] / 1000.0;
}

/* ---- one measurement in a child process ----------------------------------- */

typedef struct bench_result {
    double rate;                /* events/s (throughput runs) */
    double p50, p99, p999;      /* microseconds (latency runs) */
    double cpu_s;               /* filled by bench_in_child: user + system */
    long rss_kb;                /* filled by bench_in_child: peak RSS */
} bench_result;

/* Runs fn(arg, &r) in a forked child and returns r with the child's CPU time
 * and peak RSS. Call it only while the calling process has no other thread.
 * A child that fails (exits non-zero) ends the program with its status. */
static inline bench_result bench_in_child(void (*fn)(void *, bench_result *), void *arg)
{
    int p[2];
    bench_result r = {0};
    fflush(NULL);
    if (pipe(p) != 0) {
        perror("bench: pipe");
        exit(1);
    }
    pid_t pid = fork();
    if (pid < 0) {
        perror("bench: fork");
        exit(1);
    }
    if (pid == 0) {
        close(p[0]);
        fn(arg, &r);
        fflush(NULL);
        ssize_t w = write(p[1], &r, sizeof r);
        _exit(w == (ssize_t)sizeof r ? 0 : 1);
    }
    close(p[1]);
    ssize_t got = read(p[0], &r, sizeof r);
    close(p[0]);
    int status;
    struct rusage ru;
    while (wait4(pid, &status, 0, &ru) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || got != (ssize_t)sizeof r) {
        fprintf(stderr, "bench: a measurement failed (child status %d)\n", status);
        exit(WIFEXITED(status) && WEXITSTATUS(status) ? WEXITSTATUS(status) : 1);
    }
    r.cpu_s = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
              (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    r.rss_kb = ru.ru_maxrss;
    return r;
}

/* ---- output ----------------------------------------------------------------- */

static inline int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static inline double bench_median(const double *v, int k)
{
    double s[64];
    if (k <= 0)
        return 0;
    if (k > 64)
        k = 64;
    memcpy(s, v, (size_t)k * sizeof *s);
    qsort(s, (size_t)k, sizeof *s, bench_cmp_double);
    return k % 2 ? s[k / 2] : (s[k / 2 - 1] + s[k / 2]) / 2;
}

/* A throughput figure: one round of one side. `labels` is extra JSON
 * members without braces ("\"size\":100,\"concurrency\":1"), or "". */
static inline void bench_emit_rate(const char *bench, const char *kase, const char *impl,
                                   const char *labels, int round, long events,
                                   const bench_result *r)
{
    printf("@ {\"bench\":\"%s\",\"case\":\"%s\",\"impl\":\"%s\",\"kind\":\"rate\",%s%s"
           "\"round\":%d,\"events\":%ld,\"rate\":%.1f,\"cpu_us_per_event\":%.3f,"
           "\"rss_kb\":%ld}\n",
           bench, kase, impl, labels, *labels ? "," : "", round, events, r->rate,
           r->cpu_s * 1e6 / (double)events, r->rss_kb);
    fflush(stdout);
}

static inline void bench_emit_latency(const char *bench, const char *kase, const char *impl,
                                      const char *labels, long events, long rate, int rounds,
                                      const bench_result *r)
{
    printf("@ {\"bench\":\"%s\",\"case\":\"%s\",\"impl\":\"%s\",\"kind\":\"latency\",%s%s"
           "\"events\":%ld,\"send_rate\":%ld,\"rounds\":%d,\"p50_us\":%.1f,\"p99_us\":%.1f,"
           "\"p999_us\":%.1f,\"rss_kb\":%ld}\n",
           bench, kase, impl, labels, *labels ? "," : "", events, rate, rounds, r->p50, r->p99,
           r->p999, r->rss_kb);
    fflush(stdout);
}

/* The latency runs of both sides: `rounds` runs each (at most 64), raw and
 * eventwire alternating, each in a child of its own (bench_in_child); a side
 * whose fn is NULL does not run. Prints every round, emits one "@" line per
 * side with the median of each percentile over the rounds (one slow round,
 * e.g. a JVM broker compiling or collecting, does not decide the figure), and
 * returns those medians in *raw_out and *ew_out. */
static inline void bench_latency_rounds(const char *bench, const char *kase, const char *labels,
                                        const char *raw_impl, long events, long rate,
                                        int rounds, void (*raw)(void *, bench_result *),
                                        void (*ew)(void *, bench_result *), void *arg,
                                        bench_result *raw_out, bench_result *ew_out)
{
    double v[2][3][64];
    long rss[2][64];
    void (*fn[2])(void *, bench_result *) = {raw, ew};
    if (rounds > 64)
        rounds = 64;
    for (int i = 0; i < rounds; i++) {
        bench_result x[2] = {{0}, {0}};
        for (int side = 0; side < 2; side++) {
            if (!fn[side])
                continue;
            x[side] = bench_in_child(fn[side], arg);
            v[side][0][i] = x[side].p50;
            v[side][1][i] = x[side].p99;
            v[side][2][i] = x[side].p999;
            rss[side][i] = x[side].rss_kb;
        }
        printf("  latency round %d, p50 / p99 / p99.9: raw %.0f / %.0f / %.0f us, "
               "eventwire %.0f / %.0f / %.0f us\n",
               i + 1, x[0].p50, x[0].p99, x[0].p999, x[1].p50, x[1].p99, x[1].p999);
        fflush(stdout);
    }
    bench_result *out[2] = {raw_out, ew_out};
    for (int side = 0; side < 2; side++) {
        *out[side] = (bench_result){0};
        if (!fn[side])
            continue;
        double r[64];
        for (int i = 0; i < rounds; i++)
            r[i] = (double)rss[side][i];
        out[side]->p50 = bench_median(v[side][0], rounds);
        out[side]->p99 = bench_median(v[side][1], rounds);
        out[side]->p999 = bench_median(v[side][2], rounds);
        out[side]->rss_kb = (long)bench_median(r, rounds);
        bench_emit_latency(bench, kase, side ? "eventwire" : raw_impl, labels, events, rate,
                           rounds, out[side]);
    }
}

#endif
