/* Send outcomes and the in-flight window: the rules every transport shares,
 * so that a failed send means the same everywhere. */
#include "ewi.h"

int ewi_pub_unconfirmed(const ewi_pub *p, int err)
{
    bool unconfirmed = err == EW_ETIMEDOUT || err == EW_ECLOSED || err == EW_EDISCONNECTED;
    return unconfirmed && p->written ? EW_EINDOUBT : err;
}

const char *ewi_pub_detail(const ewi_pub *p, const char *why_unsent, const char *why_written)
{
    return p->written ? why_written : why_unsent;
}

void ewi_window_init(ewi_window *w, size_t max, size_t max_bytes)
{
    ewi_cond_init_mono(&w->room);
    w->max = max ? max : 1;
    w->wake_room = w->max / 16 > 64 ? 64 : w->max / 16 ? w->max / 16 : 1;
    w->max_bytes = max_bytes ? max_bytes : 1;
    w->wake_bytes = w->max_bytes / 16 ? w->max_bytes / 16 : 1;
    w->used = w->waiters = w->used_bytes = 0;
    w->closed = false;
}

void ewi_window_destroy(ewi_window *w)
{
    pthread_cond_destroy(&w->room);
}

size_t ewi_pub_bytes(const ewi_pub *p)
{
    size_t len = 0;
    if (p->env)
        (void)ew_envelope_body(p->env, &len);
    return len;
}

static bool full(const ewi_window *w, size_t bytes)
{
    if (w->used >= w->max)
        return true;
    /* bytes on top of used_bytes over max_bytes; an empty window takes any */
    return w->used_bytes && (bytes > w->max_bytes || w->used_bytes > w->max_bytes - bytes);
}

ew_err ewi_window_take(ewi_window *w, pthread_mutex_t *mu, int64_t deadline_ms, size_t bytes)
{
    while (!w->closed && full(w, bytes)) {
        if (ewi_left_ms(deadline_ms) == 0)
            return EW_ETIMEDOUT;
        w->waiters++;
        ewi_cond_wait_until(&w->room, mu, deadline_ms);
        w->waiters--;
    }
    if (w->closed)
        return EW_ECLOSED;
    w->used++;
    w->used_bytes += bytes;
    return EW_OK;
}

void ewi_window_give(ewi_window *w, size_t n, size_t bytes)
{
    w->used = n < w->used ? w->used - n : 0;
    w->used_bytes = bytes < w->used_bytes ? w->used_bytes - bytes : 0;
    if (w->waiters && w->max - w->used >= w->wake_room &&
        (w->used_bytes == 0 ||
         (w->used_bytes < w->max_bytes && w->max_bytes - w->used_bytes >= w->wake_bytes)))
        pthread_cond_broadcast(&w->room);
}

void ewi_window_close(ewi_window *w)
{
    w->closed = true;
    if (w->waiters)
        pthread_cond_broadcast(&w->room);
}

void ewi_window_open(ewi_window *w)
{
    w->closed = false;
}
