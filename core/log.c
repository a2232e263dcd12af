/* Logging to the manager's sink, and error reports to its handler. */
#include "manager_priv.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

ew_log_level ew_log_level_parse(const char *name, ew_log_level dflt)
{
    static const char *const names[] = {"", "error", "warn", "info", "debug", "trace"};
    if (!name)
        return dflt;
    for (int i = 1; i <= EW_LOG_TRACE; i++)
        if (strcasecmp(name, names[i]) == 0)
            return (ew_log_level)i;
    if (strcasecmp(name, "warning") == 0)
        return EW_LOG_WARN;
    return dflt;
}

bool ewi_log_on(const ew_manager *m, ew_log_level level)
{
    return m && level <= m->level;
}

void ewi_vlog(const ew_manager *m, ew_log_level level, const char *fmt, va_list ap)
{
    /* An error is also the caller's ew_last_error, whatever the log level. */
    bool on = ewi_log_on(m, level);
    if (!on && level != EW_LOG_ERROR)
        return;
    char line[1024];
    vsnprintf(line, sizeof line, fmt, ap);
    if (level == EW_LOG_ERROR)
        ewi_note_error(line);
    if (on)
        m->log(m->log_user, level, line);
}

void ewi_log(const ew_manager *m, ew_log_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    ewi_vlog(m, level, fmt, ap);
    va_end(ap);
}

void ewi_vreport(ew_manager *m, ew_log_level level, ew_err code, const char *queue,
                 const char *event, const char *message_id, const char *fmt, va_list ap)
{
    char text[1024];
    vsnprintf(text, sizeof text, fmt, ap);
    char line[sizeof text + EW_MAX_QUEUE_NAME + 2];
    snprintf(line, sizeof line, "%s%s%s", queue ? queue : "", queue ? ": " : "", text);
    ewi_note_error(line);
    ewi_log(m, level, "%s", line);
    if (m && m->on_error) {
        ew_error_info info = {code, queue, event, message_id, text};
        m->on_error(m->error_user, &info);
    }
}

void ewi_report(ew_manager *m, ew_err code, const char *queue, const char *event,
                const char *message_id, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    ewi_vreport(m, code == EW_EDISCONNECTED ? EW_LOG_WARN : EW_LOG_ERROR, code, queue,
                event, message_id, fmt, ap);
    va_end(ap);
}

/* The default sink: one line per message on stderr. */
void ewi_log_stderr(void *user, ew_log_level level, const char *msg);
void ewi_log_stderr(void *user, ew_log_level level, const char *msg)
{
    static const char *const names[] = {"", "ERROR", "WARN", "INFO", "DEBUG", "TRACE"};
    EWI_UNUSED(user);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    fprintf(stderr, "%02d:%02d:%02d.%03ld eventwire %-5s %s\n", tm.tm_hour,
            tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
            names[level >= EW_LOG_ERROR && level <= EW_LOG_TRACE ? level : 1], msg);
}
