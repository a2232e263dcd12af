/* eventwire: the envelope, what travels: the encoded body, its content type,
 * user headers (string keys and values) and framework metadata.
 *
 * Framework metadata travels as headers named ew-* (see the README's wire
 * format table): they can be read like any header, but only the library sets
 * them, so user header keys must not start with "ew-". */
#ifndef EVENTWIRE_ENVELOPE_H
#define EVENTWIRE_ENVELOPE_H

#include <stddef.h>
#include <stdint.h>

#include <eventwire/error.h>
#include <eventwire/export.h>

EW_BEGIN_DECLS

typedef struct ew_envelope ew_envelope;

/* Framework header names on the wire. */
#define EW_HDR_EVENT "ew-event"           /* event name */
#define EW_HDR_MESSAGE_ID "ew-message-id" /* unique id, UUID text */
#define EW_HDR_SENT_AT "ew-sent-at"       /* ms since the Unix epoch, decimal */
#define EW_HDR_ATTEMPT "ew-attempt"       /* delivery attempt, 1 on the first */
/* Added to a dead letter. */
#define EW_HDR_DLQ_REASON "ew-dlq-reason" /* listener-failed, handle-refused, decode-failed, too-big */
#define EW_HDR_DLQ_ERROR "ew-dlq-error"   /* the error text */
#define EW_HDR_DLQ_QUEUE "ew-dlq-queue"   /* the original queue E::L[-S] */
#define EW_HDR_DLQ_ATTEMPTS "ew-dlq-attempts" /* how many times it was handled */
#define EW_HDR_DLQ_SERVER "ew-dlq-server" /* the server that dead-lettered it */

/* Thread safety: the functions that read an envelope (those taking a const
 * ew_envelope *) may run at once on one envelope from several threads; the
 * two that change it (set, remove) are not thread-safe: nothing else may use
 * that envelope meanwhile. Different envelopes are independent. Envelopes the
 * library hands out (deliveries, dead letters, handle hooks) are read-only.
 * Pointers returned stay valid until the envelope is changed or freed. */

/* The value of header key (a user header or a framework ew-* header), or
 * NULL. Reads: thread-safe. */
EW_API const char *ew_envelope_header(const ew_envelope *env, const char *key);

/* Sets user header key to value (both copied), replacing an earlier value.
 * EW_EINVAL for an empty key, a key with characters other than letters,
 * digits and "-_.", or a key starting with "ew-"; EW_ETOOBIG past the
 * manager's header limits. Changes: not thread-safe. */
EW_API ew_err ew_envelope_set_header(ew_envelope *env, const char *key,
                                     const char *value);

/* Removes user header key; EW_ENOTFOUND if it was not set. Changes: not
 * thread-safe. */
EW_API ew_err ew_envelope_remove_header(ew_envelope *env, const char *key);

/* All headers, framework ew-* ones included, in the order they were set:
 * the count, and the i-th pair. Reads: thread-safe. */
EW_API size_t ew_envelope_header_count(const ew_envelope *env);
EW_API ew_err ew_envelope_header_at(const ew_envelope *env, size_t i,
                                    const char **key, const char **value);

/* The encoded body and its length, and its content type. Reads:
 * thread-safe. */
EW_API const void *ew_envelope_body(const ew_envelope *env, size_t *len);
EW_API const char *ew_envelope_content_type(const ew_envelope *env);

/* Framework metadata. Reads: thread-safe. */
EW_API const char *ew_envelope_event(const ew_envelope *env);
EW_API const char *ew_envelope_message_id(const ew_envelope *env);
EW_API int64_t ew_envelope_sent_at(const ew_envelope *env);
EW_API uint32_t ew_envelope_attempt(const ew_envelope *env);

EW_END_DECLS

#endif
