/* The tests' support library (tests/support, compiled once, linked into
 * every test program): a thread-safe tally of handled events by id,
 * managers with a server name, bulk and raw sends, dead-letter collection,
 * a capture of reported errors and log lines, waiting on a condition with a
 * deadline and a reason, the test certificates, RabbitMQ clean-up, and the
 * relay (relay.h). */
#ifndef EW_TEST_SUPPORT_H
#define EW_TEST_SUPPORT_H

#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <pthread.h>
#include <cmocka.h>

#include "manager_priv.h"
#include "relay.h"

#define SUPPORT_UNUSED __attribute__((unused))
#define ODD_VALUE "a:b\\c\nd é ü 漢字"

/* ---- the test event ----------------------------------------------------- */

typedef struct {
    int64_t id;
    const char *text;
} conf_event;

extern const ew_type conf_event_type;

/* A short id of this run, for names no other run uses. */
extern char support_run_id[32];
void support_init(const char *url);

/* An event descriptor named <base>_<run id>, for this test only. */
#define EV(var, base, dur)                                                  \
    char var##_name[64];                                                    \
    snprintf(var##_name, sizeof var##_name, "%s_%s", base, support_run_id); \
    ew_event_desc var = {.type = &conf_event_type, .name = var##_name, .durable = dur}

/* ---- waiting on a condition --------------------------------------------- */

/* Checks cond(arg) every few ms until it holds or timeout_ms passed; true
 * when it held. */
bool wait_until(bool (*cond)(void *), void *arg, int timeout_ms);

/* Waits until expr holds; after timeout_ms fails the test with the message
 * (printf arguments) and the expression. */
#define WAIT_FOR(expr, timeout_ms, ...)                                           \
    do {                                                                          \
        int64_t wait_deadline_ = ewi_now_ms() + (timeout_ms);                     \
        while (!(expr)) {                                                         \
            if (ewi_left_ms(wait_deadline_) == 0) {                               \
                print_message("waited %d ms for: %s\n", (int)(timeout_ms), #expr); \
                fail_msg(__VA_ARGS__);                                            \
            }                                                                     \
            ewi_sleep_ms(2);                                                      \
        }                                                                         \
    } while (0)

/* ---- tally -------------------------------------------------------------- */

typedef struct tally tally;

typedef struct tally_ref {
    tally *t;
    char label[32];
    struct tally_ref *next;
} tally_ref;

struct tally {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t n;
    uint32_t *seen;             /* successful handlings per id */
    uint32_t *attempts;         /* listener runs per id */
    uint32_t *max_attempt_seen; /* ew_delivery_attempt, highest */
    const char **label;         /* who handled each id last */
    size_t started, finished;
    size_t out_of_order;
    int64_t last_id;
    char last_queue[EW_MAX_QUEUE_NAME];
    int64_t fail_always, fail_once;
    int slow_ms;
    tally_ref *refs;
};

void tally_init(tally *t, size_t n);
void tally_free(tally *t);
/* Every handler run takes ms longer. */
void tally_slow(tally *t, int ms);
/* A listener user pointer that labels what it handles (e.g. the server). */
tally_ref *tref(tally *t, const char *label);
void tally_note(tally *t, int64_t id, const char *label, const char *queue);
/* The listener: user is a tally_ref (tref). */
ew_err tally_listener_ref(ew_delivery *d, const void *event, tally_ref *r);
ew_err tally_listener(ew_delivery *d, const void *event, void *user);
/* Waits until every id in [from, to) was handled; prints how many are
 * missing when not. */
bool tally_wait_ids(tally *t, size_t from, size_t to, int timeout_ms);
bool tally_wait_all(tally *t, int timeout_ms);
/* Waits until k handler runs have started. */
bool tally_wait_count(tally *t, size_t k, int timeout_ms);
/* Waits until k handler runs have finished. */
bool tally_wait_finished(tally *t, size_t k, int timeout_ms);
size_t tally_dups(tally *t);
size_t tally_total(tally *t);
/* Handlings of id (under the lock). */
uint32_t tally_seen(tally *t, int64_t id);
/* Ids whose last handler had this label. */
size_t tally_by_label(tally *t, const char *label);

/* ---- managers and sends ------------------------------------------------- */

ew_manager *mgr_new_opts(const char *url, const char *server, ew_options *o);
ew_manager *mgr_new(const char *url, const char *server);
void listen_tally(ew_manager *m, const ew_event_desc *ev, const char *name, bool per_process,
                  uint32_t concurrency, tally *t);
void send_range(ew_manager *m, const ew_event_desc *ev, int64_t from, int64_t to);

/* Failed completions of asynchronous sends made with count_failure_. */
extern _Atomic size_t support_async_failures;
void count_failure_(void *user, ew_err err);
/* ew_send_async of every id in [from, to), then ew_flush; fails the test
 * when one failed. */
void send_range_async(ew_manager *m, const ew_event_desc *ev, int64_t from, int64_t to);

/* Publishes bytes as a message of event `event`, past the codec: what a
 * foreign or broken producer would put on the broker. */
void publish_raw(ew_manager *m, const char *event, const char *ct, const void *body,
                 size_t len);
/* The same, returning the outcome (deadline: timeout_ms) instead of
 * failing the test. */
ew_err publish_raw_rc(ew_manager *m, const char *event, const char *ct, const void *body,
                      size_t len, int timeout_ms);

/* The threads of this process now (the return value; a sanitizer's runtime
 * may add one of its own); *ew gets those eventwire named ("ew:..."), and of
 * those *batch the ones under SCHED_BATCH and *other the ones under another
 * policy (one that ended meanwhile is in neither). Any pointer may be NULL. */
int ew_thread_census(int *ew, int *batch, int *other);

/* Every listener of m has no message waiting for a worker and none in a
 * worker. (local:// hands a message to a listener with credit before the
 * send returns, and refills it before a worker finishes: there, idle also
 * means its queue is empty.) */
bool manager_idle(ew_manager *m);
/* manager_idle for wait_until (arg: the manager). */
bool manager_idle_cond(void *m);

/* ---- dead letters ------------------------------------------------------- */

typedef struct dlq_box {
    size_t n;
    int64_t ids[16];
    char reason[16][32], attempts[16][16], queue[16][EW_MAX_QUEUE_NAME], error[16][256];
} dlq_box;

ew_err dlq_collect(void *user, const ew_envelope *env);

/* ---- capture of reported errors and log lines --------------------------- */

typedef struct capture {
    pthread_mutex_t mu;
    pthread_cond_t cv;          /* a line was added */
    char text[32768];           /* one line per report: "[code] {queue Q} text" */
    size_t len;
    int errors;                 /* reports */
    ew_err last_code;
    ew_err codes[64];           /* the first 64 reports' codes */
    size_t disconnects;         /* EW_EDISCONNECTED reports */
    int64_t first_disconnect_ms; /* monotonic, 0: none yet */
    ew_log_level keep_level;    /* capture_log keeps lines up to this level */
} capture;

/* Empty; capture_log keeps every level until keep_level is set. */
void capture_init(capture *c);
/* Appends "[kind] text" as a line. */
void capture_add(capture *c, const char *kind, const char *text);
/* ew_error_fn (user: the capture). */
void capture_error(void *user, const ew_error_info *info);
/* ew_log_fn (user: the capture): lines up to c->keep_level. */
void capture_log(void *user, ew_log_level level, const char *msg);
bool capture_has(capture *c, const char *needle);
/* Waits until a line contains needle. */
bool capture_wait_for(capture *c, const char *needle, int timeout_ms);
/* Reports with this code (among the first 64). */
size_t capture_count(capture *c, ew_err code);
/* Prints what was captured (reports may still arrive). */
void capture_print(capture *c);
/* A copy of what was captured, cut to len - 1 bytes. */
void capture_copy(capture *c, char *buf, size_t len);
void capture_clear(capture *c);

/* ---- certificates ------------------------------------------------------- */

/* A private directory of test certificates made once per process by
 * scripts/brokers/certs.sh (removed at exit): ca.pem, server.pem and
 * server.key (CN localhost, SAN DNS:localhost and IP:127.0.0.1, signed by
 * ca.pem), wrong-ca.pem (signed nothing here), other-host.pem and
 * other-host.key (signed by ca.pem for other.example only). Fails the test
 * when they cannot be made. */
const char *support_certs(void);
/* support_certs()/name into buf. */
const char *support_cert(char *buf, size_t len, const char *name);

/* A TLS front on a port the kernel picks, forwarding to 127.0.0.1:target,
 * with the certificate pair <cert>.pem/<cert>.key of support_certs() (cert:
 * "server" or "other-host"). Fails the test when it cannot listen. */
relay *support_tls_front(int target, const char *cert);

/* For tests of the brokers' own TLS listeners: 0 when certs/ca.pem is
 * readable and something accepts on every 127.0.0.1 port of ports
 * (0-terminated); else -1, printing what is missing. */
int broker_tls_ready(const char *certs, const int *ports);

/* ---- RabbitMQ clean-up (over AMQP 0-9-1) -------------------------------- */

/* Deletes the queues E::L and E::L.dlq of each listener (NULL-terminated;
 * NULL: none) and the exchange E on the RabbitMQ at 127.0.0.1:amqp_port
 * (0: 5672), as guest. Best effort: a failure only prints. Does nothing in
 * a build without librabbitmq. */
void rmq_cleanup(int amqp_port, const char *event, const char *const *listeners);
/* Deletes one queue (or exchange with exchange=true); the same terms. */
void rmq_delete_one(int amqp_port, const char *name, bool exchange);

#endif
