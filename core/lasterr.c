/* The per-thread text of the last failure, for ew_last_error. Every public
 * call that can fail clears it on entry; the first error reported or logged
 * on the calling thread during the call is kept (it is the root cause: core's
 * own messages that follow only wrap it), unless a call sets a text of its
 * own with ewi_set_last_error. */
#include "ewi.h"

#include <stdio.h>

static _Thread_local char tl_text[1024];

const char *ew_last_error(void)
{
    return tl_text;
}

void ewi_last_error_clear(void)
{
    tl_text[0] = '\0';
}

const char *ewi_last_error_peek(void)
{
    return tl_text;
}

void ewi_vset_last_error(const char *fmt, va_list ap)
{
    char text[sizeof tl_text];
    vsnprintf(text, sizeof text, fmt, ap); /* args may point into tl_text */
    snprintf(tl_text, sizeof tl_text, "%s", text);
}

void ewi_set_last_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    ewi_vset_last_error(fmt, ap);
    va_end(ap);
}

void ewi_note_error(const char *text)
{
    if (!tl_text[0])
        snprintf(tl_text, sizeof tl_text, "%s", text);
}

ew_err ewi_fail(ew_err rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    ewi_vset_last_error(fmt, ap);
    va_end(ap);
    return rc;
}
