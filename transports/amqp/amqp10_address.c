/* Dialect addressing: the README's addressing table for AMQP 1.0. Pure, unit-tested.
 *
 * artemis: a name with "::" in it is a fully qualified queue name (FQQN)
 *   "address::queue" wherever Artemis meets it, and queue names are unique
 *   per broker. Artemis 2.40 cannot even hold a queue named "E::L": it
 *   strips the address part twice (the FQQN "E::E::L" makes queue "L" on
 *   address E, and the management's createQueue turns "E::L" into "L"), so
 *   two events with a listener of the same name would share one queue. On
 *   Artemis the queue of listener L of event E is therefore "E:L" (one
 *   colon, a character no event or listener name has), FQQN "E::E:L";
 *   per_process "E:L-S". Sends go to address E with the capability "topic"
 *   (multicast). Dead-letter queue "E:L.dlq": an anycast queue on its own
 *   address "E.dlq", so that events sent to E never reach it: FQQN
 *   "E.dlq::E:L.dlq" with the capability "queue".
 * rabbitmq (3.x plugin): sends to the topic exchange E with routing key E,
 *   "/exchange/E/E"; listeners and dead-letter readers consume an existing
 *   queue, "/amq/queue/Q". Sends to one queue go to "/amq/queue/Q" too, but
 *   only once Q is known to exist (the plugin drops them silently
 *   otherwise): the transport checks that before the first such send. */
#include "amqp10.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* out->addr = the n strings one after the other; EW_EINVAL when they do not
 * fit. No format: a target is made for every send. */
static ew_err put(amqp10_addr *out, amqp10_cap cap, int n, ...)
{
    va_list ap;
    va_start(ap, n);
    size_t len = 0;
    bool fits = true;
    for (int i = 0; i < n && fits; i++) {
        const char *s = va_arg(ap, const char *);
        size_t l = strlen(s);
        fits = l < sizeof out->addr - len;
        if (fits) {
            memcpy(out->addr + len, s, l);
            len += l;
        }
    }
    va_end(ap);
    out->cap = cap;
    out->addr[fits ? len : 0] = '\0';
    return fits ? EW_OK : EW_EINVAL;
}

/* artemis_name: core's queue name "E::rest" as Artemis holds it, "E:rest". */
static ew_err artemis_name(const char *queue, char *buf, size_t len)
{
    const char *sep = strstr(queue, "::");
    if (!sep || sep == queue || !sep[2])
        return EW_EINVAL;
    int n = snprintf(buf, len, "%.*s:%s", (int)(sep - queue), queue, sep + 2);
    return n < 0 || (size_t)n >= len ? EW_EINVAL : EW_OK;
}

ew_err amqp10_listener_queue(const amqp10_options *o, const char *event,
                           const char *queue, char *buf, size_t len)
{
    const char *q = queue;
    if (o->dialect == AMQP10_DIALECT_ARTEMIS && o->naming != AMQP10_NAMING_ASPYX) {
        size_t el = strlen(event);
        if (strncmp(queue, event, el) != 0 || strncmp(queue + el, "::", 2) != 0)
            return EW_EINVAL;
        return artemis_name(queue, buf, len);
    }
    if (o->naming == AMQP10_NAMING_ASPYX) {
        /* aspyx-event's queue is the listener's own name: drop "E::". */
        size_t el = strlen(event);
        if (strncmp(queue, event, el) != 0 || strncmp(queue + el, "::", 2) != 0)
            return EW_EINVAL;
        q = queue + el + 2;
    }
    int n = snprintf(buf, len, "%s", q);
    return n < 0 || (size_t)n >= len || !q[0] ? EW_EINVAL : EW_OK;
}

ew_err amqp10_target_of(const amqp10_options *o, ewi_dest dest, const char *event,
                      const char *queue, amqp10_addr *out)
{
    char q[EW_MAX_QUEUE_NAME + 8];
    if (dest != EWI_DEST_EVENT && !queue)
        return EW_EINVAL;
    if (dest == EWI_DEST_LISTENER &&
        amqp10_listener_queue(o, event, queue, q, sizeof q) != EW_OK)
        return EW_EINVAL;
    if (dest == EWI_DEST_DLQ && o->dialect == AMQP10_DIALECT_ARTEMIS &&
        artemis_name(queue, q, sizeof q) != EW_OK)
        return EW_EINVAL;

    if (o->dialect == AMQP10_DIALECT_ARTEMIS) {
        switch (dest) {
        case EWI_DEST_EVENT:
            return put(out, AMQP10_CAP_TOPIC, 1, event);
        case EWI_DEST_LISTENER:
            return put(out, AMQP10_CAP_TOPIC, 3, event, "::", q);
        case EWI_DEST_DLQ:
            return put(out, AMQP10_CAP_QUEUE, 3, event, ".dlq::", q);
        }
        return EW_EINVAL;
    }
    switch (dest) {
    case EWI_DEST_EVENT:
        return put(out, AMQP10_CAP_NONE, 4, "/exchange/", event, "/", event);
    case EWI_DEST_LISTENER:
        return put(out, AMQP10_CAP_NONE, 2, "/amq/queue/", q);
    case EWI_DEST_DLQ:
        return put(out, AMQP10_CAP_NONE, 2, "/amq/queue/", queue);
    }
    return EW_EINVAL;
}

ew_err amqp10_source_of_listener(const amqp10_options *o, const char *event,
                               const char *q, amqp10_addr *out)
{
    if (o->dialect == AMQP10_DIALECT_ARTEMIS)
        return put(out, AMQP10_CAP_TOPIC, 3, event, "::", q);
    return put(out, AMQP10_CAP_NONE, 2, "/amq/queue/", q);
}

ew_err amqp10_source_of_dlq(const amqp10_options *o, const char *event,
                          const char *dlq, amqp10_addr *out)
{
    if (o->dialect == AMQP10_DIALECT_ARTEMIS) {
        char q[EW_MAX_QUEUE_NAME + 8];
        if (artemis_name(dlq, q, sizeof q) != EW_OK)
            return EW_EINVAL;
        return put(out, AMQP10_CAP_QUEUE, 3, event, ".dlq::", q);
    }
    return put(out, AMQP10_CAP_NONE, 2, "/amq/queue/", dlq);
}
