/* Declarations on the broker, and a handle that makes them over a
 * connection of its own, remembers them and declares them again after a
 * reconnect. */
#include "transports/rmqadmin/rmqadmin.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static amqp_bytes_t b(const char *s)
{
    return amqp_cstring_bytes(s);
}

/* ---- methods ------------------------------------------------------------- */

static int send_exchange(amqp_connection_state_t conn, amqp_channel_t ch, const char *event,
                         bool nowait)
{
    /* Always durable, whatever the event's durability (its queues keep
     * that): a second declaration that differs is a 406. */
    amqp_exchange_declare_t m = {.exchange = b(event), .type = b("topic"), .durable = 1,
                                 .nowait = nowait, .arguments = amqp_empty_table};
    return amqp_send_method(conn, ch, AMQP_EXCHANGE_DECLARE_METHOD, &m);
}

/* The arguments of a queue declaration, in e: x-expires when expires_ms > 0,
 * x-queue-type quorum when quorum. A passive declaration takes none. */
static amqp_table_t queue_args(amqp_table_entry_t e[2], bool passive, long expires_ms,
                               bool quorum)
{
    amqp_table_t t = {0, e};
    if (passive)
        return amqp_empty_table;
    /* x-expires as a long: RabbitMQ compares the arguments of a second
     * declaration type and all. */
    if (expires_ms > 0)
        e[t.num_entries++] =
            (amqp_table_entry_t){b("x-expires"), {AMQP_FIELD_KIND_I64, {.i64 = expires_ms}}};
    if (quorum)
        e[t.num_entries++] = (amqp_table_entry_t){
            b("x-queue-type"), {AMQP_FIELD_KIND_UTF8, {.bytes = b("quorum")}}};
    return t.num_entries ? t : amqp_empty_table;
}

static int send_queue(amqp_connection_state_t conn, amqp_channel_t ch, const char *q,
                      bool passive, bool durable, long expires_ms, bool quorum, bool nowait)
{
    amqp_table_entry_t args[2];
    amqp_queue_declare_t m = {.queue = b(q), .passive = passive, .durable = durable,
                              .nowait = nowait,
                              .arguments = queue_args(args, passive, expires_ms, quorum)};
    return amqp_send_method(conn, ch, AMQP_QUEUE_DECLARE_METHOD, &m);
}

static int send_bind(amqp_connection_state_t conn, amqp_channel_t ch, const char *q,
                     const char *event, bool nowait)
{
    amqp_queue_bind_t m = {.queue = b(q), .exchange = b(event), .routing_key = b("#"),
                           .nowait = nowait, .arguments = amqp_empty_table};
    return amqp_send_method(conn, ch, AMQP_QUEUE_BIND_METHOD, &m);
}

/* The method that asks for a reply, kept with its arguments. */
typedef struct last_method {
    amqp_method_number_t id;
    amqp_method_number_t reply;
    union {
        amqp_exchange_declare_t x;
        amqp_queue_declare_t q;
        amqp_queue_bind_t b;
    } m;
    amqp_table_entry_t args[2];
} last_method;

static int queue_method(last_method *l, const char *q, bool passive, bool durable,
                        long expires_ms, bool quorum)
{
    l->m.q = (amqp_queue_declare_t){.queue = b(q), .passive = passive, .durable = durable,
                                    .arguments = queue_args(l->args, passive, expires_ms,
                                                            quorum)};
    l->id = AMQP_QUEUE_DECLARE_METHOD;
    l->reply = AMQP_QUEUE_DECLARE_OK_METHOD;
    return AMQP_STATUS_OK;
}

/* A quorum queue is durable and never expires: a transient or per_process
 * listener queue stays classic whatever the URL asks. */
static bool listener_quorum(const rmqa_decl *d)
{
    return d->quorum && d->durable && d->expires_ms <= 0;
}

/* Writes d's methods but the last with nowait; the last one into *l. A
 * listener's exchange is left out when has_exchange (declared already). */
static int write_all_but_last(amqp_connection_state_t conn, amqp_channel_t ch,
                              const rmqa_decl *d, bool has_exchange, last_method *l)
{
    int st = AMQP_STATUS_OK;
    switch (d->kind) {
    case RMQA_EXCHANGE:
        l->m.x = (amqp_exchange_declare_t){.exchange = b(d->event), .type = b("topic"),
                                           .durable = 1, .arguments = amqp_empty_table};
        l->id = AMQP_EXCHANGE_DECLARE_METHOD;
        l->reply = AMQP_EXCHANGE_DECLARE_OK_METHOD;
        return st;
    case RMQA_LISTENER:
        if (!has_exchange)
            st = send_exchange(conn, ch, d->event, true);
        if (st == AMQP_STATUS_OK)
            st = send_queue(conn, ch, d->queue, false, d->durable, d->expires_ms,
                            listener_quorum(d), true);
        if (st == AMQP_STATUS_OK && d->dlq) {
            st = send_bind(conn, ch, d->queue, d->event, true);
            return st != AMQP_STATUS_OK ? st : queue_method(l, d->dlq, false, true, 0, d->quorum);
        }
        l->m.b = (amqp_queue_bind_t){.queue = b(d->queue), .exchange = b(d->event),
                                     .routing_key = b("#"), .arguments = amqp_empty_table};
        l->id = AMQP_QUEUE_BIND_METHOD;
        l->reply = AMQP_QUEUE_BIND_OK_METHOD;
        return st;
    case RMQA_DLQ:
    case RMQA_EXISTS:
        return queue_method(l, d->queue, d->kind == RMQA_EXISTS, true, 0,
                            d->kind == RMQA_DLQ && d->quorum);
    }
    return st;
}

int rmqa_write_decl(amqp_connection_state_t conn, amqp_channel_t ch, const rmqa_decl *d)
{
    last_method l;
    int st = write_all_but_last(conn, ch, d, false, &l);
    if (st != AMQP_STATUS_OK)
        return st;
    switch (l.id) {
    case AMQP_EXCHANGE_DECLARE_METHOD:
        l.m.x.nowait = 1;
        break;
    case AMQP_QUEUE_DECLARE_METHOD:
        l.m.q.nowait = 1;
        break;
    case AMQP_QUEUE_BIND_METHOD:
        l.m.b.nowait = 1;
        break;
    }
    return amqp_send_method(conn, ch, l.id, &l.m);
}

amqp_rpc_reply_t rmqa_rpc_decl(amqp_connection_state_t conn, amqp_channel_t ch,
                               const rmqa_decl *d)
{
    last_method l;
    int st = write_all_but_last(conn, ch, d, false, &l);
    if (st != AMQP_STATUS_OK) {
        amqp_rpc_reply_t r = {.reply_type = AMQP_RESPONSE_LIBRARY_EXCEPTION,
                              .library_error = st};
        return r;
    }
    amqp_method_number_t replies[] = {l.reply, 0};
    return amqp_simple_rpc(conn, ch, l.id, replies, &l.m);
}

const char *rmqa_decl_what(const rmqa_decl *d, char *buf, size_t len)
{
    switch (d->kind) {
    case RMQA_EXCHANGE:
        snprintf(buf, len, "declaring exchange '%s' (topic, durable)", d->event);
        break;
    case RMQA_LISTENER:
        snprintf(buf, len, "declaring queue '%s' (%s%s%s) bound to exchange '%s'%s%s%s",
                 d->queue, d->durable ? "durable" : "transient",
                 d->expires_ms > 0 ? ", x-expires" : "", listener_quorum(d) ? ", quorum" : "",
                 d->event,
                 d->dlq ? " and dead-letter queue '" : "", d->dlq ? d->dlq : "",
                 d->dlq ? "'" : "");
        break;
    case RMQA_DLQ:
        snprintf(buf, len, "declaring dead-letter queue '%s' (durable%s)", d->queue,
                 d->quorum ? ", quorum" : "");
        break;
    case RMQA_EXISTS:
        snprintf(buf, len, "checking queue '%s'", d->queue);
        break;
    }
    return buf;
}

/* ---- the handle ----------------------------------------------------------- */

/* Channels a batch of declarations is spread over: RabbitMQ runs each
 * channel in a process of its own, so queues are created in parallel. */
#define RMQA_CHANNELS 32

typedef struct entry {
    rmqa_decl d; /* strings owned */
    struct entry *next;
} entry;

struct rmqa {
    pthread_mutex_t mu;
    rmqa_conf c; /* strings owned; c.hosts is hosts.v */
    ewi_hosts hosts;              /* the nodes (one: c.host, c.port) */
    size_t host_next, host_cur;   /* see ewi_hosts_round */
    amqp_connection_state_t conn; /* NULL when closed */
    amqp_channel_t chs[RMQA_CHANNELS]; /* open channels; 0: none. Batches
                                          spread over all, the rest uses 0 */
    amqp_channel_t ch_next;       /* the number of the next one opened */
    entry *decls;                 /* declared, oldest last */
    entry *checks;                /* known to exist */
};

/* Frees a string this file copied (kept const where it is read). */
static void free_owned(const char *s)
{
    free((void *)(uintptr_t)s);
}

static char *dup0(const char *s)
{
    return s ? strdup(s) : NULL;
}

static void conf_free(rmqa_conf *c)
{
    free_owned(c->host);
    free_owned(c->vhost);
    free_owned(c->user);
    free_owned(c->password);
    free_owned(c->ca);
    free_owned(c->cert);
    free_owned(c->key);
    free_owned(c->conn_name);
    free_owned(c->label);
}

rmqa *rmqa_new(const rmqa_conf *c)
{
    rmqa *a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    a->c = *c;
    a->c.host = dup0(c->host || !c->nhosts ? c->host : c->hosts[0].host);
    a->c.vhost = dup0(c->vhost);
    a->c.user = dup0(c->user);
    a->c.password = dup0(c->password);
    a->c.ca = dup0(c->ca);
    a->c.cert = dup0(c->cert);
    a->c.key = dup0(c->key);
    a->c.conn_name = dup0(c->conn_name);
    a->c.label = dup0(c->label);
    ewi_url_host one = {(char *)(uintptr_t)c->host, c->port};
    bool listed = c->nhosts > 0;
    bool hosts_ok = ewi_hosts_copy(listed ? c->hosts : &one, listed ? c->nhosts : 1,
                                   &a->hosts) == EW_OK;
    a->c.hosts = a->hosts.v;
    a->c.nhosts = a->hosts.n;
    if (!hosts_ok || !a->c.host || (c->vhost && !a->c.vhost) || (c->user && !a->c.user) ||
        (c->password && !a->c.password) || (c->ca && !a->c.ca) || (c->cert && !a->c.cert) ||
        (c->key && !a->c.key) || (c->conn_name && !a->c.conn_name) ||
        (c->label && !a->c.label)) {
        conf_free(&a->c);
        ewi_hosts_free(&a->hosts);
        free(a);
        return NULL;
    }
    pthread_mutex_init(&a->mu, NULL);
    return a;
}

static void drop(rmqa *a, bool polite)
{
    if (!a->conn)
        return;
    if (polite)
        amqp_connection_close(a->conn, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(a->conn);
    a->conn = NULL;
    memset(a->chs, 0, sizeof a->chs);
}

static void entries_free(entry *e)
{
    while (e) {
        entry *next = e->next;
        free_owned(e->d.event);
        free_owned(e->d.queue);
        free_owned(e->d.dlq);
        free(e);
        e = next;
    }
}

void rmqa_free(rmqa *a)
{
    if (!a)
        return;
    drop(a, true);
    entries_free(a->decls);
    entries_free(a->checks);
    conf_free(&a->c);
    ewi_hosts_free(&a->hosts);
    pthread_mutex_destroy(&a->mu);
    free(a);
}

static bool eq(const char *x, const char *y)
{
    return x == y || (x && y && strcmp(x, y) == 0);
}

static entry *find(entry *e, const rmqa_decl *d)
{
    for (; e; e = e->next)
        if (e->d.kind == d->kind && eq(e->d.event, d->event) && eq(e->d.queue, d->queue) &&
            eq(e->d.dlq, d->dlq) && e->d.quorum == d->quorum)
            return e;
    return NULL;
}

static void remember(entry **list, const rmqa_decl *d)
{
    entry *e = calloc(1, sizeof *e);
    if (!e)
        return; /* only costs a second declaration later */
    e->d = *d;
    e->d.event = dup0(d->event);
    e->d.queue = dup0(d->queue);
    e->d.dlq = dup0(d->dlq);
    if ((d->event && !e->d.event) || (d->queue && !e->d.queue) || (d->dlq && !e->d.dlq)) {
        entries_free(e);
        return;
    }
    e->next = *list;
    *list = e;
}

static ew_err connect_node(void *user, const ewi_url_host *h, char *err, size_t errlen)
{
    rmqa *a = user;
    rmqa_conf c = a->c;
    c.host = h->host;
    c.port = h->port;
    return rmqa_connect(&c, &a->conn, err, errlen);
}

/* Opens the connection and channel slot k as needed. */
static ew_err ready(rmqa *a, int k, char *err, size_t errlen)
{
    if (!a->conn) {
        ew_err rc = ewi_hosts_round(&a->hosts, &a->host_next, &a->host_cur, connect_node, a,
                                    err, errlen);
        if (rc != EW_OK)
            return rc;
        memset(a->chs, 0, sizeof a->chs);
    }
    if (!a->chs[k]) {
        /* A refusal closed the slot's last channel: open the next number
         * (the broker may not have forgotten the old one yet). */
        int max = amqp_get_channel_max(a->conn);
        amqp_channel_t ch = a->ch_next;
        if (ch < 1 || (max > 0 && ch > max) || ch > 32000)
            ch = 1;
        amqp_channel_open(a->conn, ch);
        amqp_rpc_reply_t r = amqp_get_rpc_reply(a->conn);
        if (r.reply_type != AMQP_RESPONSE_NORMAL) {
            char text[300];
            snprintf(err, errlen, "opening a channel on %s: %s",
                     a->c.label ? a->c.label : a->c.host, rmqa_reply_text(r, text, sizeof text));
            drop(a, false);
            return EW_ECONNECT;
        }
        a->chs[k] = ch;
        a->ch_next = (amqp_channel_t)(ch + 1);
    }
    return EW_OK;
}

/* Turns r into an ew_err with "what: text" in err; a channel refusal is
 * answered (close-ok) and leaves no channel open; a connection failure
 * drops the connection and gives EW_ECONNECT (or EW_ETIMEDOUT). */
static ew_err settle_reply(rmqa *a, int k, amqp_rpc_reply_t r, const char *what, char *err,
                           size_t errlen)
{
    if (r.reply_type == AMQP_RESPONSE_NORMAL)
        return EW_OK;
    char text[400];
    rmqa_reply_text(r, text, sizeof text);
    snprintf(err, errlen, "%s on %s: %s", what, a->c.label ? a->c.label : a->c.host, text);
    ew_err rc = rmqa_reply_err(r);
    if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        amqp_channel_close_ok_t ok = {0};
        if (amqp_send_method(a->conn, a->chs[k], AMQP_CHANNEL_CLOSE_OK_METHOD, &ok) != AMQP_STATUS_OK)
            drop(a, false);
        a->chs[k] = 0;
        return rc;
    }
    if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
        r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
        /* CONNECTION_FORCED: an operator (or a broker going down) closed
         * the connection, maybe while it was idle; nothing was refused. A
         * connection failure, which the callers try once more on a new
         * connection. (The reply lives in the connection: read it first.) */
        bool forced = rmqa_reply_code(r) == AMQP_CONNECTION_FORCED;
        amqp_connection_close_ok_t ok = {0};
        amqp_send_method(a->conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
        drop(a, false);
        return forced ? EW_ECONNECT : rc;
    }
    drop(a, false);
    return rc == EW_ETIMEDOUT ? rc : EW_ECONNECT;
}

/* d on the broker, reconnecting once when the connection went stale. */
static ew_err declare(rmqa *a, const rmqa_decl *d, char *err, size_t errlen)
{
    ew_err rc = EW_ECONNECT;
    for (int attempt = 0; attempt < 2 && rc == EW_ECONNECT; attempt++) {
        bool fresh = !a->conn;
        if ((rc = ready(a, 0, err, errlen)) != EW_OK)
            return rc;
        char what[3 * EW_MAX_QUEUE_NAME + 128];
        rmqa_decl_what(d, what, sizeof what);
        rc = settle_reply(a, 0, rmqa_rpc_decl(a->conn, a->chs[0], d), what, err, errlen);
        if (fresh)
            break; /* a new connection failed: no stale one to blame */
    }
    return rc;
}

/* Where d is remembered: existence checks apart. */
static entry **list_of(rmqa *a, const rmqa_decl *d)
{
    return d->kind == RMQA_EXISTS ? &a->checks : &a->decls;
}

/* d on the broker (unless remembered and not force), then remembered. */
static ew_err make(rmqa *a, const rmqa_decl *d, bool force, char *err, size_t errlen)
{
    pthread_mutex_lock(&a->mu);
    bool known = find(*list_of(a, d), d) != NULL;
    ew_err rc = known && !force ? EW_OK : declare(a, d, err, errlen);
    if (rc == EW_OK && !known)
        remember(list_of(a, d), d);
    if (rc == EW_ENOTFOUND && known) {
        /* Checked again and gone: forget that one, the others stay known. */
        for (entry **pe = list_of(a, d); *pe; pe = &(*pe)->next)
            if (*pe == find(*pe, d) && (*pe)->d.kind == d->kind) {
                entry *e = *pe;
                *pe = e->next;
                e->next = NULL;
                entries_free(e);
                break;
            }
    }
    pthread_mutex_unlock(&a->mu);
    return rc;
}

static void forget_queue(entry **list, const char *queue)
{
    for (entry **pe = list; *pe;) {
        entry *e = *pe;
        if (eq(e->d.queue, queue)) {
            *pe = e->next;
            e->next = NULL;
            entries_free(e);
        } else {
            pe = &e->next;
        }
    }
}

ew_err rmqa_delete_queue(rmqa *a, const char *queue, char *err, size_t errlen)
{
    pthread_mutex_lock(&a->mu);
    forget_queue(&a->decls, queue);
    forget_queue(&a->checks, queue);
    ew_err rc = EW_ECONNECT;
    for (int attempt = 0; attempt < 2 && rc == EW_ECONNECT; attempt++) {
        bool fresh = !a->conn;
        if ((rc = ready(a, 0, err, errlen)) != EW_OK)
            break;
        amqp_queue_delete(a->conn, a->chs[0], b(queue), 0, 0);
        char what[EW_MAX_QUEUE_NAME + 32];
        snprintf(what, sizeof what, "deleting queue '%s'", queue);
        rc = settle_reply(a, 0, amqp_get_rpc_reply(a->conn), what, err, errlen);
        if (fresh)
            break;
    }
    pthread_mutex_unlock(&a->mu);
    return rc;
}

ew_err rmqa_ensure(rmqa *a, const rmqa_decl *d, char *err, size_t errlen)
{
    return make(a, d, false, err, errlen);
}

ew_err rmqa_declare(rmqa *a, const rmqa_decl *d, char *err, size_t errlen)
{
    return make(a, d, true, err, errlen);
}

void rmqa_forget_checks(rmqa *a)
{
    pthread_mutex_lock(&a->mu);
    entries_free(a->checks);
    a->checks = NULL;
    pthread_mutex_unlock(&a->mu);
}

ew_err rmqa_redeclare(rmqa *a, char *err, size_t errlen)
{
    pthread_mutex_lock(&a->mu);
    entries_free(a->checks);
    a->checks = NULL;
    /* The old connection died with the broker; start afresh. */
    drop(a, false);
    ew_err rc = a->decls ? ready(a, 0, err, errlen) : EW_OK;
    /* Everything written at once, exchanges first (bindings need them),
     * then one round trip to learn whether all of it went through. */
    for (int pass = 0; pass < 2 && rc == EW_OK; pass++)
        for (entry *e = a->decls; e && rc == EW_OK; e = e->next)
            if ((e->d.kind == RMQA_EXCHANGE) == (pass == 0) &&
                rmqa_write_decl(a->conn, a->chs[0], &e->d) != AMQP_STATUS_OK) {
                snprintf(err, errlen, "redeclaring on %s: write failed",
                         a->c.label ? a->c.label : a->c.host);
                drop(a, false);
                rc = EW_ECONNECT;
            }
    if (rc == EW_OK && a->decls) {
        amqp_basic_qos(a->conn, a->chs[0], 0, 0, 0); /* any round trip will do */
        rc = settle_reply(a, 0, amqp_get_rpc_reply(a->conn), "redeclaring", err, errlen);
        if (rc != EW_OK && rc != EW_ECONNECT && rc != EW_ETIMEDOUT) {
            /* A refusal: name the declaration at fault, one round trip each. */
            rc = EW_OK;
            for (int pass = 0; pass < 2 && rc == EW_OK; pass++)
                for (entry *e = a->decls; e && rc == EW_OK; e = e->next)
                    if ((e->d.kind == RMQA_EXCHANGE) == (pass == 0))
                        rc = declare(a, &e->d, err, errlen);
        }
    }
    pthread_mutex_unlock(&a->mu);
    return rc;
}

/* One declaration of a batch in flight: its channel slot. */
typedef struct flight {
    size_t item;
    int k;
} flight;

/* Who hears of each success of a batch, once. */
typedef struct notify {
    rmqa_done_fn fn;
    void *user;
    bool *told; /* per declaration; NULL: no one to tell */
} notify;

/* ds[i] succeeded: remembered (unless it already was) and told. */
static void succeeded(rmqa *a, const rmqa_decl *ds, size_t i, bool known, ew_err *rcs,
                      notify *nt)
{
    if (!known)
        remember(list_of(a, &ds[i]), &ds[i]);
    rcs[i] = EW_OK;
    if (nt->told && !nt->told[i]) {
        nt->told[i] = true;
        nt->fn(nt->user, i);
    }
}

/* Whether ds[0..i) has a listener of ds[i]'s event among those to do. */
static bool event_seen(const rmqa_decl *ds, size_t i, const ew_err *rcs, ew_err todo)
{
    for (size_t j = 0; j < i; j++)
        if (rcs[j] == todo && ds[j].kind == RMQA_LISTENER && eq(ds[j].event, ds[i].event))
            return true;
    return false;
}

/* The exchanges of the listeners to do, each once, on channel slot 0, one
 * round trip for all (a->mu held). EW_OK: the listeners need not declare
 * them again. A refusal is not an error here: the slot is opened again and
 * *skip stays false, so that each listener declares its exchange itself
 * and a refusal is reported with the listener it concerns. */
static ew_err batch_exchanges(rmqa *a, const rmqa_decl *ds, size_t n, const ew_err *rcs,
                              ew_err todo, bool *skip, char *err, size_t errlen)
{
    *skip = false;
    size_t listeners = 0, events = 0;
    const rmqa_decl *last = NULL;
    for (size_t i = 0; i < n; i++)
        if (rcs[i] == todo && ds[i].kind == RMQA_LISTENER) {
            listeners++;
            if (!event_seen(ds, i, rcs, todo)) {
                events++;
                last = &ds[i];
            }
        }
    if (events == listeners)
        return EW_OK; /* nothing shared: declared with each listener */
    for (size_t i = 0; i < n; i++) {
        if (rcs[i] != todo || ds[i].kind != RMQA_LISTENER || &ds[i] == last ||
            event_seen(ds, i, rcs, todo))
            continue;
        rmqa_decl x = {.kind = RMQA_EXCHANGE, .event = ds[i].event};
        int st = rmqa_write_decl(a->conn, a->chs[0], &x);
        if (st != AMQP_STATUS_OK) {
            snprintf(err, errlen, "writing declarations to %s: %s",
                     a->c.label ? a->c.label : a->c.host, amqp_error_string2(st));
            drop(a, false);
            return EW_ECONNECT;
        }
    }
    rmqa_decl x = {.kind = RMQA_EXCHANGE, .event = last->event};
    char text[600];
    ew_err rc = settle_reply(a, 0, rmqa_rpc_decl(a->conn, a->chs[0], &x),
                             "declaring exchanges", text, sizeof text);
    if (rc == EW_OK) {
        *skip = true;
        return EW_OK;
    }
    if (!a->conn) {
        snprintf(err, errlen, "%s", text);
        return rc;
    }
    return ready(a, 0, err, errlen);
}

/* One try of rmqa_ensure_many (a->mu held); *replied: whether the broker
 * answered any declaration. */
static ew_err ensure_batch(rmqa *a, const rmqa_decl *ds, size_t n, ew_err *rcs, char *err,
                           size_t errlen, notify *nt, bool *replied)
{
    enum { TODO = -1000 }; /* not settled yet */
    size_t todo = 0;
    for (size_t i = 0; i < n; i++) {
        rcs[i] = (ew_err)TODO;
        if (find(*list_of(a, &ds[i]), &ds[i]))
            succeeded(a, ds, i, true, rcs, nt);
        todo += rcs[i] != EW_OK;
    }
    flight *fl = todo ? calloc(todo, sizeof *fl) : NULL;
    ew_err rc = todo && !fl ? EW_ENOMEM : EW_OK;
    if (rc == EW_ENOMEM)
        snprintf(err, errlen, "out of memory");
    int nk = todo < RMQA_CHANNELS ? (int)todo : RMQA_CHANNELS;
    for (int k = 0; k < nk && rc == EW_OK; k++)
        rc = ready(a, k, err, errlen);
    bool has_exchange = false;
    if (rc == EW_OK)
        rc = batch_exchanges(a, ds, n, rcs, (ew_err)TODO, &has_exchange, err, errlen);
    /* Everything written, round robin over the channels, the last method
     * of each declaration asking for a reply; then the replies, which come
     * in order per channel. */
    size_t nf = 0;
    for (size_t i = 0; i < n && rc == EW_OK; i++) {
        if (rcs[i] != (ew_err)TODO)
            continue;
        int k = (int)(nf % (size_t)nk);
        last_method l;
        int st = write_all_but_last(a->conn, a->chs[k], &ds[i], has_exchange, &l);
        if (st == AMQP_STATUS_OK)
            st = amqp_send_method(a->conn, a->chs[k], l.id, &l.m);
        if (st != AMQP_STATUS_OK) {
            snprintf(err, errlen, "writing declarations to %s: %s",
                     a->c.label ? a->c.label : a->c.host, amqp_error_string2(st));
            drop(a, false);
            rc = EW_ECONNECT;
            break;
        }
        fl[nf++] = (flight){i, k};
    }
    size_t done = 0, head[RMQA_CHANNELS] = {0};
    bool first_err = true;
    while (rc == EW_OK && done < nf) {
        amqp_frame_t f;
        int ms = a->c.rpc_timeout_ms > 0 ? a->c.rpc_timeout_ms : a->c.connect_timeout_ms;
        struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
        int st = amqp_simple_wait_frame_noblock(a->conn, &f, &tv);
        if (st != AMQP_STATUS_OK) {
            snprintf(err, errlen, "declaring on %s: %s", a->c.label ? a->c.label : a->c.host,
                     amqp_error_string2(st));
            drop(a, false);
            rc = st == AMQP_STATUS_TIMEOUT ? EW_ETIMEDOUT : EW_ECONNECT;
            break;
        }
        if (f.frame_type != AMQP_FRAME_METHOD)
            continue;
        if (f.channel == 0) {
            amqp_rpc_reply_t r = {.reply_type = AMQP_RESPONSE_SERVER_EXCEPTION,
                                  .reply = f.payload.method};
            rc = settle_reply(a, 0, r, "declaring", err, errlen);
            if (rc == EW_OK)
                rc = EW_ECONNECT;
            break;
        }
        int k = 0;
        while (k < nk && a->chs[k] != f.channel)
            k++;
        if (k == nk)
            continue; /* not ours (a late reply) */
        /* The next declaration in flight on channel k. */
        size_t j = head[k];
        while (j < nf && fl[j].k != k)
            j++;
        if (j == nf)
            continue;
        head[k] = j + 1;
        size_t i = fl[j].item;
        if (f.payload.method.id != AMQP_CHANNEL_CLOSE_METHOD) {
            succeeded(a, ds, i, false, rcs, nt);
            done++;
            continue;
        }
        /* Refused: this one failed with the broker's text; the ones behind
         * it on the channel were dropped by the broker, and are declared
         * again one by one below. */
        amqp_rpc_reply_t r = {.reply_type = AMQP_RESPONSE_SERVER_EXCEPTION,
                              .reply = f.payload.method};
        char what[3 * EW_MAX_QUEUE_NAME + 128], text[600];
        rmqa_decl_what(&ds[i], what, sizeof what);
        rcs[i] = settle_reply(a, k, r, what, text, sizeof text);
        if (first_err) {
            snprintf(err, errlen, "%s", text);
            first_err = false;
        }
        done++;
        for (j = head[k]; j < nf; j++)
            if (fl[j].k == k)
                done++; /* left TODO */
        head[k] = nf;
        if (!a->conn)
            rc = EW_ECONNECT;
    }
    for (size_t i = 0; i < n; i++)
        if (rcs[i] == (ew_err)TODO) {
            if (rc == EW_OK) {
                char text[600];
                rcs[i] = declare(a, &ds[i], text, sizeof text);
                if (rcs[i] == EW_OK) {
                    succeeded(a, ds, i, false, rcs, nt);
                } else if (first_err) {
                    snprintf(err, errlen, "%s", text);
                    first_err = false;
                }
            } else {
                rcs[i] = rc;
            }
        }
    if (a->conn)
        amqp_maybe_release_buffers(a->conn);
    free(fl);
    *replied = done > 0 || has_exchange;
    return rc;
}

ew_err rmqa_ensure_many(rmqa *a, const rmqa_decl *ds, size_t n, ew_err *rcs, char *err,
                        size_t errlen)
{
    return rmqa_ensure_many_cb(a, ds, n, rcs, err, errlen, NULL, NULL);
}

ew_err rmqa_ensure_many_cb(rmqa *a, const rmqa_decl *ds, size_t n, ew_err *rcs, char *err,
                           size_t errlen, rmqa_done_fn done, void *user)
{
    notify nt = {done, user, done && n ? calloc(n, sizeof *nt.told) : NULL};
    if (done && n && !nt.told) {
        snprintf(err, errlen, "out of memory");
        for (size_t i = 0; i < n; i++)
            rcs[i] = EW_ENOMEM;
        return EW_ENOMEM;
    }
    pthread_mutex_lock(&a->mu);
    bool stale = a->conn != NULL, replied = false;
    ew_err rc = ensure_batch(a, ds, n, rcs, err, errlen, &nt, &replied);
    /* A connection that went stale (the broker closed it while idle) fails
     * before any reply: the batch once more on a new one, as rmqa_ensure. */
    if (rc != EW_OK && rc != EW_ETIMEDOUT && stale && !replied && !a->conn)
        rc = ensure_batch(a, ds, n, rcs, err, errlen, &nt, &replied);
    pthread_mutex_unlock(&a->mu);
    free(nt.told);
    if (rc == EW_OK)
        for (size_t i = 0; i < n && rc == EW_OK; i++)
            rc = rcs[i];
    return rc;
}
