#include "ewi.h"

const char *ew_strerror(ew_err err)
{
    switch (err) {
    case EW_OK: return "success";
    case EW_EINVAL: return "invalid argument";
    case EW_ENOMEM: return "out of memory";
    case EW_ENOTFOUND: return "not found";
    case EW_ECONFLICT: return "already registered differently";
    case EW_ESTATE: return "not allowed in the manager's current state";
    case EW_ETIMEDOUT: return "timed out";
    case EW_ECLOSED: return "manager stopped";
    case EW_EDECODE: return "body does not decode";
    case EW_EENCODE: return "event cannot be encoded";
    case EW_ETOOBIG: return "over the size limit";
    case EW_EREFUSED: return "refused by a pipeline";
    case EW_ELISTENER: return "listener failed";
    case EW_ENORETRY: return "listener failed, no retry";
    case EW_ECONNECT: return "cannot connect to the broker";
    case EW_EAUTH: return "broker refused the credentials or vhost";
    case EW_EBROKER: return "broker refused the operation";
    case EW_EPROTO: return "protocol error";
    case EW_ENOTSUP: return "not supported by this transport";
    case EW_EIO: return "I/O error";
    case EW_EDISCONNECTED: return "connection lost";
    case EW_EINDOUBT: return "written but not confirmed: it may have been delivered";
    case EW_ETLS: return "TLS handshake failed (certificate not trusted or refused)";
    }
    return "unknown error";
}

const char *ew_errname(ew_err err)
{
    switch (err) {
    case EW_OK: return "EW_OK";
    case EW_EINVAL: return "EW_EINVAL";
    case EW_ENOMEM: return "EW_ENOMEM";
    case EW_ENOTFOUND: return "EW_ENOTFOUND";
    case EW_ECONFLICT: return "EW_ECONFLICT";
    case EW_ESTATE: return "EW_ESTATE";
    case EW_ETIMEDOUT: return "EW_ETIMEDOUT";
    case EW_ECLOSED: return "EW_ECLOSED";
    case EW_EDECODE: return "EW_EDECODE";
    case EW_EENCODE: return "EW_EENCODE";
    case EW_ETOOBIG: return "EW_ETOOBIG";
    case EW_EREFUSED: return "EW_EREFUSED";
    case EW_ELISTENER: return "EW_ELISTENER";
    case EW_ENORETRY: return "EW_ENORETRY";
    case EW_ECONNECT: return "EW_ECONNECT";
    case EW_EAUTH: return "EW_EAUTH";
    case EW_EBROKER: return "EW_EBROKER";
    case EW_EPROTO: return "EW_EPROTO";
    case EW_ENOTSUP: return "EW_ENOTSUP";
    case EW_EIO: return "EW_EIO";
    case EW_EDISCONNECTED: return "EW_EDISCONNECTED";
    case EW_EINDOUBT: return "EW_EINDOUBT";
    case EW_ETLS: return "EW_ETLS";
    }
    return NULL;
}

const char *ew_version(void)
{
    return EW_VERSION_STRING;
}
