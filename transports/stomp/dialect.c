/* Addressing per broker dialect (the README's table), for event E, listener
 * queue Q = E::L[-S] and dead-letter queue D = E::L.dlq. Pure: unit-tested.
 *
 *            rabbitmq                      activemq (5 classic)          artemis
 * send E     /exchange/E/E                 /topic/VirtualTopic.E         E, MULTICAST
 * send to Q  /amq/queue/Q                  /queue/Consumer.Q.VirtualTopic.E  E::Q, MULTICAST
 * listen Q   /exchange/E/# x-queue-name:Q  /queue/Consumer.Q.VirtualTopic.E  E::Q, MULTICAST
 * D          /queue/D (durable)            /queue/D                      E.dlq::D, ANYCAST
 *
 * Colons in names travel escaped (\c) like every header value. */
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
    memset(out, 0, sizeof *out);
    ew_err rc = EW_EINVAL;
    if (dest != EWI_DEST_EVENT && !queue)
        return EW_EINVAL;
    switch (o->dialect) {
    case STOMP_RABBITMQ:
        if (dest == EWI_DEST_EVENT)
            rc = put(out->dest, sizeof out->dest, "/exchange/%s/%s", event, event);
        else if (dest == EWI_DEST_LISTENER)
            rc = put(out->dest, sizeof out->dest, "/amq/queue/%s", queue);
        else
            rc = put(out->dest, sizeof out->dest, "/queue/%s", queue);
        break;
    case STOMP_ACTIVEMQ:
        if (dest == EWI_DEST_EVENT)
            rc = put(out->dest, sizeof out->dest, "/topic/VirtualTopic.%s", event);
        else if (dest == EWI_DEST_LISTENER)
            rc = put(out->dest, sizeof out->dest, "/queue/Consumer.%s.VirtualTopic.%s",
                     queue, event);
        else
            rc = put(out->dest, sizeof out->dest, "/queue/%s", queue);
        break;
    case STOMP_ARTEMIS:
        if (dest == EWI_DEST_EVENT)
            rc = put(out->dest, sizeof out->dest, "%s", event);
        else if (dest == EWI_DEST_LISTENER)
            rc = put(out->dest, sizeof out->dest, "%s::%s", event, queue);
        else
            rc = put(out->dest, sizeof out->dest, "%s.dlq::%s", event, queue);
        if (rc == EW_OK)
            rc = extra(out, "destination-type", "%s",
                       dest == EWI_DEST_DLQ ? "ANYCAST" : "MULTICAST");
        break;
    }
    /* Dead letters are kept whatever the event's durability. */
    if (rc == EW_OK && (durable || dest == EWI_DEST_DLQ))
        rc = extra(out, "persistent", "true");
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
        rc = put(out->dest, sizeof out->dest, "%s::%s", sub->event, sub->queue);
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
        rc = put(out->dest, sizeof out->dest, "/queue/%s", dlq);
        if (!rc)
            rc = extra(out, "prefetch-count", "%u", prefetch);
        break;
    case STOMP_ACTIVEMQ:
        rc = put(out->dest, sizeof out->dest, "/queue/%s", dlq);
        if (!rc)
            rc = extra(out, "activemq.prefetchSize", "%u", prefetch);
        break;
    case STOMP_ARTEMIS:
        rc = put(out->dest, sizeof out->dest, "%s.dlq::%s", event, dlq);
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
static const char *const reserved[] = {
    "ack", "amqp-message-id", "content-length", "content-type", "destination",
    "destination-type", "expiration", "expires", "id", "message-id",
    "original-destination", "originalExpiration", "persistent", "priority",
    "receipt", "receipt-id", "redelivered", "reply-to", "subscription",
    "subscription-type", "timestamp", "transaction", "transformation", "user-id",
    "x-queue-name", "x-expires", "x-message-ttl", "x-dead-letter-exchange",
    "x-dead-letter-routing-key", "x-death", "x-max-length", NULL};
static const char *const reserved_prefix[] = {"activemq.", "JMS", "_AMQ", "__AMQ",
                                              "AMQ_", NULL};

bool stomp_reserved_header(const char *key, size_t klen)
{
    for (size_t i = 0; reserved[i]; i++)
        if (strlen(reserved[i]) == klen && memcmp(reserved[i], key, klen) == 0)
            return true;
    for (size_t i = 0; reserved_prefix[i]; i++) {
        size_t n = strlen(reserved_prefix[i]);
        if (klen >= n && memcmp(reserved_prefix[i], key, n) == 0)
            return true;
    }
    return false;
}

bool stomp_requeue_by_nack(stomp_dialect d)
{
    /* ActiveMQ 5 turns a STOMP NACK into a poison ack (the message goes to
     * ActiveMQ.DLQ); Artemis treats NACK as ACK (it is discarded). Verified
     * for ActiveMQ 5.17.2 here; Artemis per its documentation. */
    return d == STOMP_RABBITMQ;
}
