/* Batched publish writes on plain TCP connections.
 *
 * librabbitmq writes every frame with its own send(): three system calls
 * per basic.publish (method, content header, body). On a machine where the
 * client shares its cores with the broker that is a cost the broker pays
 * too. Here the I/O thread encodes a turn's publishes into one buffer (the
 * method arguments and the properties through librabbitmq's own encoders;
 * only the 7-byte frame header and the frame-end octet of AMQP 0-9-1
 * section 4.2.3 are ours) and writes it with one sendmsg() per 256 KiB.
 * A body frame of 4 KiB or more is not copied into the buffer: sendmsg()
 * writes it from the envelope, which the buffer holds a reference to until
 * then.
 *
 * Only publishes go this way, only between two librabbitmq writes on their
 * channels, and the buffer is always written out before the I/O thread
 * lets librabbitmq write again, so frames never interleave. TLS
 * connections use amqp_basic_publish. */
#include "rmq.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#define FRAME_END 0xCE
#define FLUSH_AT (256 * 1024)
#define BY_REFERENCE (4 * 1024) /* body frames at least this long */

/* len bytes at ptr go before wbuf[at]; env keeps them alive. */
struct rmq_wseg {
    size_t at;
    const uint8_t *ptr;
    size_t len;
    ew_envelope *env;
};

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (24 - 8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (56 - 8 * i));
}

static bool put_short(uint8_t **p, const uint8_t *end, const void *s, size_t n)
{
    if (n > 255 || (size_t)(end - *p) < 1 + n)
        return false;
    **p = (uint8_t)n;
    memcpy(*p + 1, s, n);
    *p += 1 + n;
    return true;
}

static bool is_key(const char *k, size_t klen, const char *name, size_t nlen)
{
    return klen == nlen && memcmp(k, name, nlen) == 0;
}

#define NAME(s) s, sizeof s - 1

int rmq_wire_encode_env(const ew_envelope *env, bool persistent, amqp_bytes_t out)
{
    uint8_t *p = out.bytes, *end = p + out.len;
    if (end - p < 2 + 4)
        return -1;
    amqp_flags_t f = AMQP_BASIC_HEADERS_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG;
    uint8_t *flags = p;
    p += 2;
    const char *ct = ew_envelope_content_type(env);
    if (*ct) {
        f |= AMQP_BASIC_CONTENT_TYPE_FLAG;
        if (!put_short(&p, end, ct, strlen(ct)))
            return -1;
    }
    if (end - p < 4)
        return -1;
    uint8_t *table = p;
    p += 4;
    const char *id = NULL, *type = NULL;
    size_t idlen = 0, typelen = 0;
    size_t n = ew_envelope_header_count(env);
    for (size_t i = 0; i < n; i++) {
        const char *k, *v;
        size_t kl, vl;
        if (ewi_envelope_header_n(env, i, &k, &kl, &v, &vl) != EW_OK)
            continue;
        /* A field-table entry: the key, 'S' and a long string. */
        if (!put_short(&p, end, k, kl) || (size_t)(end - p) < 5 + vl)
            return -1;
        p[0] = AMQP_FIELD_KIND_UTF8;
        put32(p + 1, (uint32_t)vl);
        memcpy(p + 5, v, vl);
        p += 5 + vl;
        if (kl < 4 || memcmp(k, "ew-", 3) != 0)
            continue;
        if (is_key(k, kl, NAME(EW_HDR_MESSAGE_ID)) && vl <= 255) {
            f |= AMQP_BASIC_MESSAGE_ID_FLAG;
            id = v;
            idlen = vl;
        } else if (is_key(k, kl, NAME(EW_HDR_EVENT)) && vl <= 255) {
            f |= AMQP_BASIC_TYPE_FLAG;
            type = v;
            typelen = vl;
        } else if (is_key(k, kl, NAME(EW_HDR_SENT_AT)) && ew_envelope_sent_at(env) > 0) {
            f |= AMQP_BASIC_TIMESTAMP_FLAG;
        }
    }
    put32(table, (uint32_t)(p - table - 4));
    if (end - p < 1)
        return -1;
    *p++ = persistent ? 2 : 1;
    if ((f & AMQP_BASIC_MESSAGE_ID_FLAG) && !put_short(&p, end, id, idlen))
        return -1;
    if (f & AMQP_BASIC_TIMESTAMP_FLAG) {
        if (end - p < 8)
            return -1;
        put64(p, (uint64_t)ew_envelope_sent_at(env) / 1000);
        p += 8;
    }
    if ((f & AMQP_BASIC_TYPE_FLAG) && !put_short(&p, end, type, typelen))
        return -1;
    put16(flags, (uint16_t)f);
    return (int)(p - (uint8_t *)out.bytes);
}

static bool reserve(ewi_transport *t, size_t more)
{
    if (t->wlen + more <= t->wcap)
        return true;
    size_t cap = t->wcap ? t->wcap : 64 * 1024;
    while (cap < t->wlen + more)
        cap *= 2;
    uint8_t *b = realloc(t->wbuf, cap);
    if (!b)
        return false;
    t->wbuf = b;
    t->wcap = cap;
    return true;
}

static bool reserve_segs(ewi_transport *t, size_t more)
{
    if (t->nwseg + more <= t->wsegcap)
        return true;
    size_t cap = t->wsegcap ? t->wsegcap : 64;
    while (cap < t->nwseg + more)
        cap *= 2;
    struct rmq_wseg *w = realloc(t->wseg, cap * sizeof *w);
    if (!w)
        return false;
    t->wseg = w;
    t->wsegcap = cap;
    return true;
}

void rmq_wire_reset(ewi_transport *t)
{
    for (size_t i = 0; i < t->nwseg; i++)
        ewi_envelope_unref(t->wseg[i].env);
    t->nwseg = t->wseg_bytes = 0;
    t->wlen = 0;
}

/* Starts a frame at the end of the buffer; returns its payload. */
static uint8_t *frame_open(ewi_transport *t, uint8_t type, uint16_t ch)
{
    uint8_t *f = t->wbuf + t->wlen;
    f[0] = type;
    put16(f + 1, ch);
    return f + 7;
}

static void frame_close(ewi_transport *t, size_t payload)
{
    uint8_t *f = t->wbuf + t->wlen;
    put32(f + 3, (uint32_t)payload);
    f[7 + payload] = FRAME_END;
    t->wlen += 8 + payload;
}

ew_err rmq_wire_publish(ewi_transport *t, uint16_t ch, amqp_bytes_t exchange,
                        amqp_bytes_t key, bool mandatory, ew_envelope *env,
                        bool persistent, amqp_bytes_t body)
{
    size_t frame_max = (size_t)amqp_get_frame_max(t->conn);
    size_t chunk = frame_max - 8;
    size_t nbody = body.len ? (body.len + chunk - 1) / chunk : 0;
    if (!reserve(t, 8 + 4 + 16 + exchange.len + key.len + frame_max + body.len + 8 * nbody))
        return EW_ENOMEM;
    size_t start = t->wlen;

    amqp_basic_publish_t m = {0, exchange, key, mandatory, 0};
    uint8_t *p = frame_open(t, AMQP_FRAME_METHOD, ch);
    put32(p, AMQP_BASIC_PUBLISH_METHOD);
    amqp_bytes_t out = {frame_max - 8 - 4, p + 4};
    int n = amqp_encode_method(AMQP_BASIC_PUBLISH_METHOD, &m, out);
    if (n < 0)
        goto too_big;
    frame_close(t, 4 + (size_t)n);

    p = frame_open(t, AMQP_FRAME_HEADER, ch);
    put16(p, AMQP_BASIC_CLASS);
    put16(p + 2, 0); /* weight */
    put64(p + 4, body.len);
    out = (amqp_bytes_t){frame_max - 8 - 12, p + 12};
    n = rmq_wire_encode_env(env, persistent, out);
    if (n < 0)
        goto too_big;
    frame_close(t, 12 + (size_t)n);

    if (body.len >= BY_REFERENCE && !reserve_segs(t, nbody)) {
        t->wlen = start;
        return EW_ENOMEM;
    }
    for (size_t off = 0; off < body.len; off += chunk) {
        size_t len = body.len - off < chunk ? body.len - off : chunk;
        const uint8_t *from = (const uint8_t *)body.bytes + off;
        p = frame_open(t, AMQP_FRAME_BODY, ch);
        if (len < BY_REFERENCE) {
            memcpy(p, from, len);
            frame_close(t, len);
            continue;
        }
        /* The header here, the payload from env, the frame end here. */
        put32(p - 4, (uint32_t)len);
        t->wseg[t->nwseg++] = (struct rmq_wseg){t->wlen + 7, from, len,
                                                ewi_envelope_ref(env)};
        t->wseg_bytes += len;
        p[0] = FRAME_END;
        t->wlen += 8;
    }
    return EW_OK;
too_big:
    t->wlen = start; /* nothing of it was written */
    return EW_ETOOBIG;
}

bool rmq_wire_due(const ewi_transport *t)
{
    return t->wlen + t->wseg_bytes >= FLUSH_AT;
}

/* How long a write may wait for the broker to read: rpc_timeout, but with
 * heartbeats on, no longer than two intervals, the bound after which a
 * silent connection counts as lost too (a frozen path must be noticed by a
 * publisher in mid-write as fast as by a reader). */
static int stall_limit_ms(const ewi_transport *t)
{
    int limit = t->o.rpc_timeout_ms;
    if (t->hb_s > 0 && t->hb_s * 2000 < limit)
        limit = t->hb_s * 2000;
    return limit;
}

/* The iovecs of what is left from byte `off` of the whole (wbuf with the
 * segments in place), at most max of them; returns their count. */
static int gather(const ewi_transport *t, size_t off, struct iovec *iov, int max)
{
    int n = 0;
    size_t pos = 0, done = 0; /* pos: in wbuf; done: of the whole */
    for (size_t i = 0; i <= t->nwseg && n < max; i++) {
        const struct rmq_wseg *g = i < t->nwseg ? &t->wseg[i] : NULL;
        size_t upto = g ? g->at : t->wlen;
        /* wbuf[pos..upto), then the segment */
        const uint8_t *parts[2] = {t->wbuf + pos, g ? g->ptr : NULL};
        size_t lens[2] = {upto - pos, g ? g->len : 0};
        for (int k = 0; k < 2 && n < max; k++) {
            if (lens[k] && done + lens[k] > off) {
                size_t skip = off > done ? off - done : 0;
                iov[n].iov_base = (void *)(uintptr_t)(parts[k] + skip);
                iov[n].iov_len = lens[k] - skip;
                n++;
            }
            done += lens[k];
        }
        pos = upto;
    }
    return n;
}

ew_err rmq_wire_flush(ewi_transport *t, char *err, size_t errlen)
{
    int fd = amqp_get_sockfd(t->conn);
    int limit = stall_limit_ms(t);
    size_t off = 0, total = t->wlen + t->wseg_bytes;
    struct iovec iov[64];
    while (off < total) {
        struct msghdr mh = {.msg_iov = iov};
        mh.msg_iovlen = (size_t)gather(t, off, iov, (int)(sizeof iov / sizeof iov[0]));
        ssize_t n = sendmsg(fd, &mh, MSG_NOSIGNAL);
        if (n > 0) {
            off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            /* The broker reads slower than we write: wait, as
             * librabbitmq's own writes do. */
            struct pollfd pfd = {fd, POLLOUT, 0};
            int rc = poll(&pfd, 1, limit);
            if (rc > 0 || (rc < 0 && errno == EINTR))
                continue;
            snprintf(err, errlen, "writing to the broker stalled for %d ms", limit);
            rmq_wire_reset(t);
            return EW_EIO;
        }
        snprintf(err, errlen, "writing to the broker failed: %s",
                 n < 0 ? strerror(errno) : "closed");
        rmq_wire_reset(t);
        return EW_EIO;
    }
    rmq_wire_reset(t);
    return EW_OK;
}
