/* Envelope <-> AMQP 1.0 message. Pure bytes in, bytes out (no connection):
 * unit-tested and fuzzed. Encoding writes the few fields below straight into
 * one buffer; decoding reads the common shapes in place and hands anything
 * else to proton's decoder.
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
#include <stdint.h>
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

/* ---- encoding ------------------------------------------------------------
 * Written straight into one buffer of the exact size: the message always has
 * the same few fields (all strings but the durable flag and the creation
 * time), and building proton's message object for them costs more than the
 * rest of a send. Decoding (proton's or ours) reads it back; the unit tests
 * and the fuzz target check that. */

/* Bytes of a string, symbol or binary of n bytes, its constructor included. */
static size_t vbin_size(size_t n) { return n < 256 ? 2 + n : 5 + n; }

static unsigned char *put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
    return p + 4;
}

/* code8: 0xa0 binary, 0xa1 string, 0xa3 symbol (their 32-bit forms are
 * 0x10 more). */
static unsigned char *put_vbin(unsigned char *p, unsigned code8, const void *v, size_t n)
{
    if (n < 256) {
        *p++ = (unsigned char)code8;
        *p++ = (unsigned char)n;
    } else {
        *p++ = (unsigned char)(code8 + 0x10);
        p = put_be32(p, (uint32_t)n);
    }
    if (n)
        memcpy(p, v, n);
    return p + n;
}

/* A list or map header for count elements taking size bytes. */
static size_t compound_head_size(size_t size, size_t count)
{
    return size + 1 < 256 && count < 256 ? 3 : 9;
}

static unsigned char *put_compound(unsigned char *p, unsigned code8, size_t size,
                                   size_t count)
{
    if (compound_head_size(size, count) == 3) {
        *p++ = (unsigned char)code8;
        *p++ = (unsigned char)(size + 1);
        *p++ = (unsigned char)count;
    } else {
        *p++ = (unsigned char)(code8 + 0x10);
        p = put_be32(p, (uint32_t)(size + 4));
        p = put_be32(p, (uint32_t)count);
    }
    return p;
}

static unsigned char *put_section(unsigned char *p, unsigned code)
{
    *p++ = 0x00; /* described */
    *p++ = 0x53; /* smallulong descriptor */
    *p++ = (unsigned char)code;
    return p;
}

/* The properties list: message-id (0), subject (3), content-type (6),
 * creation-time (9); absent fields before the last present one are null. */
typedef struct props_out {
    const char *id, *subject, *ct;
    size_t id_len, subject_len, ct_len;
    int64_t created; /* 0: absent */
    size_t count, size;
} props_out;

static void props_measure(props_out *po)
{
    po->count = po->created ? 10 : po->ct ? 7 : po->subject ? 4 : po->id ? 1 : 0;
    size_t size = 0;
    for (size_t i = 0; i < po->count; i++) {
        if (i == 0 && po->id)
            size += vbin_size(po->id_len);
        else if (i == 3 && po->subject)
            size += vbin_size(po->subject_len);
        else if (i == 6 && po->ct)
            size += vbin_size(po->ct_len);
        else if (i == 9)
            size += 9;
        else
            size += 1;
    }
    po->size = size;
}

static unsigned char *props_put(unsigned char *p, const props_out *po)
{
    p = put_section(p, 0x73);
    p = put_compound(p, 0xc0, po->size, po->count);
    for (size_t i = 0; i < po->count; i++) {
        if (i == 0 && po->id) {
            p = put_vbin(p, 0xa1, po->id, po->id_len);
        } else if (i == 3 && po->subject) {
            p = put_vbin(p, 0xa1, po->subject, po->subject_len);
        } else if (i == 6 && po->ct) {
            p = put_vbin(p, 0xa3, po->ct, po->ct_len);
        } else if (i == 9) {
            uint64_t v = (uint64_t)po->created;
            *p++ = 0x83; /* timestamp */
            p = put_be32(p, (uint32_t)(v >> 32));
            p = put_be32(p, (uint32_t)v);
        } else {
            *p++ = 0x40; /* null */
        }
    }
    return p;
}

/* A header with its lengths, read once. */
typedef struct hdr_ref {
    const char *k, *v;
    size_t kl, vl;
    bool slot; /* travels in the properties section */
} hdr_ref;

#define HDR_STACK 16

static bool key_is(const hdr_ref *h, const char *name, size_t len)
{
    return h->kl == len && memcmp(h->k, name, len) == 0;
}

ew_err amqp10_message_encode(const ew_envelope *env, bool durable, uint8_t **out,
                           size_t *len, char *err, size_t errlen)
{
    return amqp10_message_encode_after(env, durable, 0, out, len, err, errlen);
}

ew_err amqp10_message_encode_after(const ew_envelope *env, bool durable, size_t head,
                                   uint8_t **out, size_t *len, char *err, size_t errlen)
{
    *out = NULL;
    *len = 0;
    props_out po = {0};
    const char *ct = ew_envelope_content_type(env);
    if (ct && *ct) {
        po.ct = ct;
        po.ct_len = strlen(ct);
    }
    /* One pass reads the headers and finds those with a slot of their own. */
    size_t n = ew_envelope_header_count(env);
    hdr_ref stack[HDR_STACK], *h = n <= HDR_STACK ? stack : malloc(n * sizeof *h);
    if (!h) {
        snprintf(err, errlen, "out of memory");
        return EW_ENOMEM;
    }
    hdr_ref *ev = NULL, *id = NULL, *sent_at = NULL;
    size_t nh = 0;
    for (size_t i = 0; i < n; i++) {
        hdr_ref *x = &h[nh];
        if (ewi_envelope_header_n(env, i, &x->k, &x->kl, &x->v, &x->vl) != EW_OK)
            continue;
        x->slot = false;
        nh++;
        if (x->kl < 3 || memcmp(x->k, "ew-", 3) != 0)
            continue; /* a user's header: the common case */
        if (key_is(x, EW_HDR_EVENT, sizeof EW_HDR_EVENT - 1))
            ev = x;
        else if (key_is(x, EW_HDR_MESSAGE_ID, sizeof EW_HDR_MESSAGE_ID - 1))
            id = x;
        else if (key_is(x, EW_HDR_SENT_AT, sizeof EW_HDR_SENT_AT - 1))
            sent_at = x;
    }
    /* Only values that come back from their slot unchanged (decoding skips
     * empty ones) take it. */
    if (ev && ev->vl) {
        po.subject = ev->v;
        po.subject_len = ev->vl;
        ev->slot = true;
    }
    if (id && id->vl) {
        po.id = id->v;
        po.id_len = id->vl;
        id->slot = true;
    }
    int64_t sent;
    if (sent_at && parse_ms(sent_at->v, &sent) && sent > 0) {
        po.created = sent;
        sent_at->slot = true;
    }
    props_measure(&po);

    size_t app_size = 0, app_count = 0;
    for (size_t i = 0; i < nh; i++) {
        if (h[i].slot)
            continue;
        app_size += vbin_size(h[i].kl) + vbin_size(h[i].vl);
        app_count += 2;
    }

    size_t blen = 0;
    const void *body = ew_envelope_body(env, &blen);
    bool json = ew_format_from_content_type(ct) == EW_FORMAT_JSON;
    ew_err rc = EW_OK;
    unsigned char *buf = NULL, *p;
    if (blen > UINT32_MAX - 64 || app_size > UINT32_MAX - 64) {
        snprintf(err, errlen, "AMQP message encoding failed: %zu bytes are too many for "
                 "one message", blen > app_size ? blen : app_size);
        rc = EW_ETOOBIG;
        goto done;
    }
    size_t total = (durable ? 7 : 0) +
                   (po.count ? 3 + compound_head_size(po.size, po.count) + po.size : 0) +
                   (app_count ? 3 + compound_head_size(app_size, app_count) + app_size : 0) +
                   3 + vbin_size(blen);
    if (!(buf = malloc(head + total))) {
        snprintf(err, errlen, "out of memory");
        rc = EW_ENOMEM;
        goto done;
    }
    p = buf + head;
    if (durable) {
        p = put_section(p, 0x70);
        p = put_compound(p, 0xc0, 1, 1);
        *p++ = 0x41; /* true */
    }
    if (po.count)
        p = props_put(p, &po);
    if (app_count) {
        p = put_section(p, 0x74);
        p = put_compound(p, 0xc1, app_size, app_count);
        for (size_t i = 0; i < nh; i++) {
            if (h[i].slot)
                continue;
            p = put_vbin(p, 0xa1, h[i].k, h[i].kl);
            p = put_vbin(p, 0xa1, h[i].v, h[i].vl);
        }
    }
    /* JSON: one amqp-value string (what aspyx-event sends and reads); else
     * one data section. */
    p = put_section(p, json ? 0x77 : 0x75);
    p = put_vbin(p, json ? 0xa1 : 0xa0, body, blen);
    *out = buf;
    *len = (size_t)(p - buf) - head;
done:
    if (h != stack)
        free(h);
    return rc;
}

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

/* A scalar as text; false for lists, maps and the rest. */
static bool scalar_text(const pn_atom_t *a, char *buf, size_t len, pn_bytes_t *out)
{
    int n = -1;
    switch (a->type) {
    case PN_STRING: case PN_SYMBOL: case PN_BINARY: *out = a->u.as_bytes; return true;
    case PN_NULL: *out = pn_bytes(0, ""); return true;
    case PN_BOOL: n = snprintf(buf, len, "%s", a->u.as_bool ? "true" : "false"); break;
    case PN_UBYTE: n = snprintf(buf, len, "%u", (unsigned)a->u.as_ubyte); break;
    case PN_BYTE: n = snprintf(buf, len, "%d", (int)a->u.as_byte); break;
    case PN_USHORT: n = snprintf(buf, len, "%u", (unsigned)a->u.as_ushort); break;
    case PN_SHORT: n = snprintf(buf, len, "%d", (int)a->u.as_short); break;
    case PN_UINT: n = snprintf(buf, len, "%" PRIu32, a->u.as_uint); break;
    case PN_INT: n = snprintf(buf, len, "%" PRId32, a->u.as_int); break;
    case PN_CHAR: n = snprintf(buf, len, "%" PRIu32, (uint32_t)a->u.as_char); break;
    case PN_ULONG:
        n = (int)decimal(buf, a->u.as_ulong); /* the common id type: no format */
        break;
    case PN_LONG: n = snprintf(buf, len, "%" PRId64, a->u.as_long); break;
    case PN_TIMESTAMP: n = snprintf(buf, len, "%" PRId64, a->u.as_timestamp); break;
    case PN_FLOAT: n = snprintf(buf, len, "%.9g", (double)a->u.as_float); break;
    case PN_DOUBLE: n = snprintf(buf, len, "%.17g", a->u.as_double); break;
    case PN_UUID: {
        const unsigned char *x = (const unsigned char *)a->u.as_uuid.bytes;
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

/* The headers of one received message, gathered to go into the envelope in
 * one ewi_envelope_put_received instead of one ewi_envelope_put each. The
 * result is what those puts gave: an application property replaces an
 * earlier one of the same key (and moves to the end), the properties
 * section's fields come after them and only where no property set them. A
 * message with more properties than fit here takes the puts one by one. */
#define HDR_BATCH 16
#define HDR_META 3 /* ew-event, ew-message-id, ew-sent-at */

typedef struct hdr_batch {
    ew_envelope *env;
    bool direct; /* full: each header goes straight into env */
    size_t n, ntext;
    ewi_env_kv kv[HDR_BATCH];
    char text[HDR_BATCH][64]; /* values written as text */
} hdr_batch;

static void batch_init(hdr_batch *b, ew_envelope *env)
{
    b->env = env;
    b->direct = false;
    b->n = b->ntext = 0;
}

static ew_err batch_flush(hdr_batch *b)
{
    ew_err rc = b->n ? ewi_envelope_put_received(b->env, b->kv, b->n) : EW_OK;
    b->n = 0;
    return rc;
}

static bool has_nul(const char *s, size_t n)
{
    return memchr(s, '\0', n) != NULL;
}

/* One application property: string or symbol keys, scalar values as text
 * (others are left out). */
static ew_err put_prop(hdr_batch *b, const pn_atom_t *k, const pn_atom_t *v)
{
    pn_bytes_t key = k->type == PN_STRING || k->type == PN_SYMBOL ? k->u.as_bytes
                                                                   : pn_bytes(0, NULL);
    if (!key.size)
        return EW_OK; /* not a string key */
    if (!b->direct && b->ntext == HDR_BATCH - HDR_META) {
        ew_err rc = batch_flush(b);
        if (rc != EW_OK)
            return rc;
        b->direct = true;
    }
    char tmp[64];
    char *buf = b->direct ? tmp : b->text[b->ntext];
    pn_bytes_t val;
    if (!scalar_text(v, buf, sizeof tmp, &val))
        return EW_OK; /* a list or map value */
    const char *vs = val.start ? val.start : "";
    if (b->direct) {
        ew_err rc = ewi_envelope_put(b->env, key.start, key.size, vs, val.size);
        return rc == EW_EINVAL ? EW_OK : rc; /* a NUL inside: no C string can carry it */
    }
    b->ntext++;
    for (size_t i = 0; i < b->n; i++) {
        if (b->kv[i].klen != key.size || memcmp(b->kv[i].key, key.start, key.size) != 0)
            continue;
        /* A repeated key: the later value replaces the earlier, unless it
         * cannot be put (a NUL). */
        if (has_nul(key.start, key.size) || has_nul(vs, val.size))
            return EW_OK;
        memmove(&b->kv[i], &b->kv[i + 1], (b->n - i - 1) * sizeof b->kv[0]);
        b->n--;
        break;
    }
    b->kv[b->n++] = (ewi_env_kv){key.start, vs, key.size, val.size};
    return EW_OK;
}

/* The application-properties map (d at the section's value). */
static ew_err put_props(pn_data_t *p, hdr_batch *b)
{
    if (pn_data_type(p) != PN_MAP)
        return EW_OK;
    size_t n = pn_data_get_map(p);
    pn_data_enter(p);
    for (size_t i = 0; i + 1 < n; i += 2) {
        if (!pn_data_next(p))
            break;
        pn_atom_t k = pn_data_get_atom(p);
        if (!pn_data_next(p))
            break;
        pn_atom_t v = pn_data_get_atom(p);
        ew_err rc = put_prop(b, &k, &v);
        if (rc != EW_OK) {
            pn_data_exit(p);
            return rc;
        }
    }
    pn_data_exit(p);
    return EW_OK;
}

/* key unless a property set it. v must live until the batch is flushed. */
static ew_err put_if_absent(hdr_batch *b, const char *key, const char *v, size_t vlen)
{
    if (!b->direct) {
        /* Room was kept: ewi_envelope_put_received keeps the first. */
        b->kv[b->n++] = (ewi_env_kv){key, v, strlen(key), vlen};
        return EW_OK;
    }
    if (ew_envelope_header(b->env, key))
        return EW_OK;
    ew_err rc = ewi_envelope_put(b->env, key, strlen(key), v, vlen);
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

/* Field i of the properties list. */
static void props_field(props_fields *f, size_t i, const pn_atom_t *a)
{
    if (i == 0 && id_type(a->type))
        scalar_text(a, f->id_buf, sizeof f->id_buf, &f->id);
    else if (i == 3 && a->type == PN_STRING)
        f->subject = c_string(a->u.as_bytes);
    else if (i == 6 && a->type == PN_SYMBOL)
        f->content_type = c_string(a->u.as_bytes);
    else if (i == 9 && a->type == PN_TIMESTAMP)
        f->created = a->u.as_timestamp;
}

/* Fields of the properties list (d at the section's value). */
static void read_props(pn_data_t *d, props_fields *f)
{
    if (pn_data_type(d) != PN_LIST)
        return;
    size_t n = pn_data_get_list(d);
    pn_data_enter(d);
    for (size_t i = 0; i < n && i <= 9 && pn_data_next(d); i++) {
        pn_atom_t a = pn_data_get_atom(d);
        props_field(f, i, &a);
    }
    pn_data_exit(d);
}

/* The properties section's fields as ew-* headers, then every header into
 * the envelope. */
static ew_err put_meta(const props_fields *f, hdr_batch *b)
{
    ew_err rc;
    char sent[32];
    if (f->subject.size &&
        (rc = put_if_absent(b, EW_HDR_EVENT, f->subject.start, f->subject.size)) != EW_OK)
        return rc;
    if (f->id.size && (rc = put_if_absent(b, EW_HDR_MESSAGE_ID, f->id.start, f->id.size)) !=
                          EW_OK)
        return rc;
    if (f->created > 0) {
        size_t n = decimal(sent, (uint64_t)f->created);
        if ((rc = put_if_absent(b, EW_HDR_SENT_AT, sent, n)) != EW_OK)
            return rc;
    }
    return batch_flush(b);
}

/* Field i of the header list. */
static void header_field(amqp10_wire_meta *meta, size_t i, const pn_atom_t *a)
{
    if (i == 0 && a->type == PN_BOOL)
        meta->durable = a->u.as_bool;
    else if (i == 3 && a->type == PN_BOOL)
        meta->first_acquirer = a->u.as_bool;
    else if (i == 4 && a->type == PN_UINT)
        meta->delivery_count = a->u.as_uint;
}

/* Header fields (d at the section's value). */
static void read_header(pn_data_t *d, amqp10_wire_meta *meta)
{
    if (pn_data_type(d) != PN_LIST)
        return;
    size_t n = pn_data_get_list(d);
    pn_data_enter(d);
    for (size_t i = 0; i < n && i <= 4 && pn_data_next(d); i++) {
        pn_atom_t a = pn_data_get_atom(d);
        header_field(meta, i, &a);
    }
    pn_data_exit(d);
}

/* The content type the message named (ct, size 0 when none), else JSON's for
 * an amqp-value string body (json_default). */
static ew_err put_content_type(ew_envelope *env, pn_bytes_t ct, bool json_default,
                               char *err, size_t errlen)
{
    ew_err rc = EW_OK;
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
    return rc;
}

/* ---- decoding the common shapes straight from the bytes ------------------
 * What eventwire and the usual clients send (header, annotations,
 * properties, application-properties of scalars, one data section or an
 * amqp-value string or binary, a footer) is read in place, with no copy into
 * proton's data objects. Anything else, or sizes that disagree with their
 * content anywhere, goes to proton's decoder below, which gives the same
 * result for these shapes (the fuzz target compares the two). */

typedef struct wire {
    const unsigned char *p;
    size_t n; /* bytes left */
} wire;

#define WIRE_DEPTH 16

static uint32_t be32(const unsigned char *b)
{
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

static uint64_t be64(const unsigned char *b)
{
    return (uint64_t)be32(b) << 32 | be32(b + 4);
}

static bool wire_contents(wire in, size_t count, int depth);

/* The bytes after the constructor of the fixed-width types this reader
 * takes; -1 for the others. */
static int fixed_width(unsigned c)
{
    switch (c) {
    case 0x40: case 0x41: case 0x42: case 0x43: case 0x44: case 0x45:
        return 0;
    case 0x50: case 0x51: case 0x52: case 0x53: case 0x54: case 0x55: case 0x56:
        return 1;
    case 0x60: case 0x61:
        return 2;
    case 0x70: case 0x71: case 0x72: case 0x73:
        return 4;
    case 0x80: case 0x81: case 0x82: case 0x83:
        return 8;
    case 0x98:
        return 16;
    default:
        return -1;
    }
}

/* Reads the value at w into *a (lists and maps: their type, their contents
 * in *inner and their element count in *count, the contents checked the
 * same way to WIRE_DEPTH when check). False for a value this reader leaves
 * to proton (described values, arrays, decimals) or sizes that disagree. */
static bool wire_value(wire *w, pn_atom_t *a, wire *inner, size_t *count, int depth,
                       bool check)
{
    if (!w->n)
        return false;
    unsigned c = w->p[0];
    const unsigned char *b = w->p + 1; /* after the constructor */
    size_t left = w->n - 1, used;      /* used: bytes after the constructor */
    int fw = fixed_width(c);
    if (fw >= 0) {
        used = (size_t)fw;
        if (used > left)
            return false;
        switch (c) {
        case 0x40: a->type = PN_NULL; break;
        case 0x41: a->type = PN_BOOL; a->u.as_bool = true; break;
        case 0x42: a->type = PN_BOOL; a->u.as_bool = false; break;
        case 0x43: a->type = PN_UINT; a->u.as_uint = 0; break;
        case 0x44: a->type = PN_ULONG; a->u.as_ulong = 0; break;
        case 0x45: a->type = PN_LIST; *inner = (wire){b, 0}; *count = 0; break;
        case 0x50: a->type = PN_UBYTE; a->u.as_ubyte = b[0]; break;
        case 0x51: a->type = PN_BYTE; a->u.as_byte = (int8_t)b[0]; break;
        case 0x52: a->type = PN_UINT; a->u.as_uint = b[0]; break;
        case 0x53: a->type = PN_ULONG; a->u.as_ulong = b[0]; break;
        case 0x54: a->type = PN_INT; a->u.as_int = (int8_t)b[0]; break;
        case 0x55: a->type = PN_LONG; a->u.as_long = (int8_t)b[0]; break;
        case 0x56: a->type = PN_BOOL; a->u.as_bool = b[0] != 0; break;
        case 0x60: a->type = PN_USHORT; a->u.as_ushort = (uint16_t)(b[0] << 8 | b[1]); break;
        case 0x61: a->type = PN_SHORT; a->u.as_short = (int16_t)(b[0] << 8 | b[1]); break;
        case 0x70: a->type = PN_UINT; a->u.as_uint = be32(b); break;
        case 0x71: a->type = PN_INT; a->u.as_int = (int32_t)be32(b); break;
        case 0x72: {
            uint32_t v = be32(b);
            a->type = PN_FLOAT;
            memcpy(&a->u.as_float, &v, sizeof v);
            break;
        }
        case 0x73: a->type = PN_CHAR; a->u.as_char = (pn_char_t)be32(b); break;
        case 0x80: a->type = PN_ULONG; a->u.as_ulong = be64(b); break;
        case 0x81: a->type = PN_LONG; a->u.as_long = (int64_t)be64(b); break;
        case 0x82: {
            uint64_t v = be64(b);
            a->type = PN_DOUBLE;
            memcpy(&a->u.as_double, &v, sizeof v);
            break;
        }
        case 0x83: a->type = PN_TIMESTAMP; a->u.as_timestamp = (int64_t)be64(b); break;
        case 0x98: a->type = PN_UUID; memcpy(a->u.as_uuid.bytes, b, 16); break;
        default: return false;
        }
    } else {
        size_t size, nc; /* declared size, bytes of the count */
        switch (c) {
        case 0xa0: case 0xa1: case 0xa3: case 0xc0: case 0xc1:
            if (left < 1)
                return false;
            size = b[0], nc = 1;
            break;
        case 0xb0: case 0xb1: case 0xb3: case 0xd0: case 0xd1:
            if (left < 4)
                return false;
            size = be32(b), nc = 4;
            break;
        default:
            return false;
        }
        if (size > left - nc)
            return false;
        used = nc + size;
        switch (c & 0x0f) {
        case 0x0: a->type = c < 0xc0 ? PN_BINARY : PN_LIST; break;
        case 0x1: a->type = c < 0xc0 ? PN_STRING : PN_MAP; break;
        default: a->type = PN_SYMBOL; break;
        }
        const unsigned char *v = b + nc; /* the value, size bytes */
        if (c < 0xc0) {
            a->u.as_bytes = pn_bytes(size, (const char *)v);
        } else {
            /* the size covers the count too */
            if (size < nc || depth >= WIRE_DEPTH)
                return false;
            *count = nc == 1 ? v[0] : be32(v);
            *inner = (wire){v + nc, size - nc};
            if (check && !wire_contents(*inner, *count, depth + 1))
                return false;
        }
    }
    w->p = b + used;
    w->n = left - used;
    return true;
}

/* Skips the value at w, checking it as wire_value does. */
static bool wire_skip(wire *w, int depth)
{
    if (!w->n)
        return false;
    unsigned c = w->p[0];
    size_t used; /* with the constructor */
    int fw = fixed_width(c);
    if (fw >= 0) {
        used = 1 + (size_t)fw;
    } else if (c == 0xa0 || c == 0xa1 || c == 0xa3) {
        used = w->n < 2 ? SIZE_MAX : 2 + (size_t)w->p[1];
    } else if (c == 0xb0 || c == 0xb1 || c == 0xb3) {
        used = w->n < 5 ? SIZE_MAX : 5 + (size_t)be32(w->p + 1);
    } else {
        pn_atom_t a; /* lists and maps, checked inside */
        wire in;
        size_t count;
        return wire_value(w, &a, &in, &count, depth, true);
    }
    if (used > w->n)
        return false;
    w->p += used;
    w->n -= used;
    return true;
}

/* Checks count elements that must fill in exactly. */
static bool wire_contents(wire in, size_t count, int depth)
{
    for (size_t i = 0; i < count; i++)
        if (!wire_skip(&in, depth))
            return false;
    return in.n == 0; /* else the size says more than the elements hold */
}

/* The sections of a message this reader takes, each at most once. */
typedef struct wire_msg {
    bool have_header, have_props, have_app, have_body;
    wire header, props, app; /* list / map contents */
    size_t header_n, props_n, app_n;
    pn_atom_t body;
} wire_msg;

static bool wire_sections(const unsigned char *b, size_t len, wire_msg *m)
{
    *m = (wire_msg){0};
    wire w = {b, len};
    if (!len)
        return false;
    while (w.n) {
        if (w.n < 3 || w.p[0] != 0x00 || w.p[1] != 0x53)
            return false;
        unsigned code = w.p[2];
        w.p += 3;
        w.n -= 3;
        pn_atom_t a;
        wire inner = {NULL, 0};
        size_t count = 0;
        if (!wire_value(&w, &a, &inner, &count, 0, true))
            return false;
        switch (code) {
        case 0x70:
            if (m->have_header || a.type != PN_LIST)
                return false;
            m->have_header = true;
            m->header = inner;
            m->header_n = count;
            break;
        case 0x71: case 0x72: case 0x78: /* annotations, footer: not read */
            break;
        case 0x73:
            if (m->have_props || a.type != PN_LIST)
                return false;
            m->have_props = true;
            m->props = inner;
            m->props_n = count;
            break;
        case 0x74:
            if (m->have_app || a.type != PN_MAP || count % 2)
                return false;
            m->have_app = true;
            m->app = inner;
            m->app_n = count;
            break;
        case 0x75: case 0x77: /* data; amqp-value */
            if (m->have_body || !(a.type == PN_BINARY || (code == 0x77 && a.type == PN_STRING)))
                return false;
            m->have_body = true;
            m->body = a;
            break;
        default:
            return false;
        }
    }
    return true;
}

/* The next element of a list or map that wire_sections checked. */
static pn_atom_t wire_next(wire *w)
{
    pn_atom_t a;
    if (w->p[0] == 0x40) { /* null: the absent fields of a list */
        w->p++;
        w->n--;
        a.type = PN_NULL;
        return a;
    }
    wire inner;
    size_t count;
    if (!wire_value(w, &a, &inner, &count, 0, false))
        a.type = PN_NULL; /* not reached: checked before */
    return a;
}

static ew_err wire_decode(const wire_msg *m, ew_envelope *env, amqp10_wire_meta *meta,
                          char *err, size_t errlen)
{
    if (meta && m->have_header) {
        wire w = m->header;
        for (size_t i = 0; i < m->header_n && i <= 4; i++) {
            pn_atom_t a = wire_next(&w);
            header_field(meta, i, &a);
        }
    }
    props_fields f = {{0, NULL}, {0, NULL}, {0, NULL}, "", 0};
    if (m->have_props) {
        wire w = m->props;
        for (size_t i = 0; i < m->props_n && i <= 9; i++) {
            pn_atom_t a = wire_next(&w);
            props_field(&f, i, &a);
        }
    }
    ew_err rc = EW_OK;
    wire w = m->app;
    hdr_batch b;
    batch_init(&b, env);
    for (size_t i = 0; m->have_app && i + 1 < m->app_n && rc == EW_OK; i += 2) {
        pn_atom_t k = wire_next(&w);
        pn_atom_t v = wire_next(&w);
        rc = put_prop(&b, &k, &v);
    }
    if (rc != EW_OK || (rc = put_meta(&f, &b)) != EW_OK) {
        snprintf(err, errlen, "out of memory");
        return rc;
    }
    if (m->have_body) {
        pn_bytes_t v = m->body.u.as_bytes;
        rc = ewi_envelope_set_body(env, v.size ? v.start : "", v.size);
        if (rc != EW_OK) {
            snprintf(err, errlen, "out of memory");
            return rc;
        }
    }
    return put_content_type(env, f.content_type,
                            m->have_body && m->body.type == PN_STRING, err, errlen);
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

ew_err amqp10_message_decode_generic(const char *bytes, size_t len, ew_envelope *env,
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

bool amqp10_message_in_place(const char *bytes, size_t len)
{
    wire_msg m;
    return wire_sections((const unsigned char *)bytes, len, &m);
}

ew_err amqp10_message_decode(const char *bytes, size_t len, ew_envelope *env,
                           amqp10_wire_meta *meta, char *err, size_t errlen)
{
    wire_msg m;
    if (!wire_sections((const unsigned char *)bytes, len, &m))
        return amqp10_message_decode_generic(bytes, len, env, meta, err, errlen);
    if (meta)
        *meta = (amqp10_wire_meta){0, false, false};
    return wire_decode(&m, env, meta, err, errlen);
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
    hdr_batch hb;
    batch_init(&hb, env);
    if ((s->have[SEC_APP] && section_value(c->sec[SEC_APP]) &&
         (rc = put_props(c->sec[SEC_APP], &hb)) != EW_OK) ||
        (rc = put_meta(&f, &hb)) != EW_OK) {
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
        if (rc != EW_OK) {
            snprintf(err, errlen, "out of memory");
            return rc;
        }
    }
    return put_content_type(env, ct, json_default, err, errlen);
}
