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

/* ---- schema-less events ------------------------------------------------ */

/* A body that is already encoded, for programs that handle events without a
 * C struct (tools, gateways, bridges). An event whose descriptor has
 * .type = &ew_raw_type (and a .name: the raw type's own name is no event
 * name) is sent with a pointer to an ew_raw_event, and its listeners receive
 * a const ew_raw_event * instead of a decoded struct:
 *
 *   static const ew_event_desc ANY = { .type = &ew_raw_type, .name = "HelloEvent" };
 *   const char json[] = "{\"world\":\"x\",\"count\":1}";
 *   ew_send(m, &ANY, &(ew_raw_event){ json, sizeof json - 1, EW_FORMAT_JSON });
 *
 * The bytes travel as they are, with the content type of their format, so a
 * listener of the event's typed struct decodes them as usual; they must be
 * one msgpack map, or one JSON object (checked: EW_EENCODE, with the reason,
 * when they are not). On receipt the body is checked the same way (a body
 * that is not a map or an object is dead-lettered as decode-failed); nothing
 * else of it is checked against any schema. */
typedef struct ew_raw_event {
    const void *data; /* the encoded body */
    size_t len;       /* its length in bytes */
    ew_format format; /* of data; on send EW_FORMAT_DEFAULT is the event's format */
} ew_raw_event;

/* The raw type. ew_encode writes a raw event's bytes (in its own format when
 * it names one; fmt otherwise); ew_decode gives one allocation holding an
 * ew_raw_event and a copy of the bytes, freed with ew_event_free. */
EW_API extern const ew_type ew_raw_type;

EW_END_DECLS

#endif
