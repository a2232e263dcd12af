/* Shared by the AMQP 1.0 transport's integration tests: the broker URL
 * and RabbitMQ clean-up over AMQP 0-9-1. Header-only; the rest comes from
 * the tests' support library (support.h). */
#ifndef EW_AMQP_TEST_H
#define EW_AMQP_TEST_H

#include "support.h"

#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_tcp_socket.h>


/* The broker under test: $EW_TEST_AMQP_URL, by default the local RabbitMQ's
 * AMQP 1.0 plugin. A missing broker fails the tests (it is never a skip). */
static SUPPORT_UNUSED const char *amqp_test_url(void)
{
    const char *u = getenv("EW_TEST_AMQP_URL");
    return u && *u ? u : "amqp://guest:guest@127.0.0.1:5672?dialect=rabbitmq";
}

/* The same URL with extra query options appended ("a=b&c=d"). */
static SUPPORT_UNUSED void amqp_test_url_with(char *buf, size_t len, const char *opts)
{
    const char *u = amqp_test_url();
    snprintf(buf, len, "%s%s%s", u, strchr(u, '?') ? "&" : "?", opts);
}

/* "amqp://user:pass@host:port" for python3-qpid-proton (no query). */
static SUPPORT_UNUSED void amqp_test_python_url(char *buf, size_t len)
{
    ewi_url u;
    char err[128];
    if (ewi_url_parse(amqp_test_url(), &u, err, sizeof err) != EW_OK)
        fail_msg("bad EW_TEST_AMQP_URL: %s", err);
    snprintf(buf, len, "amqp://%s%s%s%s%s:%d", u.user ? u.user : "",
             u.password ? ":" : "", u.password ? u.password : "", u.user ? "@" : "",
             u.host[0] ? u.host : "127.0.0.1", u.port ? u.port : 5672);
    ewi_url_free(&u);
}

/* ---- RabbitMQ over AMQP 0-9-1 -------------------------------------------- */

/* Runs one queue.delete or exchange.delete on the test broker. */
static SUPPORT_UNUSED void rmq_delete(const char *kind, const char *name)
{
    rmq_delete_one(0, name, strcmp(kind, "exchange") == 0);
}

#endif
