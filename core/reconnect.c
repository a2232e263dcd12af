/* Reconnect scheduling shared by the broker transports (see ewi.h). */
#include "ewi.h"

#include <stdint.h>

void ewi_reconnect_init(ewi_reconnect *r, int base_ms, int cap_ms)
{
    ewi_backoff_init(&r->backoff, base_ms, cap_ms);
    r->next_ms = r->down_since = r->up_since = 0;
    r->failures = 0;
}

void ewi_reconnect_up(ewi_reconnect *r, int64_t now)
{
    r->up_since = now;
    r->down_since = 0;
    r->failures = 0;
}

int ewi_reconnect_lost(ewi_reconnect *r, int64_t now)
{
    if (r->up_since && now - r->up_since >= EWI_RECONNECT_STABLE_MS)
        ewi_backoff_reset(&r->backoff);
    r->up_since = 0;
    r->down_since = now;
    r->failures = 0;
    int delay = ewi_backoff_next(&r->backoff);
    r->next_ms = now + delay;
    return delay;
}

int ewi_reconnect_failed(ewi_reconnect *r, int64_t now)
{
    r->failures++;
    int delay = ewi_backoff_next(&r->backoff);
    r->next_ms = now + delay;
    return delay;
}

int ewi_reconnect_wait_ms(const ewi_reconnect *r, int64_t now)
{
    int64_t left = r->next_ms - now;
    if (left <= 0)
        return 0;
    return left > INT32_MAX ? INT32_MAX : (int)left;
}
