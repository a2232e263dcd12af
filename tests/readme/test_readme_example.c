/* The README's "complete example", exactly as printed: the C block under
 * "## A complete example" is cut out of README.md at test time, built with
 * the compiler of this build against this build's library, and run.
 *   - local:// (the default): it prints its one event, every run;
 *   - RabbitMQ: every line it prints is that event, and what a run did not
 *     print is still on its queue (a graceful stop gives what its handlers
 *     did not take back to the broker; the next run prints it): printed +
 *     queued = sent, nothing lost, nothing twice.
 * usage: test_readme_example README.md */
#include "rabbitmq/rmq_test.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>

static const char *README;
static char dir[64], exe[128];

#define WANT "world 1 (session none)\n"

/* Writes the C block of the README's complete example to path. */
static void extract(const char *path)
{
    FILE *in = fopen(README, "r");
    if (!in)
        fail_msg("cannot read %s", README);
    FILE *out = fopen(path, "w");
    char line[1024];
    int state = 0; /* 0 before the section, 1 in it, 2 in the block */
    size_t lines = 0;
    while (fgets(line, sizeof line, in) && state < 3) {
        if (state == 0 && strncmp(line, "## A complete example", 21) == 0)
            state = 1;
        else if (state == 1 && strncmp(line, "```c", 4) == 0)
            state = 2;
        else if (state == 2 && strncmp(line, "```", 3) == 0)
            state = 3;
        else if (state == 2) {
            fputs(line, out);
            lines++;
        }
    }
    fclose(in);
    fclose(out);
    if (state != 3 || lines < 10)
        fail_msg("%s: no ```c block under \"## A complete example\"", README);
}

/* Runs cmd; its output in a malloc'd string. */
static char *run(const char *cmd, int *status)
{
    FILE *f = popen(cmd, "r");
    if (!f)
        fail_msg("cannot run %s", cmd);
    size_t cap = 1 << 16, n = 0, got;
    char *out = malloc(cap);
    while ((got = fread(out + n, 1, cap - n - 1, f)) > 0)
        n += got;
    out[n] = '\0';
    *status = pclose(f);
    return out;
}

static int build(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/ew-readme-XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    char src[128], cmd[2048];
    snprintf(src, sizeof src, "%s/example.c", dir);
    snprintf(exe, sizeof exe, "%s/example", dir);
    extract(src);
    snprintf(cmd, sizeof cmd,
             "%s -std=c11 -Wall -Werror %s -I%s -I%s %s -o %s -L%s -leventwire "
             "-Wl,-rpath,%s 2>&1",
             EW_TEST_CC, EW_TEST_CFLAGS, EW_TEST_INCLUDE, EW_TEST_BIN_INCLUDE, src, exe,
             EW_TEST_LIBDIR, EW_TEST_LIBDIR);
    int st;
    char *out = run(cmd, &st);
    if (st != 0)
        fprintf(stderr, "the README's example does not build:\n%s\n%s\n", cmd, out);
    free(out);
    return st == 0 ? 0 : -1;
}

static int clean(void **state)
{
    (void)state;
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static char *run_example(const char *url)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s%s%s %s 2>&1", url ? "EW_URL='" : "", url ? url : "",
             url ? "'" : "", exe);
    int st;
    char *out = run(cmd, &st);
    if (st != 0)
        fail_msg("%s exited with %d:\n%s", cmd, st, out);
    return out;
}

static void prints_its_event_on_local(void **state)
{
    (void)state;
    /* The default URL; a loaded machine is where a stop that drops what is
     * queued shows: several runs. */
    for (int i = 0; i < 5; i++) {
        char *out = run_example(NULL);
        if (strcmp(out, WANT) != 0)
            fail_msg("run %d on local:// printed \"%s\", expected \"%s\"", i, out, WANT);
        free(out);
    }
}

/* Lines of out that are exactly WANT; fails on any other line (a log line
 * would go to stderr only on errors, and then the example is wrong). */
static size_t count_wanted(const char *out)
{
    size_t n = 0;
    for (const char *p = out; *p;) {
        const char *e = strchr(p, '\n');
        size_t len = e ? (size_t)(e - p + 1) : strlen(p);
        if (len != strlen(WANT) || strncmp(p, WANT, len) != 0)
            fail_msg("unexpected output line: \"%.*s\" in:\n%s", (int)len, p, out);
        n++;
        p += len;
    }
    return n;
}

static void prints_its_event_on_rabbitmq(void **state)
{
    (void)state;
    /* The example's names are fixed (HelloEvent, HelloListener): one run of
     * this test at a time on the broker, from any checkout. */
    int lock = open("/tmp/eventwire-readme-example.lock", O_CREAT | O_RDWR, 0666);
    if (lock < 0 || flock(lock, LOCK_EX) != 0)
        fail_msg("cannot take /tmp/eventwire-readme-example.lock");
    const char *queue = "HelloEvent::HelloListener";
    raw_delete(queue, false);
    /* A run may stop before its own event reached it (it then stays on the
     * queue, for the next run): run until one printed, at most 10 times. */
    size_t printed = 0, runs = 0;
    while (runs < 10 && (runs < 2 || printed == 0)) {
        char *out = run_example(rmq_test_url());
        printed += count_wanted(out);
        runs++;
        free(out);
    }
    /* What was not printed waits on the durable queue. */
    amqp_connection_state_t c = raw_connect();
    size_t queued = 0;
    amqp_message_t msg;
    while (raw_get(c, queue, &msg)) {
        amqp_destroy_message(&msg);
        queued++;
    }
    raw_close(c);
    raw_delete(queue, false);
    raw_delete("HelloEvent::HelloListener.dlq", false);
    flock(lock, LOCK_UN);
    close(lock);
    print_message("%zu runs on RabbitMQ: %zu printed, %zu left on %s\n", runs, printed, queued,
                  queue);
    if (printed + queued != runs)
        fail_msg("%zu events sent, %zu printed and %zu left on the queue: %s", runs, printed,
                 queued, printed + queued < runs ? "some were lost" : "some came twice");
    if (printed == 0)
        fail_msg("the example printed nothing in %zu runs on RabbitMQ", runs);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s README.md\n", argv[0]);
        return 2;
    }
    README = argv[1];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(prints_its_event_on_local),
        cmocka_unit_test(prints_its_event_on_rabbitmq),
    };
    return cmocka_run_group_tests_name("readme_example", tests, build, clean);
}
