/* The AMQP 1.0 transport's URL options. Pure: no I/O, unit-tested.
 *
 *   amqp[s]://[user[:password]@]host[:port][/vhost][?option=value&...]
 *
 * Unknown options are refused, so that a typo is an error and not a silent
 * default. */
#include "amqp.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void amqp_textf(char *buf, size_t len, const char *fmt, ...)
{
    if (!len)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, len, fmt, ap);
    va_end(ap);
}

static const char *const known[] = {
    "dialect", "queue_naming", "ca", "verify", "sasl", "vhost",
    "max_inflight", "reconnect_max_ms", "per_process_expires_ms",
    "queue_check_ms", "heartbeat_ms",
    "prefetch", /* core's: the default listener prefetch */
    NULL};

const char *amqp_dialect_name(amqp_dialect d)
{
    return d == AMQP_DIALECT_RABBITMQ ? "rabbitmq" : "artemis";
}

static ew_err dup_opt(const char *s, char **out)
{
    *out = NULL;
    if (!s)
        return EW_OK;
    *out = strdup(s);
    return *out ? EW_OK : EW_ENOMEM;
}

void amqp_options_free(amqp_options *o)
{
    if (!o)
        return;
    free(o->host);
    free(o->user);
    if (o->password) {
        /* do not leave the secret lying in freed memory */
        memset(o->password, 0, strlen(o->password));
        free(o->password);
    }
    free(o->vhost);
    free(o->ca_file);
    free(o->sasl_mechs);
    memset(o, 0, sizeof *o);
}

static bool is_known(const char *key)
{
    for (size_t i = 0; known[i]; i++)
        if (strcmp(known[i], key) == 0)
            return true;
    return false;
}

ew_err amqp_options_parse(const ewi_url *url, amqp_options *o, char *err,
                          size_t errlen)
{
    memset(o, 0, sizeof *o);
    if (strcmp(url->scheme, "amqps") == 0)
        o->tls = true;
    else if (strcmp(url->scheme, "amqp") != 0) {
        amqp_textf(err, errlen, "scheme '%s' is not amqp or amqps", url->scheme);
        return EW_EINVAL;
    }
    for (size_t i = 0; i < url->nparams; i++) {
        if (!is_known(url->params[i].key)) {
            amqp_textf(err, errlen,
                     "unknown option '%s' (known: dialect, queue_naming, ca, "
                     "verify, sasl, vhost, max_inflight, reconnect_max_ms, "
                     "per_process_expires_ms, queue_check_ms, heartbeat_ms, prefetch)", url->params[i].key);
            return EW_EINVAL;
        }
    }

    const char *d = ewi_url_param(url, "dialect");
    if (!d || strcmp(d, "artemis") == 0)
        o->dialect = AMQP_DIALECT_ARTEMIS;
    else if (strcmp(d, "rabbitmq") == 0)
        o->dialect = AMQP_DIALECT_RABBITMQ;
    else {
        amqp_textf(err, errlen, "dialect '%s' is not artemis or rabbitmq", d);
        return EW_EINVAL;
    }

    const char *n = ewi_url_param(url, "queue_naming");
    if (!n || strcmp(n, "eventwire") == 0)
        o->naming = AMQP_NAMING_EVENTWIRE;
    else if (strcmp(n, "aspyx") == 0)
        o->naming = AMQP_NAMING_ASPYX;
    else {
        amqp_textf(err, errlen, "queue_naming '%s' is not eventwire or aspyx", n);
        return EW_EINVAL;
    }

    const char *v = ewi_url_param(url, "verify");
    if (!v || strcmp(v, "name") == 0)
        o->verify = AMQP_VERIFY_NAME;
    else if (strcmp(v, "peer") == 0)
        o->verify = AMQP_VERIFY_PEER;
    else if (strcmp(v, "none") == 0)
        o->verify = AMQP_VERIFY_NONE;
    else {
        amqp_textf(err, errlen, "verify '%s' is not name, peer or none", v);
        return EW_EINVAL;
    }

    const char *ca = ewi_url_param(url, "ca");
    if ((ca || v) && !o->tls) {
        amqp_textf(err, errlen, "option '%s' needs the amqps:// scheme",
                 ca ? "ca" : "verify");
        return EW_EINVAL;
    }

    /* The vhost: the path (as rabbitmq:// URLs have it) or ?vhost=. */
    const char *vh = ewi_url_param(url, "vhost");
    if (url->path && url->path[0]) {
        if (vh) {
            amqp_textf(err, errlen, "the vhost is given twice (path and ?vhost=)");
            return EW_EINVAL;
        }
        vh = url->path;
    }
    if (vh && o->dialect != AMQP_DIALECT_RABBITMQ) {
        amqp_textf(err, errlen,
                 "a vhost (URL path or ?vhost=) only exists with dialect=rabbitmq");
        return EW_EINVAL;
    }

    const char *sasl = ewi_url_param(url, "sasl");
    if (sasl && !sasl[0]) {
        amqp_textf(err, errlen, "option sasl is empty");
        return EW_EINVAL;
    }

    ew_err rc;
    if (ewi_url_param_int(url, "max_inflight", EWI_DEFAULT_MAX_INFLIGHT, 1, 10000000,
                          &o->max_inflight) != EW_OK) {
        amqp_textf(err, errlen, "max_inflight must be an integer in 1..10000000");
        return EW_EINVAL;
    }
    if (ewi_url_param_int(url, "reconnect_max_ms", 5000, 10, 600000,
                          &o->reconnect_max_ms) != EW_OK) {
        amqp_textf(err, errlen, "reconnect_max_ms must be an integer in 10..600000");
        return EW_EINVAL;
    }
    if (ewi_url_param_int(url, "per_process_expires_ms", 60000, 1000,
                          2147483647L, &o->expires_ms) != EW_OK) {
        amqp_textf(err, errlen,
                 "per_process_expires_ms must be an integer in 1000..2147483647");
        return EW_EINVAL;
    }

    if (ewi_url_param_int(url, "queue_check_ms", 0, 0, 86400000L,
                          &o->queue_check_ms) != EW_OK) {
        amqp_textf(err, errlen,
                   "queue_check_ms must be an integer in 0..86400000 (0: off)");
        return EW_EINVAL;
    }

    if (ewi_url_param_int(url, "heartbeat_ms", 15000, 0, 3600000L, &o->heartbeat_ms) !=
            EW_OK ||
        (o->heartbeat_ms > 0 && o->heartbeat_ms < 100)) {
        amqp_textf(err, errlen, "heartbeat_ms must be 0 (off) or an integer in 100..3600000");
        return EW_EINVAL;
    }

    o->port = url->port ? url->port : (o->tls ? 5671 : 5672);
    if ((rc = dup_opt(url->host && url->host[0] ? url->host : "127.0.0.1",
                      &o->host)) != EW_OK ||
        (rc = dup_opt(url->user, &o->user)) != EW_OK ||
        (rc = dup_opt(url->password, &o->password)) != EW_OK ||
        (rc = dup_opt(vh, &o->vhost)) != EW_OK ||
        (rc = dup_opt(ca, &o->ca_file)) != EW_OK ||
        (rc = dup_opt(sasl, &o->sasl_mechs)) != EW_OK) {
        amqp_textf(err, errlen, "out of memory");
        return rc;
    }
    if (o->password && !o->user) {
        amqp_textf(err, errlen, "a password without a user name");
        return EW_EINVAL;
    }
    return EW_OK;
}
