/* The transports compiled into this build, by URL scheme. */
#include "ewi.h"

#include <string.h>

extern const ewi_transport_ops ewi_local_transport;
#ifdef EW_HAVE_RABBITMQ
extern const ewi_transport_ops ewi_rabbitmq_transport;
#endif
#ifdef EW_HAVE_STOMP
extern const ewi_transport_ops ewi_stomp_transport;
#endif
#ifdef EW_HAVE_AMQP
extern const ewi_transport_ops ewi_amqp_transport;
#endif

static const ewi_transport_ops *const all[] = {
    &ewi_local_transport,
#ifdef EW_HAVE_RABBITMQ
    &ewi_rabbitmq_transport,
#endif
#ifdef EW_HAVE_STOMP
    &ewi_stomp_transport,
#endif
#ifdef EW_HAVE_AMQP
    &ewi_amqp_transport,
#endif
};

const ewi_transport_ops *ewi_transport_find(const char *scheme)
{
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        for (const char *const *s = all[i]->schemes; *s; s++)
            if (strcmp(*s, scheme) == 0)
                return all[i];
    return NULL;
}
