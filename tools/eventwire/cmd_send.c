/* eventwire send: publishes an event given as a JSON object, with no C
 * struct: the object becomes the event's wire form (a msgpack map, or the
 * JSON object itself), which a listener of the event's typed struct decodes
 * as if a C sender had sent it. */
#include "cli.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void help(FILE *f)
{
    fprintf(f,
            "Usage: eventwire send URL EVENT JSON [options]\n"
            "\n"
            "Publishes EVENT with the fields of the JSON object JSON (\"-\": read it\n"
            "from stdin) to every listener of EVENT, or to one with --to. Prints the\n"
            "message id of each message the broker took, one per line.\n"
            "\n"
            "  --header K=V        a user header (repeatable)\n"
            "  --durable           a durable event: persistent, broker-confirmed\n"
            "                      (must match how the event's listeners declare it)\n"
            "  --format F          msgpack (default) or json\n"
            "  --to LISTENER       only listener LISTENER's queue EVENT::LISTENER\n"
            "                      (an error when that queue does not exist)\n"
            "  --count N           send it N times (default 1)\n"
            CLI_COMMON_HELP
            "\n"
            "Example:\n"
            "  eventwire send rabbitmq://guest:guest@127.0.0.1/ HelloEvent \\\n"
            "      '{\"world\":\"shell\",\"count\":1}' --header session=s-42\n"
            "\n" CLI_EXIT_CODES);
}

static void sent(void *user, ew_err err)
{
    ew_err *slot = user;
    *slot = err;
}

static char *read_stdin(size_t *len)
{
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t r = fread(buf + n, 1, cap - n, stdin);
        n += r;
        if (r == 0)
            break;
        if (n == cap) {
            char *b = realloc(buf, cap * 2);
            if (!b) {
                free(buf);
                return NULL;
            }
            buf = b;
            cap *= 2;
        }
    }
    *len = n;
    return buf;
}

int cli_send(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"header", required_argument, NULL, 'H'}, {"durable", no_argument, NULL, 'd'},
        {"format", required_argument, NULL, 'f'}, {"to", required_argument, NULL, 't'},
        {"count", required_argument, NULL, 'n'},  {"help", no_argument, NULL, 'h'},
        CLI_COMMON_LONGOPTS,                      {NULL, 0, NULL, 0}};
    cli_common c;
    cli_common_init(&c, "send");
    cli_headers headers = {0};
    bool durable = false;
    ew_format fmt = EW_FORMAT_MSGPACK;
    const char *to = NULL;
    long count = 1;
    int code = CLI_OK, opt;
    optind = 1;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":hv", longopts, NULL)) != -1) {
        int r = cli_common_opt(&c, opt, optarg);
        if (r < 0) {
            code = CLI_USAGE;
            goto out;
        }
        if (r > 0)
            continue;
        switch (opt) {
        case 'H':
            if (cli_headers_add(&headers, c.cmd, optarg) < 0) {
                code = CLI_USAGE;
                goto out;
            }
            break;
        case 'd': durable = true; break;
        case 'f':
            if ((fmt = cli_format(c.cmd, optarg)) == EW_FORMAT_DEFAULT) {
                code = CLI_USAGE;
                goto out;
            }
            break;
        case 't': to = optarg; break;
        case 'n':
            if ((count = cli_number(c.cmd, "--count", optarg, 1, 100000000)) < 0) {
                code = CLI_USAGE;
                goto out;
            }
            break;
        case 'h':
            help(stdout);
            goto out;
        default:
            code = cli_bad_option(c.cmd, argv, opt);
            goto out;
        }
    }
    if (argc - optind != 3) {
        code = cli_fail(c.cmd, CLI_USAGE, "expected URL EVENT JSON (see eventwire send --help)");
        goto out;
    }
    const char *url = argv[optind], *event = argv[optind + 1], *json = argv[optind + 2];

    /* Everything about the input is checked before connecting. */
    char err[512];
    char *input = NULL;
    size_t input_len = strlen(json);
    if (strcmp(json, "-") == 0 && !(input = read_stdin(&input_len))) {
        code = cli_fail(c.cmd, CLI_ERROR, "reading stdin: out of memory");
        goto out;
    }
    json_t *obj = cli_json_object(input ? input : json, input_len, err, sizeof err);
    free(input);
    if (!obj) {
        code = cli_fail(c.cmd, CLI_USAGE, "%s", err);
        goto out;
    }
    char *body = NULL;
    size_t body_len = 0;
    int pr = cli_json_to_body(obj, fmt, &body, &body_len, err, sizeof err);
    json_decref(obj);
    if (pr < 0) {
        code = cli_fail(c.cmd, CLI_USAGE, "%s", err);
        goto out;
    }

    ew_event_desc desc = {.type = &ew_raw_type, .name = event, .durable = durable,
                          .format = fmt};
    ew_manager *m;
    if ((code = cli_manager(&c, url, &m, NULL, NULL)) != CLI_OK) {
        free(body);
        goto out;
    }
    ew_err rc = cli_headers_install(m, &headers);
    if (rc != EW_OK) {
        code = cli_fail_ew(c.cmd, rc, "headers");
        goto done;
    }
    ew_raw_event raw = {body, body_len, fmt};
    if (count == 1) {
        rc = to ? ew_send_to(m, &desc, to, &raw) : ew_send(m, &desc, &raw);
        if (rc != EW_OK) {
            if (rc == EW_ENOTFOUND && to)
                code = cli_fail(c.cmd, CLI_ERROR, "no queue %s::%s: %s", event, to,
                                ew_last_error());
            else
                code = cli_fail_ew(c.cmd, rc, "");
            goto done;
        }
        printf("%s\n", cli_last_message_id());
        goto done;
    }
    /* Many: pipelined; the ids come out in order once all are settled. */
    char(*ids)[40] = calloc((size_t)count, sizeof *ids);
    ew_err *outcome = calloc((size_t)count, sizeof *outcome);
    if (!ids || !outcome) {
        free(ids);
        free(outcome);
        code = cli_fail(c.cmd, CLI_ERROR, "out of memory for %ld sends", count);
        goto done;
    }
    long issued = 0;
    ew_err first = EW_OK;
    char first_text[512] = "";
    for (; issued < count; issued++) {
        rc = ew_send_async(m, &desc, to, &raw, sent, &outcome[issued]);
        if (rc != EW_OK) {
            first = rc;
            snprintf(first_text, sizeof first_text, "%s", ew_last_error());
            break;
        }
        snprintf(ids[issued], sizeof ids[issued], "%s", cli_last_message_id());
    }
    rc = ew_flush(m, c.send_timeout_ms + 5000);
    /* After the stop no completion is left to run. */
    ew_manager_stop(m, c.send_timeout_ms);
    long failed = count - issued;
    for (long i = 0; i < issued; i++) {
        if (rc == EW_OK && outcome[i] == EW_OK) {
            printf("%s\n", ids[i]);
            continue;
        }
        failed++;
        if (first == EW_OK) {
            first = rc != EW_OK ? rc : outcome[i];
            snprintf(first_text, sizeof first_text, "%s", ew_strerror(first));
        }
    }
    fflush(stdout);
    free(ids);
    free(outcome);
    if (failed)
        code = cli_fail(c.cmd, cli_exit_for(first), "%ld of %ld sends failed: %s", failed,
                        count, first_text[0] ? first_text : ew_strerror(first));
done:
    ew_manager_stop(m, c.send_timeout_ms);
    ew_manager_free(m);
    free(body);
out:
    cli_headers_free(&headers);
    return code;
}
