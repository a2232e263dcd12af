/* A non-blocking TCP connection, optionally wrapped in TLS (OpenSSL). See
 * sock.h. */
#include "sock.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

struct ewi_sock {
    int fd;
    SSL_CTX *ctx;
    SSL *ssl;
};

static void ssl_text(char *err, size_t errlen, const char *what)
{
    unsigned long e = ERR_get_error();
    char buf[256] = "unknown TLS error";
    if (e)
        ERR_error_string_n(e, buf, sizeof buf);
    snprintf(err, errlen, "%s: %s", what, buf);
    ERR_clear_error();
}

static bool wait_fd(int fd, short events, int64_t deadline)
{
    struct pollfd p = {.fd = fd, .events = events};
    for (;;) {
        int left = ewi_left_ms(deadline);
        if (left <= 0)
            return false;
        int n = poll(&p, 1, left);
        if (n > 0)
            return true;
        if (n < 0 && errno != EINTR)
            return false;
    }
}

static int tcp_connect(const ewi_sock_conf *o, int64_t deadline, char *err,
                       size_t errlen)
{
    char port[16];
    snprintf(port, sizeof port, "%d", o->port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int gai = getaddrinfo(o->host, port, &hints, &res);
    if (gai != 0) {
        snprintf(err, errlen, "cannot resolve %s: %s", o->host, gai_strerror(gai));
        return -1;
    }
    int fd = -1;
    for (struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    a->ai_protocol);
        if (fd < 0)
            continue;
        int rc = connect(fd, a->ai_addr, a->ai_addrlen);
        if (rc < 0 && errno == EINPROGRESS) {
            if (!wait_fd(fd, POLLOUT, deadline)) {
                snprintf(err, errlen, "connect to %s:%d timed out", o->host, o->port);
                close(fd);
                fd = -1;
                continue;
            }
            int soerr = 0;
            socklen_t sl = sizeof soerr;
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
            if (soerr) {
                errno = soerr;
                rc = -1;
            } else {
                rc = 0;
            }
        }
        if (rc < 0) {
            snprintf(err, errlen, "connect to %s:%d: %s", o->host, o->port,
                     strerror(errno));
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd >= 0) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return fd;
}

static bool tls_setup(ewi_sock *s, const ewi_sock_conf *o, int64_t deadline,
                      ew_err *code, bool *final, char *err, size_t errlen)
{
    s->ctx = SSL_CTX_new(TLS_client_method());
    if (!s->ctx) {
        ssl_text(err, errlen, "TLS context");
        return false;
    }
    SSL_CTX_set_min_proto_version(s->ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(s->ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                                 SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (o->verify != EWI_VERIFY_NONE) {
        SSL_CTX_set_verify(s->ctx, SSL_VERIFY_PEER, NULL);
        int ok = o->ca_file ? SSL_CTX_load_verify_locations(s->ctx, o->ca_file, NULL)
                            : SSL_CTX_set_default_verify_paths(s->ctx);
        if (ok != 1) {
            char what[300];
            snprintf(what, sizeof what, "loading CA file %s",
                     o->ca_file ? o->ca_file : "(system default)");
            ssl_text(err, errlen, what);
            return false;
        }
    }
    /* The client certificate, for brokers that ask for one. A file that
     * stopped loading since ew_manager_new checked it is the caller's to fix,
     * not a reason to retry. */
    if (o->cert_file &&
        (SSL_CTX_use_certificate_chain_file(s->ctx, o->cert_file) != 1 ||
         SSL_CTX_use_PrivateKey_file(s->ctx, o->key_file, SSL_FILETYPE_PEM) != 1 ||
         SSL_CTX_check_private_key(s->ctx) != 1)) {
        char what[600];
        snprintf(what, sizeof what, "TLS client certificate %s with key %s", o->cert_file,
                 o->key_file);
        ssl_text(err, errlen, what);
        *code = EW_EINVAL;
        *final = true;
        return false;
    }
    s->ssl = SSL_new(s->ctx);
    if (!s->ssl || SSL_set_fd(s->ssl, s->fd) != 1) {
        ssl_text(err, errlen, "TLS session");
        return false;
    }
    struct in6_addr a6;
    struct in_addr a4;
    bool is_ip = inet_pton(AF_INET, o->host, &a4) == 1 ||
                 inet_pton(AF_INET6, o->host, &a6) == 1;
    if (!is_ip)
        SSL_set_tlsext_host_name(s->ssl, o->host);
    if (o->verify == EWI_VERIFY_NAME) {
        X509_VERIFY_PARAM *vp = SSL_get0_param(s->ssl);
        int ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(vp, o->host)
                       : X509_VERIFY_PARAM_set1_host(vp, o->host, 0);
        if (ok != 1) {
            ssl_text(err, errlen, "TLS host check");
            return false;
        }
    }
    for (;;) {
        int rc = SSL_connect(s->ssl);
        if (rc == 1)
            return true;
        int e = SSL_get_error(s->ssl, rc);
        short ev = e == SSL_ERROR_WANT_READ ? POLLIN : e == SSL_ERROR_WANT_WRITE ? POLLOUT : 0;
        if (!ev) {
            long vr = SSL_get_verify_result(s->ssl);
            if (vr != X509_V_OK) {
                *code = EW_ETLS;
                *final = true;
                snprintf(err, errlen, "TLS handshake with %s:%d: certificate not trusted: %s",
                         o->host, o->port, X509_verify_cert_error_string(vr));
                ERR_clear_error();
            } else {
                char what[300];
                snprintf(what, sizeof what, "TLS handshake with %s:%d", o->host, o->port);
                ssl_text(err, errlen, what);
            }
            return false;
        }
        if (!wait_fd(s->fd, ev, deadline)) {
            snprintf(err, errlen, "TLS handshake with %s:%d timed out", o->host, o->port);
            return false;
        }
    }
}

ewi_sock *ewi_sock_open(const ewi_sock_conf *o, int timeout_ms, ew_err *code,
                            bool *final, char *err, size_t errlen)
{
    int64_t deadline = ewi_now_ms() + timeout_ms;
    *code = EW_ECONNECT;
    *final = false;
    ewi_sock *s = calloc(1, sizeof *s);
    if (!s) {
        *code = EW_ENOMEM;
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->fd = tcp_connect(o, deadline, err, errlen);
    if (s->fd < 0) {
        free(s);
        return NULL;
    }
    if (o->tls && !tls_setup(s, o, deadline, code, final, err, errlen)) {
        ewi_sock_close(s);
        return NULL;
    }
    return s;
}

void ewi_sock_close(ewi_sock *s)
{
    if (!s)
        return;
    if (s->ssl) {
        SSL_shutdown(s->ssl); /* best effort, non-blocking */
        SSL_free(s->ssl);
    }
    SSL_CTX_free(s->ctx);
    if (s->fd >= 0)
        close(s->fd);
    ERR_clear_error();
    free(s);
}

int ewi_sock_fd(const ewi_sock *s)
{
    return s->fd;
}

bool ewi_sock_pending(const ewi_sock *s)
{
    return s->ssl && SSL_pending(s->ssl) > 0;
}

long ewi_sock_read(ewi_sock *s, void *buf, size_t len, bool *want_write,
                     char *err, size_t errlen)
{
    *want_write = false;
    if (!s->ssl) {
        for (;;) {
            ssize_t n = recv(s->fd, buf, len, 0);
            if (n > 0)
                return (long)n;
            if (n == 0) {
                snprintf(err, errlen, "the broker closed the connection");
                return -1;
            }
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            snprintf(err, errlen, "read: %s", strerror(errno));
            return -1;
        }
    }
    int n = SSL_read(s->ssl, buf, len > INT32_MAX ? INT32_MAX : (int)len);
    if (n > 0)
        return n;
    int e = SSL_get_error(s->ssl, n);
    if (e == SSL_ERROR_WANT_READ)
        return 0;
    if (e == SSL_ERROR_WANT_WRITE) {
        *want_write = true;
        return 0;
    }
    if (e == SSL_ERROR_ZERO_RETURN)
        snprintf(err, errlen, "the broker closed the TLS connection");
    else if (e == SSL_ERROR_SYSCALL)
        snprintf(err, errlen, "the broker closed the connection");
    else
        ssl_text(err, errlen, "TLS read");
    ERR_clear_error();
    return -1;
}

long ewi_sock_write(ewi_sock *s, const void *buf, size_t len, bool *want_read,
                      char *err, size_t errlen)
{
    *want_read = false;
    if (!s->ssl) {
        for (;;) {
            ssize_t n = send(s->fd, buf, len, MSG_NOSIGNAL);
            if (n >= 0)
                return (long)n;
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            snprintf(err, errlen, "write: %s", strerror(errno));
            return -1;
        }
    }
    int n = SSL_write(s->ssl, buf, len > INT32_MAX ? INT32_MAX : (int)len);
    if (n > 0)
        return n;
    int e = SSL_get_error(s->ssl, n);
    if (e == SSL_ERROR_WANT_WRITE)
        return 0;
    if (e == SSL_ERROR_WANT_READ) {
        *want_read = true;
        return 0;
    }
    if (e == SSL_ERROR_SYSCALL)
        snprintf(err, errlen, "write: the connection is gone");
    else
        ssl_text(err, errlen, "TLS write");
    ERR_clear_error();
    return -1;
}
