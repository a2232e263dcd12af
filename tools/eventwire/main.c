/* eventwire: send, watch and replay events from a shell.
 *
 *   eventwire <command> [arguments] (see eventwire --help)
 *
 * A command is one file with one entry point; this table lists them. */
#include "cli.h"

#include <stdio.h>
#include <string.h>

static const struct {
    const char *name;
    cli_cmd_fn fn;
    const char *summary;
} commands[] = {
    {"send", cli_send, "publish an event given as a JSON object"},
    {"listen", cli_listen, "print every event of a listener as a JSON line"},
    {"dlq", cli_dlq, "list, show, replay or purge a listener's dead letters"},
    {"bench", cli_bench, "a throughput and latency run through one listener"},
    {"serve", cli_serve, "an HTTP gateway: POST events, stream them as Server-Sent Events"},
};

static void usage(FILE *f)
{
    fprintf(f, "Usage: eventwire <command> [arguments]\n\nCommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\n`eventwire <command> --help` describes each one.\n\n"
               "URLs: local://, rabbitmq://user:pass@host:5672/vhost,\n"
               "stomp://host:61613?dialect=rabbitmq|activemq|artemis,\n"
               "amqp://host:5672?dialect=rabbitmq|artemis (and their TLS forms).\n"
               "Credentials may also come from $EW_USER and $EW_PASSWORD.\n"
               "local:// is inside this one process: a send reaches no other process.\n\n"
               CLI_EXIT_CODES);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return CLI_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return CLI_OK;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("eventwire %s\n", EW_VERSION_STRING);
        return CLI_OK;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].fn(argc - 1, argv + 1);
    return cli_fail("", CLI_USAGE, "unknown command '%s' (try eventwire --help)", argv[1]);
}
