/* STOMP 1.2 heart-beat negotiation. Pure: unit-tested.
 *
 * CONNECT says "cx,cy": we can send every cx ms, we want to hear every cy
 * ms. CONNECTED answers "sx,sy" from the broker's side. Each direction runs
 * at the larger of its two numbers, or not at all when either is 0. */
#include "transports/stomp/stomp.h"

#include <string.h>

/* Strict "digits,digits", no blanks (the grammar has none). */
static bool parse_pair(const char *s, long *a, long *b)
{
    long v[2] = {0, 0};
    for (int i = 0; i < 2; i++) {
        if (*s < '0' || *s > '9')
            return false;
        for (; *s >= '0' && *s <= '9'; s++) {
            v[i] = v[i] * 10 + (*s - '0');
            if (v[i] > 24L * 3600 * 1000) /* a day: nobody means more */
                return false;
        }
        if (i == 0 && *s++ != ',')
            return false;
    }
    if (*s)
        return false;
    *a = v[0];
    *b = v[1];
    return true;
}

ew_err stomp_heartbeat_negotiate(int cx, int cy, const char *connected_value,
                                 stomp_heartbeat *out)
{
    long sx = 0, sy = 0;
    out->send_ms = out->expect_ms = 0;
    if (connected_value && !parse_pair(connected_value, &sx, &sy))
        return EW_EPROTO;
    if (cx > 0 && sy > 0)
        out->send_ms = (int)(cx > sy ? cx : sy);
    if (cy > 0 && sx > 0)
        out->expect_ms = (int)(cy > sx ? cy : sx);
    return EW_OK;
}

int stomp_heartbeat_grace_ms(int expect_ms)
{
    /* Twice the period plus scheduling slack: one late beat is not a drop. */
    return expect_ms > 0 ? 2 * expect_ms + 1000 : 0;
}
