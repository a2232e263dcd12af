/* A failing ew_manager_start tells its caller why through ew_last_error(),
 * not only in the log, with a code of its own: a refused login is EW_EAUTH
 * and names the refusal, a certificate that does not verify is EW_ETLS and
 * names the verification. On every transport that runs against the local
 * RabbitMQ: rabbitmq://, stomp://?dialect=rabbitmq and
 * amqp://?dialect=rabbitmq, and their TLS schemes. The wrong password is
 * tried 20 times on each (5 on AMQP 1.0, where each refusal takes 3 s): EW_EAUTH every time, never a connection error,
 * and nothing left behind (LeakSanitizer, at exit).
 * usage: start_reason [CERT_DIR]   (default: $EW_BROKER_STATE/tls) */
#include "support.h"

#include <strings.h>

static char certs[512];

static void quiet_log(void *user, ew_log_level level, const char *msg)
{
    (void)user, (void)level, (void)msg;
}

/* Case-insensitive: whether text holds any of the words. */
static bool has_any(const char *text, const char *const *words)
{
    for (; *words; words++) {
        size_t n = strlen(*words);
        for (const char *p = text; *p; p++)
            if (strncasecmp(p, *words, n) == 0)
                return true;
    }
    return false;
}

/* Starts a manager on url (with a listener, so that something would be
 * declared) and returns the text the caller gets; *took_ms: how long the
 * start took. */
static ew_err start_fails(const char *url, int timeout_ms, char *why, size_t len,
                          int64_t *took_ms)
{
    support_init(url);
    EV(ev, "Why", false);
    ew_manager *m = NULL;
    ew_options o = {.server_name = "why1", .log = quiet_log, .start_timeout_ms = timeout_ms};
    ew_err rc = ew_manager_new(&m, url, &o);
    if (rc != EW_OK)
        fail_msg("ew_manager_new(%s): %s: %s", url, ew_strerror(rc), ew_last_error());
    tally t;
    tally_init(&t, 1);
    assert_int_equal(ew_listen(m, &(ew_listener_desc){.event = &ev, .name = "L"},
                               tally_listener, tref(&t, "a")),
                     EW_OK);
    int64_t t0 = ewi_now_ms();
    rc = ew_manager_start(m);
    *took_ms = ewi_now_ms() - t0;
    snprintf(why, len, "%s", ew_last_error());
    print_message("     %s -> %s after %lld ms: %s\n", url, ew_strerror(rc),
                  (long long)*took_ms, why);
    ew_manager_free(m);
    tally_free(&t);
    if (rc == EW_OK)
        fail_msg("start on %s succeeded", url);
    return rc;
}

typedef struct target {
    const char *name;
    const char *login_url;  /* a wrong password */
    const char *tls_url;    /* ends where the CA file's path goes */
} target;

static const target targets[] = {
    {"rabbitmq", "rabbitmq://guest:wrong-pw@127.0.0.1:5672/",
     "rabbitmqs://guest:guest@127.0.0.1:5671/?ca="},
#ifdef EW_HAVE_STOMP_TESTS
    {"stomp-rabbitmq", "stomp://guest:wrong-pw@127.0.0.1:61613/?dialect=rabbitmq",
     "stomp+ssl://guest:guest@127.0.0.1:61612/?dialect=rabbitmq&ca="},
#endif
#ifdef EW_HAVE_AMQP_TESTS
    /* localhost: the certificate's DNS name (its IP address is tested elsewhere). */
    {"amqp-rabbitmq", "amqp://guest:wrong-pw@127.0.0.1:5672/?dialect=rabbitmq",
     "amqps://guest:guest@localhost:5671/?dialect=rabbitmq&ca="},
#endif
};

static void run_target(void **state)
{
    const target *t = *state;
    char why[1024];

    ew_err rc;
    int64_t took;
    /* RabbitMQ answers a refused AMQP 1.0 login after 3 s on purpose (the
     * other protocols at once): the start timeout leaves room for it, and
     * there 5 tries take as long as 20 elsewhere. */
    int tries = strncmp(t->name, "amqp", 4) == 0 ? 5 : 20;
    for (int i = 0; i < tries; i++) {
        rc = start_fails(t->login_url, 10000, why, sizeof why, &took);
        if (rc != EW_EAUTH)
            fail_msg("%s: start %d with a wrong password: %s, not EW_EAUTH (%s)", t->name,
                     i + 1, ew_strerror(rc), why);
        if (took > 6000)
            fail_msg("%s: start %d with a wrong password took %lld ms: not at once",
                     t->name, i + 1, (long long)took);
        static const char *const login_words[] = {"refused", "denied", "login", "auth",
                                                  NULL};
        if (!has_any(why, login_words))
            fail_msg("%s: the reason for a wrong password does not name the refusal: \"%s\"",
                     t->name, why);
        if (strstr(why, "wrong-pw"))
            fail_msg("%s: the password is in the text: \"%s\"", t->name, why);
    }

    char url[1024];
    snprintf(url, sizeof url, "%s%s/wrong-ca.pem", t->tls_url, certs);
    rc = start_fails(url, 3000, why, sizeof why, &took);
    if (rc != EW_ETLS)
        fail_msg("%s: an untrusted certificate: %s, not EW_ETLS (%s)", t->name,
                 ew_strerror(rc), why);
    if (took > 2500)
        fail_msg("%s: the untrusted certificate took %lld ms: not at once", t->name,
                 (long long)took);
    static const char *const tls_words[] = {"verif", "certificate", NULL};
    if (!has_any(why, tls_words))
        fail_msg("%s: the reason for an untrusted certificate does not say so: \"%s\"",
                 t->name, why);
}

#ifdef EW_HAVE_AMQP_TESTS
/* A start timeout shorter than RabbitMQ's 3 s before it refuses an AMQP 1.0
 * login: the start gives up at its deadline with EW_ECONNECT and says that
 * the time ran out; proton's connection is freed (LeakSanitizer, at exit). */
static void amqp_start_timeout_before_the_refusal(void **state)
{
    (void)state;
    char why[1024];
    for (int i = 0; i < 3; i++) {
        int64_t took;
        ew_err rc = start_fails("amqp://guest:wrong-pw@127.0.0.1:5672/?dialect=rabbitmq",
                                1000, why, sizeof why, &took);
        if (rc != EW_ECONNECT && rc != EW_EAUTH)
            fail_msg("start %d: %s (%s)", i + 1, ew_strerror(rc), why);
        if (rc == EW_ECONNECT && !strstr(why, "start timeout"))
            fail_msg("start %d: the reason does not say the start timed out: \"%s\"", i + 1,
                     why);
    }
}
#endif

int main(int argc, char **argv)
{
    if (argc > 1) {
        snprintf(certs, sizeof certs, "%s", argv[1]);
    } else {
        const char *st = getenv("EW_BROKER_STATE");
        snprintf(certs, sizeof certs, "%s/tls", st && *st ? st : "/tmp/eventwire-brokers");
    }
    enum { N = sizeof targets / sizeof targets[0] };
    struct CMUnitTest tests[N + 1];
    for (size_t i = 0; i < N; i++)
        tests[i] = (struct CMUnitTest){.name = targets[i].name, .test_func = run_target,
                                       .initial_state = (void *)(uintptr_t)&targets[i]};
    size_t n = N;
#ifdef EW_HAVE_AMQP_TESTS
    tests[n++] = (struct CMUnitTest){.name = "amqp-rabbitmq start timeout before the refusal",
                                     .test_func = amqp_start_timeout_before_the_refusal};
#endif
    return _cmocka_run_group_tests("start_reason", tests, n, NULL, NULL);
}
