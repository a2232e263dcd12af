/* The write guard: librabbitmq 0.11 writes without a deadline.
 *
 * Its socket is non-blocking, and amqp_basic_publish, amqp_basic_ack,
 * amqp_basic_nack and amqp_send_method wait for room with poll() and an
 * infinite deadline (amqp_send_frame_inner). The only way out is its
 * heartbeat check: when the next heartbeat from the broker is due it reads,
 * and goes on waiting if anything arrived. A broker that stops reading but
 * keeps talking (a RabbitMQ resource alarm blocks the reader, its heartbeats
 * go on) or heartbeat=0 would keep the I/O thread in that write for ever, and
 * with it every send, settle and stop. SO_SNDTIMEO does nothing on a
 * non-blocking socket.
 *
 * So each such call is bracketed (RMQ_GUARDED): the I/O thread notes when it
 * entered it, and this thread shuts the socket down when one has lasted
 * longer than rpc_timeout. The write then fails, the I/O thread treats the
 * connection as lost and reconnects. Plain TCP publishes do not need it:
 * rmq_wire_flush bounds its own waits. */
#include "rmq.h"

#include <stdio.h>
#include <sys/socket.h>

void rmq_guard_begin(ewi_transport *t)
{
    atomic_store(&t->wr_fd, t->conn ? amqp_get_sockfd(t->conn) : -1);
    atomic_store(&t->wr_since_ms, ewi_now_ms());
}

static void *guard_main(void *arg)
{
    ewi_transport *t = arg;
    int limit = t->o.rpc_timeout_ms;
    int period = limit / 4 < 50 ? 50 : limit / 4 > 1000 ? 1000 : limit / 4;
    pthread_mutex_lock(&t->guard_mu);
    while (!t->guard_quit) {
        ewi_cond_wait_until(&t->guard_cv, &t->guard_mu, ewi_now_ms() + period);
        int64_t since = atomic_load(&t->wr_since_ms);
        int fd = atomic_load(&t->wr_fd);
        /* guard_mu also covers closing the socket (rmq_disconnect): fd is
         * still this connection's. */
        if (since && ewi_now_ms() - since > limit && fd >= 0) {
            ewi_log(t->m, EW_LOG_WARN,
                    "%s: a write to the broker is blocked since %lld ms (is the broker "
                    "reading? resource alarm?); dropping the connection",
                    t->o.label, (long long)(ewi_now_ms() - since));
            shutdown(fd, SHUT_RDWR);
            atomic_store(&t->wr_since_ms, 0);
        }
    }
    pthread_mutex_unlock(&t->guard_mu);
    return NULL;
}

bool rmq_guard_start(ewi_transport *t)
{
    t->guard_quit = false;
    if (ewi_thread_start(t->m, &t->guard, guard_main, t, "ew:rmq-guard") != 0)
        return false;
    t->guard_started = true;
    return true;
}

void rmq_guard_stop(ewi_transport *t)
{
    if (!t->guard_started)
        return;
    pthread_mutex_lock(&t->guard_mu);
    t->guard_quit = true;
    pthread_cond_signal(&t->guard_cv);
    pthread_mutex_unlock(&t->guard_mu);
    pthread_join(t->guard, NULL);
    t->guard_started = false;
}
