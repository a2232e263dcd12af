/* A real aspyx-event service and an eventwire service exchange events in
 * both directions through ActiveMQ Artemis over AMQP 1.0.
 *
 * The Python side is tests/aspyx/aspyx_interop_service.py, written with aspyx-event
 * (AMQPProvider, @event dataclasses, an @event_listener, an envelope
 * pipeline that sets a `session` header), run by the virtual environment of
 * scripts/python-env.sh. This side is a C service written with eventwire:
 * a listener of the events aspyx sends, a pipeline that sets its own
 * `session` header, and JSON events whose fields are the dataclass's.
 *
 * Each test: 1,000 events each way; every id arrives exactly once with the
 * text sent and the other side's session header; the aspyx service exits 0
 * (its own checks passed and its provider stopped) and eventwire's manager
 * stops cleanly. Once with eventwire's default queue naming and once with
 * queue_naming=aspyx.
 *
 * usage: test_aspyx_interop PYTHON SERVICE_SCRIPT
 * The broker: $EW_TEST_ARTEMIS_AMQP_URL, by default
 * amqp://artemis:artemis@127.0.0.1:5673?dialect=artemis (the Artemis that
 * scripts/brokers/artemis.sh starts). A missing broker fails the test. */
#include "support.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

extern char **environ;

#define COUNT 1000
#define C_SESSION "c-session 漢字"      /* what this side's pipeline sets */
#define PY_SESSION "aspyx-session ü"   /* what the aspyx pipeline sets */
#define PY_TEXT "from aspyx é 🚀"

typedef struct {
    int64_t id;
    char *text;
} interop_event;

EW_TYPE(interop_event, EW_FIELD(interop_event, id, EW_INT64),
        EW_FIELD(interop_event, text, EW_STRING));

static const char *PYTHON, *SERVICE;

static const char *artemis_url(void)
{
    const char *u = getenv("EW_TEST_ARTEMIS_AMQP_URL");
    return u && *u ? u : "amqp://artemis:artemis@127.0.0.1:5673?dialect=artemis";
}

/* ---- what the C listener saw ------------------------------------------- */

typedef struct seen {
    pthread_mutex_t mu;
    uint32_t count[COUNT];
    size_t distinct, duplicates, bad;
    char first_bad[512];
    char queue[EW_MAX_QUEUE_NAME];
} seen;

static ew_err on_event(ew_delivery *d, const void *event, void *user)
{
    const interop_event *e = event;
    seen *s = user;
    const char *session = ew_delivery_header(d, "session");
    bool ok = e->id >= 0 && e->id < COUNT && e->text && strcmp(e->text, PY_TEXT) == 0 &&
              session && strcmp(session, PY_SESSION) == 0;
    pthread_mutex_lock(&s->mu);
    snprintf(s->queue, sizeof s->queue, "%s", ew_delivery_queue(d));
    if (!ok) {
        if (!s->bad++)
            snprintf(s->first_bad, sizeof s->first_bad, "id %lld text \"%s\" session \"%s\"",
                     (long long)e->id, e->text ? e->text : "(null)",
                     session ? session : "(none)");
    } else if (s->count[e->id]++ == 0) {
        s->distinct++;
    } else {
        s->duplicates++;
    }
    pthread_mutex_unlock(&s->mu);
    return EW_OK;
}

static size_t seen_distinct(seen *s)
{
    pthread_mutex_lock(&s->mu);
    size_t n = s->distinct;
    pthread_mutex_unlock(&s->mu);
    return n;
}

static ew_err stamp_session(void *user, ew_envelope *env, const ew_event_desc *ev)
{
    (void)ev;
    return ew_envelope_set_header(env, "session", user);
}

/* ---- the aspyx service as a child process ------------------------------ */

typedef struct child {
    pid_t pid;
    int to, from; /* its stdin, its stdout */
    char buf[8192];
    size_t len;
} child;

static bool child_start(child *c, const char *run)
{
    ewi_url u;
    char err[128], port[16];
    if (ewi_url_parse(artemis_url(), &u, err, sizeof err) != EW_OK) {
        print_error("bad EW_TEST_ARTEMIS_AMQP_URL: %s\n", err);
        return false;
    }
    snprintf(port, sizeof port, "%d", u.port ? u.port : 5672);
    char count[16];
    snprintf(count, sizeof count, "%d", COUNT);
    /* posix_spawn takes char *const[]: give it copies. */
    char *argv[] = {strdup(PYTHON), strdup(SERVICE),
                    strdup(u.host[0] ? u.host : "127.0.0.1"), strdup(port),
                    strdup(u.user ? u.user : ""), strdup(u.password ? u.password : ""),
                    strdup(run), strdup(count), NULL};
    int in[2], out[2];
    if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC)) {
        ewi_url_free(&u);
        return false;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    int rc = posix_spawn(&c->pid, PYTHON, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    for (char **a = argv; *a; a++)
        free(*a);
    ewi_url_free(&u);
    close(in[0]);
    close(out[1]);
    c->to = in[1];
    c->from = out[0];
    c->len = 0;
    if (rc != 0) {
        print_error("cannot run %s: %s\n", PYTHON, strerror(rc));
        c->pid = 0;
        return false;
    }
    return true;
}

/* Reads one line of the child's stdout into line, waiting up to timeout_ms. */
static bool child_line(child *c, char *line, size_t len, int timeout_ms)
{
    int64_t deadline = ewi_now_ms() + timeout_ms;
    for (;;) {
        char *nl = memchr(c->buf, '\n', c->len);
        if (nl) {
            size_t n = (size_t)(nl - c->buf);
            snprintf(line, len, "%.*s", (int)n, c->buf);
            memmove(c->buf, nl + 1, c->len - n - 1);
            c->len -= n + 1;
            return true;
        }
        int64_t left = ewi_left_ms(deadline);
        if (left <= 0 || c->len == sizeof c->buf)
            return false;
        struct pollfd p = {.fd = c->from, .events = POLLIN};
        int r = poll(&p, 1, (int)left);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return false;
        ssize_t got = read(c->from, c->buf + c->len, sizeof c->buf - c->len);
        if (got <= 0)
            return false; /* the child closed its stdout (exited) */
        c->len += (size_t)got;
    }
}

/* Closes the pipes and reaps the child (killing it after timeout_ms);
 * returns its exit status, or -1 when it had to be killed or died of a
 * signal. */
static int child_finish(child *c, int timeout_ms)
{
    if (c->to >= 0)
        close(c->to);
    if (c->from >= 0)
        close(c->from);
    c->to = c->from = -1;
    if (!c->pid)
        return -1;
    int64_t deadline = ewi_now_ms() + timeout_ms;
    int st = 0;
    for (;;) {
        pid_t r = waitpid(c->pid, &st, WNOHANG);
        if (r == c->pid)
            break;
        if (ewi_left_ms(deadline) <= 0) {
            kill(c->pid, SIGKILL);
            waitpid(c->pid, &st, 0);
            c->pid = 0;
            return -1;
        }
        ewi_sleep_ms(20);
    }
    c->pid = 0;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* The queues Artemis has on `address`, one per line, from its own
 * management (artemis_queues.py next to the service script). */
static void artemis_queues(const char *address, char *out, size_t len)
{
    ewi_url u;
    char err[128], cmd[2048], script[1024];
    out[0] = '\0';
    if (ewi_url_parse(artemis_url(), &u, err, sizeof err) != EW_OK)
        fail_msg("bad EW_TEST_ARTEMIS_AMQP_URL: %s", err);
    const char *slash = strrchr(SERVICE, '/');
    snprintf(script, sizeof script, "%.*sartemis_queues.py",
             slash ? (int)(slash - SERVICE + 1) : 0, SERVICE);
    snprintf(cmd, sizeof cmd, "'%s' '%s' '%s' %d '%s' '%s' '%s'", PYTHON, script,
             u.host[0] ? u.host : "127.0.0.1", u.port ? u.port : 5672, u.user ? u.user : "",
             u.password ? u.password : "", address);
    ewi_url_free(&u);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, len - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    if (st != 0)
        fail_msg("asking Artemis's management failed (status %d): %s", st, cmd);
}

/* ---- one exchange -------------------------------------------------------- */

static void exchange(const char *naming)
{
    char run[48], to_c[96], to_py[96], lname[96], url[512], expect_queue[200];
    snprintf(run, sizeof run, "%s_%s", support_run_id, naming);
    snprintf(to_c, sizeof to_c, "AspyxToC_%s", run);
    snprintf(to_py, sizeof to_py, "CToAspyx_%s", run);
    snprintf(lname, sizeof lname, "CListener_%s", run);
    const char *u = artemis_url();
    snprintf(url, sizeof url, "%s%squeue_naming=%s", u, strchr(u, '?') ? "&" : "?", naming);
    snprintf(expect_queue, sizeof expect_queue, "%s::%s", to_c, lname);

    /* The aspyx side's events: JSON, fields named as the dataclass's, not
     * durable (aspyx-event's default). */
    ew_event_desc from_py = {.type = &interop_event_type, .name = to_c,
                             .format = EW_FORMAT_JSON};
    ew_event_desc to_aspyx = {.type = &interop_event_type, .name = to_py,
                              .format = EW_FORMAT_JSON};

    static seen tally_; /* static: a failing assertion leaks nothing */
    seen *s = &tally_;
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
    ew_manager *m = mgr_new(url, "c-service");
    assert_int_equal(ew_listen(m, &(ew_listener_desc){.event = &from_py, .name = lname,
                                                      .concurrency = 4},
                               on_event, s),
                     EW_OK);
    ew_pipeline p = {.name = "session", .send = stamp_session};
    static char session[] = C_SESSION;
    assert_int_equal(ew_add_pipeline(m, &p, session), EW_OK);
    /* start returns once the listener consumes: from then on nothing the
     * aspyx service sends to its event is lost. */
    assert_int_equal(ew_manager_start(m), EW_OK);

    child c = {.to = -1, .from = -1};
    char line[8192] = "", result[8192] = "", why[600] = "";
    int status = -2;
    if (!child_start(&c, run)) {
        snprintf(why, sizeof why, "the aspyx service did not start");
        goto out;
    }
    /* "ready" once aspyx's receiver is attached (its queue exists). */
    if (!child_line(&c, line, sizeof line, 60000) || strcmp(line, "ready") != 0) {
        snprintf(why, sizeof why, "the aspyx service did not get ready (said \"%s\")", line);
        goto out;
    }
    for (int i = 0; i < COUNT; i++) {
        char text[96];
        snprintf(text, sizeof text, "from C %d ü 漢字 🚀", i);
        ew_err rc = ew_send_async(m, &to_aspyx, NULL, &(interop_event){.id = i, .text = text},
                                  NULL, NULL);
        if (rc != EW_OK) {
            snprintf(why, sizeof why, "send %d: %s", i, ew_strerror(rc));
            goto out;
        }
    }
    ew_err frc = ew_flush(m, 60000);
    if (frc != EW_OK) {
        snprintf(why, sizeof why, "flush: %s", ew_strerror(frc));
        goto out;
    }
    int64_t deadline = ewi_now_ms() + 120000;
    while (seen_distinct(s) < COUNT && ewi_left_ms(deadline) > 0)
        ewi_sleep_ms(20);
    if (seen_distinct(s) == COUNT) {
        /* Tell the aspyx service that everything it sent has arrived; it
         * then stops and reports what it received. */
        if (write(c.to, "done\n", 5) != 5)
            snprintf(why, sizeof why, "cannot write to the aspyx service");
    }
    if (!child_line(&c, result, sizeof result, 150000))
        snprintf(result, sizeof result, "(no result line)");
out:
    status = child_finish(&c, 30000);
    print_message("[%s naming] aspyx service result: %s, exit status %d\n", naming, result,
                  status);
    pthread_mutex_lock(&s->mu);
    print_message("[%s naming] C side: %zu distinct ids, %zu duplicates, %zu bad, queue %s\n",
                  naming, s->distinct, s->duplicates, s->bad, s->queue);
    pthread_mutex_unlock(&s->mu);
    ew_err stop_rc = ew_manager_stop(m, 10000);
    ew_manager_free(m);

    if (why[0])
        fail_msg("%s", why);
    if (s->bad)
        fail_msg("%zu events from aspyx arrived wrong, first: %s", s->bad, s->first_bad);
    if (s->distinct != COUNT)
        fail_msg("only %zu of %d aspyx events arrived", s->distinct, COUNT);
    assert_int_equal(s->duplicates, 0);
    /* eventwire names a listener's queue E::L in its API whatever the
     * naming on the broker. */
    assert_string_equal(s->queue, expect_queue);
    /* The aspyx side's verdict: every id once, the C session header on each,
     * our "done", its provider stopped. */
    char want[64];
    snprintf(want, sizeof want, "\"received\": %d, \"duplicates\": 0,", COUNT);
    if (!strstr(result, want))
        fail_msg("the aspyx service did not receive every event once: %s", result);
    assert_int_equal(status, 0);
    assert_int_equal(stop_rc, EW_OK);

    /* What Artemis itself holds: the C listener's queue on the aspyx
     * event's address is "E:L" with eventwire's naming (the artemis
     * dialect's name for E::L, see docs/amqp.md), "L" with
     * queue_naming=aspyx; aspyx's listener's queue on the C event's address
     * is "L" (aspyx-event's naming). */
    char queues[1024], want_q[256];
    artemis_queues(to_c, queues, sizeof queues);
    if (strcmp(naming, "aspyx") == 0)
        snprintf(want_q, sizeof want_q, "%s\n", lname);
    else
        snprintf(want_q, sizeof want_q, "%s:%s\n", to_c, lname);
    assert_string_equal(queues, want_q);
    char aspyx_q[128];
    snprintf(aspyx_q, sizeof aspyx_q, "AspyxListener_%s\n", run);
    artemis_queues(to_py, queues, sizeof queues);
    assert_string_equal(queues, aspyx_q);
    pthread_mutex_destroy(&s->mu);
}

static void default_naming(void **state)
{
    (void)state;
    exchange("eventwire");
}

static void aspyx_naming(void **state)
{
    (void)state;
    exchange("aspyx");
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s PYTHON aspyx_interop_service.py\n", argv[0]);
        return 2;
    }
    PYTHON = argv[1];
    SERVICE = argv[2];
    signal(SIGPIPE, SIG_IGN);
    support_init(artemis_url());
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(default_naming),
        cmocka_unit_test(aspyx_naming),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
