/* A user program built against the installed eventwire. */
#include <eventwire/eventwire.h>

#include <stdatomic.h>
#include <stdio.h>
#include <time.h>

typedef struct {
    int64_t answer;
} ping;

EW_TYPE(ping, EW_FIELD(ping, answer, EW_INT64));

static const ew_event_desc PING = {.type = &ping_type, .name = "Ping"};
static atomic_llong got = -1;

static ew_err on_ping(ew_delivery *d, const void *event, void *user)
{
    (void)d;
    (void)user;
    atomic_store(&got, ((const ping *)event)->answer);
    return EW_OK;
}

int main(void)
{
    ew_manager *m;
    if (ew_manager_new(&m, "local://", NULL) != EW_OK ||
        ew_listen(m, &(ew_listener_desc){.event = &PING, .name = "P"}, on_ping, NULL) != EW_OK ||
        ew_manager_start(m) != EW_OK || ew_send(m, &PING, &(ping){42}) != EW_OK)
        return 1;
    for (int i = 0; i < 500 && atomic_load(&got) < 0; i++)
        nanosleep(&(struct timespec){0, 10000000}, NULL);
    ew_manager_free(m);
    printf("consumer got %lld over local://\n", (long long)atomic_load(&got));
    return atomic_load(&got) == 42 ? 0 : 1;
}
