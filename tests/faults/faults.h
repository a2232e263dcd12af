/* Shared by the fault-injection programs in tests/faults/: what a URL is
 * (transport label, broker port), URLs rewritten to go through a relay,
 * error and log capture with timestamps, a tally that also records when
 * events were handled, memory figures, RabbitMQ clean-up, and the RESULT
 * lines scripts/reliability-report turns into docs/reliability.md.
 * Header-only; every program includes it once. */
#ifndef EW_FAULTS_H
#define EW_FAULTS_H

#include "support.h"
#include "relay.h"

#include <malloc.h>
#include <stdatomic.h>

#ifdef FAULTS_HAVE_RMQ
#include <amqp.h>
#include <amqp_tcp_socket.h>
#endif

#if defined(__SANITIZE_ADDRESS__)
#define FAULTS_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FAULTS_ASAN 1
#endif
#endif
#ifdef FAULTS_ASAN
/* The sanitizer runtime's count of live heap bytes (its header is not
 * always installed with gcc). */
size_t __sanitizer_get_current_allocated_bytes(void);
void __sanitizer_print_memory_profile(size_t top_percent, size_t max_number_of_contexts);
#endif

/* With $EW_FAULT_HEAP_PROFILE set (ASan builds), prints where the live heap
 * was allocated: what to look at when a growth check fails. */
static __attribute__((unused)) void heap_profile(void)
{
#ifdef FAULTS_ASAN
    if (getenv("EW_FAULT_HEAP_PROFILE"))
        __sanitizer_print_memory_profile(90, 8);
#endif
}

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

static FAULTS_UNUSED ftarget ftarget_of(const char *url)
{
    ftarget t = {.url = url};
    ewi_url u;
    char err[128];
    if (ewi_url_parse(url, &u, err, sizeof err) != EW_OK)
        fail_msg("bad URL %s: %s", url, err);
    const char *dialect = ewi_url_param(&u, "dialect");
    if (strcmp(u.scheme, "local") == 0) {
        t.local = true;
        snprintf(t.name, sizeof t.name, "local");
    } else if (strcmp(u.scheme, "rabbitmq") == 0) {
        t.is_rabbitmq = t.rmq_backed = true;
        t.port = u.port ? u.port : 5672;
        snprintf(t.name, sizeof t.name, "rabbitmq");
    } else if (strcmp(u.scheme, "stomp") == 0) {
        t.is_stomp = true;
        t.port = u.port ? u.port : 61613;
        t.stomp_rmq = t.rmq_backed = dialect && strcmp(dialect, "rabbitmq") == 0;
        snprintf(t.name, sizeof t.name, "stomp-%s", dialect ? dialect : "?");
    } else if (strcmp(u.scheme, "amqp") == 0) {
        t.is_amqp10 = true;
        t.port = u.port ? u.port : 5672;
        t.rmq_backed = dialect && strcmp(dialect, "rabbitmq") == 0;
        snprintf(t.name, sizeof t.name, "amqp-%s", dialect ? dialect : "artemis");
    } else {
        fail_msg("no fault scenarios for scheme %s", u.scheme);
    }
    ewi_url_free(&u);
    return t;
}

/* url with its port replaced by port (0: kept) and extra "k=v&k=v"
 * parameters (NULL: none) appended, into buf. */
static FAULTS_UNUSED const char *url_with(char *buf, size_t len, const char *url, int port,
                                          const char *extra)
{
    const char *auth = strstr(url, "://");
    assert_non_null(auth);
    auth += 3;
    size_t alen = strcspn(auth, "/?");
    const char *at = memchr(auth, '@', alen);
    const char *hostp = at ? at + 1 : auth;
    size_t hlen = alen - (size_t)(hostp - auth);
    const char *colon = memchr(hostp, ':', hlen);
    size_t keep = (size_t)((colon ? colon : hostp + hlen) - url);
    const char *rest = auth + alen;
    int n;
    if (port)
        n = snprintf(buf, len, "%.*s:%d%s", (int)keep, url, port, rest);
    else
        n = snprintf(buf, len, "%s", url);
    assert_true(n > 0 && (size_t)n < len);
    if (extra && *extra) {
        size_t used = strlen(buf);
        n = snprintf(buf + used, len - used, "%s%s", strchr(buf, '?') ? "&" : "?", extra);
        assert_true(n > 0 && (size_t)n < len - used);
    }
    return buf;
}

/* URL options that make a silent connection fail fast: heart-beats of about
 * a second. */
static FAULTS_UNUSED const char *fast_heartbeat(const ftarget *t)
{
    if (t->is_rabbitmq)
        return "heartbeat=1";
    if (t->is_stomp || t->is_amqp10)
        return "heartbeat_ms=1000";
    return NULL;
}

static void quiet_log_(void *user, ew_log_level level, const char *msg)
{
    (void)user;
    (void)level;
    (void)msg;
}

/* fast_heartbeat(t) if this build's transport takes it, else NULL (an
 * unknown URL option is refused at ew_manager_new). */
static FAULTS_UNUSED const char *fast_heartbeat_supported(const ftarget *t)
{
    const char *opt = fast_heartbeat(t);
    if (!opt)
        return NULL;
    char url[512];
    url_with(url, sizeof url, t->url, 0, opt);
    ew_options o = {.log = quiet_log_};
    ew_manager *m = NULL;
    ew_err rc = ew_manager_new(&m, url, &o);
    ew_manager_free(m);
    return rc == EW_OK ? opt : NULL;
}

/* A relay in front of the broker (and, for STOMP on RabbitMQ, a second one
 * in front of its 0-9-1 topology port), and the URL that goes through them
 * with extra options. */
typedef struct fpath {
    relay *main, *topo;
    char url[512];
} fpath;

static FAULTS_UNUSED void fpath_open(fpath *p, const ftarget *t, bool up, const char *extra)
{
    memset(p, 0, sizeof *p);
    p->main = relay_new(0, t->port, up);
    assert_non_null(p->main);
    char opts[256];
    snprintf(opts, sizeof opts, "%s", extra ? extra : "");
    if (t->stomp_rmq) {
        p->topo = relay_new(0, 5672, up);
        assert_non_null(p->topo);
        size_t used = strlen(opts);
        snprintf(opts + used, sizeof opts - used, "%samqp_port=%d", used ? "&" : "",
                 relay_port(p->topo));
    }
    url_with(p->url, sizeof p->url, t->url, relay_port(p->main), opts);
}

static FAULTS_UNUSED void fpath_freeze(fpath *p)
{
    relay_freeze(p->main);
    if (p->topo)
        relay_freeze(p->topo);
}

static FAULTS_UNUSED void fpath_break(fpath *p)
{
    relay_break(p->main);
    if (p->topo)
        relay_break(p->topo);
}

static FAULTS_UNUSED void fpath_restore(fpath *p)
{
    if (p->topo)
        relay_restore(p->topo);
    relay_restore(p->main);
}

static FAULTS_UNUSED void fpath_close(fpath *p)
{
    relay_free(p->main);
    relay_free(p->topo);
    p->main = p->topo = NULL;
}

/* ---- error handler and log capture -------------------------------------- */

typedef struct fcapture {
    pthread_mutex_t mu;
    char text[16384];
    size_t n, disconnects;
    int64_t first_disconnect_ms; /* monotonic, 0: none yet */
} fcapture;

static FAULTS_UNUSED void fcapture_init(fcapture *c)
{
    memset(c, 0, sizeof *c);
    pthread_mutex_init(&c->mu, NULL);
}

static FAULTS_UNUSED void fcapture_add(fcapture *c, const char *kind, const char *text)
{
    pthread_mutex_lock(&c->mu);
    size_t len = strlen(c->text);
    if (len + 1 < sizeof c->text)
        snprintf(c->text + len, sizeof c->text - len, "[%s] %s\n", kind, text);
    c->n++;
    pthread_mutex_unlock(&c->mu);
}

/* ew_error_fn: records the error, and when the first disconnect came. */
static FAULTS_UNUSED void fcapture_error(void *user, const ew_error_info *info)
{
    fcapture *c = user;
    if (info->code == EW_EDISCONNECTED) {
        pthread_mutex_lock(&c->mu);
        c->disconnects++;
        if (!c->first_disconnect_ms)
            c->first_disconnect_ms = ewi_now_ms();
        pthread_mutex_unlock(&c->mu);
    }
    fcapture_add(c, ew_strerror(info->code), info->text);
}

/* ew_log_fn: keeps warnings and errors (and prints them, for the ctest log). */
static FAULTS_UNUSED void fcapture_log(void *user, ew_log_level level, const char *msg)
{
    if (level > EW_LOG_WARN)
        return;
    fcapture_add(user, level == EW_LOG_ERROR ? "log:error" : "log:warn", msg);
}

static FAULTS_UNUSED bool fcapture_has(fcapture *c, const char *needle)
{
    pthread_mutex_lock(&c->mu);
    bool has = strstr(c->text, needle) != NULL;
    pthread_mutex_unlock(&c->mu);
    return has;
}

/* A copy of what was captured, cut to len - 1 bytes. */
static FAULTS_UNUSED void fcapture_copy(fcapture *c, char *buf, size_t len)
{
    pthread_mutex_lock(&c->mu);
    size_t n = strlen(c->text);
    if (n >= len)
        n = len - 1;
    memcpy(buf, c->text, n);
    buf[n] = '\0';
    pthread_mutex_unlock(&c->mu);
}

static FAULTS_UNUSED void fcapture_clear(fcapture *c)
{
    pthread_mutex_lock(&c->mu);
    c->text[0] = '\0';
    c->n = c->disconnects = 0;
    c->first_disconnect_ms = 0;
    pthread_mutex_unlock(&c->mu);
}

/* ---- a tally that knows when -------------------------------------------- */

/* A tally (support.h) plus when the last event was handled, and the first
 * handling after a mark: the moment listeners resumed after a fault. */
typedef struct flow {
    tally t; /* first: a flow is the tally its tally_refs point to */
    _Atomic int64_t last_ms, mark_ms, first_after_mark_ms;
} flow;

static FAULTS_UNUSED void flow_init(flow *f, size_t n)
{
    tally_init(&f->t, n);
    atomic_init(&f->last_ms, 0);
    atomic_init(&f->mark_ms, 0);
    atomic_init(&f->first_after_mark_ms, 0);
}

static FAULTS_UNUSED ew_err flow_listener(ew_delivery *d, const void *event, void *user)
{
    tally_ref *r = user;
    flow *f = (flow *)r->t;
    int rc = tally_listener_ref(d, event, r);
    int64_t now = ewi_now_ms();
    atomic_store(&f->last_ms, now);
    int64_t mark = atomic_load(&f->mark_ms), zero = 0;
    if (mark && rc == EW_OK)
        atomic_compare_exchange_strong(&f->first_after_mark_ms, &zero, now);
    return rc;
}

/* From now on, the first handled event is the moment of resumption. */
static FAULTS_UNUSED void flow_mark(flow *f)
{
    atomic_store(&f->first_after_mark_ms, 0);
    atomic_store(&f->mark_ms, ewi_now_ms());
}

/* ms from the mark to the first event handled after it; -1 if none yet. */
static FAULTS_UNUSED int64_t flow_resume_ms(flow *f)
{
    int64_t first = atomic_load(&f->first_after_mark_ms);
    return first ? first - atomic_load(&f->mark_ms) : -1;
}

static FAULTS_UNUSED void flow_listen(ew_manager *m, const ew_event_desc *ev, const char *name,
                                      uint32_t concurrency, uint32_t prefetch, flow *f,
                                      const char *label)
{
    ew_listener_desc d = {.event = ev, .name = name, .concurrency = concurrency,
                          .prefetch = prefetch};
    ew_err rc = ew_listen(m, &d, flow_listener, tref(&f->t, label));
    if (rc != EW_OK)
        fail_msg("ew_listen(%s): %s", name, ew_strerror(rc));
}

/* Ids in [0, n) never handled. */
static FAULTS_UNUSED size_t flow_missing(flow *f)
{
    size_t k = 0;
    pthread_mutex_lock(&f->t.mu);
    for (size_t i = 0; i < f->t.n; i++)
        k += !f->t.seen[i];
    pthread_mutex_unlock(&f->t.mu);
    return k;
}

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

static FAULTS_UNUSED void fsends_init(fsends *s, size_t n)
{
    s->mem = calloc(n, sizeof *s->state);
    s->state = s->mem;
    s->n = n;
    atomic_init(&s->ok, 0);
    atomic_init(&s->failed, 0);
}

static FAULTS_UNUSED void fsends_free(fsends *s)
{
    free(s->mem);
}

static void fsend_done_(void *user, ew_err err)
{
    fsend_ref *r = user;
    atomic_store(&r->s->state[r->id], err == EW_OK ? 1 : 2);
    if (err == EW_OK)
        atomic_fetch_add(&r->s->ok, 1);
    else
        atomic_fetch_add(&r->s->failed, 1);
    free(r);
}

static const char FAULTS_TEXT[] = "0123456789012345678901234567890123456789"
                                  "0123456789012345678901234567890123456789";

/* ew_send_async of id with text; the outcome lands in s. The call's own
 * error is returned (the callback then never runs: counted failed here). */
static FAULTS_UNUSED ew_err fsend_async_text(ew_manager *m, const ew_event_desc *ev,
                                             fsends *s, size_t id, const char *text)
{
    fsend_ref *r = malloc(sizeof *r);
    assert_non_null(r);
    r->s = s;
    r->id = id;
    conf_event e = {.id = (int64_t)id, .text = text};
    ew_err rc = ew_send_async(m, ev, NULL, &e, fsend_done_, r);
    if (rc != EW_OK) {
        free(r);
        atomic_store(&s->state[id], 2);
        atomic_fetch_add(&s->failed, 1);
    }
    return rc;
}

static FAULTS_UNUSED ew_err fsend_async(ew_manager *m, const ew_event_desc *ev, fsends *s,
                                        size_t id)
{
    return fsend_async_text(m, ev, s, id, FAULTS_TEXT);
}

/* Ids whose send was reported ok but that were never handled. */
static FAULTS_UNUSED size_t lost_of(fsends *s, flow *f)
{
    size_t k = 0;
    pthread_mutex_lock(&f->t.mu);
    for (size_t i = 0; i < s->n && i < f->t.n; i++)
        k += atomic_load(&s->state[i]) == 1 && !f->t.seen[i];
    pthread_mutex_unlock(&f->t.mu);
    return k;
}

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
} fdlq;

static FAULTS_UNUSED ew_err fdlq_collect(void *user, const ew_envelope *env)
{
    fdlq *b = user;
    b->n++;
    const char *reason = ew_envelope_header(env, EW_HDR_DLQ_REASON);
    size_t r = 4;
    if (reason) {
        for (r = 0; r < 4 && strcmp(FDLQ_REASON[r], reason) != 0; r++)
            ;
        if (r == 4)
            r = 5;
    }
    b->by_reason[r]++;
    const char *h = ew_envelope_header(env, EW_HDR_DLQ_ERROR);
    snprintf(b->error[r], sizeof b->error[r], "%s", h ? h : "");
    h = ew_envelope_header(env, EW_HDR_DLQ_QUEUE);
    snprintf(b->queue, sizeof b->queue, "%s", h ? h : "");
    size_t len;
    const void *body = ew_envelope_body(env, &len);
    if (len > b->biggest_body)
        b->biggest_body = len;
    void *ev = NULL;
    if (b->nids < FDLQ_IDS && len < 4096 &&
        ew_decode(&conf_event_type, ew_format_from_content_type(ew_envelope_content_type(env)),
                  body, len, NULL, &ev, NULL, 0) == EW_OK) {
        b->ids[b->nids] = ((conf_event *)ev)->id;
        h = ew_envelope_header(env, EW_HDR_DLQ_ATTEMPTS);
        snprintf(b->attempts[b->nids], sizeof b->attempts[0], "%s", h ? h : "");
        b->nids++;
        ew_event_free(&conf_event_type, ev);
    }
    return EW_OK;
}

/* Takes dead letters of listener until `want` were taken in all or none
 * came for quiet_ms. Returns how many were taken now. */
static FAULTS_UNUSED size_t fdlq_take(ew_manager *m, const ew_event_desc *ev,
                                      const char *listener, fdlq *b, size_t want, int quiet_ms)
{
    size_t before = b->n;
    while (b->n - before < want) {
        size_t got = 0;
        size_t ask = want - (b->n - before);
        ew_dead_letter_options dl = {.event = ev, .listener = listener,
                                     .max = ask < 64 ? ask : 64, .timeout_ms = quiet_ms,
                                     .fn = fdlq_collect, .user = b};
        ew_err rc = ew_dead_letters(m, &dl, &got);
        if (rc != EW_OK) {
            print_message("ew_dead_letters: %s\n", ew_strerror(rc));
            break;
        }
        if (got == 0)
            break;
    }
    return b->n - before;
}

/* ---- memory ------------------------------------------------------------- */

/* Resident set size of this process, in KiB. */
static FAULTS_UNUSED long rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    char line[256];
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

/* Bytes the allocator holds for live allocations: under ASan its own count
 * (RSS there includes the quarantine of freed blocks), else glibc's. */
static FAULTS_UNUSED size_t heap_live_bytes(void)
{
#ifdef FAULTS_ASAN
    return __sanitizer_get_current_allocated_bytes();
#else
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
#endif
}

/* ---- RabbitMQ clean-up -------------------------------------------------- */

/* Deletes the queues E::L and E::L.dlq of each listener and the exchange E
 * on a RabbitMQ-backed target, so that runs leave nothing behind. Other
 * targets keep them (ActiveMQ has no delete over STOMP; local vanishes). */
static FAULTS_UNUSED void cleanup_event(const ftarget *t, const char *event,
                                        const char *const *listeners)
{
#ifdef FAULTS_HAVE_RMQ
    if (!t->rmq_backed)
        return;
    amqp_connection_state_t c = amqp_new_connection();
    amqp_socket_t *s = amqp_tcp_socket_new(c);
    if (!s || amqp_socket_open(s, "127.0.0.1", 5672) != AMQP_STATUS_OK) {
        amqp_destroy_connection(c);
        print_message("clean-up: RabbitMQ not reachable on 5672\n");
        return;
    }
    if (amqp_login(c, "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, "guest", "guest")
            .reply_type == AMQP_RESPONSE_NORMAL) {
        amqp_channel_open(c, 1);
        amqp_get_rpc_reply(c);
        char q[EW_MAX_QUEUE_NAME + 8];
        for (size_t i = 0; listeners && listeners[i]; i++) {
            snprintf(q, sizeof q, "%s::%s", event, listeners[i]);
            amqp_queue_delete(c, 1, amqp_cstring_bytes(q), 0, 0);
            snprintf(q, sizeof q, "%s::%s.dlq", event, listeners[i]);
            amqp_queue_delete(c, 1, amqp_cstring_bytes(q), 0, 0);
        }
        amqp_exchange_delete(c, 1, amqp_cstring_bytes(event), 0);
        amqp_channel_close(c, 1, AMQP_REPLY_SUCCESS);
        amqp_connection_close(c, AMQP_REPLY_SUCCESS);
    }
    amqp_destroy_connection(c);
#else
    (void)t;
    (void)event;
    (void)listeners;
#endif
}

/* ---- results ------------------------------------------------------------ */

/* The code's name without spaces, for RESULT lines ("EW_ETIMEDOUT"). */
static FAULTS_UNUSED const char *err_name(ew_err rc)
{
    static const char *const names[] = {
        "EW_OK", "EW_EINVAL", "EW_ENOMEM", "EW_ENOTFOUND", "EW_ECONFLICT", "EW_ESTATE",
        "EW_ETIMEDOUT", "EW_ECLOSED", "EW_EDECODE", "EW_EENCODE", "EW_ETOOBIG", "EW_EREFUSED",
        "EW_ELISTENER", "EW_ENORETRY", "EW_ECONNECT", "EW_EAUTH", "EW_EBROKER", "EW_EPROTO",
        "EW_ENOTSUP", "EW_EIO", "EW_EDISCONNECTED"};
    return (unsigned)rc < sizeof names / sizeof names[0] ? names[rc] : "EW_E?";
}

/* Prints "RESULT scenario=S transport=T <fields>" on stdout and appends it
 * to $EW_FAULT_RESULTS when set: scripts/reliability-report reads these
 * lines and nothing else. Call it before the assertions, so that a failing
 * run still reports its figures (with status=fail). */
static FAULTS_UNUSED void fault_result(const char *scenario, const ftarget *t,
                                       const char *fmt, ...) EWI_PRINTF(3, 4);

static FAULTS_UNUSED void fault_result(const char *scenario, const ftarget *t,
                                       const char *fmt, ...)
{
    char fields[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(fields, sizeof fields, fmt, ap);
    va_end(ap);
    char line[1200];
    snprintf(line, sizeof line, "RESULT scenario=%s transport=%s %s\n", scenario, t->name,
             fields);
    fputs(line, stdout);
    fflush(stdout);
    const char *path = getenv("EW_FAULT_RESULTS");
    if (path && *path) {
        FILE *f = fopen(path, "a");
        if (f) {
            fputs(line, f);
            fclose(f);
        }
    }
}

/* Waits until cond(arg) or timeout; true when it held. */
static FAULTS_UNUSED bool wait_until(bool (*cond)(void *), void *arg, int timeout_ms)
{
    int64_t deadline = ewi_now_ms() + timeout_ms;
    while (!cond(arg)) {
        if (ewi_left_ms(deadline) == 0)
            return false;
        ewi_sleep_ms(10);
    }
    return true;
}

#endif
