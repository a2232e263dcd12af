/* The C side of the eventwire command's tests: a typed sender and typed
 * listeners, so the tests show that what the command sends decodes into a
 * C struct and that a C sender's events print as their JSON.
 *
 *   cli_peer listen URL EVENT LISTENER COUNT [durable]
 *       prints "ready", then each decoded event as a JSON line; exits after
 *       COUNT events
 *   cli_peer send URL EVENT msgpack|json [durable]
 *       sends the fixed event below with header session=c-1
 *   cli_peer fail URL EVENT LISTENER N
 *       a durable listener that dead-letters every event; sends events
 *       {"n": 0..N-1} and returns once all N are dead letters
 *   cli_peer count URL EVENT LISTENER
 *       prints "ready", then the n of each {"n"} event; exits 0 on SIGTERM
 *   cli_peer sendct URL EVENT CONTENT-TYPE BODY
 *       publishes BODY with that content type, past the codec (what a
 *       foreign producer might send) */
#include "support.h"

#include <eventwire/eventwire.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct { char *sku; uint32_t qty; } peer_line;
EW_TYPE(peer_line, EW_FIELD(peer_line, sku, EW_STRING), EW_FIELD(peer_line, qty, EW_UINT32));

typedef struct {
    char *world;
    int64_t count;
    double ratio;
    bool ok;
    peer_line *lines;
    size_t lines_count;
    ew_map tags;
    bool has_note;
    char *note;
    bool has_blob;
    ew_bytes blob;
} peer_event;
EW_TYPE(peer_event, EW_FIELD(peer_event, world, EW_STRING),
        EW_FIELD(peer_event, count, EW_INT64), EW_FIELD(peer_event, ratio, EW_DOUBLE),
        EW_FIELD(peer_event, ok, EW_BOOL),
        EW_NESTED_ARRAY(peer_event, lines, peer_line, lines_count),
        EW_FIELD(peer_event, tags, EW_MAP), EW_OPTIONAL(peer_event, note, EW_STRING, has_note),
        EW_OPTIONAL(peer_event, blob, EW_BYTES, has_blob));

typedef struct { int64_t n; } peer_num;
EW_TYPE(peer_num, EW_FIELD(peer_num, n, EW_INT64));

static void die(const char *what, ew_err rc)
{
    printf("FAIL: %s: %s: %s\n", what, ew_strerror(rc), ew_last_error());
    fflush(stdout);
    exit(1);
}

static ew_manager *manager(const char *url)
{
    ew_manager *m;
    ew_err rc = ew_manager_new(&m, url, NULL);
    if (rc != EW_OK)
        die("ew_manager_new", rc);
    return m;
}

/* Events handled so far, and a wait for a number of them. */
static long handled;
static pthread_mutex_t handled_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t handled_cv;

static void count_handled(void)
{
    pthread_mutex_lock(&handled_mu);
    handled++;
    pthread_cond_broadcast(&handled_cv);
    pthread_mutex_unlock(&handled_mu);
}

/* Waits until n are handled, at most timeout_ms (< 0: no bound); the
 * count then. */
static long wait_handled(long n, int timeout_ms)
{
    int64_t deadline = ewi_now_ms() + timeout_ms;
    pthread_mutex_lock(&handled_mu);
    while (handled < n && (timeout_ms < 0 || ewi_left_ms(deadline) > 0)) {
        if (timeout_ms < 0)
            pthread_cond_wait(&handled_cv, &handled_mu);
        else
            ewi_cond_wait_until(&handled_cv, &handled_mu, deadline);
    }
    long got = handled;
    pthread_mutex_unlock(&handled_mu);
    return got;
}

/* ---- listen ---------------------------------------------------------- */

static ew_err on_event(ew_delivery *d, const void *event, void *user)
{
    (void)user;
    const peer_event *e = event;
    json_t *o = json_object(), *lines = json_array(), *tags = json_object();
    json_object_set_new(o, "world", json_string(e->world));
    json_object_set_new(o, "count", json_integer(e->count));
    json_object_set_new(o, "ratio", json_real(e->ratio));
    json_object_set_new(o, "ok", json_boolean(e->ok));
    for (size_t i = 0; i < e->lines_count; i++)
        json_array_append_new(lines, json_pack("{s:s,s:I}", "sku", e->lines[i].sku, "qty",
                                               (json_int_t)e->lines[i].qty));
    json_object_set_new(o, "lines", lines);
    for (size_t i = 0; i < e->tags.count; i++)
        json_object_set_new(tags, e->tags.entries[i].key, json_string(e->tags.entries[i].value));
    json_object_set_new(o, "tags", tags);
    if (e->has_note)
        json_object_set_new(o, "note", json_string(e->note));
    if (e->has_blob) {
        char hex[256] = "";
        for (size_t i = 0; i < e->blob.len && i < 100; i++)
            snprintf(hex + 2 * i, 3, "%02x", e->blob.data[i]);
        json_object_set_new(o, "blob_hex", json_string(hex));
    }
    const char *s = ew_delivery_header(d, "session");
    json_object_set_new(o, "session", s ? json_string(s) : json_null());
    const char *ct = ew_envelope_content_type(ew_delivery_envelope(d));
    json_object_set_new(o, "content_type", json_string(ct ? ct : ""));
    char *text = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    printf("%s\n", text);
    fflush(stdout);
    free(text);
    json_decref(o);
    count_handled();
    return EW_OK;
}

static int cmd_listen(const char *url, const char *event, const char *listener, long count,
                      bool durable)
{
    ew_event_desc ev = {.type = &peer_event_type, .name = event, .durable = durable};
    ew_manager *m = manager(url);
    ew_err rc = ew_listen(m, &(ew_listener_desc){.event = &ev, .name = listener}, on_event,
                          NULL);
    if (rc == EW_OK)
        rc = ew_manager_start(m);
    if (rc != EW_OK)
        die("listen", rc);
    printf("ready\n");
    fflush(stdout);
    /* Until COUNT events or stdin closes (the test's end). */
    wait_handled(count, -1);
    ew_manager_stop(m, 5000);
    ew_manager_free(m);
    return 0;
}

/* ---- send ------------------------------------------------------------ */

static ew_err set_session(void *user, ew_envelope *env, const ew_event_desc *event)
{
    (void)user;
    (void)event;
    return ew_envelope_set_header(env, "session", "c-1");
}

static int cmd_send(const char *url, const char *event, const char *format, bool durable)
{
    ew_event_desc ev = {.type = &peer_event_type, .name = event, .durable = durable,
                        .format = strcmp(format, "json") == 0 ? EW_FORMAT_JSON
                                                              : EW_FORMAT_MSGPACK};
    ew_manager *m = manager(url);
    ew_err rc = ew_add_pipeline(m, &(ew_pipeline){.name = "session", .send = set_session},
                                NULL);
    if (rc == EW_OK)
        rc = ew_manager_start(m);
    if (rc != EW_OK)
        die("start", rc);
    char a[] = "a-1", b[] = "b-2", k[] = "k", v[] = "v", world[] = "from C",
         note[] = "ünïcode";
    peer_line lines[2] = {{a, 2}, {b, 3}};
    ew_map_entry tags[1] = {{k, v}};
    uint8_t blob[3] = {0x00, 0xff, 0x10};
    peer_event e = {.world = world, .count = -42, .ratio = 0.25, .ok = true,
                    .lines = lines, .lines_count = 2, .tags = {tags, 1},
                    .has_note = true, .note = note, .has_blob = true,
                    .blob = {blob, sizeof blob}};
    if ((rc = ew_send(m, &ev, &e)) != EW_OK)
        die("send", rc);
    printf("sent\n");
    ew_manager_stop(m, 5000);
    ew_manager_free(m);
    return 0;
}

/* ---- fail: make dead letters ----------------------------------------- */

static ew_err refuse(ew_delivery *d, const void *event, void *user)
{
    (void)d;
    (void)event;
    (void)user;
    count_handled();
    return EW_ENORETRY;
}

static ew_err see(void *user, const ew_envelope *env)
{
    (void)env;
    (*(size_t *)user)++;
    return EW_OK;
}

static int cmd_fail(const char *url, const char *event, const char *listener, long n)
{
    ew_event_desc ev = {.type = &peer_num_type, .name = event, .durable = true};
    ew_manager *m = manager(url);
    ew_err rc = ew_listen(m, &(ew_listener_desc){.event = &ev, .name = listener,
                                                 .concurrency = 4},
                          refuse, NULL);
    if (rc == EW_OK)
        rc = ew_manager_start(m);
    if (rc != EW_OK)
        die("start", rc);
    for (long i = 0; i < n; i++)
        if ((rc = ew_send_async(m, &ev, NULL, &(peer_num){i}, NULL, NULL)) != EW_OK)
            die("send", rc);
    if ((rc = ew_flush(m, 60000)) != EW_OK)
        die("flush", rc);
    /* A dead letter is confirmed before its original is acknowledged, and
     * the stop waits for the handlers: after it every one is on the queue. */
    long got = wait_handled(n, 120000);
    if (got < n) {
        printf("FAIL: %ld of %ld events handled\n", got, n);
        return 1;
    }
    ew_manager_stop(m, 30000);
    ew_manager_free(m);
    /* Check from a fresh manager that they are all there. */
    m = manager(url);
    if ((rc = ew_manager_start(m)) != EW_OK)
        die("start", rc);
    size_t seen = 0;
    rc = ew_dead_letters_peek(m, &(ew_dead_letter_options){.event = &ev, .listener = listener,
                                                           .max = (size_t)n + 10,
                                                           .timeout_ms = 5000, .fn = see,
                                                           .user = &seen},
                              NULL);
    ew_manager_stop(m, 5000);
    ew_manager_free(m);
    if (rc != EW_OK)
        die("peek", rc);
    if (seen != (size_t)n) {
        printf("FAIL: %zu dead letters, expected %ld\n", seen, n);
        return 1;
    }
    printf("dead %ld\n", n);
    return 0;
}

/* ---- count ----------------------------------------------------------- */

static ew_err print_n(ew_delivery *d, const void *event, void *user)
{
    (void)d;
    (void)user;
    printf("n %lld\n", (long long)((const peer_num *)event)->n);
    fflush(stdout);
    return EW_OK;
}

static int cmd_count(const char *url, const char *event, const char *listener)
{
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    ew_event_desc ev = {.type = &peer_num_type, .name = event, .durable = true};
    ew_manager *m = manager(url);
    ew_err rc = ew_listen(m, &(ew_listener_desc){.event = &ev, .name = listener}, print_n,
                          NULL);
    if (rc == EW_OK)
        rc = ew_manager_start(m);
    if (rc != EW_OK)
        die("start", rc);
    printf("ready\n");
    fflush(stdout);
    int sig;
    sigwait(&sigs, &sig);
    ew_manager_stop(m, 5000);
    ew_manager_free(m);
    return 0;
}

static int cmd_sendct(const char *url, const char *event, const char *ct, const char *body)
{
    ew_manager *m = manager(url);
    ew_err rc = ew_manager_start(m);
    if (rc == EW_OK)
        rc = publish_raw_rc(m, event, ct, body, strlen(body), 15000);
    if (rc != EW_OK)
        die("sendct", rc);
    printf("sent\n");
    ew_manager_stop(m, 5000);
    ew_manager_free(m);
    return 0;
}

int main(int argc, char **argv)
{
    ewi_cond_init_mono(&handled_cv);
    if (argc == 6 && strcmp(argv[1], "sendct") == 0)
        return cmd_sendct(argv[2], argv[3], argv[4], argv[5]);
    if (argc >= 6 && strcmp(argv[1], "listen") == 0)
        return cmd_listen(argv[2], argv[3], argv[4], atol(argv[5]),
                          argc > 6 && strcmp(argv[6], "durable") == 0);
    if (argc >= 5 && strcmp(argv[1], "send") == 0)
        return cmd_send(argv[2], argv[3], argv[4], argc > 5 && strcmp(argv[5], "durable") == 0);
    if (argc == 6 && strcmp(argv[1], "fail") == 0)
        return cmd_fail(argv[2], argv[3], argv[4], atol(argv[5]));
    if (argc == 5 && strcmp(argv[1], "count") == 0)
        return cmd_count(argv[2], argv[3], argv[4]);
    fprintf(stderr, "usage: see the comment at the top of cli_peer.c\n");
    return 2;
}
