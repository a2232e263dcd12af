/* What codec.c shares with the two wire formats (codec_msgpack.c,
 * codec_json.c): error paths, the one-block decode arena, limits, kind
 * sizes, UTF-8 and integer range checks. Not used outside the codecs. */
#ifndef EVENTWIRE_CODEC_PRIV_H
#define EVENTWIRE_CODEC_PRIV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "codec_internal.h"

/* Containers (the body's map, nested structs, arrays, string maps) nested in
 * one body at most when encoding; also msgpack-c's own parser limit
 * (MSGPACK_EMBED_STACK_SIZE), so a msgpack body can never be deeper. */
#define EWI_CODEC_MAX_DEPTH 32u

#define EWI_DEFAULT_MAX_STRING ((size_t)1 << 20)
#define EWI_DEFAULT_MAX_ITEMS ((size_t)1000000)
#define EWI_DEFAULT_MAX_DEPTH 32u

/* ---- error text with a field path -------------------------------------- */

/* An error is found at a leaf; each frame on the way back up prepends its
 * path segment, so the success path pays nothing for paths. */
typedef struct ewi_cerr {
    char msg[192];
    char path[480];
    size_t pos;     /* path text is path[pos..] */
    bool elided;    /* outer segments were dropped for room */
} ewi_cerr;

void ewi_cerr_init(ewi_cerr *e);
void ewi_cerr_msg(ewi_cerr *e, const char *fmt, ...) EWI_PRINTF(2, 3);
void ewi_cerr_field(ewi_cerr *e, const char *name);            /* ".name" */
void ewi_cerr_index(ewi_cerr *e, size_t i);                    /* "[i]" */
void ewi_cerr_key(ewi_cerr *e, const char *key, size_t len);   /* ["key"] */
/* "<type_name><path>: <msg>" into err (if err and errlen). */
void ewi_cerr_format(const ewi_cerr *e, const char *type_name, char *err,
                     size_t errlen);

/* ---- limits ------------------------------------------------------------ */

typedef struct ewi_limits {
    size_t max_string;
    size_t max_items;
    unsigned max_depth;
} ewi_limits;

/* ---- kinds ------------------------------------------------------------- */

/* sizeof / alignment of one value of kind (t: the nested type of EW_STRUCT);
 * 0 for an unknown kind. */
size_t ewi_kind_size(unsigned kind, const ew_type *t);
size_t ewi_kind_align(unsigned kind, const ew_type *t);
/* "int8", "string", "map" (for EW_STRUCT)...; "?" when unknown. */
const char *ewi_kind_name(unsigned kind);

/* ---- the one-block decode arena ---------------------------------------- */

/* Decoding walks the parsed tree with the same code in up to two passes:
 * measuring (base NULL: sizes are added up and the input validated), then
 * filling the one malloc'd block of that size, handing out the same offsets
 * in the same order. A decoder may instead fill a block of a guessed size in
 * one validating pass: a take past cap returns NULL while off still counts
 * on, so an overflowing guess ends with the size a filling pass needs. The
 * count saturates at SIZE_MAX, which malloc then refuses. */
typedef struct ewi_arena {
    uint8_t *base; /* NULL while measuring */
    size_t off;
    size_t cap; /* bytes at base */
} ewi_arena;

static inline void *ewi_arena_take(ewi_arena *a, size_t size, size_t align)
{
    size_t off = (a->off + (align - 1)) & ~(align - 1);
    if (off < a->off || size > SIZE_MAX - off) {
        a->off = SIZE_MAX;
        return NULL;
    }
    a->off = off + size;
    return a->base && a->off <= a->cap ? a->base + off : NULL;
}

/* n * size, saturating. */
static inline size_t ewi_mul_sat(size_t n, size_t size)
{
    size_t r;
    return __builtin_mul_overflow(n, size, &r) ? SIZE_MAX : r;
}

/* ---- values ------------------------------------------------------------ */

/* Valid UTF-8 without NUL bytes (a char * cannot carry those). */
bool ewi_utf8_valid(const char *s, size_t len);

/* An integer off the wire: negative ones in i, others in u. */
typedef struct ewi_wint {
    bool neg;
    uint64_t u;
    int64_t i;
} ewi_wint;

/* Whether w fits integer kind (inline: on the path of every field). */
static inline bool ewi_int_in_range(unsigned kind, ewi_wint w)
{
    switch (kind) {
    case EW_INT8: return w.neg ? w.i >= INT8_MIN : w.u <= INT8_MAX;
    case EW_INT16: return w.neg ? w.i >= INT16_MIN : w.u <= INT16_MAX;
    case EW_INT32: return w.neg ? w.i >= INT32_MIN : w.u <= INT32_MAX;
    case EW_INT64: return w.neg || w.u <= INT64_MAX;
    case EW_UINT8: return !w.neg && w.u <= UINT8_MAX;
    case EW_UINT16: return !w.neg && w.u <= UINT16_MAX;
    case EW_UINT32: return !w.neg && w.u <= UINT32_MAX;
    case EW_UINT64: return !w.neg;
    default: return false;
    }
}

/* Sets the message for a w that does not fit kind. */
void ewi_int_range_err(unsigned kind, ewi_wint w, ewi_cerr *e);

/* Whether w fits integer kind; if not, the message names value and kind. */
static inline bool ewi_int_fits(unsigned kind, ewi_wint w, ewi_cerr *e)
{
    if (ewi_int_in_range(kind, w))
        return true;
    ewi_int_range_err(kind, w, e);
    return false;
}

/* Stores w (which fits) into slot of integer kind. */
static inline void ewi_int_store(unsigned kind, ewi_wint w, void *slot)
{
    int64_t v = w.neg ? w.i : (int64_t)w.u; /* for signed kinds, u fits */
    switch (kind) {
    case EW_INT8: *(int8_t *)slot = (int8_t)v; break;
    case EW_INT16: *(int16_t *)slot = (int16_t)v; break;
    case EW_INT32: *(int32_t *)slot = (int32_t)v; break;
    case EW_INT64: *(int64_t *)slot = v; break;
    case EW_UINT8: *(uint8_t *)slot = (uint8_t)w.u; break;
    case EW_UINT16: *(uint16_t *)slot = (uint16_t)w.u; break;
    case EW_UINT32: *(uint32_t *)slot = (uint32_t)w.u; break;
    case EW_UINT64: *(uint64_t *)slot = w.u; break;
    default: break;
    }
}
/* Reads an integer member of kind from slot. */
ewi_wint ewi_int_load(unsigned kind, const void *slot);
/* Whether d may be stored into a float (finite values beyond FLT_MAX may
 * not: the conversion would be undefined). */
bool ewi_float_fits(double d, ewi_cerr *e);

/* ---- base64 (JSON's bytes) --------------------------------------------- */

size_t ewi_base64_encoded_len(size_t n);
/* Writes ewi_base64_encoded_len(n) characters (padded, no NUL). */
void ewi_base64_encode(const uint8_t *in, size_t n, char *out);
/* Decoded length of standard base64 text (padding optional); false when it
 * is not base64. */
bool ewi_base64_decoded_len(const char *in, size_t n, size_t *out_len);
/* Decodes text checked by ewi_base64_decoded_len. */
void ewi_base64_decode(const char *in, size_t n, uint8_t *out);

/* ---- the formats ------------------------------------------------------- */

/* Append the body of *event to out; on failure out may hold partial bytes
 * (ewi_encode cuts them off) and e says why. */
ew_err ewi_msgpack_encode(const ew_type *type, const void *event, ewi_buf *out,
                          ewi_cerr *e);
ew_err ewi_json_encode(const ew_type *type, const void *event, ewi_buf *out,
                       ewi_cerr *e);
/* Decode into a new block (*out) or fail with nothing allocated. */
ew_err ewi_msgpack_decode(const ew_type *type, const uint8_t *data, size_t len,
                          const ewi_limits *lim, void **out, ewi_cerr *e);
ew_err ewi_json_decode(const ew_type *type, const uint8_t *data, size_t len,
                       const ewi_limits *lim, void **out, ewi_cerr *e);

/* Schema-less events (codec_raw.c): check that data is one msgpack map or
 * one JSON object (EW_EINVAL with the reason otherwise), copy a raw event's
 * bytes (in its own format when it names one, else fmt), and hand a body
 * out as one block holding an ew_raw_event and the bytes. */
ew_err ewi_raw_check(ew_format fmt, const uint8_t *data, size_t len, ewi_cerr *e);
ew_err ewi_raw_encode(const ew_raw_event *r, ew_format fmt, ewi_buf *out, ewi_cerr *e);
ew_err ewi_raw_decode(ew_format fmt, const uint8_t *data, size_t len, void **out,
                      ewi_cerr *e);

#endif
