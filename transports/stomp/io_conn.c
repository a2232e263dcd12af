/* The STOMP I/O thread's connection lifecycle: connect (TCP, TLS), CONNECT
 * and the broker's CONNECTED (heart-beats, version), resubscribe every
 * listener and resend what was unconfirmed, and drop a connection (what was
 * in flight goes back in line or fails). */
#include "transports/stomp/io.h"
#include "transports/rmqadmin/rmqadmin.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- connection ------------------------------------------------------------ */

const char *stomp_io_role_name(const io *s)
{
    return s->role == STOMP_PUB ? "publishing" : "consuming";
}

void stomp_io_set_state(io *s, stomp_state st, ew_err code, const char *why)
{
    ewi_transport *t = s->t;
    pthread_mutex_lock(&t->mu);
    t->state[s->role] = st;
    if (code != EW_OK) {
        t->last_code = code;
        snprintf(t->last_error, sizeof t->last_error, "%s", why);
    }
    if (st == ST_UP)
        t->ever_up = true;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

void stomp_io_drop(io *s, ew_err code, const char *why)
{
    ewi_transport *t = s->t;
    bool was_up = t->state[s->role] == ST_UP;
    ewi_sock_close(s->sock);
    s->sock = NULL;
    ewi_stomp_parser_reset(s->parser);
    s->out.len = s->out_off = 0;
    /* Unreceipted SENDs go back to the head of the queue, in order. */
    if (s->infl_head) {
        stomp_pending *keep = NULL, **kt = &keep;
        for (stomp_pending *pd = s->infl_head, *next; pd; pd = next) {
            next = pd->next;
            pd->next = NULL;
            if (pd->error_sends >= MAX_ERROR_RESENDS) {
                stomp_io_complete_pub(t, pd, EW_EBROKER, why);
                continue;
            }
            *kt = pd;
            kt = &pd->next;
        }
        pthread_mutex_lock(&t->mu);
        if (keep) {
            *kt = t->pend_head;
            if (!t->pend_head) {
                t->pend_tail = keep;
                while (t->pend_tail->next)
                    t->pend_tail = t->pend_tail->next;
            }
            t->pend_head = keep;
        }
        pthread_mutex_unlock(&t->mu);
        s->infl_head = s->infl_tail = NULL;
    }
    if (s->role == STOMP_SUB) {
        for (stomp_sub *ss = t->subs; ss; ss = ss->next) {
            if (ss->sub && !ss->closing)
                ewi_sub_state(ss->sub, false);
            ss->active = false;
            ss->recycle = false; /* the closed connection gave them back */
        }
        /* Dead letters read on the lost connection come again on the new
         * one; taken now, their ACKs would be dropped (duplicates). */
        pthread_mutex_lock(&t->mu);
        for (stomp_sub *ss = t->subs; ss; ss = ss->next)
            if (!ss->sub)
                stomp_io_free_dlq_queue(ss);
        pthread_mutex_unlock(&t->mu);
        /* Closing subscriptions whose messages are all settled can go now. */
        for (stomp_sub *ss = t->subs, *next; ss; ss = next) {
            next = ss->next;
            stomp_io_sub_check(s, ss);
        }
    } else if (t->topo) {
        rmqa_forget_checks(t->topo);
    }
    stomp_io_set_state(s, ST_DOWN, code, why);
    if (was_up)
        ewi_conn_state(t->m, (unsigned)s->role, false);
    if (was_up)
        ewi_report(t->m, EW_EDISCONNECTED, NULL, NULL, NULL,
                   "STOMP %s connection to %s lost: %s; reconnecting", stomp_io_role_name(s),
                   t->url_text, why);
    /* A connection that lived a while starts the backoff over; one that
     * the broker closes at once (a refused frame) keeps it growing. */
    ewi_reconnect_lost(&s->rc, ewi_now_ms());
}

/* Waits for the CONNECTED frame; false with the reason. */
static bool handshake(io *s, int64_t deadline, ew_err *code, char *why, size_t whylen)
{
    ewi_transport *t = s->t;
    const stomp_options *o = &t->opt;
    char hb[32];
    snprintf(hb, sizeof hb, "%d,%d", o->heartbeat_ms, o->heartbeat_ms);
    ewi_stomp_writer w;
    ewi_stomp_write_begin(&w, &s->out, EWI_STOMP_CONNECT);
    ewi_stomp_write_header(&w, "accept-version", "1.2");
    ewi_stomp_write_header(&w, "host", o->vhost);
    if (o->login)
        ewi_stomp_write_header(&w, "login", o->login);
    if (o->passcode)
        ewi_stomp_write_header(&w, "passcode", o->passcode);
    ewi_stomp_write_header(&w, "heart-beat", hb);
    if (ewi_stomp_write_end(&w, NULL, 0, false) != EW_OK) {
        *code = EW_EINVAL;
        snprintf(why, whylen, "cannot write CONNECT");
        return false;
    }
    *code = EW_ECONNECT;
    int fd = ewi_sock_fd(s->sock);
    for (;;) {
        if (!stomp_io_flush_out(s, why, whylen))
            return false;
        int left = ewi_left_ms(deadline);
        if (left <= 0) {
            snprintf(why, whylen, "no CONNECTED frame from %s within %d ms", t->url_text,
                     o->connect_timeout_ms);
            return false;
        }
        struct pollfd p = {.fd = fd, .events = POLLIN | (stomp_io_out_pending(s) ? POLLOUT : 0)};
        if (!ewi_sock_pending(s->sock) && poll(&p, 1, left) < 0 && errno != EINTR) {
            snprintf(why, whylen, "poll: %s", strerror(errno));
            return false;
        }
        bool ww;
        long n = ewi_sock_read(s->sock, s->rbuf, sizeof s->rbuf, &ww, why, whylen);
        if (n < 0) {
            /* RabbitMQ may close right after its ERROR; the reason was read. */
            return false;
        }
        size_t off = 0;
        while (off < (size_t)n) {
            size_t used;
            ewi_stomp_status st = ewi_stomp_parse(s->parser, s->rbuf + off,
                                                  (size_t)n - off, &used);
            off += used;
            if (st == EWI_STOMP_MORE)
                break;
            if (st != EWI_STOMP_FRAME) {
                *code = EW_EPROTO;
                snprintf(why, whylen, "protocol error in the broker's answer to CONNECT: %s",
                         ewi_stomp_parser_error(s->parser));
                return false;
            }
            ewi_stomp_frame *f = ewi_stomp_parser_take(s->parser);
            if (f->cmd == EWI_STOMP_ERROR) {
                char text[400];
                stomp_error_text(f, text, sizeof text);
                ewi_stomp_frame_free(f);
                /* RabbitMQ and ActiveMQ answer a bad login or vhost so. */
                *code = EW_EAUTH;
                snprintf(why, whylen, "%s refused the connection: %s", t->url_text, text);
                return false;
            }
            if (f->cmd != EWI_STOMP_CONNECTED) {
                snprintf(why, whylen, "expected CONNECTED, got %s",
                         ewi_stomp_cmd_name(f->cmd));
                ewi_stomp_frame_free(f);
                *code = EW_EPROTO;
                return false;
            }
            const char *version = ewi_stomp_frame_get(f, "version");
            if (!version || strcmp(version, "1.2") != 0) {
                snprintf(why, whylen, "%s does not speak STOMP 1.2 (version %s)",
                         t->url_text, version ? version : "1.0");
                ewi_stomp_frame_free(f);
                *code = EW_EPROTO;
                return false;
            }
            ew_err rc = stomp_heartbeat_negotiate(o->heartbeat_ms, o->heartbeat_ms,
                                                  ewi_stomp_frame_get(f, "heart-beat"),
                                                  &s->hb);
            ewi_stomp_frame_free(f);
            if (rc != EW_OK) {
                snprintf(why, whylen, "malformed heart-beat header in CONNECTED");
                *code = EW_EPROTO;
                return false;
            }
            return true;
        }
    }
}

/* A failure of the administration connection itself, which a later
 * attempt may cure (not a refusal of a declaration). */
static bool admin_transient(ew_err rc)
{
    return rc == EW_ECONNECT || rc == EW_ETIMEDOUT || rc == EW_EDISCONNECTED ||
           rc == EW_ENOMEM;
}

bool stomp_io_declare_sub(io *s, stomp_sub *ss, bool *transient)
{
    ewi_transport *t = s->t;
    *transient = false;
    if (!ss->admin_decl || !t->topo)
        return true;
    rmqa_decl d;
    if (ss->sub)
        d = (rmqa_decl){.kind = RMQA_LISTENER, .event = ss->sub->event,
                        .queue = ss->sub->queue, .durable = ss->sub->durable,
                        .expires_ms = ss->sub->per_process ? t->opt.expires_ms : 0,
                        .quorum = t->opt.quorum};
    else /* a dead-letter reader of /amq/queue/D */
        d = (rmqa_decl){.kind = RMQA_DLQ, .queue = ss->target.dest + strlen("/amq/queue/"),
                        .quorum = t->opt.quorum};
    char err[512];
    ew_err rc = rmqa_declare(t->topo, &d, err, sizeof err);
    if (rc == EW_OK)
        return true;
    if (admin_transient(rc)) {
        *transient = true;
        return false;
    }
    ewi_report(t->m, rc, ss->sub ? ss->sub->queue : NULL, ss->sub ? ss->sub->event : NULL,
               NULL, "%s", err);
    stomp_io_sub_refused(s, ss, true, err);
    return false;
}

/* The consuming connection, connected again: every subscription's queue
 * declared (rabbitmq with amqp_port) and subscribed. false when the
 * administration connection cannot be reached (the connect fails and is
 * retried). */
static bool resubscribe(io *s, char *why, size_t whylen, ew_err *code)
{
    ewi_transport *t = s->t;
    /* One pipelined pass for all; only when something was refused, each
     * queue on its own, to find which listener cannot subscribe. */
    bool each = false;
    if (t->topo && s->gen > 1) {
        char err[512];
        ew_err rc = rmqa_redeclare(t->topo, err, sizeof err);
        if (admin_transient(rc)) {
            *code = rc;
            snprintf(why, whylen, "%s", err);
            return false;
        }
        each = rc != EW_OK;
    }
    int64_t now = ewi_now_ms();
    for (stomp_sub *ss = t->subs; ss; ss = ss->next) {
        if (ss->closing || (ss->given_up && now < ss->retry_at))
            continue;
        /* A dead-letter reader's queue too, always: durable, it outlives a
         * restart, but it may have been deleted (one round trip each, and
         * there are few readers). */
        bool transient;
        if ((each || !ss->sub) && !stomp_io_declare_sub(s, ss, &transient)) {
            if (!transient)
                continue;
            *code = EW_ECONNECT;
            snprintf(why, whylen, "the AMQP 0-9-1 administration connection (amqp_port) "
                     "cannot be reached to declare %s again", ss->target.dest);
            return false;
        }
        ss->decl_wait = false;
        stomp_io_write_subscribe(s, ss);
    }
    return true;
}

/* One node of the URL: the socket and the CONNECT handshake. */
typedef struct node_try {
    io *s;
    bool final; /* the socket's refusal will not change (certificates) */
} node_try;

static ew_err connect_node(void *user, const ewi_url_host *h, char *why, size_t whylen)
{
    node_try *nt = user;
    io *s = nt->s;
    ewi_transport *t = s->t;
    const stomp_options *o = &t->opt;
    int64_t deadline = ewi_now_ms() + o->connect_timeout_ms;
    /* The certificate must name the host dialled: this node's. */
    ewi_sock_conf sc = {.host = h->host, .port = h->port, .tls = o->tls,
                        .ca_file = o->ca_file, .cert_file = o->cert_file,
                        .key_file = o->key_file,
                        .verify = !o->verify        ? EWI_VERIFY_NONE
                                  : o->verify_name ? EWI_VERIFY_NAME
                                                   : EWI_VERIFY_PEER};
    ew_err code;
    nt->final = false;
    s->sock = ewi_sock_open(&sc, o->connect_timeout_ms, &code, &nt->final, why, whylen);
    if (!s->sock)
        return nt->final || code == EW_ENOMEM ? code : EW_ECONNECT;
    ewi_stomp_parser_reset(s->parser);
    s->out.len = s->out_off = 0;
    if (!handshake(s, deadline, &code, why, whylen)) {
        ewi_sock_close(s->sock);
        s->sock = NULL;
        return code;
    }
    return EW_OK;
}

bool stomp_io_connect_once(io *s, char *why, size_t whylen, ew_err *code)
{
    ewi_transport *t = s->t;
    stomp_io_set_state(s, ST_CONNECTING, EW_OK, NULL);
    const stomp_options *o = &t->opt;
    /* One round over the nodes, from the one after the node this
     * connection was on. */
    node_try nt = {.s = s};
    *code = ewi_hosts_round(&o->hosts, &s->host_next, &s->host_cur, connect_node, &nt, why,
                            whylen);
    if (*code != EW_OK) {
        if (nt.final) {
            pthread_mutex_lock(&t->mu);
            t->last_final = true;
            t->last_code = *code;
            snprintf(t->last_error, sizeof t->last_error, "%s", why);
            pthread_mutex_unlock(&t->mu);
        }
        return false;
    }
    if (o->hosts.n > 1)
        ewi_log(t->m, EW_LOG_INFO, "%s: STOMP %s connection connected to node %s:%d (%zu of %zu)",
                t->url_text, stomp_io_role_name(s), o->hosts.v[s->host_cur].host,
                o->hosts.v[s->host_cur].port, s->host_cur + 1, o->hosts.n);
    /* A restarted broker lost the non-durable exchanges. */
    if (t->topo && s->role == STOMP_PUB && s->gen > 0) {
        char err[512];
        ew_err rc = rmqa_redeclare(t->topo, err, sizeof err);
        if (rc != EW_OK) {
            *code = rc;
            snprintf(why, whylen, "%s", err);
            return false;
        }
    }
    s->gen++;
    s->dropped_by_error = false;
    s->last_rx = s->last_tx = ewi_now_ms();
    /* Every listener again, in registration order does not matter. A
     * restarted broker lost the transient queues, and a queue deleted on
     * the broker took this connection with it (RabbitMQ's ERROR "Server
     * cancelled subscription"): declared again first. */
    if (s->role == STOMP_SUB && !resubscribe(s, why, whylen, code))
        return false;
    /* Resent SENDs were put back at the head of the queue: take_work adds
     * them before anything newer. */
    return true;
}

