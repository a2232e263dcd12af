/* Shared by the STOMP integration tests: the broker URLs, clean-up on
 * RabbitMQ, and a minimal raw STOMP client over a plain socket (to put on
 * the wire what eventwire itself would never send). Header-only; the rest
 * comes from the tests' support library (support.h). */
#ifndef EW_STOMP_TEST_H
#define EW_STOMP_TEST_H

#include "support.h"

#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_tcp_socket.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

/* The broker under test, by dialect: $EW_TEST_STOMP_RABBITMQ_URL or
 * $EW_TEST_STOMP_ACTIVEMQ_URL, else the local brokers of scripts/brokers.
 * A missing broker fails the tests (never a skip). */
static SUPPORT_UNUSED const char *stomp_test_url(const char *dialect)
{
    bool rabbit = strcmp(dialect, "rabbitmq") == 0;
    const char *u = getenv(rabbit ? "EW_TEST_STOMP_RABBITMQ_URL" : "EW_TEST_STOMP_ACTIVEMQ_URL");
    if (u && *u)
        return u;
    return rabbit ? "stomp://guest:guest@127.0.0.1:61613/?dialect=rabbitmq"
                  : "stomp://127.0.0.1:61614?dialect=activemq";
}

/* ---- cleaning up on RabbitMQ --------------------------------------------------- */

/* Deletes what a test made on RabbitMQ (over AMQP 0-9-1: STOMP cannot): the
 * exchange E and, for each listener, the queues E::L and E::L.dlq. Unique
 * names per run would otherwise pile up as durable queues that every broker
 * restart has to recover. Does nothing for other dialects (ActiveMQ cannot
 * delete over STOMP). Best effort: a failure only prints. */
static SUPPORT_UNUSED void stomp_test_cleanup(const char *url, const char *event,
                                              const char *const *listeners, size_t n)
{
    if (!strstr(url, "dialect=rabbitmq"))
        return;
    const char *names[17] = {0};
    for (size_t i = 0; i < n && i < 16; i++)
        names[i] = listeners[i];
    rmq_cleanup(0, event, names);
}

/* ---- a raw STOMP client ----------------------------------------------------- */

typedef struct raw_stomp {
    int fd;
    char buf[65536];
    size_t len;
} raw_stomp;

/* Connects to the broker of url and sends CONNECT with its credentials and
 * vhost; fails the test when the broker does not answer CONNECTED. */
static SUPPORT_UNUSED void raw_connect(raw_stomp *r, const char *url)
{
    ewi_url u;
    char err[256];
    if (ewi_url_parse(url, &u, err, sizeof err) != EW_OK)
        fail_msg("bad URL %s: %s", url, err);
    memset(r, 0, sizeof *r);
    r->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)u.port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    if (connect(r->fd, (struct sockaddr *)&sa, sizeof sa) != 0)
        fail_msg("raw STOMP client: cannot connect to 127.0.0.1:%d", u.port);
    bool rabbit = strstr(url, "dialect=rabbitmq") != NULL;
    char frame[512];
    int n = snprintf(frame, sizeof frame, "CONNECT\naccept-version:1.2\nhost:%s\n%s%s%s%s%s\n",
                     rabbit ? (u.path && *u.path ? u.path : "/") : "localhost",
                     u.user ? "login:" : "", u.user ? u.user : "", u.user ? "\npasscode:" : "",
                     u.password ? u.password : "", u.user ? "\n" : "");
    if (send(r->fd, frame, (size_t)n + 1, MSG_NOSIGNAL) != n + 1) /* with the NUL */
        fail_msg("raw STOMP client: send failed");
    ewi_url_free(&u);
    /* Read up to the CONNECTED frame's NUL. */
    int64_t deadline = ewi_now_ms() + 5000;
    while (!memchr(r->buf, 0, r->len)) {
        struct pollfd p = {.fd = r->fd, .events = POLLIN};
        if (poll(&p, 1, ewi_left_ms(deadline)) <= 0)
            fail_msg("raw STOMP client: no answer to CONNECT");
        ssize_t k = recv(r->fd, r->buf + r->len, sizeof r->buf - r->len - 1, 0);
        if (k <= 0)
            fail_msg("raw STOMP client: connection closed after CONNECT");
        r->len += (size_t)k;
    }
    if (strncmp(r->buf, "CONNECTED", 9) != 0)
        fail_msg("raw STOMP client: %.*s", (int)r->len, r->buf);
}

/* Sends len bytes as they are (a whole frame, NUL included). */
static SUPPORT_UNUSED void raw_send(raw_stomp *r, const void *bytes, size_t len)
{
    if (send(r->fd, bytes, len, MSG_NOSIGNAL) != (ssize_t)len)
        fail_msg("raw STOMP client: send failed");
}

/* Waits for the RECEIPT with receipt-id id; fails the test otherwise. */
static SUPPORT_UNUSED void raw_wait_receipt(raw_stomp *r, const char *id)
{
    char want[128];
    snprintf(want, sizeof want, "receipt-id:%s\n", id);
    int64_t deadline = ewi_now_ms() + 10000;
    for (;;) {
        r->buf[r->len] = 0;
        for (size_t i = 0; i + strlen(want) <= r->len; i++)
            if (memcmp(r->buf + i, want, strlen(want)) == 0)
                return;
        struct pollfd p = {.fd = r->fd, .events = POLLIN};
        if (poll(&p, 1, ewi_left_ms(deadline)) <= 0)
            fail_msg("raw STOMP client: no RECEIPT %s", id);
        if (r->len + 1 >= sizeof r->buf)
            r->len = 0;
        ssize_t k = recv(r->fd, r->buf + r->len, sizeof r->buf - r->len - 1, 0);
        if (k <= 0)
            fail_msg("raw STOMP client: closed while waiting for RECEIPT %s: %.*s", id,
                     (int)r->len, r->buf);
        r->len += (size_t)k;
    }
}

static SUPPORT_UNUSED void raw_close(raw_stomp *r)
{
    close(r->fd);
}

#endif
