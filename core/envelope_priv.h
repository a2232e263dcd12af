/* The envelope's layout, for core only (transports use ewi.h). */
#ifndef EVENTWIRE_ENVELOPE_PRIV_H
#define EVENTWIRE_ENVELOPE_PRIV_H

#include <stdatomic.h>
#include <sys/types.h>

#include "ewi.h"

#define EWI_ENV_INLINE_HEADERS 8
/* Bodies up to this size live inside the envelope's own allocation. */
#define EWI_ENV_INLINE_BODY 256

typedef struct ewi_env_limits {
    size_t max_headers;
    size_t max_header_len;
} ewi_env_limits;

typedef struct ewi_env_hdr {
    uint32_t off, klen, vlen; /* key at s+off, value at s+off+klen+1 */
} ewi_env_hdr;

struct ew_envelope {
    atomic_int refs;
    uint8_t *body;
    size_t body_len;
    char ct[64];
    ewi_env_hdr *h;
    size_t nh, hcap;
    char *s;
    size_t slen, scap, holes;
    uint32_t attempt;
    int64_t sent_at;
    const ewi_env_limits *limits;
    ew_envelope *pool_next; /* while in the free pool */
    ewi_env_hdr h_inline[EWI_ENV_INLINE_HEADERS];
    char s_inline[320];
    uint8_t body_inline[EWI_ENV_INLINE_BODY];
};

/* limits must outlive the envelope (the manager's). NULL: defaults. */
void ewi_envelope_set_limits(ew_envelope *env, const ewi_env_limits *limits);

/* The framework headers of a new message, in one go and without the checks
 * of ewi_envelope_put: ew-event (event, elen bytes), ew-message-id (id, 36
 * characters of UUID text), ew-sent-at (sent_ms in decimal) and ew-attempt 1.
 * env must have no headers yet (EW_EINVAL otherwise). */
ew_err ewi_envelope_put_framework(ew_envelope *env, const char *event, size_t elen,
                                  const char id[36], uint64_t sent_ms);

#endif
