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
 *     its last consumer left (createQueue, ignoring an existing queue).
 * The answer comes to a reply address of the request's own
 * (ew.reply.<pid>-<ms>-<n>: a volatile subscription that goes with its link)
 * and is read from the answer's body, a JSON array. */
#include "amqp.h"

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
    amqp_textf(r->detail, sizeof r->detail, "%s", detail ? detail : "");
    pthread_cond_broadcast(&t->cond);
    pthread_mutex_unlock(&t->mu);
}

/* Sends the request to activemq.management and waits for its outcome. */
static ew_err send_request(ewi_transport *t, void *arg)
{
    mgmt_req *r = arg;
    amqp_out *o = calloc(1, sizeof *o);
    if (!o)
        return EW_ENOMEM;
    ew_err rc = amqp_mgmt_encode(r->props, r->reply_to, r->body, &o->bytes, &o->len);
    if (rc != EW_OK) {
        free(o);
        return rc;
    }
    amqp_textf(o->target.addr, sizeof o->target.addr, "activemq.management");
    o->target.cap = AMQP_CAP_NONE;
    r->pub = (ewi_pub){.dest = EWI_DEST_EVENT, .event = r->event, .deadline_ms = r->deadline,
                       .done = req_done, .user = t};
    o->pub = &r->pub;
    o->w.kind = AMQP_W_PUB;
    pthread_mutex_lock(&t->mu);
    if (t->stopping || t->io_exited) {
        pthread_mutex_unlock(&t->mu);
        free(o->bytes);
        free(o);
        return EW_ECLOSED;
    }
    t->pending++;
    amqp_post_locked(t, &o->w);
    while (!r->done)
        pthread_cond_wait(&t->cond, &t->mu);
    rc = (ew_err)r->err;
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
    amqp_textf(dest, sizeof dest, "ew.reply.%ld-%lld-%lu", (long)getpid(),
               (long long)ewi_now_ms(), atomic_fetch_add(&seq, 1));
    amqp_addr src = {.cap = AMQP_CAP_TOPIC};
    amqp_textf(src.addr, sizeof src.addr, "%s", dest);
    mgmt_req r = {.props = props, .body = body, .reply_to = dest, .event = event,
                  .deadline = deadline};
    ew_err rc = amqp_fetch_reply(t, &src, send_request, &r, deadline, reply, replylen,
                                 err, errlen);
    if (rc != EW_OK && !err[0])
        amqp_textf(err, errlen, "%s%s%s", ew_strerror(rc), r.detail[0] ? ": " : "",
                   r.detail);
    return rc;
}

/* Appends s to buf as the inside of a JSON string. */
static void json_str(char *buf, size_t len, const char *s)
{
    size_t o = strlen(buf);
    for (; *s && o + 3 < len; s++) {
        if (*s == '"' || *s == '\\')
            buf[o++] = '\\';
        buf[o++] = *s;
    }
    buf[o] = '\0';
}

static ew_err check_exists(ewi_transport *t, const amqp_decl *d, int64_t deadline,
                           char *err, size_t errlen)
{
    char resource[EW_MAX_QUEUE_NAME + 16], want[EW_MAX_QUEUE_NAME + 8], reply[REPLY_MAX];
    amqp_textf(resource, sizeof resource, "queue.%s", d->queue);
    amqp_textf(want, sizeof want, "[\"%s\"]", d->event);
    const char *props[] = {"_AMQ_ResourceName", resource, "_AMQ_Attribute", "address", NULL};
    char why[512] = "";
    ew_err rc = manage(t, d->event, props, NULL, deadline, reply, sizeof reply, why,
                       sizeof why);
    if (rc != EW_OK) {
        amqp_textf(err, errlen, "asking the broker's management whether queue %s exists: %s",
                   d->queue, why);
        return rc;
    }
    if (strcmp(reply, want) != 0) {
        amqp_textf(err, errlen, "queue %s does not exist on address %s (%s)", d->queue,
                   d->event, reply);
        return EW_ENOTFOUND;
    }
    return EW_OK;
}

static ew_err create_per_process(ewi_transport *t, const amqp_decl *d, int64_t deadline,
                                 char *err, size_t errlen)
{
    char cfg[1024] = "{\"name\":\"", body[2048] = "[\"", reply[REPLY_MAX];
    json_str(cfg, sizeof cfg, d->queue);
    amqp_textf(cfg + strlen(cfg), sizeof cfg - strlen(cfg), "\",\"address\":\"");
    json_str(cfg, sizeof cfg, d->event);
    amqp_textf(cfg + strlen(cfg), sizeof cfg - strlen(cfg),
               "\",\"routing-type\":\"MULTICAST\",\"durable\":%s,\"auto-delete\":true,"
               "\"auto-delete-delay\":%ld,\"auto-delete-message-count\":-1,"
               "\"auto-create-address\":true}",
               d->durable ? "true" : "false", t->opt.expires_ms);
    /* The configuration is a JSON text inside the JSON array of parameters. */
    json_str(body, sizeof body, cfg);
    amqp_textf(body + strlen(body), sizeof body - strlen(body), "\",true]");
    const char *props[] = {"_AMQ_ResourceName", "broker", "_AMQ_OperationName", "createQueue",
                           NULL};
    char why[512] = "";
    ew_err rc = manage(t, d->event, props, body, deadline, reply, sizeof reply, why,
                       sizeof why);
    /* Success answers with the queue's configuration, a JSON object inside
     * the array; a failure with a message. */
    if (rc == EW_OK && strncmp(reply, "[\"{", 3) != 0) {
        rc = EW_EBROKER;
        amqp_textf(why, sizeof why, "%s", reply);
    }
    if (rc != EW_OK)
        amqp_textf(err, errlen, "creating the per_process queue %s through the broker's "
                   "management failed: %s", d->queue, why);
    return rc;
}

ew_err amqp_artemis_ensure(ewi_transport *t, const amqp_decl *d, int64_t deadline,
                           char *err, size_t errlen)
{
    if (d->kind == AMQP_DECL_EXISTS)
        return check_exists(t, d, deadline, err, errlen);
    if (d->kind == AMQP_DECL_LISTENER && d->per_process)
        return create_per_process(t, d, deadline, err, errlen);
    return EW_OK;
}
