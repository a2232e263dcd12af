/* The rabbitmq dialect's declarations, through the shared RabbitMQ
 * administration module (transports/rmqadmin).
 *
 * RabbitMQ 3.x's AMQP 1.0 plugin cannot declare exchanges, queues or
 * bindings (and its /exchange and /topic sources make queues that are never
 * deleted), so this dialect declares the same topology as the rabbitmq://
 * transport over an AMQP 0-9-1 connection to the same host and port, before
 * the AMQP 1.0 link that uses it is attached. The module remembers what it
 * declared: after a reconnect the I/O thread declares it all again (a
 * restarted broker has lost the non-durable ones) before it re-attaches.
 * Existence checks (a send to one listener's queue) are remembered only
 * until the next reconnect. */
#include "amqp10.h"
#include "transports/rmqadmin/rmqadmin.h"

#include <stdio.h>
#include <stdlib.h>

#define ADMIN_TIMEOUT_MS 5000 /* one connect, one round trip */

ew_err amqp10_admin_open(ewi_transport *t)
{
    if (t->opt.dialect != AMQP10_DIALECT_RABBITMQ)
        return EW_OK;
    char label[300], hosts[240];
    ewi_hosts_text(&t->opt.hosts, hosts, sizeof hosts);
    amqp10_textf(label, sizeof label, "%s (AMQP 0-9-1)", hosts);
    /* librabbitmq speaks PLAIN only: without a user, RabbitMQ's default
     * guest account, which is what its AMQP 1.0 ANONYMOUS maps to. */
    rmqa_conf c = {.host = t->opt.host, .port = t->opt.port, .hosts = t->opt.hosts.v,
                   .nhosts = t->opt.hosts.n, .vhost = t->opt.vhost,
                   .user = t->opt.user, .password = t->opt.password, .tls = t->opt.tls,
                   .ca = t->opt.ca_file, .cert = t->opt.cert_file, .key = t->opt.key_file,
                   .verify_peer = t->opt.verify != AMQP10_VERIFY_NONE,
                   .verify_name = t->opt.verify == AMQP10_VERIFY_NAME,
                   .connect_timeout_ms = ADMIN_TIMEOUT_MS,
                   .conn_name = "eventwire amqp administration", .label = label};
    return (t->admin = rmqa_new(&c)) ? EW_OK : EW_ENOMEM;
}

void amqp10_admin_close(ewi_transport *t)
{
    rmqa_free(t->admin);
    t->admin = NULL;
}

static rmqa_decl decl_of(ewi_transport *t, const amqp10_decl *d)
{
    static const rmqa_kind kinds[] = {[AMQP10_DECL_EXCHANGE] = RMQA_EXCHANGE,
                                      [AMQP10_DECL_LISTENER] = RMQA_LISTENER,
                                      [AMQP10_DECL_DLQ] = RMQA_DLQ,
                                      [AMQP10_DECL_EXISTS] = RMQA_EXISTS};
    rmqa_decl r = {.kind = kinds[d->kind], .event = d->event, .queue = d->queue,
                   .dlq = d->dlq, .durable = d->durable,
                   .expires_ms = d->per_process ? t->opt.expires_ms : 0,
                   .quorum = t->opt.quorum};
    return r;
}

/* Failures worth another try: the broker is not reachable (yet). */
static bool transient(ew_err rc)
{
    return rc == EW_ECONNECT || rc == EW_ETIMEDOUT || rc == EW_EIO;
}

ew_err amqp10_ensure(ewi_transport *t, const amqp10_decl *d, int64_t deadline, char *err,
                   size_t errlen)
{
    bool artemis = t->opt.dialect == AMQP10_DIALECT_ARTEMIS;
    if (artemis && d->kind != AMQP10_DECL_EXISTS &&
        !(d->kind == AMQP10_DECL_LISTENER && d->per_process))
        return EW_OK; /* Artemis creates addresses and queues on first use */
    if (!artemis && !t->admin)
        return EW_OK;
    rmqa_decl rd = decl_of(t, d);
    ewi_backoff bo;
    ewi_backoff_init(&bo, 50, 1000);
    for (;;) {
        /* Artemis: a management request whose connection went is asked
         * again (both requests are idempotent). */
        ew_err rc = artemis ? amqp10_artemis_ensure(t, d, deadline, err, errlen)
                            : rmqa_ensure(t->admin, &rd, err, errlen);
        if (!transient(rc) && rc != EW_EDISCONNECTED)
            return rc;
        pthread_mutex_lock(&t->mu);
        bool stop = t->stopping || t->io_exited;
        pthread_mutex_unlock(&t->mu);
        int pause = ewi_backoff_next(&bo);
        if (stop || ewi_left_ms(deadline) <= pause)
            return rc == EW_ECONNECT || rc == EW_EDISCONNECTED ? EW_ETIMEDOUT : rc;
        ewi_sleep_ms(pause);
    }
}

ew_err amqp10_ensure_many(ewi_transport *t, const amqp10_decl *ds, size_t n, int64_t deadline,
                        ew_err *rcs, char *err, size_t errlen,
                        void (*done)(void *user, size_t i), void *user)
{
    for (size_t i = 0; i < n; i++)
        rcs[i] = EW_OK;
    /* err keeps the first failure's text: the caller reports it for that
     * declaration. */
    char scratch[600];
    if (t->opt.dialect == AMQP10_DIALECT_ARTEMIS) {
        ew_err first = EW_OK;
        for (size_t i = 0; i < n; i++) {
            rcs[i] = amqp10_ensure(t, &ds[i], deadline, scratch, sizeof scratch);
            if (rcs[i] == EW_OK && done)
                done(user, i);
            if (rcs[i] != EW_OK && first == EW_OK) {
                first = rcs[i];
                amqp10_textf(err, errlen, "%s", scratch);
            }
        }
        return first;
    }
    if (!t->admin || !n) {
        for (size_t i = 0; i < n && done; i++)
            done(user, i);
        return EW_OK;
    }
    rmqa_decl *rd = calloc(n, sizeof *rd);
    if (!rd) {
        for (size_t i = 0; i < n; i++)
            rcs[i] = EW_ENOMEM;
        return EW_ENOMEM;
    }
    for (size_t i = 0; i < n; i++)
        rd[i] = decl_of(t, &ds[i]);
    rmqa_ensure_many_cb(t->admin, rd, n, rcs, err, errlen, done, user);
    /* Not reachable (yet): the rest one by one, with amqp10_ensure's retries. */
    size_t first = n;
    for (size_t i = 0; i < n && first == n; i++)
        if (rcs[i] != EW_OK && !transient(rcs[i]))
            first = i; /* err holds its text */
    for (size_t i = 0; i < n; i++)
        if (transient(rcs[i])) {
            rcs[i] = amqp10_ensure(t, &ds[i], deadline, scratch, sizeof scratch);
            if (rcs[i] == EW_OK && done)
                done(user, i);
            if (rcs[i] != EW_OK && i < first) {
                first = i;
                amqp10_textf(err, errlen, "%s", scratch);
            }
        }
    free(rd);
    return first < n ? rcs[first] : EW_OK;
}

ew_err amqp10_declare_now(ewi_transport *t, const amqp10_decl *d, char *err, size_t errlen)
{
    if (!t->admin)
        return EW_OK;
    rmqa_decl rd = decl_of(t, d);
    return rmqa_declare(t->admin, &rd, err, errlen);
}

ew_err amqp10_redeclare_all(ewi_transport *t, char *err, size_t errlen)
{
    return t->admin ? rmqa_redeclare(t->admin, err, errlen) : EW_OK;
}
