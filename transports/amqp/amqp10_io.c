/* The I/O thread: the one thread that touches proton.
 *
 * It runs the proactor loop, owns the connection and every session, link
 * and delivery, takes work that other threads queued (publishes, settles,
 * subscriptions), sends within link credit, maps outcomes to publish
 * completions, hands received messages to core, and reconnects with capped,
 * jittered backoff. Every link has its own session: RabbitMQ answers a
 * refused attach (a missing exchange or queue) by ending the whole session,
 * and one bad target must not take the others down with it. */
#include "amqp10.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <proton/connection.h>
#include <proton/delivery.h>
#include <proton/disposition.h>
#include <proton/link.h>
#include <proton/proactor.h>
#include <proton/sasl.h>
#include <proton/session.h>
#include <proton/ssl.h>
#include <proton/terminus.h>
#include <proton/transport.h>

#define TICK_MS 100          /* deadlines and reconnects are checked this often */
#define CLOSE_GRACE_MS 2000  /* stop: wait this long for the broker's close */
#define STUCK_MS 1000        /* a connection ignoring wake-ups this long is stuck */
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

static bool connect_now(ewi_transport *t)
{
    const amqp10_options *o = &t->opt;
    pn_transport_t *tr = pn_transport();
    pn_connection_t *c = pn_connection();
    if (!tr || !c) {
        if (tr)
            pn_transport_free(tr);
        if (c)
            pn_connection_free(c);
        return false;
    }
    pn_sasl_t *sasl = pn_sasl(tr);
    pn_sasl_allowed_mechs(sasl, o->sasl_mechs ? o->sasl_mechs
                                : o->user ? "PLAIN" : "ANONYMOUS");
    /* PLAIN on a plain socket: the URL asked for it (amqp://user:pass@). */
    pn_sasl_set_allow_insecure_mechs(sasl, true);
    /* Our idle timeout is announced to the broker, which then sends
     * something at least every half of it; silence for the whole of it
     * closes the connection (a frozen network, a hung broker). */
    pn_transport_set_idle_timeout(tr, (pn_millis_t)(2 * t->opt.heartbeat_ms));
    pn_transport_set_max_frame(tr, MAX_FRAME);
    if (o->tls) {
        pn_ssl_domain_t *dom = pn_ssl_domain(PN_SSL_MODE_CLIENT);
        int rc = dom ? 0 : PN_OUT_OF_MEMORY;
        if (!rc && o->ca_file)
            rc = pn_ssl_domain_set_trusted_ca_db(dom, o->ca_file);
        if (!rc && o->cert_file)
            rc = pn_ssl_domain_set_credentials(dom, o->cert_file, o->key_file, NULL);
        if (!rc)
            rc = pn_ssl_domain_set_peer_authentication(
                dom,
                o->verify == AMQP10_VERIFY_NAME ? PN_SSL_VERIFY_PEER_NAME
                : o->verify == AMQP10_VERIFY_PEER ? PN_SSL_VERIFY_PEER
                                                : PN_SSL_ANONYMOUS_PEER,
                NULL);
        pn_ssl_t *ssl = rc ? NULL : pn_ssl(tr);
        if (!rc)
            rc = ssl ? pn_ssl_init(ssl, dom, NULL) : PN_ERR;
        if (!rc)
            rc = pn_ssl_set_peer_hostname(ssl, o->host);
        if (dom)
            pn_ssl_domain_free(dom);
        if (rc) {
            char text[600];
            amqp10_textf(text, sizeof text, "TLS setup failed (%s)%s%s%s%s", pn_code(rc),
                     o->ca_file ? ": check the CA file " : "",
                     o->ca_file ? o->ca_file : "",
                     o->cert_file ? ", the client certificate " : "",
                     o->cert_file ? o->cert_file : "");
            set_state(t, t->state, text);
            ewi_log(t->m, EW_LOG_ERROR, "amqp %s: %s", t->where, text);
            pn_transport_free(tr);
            pn_connection_free(c);
            return false;
        }
    }
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
    pn_connection_open(c);
    char port[16], addr[PN_MAX_ADDR];
    amqp10_textf(port, sizeof port, "%d", o->port);
    pn_proactor_addr(addr, sizeof addr, o->host, port);
    t->conn = c;
    t->connected = false;
    pthread_mutex_lock(&t->mu);
    pn_proactor_connect2(t->proactor, c, tr, addr);
    t->conn_live = c;
    pthread_mutex_unlock(&t->mu);
    return true;
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

static void on_remote_open(ewi_transport *t)
{
    t->connected = true;
    ewi_reconnect_up(&t->rc, ewi_now_ms());
    if (t->was_up)
        ewi_log(t->m, EW_LOG_WARN, "amqp %s: reconnected", t->where);
    else
        ewi_log(t->m, EW_LOG_INFO, "amqp %s: connected", t->where);
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
 * the transport's condition is set only when proton next writes: a broker
 * that closes the socket first (or, like RabbitMQ, some seconds later) can
 * leave "connection aborted" in its place. */
static bool sasl_refused(pn_transport_t *tr)
{
    return tr && pn_sasl_outcome(pn_sasl(tr)) == PN_SASL_AUTH;
}

static bool is_ip_literal(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

static void on_transport_closed(ewi_transport *t, pn_event_t *e)
{
    pn_condition_t *tc = pn_transport_condition(pn_event_transport(e));
    pn_condition_t *rc = t->conn ? pn_connection_remote_condition(t->conn) : NULL;
    pn_condition_t *c = rc && pn_condition_is_set(rc) ? rc : tc;
    char why[480];
    amqp10_condition_text(c, "connection closed", why, sizeof why);
    /* proton 0.37 matches the host name against the certificate's DNS
     * names and common name only, never its IP addresses. */
    if (t->opt.tls && t->opt.verify == AMQP10_VERIFY_NAME && is_ip_literal(t->opt.host) &&
        strstr(why, "certificate verify failed")) {
        size_t n = strlen(why);
        amqp10_textf(why + n, sizeof why - n,
                   " (the host is an IP address: proton checks names against the "
                   "certificate's DNS names only; connect by name, or use verify=peer)");
    }
    bool auth = is_auth_failure(tc) || is_auth_failure(rc) ||
                sasl_refused(pn_event_transport(e));
    if (auth && !is_auth_failure(tc) && !is_auth_failure(rc))
        amqp10_textf(why, sizeof why, "authentication failed (SASL outcome: auth)");
    else if (!auth && t->start_cut)
        amqp10_textf(why, sizeof why, "no answer within the start timeout");
    t->start_cut_seen |= t->start_cut;
    t->start_cut = false;
    /* A certificate the client does not trust stays untrusted: no retry
     * during start (later, a reconnect keeps trying: it may be a broker's
     * certificate being replaced). */
    bool cert = t->opt.tls && strstr(why, "SSL Failure") && strstr(why, "certificate");
    int64_t now = ewi_now_ms();

    /* Forget every proton object of this connection: proton frees them
     * when this batch is done. */
    pthread_mutex_lock(&t->mu);
    t->conn_live = NULL;
    amqp10_state was = t->state;
    bool stopping = t->stopping;
    if (was == AMQP10_ST_UP)
        t->down_since = now;
    pthread_mutex_unlock(&t->mu);
    t->conn = NULL;
    t->connected = false;
    t->tick_due = false; /* its wake-up went with it */
    t->stuck_since = 0;
    amqp10_send_disconnected(t);
    amqp10_recv_disconnected(t);
    amqp10_fetch_disconnect_all(t, why, false);

    if (stopping || t->closing) {
        t->exit_now = true;
        return;
    }
    if (was == AMQP10_ST_CONNECTING) {
        bool give_up = auth || cert || now >= t->start_deadline - 60;
        char text[700];
        amqp10_textf(text, sizeof text, "%s to %s: %s",
                 auth ? "authentication refused" : "cannot connect", t->where, why);
        if (give_up) {
            pthread_mutex_lock(&t->mu);
            t->start_err = auth ? EW_EAUTH : cert ? EW_ETLS : EW_ECONNECT;
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
    if (was == AMQP10_ST_UP)
        ewi_report(t->m, auth ? EW_EAUTH : EW_EDISCONNECTED, NULL, NULL, NULL,
                   "amqp %s: connection lost: %s; reconnecting (backoff up to %ld ms)",
                   t->where, why, t->opt.reconnect_max_ms);
    else
        ewi_log(t->m, auth ? EW_LOG_ERROR : EW_LOG_INFO,
                "amqp %s: reconnect failed: %s; next try in %lld ms", t->where, why,
                (long long)(t->rc.next_ms - now));
}

static void reconnect_if_due(ewi_transport *t, int64_t now)
{
    if (t->conn || !t->reconnect_planned || ewi_reconnect_wait_ms(&t->rc, now) > 0 ||
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
    if (!connect_now(t))
        schedule_reconnect(t, now, false);
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
    /* The proactor checks the idle timeout when the socket moves; with the
     * socket blocked both ways (a frozen network) it can be late by many
     * seconds. Check it on every tick too (in the connection's batch). */
    if (t->conn && t->opt.heartbeat_ms > 0)
        pn_transport_tick(pn_connection_transport(t->conn), pn_proactor_now_64());
    process_work(t);
    amqp10_send_expire(t, now);
    if (amqp10_is_up(t))
        amqp10_recv_tick(t, now);
    if (t->closing && t->conn && now >= t->close_deadline) {
        pn_proactor_disconnect(t->proactor, NULL);
        t->close_deadline = now + CLOSE_GRACE_MS;
    }
    pthread_mutex_lock(&t->mu);
    bool start_over = t->state == AMQP10_ST_CONNECTING && now >= t->start_deadline;
    pthread_mutex_unlock(&t->mu);
    /* Past start's deadline no new attempt: (proton 0.37 also hangs a
     * connection disconnected in the batch that made it). */
    if (!start_over)
        reconnect_if_due(t, now);
    pthread_mutex_lock(&t->mu);
    if (start_over && !t->conn) {
        t->start_err = EW_ECONNECT;
        t->state = AMQP10_ST_FAILED;
        if (!t->last_error[0])
            amqp10_textf(t->last_error, sizeof t->last_error, "no answer from %s", t->where);
        pthread_cond_broadcast(&t->cond);
        t->exit_now = true;
    }
    pthread_mutex_unlock(&t->mu);
    /* A broker that accepts the socket but never answers (or, like
     * RabbitMQ, delays its refusal of a login): the timer's batch drops
     * the connection (see cut_start). */
}

/* In the timer's batch: past start's deadline, drop the connection that
 * has not opened. Not in the connection's own batch: proton 0.37 then
 * leaves the connection's transport behind, never freed. */
static void cut_start(ewi_transport *t)
{
    pthread_mutex_lock(&t->mu);
    bool start_over = t->state == AMQP10_ST_CONNECTING && ewi_now_ms() >= t->start_deadline;
    pthread_mutex_unlock(&t->mu);
    if (start_over && t->conn && !t->closing && !t->start_cut) {
        t->start_cut = true;
        pn_proactor_disconnect(t->proactor, NULL);
    }
}

/* In the timer's batch while a connection exists, with nothing of proton's
 * touched: sends past their deadline fail, and a connection that neither
 * closes nor takes its wake-ups (proton can leave one stuck) does not hold
 * start or stop forever. */
static void watchdog(ewi_transport *t)
{
    int64_t now = ewi_now_ms();
    amqp10_send_expire(t, now); /* lists and done callbacks only */
    if (!t->tick_due) {
        t->stuck_since = 0;
        return;
    }
    if (!t->stuck_since)
        t->stuck_since = now;
    pthread_mutex_lock(&t->mu);
    bool starting = t->state == AMQP10_ST_CONNECTING;
    bool give_up = (starting && now >= t->start_deadline + STUCK_MS) ||
                   (t->closing && now >= t->close_deadline + STUCK_MS) ||
                   (!starting && now - t->stuck_since >= 2 * CLOSE_GRACE_MS + STUCK_MS);
    pthread_mutex_unlock(&t->mu);
    if (!give_up) {
        if (now - t->stuck_since >= STUCK_MS)
            pn_proactor_disconnect(t->proactor, NULL);
        return;
    }
    ewi_log(t->m, EW_LOG_WARN,
            "amqp %s: the connection answers nothing for %lld ms (not even a "
            "disconnect); dropping it", t->where, (long long)(now - t->stuck_since));
    /* Forget it: proton frees it with the proactor. */
    pthread_mutex_lock(&t->mu);
    t->conn_live = NULL;
    pthread_mutex_unlock(&t->mu);
    t->conn = NULL;
    t->connected = false;
    t->tick_due = false;
    t->stuck_since = 0;
    amqp10_send_disconnected(t);
    amqp10_recv_disconnected(t);
    amqp10_fetch_disconnect_all(t, "the connection hung", false);
    if (t->closing || starting) {
        if (starting) {
            pthread_mutex_lock(&t->mu);
            t->start_err = EW_ECONNECT;
            pthread_mutex_unlock(&t->mu);
            set_state(t, AMQP10_ST_FAILED, "the connection hung");
        }
        t->exit_now = true;
        return;
    }
    pthread_mutex_lock(&t->mu);
    bool was_up = t->state == AMQP10_ST_UP;
    pthread_mutex_unlock(&t->mu);
    set_state(t, AMQP10_ST_DOWN, "the connection hung");
    schedule_reconnect(t, now, was_up);
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
    case PN_SESSION_REMOTE_CLOSE: {
        pn_session_t *ssn = pn_event_session(e);
        pn_link_t *l = pn_session_get_context(ssn);
        if (l)
            on_link_gone(t, l, pn_session_remote_condition(ssn));
        if (pn_session_state(ssn) & PN_LOCAL_ACTIVE)
            pn_session_close(ssn);
        /* Closed at both ends: free it (with its links and deliveries) now,
         * not when the connection goes, or every re-attach and every dead-
         * letter read would leave one behind. */
        pn_session_free(ssn);
        break;
    }
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
    case PN_CONNECTION_WAKE:
        process_work(t);
        if (t->tick_due) {
            t->tick_due = false;
            t->stuck_since = 0;
            tick(t);
        }
        break;
    case PN_TRANSPORT_ERROR: {
        /* The broker went silent past our idle timeout. proton still tries
         * to write a close frame first; over a dead path whose socket buffer
         * is full that never ends, so drop the socket now. */
        pn_condition_t *c = pn_transport_condition(pn_event_transport(e));
        const char *d = pn_condition_is_set(c) ? pn_condition_get_description(c) : NULL;
        if (t->conn && pn_event_connection(e) == t->conn && d && strstr(d, "idle-timeout"))
            pn_proactor_disconnect(t->proactor, NULL);
        break;
    }
    case PN_TRANSPORT_CLOSED:
        on_transport_closed(t, e);
        process_work(t);
        break;
    case PN_PROACTOR_INTERRUPT:
        if (!t->conn)
            process_work(t);
        else
            pn_connection_wake(t->conn);
        break;
    case PN_PROACTOR_TIMEOUT:
        if (!t->exit_now)
            pn_proactor_set_timeout(t->proactor, TICK_MS);
        if (t->conn) {
            /* Touch proton objects only in the connection's own batch. */
            cut_start(t);
            watchdog(t);
            t->tick_due = true;
            pn_connection_wake(t->conn);
        } else {
            tick(t);
        }
        break;
    default:
        break;
    }
}

/* ---- the thread --------------------------------------------------------- */

/* End of a batch of the connection: take the work that arrived meanwhile
 * (posters did not wake us), a few rounds at most so that the proactor gets
 * to write; what is left then gets a wake of its own. */
static void drain_tail(ewi_transport *t)
{
    if (t->conn) {
        amqp10_send_continue(t);
        if (t->stream_wake) {
            /* After this batch proton frames the chunk; then the next. */
            t->stream_wake = false;
            pn_connection_wake(t->conn);
        }
    }
    for (int round = 0;; round++) {
        pthread_mutex_lock(&t->mu);
        bool more = ewi_workq_pending(&t->work);
        if (!more || round == 4 || !t->conn || t->exit_now) {
            t->io_busy = false;
            if (more && t->conn_live)
                pn_connection_wake(t->conn_live);
            else if (more)
                pn_proactor_interrupt(t->proactor);
            pthread_mutex_unlock(&t->mu);
            return;
        }
        pthread_mutex_unlock(&t->mu);
        process_work(t);
    }
}

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
    t->conn_live = NULL;
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

void *amqp10_io_main(void *arg)
{
    ewi_transport *t = arg;
    ewi_reconnect_init(&t->rc, 100, (int)t->opt.reconnect_max_ms);
    pn_proactor_set_timeout(t->proactor, TICK_MS);
    if (!connect_now(t))
        schedule_reconnect(t, ewi_now_ms(), false);
    while (!t->exit_now) {
        pn_event_batch_t *b = pn_proactor_wait(t->proactor);
        pn_event_t *e;
        bool conn_batch = false;
        while ((e = pn_event_batch_next(b))) {
            if (!conn_batch && t->conn && pn_event_connection(e) == t->conn) {
                conn_batch = true;
                pthread_mutex_lock(&t->mu);
                t->io_busy = true;
                pthread_mutex_unlock(&t->mu);
            }
            handle(t, e);
        }
        if (conn_batch)
            drain_tail(t);
        pn_proactor_done(t->proactor, b);
    }
    if (t->start_cut_seen) {
        /* A connection we dropped at start's deadline: proton 0.37 frees it
         * only in a later wait, and pn_proactor_free misses it. One round
         * (until the next timer event) lets it go. */
        pn_proactor_set_timeout(t->proactor, 1);
        for (bool timer = false; !timer;) {
            pn_event_batch_t *b = pn_proactor_wait(t->proactor);
            for (pn_event_t *e; (e = pn_event_batch_next(b));)
                timer |= pn_event_type(e) == PN_PROACTOR_TIMEOUT;
            pn_proactor_done(t->proactor, b);
        }
    }
    pn_proactor_cancel_timeout(t->proactor);
    if (t->conn) {
        /* start gave up or stop timed out: drop the socket now. */
        pthread_mutex_lock(&t->mu);
        t->conn_live = NULL;
        pthread_mutex_unlock(&t->mu);
        pn_proactor_disconnect(t->proactor, NULL);
        t->conn = NULL;
    }
    finish(t);
    return NULL;
}
