/* Small threading helpers shared by core and transports. */
#include "ewi.h"

#include <sched.h>
#include <string.h>
#include <time.h>

void ewi_mutex_init(pthread_mutex_t *mu)
{
    /* Critical sections here are a few pointer moves: spin briefly before
     * sleeping in the kernel instead of paying a futex round trip. */
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ADAPTIVE_NP);
    pthread_mutex_init(mu, &a);
    pthread_mutexattr_destroy(&a);
}

void ewi_cond_init_mono(pthread_cond_t *cv)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &ca);
    pthread_condattr_destroy(&ca);
}

int ewi_cond_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t deadline_ms)
{
    struct timespec ts = {deadline_ms / 1000, (long)(deadline_ms % 1000) * 1000000L};
    return pthread_cond_timedwait(cv, mu, &ts);
}

int ewi_thread_start(const ew_manager *m, pthread_t *th, void *(*fn)(void *), void *arg,
                     const char *name)
{
    int rc = pthread_create(th, NULL, fn, arg);
    if (rc != 0)
        return rc;
    pthread_setname_np(*th, name);
    if (ewi_config_of(m)->batch_threads) {
        /* Set from here, so it holds from the thread's first wait on. */
        struct sched_param sp = {.sched_priority = 0};
        int e = pthread_setschedparam(*th, SCHED_BATCH, &sp);
        if (e != 0)
            ewi_log(m, EW_LOG_DEBUG, "thread %s: SCHED_BATCH refused (%s): it keeps the "
                    "policy it started with", name, strerror(e));
    }
    return 0;
}
