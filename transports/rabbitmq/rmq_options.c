/* rabbitmq[s]://user:pass@host:port/vhost?options — the transport's URL.
 *
 * The path is the vhost, percent-decoded ("/" and "" mean "/", "%2F" too);
 * user and password default to guest/guest. Options (all optional):
 *   heartbeat=S          heartbeat interval, seconds (0 = off)      30
 *   connect_timeout=MS   one connect + handshake                    5000
 *   rpc_timeout=MS       one declaration round trip                 10000
 *   queue_expires=MS     x-expires of per_process queues            60000
 *   max_inflight=N       publishes queued or unconfirmed at most    4096
 *   reconnect_max=MS     cap of the reconnect backoff               5000
 *   prefetch=N           (core's) default listener prefetch
 * rabbitmqs:// only: cacert=FILE, cert=FILE, key=FILE, verify=0|1 (1). */
#include "rmq.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *const known[] = {"heartbeat", "connect_timeout", "rpc_timeout",
                                    "queue_expires", "max_inflight", "reconnect_max",
                                    "prefetch", "cacert", "cert", "key", "verify", NULL};

static bool is_known(const char *key, bool tls)
{
    for (const char *const *k = known; *k; k++)
        if (strcmp(*k, key) == 0)
            return tls || (strcmp(key, "cacert") != 0 && strcmp(key, "cert") != 0 &&
                           strcmp(key, "key") != 0 && strcmp(key, "verify") != 0);
    return false;
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

ew_err rmq_opts_parse(ew_manager *m, const ewi_url *url, rmq_opts *o)
{
    memset(o, 0, sizeof *o);
    o->tls = strcmp(url->scheme, "rabbitmqs") == 0;
    for (size_t i = 0; i < url->nparams; i++)
        if (!is_known(url->params[i].key, o->tls)) {
            ewi_log(m, EW_LOG_ERROR, "%s: unknown URL option '%s'%s", url->scheme,
                    url->params[i].key,
                    o->tls ? "" : " (TLS options need rabbitmqs://)");
            return EW_EINVAL;
        }
    long hb, cto, rto, qexp, inflight, rmax, verify;
    const struct {
        const char *key;
        long dflt, min, max;
        long *out;
    } ints[] = {
        {"heartbeat", 30, 0, 3600, &hb},
        {"connect_timeout", 5000, 100, 600000, &cto},
        {"rpc_timeout", 10000, 100, 600000, &rto},
        {"queue_expires", 60000, 1000, 2147483647L, &qexp},
        {"max_inflight", EWI_DEFAULT_MAX_INFLIGHT, 1, 1000000, &inflight},
        {"reconnect_max", 5000, 100, 600000, &rmax},
        {"verify", 1, 0, 1, &verify},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        if (ewi_url_param_int(url, ints[i].key, ints[i].dflt, ints[i].min, ints[i].max,
                              ints[i].out) != EW_OK) {
            ewi_log(m, EW_LOG_ERROR, "%s: URL option %s must be a number in %ld..%ld",
                    url->scheme, ints[i].key, ints[i].min, ints[i].max);
            return EW_EINVAL;
        }
    if (!url->host || !*url->host) {
        ewi_log(m, EW_LOG_ERROR, "%s: the URL needs a host: %s://user:pass@host:port/vhost",
                url->scheme, url->scheme);
        return EW_EINVAL;
    }
    o->heartbeat_s = (int)hb;
    o->connect_timeout_ms = (int)cto;
    o->rpc_timeout_ms = (int)rto;
    o->queue_expires_ms = qexp;
    o->max_inflight = (size_t)inflight;
    o->reconnect_base_ms = 100;
    o->reconnect_max_ms = (int)rmax;
    o->verify = verify != 0;
    o->port = url->port ? url->port : (o->tls ? 5671 : 5672);
    o->host = strdup(url->host);
    o->user = strdup(url->user ? url->user : "guest");
    o->password = strdup(url->password ? url->password : "guest");
    o->vhost = strdup(url->path && *url->path ? url->path : "/");
    o->cacert = dup_or_null(ewi_url_param(url, "cacert"));
    o->cert = dup_or_null(ewi_url_param(url, "cert"));
    o->key = dup_or_null(ewi_url_param(url, "key"));
    size_t llen = strlen(url->scheme) + strlen(url->host) + strlen(o->vhost) + 32;
    o->label = malloc(llen);
    if (!o->host || !o->user || !o->password || !o->vhost || !o->label ||
        (ewi_url_param(url, "cacert") && !o->cacert) ||
        (ewi_url_param(url, "cert") && !o->cert) || (ewi_url_param(url, "key") && !o->key)) {
        rmq_opts_free(o);
        return EW_ENOMEM;
    }
    snprintf(o->label, llen, "%s://%s:%d/%s", url->scheme, url->host, o->port,
             strcmp(o->vhost, "/") == 0 ? "" : o->vhost);
    if ((o->cert != NULL) != (o->key != NULL)) {
        ewi_log(m, EW_LOG_ERROR, "%s: cert and key go together", o->label);
        rmq_opts_free(o);
        return EW_EINVAL;
    }
    const char *files[][2] = {{"cacert", o->cacert}, {"cert", o->cert}, {"key", o->key}};
    for (size_t i = 0; i < 3; i++)
        if (files[i][1] && access(files[i][1], R_OK) != 0) {
            ewi_log(m, EW_LOG_ERROR, "%s: %s file %s: %s", o->label, files[i][0], files[i][1],
                    strerror(errno));
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
    free(o->user);
    free(o->password);
    free(o->vhost);
    free(o->cacert);
    free(o->cert);
    free(o->key);
    free(o->label);
    memset(o, 0, sizeof *o);
}
