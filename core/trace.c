/* The trace-context pipeline: W3C traceparent and tracestate written from
 * the sending thread's context and made the worker thread's context while
 * the listener runs (see eventwire/trace.h). */
#include "manager_priv.h"

#include <string.h>

static const char TRACEPARENT[] = "traceparent";
static const char TRACESTATE[] = "tracestate";

/* The calling thread's current context, and the one a listener's run
 * replaced (restored by the after hook). */
static _Thread_local ew_trace_context tl_cur;
static _Thread_local bool tl_has;
static _Thread_local ew_trace_context tl_saved;
static _Thread_local bool tl_saved_has;
static _Thread_local bool tl_received; /* the run's context came with the message */

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1; /* W3C: lowercase only */
}

static bool hex_bytes(const char *s, uint8_t *out, size_t n)
{
    bool nonzero = false;
    for (size_t i = 0; i < n; i++) {
        int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        out[i] = (uint8_t)(hi << 4 | lo);
        nonzero |= out[i] != 0;
    }
    return nonzero;
}

ew_err ew_trace_parse(ew_trace_context *ctx, const char *tp, const char *ts)
{
    if (!ctx)
        return EW_EINVAL;
    memset(ctx, 0, sizeof *ctx);
    /* version(2) - trace-id(32) - parent-id(16) - flags(2) */
    uint8_t version;
    if (!tp || strlen(tp) < 55 || tp[2] != '-' || tp[35] != '-' || tp[52] != '-')
        return EW_EINVAL;
    if (hexval(tp[0]) < 0 || hexval(tp[1]) < 0)
        return EW_EINVAL;
    version = (uint8_t)(hexval(tp[0]) << 4 | hexval(tp[1]));
    /* Version ff is invalid; 00 has exactly 55 characters; a later version
     * may add fields after a '-'. */
    if (version == 0xff || (version == 0 && tp[55] != '\0') ||
        (version != 0 && tp[55] != '\0' && tp[55] != '-'))
        return EW_EINVAL;
    uint8_t flags;
    if (!hex_bytes(tp + 3, ctx->trace_id, 16) || !hex_bytes(tp + 36, ctx->span_id, 8) ||
        hexval(tp[53]) < 0 || hexval(tp[54]) < 0) {
        memset(ctx, 0, sizeof *ctx);
        return EW_EINVAL;
    }
    flags = (uint8_t)(hexval(tp[53]) << 4 | hexval(tp[54]));
    ctx->flags = flags;
    if (ts && strlen(ts) < sizeof ctx->tracestate)
        strcpy(ctx->tracestate, ts);
    return EW_OK;
}

ew_err ew_trace_format(const ew_trace_context *ctx, char *buf, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    if (!ctx || !buf || len < 56)
        return EW_EINVAL;
    bool t = false, s = false;
    for (size_t i = 0; i < 16; i++)
        t |= ctx->trace_id[i] != 0;
    for (size_t i = 0; i < 8; i++)
        s |= ctx->span_id[i] != 0;
    if (!t || !s)
        return EW_EINVAL;
    char *o = buf;
    *o++ = '0';
    *o++ = '0';
    *o++ = '-';
    for (size_t i = 0; i < 16; i++) {
        *o++ = hex[ctx->trace_id[i] >> 4];
        *o++ = hex[ctx->trace_id[i] & 15];
    }
    *o++ = '-';
    for (size_t i = 0; i < 8; i++) {
        *o++ = hex[ctx->span_id[i] >> 4];
        *o++ = hex[ctx->span_id[i] & 15];
    }
    *o++ = '-';
    *o++ = hex[ctx->flags >> 4];
    *o++ = hex[ctx->flags & 15];
    *o = '\0';
    return EW_OK;
}

void ew_trace_set_current(const ew_trace_context *ctx)
{
    tl_has = ctx != NULL;
    if (ctx)
        tl_cur = *ctx;
}

bool ew_trace_current(ew_trace_context *out)
{
    if (!tl_has || !out)
        return false;
    *out = tl_cur;
    return true;
}

/* ---- the pipeline -------------------------------------------------------- */

static ew_err trace_send(void *user, ew_envelope *env, const ew_event_desc *event)
{
    const ew_trace_hooks *h = user;
    ew_trace_context ctx;
    bool have = tl_has;
    if (have)
        ctx = tl_cur;
    else
        memset(&ctx, 0, sizeof ctx);
    if (h->inject && h->inject(h->user, &ctx, event))
        have = true;
    char tp[56];
    if (!have || ew_trace_format(&ctx, tp, sizeof tp) != EW_OK)
        return EW_OK; /* nothing (valid) to carry */
    ew_err rc = ew_envelope_set_header(env, TRACEPARENT, tp);
    if (rc == EW_OK && ctx.tracestate[0])
        rc = ew_envelope_set_header(env, TRACESTATE, ctx.tracestate);
    return rc;
}

static ew_err trace_handle(void *user, const ew_envelope *env, const ew_listener_desc *l)
{
    const ew_trace_hooks *h = user;
    tl_saved_has = tl_has;
    if (tl_has)
        tl_saved = tl_cur;
    ew_trace_context ctx;
    tl_received = ew_trace_parse(&ctx, ew_envelope_header(env, TRACEPARENT),
                                 ew_envelope_header(env, TRACESTATE)) == EW_OK;
    ew_trace_set_current(tl_received ? &ctx : NULL);
    if (h->begin)
        h->begin(h->user, tl_received ? &tl_cur : NULL, l);
    return EW_OK;
}

static void trace_after(void *user, const ew_envelope *env, const ew_listener_desc *l,
                        ew_err result)
{
    (void)env;
    const ew_trace_hooks *h = user;
    if (h->end)
        h->end(h->user, tl_received ? &tl_cur : NULL, l, result);
    tl_received = false;
    ew_trace_set_current(tl_saved_has ? &tl_saved : NULL);
}

ew_err ew_add_trace_pipeline(ew_manager *m, const ew_trace_hooks *hooks)
{
    ewi_last_error_clear();
    if (!m)
        return ewi_fail(EW_EINVAL, "ew_add_trace_pipeline: the manager is NULL");
    if (hooks && hooks->version != 0)
        return ewi_fail(EW_EINVAL, "ew_add_trace_pipeline: ew_trace_hooks.version is %u; "
                        "this library knows layout 0", hooks->version);
    pthread_mutex_lock(&m->mu);
    bool added = m->trace_added;
    if (!added) {
        m->trace_added = true;
        if (hooks)
            m->trace = *hooks;
    }
    pthread_mutex_unlock(&m->mu);
    if (added)
        return ewi_fail(EW_ECONFLICT, "ew_add_trace_pipeline: already added to this manager");
    ew_pipeline p = {.name = "trace", .send = trace_send, .handle = trace_handle,
                     .after = trace_after};
    return ew_add_pipeline(m, &p, &m->trace);
}
