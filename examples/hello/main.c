/* hello: one event, one listener.
 *
 *   EW_URL=rabbitmq://guest:guest@127.0.0.1:5672/ ./hello
 *
 * Without EW_URL it runs on local://, the in-process transport. */
#include <eventwire/eventwire.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct {
    const char *world;
    int64_t count;
} hello_event;

EW_TYPE(hello_event,
        EW_FIELD(hello_event, world, EW_STRING),
        EW_FIELD(hello_event, count, EW_INT64));

static const ew_event_desc HELLO = {.type = &hello_event_type,
                                    .name = "HelloEvent",
                                    .durable = true};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int received;

/* Runs on the listener's worker thread. */
static ew_err on_hello(ew_delivery *d, const void *event, void *user)
{
    const hello_event *h = event;
    (void)user;
    printf("received HelloEvent{world=\"%s\", count=%lld} on %s (message %s)\n",
           h->world, (long long)h->count, ew_delivery_queue(d),
           ew_envelope_message_id(ew_delivery_envelope(d)));
    pthread_mutex_lock(&mu);
    received++;
    pthread_cond_signal(&cv);
    pthread_mutex_unlock(&mu);
    return EW_OK;
}

int main(void)
{
    const char *url = getenv("EW_URL") ? getenv("EW_URL") : "local://";
    ew_manager *m;
    ew_err rc = ew_manager_new(&m, url, NULL);
    if (rc != EW_OK) {
        fprintf(stderr, "hello: %s: %s\n", ew_strerror(rc), ew_last_error());
        return 1;
    }
    rc = ew_listen(m, &(ew_listener_desc){.event = &HELLO, .name = "HelloListener"},
                   on_hello, NULL);
    if (rc == EW_OK)
        rc = ew_manager_start(m);
    if (rc == EW_OK)
        rc = ew_send(m, &HELLO, &(hello_event){.world = "world", .count = 1});
    if (rc != EW_OK) {
        fprintf(stderr, "hello: %s: %s\n", ew_strerror(rc), ew_last_error());
        ew_manager_free(m);
        return 1;
    }
    printf("sent HelloEvent{world=\"world\", count=1} over %s\n", url);
    pthread_mutex_lock(&mu);
    while (received == 0)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    ew_manager_stop(m, 5000);
    ew_manager_free(m);
    return 0;
}
