/* The STOMP transport's URL options, parsed through core's option table
 * (core/options.c: names, units, defaults). Unit-tested; the only I/O is
 * reading the TLS files given, so that a wrong one fails at ew_manager_new.
 *
 *   stomp[+ssl]://[login[:passcode]@]host[:port][,host[:port]...][/vhost]?dialect=D[&option=value...]
 *
 * Several hosts are the nodes of one RabbitMQ cluster (dialect=rabbitmq):
 * each connection tries them in turn (io_conn.c), and so does the
 * administration connection, on each node's amqp_port (one for all, or one
 * per host: amqp_port=5672,5673,5674); or an Artemis primary and its
 * backups (dialect=artemis), whose backup opens its ports only when it
 * takes over. ActiveMQ 5 (whose clients fail over through its own
 * protocol) takes one host.
 *
 * The dialect is required: a wrong one routes events where nobody listens,
 * so it is never guessed. Unknown options are refused, so that a typo is an
 * error and not a silent default. `prefetch` is core's (it parses it from
 * every URL into sub->prefetch): accepted here and otherwise ignored. */
#include "transports/stomp/stomp.h"
#include "options.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    ewi_hosts_free(&o->hosts);
    ewi_hosts_free(&o->admin_hosts);
    free(o->login);
    if (o->passcode) {
        /* do not leave the secret lying in freed memory */
        memset(o->passcode, 0, strlen(o->passcode));
        free(o->passcode);
    }
    free(o->vhost);
    free(o->ca_file);
    free(o->cert_file);
    free(o->key_file);
    memset(o, 0, sizeof *o);
}

ew_err stomp_options_parse(const ew_manager *m, const ewi_url *url, stomp_options *o,
                           char *err, size_t errlen)
{
    memset(o, 0, sizeof *o);
    if (strcmp(url->scheme, "stomp+ssl") == 0)
        o->tls = true;
    else if (strcmp(url->scheme, "stomp") != 0) {
        textf(err, errlen, "scheme '%s' is not stomp or stomp+ssl", url->scheme);
        return EW_EINVAL;
    }
    ewi_opts p;
    ew_err rc = ewi_opts_parse(m, url, EWI_OPTS_STOMP, o->tls, &p, err, errlen);
    if (rc != EW_OK)
        return rc;
    const char *d = p.text[EWI_OPT_DIALECT];
    if (!d) {
        textf(err, errlen, "stomp needs ?dialect=rabbitmq, activemq or artemis");
        return EW_EINVAL;
    }
    if (strcmp(d, "rabbitmq") == 0)
        o->dialect = STOMP_RABBITMQ;
    else if (strcmp(d, "activemq") == 0)
        o->dialect = STOMP_ACTIVEMQ;
    else
        o->dialect = STOMP_ARTEMIS;
    if (!url->host || !*url->host) {
        textf(err, errlen, "stomp URL without a host");
        return EW_EINVAL;
    }
    if (url->nhosts > 1 && o->dialect == STOMP_ACTIVEMQ) {
        textf(err, errlen, "a list of %zu hosts needs dialect=rabbitmq (a RabbitMQ cluster) "
              "or dialect=artemis (a primary and its backups)", url->nhosts);
        return EW_EINVAL;
    }
    o->port = url->port ? url->port : o->tls ? 61614 : 61613;
    o->verify = p.num[EWI_OPT_VERIFY] != EWI_VERIFY_NONE;
    o->verify_name = p.num[EWI_OPT_VERIFY] == EWI_VERIFY_NAME;
    o->heartbeat_ms = (int)p.num[EWI_OPT_HEARTBEAT_MS];
    o->max_inflight = (int)p.num[EWI_OPT_MAX_INFLIGHT];
    o->max_inflight_bytes = p.num[EWI_OPT_MAX_INFLIGHT_BYTES];
    o->reconnect_max_ms = (int)p.num[EWI_OPT_RECONNECT_MAX_MS];
    o->connect_timeout_ms = (int)p.num[EWI_OPT_CONNECT_TIMEOUT_MS];
    o->expires_ms = p.num[EWI_OPT_PER_PROCESS_EXPIRES_MS];
    o->quorum = p.num[EWI_OPT_QUEUE_TYPE] == EWI_QUEUE_QUORUM;
    if (p.given[EWI_OPT_QUEUE_TYPE] && o->dialect != STOMP_RABBITMQ) {
        textf(err, errlen, "queue_type is for dialect=rabbitmq only");
        return EW_EINVAL;
    }
    if (ewi_hosts_from_url(url, o->tls ? 61614 : 61613, &o->hosts) != EW_OK)
        return EW_ENOMEM;
    /* The rabbitmq dialect declares through AMQP 0-9-1 on the broker's
     * AMQP port (the TLS one with stomp+ssl://): one port for every node,
     * or one per node. */
    const char *ap = p.text[EWI_OPT_AMQP_PORT];
    size_t nports = 0;
    int ports[64];
    if (ap) {
        for (const char *c = ap;;) {
            char *end;
            long v = strtol(c, &end, 10);
            if (end == c || (*end && *end != ',') || v < 0 || v > 65535 ||
                nports == sizeof ports / sizeof ports[0]) {
                textf(err, errlen, "amqp_port must be a port (0 to 65535) or a comma "
                      "separated list of ports, one per host (not '%s')", ap);
                return EW_EINVAL;
            }
            ports[nports++] = (int)v;
            if (!*end)
                break;
            c = end + 1;
        }
        if (nports > 1 && nports != url->nhosts) {
            textf(err, errlen, "amqp_port lists %zu ports for %zu hosts (give one for all, or "
                  "one per host)", nports, url->nhosts);
            return EW_EINVAL;
        }
        for (size_t i = 0; i < nports; i++)
            if (nports > 1 && !ports[i]) {
                textf(err, errlen, "amqp_port 0 (no administration connection) cannot be "
                      "one of a list");
                return EW_EINVAL;
            }
    } else {
        ports[nports++] = o->dialect == STOMP_RABBITMQ ? (o->tls ? 5671 : 5672) : 0;
    }
    o->amqp_port = ports[0];
    if (o->amqp_port && o->dialect != STOMP_RABBITMQ) {
        textf(err, errlen, "amqp_port is for dialect=rabbitmq only");
        return EW_EINVAL;
    }
    if (o->amqp_port) {
        if (ewi_hosts_copy(o->hosts.v, o->hosts.n, &o->admin_hosts) != EW_OK)
            return EW_ENOMEM;
        for (size_t i = 0; i < o->admin_hosts.n; i++)
            o->admin_hosts.v[i].port = ports[nports > 1 ? i : 0];
    }
    if (ewi_tls_check_pair(p.text[EWI_OPT_CERT], p.text[EWI_OPT_KEY], err, errlen) != EW_OK)
        return EW_EINVAL;

    /* RabbitMQ reads the vhost from CONNECT's host header; the others want
     * the broker's host name there. */
    const char *vhost = url->path && *url->path ? url->path
                        : o->dialect == STOMP_RABBITMQ ? "/"
                                                       : url->host;
    if (!dup_into(&o->host, url->host) || !dup_into(&o->login, url->user) ||
        !dup_into(&o->passcode, url->password) || !dup_into(&o->vhost, vhost) ||
        !dup_into(&o->ca_file, p.text[EWI_OPT_CA]) ||
        !dup_into(&o->cert_file, p.text[EWI_OPT_CERT]) ||
        !dup_into(&o->key_file, p.text[EWI_OPT_KEY]))
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
