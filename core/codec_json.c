/* The JSON body: an object of exactly the event's fields, no wrapper (what
 * aspyx-event sends), through jansson. Encoding builds a jansson tree and
 * dumps it compactly into an ewi_buf; decoding walks jansson's tree against
 * the schema twice (measure, then fill one block), as the msgpack side does. */
#include "codec_priv.h"

#include <jansson.h>
#include <math.h>
#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>

/* ======================================================================== */
/* encoding                                                                 */
/* ======================================================================== */

static ew_err jenc_struct(const ew_type *t, const uint8_t *src, unsigned depth,
                          ewi_cerr *e, json_t **out);

static ew_err nomem(ewi_cerr *e)
{
    ewi_cerr_msg(e, "out of memory");
    return EW_ENOMEM;
}

static ew_err jenc_text(const char *s, const char *what, ewi_cerr *e,
                        json_t **out)
{
    if (!s) {
        ewi_cerr_msg(e, "NULL %s", what);
        return EW_EENCODE;
    }
    size_t n = strlen(s);
    if (!ewi_utf8_valid(s, n)) {
        ewi_cerr_msg(e, "%s is not valid UTF-8", what);
        return EW_EENCODE;
    }
    *out = json_stringn_nocheck(s, n);
    return *out ? EW_OK : nomem(e);
}

/* A float as the double nearest its shortest decimal form, so that 0.1f
 * reaches a Python reader as 0.1, not 0.10000000149011612. */
static double float_for_json(float f)
{
    char buf[32];
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)f);
        if (strtof(buf, NULL) == f)
            return strtod(buf, NULL);
    }
    return (double)f;
}

static ew_err jenc_map(const ew_map *m, unsigned depth, ewi_cerr *e,
                       json_t **out)
{
    if (depth > EWI_CODEC_MAX_DEPTH) {
        ewi_cerr_msg(e, "nesting deeper than %u", EWI_CODEC_MAX_DEPTH);
        return EW_EENCODE;
    }
    if (!m->entries && m->count > 0) {
        ewi_cerr_msg(e, "NULL map entries with count %zu", m->count);
        return EW_EENCODE;
    }
    json_t *obj = json_object();
    if (!obj)
        return nomem(e);
    for (size_t i = 0; i < m->count; i++) {
        const ew_map_entry *en = &m->entries[i];
        json_t *v = NULL;
        ew_err rc = EW_OK;
        if (!en->key) {
            ewi_cerr_msg(e, "NULL map key");
            rc = EW_EENCODE;
        } else if (!ewi_utf8_valid(en->key, strlen(en->key))) {
            ewi_cerr_msg(e, "map key is not valid UTF-8");
            rc = EW_EENCODE;
        } else if (json_object_get(obj, en->key)) {
            ewi_cerr_msg(e, "duplicate key \"%.64s\" (a JSON object cannot carry it)",
                         en->key);
            rc = EW_EENCODE;
        } else {
            rc = jenc_text(en->value, "map value", e, &v);
            if (rc == EW_OK && json_object_set_new_nocheck(obj, en->key, v) != 0)
                rc = nomem(e);
        }
        if (rc != EW_OK) {
            ewi_cerr_index(e, i);
            json_decref(obj);
            return rc;
        }
    }
    *out = obj;
    return EW_OK;
}

static ew_err jenc_value(unsigned kind, const ew_type *nt, const uint8_t *slot,
                         unsigned depth, ewi_cerr *e, json_t **out)
{
    json_t *v = NULL;
    switch (kind) {
    case EW_BOOL:
        v = json_boolean(*(const bool *)slot);
        break;
    case EW_INT8: case EW_INT16: case EW_INT32: case EW_INT64:
    case EW_UINT8: case EW_UINT16: case EW_UINT32: case EW_UINT64: {
        ewi_wint w = ewi_int_load(kind, slot);
        if (!w.neg && w.u > INT64_MAX) {
            ewi_cerr_msg(e, "%llu does not fit a JSON integer (jansson carries "
                            "at most 9223372036854775807)",
                         (unsigned long long)w.u);
            return EW_EENCODE;
        }
        v = json_integer(w.neg ? (json_int_t)w.i : (json_int_t)w.u);
        break;
    }
    case EW_FLOAT:
    case EW_DOUBLE: {
        double d = kind == EW_FLOAT ? (double)*(const float *)slot
                                    : *(const double *)slot;
        if (!isfinite(d)) {
            ewi_cerr_msg(e, "%s cannot be carried by JSON", isnan(d) ? "NaN" : "infinity");
            return EW_EENCODE;
        }
        if (kind == EW_FLOAT)
            d = float_for_json(*(const float *)slot);
        v = json_real(d);
        break;
    }
    case EW_STRING:
        return jenc_text(*(char *const *)slot, "string", e, out);
    case EW_BYTES: {
        const ew_bytes *b = (const ew_bytes *)slot;
        if (!b->data && b->len > 0) {
            ewi_cerr_msg(e, "NULL bytes with length %zu", b->len);
            return EW_EENCODE;
        }
        if (b->len > (SIZE_MAX - 3) / 4 * 3) {
            ewi_cerr_msg(e, "bytes of %zu are too long", b->len);
            return EW_EENCODE;
        }
        size_t n = ewi_base64_encoded_len(b->len);
        char local[256];
        char *txt = n <= sizeof local ? local : malloc(n);
        if (!txt)
            return nomem(e);
        ewi_base64_encode(b->data, b->len, txt);
        v = json_stringn_nocheck(txt, n);
        if (txt != local)
            free(txt);
        break;
    }
    case EW_MAP:
        return jenc_map((const ew_map *)slot, depth + 1, e, out);
    case EW_STRUCT:
        if (!nt) {
            ewi_cerr_msg(e, "nested struct without a type");
            return EW_EINVAL;
        }
        return jenc_struct(nt, slot, depth + 1, e, out);
    default:
        ewi_cerr_msg(e, "unknown kind %u", kind);
        return EW_EINVAL;
    }
    if (!v)
        return nomem(e);
    *out = v;
    return EW_OK;
}

static ew_err jenc_array(const ew_field *f, const uint8_t *src, unsigned depth,
                         ewi_cerr *e, json_t **out)
{
    const uint8_t *p = *(const uint8_t *const *)(src + f->offset);
    size_t n = *(const size_t *)(src + f->aux_offset);
    if (depth + 1 > EWI_CODEC_MAX_DEPTH) {
        ewi_cerr_msg(e, "nesting deeper than %u", EWI_CODEC_MAX_DEPTH);
        return EW_EENCODE;
    }
    if (!p && n > 0) {
        ewi_cerr_msg(e, "NULL array with %zu items", n);
        return EW_EENCODE;
    }
    size_t esz = ewi_kind_size(f->kind, f->type);
    json_t *arr = json_array();
    if (!arr)
        return nomem(e);
    for (size_t i = 0; i < n; i++) {
        json_t *v = NULL;
        ew_err rc = jenc_value(f->kind, f->type, p + i * esz, depth + 1, e, &v);
        if (rc == EW_OK && json_array_append_new(arr, v) != 0)
            rc = nomem(e);
        if (rc != EW_OK) {
            ewi_cerr_index(e, i);
            json_decref(arr);
            return rc;
        }
    }
    *out = arr;
    return EW_OK;
}

static ew_err jenc_struct(const ew_type *t, const uint8_t *src, unsigned depth,
                          ewi_cerr *e, json_t **out)
{
    if (depth > EWI_CODEC_MAX_DEPTH) {
        ewi_cerr_msg(e, "nesting deeper than %u", EWI_CODEC_MAX_DEPTH);
        return EW_EENCODE;
    }
    json_t *obj = json_object();
    if (!obj)
        return nomem(e);
    for (size_t i = 0; i < t->nfields; i++) {
        const ew_field *f = &t->fields[i];
        if ((f->flags & EW_FIELD_OPTIONAL) && !*(const bool *)(src + f->aux_offset))
            continue; /* absent: not on the wire */
        json_t *v = NULL;
        ew_err rc = (f->flags & EW_FIELD_ARRAY)
                        ? jenc_array(f, src, depth, e, &v)
                        : jenc_value(f->kind, f->type, src + f->offset, depth, e, &v);
        /* jansson keeps insertion order: the body lists fields in schema order. */
        if (rc == EW_OK && json_object_set_new(obj, f->name, v) != 0) {
            ewi_cerr_msg(e, "field name is not valid UTF-8, or out of memory");
            rc = EW_EENCODE;
        }
        if (rc != EW_OK) {
            ewi_cerr_field(e, f->name);
            json_decref(obj);
            return rc;
        }
    }
    *out = obj;
    return EW_OK;
}

static int jenc_write(const char *buf, size_t len, void *data)
{
    return ewi_buf_append(data, buf, len) == EW_OK ? 0 : -1;
}

ew_err ewi_json_encode(const ew_type *type, const void *event, ewi_buf *out,
                       ewi_cerr *e)
{
    json_t *root = NULL;
    ew_err rc = jenc_struct(type, event, 1, e, &root);
    if (rc != EW_OK)
        return rc;
    if (json_dump_callback(root, jenc_write, out, JSON_COMPACT) != 0)
        rc = nomem(e);
    json_decref(root);
    return rc;
}

/* ======================================================================== */
/* decoding                                                                 */
/* ======================================================================== */

typedef struct jdec {
    ewi_limits lim;
    ewi_arena a;
    ewi_cerr *e;
} jdec;

static const char *json_type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "object";
    case JSON_ARRAY: return "array";
    case JSON_STRING: return "string";
    case JSON_INTEGER: return "integer";
    case JSON_REAL: return "real";
    case JSON_TRUE:
    case JSON_FALSE: return "bool";
    case JSON_NULL: return "null";
    default: return "?";
    }
}

static ew_err jtype_err(jdec *d, const char *want, const json_t *v)
{
    ewi_cerr_msg(d->e, "expected %s, got %s", want, json_type_name(v));
    return EW_EDECODE;
}

static ew_err jtoo_deep(jdec *d)
{
    ewi_cerr_msg(d->e, "nesting deeper than %u", d->lim.max_depth);
    return EW_EDECODE;
}

/* jansson has checked the UTF-8 and refused \u0000 (no JSON_ALLOW_NUL). */
static ew_err jdec_text(jdec *d, const json_t *v, char **slot, const char *what)
{
    if (!json_is_string(v))
        return jtype_err(d, what, v);
    size_t n = json_string_length(v);
    if (!d->a.base && n > d->lim.max_string) {
        ewi_cerr_msg(d->e, "%s of %zu bytes over the limit %zu", what, n,
                     d->lim.max_string);
        return EW_EDECODE;
    }
    char *s = ewi_arena_take(&d->a, n + 1, 1);
    if (s) {
        memcpy(s, json_string_value(v), n);
        s[n] = '\0';
        *slot = s;
    }
    return EW_OK;
}

static ew_err jdec_struct(jdec *d, const ew_type *t, const json_t *o,
                          uint8_t *dst, unsigned depth);

static ew_err jdec_map(jdec *d, const json_t *o, ew_map *slot, unsigned depth)
{
    if (depth > d->lim.max_depth)
        return jtoo_deep(d);
    if (!json_is_object(o))
        return jtype_err(d, "object", o);
    size_t n = json_object_size(o);
    if (n > d->lim.max_items) {
        ewi_cerr_msg(d->e, "%zu entries over the limit %zu", n, d->lim.max_items);
        return EW_EDECODE;
    }
    ew_map_entry *en = NULL;
    if (n)
        en = ewi_arena_take(&d->a, ewi_mul_sat(n, sizeof *en), alignof(ew_map_entry));
    if (slot) {
        slot->entries = en;
        slot->count = n;
    }
    size_t i = 0;
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)(uintptr_t)o, key, val) {
        size_t kl = strlen(key);
        if (!d->a.base && kl > d->lim.max_string) {
            ewi_cerr_msg(d->e, "string key of %zu bytes over the limit %zu", kl,
                         d->lim.max_string);
            ewi_cerr_index(d->e, i);
            return EW_EDECODE;
        }
        char *k = ewi_arena_take(&d->a, kl + 1, 1);
        if (k) {
            memcpy(k, key, kl + 1);
            en[i].key = k;
        }
        ew_err rc = jdec_text(d, val, en ? &en[i].value : NULL, "string");
        if (rc != EW_OK) {
            ewi_cerr_key(d->e, key, kl);
            return rc;
        }
        i++;
    }
    return EW_OK;
}

static ew_err jdec_value(jdec *d, unsigned kind, const ew_type *nt,
                         const json_t *v, uint8_t *slot, unsigned depth)
{
    switch (kind) {
    case EW_BOOL:
        if (!json_is_boolean(v))
            return jtype_err(d, "bool", v);
        if (slot)
            *(bool *)slot = json_is_true(v);
        return EW_OK;
    case EW_INT8: case EW_INT16: case EW_INT32: case EW_INT64:
    case EW_UINT8: case EW_UINT16: case EW_UINT32: case EW_UINT64: {
        if (!json_is_integer(v))
            return jtype_err(d, "integer", v);
        json_int_t x = json_integer_value(v);
        ewi_wint w = {false, 0, 0};
        if (x < 0) {
            w.neg = true;
            w.i = (int64_t)x;
        } else {
            w.u = (uint64_t)x;
        }
        if (!ewi_int_fits(kind, w, d->e))
            return EW_EDECODE;
        if (slot)
            ewi_int_store(kind, w, slot);
        return EW_OK;
    }
    case EW_FLOAT:
    case EW_DOUBLE: {
        if (!json_is_number(v))
            return jtype_err(d, "number", v);
        double x = json_number_value(v);
        if (kind == EW_FLOAT) {
            if (!ewi_float_fits(x, d->e))
                return EW_EDECODE;
            if (slot)
                *(float *)slot = (float)x;
        } else if (slot) {
            *(double *)slot = x;
        }
        return EW_OK;
    }
    case EW_STRING:
        return jdec_text(d, v, (char **)slot, "string");
    case EW_BYTES: {
        if (!json_is_string(v))
            return jtype_err(d, "base64 string", v);
        const char *txt = json_string_value(v);
        size_t tl = json_string_length(v), n = 0;
        if (!ewi_base64_decoded_len(txt, tl, &n)) {
            ewi_cerr_msg(d->e, "not base64");
            return EW_EDECODE;
        }
        if (n > d->lim.max_string) {
            ewi_cerr_msg(d->e, "bytes of %zu over the limit %zu", n, d->lim.max_string);
            return EW_EDECODE;
        }
        uint8_t *p = n ? ewi_arena_take(&d->a, n, 1) : NULL;
        if (slot) {
            ew_bytes *b = (ew_bytes *)slot;
            if (n)
                ewi_base64_decode(txt, tl, p);
            b->data = p;
            b->len = n;
        }
        return EW_OK;
    }
    case EW_MAP:
        return jdec_map(d, v, (ew_map *)slot, depth + 1);
    case EW_STRUCT:
        if (!nt) {
            ewi_cerr_msg(d->e, "nested struct without a type");
            return EW_EINVAL;
        }
        return jdec_struct(d, nt, v, slot, depth + 1);
    default:
        ewi_cerr_msg(d->e, "unknown kind %u", kind);
        return EW_EINVAL;
    }
}

static ew_err jdec_array(jdec *d, const ew_field *f, const json_t *v,
                         uint8_t *dst, unsigned depth)
{
    if (depth + 1 > d->lim.max_depth)
        return jtoo_deep(d);
    if (!json_is_array(v))
        return jtype_err(d, "array", v);
    size_t n = json_array_size(v);
    if (n > d->lim.max_items) {
        ewi_cerr_msg(d->e, "%zu items over the limit %zu", n, d->lim.max_items);
        return EW_EDECODE;
    }
    size_t esz = ewi_kind_size(f->kind, f->type);
    if (esz == 0) {
        ewi_cerr_msg(d->e, "unknown kind %u", (unsigned)f->kind);
        return EW_EINVAL;
    }
    uint8_t *p = NULL;
    if (n)
        p = ewi_arena_take(&d->a, ewi_mul_sat(n, esz),
                           ewi_kind_align(f->kind, f->type));
    if (dst) {
        if (p && f->kind == EW_STRUCT)
            memset(p, 0, n * esz); /* absent optional members read as zero */
        *(uint8_t **)(dst + f->offset) = p;
        *(size_t *)(dst + f->aux_offset) = n;
    }
    for (size_t i = 0; i < n; i++) {
        ew_err rc = jdec_value(d, f->kind, f->type, json_array_get(v, i),
                               p ? p + i * esz : NULL, depth + 1);
        if (rc != EW_OK) {
            ewi_cerr_index(d->e, i);
            return rc;
        }
    }
    return EW_OK;
}

static const ew_field *jfind_field(const ew_type *t, const char *key,
                                   size_t *cursor)
{
    size_t n = t->nfields, i = *cursor;
    for (size_t k = 0; k < n; k++, i++) {
        if (i >= n)
            i = 0;
        if (strcmp(t->fields[i].name, key) == 0) {
            *cursor = i + 1;
            return &t->fields[i];
        }
    }
    return NULL;
}

#define SEEN_LOCAL_WORDS 8

static ew_err jdec_struct(jdec *d, const ew_type *t, const json_t *o,
                          uint8_t *dst, unsigned depth)
{
    if (depth > d->lim.max_depth)
        return jtoo_deep(d);
    if (!json_is_object(o))
        return jtype_err(d, "object", o);
    bool measuring = !d->a.base;
    uint64_t seen_local[SEEN_LOCAL_WORDS], *seen = seen_local;
    if (measuring) {
        size_t words = (t->nfields + 63) / 64;
        if (words > SEEN_LOCAL_WORDS) {
            seen = calloc(words, sizeof *seen);
            if (!seen)
                return EW_ENOMEM;
        } else {
            memset(seen_local, 0, words * sizeof *seen);
        }
    }
    ew_err rc = EW_OK;
    size_t cursor = 0;
    const char *key;
    json_t *val;
    /* JSON_REJECT_DUPLICATES at load: a key appears once. */
    json_object_foreach((json_t *)(uintptr_t)o, key, val) {
        const ew_field *f = jfind_field(t, key, &cursor);
        if (!f)
            continue; /* unknown field: a newer producer's, skipped */
        if (measuring) {
            size_t fi = (size_t)(f - t->fields);
            seen[fi / 64] |= 1ull << (fi % 64);
        }
        if ((f->flags & EW_FIELD_OPTIONAL) && json_is_null(val))
            continue; /* null is absent */
        if (f->flags & EW_FIELD_ARRAY) {
            rc = jdec_array(d, f, val, dst, depth);
        } else {
            rc = jdec_value(d, f->kind, f->type, val,
                            dst ? dst + f->offset : NULL, depth);
            if (rc == EW_OK && dst && (f->flags & EW_FIELD_OPTIONAL))
                *(bool *)(dst + f->aux_offset) = true;
        }
        if (rc != EW_OK) {
            ewi_cerr_field(d->e, f->name);
            break;
        }
    }
    if (rc == EW_OK && measuring) {
        for (size_t i = 0; i < t->nfields; i++) {
            if (!(t->fields[i].flags & EW_FIELD_OPTIONAL) &&
                !(seen[i / 64] & (1ull << (i % 64)))) {
                ewi_cerr_msg(d->e, "missing required field");
                ewi_cerr_field(d->e, t->fields[i].name);
                rc = EW_EDECODE;
                break;
            }
        }
    }
    if (seen != seen_local)
        free(seen);
    return rc;
}

ew_err ewi_json_decode(const ew_type *type, const uint8_t *data, size_t len,
                       const ewi_limits *lim, void **out, ewi_cerr *e)
{
    json_error_t jerr;
    /* jansson refuses trailing bytes (other than whitespace) by itself. */
    json_t *root = json_loadb((const char *)data, len,
                              JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (!root) {
        ewi_cerr_msg(e, "invalid JSON: %s (line %d, column %d)", jerr.text,
                     jerr.line, jerr.column);
        return EW_EDECODE;
    }
    jdec d;
    d.lim = *lim;
    d.e = e;
    d.a.base = NULL;
    d.a.off = type->size;
    d.a.cap = 0;
    ew_err rc = jdec_struct(&d, type, root, NULL, 1);
    if (rc == EW_OK) {
        size_t total = d.a.off;
        uint8_t *block = total > PTRDIFF_MAX ? NULL : malloc(total);
        if (!block) {
            rc = EW_ENOMEM;
            ewi_cerr_msg(e, "out of memory for %zu bytes", total);
        } else {
            memset(block, 0, type->size);
            d.a.base = block;
            d.a.off = type->size;
            d.a.cap = total;
            rc = jdec_struct(&d, type, root, block, 1);
            if (rc == EW_OK)
                *out = block;
            else
                free(block);
        }
    }
    json_decref(root);
    return rc;
}
