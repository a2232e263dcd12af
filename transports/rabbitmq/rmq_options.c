/* rabbitmq[s]://user:pass@host:port[,host:port...]/vhost?options — the
 * transport's URL. Several hosts are the nodes of one cluster: the transport
 * connects to the first that answers (rmq_conn.c).
 *
 * The path is the vhost, percent-decoded ("/" and "" mean "/", "%2F" too);
 * user and password default to guest/guest. The options, their units and
 * defaults are core's table (core/options.c): heartbeat_ms, connect_timeout_ms,
 * rpc_timeout_ms, per_process_expires_ms, max_inflight, reconnect_max_ms,
 * queue_type, prefetch (core's), and on rabbitmqs:// ca, cert, key, verify. */
#include "rmq.h"
#include "options.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

ew_err rmq_opts_parse(ew_manager *m, const ewi_url *url, rmq_opts *o)
{
    memset(o, 0, sizeof *o);
    o->tls = strcmp(url->scheme, "rabbitmqs") == 0;
    ewi_opts p;
    char err[900];
    if (ewi_opts_parse(m, url, EWI_OPTS_RABBITMQ, o->tls, &p, err, sizeof err) != EW_OK) {
        ewi_log(m, EW_LOG_ERROR, "%s URL: %s", url->scheme, err);
        return EW_EINVAL;
    }
    if (!url->host || !*url->host) {
        ewi_log(m, EW_LOG_ERROR, "%s: the URL needs a host: %s://user:pass@host:port/vhost",
                url->scheme, url->scheme);
        return EW_EINVAL;
    }
    /* AMQP 0-9-1 negotiates heartbeats in whole seconds: round up. */
    long hb = p.num[EWI_OPT_HEARTBEAT_MS];
    o->heartbeat_ms = (int)hb;
    o->heartbeat_s = (int)((hb + 999) / 1000);
    o->connect_timeout_ms = (int)p.num[EWI_OPT_CONNECT_TIMEOUT_MS];
    o->rpc_timeout_ms = (int)p.num[EWI_OPT_RPC_TIMEOUT_MS];
    o->queue_expires_ms = p.num[EWI_OPT_PER_PROCESS_EXPIRES_MS];
    o->max_inflight = (size_t)p.num[EWI_OPT_MAX_INFLIGHT];
    o->max_inflight_bytes = (size_t)p.num[EWI_OPT_MAX_INFLIGHT_BYTES];
    o->reconnect_base_ms = 100;
    o->reconnect_max_ms = (int)p.num[EWI_OPT_RECONNECT_MAX_MS];
    o->verify = p.num[EWI_OPT_VERIFY] != EWI_VERIFY_NONE;
    o->verify_name = p.num[EWI_OPT_VERIFY] == EWI_VERIFY_NAME;
    o->quorum = p.num[EWI_OPT_QUEUE_TYPE] == EWI_QUEUE_QUORUM;
    int dport = o->tls ? 5671 : 5672;
    o->port = url->port ? url->port : dport;
    o->host = strdup(url->host);
    if (ewi_hosts_from_url(url, dport, &o->hosts) != EW_OK) {
        rmq_opts_free(o);
        return EW_ENOMEM;
    }
    size_t llen = strlen(url->scheme) + 32;
    for (size_t i = 0; i < o->hosts.n; i++)
        llen += strlen(o->hosts.v[i].host) + 16;
    o->user = strdup(url->user ? url->user : "guest");
    o->password = strdup(url->password ? url->password : "guest");
    o->vhost = strdup(url->path && *url->path ? url->path : "/");
    o->cacert = dup_or_null(p.text[EWI_OPT_CA]);
    o->cert = dup_or_null(p.text[EWI_OPT_CERT]);
    o->key = dup_or_null(p.text[EWI_OPT_KEY]);
    llen += strlen(o->vhost ? o->vhost : "");
    o->label = malloc(llen);
    if (!o->host || !o->user || !o->password || !o->vhost || !o->label ||
        (p.text[EWI_OPT_CA] && !o->cacert) || (p.text[EWI_OPT_CERT] && !o->cert) ||
        (p.text[EWI_OPT_KEY] && !o->key)) {
        rmq_opts_free(o);
        return EW_ENOMEM;
    }
    /* rabbitmq://h1:p1,h2:p2/vhost, IPv6 literals in brackets. */
    size_t at = (size_t)snprintf(o->label, llen, "%s://", url->scheme);
    if (at < llen)
        at += (size_t)ewi_hosts_text(&o->hosts, o->label + at, llen - at);
    if (at < llen)
        snprintf(o->label + at, llen - at, "/%s", strcmp(o->vhost, "/") == 0 ? "" : o->vhost);
    if (ewi_tls_check_pair(o->cert, o->key, err, sizeof err) != EW_OK) {
        ewi_log(m, EW_LOG_ERROR, "%s: %s", o->label, err);
        rmq_opts_free(o);
        return EW_EINVAL;
    }
    return EW_OK;
}

void rmq_opts_free(rmq_opts *o)
{
    if (o->password) {
        volatile char *p = o->password;
        while (*p)
            *p++ = 0;
    }
    free(o->host);
    ewi_hosts_free(&o->hosts);
    free(o->user);
    free(o->password);
    free(o->vhost);
    free(o->cacert);
    free(o->cert);
    free(o->key);
    free(o->label);
    memset(o, 0, sizeof *o);
}
