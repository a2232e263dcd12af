/* Internal codec entry points: encode into a reusable growable buffer. */
#ifndef EVENTWIRE_CODEC_INTERNAL_H
#define EVENTWIRE_CODEC_INTERNAL_H

#include "ewi.h"

/* A growable byte buffer. data is malloc'd; zero-initialize before use. */
typedef struct ewi_buf {
    uint8_t *data;
    size_t len, cap;
} ewi_buf;

ew_err ewi_buf_reserve(ewi_buf *b, size_t extra);
ew_err ewi_buf_append(ewi_buf *b, const void *data, size_t len);
/* Hands the bytes out (caller frees) and resets b. */
uint8_t *ewi_buf_steal(ewi_buf *b, size_t *len);
void ewi_buf_free(ewi_buf *b);

/* Appends the encoding of *event to out (which may hold bytes already: they
 * are kept; on failure out is restored to its old length). fmt must be
 * EW_FORMAT_MSGPACK or EW_FORMAT_JSON. */
ew_err ewi_encode(const ew_type *type, ew_format fmt, const void *event,
                  ewi_buf *out, char *err, size_t errlen);

/* Checks a type table once (kinds, nested types, names, offsets within the
 * struct); EW_EINVAL with the reason. Used when an event is registered. */
ew_err ewi_type_check(const ew_type *type, char *err, size_t errlen);

#endif
