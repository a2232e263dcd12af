/* A TCP connection for an I/O thread, optionally wrapped in TLS (OpenSSL):
 * the peer's chain verified against a CA file (else the system's CAs), its
 * certificate matched to the host we dialled (a DNS name, or an IP address
 * against the certificate's IP addresses) unless verify=peer, and an
 * optional client certificate. The connect and the handshake are bounded
 * by a timeout and block the calling thread; reads and writes never block.
 * One thread uses a socket at a time. */
#ifndef EVENTWIRE_SOCK_H
#define EVENTWIRE_SOCK_H

#include "ewi.h"
#include "options.h"

typedef struct ewi_sock_conf {
    const char *host;     /* DNS name or IP address */
    int port;
    bool tls;
    const char *ca_file;  /* TLS: trust these CAs (NULL: the system's) */
    const char *cert_file, *key_file; /* TLS: client certificate, or NULL */
    ewi_verify verify;    /* TLS: name (default), peer or none */
} ewi_sock_conf;

typedef struct ewi_sock ewi_sock;

/* Connects within timeout_ms and does the TLS handshake when c->tls. NULL
 * with the reason in err and *code: EW_ECONNECT (unreachable, refused, cut
 * or timed out: a retry may help), EW_ETLS with *final (the certificate is
 * not trusted or not for this host), EW_EINVAL with *final (our client
 * certificate or key does not load), EW_ENOMEM. */
ewi_sock *ewi_sock_open(const ewi_sock_conf *c, int timeout_ms, ew_err *code, bool *final,
                        char *err, size_t errlen);
void ewi_sock_close(ewi_sock *s); /* NULL allowed */
int ewi_sock_fd(const ewi_sock *s);
/* Bytes moved (> 0), 0 when it would block, -1 when the connection is gone
 * (reason in err). want_write: a read must wait for POLLOUT (TLS); want_read:
 * a write must wait for POLLIN. */
long ewi_sock_read(ewi_sock *s, void *buf, size_t len, bool *want_write, char *err,
                   size_t errlen);
long ewi_sock_write(ewi_sock *s, const void *buf, size_t len, bool *want_read, char *err,
                    size_t errlen);
/* TLS holds decrypted bytes that poll() cannot see. */
bool ewi_sock_pending(const ewi_sock *s);

#endif
