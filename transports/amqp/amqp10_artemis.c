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

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

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
                                     : ewi_window_take(&t->window, &t->mu, r->deadline);
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

/* The first element of a management answer (a JSON array): a string, or
 * NULL (caller json_decref's *root). */
static const char *answer_first(const char *reply, json_t **root)
{
    *root = json_loads(reply, 0, NULL);
    return json_string_value(json_array_get(*root, 0));
}

/* createQueue's parameters: the queue's configuration as JSON text, and
 * ignoreIfExists. malloc'd, or NULL when out of memory. */
static char *create_params(const amqp10_decl *d, long delay_ms)
{
    json_t *cfg = json_pack("{s:s, s:s, s:s, s:b, s:b, s:I, s:I, s:b}", "name", d->queue,
                            "address", d->event, "routing-type", "MULTICAST", "durable",
                            d->durable, "auto-delete", 1, "auto-delete-delay",
                            (json_int_t)delay_ms, "auto-delete-message-count",
                            (json_int_t)-1, "auto-create-address", 1);
    char *text = cfg ? json_dumps(cfg, JSON_COMPACT) : NULL;
    json_decref(cfg);
    json_t *params = text ? json_pack("[s, b]", text, 1) : NULL;
    free(text);
    char *out = params ? json_dumps(params, JSON_COMPACT) : NULL;
    json_decref(params);
    return out;
}

static ew_err check_exists(ewi_transport *t, const amqp10_decl *d, int64_t deadline,
                           char *err, size_t errlen)
{
    char resource[EW_MAX_QUEUE_NAME + 16], reply[REPLY_MAX];
    amqp10_textf(resource, sizeof resource, "queue.%s", d->queue);
    const char *props[] = {"_AMQ_ResourceName", resource, "_AMQ_Attribute", "address", NULL};
    char why[512] = "";
    ew_err rc = manage(t, d->event, props, NULL, deadline, reply, sizeof reply, why,
                       sizeof why);
    if (rc != EW_OK) {
        amqp10_textf(err, errlen, "asking the broker's management whether queue %s exists: %s",
                   d->queue, why);
        return rc;
    }
    json_t *root;
    const char *address = answer_first(reply, &root);
    rc = address && strcmp(address, d->event) == 0 ? EW_OK : EW_ENOTFOUND;
    json_decref(root);
    if (rc != EW_OK)
        amqp10_textf(err, errlen, "queue %s does not exist on address %s (%s)", d->queue,
                   d->event, reply);
    return rc;
}

static ew_err create_per_process(ewi_transport *t, const amqp10_decl *d, int64_t deadline,
                                 char *err, size_t errlen)
{
    char reply[REPLY_MAX];
    char *body = create_params(d, t->opt.expires_ms);
    if (!body)
        return EW_ENOMEM;
    const char *props[] = {"_AMQ_ResourceName", "broker", "_AMQ_OperationName", "createQueue",
                           NULL};
    char why[512] = "";
    ew_err rc = manage(t, d->event, props, body, deadline, reply, sizeof reply, why,
                       sizeof why);
    free(body);
    /* Success answers with the queue's configuration (JSON text of an
     * object); a failure with a message. */
    if (rc == EW_OK) {
        json_t *root, *cfg = NULL;
        const char *first = answer_first(reply, &root);
        if (first)
            cfg = json_loads(first, 0, NULL);
        if (!json_is_object(cfg)) {
            rc = EW_EBROKER;
            amqp10_textf(why, sizeof why, "%s", reply);
        }
        json_decref(cfg);
        json_decref(root);
    }
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
    /* destroyQueue(name, removeConsumers, autoDeleteAddress) */
    json_t *params = json_pack("[s, b, b]", queue, 1, 0);
    char *body = params ? json_dumps(params, JSON_COMPACT) : NULL;
    json_decref(params);
    if (!body)
        return EW_ENOMEM;
    const char *props[] = {"_AMQ_ResourceName", "broker", "_AMQ_OperationName", "destroyQueue",
                           NULL};
    char reply[REPLY_MAX], why[512] = "";
    ew_err rc = manage(t, event, props, body, deadline, reply, sizeof reply, why, sizeof why);
    free(body);
    if (rc != EW_OK) {
        amqp10_textf(err, errlen, "destroying queue %s through the broker's management: %s",
                     queue, why);
        return rc;
    }
    /* Success answers [null]; a failure with its message, and a queue that
     * is gone already (AMQ229017) is what was asked for. */
    json_t *root;
    const char *text = answer_first(reply, &root);
    if (text && !strstr(text, "AMQ229017")) {
        amqp10_textf(err, errlen, "destroying queue %s through the broker's management "
                     "failed: %s", queue, text);
        rc = EW_EBROKER;
    }
    json_decref(root);
    return rc;
}
