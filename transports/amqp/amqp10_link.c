/* Helpers shared by the I/O loop (amqp10_io.c) and its halves (amqp10_send.c,
 * amqp10_recv.c, amqp10_fetch.c): opening and closing links, reading a
 * delivery's bytes, condition texts, and the work queue other threads post
 * to. None of them decides anything about the connection: that is the
 * loop's, so these files never call back into it. */
#include "amqp10.h"

#include <stdlib.h>
#include <string.h>

#include <proton/connection.h>
#include <proton/delivery.h>
#include <proton/link.h>
#include <proton/session.h>
#include <proton/terminus.h>

/* Bounded session buffering (with the transport's max frame). */
#define SESSION_CAPACITY (2u << 20)

void amqp10_condition_text(pn_condition_t *c, const char *fallback, char *buf,
                         size_t len)
{
    if (c && pn_condition_is_set(c)) {
        const char *name = pn_condition_get_name(c);
        const char *desc = pn_condition_get_description(c);
        amqp10_textf(buf, len, "%s%s%s", name ? name : "error", desc ? ": " : "",
                 desc ? desc : "");
    } else {
        amqp10_textf(buf, len, "%s", fallback);
    }
}

static void set_caps(pn_terminus_t *term, amqp10_cap cap)
{
    if (cap == AMQP10_CAP_NONE)
        return;
    const char *s = cap == AMQP10_CAP_TOPIC ? "topic" : "queue";
    pn_data_t *d = pn_terminus_capabilities(term);
    pn_data_put_array(d, false, PN_SYMBOL);
    pn_data_enter(d);
    pn_data_put_symbol(d, pn_bytes(strlen(s), s));
    pn_data_exit(d);
}

/* A session for one more link: a shared one with room, else an empty one
 * (kept from links gone), else a new one. */
static amqp10_ssn *ssn_for(ewi_transport *t, bool sender, bool alone)
{
    amqp10_ssn *empty = NULL;
    for (amqp10_ssn *x = t->ssns; x; x = x->next) {
        if (x->sender != sender || x->retired)
            continue;
        if (!alone && !x->alone && x->links < AMQP10_LINKS_PER_SESSION)
            return x;
        if (!x->links && !empty)
            empty = x;
    }
    if (empty) {
        empty->alone = alone;
        return empty;
    }
    amqp10_ssn *x = calloc(1, sizeof *x);
    if (!x)
        return NULL;
    x->ssn = pn_session(t->conn);
    x->sender = sender;
    x->alone = alone;
    /* Bounded session buffering (with the transport's max frame): the
     * broker sends at most this much before proton has handed it to us,
     * so a large message never sits whole in proton's buffers. */
    pn_session_set_incoming_capacity(x->ssn, SESSION_CAPACITY);
    pn_session_set_context(x->ssn, x);
    pn_session_open(x->ssn);
    /* Sessions retired earlier end now, after this one took a channel
     * number of its own: a number they free is not given again at once. */
    for (amqp10_ssn *r = t->ssns; r; r = r->next)
        if (r->retired && (pn_session_state(r->ssn) & PN_LOCAL_ACTIVE))
            pn_session_close(r->ssn);
    x->next = t->ssns;
    t->ssns = x;
    return x;
}

static void ssn_unlink(ewi_transport *t, amqp10_ssn *x)
{
    for (amqp10_ssn **pp = &t->ssns; *pp; pp = &(*pp)->next)
        if (*pp == x) {
            *pp = x->next;
            return;
        }
}

pn_link_t *amqp10_open_link(ewi_transport *t, bool sender, const amqp10_addr *a,
                          void *ctx, bool alone)
{
    char name[AMQP10_ADDR_MAX + 48];
    uint64_t id = ++t->next_link_id;
    amqp10_textf(name, sizeof name, "%s-%llu-%s", sender ? "ew-send" : "ew-recv",
             (unsigned long long)id, a->addr);
    amqp10_ssn *x = ssn_for(t, sender, alone);
    /* Out of memory for the record: a session of its own that nobody
     * counts (it ends with the connection). */
    pn_session_t *ssn = x ? x->ssn : pn_session(t->conn);
    if (!x) {
        pn_session_set_incoming_capacity(ssn, SESSION_CAPACITY);
        pn_session_open(ssn);
    } else {
        x->links++;
    }
    pn_link_t *l = sender ? pn_sender(ssn, name) : pn_receiver(ssn, name);
    pn_terminus_t *term = sender ? pn_link_target(l) : pn_link_source(l);
    pn_terminus_set_address(term, a->addr);
    set_caps(term, a->cap);
    pn_link_set_snd_settle_mode(l, PN_SND_UNSETTLED);
    pn_link_set_rcv_settle_mode(l, PN_RCV_FIRST);
    pn_link_set_context(l, ctx);
    pn_link_open(l);
    return l;
}

static void close_link(pn_link_t *l, bool retire)
{
    amqp10_ssn *x = pn_session_get_context(pn_link_session(l));
    pn_link_close(l);
    /* Its last link gone, a shared session is kept for the next link:
     * ending it would free its channel number for proton to give the next
     * new session at once, and RabbitMQ, which ends a session
     * asynchronously, would take that session's frames for the old one
     * ("no such handle"). A session of one link only (a sender, a
     * dead-letter read) is retired instead: RabbitMQ keeps what a closed
     * link had not settled with its session, and a next link on the same
     * session and handle got nothing; it ends when the next one of its
     * kind begins (then RabbitMQ gives back what it held). */
    if (x && x->links)
        x->links--;
    if (x && x->alone && !x->links && retire)
        x->retired = true;
}

void amqp10_close_link(ewi_transport *t, pn_link_t *l)
{
    (void)t;
    if (!l)
        return;
    pn_link_set_context(l, NULL);
    close_link(l, true);
}

void amqp10_close_link_waiting(ewi_transport *t, pn_link_t *l)
{
    (void)t;
    if (l)
        close_link(l, true);
}

bool amqp10_ssn_end_then(ewi_transport *t, pn_link_t *l,
                         void (*fn)(ewi_transport *t, void *arg), void *arg)
{
    (void)t;
    amqp10_ssn *x = l ? pn_session_get_context(pn_link_session(l)) : NULL;
    if (!x || !x->retired || x->links || x->on_end ||
        !(pn_session_state(x->ssn) & PN_LOCAL_ACTIVE))
        return false;
    x->on_end = fn;
    x->on_end_arg = arg;
    x->end_by = ewi_now_ms() + AMQP10_ANSWER_MS;
    pn_session_close(x->ssn);
    return true;
}

void amqp10_ssn_tick(ewi_transport *t, int64_t now)
{
    for (amqp10_ssn *x = t->ssns; x; x = x->next) {
        if (!x->on_end || now < x->end_by)
            continue;
        void (*fn)(ewi_transport *, void *) = x->on_end;
        x->on_end = NULL;
        ewi_log(t->m, EW_LOG_WARN,
                "amqp %s: the broker did not answer the end of a session in %d ms; going on",
                t->where, AMQP10_ANSWER_MS);
        fn(t, x->on_end_arg);
    }
}

unsigned amqp10_ssn_ended(ewi_transport *t, pn_session_t *ssn)
{
    amqp10_ssn *x = pn_session_get_context(ssn);
    if (!x)
        return 0;
    unsigned n = x->links;
    if (x->on_end)
        x->on_end(t, x->on_end_arg);
    ssn_unlink(t, x);
    pn_session_set_context(ssn, NULL);
    free(x);
    return n;
}

void amqp10_ssn_forget_all(ewi_transport *t)
{
    for (amqp10_ssn *x = t->ssns, *n; x; x = n) {
        n = x->next;
        if (x->on_end)
            x->on_end(t, x->on_end_arg);
        pn_session_set_context(x->ssn, NULL);
        free(x);
    }
    t->ssns = NULL;
}

/* Incoming messages are read as their frames arrive, into the link's own
 * buffer: proton then never holds more than a frame or so per delivery.
 * (proton keeps finished deliveries in a per-connection pool with their
 * buffers' capacity: a 10 MB message read at once would pin 16 MB in that
 * pool for the connection's life, one more each time it happens while the
 * big one is still in use.) */
int amqp10_acc_read(amqp10_acc *a, pn_delivery_t *d)
{
    pn_link_t *l = pn_delivery_link(d);
    if (pn_delivery_aborted(d)) {
        amqp10_acc_reset(a);
        pn_delivery_settle(d);
        pn_link_advance(l);
        return -1;
    }
    for (;;) {
        size_t more = pn_delivery_pending(d);
        if (!more)
            break;
        if (a->len + more > a->cap) {
            size_t cap = a->cap ? a->cap : 4096;
            while (cap < a->len + more)
                cap *= 2;
            char *nb = realloc(a->buf, cap);
            if (!nb) {
                amqp10_acc_reset(a);
                return -2;
            }
            a->buf = nb;
            a->cap = cap;
        }
        ssize_t r = pn_link_recv(l, a->buf + a->len, a->cap - a->len);
        if (r == PN_EOS || r == 0)
            break;
        if (r < 0) {
            amqp10_acc_reset(a);
            return -2;
        }
        a->len += (size_t)r;
    }
    if (pn_delivery_partial(d))
        return 0;
    pn_link_advance(l);
    return 1;
}

char *amqp10_acc_take(amqp10_acc *a, size_t *len)
{
    char *buf = a->buf ? a->buf : malloc(1);
    *len = a->len;
    a->buf = NULL;
    a->len = a->cap = 0;
    return buf;
}

const char *amqp10_acc_bytes(const amqp10_acc *a, size_t *len)
{
    *len = a->len;
    return a->buf ? a->buf : "";
}

/* A buffer up to this size serves the link's next delivery rather than a
 * malloc and free per message; a larger one is let go. */
#define ACC_KEEP (16u << 10)

void amqp10_acc_done(amqp10_acc *a)
{
    if (a->cap > ACC_KEEP) {
        amqp10_acc_reset(a);
        return;
    }
    a->len = 0;
}

void amqp10_acc_reset(amqp10_acc *a)
{
    free(a->buf);
    a->buf = NULL;
    a->len = a->cap = 0;
}

bool amqp10_is_up(ewi_transport *t)
{
    return t->conn && t->connected && !t->closing;
}

/* ---- the work queue ----------------------------------------------------- */

/* The first push of a batch wakes the I/O thread's poll(); it takes the
 * whole queue at once. */
void amqp10_work_init(ewi_transport *t)
{
    ewi_workq_init(&t->work, &t->waker);
}

void amqp10_post_locked(ewi_transport *t, amqp10_work *w)
{
    (void)ewi_workq_push(&t->work, &w->link);
}

void amqp10_post(ewi_transport *t, amqp10_work *w)
{
    pthread_mutex_lock(&t->mu);
    amqp10_post_locked(t, w);
    pthread_mutex_unlock(&t->mu);
}
