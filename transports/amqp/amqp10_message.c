/* Envelope <-> AMQP 1.0 message. Pure bytes in, bytes out (proton's message
 * codec, no connection): unit-tested and fuzzed.
 *
 * On the wire:
 *   header                  durable for durable events
 *   properties              message-id = ew-message-id (string),
 *                           subject = ew-event, content-type,
 *                           creation-time = ew-sent-at
 *   application-properties  every other header, string to string
 *   body                    JSON: one amqp-value string (what aspyx-event
 *                           sends and reads); anything else: one data section
 */
#include "amqp10.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <proton/codec.h>
#include <proton/error.h>
#include <proton/message.h>

/* Decoding keeps each kind of section in a pn_data_t of its own: a section
 * is decoded once, into the scratch one, and swapped into its kind's. */
enum { SEC_SCRATCH, SEC_HEADER, SEC_PROPS, SEC_APP, SEC_BODY, SEC_N };

/* One pn_message_t (and the section pn_data_t's) per thread, cleared before
 * each use: proton's message object costs a dozen allocations to make. */
typedef struct codec_tls {
    pn_message_t *msg;
    pn_data_t *sec[SEC_N];
} codec_tls;

static pthread_key_t tls_key;
static pthread_once_t tls_once = PTHREAD_ONCE_INIT;
static bool tls_key_ok;

static void tls_destroy(void *p)
{
    codec_tls *c = p;
    pn_message_free(c->msg);
    for (int i = 0; i < SEC_N; i++)
        pn_data_free(c->sec[i]);
    free(c);
}

static void tls_key_init(void) { tls_key_ok = pthread_key_create(&tls_key, tls_destroy) == 0; }

static codec_tls *thread_codec(void)
{
    pthread_once(&tls_once, tls_key_init);
    if (!tls_key_ok)
        return NULL;
    codec_tls *c = pthread_getspecific(tls_key);
    if (c)
        return c;
    c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->msg = pn_message();
    bool ok = c->msg != NULL;
    for (int i = 0; i < SEC_N; i++)
        ok = (c->sec[i] = pn_data(16)) != NULL && ok;
    if (!ok || pthread_setspecific(tls_key, c) != 0) {
        tls_destroy(c);
        return NULL;
    }
    return c;
}

static pn_message_t *thread_message(void)
{
    codec_tls *c = thread_codec();
    if (!c)
        return NULL;
    pn_message_clear(c->msg);
    return c->msg;
}

/* proton's objects keep the capacity of the largest message they held: after
 * a large one, let the thread start again with fresh ones rather than pin
 * megabytes per thread for good. */
#define KEEP_BYTES (256u << 10)

static void thread_codec_done(size_t bytes)
{
    if (bytes <= KEEP_BYTES || !tls_key_ok)
        return;
    codec_tls *c = pthread_getspecific(tls_key);
    if (c && pthread_setspecific(tls_key, NULL) == 0)
        tls_destroy(c);
}

/* Which sections a message had: the last one of each kind counts, as in
 * proton's pn_message_decode. */
typedef struct sections {
    bool have[SEC_N];
    bool body_whole; /* the body section has a symbolic descriptor */
} sections;

/* The length of the AMQP value encoded at b (at most n bytes) as its
 * constructors and declared sizes give it, without looking inside compound
 * values; 0 when it runs past n. proton's message object reads sections by
 * these sizes, pn_data_decode by element counts: a section where the two
 * disagree is not read at all. */
static size_t declared_len(const unsigned char *b, size_t n)
{
    size_t off = 0;
    for (size_t need = 1; need; need--) {
        if (off >= n)
            return 0;
        unsigned c = b[off++];
        if (c == 0x00) { /* described: a descriptor, then the value */
            need += 2;
            continue;
        }
        size_t w;
        switch (c >> 4) {
        case 0x4: w = 0; break;
        case 0x5: w = 1; break;
        case 0x6: w = 2; break;
        case 0x7: w = 4; break;
        case 0x8: w = 8; break;
        case 0x9: w = 16; break;
        case 0xa: case 0xc: case 0xe: /* one byte of size */
            if (off >= n)
                return 0;
            w = 1 + (size_t)b[off];
            break;
        case 0xb: case 0xd: case 0xf: /* four bytes of size */
            if (n - off < 4)
                return 0;
            w = 4 + ((size_t)b[off] << 24 | (size_t)b[off + 1] << 16 |
                     (size_t)b[off + 2] << 8 | (size_t)b[off + 3]);
            break;
        default:
            return 0;
        }
        if (w > n - off)
            return 0;
        off += w;
    }
    return off;
}

/* Decodes bytes section by section, each once, into the thread's section
 * pn_data_t's. False when bytes are not a sequence of AMQP 1.0 message
 * sections and nothing else: pn_message_decode accepts some garbage as an
 * empty message, which would lose the bytes. */
static bool split_sections(codec_tls *c, const char *bytes, size_t len, sections *out)
{
    *out = (sections){{false}, false};
    if (!len)
        return false;
    size_t off = 0;
    while (off < len) {
        pn_data_t *d = c->sec[SEC_SCRATCH];
        pn_data_clear(d);
        ssize_t n = pn_data_decode(d, bytes + off, len - off);
        if (n <= 0 ||
            declared_len((const unsigned char *)bytes + off, len - off) != (size_t)n)
            return false;
        off += (size_t)n;
        pn_data_rewind(d);
        if (!pn_data_next(d) || pn_data_type(d) != PN_DESCRIBED)
            return false;
        pn_data_enter(d);
        if (!pn_data_next(d))
            return false;
        int kind = SEC_SCRATCH; /* annotations, footer: not read */
        if (pn_data_type(d) == PN_ULONG) {
            uint64_t code = pn_data_get_ulong(d);
            if (code < 0x70 || code > 0x78) /* header .. footer */
                return false;
            if (code == 0x70) {
                kind = SEC_HEADER;
            } else if (code == 0x73) {
                kind = SEC_PROPS;
            } else if (code == 0x74) {
                kind = SEC_APP;
            } else if (code >= 0x75 && code <= 0x77) { /* data, sequence, value */
                kind = SEC_BODY;
                out->body_whole = false;
            }
        } else if (pn_data_type(d) == PN_SYMBOL) {
            pn_bytes_t sym = pn_data_get_symbol(d);
            if (sym.size < 5 || memcmp(sym.start, "amqp:", 5) != 0)
                return false;
            /* proton's message object takes such a section, whole, as the
             * body */
            kind = SEC_BODY;
            out->body_whole = true;
        } else {
            return false;
        }
        if (kind != SEC_SCRATCH) {
            c->sec[SEC_SCRATCH] = c->sec[kind];
            c->sec[kind] = d;
            out->have[kind] = true;
        }
    }
    return true;
}

/* Moves d to the value of the section it holds (after its descriptor). */
static bool section_value(pn_data_t *d)
{
    pn_data_rewind(d);
    if (!pn_data_next(d) || pn_data_type(d) != PN_DESCRIBED)
        return false;
    pn_data_enter(d);
    return pn_data_next(d) && pn_data_next(d);
}

/* A non-negative decimal in canonical form (what core writes: digits only,
 * no leading zero), so that it comes back from creation-time exactly as it
 * went. */
static bool parse_ms(const char *s, int64_t *out)
{
    if (!s || !*s || (s[0] == '0' && s[1]))
        return false;
    uint64_t v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || v > ((uint64_t)INT64_MAX - (uint64_t)(*s - '0')) / 10)
            return false;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    *out = (int64_t)v;
    return true;
}

/* Headers that travel in their own slot of the properties section: only
 * values that come back from it unchanged (decoding skips empty ones).
 * sent_ok: whether the ew-sent value is one (parsed once per message). */
static bool has_slot(const char *key, const char *value, bool sent_ok)
{
    if (strncmp(key, "ew-", 3) != 0)
        return false; /* a user's header: the common case, one compare */
    if (strcmp(key, EW_HDR_EVENT) == 0 || strcmp(key, EW_HDR_MESSAGE_ID) == 0)
        return value[0] != '\0';
    return sent_ok && strcmp(key, EW_HDR_SENT_AT) == 0;
}

/* v as a decimal, without a format: "-" for negatives never occurs here. */
static size_t decimal(char *buf, uint64_t v)
{
    char tmp[24];
    size_t n = 0, o = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        buf[o++] = tmp[--n];
    buf[o] = 0;
    return o;
}

ew_err amqp10_message_encode(const ew_envelope *env, bool durable, uint8_t **out,
                           size_t *len, char *err, size_t errlen)
{
    *out = NULL;
    *len = 0;
    pn_message_t *m = thread_message();
    if (!m) {
        snprintf(err, errlen, "out of memory");
        return EW_ENOMEM;
    }
    ew_err rc = EW_EENCODE;
    pn_message_set_durable(m, durable);
    const char *ct = ew_envelope_content_type(env);
    if (ct && *ct)
        pn_message_set_content_type(m, ct);
    /* One pass finds the headers with a slot of their own. */
    const char *ev = NULL, *id = NULL, *sent_at = NULL;
    size_t n = ew_envelope_header_count(env), others = 0;
    for (size_t i = 0; i < n; i++) {
        const char *k, *v;
        if (ew_envelope_header_at(env, i, &k, &v) != EW_OK)
            continue;
        if (strncmp(k, "ew-", 3) != 0)
            others++;
        else if (strcmp(k, EW_HDR_EVENT) == 0)
            ev = v;
        else if (strcmp(k, EW_HDR_MESSAGE_ID) == 0)
            id = v;
        else if (strcmp(k, EW_HDR_SENT_AT) == 0)
            sent_at = v;
        else
            others++;
    }
    if (ev && *ev)
        pn_message_set_subject(m, ev);
    if (id && *id) {
        pn_atom_t a = {.type = PN_STRING};
        a.u.as_bytes = pn_bytes(strlen(id), id);
        pn_message_set_id(m, a);
    }
    int64_t sent;
    bool sent_ok = sent_at && parse_ms(sent_at, &sent) && sent > 0;
    if (sent_ok)
        pn_message_set_creation_time(m, sent);

    bool any = others || (ev && !*ev) || (id && !*id) || (sent_at && !sent_ok);
    if (any) {
        pn_data_t *p = pn_message_properties(m);
        pn_data_put_map(p);
        pn_data_enter(p);
        for (size_t i = 0; i < n; i++) {
            const char *k, *v;
            if (ew_envelope_header_at(env, i, &k, &v) != EW_OK || has_slot(k, v, sent_ok))
                continue;
            pn_data_put_string(p, pn_bytes(strlen(k), k));
            pn_data_put_string(p, pn_bytes(strlen(v), v));
        }
        pn_data_exit(p);
    }

    size_t blen = 0;
    const void *body = ew_envelope_body(env, &blen);
    pn_data_t *b = pn_message_body(m);
    if (ew_format_from_content_type(ct) == EW_FORMAT_JSON) {
        pn_data_put_string(b, pn_bytes(blen, body ? body : ""));
        pn_message_set_inferred(m, false);
    } else {
        pn_data_put_binary(b, pn_bytes(blen, body ? body : ""));
        pn_message_set_inferred(m, true);
    }

    pn_rwbytes_t buf = {0, NULL};
    ssize_t w = pn_message_encode2(m, &buf);
    if (w < 0) {
        snprintf(err, errlen, "AMQP message encoding failed: %s",
                 pn_error_text(pn_message_error(m)));
        free(buf.start);
        rc = w == PN_OUT_OF_MEMORY ? EW_ENOMEM : EW_EENCODE;
    } else {
        *out = (uint8_t *)buf.start;
        *len = (size_t)w;
        rc = EW_OK;
    }
    thread_codec_done(blen);
    return rc;
}

/* A scalar application-property value as text; false for lists and maps. */
ew_err amqp10_mgmt_encode(const char *const *props, const char *reply_to, const char *body,
                        uint8_t **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    pn_message_t *m = thread_message();
    if (!m)
        return EW_ENOMEM;
    pn_message_set_durable(m, false);
    pn_message_set_reply_to(m, reply_to);
    pn_data_t *p = pn_message_properties(m);
    pn_data_put_map(p);
    pn_data_enter(p);
    for (size_t i = 0; props[i] && props[i + 1]; i += 2) {
        pn_data_put_string(p, pn_bytes(strlen(props[i]), props[i]));
        pn_data_put_string(p, pn_bytes(strlen(props[i + 1]), props[i + 1]));
    }
    pn_data_exit(p);
    size_t blen = body ? strlen(body) : 0;
    if (body) {
        pn_data_put_string(pn_message_body(m), pn_bytes(blen, body));
        pn_message_set_inferred(m, false);
    }
    pn_rwbytes_t buf = {0, NULL};
    ssize_t w = pn_message_encode2(m, &buf);
    ew_err rc = EW_OK;
    if (w < 0) {
        free(buf.start);
        rc = w == PN_OUT_OF_MEMORY ? EW_ENOMEM : EW_EENCODE;
    } else {
        *out = (uint8_t *)buf.start;
        *len = (size_t)w;
    }
    thread_codec_done(blen);
    return rc;
}

static bool scalar_text(pn_data_t *d, char *buf, size_t len, pn_bytes_t *out)
{
    int n = -1;
    switch (pn_data_type(d)) {
    case PN_STRING: *out = pn_data_get_string(d); return true;
    case PN_SYMBOL: *out = pn_data_get_symbol(d); return true;
    case PN_BINARY: *out = pn_data_get_binary(d); return true;
    case PN_NULL: *out = pn_bytes(0, ""); return true;
    case PN_BOOL: n = snprintf(buf, len, "%s", pn_data_get_bool(d) ? "true" : "false"); break;
    case PN_UBYTE: n = snprintf(buf, len, "%u", (unsigned)pn_data_get_ubyte(d)); break;
    case PN_BYTE: n = snprintf(buf, len, "%d", (int)pn_data_get_byte(d)); break;
    case PN_USHORT: n = snprintf(buf, len, "%u", (unsigned)pn_data_get_ushort(d)); break;
    case PN_SHORT: n = snprintf(buf, len, "%d", (int)pn_data_get_short(d)); break;
    case PN_UINT: n = snprintf(buf, len, "%" PRIu32, pn_data_get_uint(d)); break;
    case PN_INT: n = snprintf(buf, len, "%" PRId32, pn_data_get_int(d)); break;
    case PN_CHAR: n = snprintf(buf, len, "%" PRIu32, (uint32_t)pn_data_get_char(d)); break;
    case PN_ULONG: n = snprintf(buf, len, "%" PRIu64, pn_data_get_ulong(d)); break;
    case PN_LONG: n = snprintf(buf, len, "%" PRId64, pn_data_get_long(d)); break;
    case PN_TIMESTAMP: n = snprintf(buf, len, "%" PRId64, pn_data_get_timestamp(d)); break;
    case PN_FLOAT: n = snprintf(buf, len, "%.9g", (double)pn_data_get_float(d)); break;
    case PN_DOUBLE: n = snprintf(buf, len, "%.17g", pn_data_get_double(d)); break;
    case PN_UUID: {
        pn_uuid_t u = pn_data_get_uuid(d);
        const unsigned char *x = (const unsigned char *)u.bytes;
        n = snprintf(buf, len,
                     "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
                     "%02x%02x%02x%02x%02x%02x",
                     x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7], x[8], x[9],
                     x[10], x[11], x[12], x[13], x[14], x[15]);
        break;
    }
    default:
        return false;
    }
    if (n < 0 || (size_t)n >= len)
        return false;
    *out = pn_bytes((size_t)n, buf);
    return true;
}

/* The application-properties map (d at the section's value): string to
 * string, scalars as text. */
static ew_err put_props(pn_data_t *p, ew_envelope *env)
{
    if (pn_data_type(p) != PN_MAP)
        return EW_OK;
    size_t n = pn_data_get_map(p);
    pn_data_enter(p);
    for (size_t i = 0; i + 1 < n; i += 2) {
        if (!pn_data_next(p))
            break;
        pn_type_t kt = pn_data_type(p);
        pn_bytes_t key = kt == PN_STRING ? pn_data_get_string(p)
                       : kt == PN_SYMBOL ? pn_data_get_symbol(p)
                                         : pn_bytes(0, NULL);
        if (!pn_data_next(p))
            break;
        char tmp[64];
        pn_bytes_t val;
        if (!key.size || !scalar_text(p, tmp, sizeof tmp, &val))
            continue; /* not a string key, or a list or map value */
        ew_err rc = ewi_envelope_put(env, key.start, key.size,
                                     val.start ? val.start : "", val.size);
        if (rc == EW_EINVAL)
            continue; /* a NUL inside: no C string can carry it */
        if (rc != EW_OK) {
            pn_data_exit(p);
            return rc;
        }
    }
    pn_data_exit(p);
    return EW_OK;
}

static ew_err put_if_absent(ew_envelope *env, const char *key, const char *v,
                            size_t vlen)
{
    if (ew_envelope_header(env, key))
        return EW_OK;
    ew_err rc = ewi_envelope_put(env, key, strlen(key), v, vlen);
    return rc == EW_EINVAL ? EW_OK : rc; /* a NUL inside: left out */
}

/* What the properties section gives: proton's message object reads these
 * fields as C strings (up to a NUL) and keeps only the types below. */
typedef struct props_fields {
    pn_bytes_t subject, content_type; /* size 0 when absent */
    pn_bytes_t id;                    /* as text; size 0 when absent */
    char id_buf[64];
    pn_timestamp_t created;
} props_fields;

static pn_bytes_t c_string(pn_bytes_t b)
{
    return pn_bytes(b.start ? strnlen(b.start, b.size) : 0, b.start);
}

/* The types a message-id can have in proton's message object. */
static bool id_type(pn_type_t t)
{
    switch (t) {
    case PN_ULONG: case PN_UINT: case PN_USHORT: case PN_UBYTE: case PN_BOOL:
    case PN_TIMESTAMP: case PN_BINARY: case PN_STRING: case PN_SYMBOL: case PN_UUID:
        return true;
    default:
        return false;
    }
}

/* Fields of the properties list (d at the section's value). */
static void read_props(pn_data_t *d, props_fields *f)
{
    if (pn_data_type(d) != PN_LIST)
        return;
    size_t n = pn_data_get_list(d);
    pn_data_enter(d);
    for (size_t i = 0; i < n && i <= 9 && pn_data_next(d); i++) {
        pn_type_t t = pn_data_type(d);
        if (i == 0 && id_type(t))
            scalar_text(d, f->id_buf, sizeof f->id_buf, &f->id);
        else if (i == 3 && t == PN_STRING)
            f->subject = c_string(pn_data_get_string(d));
        else if (i == 6 && t == PN_SYMBOL)
            f->content_type = c_string(pn_data_get_symbol(d));
        else if (i == 9 && t == PN_TIMESTAMP)
            f->created = pn_data_get_timestamp(d);
    }
    pn_data_exit(d);
}

static ew_err put_meta(const props_fields *f, ew_envelope *env)
{
    ew_err rc;
    if (f->subject.size &&
        (rc = put_if_absent(env, EW_HDR_EVENT, f->subject.start, f->subject.size)) != EW_OK)
        return rc;
    if (f->id.size &&
        (rc = put_if_absent(env, EW_HDR_MESSAGE_ID, f->id.start, f->id.size)) != EW_OK)
        return rc;
    if (f->created > 0) {
        char tmp[32];
        size_t n = decimal(tmp, (uint64_t)f->created);
        if ((rc = put_if_absent(env, EW_HDR_SENT_AT, tmp, n)) != EW_OK)
            return rc;
    }
    return EW_OK;
}

/* Header fields (d at the section's value). */
static void read_header(pn_data_t *d, amqp10_wire_meta *meta)
{
    if (pn_data_type(d) != PN_LIST)
        return;
    size_t n = pn_data_get_list(d);
    pn_data_enter(d);
    for (size_t i = 0; i < n && i <= 4 && pn_data_next(d); i++) {
        pn_type_t t = pn_data_type(d);
        if (i == 0 && t == PN_BOOL)
            meta->durable = pn_data_get_bool(d);
        else if (i == 3 && t == PN_BOOL)
            meta->first_acquirer = pn_data_get_bool(d);
        else if (i == 4 && t == PN_UINT)
            meta->delivery_count = pn_data_get_uint(d);
    }
    pn_data_exit(d);
}

/* A body value that is neither bytes nor a string: its AMQP encoding, kept
 * so that a dead letter still holds it. Made by proton's message object, as
 * it reads such bodies (rare: no eventwire sender makes one). */
static ew_err put_value_body(const char *bytes, size_t len, ew_envelope *env,
                             char *err, size_t errlen)
{
    pn_message_t *m = thread_message();
    if (!m) {
        snprintf(err, errlen, "out of memory");
        return EW_ENOMEM;
    }
    if (pn_message_decode(m, bytes, len) != 0) {
        snprintf(err, errlen, "out of memory");
        return EW_ENOMEM;
    }
    pn_data_t *b = pn_message_body(m);
    pn_data_rewind(b);
    pn_type_t bt = pn_data_next(b) ? pn_data_type(b) : PN_NULL;
    if (bt == PN_NULL)
        return EW_OK;
    pn_data_rewind(b);
    ssize_t sz = pn_data_encoded_size(b);
    char *buf = sz < 0 ? NULL : malloc(sz ? (size_t)sz : 1);
    ssize_t w = buf ? pn_data_encode(b, buf, (size_t)sz) : -1;
    if (!buf && sz >= 0) {
        snprintf(err, errlen, "out of memory");
        return EW_ENOMEM;
    }
    if (w < 0) {
        free(buf);
        snprintf(err, errlen, "AMQP body of type %s cannot be re-encoded", pn_type_name(bt));
        return EW_EDECODE;
    }
    ewi_envelope_take_body(env, buf, (size_t)w);
    ew_err rc = ewi_envelope_set_content_type(env, AMQP10_CT_VALUE);
    if (rc != EW_OK) {
        snprintf(err, errlen, "out of memory");
        return rc;
    }
    snprintf(err, errlen,
             "AMQP body is an amqp-value of type %s, not bytes or a string: kept as "
             AMQP10_CT_VALUE, pn_type_name(bt));
    return EW_EDECODE;
}

static ew_err decode_sections(codec_tls *c, const sections *s, const char *bytes,
                              size_t len, ew_envelope *env, amqp10_wire_meta *meta,
                              char *err, size_t errlen);

ew_err amqp10_message_decode(const char *bytes, size_t len, ew_envelope *env,
                           amqp10_wire_meta *meta, char *err, size_t errlen)
{
    if (meta)
        *meta = (amqp10_wire_meta){0, false, false};
    codec_tls *c = thread_codec();
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return EW_ENOMEM;
    }
    ew_err rc = EW_OK;
    sections s;
    if (!split_sections(c, bytes, len, &s)) {
        snprintf(err, errlen, "not an AMQP 1.0 message (%s): kept as raw bytes",
                 len ? pn_code(PN_ERR) : "empty");
        if ((rc = ewi_envelope_set_body(env, len ? bytes : "", len)) == EW_OK)
            rc = ewi_envelope_set_content_type(env, AMQP10_CT_UNREADABLE);
        thread_codec_done(len);
        return rc == EW_OK ? EW_EDECODE : rc;
    }
    rc = decode_sections(c, &s, bytes, len, env, meta, err, errlen);
    thread_codec_done(len);
    return rc;
}

/* The decoding proper, from the sections split_sections accepted. */
static ew_err decode_sections(codec_tls *c, const sections *s, const char *bytes,
                              size_t len, ew_envelope *env, amqp10_wire_meta *meta,
                              char *err, size_t errlen)
{
    ew_err rc = EW_OK;
    if (meta && s->have[SEC_HEADER] && section_value(c->sec[SEC_HEADER]))
        read_header(c->sec[SEC_HEADER], meta);
    props_fields f = {{0, NULL}, {0, NULL}, {0, NULL}, "", 0};
    if (s->have[SEC_PROPS] && section_value(c->sec[SEC_PROPS]))
        read_props(c->sec[SEC_PROPS], &f);
    if ((s->have[SEC_APP] && section_value(c->sec[SEC_APP]) &&
         (rc = put_props(c->sec[SEC_APP], env)) != EW_OK) ||
        (rc = put_meta(&f, env)) != EW_OK) {
        snprintf(err, errlen, "out of memory");
        return rc;
    }

    pn_bytes_t ct = f.content_type;
    bool json_default = false;
    if (s->have[SEC_BODY]) {
        pn_data_t *b = c->sec[SEC_BODY];
        pn_type_t bt = !s->body_whole && section_value(b) ? pn_data_type(b) : PN_DESCRIBED;
        if (bt == PN_BINARY || bt == PN_STRING) {
            pn_bytes_t v = bt == PN_BINARY ? pn_data_get_binary(b)
                                           : pn_data_get_string(b);
            rc = ewi_envelope_set_body(env, v.start ? v.start : "", v.size);
            json_default = bt == PN_STRING;
        } else if (bt != PN_NULL) {
            rc = put_value_body(bytes, len, env, err, errlen);
            if (rc != EW_OK)
                return rc;
            ct = pn_bytes(0, NULL);
        }
    }
    if (rc == EW_OK) {
        char ctbuf[256];
        if (ct.size >= sizeof ctbuf) {
            rc = EW_ETOOBIG;
        } else if (ct.size) {
            memcpy(ctbuf, ct.start, ct.size);
            ctbuf[ct.size] = '\0';
            rc = ewi_envelope_set_content_type(env, ctbuf);
        } else if (json_default) {
            rc = ewi_envelope_set_content_type(env, EW_CONTENT_TYPE_JSON);
        }
        if (rc == EW_ETOOBIG) {
            snprintf(err, errlen, "content type of %zu bytes is too long: kept as "
                     AMQP10_CT_TOO_LONG, ct.size);
            rc = ewi_envelope_set_content_type(env, AMQP10_CT_TOO_LONG);
            if (rc == EW_OK)
                rc = EW_EDECODE;
        }
        if (rc == EW_ENOMEM)
            snprintf(err, errlen, "out of memory");
    }
    return rc;
}
