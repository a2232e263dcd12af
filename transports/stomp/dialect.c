/* Addressing per broker dialect (the README's table), for event E, listener
 * queue Q = E::L[-S] and dead-letter queue D = E::L.dlq. Pure: unit-tested.
 *
 *            rabbitmq                      activemq (5 classic)          artemis
 * send E     /exchange/E/E                 /topic/VirtualTopic.E         E, MULTICAST
 * send to Q  /amq/queue/Q                  /queue/Consumer.Q.VirtualTopic.E  E::Q', MULTICAST
 * listen Q   /amq/queue/Q                  /queue/Consumer.Q.VirtualTopic.E  E::Q', MULTICAST
 * D          /amq/queue/D                  /queue/D                      E.dlq::D', ANYCAST
 *
 * On rabbitmq the AMQP 0-9-1 administration connection (amqp_port) declares
 * Q (bound to E with '#') before its SUBSCRIBE, and D (durable, no
 * arguments) before the first dead letter to it (a read of a D that does
 * not exist yet finds none and subscribes nothing), so the STOMP adapter
 * only consumes and sends: its own declaration
 * would take a queue's properties from the frame's headers (a SEND to
 * /queue/D carrying a user header x-max-priority or durable:false makes D
 * so), and its one-by-one SUBSCRIBE declarations are what made a start with
 * many listeners slow. With amqp_port=0 nothing declares for it: listen Q
 * is then /exchange/E/# with x-queue-name:Q (the adapter declares and binds
 * Q), and D is /queue/D (the adapter declares it durable).
 *
 * Artemis reads every "::" as address::queue and cannot hold a queue named
 * E::L (2.40 makes the FQQN E::E::L into queue L on address E, so listeners
 * of two events with one name would share a queue): there the queue Q' of
 * Q = E::rest is E:rest, with one colon, which no event or listener name
 * has. Colons in names travel escaped (\c) like every header value. */
#include "transports/stomp/stomp.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static ew_err put(char *buf, size_t len, const char *fmt, ...) EWI_PRINTF(3, 4);

static ew_err put(char *buf, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, len, fmt, ap);
    va_end(ap);
    return n < 0 || (size_t)n >= len ? EW_ETOOBIG : EW_OK;
}

static ew_err extra(stomp_target *t, const char *key, const char *fmt, ...)
    EWI_PRINTF(3, 4);

/* buf = the NULL-terminated list of strings joined, without a format: the
 * send path builds a destination for every message. */
static ew_err join(char *buf, size_t len, const char *const *parts)
{
    size_t o = 0;
    for (; *parts; parts++) {
        size_t n = strlen(*parts);
        if (n >= len - o)
            return EW_ETOOBIG;
        memcpy(buf + o, *parts, n);
        o += n;
    }
    buf[o] = 0;
    return EW_OK;
}
#define JOIN(buf, ...) join(buf, sizeof buf, (const char *const[]){__VA_ARGS__, NULL})

/* A fixed extra header (no format). */
static ew_err extra_text(stomp_target *t, const char *key, const char *value)
{
    if (t->n == STOMP_MAX_EXTRA)
        return EW_ETOOBIG;
    ew_err rc = JOIN(t->h[t->n].value, value);
    if (rc == EW_OK)
        t->h[t->n++].key = key;
    return rc;
}

/* artemis_fqqn: "E<suffix>::E:rest" for core's queue "E::rest" (see above). */
static ew_err artemis_fqqn(char *buf, size_t len, const char *suffix, const char *event,
                           const char *queue)
{
    size_t el = strlen(event);
    if (strncmp(queue, event, el) != 0 || strncmp(queue + el, "::", 2) != 0 ||
        !queue[el + 2])
        return EW_EINVAL;
    return put(buf, len, "%s%s::%s:%s", event, suffix, event, queue + el + 2);
}

static ew_err extra(stomp_target *t, const char *key, const char *fmt, ...)
{
    if (t->n == STOMP_MAX_EXTRA)
        return EW_ETOOBIG;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(t->h[t->n].value, sizeof t->h[t->n].value, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof t->h[t->n].value)
        return EW_ETOOBIG;
    t->h[t->n++].key = key;
    return EW_OK;
}

ew_err stomp_send_target(const stomp_options *o, ewi_dest dest, const char *event,
                         const char *queue, bool durable, stomp_target *out)
{
    /* Called for every message: only what is read is set (out->n bounds
     * the extra headers). */
    out->dest[0] = 0;
    out->n = 0;
    ew_err rc = EW_EINVAL;
    if (dest != EWI_DEST_EVENT && !queue)
        return EW_EINVAL;
    switch (o->dialect) {
    case STOMP_RABBITMQ:
        if (dest == EWI_DEST_EVENT)
            rc = JOIN(out->dest, "/exchange/", event, "/", event);
        else if (dest == EWI_DEST_LISTENER || o->amqp_port)
            rc = JOIN(out->dest, "/amq/queue/", queue);
        else
            rc = JOIN(out->dest, "/queue/", queue);
        break;
    case STOMP_ACTIVEMQ:
        if (dest == EWI_DEST_EVENT)
            rc = JOIN(out->dest, "/topic/VirtualTopic.", event);
        else if (dest == EWI_DEST_LISTENER)
            rc = JOIN(out->dest, "/queue/Consumer.", queue, ".VirtualTopic.", event);
        else
            rc = JOIN(out->dest, "/queue/", queue);
        break;
    case STOMP_ARTEMIS:
        if (dest == EWI_DEST_EVENT)
            rc = JOIN(out->dest, event);
        else
            rc = artemis_fqqn(out->dest, sizeof out->dest,
                              dest == EWI_DEST_DLQ ? ".dlq" : "", event, queue);
        if (rc == EW_OK)
            rc = extra_text(out, "destination-type",
                            dest == EWI_DEST_DLQ ? "ANYCAST" : "MULTICAST");
        break;
    }
    /* Dead letters are kept whatever the event's durability. */
    if (rc == EW_OK && (durable || dest == EWI_DEST_DLQ))
        rc = extra_text(out, "persistent", "true");
    return rc;
}

ew_err stomp_sub_target(const stomp_options *o, const ewi_sub *sub,
                        stomp_target *out)
{
    memset(out, 0, sizeof *out);
    ew_err rc = EW_EINVAL;
    uint32_t prefetch = sub->prefetch ? sub->prefetch : 1;
    switch (o->dialect) {
    case STOMP_RABBITMQ:
        if (o->amqp_port) {
            /* Declared and bound by the administration connection. */
            rc = put(out->dest, sizeof out->dest, "/amq/queue/%s", sub->queue);
            if (!rc)
                rc = extra(out, "prefetch-count", "%u", prefetch);
            break;
        }
        /* Without the '#' pattern the queue is bound with an empty key and
         * receives nothing. durable and auto-delete must match an existing
         * queue, or RabbitMQ answers precondition_failed. */
        rc = put(out->dest, sizeof out->dest, "/exchange/%s/#", sub->event);
        if (!rc)
            rc = extra(out, "x-queue-name", "%s", sub->queue);
        if (!rc)
            rc = extra(out, "durable", "%s", sub->durable ? "true" : "false");
        if (!rc)
            rc = extra(out, "auto-delete", "false");
        if (!rc && sub->per_process)
            rc = extra(out, "x-expires", "%ld", o->expires_ms);
        if (!rc)
            rc = extra(out, "prefetch-count", "%u", prefetch);
        break;
    case STOMP_ACTIVEMQ:
        rc = put(out->dest, sizeof out->dest, "/queue/Consumer.%s.VirtualTopic.%s",
                 sub->queue, sub->event);
        if (!rc)
            rc = extra(out, "activemq.prefetchSize", "%u", prefetch);
        break;
    case STOMP_ARTEMIS:
        rc = artemis_fqqn(out->dest, sizeof out->dest, "", sub->event, sub->queue);
        if (!rc)
            rc = extra(out, "subscription-type", "MULTICAST");
        break;
    }
    return rc;
}

ew_err stomp_dlq_target(const stomp_options *o, const char *event, const char *dlq,
                        uint32_t prefetch, stomp_target *out)
{
    memset(out, 0, sizeof *out);
    ew_err rc = EW_EINVAL;
    if (!prefetch)
        prefetch = 1;
    switch (o->dialect) {
    case STOMP_RABBITMQ:
        rc = put(out->dest, sizeof out->dest, o->amqp_port ? "/amq/queue/%s" : "/queue/%s",
                 dlq);
        if (!rc)
            rc = extra(out, "prefetch-count", "%u", prefetch);
        break;
    case STOMP_ACTIVEMQ:
        rc = put(out->dest, sizeof out->dest, "/queue/%s", dlq);
        if (!rc)
            rc = extra(out, "activemq.prefetchSize", "%u", prefetch);
        break;
    case STOMP_ARTEMIS:
        rc = artemis_fqqn(out->dest, sizeof out->dest, ".dlq", event, dlq);
        if (!rc)
            rc = extra(out, "subscription-type", "ANYCAST");
        break;
    }
    return rc;
}

ew_err stomp_check_names(stomp_dialect d, const char *event, const char *listener,
                         char *err, size_t errlen)
{
    if (d == STOMP_ACTIVEMQ) {
        /* ActiveMQ's virtual topics take the group from Consumer.*.: one
         * dot-separated element, and the group is E::L. */
        if (event && strchr(event, '.')) {
            snprintf(err, errlen,
                     "event name '%s' contains '.', which dialect=activemq cannot "
                     "route (its queue Consumer.%s::L.VirtualTopic.%s would split)",
                     event, event, event);
            return EW_EINVAL;
        }
        if (listener && strchr(listener, '.')) {
            snprintf(err, errlen,
                     "listener name '%s' contains '.', which dialect=activemq cannot "
                     "route", listener);
            return EW_EINVAL;
        }
    }
    if (d == STOMP_ARTEMIS && event) {
        size_t n = strlen(event);
        /* E.dlq is the address of E's dead-letter queues. */
        if (n >= 4 && strcmp(event + n - 4, ".dlq") == 0) {
            snprintf(err, errlen,
                     "event name '%s' ends in '.dlq', the suffix of dead-letter "
                     "addresses on dialect=artemis", event);
            return EW_EINVAL;
        }
    }
    return EW_OK;
}

/* Headers of SEND and MESSAGE frames that STOMP or a broker interpret,
 * rewrite or add. Headers of CONNECT/CONNECTED (session, server, host ...)
 * never meet an event's, and those that brokers carry through unchanged
 * (type, correlation-id ...) stay usable. */
static bool is(const char *key, size_t klen, const char *name, size_t len)
{
    return klen == len && memcmp(key, name, len) == 0;
}

static bool starts(const char *key, size_t klen, const char *prefix, size_t len)
{
    return klen >= len && memcmp(key, prefix, len) == 0;
}

#define IS(s) is(key, klen, s, sizeof s - 1)
#define STARTS(s) starts(key, klen, s, sizeof s - 1)

/* Called for every header of every frame sent and received: the first byte
 * picks the few names to compare, and most names (ew-*, a user's) meet
 * none or one of them. */
bool stomp_reserved_header(const char *key, size_t klen)
{
    if (klen == 0)
        return false;
    switch (key[0]) {
    case 'a': return IS("ack") || IS("amqp-message-id") || STARTS("activemq.");
    case 'c': return IS("content-length") || IS("content-type");
    case 'd': return IS("destination") || IS("destination-type");
    case 'e': return IS("expiration") || IS("expires");
    case 'i': return IS("id");
    case 'm': return IS("message-id");
    case 'o': return IS("original-destination") || IS("originalExpiration");
    case 'p': return IS("persistent") || IS("priority");
    case 'r': return IS("receipt") || IS("receipt-id") || IS("redelivered") || IS("reply-to");
    case 's': return IS("subscription") || IS("subscription-type");
    case 't': return IS("timestamp") || IS("transaction") || IS("transformation");
    case 'u': return IS("user-id");
    case 'x':
        return IS("x-queue-name") || IS("x-expires") || IS("x-message-ttl") ||
               IS("x-dead-letter-exchange") || IS("x-dead-letter-routing-key") ||
               IS("x-death") || IS("x-max-length");
    case 'J': return STARTS("JMS");
    case '_': return STARTS("_AMQ") || STARTS("__AMQ");
    case 'A': return STARTS("AMQ_");
    default: return false;
    }
}

#undef IS
#undef STARTS

bool stomp_requeue_by_nack(stomp_dialect d)
{
    /* ActiveMQ 5 turns a STOMP NACK into a poison ack (the message goes to
     * ActiveMQ.DLQ); Artemis treats NACK as ACK (it is discarded). Verified
     * for ActiveMQ 5.17.2 here; Artemis per its documentation. */
    return d == STOMP_RABBITMQ;
}
