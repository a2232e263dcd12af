/* The artemis dialect's questions to the broker's management address.
 *
 * Artemis creates the queue a link names by its fully qualified name E::Q
 * when it is missing (address settings auto-create-queues, on in the
 * configuration that `artemis create` writes and eventwire's tests use), and
 * AMQP has no passive attach. A send to a listener that does not exist would
 * create its queue, which then collects every event E for ever; and a queue
 * created by an attach is never deleted (auto-delete is off: listener queues
 * must keep collecting while their listener is away). So this dialect asks
 * the management address (activemq.management; the user needs the "manage"
 * permission, which `artemis create` gives its role amq):
 *   - before a send to one listener, whether that listener's queue exists on
 *     address E (attribute "address" of resource queue.<Q>);
 *   - before a per_process listener attaches, to create its queue with
 *     auto-delete, so that the broker deletes it per_process_expires_ms after
 *     its last consumer left (createQueue, ignoring an existing queue);
 *   - when ew_unlisten deletes a per_process listener's queue, to destroy it
 *     now (destroyQueue, removing its consumers).
 * The answer comes to a reply address of the request's own
 * (ew.reply.<pid>-<ms>-<n>: a volatile subscription that goes with its link)
 * and is read from the answer's body, a JSON array. */
#include "amqp10.h"
#include "transports/artemis/artm.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { REPLY_MAX = 2048 };

typedef struct mgmt_req {
    ewi_pub pub;       /* first: done() gets it */
    const char *const *props;
    const char *body;
    const char *reply_to;
    const char *event;
    int64_t deadline;
    bool done;
    int err;
    char detail[300];
} mgmt_req;

static void req_done(ewi_pub *p, int err, const char *detail)
{
    mgmt_req *r = (mgmt_req *)p;
    ewi_transport *t = p->user;
    pthread_mutex_lock(&t->mu);
    r->done = true;
    r->err = err;
    amqp10_textf(r->detail, sizeof r->detail, "%s", detail ? detail : "");
    pthread_cond_broadcast(&t->cond);
    pthread_mutex_unlock(&t->mu);
}

/* Sends the request to activemq.management and waits for its outcome. */
static ew_err send_request(ewi_transport *t, void *arg)
{
    mgmt_req *r = arg;
    amqp10_out *o = calloc(1, sizeof *o);
    if (!o)
        return EW_ENOMEM;
    ew_err rc = amqp10_mgmt_encode(r->props, r->reply_to, r->body, &o->bytes, &o->len);
    if (rc != EW_OK) {
        free(o);
        return rc;
    }
    amqp10_textf(o->target.addr, sizeof o->target.addr, "activemq.management");
    o->target.cap = AMQP10_CAP_NONE;
    r->pub = (ewi_pub){.dest = EWI_DEST_EVENT, .event = r->event, .deadline_ms = r->deadline,
                       .done = req_done, .user = t};
    o->pub = &r->pub;
    o->w.kind = AMQP10_W_PUB;
    pthread_mutex_lock(&t->mu);
    /* A management request holds a slot of the send window like a send
     * (its completion gives it back), and waits for room the same way. */
    rc = t->stopping || t->io_exited ? EW_ECLOSED
                                     : ewi_window_take(&t->window, &t->mu, r->deadline, 0);
    if (rc != EW_OK) {
        pthread_mutex_unlock(&t->mu);
        free(o->bytes);
        free(o);
        return rc;
    }
    amqp10_post_locked(t, &o->w);
    while (!r->done)
        pthread_cond_wait(&t->cond, &t->mu);
    /* No outcome is a timeout, never in doubt: no event of the
     * application's was written. */
    rc = r->err == EW_EINDOUBT ? EW_ETIMEDOUT : (ew_err)r->err;
    pthread_mutex_unlock(&t->mu);
    return rc;
}

/* One request: props and body, answer's body into reply. */
static ew_err manage(ewi_transport *t, const char *event, const char *const *props,
                     const char *body, int64_t deadline, char *reply, size_t replylen,
                     char *err, size_t errlen)
{
    static _Atomic unsigned long seq;
    char dest[96];
    amqp10_textf(dest, sizeof dest, "ew.reply.%ld-%lld-%lu", (long)getpid(),
               (long long)ewi_now_ms(), atomic_fetch_add(&seq, 1));
    amqp10_addr src = {.cap = AMQP10_CAP_TOPIC};
    amqp10_textf(src.addr, sizeof src.addr, "%s", dest);
    mgmt_req r = {.props = props, .body = body, .reply_to = dest, .event = event,
                  .deadline = deadline};
    ew_err rc = amqp10_fetch_reply(t, &src, send_request, &r, deadline, reply, replylen,
                                 err, errlen);
    if (rc != EW_OK && !err[0])
        amqp10_textf(err, errlen, "%s%s%s", ew_strerror(rc), r.detail[0] ? ": " : "",
                   r.detail);
    return rc;
}

static ew_err check_exists(ewi_transport *t, const amqp10_decl *d, int64_t deadline,
                           char *err, size_t errlen)
{
    artm_req q;
    artm_ask_address(&q, d->queue);
    char reply[REPLY_MAX], why[512] = "";
    ew_err rc = manage(t, d->event, q.props, NULL, deadline, reply, sizeof reply, why,
                       sizeof why);
    if (rc != EW_OK) {
        amqp10_textf(err, errlen, "asking the broker's management whether queue %s exists: %s",
                   d->queue, why);
        return rc;
    }
    rc = artm_address_is(reply, d->event);
    if (rc != EW_OK)
        amqp10_textf(err, errlen, "queue %s does not exist on address %s (%s)", d->queue,
                   d->event, reply);
    return rc;
}

static ew_err create_per_process(ewi_transport *t, const amqp10_decl *d, int64_t deadline,
                                 char *err, size_t errlen)
{
    artm_req q;
    if (artm_ask_create(&q, d->queue, d->event, d->durable, t->opt.expires_ms) != EW_OK)
        return EW_ENOMEM;
    char reply[REPLY_MAX], why[512] = "";
    ew_err rc = manage(t, d->event, q.props, q.body, deadline, reply, sizeof reply, why,
                       sizeof why);
    artm_req_free(&q);
    if (rc == EW_OK && (rc = artm_created(reply)) != EW_OK)
        amqp10_textf(why, sizeof why, "%s", reply);
    if (rc != EW_OK)
        amqp10_textf(err, errlen, "creating the per_process queue %s through the broker's "
                   "management failed: %s", d->queue, why);
    return rc;
}

ew_err amqp10_artemis_ensure(ewi_transport *t, const amqp10_decl *d, int64_t deadline,
                           char *err, size_t errlen)
{
    if (d->kind == AMQP10_DECL_EXISTS)
        return check_exists(t, d, deadline, err, errlen);
    if (d->kind == AMQP10_DECL_LISTENER && d->per_process)
        return create_per_process(t, d, deadline, err, errlen);
    return EW_OK;
}

ew_err amqp10_artemis_destroy(ewi_transport *t, const char *event, const char *queue,
                              int64_t deadline, char *err, size_t errlen)
{
    artm_req q;
    if (artm_ask_destroy(&q, queue) != EW_OK)
        return EW_ENOMEM;
    char reply[REPLY_MAX], why[512] = "";
    ew_err rc = manage(t, event, q.props, q.body, deadline, reply, sizeof reply, why,
                       sizeof why);
    artm_req_free(&q);
    if (rc != EW_OK) {
        amqp10_textf(err, errlen, "destroying queue %s through the broker's management: %s",
                     queue, why);
        return rc;
    }
    rc = artm_destroyed(reply, why, sizeof why);
    if (rc != EW_OK)
        amqp10_textf(err, errlen, "destroying queue %s through the broker's management "
                     "failed: %s", queue, why);
    return rc;
}
