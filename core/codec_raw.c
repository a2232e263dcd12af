/* Schema-less events (ew_raw_type): the body travels as the bytes the
 * application encoded. Core only checks that they are one msgpack map or one
 * JSON object, the shape every typed listener expects. */
#include "codec_priv.h"

#include <jansson.h>
#include <msgpack.h>
#include <stdalign.h>
#include <stdlib.h>

const ew_type ew_raw_type = {"ew_raw_event", sizeof(ew_raw_event), NULL, 0};

ew_err ewi_raw_check(ew_format fmt, const uint8_t *data, size_t len, ewi_cerr *e)
{
    if (fmt == EW_FORMAT_JSON) {
        json_error_t jerr;
        json_t *root = json_loadb((const char *)data, len, JSON_DECODE_ANY, &jerr);
        if (!root) {
            ewi_cerr_msg(e, "invalid JSON: %s (line %d, column %d)", jerr.text,
                         jerr.line, jerr.column);
            return EW_EINVAL;
        }
        bool object = json_is_object(root);
        json_decref(root);
        if (!object) {
            ewi_cerr_msg(e, "the body is JSON but not an object");
            return EW_EINVAL;
        }
        return EW_OK;
    }
    if (fmt != EW_FORMAT_MSGPACK && fmt != EW_FORMAT_DEFAULT) {
        ewi_cerr_msg(e, "unknown format %d", (int)fmt);
        return EW_EINVAL;
    }
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    msgpack_unpack_return ur = msgpack_unpack_next(&u, (const char *)data, len, &off);
    bool map = ur == MSGPACK_UNPACK_SUCCESS && u.data.type == MSGPACK_OBJECT_MAP;
    msgpack_unpacked_destroy(&u);
    if (ur == MSGPACK_UNPACK_NOMEM_ERROR) {
        ewi_cerr_msg(e, "out of memory");
        return EW_ENOMEM;
    }
    if (ur != MSGPACK_UNPACK_SUCCESS && ur != MSGPACK_UNPACK_EXTRA_BYTES) {
        ewi_cerr_msg(e, "invalid msgpack (%s)", ur == MSGPACK_UNPACK_CONTINUE
                                                    ? "truncated"
                                                    : "malformed or nested too deep");
        return EW_EINVAL;
    }
    if (!map) {
        ewi_cerr_msg(e, "the body is msgpack but not a map");
        return EW_EINVAL;
    }
    if (off != len) {
        ewi_cerr_msg(e, "%zu bytes after the msgpack map", len - off);
        return EW_EINVAL;
    }
    return EW_OK;
}

ew_err ewi_raw_encode(const ew_raw_event *r, ew_format fmt, ewi_buf *out, ewi_cerr *e)
{
    if (!r->data && r->len > 0) {
        ewi_cerr_msg(e, "NULL data");
        return EW_EENCODE;
    }
    ew_format own = r->format == EW_FORMAT_DEFAULT ? fmt : r->format;
    static const uint8_t empty[1];
    ew_err rc = ewi_raw_check(own, r->data ? r->data : empty, r->len, e);
    if (rc != EW_OK)
        return rc == EW_ENOMEM ? rc : EW_EENCODE;
    return ewi_buf_append(out, r->data, r->len);
}

ew_err ewi_raw_decode(ew_format fmt, const uint8_t *data, size_t len, void **out,
                      ewi_cerr *e)
{
    ew_err rc = ewi_raw_check(fmt, data, len, e);
    if (rc != EW_OK)
        return rc == EW_ENOMEM ? rc : EW_EDECODE;
    ew_raw_event *r = malloc(sizeof *r + len + 1);
    if (!r) {
        ewi_cerr_msg(e, "out of memory for %zu bytes", len);
        return EW_ENOMEM;
    }
    uint8_t *copy = (uint8_t *)(r + 1);
    memcpy(copy, data, len);
    copy[len] = '\0'; /* a JSON body can be read as a string */
    r->data = copy;
    r->len = len;
    r->format = fmt == EW_FORMAT_JSON ? EW_FORMAT_JSON : EW_FORMAT_MSGPACK;
    *out = r;
    return EW_OK;
}
