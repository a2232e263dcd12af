/* The tests' support library: see support.h. */
#include "support.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <sched.h>
#include <netinet/in.h>
#include <errno.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#ifdef SUPPORT_HAVE_RMQ
#include <amqp.h>
#include <amqp_tcp_socket.h>
#endif

static const ew_field conf_event_fields_[] = {
    EW_FIELD(conf_event, id, EW_INT64),
    EW_FIELD(conf_event, text, EW_STRING),
};
const ew_type conf_event_type = {"conf_event", sizeof(conf_event), conf_event_fields_, 2};

char support_run_id[32];

void support_init(const char *url)
{
    (void)url;
    /* A failed check ends the program instead of jumping to the next test:
     * the failed test's manager would go on running with its tallies on a
     * stack that the next test reuses. cmocka reads this at each failure. */
    setenv("CMOCKA_TEST_ABORT", "1", 0);
    snprintf(support_run_id, sizeof support_run_id, "%x%x", (unsigned)getpid(),
             (unsigned)(ewi_wall_ms() & 0xfffff));
}

/* ---- the watchdog -------------------------------------------------------- */

/* ctest kills a test that outlives its TIMEOUT with SIGKILL and prints only
 * "Timeout". To say where it hung, every test program linked with this
 * library starts a watchdog when EW_TEST_WATCHDOG_S is set (the test
 * CMakeLists set it a little below each test's TIMEOUT): when that many
 * seconds have passed, it prints every thread's stack (gdb, attached to
 * this process) and aborts, so the failure shows its cause. */
static void *watchdog_main(void *arg)
{
    unsigned secs = (unsigned)(uintptr_t)arg;
    struct timespec left = {(time_t)secs, 0};
    while (nanosleep(&left, &left) == -1 && errno == EINTR)
        ;
    fprintf(stderr, "\nwatchdog: the test still runs after %u s, close to its ctest "
                    "TIMEOUT; the stack of every thread:\n", secs);
    fflush(stderr);
    char pid[24];
    snprintf(pid, sizeof pid, "%d", (int)getpid());
    pid_t child = fork();
    if (child == 0) {
        dup2(STDERR_FILENO, STDOUT_FILENO);
        execlp("gdb", "gdb", "-p", pid, "-batch", "-nx", "-ex", "thread apply all bt",
               (char *)NULL);
        fprintf(stderr, "watchdog: cannot run gdb: %s\n", strerror(errno));
        _exit(127);
    }
    if (child > 0)
        while (waitpid(child, NULL, 0) == -1 && errno == EINTR)
            ;
    fprintf(stderr, "watchdog: ending the test\n");
    abort();
}

__attribute__((constructor)) static void watchdog_start(void)
{
    const char *v = getenv("EW_TEST_WATCHDOG_S");
    long secs = v ? strtol(v, NULL, 10) : 0;
    if (secs <= 0)
        return;
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &attr, watchdog_main, (void *)(uintptr_t)secs) != 0)
        fprintf(stderr, "watchdog: cannot start its thread\n");
    pthread_attr_destroy(&attr);
}

/* ---- waiting ------------------------------------------------------------ */

bool wait_until(bool (*cond)(void *), void *arg, int timeout_ms)
{
    int64_t deadline = ewi_now_ms() + timeout_ms;
    while (!cond(arg)) {
        if (ewi_left_ms(deadline) == 0)
            return false;
        ewi_sleep_ms(2);
    }
    return true;
}

/* ---- tally -------------------------------------------------------------- */

void tally_init(tally *t, size_t n)
{
    memset(t, 0, sizeof *t);
    pthread_mutex_init(&t->mu, NULL);
    ewi_cond_init_mono(&t->cv);
    t->n = n;
    t->seen = calloc(n, sizeof *t->seen);
    t->attempts = calloc(n, sizeof *t->attempts);
    t->max_attempt_seen = calloc(n, sizeof *t->max_attempt_seen);
    t->label = calloc(n, sizeof *t->label);
    t->last_id = -1;
    t->fail_always = t->fail_once = -1;
}

void tally_free(tally *t)
{
    free(t->seen);
    free(t->attempts);
    free(t->max_attempt_seen);
    free(t->label);
    for (tally_ref *r = t->refs, *n; r; r = n) {
        n = r->next;
        free(r);
    }
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
}

void tally_slow(tally *t, int ms)
{
    pthread_mutex_lock(&t->mu);
    t->slow_ms = ms;
    pthread_mutex_unlock(&t->mu);
}

tally_ref *tref(tally *t, const char *label)
{
    tally_ref *r = calloc(1, sizeof *r);
    r->t = t;
    snprintf(r->label, sizeof r->label, "%s", label);
    pthread_mutex_lock(&t->mu);
    r->next = t->refs;
    t->refs = r;
    pthread_mutex_unlock(&t->mu);
    return r;
}

void tally_note(tally *t, int64_t id, const char *label, const char *queue)
{
    pthread_mutex_lock(&t->mu);
    if (id >= 0 && (size_t)id < t->n) {
        t->seen[id]++;
        t->label[id] = label;
    }
    snprintf(t->last_queue, sizeof t->last_queue, "%s", queue ? queue : "");
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

ew_err tally_listener_ref(ew_delivery *d, const void *event, tally_ref *r)
{
    tally *t = r->t;
    const conf_event *e = event;
    pthread_mutex_lock(&t->mu);
    t->started++;
    pthread_cond_broadcast(&t->cv);
    bool in = e->id >= 0 && (size_t)e->id < t->n;
    uint32_t runs = in ? ++t->attempts[e->id] : 0;
    if (in && ew_delivery_attempt(d) > t->max_attempt_seen[e->id])
        t->max_attempt_seen[e->id] = ew_delivery_attempt(d);
    if (e->id < t->last_id)
        t->out_of_order++;
    t->last_id = e->id;
    int slow = t->slow_ms;
    bool fail = e->id == t->fail_always || (e->id == t->fail_once && runs == 1);
    pthread_mutex_unlock(&t->mu);
    if (slow)
        ewi_sleep_ms(slow);
    if (!fail)
        tally_note(t, e->id, r->label, ew_delivery_queue(d));
    pthread_mutex_lock(&t->mu);
    t->finished++;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
    return fail ? EW_ELISTENER : EW_OK;
}

ew_err tally_listener(ew_delivery *d, const void *event, void *user)
{
    return tally_listener_ref(d, event, user);
}

/* Waits on t->cv until cond holds or the deadline passed. */
static bool tally_wait_(tally *t, bool (*cond)(tally *, size_t, size_t), size_t a, size_t b,
                        int timeout_ms)
{
    int64_t deadline = ewi_now_ms() + timeout_ms;
    pthread_mutex_lock(&t->mu);
    bool ok;
    while (!(ok = cond(t, a, b)) && ewi_left_ms(deadline) > 0)
        ewi_cond_wait_until(&t->cv, &t->mu, deadline);
    pthread_mutex_unlock(&t->mu);
    return ok;
}

static bool ids_seen_(tally *t, size_t from, size_t to)
{
    for (size_t i = from; i < to && i < t->n; i++)
        if (!t->seen[i])
            return false;
    return true;
}

static bool started_(tally *t, size_t k, size_t unused)
{
    (void)unused;
    return t->started >= k;
}

static bool finished_(tally *t, size_t k, size_t unused)
{
    (void)unused;
    return t->finished >= k;
}

bool tally_wait_ids(tally *t, size_t from, size_t to, int timeout_ms)
{
    bool ok = tally_wait_(t, ids_seen_, from, to, timeout_ms);
    if (!ok) {
        size_t missing = 0;
        int64_t first = -1;
        pthread_mutex_lock(&t->mu);
        for (size_t i = from; i < to && i < t->n; i++)
            if (!t->seen[i]) {
                missing++;
                if (first < 0)
                    first = (int64_t)i;
            }
        pthread_mutex_unlock(&t->mu);
        print_message("tally: %zu of ids [%zu, %zu) not handled within %d ms (first: %lld)\n",
                      missing, from, to, timeout_ms, (long long)first);
    }
    return ok;
}

bool tally_wait_all(tally *t, int timeout_ms)
{
    return tally_wait_ids(t, 0, t->n, timeout_ms);
}

bool tally_wait_count(tally *t, size_t k, int timeout_ms)
{
    bool ok = tally_wait_(t, started_, k, 0, timeout_ms);
    if (!ok)
        print_message("tally: %zu handler runs started within %d ms, expected %zu\n",
                      t->started, timeout_ms, k);
    return ok;
}

bool tally_wait_finished(tally *t, size_t k, int timeout_ms)
{
    bool ok = tally_wait_(t, finished_, k, 0, timeout_ms);
    if (!ok)
        print_message("tally: %zu handler runs finished within %d ms, expected %zu\n",
                      t->finished, timeout_ms, k);
    return ok;
}

size_t tally_dups(tally *t)
{
    size_t d = 0;
    pthread_mutex_lock(&t->mu);
    for (size_t i = 0; i < t->n; i++)
        d += t->seen[i] > 1 ? t->seen[i] - 1 : 0;
    pthread_mutex_unlock(&t->mu);
    return d;
}

size_t tally_total(tally *t)
{
    size_t s = 0;
    pthread_mutex_lock(&t->mu);
    for (size_t i = 0; i < t->n; i++)
        s += t->seen[i];
    pthread_mutex_unlock(&t->mu);
    return s;
}

uint32_t tally_seen(tally *t, int64_t id)
{
    pthread_mutex_lock(&t->mu);
    uint32_t k = id >= 0 && (size_t)id < t->n ? t->seen[id] : 0;
    pthread_mutex_unlock(&t->mu);
    return k;
}

size_t tally_by_label(tally *t, const char *label)
{
    size_t s = 0;
    pthread_mutex_lock(&t->mu);
    for (size_t i = 0; i < t->n; i++)
        s += t->label[i] && strcmp(t->label[i], label) == 0;
    pthread_mutex_unlock(&t->mu);
    return s;
}

/* ---- managers and sends ------------------------------------------------- */

ew_manager *mgr_new_opts(const char *url, const char *server, ew_options *o)
{
    ew_manager *m = NULL;
    o->server_name = server;
    if (!o->send_timeout_ms)
        o->send_timeout_ms = 15000;
    if (!o->start_timeout_ms)
        o->start_timeout_ms = 20000;
    /* Every manager of a run on the shared worker pool of that size. */
    const char *pool = getenv("EW_TEST_WORKER_POOL");
    if (!o->worker_pool && pool && *pool)
        o->worker_pool = (uint32_t)strtoul(pool, NULL, 10);
    ew_err rc = ew_manager_new(&m, url, o);
    if (rc != EW_OK)
        fail_msg("ew_manager_new(%s): %s", url, ew_strerror(rc));
    return m;
}

ew_manager *mgr_new(const char *url, const char *server)
{
    ew_options o = {0};
    return mgr_new_opts(url, server, &o);
}

int ew_thread_census(int *ew, int *batch, int *other)
{
    int n = 0, counts[3] = {0, 0, 0}; /* ew, batch, other */
    DIR *d = opendir("/proc/self/task");
    if (!d)
        fail_msg("cannot list /proc/self/task");
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.')
            continue;
        n++;
        char path[300], comm[32] = "";
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "r");
        bool ours = f && fgets(comm, sizeof comm, f) && strncmp(comm, "ew:", 3) == 0;
        if (f)
            fclose(f);
        if (!ours)
            continue;
        counts[0]++;
        int policy = sched_getscheduler((pid_t)atoi(e->d_name));
        if (policy >= 0)
            counts[policy == SCHED_BATCH ? 1 : 2]++;
    }
    closedir(d);
    int *out[3] = {ew, batch, other};
    for (int i = 0; i < 3; i++)
        if (out[i])
            *out[i] = counts[i];
    return n;
}

void listen_tally(ew_manager *m, const ew_event_desc *ev, const char *name, bool per_process,
                  uint32_t concurrency, tally *t)
{
    ew_listener_desc d = {.event = ev, .name = name, .per_process = per_process,
                          .concurrency = concurrency};
    ew_err rc = ew_listen(m, &d, tally_listener, tref(t, ew_manager_server_name(m)));
    if (rc != EW_OK)
        fail_msg("ew_listen(%s): %s", name, ew_strerror(rc));
}

void send_range(ew_manager *m, const ew_event_desc *ev, int64_t from, int64_t to)
{
    for (int64_t i = from; i < to; i++) {
        conf_event e = {.id = i, .text = "x"};
        ew_err rc = ew_send(m, ev, &e);
        if (rc != EW_OK)
            fail_msg("ew_send(%lld): %s", (long long)i, ew_strerror(rc));
    }
}

_Atomic size_t support_async_failures;

void count_failure_(void *user, ew_err err)
{
    (void)user;
    if (err != EW_OK)
        support_async_failures++;
}

void send_range_async(ew_manager *m, const ew_event_desc *ev, int64_t from, int64_t to)
{
    support_async_failures = 0;
    for (int64_t i = from; i < to; i++) {
        conf_event e = {.id = i, .text = "0123456789012345678901234567890123456789"};
        ew_err rc = ew_send_async(m, ev, NULL, &e, count_failure_, NULL);
        if (rc != EW_OK)
            fail_msg("ew_send_async(%lld): %s", (long long)i, ew_strerror(rc));
    }
    if (ew_flush(m, 120000) != EW_OK)
        fail_msg("ew_flush: sends not complete within 120 s");
    if (support_async_failures)
        fail_msg("%zu asynchronous sends failed", (size_t)support_async_failures);
}

ew_err publish_raw_rc(ew_manager *m, const char *event, const char *ct, const void *body,
                      size_t len, int timeout_ms)
{
    ew_envelope *env = ewi_envelope_new();
    ewi_envelope_set_body(env, body, len);
    ewi_envelope_set_content_type(env, ct);
    ewi_envelope_put(env, EW_HDR_EVENT, strlen(EW_HDR_EVENT), event, strlen(event));
    char id[37];
    ewi_new_message_id(m, id);
    ewi_envelope_put(env, EW_HDR_MESSAGE_ID, strlen(EW_HDR_MESSAGE_ID), id, 36);
    ewi_pub p = {.dest = EWI_DEST_EVENT, .event = event, .durable = true, .env = env,
                 .deadline_ms = ewi_now_ms() + timeout_ms};
    ew_err rc = ewi_publish_sync(m, &p);
    ewi_envelope_unref(env);
    return rc;
}

void publish_raw(ew_manager *m, const char *event, const char *ct, const void *body,
                 size_t len)
{
    ew_err rc = publish_raw_rc(m, event, ct, body, len, 15000);
    if (rc != EW_OK)
        fail_msg("raw publish: %s", ew_strerror(rc));
}

bool manager_idle(ew_manager *m)
{
    pthread_mutex_lock(&m->mu);
    ewi_listener *all = m->listeners;
    pthread_mutex_unlock(&m->mu);
    bool idle = true;
    for (ewi_listener *l = all; l && idle; l = l->next) {
        pthread_mutex_lock(&l->mu);
        idle = ewi_queued(l) == 0 && l->busy == 0;
        pthread_mutex_unlock(&l->mu);
    }
    return idle;
}

bool manager_idle_cond(void *m)
{
    return manager_idle(m);
}

/* ---- dead letters ------------------------------------------------------- */

ew_err dlq_collect(void *user, const ew_envelope *env)
{
    dlq_box *b = user;
    if (b->n >= 16)
        return EW_OK;
    size_t i = b->n++, len;
    const void *body = ew_envelope_body(env, &len);
    void *ev = NULL;
    b->ids[i] = -1;
    if (ew_decode(&conf_event_type, ew_format_from_content_type(ew_envelope_content_type(env)),
                  body, len, NULL, &ev, NULL, 0) == EW_OK) {
        b->ids[i] = ((conf_event *)ev)->id;
        ew_event_free(&conf_event_type, ev);
    }
    const char *h;
    snprintf(b->reason[i], sizeof b->reason[i], "%s",
             (h = ew_envelope_header(env, EW_HDR_DLQ_REASON)) ? h : "");
    snprintf(b->attempts[i], sizeof b->attempts[i], "%s",
             (h = ew_envelope_header(env, EW_HDR_DLQ_ATTEMPTS)) ? h : "");
    snprintf(b->queue[i], sizeof b->queue[i], "%s",
             (h = ew_envelope_header(env, EW_HDR_DLQ_QUEUE)) ? h : "");
    snprintf(b->error[i], sizeof b->error[i], "%s",
             (h = ew_envelope_header(env, EW_HDR_DLQ_ERROR)) ? h : "");
    return EW_OK;
}

/* ---- capture ------------------------------------------------------------ */

void capture_init(capture *c)
{
    memset(c, 0, sizeof *c);
    pthread_mutex_init(&c->mu, NULL);
    ewi_cond_init_mono(&c->cv);
    c->keep_level = EW_LOG_TRACE;
}

/* Under c->mu. */
static void capture_line_(capture *c, const char *fmt, ...) EWI_PRINTF(2, 3);

static void capture_line_(capture *c, const char *fmt, ...)
{
    if (c->len + 1 >= sizeof c->text)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(c->text + c->len, sizeof c->text - c->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        c->len += (size_t)n < sizeof c->text - c->len ? (size_t)n : sizeof c->text - c->len - 1;
    pthread_cond_broadcast(&c->cv);
}

void capture_add(capture *c, const char *kind, const char *text)
{
    pthread_mutex_lock(&c->mu);
    capture_line_(c, "[%s] %s\n", kind, text ? text : "(no text)");
    pthread_mutex_unlock(&c->mu);
}

void capture_error(void *user, const ew_error_info *info)
{
    capture *c = user;
    pthread_mutex_lock(&c->mu);
    if ((size_t)c->errors < sizeof c->codes / sizeof c->codes[0])
        c->codes[c->errors] = info->code;
    c->errors++;
    c->last_code = info->code;
    if (info->code == EW_EDISCONNECTED) {
        c->disconnects++;
        if (!c->first_disconnect_ms)
            c->first_disconnect_ms = ewi_now_ms();
    }
    capture_line_(c, "[%s] %s%s%s%s\n", ew_strerror(info->code), info->queue ? "{queue " : "",
                  info->queue ? info->queue : "", info->queue ? "} " : "",
                  info->text ? info->text : "(no text)");
    pthread_mutex_unlock(&c->mu);
}

void capture_log(void *user, ew_log_level level, const char *msg)
{
    static const char *const names[] = {"log", "log:error", "log:warn", "log:info",
                                        "log:debug", "log:trace"};
    capture *c = user;
    if (level > c->keep_level)
        return;
    capture_add(c, (unsigned)level < 6 ? names[level] : "log", msg);
}

bool capture_has(capture *c, const char *needle)
{
    pthread_mutex_lock(&c->mu);
    bool has = strstr(c->text, needle) != NULL;
    pthread_mutex_unlock(&c->mu);
    return has;
}

bool capture_wait_for(capture *c, const char *needle, int timeout_ms)
{
    int64_t deadline = ewi_now_ms() + timeout_ms;
    pthread_mutex_lock(&c->mu);
    bool has;
    while (!(has = strstr(c->text, needle) != NULL) && ewi_left_ms(deadline) > 0)
        ewi_cond_wait_until(&c->cv, &c->mu, deadline);
    if (!has)
        print_message("no report with \"%s\" within %d ms; reports:\n%s", needle, timeout_ms,
                      c->text);
    pthread_mutex_unlock(&c->mu);
    return has;
}

size_t capture_count(capture *c, ew_err code)
{
    size_t k = 0;
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < (size_t)c->errors && i < sizeof c->codes / sizeof c->codes[0]; i++)
        k += c->codes[i] == code;
    pthread_mutex_unlock(&c->mu);
    return k;
}

void capture_print(capture *c)
{
    pthread_mutex_lock(&c->mu);
    print_message("%s", c->text);
    pthread_mutex_unlock(&c->mu);
}

void capture_copy(capture *c, char *buf, size_t len)
{
    pthread_mutex_lock(&c->mu);
    size_t n = c->len < len ? c->len : len - 1;
    memcpy(buf, c->text, n);
    buf[n] = '\0';
    pthread_mutex_unlock(&c->mu);
}

void capture_clear(capture *c)
{
    pthread_mutex_lock(&c->mu);
    c->text[0] = '\0';
    c->len = 0;
    c->errors = 0;
    c->last_code = EW_OK;
    c->disconnects = 0;
    c->first_disconnect_ms = 0;
    pthread_mutex_unlock(&c->mu);
}

/* ---- certificates ------------------------------------------------------- */

static char certs_dir[64];

static void certs_remove(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", certs_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", certs_dir);
}

const char *support_certs(void)
{
    if (certs_dir[0])
        return certs_dir;
    char dir[64] = "/tmp/ew-test-certs-XXXXXX";
    if (!mkdtemp(dir))
        fail_msg("cannot make a directory for the test certificates");
    char cmd[512];
    snprintf(cmd, sizeof cmd, "'%s' '%s' >/dev/null", EW_TEST_CERTS_SH, dir);
    int rc = system(cmd);
    snprintf(certs_dir, sizeof certs_dir, "%s", dir);
    atexit(certs_remove);
    if (rc != 0)
        fail_msg("%s failed (%d): no test certificates", cmd, rc);
    return certs_dir;
}

const char *support_cert(char *buf, size_t len, const char *name)
{
    snprintf(buf, len, "%s/%s", support_certs(), name);
    return buf;
}

relay *support_tls_front(int target, const char *cert)
{
    char pem[160], key[160], name[64];
    snprintf(name, sizeof name, "%s.pem", cert);
    support_cert(pem, sizeof pem, name);
    snprintf(name, sizeof name, "%s.key", cert);
    support_cert(key, sizeof key, name);
    relay *r = relay_new_tls(0, target, true, pem, key);
    if (!r)
        fail_msg("cannot start a TLS front for 127.0.0.1:%d with %s", target, pem);
    return r;
}

int broker_tls_ready(const char *certs, const int *ports)
{
    char ca[600];
    snprintf(ca, sizeof ca, "%s/ca.pem", certs);
    if (access(ca, R_OK) != 0) {
        fprintf(stderr, "no test CA at %s: run scripts/brokers/rabbitmq.sh start\n", ca);
        return -1;
    }
    for (const int *p = ports; *p; p++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)*p)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        bool ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
        if (fd >= 0)
            close(fd);
        if (!ok) {
            fprintf(stderr, "nothing accepts on 127.0.0.1:%d (a broker's TLS listener): run "
                            "scripts/brokers/rabbitmq.sh start\n", *p);
            return -1;
        }
    }
    return 0;
}

/* ---- RabbitMQ clean-up -------------------------------------------------- */

#ifdef SUPPORT_HAVE_RMQ
static amqp_connection_state_t rmq_open_(int port)
{
    amqp_connection_state_t c = amqp_new_connection();
    amqp_socket_t *s = amqp_tcp_socket_new(c);
    if (!s || amqp_socket_open(s, "127.0.0.1", port ? port : 5672) != AMQP_STATUS_OK ||
        amqp_login(c, "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, "guest", "guest")
                .reply_type != AMQP_RESPONSE_NORMAL) {
        print_message("clean-up: cannot reach RabbitMQ on 127.0.0.1:%d as guest\n",
                      port ? port : 5672);
        amqp_destroy_connection(c);
        return NULL;
    }
    amqp_channel_open(c, 1);
    amqp_get_rpc_reply(c);
    return c;
}

/* One delete on channel 1; a refused one (it closes the channel) opens
 * the channel again. */
static void rmq_delete_(amqp_connection_state_t c, const char *name, bool exchange)
{
    if (exchange)
        amqp_exchange_delete(c, 1, amqp_cstring_bytes(name), 0);
    else
        amqp_queue_delete(c, 1, amqp_cstring_bytes(name), 0, 0);
    if (amqp_get_rpc_reply(c).reply_type != AMQP_RESPONSE_NORMAL) {
        amqp_channel_open(c, 1);
        amqp_get_rpc_reply(c);
    }
}

static void rmq_close_(amqp_connection_state_t c)
{
    amqp_channel_close(c, 1, AMQP_REPLY_SUCCESS);
    amqp_connection_close(c, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(c);
}
#endif

void rmq_cleanup(int amqp_port, const char *event, const char *const *listeners)
{
#ifdef SUPPORT_HAVE_RMQ
    amqp_connection_state_t c = rmq_open_(amqp_port);
    if (!c)
        return;
    char q[EW_MAX_QUEUE_NAME + 8];
    for (size_t i = 0; listeners && listeners[i]; i++) {
        snprintf(q, sizeof q, "%s::%s", event, listeners[i]);
        rmq_delete_(c, q, false);
        snprintf(q, sizeof q, "%s::%s.dlq", event, listeners[i]);
        rmq_delete_(c, q, false);
    }
    rmq_delete_(c, event, true);
    rmq_close_(c);
#else
    (void)amqp_port;
    (void)event;
    (void)listeners;
#endif
}

void rmq_delete_one(int amqp_port, const char *name, bool exchange)
{
#ifdef SUPPORT_HAVE_RMQ
    amqp_connection_state_t c = rmq_open_(amqp_port);
    if (!c)
        return;
    rmq_delete_(c, name, exchange);
    rmq_close_(c);
#else
    (void)amqp_port;
    (void)name;
    (void)exchange;
#endif
}
