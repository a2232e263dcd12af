/* The codecs' common half: the public entry points, the growable buffer,
 * type-table checks, content types, and the helpers both wire formats share
 * (error paths, kinds, UTF-8, integer ranges, base64). */
#include "codec_priv.h"

#include <float.h>
#include <math.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* ---- ewi_buf ------------------------------------------------------------ */

ew_err ewi_buf_reserve(ewi_buf *b, size_t extra)
{
    if (extra <= b->cap - b->len)
        return EW_OK;
    if (extra > (size_t)PTRDIFF_MAX - b->len)
        return EW_ENOMEM; /* no object can be that large */
    size_t need = b->len + extra;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    uint8_t *d = realloc(b->data, cap);
    if (!d)
        return EW_ENOMEM;
    b->data = d;
    b->cap = cap;
    return EW_OK;
}

ew_err ewi_buf_append(ewi_buf *b, const void *data, size_t len)
{
    if (len == 0)
        return EW_OK;
    ew_err rc = ewi_buf_reserve(b, len);
    if (rc != EW_OK)
        return rc;
    memcpy(b->data + b->len, data, len);
    b->len += len;
    return EW_OK;
}

uint8_t *ewi_buf_steal(ewi_buf *b, size_t *len)
{
    uint8_t *d = b->data;
    if (len)
        *len = b->len;
    b->data = NULL;
    b->len = b->cap = 0;
    return d;
}

void ewi_buf_free(ewi_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* ---- error paths -------------------------------------------------------- */

void ewi_cerr_init(ewi_cerr *e)
{
    e->msg[0] = '\0';
    e->pos = sizeof e->path - 1;
    e->path[e->pos] = '\0';
    e->elided = false;
}

void ewi_cerr_msg(ewi_cerr *e, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
}

/* Prepends a segment made of up to three parts; when the path is full the
 * outer segments are dropped and shown as "...". */
static void cerr_prepend(ewi_cerr *e, const char *a, const char *b, size_t blen,
                         const char *c)
{
    if (e->elided)
        return;
    size_t alen = strlen(a), clen = strlen(c);
    size_t n = alen + blen + clen;
    if (n > e->pos) {
        e->elided = true;
        return;
    }
    e->pos -= n;
    memcpy(e->path + e->pos, a, alen);
    memcpy(e->path + e->pos + alen, b, blen);
    memcpy(e->path + e->pos + alen + blen, c, clen);
}

void ewi_cerr_field(ewi_cerr *e, const char *name)
{
    cerr_prepend(e, ".", name, strlen(name), "");
}

void ewi_cerr_index(ewi_cerr *e, size_t i)
{
    char num[24];
    int n = snprintf(num, sizeof num, "%zu", i);
    cerr_prepend(e, "[", num, (size_t)n, "]");
}

void ewi_cerr_key(ewi_cerr *e, const char *key, size_t len)
{
    /* A key is wire data: keep it short and printable in the message. */
    char k[64];
    size_t n = 0;
    for (size_t i = 0; i < len && n < sizeof k - 4; i++) {
        unsigned char c = (unsigned char)key[i];
        k[n++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    if (n < len) {
        memcpy(k + n, "...", 3);
        n += 3;
    }
    cerr_prepend(e, "[\"", k, n, "\"]");
}

void ewi_cerr_format(const ewi_cerr *e, const char *type_name, char *err,
                     size_t errlen)
{
    if (!err || errlen == 0)
        return;
    snprintf(err, errlen, "%s%s%s: %s", type_name ? type_name : "?",
             e->elided ? "..." : "", e->path + e->pos, e->msg);
}

/* ---- kinds -------------------------------------------------------------- */

static size_t struct_align(const ew_type *t)
{
    /* A struct's size is a multiple of its alignment, so the lowest set bit
     * of the size is a safe alignment (capped at malloc's). */
    size_t s = t ? t->size : 1;
    size_t a = s & (~s + 1);
    if (a == 0 || a > alignof(max_align_t))
        a = alignof(max_align_t);
    return a;
}

size_t ewi_kind_size(unsigned kind, const ew_type *t)
{
    switch (kind) {
    case EW_BOOL: return sizeof(bool);
    case EW_INT8: case EW_UINT8: return 1;
    case EW_INT16: case EW_UINT16: return 2;
    case EW_INT32: case EW_UINT32: return 4;
    case EW_INT64: case EW_UINT64: return 8;
    case EW_FLOAT: return sizeof(float);
    case EW_DOUBLE: return sizeof(double);
    case EW_STRING: return sizeof(char *);
    case EW_BYTES: return sizeof(ew_bytes);
    case EW_MAP: return sizeof(ew_map);
    case EW_STRUCT: return t ? t->size : 0;
    default: return 0;
    }
}

size_t ewi_kind_align(unsigned kind, const ew_type *t)
{
    switch (kind) {
    case EW_BOOL: return alignof(bool);
    case EW_INT8: case EW_UINT8: return 1;
    case EW_INT16: case EW_UINT16: return alignof(int16_t);
    case EW_INT32: case EW_UINT32: return alignof(int32_t);
    case EW_INT64: case EW_UINT64: return alignof(int64_t);
    case EW_FLOAT: return alignof(float);
    case EW_DOUBLE: return alignof(double);
    case EW_STRING: return alignof(char *);
    case EW_BYTES: return alignof(ew_bytes);
    case EW_MAP: return alignof(ew_map);
    case EW_STRUCT: return struct_align(t);
    default: return 1;
    }
}

const char *ewi_kind_name(unsigned kind)
{
    static const char *const names[] = {
        [EW_BOOL] = "bool",     [EW_INT8] = "int8",     [EW_INT16] = "int16",
        [EW_INT32] = "int32",   [EW_INT64] = "int64",   [EW_UINT8] = "uint8",
        [EW_UINT16] = "uint16", [EW_UINT32] = "uint32", [EW_UINT64] = "uint64",
        [EW_FLOAT] = "float",   [EW_DOUBLE] = "double", [EW_STRING] = "string",
        [EW_BYTES] = "bytes",   [EW_STRUCT] = "map",    [EW_MAP] = "map",
    };
    if (kind >= sizeof names / sizeof names[0] || !names[kind])
        return "?";
    return names[kind];
}

/* ---- UTF-8 --------------------------------------------------------------- */

/* How many bytes from s, in whole blocks, are ASCII other than NUL
 * (0x01..0x7f): 64 at a time with SSE2, then 32 and 8. Large text bodies are
 * mostly ASCII, and every string is checked once when it is encoded and once
 * when it is decoded, so this loop is what a large event's text costs. */
static size_t ascii_blocks(const unsigned char *s, size_t len)
{
    size_t i = 0;
#if defined(__SSE2__)
    const __m128i zero = _mm_setzero_si128();
    while (len - i >= 64) {
        __m128i a = _mm_loadu_si128((const __m128i *)(const void *)(s + i));
        __m128i b = _mm_loadu_si128((const __m128i *)(const void *)(s + i + 16));
        __m128i c = _mm_loadu_si128((const __m128i *)(const void *)(s + i + 32));
        __m128i d = _mm_loadu_si128((const __m128i *)(const void *)(s + i + 48));
        /* a high bit anywhere, or a zero byte (the bytes' minimum is 0) */
        __m128i high = _mm_or_si128(_mm_or_si128(a, b), _mm_or_si128(c, d));
        __m128i low = _mm_min_epu8(_mm_min_epu8(a, b), _mm_min_epu8(c, d));
        if (_mm_movemask_epi8(high) | _mm_movemask_epi8(_mm_cmpeq_epi8(low, zero)))
            break;
        i += 64;
    }
#endif
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    while (len - i >= 32) {
        uint64_t w[4];
        memcpy(w, s + i, sizeof w);
        /* (x - 0x01..) & ~x & 0x80.. is non-zero exactly when x has a zero byte */
        uint64_t any = w[0] | w[1] | w[2] | w[3];
        uint64_t nul = ((w[0] - ones) & ~w[0]) | ((w[1] - ones) & ~w[1]) |
                       ((w[2] - ones) & ~w[2]) | ((w[3] - ones) & ~w[3]);
        if ((any | nul) & highs)
            break;
        i += 32;
    }
    while (len - i >= 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        if ((w | ((w - ones) & ~w)) & highs)
            break;
        i += 8;
    }
    return i;
}

bool ewi_utf8_valid(const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < len) {
        i += ascii_blocks(s + i, len - i);
        while (i < len && s[i] - 1u < 0x7fu) /* 0x01..0x7f */
            i++;
        if (i >= len)
            break;
        unsigned c = s[i];
        if (c == 0)
            return false;
        size_t n;
        uint32_t cp, min;
        if (c >= 0xc2 && c <= 0xdf) {
            n = 1; cp = c & 0x1f; min = 0x80;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2; cp = c & 0x0f; min = 0x800;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3; cp = c & 0x07; min = 0x10000;
        } else {
            return false;
        }
        if (len - i - 1 < n)
            return false;
        for (size_t k = 1; k <= n; k++) {
            unsigned cc = s[i + k];
            if ((cc & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (cc & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += n + 1;
    }
    return true;
}

/* ---- integers and floats ------------------------------------------------ */

void ewi_int_range_err(unsigned kind, ewi_wint w, ewi_cerr *e)
{
    if (w.neg)
        ewi_cerr_msg(e, "%lld out of range for %s", (long long)w.i,
                     ewi_kind_name(kind));
    else
        ewi_cerr_msg(e, "%llu out of range for %s", (unsigned long long)w.u,
                     ewi_kind_name(kind));
}

ewi_wint ewi_int_load(unsigned kind, const void *slot)
{
    ewi_wint w = {false, 0, 0};
    int64_t v;
    switch (kind) {
    case EW_INT8: v = *(const int8_t *)slot; break;
    case EW_INT16: v = *(const int16_t *)slot; break;
    case EW_INT32: v = *(const int32_t *)slot; break;
    case EW_INT64: v = *(const int64_t *)slot; break;
    case EW_UINT8: w.u = *(const uint8_t *)slot; return w;
    case EW_UINT16: w.u = *(const uint16_t *)slot; return w;
    case EW_UINT32: w.u = *(const uint32_t *)slot; return w;
    case EW_UINT64: w.u = *(const uint64_t *)slot; return w;
    default: return w;
    }
    if (v < 0) {
        w.neg = true;
        w.i = v;
    } else {
        w.u = (uint64_t)v;
    }
    return w;
}

bool ewi_float_fits(double d, ewi_cerr *e)
{
    /* Up to FLT_MAX plus half an ulp rounds to FLT_MAX: 3.40282347e+38, the
     * shortest text of FLT_MAX, is a double just above it. */
    if (isfinite(d) && fabs(d) >= 0x1.ffffffp+127) {
        ewi_cerr_msg(e, "%g out of range for float", d);
        return false;
    }
    return true;
}

/* ---- base64 ------------------------------------------------------------- */

static const char b64_chars[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t ewi_base64_encoded_len(size_t n)
{
    return (n + 2) / 3 * 4;
}

void ewi_base64_encode(const uint8_t *in, size_t n, char *out)
{
    size_t i = 0;
    for (; n - i >= 3; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        *out++ = b64_chars[v >> 18];
        *out++ = b64_chars[(v >> 12) & 63];
        *out++ = b64_chars[(v >> 6) & 63];
        *out++ = b64_chars[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        *out++ = b64_chars[v >> 18];
        *out++ = b64_chars[(v >> 12) & 63];
        *out++ = '=';
        *out++ = '=';
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        *out++ = b64_chars[v >> 18];
        *out++ = b64_chars[(v >> 12) & 63];
        *out++ = b64_chars[(v >> 6) & 63];
        *out++ = '=';
    }
}

static int b64_val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

bool ewi_base64_decoded_len(const char *in, size_t n, size_t *out_len)
{
    size_t pad = 0;
    if (n % 4 == 0 && n >= 4) {
        if (in[n - 1] == '=')
            pad++;
        if (in[n - 2] == '=')
            pad++;
    }
    size_t body = n - pad;
    if (body % 4 == 1)
        return false;
    for (size_t i = 0; i < body; i++)
        if (b64_val((unsigned char)in[i]) < 0)
            return false;
    *out_len = body / 4 * 3 + (body % 4 ? body % 4 - 1 : 0);
    return true;
}

void ewi_base64_decode(const char *in, size_t n, uint8_t *out)
{
    while (n > 0 && in[n - 1] == '=')
        n--;
    size_t i = 0;
    for (; n - i >= 4; i += 4) {
        uint32_t v = (uint32_t)b64_val((unsigned char)in[i]) << 18 |
                     (uint32_t)b64_val((unsigned char)in[i + 1]) << 12 |
                     (uint32_t)b64_val((unsigned char)in[i + 2]) << 6 |
                     (uint32_t)b64_val((unsigned char)in[i + 3]);
        *out++ = (uint8_t)(v >> 16);
        *out++ = (uint8_t)(v >> 8);
        *out++ = (uint8_t)v;
    }
    if (n - i >= 2) {
        uint32_t v = (uint32_t)b64_val((unsigned char)in[i]) << 18 |
                     (uint32_t)b64_val((unsigned char)in[i + 1]) << 12;
        if (n - i == 3)
            v |= (uint32_t)b64_val((unsigned char)in[i + 2]) << 6;
        *out++ = (uint8_t)(v >> 16);
        if (n - i == 3)
            *out++ = (uint8_t)(v >> 8);
    }
}

/* ---- content types ------------------------------------------------------ */

const char *ew_format_content_type(ew_format fmt)
{
    switch (fmt) {
    case EW_FORMAT_DEFAULT:
    case EW_FORMAT_MSGPACK: return EW_CONTENT_TYPE_MSGPACK;
    case EW_FORMAT_JSON: return EW_CONTENT_TYPE_JSON;
    default: return NULL;
    }
}

ew_format ew_format_from_content_type(const char *ct)
{
    if (!ct)
        return EW_FORMAT_MSGPACK;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    size_t n = strcspn(ct, "; \t");
    if (n == 0)
        return *ct == '\0' ? EW_FORMAT_MSGPACK : EW_FORMAT_DEFAULT;
#define EWI_IS(lit) (n == sizeof(lit) - 1 && strncasecmp(ct, lit, n) == 0)
    if (EWI_IS("application/msgpack") || EWI_IS("application/x-msgpack") ||
        EWI_IS("application/vnd.msgpack"))
        return EW_FORMAT_MSGPACK;
    if (EWI_IS("application/json") || EWI_IS("text/json"))
        return EW_FORMAT_JSON;
#undef EWI_IS
    /* Structured syntax suffix: application/cloudevents+json and the like. */
    if (n > 5 && strncasecmp(ct + n - 5, "+json", 5) == 0)
        return EW_FORMAT_JSON;
    return EW_FORMAT_DEFAULT;
}

/* ---- type tables -------------------------------------------------------- */

/* Nesting of types checked at most; a by-value chain this deep could never
 * be decoded within EWI_CODEC_MAX_DEPTH anyway. */
#define EWI_TYPE_MAX_NEST 64
#define EWI_TYPE_MAX_DONE 64

typedef struct tcheck {
    const ew_type *path[EWI_TYPE_MAX_NEST];
    bool via_array[EWI_TYPE_MAX_NEST]; /* how path[i] was reached */
    unsigned n;
    const ew_type *done[EWI_TYPE_MAX_DONE];
    unsigned ndone;
    ewi_cerr *e;
} tcheck;

static ew_err check_type(tcheck *tc, const ew_type *t);

static ew_err check_nested(tcheck *tc, const ew_type *nt, bool via_array)
{
    if (nt == &ew_raw_type) {
        ewi_cerr_msg(tc->e, "ew_raw_type cannot be nested: it is a whole body");
        return EW_EINVAL;
    }
    for (unsigned k = 0; k < tc->n; k++) {
        if (tc->path[k] != nt)
            continue;
        /* Recursion through a pointer (an array) is a tree: fine. */
        bool arr = via_array;
        for (unsigned j = k + 1; j < tc->n; j++)
            arr = arr || tc->via_array[j];
        if (!arr) {
            ewi_cerr_msg(tc->e, "type %s contains itself by value",
                         nt->name ? nt->name : "?");
            return EW_EINVAL;
        }
        return EW_OK;
    }
    for (unsigned k = 0; k < tc->ndone; k++)
        if (tc->done[k] == nt)
            return EW_OK;
    if (tc->n == EWI_TYPE_MAX_NEST) {
        ewi_cerr_msg(tc->e, "types nested deeper than %d", EWI_TYPE_MAX_NEST);
        return EW_EINVAL;
    }
    tc->path[tc->n] = nt;
    tc->via_array[tc->n] = via_array;
    tc->n++;
    ew_err rc = check_type(tc, nt);
    tc->n--;
    if (rc == EW_OK && tc->ndone < EWI_TYPE_MAX_DONE)
        tc->done[tc->ndone++] = nt;
    return rc;
}

static ew_err check_field(tcheck *tc, const ew_type *t, const ew_field *f)
{
    ewi_cerr *e = tc->e;
    if (f->kind < EW_BOOL || f->kind > EW_MAP) {
        ewi_cerr_msg(e, "unknown kind %u", (unsigned)f->kind);
        return EW_EINVAL;
    }
    if (f->flags & ~(unsigned)(EW_FIELD_ARRAY | EW_FIELD_OPTIONAL)) {
        ewi_cerr_msg(e, "unknown flags 0x%x", (unsigned)f->flags);
        return EW_EINVAL;
    }
    if ((f->flags & EW_FIELD_ARRAY) && (f->flags & EW_FIELD_OPTIONAL)) {
        ewi_cerr_msg(e, "an array cannot be optional (an empty array is absent)");
        return EW_EINVAL;
    }
    if (f->kind == EW_STRUCT && !f->type) {
        ewi_cerr_msg(e, "nested struct without a type");
        return EW_EINVAL;
    }
    if (f->kind != EW_STRUCT && f->type) {
        ewi_cerr_msg(e, "a nested type on a %s field", ewi_kind_name(f->kind));
        return EW_EINVAL;
    }
    bool arr = f->flags & EW_FIELD_ARRAY;
    size_t size = arr ? sizeof(void *) : ewi_kind_size(f->kind, f->type);
    size_t align = arr ? alignof(void *) : ewi_kind_align(f->kind, f->type);
    if (f->offset % align != 0 || (size_t)f->offset + size > t->size) {
        ewi_cerr_msg(e, "offset %u (size %zu) misaligned or beyond the %zu-byte struct",
                     (unsigned)f->offset, size, t->size);
        return EW_EINVAL;
    }
    if (arr && (f->aux_offset % alignof(size_t) != 0 ||
                (size_t)f->aux_offset + sizeof(size_t) > t->size)) {
        ewi_cerr_msg(e, "count offset %u misaligned or beyond the struct",
                     (unsigned)f->aux_offset);
        return EW_EINVAL;
    }
    if ((f->flags & EW_FIELD_OPTIONAL) &&
        (size_t)f->aux_offset + sizeof(bool) > t->size) {
        ewi_cerr_msg(e, "presence offset %u beyond the struct",
                     (unsigned)f->aux_offset);
        return EW_EINVAL;
    }
    if (f->kind == EW_STRUCT)
        return check_nested(tc, f->type, arr);
    return EW_OK;
}

static ew_err check_type(tcheck *tc, const ew_type *t)
{
    ewi_cerr *e = tc->e;
    if (t->size == 0) {
        ewi_cerr_msg(e, "type %s has size 0", t->name ? t->name : "?");
        return EW_EINVAL;
    }
    if (t->nfields > 0 && !t->fields) {
        ewi_cerr_msg(e, "type %s has %zu fields but no table",
                     t->name ? t->name : "?", t->nfields);
        return EW_EINVAL;
    }
    for (size_t i = 0; i < t->nfields; i++) {
        const ew_field *f = &t->fields[i];
        if (!f->name || !f->name[0]) {
            ewi_cerr_msg(e, "field %zu of type %s has no name", i,
                         t->name ? t->name : "?");
            return EW_EINVAL;
        }
        if (!ewi_utf8_valid(f->name, strlen(f->name))) {
            ewi_cerr_msg(e, "field %zu of type %s: name is not UTF-8", i,
                         t->name ? t->name : "?");
            return EW_EINVAL;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(t->fields[j].name, f->name) == 0) {
                ewi_cerr_msg(e, "duplicate field name");
                ewi_cerr_field(e, f->name);
                return EW_EINVAL;
            }
        }
        ew_err rc = check_field(tc, t, f);
        if (rc != EW_OK) {
            ewi_cerr_field(e, f->name);
            return rc;
        }
    }
    return EW_OK;
}

ew_err ewi_type_check(const ew_type *type, char *err, size_t errlen)
{
    ewi_cerr e;
    ewi_cerr_init(&e);
    if (!type || !type->name || !type->name[0]) {
        ewi_cerr_msg(&e, "a type needs a name");
        ewi_cerr_format(&e, type && type->name ? type->name : "?", err, errlen);
        return EW_EINVAL;
    }
    tcheck tc;
    tc.n = 1;
    tc.path[0] = type;
    tc.via_array[0] = false;
    tc.ndone = 0;
    tc.e = &e;
    ew_err rc = check_type(&tc, type);
    if (rc != EW_OK)
        ewi_cerr_format(&e, type->name, err, errlen);
    return rc;
}

/* ---- entry points ------------------------------------------------------- */

static void set_err(char *err, size_t errlen, const char *text)
{
    if (err && errlen)
        snprintf(err, errlen, "%s", text);
}

ew_err ewi_encode(const ew_type *type, ew_format fmt, const void *event,
                  ewi_buf *out, char *err, size_t errlen)
{
    if (!type || !event || !out) {
        set_err(err, errlen, "encode: NULL type, event or buffer");
        return EW_EINVAL;
    }
    ewi_cerr e;
    ewi_cerr_init(&e);
    size_t old = out->len;
    ew_err rc;
    if (type == &ew_raw_type && fmt != EW_FORMAT_MSGPACK && fmt != EW_FORMAT_JSON &&
        fmt != EW_FORMAT_DEFAULT) {
        ewi_cerr_msg(&e, "unknown format %d", (int)fmt);
        rc = EW_EINVAL;
    } else if (type == &ew_raw_type) {
        rc = ewi_raw_encode(event, fmt, out, &e);
    } else switch (fmt) {
    case EW_FORMAT_DEFAULT:
    case EW_FORMAT_MSGPACK: rc = ewi_msgpack_encode(type, event, out, &e); break;
    case EW_FORMAT_JSON: rc = ewi_json_encode(type, event, out, &e); break;
    default:
        ewi_cerr_msg(&e, "unknown format %d", (int)fmt);
        rc = EW_EINVAL;
        break;
    }
    if (rc != EW_OK) {
        out->len = old;
        if (rc == EW_ENOMEM && !e.msg[0])
            ewi_cerr_msg(&e, "out of memory");
        ewi_cerr_format(&e, type->name, err, errlen);
    }
    return rc;
}

ew_err ew_encode(const ew_type *type, ew_format fmt, const void *event,
                 uint8_t **out, size_t *out_len, char *err, size_t errlen)
{
    if (!out || !out_len) {
        set_err(err, errlen, "encode: NULL output");
        return ewi_fail(EW_EINVAL, "encode: NULL output");
    }
    *out = NULL;
    *out_len = 0;
    ewi_buf b = {NULL, 0, 0};
    char text[512];
    ew_err rc = ewi_encode(type, fmt, event, &b, text, sizeof text);
    if (rc != EW_OK) {
        ewi_buf_free(&b);
        set_err(err, errlen, text);
        return ewi_fail(rc, "%s", text);
    }
    *out = ewi_buf_steal(&b, out_len);
    return EW_OK;
}

ew_err ew_decode(const ew_type *type, ew_format fmt, const void *data,
                 size_t len, const ew_decode_limits *limits, void **out,
                 char *err, size_t errlen)
{
    if (!out) {
        set_err(err, errlen, "decode: NULL output");
        return ewi_fail(EW_EINVAL, "decode: NULL output");
    }
    *out = NULL;
    if (!type || (!data && len > 0)) {
        set_err(err, errlen, "decode: NULL type or data");
        return ewi_fail(EW_EINVAL, "decode: NULL type or data");
    }
    ewi_limits lim = {EWI_DEFAULT_MAX_STRING, EWI_DEFAULT_MAX_ITEMS,
                      EWI_DEFAULT_MAX_DEPTH};
    if (limits) {
        if (limits->max_string)
            lim.max_string = limits->max_string;
        if (limits->max_items)
            lim.max_items = limits->max_items;
        if (limits->max_depth)
            lim.max_depth = limits->max_depth;
    }
    ewi_cerr e;
    ewi_cerr_init(&e);
    static const uint8_t empty[1];
    const uint8_t *bytes = data ? data : empty;
    ew_err rc;
    if (type == &ew_raw_type && (fmt == EW_FORMAT_DEFAULT || fmt == EW_FORMAT_MSGPACK ||
                                 fmt == EW_FORMAT_JSON)) {
        rc = ewi_raw_decode(fmt, bytes, len, out, &e);
    } else switch (fmt) {
    case EW_FORMAT_DEFAULT:
    case EW_FORMAT_MSGPACK:
        rc = ewi_msgpack_decode(type, bytes, len, &lim, out, &e);
        break;
    case EW_FORMAT_JSON:
        rc = ewi_json_decode(type, bytes, len, &lim, out, &e);
        break;
    default:
        ewi_cerr_msg(&e, "unknown format %d", (int)fmt);
        rc = EW_EINVAL;
        break;
    }
    if (rc != EW_OK) {
        *out = NULL;
        if (rc == EW_ENOMEM && !e.msg[0])
            ewi_cerr_msg(&e, "out of memory");
        char text[512];
        ewi_cerr_format(&e, type->name, text, sizeof text);
        set_err(err, errlen, text);
        ewi_set_last_error("%s", text);
    }
    return rc;
}

void ew_event_free(const ew_type *type, void *event)
{
    EWI_UNUSED(type);
    free(event);
}
