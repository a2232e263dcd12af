/* Envelope <-> AMQP 0-9-1 basic properties. Pure: no connection, no I/O,
 * so it is unit-tested on its own. Every envelope header travels in the
 * header table as a long string; the framework headers are mirrored into
 * the properties other AMQP tools show (message id, timestamp, type). */
#include "rmq.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static amqp_bytes_t bytes_of(const char *s)
{
    amqp_bytes_t b = {strlen(s), (void *)(uintptr_t)s};
    return b;
}

static amqp_bytes_t bytes_n(const char *s, size_t n)
{
    amqp_bytes_t b = {n, (void *)(uintptr_t)s};
    return b;
}

static bool is_key(const char *k, size_t klen, const char *name, size_t nlen)
{
    return klen == nlen && memcmp(k, name, nlen) == 0;
}

#define NAME(s) s, sizeof s - 1

ew_err rmq_props_from_env(const ew_envelope *env, bool persistent, rmq_props_buf *buf,
                          amqp_basic_properties_t *props)
{
    size_t n = ew_envelope_header_count(env);
    if (n > buf->cap) {
        size_t cap = buf->cap ? buf->cap : 16;
        while (cap < n)
            cap *= 2;
        amqp_table_entry_t *e = realloc(buf->entries, cap * sizeof *e);
        if (!e)
            return EW_ENOMEM;
        buf->entries = e;
        buf->cap = cap;
    }
    memset(props, 0, sizeof *props);
    props->_flags = AMQP_BASIC_HEADERS_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG;
    props->delivery_mode = persistent ? 2 : 1;
    /* The header frame's size, roughly and from above: room for the
     * properties, and per header its key, type octet and value length. */
    size_t bytes = 256, used = 0;
    for (size_t i = 0; i < n; i++) {
        const char *k, *v;
        size_t kl, vl;
        if (ewi_envelope_header_n(env, i, &k, &kl, &v, &vl) != EW_OK)
            continue;
        /* Table keys are AMQP short strings. */
        if (kl > 255)
            return EW_ETOOBIG;
        bytes += kl + vl + 8;
        amqp_table_entry_t *e = &buf->entries[used++];
        e->key = bytes_n(k, kl);
        e->value.kind = AMQP_FIELD_KIND_UTF8;
        e->value.value.bytes = bytes_n(v, vl);
        if (kl < 4 || memcmp(k, "ew-", 3) != 0)
            continue;
        if (is_key(k, kl, NAME(EW_HDR_MESSAGE_ID)) && vl <= 255) {
            props->_flags |= AMQP_BASIC_MESSAGE_ID_FLAG;
            props->message_id = bytes_n(v, vl);
        } else if (is_key(k, kl, NAME(EW_HDR_EVENT)) && vl <= 255) {
            props->_flags |= AMQP_BASIC_TYPE_FLAG;
            props->type = bytes_n(v, vl);
        } else if (is_key(k, kl, NAME(EW_HDR_SENT_AT))) {
            /* The envelope read the value as a number already (0 when it
             * is not one). */
            int64_t ms = ew_envelope_sent_at(env);
            if (ms > 0) {
                props->_flags |= AMQP_BASIC_TIMESTAMP_FLAG;
                props->timestamp = (uint64_t)ms / 1000;
            }
        }
    }
    props->headers.num_entries = (int)used;
    props->headers.entries = buf->entries;
    const char *ct = ew_envelope_content_type(env);
    if (ct && *ct) {
        props->_flags |= AMQP_BASIC_CONTENT_TYPE_FLAG;
        props->content_type = bytes_of(ct);
    }
    buf->header_bytes = bytes;
    return EW_OK;
}

void rmq_props_buf_free(rmq_props_buf *buf)
{
    free(buf->entries);
    buf->entries = NULL;
    buf->cap = 0;
}

/* A field value as text; false for tables, arrays and void. */
static bool value_text(const amqp_field_value_t *v, char *tmp, size_t tlen,
                       const char **out, size_t *olen)
{
    int n = -1;
    switch (v->kind) {
    case AMQP_FIELD_KIND_UTF8:
    case AMQP_FIELD_KIND_BYTES:
        *out = v->value.bytes.bytes ? v->value.bytes.bytes : "";
        *olen = v->value.bytes.len;
        return true;
    case AMQP_FIELD_KIND_BOOLEAN:
        n = snprintf(tmp, tlen, "%s", v->value.boolean ? "true" : "false");
        break;
    case AMQP_FIELD_KIND_I8:
        n = snprintf(tmp, tlen, "%d", v->value.i8);
        break;
    case AMQP_FIELD_KIND_U8:
        n = snprintf(tmp, tlen, "%u", v->value.u8);
        break;
    case AMQP_FIELD_KIND_I16:
        n = snprintf(tmp, tlen, "%d", v->value.i16);
        break;
    case AMQP_FIELD_KIND_U16:
        n = snprintf(tmp, tlen, "%u", v->value.u16);
        break;
    case AMQP_FIELD_KIND_I32:
        n = snprintf(tmp, tlen, "%" PRId32, v->value.i32);
        break;
    case AMQP_FIELD_KIND_U32:
        n = snprintf(tmp, tlen, "%" PRIu32, v->value.u32);
        break;
    case AMQP_FIELD_KIND_I64:
        n = snprintf(tmp, tlen, "%" PRId64, v->value.i64);
        break;
    case AMQP_FIELD_KIND_U64:
    case AMQP_FIELD_KIND_TIMESTAMP:
        n = snprintf(tmp, tlen, "%" PRIu64, v->value.u64);
        break;
    case AMQP_FIELD_KIND_F32:
        n = snprintf(tmp, tlen, "%.9g", (double)v->value.f32);
        break;
    case AMQP_FIELD_KIND_F64:
        n = snprintf(tmp, tlen, "%.17g", v->value.f64);
        break;
    case AMQP_FIELD_KIND_DECIMAL: {
        /* value * 10^-decimals, written without floating point. */
        char digits[16];
        uint32_t val = v->value.decimal.value;
        unsigned dec = v->value.decimal.decimals;
        int dn = snprintf(digits, sizeof digits, "%0*" PRIu32, (int)dec + 1, val);
        if (dec == 0 || dn <= 0)
            n = snprintf(tmp, tlen, "%s", digits);
        else
            n = snprintf(tmp, tlen, "%.*s.%s", dn - (int)dec, digits, digits + dn - dec);
        break;
    }
    default:
        return false;
    }
    if (n < 0 || (size_t)n >= tlen)
        return false;
    *out = tmp;
    *olen = (size_t)n;
    return true;
}

static bool has_key(const amqp_table_t *t, const char *key, size_t kl)
{
    for (int i = 0; i < t->num_entries; i++)
        if (t->entries[i].key.len == kl && memcmp(t->entries[i].key.bytes, key, kl) == 0)
            return true;
    return false;
}

/* Headers go into the envelope this many at a time (one reservation each). */
#define READ_BATCH 16

/* Puts kv[0..n) into env, counting into *skipped those left out (a NUL in
 * the key or value, or a key that came before: the first counts, as on
 * every transport). */
static ew_err put_batch(ew_envelope *env, const ewi_env_kv *kv, size_t n, size_t *skipped)
{
    size_t before = ew_envelope_header_count(env);
    ew_err rc = ewi_envelope_put_received(env, kv, n);
    if (rc == EW_ENOMEM)
        return rc;
    *skipped += n - (ew_envelope_header_count(env) - before);
    return EW_OK;
}

ew_err rmq_props_to_env(const amqp_basic_properties_t *props, ew_envelope *env,
                        size_t *skipped)
{
    *skipped = 0;
    static const amqp_table_t empty = {0, NULL};
    const amqp_table_t *t = (props->_flags & AMQP_BASIC_HEADERS_FLAG) ? &props->headers
                                                                      : &empty;
    ewi_env_kv kv[READ_BATCH];
    char tmp[READ_BATCH][64]; /* numbers and booleans as text */
    size_t nkv = 0;
    for (int i = 0; i < t->num_entries; i++) {
        const amqp_table_entry_t *e = &t->entries[i];
        const char *v;
        size_t vlen;
        if (e->key.len == 0 || !value_text(&e->value, tmp[nkv], sizeof tmp[nkv], &v, &vlen)) {
            (*skipped)++;
            continue;
        }
        kv[nkv++] = (ewi_env_kv){e->key.bytes, v, e->key.len, vlen};
        if (nkv == READ_BATCH) {
            if (put_batch(env, kv, nkv, skipped) != EW_OK)
                return EW_ENOMEM;
            nkv = 0;
        }
    }
    if (nkv && put_batch(env, kv, nkv, skipped) != EW_OK)
        return EW_ENOMEM;
    ew_err rc = EW_OK;
    if ((props->_flags & AMQP_BASIC_MESSAGE_ID_FLAG) && props->message_id.len &&
        !has_key(t, NAME(EW_HDR_MESSAGE_ID)))
        rc = ewi_envelope_put(env, NAME(EW_HDR_MESSAGE_ID), props->message_id.bytes,
                              props->message_id.len);
    if (rc == EW_OK && (props->_flags & AMQP_BASIC_TIMESTAMP_FLAG) &&
        !has_key(t, NAME(EW_HDR_SENT_AT))) {
        char ms[32];
        int n = snprintf(ms, sizeof ms, "%" PRIu64, props->timestamp * 1000u);
        rc = ewi_envelope_put(env, NAME(EW_HDR_SENT_AT), ms, (size_t)n);
    }
    if (rc == EW_OK && (props->_flags & AMQP_BASIC_TYPE_FLAG) && props->type.len &&
        !has_key(t, NAME(EW_HDR_EVENT)))
        rc = ewi_envelope_put(env, NAME(EW_HDR_EVENT), props->type.bytes, props->type.len);
    if (rc == EW_OK && (props->_flags & AMQP_BASIC_CONTENT_TYPE_FLAG) &&
        props->content_type.len) {
        char ct[256];
        size_t n = props->content_type.len < sizeof ct - 1 ? props->content_type.len
                                                           : sizeof ct - 1;
        memcpy(ct, props->content_type.bytes, n);
        ct[n] = '\0';
        rc = ewi_envelope_set_content_type(env, ct);
        if (rc != EW_OK && rc != EW_ENOMEM) {
            /* Too long to be one we know: the worker dead-letters it as an
             * unknown content type instead of guessing. */
            (*skipped)++;
            rc = ewi_envelope_set_content_type(env, "application/x-unknown");
        }
    }
    return rc == EW_ENOMEM ? rc : EW_OK;
}
