/* The tests' TCP relay and TLS front (see relay.h): one poll loop per
 * relay. */
#include "relay.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "ewi.h"

#define BUF_SIZE (256 * 1024)

enum mode { UP, FROZEN, DOWN };

typedef struct dbuf {
    size_t off, len;
    char data[BUF_SIZE];
} dbuf;

typedef struct pair {
    int cfd, bfd;       /* client side, broker side; -1 once closed */
    SSL *ssl;           /* a TLS front's client side; NULL for plain TCP */
    bool handshaken;    /* the TLS handshake completed */
    bool want_write;    /* TLS wants the client socket writable */
    bool c_eof, b_eof;  /* that side sent FIN: flush the other way, then close */
    bool watched;       /* was open when the relay froze */
    dbuf c2b, b2c;
    struct pair *next;
} pair;

struct relay {
    pthread_t th;
    pthread_mutex_t mu;
    int wake[2];
    int lfd;
    int hold;           /* bound, never listening: keeps the port ours while down */
    SSL_CTX *tls;       /* a TLS front */
    pthread_cond_t applied; /* cur changed */
    int port, target;
    enum mode want, cur;
    bool quit;
    pair *pairs;
    size_t open_clients, accepted, watched_open;
    int64_t watched_closed_ms;
};

static void nonblock(int fd)
{
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

/* A socket bound to 127.0.0.1:port (0: the kernel picks), listening when
 * listening is true. SO_REUSEPORT lets the listener share the port with the
 * relay's holding socket, which is bound but never listens: while the
 * relay is down, connects are refused and yet no other socket (an outgoing
 * connection's ephemeral port, say) can take the port. */
static int bind_on(int port, bool listening)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || (listening && listen(fd, 64) != 0)) {
        close(fd);
        return -1;
    }
    nonblock(fd);
    return fd;
}

static int listen_on(int port)
{
    return bind_on(port, true);
}

static int bound_port(int fd)
{
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    if (getsockname(fd, (struct sockaddr *)&a, &len) != 0)
        return -1;
    return ntohs(a.sin_port);
}

static void poke(relay *r)
{
    char c = 1;
    ssize_t n = write(r->wake[1], &c, 1);
    (void)n;
}

/* Under r->mu. */
static void close_client(relay *r, pair *p)
{
    if (p->cfd < 0)
        return;
    if (p->ssl)
        SSL_free(p->ssl);
    p->ssl = NULL;
    close(p->cfd);
    p->cfd = -1;
    r->open_clients--;
    if (p->watched) {
        p->watched = false;
        if (--r->watched_open == 0)
            r->watched_closed_ms = ewi_now_ms();
    }
}

static void close_pair(relay *r, pair *p)
{
    close_client(r, p);
    if (p->bfd >= 0)
        close(p->bfd);
    p->bfd = -1;
}

static void reap(relay *r)
{
    for (pair **pp = &r->pairs; *pp;) {
        pair *p = *pp;
        if (p->cfd < 0 && p->bfd < 0) {
            *pp = p->next;
            free(p);
        } else {
            pp = &p->next;
        }
    }
}

static void accept_new(relay *r)
{
    for (;;) {
        int cfd = accept4(r->lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (cfd < 0)
            return;
        int bfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)r->target)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        /* Loopback connects answer at once; a refusal closes the client too. */
        if (bfd < 0 || connect(bfd, (struct sockaddr *)&a, sizeof a) != 0) {
            if (bfd >= 0)
                close(bfd);
            close(cfd);
            continue;
        }
        nonblock(bfd);
        int one = 1;
        setsockopt(bfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        pair *p = calloc(1, sizeof *p);
        if (!p) {
            close(bfd);
            close(cfd);
            continue;
        }
        if (r->tls) {
            p->ssl = SSL_new(r->tls);
            if (!p->ssl || !SSL_set_fd(p->ssl, cfd)) {
                SSL_free(p->ssl);
                free(p);
                close(bfd);
                close(cfd);
                continue;
            }
            SSL_set_accept_state(p->ssl);
        }
        p->cfd = cfd;
        p->bfd = bfd;
        p->next = r->pairs;
        r->pairs = p;
        r->open_clients++;
        r->accepted++;
    }
}

/* The outcome of a TLS call that returned rc <= 0: true when it only has
 * to wait for the socket (and notes which way); false when the connection
 * is over. */
static bool tls_again(pair *p, int rc)
{
    int e = SSL_get_error(p->ssl, rc);
    ERR_clear_error();
    p->want_write = e == SSL_ERROR_WANT_WRITE;
    return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE;
}

/* A TLS front's handshake step; false when the handshake failed (a client
 * that does not trust the certificate, or that does not speak TLS). */
static bool tls_handshake(pair *p)
{
    int rc = SSL_do_handshake(p->ssl);
    if (rc == 1) {
        p->handshaken = true;
        p->want_write = false;
        return true;
    }
    return tls_again(p, rc);
}

/* Reads from fd (through ssl when not NULL) into b; false on EOF or error. */
static bool fill(pair *p, int fd, SSL *ssl, dbuf *b)
{
    if (b->len)
        return true;
    if (ssl) {
        int n = SSL_read(ssl, b->data, (int)sizeof b->data);
        if (n > 0) {
            b->off = 0;
            b->len = (size_t)n;
            p->want_write = false;
            return true;
        }
        return tls_again(p, n);
    }
    ssize_t n = read(fd, b->data, sizeof b->data);
    if (n > 0) {
        b->off = 0;
        b->len = (size_t)n;
        return true;
    }
    return n < 0 && (errno == EAGAIN || errno == EINTR);
}

/* Writes what b holds to fd (through ssl when not NULL); false on error. */
static bool drain(pair *p, int fd, SSL *ssl, dbuf *b)
{
    while (b->len) {
        if (ssl) {
            int n = SSL_write(ssl, b->data + b->off, (int)b->len);
            if (n <= 0)
                return tls_again(p, n);
            p->want_write = false;
            b->off += (size_t)n;
            b->len -= (size_t)n;
            continue;
        }
        ssize_t n = write(fd, b->data + b->off, b->len);
        if (n < 0)
            return errno == EAGAIN || errno == EINTR;
        b->off += (size_t)n;
        b->len -= (size_t)n;
    }
    return true;
}

static void apply_mode(relay *r)
{
    if (r->want == r->cur)
        return;
    if (r->want == DOWN) {
        for (pair *p = r->pairs; p; p = p->next)
            close_pair(r, p);
        reap(r);
        if (r->lfd >= 0)
            close(r->lfd);
        r->lfd = -1;
        r->cur = DOWN;
        pthread_cond_broadcast(&r->applied);
        return;
    }
    if (r->lfd < 0 && (r->lfd = listen_on(r->port)) < 0)
        return; /* no descriptor left: again on the next round */
    if (r->want == FROZEN) {
        r->watched_open = 0;
        r->watched_closed_ms = 0;
        for (pair *p = r->pairs; p; p = p->next)
            if (p->cfd >= 0) {
                p->watched = true;
                r->watched_open++;
            }
        if (!r->watched_open)
            r->watched_closed_ms = ewi_now_ms();
    }
    r->cur = r->want;
    pthread_cond_broadcast(&r->applied);
}

static void *relay_main(void *arg)
{
    relay *r = arg;
    struct pollfd *fds = NULL;
    pair **owners = NULL;
    size_t cap = 0;
    pthread_mutex_lock(&r->mu);
    while (!r->quit) {
        apply_mode(r);
        size_t n = 0, need = 2;
        for (pair *p = r->pairs; p; p = p->next)
            need += 2;
        if (need > cap) {
            cap = need * 2;
            fds = realloc(fds, cap * sizeof *fds);
            owners = realloc(owners, cap * sizeof *owners);
        }
        fds[n] = (struct pollfd){.fd = r->wake[0], .events = POLLIN};
        owners[n++] = NULL;
        fds[n] = (struct pollfd){.fd = r->cur == UP ? r->lfd : -1, .events = POLLIN};
        owners[n++] = NULL;
        for (pair *p = r->pairs; p; p = p->next) {
            short ce = 0, be = 0;
            if (r->cur == UP && p->ssl && !p->handshaken) {
                ce = p->want_write ? POLLOUT : POLLIN;
            } else if (r->cur == UP) {
                if (!p->c_eof && !p->c2b.len)
                    ce |= POLLIN;
                if (p->b2c.len || p->want_write)
                    ce |= POLLOUT;
                if (!p->b_eof && !p->b2c.len)
                    be |= POLLIN;
                if (p->c2b.len)
                    be |= POLLOUT;
            } else {
                ce = POLLRDHUP; /* only whether the client gives up */
            }
            fds[n] = (struct pollfd){.fd = p->cfd, .events = ce};
            owners[n++] = p;
            fds[n] = (struct pollfd){.fd = r->cur == UP ? p->bfd : -1, .events = be};
            owners[n++] = p;
        }
        /* Read under the lock: set_mode writes want from another thread. */
        int timeout = r->cur == r->want ? 200 : 50;
        pthread_mutex_unlock(&r->mu);
        int rc = poll(fds, n, timeout);
        pthread_mutex_lock(&r->mu);
        if (rc <= 0)
            continue;
        if (fds[0].revents) {
            char buf[64];
            while (read(r->wake[0], buf, sizeof buf) > 0) {
            }
        }
        if (r->cur != r->want)
            continue; /* the sockets polled may be gone: apply first */
        if (fds[1].revents && r->cur == UP)
            accept_new(r);
        for (size_t i = 2; i < n; i += 2) {
            pair *p = owners[i];
            short cr = fds[i].revents, br = fds[i + 1].revents;
            if (p->cfd < 0)
                continue;
            if (r->cur == FROZEN) {
                if (cr & (POLLRDHUP | POLLHUP | POLLERR))
                    close_pair(r, p);
                continue;
            }
            if (p->ssl && !p->handshaken) {
                if (cr && !tls_handshake(p))
                    close_pair(r, p);
                if (!p->handshaken)
                    continue;
                cr |= POLLIN; /* the client may have sent data behind its Finished */
            }
            /* TLS may hold a record it read already: read it without waiting. */
            if (p->ssl && SSL_pending(p->ssl) > 0)
                cr |= POLLIN;
            if ((cr & (POLLIN | POLLOUT | POLLHUP | POLLERR)) &&
                !fill(p, p->cfd, p->ssl, &p->c2b))
                p->c_eof = true;
            if ((br & (POLLIN | POLLHUP | POLLERR)) && !fill(p, p->bfd, NULL, &p->b2c))
                p->b_eof = true;
            bool ok = drain(p, p->bfd, NULL, &p->c2b) && drain(p, p->cfd, p->ssl, &p->b2c);
            if (!ok || (p->c_eof && !p->c2b.len) || (p->b_eof && !p->b2c.len))
                close_pair(r, p);
        }
        reap(r);
    }
    for (pair *p = r->pairs; p; p = p->next)
        close_pair(r, p);
    reap(r);
    pthread_mutex_unlock(&r->mu);
    free(fds);
    free(owners);
    return NULL;
}

static relay *relay_make(int listen_port, int target_port, bool up, SSL_CTX *tls)
{
    /* A client that hangs up while the relay writes to it must not end the
     * test: the write fails (EPIPE) and the pair closes. */
    struct sigaction old;
    if (sigaction(SIGPIPE, NULL, &old) == 0 && old.sa_handler == SIG_DFL)
        signal(SIGPIPE, SIG_IGN);
    relay *r = calloc(1, sizeof *r);
    if (!r) {
        SSL_CTX_free(tls);
        return NULL;
    }
    r->target = target_port;
    r->tls = tls;
    r->lfd = -1;
    r->wake[0] = r->wake[1] = -1;
    r->hold = bind_on(listen_port, false);
    if (r->hold < 0 || (r->port = bound_port(r->hold)) <= 0 ||
        (up && (r->lfd = listen_on(r->port)) < 0) ||
        pipe2(r->wake, O_CLOEXEC | O_NONBLOCK) != 0)
        goto fail;
    r->want = r->cur = up ? UP : DOWN;
    pthread_mutex_init(&r->mu, NULL);
    ewi_cond_init_mono(&r->applied);
    if (pthread_create(&r->th, NULL, relay_main, r) != 0) {
        pthread_mutex_destroy(&r->mu);
        pthread_cond_destroy(&r->applied);
        goto fail;
    }
    return r;
fail:
    for (int i = 0; i < 2; i++)
        if (r->wake[i] >= 0)
            close(r->wake[i]);
    if (r->lfd >= 0)
        close(r->lfd);
    if (r->hold >= 0)
        close(r->hold);
    SSL_CTX_free(r->tls);
    free(r);
    return NULL;
}

relay *relay_new(int listen_port, int target_port, bool up)
{
    return relay_make(listen_port, target_port, up, NULL);
}

relay *relay_new_tls(int listen_port, int target_port, bool up, const char *cert_pem,
                     const char *key_pem)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx)
        return NULL;
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_pem) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, key_pem, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        char why[256];
        ERR_error_string_n(ERR_get_error(), why, sizeof why);
        fprintf(stderr, "relay: cannot use %s with %s: %s\n", cert_pem, key_pem, why);
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    return relay_make(listen_port, target_port, up, ctx);
}

int relay_port(const relay *r)
{
    return r->port;
}

static void set_mode(relay *r, enum mode m)
{
    pthread_mutex_lock(&r->mu);
    r->want = m;
    poke(r);
    /* Return once the relay thread applied it: the caller times from here. */
    int64_t deadline = ewi_now_ms() + 30000;
    while (r->cur != m && ewi_left_ms(deadline) > 0)
        ewi_cond_wait_until(&r->applied, &r->mu, deadline);
    bool done = r->cur == m;
    pthread_mutex_unlock(&r->mu);
    if (!done) {
        fprintf(stderr, "relay on port %d: state change not applied within 30 s\n", r->port);
        abort();
    }
}

void relay_freeze(relay *r)
{
    set_mode(r, FROZEN);
}

void relay_break(relay *r)
{
    set_mode(r, DOWN);
}

void relay_restore(relay *r)
{
    set_mode(r, UP);
}

size_t relay_open_clients(relay *r)
{
    pthread_mutex_lock(&r->mu);
    size_t n = r->open_clients;
    pthread_mutex_unlock(&r->mu);
    return n;
}

size_t relay_accepted(relay *r)
{
    pthread_mutex_lock(&r->mu);
    size_t n = r->accepted;
    pthread_mutex_unlock(&r->mu);
    return n;
}

int64_t relay_frozen_all_closed_ms(relay *r)
{
    pthread_mutex_lock(&r->mu);
    int64_t t = r->watched_closed_ms;
    pthread_mutex_unlock(&r->mu);
    return t;
}

void relay_free(relay *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->mu);
    r->quit = true;
    poke(r);
    pthread_mutex_unlock(&r->mu);
    pthread_join(r->th, NULL);
    if (r->lfd >= 0)
        close(r->lfd);
    close(r->hold);
    SSL_CTX_free(r->tls);
    close(r->wake[0]);
    close(r->wake[1]);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->applied);
    free(r);
}
