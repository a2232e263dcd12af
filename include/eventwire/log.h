/* eventwire: log levels and the log sink. */
#ifndef EVENTWIRE_LOG_H
#define EVENTWIRE_LOG_H

#include <eventwire/export.h>

EW_BEGIN_DECLS

typedef enum ew_log_level {
    EW_LOG_DEFAULT = 0, /* in options: the level named by $EW_LOG, else warn */
    EW_LOG_ERROR = 1,
    EW_LOG_WARN = 2,
    EW_LOG_INFO = 3,
    EW_LOG_DEBUG = 4,
    EW_LOG_TRACE = 5
} ew_log_level;

/* A log sink. Runs on whichever thread logs (callers, workers, transport I/O
 * threads), possibly on several at once: it must be thread-safe and must not
 * call back into eventwire. msg is a NUL-terminated line without newline,
 * valid until the sink returns. Credentials never appear in msg. */
typedef void (*ew_log_fn)(void *user, ew_log_level level, const char *msg);

/* The level named by "error", "warn", "info", "debug" or "trace";
 * dflt when name is NULL or unknown. Thread-safe. */
EW_API ew_log_level ew_log_level_parse(const char *name, ew_log_level dflt);

EW_END_DECLS

#endif
