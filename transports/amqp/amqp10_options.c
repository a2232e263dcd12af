/* The AMQP 1.0 transport's URL options, parsed through core's option table
 * (core/options.c: names, units, defaults). Unit-tested; the only I/O is
 * reading the TLS files given, so that a wrong one fails at ew_manager_new.
 *
 *   amqp[s]://[user[:password]@]host[:port][,host[:port]...][/vhost][?option=value&...]
 *
 * Several hosts are the nodes of one RabbitMQ cluster (dialect=rabbitmq),
 * tried in turn (amqp10_io.c), by the administration connection too, or an
 * Artemis primary and its backups (dialect=artemis): a backup opens its
 * ports only when it takes over, so the turn comes to it then.
 *
 * Unknown options are refused, so that a typo is an error and not a silent
 * default. */
#include "amqp10.h"
#include "options.h"

#include <proton/ssl.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void amqp10_textf(char *buf, size_t len, const char *fmt, ...)
{
    if (!len)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, len, fmt, ap);
    va_end(ap);
}

const char *amqp10_dialect_name(amqp10_dialect d)
{
    return d == AMQP10_DIALECT_RABBITMQ ? "rabbitmq" : "artemis";
}

static ew_err dup_opt(const char *s, char **out)
{
    *out = NULL;
    if (!s)
        return EW_OK;
    *out = strdup(s);
    return *out ? EW_OK : EW_ENOMEM;
}

void amqp10_options_free(amqp10_options *o)
{
    if (!o)
        return;
    free(o->host);
    ewi_hosts_free(&o->hosts);
    free(o->user);
    if (o->password) {
        /* do not leave the secret lying in freed memory */
        memset(o->password, 0, strlen(o->password));
        free(o->password);
    }
    free(o->vhost);
    free(o->ca_file);
    free(o->cert_file);
    free(o->key_file);
    free(o->sasl_mechs);
    memset(o, 0, sizeof *o);
}

/* A client certificate and key that proton cannot load together (a key of
 * another certificate, an unreadable or encrypted file) are refused now
 * rather than at every connection attempt. */
static ew_err check_credentials(const char *cert, const char *key, char *err, size_t errlen)
{
    if (!cert)
        return EW_OK;
    pn_ssl_domain_t *dom = pn_ssl_domain(PN_SSL_MODE_CLIENT);
    if (!dom) {
        amqp10_textf(err, errlen, "out of memory");
        return EW_ENOMEM;
    }
    int rc = pn_ssl_domain_set_credentials(dom, cert, key, NULL);
    pn_ssl_domain_free(dom);
    if (rc) {
        amqp10_textf(err, errlen,
                   "TLS client certificate %s with key %s cannot be used (unreadable, "
                   "encrypted, or the key belongs to another certificate)",
                   cert, key);
        return EW_EINVAL;
    }
    return EW_OK;
}

ew_err amqp10_options_parse(const ew_manager *m, const ewi_url *url, amqp10_options *o,
                          char *err, size_t errlen)
{
    memset(o, 0, sizeof *o);
    if (strcmp(url->scheme, "amqps") == 0)
        o->tls = true;
    else if (strcmp(url->scheme, "amqp") != 0) {
        amqp10_textf(err, errlen, "scheme '%s' is not amqp or amqps", url->scheme);
        return EW_EINVAL;
    }
    ewi_opts p;
    ew_err rc = ewi_opts_parse(m, url, EWI_OPTS_AMQP, o->tls, &p, err, errlen);
    if (rc != EW_OK)
        return rc;

    const char *d = p.text[EWI_OPT_DIALECT];
    if (!d || strcmp(d, "artemis") == 0)
        o->dialect = AMQP10_DIALECT_ARTEMIS;
    else if (strcmp(d, "rabbitmq") == 0)
        o->dialect = AMQP10_DIALECT_RABBITMQ;
    else {
        amqp10_textf(err, errlen, "dialect '%s' is not artemis or rabbitmq", d);
        return EW_EINVAL;
    }
    o->quorum = p.num[EWI_OPT_QUEUE_TYPE] == EWI_QUEUE_QUORUM;
    if (p.given[EWI_OPT_QUEUE_TYPE] && o->dialect != AMQP10_DIALECT_RABBITMQ) {
        amqp10_textf(err, errlen, "queue_type is for dialect=rabbitmq only");
        return EW_EINVAL;
    }
    o->naming = p.num[EWI_OPT_QUEUE_NAMING] == 1 ? AMQP10_NAMING_ASPYX : AMQP10_NAMING_EVENTWIRE;
    o->verify = p.num[EWI_OPT_VERIFY] == EWI_VERIFY_PEER   ? AMQP10_VERIFY_PEER
                : p.num[EWI_OPT_VERIFY] == EWI_VERIFY_NONE ? AMQP10_VERIFY_NONE
                                                           : AMQP10_VERIFY_NAME;

    /* The vhost: the path (as rabbitmq:// URLs have it) or ?vhost=. */
    const char *vh = p.text[EWI_OPT_VHOST];
    if (url->path && url->path[0]) {
        if (vh) {
            amqp10_textf(err, errlen, "the vhost is given twice (path and ?vhost=)");
            return EW_EINVAL;
        }
        vh = url->path;
    }
    if (vh && o->dialect != AMQP10_DIALECT_RABBITMQ) {
        amqp10_textf(err, errlen,
                 "a vhost (URL path or ?vhost=) only exists with dialect=rabbitmq");
        return EW_EINVAL;
    }

    o->max_inflight = p.num[EWI_OPT_MAX_INFLIGHT];
    o->max_inflight_bytes = p.num[EWI_OPT_MAX_INFLIGHT_BYTES];
    o->reconnect_max_ms = p.num[EWI_OPT_RECONNECT_MAX_MS];
    o->expires_ms = p.num[EWI_OPT_PER_PROCESS_EXPIRES_MS];
    o->queue_check_ms = p.num[EWI_OPT_QUEUE_CHECK_MS];
    o->heartbeat_ms = p.num[EWI_OPT_HEARTBEAT_MS];
    if ((rc = check_credentials(p.text[EWI_OPT_CERT], p.text[EWI_OPT_KEY], err, errlen)) !=
        EW_OK)
        return rc;

    o->port = url->port ? url->port : (o->tls ? 5671 : 5672);
    if ((rc = dup_opt(url->host && url->host[0] ? url->host : "127.0.0.1",
                      &o->host)) != EW_OK ||
        (rc = dup_opt(url->user, &o->user)) != EW_OK ||
        (rc = dup_opt(url->password, &o->password)) != EW_OK ||
        (rc = dup_opt(vh, &o->vhost)) != EW_OK ||
        (rc = dup_opt(p.text[EWI_OPT_CA], &o->ca_file)) != EW_OK ||
        (rc = dup_opt(p.text[EWI_OPT_CERT], &o->cert_file)) != EW_OK ||
        (rc = dup_opt(p.text[EWI_OPT_KEY], &o->key_file)) != EW_OK ||
        (rc = dup_opt(p.text[EWI_OPT_SASL], &o->sasl_mechs)) != EW_OK) {
        amqp10_textf(err, errlen, "out of memory");
        return rc;
    }
    if (ewi_hosts_from_url(url, o->tls ? 5671 : 5672, &o->hosts) != EW_OK) {
        amqp10_textf(err, errlen, "out of memory");
        return EW_ENOMEM;
    }
    if (!o->hosts.v[0].host[0]) {
        /* No host at all: the default's. */
        free(o->hosts.v[0].host);
        if (!(o->hosts.v[0].host = strdup(o->host))) {
            amqp10_textf(err, errlen, "out of memory");
            return EW_ENOMEM;
        }
    }
    if (o->password && !o->user) {
        amqp10_textf(err, errlen, "a password without a user name");
        return EW_EINVAL;
    }
    return EW_OK;
}
