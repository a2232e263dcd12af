/* What every subcommand shares: errors and exit codes, common options, the
 * manager, and the header pipeline. */
#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cli_fail(const char *cmd, int code, const char *fmt, ...)
{
    char text[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    /* One line, whatever the text holds. */
    for (char *p = text; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    fprintf(stderr, "eventwire%s%s: %s\n", cmd && cmd[0] ? " " : "", cmd ? cmd : "", text);
    return code;
}

int cli_bad_option(const char *cmd, char **argv, int opt)
{
    const char *arg = optind > 0 ? argv[optind - 1] : "?";
    if (opt == ':')
        return cli_fail(cmd, CLI_USAGE, "option %s needs a value (see eventwire %s --help)",
                        arg, cmd);
    return cli_fail(cmd, CLI_USAGE, "unknown option %s (see eventwire %s --help)", arg, cmd);
}

int cli_exit_for(ew_err rc)
{
    switch (rc) {
    case EW_OK: return CLI_OK;
    case EW_EAUTH: return CLI_AUTH;
    case EW_ECONNECT:
    case EW_ETLS: return CLI_UNREACHABLE;
    default: return CLI_ERROR;
    }
}

int cli_fail_ew(const char *cmd, ew_err rc, const char *what)
{
    const char *why = ew_last_error();
    return cli_fail(cmd, cli_exit_for(rc), "%s%s%s", what, what[0] ? ": " : "",
                    why[0] ? why : ew_strerror(rc));
}

void cli_common_init(cli_common *c, const char *cmd)
{
    memset(c, 0, sizeof *c);
    c->connect_timeout_ms = 10000;
    c->send_timeout_ms = 10000;
    c->cmd = cmd;
}

long cli_number(const char *cmd, const char *opt, const char *text, long min, long max)
{
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno || end == text || *end || v < min || v > max) {
        cli_fail(cmd, CLI_USAGE, "%s: '%s' is not a number from %ld to %ld", opt, text, min,
                 max);
        return -1;
    }
    return v;
}

ew_format cli_format(const char *cmd, const char *text)
{
    if (strcmp(text, "msgpack") == 0)
        return EW_FORMAT_MSGPACK;
    if (strcmp(text, "json") == 0)
        return EW_FORMAT_JSON;
    cli_fail(cmd, CLI_USAGE, "unknown event format '%s' (msgpack or json)", text);
    return EW_FORMAT_DEFAULT;
}

int cli_common_opt(cli_common *c, int opt, const char *arg)
{
    long v;
    switch (opt) {
    case 1001:
        if ((v = cli_number(c->cmd, "--connect-timeout", arg, 1, 3600000)) < 0)
            return -1;
        c->connect_timeout_ms = (int)v;
        return 1;
    case 1002:
        if ((v = cli_number(c->cmd, "--send-timeout", arg, 1, 3600000)) < 0)
            return -1;
        c->send_timeout_ms = (int)v;
        return 1;
    case 1003:
        c->server = arg;
        return 1;
    case 'v':
        c->verbose = true;
        return 1;
    default:
        return 0;
    }
}

/* The library logs to stderr only when asked (-v or $EW_LOG): the command
 * itself prints one line per error. */
static void log_sink(void *user, ew_log_level level, const char *msg)
{
    (void)user;
    (void)level;
    fprintf(stderr, "%s\n", msg);
}

static void quiet_sink(void *user, ew_log_level level, const char *msg)
{
    (void)user;
    (void)level;
    (void)msg;
}

static void on_error(void *user, const ew_error_info *info)
{
    const cli_common *c = user;
    if (!atomic_load(&c->report_errors) || info->code == EW_EDISCONNECTED)
        return;
    cli_fail(c->cmd, 0, "%s%s%s", info->queue ? info->queue : "", info->queue ? ": " : "",
             info->text ? info->text : ew_strerror(info->code));
}

int cli_manager(const cli_common *c, const char *url, ew_manager **out,
                int (*before_start)(ew_manager *m, void *user), void *user)
{
    *out = NULL;
    bool logs = c->verbose || getenv("EW_LOG");
    ew_options o = {.server_name = c->server,
                    .send_timeout_ms = c->send_timeout_ms,
                    .start_timeout_ms = c->connect_timeout_ms,
                    .on_error = on_error,
                    .error_user = (void *)(uintptr_t)c,
                    .log = logs ? log_sink : quiet_sink,
                    .log_level = c->verbose && !getenv("EW_LOG") ? EW_LOG_INFO
                                                                 : EW_LOG_DEFAULT};
    ew_manager *m;
    ew_err rc = ew_manager_new(&m, url, &o);
    if (rc != EW_OK) {
        const char *why = ew_last_error();
        return cli_fail(c->cmd, rc == EW_EINVAL || rc == EW_ENOTFOUND ? CLI_USAGE : CLI_ERROR,
                        "bad URL: %s", why[0] ? why : ew_strerror(rc));
    }
    if (before_start) {
        int code = before_start(m, user);
        if (code != CLI_OK) {
            ew_manager_free(m);
            return code;
        }
    }
    if ((rc = ew_manager_start(m)) != EW_OK) {
        int code;
        if (rc == EW_EAUTH)
            code = cli_fail_ew(c->cmd, rc, "the broker refused the credentials");
        else if (rc == EW_ECONNECT || rc == EW_ETLS || rc == EW_ETIMEDOUT)
            code = cli_fail(c->cmd, CLI_UNREACHABLE, "broker unreachable: %s",
                            ew_last_error()[0] ? ew_last_error() : ew_strerror(rc));
        else
            code = cli_fail_ew(c->cmd, rc, "start");
        ew_manager_free(m);
        return code;
    }
    *out = m;
    return CLI_OK;
}

/* ---- headers ------------------------------------------------------------ */

static _Thread_local char last_id[40];

const char *cli_last_message_id(void)
{
    return last_id;
}

int cli_headers_add(cli_headers *h, const char *cmd, const char *kv)
{
    const char *eq = strchr(kv, '=');
    if (!eq || eq == kv)
        return cli_fail(cmd, CLI_USAGE, "--header '%s': expected key=value", kv), -1;
    size_t klen = (size_t)(eq - kv);
    for (size_t i = 0; i < klen; i++) {
        char ch = kv[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '-' || ch == '_' || ch == '.'))
            return cli_fail(cmd, CLI_USAGE,
                            "--header '%s': a key takes letters, digits and -_. only", kv),
                   -1;
    }
    if (klen >= 3 && strncasecmp(kv, "ew-", 3) == 0)
        return cli_fail(cmd, CLI_USAGE, "--header '%s': keys starting with ew- are the "
                        "library's own", kv), -1;
    char **k = realloc(h->keys, (h->n + 1) * sizeof *k);
    if (k)
        h->keys = k;
    char **v = realloc(h->values, (h->n + 1) * sizeof *v);
    if (v)
        h->values = v;
    if (!k || !v)
        return cli_fail(cmd, CLI_ERROR, "out of memory"), -1;
    h->keys[h->n] = strndup(kv, klen);
    h->values[h->n] = strdup(eq + 1);
    if (!h->keys[h->n] || !h->values[h->n]) {
        free(h->keys[h->n]);
        free(h->values[h->n]);
        return cli_fail(cmd, CLI_ERROR, "out of memory"), -1;
    }
    h->n++;
    return 0;
}

void cli_headers_free(cli_headers *h)
{
    for (size_t i = 0; i < h->n; i++) {
        free(h->keys[i]);
        free(h->values[i]);
    }
    free(h->keys);
    free(h->values);
    memset(h, 0, sizeof *h);
}

static ew_err headers_send(void *user, ew_envelope *env, const ew_event_desc *event)
{
    (void)event;
    const cli_headers *h = user;
    ew_err rc;
    if (h->copy_from) {
        size_t n = ew_envelope_header_count(h->copy_from);
        for (size_t i = 0; i < n; i++) {
            const char *k, *v;
            if (ew_envelope_header_at(h->copy_from, i, &k, &v) != EW_OK ||
                strncmp(k, "ew-", 3) == 0)
                continue;
            if ((rc = ew_envelope_set_header(env, k, v)) != EW_OK)
                return rc;
        }
    }
    for (size_t i = 0; i < h->n; i++)
        if ((rc = ew_envelope_set_header(env, h->keys[i], h->values[i])) != EW_OK)
            return rc;
    const char *id = ew_envelope_message_id(env);
    snprintf(last_id, sizeof last_id, "%s", id ? id : "");
    return EW_OK;
}

ew_err cli_headers_install(ew_manager *m, cli_headers *h)
{
    ew_pipeline p = {.name = "eventwire-cli-headers", .send = headers_send};
    return ew_add_pipeline(m, &p, h);
}

#ifndef EW_WITH_SERVE
int cli_serve(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return cli_fail("serve", CLI_ERROR, "this eventwire was built without libmicrohttpd, "
                    "so without serve (install libmicrohttpd-dev and build again)");
}
#endif
