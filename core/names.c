/* Name rules shared by every transport. Names become broker addresses,
 * STOMP headers and AMQP terminus addresses, so only characters that every
 * one of them carries unchanged are allowed: no '/', ':', wildcards, spaces
 * or control characters. */
#include "ewi.h"

#include <stdio.h>
#include <string.h>

static bool plain_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '_' || c == '-';
}

static ew_err check(const char *what, const char *name, size_t max, bool dots,
                    char *err, size_t errlen)
{
    if (!name || !*name) {
        snprintf(err, errlen, "%s name is empty", what);
        return EW_EINVAL;
    }
    size_t n = strlen(name);
    if (n > max) {
        snprintf(err, errlen, "%s name '%.40s...' is %zu bytes, over %zu", what,
                 name, n, max);
        return EW_EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (plain_char(c))
            continue;
        if (c == '.' && dots && i > 0 && i + 1 < n && name[i + 1] != '.')
            continue;
        if (c == '.' && dots)
            snprintf(err, errlen,
                     "%s name '%s': a dot must stand between other characters",
                     what, name);
        else if ((unsigned char)c < 0x20 || c == 0x7f)
            snprintf(err, errlen,
                     "%s name '%s': control character 0x%02x at %zu", what,
                     name, (unsigned)(unsigned char)c, i);
        else
            snprintf(err, errlen,
                     "%s name '%s': character '%c' at %zu is not allowed "
                     "(letters, digits, '_', '-'%s)",
                     what, name, c, i, dots ? ", inner '.'" : "");
        return EW_EINVAL;
    }
    return EW_OK;
}

ew_err ewi_check_event_name(const char *name, char *err, size_t errlen)
{
    return check("event", name, EW_MAX_EVENT_NAME, true, err, errlen);
}

ew_err ewi_check_listener_name(const char *name, char *err, size_t errlen)
{
    return check("listener", name, EW_MAX_LISTENER_NAME, false, err, errlen);
}

ew_err ewi_check_server_name(const char *name, char *err, size_t errlen)
{
    return check("server", name, EW_MAX_SERVER_NAME, false, err, errlen);
}
