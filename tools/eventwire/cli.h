/* The eventwire command: what the subcommands share. Each subcommand is one
 * file (cmd_<name>.c) with one entry point, listed in main.c's table. */
#ifndef EVENTWIRE_CLI_H
#define EVENTWIRE_CLI_H

#include <eventwire/eventwire.h>
#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

/* Exit codes (documented in every --help). */
enum {
    CLI_OK = 0,          /* done */
    CLI_ERROR = 1,       /* a runtime error: a send refused, a lost event, ... */
    CLI_USAGE = 2,       /* bad arguments: unknown option, bad JSON, unknown format */
    CLI_UNREACHABLE = 3, /* the broker cannot be reached (or its TLS refused) */
    CLI_AUTH = 4         /* the broker refused the credentials */
};

#define CLI_EXIT_CODES                                                           \
    "Exit codes: 0 ok, 1 runtime error, 2 usage error (bad option, bad JSON,\n"  \
    "unknown format), 3 broker unreachable (or TLS handshake failed),\n"         \
    "4 credentials refused. Every error is one line on stderr.\n"

/* A subcommand: argv[0] is its name. Returns the exit code. */
typedef int (*cli_cmd_fn)(int argc, char **argv);

int cli_send(int argc, char **argv);
int cli_listen(int argc, char **argv);
int cli_dlq(int argc, char **argv);
int cli_bench(int argc, char **argv);
int cli_serve(int argc, char **argv); /* the gateway; without libmicrohttpd a stub */

/* One error line "eventwire <cmd>: <text>" on stderr; returns code. */
int cli_fail(const char *cmd, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* An option getopt_long refused (opt '?' unknown, ':' without its value). */
int cli_bad_option(const char *cmd, char **argv, int opt);
/* The exit code for a library error. */
int cli_exit_for(ew_err rc);
/* The failure of a library call: one line "what: reason" (reason alone when
 * what is "") with ew_last_error() (or the code's text) and the exit code
 * for rc. */
int cli_fail_ew(const char *cmd, ew_err rc, const char *what);

/* Options every command that talks to a broker takes. */
typedef struct cli_common {
    int connect_timeout_ms; /* --connect-timeout, default 10000 */
    int send_timeout_ms;    /* --send-timeout, default 10000 */
    const char *server;     /* --server */
    bool verbose;           /* -v: the library's log lines on stderr */
    atomic_bool report_errors; /* the error handler's reports on stderr */
    const char *cmd;
} cli_common;

void cli_common_init(cli_common *c, const char *cmd);
/* getopt_long entries and their handling: returns 1 when opt was one of
 * them (0 otherwise, -1 on a bad value, after printing the error). */
#define CLI_COMMON_LONGOPTS                                                      \
    {"connect-timeout", required_argument, NULL, 1001},                          \
    {"send-timeout", required_argument, NULL, 1002},                             \
    {"server", required_argument, NULL, 1003},                                   \
    {"verbose", no_argument, NULL, 'v'}
#define CLI_COMMON_HELP                                                          \
    "  --connect-timeout MS  give up connecting after MS (default 10000)\n"      \
    "  --send-timeout MS     bound on one send (default 10000)\n"                \
    "  --server NAME         this process's server name (default host-pid)\n"   \
    "  -v, --verbose         the library's log lines on stderr\n"               \
    "  -h, --help            this text\n"
int cli_common_opt(cli_common *c, int opt, const char *arg);

/* Makes and starts a manager on url; on failure prints the error and returns
 * the exit code (*out NULL). before_start (may be NULL) registers listeners
 * and pipelines. */
int cli_manager(const cli_common *c, const char *url, ew_manager **out,
                int (*before_start)(ew_manager *m, void *user), void *user);

/* Parses a non-negative integer option value; -1 with the error printed. */
long cli_number(const char *cmd, const char *opt, const char *text, long min, long max);
/* "msgpack" or "json"; EW_FORMAT_DEFAULT (with the error printed) else. */
ew_format cli_format(const char *cmd, const char *text);

/* ---- headers ---------------------------------------------------------- */

/* A pipeline that sets user headers on every send: the fixed list, and the
 * user headers of copy_from when set (a dead letter being replayed). It
 * notes the message id of the last send made on the calling thread. */
typedef struct cli_headers {
    size_t n;
    char **keys, **values;
    const ew_envelope *copy_from;
} cli_headers;

/* Adds "k=v"; -1 (error printed) when it has no '=' or a bad key. */
int cli_headers_add(cli_headers *h, const char *cmd, const char *kv);
void cli_headers_free(cli_headers *h);
ew_err cli_headers_install(ew_manager *m, cli_headers *h);
/* The id of the last message sent on this thread ("" before any). */
const char *cli_last_message_id(void);

/* ---- JSON ------------------------------------------------------------- */

/* Parses text as a JSON object; on failure writes "bad JSON at line L,
 * column C (byte B): reason" into err and returns NULL. */
json_t *cli_json_object(const char *text, size_t len, char *err, size_t errlen);
/* The body in fmt: compact JSON or a msgpack map. Caller frees *out. */
int cli_json_to_body(const json_t *obj, ew_format fmt, char **out, size_t *len,
                     char *err, size_t errlen);
/* A body (msgpack or JSON) as JSON; NULL with err on failure. */
json_t *cli_body_to_json(const void *data, size_t len, ew_format fmt, char *err,
                         size_t errlen);
/* The envelope as one JSON object: id, event, sent_at, attempt, headers
 * (user headers), dead-letter fields when present, body. NULL with err. */
json_t *cli_envelope_json(const ew_envelope *env, const char *queue, bool with_body,
                          char *err, size_t errlen);
/* Writes obj as one compact line on stdout and flushes (thread-safe); -1
 * when it could not (stdout closed). */
int cli_print_line(const json_t *obj);

#endif
