/* A wake-up descriptor for I/O threads that sleep in poll(): other threads
 * queue work, then ewi_waker_wake; the I/O thread polls ewi_waker_fd for
 * POLLIN and calls ewi_waker_drain before taking the work. (eventfd) */
#ifndef EVENTWIRE_WAKER_H
#define EVENTWIRE_WAKER_H

#include "ewi.h"

typedef struct ewi_waker {
    int fd;
} ewi_waker;

ew_err ewi_waker_init(ewi_waker *w);
void ewi_waker_close(ewi_waker *w);
void ewi_waker_wake(ewi_waker *w); /* thread-safe, async-signal-safe */
void ewi_waker_drain(ewi_waker *w);
static inline int ewi_waker_fd(const ewi_waker *w) { return w->fd; }

#endif
