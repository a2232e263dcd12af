/* service: a long-running service, the shape of a deployment. Run one per
 * host (or container) against the same broker, each with its own server
 * name. Every instance listens to PaymentReceived twice:
 *
 *   Billing  a competing listener: all instances consume from one queue
 *            (PaymentReceived::Billing), so each payment is billed by one
 *            of them;
 *   Audit    a per_process listener: each instance has its own queue
 *            (PaymentReceived::Audit-<server>), so every instance audits
 *            every payment.
 *
 * Environment:
 *   EW_URL            broker URL (default local://)
 *   EW_SERVER         this instance's server name (default hostname-pid)
 *   EW_SEND           payments to send once started (default 0), ids
 *                     EW_SEND_FIRST (default 1) and up
 *   EW_READY_FILE     a file created once every listener consumes (for a
 *                     container health check)
 *
 * Standard input, when it is not a terminal: lines "send COUNT FIRST
 * [PAUSE_US]" send COUNT payments with ids FIRST and up, pausing PAUSE_US
 * microseconds after each (a steady stream), then print "sent COUNT".
 *
 * Output, one line each, flushed: "ready <server>" once started,
 * "billing <id>" and "audit <id>" per payment handled, "sent <n>" after
 * sending, and on SIGINT or SIGTERM (a graceful stop that finishes the
 * handlers) "stopped <server> billing <n> audit <n>". Exit status 0, or 1
 * with the reason on stderr. */
#include <eventwire/eventwire.h>

#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    int64_t id;
    const char *payer;
    int64_t cents;
} payment_received;

EW_TYPE(payment_received,
        EW_FIELD(payment_received, id, EW_INT64),
        EW_FIELD(payment_received, payer, EW_STRING),
        EW_FIELD(payment_received, cents, EW_INT64));

static const ew_event_desc PAYMENT = {.type = &payment_received_type,
                                      .name = "PaymentReceived",
                                      .durable = true};

static atomic_int billed, audited;
static pthread_mutex_t out_mu = PTHREAD_MUTEX_INITIALIZER;

/* One line, whole, even with several worker threads printing. */
static void say(const char *what, int64_t id)
{
    pthread_mutex_lock(&out_mu);
    printf("%s %" PRId64 "\n", what, id);
    fflush(stdout);
    pthread_mutex_unlock(&out_mu);
}

static ew_err on_billing(ew_delivery *d, const void *event, void *user)
{
    (void)d;
    (void)user;
    const payment_received *p = event;
    atomic_fetch_add(&billed, 1);
    say("billing", p->id);
    return EW_OK;
}

static ew_err on_audit(ew_delivery *d, const void *event, void *user)
{
    (void)d;
    (void)user;
    const payment_received *p = event;
    atomic_fetch_add(&audited, 1);
    say("audit", p->id);
    return EW_OK;
}

static long env_long(const char *name, long dflt)
{
    const char *v = getenv(name);
    if (!v || !*v)
        return dflt;
    char *end;
    long n = strtol(v, &end, 10);
    if (*end || n < 0) {
        fprintf(stderr, "service: %s=%s is not a count\n", name, v);
        exit(1);
    }
    return n;
}

/* Sends count payments with ids first and up; EW_OK or the first failure. */
static ew_err send_payments(ew_manager *m, const char *server, int64_t first, long count,
                            long pause_us)
{
    for (long i = 0; i < count; i++) {
        payment_received p = {.id = first + i, .payer = server, .cents = 100 * (first + i)};
        ew_err rc = ew_send(m, &PAYMENT, &p);
        if (rc != EW_OK)
            return rc;
        if (pause_us > 0)
            nanosleep(&(struct timespec){pause_us / 1000000, (pause_us % 1000000) * 1000},
                      NULL);
    }
    say("sent", count);
    return EW_OK;
}

typedef struct commands_arg {
    ew_manager *m;
    const char *server;
} commands_arg;

/* Standard input's "send" lines, until end of input. A failed send is
 * reported and the service goes on. */
static void *read_commands(void *arg)
{
    commands_arg *a = arg;
    char line[256];
    while (fgets(line, sizeof line, stdin)) {
        long long first;
        long count, pause_us = 0;
        int n = sscanf(line, "send %ld %lld %ld", &count, &first, &pause_us);
        if (n < 2 || count < 0 || pause_us < 0) {
            fprintf(stderr, "service: unknown command: %s", line);
            continue;
        }
        ew_err rc = send_payments(a->m, a->server, (int64_t)first, count, pause_us);
        if (rc != EW_OK)
            fprintf(stderr, "service: send: %s: %s\n", ew_strerror(rc), ew_last_error());
    }
    return NULL;
}

static int fail(ew_manager *m, const char *what, ew_err rc)
{
    fprintf(stderr, "service: %s: %s: %s\n", what, ew_strerror(rc), ew_last_error());
    ew_manager_free(m);
    return 1;
}

int main(void)
{
    const char *url = getenv("EW_URL") ? getenv("EW_URL") : "local://";
    long to_send = env_long("EW_SEND", 0), first = env_long("EW_SEND_FIRST", 1);
    /* SIGINT and SIGTERM are taken by sigwait below: blocked before any
     * thread exists, so that every thread inherits the mask. */
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);

    ew_options o = {.server_name = getenv("EW_SERVER")};
    ew_manager *m = NULL;
    ew_err rc = ew_manager_new(&m, url, &o);
    if (rc != EW_OK)
        return fail(m, url, rc);
    rc = ew_listen(m, &(ew_listener_desc){.event = &PAYMENT, .name = "Billing",
                                          .concurrency = 2},
                   on_billing, NULL);
    if (rc == EW_OK)
        rc = ew_listen(m, &(ew_listener_desc){.event = &PAYMENT, .name = "Audit",
                                              .per_process = true},
                       on_audit, NULL);
    if (rc != EW_OK)
        return fail(m, "listen", rc);
    if ((rc = ew_manager_start(m)) != EW_OK)
        return fail(m, "start", rc);
    const char *server = ew_manager_server_name(m);
    const char *ready = getenv("EW_READY_FILE");
    if (ready && *ready) {
        FILE *f = fopen(ready, "w");
        if (!f || fclose(f) != 0) {
            fprintf(stderr, "service: cannot create %s\n", ready);
            ew_manager_free(m);
            return 1;
        }
    }
    pthread_mutex_lock(&out_mu);
    printf("ready %s\n", server);
    fflush(stdout);
    pthread_mutex_unlock(&out_mu);

    if (to_send > 0 && (rc = send_payments(m, server, first, to_send, 0)) != EW_OK)
        return fail(m, "send", rc);
    commands_arg ca = {m, server};
    pthread_t reader;
    bool reading = !isatty(STDIN_FILENO) &&
                   pthread_create(&reader, NULL, read_commands, &ca) == 0;

    int sig;
    sigwait(&stop_signals, &sig);
    /* The reader may be blocked in fgets: it is left behind (the process
     * exits), after the sends it started are done or fail. */
    if (reading)
        pthread_detach(reader);
    ew_manager_stop(m, 10000);
    pthread_mutex_lock(&out_mu);
    printf("stopped %s billing %d audit %d\n", server, atomic_load(&billed),
           atomic_load(&audited));
    fflush(stdout);
    pthread_mutex_unlock(&out_mu);
    ew_manager_free(m);
    return 0;
}
