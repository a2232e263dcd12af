/* eventwire: error codes. Every fallible call returns an ew_err; 0 is success. */
#ifndef EVENTWIRE_ERROR_H
#define EVENTWIRE_ERROR_H

#include <eventwire/export.h>

EW_BEGIN_DECLS

typedef enum ew_err {
    EW_OK = 0,
    EW_EINVAL,        /* an argument is invalid (the log says which) */
    EW_ENOMEM,        /* out of memory */
    EW_ENOTFOUND,     /* no such event, listener, queue or transport scheme */
    EW_ECONFLICT,     /* a name is already registered differently */
    EW_ESTATE,        /* the manager is not in a state that allows the call */
    EW_ETIMEDOUT,     /* a bounded wait ran out (full queue, outage, confirm) */
    EW_ECLOSED,       /* the manager is stopping or stopped */
    EW_EDECODE,       /* a body does not decode into the event's schema */
    EW_EENCODE,       /* an event cannot be encoded (e.g. NULL required string) */
    EW_ETOOBIG,       /* a body, header or frame is over its limit */
    EW_EREFUSED,      /* a pipeline hook refused the envelope */
    EW_ELISTENER,     /* a listener returned failure */
    EW_ENORETRY,      /* returned by a listener: dead-letter now, do not retry */
    EW_ECONNECT,      /* the broker cannot be reached */
    EW_EAUTH,         /* the broker refused the credentials or the vhost */
    EW_EBROKER,       /* the broker refused an operation (nack, ERROR frame, rejected) */
    EW_EPROTO,        /* the peer broke the protocol (malformed frame) */
    EW_ENOTSUP,       /* the transport does not support this */
    EW_EIO,           /* a socket or system call failed */
    EW_EDISCONNECTED  /* the connection dropped; the transport is reconnecting */
} ew_err;

/* A static English text for err; never NULL. Thread-safe. */
EW_API const char *ew_strerror(int err);

EW_END_DECLS

#endif
