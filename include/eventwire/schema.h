/* eventwire: event schemas.
 *
 * An event type is a plain C struct plus a table of its fields, declared once
 * next to the struct with the macros below. The table drives both codecs
 * (msgpack and JSON): nobody writes a serializer by hand. Each field macro
 * checks at compile time that the C member has the type its kind needs.
 *
 *   typedef struct { char *sku; uint32_t qty; } line;
 *   EW_TYPE(line, EW_FIELD(line, sku, EW_STRING), EW_FIELD(line, qty, EW_UINT32));
 *
 *   typedef struct {
 *       int64_t id; line *items; size_t items_count;
 *       bool has_note; char *note; ew_map tags;
 *   } order;
 *   EW_TYPE(order,
 *           EW_FIELD(order, id, EW_INT64),
 *           EW_NESTED_ARRAY(order, items, line, items_count),
 *           EW_OPTIONAL(order, note, EW_STRING, has_note),
 *           EW_FIELD(order, tags, EW_MAP));
 *
 * C types per kind: EW_BOOL bool; EW_INT8..EW_INT64 int8_t..int64_t;
 * EW_UINT8..EW_UINT64 uint8_t..uint64_t; EW_FLOAT float; EW_DOUBLE double;
 * EW_STRING char * (or const char *), NUL-terminated UTF-8; EW_BYTES ew_bytes;
 * EW_MAP ew_map (string keys to string values); nested structs by value.
 * Arrays are a pointer to the first element plus a size_t count member.
 * Optional fields have a bool presence member; absent ones are not encoded
 * and stay unset (presence false, value zero) after decoding.
 */
#ifndef EVENTWIRE_SCHEMA_H
#define EVENTWIRE_SCHEMA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <eventwire/export.h>

EW_BEGIN_DECLS

typedef enum ew_kind {
    EW_BOOL = 1,
    EW_INT8, EW_INT16, EW_INT32, EW_INT64,
    EW_UINT8, EW_UINT16, EW_UINT32, EW_UINT64,
    EW_FLOAT, EW_DOUBLE,
    EW_STRING,
    EW_BYTES,
    EW_STRUCT,
    EW_MAP
} ew_kind;

/* Bytes: msgpack bin, base64 text in JSON. */
typedef struct ew_bytes {
    uint8_t *data;
    size_t len;
} ew_bytes;

typedef struct ew_map_entry {
    char *key;
    char *value;
} ew_map_entry;

/* A string to string map: msgpack map, JSON object. Keys should be unique;
 * encoding writes entries in order, decoding keeps the wire order. */
typedef struct ew_map {
    ew_map_entry *entries;
    size_t count;
} ew_map;

enum {
    EW_FIELD_ARRAY = 1u << 0,    /* aux_offset: the size_t element count */
    EW_FIELD_OPTIONAL = 1u << 1  /* aux_offset: the bool presence flag */
};

struct ew_type;

typedef struct ew_field {
    const char *name;            /* the name on the wire */
    uint8_t kind;                /* ew_kind */
    uint8_t flags;               /* EW_FIELD_ARRAY, EW_FIELD_OPTIONAL */
    uint32_t offset;             /* of the value, or of the element pointer */
    uint32_t aux_offset;         /* of the count or the presence flag */
    const struct ew_type *type;  /* EW_STRUCT: the nested type */
} ew_field;

typedef struct ew_type {
    const char *name;            /* the C type's name; default event name */
    size_t size;                 /* sizeof the struct */
    const ew_field *fields;
    size_t nfields;
} ew_type;

/* ---- declaring types ------------------------------------------------- */

/* A type is defined once, in one .c file, and declared in a header for the
 * other files that use it (as an event, or nested in another type):
 *
 *   // order.h                          // order.c
 *   typedef struct { ... } order;       #include "order.h"
 *   EW_TYPE_DECLARE(order);             EW_TYPE(order, EW_FIELD(order, id, EW_INT64), ...);
 *
 * For a struct known by its tag only (`struct order`, no typedef), use
 * EW_STRUCT_TYPE_DECLARE(order) and EW_STRUCT_TYPE(order, ...), and name
 * the type `struct order` in the field macros: EW_FIELD(struct order, id,
 * EW_INT64). Either way the object is `const ew_type order_type` and
 * EW_NESTED & co. name it by `order`. */

/* Declares `const ew_type T_type` of the typedef name T. */
#define EW_TYPE_DECLARE(T)                                                \
    typedef T ew_ctype_##T##_;                                            \
    extern const ew_type T##_type

/* Defines `const ew_type T_type` describing the struct typedef T; its name
 * (the default event name) is "T". Recursive types need nothing more. */
#define EW_TYPE(T, ...)                                                   \
    EW_TYPE_DECLARE(T);                                                   \
    EW_PRIV_DEFINE_(T, T, __VA_ARGS__)

/* The same for `struct tag`: declares / defines `const ew_type tag_type`,
 * named "tag". */
#define EW_STRUCT_TYPE_DECLARE(tag)                                       \
    typedef struct tag ew_ctype_##tag##_;                                 \
    extern const ew_type tag##_type

#define EW_STRUCT_TYPE(tag, ...)                                          \
    EW_STRUCT_TYPE_DECLARE(tag);                                          \
    EW_PRIV_DEFINE_(tag, struct tag, __VA_ARGS__)

/* A scalar, string, bytes or map member. */
#define EW_FIELD(T, f, KIND)                                              \
    {#f, KIND, 0,                                                         \
     (uint32_t)offsetof(T, f) + EW_PRIV_CHECK_(KIND, ((T *)0)->f), 0, NULL}

/* An optional member with its bool presence flag `has`. */
#define EW_OPTIONAL(T, f, KIND, has)                                      \
    {#f, KIND, EW_FIELD_OPTIONAL,                                         \
     (uint32_t)offsetof(T, f) + EW_PRIV_CHECK_(KIND, ((T *)0)->f),        \
     (uint32_t)offsetof(T, has) + EW_PRIV_IS_(bool, ((T *)0)->has), NULL}

/* An array: `KIND-type *f` with `size_t count` elements. */
#define EW_ARRAY(T, f, KIND, count)                                       \
    {#f, KIND, EW_FIELD_ARRAY,                                            \
     (uint32_t)offsetof(T, f) + EW_PRIV_CHECKP_(KIND, ((T *)0)->f),       \
     (uint32_t)offsetof(T, count) + EW_PRIV_IS_(size_t, ((T *)0)->count), NULL}

/* A nested struct held by value; S names a type declared or defined above
 * with one of the macros (a typedef name or a struct tag). */
#define EW_NESTED(T, f, S)                                                \
    {#f, EW_STRUCT, 0,                                                    \
     (uint32_t)offsetof(T, f) + EW_PRIV_IS_(ew_ctype_##S##_, ((T *)0)->f), \
     0, &S##_type}

#define EW_OPTIONAL_NESTED(T, f, S, has)                                  \
    {#f, EW_STRUCT, EW_FIELD_OPTIONAL,                                    \
     (uint32_t)offsetof(T, f) + EW_PRIV_IS_(ew_ctype_##S##_, ((T *)0)->f), \
     (uint32_t)offsetof(T, has) + EW_PRIV_IS_(bool, ((T *)0)->has), &S##_type}

/* An array of nested structs: `S *f` with `size_t count` elements. */
#define EW_NESTED_ARRAY(T, f, S, count)                                   \
    {#f, EW_STRUCT, EW_FIELD_ARRAY,                                       \
     (uint32_t)offsetof(T, f) + EW_PRIV_IS_(ew_ctype_##S##_ *, ((T *)0)->f), \
     (uint32_t)offsetof(T, count) + EW_PRIV_IS_(size_t, ((T *)0)->count),  \
     &S##_type}

/* ---- not for use: what the macros above expand to ---------------------- */

/* EW_PRIV_* macros and the ew_ctype_*_ typedefs belong to the macros above;
 * they may change in any release. */
#define EW_PRIV_DEFINE_(N, CT, ...)                                       \
    static const ew_field N##_ew_fields_[] = {__VA_ARGS__};               \
    const ew_type N##_type = {#N, sizeof(CT), N##_ew_fields_,             \
                              sizeof(N##_ew_fields_) / sizeof(ew_field)}

/* Compile-time member type checks: a mismatch has no _Generic association
 * and fails to compile. They add 0 to the offset. */
#define EW_PRIV_IS_(CT, e) _Generic((e), CT: 0u)
#define EW_PRIV_CHECK_(KIND, e) _Generic((e), EW_PRIV_CT_##KIND)
#define EW_PRIV_CHECKP_(KIND, e) _Generic((e), EW_PRIV_CTP_##KIND)
#define EW_PRIV_CT_EW_BOOL bool: 0u
#define EW_PRIV_CT_EW_INT8 int8_t: 0u
#define EW_PRIV_CT_EW_INT16 int16_t: 0u
#define EW_PRIV_CT_EW_INT32 int32_t: 0u
#define EW_PRIV_CT_EW_INT64 int64_t: 0u
#define EW_PRIV_CT_EW_UINT8 uint8_t: 0u
#define EW_PRIV_CT_EW_UINT16 uint16_t: 0u
#define EW_PRIV_CT_EW_UINT32 uint32_t: 0u
#define EW_PRIV_CT_EW_UINT64 uint64_t: 0u
#define EW_PRIV_CT_EW_FLOAT float: 0u
#define EW_PRIV_CT_EW_DOUBLE double: 0u
#define EW_PRIV_CT_EW_STRING char *: 0u, const char *: 0u
#define EW_PRIV_CT_EW_BYTES ew_bytes: 0u
#define EW_PRIV_CT_EW_MAP ew_map: 0u
#define EW_PRIV_CTP_EW_BOOL bool *: 0u
#define EW_PRIV_CTP_EW_INT8 int8_t *: 0u
#define EW_PRIV_CTP_EW_INT16 int16_t *: 0u
#define EW_PRIV_CTP_EW_INT32 int32_t *: 0u
#define EW_PRIV_CTP_EW_INT64 int64_t *: 0u
#define EW_PRIV_CTP_EW_UINT8 uint8_t *: 0u
#define EW_PRIV_CTP_EW_UINT16 uint16_t *: 0u
#define EW_PRIV_CTP_EW_UINT32 uint32_t *: 0u
#define EW_PRIV_CTP_EW_UINT64 uint64_t *: 0u
#define EW_PRIV_CTP_EW_FLOAT float *: 0u
#define EW_PRIV_CTP_EW_DOUBLE double *: 0u
#define EW_PRIV_CTP_EW_STRING char **: 0u, const char **: 0u
#define EW_PRIV_CTP_EW_BYTES ew_bytes *: 0u
#define EW_PRIV_CTP_EW_MAP ew_map *: 0u

EW_END_DECLS

#endif
