/* What the artemis dialects of stomp:// and amqp:// ask ActiveMQ Artemis's
 * management address (activemq.management), and how its answers read.
 *
 * A request is a message with the properties _AMQ_ResourceName and
 * _AMQ_OperationName (or _AMQ_Attribute), its parameters as a JSON array in
 * the body, and reply-to naming where the answer goes; the answer's body is
 * a JSON array holding the result, or the error's text. Each transport
 * sends the request and waits for the answer over its own protocol; this
 * module only makes the requests and reads the answers.
 *
 * Queue names here are Artemis's own (address E, queue E:L), not the
 * eventwire listener queue names (E::L). */
#ifndef EW_ARTM_H
#define EW_ARTM_H

#include "ewi.h"

#include <stdbool.h>

/* One management request: props are key, value, ..., NULL; body is NULL or
 * malloc'd (artm_req_free). */
typedef struct artm_req {
    const char *props[5];
    char resource[EW_MAX_QUEUE_NAME + 16];
    char *body;
} artm_req;

/* Is queue on address E? (attribute "address" of resource queue.<queue>) */
void artm_ask_address(artm_req *r, const char *queue);
/* createQueue with auto-delete delay_ms after its last consumer left,
 * ignoring an existing queue. EW_ENOMEM when out of memory. */
ew_err artm_ask_create(artm_req *r, const char *queue, const char *address, bool durable,
                       long delay_ms);
/* destroyQueue, removing its consumers, keeping its address. */
ew_err artm_ask_destroy(artm_req *r, const char *queue);
void artm_req_free(artm_req *r);

/* The answer to artm_ask_address: EW_OK when the queue is on address,
 * EW_ENOTFOUND otherwise (missing, or on another address). */
ew_err artm_address_is(const char *reply, const char *address);
/* The answer to artm_ask_create: EW_OK when it is the queue's
 * configuration (a JSON object), EW_EBROKER otherwise. */
ew_err artm_created(const char *reply);
/* The answer to artm_ask_destroy: EW_OK when it is [null] or says the queue
 * does not exist (AMQ229017: gone already is what was asked for);
 * EW_EBROKER otherwise, with the broker's text in why. */
ew_err artm_destroyed(const char *reply, char *why, size_t whylen);

#endif
