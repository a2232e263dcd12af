/* The gateway's buffers: one per event name, fed by one per_process
 * listener of that event (queue E::eventwire-gateway-<server>) with
 * concurrency 1, so entries are in the order the queue delivered them.
 * Each open stream of the name also consumes a per_process queue of its own
 * (E::eventwire-gateway-s<n>-<server>), deleted when the stream closes: a
 * message from it is acknowledged once the buffer holds its id (or after
 * GW_COPY_WAIT_MS), and is never appended itself, so that every stream
 * keeps the buffer's one order.
 * Each entry gets the next sequence number; a stream is a cursor into that
 * sequence, which is what makes replay and live delivery one path with no
 * gap and no repeat (docs/cli.md, "serve"). */
#include "gateway.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint32_t hash_id(const char *id)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *id; id++)
        h = (h ^ (unsigned char)*id) * 16777619u;
    return h;
}

int64_t gw_ring_find(gw_topic *t, const char *id)
{
    for (int32_t i = t->buckets[hash_id(id) & (t->nbuckets - 1)]; i >= 0; i = t->slots[i].next)
        if (strcmp(t->slots[i].id, id) == 0)
            return (int64_t)t->slots[i].seq;
    return -1;
}

static void unhash(gw_topic *t, int32_t slot)
{
    int32_t *p = &t->buckets[hash_id(t->slots[slot].id) & (t->nbuckets - 1)];
    while (*p >= 0 && *p != slot)
        p = &t->slots[*p].next;
    if (*p == slot)
        *p = t->slots[slot].next;
}

bool gw_ring_append(gw_topic *t, const char *id, char *frame, size_t len)
{
    if (gw_ring_find(t, id) >= 0) {
        t->duplicates++;
        free(frame);
        return false;
    }
    if (t->next - t->first == t->cap) { /* full: the oldest goes */
        int32_t old = (int32_t)(t->first % t->cap);
        unhash(t, old);
        free(t->slots[old].frame);
        t->slots[old].frame = NULL;
        t->first++;
    }
    int32_t i = (int32_t)(t->next % t->cap);
    gw_slot *s = &t->slots[i];
    s->seq = t->next++;
    snprintf(s->id, sizeof s->id, "%s", id);
    s->frame = frame;
    s->len = len;
    uint32_t b = hash_id(s->id) & (t->nbuckets - 1);
    s->next = t->buckets[b];
    t->buckets[b] = i;
    pthread_cond_broadcast(&t->cv);
    return true;
}

/* An SSE field value must not hold a line break. */
static void one_line(char *s)
{
    for (; *s; s++)
        if (*s == '\n' || *s == '\r')
            *s = ' ';
}

/* Runs on the topic's one worker thread, in queue order. */
static ew_err on_event(ew_delivery *d, const void *event, void *user)
{
    (void)event;
    gw_topic *t = user;
    const ew_envelope *env = ew_delivery_envelope(d);
    size_t blen;
    const void *body = ew_envelope_body(env, &blen);
    ew_format fmt = ew_format_from_content_type(ew_envelope_content_type(env));
    char err[512] = "unknown event format";
    json_t *j = fmt == EW_FORMAT_DEFAULT ? NULL : cli_body_to_json(body, blen, fmt, err,
                                                                   sizeof err);
    char id[GW_ID_MAX];
    const char *mid = ew_envelope_message_id(env);
    pthread_mutex_lock(&t->mu);
    if (mid && mid[0])
        snprintf(id, sizeof id, "%s", mid);
    else /* not sent by eventwire: an id of the gateway's own */
        snprintf(id, sizeof id, "gw-%llu", (unsigned long long)t->next);
    pthread_mutex_unlock(&t->mu);
    one_line(id);
    if (!j) {
        /* A stream cannot show it; the event's other listeners have their
         * own copies. Said once per message, then acknowledged. */
        cli_fail("serve", 0, "%s: message %s skipped: %s", ew_delivery_queue(d), id, err);
        return EW_OK;
    }
    char *data = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(j);
    if (!data)
        return EW_ENOMEM; /* retried by the policy */
    size_t cap = strlen(id) + strlen(t->name) + strlen(data) + 32;
    char *frame = malloc(cap);
    if (!frame) {
        free(data);
        return EW_ENOMEM;
    }
    int len = snprintf(frame, cap, "id: %s\nevent: %s\ndata: %s\n\n", id, t->name, data);
    free(data);
    pthread_mutex_lock(&t->mu);
    gw_ring_append(t, id, frame, (size_t)len);
    pthread_mutex_unlock(&t->mu);
    return EW_OK;
}

/* A stream's copy, on its listener's one worker thread: acknowledged once
 * the buffer holds the message (the topic's listener put it there), when
 * the stream closes, after a whole buffer of other entries, or after
 * GW_COPY_WAIT_MS. */
static ew_err on_stream_event(ew_delivery *d, const void *event, void *user)
{
    (void)event;
    gw_stream_listener *sl = user;
    gw_topic *t = sl->t;
    const char *mid = ew_envelope_message_id(ew_delivery_envelope(d));
    if (!mid || !mid[0])
        return EW_OK; /* the buffer names it with an id of its own */
    char id[GW_ID_MAX];
    snprintf(id, sizeof id, "%s", mid);
    one_line(id);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += GW_COPY_WAIT_MS / 1000;
    pthread_mutex_lock(&t->mu);
    /* A whole buffer appended meanwhile: it came and went, or never comes. */
    uint64_t n0 = t->next;
    while (gw_ring_find(t, id) < 0 && !atomic_load(&sl->closing) &&
           !atomic_load(&t->gw->stopping) && t->next - n0 < t->cap)
        if (pthread_cond_timedwait(&t->cv, &t->mu, &until) != 0)
            break;
    pthread_mutex_unlock(&t->mu);
    return EW_OK;
}

ew_err gw_stream_listen(gateway *g, gw_topic *t, gw_stream_listener *sl, char *why,
                        size_t whylen)
{
    snprintf(sl->name, sizeof sl->name, "%s-s%lu", GW_LISTENER,
             atomic_fetch_add(&g->stream_seq, 1) + 1);
    sl->desc = (ew_listener_desc){.event = &t->desc, .name = sl->name, .per_process = true,
                                  .concurrency = 1,
                                  .retry = {.attempts = 3, .backoff_ms = 100}};
    sl->t = t;
    atomic_init(&sl->closing, false);
    ew_err rc = ew_listen(g->m, &sl->desc, on_stream_event, sl);
    if (rc != EW_OK)
        snprintf(why, whylen, "%s", ew_last_error()[0] ? ew_last_error() : ew_strerror(rc));
    return rc;
}

void gw_stream_unlisten(gateway *g, gw_stream_listener *sl)
{
    /* A copy waiting for the buffer stops waiting: ew_unlisten waits for it. */
    pthread_mutex_lock(&sl->t->mu);
    atomic_store(&sl->closing, true);
    pthread_cond_broadcast(&sl->t->cv);
    pthread_mutex_unlock(&sl->t->mu);
    ew_err rc = ew_unlisten(g->m, &sl->desc, EW_UNLISTEN_DELETE_QUEUE);
    if (rc == EW_ENOTSUP) {
        /* The broker cannot delete a queue over this protocol (ActiveMQ 5
         * over STOMP): the stream's listener goes, its queue stays to the
         * broker's own policy. Said once. */
        static atomic_bool said;
        if (!atomic_exchange(&said, true))
            cli_fail("serve", 0, "streams' queues are not deleted on this broker: %s",
                     ew_last_error());
        rc = ew_unlisten(g->m, &sl->desc, 0);
    }
    if (rc != EW_OK)
        cli_fail("serve", 0, "closing the stream's listener %s: %s", sl->name,
                 ew_last_error()[0] ? ew_last_error() : ew_strerror(rc));
}

static gw_topic *topic_new(gateway *g, const char *name)
{
    gw_topic *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->gw = g;
    snprintf(t->name, sizeof t->name, "%s", name);
    t->cap = (size_t)g->o.buffer;
    t->nbuckets = 16;
    while (t->nbuckets < 2 * t->cap)
        t->nbuckets *= 2;
    t->slots = calloc(t->cap, sizeof *t->slots);
    t->buckets = malloc(t->nbuckets * sizeof *t->buckets);
    if (!t->slots || !t->buckets) {
        free(t->slots);
        free(t->buckets);
        free(t);
        return NULL;
    }
    for (size_t i = 0; i < t->nbuckets; i++)
        t->buckets[i] = -1;
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);
    /* As the POSTs declare it: the manager holds one declaration per name. */
    t->desc = (ew_event_desc){.type = &ew_raw_type, .name = t->name, .durable = g->o.durable,
                              .format = g->o.format};
    t->listener = (ew_listener_desc){.event = &t->desc, .name = GW_LISTENER,
                                     .per_process = true, .concurrency = 1,
                                     .retry = {.attempts = 3, .backoff_ms = 100}};
    return t;
}

static void topic_free(gw_topic *t)
{
    for (size_t i = 0; i < t->cap; i++)
        free(t->slots[i].frame);
    free(t->slots);
    free(t->buckets);
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
    free(t);
}

static gw_topic *lookup(gateway *g, const char *name)
{
    pthread_mutex_lock(&g->topics_mu);
    gw_topic *t = g->topics;
    while (t && strcmp(t->name, name) != 0)
        t = t->next_topic;
    pthread_mutex_unlock(&g->topics_mu);
    return t;
}

gw_topic *gw_topic_get(gateway *g, const char *name, ew_err *rc, char *why, size_t whylen)
{
    gw_topic *t = lookup(g, name);
    if (t)
        return t;
    /* One subscribe at a time: two first streams of one event make one
     * listener, and the other topics' streams go on meanwhile. */
    pthread_mutex_lock(&g->subscribe_mu);
    if ((t = lookup(g, name)) != NULL)
        goto out;
    if (strlen(name) > EW_MAX_EVENT_NAME) {
        *rc = EW_EINVAL;
        snprintf(why, whylen, "event name longer than %d bytes", EW_MAX_EVENT_NAME);
        goto out;
    }
    if ((long)g->ntopics >= g->o.max_events) {
        *rc = EW_ETOOBIG;
        snprintf(why, whylen, "the gateway already watches %ld event names (--max-events)",
                 g->o.max_events);
        goto out;
    }
    if (!(t = topic_new(g, name))) {
        *rc = EW_ENOMEM;
        snprintf(why, whylen, "out of memory");
        goto out;
    }
    ew_err r = ew_listen(g->m, &t->listener, on_event, t);
    if (r != EW_OK) {
        *rc = r;
        snprintf(why, whylen, "%s", ew_last_error()[0] ? ew_last_error() : ew_strerror(r));
        /* The manager forgets a listener that failed to subscribe: the
         * next stream of this event tries again. */
        topic_free(t);
        t = NULL;
        goto out;
    }
    pthread_mutex_lock(&g->topics_mu);
    t->next_topic = g->topics;
    g->topics = t;
    g->ntopics++;
    pthread_mutex_unlock(&g->topics_mu);
out:
    pthread_mutex_unlock(&g->subscribe_mu);
    return t;
}

void gw_topics_wake(gateway *g)
{
    pthread_mutex_lock(&g->topics_mu);
    for (gw_topic *t = g->topics; t; t = t->next_topic) {
        pthread_mutex_lock(&t->mu);
        pthread_cond_broadcast(&t->cv);
        pthread_mutex_unlock(&t->mu);
    }
    pthread_mutex_unlock(&g->topics_mu);
}

void gw_topics_free(gateway *g)
{
    while (g->topics) {
        gw_topic *t = g->topics;
        g->topics = t->next_topic;
        topic_free(t);
    }
    g->ntopics = 0;
}
