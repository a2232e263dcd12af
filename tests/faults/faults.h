/* Shared by the fault-injection programs in tests/faults/: what a URL is
 * (transport label, broker port), URLs rewritten to go through a relay,
 * error and log capture with timestamps, a tally that also records when
 * events were handled, memory figures, RabbitMQ clean-up, and the RESULT
 * lines scripts/reliability-report turns into docs/reliability.md.
 * Compiled once (faults.c) into every fault program. */
#ifndef EW_FAULTS_H
#define EW_FAULTS_H

#include "support.h"

#include <stdatomic.h>

/* With $EW_FAULT_HEAP_PROFILE set (ASan builds), prints where the live heap
 * was allocated: what to look at when a growth check fails. */
void heap_profile(void);

#define FAULTS_UNUSED __attribute__((unused))

/* ---- what a URL is ------------------------------------------------------ */

typedef struct ftarget {
    const char *url;
    char name[32];   /* local, rabbitmq, stomp-rabbitmq, stomp-activemq, amqp-rabbitmq */
    bool local;
    bool rmq_backed; /* the broker is RabbitMQ: a raw 0-9-1 client can clean up */
    bool stomp_rmq;  /* STOMP on RabbitMQ also talks 0-9-1 to amqp_port for topology */
    bool is_amqp10, is_rabbitmq, is_stomp;
    int port;        /* the broker port the URL names (or its default) */
} ftarget;

ftarget ftarget_of(const char *url);

/* url with its port replaced by port (0: kept) and extra "k=v&k=v"
 * parameters (NULL: none) appended, into buf. */
const char *url_with(char *buf, size_t len, const char *url, int port, const char *extra);

/* URL options that make a silent connection fail fast: heart-beats of about
 * a second. */
const char *fast_heartbeat(const ftarget *t);

/* fast_heartbeat(t) if this build's transport takes it, else NULL (an
 * unknown URL option is refused at ew_manager_new). */
const char *fast_heartbeat_supported(const ftarget *t);

/* A relay in front of the broker (and, for STOMP on RabbitMQ, a second one
 * in front of its 0-9-1 topology port), and the URL that goes through them
 * with extra options. */
typedef struct fpath {
    relay *main, *topo;
    char url[512];
} fpath;

void fpath_open(fpath *p, const ftarget *t, bool up, const char *extra);

void fpath_freeze(fpath *p);

void fpath_break(fpath *p);

void fpath_restore(fpath *p);

void fpath_close(fpath *p);

/* ---- error handler and log capture -------------------------------------- */

/* The support library's capture, keeping the log's warnings and errors
 * only. */
typedef capture fcapture;
void fcapture_init(fcapture *c);
#define fcapture_add capture_add
#define fcapture_error capture_error
#define fcapture_log capture_log
#define fcapture_has capture_has
#define fcapture_copy capture_copy
#define fcapture_clear capture_clear

/* ---- a tally that knows when -------------------------------------------- */

/* A tally (support.h) plus when the last event was handled, and the first
 * handling after a mark: the moment listeners resumed after a fault. */
typedef struct flow {
    tally t; /* first: a flow is the tally its tally_refs point to */
    _Atomic int64_t last_ms, mark_ms, first_after_mark_ms;
} flow;

void flow_init(flow *f, size_t n);

ew_err flow_listener(ew_delivery *d, const void *event, void *user);

/* From now on, the first handled event is the moment of resumption. */
void flow_mark(flow *f);

/* ms from the mark to the first event handled after it; -1 if none yet. */
int64_t flow_resume_ms(flow *f);

void flow_listen(ew_manager *m, const ew_event_desc *ev, const char *name,
                 uint32_t concurrency, uint32_t prefetch, flow *f, const char *label);

/* Ids in [0, n) never handled. */
size_t flow_missing(flow *f);

/* ---- sends -------------------------------------------------------------- */

/* Outcome of each asynchronous send by id: 0 pending, 1 ok, 2 failed. */
typedef struct fsends {
    _Atomic uint8_t *state; /* calloc'd; freed through `mem` */
    void *mem;
    size_t n;
    _Atomic size_t ok, failed;
} fsends;

typedef struct fsend_ref {
    fsends *s;
    size_t id;
} fsend_ref;

void fsends_init(fsends *s, size_t n);

void fsends_free(fsends *s);

static const char FAULTS_TEXT[] = "0123456789012345678901234567890123456789"
                                  "0123456789012345678901234567890123456789";

/* ew_send_async of id with text; the outcome lands in s. The call's own
 * error is returned (the callback then never runs: counted failed here). */
ew_err fsend_async_text(ew_manager *m, const ew_event_desc *ev, fsends *s, size_t id,
                        const char *text);

ew_err fsend_async(ew_manager *m, const ew_event_desc *ev, fsends *s, size_t id);

/* Ids whose send was reported ok but that were never handled. */
size_t lost_of(fsends *s, flow *f);

/* ---- dead letters ------------------------------------------------------- */

/* Dead letters counted by reason, with the last error text of each reason
 * and the id and attempts of a few decodable ones. */
enum { FDLQ_REASONS = 6, FDLQ_IDS = 16 };
static const char *const FDLQ_REASON[FDLQ_REASONS] = {
    "listener-failed", "handle-refused", "decode-failed", "too-big", "(none)", "(other)"};

typedef struct fdlq {
    size_t n, by_reason[FDLQ_REASONS];
    char error[FDLQ_REASONS][256];
    char queue[EW_MAX_QUEUE_NAME];
    size_t nids;
    int64_t ids[FDLQ_IDS];
    char attempts[FDLQ_IDS][16];
    size_t biggest_body;
    char last_ct[64]; /* the content type of the last one taken */
} fdlq;

ew_err fdlq_collect(void *user, const ew_envelope *env);

/* Takes dead letters of listener until `want` were taken in all or none
 * came for quiet_ms. Returns how many were taken now. */
size_t fdlq_take(ew_manager *m, const ew_event_desc *ev, const char *listener, fdlq *b,
                 size_t want, int quiet_ms);

/* ---- memory ------------------------------------------------------------- */

/* Resident set size of this process, in KiB. */
long rss_kib(void);

/* Bytes the allocator holds for live allocations: under ASan its own count
 * (RSS there includes the quarantine of freed blocks), else glibc's. */
size_t heap_live_bytes(void);

/* ---- RabbitMQ clean-up -------------------------------------------------- */

/* Deletes the queues E::L and E::L.dlq of each listener and the exchange E
 * on a RabbitMQ-backed target, so that runs leave nothing behind. Other
 * targets keep them (ActiveMQ has no delete over STOMP; local vanishes). */
void cleanup_event(const ftarget *t, const char *event, const char *const *listeners);

/* ---- results ------------------------------------------------------------ */

/* The code's name without spaces, for RESULT lines ("EW_ETIMEDOUT"). */
const char *err_name(ew_err rc);

/* Prints "RESULT scenario=S transport=T <fields>" on stdout and appends it
 * to $EW_FAULT_RESULTS when set: scripts/reliability-report reads these
 * lines and nothing else. Call it before the assertions, so that a failing
 * run still reports its figures (with status=fail). */
void fault_result(const char *scenario, const ftarget *t, const char *fmt, ...)
    EWI_PRINTF(3, 4);

#endif
