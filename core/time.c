/* Clocks and the reconnect backoff. */
#include "ewi.h"

#include <errno.h>
#include <time.h>

int64_t ewi_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t ewi_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void ewi_sleep_ms(int ms)
{
    if (ms <= 0)
        return;
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

int ewi_left_ms(int64_t deadline_ms)
{
    int64_t left = deadline_ms - ewi_now_ms();
    if (left <= 0)
        return 0;
    return left > INT32_MAX ? INT32_MAX : (int)left;
}

void ewi_backoff_init(ewi_backoff *b, int base_ms, int cap_ms)
{
    b->base_ms = base_ms > 0 ? base_ms : 1;
    b->cap_ms = cap_ms > b->base_ms ? cap_ms : b->base_ms;
    b->cur_ms = b->base_ms;
    b->seed = (uint64_t)ewi_now_ms() * 0x9E3779B97F4A7C15ull ^ (uint64_t)(uintptr_t)b;
}

int ewi_backoff_next(ewi_backoff *b)
{
    /* xorshift64*: jitter only, not security. */
    b->seed ^= b->seed >> 12;
    b->seed ^= b->seed << 25;
    b->seed ^= b->seed >> 27;
    uint64_t r = b->seed * 2685821657736338717ull;
    int lo = b->cur_ms / 2;
    int delay = lo + (int)(r % (uint64_t)(b->cur_ms - lo + 1));
    b->cur_ms = b->cur_ms > b->cap_ms / 2 ? b->cap_ms : b->cur_ms * 2;
    return delay;
}

void ewi_backoff_reset(ewi_backoff *b)
{
    b->cur_ms = b->base_ms;
}
