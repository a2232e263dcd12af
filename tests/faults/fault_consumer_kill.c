/* Fault 3: a consumer process is killed (SIGKILL) in the middle of
 * handling. A child process (this program run again with --child) consumes
 * listener Work; its handlers block, holding their events unacknowledged.
 * Once all of its workers are inside a handler the parent kills it. A
 * second instance of Work must then get every event, the ones the child
 * held included, and see those as redeliveries (ew_delivery_attempt >= 2:
 * that is how core turns a message that kills its consumer every time into
 * a dead letter instead of a crash loop).
 *
 *   fault_consumer_kill URL
 *
 * Not for local://: its broker lives inside one process. */
#include "faults.h"

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>

enum { N = 400, CHILD_WORKERS = 4, RESUME_BOUND_MS = 15000 };

static const char *URL;
static char SELF[4096];

/* ---- the child ---------------------------------------------------------- */

static int child_out = 1;

static ew_err block_forever(ew_delivery *d, const void *event, void *user)
{
    (void)d;
    (void)user;
    char line[32];
    int n = snprintf(line, sizeof line, "%lld\n", (long long)((const conf_event *)event)->id);
    ssize_t w = write(child_out, line, (size_t)n);
    (void)w;
    for (;;)
        pause(); /* until SIGKILL */
    return EW_OK;
}

static int child_main(const char *url, const char *event)
{
    ew_event_desc ev = {.type = &conf_event_type, .name = event, .durable = true};
    ew_options o = {.server_name = "doomed", .start_timeout_ms = 20000};
    ew_manager *m = NULL;
    if (ew_manager_new(&m, url, &o) != EW_OK)
        return 3;
    ew_listener_desc d = {.event = &ev, .name = "Work", .concurrency = CHILD_WORKERS,
                          .prefetch = 20};
    if (ew_listen(m, &d, block_forever, NULL) != EW_OK || ew_manager_start(m) != EW_OK)
        return 4;
    ssize_t w = write(child_out, "ready\n", 6);
    (void)w;
    for (;;)
        pause();
}

/* ---- the parent --------------------------------------------------------- */

/* Reads one line from fd within timeout_ms; false on EOF or timeout. */
static bool read_line(int fd, char *buf, size_t len, int timeout_ms)
{
    size_t n = 0;
    int64_t deadline = ewi_now_ms() + timeout_ms;
    while (n + 1 < len) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, ewi_left_ms(deadline)) <= 0)
            return false;
        if (read(fd, buf + n, 1) != 1)
            return false;
        if (buf[n] == '\n')
            break;
        n++;
    }
    buf[n] = '\0';
    return true;
}

static void killed_consumer_events_go_to_the_other_instance(void **state)
{
    (void)state;
    ftarget tg = ftarget_of(URL);
    assert_false(tg.local);
    EV(ev, "FaultKill", true);

    int pipefd[2];
    assert_int_equal(pipe(pipefd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(pipefd[0]); /* first: it may be fd 3 itself */
        if (pipefd[1] != 3)
            dup2(pipefd[1], 3);
        execl(SELF, SELF, "--child", URL, ev.name, (char *)NULL);
        _exit(127);
    }
    close(pipefd[1]);
    char line[64];
    bool ready = read_line(pipefd[0], line, sizeof line, 30000) && strcmp(line, "ready") == 0;
    if (!ready) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        fail_msg("the child consumer did not start (%s)", line);
    }

    ew_manager *sender = mgr_new(URL, "sender");
    assert_int_equal(ew_manager_start(sender), EW_OK);
    fsends s;
    fsends_init(&s, N);
    for (size_t i = 0; i < N; i++)
        fsend_async(sender, &ev, &s, i);
    assert_int_equal(ew_flush(sender, 60000), EW_OK);

    /* Every worker of the child inside a handler: then kill it. */
    int64_t held[CHILD_WORKERS];
    size_t nheld = 0;
    while (nheld < CHILD_WORKERS && read_line(pipefd[0], line, sizeof line, 30000))
        held[nheld++] = atoll(line);
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    int64_t t_kill = ewi_now_ms();
    close(pipefd[0]);

    flow f;
    flow_init(&f, N);
    flow_mark(&f);
    ew_manager *other = mgr_new(URL, "survivor");
    flow_listen(other, &ev, "Work", 4, 0, &f, "survivor");
    assert_int_equal(ew_manager_start(other), EW_OK);
    bool all = tally_wait_all(&f.t, 60000);
    ewi_sleep_ms(300);
    int64_t resume = flow_resume_ms(&f);
    size_t dups = tally_dups(&f.t), distinct = tally_total(&f.t) - dups;
    size_t lost = lost_of(&s, &f), failed = atomic_load(&s.failed);
    size_t held_redelivered = 0, held_handled = 0;
    pthread_mutex_lock(&f.t.mu);
    for (size_t i = 0; i < nheld; i++) {
        held_handled += f.t.seen[held[i]] > 0;
        held_redelivered += f.t.max_attempt_seen[held[i]] >= 2;
    }
    pthread_mutex_unlock(&f.t.mu);
    bool ok = nheld == CHILD_WORKERS && WIFSIGNALED(status) && all && lost == 0 &&
              failed == 0 && held_handled == nheld && held_redelivered == nheld &&
              resume >= 0 && resume <= RESUME_BOUND_MS;
    fault_result("consumer-kill", &tg,
                 "sent=%d handled=%zu lost=%zu duplicated=%zu resume_ms=%lld held=%zu "
                 "held_handled=%zu held_seen_as_redelivery=%zu status=%s",
                 N, distinct, lost, dups, (long long)resume, nheld, held_handled,
                 held_redelivered, ok ? "pass" : "fail");
    print_message("killed the child %lld ms before the survivor started; "
                  "it held ids %lld %lld %lld %lld\n",
                  (long long)(ewi_now_ms() - t_kill), (long long)held[0],
                  (long long)(nheld > 1 ? held[1] : -1), (long long)(nheld > 2 ? held[2] : -1),
                  (long long)(nheld > 3 ? held[3] : -1));
    ew_manager_free(other);
    ew_manager_free(sender);
    const char *ls[] = {"Work", NULL};
    cleanup_event(&tg, ev.name, ls);

    /* Freed before the checks: a failure reports no leak of its own. */
    tally_free(&f.t);
    fsends_free(&s);
    assert_int_equal(nheld, CHILD_WORKERS);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(failed, 0);
    assert_true(all);
    assert_int_equal(lost, 0);
    assert_int_equal(held_handled, nheld);
    if (held_redelivered != nheld)
        fail_msg("%zu of the %zu events the killed consumer held came back with "
                 "ew_delivery_attempt() == 1: the redelivery was not counted",
                 nheld - held_redelivered, nheld);
    assert_true(resume >= 0 && resume <= RESUME_BOUND_MS);
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "--child") == 0) {
        child_out = 3;
        return child_main(argv[2], argv[3]);
    }
    if (argc != 2) {
        fprintf(stderr, "usage: %s URL\n", argv[0]);
        return 2;
    }
    URL = argv[1];
    ssize_t n = readlink("/proc/self/exe", SELF, sizeof SELF - 1);
    if (n <= 0)
        return 2;
    SELF[n] = '\0';
    support_init(URL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(killed_consumer_events_go_to_the_other_instance),
    };
    return cmocka_run_group_tests_name("fault: consumer killed", tests, NULL, NULL);
}
