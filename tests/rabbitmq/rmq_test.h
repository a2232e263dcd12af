/* Shared by the RabbitMQ transport's tests: the broker URL, a raw
 * librabbitmq client (what a foreign producer or an operator
 * does), and rabbitmqctl through scripts/brokers/rabbitmq.sh. Header-only.
 *
 * The broker is $EW_TEST_RABBITMQ_URL, by default the one
 * scripts/brokers/rabbitmq.sh starts; when it is not running these tests
 * fail, they never skip. */
#ifndef EW_RMQ_TEST_H
#define EW_RMQ_TEST_H

#include "support.h"

#include <amqp.h>
#include <amqp_tcp_socket.h>

#define RMQ_TEST_DEFAULT_URL "rabbitmq://guest:guest@127.0.0.1:5672/"

static SUPPORT_UNUSED const char *rmq_test_url(void)
{
    const char *u = getenv("EW_TEST_RABBITMQ_URL");
    return u && *u ? u : RMQ_TEST_DEFAULT_URL;
}

/* ---- a raw librabbitmq client on 127.0.0.1:5672 ------------------------- */

static SUPPORT_UNUSED amqp_connection_state_t raw_connect(void)
{
    amqp_connection_state_t c = amqp_new_connection();
    amqp_socket_t *s = amqp_tcp_socket_new(c);
    if (!s || amqp_socket_open(s, "127.0.0.1", 5672) != AMQP_STATUS_OK)
        fail_msg("raw client: cannot connect to RabbitMQ on 127.0.0.1:5672 "
                 "(start it: scripts/brokers/rabbitmq.sh start)");
    amqp_rpc_reply_t r = amqp_login(c, "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, "guest",
                                    "guest");
    if (r.reply_type != AMQP_RESPONSE_NORMAL)
        fail_msg("raw client: login failed");
    amqp_channel_open(c, 1);
    if (amqp_get_rpc_reply(c).reply_type != AMQP_RESPONSE_NORMAL)
        fail_msg("raw client: channel.open failed");
    return c;
}

static SUPPORT_UNUSED void raw_close(amqp_connection_state_t c)
{
    amqp_channel_close(c, 1, AMQP_REPLY_SUCCESS);
    amqp_connection_close(c, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(c);
}

/* The RPC reply of the last call: true when normal. */
static SUPPORT_UNUSED bool raw_ok(amqp_connection_state_t c)
{
    return amqp_get_rpc_reply(c).reply_type == AMQP_RESPONSE_NORMAL;
}

/* Whether queue exists: a passive declare on channel 2 of c, opened for it
 * and closed again (by the broker with 404 when the queue is missing). */
static SUPPORT_UNUSED bool raw_queue_exists(amqp_connection_state_t c, const char *queue)
{
    amqp_channel_open(c, 2);
    if (!raw_ok(c))
        fail_msg("raw client: channel.open failed");
    amqp_queue_declare(c, 2, amqp_cstring_bytes(queue), 1, 0, 0, 0, amqp_empty_table);
    amqp_rpc_reply_t r = amqp_get_rpc_reply(c);
    if (r.reply_type == AMQP_RESPONSE_NORMAL) {
        amqp_channel_close(c, 2, AMQP_REPLY_SUCCESS);
        return true;
    }
    if (r.reply_type != AMQP_RESPONSE_SERVER_EXCEPTION || r.reply.id != AMQP_CHANNEL_CLOSE_METHOD ||
        ((amqp_channel_close_t *)r.reply.decoded)->reply_code != 404)
        fail_msg("raw client: passive declare of %s failed other than with 404", queue);
    amqp_channel_close_ok_t ok = {0};
    amqp_send_method(c, 2, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
    return false;
}

static SUPPORT_UNUSED void raw_publish(amqp_connection_state_t c, const char *exchange,
                                       const char *key, const char *ct, const void *body,
                                       size_t len)
{
    amqp_basic_properties_t p;
    memset(&p, 0, sizeof p);
    p._flags = AMQP_BASIC_DELIVERY_MODE_FLAG;
    p.delivery_mode = 2;
    if (ct) {
        p._flags |= AMQP_BASIC_CONTENT_TYPE_FLAG;
        p.content_type = amqp_cstring_bytes(ct);
    }
    amqp_bytes_t b = {len, (void *)(uintptr_t)body};
    if (amqp_basic_publish(c, 1, amqp_cstring_bytes(exchange), amqp_cstring_bytes(key), 0,
                           0, &p, b) != AMQP_STATUS_OK)
        fail_msg("raw client: publish failed");
}

/* basic.get with auto-ack; false when the queue is empty. The message
 * belongs to the caller (amqp_destroy_message). */
static SUPPORT_UNUSED bool raw_get(amqp_connection_state_t c, const char *queue,
                                   amqp_message_t *msg)
{
    amqp_rpc_reply_t r = amqp_basic_get(c, 1, amqp_cstring_bytes(queue), 1);
    if (r.reply_type != AMQP_RESPONSE_NORMAL)
        fail_msg("raw client: basic.get %s failed", queue);
    if (r.reply.id != AMQP_BASIC_GET_OK_METHOD)
        return false;
    if (amqp_read_message(c, 1, msg, 0).reply_type != AMQP_RESPONSE_NORMAL)
        fail_msg("raw client: reading the message from %s failed", queue);
    return true;
}

/* The string value of header key in a table, or NULL (in buf). */
static SUPPORT_UNUSED const char *raw_header(const amqp_table_t *t, const char *key,
                                             char *buf, size_t len)
{
    for (int i = 0; i < t->num_entries; i++) {
        const amqp_table_entry_t *e = &t->entries[i];
        if (e->key.len == strlen(key) && memcmp(e->key.bytes, key, e->key.len) == 0 &&
            (e->value.kind == AMQP_FIELD_KIND_UTF8 || e->value.kind == AMQP_FIELD_KIND_BYTES)) {
            snprintf(buf, len, "%.*s", (int)e->value.value.bytes.len,
                     (const char *)e->value.value.bytes.bytes);
            return buf;
        }
    }
    return NULL;
}

/* Deletes a queue (or an exchange with exchange=true); errors ignored. */
static SUPPORT_UNUSED void raw_delete(const char *name, bool exchange)
{
    rmq_delete_one(0, name, exchange);
}

/* ---- rabbitmqctl through the project's script --------------------------- */

/* Output of `<script> ctl -q <args>`, malloc'd; fails the test on error. */
static SUPPORT_UNUSED char *ctl(const char *script, const char *args)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s ctl -q %s 2>&1", script, args);
    FILE *f = popen(cmd, "r");
    if (!f)
        fail_msg("cannot run %s", cmd);
    size_t cap = 1 << 16, n = 0;
    char *out = malloc(cap);
    size_t got;
    while ((got = fread(out + n, 1, cap - n - 1, f)) > 0) {
        n += got;
        if (n + 1 == cap)
            out = realloc(out, cap *= 2);
    }
    out[n] = '\0';
    int rc = pclose(f);
    if (rc != 0)
        fail_msg("%s failed (%d): %s", cmd, rc, out);
    return out;
}

/* The line of ctl output whose first column is name, or NULL (in buf). */
static SUPPORT_UNUSED const char *ctl_row(const char *out, const char *name, char *buf,
                                          size_t len)
{
    size_t nl = strlen(name);
    for (const char *p = out; p && *p;) {
        const char *e = strchr(p, '\n');
        size_t ll = e ? (size_t)(e - p) : strlen(p);
        if (ll > nl && strncmp(p, name, nl) == 0 && p[nl] == '\t') {
            snprintf(buf, len, "%.*s", (int)ll, p);
            return buf;
        }
        p = e ? e + 1 : NULL;
    }
    return NULL;
}

#endif
