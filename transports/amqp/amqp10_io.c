/* The I/O thread: the one thread that touches proton.
 *
 * It owns the socket (core's TCP/TLS socket: the same certificate checks as
 * the other transports, IP addresses included) and drives proton's
 * connection engine over it in a poll() loop with the waker: bytes in, events
 * handled, bytes out. It owns the connection and every session, link and
 * delivery, takes work that other threads queued (publishes, settles,
 * subscriptions), sends within link credit, maps outcomes to publish
 * completions, hands received messages to core, and reconnects with capped,
 * jittered backoff. Listeners' receivers share sessions (amqp10_link.c);
 * senders and dead-letter reads have their own. RabbitMQ answers a refused
 * attach (a missing exchange or queue) by ending the whole session, so when
 * the broker ends one, the link at fault is told (and gets a session of its
 * own next time) and the others attach again at once. */
#include "amqp10.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <proton/connection.h>
#include <proton/delivery.h>
#include <proton/disposition.h>
#include <proton/link.h>
#include <proton/connection_driver.h>
#include <proton/sasl.h>
#include <proton/session.h>
#include <proton/terminus.h>
#include <proton/transport.h>

#define TICK_MS 100          /* deadlines and reconnects are checked this often */
#define CLOSE_GRACE_MS 2000  /* stop: wait this long for the broker's close */
#define CONNECT_MS 5000      /* TCP connect and TLS handshake, at most */
/* 64 transfer frames in flight per session (SESSION_CAPACITY in
 * amqp10_link.c): plenty for small events, and proton never buffers more than
 * 2 MiB of one large message. */
#define MAX_FRAME (32u << 10)

/* ---- work from other threads -------------------------------------------- */

static void begin_stop(ewi_transport *t);

/* Runs a batch of work in order. With why (after the loop, the connection
 * gone), publishes fail with it and settles only let go of their message;
 * subscriptions and reads know by themselves that the I/O thread is gone. */
static void run_work(ewi_transport *t, ewi_workq_item *batch, const char *why)
{
    for (ewi_workq_item *it = batch, *next; it; it = next) {
        next = it->next;
        amqp10_work *w = EWI_WORKQ_ENTRY(it, amqp10_work, link);
        switch (w->kind) {
        case AMQP10_W_PUB:
            if (why)
                amqp10_out_finish(t, (amqp10_out *)w, EW_ECLOSED, why);
            else
                amqp10_send_take(t, (amqp10_out *)w);
            break;
        case AMQP10_W_SETTLE: {
            amqp10_rec *rec = (amqp10_rec *)w;
            if (!why)
                amqp10_recv_settle(t, rec);
            else if (rec->owner == AMQP10_REC_SUB)
                amqp10_recv_forget(rec);
            else
                amqp10_fetch_settle(t, rec);
            break;
        }
        case AMQP10_W_SUB:
            amqp10_recv_take_sub(t, (amqp10_sub *)((char *)w - offsetof(amqp10_sub, w_sub)));
            break;
        case AMQP10_W_UNSUB:
            amqp10_recv_take_unsub(t, (amqp10_sub *)((char *)w - offsetof(amqp10_sub, w_unsub)));
            break;
        case AMQP10_W_FETCH:
            amqp10_fetch_work(t, w);
            break;
        }
    }
}

static void process_work(ewi_transport *t)
{
    pthread_mutex_lock(&t->mu);
    ewi_workq_item *batch = ewi_workq_take(&t->work);
    bool stopping = t->stopping;
    pthread_mutex_unlock(&t->mu);
    run_work(t, batch, NULL);
    if (stopping && !t->closing)
        begin_stop(t);
}

/* ---- the connection ----------------------------------------------------- */

static void set_state(ewi_transport *t, amqp10_state st, const char *error)
{
    pthread_mutex_lock(&t->mu);
    t->state = st;
    if (error)
        amqp10_textf(t->last_error, sizeof t->last_error, "%s", error);
    pthread_cond_broadcast(&t->cond);
    pthread_mutex_unlock(&t->mu);
}

/* lost: an open connection went (else an attempt failed). */
static void schedule_reconnect(ewi_transport *t, int64_t now, bool lost)
{
    if (lost)
        ewi_reconnect_lost(&t->rc, now);
    else
        ewi_reconnect_failed(&t->rc, now);
    t->reconnect_planned = true;
    /* During start, a last try just before the deadline rather than none. */
    pthread_mutex_lock(&t->mu);
    bool starting = t->state == AMQP10_ST_CONNECTING;
    int64_t last = t->start_deadline - 50;
    pthread_mutex_unlock(&t->mu);
    if (starting && t->rc.next_ms > last)
        t->rc.next_ms = last > now ? last : now;
}

/* The connection went, or an attempt failed, for why. final: not worth
 * retrying during start (refused credentials: EW_EAUTH; an untrusted
 * certificate: EW_ETLS; our certificate files: EW_EINVAL), else EW_OK. */
static void conn_gone(ewi_transport *t, const char *why, ew_err final)
{
    int64_t now = ewi_now_ms();
    bool auth = final == EW_EAUTH;
    pthread_mutex_lock(&t->mu);
    amqp10_state was = t->state;
    bool stopping = t->stopping;
    if (was == AMQP10_ST_UP)
        t->down_since = now;
    pthread_mutex_unlock(&t->mu);
    amqp10_ssn_forget_all(t);
    t->conn = NULL;
    t->connected = false;
    amqp10_send_disconnected(t);
    amqp10_recv_disconnected(t);
    amqp10_fetch_disconnect_all(t, why, false);

    if (stopping || t->closing) {
        t->exit_now = true;
        return;
    }
    if (was == AMQP10_ST_CONNECTING) {
        bool give_up = final != EW_OK || now >= t->start_deadline - 60;
        char text[700];
        amqp10_textf(text, sizeof text, "%s to %s: %s",
                     auth ? "authentication refused" : "cannot connect", t->where, why);
        if (give_up) {
            pthread_mutex_lock(&t->mu);
            t->start_err = final != EW_OK ? final : EW_ECONNECT;
            pthread_mutex_unlock(&t->mu);
            set_state(t, AMQP10_ST_FAILED, text);
            t->exit_now = true;
            return;
        }
        set_state(t, AMQP10_ST_CONNECTING, text);
        ewi_log(t->m, EW_LOG_INFO, "amqp: %s; trying again", text);
        schedule_reconnect(t, now, false);
        return;
    }
    set_state(t, AMQP10_ST_DOWN, why);
    schedule_reconnect(t, now, was == AMQP10_ST_UP);
    /* A certificate the client does not trust stays untrusted only during
     * start: later a reconnect keeps trying (a broker's certificate may be
     * being replaced). */
    if (was == AMQP10_ST_UP)
        ewi_conn_state(t->m, 0, false);
    if (was == AMQP10_ST_UP)
        ewi_report(t->m, auth ? EW_EAUTH : EW_EDISCONNECTED, NULL, NULL, NULL,
                   "amqp %s: connection lost: %s; reconnecting (backoff up to %ld ms)",
                   t->where, why, t->opt.reconnect_max_ms);
    else
        ewi_log(t->m, auth ? EW_LOG_ERROR : EW_LOG_INFO,
                "amqp %s: reconnect failed: %s; next try in %lld ms", t->where, why,
                (long long)(t->rc.next_ms - now));
}

/* Opens t->sock to node h. The connect blocks this thread: at most
 * CONNECT_MS, and during start not past its deadline. The certificate must
 * name the node dialled. */
static ew_err open_node(void *user, const ewi_url_host *h, char *why, size_t whylen)
{
    ewi_transport *t = user;
    const amqp10_options *o = &t->opt;
    int timeout = CONNECT_MS;
    pthread_mutex_lock(&t->mu);
    if (t->state == AMQP10_ST_CONNECTING) {
        int left = ewi_left_ms(t->start_deadline);
        timeout = left < timeout ? left : timeout;
    }
    pthread_mutex_unlock(&t->mu);
    if (timeout <= 0) {
        amqp10_textf(why, whylen, "no answer within the start timeout");
        return EW_ECONNECT;
    }
    ewi_sock_conf sc = {.host = h->host, .port = h->port, .tls = o->tls,
                        .ca_file = o->ca_file, .cert_file = o->cert_file,
                        .key_file = o->key_file,
                        .verify = o->verify == AMQP10_VERIFY_NAME   ? EWI_VERIFY_NAME
                                  : o->verify == AMQP10_VERIFY_PEER ? EWI_VERIFY_PEER
                                                                    : EWI_VERIFY_NONE};
    ew_err code;
    bool final;
    t->sock = ewi_sock_open(&sc, timeout, &code, &final, why, whylen);
    if (t->sock)
        return EW_OK;
    return final || code == EW_ENOMEM ? code : EW_ECONNECT;
}

/* Opens the socket and binds a new proton connection to it; a failure is
 * handled (conn_gone). */
static void connect_now(ewi_transport *t)
{
    const amqp10_options *o = &t->opt;
    pn_transport_t *tr = pn_transport();
    pn_connection_t *c = pn_connection();
    if (!tr || !c) {
        if (tr)
            pn_transport_free(tr);
        if (c)
            pn_connection_free(c);
        conn_gone(t, "out of memory", EW_OK);
        return;
    }
    pn_sasl_t *sasl = pn_sasl(tr);
    pn_sasl_allowed_mechs(sasl, o->sasl_mechs ? o->sasl_mechs
                                : o->user ? "PLAIN" : "ANONYMOUS");
    /* PLAIN on a plain socket: the URL asked for it (amqp://user:pass@); on
     * amqps:// the socket is TLS below proton, which proton cannot see. */
    pn_sasl_set_allow_insecure_mechs(sasl, true);
    /* Our idle timeout is announced to the broker, which then sends
     * something at least every half of it; silence for the whole of it
     * closes the connection (a frozen network, a hung broker). */
    pn_transport_set_idle_timeout(tr, (pn_millis_t)(2 * t->opt.heartbeat_ms));
    pn_transport_set_max_frame(tr, MAX_FRAME);
    pn_connection_set_container(c, t->container_id);
    if (o->user)
        pn_connection_set_user(c, o->user);
    if (o->password)
        pn_connection_set_password(c, o->password);
    char host[400];
    if (o->dialect == AMQP10_DIALECT_RABBITMQ && o->vhost)
        amqp10_textf(host, sizeof host, "vhost:%s", o->vhost);
    else
        amqp10_textf(host, sizeof host, "%s", o->host);
    pn_connection_set_hostname(c, host);

    /* One round over the URL's nodes from the one after the node of the
     * last connection: the first whose socket opens is used (a node that
     * then fails the AMQP open is left by the next round). */
    char why[480];
    bool final = false;
    ew_err code = ewi_hosts_round(&o->hosts, &t->host_next, &t->host_cur, open_node, t, why,
                                  sizeof why);
    if (code != EW_OK) {
        final = code == EW_ETLS || code == EW_EINVAL;
        pn_transport_free(tr);
        pn_connection_free(c);
        conn_gone(t, why, final ? code : EW_OK);
        return;
    }
    if (pn_connection_driver_init(&t->drv, c, tr) != 0) {
        ewi_sock_close(t->sock);
        t->sock = NULL;
        conn_gone(t, "out of memory", EW_OK);
        return;
    }
    t->drv_live = true;
    t->io_wants_out = t->io_wants_in = false;
    pn_connection_open(c);
    t->conn = c;
    t->connected = false;
}

/* Drops the socket now: proton closes both directions and reports
 * PN_TRANSPORT_CLOSED with why (unless it has a reason already). */
static void drop(ewi_transport *t, const char *why)
{
    if (!t->drv_live || pn_connection_driver_finished(&t->drv))
        return;
    pn_condition_t *c = pn_transport_condition(t->drv.transport);
    if (why && !pn_condition_is_set(c))
        pn_condition_format(c, "proton:io", "%s", why);
    pn_connection_driver_close(&t->drv);
}

/* After PN_TRANSPORT_CLOSED and its last events: frees the connection with
 * every session, link and delivery, and closes the socket. */
static void release(ewi_transport *t)
{
    if (!t->drv_live)
        return;
    pn_connection_driver_destroy(&t->drv);
    t->drv_live = false;
    ewi_sock_close(t->sock);
    t->sock = NULL;
}

static void run_events(ewi_transport *t);

/* Bytes from the socket into proton, while both have them and room. The
 * events of each read are handled before the next read: a large message's
 * bytes then move into its link's buffer a read at a time, and proton's
 * own delivery buffer (kept, with its capacity, in a per-connection pool)
 * never holds more than one read of it. */
static void read_some(ewi_transport *t)
{
    for (int round = 0; round < 16 && t->drv_live; round++) {
        pn_rwbytes_t rb = pn_connection_driver_read_buffer(&t->drv);
        if (rb.size == 0)
            return;
        char why[300];
        long n = ewi_sock_read(t->sock, rb.start, rb.size, &t->io_wants_out, why, sizeof why);
        if (n < 0) {
            drop(t, why);
            return;
        }
        if (n == 0)
            return;
        pn_connection_driver_read_done(&t->drv, (size_t)n);
        run_events(t);
        if (!t->drv_live || ((size_t)n < rb.size && !ewi_sock_pending(t->sock)))
            return;
    }
}

/* Bytes from proton to the socket, until it would block. */
static void flush(ewi_transport *t)
{
    while (t->drv_live) {
        pn_bytes_t wb = pn_connection_driver_write_buffer(&t->drv);
        if (wb.size == 0)
            return;
        char why[300];
        long n = ewi_sock_write(t->sock, wb.start, wb.size, &t->io_wants_in, why, sizeof why);
        if (n < 0) {
            drop(t, why);
            return;
        }
        if (n == 0)
            return;
        pn_connection_driver_write_done(&t->drv, (size_t)n);
    }
}

static void on_remote_open(ewi_transport *t)
{
    t->connected = true;
    ewi_conn_state(t->m, 0, true);
    ewi_reconnect_up(&t->rc, ewi_now_ms());
    if (t->was_up)
        ewi_log(t->m, EW_LOG_WARN, "amqp %s: reconnected", t->where);
    else
        ewi_log(t->m, EW_LOG_INFO, "amqp %s: connected", t->where);
    if (t->opt.hosts.n > 1)
        ewi_log(t->m, EW_LOG_INFO, "amqp %s: connected to node %s:%d (%zu of %zu)", t->where,
                t->opt.hosts.v[t->host_cur].host, t->opt.hosts.v[t->host_cur].port,
                t->host_cur + 1, t->opt.hosts.n);
    t->was_up = true;
    /* What passed its deadline during the outage fails before anything is
     * sent on the new connection: it is never sent late. */
    amqp10_send_expire(t, ewi_now_ms());
    set_state(t, AMQP10_ST_UP, NULL);
    amqp10_recv_attach_all(t);
    amqp10_send_attach_pending(t);
    amqp10_fetch_attach_all(t);
}

static bool is_auth_failure(pn_condition_t *c)
{
    const char *n = c && pn_condition_is_set(c) ? pn_condition_get_name(c) : NULL;
    return n && (strcmp(n, "amqp:unauthorized-access") == 0 ||
                 strcmp(n, "amqp:sasl-auth") == 0 ||
                 strstr(n, "unauthorized") != NULL);
}

/* The broker answered the SASL exchange with "authentication failed". The
 * outcome is kept by proton whatever happens to the socket afterwards, while
 * the transport's condition may say only that the socket closed (RabbitMQ
 * closes it some seconds after refusing). */
static bool sasl_refused(pn_transport_t *tr)
{
    return tr && pn_sasl_outcome(pn_sasl(tr)) == PN_SASL_AUTH;
}

static void on_transport_closed(ewi_transport *t, pn_event_t *e)
{
    pn_transport_t *tr = pn_event_transport(e);
    pn_condition_t *tc = pn_transport_condition(tr);
    pn_condition_t *rc = t->conn ? pn_connection_remote_condition(t->conn) : NULL;
    pn_condition_t *c = rc && pn_condition_is_set(rc) ? rc : tc;
    char why[480];
    amqp10_condition_text(c, "connection closed", why, sizeof why);
    bool auth = is_auth_failure(tc) || is_auth_failure(rc) || sasl_refused(tr);
    if (auth && !is_auth_failure(tc) && !is_auth_failure(rc))
        amqp10_textf(why, sizeof why, "authentication failed (SASL outcome: auth)");
    else if (!auth && t->start_cut)
        amqp10_textf(why, sizeof why, "no answer within the start timeout");
    t->start_cut = false;
    conn_gone(t, why, auth ? EW_EAUTH : EW_OK);
}

static void reconnect_if_due(ewi_transport *t, int64_t now)
{
    if (t->drv_live || !t->reconnect_planned || ewi_reconnect_wait_ms(&t->rc, now) > 0 ||
        t->closing)
        return;
    t->reconnect_planned = false;
    pthread_mutex_lock(&t->mu);
    bool starting = t->state == AMQP10_ST_CONNECTING;
    pthread_mutex_unlock(&t->mu);
    if (!starting) {
        /* rabbitmq: a restarted broker lost the non-durable topology; declare
         * it before any link needs it. */
        char err[512];
        ew_err rc = amqp10_redeclare_all(t, err, sizeof err);
        if (rc != EW_OK) {
            ewi_log(t->m, EW_LOG_INFO, "amqp %s: redeclaring the topology: %s",
                    t->where, err);
            set_state(t, AMQP10_ST_DOWN, err);
            schedule_reconnect(t, ewi_now_ms(), false);
            return;
        }
    }
    connect_now(t);
}

static void begin_stop(ewi_transport *t)
{
    t->closing = true;
    t->reconnect_planned = false;
    if (t->conn) {
        pn_connection_close(t->conn);
        t->close_deadline = ewi_now_ms() + CLOSE_GRACE_MS;
    } else {
        t->exit_now = true;
    }
}

static void tick(ewi_transport *t)
{
    int64_t now = ewi_now_ms();
    process_work(t);
    amqp10_send_expire(t, now);
    if (amqp10_is_up(t))
        amqp10_recv_tick(t, now);
    if (t->conn) {
        amqp10_fetch_tick(t, now);
        amqp10_ssn_tick(t, now);
    }
    if (t->closing && t->conn && now >= t->close_deadline) {
        drop(t, "the broker did not answer the close");
        t->close_deadline = now + CLOSE_GRACE_MS;
    }
    pthread_mutex_lock(&t->mu);
    bool start_over = t->state == AMQP10_ST_CONNECTING && now >= t->start_deadline;
    pthread_mutex_unlock(&t->mu);
    /* A broker that accepts the socket but never answers (or, like
     * RabbitMQ, delays its refusal of a login): past start's deadline the
     * connection that has not opened is dropped, and no new attempt made. */
    if (start_over && t->conn && !t->closing && !t->start_cut) {
        t->start_cut = true;
        drop(t, NULL);
    }
    if (!start_over)
        reconnect_if_due(t, now);
    pthread_mutex_lock(&t->mu);
    if (start_over && !t->drv_live) {
        t->start_err = EW_ECONNECT;
        t->state = AMQP10_ST_FAILED;
        if (!t->last_error[0])
            amqp10_textf(t->last_error, sizeof t->last_error, "no answer from %s", t->where);
        pthread_cond_broadcast(&t->cond);
        t->exit_now = true;
    }
    pthread_mutex_unlock(&t->mu);
}

/* ---- events ------------------------------------------------------------- */

static void on_link_gone(ewi_transport *t, pn_link_t *l, pn_condition_t *c)
{
    void *ctx = l ? pn_link_get_context(l) : NULL;
    if (!ctx) {
        if (l && pn_link_state(l) & PN_LOCAL_ACTIVE)
            pn_link_close(l);
        return;
    }
    char why[480];
    amqp10_condition_text(c, "detached by the broker", why, sizeof why);
    switch (*(amqp10_obj_kind *)ctx) {
    case AMQP10_OBJ_SENDER:
        amqp10_send_lost(t, ctx, why);
        break;
    case AMQP10_OBJ_SUB:
        amqp10_recv_lost(t, ctx, why);
        break;
    case AMQP10_OBJ_FETCH:
        amqp10_fetch_on_lost(t, ctx, why);
        break;
    }
}

/* The broker ended a session for another link's fault: l attaches again
 * elsewhere (a reader fails: its caller asks again). */
static void on_link_moved(ewi_transport *t, pn_link_t *l, const char *why)
{
    void *ctx = pn_link_get_context(l);
    pn_link_set_context(l, NULL);
    switch (*(amqp10_obj_kind *)ctx) {
    case AMQP10_OBJ_SENDER:
        amqp10_send_moved(t, ctx);
        break;
    case AMQP10_OBJ_SUB:
        amqp10_recv_moved(t, ctx);
        break;
    case AMQP10_OBJ_FETCH:
        amqp10_fetch_on_lost(t, ctx, why);
        break;
    }
}

/* The name an address is about: Q of /amq/queue/Q and /queue/Q, E of
 * /exchange/E[/key], else the whole address. */
static void addr_entity(const char *addr, char *buf, size_t len)
{
    static const char *const prefixes[] = {"/amq/queue/", "/queue/", "/exchange/",
                                           "/topic/", NULL};
    const char *p = addr;
    bool exchange = false;
    for (int i = 0; prefixes[i]; i++)
        if (strncmp(addr, prefixes[i], strlen(prefixes[i])) == 0) {
            p = addr + strlen(prefixes[i]);
            exchange = i >= 2;
            break;
        }
    size_t n = strlen(p);
    const char *slash = exchange ? strchr(p, '/') : NULL;
    if (slash)
        n = (size_t)(slash - p);
    amqp10_textf(buf, len, "'%.*s'", (int)n, p);
}

/* Whether the broker's text names l's address ("no queue 'Q' in vhost"). */
static bool names_link(pn_link_t *l, const char *desc)
{
    if (!desc)
        return false;
    pn_terminus_t *term = pn_link_is_sender(l) ? pn_link_target(l) : pn_link_source(l);
    const char *addr = pn_terminus_get_address(term);
    if (!addr)
        return false;
    char quoted[AMQP10_ADDR_MAX + 4];
    addr_entity(addr, quoted, sizeof quoted);
    return strstr(desc, quoted) != NULL;
}

/* The broker ended a session. One without links of ours is only freed.
 * Else the link at fault is told: the one the broker's text names,
 * else the first whose attach it had not answered (it answers in order, and
 * ends the session instead of answering a refused one); the other links
 * attach again at once on other sessions. When no link is at fault, all of
 * them are told (the broker's reason concerns them all). */
static void on_session_ended(ewi_transport *t, pn_session_t *ssn)
{
    unsigned n = t->conn ? amqp10_ssn_ended(t, ssn) : 0;
    if (n) {
        pn_condition_t *c = pn_session_remote_condition(ssn);
        const char *desc = pn_condition_is_set(c) ? pn_condition_get_description(c) : NULL;
        char why[480];
        amqp10_condition_text(c, "the broker ended the session", why, sizeof why);
        bool named = false;
        pn_link_t *unanswered = NULL;
        for (pn_link_t *l = pn_link_head(t->conn, 0); l; l = pn_link_next(l, 0))
            if (pn_link_session(l) == ssn && pn_link_get_context(l)) {
                named = named || names_link(l, desc);
                if (!unanswered && (pn_link_state(l) & PN_REMOTE_UNINIT))
                    unanswered = l;
            }
        unsigned moved = 0;
        /* Links opened meanwhile go to other sessions (and later in the
         * list): they are passed over. */
        for (pn_link_t *l = pn_link_head(t->conn, 0); l; l = pn_link_next(l, 0)) {
            if (pn_link_session(l) != ssn || !pn_link_get_context(l))
                continue;
            bool fault = named ? names_link(l, desc) : !unanswered || l == unanswered;
            if (fault) {
                on_link_gone(t, l, c);
            } else {
                on_link_moved(t, l, why);
                moved++;
            }
        }
        ewi_log(t->m, moved ? EW_LOG_WARN : EW_LOG_INFO,
                "amqp %s: the broker ended a session of %u links: %s; %u attached again",
                t->where, n, why, moved);
    }
    if (pn_session_state(ssn) & PN_LOCAL_ACTIVE)
        pn_session_close(ssn);
    /* Closed at both ends: free it (with its links and deliveries) now, not
     * when the connection goes, or every re-attach and every dead-letter
     * read would leave one behind. */
    pn_session_free(ssn);
}

static void on_link_open(ewi_transport *t, pn_link_t *l)
{
    void *ctx = pn_link_get_context(l);
    if (!ctx)
        return;
    /* A refused attach comes back without a terminus, then a detach. */
    pn_terminus_t *rt = pn_link_is_sender(l) ? pn_link_remote_target(l)
                                             : pn_link_remote_source(l);
    if (pn_terminus_get_type(rt) == PN_UNSPECIFIED)
        return;
    switch (*(amqp10_obj_kind *)ctx) {
    case AMQP10_OBJ_SENDER:
        amqp10_send_opened(t, ctx);
        break;
    case AMQP10_OBJ_SUB:
        amqp10_recv_opened(t, ctx);
        break;
    case AMQP10_OBJ_FETCH:
        amqp10_fetch_on_open(t, ctx, l);
        break;
    }
}

static void on_delivery(ewi_transport *t, pn_delivery_t *d)
{
    pn_link_t *l = pn_delivery_link(d);
    if (pn_link_is_sender(l)) {
        amqp10_send_outcome(t, d);
        return;
    }
    void *ctx = pn_link_get_context(l);
    if (!ctx) {
        /* A link we closed: leave the delivery unsettled, the broker gets it
         * back with the link. */
        if (pn_delivery_readable(d) && !pn_delivery_partial(d))
            pn_link_advance(l);
        return;
    }
    if (*(amqp10_obj_kind *)ctx == AMQP10_OBJ_SUB)
        amqp10_recv_message(t, ctx, d);
    else if (*(amqp10_obj_kind *)ctx == AMQP10_OBJ_FETCH)
        amqp10_fetch_on_delivery(t, ctx, d);
}

static void handle(ewi_transport *t, pn_event_t *e)
{
    switch (pn_event_type(e)) {
    case PN_CONNECTION_REMOTE_OPEN:
        if (pn_event_connection(e) == t->conn)
            on_remote_open(t);
        break;
    case PN_CONNECTION_REMOTE_CLOSE: {
        pn_connection_t *c = pn_event_connection(e);
        if (pn_connection_state(c) & PN_LOCAL_ACTIVE)
            pn_connection_close(c);
        break;
    }
    case PN_SESSION_REMOTE_CLOSE:
        on_session_ended(t, pn_event_session(e));
        break;
    case PN_LINK_REMOTE_OPEN:
        on_link_open(t, pn_event_link(e));
        break;
    case PN_LINK_REMOTE_CLOSE:
    case PN_LINK_REMOTE_DETACH: {
        pn_link_t *l = pn_event_link(e);
        on_link_gone(t, l, pn_link_remote_condition(l));
        if (!(pn_link_state(l) & PN_LOCAL_ACTIVE))
            pn_link_free(l); /* closed at both ends (its session goes later) */
        break;
    }
    case PN_LINK_FLOW: {
        pn_link_t *l = pn_event_link(e);
        void *ctx = pn_link_get_context(l);
        if (!ctx)
            break;
        if (*(amqp10_obj_kind *)ctx == AMQP10_OBJ_SENDER)
            amqp10_send_pump(t, ctx);
        else if (*(amqp10_obj_kind *)ctx == AMQP10_OBJ_FETCH)
            amqp10_fetch_on_flow(t, ctx, l);
        break;
    }
    case PN_DELIVERY:
        on_delivery(t, pn_event_delivery(e));
        break;
    case PN_TRANSPORT_ERROR: {
        /* The broker went silent past our idle timeout. proton still tries
         * to write a close frame first; over a dead path whose socket buffer
         * is full that never ends, so drop the socket now. */
        pn_condition_t *c = pn_transport_condition(pn_event_transport(e));
        const char *d = pn_condition_is_set(c) ? pn_condition_get_description(c) : NULL;
        if (t->conn && d && strstr(d, "idle-timeout"))
            drop(t, NULL);
        break;
    }
    case PN_TRANSPORT_CLOSED:
        on_transport_closed(t, e);
        break;
    default:
        break;
    }
}

/* ---- the thread --------------------------------------------------------- */

/* After the loop: whatever is left fails or is freed. */
static void finish(ewi_transport *t)
{
    pthread_mutex_lock(&t->mu);
    amqp10_state st = t->state;
    pthread_mutex_unlock(&t->mu);
    const char *why = st == AMQP10_ST_FAILED ? "the transport could not connect"
                                           : "the transport stopped";
    /* Readers first, while their callers still wait for us. */
    amqp10_fetch_disconnect_all(t, why, true);
    pthread_mutex_lock(&t->mu);
    ewi_workq_item *rest = ewi_workq_close(&t->work);
    t->io_exited = true;
    ewi_window_close(&t->window);
    pthread_mutex_unlock(&t->mu);
    run_work(t, rest, why);
    amqp10_send_finish(t, why);
    pthread_mutex_lock(&t->mu);
    amqp10_recv_finish_locked(t, why);
    if (t->state != AMQP10_ST_FAILED)
        t->state = AMQP10_ST_STOPPED;
    pthread_cond_broadcast(&t->cond);
    pthread_mutex_unlock(&t->mu);
}

/* Every event proton has; then, once the transport closed, the connection
 * and socket go. */
static void run_events(ewi_transport *t)
{
    for (pn_event_t *e; t->drv_live && (e = pn_connection_driver_next_event(&t->drv));)
        handle(t, e);
    /* The messages these events brought go to the workers together. */
    ewi_deliveries_flush(&t->dl);
    if (t->drv_live && pn_connection_driver_finished(&t->drv))
        release(t);
}

/* Waits for the socket, the waker or the next deadline. */
static void wait_io(ewi_transport *t, int64_t next_tick)
{
    int64_t now = ewi_now_ms();
    int64_t until = next_tick;
    struct pollfd p[2] = {{.fd = ewi_waker_fd(&t->waker), .events = POLLIN}, {.fd = -1}};
    if (t->drv_live) {
        /* proton's idle timeout and the keep-alives it owes the broker. */
        int64_t due = pn_transport_tick(t->drv.transport, now);
        if (due > 0 && due < until)
            until = due;
        bool in = pn_connection_driver_read_buffer(&t->drv).size > 0 || t->io_wants_in;
        bool out = pn_connection_driver_write_buffer(&t->drv).size > 0 || t->io_wants_out;
        p[1] = (struct pollfd){.fd = ewi_sock_fd(t->sock),
                               .events = (short)((in ? POLLIN : 0) | (out ? POLLOUT : 0))};
        if (ewi_sock_pending(t->sock) || t->stream_wake || pn_connection_driver_has_event(&t->drv))
            until = now;
    }
    int timeout = until > now ? (int)(until - now) : 0;
    if (poll(p, t->drv_live ? 2 : 1, timeout) < 0 && errno != EINTR)
        ewi_log(t->m, EW_LOG_ERROR, "amqp %s: poll: %s", t->where, strerror(errno));
    if (p[0].revents & POLLIN)
        ewi_waker_drain(&t->waker);
    t->stream_wake = false;
    if (!t->drv_live)
        return;
    short r = p[1].revents;
    if ((r & (POLLIN | POLLHUP | POLLERR)) || ewi_sock_pending(t->sock)) {
        if (!(p[1].events & POLLIN) && (r & (POLLHUP | POLLERR)))
            drop(t, "the connection is gone");
        else
            read_some(t);
    }
    if (r & POLLOUT)
        flush(t);
}

void *amqp10_io_main(void *arg)
{
    ewi_transport *t = arg;
    ewi_reconnect_init(&t->rc, 100, (int)t->opt.reconnect_max_ms);
    connect_now(t);
    int64_t next_tick = ewi_now_ms() + TICK_MS;
    while (!t->exit_now) {
        run_events(t);
        if (t->conn) {
            amqp10_send_continue(t);
            run_events(t);
        }
        flush(t);
        run_events(t);
        if (t->exit_now)
            break;
        wait_io(t, next_tick);
        process_work(t);
        if (ewi_now_ms() >= next_tick) {
            tick(t);
            next_tick = ewi_now_ms() + TICK_MS;
        }
    }
    /* start gave up or stop timed out with a connection: it goes now,
     * after what is left fails (its links are still proton's). */
    amqp10_ssn_forget_all(t);
    t->conn = NULL;
    t->connected = false;
    finish(t);
    release(t);
    return NULL;
}
