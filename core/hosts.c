/* Host lists: the nodes of one cluster, as a URL names them, and the round
 * a connection makes over them (rabbitmq://, and stomp:// and amqp:// with
 * dialect=rabbitmq, with the administration connection they share). */
#include "ewi.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

ew_err ewi_hosts_copy(const ewi_url_host *v, size_t n, ewi_hosts *out)
{
    memset(out, 0, sizeof *out);
    out->v = calloc(n ? n : 1, sizeof *out->v);
    if (!out->v)
        return EW_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        out->v[i].host = strdup(v[i].host ? v[i].host : "");
        out->v[i].port = v[i].port;
        if (!out->v[i].host) {
            ewi_hosts_free(out);
            return EW_ENOMEM;
        }
        out->n++;
    }
    return EW_OK;
}

ew_err ewi_hosts_from_url(const ewi_url *url, int default_port, ewi_hosts *out)
{
    ew_err rc = ewi_hosts_copy(url->hosts, url->nhosts, out);
    if (rc != EW_OK)
        return rc;
    for (size_t i = 0; i < out->n; i++)
        if (!out->v[i].port)
            out->v[i].port = default_port;
    return EW_OK;
}

void ewi_hosts_free(ewi_hosts *h)
{
    for (size_t i = 0; h->v && i < h->n; i++)
        free(h->v[i].host);
    free(h->v);
    memset(h, 0, sizeof *h);
}

int ewi_hosts_text(const ewi_hosts *h, char *buf, size_t len)
{
    size_t at = 0;
    if (len)
        buf[0] = '\0';
    for (size_t i = 0; i < h->n; i++) {
        bool v6 = strchr(h->v[i].host, ':') != NULL;
        int k = snprintf(at < len ? buf + at : NULL, at < len ? len - at : 0, "%s%s%s%s:%d",
                         i ? "," : "", v6 ? "[" : "", h->v[i].host, v6 ? "]" : "",
                         h->v[i].port);
        if (k < 0)
            return k;
        at += (size_t)k;
    }
    return (int)at;
}

ew_err ewi_hosts_round(const ewi_hosts *h, size_t *next, size_t *used, ewi_host_try_fn try_fn,
                       void *user, char *err, size_t errlen)
{
    ew_err rc = EW_ECONNECT;
    size_t at = 0;
    if (errlen)
        err[0] = '\0';
    for (size_t k = 0; k < h->n; k++) {
        size_t i = (*next + k) % h->n;
        char one[512];
        one[0] = '\0';
        rc = try_fn(user, &h->v[i], one, sizeof one);
        if (rc == EW_OK) {
            *used = i;
            *next = (i + 1) % h->n;
            return EW_OK;
        }
        /* Every node's reason, for the one line a failed round logs. */
        if (h->n == 1)
            snprintf(err, errlen, "%s", one);
        else if (at < errlen)
            at += (size_t)snprintf(err + at, errlen - at, "%s%s:%d: %s", k ? "; " : "",
                                   h->v[i].host, h->v[i].port, one);
        if (rc == EW_EAUTH || rc == EW_ETLS || rc == EW_EINVAL || rc == EW_ENOMEM)
            return rc;
    }
    return rc;
}
