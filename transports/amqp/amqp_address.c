/* Dialect addressing: the README's addressing table for AMQP 1.0. Pure, unit-tested.
 *
 * artemis: Artemis splits a fully qualified queue name (FQQN) "A::Q" at the
 *   FIRST "::", and queue names are unique per broker. So listener L of
 *   event E owns the queue "E::L" on address E, written "E::E::L" on the
 *   wire. Sends go to address E with the capability "topic" (multicast).
 *   Dead-letter queue "E::L.dlq": an anycast queue on its own address
 *   "E.dlq", so that events sent to E never reach it: FQQN
 *   "E.dlq::E::L.dlq" with the capability "queue".
 * rabbitmq (3.x plugin): sends to the topic exchange E with routing key E,
 *   "/exchange/E/E"; listeners and dead-letter readers consume an existing
 *   queue, "/amq/queue/Q". Sends to one queue go to "/amq/queue/Q" too, but
 *   only once Q is known to exist (the plugin drops them silently
 *   otherwise): the transport checks that before the first such send. */
#include "amqp.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static ew_err put(amqp_addr *out, amqp_cap cap, const char *fmt, ...)
    EWI_PRINTF(3, 4);

static ew_err put(amqp_addr *out, amqp_cap cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out->addr, sizeof out->addr, fmt, ap);
    va_end(ap);
    out->cap = cap;
    if (n < 0 || (size_t)n >= sizeof out->addr) {
        out->addr[0] = '\0';
        return EW_EINVAL;
    }
    return EW_OK;
}

ew_err amqp_listener_queue(const amqp_options *o, const char *event,
                           const char *queue, char *buf, size_t len)
{
    const char *q = queue;
    if (o->naming == AMQP_NAMING_ASPYX) {
        /* aspyx-event's queue is the listener's own name: drop "E::". */
        size_t el = strlen(event);
        if (strncmp(queue, event, el) != 0 || strncmp(queue + el, "::", 2) != 0)
            return EW_EINVAL;
        q = queue + el + 2;
    }
    int n = snprintf(buf, len, "%s", q);
    return n < 0 || (size_t)n >= len || !q[0] ? EW_EINVAL : EW_OK;
}

ew_err amqp_target_of(const amqp_options *o, ewi_dest dest, const char *event,
                      const char *queue, amqp_addr *out)
{
    char q[EW_MAX_QUEUE_NAME + 8];
    if (dest != EWI_DEST_EVENT && !queue)
        return EW_EINVAL;
    if (dest == EWI_DEST_LISTENER &&
        amqp_listener_queue(o, event, queue, q, sizeof q) != EW_OK)
        return EW_EINVAL;

    if (o->dialect == AMQP_DIALECT_ARTEMIS) {
        switch (dest) {
        case EWI_DEST_EVENT:
            return put(out, AMQP_CAP_TOPIC, "%s", event);
        case EWI_DEST_LISTENER:
            return put(out, AMQP_CAP_TOPIC, "%s::%s", event, q);
        case EWI_DEST_DLQ:
            return put(out, AMQP_CAP_QUEUE, "%s.dlq::%s", event, queue);
        }
        return EW_EINVAL;
    }
    switch (dest) {
    case EWI_DEST_EVENT:
        return put(out, AMQP_CAP_NONE, "/exchange/%s/%s", event, event);
    case EWI_DEST_LISTENER:
        return put(out, AMQP_CAP_NONE, "/amq/queue/%s", q);
    case EWI_DEST_DLQ:
        return put(out, AMQP_CAP_NONE, "/amq/queue/%s", queue);
    }
    return EW_EINVAL;
}

ew_err amqp_source_of_listener(const amqp_options *o, const char *event,
                               const char *q, amqp_addr *out)
{
    if (o->dialect == AMQP_DIALECT_ARTEMIS)
        return put(out, AMQP_CAP_TOPIC, "%s::%s", event, q);
    return put(out, AMQP_CAP_NONE, "/amq/queue/%s", q);
}

ew_err amqp_source_of_dlq(const amqp_options *o, const char *event,
                          const char *dlq, amqp_addr *out)
{
    if (o->dialect == AMQP_DIALECT_ARTEMIS)
        return put(out, AMQP_CAP_QUEUE, "%s.dlq::%s", event, dlq);
    return put(out, AMQP_CAP_NONE, "/amq/queue/%s", dlq);
}
