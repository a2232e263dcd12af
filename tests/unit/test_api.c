/* The public API's contracts on local://: what callbacks return, and what a
 * failing call tells its caller. */
#include "support.h"

/* ---- a dead-letter reader that refuses keeps the message ---------------- */

typedef struct refuser {
    int calls;
    ew_err answer;
} refuser;

static ew_err refuse(void *user, const ew_envelope *env)
{
    refuser *r = user;
    (void)env;
    r->calls++;
    return r->answer;
}

static ew_err always_fail(ew_delivery *d, const void *event, void *user)
{
    (void)d, (void)event, (void)user;
    return EW_ENORETRY;
}

static void refused_dead_letter_stays_on_the_queue(void **state)
{
    (void)state;
    support_init("local://");
    EV(ev, "Refuse", false);
    ew_manager *m = mgr_new("local://refuse", "s1");
    assert_int_equal(ew_listen(m, &(ew_listener_desc){.event = &ev, .name = "L"},
                               always_fail, NULL),
                     EW_OK);
    assert_int_equal(ew_manager_start(m), EW_OK);
    for (int i = 0; i < 3; i++)
        assert_int_equal(ew_send(m, &ev, &(conf_event){i, "x"}), EW_OK);
    /* Wait for the three dead letters: read them, refusing each. */
    refuser r = {0, EW_EBROKER};
    size_t got = 99;
    ew_dead_letter_options dl = {.event = &ev, .listener = "L", .max = 1,
                                 .timeout_ms = 10000, .fn = refuse, .user = &r};
    assert_int_equal(ew_dead_letters(m, &dl, &got), EW_EBROKER);
    assert_int_equal(r.calls, 1);
    assert_int_equal(got, 0);
    /* Every one is still there: the refused one went back to the end. */
    dlq_box box = {0};
    size_t total = 0;
    while (total < 3) {
        got = 0;
        ew_dead_letter_options all = {.event = &ev, .listener = "L", .max = 10,
                                      .timeout_ms = 10000, .fn = dlq_collect, .user = &box};
        ew_err rc = ew_dead_letters(m, &all, &got);
        if (rc != EW_OK || got == 0)
            fail_msg("dead letters after %zu of 3: %s (%zu taken)", total,
                     ew_strerror(rc), got);
        total += got;
    }
    assert_int_equal(total, 3);
    bool seen[3] = {false, false, false};
    for (size_t i = 0; i < total; i++) {
        assert_true(box.ids[i] >= 0 && box.ids[i] < 3);
        seen[box.ids[i]] = true;
        assert_string_equal(box.reason[i], "listener-failed");
    }
    assert_true(seen[0] && seen[1] && seen[2]);
    /* Nothing more. */
    got = 0;
    ew_dead_letter_options rest = {.event = &ev, .listener = "L", .max = 10,
                                   .timeout_ms = 50, .fn = dlq_collect, .user = &box};
    assert_int_equal(ew_dead_letters(m, &rest, &got), EW_OK);
    assert_int_equal(got, 0);
    ew_manager_free(m);
}

/* ---- ew_last_error ------------------------------------------------------ */

static void assert_last_error_has(const char *part)
{
    const char *t = ew_last_error();
    assert_non_null(t);
    if (!strstr(t, part))
        fail_msg("ew_last_error() is \"%s\", expected it to contain \"%s\"", t, part);
}

/* Logs go nowhere: the caller still gets the reason. */
static void quiet_log(void *user, ew_log_level level, const char *msg)
{
    (void)user, (void)level, (void)msg;
}

static void manager_new_says_why(void **state)
{
    (void)state;
    ew_manager *m;
    ew_options quiet = {.log = quiet_log};
    assert_int_equal(ew_manager_new(&m, "nope://x", &quiet), EW_ENOTFOUND);
    assert_last_error_has("no transport for scheme 'nope'");
    assert_int_equal(ew_manager_new(&m, "local://x?capacity=abc", &quiet), EW_EINVAL);
    assert_last_error_has("capacity");
    assert_int_equal(ew_manager_new(&m, "local://x?prefetch=0", &quiet), EW_EINVAL);
    assert_last_error_has("prefetch must be 1..1000000");
    assert_int_equal(ew_manager_new(&m, "local://x",
                                    &(ew_options){.server_name = "bad.name",
                                                  .log = quiet_log}),
                     EW_EINVAL);
    assert_last_error_has("server name 'bad.name': character '.' at 3");
    /* Credentials never appear: the URL in the text is redacted. */
    assert_int_equal(ew_manager_new(&m, "rabbitmq://u:Pw-Secret@127.0.0.1:5672/?bogus=1",
                                    &quiet),
                     EW_EINVAL);
    assert_last_error_has("bogus");
    assert_null(strstr(ew_last_error(), "Pw-Secret"));
    assert_int_equal(ew_manager_new(NULL, NULL, NULL), EW_EINVAL);
    assert_last_error_has("ew_manager_new");
    /* A call that succeeds clears the text. */
    assert_int_equal(ew_manager_new(&m, "local://ok", &quiet), EW_OK);
    assert_string_equal(ew_last_error(), "");
    ew_manager_free(m);
}

static void listen_and_send_say_why(void **state)
{
    (void)state;
    support_init("local://");
    EV(ev, "Why", false);
    ew_options quiet = {.log = quiet_log, .server_name = "s1"};
    ew_manager *m;
    assert_int_equal(ew_manager_new(&m, "local://why", &quiet), EW_OK);
    tally t;
    tally_init(&t, 1);
    ew_listener_desc d = {.event = &ev, .name = "bad:name"};
    assert_int_equal(ew_listen(m, &d, tally_listener, tref(&t, "a")), EW_EINVAL);
    assert_last_error_has("listener name 'bad:name': character ':' at 3");
    d.name = "L";
    assert_int_equal(ew_listen(m, &d, tally_listener, tref(&t, "a")), EW_OK);
    assert_int_equal(ew_listen(m, &d, tally_listener, tref(&t, "a")), EW_ECONFLICT);
    assert_last_error_has("is already registered");
    ew_event_desc bad = {.type = &conf_event_type, .name = "two..dots"};
    assert_int_equal(ew_send(m, &bad, &(conf_event){1, "x"}), EW_ESTATE);
    assert_last_error_has("not started");
    assert_int_equal(ew_manager_start(m), EW_OK);
    assert_int_equal(ew_manager_start(m), EW_ESTATE);
    assert_last_error_has("started already");
    assert_int_equal(ew_send(m, &bad, &(conf_event){1, "x"}), EW_EINVAL);
    assert_last_error_has("a dot must stand between other characters");
    /* An encoding error names the field. */
    assert_int_equal(ew_send(m, &ev, &(conf_event){1, NULL}), EW_EENCODE);
    assert_last_error_has("conf_event.text");
    assert_int_equal(ew_send_to(m, &ev, "no/such", &(conf_event){1, "x"}), EW_EINVAL);
    assert_last_error_has("character '/'");
    assert_int_equal(ew_send(m, &ev, &(conf_event){1, "x"}), EW_OK);
    assert_string_equal(ew_last_error(), "");
    assert_int_equal(ew_manager_stop(m, 5000), EW_OK);
    assert_int_equal(ew_send(m, &ev, &(conf_event){1, "x"}), EW_ECLOSED);
    assert_last_error_has("stopping or stopped");
    ew_manager_free(m);
    tally_free(&t);
}

static ew_err refuse_send(void *user, ew_envelope *env, const ew_event_desc *ev)
{
    (void)user, (void)ev;
    return ew_envelope_set_header(env, "ew-mine", "x");
}

static void pipeline_refusal_and_headers_say_why(void **state)
{
    (void)state;
    support_init("local://");
    EV(ev, "Pipe", false);
    ew_options quiet = {.log = quiet_log, .server_name = "s1"};
    ew_manager *m;
    assert_int_equal(ew_manager_new(&m, "local://pipe", &quiet), EW_OK);
    assert_int_equal(ew_add_pipeline(m, &(ew_pipeline){.name = "stamp", .send = refuse_send},
                                     NULL),
                     EW_OK);
    assert_int_equal(ew_manager_start(m), EW_OK);
    assert_int_equal(ew_send(m, &ev, &(conf_event){1, "x"}), EW_EINVAL);
    assert_last_error_has("pipeline stamp refused");
    ew_manager_free(m);
}

static void codec_errors_say_why(void **state)
{
    (void)state;
    uint8_t *out = NULL;
    size_t len = 0;
    char err[128];
    assert_int_equal(ew_encode(&conf_event_type, EW_FORMAT_JSON, &(conf_event){1, NULL},
                               &out, &len, err, sizeof err),
                     EW_EENCODE);
    assert_string_equal(ew_last_error(), err);
    assert_last_error_has("conf_event.text");
    void *ev = NULL;
    assert_int_equal(ew_decode(&conf_event_type, EW_FORMAT_JSON, "{\"id\": \"no\"}", 12,
                               NULL, &ev, NULL, 0),
                     EW_EDECODE);
    assert_last_error_has("conf_event.id");
}

static void *other_thread(void *arg)
{
    snprintf(arg, 64, "[%s]", ew_last_error());
    return NULL;
}

static void last_error_is_per_thread(void **state)
{
    (void)state;
    ew_manager *m;
    assert_int_equal(ew_manager_new(&m, "nope://x", &(ew_options){.log = quiet_log}),
                     EW_ENOTFOUND);
    char seen[64] = "";
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, other_thread, seen), 0);
    pthread_join(th, NULL);
    assert_string_equal(seen, "[]");
    assert_last_error_has("nope");
}

/* ---- descriptor versions ------------------------------------------------ */

/* Every code has a text and its own symbolic name; other values have no
 * name. */
static void every_error_has_a_name(void **state)
{
    (void)state;
    assert_string_equal(ew_errname(EW_OK), "EW_OK");
    assert_string_equal(ew_errname(EW_EINDOUBT), "EW_EINDOUBT");
    for (int e = EW_OK; e <= EW_ETLS; e++) {
        const char *n = ew_errname((ew_err)e);
        if (!n || strncmp(n, "EW_", 3) != 0)
            fail_msg("code %d has no name", e);
        for (int f = EW_OK; f < e; f++)
            if (strcmp(n, ew_errname((ew_err)f)) == 0)
                fail_msg("codes %d and %d are both %s", f, e, n);
        assert_string_not_equal(ew_strerror((ew_err)e), "unknown error");
    }
    assert_null(ew_errname((ew_err)(EW_ETLS + 1)));
    assert_null(ew_errname((ew_err)-1));
}

static void unknown_descriptor_versions_are_refused(void **state)
{
    (void)state;
    support_init("local://");
    ew_manager *m;
    assert_int_equal(ew_manager_new(&m, "local://v", &(ew_options){.version = 1}),
                     EW_EINVAL);
    assert_last_error_has("ew_options.version is 1");
    assert_null(m);
    m = mgr_new("local://v", "s1");
    EV(ev, "Ver", false);
    ew_event_desc ev2 = ev;
    ev2.version = 2;
    assert_int_equal(ew_listen(m, &(ew_listener_desc){.event = &ev2, .name = "L"},
                               always_fail, NULL),
                     EW_EINVAL);
    assert_last_error_has("ew_event_desc.version is 2");
    assert_int_equal(ew_listen(m, &(ew_listener_desc){.version = 3, .event = &ev, .name = "L"},
                               always_fail, NULL),
                     EW_EINVAL);
    assert_last_error_has("ew_listener_desc.version is 3");
    assert_int_equal(ew_add_pipeline(m, &(ew_pipeline){.version = 4, .name = "p"}, NULL),
                     EW_EINVAL);
    assert_last_error_has("ew_pipeline.version is 4");
    assert_int_equal(ew_manager_start(m), EW_OK);
    assert_int_equal(ew_send(m, &ev2, &(conf_event){1, "x"}), EW_EINVAL);
    assert_last_error_has("ew_event_desc.version is 2");
    size_t got = 7;
    ew_dead_letter_options dl = {.version = 5, .event = &ev, .listener = "L", .fn = refuse};
    assert_int_equal(ew_dead_letters(m, &dl, &got), EW_EINVAL);
    assert_int_equal(got, 0);
    assert_last_error_has("ew_dead_letter_options.version is 5");
    /* Version 0 works, and a zero max takes one message at most. */
    dl.version = 0;
    assert_int_equal(ew_dead_letters(m, &dl, &got), EW_OK);
    assert_int_equal(got, 0);
    ew_manager_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(refused_dead_letter_stays_on_the_queue),
        cmocka_unit_test(manager_new_says_why),
        cmocka_unit_test(listen_and_send_say_why),
        cmocka_unit_test(pipeline_refusal_and_headers_say_why),
        cmocka_unit_test(codec_errors_say_why),
        cmocka_unit_test(last_error_is_per_thread),
        cmocka_unit_test(unknown_descriptor_versions_are_refused),
        cmocka_unit_test(every_error_has_a_name),
    };
    return cmocka_run_group_tests_name("api", tests, NULL, NULL);
}
