/* eventwire listen: one JSON line per event on stdout, until SIGINT or
 * SIGTERM, which drain the listener (handlers finish, what was not handled
 * goes back to the broker) before the command exits 0. */
#include "cli.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void help(FILE *f)
{
    fprintf(f,
            "Usage: eventwire listen URL EVENT [options]\n"
            "\n"
            "Listens to EVENT and prints each one as a JSON line on stdout:\n"
            "  {\"id\":..., \"event\":..., \"sent_at\":ms, \"attempt\":n, \"queue\":\"E::L\",\n"
            "   \"headers\":{user headers}, \"format\":\"msgpack\"|\"json\", \"body\":{...}}\n"
            "msgpack bin values print as base64 text. Once it consumes it writes\n"
            "\"eventwire listen: listening on <queue>\" on stderr. SIGINT or SIGTERM\n"
            "drains it and it exits 0. When stdout is closed it stops the same way\n"
            "(the event it could not print goes to the listener's dead letters).\n"
            "\n"
            "  --listener NAME     listen as listener NAME: queue EVENT::NAME, shared\n"
            "                      with (competing against) the other instances of\n"
            "                      NAME. Without it: per-process listener\n"
            "                      \"eventwire\", a copy of every event for this command\n"
            "  --per-process       with --listener: a queue of this process's own,\n"
            "                      EVENT::NAME-<server>, removed after it stops\n"
            "  --durable           the event is durable (must match the senders'\n"
            "                      and the other listeners' declaration)\n"
            CLI_COMMON_HELP
            "\n"
            "Example:\n"
            "  eventwire listen rabbitmq://guest:guest@127.0.0.1/ HelloEvent\n"
            "\n" CLI_EXIT_CODES);
}

static ew_err on_event(ew_delivery *d, const void *event, void *user)
{
    (void)event;
    (void)user;
    char err[512];
    json_t *line = cli_envelope_json(ew_delivery_envelope(d), ew_delivery_queue(d), true,
                                     err, sizeof err);
    if (!line) {
        cli_fail("listen", 0, "%s", err);
        return EW_ENORETRY; /* cannot print it: a dead letter, not a loop */
    }
    int printed = cli_print_line(line);
    json_decref(line);
    if (printed < 0) {
        /* Nobody reads any more (a closed pipe): stop, and keep this one
         * as a dead letter rather than acknowledge what was not shown. */
        static atomic_flag said = ATOMIC_FLAG_INIT;
        if (!atomic_flag_test_and_set(&said))
            cli_fail("listen", 0, "stdout is closed: stopping");
        kill(getpid(), SIGTERM);
        return EW_ENORETRY;
    }
    return EW_OK;
}

typedef struct listen_setup {
    ew_event_desc desc;
    ew_listener_desc l;
} listen_setup;

static int add_listener(ew_manager *m, void *user)
{
    listen_setup *s = user;
    ew_err rc = ew_listen(m, &s->l, on_event, NULL);
    if (rc != EW_OK)
        return cli_fail_ew("listen", rc, "listener");
    return CLI_OK;
}

int cli_listen(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"listener", required_argument, NULL, 'l'}, {"per-process", no_argument, NULL, 'p'},
        {"durable", no_argument, NULL, 'd'},        {"help", no_argument, NULL, 'h'},
        CLI_COMMON_LONGOPTS,                        {NULL, 0, NULL, 0}};
    cli_common c;
    cli_common_init(&c, "listen");
    const char *listener = NULL;
    bool per_process = false, durable = false;
    int opt;
    optind = 1;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":hv", longopts, NULL)) != -1) {
        int r = cli_common_opt(&c, opt, optarg);
        if (r < 0)
            return CLI_USAGE;
        if (r > 0)
            continue;
        switch (opt) {
        case 'l': listener = optarg; break;
        case 'p': per_process = true; break;
        case 'd': durable = true; break;
        case 'h': help(stdout); return CLI_OK;
        default: return cli_bad_option(c.cmd, argv, opt);
        }
    }
    if (argc - optind != 2)
        return cli_fail(c.cmd, CLI_USAGE, "expected URL EVENT (see eventwire listen --help)");
    listen_setup s = {
        .desc = {.type = &ew_raw_type, .name = argv[optind + 1], .durable = durable},
        .l = {.name = listener ? listener : "eventwire",
              .per_process = listener ? per_process : true,
              .concurrency = 1, /* lines in queue order */
              .retry = {.attempts = 1}}};
    s.l.event = &s.desc;

    /* Every thread the library starts inherits this mask: the signals come
     * to sigwait below only. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    ew_manager *m;
    int code = cli_manager(&c, argv[optind], &m, add_listener, &s);
    if (code != CLI_OK)
        return code;
    /* From now on what goes wrong while listening is a line on stderr. */
    atomic_store(&c.report_errors, true);
    char queue[EW_MAX_QUEUE_NAME];
    if (ew_queue_name(m, &s.l, queue, sizeof queue) != EW_OK)
        snprintf(queue, sizeof queue, "%s::%s", s.desc.name, s.l.name);
    fprintf(stderr, "eventwire listen: listening on %s\n", queue);
    fflush(stderr);
    int sig = 0;
    sigwait(&sigs, &sig);
    ew_err rc = ew_manager_stop(m, 10000);
    ew_manager_free(m);
    if (rc != EW_OK && rc != EW_ETIMEDOUT)
        return cli_fail_ew(c.cmd, rc, "stop");
    return CLI_OK;
}
