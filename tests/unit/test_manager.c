/* The manager's contract on local://: lifecycle states, registration
 * errors, pipeline order and refusal, the error handler, bounded queues,
 * retry policy and stop. The conformance suite covers delivery itself. */
#include "support.h"

static void lifecycle_states(void **state)
{
    (void)state;
    support_init("local://");
    EV(ev, "Life", false);
    ew_manager *m;
    assert_int_equal(ew_manager_new(&m, "nope://x", NULL), EW_ENOTFOUND);
    assert_int_equal(ew_manager_new(&m, "local://x?capacity=abc", NULL), EW_EINVAL);
    assert_int_equal(ew_manager_new(&m, "local://x?prefetch=0", NULL), EW_EINVAL);
    assert_int_equal(ew_manager_new(&m, "not a url", NULL), EW_EINVAL);
    assert_int_equal(ew_manager_new(&m, "local://x",
                                    &(ew_options){.server_name = "bad.name"}),
                     EW_EINVAL);
    assert_int_equal(ew_manager_new(&m, NULL, NULL), EW_OK);
    conf_event e = {1, "x"};
    assert_int_equal(ew_send(m, &ev, &e), EW_ESTATE); /* not started */
    assert_int_equal(ew_manager_start(m), EW_OK);
    assert_int_equal(ew_manager_start(m), EW_ESTATE);
    assert_int_equal(ew_send(m, &ev, &e), EW_OK); /* nobody listens: fine */
    assert_int_equal(ew_manager_stop(m, 1000), EW_OK);
    assert_int_equal(ew_manager_stop(m, 1000), EW_OK); /* idempotent */
    assert_int_equal(ew_send(m, &ev, &e), EW_ECLOSED);
    assert_int_equal(ew_listen(m, &(ew_listener_desc){.event = &ev, .name = "L"},
                               tally_listener, NULL),
                     EW_ECLOSED);
    ew_manager_free(m);
    ew_manager_free(NULL);
}

static void default_server_name_is_host_pid(void **state)
{
    (void)state;
    ew_manager *m;
    assert_int_equal(ew_manager_new(&m, "local://", NULL), EW_OK);
    const char *s = ew_manager_server_name(m);
    char pid[32];
    snprintf(pid, sizeof pid, "-%d", (int)getpid());
    assert_non_null(strstr(s, pid));
    assert_null(strchr(s, '.'));
    char err[256];
    assert_int_equal(ewi_check_server_name(s, err, sizeof err), EW_OK);
    ew_manager_free(m);
}

static void registration_errors_are_clear(void **state)
{
    (void)state;
    EV(ev, "Reg", false);
    ew_manager *m = mgr_new("local://reg", "s1");
    tally t;
    tally_init(&t, 1);
    ew_listener_desc d = {.event = &ev, .name = "L"};
    assert_int_equal(ew_listen(m, &d, tally_listener, tref(&t, "a")), EW_OK);
    assert_int_equal(ew_listen(m, &d, tally_listener, tref(&t, "a")), EW_ECONFLICT);
    d.name = "bad.name";
    assert_int_equal(ew_listen(m, &d, tally_listener, NULL), EW_EINVAL);
    d.name = "";
    assert_int_equal(ew_listen(m, &d, tally_listener, NULL), EW_EINVAL);
    d.name = "ok";
    assert_int_equal(ew_listen(m, &d, NULL, NULL), EW_EINVAL);
    /* The same event name with another durability is a conflict. */
    ew_event_desc other = ev;
    other.durable = true;
    assert_int_equal(ew_listen(m, &(ew_listener_desc){.event = &other, .name = "X"},
                               tally_listener, NULL),
                     EW_ECONFLICT);
    ew_event_desc badname = {.type = &conf_event_type, .name = "a/b"};
    assert_int_equal(ew_listen(m, &(ew_listener_desc){.event = &badname, .name = "X"},
                               tally_listener, NULL),
                     EW_EINVAL);
    char q[EW_MAX_QUEUE_NAME];
    assert_int_equal(ew_queue_name(m, &(ew_listener_desc){.event = &ev, .name = "L"}, q,
                                   sizeof q),
                     EW_OK);
    char want[EW_MAX_QUEUE_NAME];
    snprintf(want, sizeof want, "%s::L", ev.name);
    assert_string_equal(q, want);
    assert_int_equal(ew_queue_name(m, &(ew_listener_desc){.event = &ev, .name = "L"}, q, 4),
                     EW_EINVAL);
    ew_manager_free(m);
    tally_free(&t);
}

/* ---- pipelines ---------------------------------------------------------- */

static char order_log[256];
static pthread_mutex_t order_mu = PTHREAD_MUTEX_INITIALIZER;

static void logp(const char *s)
{
    pthread_mutex_lock(&order_mu);
    strncat(order_log, s, sizeof order_log - strlen(order_log) - 1);
    pthread_mutex_unlock(&order_mu);
}

static void reset_log(void)
{
    pthread_mutex_lock(&order_mu);
    order_log[0] = '\0';
    pthread_mutex_unlock(&order_mu);
}

static size_t log_len(void)
{
    pthread_mutex_lock(&order_mu);
    size_t n = strlen(order_log);
    pthread_mutex_unlock(&order_mu);
    return n;
}

/* The after hooks run once the listener returned: wait for their entries. */
static void wait_log(const char *want)
{
    WAIT_FOR(log_len() >= strlen(want), 5000, "hooks logged %zu of the %zu characters of %s",
             log_len(), strlen(want), want);
}

static void check_log(const char *want)
{
    pthread_mutex_lock(&order_mu);
    char got[sizeof order_log];
    strcpy(got, order_log);
    pthread_mutex_unlock(&order_mu);
    assert_string_equal(got, want);
}

static ew_err p_send(void *user, ew_envelope *env, const ew_event_desc *ev)
{
    (void)env;
    (void)ev;
    char s[8];
    snprintf(s, sizeof s, "S%s", (char *)user);
    logp(s);
    return strcmp(user, "X") == 0 ? EW_EREFUSED : EW_OK;
}

static ew_err p_handle(void *user, const ew_envelope *env, const ew_listener_desc *l)
{
    (void)env;
    (void)l;
    char s[8];
    snprintf(s, sizeof s, "H%s", (char *)user);
    logp(s);
    return strcmp(user, "R") == 0 ? EW_EREFUSED : EW_OK;
}

static void p_after(void *user, const ew_envelope *env, const ew_listener_desc *l, ew_err rc)
{
    (void)env;
    (void)l;
    char s[8];
    snprintf(s, sizeof s, "A%s%d", (char *)user, rc == EW_OK);
    logp(s);
}

static ew_err log_listener(ew_delivery *d, const void *event, void *user)
{
    (void)d;
    (void)event;
    logp("L");
    return tally_listener(d, event, user);
}

static void pipelines_run_in_order_and_can_refuse(void **state)
{
    (void)state;
    EV(ev, "Pipes", false);
    ew_manager *m = mgr_new("local://pipes", "s1");
    ew_pipeline p = {.name = "p", .send = p_send, .handle = p_handle, .after = p_after};
    assert_int_equal(ew_add_pipeline(m, &p, (void *)(uintptr_t)"1"), EW_OK);
    assert_int_equal(ew_add_pipeline(m, &p, (void *)(uintptr_t)"2"), EW_OK);
    tally t;
    tally_init(&t, 4);
    assert_int_equal(ew_listen(m, &(ew_listener_desc){.event = &ev, .name = "L"},
                               log_listener, tref(&t, "a")),
                     EW_OK);
    assert_int_equal(ew_manager_start(m), EW_OK);
    reset_log();
    assert_int_equal(ew_send(m, &ev, &(conf_event){0, "x"}), EW_OK);
    assert_true(tally_wait_ids(&t, 0, 1, 5000));
    wait_log("S1S2H1H2LA21A11");
    /* Registration order on send and on handle; after in reverse. */
    check_log("S1S2H1H2LA21A11");

    /* A refusing send fails the send with its error and sends nothing. */
    assert_int_equal(ew_add_pipeline(m, &p, (void *)(uintptr_t)"X"), EW_OK);
    reset_log();
    assert_int_equal(ew_send(m, &ev, &(conf_event){1, "x"}), EW_EREFUSED);
    check_log("S1S2SX");
    ew_manager_free(m);

    /* A refusing handle dead-letters at once, listener not run. */
    ew_manager *m2 = mgr_new("local://pipes2", "s1");
    assert_int_equal(ew_add_pipeline(m2, &p, (void *)(uintptr_t)"1"), EW_OK);
    assert_int_equal(ew_add_pipeline(m2, &p, (void *)(uintptr_t)"R"), EW_OK);
    assert_int_equal(ew_listen(m2, &(ew_listener_desc){.event = &ev, .name = "L"},
                               log_listener, tref(&t, "a")),
                     EW_OK);
    assert_int_equal(ew_manager_start(m2), EW_OK);
    reset_log();
    assert_int_equal(ew_send(m2, &ev, &(conf_event){2, "x"}), EW_OK);
    dlq_box box = {0};
    size_t got = 0;
    ew_dead_letter_options dl = {.event = &ev, .listener = "L", .max = 1,
                                 .timeout_ms = 5000, .fn = dlq_collect, .user = &box};
    assert_int_equal(ew_dead_letters(m2, &dl, &got), EW_OK);
    assert_int_equal(got, 1);
    assert_string_equal(box.reason[0], "handle-refused");
    assert_non_null(strstr(box.error[0], "pipeline p refused"));
    check_log("S1SRH1HRAR0A10");
    assert_int_equal(t.seen[2], 0);
    ew_manager_free(m2);
    tally_free(&t);
}

/* ---- error handler and log sink ------------------------------------------ */

typedef struct {
    pthread_mutex_t mu;
    int count;
    char queue[EW_MAX_QUEUE_NAME];
    ew_err code;
    char logs[4096];
} sink;

static void on_error(void *user, const ew_error_info *info)
{
    sink *s = user;
    pthread_mutex_lock(&s->mu);
    s->count++;
    s->code = info->code;
    snprintf(s->queue, sizeof s->queue, "%s", info->queue ? info->queue : "");
    pthread_mutex_unlock(&s->mu);
}

static void on_log(void *user, ew_log_level level, const char *msg)
{
    sink *s = user;
    (void)level;
    pthread_mutex_lock(&s->mu);
    strncat(s->logs, msg, sizeof s->logs - strlen(s->logs) - 2);
    strcat(s->logs, "\n");
    pthread_mutex_unlock(&s->mu);
}

static void listener_failures_reach_the_handler(void **state)
{
    (void)state;
    EV(ev, "Errs", false);
    sink s = {.mu = PTHREAD_MUTEX_INITIALIZER};
    ew_options o = {.on_error = on_error, .error_user = &s, .log = on_log, .log_user = &s,
                    .log_level = EW_LOG_DEBUG};
    ew_manager *m = mgr_new_opts("local://errs", "s1", &o);
    tally t;
    tally_init(&t, 1);
    t.fail_always = 0;
    assert_int_equal(ew_listen(m, &(ew_listener_desc){.event = &ev, .name = "L",
                                                      .per_process = true,
                                                      .retry = {.attempts = 2,
                                                                .backoff_ms = 5}},
                               tally_listener, tref(&t, "a")),
                     EW_OK);
    assert_int_equal(ew_manager_start(m), EW_OK);
    assert_int_equal(ew_send(m, &ev, &(conf_event){0, "x"}), EW_OK);
    dlq_box box = {0};
    size_t got = 0;
    ew_dead_letter_options dl = {.event = &ev, .listener = "L", .max = 1,
                                 .timeout_ms = 5000, .fn = dlq_collect, .user = &box};
    assert_int_equal(ew_dead_letters(m, &dl, &got), EW_OK);
    assert_int_equal(got, 1);
    char q[EW_MAX_QUEUE_NAME];
    snprintf(q, sizeof q, "%s::L-s1", ev.name);
    pthread_mutex_lock(&s.mu);
    assert_true(s.count >= 2); /* attempt 1 failed, then the dead letter */
    assert_string_equal(s.queue, q);
    assert_non_null(strstr(s.logs, q));
    pthread_mutex_unlock(&s.mu);
    assert_string_equal(box.queue[0], q);
    assert_string_equal(box.attempts[0], "2");
    ew_manager_free(m);
    tally_free(&t);
}

/* ---- bounded queues ------------------------------------------------------ */

static void full_queue_fails_the_send_after_the_timeout(void **state)
{
    (void)state;
    EV(ev, "Full", false);
    ew_options o = {.send_timeout_ms = 200, .log_level = EW_LOG_ERROR + 0};
    ew_manager *m = mgr_new_opts("local://full?capacity=5", "s1", &o);
    tally t;
    tally_init(&t, 10);
    tally_slow(&t, 5000);
    assert_int_equal(ew_listen(m, &(ew_listener_desc){.event = &ev, .name = "Slow",
                                                      .prefetch = 1},
                               tally_listener, tref(&t, "a")),
                     EW_OK);
    assert_int_equal(ew_manager_start(m), EW_OK);
    for (int64_t i = 0; i < 5; i++)
        assert_int_equal(ew_send(m, &ev, &(conf_event){i, "x"}), EW_OK);
    int64_t t0 = ewi_now_ms();
    assert_int_equal(ew_send(m, &ev, &(conf_event){5, "x"}), EW_ETIMEDOUT);
    assert_true(ewi_now_ms() - t0 >= 190);
    tally_slow(&t, 0);
    ew_manager_free(m);
    tally_free(&t);
}

/* ---- credentials from the environment ---------------------------------- */

static void broker_credentials_may_come_from_the_environment(void **state)
{
    (void)state;
    setenv("EW_USER", "env-user", 1);
    setenv("EW_PASSWORD", "env-pass", 1);
    ew_manager *m;
    /* local:// takes no credentials: the environment does not apply. */
    assert_int_equal(ew_manager_new(&m, "local://env", NULL), EW_OK);
    assert_null(m->url.user);
    ew_manager_free(m);
#ifdef EW_HAVE_RABBITMQ
    assert_int_equal(ew_manager_new(&m, "rabbitmq://127.0.0.1:1/", NULL), EW_OK);
    assert_string_equal(m->url.user, "env-user");
    assert_string_equal(m->url.password, "env-pass");
    ew_manager_free(m);
    /* The URL wins over the environment. */
    assert_int_equal(ew_manager_new(&m, "rabbitmq://u:p@127.0.0.1:1/", NULL), EW_OK);
    assert_string_equal(m->url.user, "u");
    assert_string_equal(m->url.password, "p");
    ew_manager_free(m);
#endif
    unsetenv("EW_USER");
    unsetenv("EW_PASSWORD");
}

/* ---- thread scheduling from the options and the environment --------------- */

/* The conformance suite checks the threads themselves on every transport;
 * here: which policy each setting asks for, and a wrong value. */
static void thread_policy_follows_options_then_environment(void **state)
{
    (void)state;
    ew_manager *m;
    unsetenv("EW_THREADS");
    assert_int_equal(ew_manager_new(&m, "local://sched", NULL), EW_OK);
    assert_true(m->cfg.batch_threads);
    ew_manager_free(m);
    setenv("EW_THREADS", "inherit", 1);
    assert_int_equal(ew_manager_new(&m, "local://sched", NULL), EW_OK);
    assert_false(m->cfg.batch_threads);
    ew_manager_free(m);
    /* An explicit option wins over the environment. */
    ew_options o = {.threads = EW_THREADS_BATCH};
    assert_int_equal(ew_manager_new(&m, "local://sched", &o), EW_OK);
    assert_true(m->cfg.batch_threads);
    ew_manager_free(m);
    setenv("EW_THREADS", "batch", 1);
    o.threads = EW_THREADS_INHERIT;
    assert_int_equal(ew_manager_new(&m, "local://sched", &o), EW_OK);
    assert_false(m->cfg.batch_threads);
    ew_manager_free(m);
    /* A value that is neither: the default, and a warning says so. */
    setenv("EW_THREADS", "fifo", 1);
    capture c;
    capture_init(&c);
    ew_options lo = {.log = capture_log, .log_user = &c};
    assert_int_equal(ew_manager_new(&m, "local://sched", &lo), EW_OK);
    assert_true(m->cfg.batch_threads);
    ew_manager_free(m);
    assert_true(capture_has(&c, "EW_THREADS=fifo is neither batch nor inherit"));
    unsetenv("EW_THREADS");
    o.threads = (ew_threads)7;
    assert_int_equal(ew_manager_new(&m, "local://sched", &o), EW_EINVAL);
    assert_non_null(strstr(ew_last_error(), "ew_options.threads is 7"));
}

/* ---- limits on receive ------------------------------------------------------ */

static void limits_apply_to_received_messages(void **state)
{
    (void)state;
    EV(ev, "Limits", false);
    ew_options o = {.max_body = 64, .max_headers = 6, .max_header_len = 32};
    ew_manager *m = mgr_new_opts("local://limits", "s1", &o);
    tally t;
    tally_init(&t, 1);
    listen_tally(m, &ev, "L", false, 1, &t);
    assert_int_equal(ew_manager_start(m), EW_OK);
    /* A sender with other limits (a foreign producer) can put these on the
     * broker; the receiving side refuses them into dead letters. */
    char big[100];
    memset(big, 'x', sizeof big);
    publish_raw(m, ev.name, EW_CONTENT_TYPE_MSGPACK, big, sizeof big);
    ew_envelope *env = ewi_envelope_new();
    ewi_envelope_set_content_type(env, EW_CONTENT_TYPE_MSGPACK);
    ewi_envelope_put(env, "k", 1, big, 40);
    ewi_pub p = {.dest = EWI_DEST_EVENT, .event = ev.name, .env = env,
                 .deadline_ms = ewi_now_ms() + 5000};
    assert_int_equal(ewi_publish_sync(m, &p), EW_OK);
    ewi_envelope_unref(env); /* published envelopes are read-only: a new one */
    env = ewi_envelope_new();
    ewi_envelope_set_content_type(env, EW_CONTENT_TYPE_MSGPACK);
    p.env = env;
    for (int i = 0; i < 8; i++) {
        char k[8];
        snprintf(k, sizeof k, "h%d", i);
        ewi_envelope_put(env, k, strlen(k), "v", 1);
    }
    ewi_envelope_put(env, "k", 1, "short", 5);
    assert_int_equal(ewi_publish_sync(m, &p), EW_OK);
    ewi_envelope_unref(env);
    dlq_box box = {0};
    size_t got = 0, total = 0;
    ew_dead_letter_options dl = {.event = &ev, .listener = "L", .max = 10,
                                 .timeout_ms = 5000, .fn = dlq_collect, .user = &box};
    while (total < 3 && ew_dead_letters(m, &dl, &got) == EW_OK && got > 0)
        total += got;
    assert_int_equal(total, 3);
    for (size_t i = 0; i < 3; i++)
        assert_string_equal(box.reason[i], "too-big");
    assert_non_null(strstr(box.error[0], "body of 100 bytes"));
    assert_non_null(strstr(box.error[1], "header 'k'"));
    assert_non_null(strstr(box.error[2], "headers, over the limit 6"));
    /* Sends obey the same limits. */
    assert_int_equal(ew_send(m, &ev, &(conf_event){1, "0123456789012345678901234567890123456789"
                                                      "0123456789012345678901234567890"}),
                     EW_ETOOBIG);
    ew_manager_free(m);
    tally_free(&t);
}

/* ---- messages given back at stop ------------------------------------------ */

static void messages_given_back_keep_order_and_run_again(void **state)
{
    (void)state;
    EV(ev, "GiveBack", true);
    enum { N = 30 };
    tally t;
    tally_init(&t, N);
    tally_slow(&t, 20);
    ew_manager *keeper = mgr_new("local://giveback", "keeper");
    assert_int_equal(ew_manager_start(keeper), EW_OK);
    /* attempts = 1: a message handed back unhandled must still run. */
    ew_listener_desc d = {.event = &ev, .name = "Seq", .prefetch = 10,
                          .retry = {.attempts = 1}};
    ew_manager *a = mgr_new("local://giveback", "a");
    assert_int_equal(ew_listen(a, &d, tally_listener, tref(&t, "a")), EW_OK);
    assert_int_equal(ew_manager_start(a), EW_OK);
    send_range(keeper, &ev, 0, N);
    assert_true(tally_wait_count(&t, 3, 10000));
    assert_int_equal(ew_manager_stop(a, 5000), EW_OK);
    ew_manager_free(a);
    tally_slow(&t, 0);
    ew_manager *b = mgr_new("local://giveback", "b");
    assert_int_equal(ew_listen(b, &d, tally_listener, tref(&t, "b")), EW_OK);
    assert_int_equal(ew_manager_start(b), EW_OK);
    assert_true(tally_wait_all(&t, 10000));
    assert_int_equal(t.out_of_order, 0);
    dlq_box box = {0};
    size_t got = 9;
    ew_dead_letter_options dl = {.event = &ev, .listener = "Seq", .max = 10,
                                 .timeout_ms = 100, .fn = dlq_collect, .user = &box};
    assert_int_equal(ew_dead_letters(b, &dl, &got), EW_OK);
    assert_int_equal(got, 0);
    ew_manager_free(b);
    ew_manager_free(keeper);
    tally_free(&t);
}

/* ---- a dead-letter queue that refuses ------------------------------------- */

static void full_dead_letter_queue_is_retried_without_a_loop(void **state)
{
    (void)state;
    EV(ev, "DlqFull", false);
    capture cap;
    capture_init(&cap);
    ew_options o = {.send_timeout_ms = 100, .on_error = capture_error, .error_user = &cap};
    ew_manager *m = mgr_new_opts("local://dlqfull?capacity=2", "s1", &o);
    tally t;
    tally_init(&t, 3);
    t.fail_always = 2;
    ew_listener_desc d = {.event = &ev, .name = "L", .retry = {.attempts = 1}};
    assert_int_equal(ew_listen(m, &d, tally_listener, tref(&t, "a")), EW_OK);
    assert_int_equal(ew_manager_start(m), EW_OK);
    /* Fill the dead-letter queue (capacity 2) with two poison messages;
     * each is on it once the listener is idle again (a local send hands
     * the message to the listener before it returns). */
    pthread_mutex_lock(&t.mu);
    t.fail_always = 0;
    pthread_mutex_unlock(&t.mu);
    assert_int_equal(ew_send(m, &ev, &(conf_event){0, "x"}), EW_OK);
    WAIT_FOR(manager_idle(m), 5000, "the first poison message was not dead-lettered");
    publish_raw(m, ev.name, EW_CONTENT_TYPE_MSGPACK, "\xc1", 1);
    WAIT_FOR(manager_idle(m), 5000, "the undecodable message was not dead-lettered");
    /* The next dead letter finds the queue full: retried, not looped. */
    pthread_mutex_lock(&t.mu);
    t.fail_always = 2;
    pthread_mutex_unlock(&t.mu);
    assert_int_equal(ew_send(m, &ev, &(conf_event){2, "x"}), EW_OK);
    assert_true(capture_wait_for(&cap, "failed (try 1)", 10000));
    pthread_mutex_lock(&t.mu);
    assert_int_equal(t.attempts[2], 1); /* the listener ran once only */
    pthread_mutex_unlock(&t.mu);
    dlq_box box = {0};
    size_t got = 0, total = 0;
    ew_dead_letter_options dl = {.event = &ev, .listener = "L", .max = 1,
                                 .timeout_ms = 5000, .fn = dlq_collect, .user = &box};
    while (total < 3 && ew_dead_letters(m, &dl, &got) == EW_OK && got > 0)
        total += got;
    assert_int_equal(total, 3); /* room made: the third arrived */
    assert_int_equal(box.ids[2], 2);
    pthread_mutex_lock(&t.mu);
    assert_int_equal(t.attempts[2], 1);
    pthread_mutex_unlock(&t.mu);
    ew_manager_free(m);
    tally_free(&t);
}

/* ---- stop is bounded ----------------------------------------------------- */

static void stop_reports_handlers_past_the_bound(void **state)
{
    (void)state;
    EV(ev, "Bound", false);
    ew_manager *m = mgr_new("local://bound", "s1");
    tally t;
    tally_init(&t, 1);
    tally_slow(&t, 3000);
    listen_tally(m, &ev, "L", false, 1, &t);
    assert_int_equal(ew_manager_start(m), EW_OK);
    assert_int_equal(ew_send(m, &ev, &(conf_event){0, "x"}), EW_OK);
    assert_true(tally_wait_count(&t, 1, 5000));
    int64_t t0 = ewi_now_ms();
    assert_int_equal(ew_manager_stop(m, 100), EW_ETIMEDOUT);
    /* Well before the handler's 3 s are over. */
    int64_t took = ewi_now_ms() - t0;
    if (took >= 2000)
        fail_msg("stop(100) returned after %lld ms", (long long)took);
    ew_manager_free(m); /* waits for the handler */
    assert_int_equal(t.finished, 1);
    tally_free(&t);
}

/* ---- concurrency ----------------------------------------------------------- */

/* A listener of concurrency N runs N handlers at once whenever N messages
 * wait, also right after many quick ones: each handler of a round returns
 * only once all N of its round are inside. */
enum { GATE_N = 4, GATE_ROUNDS = 20, GATE_QUICK = 50 };

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int arrived, finished, quick;
    bool timed_out;
} gate;

static ew_err gate_listener(ew_delivery *d, const void *event, void *user)
{
    (void)d;
    gate *g = user;
    const conf_event *e = event;
    pthread_mutex_lock(&g->mu);
    if (e->id < 0) { /* a quick one */
        g->quick++;
        pthread_mutex_unlock(&g->mu);
        return EW_OK;
    }
    int all_in = (int)(e->id / GATE_N + 1) * GATE_N;
    g->arrived++;
    pthread_cond_broadcast(&g->cv);
    int64_t deadline = ewi_now_ms() + 10000;
    while (g->arrived < all_in && !g->timed_out) {
        if (ewi_left_ms(deadline) == 0) {
            g->timed_out = true;
            break;
        }
        ewi_cond_wait_until(&g->cv, &g->mu, deadline);
    }
    g->finished++;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
    return EW_OK;
}

static void concurrency_runs_that_many_handlers_at_once(void **state)
{
    (void)state;
    EV(ev, "Gate", false);
    gate g = {.mu = PTHREAD_MUTEX_INITIALIZER};
    ewi_cond_init_mono(&g.cv);
    ew_manager *m = mgr_new("local://gate", "s1");
    ew_listener_desc d = {.event = &ev, .name = "Four", .concurrency = GATE_N};
    assert_int_equal(ew_listen(m, &d, gate_listener, &g), EW_OK);
    assert_int_equal(ew_manager_start(m), EW_OK);
    for (int r = 0; r < GATE_ROUNDS; r++) {
        /* Quick handlers first, so that the workers take the listener for
         * a quick one; then a burst that blocks until all are in. */
        for (int i = 0; i < GATE_QUICK; i++)
            assert_int_equal(ew_send(m, &ev, &(conf_event){-1 - i, "q"}), EW_OK);
        for (int i = 0; i < GATE_N; i++)
            assert_int_equal(ew_send(m, &ev, &(conf_event){r * GATE_N + i, "gate"}), EW_OK);
        pthread_mutex_lock(&g.mu);
        while (g.finished < (r + 1) * GATE_N)
            pthread_cond_wait(&g.cv, &g.mu);
        bool timed_out = g.timed_out;
        int arrived = g.arrived;
        pthread_mutex_unlock(&g.mu);
        if (timed_out)
            fail_msg("round %d: concurrency %d left a waiting message alone for 10 s "
                     "while handlers were blocked (%d of %d in)",
                     r, GATE_N, arrived, (r + 1) * GATE_N);
    }
    assert_int_equal(g.quick, GATE_ROUNDS * GATE_QUICK);
    ew_manager_free(m);
    pthread_cond_destroy(&g.cv);
}

/* On local:// a graceful stop first lets the listener handle what is
 * queued: the README's example depends on it. What its timeout leaves is
 * reported (log and error handler) with its number, and stays on the queue
 * for the next manager while the broker lives. */
static void local_stop_handles_the_queue_and_reports_the_rest(void **state)
{
    (void)state;
    EV(ev, "StopQueue", true);
    enum { N = 20 };
    tally t;
    tally_init(&t, N);
    ew_manager *m = mgr_new("local://stopqueue", "s1");
    listen_tally(m, &ev, "L", false, 1, &t);
    assert_int_equal(ew_manager_start(m), EW_OK);
    send_range(m, &ev, 0, N);
    assert_int_equal(ew_manager_stop(m, 30000), EW_OK);
    assert_int_equal(tally_total(&t), N); /* all of it, before stop returned */
    ew_manager_free(m);
    tally_free(&t);

    /* A timeout too short for the queue: the rest is reported, then handled
     * by the next manager on the same broker (kept alive by a keeper). */
    tally_init(&t, N);
    tally_slow(&t, 100);
    capture cap;
    capture_init(&cap);
    ew_options o = {.on_error = capture_error, .error_user = &cap};
    ew_manager *keeper = mgr_new("local://stopqueue2", "keeper");
    assert_int_equal(ew_manager_start(keeper), EW_OK);
    m = mgr_new_opts("local://stopqueue2", "s1", &o);
    listen_tally(m, &ev, "L", false, 1, &t);
    assert_int_equal(ew_manager_start(m), EW_OK);
    send_range(keeper, &ev, 0, N);
    assert_true(tally_wait_count(&t, 1, 5000));
    ew_manager_stop(m, 300);
    size_t handled = tally_total(&t);
    capture_print(&cap);
    if (!capture_has(&cap, "queued message(s) not handled within 300 ms"))
        fail_msg("the stop did not report what it left on the queue");
    /* The number reported is what the next manager gets. */
    unsigned left = 0;
    const char *at = strstr(cap.text, "stop: ");
    assert_non_null(at);
    assert_int_equal(sscanf(at, "stop: %u queued", &left), 1);
    ew_manager_free(m);
    assert_true(left > 0 && handled + left <= N);
    ew_manager *m2 = mgr_new("local://stopqueue2", "s2");
    tally_slow(&t, 0);
    listen_tally(m2, &ev, "L", false, 1, &t);
    assert_int_equal(ew_manager_start(m2), EW_OK);
    assert_true(tally_wait_all(&t, 10000));
    assert_int_equal(tally_dups(&t), 0);
    ew_manager_free(m2);
    ew_manager_free(keeper);
    tally_free(&t);
}

int main(void)
{
    support_init("local://");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(lifecycle_states),
        cmocka_unit_test(default_server_name_is_host_pid),
        cmocka_unit_test(registration_errors_are_clear),
        cmocka_unit_test(pipelines_run_in_order_and_can_refuse),
        cmocka_unit_test(listener_failures_reach_the_handler),
        cmocka_unit_test(full_queue_fails_the_send_after_the_timeout),
        cmocka_unit_test(broker_credentials_may_come_from_the_environment),
        cmocka_unit_test(thread_policy_follows_options_then_environment),
        cmocka_unit_test(limits_apply_to_received_messages),
        cmocka_unit_test(messages_given_back_keep_order_and_run_again),
        cmocka_unit_test(full_dead_letter_queue_is_retried_without_a_loop),
        cmocka_unit_test(stop_reports_handlers_past_the_bound),
        cmocka_unit_test(local_stop_handles_the_queue_and_reports_the_rest),
        cmocka_unit_test(concurrency_runs_that_many_handlers_at_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
