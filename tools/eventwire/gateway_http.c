/* The gateway's HTTP side, on libmicrohttpd with a thread per connection:
 * a stream's thread waits on its event's buffer and writes what comes. */
#include "gateway.h"

#include <errno.h>
#include <microhttpd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

const int gw_codes[GW_CODES] = {200, 202, 400, 404, 405, 409, 413, 429, 500, 502, 503, 504, 0};

static void count(gateway *g, unsigned code)
{
    for (int i = 0; i < GW_CODES - 1; i++)
        if (gw_codes[i] == (int)code) {
            atomic_fetch_add(&g->responses[i], 1);
            return;
        }
    atomic_fetch_add(&g->responses[GW_CODES - 1], 1); /* any other */
}

static enum MHD_Result reply(gateway *g, struct MHD_Connection *conn, unsigned code,
                             const char *type, const char *body, size_t len)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)(uintptr_t)body, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (code == 503)
        MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    if (code == 405)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, POST");
    enum MHD_Result rc = MHD_queue_response(conn, code, r);
    MHD_destroy_response(r);
    count(g, code);
    return rc;
}

static enum MHD_Result reply_text(gateway *g, struct MHD_Connection *conn, unsigned code,
                                  const char *text)
{
    return reply(g, conn, code, "text/plain; charset=utf-8", text, strlen(text));
}

/* {"error": why} and a status. */
static enum MHD_Result reply_error(gateway *g, struct MHD_Connection *conn, unsigned code,
                                   const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static enum MHD_Result reply_error(gateway *g, struct MHD_Connection *conn, unsigned code,
                                   const char *fmt, ...)
{
    char why[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    json_t *o = json_pack("{s:s%}", "error", why, strlen(why));
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    enum MHD_Result rc = s ? reply(g, conn, code, "application/json", s, strlen(s))
                           : reply_text(g, conn, code, why);
    free(s);
    return rc;
}

/* ---- headers of a request, carried by a send pipeline ------------------ */

#define GW_MAX_HEADERS 64

typedef struct req_headers {
    size_t n;
    char *keys[GW_MAX_HEADERS];
    const char *values[GW_MAX_HEADERS];
    char bad[256]; /* why a header is refused, or "" */
} req_headers;

static _Thread_local req_headers *current_headers;
static _Thread_local char sent_id[GW_ID_MAX];

static ew_err pipeline_send(void *user, ew_envelope *env, const ew_event_desc *event)
{
    (void)user;
    (void)event;
    req_headers *h = current_headers;
    for (size_t i = 0; h && i < h->n; i++) {
        ew_err rc = ew_envelope_set_header(env, h->keys[i], h->values[i]);
        if (rc != EW_OK)
            return rc;
    }
    const char *id = ew_envelope_message_id(env);
    snprintf(sent_id, sizeof sent_id, "%s", id ? id : "");
    return EW_OK;
}

ew_err gw_pipeline_install(ew_manager *m)
{
    ew_pipeline p = {.name = "eventwire-gateway-headers", .send = pipeline_send};
    return ew_add_pipeline(m, &p, NULL);
}

#define HEADER_PREFIX "X-Ew-Header-"

static enum MHD_Result collect_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                      const char *value)
{
    (void)kind;
    req_headers *h = cls;
    size_t plen = strlen(HEADER_PREFIX);
    if (strncasecmp(key, HEADER_PREFIX, plen) != 0 || h->bad[0])
        return MHD_YES;
    const char *k = key + plen;
    if (!k[0] || strncasecmp(k, "ew-", 3) == 0) {
        snprintf(h->bad, sizeof h->bad, "header %s: %s", key,
                 k[0] ? "keys starting with ew- are the library's own" : "no key");
        return MHD_YES;
    }
    if (h->n == GW_MAX_HEADERS) {
        snprintf(h->bad, sizeof h->bad, "more than %d X-Ew-Header-* headers", GW_MAX_HEADERS);
        return MHD_YES;
    }
    char *lk = strdup(k);
    if (!lk) {
        snprintf(h->bad, sizeof h->bad, "out of memory");
        return MHD_YES;
    }
    for (char *p = lk; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    h->keys[h->n] = lk;
    h->values[h->n++] = value ? value : "";
    return MHD_YES;
}

static void headers_free(req_headers *h)
{
    for (size_t i = 0; i < h->n; i++)
        free(h->keys[i]);
    h->n = 0;
}

/* ---- POST /events/{name} ----------------------------------------------- */

typedef struct post_state {
    char *body;
    size_t len, cap;
    bool too_big;
} post_state;

static unsigned send_status(ew_err rc)
{
    switch (rc) {
    case EW_EINVAL: return 400;
    case EW_ETOOBIG: return 413;
    case EW_ECONFLICT: return 409;
    case EW_ETIMEDOUT:
    case EW_ECLOSED:
    case EW_ECONNECT:
    case EW_EDISCONNECTED:
    case EW_ESTATE: return 503;
    case EW_EINDOUBT: return 504;
    case EW_ENOMEM: return 500;
    default: return 502;
    }
}

static enum MHD_Result publish(gateway *g, struct MHD_Connection *conn, const char *name,
                               post_state *ps)
{
    if (ps->too_big)
        return reply_error(g, conn, 413, "the body is over the limit of %ld bytes",
                           g->o.body_limit);
    /* Whatever the Content-Type says (curl -d sends a form type), the body
     * must be one JSON object. */
    char err[512];
    json_t *obj = cli_json_object(ps->body ? ps->body : "", ps->len, err, sizeof err);
    if (!obj)
        return reply_error(g, conn, 400, "%s", err);
    char *body = NULL;
    size_t blen = 0;
    int pr = cli_json_to_body(obj, g->o.format, &body, &blen, err, sizeof err);
    json_decref(obj);
    if (pr < 0)
        return reply_error(g, conn, 400, "%s", err);
    req_headers h = {0};
    MHD_get_connection_values(conn, MHD_HEADER_KIND, collect_header, &h);
    if (h.bad[0]) {
        headers_free(&h);
        free(body);
        return reply_error(g, conn, 400, "%s", h.bad);
    }
    ew_event_desc desc = {.type = &ew_raw_type, .name = name, .durable = g->o.durable,
                          .format = g->o.format};
    ew_raw_event raw = {body, blen, g->o.format};
    current_headers = &h;
    sent_id[0] = '\0';
    ew_err rc = ew_send(g->m, &desc, &raw);
    current_headers = NULL;
    headers_free(&h);
    free(body);
    if (rc != EW_OK) {
        const char *why = ew_last_error()[0] ? ew_last_error() : ew_strerror(rc);
        unsigned code = send_status(rc);
        if (code == 503)
            return reply_error(g, conn, code, "broker unreachable, not published: %s", why);
        if (code == 504)
            return reply_error(g, conn, code, "not confirmed by the broker, may have been "
                               "published: %s", why);
        return reply_error(g, conn, code, "%s", why);
    }
    json_t *o = json_pack("{s:s,s:s}", "id", sent_id, "event", name);
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    enum MHD_Result r = s ? reply(g, conn, 202, "application/json", s, strlen(s))
                          : reply_text(g, conn, 500, "out of memory");
    free(s);
    return r;
}

/* ---- GET /events/{name}: the stream ------------------------------------ */

typedef struct stream {
    gateway *g;
    int fd;           /* the connection's socket, to notice a client gone */
    gw_topic *t;
    uint64_t cursor;  /* the next sequence number to write */
    char *pending;    /* a frame (or part) that did not fit the last write */
    size_t plen, poff;
    struct timespec deadline; /* of the stream; tv_sec 0: none */
    struct timespec keepalive_at;
    long keepalive_s;
    gw_stream_listener sl; /* its own listener and queue, for its life */
} stream;

static struct timespec now_plus(long s)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    t.tv_sec += s;
    return t;
}

/* true once the client closed its side (or the socket failed). */
static bool client_gone(int fd)
{
    char c;
    ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

static bool before(const struct timespec *a, const struct timespec *b)
{
    return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

static bool passed(const struct timespec *t)
{
    struct timespec n;
    clock_gettime(CLOCK_REALTIME, &n);
    return n.tv_sec > t->tv_sec || (n.tv_sec == t->tv_sec && n.tv_nsec >= t->tv_nsec);
}

static int set_pending(stream *st, const char *text, size_t len)
{
    free(st->pending);
    st->pending = malloc(len);
    if (!st->pending)
        return -1;
    memcpy(st->pending, text, len);
    st->plen = len;
    st->poff = 0;
    return 0;
}

static void gap_frame(stream *st, char *out, size_t len, const char *why)
{
    atomic_fetch_add(&st->g->gaps, 1);
    snprintf(out, len, "event: ew:gap\ndata: {\"reason\":\"%s\"}\n\n", why);
}

/* Fills buf with whole frames from the cursor on; waits for one when there
 * is none. Runs on the connection's own thread. */
static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    stream *st = cls;
    gateway *g = st->g;
    gw_topic *t = st->t;
    if (st->poff < st->plen) {
        size_t n = st->plen - st->poff < max ? st->plen - st->poff : max;
        memcpy(buf, st->pending + st->poff, n);
        st->poff += n;
        return (ssize_t)n;
    }
    size_t used = 0;
    pthread_mutex_lock(&t->mu);
    for (;;) {
        if (atomic_load(&g->stopping))
            break;
        if (st->cursor < t->first) {
            /* The stream fell behind by more than the buffer holds. */
            char gap[128];
            gap_frame(st, gap, sizeof gap, "the stream fell behind the buffer");
            st->cursor = t->first;
            size_t n = strlen(gap);
            if (n <= max - used) {
                memcpy(buf + used, gap, n);
                used += n;
            }
        }
        while (st->cursor < t->next) {
            gw_slot *s = &t->slots[st->cursor % t->cap];
            if (s->len <= max - used) {
                memcpy(buf + used, s->frame, s->len);
                used += s->len;
                st->cursor++;
                continue;
            }
            if (used == 0) { /* larger than a whole write: in parts */
                if (set_pending(st, s->frame, s->len) == 0) {
                    st->cursor++;
                    memcpy(buf, st->pending, max);
                    st->poff = max;
                    used = max;
                }
            }
            break;
        }
        if (used > 0)
            break;
        if (st->deadline.tv_sec && passed(&st->deadline))
            break;
        if (st->fd >= 0 && client_gone(st->fd))
            break;
        if (passed(&st->keepalive_at)) {
            /* Idle: a comment keeps proxies from closing the stream. */
            static const char ka[] = ": keep-alive\n\n";
            memcpy(buf, ka, sizeof ka - 1);
            used = sizeof ka - 1;
            break;
        }
        /* Wakes on an append or the shutdown; at least every second to
         * notice a client that went away, the deadline and the keep-alive. */
        struct timespec wake = now_plus(1);
        if (st->deadline.tv_sec && before(&st->deadline, &wake))
            wake = st->deadline;
        if (before(&st->keepalive_at, &wake))
            wake = st->keepalive_at;
        pthread_cond_timedwait(&t->cv, &t->mu, &wake);
    }
    if (used > 0)
        st->keepalive_at = now_plus(st->keepalive_s);
    pthread_mutex_unlock(&t->mu);
    return used > 0 ? (ssize_t)used : MHD_CONTENT_READER_END_OF_STREAM;
}

static void stream_free(void *cls)
{
    stream *st = cls;
    /* Client gone, end of --max-stream-s, or shutdown: its queue goes. */
    gw_stream_unlisten(st->g, &st->sl);
    atomic_fetch_sub(&st->g->streams_open, 1);
    free(st->pending);
    free(st);
}

static enum MHD_Result open_stream(gateway *g, struct MHD_Connection *conn, const char *name)
{
    if (atomic_load(&g->streams_open) >= g->o.max_streams)
        return reply_error(g, conn, 429, "%ld streams are open (--max-streams)",
                           g->o.max_streams);
    ew_err rc = EW_OK;
    char why[512] = "";
    gw_topic *t = gw_topic_get(g, name, &rc, why, sizeof why);
    if (!t)
        return reply_error(g, conn, rc == EW_EINVAL ? 400 : rc == EW_ETOOBIG ? 429
                                    : rc == EW_ECONFLICT ? 409 : 503,
                           "event %s: %s", name, why);
    stream *st = calloc(1, sizeof *st);
    if (!st)
        return reply_text(g, conn, 500, "out of memory");
    if ((rc = gw_stream_listen(g, t, &st->sl, why, sizeof why)) != EW_OK) {
        free(st);
        return reply_error(g, conn, rc == EW_ECONFLICT ? 409 : 503, "event %s: %s", name, why);
    }
    st->g = g;
    st->t = t;
    st->keepalive_s = g->o.keepalive_s;
    st->keepalive_at = now_plus(st->keepalive_s);
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    st->fd = ci ? ci->connect_fd : -1;
    if (g->o.max_stream_s > 0)
        st->deadline = now_plus(g->o.max_stream_s);
    const char *last = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Last-Event-ID");
    char prelude[512];
    int n = snprintf(prelude, sizeof prelude, "retry: %ld\n\n", g->o.retry_ms);
    pthread_mutex_lock(&t->mu);
    if (last && last[0]) {
        int64_t seq = gw_ring_find(t, last);
        if (seq >= 0) {
            st->cursor = (uint64_t)seq + 1;
            atomic_fetch_add(&g->resumes, 1);
        } else {
            /* Unknown to this buffer (too old, or from before a restart):
             * everything the buffer has, after a notice. */
            st->cursor = t->first;
            gap_frame(st, prelude + n, sizeof prelude - (size_t)n,
                      "Last-Event-ID is not in the buffer");
            n += (int)strlen(prelude + n);
        }
    } else {
        st->cursor = t->next; /* a new stream starts with what comes next */
    }
    pthread_mutex_unlock(&t->mu);
    atomic_fetch_add(&g->streams_open, 1);
    if (set_pending(st, prelude, (size_t)n) < 0) {
        stream_free(st);
        return reply_text(g, conn, 500, "out of memory");
    }
    atomic_fetch_add(&g->streams_total, 1);
    struct MHD_Response *r =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, stream_read, st,
                                          stream_free);
    if (!r) {
        stream_free(st);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream; charset=utf-8");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    MHD_add_response_header(r, "X-Accel-Buffering", "no");
    enum MHD_Result ok = MHD_queue_response(conn, 200, r);
    MHD_destroy_response(r);
    count(g, 200);
    return ok;
}

/* ---- GET /metrics ------------------------------------------------------ */

typedef struct text_buf {
    char *p;
    size_t len, cap;
} text_buf;

static ew_err buf_write(void *user, const char *text, size_t len)
{
    text_buf *b = user;
    if (b->len + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 16384;
        while (cap < b->len + len + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p)
            return EW_ENOMEM;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, text, len);
    b->len += len;
    b->p[b->len] = '\0';
    return EW_OK;
}

static ew_err buf_printf(text_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static ew_err buf_printf(text_buf *b, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    return buf_write(b, line, n < (int)sizeof line ? (size_t)n : sizeof line - 1);
}

static ew_err gateway_metrics(gateway *g, text_buf *b)
{
    ew_err rc = EW_OK;
    rc |= buf_printf(b, "# HELP eventwire_gateway_streams Open event streams.\n"
                        "# TYPE eventwire_gateway_streams gauge\n"
                        "eventwire_gateway_streams %ld\n", atomic_load(&g->streams_open));
    rc |= buf_printf(b, "# HELP eventwire_gateway_streams_opened_total Event streams opened.\n"
                        "# TYPE eventwire_gateway_streams_opened_total counter\n"
                        "eventwire_gateway_streams_opened_total %lu\n",
                     atomic_load(&g->streams_total));
    rc |= buf_printf(b, "# HELP eventwire_gateway_resumes_total Streams resumed after the "
                        "Last-Event-ID found in the buffer.\n"
                        "# TYPE eventwire_gateway_resumes_total counter\n"
                        "eventwire_gateway_resumes_total %lu\n", atomic_load(&g->resumes));
    rc |= buf_printf(b, "# HELP eventwire_gateway_gaps_total ew:gap notices sent: a stream "
                        "missed events the buffer no longer held.\n"
                        "# TYPE eventwire_gateway_gaps_total counter\n"
                        "eventwire_gateway_gaps_total %lu\n", atomic_load(&g->gaps));
    rc |= buf_printf(b, "# HELP eventwire_gateway_http_responses_total HTTP responses by "
                        "status code.\n"
                        "# TYPE eventwire_gateway_http_responses_total counter\n");
    for (int i = 0; i < GW_CODES; i++) {
        if (gw_codes[i])
            rc |= buf_printf(b, "eventwire_gateway_http_responses_total{code=\"%d\"} %lu\n",
                             gw_codes[i], atomic_load(&g->responses[i]));
        else
            rc |= buf_printf(b, "eventwire_gateway_http_responses_total{code=\"other\"} %lu\n",
                             atomic_load(&g->responses[i]));
    }
    rc |= buf_printf(b, "# HELP eventwire_gateway_buffered_events Events in the resume "
                        "buffer of an event name.\n"
                        "# TYPE eventwire_gateway_buffered_events gauge\n");
    pthread_mutex_lock(&g->topics_mu);
    for (gw_topic *t = g->topics; t; t = t->next_topic) {
        pthread_mutex_lock(&t->mu);
        uint64_t n = t->next - t->first;
        pthread_mutex_unlock(&t->mu);
        /* Event names take no character that needs escaping in a label. */
        rc |= buf_printf(b, "eventwire_gateway_buffered_events{event=\"%s\"} %llu\n", t->name,
                         (unsigned long long)n);
    }
    pthread_mutex_unlock(&g->topics_mu);
    return rc ? EW_ENOMEM : EW_OK;
}

static enum MHD_Result metrics(gateway *g, struct MHD_Connection *conn)
{
    text_buf b = {0};
    ew_err rc = ew_metrics_prometheus(g->m, buf_write, &b);
    if (rc == EW_OK)
        rc = gateway_metrics(g, &b);
    enum MHD_Result r = rc == EW_OK
                            ? reply(g, conn, 200, "text/plain; version=0.0.4; charset=utf-8",
                                    b.p ? b.p : "", b.len)
                            : reply_text(g, conn, 500, ew_strerror(rc));
    free(b.p);
    return r;
}

/* ---- the dispatch ------------------------------------------------------ */

#define EVENTS "/events/"

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload, size_t *upload_size, void **con_cls)
{
    (void)version;
    gateway *g = cls;
    bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    bool post = strcmp(method, "POST") == 0;
    bool events = strncmp(url, EVENTS, strlen(EVENTS)) == 0 && url[strlen(EVENTS)];
    const char *name = url + strlen(EVENTS);
    if (post && events) {
        post_state *ps = *con_cls;
        if (!ps) { /* the first call: headers only */
            if (!(ps = calloc(1, sizeof *ps)))
                return MHD_NO;
            *con_cls = ps;
            const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                         MHD_HTTP_HEADER_CONTENT_LENGTH);
            if (cl && strtoull(cl, NULL, 10) > (unsigned long long)g->o.body_limit) {
                ps->too_big = true; /* refused before reading it */
                return publish(g, conn, name, ps);
            }
            return MHD_YES;
        }
        if (*upload_size) {
            if (!ps->too_big && ps->len + *upload_size > (size_t)g->o.body_limit)
                ps->too_big = true; /* the rest is read and dropped */
            if (!ps->too_big) {
                if (ps->len + *upload_size > ps->cap) {
                    size_t cap = ps->cap ? ps->cap * 2 : 4096;
                    while (cap < ps->len + *upload_size)
                        cap *= 2;
                    char *p = realloc(ps->body, cap);
                    if (!p)
                        return MHD_NO;
                    ps->body = p;
                    ps->cap = cap;
                }
                memcpy(ps->body + ps->len, upload, *upload_size);
                ps->len += *upload_size;
            }
            *upload_size = 0;
            return MHD_YES;
        }
        return publish(g, conn, name, ps);
    }
    if (*upload_size) { /* a body where none is read: dropped */
        *upload_size = 0;
        return MHD_YES;
    }
    bool known = events || strcmp(url, "/") == 0 || strcmp(url, "/metrics") == 0 ||
                 strcmp(url, "/healthz") == 0 || strcmp(url, "/readyz") == 0;
    if (!known)
        return reply_error(g, conn, 404, "no such path: %s (try /, /events/NAME, /metrics, "
                           "/healthz, /readyz)", url);
    if (!get)
        return reply_error(g, conn, 405, "method %s is not allowed on %s", method, url);
    if (events)
        return open_stream(g, conn, name);
    if (strcmp(url, "/metrics") == 0)
        return metrics(g, conn);
    if (strcmp(url, "/healthz") == 0)
        return reply_text(g, conn, 200, "ok\n");
    if (strcmp(url, "/readyz") == 0)
        return ew_manager_ready(g->m) ? reply_text(g, conn, 200, "ready\n")
                                      : reply_text(g, conn, 503, "not ready\n");
    return reply(g, conn, 200, "text/html; charset=utf-8", gw_page_html, strlen(gw_page_html));
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    (void)toe;
    post_state *ps = *con_cls;
    if (ps) {
        free(ps->body);
        free(ps);
        *con_cls = NULL;
    }
}

int gw_http_start(gateway *g, int fd)
{
    g->daemon = MHD_start_daemon(
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ITC |
            MHD_USE_POLL,
        0, NULL, NULL, on_request, g, MHD_OPTION_LISTEN_SOCKET, fd,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, g, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)(g->o.max_streams + 64), MHD_OPTION_CONNECTION_TIMEOUT,
        /* idle connections go; a stream is never idle that long */
        (unsigned)(g->o.keepalive_s * 2 + 120),
        MHD_OPTION_END);
    return g->daemon ? 0 : -1;
}

void gw_http_stop(gateway *g)
{
    if (!g->daemon)
        return;
    MHD_socket s = MHD_quiesce_daemon(g->daemon); /* no new connections */
    atomic_store(&g->stopping, true);
    gw_topics_wake(g); /* every stream ends */
    MHD_stop_daemon(g->daemon);
    if (s != MHD_INVALID_SOCKET)
        close(s);
    g->daemon = NULL;
}
