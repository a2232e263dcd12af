/* The one table of URL options (see options.h). A transport asks for its
 * options by its EWI_OPTS_* bit; names, units, defaults and ranges live only
 * here, so the same option means the same thing on every transport. */
#include "options.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LOCAL EWI_OPTS_LOCAL
#define RMQ EWI_OPTS_RABBITMQ
#define STOMP EWI_OPTS_STOMP
#define AMQP EWI_OPTS_AMQP
#define BROKERS EWI_OPTS_BROKERS
#define ALL EWI_OPTS_ALL

static const ewi_opt_def table[EWI_OPT_COUNT] = {
    [EWI_OPT_PREFETCH] = {"prefetch", EWI_OPTK_INT, ALL, false, "messages", 256, 1, 1000000,
                          false, {NULL},
                          "default prefetch of listeners (a listener's own prefetch wins)"},
    [EWI_OPT_CAPACITY] = {"capacity", EWI_OPTK_INT, LOCAL, false, "messages", 10000, 1,
                          100000000, false, {NULL},
                          "messages a queue holds at most (ready plus unacknowledged)"},
    [EWI_OPT_DIALECT] = {"dialect", EWI_OPTK_WORD, STOMP | AMQP, false, NULL, 0, 0, 0, false,
                         {"rabbitmq", "activemq", "artemis", NULL},
                         "the broker behind the protocol"},
    [EWI_OPT_QUEUE_NAMING] = {"queue_naming", EWI_OPTK_WORD, AMQP, false, NULL, 0, 0, 0, false,
                              {"eventwire", "aspyx", NULL},
                              "listener queues named E::L[-S] or, as aspyx-event does, L[-S]"},
    [EWI_OPT_VHOST] = {"vhost", EWI_OPTK_TEXT, AMQP, false, NULL, 0, 0, 0, false, {NULL},
                       "the RabbitMQ vhost (or give it as the URL path)"},
    [EWI_OPT_SASL] = {"sasl", EWI_OPTK_TEXT, AMQP, false, NULL, 0, 0, 0, false, {NULL},
                      "SASL mechanisms allowed, space separated"},
    [EWI_OPT_AMQP_PORT] = {"amqp_port", EWI_OPTK_TEXT, STOMP, false, NULL, 0, 0, 0, false,
                           {NULL},
                           "AMQP 0-9-1 port for RabbitMQ declarations (0: none; with "
                           "several hosts, one port for all or one per host, comma "
                           "separated)"},
    [EWI_OPT_HEARTBEAT_MS] = {"heartbeat_ms", EWI_OPTK_INT, BROKERS, false, "ms", 10000, 100,
                              3600000, true, {NULL},
                              "heartbeat interval; a connection silent for two intervals "
                              "counts as lost (0: off)"},
    [EWI_OPT_CONNECT_TIMEOUT_MS] = {"connect_timeout_ms", EWI_OPTK_INT, RMQ | STOMP, false,
                                    "ms", 5000, 100, 600000, false, {NULL},
                                    "one TCP connect plus handshake"},
    [EWI_OPT_RPC_TIMEOUT_MS] = {"rpc_timeout_ms", EWI_OPTK_INT, RMQ, false, "ms", 10000, 100,
                                600000, false, {NULL}, "one declaration round trip"},
    [EWI_OPT_RECONNECT_MAX_MS] = {"reconnect_max_ms", EWI_OPTK_INT, BROKERS, false, "ms", 5000,
                                  100, 600000, false, {NULL}, "cap of the reconnect backoff"},
    [EWI_OPT_MAX_INFLIGHT] = {"max_inflight", EWI_OPTK_INT, BROKERS, false, "messages",
                              EWI_DEFAULT_MAX_INFLIGHT, 1, 1000000, false, {NULL},
                              "sends queued or awaiting confirmation at most"},
    [EWI_OPT_MAX_INFLIGHT_BYTES] = {"max_inflight_bytes", EWI_OPTK_INT, BROKERS, false, "bytes",
                                    EWI_DEFAULT_MAX_INFLIGHT_BYTES, 1024, 2147483647L, false,
                                    {NULL},
                                    "bodies of the sends in that window, in bytes, at most (a "
                                    "larger body alone is let through)"},
    [EWI_OPT_PER_PROCESS_EXPIRES_MS] = {"per_process_expires_ms", EWI_OPTK_INT, BROKERS, false,
                                        "ms", 60000, 1000, 2147483647L, false, {NULL},
                                        "RabbitMQ: a per_process queue unused this long is "
                                        "deleted (x-expires)"},
    [EWI_OPT_QUEUE_CHECK_MS] = {"queue_check_ms", EWI_OPTK_INT, AMQP, false, "ms", 0, 0,
                                86400000L, false, {NULL},
                                "RabbitMQ: how often consumed queues are checked to exist "
                                "(0: never)"},
    [EWI_OPT_QUEUE_TYPE] = {"queue_type", EWI_OPTK_WORD, BROKERS, false, NULL, 0, 0, 0, false,
                             {"classic", "quorum", NULL},
                             "RabbitMQ: the type of durable listener queues and their dead "
                             "letters (quorum: replicated on a cluster)"},
    [EWI_OPT_CA] = {"ca", EWI_OPTK_FILE, BROKERS, true, NULL, 0, 0, 0, false, {NULL},
                    "PEM file of the CAs to trust (else the system's)"},
    [EWI_OPT_CERT] = {"cert", EWI_OPTK_FILE, BROKERS, true, NULL, 0, 0, 0, false, {NULL},
                      "PEM client certificate (with key)"},
    [EWI_OPT_KEY] = {"key", EWI_OPTK_FILE, BROKERS, true, NULL, 0, 0, 0, false, {NULL},
                     "PEM private key of cert (unencrypted)"},
    [EWI_OPT_VERIFY] = {"verify", EWI_OPTK_WORD, BROKERS, true, NULL, 0, 0, 0, false,
                        {"name", "peer", "none", NULL},
                        "check the CA chain and the host name, the chain only, or nothing"},
};

static const ewi_opt_alias aliases[] = {
    {"heartbeat", EWI_OPT_HEARTBEAT_MS, 1000}, /* seconds */
    {"cacert", EWI_OPT_CA, 1},
    {"queue_expires", EWI_OPT_PER_PROCESS_EXPIRES_MS, 1},
    {"reconnect_max", EWI_OPT_RECONNECT_MAX_MS, 1},
    {"connect_timeout", EWI_OPT_CONNECT_TIMEOUT_MS, 1},
    {"rpc_timeout", EWI_OPT_RPC_TIMEOUT_MS, 1},
    {NULL, EWI_OPT_COUNT, 0},
};

/* Old verify values, and what they mean now. */
static const struct {
    const char *old;
    ewi_verify now;
} old_verify[] = {{"1", EWI_VERIFY_NAME}, {"true", EWI_VERIFY_NAME},
                  {"0", EWI_VERIFY_NONE}, {"false", EWI_VERIFY_NONE}};

const ewi_opt_def *ewi_opt_table(void)
{
    return table;
}

const ewi_opt_def *ewi_opt_find(const char *name)
{
    for (size_t i = 0; i < EWI_OPT_COUNT; i++)
        if (strcmp(table[i].name, name) == 0)
            return &table[i];
    return NULL;
}

const ewi_opt_alias *ewi_opt_aliases(void)
{
    return aliases;
}

static void textf(char *buf, size_t len, const char *fmt, ...) EWI_PRINTF(3, 4);

static void textf(char *buf, size_t len, const char *fmt, ...)
{
    if (!len)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, len, fmt, ap);
    va_end(ap);
}

const char *ewi_opts_names(unsigned transport, char *buf, size_t len)
{
    size_t at = 0;
    if (len)
        buf[0] = '\0';
    for (size_t i = 0; i < EWI_OPT_COUNT && at < len; i++) {
        if (!(table[i].transports & transport))
            continue;
        int n = snprintf(buf + at, len - at, "%s%s%s", at ? ", " : "", table[i].name,
                         table[i].tls_only ? " (TLS)" : "");
        if (n < 0)
            break;
        at += (size_t)n;
    }
    return buf;
}

static const char *transport_name(unsigned transport)
{
    switch (transport) {
    case EWI_OPTS_LOCAL: return "local";
    case EWI_OPTS_RABBITMQ: return "rabbitmq";
    case EWI_OPTS_STOMP: return "stomp";
    case EWI_OPTS_AMQP: return "amqp";
    }
    return "?";
}

static const char *tls_scheme(unsigned transport)
{
    switch (transport) {
    case EWI_OPTS_RABBITMQ: return "rabbitmqs://";
    case EWI_OPTS_STOMP: return "stomp+ssl://";
    case EWI_OPTS_AMQP: return "amqps://";
    }
    return "a TLS scheme";
}

/* The canonical row for a URL key (an alias sets *alias), or NULL. */
static const ewi_opt_def *lookup(const char *key, const ewi_opt_alias **alias)
{
    *alias = NULL;
    const ewi_opt_def *d = ewi_opt_find(key);
    if (d)
        return d;
    for (const ewi_opt_alias *a = aliases; a->name; a++)
        if (strcmp(a->name, key) == 0) {
            *alias = a;
            return &table[a->canonical];
        }
    return NULL;
}

static bool parse_long(const char *s, long *out)
{
    if (!*s)
        return false;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end)
        return false;
    *out = v;
    return true;
}

static ew_err int_value(const ewi_opt_def *d, const ewi_opt_alias *a, const char *key,
                        const char *s, long *out, char *err, size_t errlen)
{
    long v;
    bool ok = parse_long(s, &v);
    if (ok && a && a->scale != 1) {
        if (v > d->max / a->scale || v < -(d->max / a->scale))
            ok = false;
        else
            v *= a->scale;
    }
    if (ok && ((v >= d->min && v <= d->max) || (d->zero_off && v == 0))) {
        *out = v;
        return EW_OK;
    }
    if (a && a->scale != 1)
        textf(err, errlen, "%s must be %s%ld..%ld, in units of %ld %s (or give %s)", key,
              d->zero_off ? "0 (off) or " : "", (d->min + a->scale - 1) / a->scale,
              d->max / a->scale, a->scale, d->unit ? d->unit : "", d->name);
    else
        textf(err, errlen, "%s must be %san integer in %ld..%ld%s%s", key,
              d->zero_off ? "0 (off) or " : "", d->min, d->max, d->unit ? " " : "",
              d->unit ? d->unit : "");
    return EW_EINVAL;
}

static ew_err word_value(const ewi_opt_def *d, const char *key, const char *s, long *idx,
                         bool *old, char *err, size_t errlen)
{
    *old = false;
    for (long i = 0; d->choices[i]; i++)
        if (strcmp(d->choices[i], s) == 0) {
            *idx = i;
            return EW_OK;
        }
    if (d == &table[EWI_OPT_VERIFY])
        for (size_t i = 0; i < sizeof old_verify / sizeof old_verify[0]; i++)
            if (strcmp(old_verify[i].old, s) == 0) {
                *idx = old_verify[i].now;
                *old = true;
                return EW_OK;
            }
    char list[128] = "";
    for (size_t i = 0; d->choices[i]; i++)
        textf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "",
              d->choices[i]);
    textf(err, errlen, "%s must be one of %s (not '%s')", key, list, s);
    return EW_EINVAL;
}

static void warn_alias(const ew_manager *m, unsigned transport, const char *key,
                       const ewi_opt_def *d, const ewi_opt_alias *a, const char *value,
                       long converted)
{
    if (a->scale != 1)
        ewi_log(m, EW_LOG_WARN,
                "%s URL: option %s=%s is an old name, read as %s=%ld (%s)",
                transport_name(transport), key, value, d->name, converted, d->unit);
    else
        ewi_log(m, EW_LOG_WARN, "%s URL: option '%s' is an old name: use %s=%s",
                transport_name(transport), key, d->name, value);
}

ew_err ewi_opts_parse(const ew_manager *m, const ewi_url *url, unsigned transport, bool tls,
                      ewi_opts *o, char *err, size_t errlen)
{
    memset(o, 0, sizeof *o);
    o->transport = transport;
    o->tls = tls;
    if (errlen)
        err[0] = '\0';
    for (size_t i = 0; i < EWI_OPT_COUNT; i++)
        o->num[i] = table[i].kind == EWI_OPTK_INT ? table[i].dflt : 0;
    o->text[EWI_OPT_VERIFY] = table[EWI_OPT_VERIFY].choices[EWI_VERIFY_NAME];
    o->num[EWI_OPT_VERIFY] = EWI_VERIFY_NAME;
    o->text[EWI_OPT_QUEUE_TYPE] = table[EWI_OPT_QUEUE_TYPE].choices[EWI_QUEUE_CLASSIC];
    o->num[EWI_OPT_QUEUE_TYPE] = EWI_QUEUE_CLASSIC;
    if (url->nhosts > 1 && !(transport & EWI_OPTS_MULTI_HOST)) {
        textf(err, errlen, "%s:// takes one host, not a list of %zu", transport_name(transport),
              url->nhosts);
        return EW_EINVAL;
    }
    const char *given_as[EWI_OPT_COUNT] = {NULL};
    /* Warnings wait until the whole URL is accepted: a refused URL gets its
     * error alone. */
    size_t nwarn = 0;
    struct old_use {
        const char *key, *value;
        const ewi_opt_def *d;
        const ewi_opt_alias *a;
    } warn[EWI_OPT_COUNT];

    for (size_t i = 0; i < url->nparams; i++) {
        const char *key = url->params[i].key, *value = url->params[i].value;
        const ewi_opt_alias *a;
        const ewi_opt_def *d = lookup(key, &a);
        if (!d || !(d->transports & transport)) {
            char names[600];
            textf(err, errlen, "unknown option '%s'%s (%s:// takes: %s)", key,
                  d ? " here" : "", transport_name(transport),
                  ewi_opts_names(transport, names, sizeof names));
            return EW_EINVAL;
        }
        ewi_opt_id id = (ewi_opt_id)(d - table);
        if (d->tls_only && !tls) {
            textf(err, errlen, "option '%s' needs %s (TLS)", key, tls_scheme(transport));
            return EW_EINVAL;
        }
        if (given_as[id]) {
            if (strcmp(given_as[id], key) == 0)
                textf(err, errlen, "option '%s' is given twice", key);
            else
                textf(err, errlen, "options '%s' and '%s' are the same option (%s)",
                      given_as[id], key, d->name);
            return EW_EINVAL;
        }
        given_as[id] = key;
        o->given[id] = true;
        bool old_value = false;
        switch (d->kind) {
        case EWI_OPTK_INT:
            if (int_value(d, a, key, value, &o->num[id], err, errlen) != EW_OK)
                return EW_EINVAL;
            break;
        case EWI_OPTK_WORD:
            if (word_value(d, key, value, &o->num[id], &old_value, err, errlen) != EW_OK)
                return EW_EINVAL;
            o->text[id] = d->choices[o->num[id]];
            break;
        case EWI_OPTK_TEXT:
        case EWI_OPTK_FILE:
            if (!*value) {
                textf(err, errlen, "option '%s' is empty", key);
                return EW_EINVAL;
            }
            if (d->kind == EWI_OPTK_FILE && access(value, R_OK) != 0) {
                textf(err, errlen, "%s file %s: %s", key, value, strerror(errno));
                return EW_EINVAL;
            }
            o->text[id] = value;
            break;
        }
        if (a || old_value)
            warn[nwarn++] = (struct old_use){key, value, d, a};
    }
    if (o->given[EWI_OPT_CERT] != o->given[EWI_OPT_KEY]) {
        textf(err, errlen, "cert and key go together: %s without %s",
              o->given[EWI_OPT_CERT] ? "cert" : "key", o->given[EWI_OPT_CERT] ? "key" : "cert");
        return EW_EINVAL;
    }
    for (size_t i = 0; i < nwarn; i++) {
        if (warn[i].a)
            warn_alias(m, transport, warn[i].key, warn[i].d, warn[i].a, warn[i].value,
                       o->num[warn[i].d - table]);
        else
            ewi_log(m, EW_LOG_WARN, "%s URL: verify=%s is an old value: use verify=%s",
                    transport_name(transport), warn[i].value,
                    warn[i].d->choices[o->num[EWI_OPT_VERIFY]]);
    }
    return EW_OK;
}
