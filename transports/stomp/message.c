/* An envelope as a STOMP SEND frame, a MESSAGE frame as an envelope. Pure:
 * unit-tested.
 *
 * Every envelope header (user headers and the framework's ew-* ones) is a
 * STOMP header, escaped by the frame writer, so ':' '\n' '\\' and any UTF-8
 * arrive unchanged. Names that STOMP or a broker interpret are refused on
 * send (a user header "destination" would redirect the message) and not
 * delivered on receive (they are the broker's, not the sender's). */
#include "transports/stomp/stomp.h"

#include <stdio.h>
#include <string.h>

ew_err stomp_message_write(ewi_buf *out, const stomp_target *to, const char *receipt,
                           const ew_envelope *env, char *err, size_t errlen)
{
    /* The body and room for a usual set of headers, reserved once, so that
     * the buffer is not regrown header by header (a larger header still
     * grows it: each one reserves what it needs). */
    size_t n = ew_envelope_header_count(env), blen = 0;
    const void *body = ew_envelope_body(env, &blen);
    if (ewi_buf_reserve(out, blen + 1024) != EW_OK) {
        snprintf(err, errlen, "%s", ew_strerror(EW_ENOMEM));
        return EW_ENOMEM;
    }
    ewi_stomp_writer w;
    ewi_stomp_write_begin(&w, out, EWI_STOMP_SEND);
    ewi_stomp_write_header(&w, "destination", to->dest);
    if (receipt)
        ewi_stomp_write_header(&w, "receipt", receipt);
    for (size_t i = 0; i < to->n; i++)
        ewi_stomp_write_header(&w, to->h[i].key, to->h[i].value);
    const char *ct = ew_envelope_content_type(env);
    if (ct && *ct)
        ewi_stomp_write_header(&w, "content-type", ct);
    for (size_t i = 0; i < n; i++) {
        const char *k, *v;
        if (ew_envelope_header_at(env, i, &k, &v) != EW_OK)
            continue;
        size_t klen = strlen(k);
        if (stomp_reserved_header(k, klen)) {
            snprintf(err, errlen,
                     "header '%s' is reserved by STOMP or the broker and cannot be "
                     "sent as an event header", k);
            out->len = w.mark;
            return EW_EINVAL;
        }
        ewi_stomp_write_header(&w, k, v);
    }
    ew_err rc = ewi_stomp_write_end(&w, body, blen, true);
    if (rc == EW_EINVAL)
        snprintf(err, errlen, "a header holds a NUL byte or an empty name");
    else if (rc != EW_OK)
        snprintf(err, errlen, "%s", ew_strerror(rc));
    return rc;
}

/* Headers go into the envelope this many at a time (one reservation each). */
#define READ_BATCH 16

ew_err stomp_message_read(ewi_stomp_frame *f, ew_envelope *env)
{
    ewi_env_kv kv[READ_BATCH];
    size_t n = 0;
    for (size_t i = 0; i < f->nheaders; i++) {
        const ewi_stomp_header *h = &f->headers[i];
        if (h->klen == 12 && memcmp(h->key, "content-type", 12) == 0) {
            const char *cur = ew_envelope_content_type(env);
            if ((!cur || !*cur) && ewi_envelope_set_content_type(env, h->value) != EW_OK)
                return EW_ENOMEM;
            continue;
        }
        if (stomp_reserved_header(h->key, h->klen))
            continue;
        /* The first of repeated headers counts (STOMP 1.2), as it does for
         * ewi_envelope_put_received. */
        kv[n++] = (ewi_env_kv){h->key, h->value, h->klen, h->vlen};
        if (n == READ_BATCH) {
            ew_err rc = ewi_envelope_put_received(env, kv, n);
            if (rc != EW_OK)
                return rc;
            n = 0;
        }
    }
    ew_err rc = n ? ewi_envelope_put_received(env, kv, n) : EW_OK;
    if (rc != EW_OK)
        return rc;
    size_t len;
    uint8_t *body = ewi_stomp_frame_take_body(f, &len);
    if (!body)
        return EW_ENOMEM;
    ewi_envelope_take_body(env, body, len);
    return EW_OK;
}

void stomp_receipt_text(char *buf, uint64_t n)
{
    /* Once per send: no printf. */
    char tmp[20];
    size_t nd = 0;
    do {
        tmp[nd++] = (char)('0' + n % 10);
        n /= 10;
    } while (n);
    buf[0] = 'p';
    for (size_t i = 0; i < nd; i++)
        buf[1 + i] = tmp[nd - 1 - i];
    buf[1 + nd] = '\0';
}

void stomp_error_text(const ewi_stomp_frame *f, char *buf, size_t len)
{
    const char *msg = ewi_stomp_frame_get(f, "message");
    size_t o = 0;
    int n = snprintf(buf, len, "%s", msg ? msg : "ERROR frame");
    o = n < 0 ? 0 : (size_t)n < len ? (size_t)n : len - 1;
    if (f->body_len && o + 3 < len) {
        memcpy(buf + o, ": ", 2);
        o += 2;
        /* The body is the broker's prose: keep it on one line. */
        for (size_t i = 0; i < f->body_len && o + 1 < len; i++) {
            uint8_t c = f->body[i];
            buf[o++] = c == '\n' || c == '\r' || c == '\t' ? ' ' : c < 0x20 ? '?' : (char)c;
        }
        while (o > 0 && buf[o - 1] == ' ')
            o--;
        buf[o] = 0;
    }
}
