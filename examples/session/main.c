/* session: a pipeline carries a session id from the sending thread to the
 * listener's worker thread through a header.
 *
 * The send hook reads the sender's thread-local session and writes the
 * "session" header; the handle hook reads the header and sets the worker's
 * thread-local session before the listener runs; the after hook clears it. */
#include <eventwire/eventwire.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *item;
} click_event;

EW_TYPE(click_event, EW_FIELD(click_event, item, EW_STRING));

static const ew_event_desc CLICK = {.type = &click_event_type, .name = "ClickEvent"};

/* The application's notion of "the current session", per thread. */
static _Thread_local char current_session[64];

static ew_err session_send(void *user, ew_envelope *env, const ew_event_desc *ev)
{
    (void)user;
    (void)ev;
    return current_session[0] ? ew_envelope_set_header(env, "session", current_session)
                              : EW_OK;
}

static ew_err session_handle(void *user, const ew_envelope *env, const ew_listener_desc *l)
{
    (void)user;
    (void)l;
    const char *s = ew_envelope_header(env, "session");
    snprintf(current_session, sizeof current_session, "%s", s ? s : "");
    return EW_OK;
}

static void session_after(void *user, const ew_envelope *env, const ew_listener_desc *l,
                          ew_err result)
{
    (void)user;
    (void)env;
    (void)l;
    (void)result;
    current_session[0] = '\0';
}

static const ew_pipeline session_pipeline = {.name = "session",
                                             .send = session_send,
                                             .handle = session_handle,
                                             .after = session_after};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int received;

static ew_err on_click(ew_delivery *d, const void *event, void *user)
{
    const click_event *c = event;
    (void)d;
    (void)user;
    /* The worker thread now knows the session of whoever sent the event. */
    printf("clicked %s in session %s\n", c->item, current_session);
    pthread_mutex_lock(&mu);
    received++;
    pthread_cond_signal(&cv);
    pthread_mutex_unlock(&mu);
    return EW_OK;
}

static void *user_thread(void *arg)
{
    ew_manager *m = arg;
    snprintf(current_session, sizeof current_session, "session-of-alice");
    ew_err rc = ew_send(m, &CLICK, &(click_event){.item = "buy-button"});
    if (rc != EW_OK)
        fprintf(stderr, "session: send: %s: %s\n", ew_strerror(rc), ew_last_error());
    return NULL;
}

int main(void)
{
    const char *url = getenv("EW_URL") ? getenv("EW_URL") : "local://";
    ew_manager *m;
    ew_err rc = ew_manager_new(&m, url, NULL);
    if (rc != EW_OK) {
        fprintf(stderr, "session: %s: %s\n", ew_strerror(rc), ew_last_error());
        return 1;
    }
    rc = ew_add_pipeline(m, &session_pipeline, NULL);
    if (rc == EW_OK)
        rc = ew_listen(m, &(ew_listener_desc){.event = &CLICK, .name = "ClickLog"},
                       on_click, NULL);
    if (rc == EW_OK)
        rc = ew_manager_start(m);
    if (rc != EW_OK) {
        fprintf(stderr, "session: %s: %s\n", ew_strerror(rc), ew_last_error());
        ew_manager_free(m);
        return 1;
    }
    pthread_t t;
    pthread_create(&t, NULL, user_thread, m);
    pthread_join(t, NULL);
    pthread_mutex_lock(&mu);
    while (received == 0)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    ew_manager_free(m);
    return 0;
}
