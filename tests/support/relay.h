/* A TCP relay a test controls: it listens on 127.0.0.1 and forwards every
 * connection to a broker port on 127.0.0.1, and on command it freezes,
 * breaks or restores the path. It plays the network between a manager and
 * its broker, so a test can cut it without the broker (or other tests on
 * it) noticing. As a TLS front it also terminates TLS (OpenSSL) with a
 * certificate the test chooses, for a broker port that speaks plain TCP.
 *
 *   up      accepts and forwards in both directions
 *   frozen  forwards nothing, accepts nothing, keeps every socket open: a
 *           silent network; only heart-beats can tell
 *   down    closes both sides of every connection and the listening socket:
 *           connects are refused, as when the broker is gone
 *
 * One thread per relay does all socket work; the functions below may be
 * called from any thread. */
#ifndef EW_TEST_RELAY_H
#define EW_TEST_RELAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct relay relay;

/* A relay to 127.0.0.1:target_port on 127.0.0.1:listen_port (0: a port
 * the kernel picks; read it with relay_port), in state up, or in state down
 * (connects refused) when up is false. The port stays reserved for the
 * relay while it is down, so nothing else takes it in between. NULL when
 * the port cannot be bound. Free with relay_free. */
relay *relay_new(int listen_port, int target_port, bool up);

/* The same as a TLS front: clients do a TLS handshake with it (server
 * certificate cert_pem and its key key_pem, PEM files) and it forwards the
 * plain bytes to target_port. NULL when the port cannot be bound or the
 * certificate or key cannot be loaded (printed on stderr). */
relay *relay_new_tls(int listen_port, int target_port, bool up, const char *cert_pem,
                     const char *key_pem);

/* The port it listens on (also while down: restore listens there again). */
int relay_port(const relay *r);

void relay_freeze(relay *r);
/* Closes every connection and stops listening. */
void relay_break(relay *r);
/* Listens (again) and forwards; connections kept while frozen go on. */
void relay_restore(relay *r);

/* Connections whose client side is still open, and how many were accepted
 * since the relay was made. */
size_t relay_open_clients(relay *r);
size_t relay_accepted(relay *r);
/* Monotonic ms (ewi_now_ms) at which the last connection that was open when
 * relay_freeze ran was closed by its client, or 0 while one is still open:
 * how long the client took to notice the silence. */
int64_t relay_frozen_all_closed_ms(relay *r);

/* Stops the thread, closes everything, frees. NULL allowed. */
void relay_free(relay *r);

#endif
