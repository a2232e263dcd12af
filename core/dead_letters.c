/* Reading a listener's dead-letter queue: the transport takes messages off
 * E::L.dlq and core hands them to the application's callback. A message the
 * callback refuses stays on the dead-letter queue (the transport does not take
 * it), so nothing is lost. */
#include "manager_priv.h"

#include <stdio.h>
#include <string.h>

typedef struct dl_reader {
    ew_manager *m;
    ewi_dlq_req *req;
    ew_dead_letter_fn fn;
    void *user;
    ew_err refused; /* the callback's code once it refused a message */
    size_t accepted;
} dl_reader;

/* A refusal leaves the message (and the rest of the batch) on the queue:
 * the transport does not take it. */
static ew_err one(void *arg, const ew_envelope *env)
{
    dl_reader *r = arg;
    if (r->refused != EW_OK)
        return r->refused;
    ew_err rc = r->fn(r->user, env);
    if (rc == EW_OK)
        r->accepted++;
    else
        r->refused = rc;
    return rc;
}

static ew_err read_dlq(ew_manager *m, const ew_dead_letter_options *o, size_t *taken,
                       bool keep)
{
    if (taken)
        *taken = 0;
    if (!m || !o || !o->event || !o->listener || !o->fn)
        return ewi_fail(EW_EINVAL, "ew_dead_letters: NULL manager, options, event, "
                        "listener or callback");
    if (o->version != 0)
        return ewi_fail(EW_EINVAL, "ew_dead_letters: ew_dead_letter_options.version is "
                        "%u; this library knows layout 0", o->version);
    const ew_event_desc *desc = o->event;
    const char *listener = o->listener;
    if (atomic_load(&m->state) != EWI_STARTED)
        return ewi_fail(EW_ESTATE, "ew_dead_letters: the manager is not started");
    if (!(m->ops->features & EWI_FEAT_DLQ_READ))
        return ewi_fail(EW_ENOTSUP, "ew_dead_letters: the %s transport cannot read "
                        "dead-letter queues", m->ops->name);
    ewi_event *ev;
    ew_err rc = ewi_event_get(m, desc, &ev);
    if (rc != EW_OK)
        return rc;
    char queue[EW_MAX_QUEUE_NAME], dlq[EW_MAX_QUEUE_NAME], err[256];
    if ((rc = ewi_queue_names(m, ev->name, listener, false, queue, dlq, err,
                              sizeof err)) != EW_OK) {
        ewi_log(m, EW_LOG_ERROR, "dead letters: %s", err);
        return rc;
    }
    dl_reader r = {.m = m, .fn = o->fn, .user = o->user};
    ewi_dlq_req req = {ev->name, listener, dlq, o->max ? o->max : 1, o->timeout_ms, one,
                       &r, 0, keep};
    r.req = &req;
    rc = m->ops->dlq_take(m->t, &req);
    if (taken)
        *taken = r.accepted;
    if (r.refused != EW_OK)
        return ewi_fail(r.refused, "ew_dead_letters: the callback returned %s; the "
                        "message stays on %s", ew_strerror(r.refused), dlq);

    if (rc != EW_OK && !ewi_last_error_peek()[0])
        ewi_set_last_error("reading dead letters of %s: %s", dlq, ew_strerror(rc));
    return rc;
}

ew_err ew_dead_letters(ew_manager *m, const ew_dead_letter_options *o, size_t *taken)
{
    ewi_last_error_clear();
    return read_dlq(m, o, taken, false);
}

ew_err ew_dead_letters_peek(ew_manager *m, const ew_dead_letter_options *o, size_t *seen)
{
    ewi_last_error_clear();
    return read_dlq(m, o, seen, true);
}
