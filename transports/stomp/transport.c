/* The STOMP transport's table of operations: what core calls, on
 * application and worker threads. Each op checks and prepares on the calling
 * thread (SEND frames are built here, in parallel), then queues the work for
 * the I/O thread (io.c) and, where the contract says so, waits for it. */
#include "transports/stomp/stomp.h"
#include "transports/rmqadmin/rmqadmin.h"
#include "transports/artemis/artm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- waiting ------------------------------------------------------------- */

/* cond wait on t->cv (monotonic clock) until deadline; false when it passed. */
static bool wait_until(ewi_transport *t, int64_t deadline)
{
    if (ewi_left_ms(deadline) <= 0)
        return false;
    ewi_cond_wait_until(&t->cv, &t->mu, deadline);
    return true;
}

static bool running(ewi_transport *t)
{
    return t->thread_started && !t->stopping;
}

/* Queues r for the I/O thread; EW_ECLOSED when it is not running. */
static ew_err request_post(ewi_transport *t, stomp_req *r)
{
    pthread_mutex_lock(&t->mu);
    bool run = running(t);
    pthread_mutex_unlock(&t->mu);
    r->next = NULL;
    /* The consuming thread closes the queue when it ends: a request is
     * either taken by it or refused here. */
    r->queued = run && ewi_workq_push(&t->reqs, &r->link);
    return r->queued ? EW_OK : EW_ECLOSED;
}

/* Waits for a queued r until deadline. */
static ew_err request_wait(ewi_transport *t, stomp_req *r, int64_t deadline)
{
    pthread_mutex_lock(&t->mu);
    while (!r->done && wait_until(t, deadline)) {
    }
    if (!r->done) {
        r->abandoned = true;
        pthread_mutex_unlock(&t->mu);
        return EW_ETIMEDOUT;
    }
    ew_err rc = r->rc;
    pthread_mutex_unlock(&t->mu);
    return rc;
}

ew_err stomp_request(ewi_transport *t, stomp_req *r, int64_t deadline)
{
    ew_err rc = request_post(t, r);
    return rc != EW_OK ? rc : request_wait(t, r, deadline);
}

/* ---- create / destroy ---------------------------------------------------- */

static ew_err stomp_create(ew_manager *m, const ewi_url *url, ewi_transport **out)
{
    ewi_transport *t = calloc(1, sizeof *t);
    if (!t)
        return EW_ENOMEM;
    char err[512] = "";
    ew_err rc = stomp_options_parse(m, url, &t->opt, err, sizeof err);
    if (rc != EW_OK) {
        ewi_log(m, EW_LOG_ERROR, "stomp URL: %s", err);
        stomp_options_free(&t->opt);
        free(t);
        return rc == EW_ENOMEM ? rc : EW_EINVAL;
    }
    t->m = m;
    t->cfg = ewi_config_of(m);
    int at = snprintf(t->url_text, sizeof t->url_text, "%s://", url->scheme);
    ewi_hosts_text(&t->opt.hosts, t->url_text + at, sizeof t->url_text - (size_t)at);
    /* Frames from the broker: the manager's limits with room for the
     * broker's own headers and for escaping. A body over max_body still
     * parses (up to 4 times it) so that core can dead-letter it as too big
     * instead of the connection failing on it again and again; a MESSAGE
     * body over that is cut there by the parser's skip mode (frame.h). */
    size_t body = t->cfg->max_body ? t->cfg->max_body : 1u << 20;
    size_t hl = t->cfg->max_header_len ? t->cfg->max_header_len : 4096;
    size_t nh = t->cfg->max_headers ? t->cfg->max_headers : 64;
    t->limits.max_body = body * 4;
    t->limits.max_header_len = 4 * hl + 64;
    t->limits.max_headers = nh + 64;
    t->limits.max_frame = t->limits.max_body + t->limits.max_headers *
                                                   (t->limits.max_header_len + 2) + 64;
    pthread_mutex_init(&t->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&t->cv, &ca);
    pthread_condattr_destroy(&ca);
    ewi_window_init(&t->window, (size_t)t->opt.max_inflight,
                    (size_t)t->opt.max_inflight_bytes);
    ewi_workq_init(&t->reqs, &t->waker[STOMP_SUB]);
    t->waker[0].fd = t->waker[1].fd = -1;
    if (ewi_waker_init(&t->waker[0]) != EW_OK || ewi_waker_init(&t->waker[1]) != EW_OK ||
        (t->opt.dialect == STOMP_RABBITMQ && t->opt.amqp_port &&
         !(t->topo = stomp_admin_new(&t->opt)))) {
        ewi_waker_close(&t->waker[0]);
        ewi_waker_close(&t->waker[1]);
        stomp_options_free(&t->opt);
        ewi_workq_destroy(&t->reqs);
        pthread_mutex_destroy(&t->mu);
        pthread_cond_destroy(&t->cv);
        ewi_window_destroy(&t->window);
        free(t);
        return EW_ENOMEM;
    }
    atomic_init(&t->next_receipt, 1);
    *out = t;
    return EW_OK;
}

static void join_io(ewi_transport *t)
{
    pthread_mutex_lock(&t->mu);
    bool started = t->thread_started;
    t->stopping = true;
    ewi_window_close(&t->window);
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
    if (!started)
        return;
    for (int i = 0; i < STOMP_ROLES; i++) {
        ewi_waker_wake(&t->waker[i]);
        pthread_join(t->thread[i], NULL);
    }
    pthread_mutex_lock(&t->mu);
    t->thread_started = false;
    pthread_mutex_unlock(&t->mu);
}

static void stomp_stop(ewi_transport *t)
{
    join_io(t);
}

static void stomp_destroy(ewi_transport *t)
{
    if (!t)
        return;
    join_io(t);
    /* The I/O threads, which complete SENDs, have stopped. */
    for (stomp_pending *pd = t->pend_free, *next; pd; pd = next) {
        next = pd->next;
        ewi_buf_free(&pd->frame);
        free(pd);
    }
    t->pend_free = NULL;
    for (stomp_sub *ss = t->subs, *next; ss; ss = next) {
        next = ss->next;
        for (stomp_msgdata *md = ss->dq_head, *n2; md; md = n2) {
            n2 = md->next;
            ewi_envelope_unref(md->env);
            free(md);
        }
        free(ss);
    }
    /* Settles that arrived after the I/O thread stopped were freed then;
     * whatever was still queued goes now. */
    for (stomp_msgdata *md = t->settle_head, *next; md; md = next) {
        next = md->next;
        if (md->msg)
            ewi_msg_free(md->msg);
        ewi_envelope_unref(md->env);
        free(md);
    }
    for (struct amq_known *k = t->amq_known, *next; k; k = next) {
        next = k->next;
        free(k->queue);
        free(k);
    }
    rmqa_free(t->topo);
    ewi_waker_close(&t->waker[0]);
    ewi_waker_close(&t->waker[1]);
    stomp_options_free(&t->opt);
    ewi_workq_destroy(&t->reqs);
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
    ewi_window_destroy(&t->window);
    free(t);
}

/* ---- start ------------------------------------------------------------------ */

static ew_err stomp_start(ewi_transport *t, int timeout_ms)
{
    int64_t deadline = ewi_now_ms() + (timeout_ms > 0 ? timeout_ms : 30000);
    pthread_mutex_lock(&t->mu);
    t->stopping = false;
    ewi_window_open(&t->window);
    ewi_workq_open(&t->reqs);
    t->state[0] = t->state[1] = ST_DOWN;
    t->last_code = EW_OK;
    t->last_final = false;
    t->last_error[0] = 0;
    int started = 0;
    for (; started < STOMP_ROLES; started++) {
        t->io_arg[started].t = t;
        t->io_arg[started].role = started;
        if (ewi_thread_start(t->m, &t->thread[started], stomp_io_main, &t->io_arg[started],
                             started == STOMP_PUB ? "ew:stomp-pub" : "ew:stomp-sub") != 0)
            break;
    }
    if (started < STOMP_ROLES) {
        t->stopping = true;
        pthread_mutex_unlock(&t->mu);
        for (int i = 0; i < started; i++) {
            ewi_waker_wake(&t->waker[i]);
            pthread_join(t->thread[i], NULL);
        }
        return EW_ENOMEM;
    }
    t->thread_started = true;
    /* Both up, or a refused login or certificate (retrying cannot fix it),
     * or the deadline. */
    while (!(t->state[0] == ST_UP && t->state[1] == ST_UP) && t->last_code != EW_EAUTH &&
           !t->last_final && wait_until(t, deadline)) {
    }
    ew_err rc = t->state[0] == ST_UP && t->state[1] == ST_UP ? EW_OK
                : t->last_code == EW_EAUTH                  ? EW_EAUTH
                : t->last_final && t->last_code == EW_ETLS  ? EW_ETLS
                                                            : EW_ECONNECT;
    char why[sizeof t->last_error];
    snprintf(why, sizeof why, "%s", t->last_error[0] ? t->last_error : "no answer");
    pthread_mutex_unlock(&t->mu);
    if (rc != EW_OK) {
        join_io(t);
        ewi_report(t->m, rc, NULL, NULL, NULL, "cannot connect to STOMP broker %s: %s",
                   t->url_text, why);
        return rc;
    }
    return EW_OK;
}

/* ---- names, declarations --------------------------------------------------- */

static ew_err stomp_check(ewi_transport *t, const char *event, const char *listener,
                          char *err, size_t errlen)
{
    return stomp_check_names(t->opt.dialect, event, listener, err, errlen);
}

rmqa *stomp_admin_new(const stomp_options *o)
{
    char label[300], list[240];
    ewi_hosts_text(&o->admin_hosts, list, sizeof list);
    snprintf(label, sizeof label, "%s (AMQP 0-9-1, option amqp_port)", list);
    rmqa_conf c = {.host = o->host, .port = o->amqp_port, .hosts = o->admin_hosts.v,
                   .nhosts = o->admin_hosts.n, .vhost = o->vhost,
                   .user = o->login, .password = o->passcode, .tls = o->tls,
                   .ca = o->ca_file, .cert = o->cert_file, .key = o->key_file,
                   .verify_peer = o->verify, .verify_name = o->verify_name,
                   .connect_timeout_ms = o->connect_timeout_ms,
                   .conn_name = "eventwire stomp administration", .label = label};
    return rmqa_new(&c);
}

static ew_err stomp_declare(ewi_transport *t, const char *event, bool durable)
{
    EWI_UNUSED(durable); /* the exchange is durable for every event */
    char err[512];
    ew_err rc = EW_OK;
    if (t->opt.dialect != STOMP_RABBITMQ)
        return EW_OK; /* activemq and artemis create addresses on first use */
    if (!t->topo) {
        snprintf(err, sizeof err, "amqp_port=0: this dialect=rabbitmq transport cannot "
                                  "declare exchange %s", event);
        rc = EW_ENOTSUP;
    } else {
        rmqa_decl d = {.kind = RMQA_EXCHANGE, .event = event};
        rc = rmqa_ensure(t->topo, &d, err, sizeof err);
    }
    if (rc != EW_OK)
        ewi_report(t->m, rc, NULL, event, NULL, "%s", err);
    return rc;
}

/* ---- activemq: a registry of listener queues ------------------------------ *
 *
 * Over STOMP, ActiveMQ 5 creates every queue a SEND or SUBSCRIBE names, has
 * no passive declare, and does not deliver advisories. A send to a listener
 * that does not exist would create Consumer.E::L.VirtualTopic.E, which then
 * collects every event E forever. So each listener queue E::L leaves a
 * persistent marker in the queue ew.registry.E::L when it subscribes, and a
 * send to one listener first browses that registry queue (browsing creates
 * only the empty registry queue, which collects nothing). */

/* A listener queue found is believed for this long: a send to it asks the
 * broker again afterwards, so a queue deleted meanwhile (a listener removed
 * for good) is noticed. */
enum { AMQ_KNOWN_MS = 5000 };

static bool amq_known(ewi_transport *t, const char *queue)
{
    int64_t now = ewi_now_ms();
    pthread_mutex_lock(&t->mu);
    struct amq_known *k = t->amq_known;
    while (k && strcmp(k->queue, queue) != 0)
        k = k->next;
    bool fresh = k && now - k->at < AMQ_KNOWN_MS;
    pthread_mutex_unlock(&t->mu);
    return fresh;
}

static void amq_remember(ewi_transport *t, const char *queue)
{
    int64_t now = ewi_now_ms();
    pthread_mutex_lock(&t->mu);
    struct amq_known *k = t->amq_known;
    while (k && strcmp(k->queue, queue) != 0)
        k = k->next;
    if (k) {
        k->at = now;
        pthread_mutex_unlock(&t->mu);
        return;
    }
    pthread_mutex_unlock(&t->mu);
    k = calloc(1, sizeof *k);
    if (!k || !(k->queue = strdup(queue))) {
        free(k);
        return;
    }
    k->at = now;
    pthread_mutex_lock(&t->mu);
    k->next = t->amq_known;
    t->amq_known = k;
    pthread_mutex_unlock(&t->mu);
}

/* Asks the I/O thread to subscribe ss, a reader of the transport's own,
 * and waits for the receipt by deadline. When the request could not be
 * queued, ss is freed; otherwise the I/O thread holds it (reader_close
 * lets it go). A refusal's text goes to err (when not NULL). */
static ew_err reader_open(ewi_transport *t, stomp_sub *ss, int64_t deadline, char *err,
                          size_t errlen)
{
    stomp_req *open = calloc(1, sizeof *open);
    if (!open) {
        free(ss);
        return EW_ENOMEM;
    }
    open->kind = REQ_DLQ_OPEN;
    open->ss = ss;
    ew_err rc = stomp_request(t, open, deadline);
    if (!open->queued) {
        free(ss);
        free(open);
        return rc;
    }
    if (err && rc != EW_OK && rc != EW_ETIMEDOUT)
        snprintf(err, errlen, "%s", open->err);
    if (rc != EW_ETIMEDOUT)
        free(open); /* answered: the I/O thread is done with the request */
    return rc;
}

/* Asks the I/O thread to unsubscribe ss and let it go. */
static void reader_close(ewi_transport *t, stomp_sub *ss)
{
    stomp_req *close = calloc(1, sizeof *close);
    if (close) {
        close->kind = REQ_DLQ_CLOSE;
        close->ss = ss;
        if (stomp_request(t, close, ewi_now_ms() + 60000) != EW_ETIMEDOUT)
            free(close);
    }
}

/* *found tells whether ew.registry.<queue> holds a marker. */
static ew_err amq_browse(ewi_transport *t, const char *queue, bool *found)
{
    *found = false;
    if (amq_known(t, queue)) {
        *found = true;
        return EW_OK;
    }
    stomp_sub *ss = calloc(1, sizeof *ss);
    if (!ss)
        return EW_ENOMEM;
    ss->browse = true;
    snprintf(ss->target.dest, sizeof ss->target.dest, "/queue/ew.registry.%s", queue);
    int64_t deadline = ewi_now_ms() + t->opt.connect_timeout_ms;
    ew_err rc = reader_open(t, ss, deadline, NULL, 0);
    if (rc != EW_OK)
        return rc;
    pthread_mutex_lock(&t->mu);
    while (!ss->browse_end && running(t) && wait_until(t, deadline)) {
    }
    bool ended = ss->browse_end;
    *found = ss->browse_found > 0;
    pthread_mutex_unlock(&t->mu);
    reader_close(t, ss);
    if (!ended)
        return EW_ETIMEDOUT;
    if (*found)
        amq_remember(t, queue);
    return EW_OK;
}

/* A publish of the transport's own (a registry marker, a management
 * request) whose caller waits on t->cv until sync_pub_done ran. */
typedef struct sync_pub {
    ewi_pub pub;
    bool done;
    int err;
} sync_pub;

static void sync_pub_done(ewi_pub *p, int err, const char *detail)
{
    (void)detail;
    sync_pub *sp = (sync_pub *)p;
    ewi_transport *t = p->user;
    pthread_mutex_lock(&t->mu);
    sp->done = true;
    sp->err = err;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

static ew_err stomp_publish(ewi_transport *t, ewi_pub *p);
static ew_err pending_push(ewi_transport *t, stomp_pending *pd);

/* One listener queue to register (amq_register_many). */
typedef struct amq_reg {
    const char *event, *queue; /* in: borrowed */
    ew_err rc;                 /* out */
    stomp_req *open;           /* its browser's SUBSCRIBE on the way */
    stomp_sub *ss;             /* its registry browser while open */
    bool found;                /* the registry holds a marker already */
    sync_pub *mk;              /* its marker on the way */
    ew_envelope *env;
} amq_reg;

/* Leaves the marker of each listener queue g[i].queue unless one is there:
 * every registry browsed at once, then every missing marker sent at once,
 * so that a start with many listeners costs a few round trips, not a few
 * per listener. */
static void amq_register_many(ewi_transport *t, amq_reg *g, size_t n)
{
    int64_t deadline = ewi_now_ms() + t->opt.connect_timeout_ms;
    for (size_t i = 0; i < n; i++) {
        g[i].rc = EW_OK;
        g[i].open = NULL;
        g[i].ss = NULL;
        g[i].mk = NULL;
        g[i].env = NULL;
        g[i].found = amq_known(t, g[i].queue);
        if (g[i].found)
            continue;
        stomp_sub *ss = calloc(1, sizeof *ss);
        stomp_req *open = calloc(1, sizeof *open);
        if (!ss || !open) {
            free(ss);
            free(open);
            g[i].rc = EW_ENOMEM;
            continue;
        }
        ss->browse = true;
        snprintf(ss->target.dest, sizeof ss->target.dest, "/queue/ew.registry.%s",
                 g[i].queue);
        open->kind = REQ_DLQ_OPEN;
        open->ss = ss;
        g[i].rc = request_post(t, open);
        if (!open->queued) {
            free(ss);
            free(open);
            continue;
        }
        g[i].open = open;
        g[i].ss = ss;
    }
    for (size_t i = 0; i < n; i++) {
        stomp_req *open = g[i].open;
        if (!open)
            continue;
        g[i].open = NULL;
        g[i].rc = request_wait(t, open, deadline);
        if (g[i].rc != EW_ETIMEDOUT)
            free(open);
        if (g[i].rc != EW_OK)
            g[i].ss = NULL; /* the I/O thread's now */
    }
    /* ActiveMQ ends each browse with a MESSAGE holding browser:end. */
    pthread_mutex_lock(&t->mu);
    for (size_t i = 0; i < n; i++) {
        stomp_sub *ss = g[i].ss;
        if (!ss)
            continue;
        while (!ss->browse_end && running(t) && wait_until(t, deadline)) {
        }
        if (!ss->browse_end)
            g[i].rc = EW_ETIMEDOUT;
        g[i].found = ss->browse_found > 0;
    }
    pthread_mutex_unlock(&t->mu);
    stomp_req **closes = calloc(n, sizeof *closes);
    for (size_t i = 0; i < n; i++) {
        if (!g[i].ss)
            continue;
        stomp_req *close = closes ? calloc(1, sizeof *close) : NULL;
        if (close) {
            close->kind = REQ_DLQ_CLOSE;
            close->ss = g[i].ss;
            if (request_post(t, close) == EW_OK)
                closes[i] = close;
            else
                free(close);
        }
        g[i].ss = NULL;
    }
    for (size_t i = 0; closes && i < n; i++)
        if (closes[i] && request_wait(t, closes[i], ewi_now_ms() + 60000) != EW_ETIMEDOUT)
            free(closes[i]);
    free(closes);
    for (size_t i = 0; i < n; i++) {
        if (g[i].rc != EW_OK || g[i].found)
            continue;
        sync_pub *mk = calloc(1, sizeof *mk);
        ew_envelope *env = ewi_envelope_new();
        const char *q = g[i].queue;
        if (!mk || !env || ewi_envelope_set_body(env, q, strlen(q)) != EW_OK) {
            free(mk);
            ewi_envelope_unref(env);
            g[i].rc = EW_ENOMEM;
            continue;
        }
        char reg[EW_MAX_QUEUE_NAME + 16];
        snprintf(reg, sizeof reg, "ew.registry.%s", q);
        /* A plain queue on every dialect's DLQ path: /queue/<reg>. The
         * frame is built here: reg is not needed after stomp_publish. */
        mk->pub = (ewi_pub){.dest = EWI_DEST_DLQ, .event = g[i].event, .queue = reg,
                            .durable = true, .env = env,
                            .deadline_ms = ewi_now_ms() + t->cfg->send_timeout_ms,
                            .done = sync_pub_done, .user = t};
        g[i].rc = stomp_publish(t, &mk->pub);
        if (g[i].rc != EW_OK) {
            free(mk);
            ewi_envelope_unref(env);
            continue;
        }
        g[i].mk = mk;
        g[i].env = env;
    }
    pthread_mutex_lock(&t->mu);
    for (size_t i = 0; i < n; i++)
        while (g[i].mk && !g[i].mk->done)
            pthread_cond_wait(&t->cv, &t->mu);
    pthread_mutex_unlock(&t->mu);
    for (size_t i = 0; i < n; i++) {
        if (g[i].mk) {
            g[i].rc = (ew_err)g[i].mk->err;
            free(g[i].mk);
            ewi_envelope_unref(g[i].env);
            g[i].mk = NULL;
            g[i].env = NULL;
        }
        if (g[i].rc == EW_OK)
            amq_remember(t, g[i].queue);
    }
}

/* Logs what a failed registration means for sub. */
static void amq_register_failed(ewi_transport *t, const ewi_sub *sub, ew_err rc)
{
    ewi_log(t->m, EW_LOG_WARN, "%s: cannot leave its marker in ew.registry.%s (%s): sends "
            "to this listener alone will fail until it can", sub->queue, sub->queue,
            ew_strerror(rc));
}

/* ---- artemis: its management address ------------------------------------- *
 *
 * Artemis creates the queue a SEND or SUBSCRIBE names by its fully qualified
 * name E::Q when it is missing, and no STOMP frame asks whether a queue
 * exists. A send to a listener that does not exist would create its queue,
 * which then collects every event E for ever; and a queue created by a
 * SUBSCRIBE is never deleted (auto-delete is off, as listener queues must
 * keep collecting while their listener is away). So the artemis dialect asks
 * the broker's management address (activemq.management; the user needs the
 * "manage" permission, which `artemis create` gives its role amq):
 *   - before a send to one listener, whether that listener's queue exists on
 *     address E (attribute "address" of resource queue.E:L; remembered once
 *     seen);
 *   - before a per_process listener subscribes, to create its queue with
 *     auto-delete, so that the broker deletes it per_process_expires_ms after
 *     its last consumer left (createQueue, ignoring an existing queue);
 *   - when ew_unlisten deletes a per_process listener's queue, to destroy it
 *     now (destroyQueue, removing its consumers).
 * The answer comes to a reply address of this connection's own
 * (ew.reply.<random>, a non-durable subscription that vanishes with it); it
 * is read from the answer's body: a management answer is a JSON array. */

enum { ART_REPLY_MAX = 2048 };

/* Sends one management request (hdrs: key, value, ..., NULL; body: its JSON
 * parameters or NULL) and copies the answer's body into reply, all by
 * deadline. A request without its receipt is EW_ETIMEDOUT, never in doubt:
 * no event of the application's was written. */
static ew_err art_manage(ewi_transport *t, const char *event, const char *const *hdrs,
                         const char *body, int64_t deadline, char *reply, size_t replylen)
{
    static _Atomic unsigned long seq;
    char dest[96];
    snprintf(dest, sizeof dest, "ew.reply.%ld-%lld-%lu", (long)getpid(),
             (long long)ewi_now_ms(), atomic_fetch_add(&seq, 1));
    reply[0] = '\0';

    /* The reply reader: a temporary subscription on a multicast address. */
    stomp_sub *ss = calloc(1, sizeof *ss);
    if (!ss)
        return EW_ENOMEM;
    snprintf(ss->target.dest, sizeof ss->target.dest, "%s", dest);
    ss->target.h[0].key = "subscription-type";
    snprintf(ss->target.h[0].value, sizeof ss->target.h[0].value, "MULTICAST");
    ss->target.n = 1;
    ew_err rc = reader_open(t, ss, deadline, NULL, 0);
    if (rc != EW_OK)
        return rc;

    /* The request: a text message (no content-length), so that the broker
     * reads its parameters. */
    sync_pub *a = calloc(1, sizeof *a);
    stomp_pending *pd = calloc(1, sizeof *pd);
    if (!a || !pd) {
        free(a);
        free(pd);
        rc = EW_ENOMEM;
    } else {
        a->pub = (ewi_pub){.dest = EWI_DEST_EVENT, .event = event, .durable = false,
                           .deadline_ms = deadline, .done = sync_pub_done, .user = t};
        pd->pub = &a->pub;
        pd->receipt = atomic_fetch_add(&t->next_receipt, 1);
        char receipt[STOMP_RECEIPT_LEN];
        stomp_receipt_text(receipt, pd->receipt);
        ewi_stomp_writer w;
        ewi_stomp_write_begin(&w, &pd->frame, EWI_STOMP_SEND);
        ewi_stomp_write_header(&w, "destination", "activemq.management");
        ewi_stomp_write_header(&w, "receipt", receipt);
        ewi_stomp_write_header(&w, "reply-to", dest);
        for (size_t i = 0; hdrs[i] && hdrs[i + 1]; i += 2)
            ewi_stomp_write_header(&w, hdrs[i], hdrs[i + 1]);
        rc = ewi_stomp_write_end(&w, body ? body : "", body ? strlen(body) : 0, false);
        if (rc == EW_OK)
            rc = pending_push(t, pd); /* frees pd on failure */
        else {
            ewi_buf_free(&pd->frame);
            free(pd);
        }
        if (rc == EW_OK) {
            pthread_mutex_lock(&t->mu);
            while (!a->done)
                pthread_cond_wait(&t->cv, &t->mu);
            rc = a->err == EW_EINDOUBT ? EW_ETIMEDOUT : (ew_err)a->err;
            /* The answer was routed before the receipt: it is on its way. */
            while (rc == EW_OK && !ss->dq_head && running(t) && wait_until(t, deadline)) {
            }
            stomp_msgdata *md = ss->dq_head;
            if (rc == EW_OK && !md)
                rc = running(t) ? EW_ETIMEDOUT : EW_ECLOSED;
            if (md) {
                ss->dq_head = md->next;
                if (!ss->dq_head)
                    ss->dq_tail = NULL;
            }
            pthread_mutex_unlock(&t->mu);
            if (md) {
                size_t blen = 0;
                const char *b = ew_envelope_body(md->env, &blen);
                snprintf(reply, replylen, "%.*s", (int)(blen < replylen ? blen : replylen - 1),
                         b ? b : "");
                ewi_envelope_unref(md->env);
                md->env = NULL;
                md->how = EWI_ACK;
                md->next = NULL;
                pthread_mutex_lock(&t->mu);
                if (t->settle_tail)
                    t->settle_tail->next = md;
                else
                    t->settle_head = md;
                t->settle_tail = md;
                pthread_mutex_unlock(&t->mu);
                ewi_waker_wake(&t->waker[STOMP_SUB]);
            }
        }
        free(a);
    }
    reader_close(t, ss);
    return rc;
}

/* Before a send to listener queue E::L: EW_ENOTFOUND unless E:L is a queue
 * on address E. */
static ew_err art_check_listener(ewi_transport *t, const char *event, const char *queue,
                                 int64_t deadline)
{
    if (amq_known(t, queue))
        return EW_OK;
    const char *q = strstr(queue, "::");
    if (!q)
        return EW_EINVAL;
    char name[EW_MAX_QUEUE_NAME + 8];
    snprintf(name, sizeof name, "%.*s:%s", (int)(q - queue), queue, q + 2);
    artm_req r;
    artm_ask_address(&r, name);
    char reply[ART_REPLY_MAX];
    ew_err rc = art_manage(t, event, r.props, NULL, deadline, reply, sizeof reply);
    if (rc != EW_OK) {
        ewi_log(t->m, EW_LOG_ERROR, "send %s to %s: cannot ask the broker's management "
                "whether queue %s exists: %s", event, queue, name, ew_strerror(rc));
        return rc;
    }
    if (artm_address_is(reply, event) != EW_OK) {
        ewi_log(t->m, EW_LOG_ERROR, "send %s to %s: no listener of %s has subscribed on "
                "this broker (its queue %s does not exist on address %s: %s)", event, queue,
                event, name, event, reply);
        return EW_ENOTFOUND;
    }
    amq_remember(t, queue);
    return EW_OK;
}

/* Before a per_process listener's SUBSCRIBE: its queue E:L-S, made to go
 * away per_process_expires_ms after its last consumer. */
static ew_err art_create_per_process(ewi_transport *t, const ewi_sub *sub)
{
    const char *q = strstr(sub->queue, "::");
    if (!q)
        return EW_EINVAL;
    char name[EW_MAX_QUEUE_NAME + 8];
    snprintf(name, sizeof name, "%.*s:%s", (int)(q - sub->queue), sub->queue, q + 2);
    artm_req r;
    if (artm_ask_create(&r, name, sub->event, sub->durable, t->opt.expires_ms) != EW_OK)
        return EW_ENOMEM;
    char reply[ART_REPLY_MAX];
    ew_err rc = art_manage(t, sub->event, r.props, r.body,
                           ewi_now_ms() + t->cfg->start_timeout_ms, reply, sizeof reply);
    artm_req_free(&r);
    if (rc == EW_OK)
        rc = artm_created(reply);
    if (rc != EW_OK)
        ewi_report(t->m, rc, sub->queue, sub->event, NULL,
                   "creating the per_process queue %s through the broker's management "
                   "failed: %s", name, reply[0] ? reply : ew_strerror(rc));
    return rc;
}

/* ew_unlisten's delete of sub's queue E:L-S: destroyQueue(name,
 * removeConsumers, autoDeleteAddress). Success answers [null]; a queue
 * that is gone already (AMQ229017) is what was asked for. */
static ew_err art_destroy(ewi_transport *t, const ewi_sub *sub, char *err, size_t errlen)
{
    const char *q = strstr(sub->queue, "::");
    if (!q)
        return EW_EINVAL;
    char name[EW_MAX_QUEUE_NAME + 8];
    snprintf(name, sizeof name, "%.*s:%s", (int)(q - sub->queue), sub->queue, q + 2);
    artm_req r;
    if (artm_ask_destroy(&r, name) != EW_OK)
        return EW_ENOMEM;
    char reply[ART_REPLY_MAX];
    ew_err rc = art_manage(t, sub->event, r.props, r.body,
                           ewi_now_ms() + t->cfg->send_timeout_ms, reply, sizeof reply);
    artm_req_free(&r);
    if (rc != EW_OK) {
        snprintf(err, errlen, "destroying queue %s through the broker's management: %s",
                 name, ew_strerror(rc));
        return rc;
    }
    char why[ART_REPLY_MAX];
    rc = artm_destroyed(reply, why, sizeof why);
    if (rc != EW_OK)
        snprintf(err, errlen, "destroying queue %s through the broker's management failed: %s",
                 name, why);
    return rc;
}

/* ---- subscriptions ------------------------------------------------------- */

/* The request that subscribes sub (on rabbitmq its queue already
 * declared), not yet queued; NULL: EW_ENOMEM or EW_EINVAL in *rc. */
static stomp_req *sub_request(ewi_transport *t, ewi_sub *sub, ew_err *rc)
{
    if (t->opt.dialect == STOMP_ARTEMIS && sub->per_process &&
        (*rc = art_create_per_process(t, sub)) != EW_OK)
        return NULL;
    stomp_sub *ss = calloc(1, sizeof *ss);
    stomp_req *r = calloc(1, sizeof *r);
    *rc = ss && r ? EW_OK : EW_ENOMEM;
    if (*rc == EW_OK) {
        ss->sub = sub;
        ss->admin_decl = t->topo != NULL;
        if (stomp_sub_target(&t->opt, sub, &ss->target) != EW_OK)
            *rc = EW_EINVAL;
    }
    if (*rc != EW_OK) {
        free(ss);
        free(r);
        return NULL;
    }
    r->kind = REQ_SUBSCRIBE;
    r->ss = ss;
    return r;
}

static int64_t sub_deadline(ewi_transport *t)
{
    return ewi_now_ms() + (t->cfg->start_timeout_ms > 0 ? t->cfg->start_timeout_ms : 30000);
}

/* The end of a subscribe whose request r went (or not: rc) to the I/O
 * thread; dest for texts; reg: leave the activemq registry marker here.
 * Frees r unless the I/O thread still holds it. */
static ew_err sub_finish(ewi_transport *t, ewi_sub *sub, stomp_req *r, ew_err rc,
                         const char *dest, bool reg)
{
    if (!r->queued) {
        free(r->ss);
        free(r);
        return rc;
    }
    /* From here ss is the I/O thread's: it frees it when it closes. */
    if (rc == EW_OK) {
        sub->tdata = r->ss;
        free(r);
        if (reg && t->opt.dialect == STOMP_ACTIVEMQ && !sub->per_process) {
            amq_reg g = {.event = sub->event, .queue = sub->queue};
            amq_register_many(t, &g, 1);
            if (g.rc != EW_OK)
                amq_register_failed(t, sub, g.rc);
        }
        return EW_OK;
    }
    const char *why = rc == EW_ETIMEDOUT ? "no receipt from the broker in time"
                      : r->err[0]        ? r->err
                                         : ew_strerror(rc);
    ewi_report(t->m, rc == EW_ECLOSED || rc == EW_ETIMEDOUT ? rc : EW_EBROKER, sub->queue,
               sub->event, NULL, "subscribing %s (%s) failed: %s", sub->queue, dest, why);
    if (rc != EW_ETIMEDOUT)
        free(r);
    return rc == EW_ECLOSED || rc == EW_ETIMEDOUT ? rc : EW_EBROKER;
}

/* rabbitmq: what the administration connection declares for sub before
 * its SUBSCRIBE to /amq/queue/: the exchange, the queue and its binding.
 * Not its dead-letter queue, which is declared before its first dead letter. */
static rmqa_decl listener_decl(const ewi_transport *t, const ewi_sub *sub)
{
    return (rmqa_decl){.kind = RMQA_LISTENER, .event = sub->event, .queue = sub->queue,
                       .durable = sub->durable,
                       .expires_ms = sub->per_process ? t->opt.expires_ms : 0,
                       .quorum = t->opt.quorum};
}

static ew_err stomp_subscribe(ewi_transport *t, ewi_sub *sub)
{
    char err[512];
    ew_err rc;
    rmqa_decl d = listener_decl(t, sub);
    if (t->topo && (rc = rmqa_ensure(t->topo, &d, err, sizeof err)) != EW_OK) {
        ewi_report(t->m, rc, sub->queue, sub->event, NULL, "%s", err);
        return rc;
    }
    stomp_req *r = sub_request(t, sub, &rc);
    if (!r)
        return rc;
    /* Once queued, ss is the I/O thread's and may be gone when this returns. */
    char dest[STOMP_DEST_LEN];
    snprintf(dest, sizeof dest, "%s", r->ss->target.dest);
    rc = stomp_request(t, r, sub_deadline(t));
    return sub_finish(t, sub, r, rc, dest, true);
}

/* Posts the SUBSCRIBE of listener i of a batch (its queue ready). */
typedef struct sub_batch {
    ewi_transport *t;
    ewi_sub *const *subs;
    ew_err *rcs;
    stomp_req **rs;
    char (*dests)[STOMP_DEST_LEN];
} sub_batch;

static void sub_post(void *user, size_t i)
{
    sub_batch *b = user;
    if (!(b->rs[i] = sub_request(b->t, b->subs[i], &b->rcs[i])))
        return;
    snprintf(b->dests[i], sizeof b->dests[i], "%s", b->rs[i]->ss->target.dest);
    b->rcs[i] = request_post(b->t, b->rs[i]);
}

/* Every listener at start: rabbitmq's queues and bindings declared in one
 * batch, and the SUBSCRIBE of each listener queued as soon as its queue is
 * declared (while the broker creates the others); the receipts are awaited
 * at the end. Dead-letter queues wait for their first dead letter. */
static void stomp_subscribe_many(ewi_transport *t, ewi_sub *const *subs, size_t n,
                                 ew_err *rcs)
{
    char err[512];
    rmqa_decl *ds = calloc(n ? n : 1, sizeof *ds);
    ew_err *drcs = calloc(n ? n : 1, sizeof *drcs);
    stomp_req **rs = calloc(n ? n : 1, sizeof *rs);
    char(*dests)[STOMP_DEST_LEN] = calloc(n ? n : 1, sizeof *dests);
    if (!ds || !drcs || !rs || !dests) {
        for (size_t i = 0; i < n; i++)
            rcs[i] = EW_ENOMEM;
        goto out;
    }
    sub_batch b = {t, subs, rcs, rs, dests};
    for (size_t i = 0; i < n; i++) {
        /* Here the broker creates the queues in parallel, where its STOMP
         * adapter would create them one after the other. */
        ds[i] = listener_decl(t, subs[i]);
        rcs[i] = EW_OK;
    }
    if (!t->topo) {
        for (size_t i = 0; i < n; i++)
            sub_post(&b, i);
    } else if (rmqa_ensure_many_cb(t->topo, ds, n, drcs, err, sizeof err, sub_post, &b) !=
               EW_OK) {
        /* The broker's text is the first failure's. */
        bool first = true;
        for (size_t i = 0; i < n; i++)
            if (drcs[i] != EW_OK) {
                rcs[i] = drcs[i];
                ewi_report(t->m, rcs[i], subs[i]->queue, subs[i]->event, NULL, "%s",
                           first ? err : ew_strerror(rcs[i]));
                first = false;
            }
    }
    int64_t deadline = sub_deadline(t);
    for (size_t i = 0; i < n; i++) {
        if (!rs[i])
            continue;
        ew_err rc = rcs[i] == EW_OK ? request_wait(t, rs[i], deadline) : rcs[i];
        rcs[i] = sub_finish(t, subs[i], rs[i], rc, dests[i], false);
    }
    if (t->opt.dialect == STOMP_ACTIVEMQ) {
        /* The registry markers of every subscribed listener, at once. */
        amq_reg *g = calloc(n ? n : 1, sizeof *g);
        size_t k = 0;
        for (size_t i = 0; g && i < n; i++)
            if (rcs[i] == EW_OK && !subs[i]->per_process)
                g[k++] = (amq_reg){.event = subs[i]->event, .queue = subs[i]->queue};
        if (g)
            amq_register_many(t, g, k);
        for (size_t i = 0, j = 0; i < n; i++)
            if (rcs[i] == EW_OK && !subs[i]->per_process) {
                ew_err rc = g ? g[j++].rc : EW_ENOMEM;
                if (rc != EW_OK)
                    amq_register_failed(t, subs[i], rc);
            }
        free(g);
    }
out:
    free(ds);
    free(drcs);
    free(rs);
    free(dests);
}

static void stomp_unsubscribe(ewi_transport *t, ewi_sub *sub)
{
    stomp_sub *ss = sub->tdata;
    if (!ss)
        return;
    sub->tdata = NULL;
    stomp_req *r = calloc(1, sizeof *r);
    if (!r)
        return; /* the connection's end gives its messages back */
    r->kind = REQ_UNSUBSCRIBE;
    r->ss = ss;
    /* The I/O thread answers between two connect attempts at the latest. */
    if (stomp_request(t, r, ewi_now_ms() + 60000) != EW_ETIMEDOUT)
        free(r);
}

/* rabbitmq: queue.delete through the administration connection; artemis:
 * destroyQueue through its management address. ActiveMQ 5 offers no way to
 * remove a queue over STOMP (only JMX and its web console do). */
static ew_err stomp_delete_queue(ewi_transport *t, ewi_sub *sub, bool check, char *err,
                                 size_t errlen)
{
    if (t->opt.dialect == STOMP_ACTIVEMQ || (t->opt.dialect == STOMP_RABBITMQ && !t->topo)) {
        snprintf(err, errlen, "%s",
                 t->opt.dialect == STOMP_ACTIVEMQ
                     ? "stomp:// with the activemq dialect cannot delete a queue: ActiveMQ 5 "
                       "offers no STOMP frame for it"
                     : "stomp:// with the rabbitmq dialect and amqp_port=0 has no AMQP 0-9-1 "
                       "administration connection to delete a queue with");
        return EW_ENOTSUP;
    }
    if (check)
        return EW_OK;
    if (t->opt.dialect == STOMP_ARTEMIS)
        return art_destroy(t, sub, err, errlen);
    return rmqa_delete_queue(t->topo, sub->queue, err, errlen);
}

/* ---- sends -------------------------------------------------------------------- */

static ew_err stomp_publish(ewi_transport *t, ewi_pub *p)
{
    char err[512];
    stomp_target to;
    if (stomp_send_target(&t->opt, p->dest, p->event, p->queue, p->durable, &to) != EW_OK) {
        ewi_log(t->m, EW_LOG_ERROR, "send %s: no STOMP destination for it", p->event);
        return EW_EINVAL;
    }
    if (p->dest == EWI_DEST_LISTENER && t->topo) {
        /* RabbitMQ drops a SEND to a missing /amq/queue/ silently. */
        rmqa_decl d = {.kind = RMQA_EXISTS, .queue = p->queue};
        ew_err rc = rmqa_ensure(t->topo, &d, err, sizeof err);
        if (rc != EW_OK) {
            ewi_log(t->m, EW_LOG_ERROR, "send %s to %s: %s", p->event, p->queue, err);
            return rc;
        }
    }
    if (p->dest == EWI_DEST_DLQ && t->topo) {
        /* A dead-letter queue is declared before its first dead letter,
         * here (once per transport: remembered, and declared again after a
         * reconnect). */
        rmqa_decl d = {.kind = RMQA_DLQ, .queue = p->queue, .quorum = t->opt.quorum};
        ew_err rc = rmqa_ensure(t->topo, &d, err, sizeof err);
        if (rc != EW_OK) {
            ewi_log(t->m, EW_LOG_ERROR, "dead letter of %s to %s: %s", p->event, p->queue,
                    err);
            return rc;
        }
    }
    if (p->dest == EWI_DEST_LISTENER && t->opt.dialect == STOMP_ARTEMIS) {
        ew_err rc = art_check_listener(t, p->event, p->queue, p->deadline_ms);
        if (rc != EW_OK)
            return rc;
    }
    if (p->dest == EWI_DEST_LISTENER && t->opt.dialect == STOMP_ACTIVEMQ) {
        bool found;
        ew_err rc = amq_browse(t, p->queue, &found);
        if (rc == EW_OK && !found) {
            ewi_log(t->m, EW_LOG_ERROR, "send %s to %s: no listener %s of %s has "
                    "subscribed on this broker (its ew.registry.%s queue is empty)",
                    p->event, p->queue, p->listener ? p->listener : "?", p->event, p->queue);
            return EW_ENOTFOUND;
        }
        if (rc != EW_OK) {
            ewi_log(t->m, EW_LOG_ERROR, "send %s to %s: cannot check that the listener "
                    "exists: %s", p->event, p->queue, ew_strerror(rc));
            return rc;
        }
    }
    stomp_pending *pd = stomp_pending_new(t);
    if (!pd)
        return EW_ENOMEM;
    pd->pub = p;
    pd->receipt = atomic_fetch_add(&t->next_receipt, 1);
    char receipt[STOMP_RECEIPT_LEN];
    stomp_receipt_text(receipt, pd->receipt);
    ew_err rc = stomp_message_write(&pd->frame, &to, receipt, p->env, err, sizeof err);
    if (rc != EW_OK) {
        ewi_log(t->m, EW_LOG_ERROR, "send %s: %s", p->event, err);
        ewi_buf_free(&pd->frame);
        free(pd);
        return rc;
    }
    return pending_push(t, pd);
}

/* Queues pd (its frame built) for the I/O thread, within the window. */
static ew_err pending_push(ewi_transport *t, stomp_pending *pd)
{
    ewi_pub *p = pd->pub;
    pthread_mutex_lock(&t->mu);
    /* The window bounds memory and the broker's backlog of receipts; still
     * full at the deadline, the send fails here, never written. */
    ew_err rc = running(t)
                    ? ewi_window_take(&t->window, &t->mu, p->deadline_ms, ewi_pub_bytes(p))
                    : EW_ECLOSED;
    if (rc != EW_OK) {
        bool up = t->state[STOMP_PUB] == ST_UP;
        size_t n = t->window.used, nb = t->window.used_bytes;
        pthread_mutex_unlock(&t->mu);
        ewi_buf_free(&pd->frame);
        free(pd);
        if (rc == EW_ETIMEDOUT)
            ewi_log(t->m, EW_LOG_ERROR, "send %s: %zu sends (%zu bytes of bodies) waiting "
                    "for receipts until the deadline (broker %s: %s)", p->event, n, nb,
                    t->url_text, up ? "up" : "unreachable");
        return rc;
    }
    if (t->pend_tail)
        t->pend_tail->next = pd;
    else
        t->pend_head = pd;
    t->pend_tail = pd;
    bool first = t->pend_head == pd;
    pthread_mutex_unlock(&t->mu);
    /* One wake-up per batch: the I/O thread takes the whole queue. */
    if (first)
        ewi_waker_wake(&t->waker[STOMP_PUB]);
    return EW_OK;
}

/* ---- settling ---------------------------------------------------------------- */

/* Hands settles to the I/O thread, a chain linked by qnext (a worker's
 * acknowledgements, or one message): one lock and at most one wake-up. */
static void settle_list(ewi_transport *t, ewi_msg *first, ewi_settle how)
{
    ewi_msg *gone = NULL; /* stopped: given back by the closed connection */
    bool wake = false;
    pthread_mutex_lock(&t->mu);
    for (ewi_msg *msg = first, *next; msg; msg = next) {
        next = msg->qnext;
        stomp_msgdata *md = msg->tdata;
        if (!t->thread_started || !md) {
            msg->qnext = gone;
            gone = msg;
            continue;
        }
        md->how = how;
        md->next = NULL;
        if (t->settle_tail)
            t->settle_tail->next = md;
        else
            t->settle_head = md;
        t->settle_tail = md;
        /* One wake-up per batch: the I/O thread takes the whole queue. */
        wake |= t->settle_head == md;
    }
    pthread_mutex_unlock(&t->mu);
    if (wake)
        ewi_waker_wake(&t->waker[STOMP_SUB]);
    for (ewi_msg *next; gone; gone = next) {
        next = gone->qnext;
        free(gone->tdata);
        ewi_msg_free(gone);
    }
}

static void stomp_settle(ewi_transport *t, ewi_msg *msg, ewi_settle how)
{
    msg->qnext = NULL;
    settle_list(t, msg, how);
}

static void stomp_settle_acks(ewi_transport *t, ewi_msg *first)
{
    settle_list(t, first, EWI_ACK);
}

/* ---- dead letters --------------------------------------------------------- */

/* rabbitmq: a reader of dest kept from an earlier dlq_take, or NULL. */
static stomp_sub *kept_reader(ewi_transport *t, const char *dest)
{
    stomp_sub *found = NULL;
    pthread_mutex_lock(&t->mu);
    for (stomp_sub *ss = t->subs; ss && !found; ss = ss->next)
        if (!ss->sub && ss->dlq_kept && strcmp(ss->target.dest, dest) == 0)
            found = ss;
    pthread_mutex_unlock(&t->mu);
    return found;
}

static ew_err stomp_dlq_take(ewi_transport *t, ewi_dlq_req *req)
{
    req->taken = 0;
    if (req->max == 0)
        return EW_OK;
    /* RabbitMQ cannot UNSUBSCRIBE a consumer safely while messages are on
     * their way to it: a MESSAGE the queue dispatched before the
     * cancellation reaches the STOMP adapter after it forgot the
     * subscription, and it answers with "ERROR Subscription not found",
     * which closes the consuming connection (every listener on it). An
     * UNSUBSCRIBE there also does not give back prefetched messages (they
     * stay unacknowledged until the connection closes). So on rabbitmq the
     * reader of a dead-letter queue is subscribed once and stays, with what
     * it prefetched, for the next dlq_take; stop's DISCONNECT ends it after
     * its last ACKs. Elsewhere UNSUBSCRIBE returns what was not taken. */
    bool keep = t->opt.dialect == STOMP_RABBITMQ;
    uint32_t prefetch = keep || req->max >= 100 ? 100 : (uint32_t)req->max;
    stomp_target target;
    if (stomp_dlq_target(&t->opt, req->event, req->dlq, prefetch, &target) != EW_OK)
        return EW_EINVAL;
    /* The first message may take timeout_ms, its queue's making included. */
    int64_t until = ewi_now_ms() + (req->timeout_ms > 0 ? req->timeout_ms : 0);
    stomp_sub *ss = keep ? kept_reader(t, target.dest) : NULL;
    while (!ss && t->topo) {
        /* Declared by the first dead letter: until then there is none to
         * read, and reading makes no queue (a SUBSCRIBE to a missing
         * /amq/queue/ would be an ERROR that closes the connection), so
         * look again until it exists or the wait is over. */
        char err[512];
        rmqa_decl d = {.kind = RMQA_EXISTS, .queue = req->dlq};
        ew_err rc = rmqa_ensure(t->topo, &d, err, sizeof err);
        if (rc == EW_OK)
            break;
        if (rc != EW_ENOTFOUND) {
            ewi_log(t->m, EW_LOG_ERROR, "reading dead letters of %s: %s", req->dlq, err);
            return rc;
        }
        pthread_mutex_lock(&t->mu);
        bool run = running(t);
        pthread_mutex_unlock(&t->mu);
        int left = ewi_left_ms(until);
        if (!run || left == 0)
            return run ? EW_OK : EW_ECLOSED;
        ewi_sleep_ms(left < 50 ? left : 50);
    }
    if (!ss) {
        ss = calloc(1, sizeof *ss);
        if (!ss)
            return EW_ENOMEM;
        ss->target = target;
        ss->admin_decl = t->topo != NULL;
        int64_t deadline = ewi_now_ms() + (req->timeout_ms > 0 ? req->timeout_ms : 0) +
                           t->opt.connect_timeout_ms;
        char why[sizeof ((stomp_req *)0)->err] = "";
        ew_err rc = reader_open(t, ss, deadline, why, sizeof why);
        if (rc == EW_ENOMEM || rc == EW_ECLOSED)
            return rc;
        if (rc != EW_OK) {
            ewi_log(t->m, EW_LOG_ERROR, "reading dead letters of %s: %s", req->dlq,
                    rc == EW_ETIMEDOUT ? "no receipt from the broker in time"
                    : why[0]           ? why
                                       : ew_strerror(rc));
            return rc == EW_ETIMEDOUT ? rc : EW_EBROKER;
        }
        /* Confirmed: from here on the I/O thread never releases it. */
        pthread_mutex_lock(&t->mu);
        ss->dlq_kept = keep;
        pthread_mutex_unlock(&t->mu);
    }
    /* The first message may take until `until`; the next ones are already
     * on their way (prefetch), so a short linger ends the batch. */
    stomp_msgdata *held = NULL, **held_tail = &held, *held_last = NULL;
    while (req->taken < req->max) {
        pthread_mutex_lock(&t->mu);
        while (!ss->dq_head && running(t) && wait_until(t, until)) {
        }
        stomp_msgdata *md = ss->dq_head;
        if (md) {
            ss->dq_head = md->next;
            if (!ss->dq_head)
                ss->dq_tail = NULL;
        }
        pthread_mutex_unlock(&t->mu);
        if (!md)
            break;
        /* Refused: given back and the batch ends. A kept reader (rabbitmq)
         * NACKs it; otherwise it goes back with what was prefetched when
         * the close unsubscribes. */
        bool taken = req->fn(req->user, md->env) == EW_OK;
        if (req->keep) {
            /* Only looked at: held, and given back below. */
            md->next = NULL;
            *held_tail = md;
            held_tail = &md->next;
            held_last = md;
            req->taken += taken;
            if (!taken)
                break;
            until = ewi_now_ms() + 200;
            continue;
        }
        if (!taken && !keep) {
            pthread_mutex_lock(&t->mu);
            md->next = ss->dq_head;
            ss->dq_head = md;
            if (!ss->dq_tail)
                ss->dq_tail = md;
            pthread_mutex_unlock(&t->mu);
            break;
        }
        ewi_envelope_unref(md->env);
        md->env = NULL;
        md->how = taken ? EWI_ACK : EWI_REQUEUE;
        md->next = NULL;
        req->taken += taken;
        pthread_mutex_lock(&t->mu);
        if (t->settle_tail)
            t->settle_tail->next = md;
        else
            t->settle_head = md;
        t->settle_tail = md;
        pthread_mutex_unlock(&t->mu);
        ewi_waker_wake(&t->waker[STOMP_SUB]);
        if (!taken)
            break;
        until = ewi_now_ms() + 200;
    }
    if (held) {
        /* Back at the head, in their order: a kept reader (rabbitmq) holds
         * them for the next call; elsewhere the close returns them. */
        pthread_mutex_lock(&t->mu);
        held_last->next = ss->dq_head;
        ss->dq_head = held;
        if (!ss->dq_tail)
            ss->dq_tail = held_last;
        pthread_mutex_unlock(&t->mu);
    }
    if (keep)
        return EW_OK;
    /* The I/O thread takes the request queue before the settle queue and
     * handles settles first; these ACKs were queued before the close, so
     * they are written before the UNSUBSCRIBE. What was
     * prefetched and not taken goes back to the broker. */
    reader_close(t, ss);
    return EW_OK;
}

/* ---- the table -------------------------------------------------------------- */

static const char *const schemes[] = {"stomp", "stomp+ssl", NULL};

const ewi_transport_ops ewi_stomp_transport = {
    .name = "stomp",
    .schemes = schemes,
    .features = EWI_FEAT_DLQ_READ,
    .create = stomp_create,
    .check_names = stomp_check,
    .start = stomp_start,
    .declare = stomp_declare,
    .subscribe = stomp_subscribe,
    .subscribe_many = stomp_subscribe_many,
    .unsubscribe = stomp_unsubscribe,
    .delete_queue = stomp_delete_queue,
    .publish = stomp_publish,
    .settle = stomp_settle,
    .settle_acks = stomp_settle_acks,
    .dlq_take = stomp_dlq_take,
    .stop = stomp_stop,
    .destroy = stomp_destroy,
};
