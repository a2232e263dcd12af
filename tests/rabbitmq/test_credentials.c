/* Credentials never appear in logs, error texts or the error handler.
 *
 * For every transport that runs here against a broker with users
 * (rabbitmq://, stomp://?dialect=rabbitmq, amqp://?dialect=rabbitmq) and for
 * stomp://?dialect=activemq (ActiveMQ here checks no credentials, but the
 * transport still sends a login and passcode), with a distinctive password
 * in the URL, this test provokes what makes eventwire talk: a working
 * session at trace level (connect, declare, send, receive), a connection
 * the broker closes under it (reconnect), a send to a listener that does
 * not exist, a wrong password, a closed port, an unknown URL option and,
 * over TLS, a certificate that does not verify. It captures every log line
 * (log_level EW_LOG_TRACE), every error-handler report (all its strings) and
 * everything the process writes to stderr meanwhile, and asserts that the
 * secret appears nowhere: not as sent, not URL-encoded, not decoded, not in
 * hex. Every secret starts with SECRET_MARK and the search is for that.
 *
 * A RabbitMQ user of this run, ew-sec-<pid>, with password SECRET_PW is
 * made (and removed again) through scripts/brokers/rabbitmq.sh ctl: runs
 * beside it (other checkouts on the same broker) have users of their own.
 * A missing broker fails.
 * usage: security_credentials RABBITMQ_SCRIPT [CERT_DIR]
 * ($EW_SEC_TARGET and $EW_SEC_SCENARIO narrow the run, see below) */
#include "rmq_test.h"

#include <fcntl.h>
#include <signal.h>
#include <strings.h>

#define SECRET_MARK "S3cr3t"
#define SECRET_HEX "533363723374" /* "S3cr3t" as hex digits */
#define SECRET_PW "S3cr3t-Pw-9f2a"
/* A wrong password, URL-encoded: it decodes to "S3cr3t/Wrong@Pw 9f2a". */
#define SECRET_WRONG_ENC "S3cr3t%2FWrong%40Pw%209f2a"
static char SEC_USER[32]; /* ew-sec-<pid> */

static const char *SCRIPT;
static char certs[512];

/* ---- everything eventwire says ------------------------------------------ */

typedef struct said {
    pthread_mutex_t mu;
    char *text;
    size_t len, cap;
    size_t lines;
} said;

static said heard = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void said_add(said *s, const char *what, const char *line)
{
    if (!line)
        return;
    pthread_mutex_lock(&s->mu);
    size_t need = strlen(what) + strlen(line) + 2;
    if (s->len + need + 1 > s->cap) {
        size_t cap = (s->cap ? s->cap * 2 : 1 << 16) + need;
        char *t = realloc(s->text, cap);
        if (!t) {
            pthread_mutex_unlock(&s->mu);
            abort();
        }
        s->text = t;
        s->cap = cap;
    }
    s->len += (size_t)sprintf(s->text + s->len, "%s%s\n", what, line);
    s->lines++;
    pthread_mutex_unlock(&s->mu);
}

static void log_sink(void *user, ew_log_level level, const char *msg)
{
    (void)level;
    said_add(user, "log: ", msg);
}

static void error_sink(void *user, const ew_error_info *info)
{
    said_add(user, "error: ", info->text ? info->text : "(no text)");
    said_add(user, "error.queue: ", info->queue);
    said_add(user, "error.event: ", info->event);
    said_add(user, "error.message_id: ", info->message_id);
}

/* stderr goes to a file while a scenario runs (a library printing on its
 * own would leak there). */
static int saved_stderr = -1;
static char errfile[64];

/* Puts stderr back if a failed assertion left it redirected, and shows
 * what was written there meanwhile (cmocka's own failure text). */
static void stderr_restore(void)
{
    if (saved_stderr < 0)
        return;
    fflush(stderr);
    dup2(saved_stderr, 2);
    close(saved_stderr);
    saved_stderr = -1;
    FILE *f = fopen(errfile, "r");
    if (f) {
        char line[4096];
        while (fgets(line, sizeof line, f))
            fputs(line, stderr);
        fclose(f);
    }
    unlink(errfile);
}

static void stderr_capture_begin(void)
{
    stderr_restore();
    snprintf(errfile, sizeof errfile, "/tmp/ew-sec-stderr-%d", (int)getpid());
    fflush(stderr);
    int fd = open(errfile, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    saved_stderr = dup(2);
    dup2(fd, 2);
    close(fd);
}

static void stderr_capture_end(void)
{
    fflush(stderr);
    dup2(saved_stderr, 2);
    close(saved_stderr);
    saved_stderr = -1;
    FILE *f = fopen(errfile, "r");
    assert_non_null(f);
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        said_add(&heard, "stderr: ", line);
    }
    fclose(f);
    unlink(errfile);
}

/* A start or send that never returns would hang the whole program: after
 * WATCHDOG_S seconds in one scenario, say which and fail. */
#define WATCHDOG_S 60
static char watchdog_text[256];

static void watchdog_fire(int sig)
{
    (void)sig;
    int fd = saved_stderr >= 0 ? saved_stderr : 2;
    ssize_t n = write(fd, watchdog_text, strlen(watchdog_text));
    (void)n;
    _exit(1);
}

/* Starts a scenario: empties what was heard, captures stderr. */
static void scenario_begin(const char *name)
{
    snprintf(watchdog_text, sizeof watchdog_text,
             "security_credentials: scenario '%s' still runs after %d s (a start or send "
             "that ignores its timeout): FAILED\n", name, WATCHDOG_S);
    signal(SIGALRM, watchdog_fire);
    alarm(WATCHDOG_S);
    pthread_mutex_lock(&heard.mu);
    heard.len = 0;
    heard.lines = 0;
    if (heard.text)
        heard.text[0] = 0;
    pthread_mutex_unlock(&heard.mu);
    print_message("---- %s\n", name);
    stderr_capture_begin();
}

/* Ends a scenario: the secret must appear nowhere in what was heard, and
 * eventwire must have said something (else the check proves nothing). */
static void scenario_end(const char *name)
{
    alarm(0);
    stderr_capture_end();
    pthread_mutex_lock(&heard.mu);
    const char *t = heard.text ? heard.text : "";
    size_t lines = heard.lines;
    bool leak = strcasestr(t, SECRET_MARK) || strcasestr(t, SECRET_HEX);
    if (leak) {
        /* print the lines that carry it */
        const char *p = t;
        while (*p) {
            const char *e = strchr(p, '\n');
            size_t n = e ? (size_t)(e - p) : strlen(p);
            char *l = strndup(p, n);
            if (l && (strcasestr(l, SECRET_MARK) || strcasestr(l, SECRET_HEX)))
                print_error("LEAK in %s: %s\n", name, l);
            free(l);
            p += n + (e ? 1 : 0);
        }
    }
    pthread_mutex_unlock(&heard.mu);
    print_message("     %zu lines heard, secret %s\n", lines, leak ? "FOUND" : "absent");
    if (leak)
        fail_msg("%s: the password appeared in logs, errors or stderr", name);
    assert_true(lines > 0);
}

static ew_manager *sec_manager(const char *url, int start_timeout_ms)
{
    ew_options o = {.on_error = error_sink, .error_user = &heard, .log = log_sink,
                    .log_user = &heard, .log_level = EW_LOG_TRACE,
                    .start_timeout_ms = start_timeout_ms, .send_timeout_ms = 15000};
    return mgr_new_opts(url, "sec1", &o);
}

/* ---- the transports ----------------------------------------------------- */

/* URL: SCHEME://ew-sec:PASSWORD@HOST:PORT QUERY [extra options]; over TLS:
 * TLS_SCHEME://ew-sec:PASSWORD@TLS_HOST:TLS_PORT TLS_QUERY CA-file. */
typedef struct target {
    const char *name;
    const char *scheme, *host;
    int port;             /* the broker's plain port */
    const char *query;    /* path and options after the port */
    bool auth;            /* the broker checks passwords */
    const char *tls_scheme, *tls_host; /* NULL: no TLS scenario */
    int tls_port;
    const char *tls_query; /* ends with the option that takes the CA file */
} target;

static const target targets[] = {
    {"rabbitmq", "rabbitmq", "127.0.0.1", 5672, "/?heartbeat=30", true,
     "rabbitmqs", "127.0.0.1", 5671, "/?cacert="},
#ifdef EW_SEC_HAVE_STOMP
    {"stomp-rabbitmq", "stomp", "127.0.0.1", 61613, "/?dialect=rabbitmq", true,
     "stomp+ssl", "127.0.0.1", 61612, "/?dialect=rabbitmq&ca="},
    {"stomp-activemq", "stomp", "127.0.0.1", 61614, "?dialect=activemq", false,
     NULL, NULL, 0, NULL},
#endif
#ifdef EW_SEC_HAVE_AMQP
    /* proton checks host names against DNS names only: localhost. */
    {"amqp-rabbitmq", "amqp", "127.0.0.1", 5672, "/?dialect=rabbitmq", true,
     "amqps", "localhost", 5671, "/?dialect=rabbitmq&ca="},
#endif
};

static void make_url(char *buf, size_t len, const target *t, const char *pw, int port,
                     const char *extra)
{
    snprintf(buf, len, "%s://%s:%s@%s:%d%s%s", t->scheme, SEC_USER, pw, t->host, port,
             t->query, extra);
}

/* A TCP port on 127.0.0.1 that nothing listens on (just released). */
/* Closes every broker connection of this run's user (RabbitMQ only): what a
 * broker restart or an operator does; the clients reconnect. */
static void close_sec_connections(void)
{
    char *out = ctl(SCRIPT, "list_connections pid user");
    char *save = NULL;
    int n = 0;
    for (char *l = strtok_r(out, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        char pid[128], user[64];
        if (sscanf(l, "%127s %63s", pid, user) == 2 && strcmp(user, SEC_USER) == 0) {
            char args[256];
            snprintf(args, sizeof args, "close_connection '%s' 'security test'", pid);
            free(ctl(SCRIPT, args));
            n++;
        }
    }
    free(out);
    print_message("     closed %d connection(s) of %s\n", n, SEC_USER);
}

static void cleanup_rabbitmq(const char *event, const char *listener)
{
    char q[256];
    snprintf(q, sizeof q, "%s::%s", event, listener);
    raw_delete(q, false);
    snprintf(q, sizeof q, "%s::%s.dlq", event, listener);
    raw_delete(q, false);
    raw_delete(event, true);
}

/* ---- scenarios ---------------------------------------------------------- */

static void working_session(const target *t)
{
    char url[1024];
    make_url(url, sizeof url, t, SECRET_PW, t->port, "");
    EV(ev, "Sec", true);
    tally tl;
    tally_init(&tl, 10);
    scenario_begin("working session at trace level");
    ew_manager *m = sec_manager(url, 20000);
    listen_tally(m, &ev, "L", false, 1, &tl);
    assert_int_equal(ew_manager_start(m), EW_OK);
    send_range(m, &ev, 0, 5);
    assert_true(tally_wait_ids(&tl, 0, 5, 30000));
    if (t->auth) {
        /* The broker drops our connections: reconnects are logged. */
        close_sec_connections();
        send_range(m, &ev, 5, 10);
        assert_true(tally_wait_all(&tl, 30000));
    }
    /* A send to a listener that does not exist. */
    conf_event e = {.id = 99, .text = "x"};
    ew_err rc = ew_send_to(m, &ev, "NoSuchListener", &e);
    print_message("     send to a missing listener: %s\n", ew_strerror(rc));
    if (t->auth)
        assert_int_not_equal(rc, EW_OK);
    ew_manager_stop(m, 5000);
    ew_manager_free(m);
    scenario_end("working session");
    tally_free(&tl);
    if (t->auth)
        cleanup_rabbitmq(ev.name, "L");
}

static void wrong_password(const target *t)
{
    char url[1024];
    make_url(url, sizeof url, t, SECRET_WRONG_ENC, t->port, "");
    scenario_begin("wrong password");
    /* rabbitmq://: refused credentials fail start at once with EW_EAUTH,
     * long before the start timeout. */
    bool rmq = strcmp(t->scheme, "rabbitmq") == 0;
    ew_manager *m = sec_manager(url, rmq ? 30000 : 3000);
    EV(ev, "SecWrong", false);
    tally tl;
    tally_init(&tl, 1);
    listen_tally(m, &ev, "L", false, 1, &tl);
    int64_t t0 = ewi_now_ms();
    ew_err rc = ew_manager_start(m);
    int64_t took = ewi_now_ms() - t0;
    print_message("     start: %s after %lld ms\n", ew_strerror(rc), (long long)took);
    assert_int_not_equal(rc, EW_OK);
    if (rmq) {
        assert_int_equal(rc, EW_EAUTH);
        assert_true(took < 15000);
    }
    ew_manager_free(m);
    scenario_end("wrong password");
    tally_free(&tl);
}

static void closed_port_start(const target *t)
{
    char url[1024];
    /* A relay that stays down: its port refuses connects, and no other
     * socket can take it meanwhile. */
    relay *closed = relay_new(0, t->port, false);
    assert_non_null(closed);
    make_url(url, sizeof url, t, SECRET_PW, relay_port(closed), "");
    scenario_begin("broker unreachable");
    ew_manager *m = sec_manager(url, 1500);
    EV(ev, "SecAbsent", false);
    conf_event e = {.id = 1, .text = "x"};
    ew_err rc = ew_manager_start(m);
    print_message("     start: %s\n", ew_strerror(rc));
    assert_int_not_equal(rc, EW_OK);
    rc = ew_send(m, &ev, &e);
    print_message("     send without a broker: %s\n", ew_strerror(rc));
    assert_int_not_equal(rc, EW_OK);
    ew_manager_free(m);
    relay_free(closed);
    scenario_end("broker unreachable");
}

static void bad_option(const target *t)
{
    char url[1024];
    make_url(url, sizeof url, t, SECRET_PW, t->port, "&no_such_option=1");
    scenario_begin("unknown URL option");
    ew_options o = {.on_error = error_sink, .error_user = &heard, .log = log_sink,
                    .log_user = &heard, .log_level = EW_LOG_TRACE};
    ew_manager *m = NULL;
    assert_int_equal(ew_manager_new(&m, url, &o), EW_EINVAL);
    assert_null(m);
    scenario_end("unknown URL option");
}

static void tls_failure(const target *t)
{
    if (!t->tls_scheme)
        return;
    char url[1024];
    snprintf(url, sizeof url, "%s://%s:%s@%s:%d%s%s/wrong-ca.pem", t->tls_scheme, SEC_USER,
             SECRET_PW, t->tls_host, t->tls_port, t->tls_query, certs);
    scenario_begin("TLS: certificate does not verify");
    /* rabbitmqs://: an untrusted certificate fails start at once with
     * EW_ETLS, long before the start timeout. */
    bool rmq = strcmp(t->tls_scheme, "rabbitmqs") == 0;
    ew_manager *m = sec_manager(url, rmq ? 30000 : 2000);
    EV(ev, "SecTls", false);
    tally tl;
    tally_init(&tl, 1);
    listen_tally(m, &ev, "L", false, 1, &tl);
    int64_t t0 = ewi_now_ms();
    ew_err rc = ew_manager_start(m);
    int64_t took = ewi_now_ms() - t0;
    print_message("     start: %s after %lld ms\n", ew_strerror(rc), (long long)took);
    assert_int_not_equal(rc, EW_OK);
    if (rmq) {
        assert_int_equal(rc, EW_ETLS);
        assert_true(took < 15000);
    }
    ew_manager_free(m);
    scenario_end("TLS failure");
    tally_free(&tl);
}

/* $EW_SEC_SCENARIO (session, wrong, option, tls, closed) runs only that
 * scenario: for finding which one a sanitizer complains about. */
static bool wanted(const char *scenario)
{
    const char *only = getenv("EW_SEC_SCENARIO");
    return !only || !*only || strcmp(only, scenario) == 0;
}

static void run_target(void **state)
{
    const target *t = *state;
    if (wanted("session"))
        working_session(t);
    if (t->auth && wanted("wrong"))
        wrong_password(t);
    if (wanted("option"))
        bad_option(t);
    if (wanted("tls"))
        tls_failure(t);
    if (wanted("closed"))
        closed_port_start(t);
}

static int group_setup(void **state)
{
    (void)state;
    /* Idempotent: a user left by an earlier run is made again. */
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s ctl -q delete_user %s >/dev/null 2>&1", SCRIPT, SEC_USER);
    if (system(cmd) == -1)
        return -1;
    snprintf(cmd, sizeof cmd,
             "%s ctl -q add_user %s '%s' >/dev/null && "
             "%s ctl -q set_permissions -p / %s '.*' '.*' '.*' >/dev/null",
             SCRIPT, SEC_USER, SECRET_PW, SCRIPT, SEC_USER);
    if (system(cmd) != 0) {
        fprintf(stderr, "cannot create the RabbitMQ user %s (is RabbitMQ running? "
                        "scripts/brokers/rabbitmq.sh start)\n", SEC_USER);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    stderr_restore();
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s ctl -q delete_user %s >/dev/null 2>&1", SCRIPT, SEC_USER);
    return system(cmd) == 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s RABBITMQ_SCRIPT [CERT_DIR]\n", argv[0]);
        return 2;
    }
    SCRIPT = argv[1];
    snprintf(SEC_USER, sizeof SEC_USER, "ew-sec-%d", (int)getpid());
    if (argc > 2) {
        snprintf(certs, sizeof certs, "%s", argv[2]);
    } else {
        const char *st = getenv("EW_BROKER_STATE");
        snprintf(certs, sizeof certs, "%s/tls", st && *st ? st : "/tmp/eventwire-brokers");
    }
    support_init(rmq_test_url());
    /* $EW_SEC_TARGET (rabbitmq, stomp-rabbitmq, ...) runs only that one. */
    const char *only = getenv("EW_SEC_TARGET");
    if (only && *only)
        cmocka_set_test_filter(only);
    enum { N = sizeof targets / sizeof targets[0] };
    struct CMUnitTest tests[N];
    for (size_t i = 0; i < N; i++)
        tests[i] = (struct CMUnitTest){.name = targets[i].name, .test_func = run_target,
                                       .initial_state = (void *)(uintptr_t)&targets[i]};
    return cmocka_run_group_tests_name("credentials", tests, group_setup, group_teardown);
}
