/* The STOMP transport's URL options. Pure: no I/O, unit-tested.
 *
 *   stomp[+ssl]://[login[:passcode]@]host[:port][/vhost]?dialect=D[&option=value...]
 *
 * The dialect is required: a wrong one routes events where nobody listens,
 * so it is never guessed. Unknown options are refused, so that a typo is an
 * error and not a silent default. `prefetch` is core's (it parses it from
 * every URL into sub->prefetch): accepted here and otherwise ignored. */
#include "transports/stomp/stomp.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const known[] = {
    "dialect", "ca", "verify", "heartbeat_ms", "max_inflight", "reconnect_max_ms",
    "connect_timeout_ms", "per_process_expires_ms", "amqp_port", "prefetch", NULL};

const char *stomp_dialect_name(stomp_dialect d)
{
    switch (d) {
    case STOMP_RABBITMQ: return "rabbitmq";
    case STOMP_ACTIVEMQ: return "activemq";
    case STOMP_ARTEMIS: return "artemis";
    }
    return "?";
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

static bool dup_into(char **dst, const char *src)
{
    *dst = src ? strdup(src) : NULL;
    return !src || *dst;
}

void stomp_options_free(stomp_options *o)
{
    if (!o)
        return;
    free(o->host);
    free(o->login);
    if (o->passcode) {
        /* do not leave the secret lying in freed memory */
        memset(o->passcode, 0, strlen(o->passcode));
        free(o->passcode);
    }
    free(o->vhost);
    free(o->ca_file);
    memset(o, 0, sizeof *o);
}

static ew_err int_opt(const ewi_url *url, const char *key, long dflt, long min,
                      long max, long *out, char *err, size_t errlen)
{
    if (ewi_url_param_int(url, key, dflt, min, max, out) == EW_OK)
        return EW_OK;
    textf(err, errlen, "%s must be an integer in %ld..%ld", key, min, max);
    return EW_EINVAL;
}

ew_err stomp_options_parse(const ewi_url *url, stomp_options *o, char *err,
                           size_t errlen)
{
    memset(o, 0, sizeof *o);
    if (strcmp(url->scheme, "stomp+ssl") == 0)
        o->tls = true;
    else if (strcmp(url->scheme, "stomp") != 0) {
        textf(err, errlen, "scheme '%s' is not stomp or stomp+ssl", url->scheme);
        return EW_EINVAL;
    }
    for (size_t i = 0; i < url->nparams; i++) {
        bool ok = false;
        for (size_t k = 0; known[k] && !ok; k++)
            ok = strcmp(known[k], url->params[i].key) == 0;
        if (!ok) {
            textf(err, errlen,
                  "unknown option '%s' (known: dialect, ca, verify, heartbeat_ms, "
                  "max_inflight, reconnect_max_ms, connect_timeout_ms, "
                  "per_process_expires_ms, amqp_port, prefetch)",
                  url->params[i].key);
            return EW_EINVAL;
        }
    }
    const char *d = ewi_url_param(url, "dialect");
    if (!d) {
        textf(err, errlen, "stomp needs ?dialect=rabbitmq, activemq or artemis");
        return EW_EINVAL;
    }
    if (strcmp(d, "rabbitmq") == 0)
        o->dialect = STOMP_RABBITMQ;
    else if (strcmp(d, "activemq") == 0)
        o->dialect = STOMP_ACTIVEMQ;
    else if (strcmp(d, "artemis") == 0)
        o->dialect = STOMP_ARTEMIS;
    else {
        textf(err, errlen, "unknown dialect '%s' (rabbitmq, activemq or artemis)", d);
        return EW_EINVAL;
    }
    if (!url->host || !*url->host) {
        textf(err, errlen, "stomp URL without a host");
        return EW_EINVAL;
    }
    o->port = url->port ? url->port : o->tls ? 61614 : 61613;

    const char *verify = ewi_url_param(url, "verify");
    o->verify = true;
    if (verify) {
        if (strcmp(verify, "0") == 0 || strcmp(verify, "false") == 0)
            o->verify = false;
        else if (strcmp(verify, "1") != 0 && strcmp(verify, "true") != 0) {
            textf(err, errlen, "verify must be true or false");
            return EW_EINVAL;
        }
    }
    if (!o->tls && (ewi_url_param(url, "ca") || verify)) {
        textf(err, errlen, "ca and verify need stomp+ssl://");
        return EW_EINVAL;
    }

    long v;
    ew_err rc;
    if ((rc = int_opt(url, "heartbeat_ms", 10000, 0, 3600000, &v, err, errlen)))
        return rc;
    o->heartbeat_ms = (int)v;
    if ((rc = int_opt(url, "max_inflight", EWI_DEFAULT_MAX_INFLIGHT, 1, 1000000, &v, err, errlen)))
        return rc;
    o->max_inflight = (int)v;
    if ((rc = int_opt(url, "reconnect_max_ms", 5000, 10, 3600000, &v, err, errlen)))
        return rc;
    o->reconnect_max_ms = (int)v;
    if ((rc = int_opt(url, "connect_timeout_ms", 5000, 100, 600000, &v, err, errlen)))
        return rc;
    o->connect_timeout_ms = (int)v;
    if ((rc = int_opt(url, "per_process_expires_ms", 60000, 1000, 2147483647L,
                      &o->expires_ms, err, errlen)))
        return rc;
    if ((rc = int_opt(url, "amqp_port", o->dialect == STOMP_RABBITMQ ? (o->tls ? 5671 : 5672) : 0,
                      0, 65535, &v, err, errlen)))
        return rc;
    o->amqp_port = (int)v;
    if (o->amqp_port && o->dialect != STOMP_RABBITMQ) {
        textf(err, errlen, "amqp_port is for dialect=rabbitmq only");
        return EW_EINVAL;
    }

    /* RabbitMQ reads the vhost from CONNECT's host header; the others want
     * the broker's host name there. */
    const char *vhost = url->path && *url->path ? url->path
                        : o->dialect == STOMP_RABBITMQ ? "/"
                                                       : url->host;
    if (!dup_into(&o->host, url->host) || !dup_into(&o->login, url->user) ||
        !dup_into(&o->passcode, url->password) || !dup_into(&o->vhost, vhost) ||
        !dup_into(&o->ca_file, ewi_url_param(url, "ca")))
        return EW_ENOMEM;
    /* CONNECT is not escaped: a line break in a credential cannot travel. */
    const char *creds[] = {o->login, o->passcode, o->vhost};
    for (size_t i = 0; i < 3; i++)
        if (creds[i] && strpbrk(creds[i], "\r\n")) {
            textf(err, errlen, "login, passcode and vhost cannot contain line breaks");
            return EW_EINVAL;
        }
    return EW_OK;
}
