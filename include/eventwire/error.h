/* eventwire: error codes. Every fallible call returns an ew_err; 0 is success. */
#ifndef EVENTWIRE_ERROR_H
#define EVENTWIRE_ERROR_H

#include <eventwire/export.h>

EW_BEGIN_DECLS

typedef enum ew_err {
    EW_OK            =  0,
    EW_EINVAL        =  1,  /* an argument is invalid (ew_last_error() says which) */
    EW_ENOMEM        =  2,  /* out of memory */
    EW_ENOTFOUND     =  3,  /* no such event, listener, queue or transport scheme */
    EW_ECONFLICT     =  4,  /* a name is already registered differently */
    EW_ESTATE        =  5,  /* the manager is not in a state that allows the call */
    EW_ETIMEDOUT     =  6,  /* a bounded wait ran out; a send that fails with it was
                            never written to the broker and never will be */
    EW_ECLOSED       =  7,  /* the manager is stopping or stopped */
    EW_EDECODE       =  8,  /* a body does not decode into the event's schema */
    EW_EENCODE       =  9,  /* an event cannot be encoded (e.g. NULL required string) */
    EW_ETOOBIG       = 10,  /* a body, header or frame is over its limit */
    EW_EREFUSED      = 11,  /* a pipeline hook refused the envelope */
    EW_ELISTENER     = 12,  /* a listener returned failure */
    EW_ENORETRY      = 13,  /* returned by a listener: dead-letter now, do not retry */
    EW_ECONNECT      = 14,  /* the broker cannot be reached */
    EW_EAUTH         = 15,  /* the broker refused the credentials or the vhost */
    EW_EBROKER       = 16,  /* the broker refused an operation (nack, ERROR frame, rejected) */
    EW_EPROTO        = 17,  /* the peer broke the protocol (malformed frame) */
    EW_ENOTSUP       = 18,  /* the transport does not support this */
    EW_EIO           = 19,  /* a socket or system call failed */
    EW_EDISCONNECTED = 20,  /* the connection dropped; the transport is reconnecting */
    EW_EINDOUBT      = 21,  /* a send was written to the broker but not confirmed before its
                            deadline or before the connection died: it may have been
                            delivered, and it will not be sent again */
    EW_ETLS          = 22   /* the TLS handshake failed: the broker's certificate is not
                            trusted or does not name the host, or ours was refused */
} ew_err;

/* A static English text for err; never NULL. Thread-safe. */
EW_API const char *ew_strerror(ew_err err);

/* err's symbolic name, "EW_EINDOUBT" for EW_EINDOUBT (the error.type of
 * the metrics); NULL for a value that is no ew_err. Thread-safe. */
EW_API const char *ew_errname(ew_err err);

/* Why the last eventwire call on this thread failed, with the detail the
 * code cannot carry: the broker's or the TLS library's own text, the bad name
 * or option, the field path of an encoding error. For example "the broker
 * refused the login of user 'guest' on rabbitmq://127.0.0.1:5672/: 403
 * ACCESS_REFUSED - Login was refused ..." or "cannot connect to STOMP broker
 * stomp+ssl://127.0.0.1:61612: TLS handshake with 127.0.0.1:61612:
 * certificate not trusted: ...". Meaningful right after a call returned an
 * error (every public call that fails sets it); after a call that succeeded
 * it is usually "". Never NULL, never holds credentials. Valid until the next
 * eventwire call on this thread. Thread-safe: each thread has its own. */
EW_API const char *ew_last_error(void);

EW_END_DECLS

#endif
