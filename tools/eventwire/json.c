/* Bodies without a schema: a JSON object to the wire form (compact JSON or a
 * msgpack map) and back, and envelopes as JSON lines. The mapping is the one
 * the typed codecs use: strings, integers, floats, booleans, arrays and
 * maps as they are; msgpack bin as base64 text (what a bytes field is in
 * JSON); null as nil. */
#include "cli.h"

#include <msgpack.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 32

json_t *cli_json_object(const char *text, size_t len, char *err, size_t errlen)
{
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
    if (!root) {
        snprintf(err, errlen, "bad JSON at line %d, column %d (byte %d): %s", je.line,
                 je.column, je.position, je.text);
        return NULL;
    }
    if (!json_is_object(root)) {
        snprintf(err, errlen, "bad JSON: the event must be a JSON object {...}");
        json_decref(root);
        return NULL;
    }
    return root;
}

static int pack(msgpack_packer *pk, const json_t *v, unsigned depth, char *err, size_t errlen)
{
    if (depth > MAX_DEPTH) {
        snprintf(err, errlen, "the JSON is nested deeper than %d", MAX_DEPTH);
        return -1;
    }
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        msgpack_pack_map(pk, json_object_size(v));
        const char *k;
        size_t klen;
        json_t *x;
        json_object_keylen_foreach((json_t *)(uintptr_t)v, k, klen, x) {
            msgpack_pack_str_with_body(pk, k, klen);
            if (pack(pk, x, depth + 1, err, errlen) < 0)
                return -1;
        }
        return 0;
    }
    case JSON_ARRAY: {
        msgpack_pack_array(pk, json_array_size(v));
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) {
            if (pack(pk, x, depth + 1, err, errlen) < 0)
                return -1;
        }
        return 0;
    }
    case JSON_STRING:
        return msgpack_pack_str_with_body(pk, json_string_value(v), json_string_length(v));
    case JSON_INTEGER: return msgpack_pack_int64(pk, json_integer_value(v));
    case JSON_REAL: return msgpack_pack_double(pk, json_real_value(v));
    case JSON_TRUE: return msgpack_pack_true(pk);
    case JSON_FALSE: return msgpack_pack_false(pk);
    case JSON_NULL: return msgpack_pack_nil(pk);
    }
    return -1;
}

int cli_json_to_body(const json_t *obj, ew_format fmt, char **out, size_t *len, char *err,
                     size_t errlen)
{
    if (fmt == EW_FORMAT_JSON) {
        char *text = json_dumps(obj, JSON_COMPACT | JSON_ENCODE_ANY);
        if (!text) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        *out = text;
        *len = strlen(text);
        return 0;
    }
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    if (pack(&pk, obj, 0, err, errlen) < 0) {
        msgpack_sbuffer_destroy(&sb);
        return -1;
    }
    *len = sb.size;
    *out = msgpack_sbuffer_release(&sb);
    if (!*out) { /* an empty buffer is never released as NULL here, but be sure */
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

static char *base64(const char *in, size_t n)
{
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = malloc((n + 2) / 3 * 4 + 1), *o = out;
    if (!out)
        return NULL;
    const unsigned char *p = (const unsigned char *)in;
    size_t i = 0;
    for (; i + 2 < n; i += 3) {
        unsigned v = (unsigned)p[i] << 16 | (unsigned)p[i + 1] << 8 | p[i + 2];
        *o++ = t[v >> 18];
        *o++ = t[(v >> 12) & 63];
        *o++ = t[(v >> 6) & 63];
        *o++ = t[v & 63];
    }
    if (i < n) {
        unsigned v = (unsigned)p[i] << 16 | (i + 1 < n ? (unsigned)p[i + 1] << 8 : 0u);
        *o++ = t[v >> 18];
        *o++ = t[(v >> 12) & 63];
        *o++ = i + 1 < n ? t[(v >> 6) & 63] : '=';
        *o++ = '=';
    }
    *o = '\0';
    return out;
}

static json_t *unpack(const msgpack_object *o, unsigned depth, char *err, size_t errlen)
{
    if (depth > MAX_DEPTH) {
        snprintf(err, errlen, "the body is nested deeper than %d", MAX_DEPTH);
        return NULL;
    }
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: return json_null();
    case MSGPACK_OBJECT_BOOLEAN: return json_boolean(o->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        if (o->via.u64 > (uint64_t)INT64_MAX)
            return json_real((double)o->via.u64);
        return json_integer((json_int_t)o->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: return json_integer((json_int_t)o->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: return json_real(o->via.f64);
    case MSGPACK_OBJECT_STR: {
        json_t *s = json_stringn(o->via.str.ptr, o->via.str.size);
        if (!s)
            snprintf(err, errlen, "a string of the body is not UTF-8");
        return s;
    }
    case MSGPACK_OBJECT_BIN: {
        char *b = base64(o->via.bin.ptr, o->via.bin.size);
        json_t *s = b ? json_string(b) : NULL;
        free(b);
        if (!s)
            snprintf(err, errlen, "out of memory");
        return s;
    }
    case MSGPACK_OBJECT_ARRAY: {
        json_t *a = json_array();
        for (uint32_t i = 0; a && i < o->via.array.size; i++) {
            json_t *x = unpack(&o->via.array.ptr[i], depth + 1, err, errlen);
            if (!x || json_array_append_new(a, x) != 0) {
                json_decref(a);
                return NULL;
            }
        }
        return a;
    }
    case MSGPACK_OBJECT_MAP: {
        json_t *m = json_object();
        for (uint32_t i = 0; m && i < o->via.map.size; i++) {
            const msgpack_object_kv *kv = &o->via.map.ptr[i];
            if (kv->key.type != MSGPACK_OBJECT_STR) {
                snprintf(err, errlen, "the body has a map key that is not a string");
                json_decref(m);
                return NULL;
            }
            char *k = strndup(kv->key.via.str.ptr, kv->key.via.str.size);
            json_t *x = k ? unpack(&kv->val, depth + 1, err, errlen) : NULL;
            if (!x || json_object_set_new(m, k, x) != 0) {
                if (k && x)
                    snprintf(err, errlen, "a key of the body is not UTF-8");
                free(k);
                json_decref(m);
                return NULL;
            }
            free(k);
        }
        return m;
    }
    default:
        snprintf(err, errlen, "the body holds a msgpack extension type");
        return NULL;
    }
}

json_t *cli_body_to_json(const void *data, size_t len, ew_format fmt, char *err, size_t errlen)
{
    if (fmt == EW_FORMAT_JSON) {
        json_error_t je;
        json_t *j = json_loadb(data, len, JSON_DECODE_ANY, &je);
        if (!j)
            snprintf(err, errlen, "the JSON body does not parse: %s", je.text);
        return j;
    }
    if (fmt != EW_FORMAT_MSGPACK) {
        snprintf(err, errlen, "unknown event format");
        return NULL;
    }
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    json_t *j = NULL;
    msgpack_unpack_return ur = msgpack_unpack_next(&u, data, len, &off);
    if (ur == MSGPACK_UNPACK_SUCCESS)
        j = unpack(&u.data, 0, err, errlen);
    else
        snprintf(err, errlen, "the msgpack body does not parse");
    msgpack_unpacked_destroy(&u);
    return j;
}

json_t *cli_envelope_json(const ew_envelope *env, const char *queue, bool with_body,
                          char *err, size_t errlen)
{
    json_t *o = json_object(), *h = json_object(), *dlq = json_object();
    if (!o || !h || !dlq)
        goto nomem;
    const char *id = ew_envelope_message_id(env), *ev = ew_envelope_event(env);
    json_object_set_new(o, "id", id ? json_string(id) : json_null());
    json_object_set_new(o, "event", ev ? json_string(ev) : json_null());
    json_object_set_new(o, "sent_at", json_integer(ew_envelope_sent_at(env)));
    json_object_set_new(o, "attempt", json_integer(ew_envelope_attempt(env)));
    if (queue)
        json_object_set_new(o, "queue", json_string(queue));
    size_t n = ew_envelope_header_count(env);
    for (size_t i = 0; i < n; i++) {
        const char *k, *v;
        if (ew_envelope_header_at(env, i, &k, &v) != EW_OK)
            continue;
        json_t *s = json_string(v);
        if (!s) /* not UTF-8: as its bytes in base64 would hide it; say so */
            s = json_string("(not UTF-8)");
        if (strncmp(k, "ew-dlq-", 7) == 0)
            json_object_set_new(dlq, k + 7, s);
        else if (strncmp(k, "ew-", 3) != 0)
            json_object_set_new(h, k, s);
        else
            json_decref(s);
    }
    json_object_set_new(o, "headers", h);
    h = NULL;
    if (json_object_size(dlq) > 0)
        json_object_set_new(o, "dead_letter", dlq);
    else
        json_decref(dlq);
    dlq = NULL;
    if (with_body) {
        size_t len;
        const void *body = ew_envelope_body(env, &len);
        const char *ct = ew_envelope_content_type(env);
        ew_format fmt = ew_format_from_content_type(ct);
        if (fmt == EW_FORMAT_DEFAULT) {
            snprintf(err, errlen, "message %s: unknown event format '%s'", id ? id : "?",
                     ct ? ct : "");
            json_decref(o);
            return NULL;
        }
        json_t *b = cli_body_to_json(body, len, fmt, err, errlen);
        if (!b) {
            json_decref(o);
            return NULL;
        }
        json_object_set_new(o, "format", json_string(fmt == EW_FORMAT_JSON ? "json" : "msgpack"));
        json_object_set_new(o, "body", b);
    }
    return o;
nomem:
    json_decref(o);
    json_decref(h);
    json_decref(dlq);
    snprintf(err, errlen, "out of memory");
    return NULL;
}

static pthread_mutex_t out_mu = PTHREAD_MUTEX_INITIALIZER;

int cli_print_line(const json_t *obj)
{
    char *s = json_dumps(obj, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!s)
        return -1;
    pthread_mutex_lock(&out_mu);
    int rc = fputs(s, stdout) < 0 || fputc('\n', stdout) == EOF || fflush(stdout) != 0 ? -1 : 0;
    pthread_mutex_unlock(&out_mu);
    free(s);
    return rc;
}
