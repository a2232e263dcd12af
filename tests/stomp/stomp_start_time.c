/* stomp_start_time: how long ew_manager_start takes with many listeners of
 * one event over STOMP, on any dialect (bench/start/bench_start measures the
 * RabbitMQ-backed transports beside a raw floor; this one also reaches
 * ActiveMQ and Artemis). Not a test: it prints figures.
 *
 *   stomp_start_time [-n LISTENERS] [-r ROUNDS] URL
 *
 * Each round makes a new event name (so every queue and, on ActiveMQ, every
 * registry marker is new), starts, stops; the median of the rounds is
 * printed. Queues are deleted afterwards only on RabbitMQ (STOMP cannot
 * delete queues on the other brokers). */
#include "stomp_test.h"

typedef struct nothing {
    int64_t id;
} nothing;

EW_TYPE(nothing, EW_FIELD(nothing, id, EW_INT64));

static ew_err on_event(ew_delivery *d, const void *event, void *user)
{
    (void)d, (void)event, (void)user;
    return EW_OK;
}

static int cmp(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    int n = 100, rounds = 3;
    const char *url = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-n") && i + 1 < argc)
            n = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-r") && i + 1 < argc)
            rounds = atoi(argv[++i]);
        else
            url = argv[i];
    }
    if (!url || n < 1 || n > 5000 || rounds < 1 || rounds > 25) {
        fprintf(stderr, "usage: %s [-n LISTENERS (1..5000)] [-r ROUNDS (1..25)] URL\n",
                argv[0]);
        return 2;
    }
    int64_t took[25];
    for (int r = 0; r < rounds; r++) {
        char event[64];
        snprintf(event, sizeof event, "StartTime%ld%lld%d", (long)getpid(),
                 (long long)ewi_now_ms() % 100000, r);
        ew_event_desc ev = {.type = &nothing_type, .name = event, .durable = false};
        ew_options o = {.server_name = "start-time", .start_timeout_ms = 120000,
                        .log_level = EW_LOG_WARN};
        ew_manager *m = NULL;
        ew_err rc = ew_manager_new(&m, url, &o);
        if (rc != EW_OK) {
            fprintf(stderr, "%s: %s\n", url, ew_strerror(rc));
            return 1;
        }
        char **names = calloc((size_t)n, sizeof *names);
        for (int i = 0; i < n; i++) {
            char name[32];
            snprintf(name, sizeof name, "L%d", i);
            names[i] = strdup(name);
            ew_listener_desc l = {.event = &ev, .name = names[i], .concurrency = 1};
            if (ew_listen(m, &l, on_event, NULL) != EW_OK) {
                fprintf(stderr, "ew_listen failed\n");
                return 1;
            }
        }
        int64_t t0 = ewi_now_ms();
        rc = ew_manager_start(m);
        took[r] = ewi_now_ms() - t0;
        if (rc != EW_OK) {
            fprintf(stderr, "%s: ew_manager_start: %s\n", url, ew_strerror(rc));
            return 1;
        }
        printf("  round %d: %lld ms\n", r + 1, (long long)took[r]);
        fflush(stdout);
        ew_manager_stop(m, 10000);
        ew_manager_free(m);
        if (strstr(url, "dialect=rabbitmq"))
            for (int i = 0; i < n; i += 16)
                stomp_test_cleanup(url, event, (const char *const *)names + i,
                                   n - i < 16 ? (size_t)(n - i) : 16);
        for (int i = 0; i < n; i++)
            free(names[i]);
        free(names);
    }
    qsort(took, (size_t)rounds, sizeof took[0], cmp);
    printf("%s: %d listeners started in %lld ms (median of %d)\n", url, n,
           (long long)took[rounds / 2], rounds);
    return 0;
}
