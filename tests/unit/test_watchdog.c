/* The tests' watchdog (tests/support): this program waits on a condition
 * nobody signals. ctest gives it a TIMEOUT of 25 s, so its watchdog fires
 * at 10 s; the test passes only if the output shows this program's stack
 * (gdb) and the watchdog's last line, i.e. a hung test says where it hung. */
#include "support.h"

int main(void)
{
    support_init(NULL);
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
    pthread_mutex_lock(&mu);
    for (;;)
        pthread_cond_wait(&cv, &mu); /* never signalled: the watchdog ends it */
}
