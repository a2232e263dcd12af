/* eventwire: schema-driven body codecs (msgpack through msgpack-c, JSON
 * through jansson). The manager uses them on every send and delivery; they
 * are public so that tools and tests can produce and read bodies too. */
#ifndef EVENTWIRE_CODEC_H
#define EVENTWIRE_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include <eventwire/error.h>
#include <eventwire/export.h>
#include <eventwire/schema.h>

EW_BEGIN_DECLS

typedef enum ew_format {
    EW_FORMAT_DEFAULT = 0, /* in descriptors: the manager's default (msgpack) */
    EW_FORMAT_MSGPACK = 1, /* application/msgpack: a map from field name to value */
    EW_FORMAT_JSON = 2     /* application/json: an object of the fields, no wrapper */
} ew_format;

#define EW_CONTENT_TYPE_MSGPACK "application/msgpack"
#define EW_CONTENT_TYPE_JSON "application/json"

/* Decoding limits; a zero member takes its default. */
typedef struct ew_decode_limits {
    size_t max_string;  /* bytes in one string or bytes value; default 1 MiB */
    size_t max_items;   /* elements in one array or map; default 1,000,000 */
    unsigned max_depth; /* nesting of structs and arrays; default 32 */
} ew_decode_limits;

/* The content type string of fmt (EW_FORMAT_DEFAULT: msgpack). Thread-safe. */
EW_API const char *ew_format_content_type(ew_format fmt);

/* The format of a content type ("application/json; charset=utf-8" is JSON);
 * EW_FORMAT_DEFAULT when unknown. NULL or "" is msgpack. Thread-safe. */
EW_API ew_format ew_format_from_content_type(const char *content_type);

/* Encodes *event of type into a new buffer. On success *out (free with free())
 * holds *out_len bytes. On failure nothing is allocated and err (if not NULL)
 * holds a text naming the field path, e.g. "order.items[2].sku: NULL string".
 * Thread-safe. */
EW_API ew_err ew_encode(const ew_type *type, ew_format fmt, const void *event,
                        uint8_t **out, size_t *out_len, char *err, size_t errlen);

/* Decodes len bytes into a new struct of type. Unknown fields are ignored;
 * absent optional fields stay unset. On success *out is one allocation owning
 * every string, array and map inside it: free it with ew_event_free. On failure
 * *out is NULL, nothing is allocated and err holds e.g.
 * "order.items[3].sku: expected string, got int". limits may be NULL.
 * Thread-safe. */
EW_API ew_err ew_decode(const ew_type *type, ew_format fmt, const void *data,
                        size_t len, const ew_decode_limits *limits, void **out,
                        char *err, size_t errlen);

/* Frees what ew_decode returned (or NULL). Thread-safe. */
EW_API void ew_event_free(const ew_type *type, void *event);

EW_END_DECLS

#endif
