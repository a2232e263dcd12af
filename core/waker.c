#include "waker.h"

#include <errno.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <unistd.h>

ew_err ewi_waker_init(ewi_waker *w)
{
    w->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    return w->fd < 0 ? EW_EIO : EW_OK;
}

void ewi_waker_close(ewi_waker *w)
{
    if (w->fd >= 0)
        close(w->fd);
    w->fd = -1;
}

void ewi_waker_wake(ewi_waker *w)
{
    uint64_t one = 1;
    /* EAGAIN means the counter is already non-zero: a wake-up is pending. */
    while (write(w->fd, &one, sizeof one) < 0 && errno == EINTR) {
    }
}

void ewi_waker_drain(ewi_waker *w)
{
    uint64_t n;
    while (read(w->fd, &n, sizeof n) < 0 && errno == EINTR) {
    }
}
