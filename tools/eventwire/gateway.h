/* eventwire serve: the HTTP gateway, in three parts.
 *
 *   gateway_ring.c   one bounded buffer per event name, fed by the gateway's
 *                    own per_process listener of that event; streams read
 *                    it, each consuming a per_process queue of its own
 *   gateway_http.c   the HTTP side on libmicrohttpd: POST and GET of events,
 *                    metrics, health, readiness and the page
 *   cmd_serve.c      options, the manager, signals and the shutdown
 *
 * docs/cli.md ("serve") explains why streams read one buffer instead of
 * each consuming a queue of its own. */
#ifndef EVENTWIRE_GATEWAY_H
#define EVENTWIRE_GATEWAY_H

#include "cli.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

/* The listener name of the gateway's queues: E::eventwire-gateway-<server>. */
#define GW_LISTENER "eventwire-gateway"
#define GW_ID_MAX 128 /* longest message id kept; longer ones are cut */

typedef struct gw_slot {
    uint64_t seq;       /* position in the event's sequence */
    char id[GW_ID_MAX]; /* the SSE id: the message id */
    char *frame;        /* "id: ...\nevent: ...\ndata: ...\n\n" */
    size_t len;
    int32_t next;       /* the next slot in the same hash chain, or -1 */
} gw_slot;

/* One event name the gateway watches. Entries have sequence numbers
 * [first, next); entry s lives in slots[s % cap]. Everything below mu is
 * guarded by it; cv is signalled on every append and on shutdown. */
typedef struct gw_topic {
    struct gw_topic *next_topic;
    struct gateway *gw;
    char name[EW_MAX_EVENT_NAME + 1];
    ew_event_desc desc;
    ew_listener_desc listener;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t cap;
    gw_slot *slots;
    int32_t *buckets; /* id hash -> slot index, chained through next */
    size_t nbuckets;
    uint64_t first, next;
    uint64_t duplicates; /* redeliveries of an id still in the buffer, dropped */
} gw_topic;

typedef struct gw_options {
    const char *http;   /* --http HOST:PORT */
    long buffer;        /* --buffer: events kept per event name */
    long retry_ms;      /* --retry-ms: the SSE retry: field */
    long max_stream_s;  /* --max-stream-s: 0 = unbounded */
    long body_limit;    /* --body-limit: bytes of a POST body */
    long keepalive_s;   /* --keepalive-s: comment lines on idle streams */
    long max_events;    /* --max-events: event names watched at most */
    long max_streams;   /* --max-streams: open streams at most */
    bool durable;       /* --durable */
    ew_format format;   /* --format of published bodies */
} gw_options;

/* Response counters by status code, for /metrics. */
enum { GW_CODES = 13 };
extern const int gw_codes[GW_CODES];

typedef struct gateway {
    gw_options o;
    cli_common c;
    ew_manager *m;
    atomic_bool stopping;
    pthread_mutex_t topics_mu;    /* the list */
    pthread_mutex_t subscribe_mu; /* one ew_listen at a time */
    gw_topic *topics;
    size_t ntopics;
    atomic_long streams_open;
    atomic_ulong streams_total, resumes, gaps;
    atomic_ulong stream_seq;      /* numbers the streams' listeners */
    atomic_ulong responses[GW_CODES];
    struct MHD_Daemon *daemon;
} gateway;

/* ---- gateway_ring.c ---------------------------------------------------- */

/* The topic of name, subscribing the gateway's listener on first use (the
 * call returns once it consumes). NULL with *rc and the reason in why when
 * the name is refused, too many are watched, or the subscribe failed. */
gw_topic *gw_topic_get(gateway *g, const char *name, ew_err *rc, char *why, size_t whylen);
/* A stream's own per_process listener, eventwire-gateway-s<n> (queue
 * E::eventwire-gateway-s<n>-<server>), for the stream's life: a message
 * from it is acknowledged once the topic's buffer holds it (see
 * gateway_ring.c), and its queue is deleted when the stream closes. */
#define GW_COPY_WAIT_MS 10000
typedef struct gw_stream_listener {
    char name[48];
    ew_listener_desc desc;
    gw_topic *t;
    atomic_bool closing;
} gw_stream_listener;
/* Registers sl on t's event; returns once it consumes. */
ew_err gw_stream_listen(gateway *g, gw_topic *t, gw_stream_listener *sl, char *why,
                        size_t whylen);
/* Removes it and deletes its queue (the stream closed). */
void gw_stream_unlisten(gateway *g, gw_stream_listener *sl);
/* Wakes every stream (on shutdown). */
void gw_topics_wake(gateway *g);
void gw_topics_free(gateway *g);
/* The sequence number of id in t's buffer, or -1. Call with t->mu held. */
int64_t gw_ring_find(gw_topic *t, const char *id);
/* Appends one entry (the frame is taken over). false when the id is already
 * in the buffer (the frame is freed). Call with t->mu held. */
bool gw_ring_append(gw_topic *t, const char *id, char *frame, size_t len);

/* ---- gateway_http.c ---------------------------------------------------- */

/* Starts libmicrohttpd on the bound socket fd. */
int gw_http_start(gateway *g, int fd);
/* Stops accepting, ends every stream, waits for the connections. */
void gw_http_stop(gateway *g);
/* The send pipeline that carries a request's X-Ew-Header-* headers. */
ew_err gw_pipeline_install(ew_manager *m);

extern const char gw_page_html[];

#endif
