/* Shared by the AMQP 1.0 transport's integration tests: the broker URL,
 * a log and error capture, and a few RabbitMQ operations over AMQP 0-9-1
 * (deleting what a test made, or breaking things on purpose). Header-only. */
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

/* ---- capture of log lines and reported errors --------------------------- */

typedef struct capture {
    pthread_mutex_t mu;
    char text[16384];
    size_t len;
    int errors;
    ew_err last_code;
} capture;

static SUPPORT_UNUSED void capture_init(capture *c)
{
    memset(c, 0, sizeof *c);
    pthread_mutex_init(&c->mu, NULL);
}

static void capture_add_(capture *c, const char *line)
{
    pthread_mutex_lock(&c->mu);
    int n = snprintf(c->text + c->len, sizeof c->text - c->len, "%s\n", line);
    if (n > 0)
        c->len += (size_t)n < sizeof c->text - c->len ? (size_t)n : sizeof c->text - c->len - 1;
    pthread_mutex_unlock(&c->mu);
}

static SUPPORT_UNUSED void capture_log(void *user, ew_log_level level, const char *msg)
{
    (void)level;
    capture_add_(user, msg);
}

static SUPPORT_UNUSED void capture_error(void *user, const ew_error_info *info)
{
    capture *c = user;
    capture_add_(c, info->text ? info->text : "(no text)");
    pthread_mutex_lock(&c->mu);
    c->errors++;
    c->last_code = info->code;
    pthread_mutex_unlock(&c->mu);
}

static SUPPORT_UNUSED bool capture_has(capture *c, const char *needle)
{
    pthread_mutex_lock(&c->mu);
    bool yes = strstr(c->text, needle) != NULL;
    pthread_mutex_unlock(&c->mu);
    return yes;
}

static SUPPORT_UNUSED bool capture_wait_for(capture *c, const char *needle, int timeout_ms)
{
    int64_t deadline = ewi_now_ms() + timeout_ms;
    while (!capture_has(c, needle)) {
        if (ewi_now_ms() > deadline)
            return false;
        ewi_sleep_ms(20);
    }
    return true;
}

/* ---- RabbitMQ over AMQP 0-9-1 -------------------------------------------- */

/* Runs one queue.delete or exchange.delete on the test broker. */
static SUPPORT_UNUSED void rmq_delete(const char *kind, const char *name)
{
    ewi_url u;
    char err[128];
    if (ewi_url_parse(amqp_test_url(), &u, err, sizeof err) != EW_OK)
        fail_msg("bad EW_TEST_AMQP_URL: %s", err);
    amqp_connection_state_t c = amqp_new_connection();
    amqp_socket_t *s = amqp_tcp_socket_new(c);
    if (amqp_socket_open(s, u.host[0] ? u.host : "127.0.0.1", u.port ? u.port : 5672))
        fail_msg("AMQP 0-9-1 connect failed: is RabbitMQ running?");
    amqp_rpc_reply_t r = amqp_login(c, "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN,
                                    u.user ? u.user : "guest",
                                    u.password ? u.password : "guest");
    if (r.reply_type != AMQP_RESPONSE_NORMAL)
        fail_msg("AMQP 0-9-1 login failed");
    amqp_channel_open(c, 1);
    amqp_get_rpc_reply(c);
    if (strcmp(kind, "queue") == 0)
        amqp_queue_delete(c, 1, amqp_cstring_bytes(name), 0, 0);
    else
        amqp_exchange_delete(c, 1, amqp_cstring_bytes(name), 0);
    r = amqp_get_rpc_reply(c);
    if (r.reply_type != AMQP_RESPONSE_NORMAL)
        fail_msg("deleting %s %s failed", kind, name);
    amqp_channel_close(c, 1, AMQP_REPLY_SUCCESS);
    amqp_connection_close(c, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(c);
    ewi_url_free(&u);
}

#endif
