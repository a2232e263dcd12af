/* The msgpack body: a map from field name to value, through msgpack-c.
 * Encoding packs straight into an ewi_buf; decoding checks the framing,
 * lets msgpack-c build its object tree in a zone, then walks that tree
 * against the schema twice (measure, then fill one block). */
#include "codec_priv.h"

#include <msgpack.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdlib.h>

/* ======================================================================== */
/* encoding                                                                 */
/* ======================================================================== */

typedef struct menc {
    msgpack_packer pk;
    ewi_buf *out;
    bool nomem;
    ewi_cerr *e;
} menc;

static __attribute__((noinline)) int menc_write_long(menc *c, const char *buf,
                                                     size_t len)
{
    ewi_buf *b = c->out;
    if (len > b->cap - b->len && ewi_buf_reserve(b, len) != EW_OK) {
        c->nomem = true;
        return -1;
    }
    memcpy(b->data + b->len, buf, len);
    b->len += len;
    return 0;
}

/* msgpack_packer's write callback: append to our buffer (an sbuffer would
 * start with an 8 KiB allocation per message). msgpack-c writes each type
 * byte and header (1 to 9 bytes) with a call of its own: those take a short
 * path of constant-size copies, which compile to plain moves. */
static int menc_write(void *data, const char *buf, size_t len)
{
    menc *c = data;
    ewi_buf *b = c->out;
    if (len > 9 || len > b->cap - b->len)
        return menc_write_long(c, buf, len);
    uint8_t *dst = b->data + b->len;
    switch (len) {
    case 0: break; /* the body of an empty string */
    case 1: dst[0] = (uint8_t)buf[0]; break;
    case 2: memcpy(dst, buf, 2); break;
    case 3: memcpy(dst, buf, 3); break;
    case 4: memcpy(dst, buf, 4); break;
    case 5: memcpy(dst, buf, 5); break;
    case 6: memcpy(dst, buf, 6); break;
    case 7: memcpy(dst, buf, 7); break;
    case 8: memcpy(dst, buf, 8); break;
    case 9: memcpy(dst, buf, 9); break;
    default: break; /* longer ones took the other path */
    }
    b->len += len;
    return 0;
}

static ew_err enc_struct(menc *c, const ew_type *t, const uint8_t *src,
                         unsigned depth);

static ew_err enc_text(menc *c, const char *s, const char *what)
{
    if (!s) {
        ewi_cerr_msg(c->e, "NULL %s", what);
        return EW_EENCODE;
    }
    size_t n = strlen(s);
    if (n > UINT32_MAX) {
        ewi_cerr_msg(c->e, "%s of %zu bytes is too long for msgpack", what, n);
        return EW_EENCODE;
    }
    if (!ewi_utf8_valid(s, n)) {
        ewi_cerr_msg(c->e, "%s is not valid UTF-8", what);
        return EW_EENCODE;
    }
    msgpack_pack_str(&c->pk, n);
    msgpack_pack_str_body(&c->pk, s, n);
    return EW_OK;
}

static ew_err enc_map(menc *c, const ew_map *m, unsigned depth)
{
    if (depth > EWI_CODEC_MAX_DEPTH) {
        ewi_cerr_msg(c->e, "nesting deeper than %u", EWI_CODEC_MAX_DEPTH);
        return EW_EENCODE;
    }
    if (!m->entries && m->count > 0) {
        ewi_cerr_msg(c->e, "NULL map entries with count %zu", m->count);
        return EW_EENCODE;
    }
    if (m->count > UINT32_MAX) {
        ewi_cerr_msg(c->e, "map of %zu entries is too large for msgpack", m->count);
        return EW_EENCODE;
    }
    msgpack_pack_map(&c->pk, m->count);
    for (size_t i = 0; i < m->count; i++) {
        const ew_map_entry *en = &m->entries[i];
        ew_err rc = enc_text(c, en->key, "map key");
        if (rc == EW_OK)
            rc = enc_text(c, en->value, "map value");
        if (rc != EW_OK) {
            ewi_cerr_index(c->e, i);
            return rc;
        }
    }
    return EW_OK;
}

/* One value of kind at slot (a member or an array element). */
static ew_err enc_value(menc *c, unsigned kind, const ew_type *nt,
                        const uint8_t *slot, unsigned depth)
{
    switch (kind) {
    case EW_BOOL:
        if (*(const bool *)slot)
            msgpack_pack_true(&c->pk);
        else
            msgpack_pack_false(&c->pk);
        return EW_OK;
    case EW_INT8: case EW_INT16: case EW_INT32: case EW_INT64:
    case EW_UINT8: case EW_UINT16: case EW_UINT32: case EW_UINT64: {
        ewi_wint w = ewi_int_load(kind, slot);
        if (w.neg)
            msgpack_pack_int64(&c->pk, w.i);
        else
            msgpack_pack_uint64(&c->pk, w.u);
        return EW_OK;
    }
    case EW_FLOAT:
        msgpack_pack_float(&c->pk, *(const float *)slot);
        return EW_OK;
    case EW_DOUBLE:
        msgpack_pack_double(&c->pk, *(const double *)slot);
        return EW_OK;
    case EW_STRING:
        return enc_text(c, *(char *const *)slot, "string");
    case EW_BYTES: {
        const ew_bytes *b = (const ew_bytes *)slot;
        if (!b->data && b->len > 0) {
            ewi_cerr_msg(c->e, "NULL bytes with length %zu", b->len);
            return EW_EENCODE;
        }
        if (b->len > UINT32_MAX) {
            ewi_cerr_msg(c->e, "bytes of %zu are too long for msgpack", b->len);
            return EW_EENCODE;
        }
        msgpack_pack_bin(&c->pk, b->len);
        if (b->len)
            msgpack_pack_bin_body(&c->pk, b->data, b->len);
        return EW_OK;
    }
    case EW_MAP:
        return enc_map(c, (const ew_map *)slot, depth + 1);
    case EW_STRUCT:
        if (!nt) {
            ewi_cerr_msg(c->e, "nested struct without a type");
            return EW_EINVAL;
        }
        return enc_struct(c, nt, slot, depth + 1);
    default:
        ewi_cerr_msg(c->e, "unknown kind %u", kind);
        return EW_EINVAL;
    }
}

static ew_err enc_array(menc *c, const ew_field *f, const uint8_t *src,
                        unsigned depth)
{
    const uint8_t *p = *(const uint8_t *const *)(src + f->offset);
    size_t n = *(const size_t *)(src + f->aux_offset);
    if (depth + 1 > EWI_CODEC_MAX_DEPTH) {
        ewi_cerr_msg(c->e, "nesting deeper than %u", EWI_CODEC_MAX_DEPTH);
        return EW_EENCODE;
    }
    if (!p && n > 0) {
        ewi_cerr_msg(c->e, "NULL array with %zu items", n);
        return EW_EENCODE;
    }
    if (n > UINT32_MAX) {
        ewi_cerr_msg(c->e, "array of %zu items is too long for msgpack", n);
        return EW_EENCODE;
    }
    size_t esz = ewi_kind_size(f->kind, f->type);
    msgpack_pack_array(&c->pk, n);
    for (size_t i = 0; i < n; i++) {
        ew_err rc = enc_value(c, f->kind, f->type, p + i * esz, depth + 1);
        if (rc != EW_OK) {
            ewi_cerr_index(c->e, i);
            return rc;
        }
    }
    return EW_OK;
}

static ew_err enc_struct(menc *c, const ew_type *t, const uint8_t *src,
                         unsigned depth)
{
    if (depth > EWI_CODEC_MAX_DEPTH) {
        ewi_cerr_msg(c->e, "nesting deeper than %u", EWI_CODEC_MAX_DEPTH);
        return EW_EENCODE;
    }
    size_t n = 0;
    for (size_t i = 0; i < t->nfields; i++) {
        const ew_field *f = &t->fields[i];
        if (!(f->flags & EW_FIELD_OPTIONAL) || *(const bool *)(src + f->aux_offset))
            n++;
    }
    msgpack_pack_map(&c->pk, n);
    for (size_t i = 0; i < t->nfields; i++) {
        const ew_field *f = &t->fields[i];
        if ((f->flags & EW_FIELD_OPTIONAL) && !*(const bool *)(src + f->aux_offset))
            continue; /* absent: not on the wire */
        size_t nl = strlen(f->name);
        msgpack_pack_str(&c->pk, nl);
        msgpack_pack_str_body(&c->pk, f->name, nl);
        ew_err rc = (f->flags & EW_FIELD_ARRAY)
                        ? enc_array(c, f, src, depth)
                        : enc_value(c, f->kind, f->type, src + f->offset, depth);
        if (rc != EW_OK) {
            ewi_cerr_field(c->e, f->name);
            return rc;
        }
    }
    return EW_OK;
}

ew_err ewi_msgpack_encode(const ew_type *type, const void *event, ewi_buf *out,
                          ewi_cerr *e)
{
    menc c;
    c.out = out;
    c.nomem = false;
    c.e = e;
    msgpack_packer_init(&c.pk, &c, menc_write);
    ew_err rc = enc_struct(&c, type, event, 1);
    if (rc == EW_OK && c.nomem)
        rc = EW_ENOMEM;
    return rc;
}

/* ======================================================================== */
/* framing check                                                            */
/* ======================================================================== */

/* msgpack-c allocates a container's declared element count before reading
 * any element (a 5-byte body can ask for 96 GiB) and turns nesting beyond its
 * 32-level stack into a bare parse error. This walk over the framing alone
 * bounds both first: no container may claim more elements than bytes remain,
 * and no more than EWI_CODEC_MAX_DEPTH containers nest. It also tells a
 * truncated body from a malformed one, and where the first object ends. */
typedef enum mscan {
    MSCAN_OK,
    MSCAN_TRUNCATED,
    MSCAN_MALFORMED,
    MSCAN_TOO_DEEP
} mscan;

static uint32_t be16(const uint8_t *p) { return (uint32_t)p[0] << 8 | p[1]; }
static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static mscan mp_scan(const uint8_t *p, size_t len, size_t *end)
{
    size_t left[EWI_CODEC_MAX_DEPTH + 1]; /* objects still due per open level */
    unsigned top = 0;
    size_t i = 0;
    left[0] = 1;
    for (;;) {
        while (left[top] == 0) {
            if (top == 0) {
                *end = i;
                return MSCAN_OK;
            }
            top--;
        }
        left[top]--;
        if (i >= len)
            return MSCAN_TRUNCATED;
        uint8_t b = p[i++];
        size_t avail = len - i;
        size_t hdr = 0;   /* length bytes after the type byte */
        size_t body = 0;  /* payload bytes after those */
        size_t items = 0; /* objects inside a container */
        bool container = false;
        if (b <= 0x7f || b >= 0xe0) {
            /* fixint */
        } else if (b <= 0x8f) {
            container = true;
            items = (size_t)(b & 0x0f) * 2;
        } else if (b <= 0x9f) {
            container = true;
            items = b & 0x0f;
        } else if (b <= 0xbf) {
            body = b & 0x1f;
        } else {
            switch (b) {
            case 0xc0: case 0xc2: case 0xc3: break;
            case 0xc1: return MSCAN_MALFORMED; /* never used */
            case 0xc4: case 0xd9: hdr = 1; break; /* bin8, str8 */
            case 0xc5: case 0xda: hdr = 2; break;
            case 0xc6: case 0xdb: hdr = 4; break;
            case 0xc7: hdr = 1; body = 1; break; /* ext8: + type byte */
            case 0xc8: hdr = 2; body = 1; break;
            case 0xc9: hdr = 4; body = 1; break;
            case 0xca: body = 4; break;
            case 0xcb: body = 8; break;
            case 0xcc: case 0xd0: body = 1; break;
            case 0xcd: case 0xd1: body = 2; break;
            case 0xce: case 0xd2: body = 4; break;
            case 0xcf: case 0xd3: body = 8; break;
            case 0xd4: body = 2; break; /* fixext: type + data */
            case 0xd5: body = 3; break;
            case 0xd6: body = 5; break;
            case 0xd7: body = 9; break;
            case 0xd8: body = 17; break;
            case 0xdc: case 0xde: container = true; hdr = 2; break;
            case 0xdd: case 0xdf: container = true; hdr = 4; break;
            default: return MSCAN_MALFORMED;
            }
        }
        if (hdr > avail)
            return MSCAN_TRUNCATED;
        if (hdr) {
            size_t n = hdr == 1 ? p[i] : hdr == 2 ? be16(p + i) : be32(p + i);
            i += hdr;
            avail -= hdr;
            if (container)
                items = (b == 0xde || b == 0xdf) ? n * 2 : n;
            else
                body += n;
        }
        if (container) {
            /* msgpack-c refuses a 33rd open container even when empty. */
            if (top >= EWI_CODEC_MAX_DEPTH)
                return MSCAN_TOO_DEEP;
            if (items > avail)
                return MSCAN_TRUNCATED; /* each object takes a byte at least */
            if (items)
                left[++top] = items;
        } else {
            if (body > avail)
                return MSCAN_TRUNCATED;
            i += body;
        }
    }
}

/* ======================================================================== */
/* decoding                                                                 */
/* ======================================================================== */

typedef struct mdec {
    ewi_limits lim;
    ewi_arena a;
    ewi_cerr *e;
    /* Validating and looking fields up by name (the measuring pass and the
     * single pass); false while filling after a measuring pass. */
    bool check;
} mdec;

static const char *mp_type_name(const msgpack_object *o)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: return "nil";
    case MSGPACK_OBJECT_BOOLEAN: return "bool";
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: return "int";
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: return "float";
    case MSGPACK_OBJECT_STR: return "string";
    case MSGPACK_OBJECT_ARRAY: return "array";
    case MSGPACK_OBJECT_MAP: return "map";
    case MSGPACK_OBJECT_BIN: return "bin";
    case MSGPACK_OBJECT_EXT: return "ext";
    default: return "?";
    }
}

static ew_err type_err(mdec *d, const char *want, const msgpack_object *o)
{
    ewi_cerr_msg(d->e, "expected %s, got %s", want, mp_type_name(o));
    return EW_EDECODE;
}

static ew_err too_deep(mdec *d)
{
    ewi_cerr_msg(d->e, "nesting deeper than %u", d->lim.max_depth);
    return EW_EDECODE;
}

/* Checks (d->check) and copies a text as a NUL-terminated string. */
static ew_err dec_text(mdec *d, const msgpack_object *o, char **slot,
                       const char *what)
{
    if (o->type != MSGPACK_OBJECT_STR)
        return type_err(d, what, o);
    size_t n = o->via.str.size;
    if (d->check) {
        if (n > d->lim.max_string) {
            ewi_cerr_msg(d->e, "%s of %zu bytes over the limit %zu", what, n,
                         d->lim.max_string);
            return EW_EDECODE;
        }
        if (!ewi_utf8_valid(o->via.str.ptr, n)) {
            ewi_cerr_msg(d->e, "%s is not valid UTF-8 or holds a NUL byte", what);
            return EW_EDECODE;
        }
    }
    char *s = ewi_arena_take(&d->a, n + 1, 1);
    if (s && slot) {
        memcpy(s, o->via.str.ptr, n);
        s[n] = '\0';
        *slot = s;
    }
    return EW_OK;
}

static ew_err dec_struct(mdec *d, const ew_type *t, msgpack_object *o,
                         uint8_t *dst, unsigned depth);

static ew_err dec_map(mdec *d, const msgpack_object *o, ew_map *slot,
                      unsigned depth)
{
    if (depth > d->lim.max_depth)
        return too_deep(d);
    if (o->type != MSGPACK_OBJECT_MAP)
        return type_err(d, "map", o);
    size_t n = o->via.map.size;
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
    for (size_t i = 0; i < n; i++) {
        const msgpack_object_kv *kv = &o->via.map.ptr[i];
        ew_err rc = dec_text(d, &kv->key, en ? &en[i].key : NULL, "string key");
        if (rc != EW_OK) {
            ewi_cerr_index(d->e, i);
            return rc;
        }
        rc = dec_text(d, &kv->val, en ? &en[i].value : NULL, "string");
        if (rc != EW_OK) {
            ewi_cerr_key(d->e, kv->key.via.str.ptr, kv->key.via.str.size);
            return rc;
        }
    }
    return EW_OK;
}

#define IS_SCALAR(kind) ((kind) >= EW_BOOL && (kind) <= EW_DOUBLE)

/* A bool, integer or float of kind into slot (NULL while measuring). Inline:
 * most fields are scalars, and a call per field shows in profiles. */
static inline __attribute__((always_inline)) ew_err
dec_scalar(mdec *d, unsigned kind, const msgpack_object *o, uint8_t *slot)
{
    switch (kind) {
    case EW_BOOL:
        if (o->type != MSGPACK_OBJECT_BOOLEAN)
            return type_err(d, "bool", o);
        if (slot)
            *(bool *)slot = o->via.boolean;
        return EW_OK;
    case EW_FLOAT:
    case EW_DOUBLE: {
        double v;
        if (o->type == MSGPACK_OBJECT_FLOAT32 || o->type == MSGPACK_OBJECT_FLOAT64)
            v = o->via.f64;
        else if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
            v = (double)o->via.u64;
        else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
            v = (double)o->via.i64;
        else
            return type_err(d, "float", o);
        if (kind == EW_FLOAT) {
            if (!ewi_float_fits(v, d->e))
                return EW_EDECODE;
            if (slot)
                *(float *)slot = (float)v;
        } else if (slot) {
            *(double *)slot = v;
        }
        return EW_OK;
    }
    default: { /* the integers */
        ewi_wint w = {false, 0, 0};
        if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
            w.u = o->via.u64;
        } else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
            w.neg = true;
            w.i = o->via.i64;
        } else {
            return type_err(d, "int", o);
        }
        if (!ewi_int_fits(kind, w, d->e))
            return EW_EDECODE;
        if (slot)
            ewi_int_store(kind, w, slot);
        return EW_OK;
    }
    }
}

/* One value of kind into slot (NULL while measuring). */
static ew_err dec_value(mdec *d, unsigned kind, const ew_type *nt,
                        msgpack_object *o, uint8_t *slot, unsigned depth)
{
    if (IS_SCALAR(kind))
        return dec_scalar(d, kind, o, slot);
    switch (kind) {
    case EW_STRING:
        return dec_text(d, o, (char **)slot, "string");
    case EW_BYTES: {
        /* str is taken too: older packers had no bin type. */
        if (o->type != MSGPACK_OBJECT_BIN && o->type != MSGPACK_OBJECT_STR)
            return type_err(d, "bin", o);
        size_t n = o->type == MSGPACK_OBJECT_BIN ? o->via.bin.size : o->via.str.size;
        const char *src = o->type == MSGPACK_OBJECT_BIN ? o->via.bin.ptr : o->via.str.ptr;
        if (n > d->lim.max_string) {
            ewi_cerr_msg(d->e, "bytes of %zu over the limit %zu", n, d->lim.max_string);
            return EW_EDECODE;
        }
        uint8_t *p = n ? ewi_arena_take(&d->a, n, 1) : NULL;
        if (slot) {
            ew_bytes *b = (ew_bytes *)slot;
            if (p)
                memcpy(p, src, n);
            b->data = p;
            b->len = n;
        }
        return EW_OK;
    }
    case EW_MAP:
        return dec_map(d, o, (ew_map *)slot, depth + 1);
    case EW_STRUCT:
        if (!nt) {
            ewi_cerr_msg(d->e, "nested struct without a type");
            return EW_EINVAL;
        }
        return dec_struct(d, nt, o, slot, depth + 1);
    default:
        ewi_cerr_msg(d->e, "unknown kind %u", kind);
        return EW_EINVAL;
    }
}

static ew_err dec_array(mdec *d, const ew_field *f, msgpack_object *o,
                        uint8_t *dst, unsigned depth)
{
    if (depth + 1 > d->lim.max_depth)
        return too_deep(d);
    if (o->type != MSGPACK_OBJECT_ARRAY)
        return type_err(d, "array", o);
    size_t n = o->via.array.size;
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
    bool scalar = IS_SCALAR(f->kind);
    for (size_t i = 0; i < n; i++) {
        msgpack_object *el = &o->via.array.ptr[i];
        uint8_t *slot = p ? p + i * esz : NULL;
        ew_err rc = scalar ? dec_scalar(d, f->kind, el, slot)
                           : dec_value(d, f->kind, f->type, el, slot, depth + 1);
        if (rc != EW_OK) {
            ewi_cerr_index(d->e, i);
            return rc;
        }
    }
    return EW_OK;
}

static bool name_is(const char *name, const char *key, size_t klen)
{
    for (size_t i = 0; i < klen; i++)
        if (name[i] != key[i] || name[i] == '\0')
            return false;
    return name[klen] == '\0';
}

/* Bodies usually list fields in schema order: start looking after the last
 * match, wrapping around. */
static const ew_field *find_field(const ew_type *t, const char *key,
                                  size_t klen, size_t *cursor)
{
    size_t n = t->nfields, i = *cursor;
    for (size_t k = 0; k < n; k++, i++) {
        if (i >= n)
            i = 0;
        if (name_is(t->fields[i].name, key, klen)) {
            *cursor = i + 1;
            return &t->fields[i];
        }
    }
    return NULL;
}

#define SEEN_LOCAL_WORDS 8 /* fields tracked without an allocation: 512 */

/* A checking pass turns each key of a struct's map into the matched
 * field's index + 1 (0: unknown), so a filling pass after it does not look
 * up the names again. The tree is ours, in our zone. dst is NULL while
 * measuring (or where a single pass's block ran out). */
static ew_err dec_struct(mdec *d, const ew_type *t, msgpack_object *o,
                         uint8_t *dst, unsigned depth)
{
    if (depth > d->lim.max_depth)
        return too_deep(d);
    if (o->type != MSGPACK_OBJECT_MAP)
        return type_err(d, "map", o);
    if (!d->check) {
        for (uint32_t k = 0; k < o->via.map.size; k++) {
            msgpack_object_kv *kv = &o->via.map.ptr[k];
            if (kv->key.via.u64 == 0)
                continue;
            const ew_field *f = &t->fields[kv->key.via.u64 - 1];
            if ((f->flags & EW_FIELD_OPTIONAL) && kv->val.type == MSGPACK_OBJECT_NIL)
                continue;
            ew_err rc;
            if (f->flags & EW_FIELD_ARRAY) {
                rc = dec_array(d, f, &kv->val, dst, depth);
            } else {
                rc = IS_SCALAR(f->kind)
                         ? dec_scalar(d, f->kind, &kv->val, dst + f->offset)
                         : dec_value(d, f->kind, f->type, &kv->val, dst + f->offset, depth);
                if (f->flags & EW_FIELD_OPTIONAL)
                    *(bool *)(dst + f->aux_offset) = true;
            }
            if (rc != EW_OK) { /* cannot happen after measuring; be safe */
                ewi_cerr_field(d->e, f->name);
                return rc;
            }
        }
        return EW_OK;
    }

    uint64_t seen_local[SEEN_LOCAL_WORDS], *seen = seen_local;
    size_t words = (t->nfields + 63) / 64;
    if (words > SEEN_LOCAL_WORDS) {
        seen = calloc(words, sizeof *seen);
        if (!seen)
            return EW_ENOMEM;
    } else {
        memset(seen_local, 0, words * sizeof *seen);
    }
    ew_err rc = EW_OK;
    size_t cursor = 0;
    for (uint32_t k = 0; k < o->via.map.size; k++) {
        msgpack_object_kv *kv = &o->via.map.ptr[k];
        /* A key that is not a string cannot name a field: unknown. */
        const ew_field *f = kv->key.type != MSGPACK_OBJECT_STR
                                ? NULL
                                : find_field(t, kv->key.via.str.ptr,
                                             kv->key.via.str.size, &cursor);
        size_t fi = f ? (size_t)(f - t->fields) : 0;
        kv->key.type = MSGPACK_OBJECT_POSITIVE_INTEGER;
        kv->key.via.u64 = f ? fi + 1 : 0;
        if (!f)
            continue; /* unknown field: a newer producer's, skipped */
        if (seen[fi / 64] & (1ull << (fi % 64))) {
            ewi_cerr_msg(d->e, "duplicate field");
            rc = EW_EDECODE;
        } else {
            seen[fi / 64] |= 1ull << (fi % 64);
            if ((f->flags & EW_FIELD_OPTIONAL) && kv->val.type == MSGPACK_OBJECT_NIL)
                continue; /* nil is absent */
            uint8_t *slot = dst ? dst + f->offset : NULL;
            if (f->flags & EW_FIELD_ARRAY) {
                rc = dec_array(d, f, &kv->val, dst, depth);
            } else {
                rc = IS_SCALAR(f->kind)
                         ? dec_scalar(d, f->kind, &kv->val, slot)
                         : dec_value(d, f->kind, f->type, &kv->val, slot, depth);
                if (dst && (f->flags & EW_FIELD_OPTIONAL))
                    *(bool *)(dst + f->aux_offset) = true;
            }
        }
        if (rc != EW_OK) {
            ewi_cerr_field(d->e, f->name);
            break;
        }
    }
    if (rc == EW_OK) {
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

/* One zone per thread, emptied after each decode: msgpack-c would
 * otherwise malloc and free a chunk for every body. */
#define ZONE_CHUNK 8192

static pthread_key_t zone_key;
static pthread_once_t zone_once = PTHREAD_ONCE_INIT;
static bool zone_key_ok;

static void zone_release(void *z)
{
    msgpack_zone_destroy(z);
    free(z);
}

static void zone_key_init(void)
{
    zone_key_ok = pthread_key_create(&zone_key, zone_release) == 0;
}

static msgpack_zone *thread_zone(void)
{
    pthread_once(&zone_once, zone_key_init);
    if (!zone_key_ok)
        return NULL;
    msgpack_zone *z = pthread_getspecific(zone_key);
    if (!z) {
        /* Not msgpack_zone_new: it allocates a second, unused chunk. */
        z = malloc(sizeof *z);
        if (!z)
            return NULL;
        if (!msgpack_zone_init(z, ZONE_CHUNK)) {
            free(z);
            return NULL;
        }
        if (pthread_setspecific(zone_key, z) != 0) {
            zone_release(z);
            return NULL;
        }
    }
    return z;
}

ew_err ewi_msgpack_decode(const ew_type *type, const uint8_t *data, size_t len,
                          const ewi_limits *lim, void **out, ewi_cerr *e)
{
    size_t end = 0;
    switch (mp_scan(data, len, &end)) {
    case MSCAN_OK: break;
    case MSCAN_TRUNCATED:
        ewi_cerr_msg(e, "truncated msgpack");
        return EW_EDECODE;
    case MSCAN_MALFORMED:
        ewi_cerr_msg(e, "malformed msgpack");
        return EW_EDECODE;
    case MSCAN_TOO_DEEP:
        ewi_cerr_msg(e, "nesting deeper than %u", EWI_CODEC_MAX_DEPTH);
        return EW_EDECODE;
    }
    if (end < len) {
        ewi_cerr_msg(e, "%zu trailing bytes", len - end);
        return EW_EDECODE;
    }

    msgpack_zone *zone = thread_zone();
    if (!zone)
        return EW_ENOMEM;
    msgpack_object root;
    size_t off = 0;
    msgpack_unpack_return ur =
        msgpack_unpack((const char *)data, len, &off, zone, &root);
    if (ur != MSGPACK_UNPACK_SUCCESS) {
        /* The scan accepted the framing: what is left is memory. */
        msgpack_zone_clear(zone);
        ewi_cerr_msg(e, "msgpack-c could not unpack the body (out of memory)");
        return EW_ENOMEM;
    }

    /* Most bodies decode into their struct and at most their own length
     * again (texts, arrays of small values): a block of that size is filled
     * in one checking pass. Should it not fit (arrays of wide values, a body
     * over 4 KiB), that pass has measured what does, and a second pass fills
     * a block of that size. */
    size_t guess = type->size + (len < 4096 ? len : 4096) + 64;
    uint8_t *block = malloc(guess);
    if (!block) {
        msgpack_zone_clear(zone);
        ewi_cerr_msg(e, "out of memory for %zu bytes", guess);
        return EW_ENOMEM;
    }
    memset(block, 0, type->size);
    mdec d = {.lim = *lim, .a = {block, type->size, guess}, .e = e, .check = true};
    ew_err rc = dec_struct(&d, type, &root, block, 1);
    if (rc == EW_OK && d.a.off > guess) {
        size_t total = d.a.off;
        uint8_t *bigger = total > PTRDIFF_MAX ? NULL : realloc(block, total);
        if (!bigger) {
            rc = EW_ENOMEM;
            ewi_cerr_msg(e, "out of memory for %zu bytes", total);
        } else {
            block = bigger;
            memset(block, 0, type->size);
            d.a = (ewi_arena){block, type->size, total};
            d.check = false;
            rc = dec_struct(&d, type, &root, block, 1);
        }
    }
    if (rc == EW_OK)
        *out = block;
    else
        free(block);
    msgpack_zone_clear(zone); /* keeps its first chunk for the next body */
    return rc;
}
