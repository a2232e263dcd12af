/* Connection outages without touching the shared broker: the manager talks
 * to RabbitMQ through a one-connection socat TCP relay that the test kills
 * and starts again. Sends during an outage wait for the reconnect, or fail
 * with EW_ETIMEDOUT and a clear text once their deadline passed; the
 * listener resumes after the reconnect. */
#include "rmq_test.h"

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

extern char **environ;

static int relay_port;
static pid_t relay_pid;

static bool port_accepts(int port)
{
    amqp_connection_state_t c = amqp_new_connection();
    amqp_socket_t *s = amqp_tcp_socket_new(c);
    struct timeval tv = {0, 200000};
    bool ok = s && amqp_socket_open_noblock(s, "127.0.0.1", port, &tv) == AMQP_STATUS_OK;
    amqp_destroy_connection(c);
    return ok;
}

/* A relay for exactly one connection (no fork): killing it cuts that
 * connection, as a network outage would. */
static void relay_start(void)
{
    char listen[96];
    snprintf(listen, sizeof listen, "TCP-LISTEN:%d,bind=127.0.0.1,reuseaddr", relay_port);
    char a0[] = "socat", a2[] = "TCP:127.0.0.1:5672";
    char *argv[] = {a0, listen, a2, NULL};
    if (posix_spawnp(&relay_pid, "socat", NULL, NULL, argv, environ) != 0)
        fail_msg("cannot start socat");
    /* Wait for the listener with a plain socket: a probe connection
     * would use up the relay's one connection. */
    for (int i = 0; i < 100; i++) {
        char path[64];
        snprintf(path, sizeof path, "/proc/%d/net/tcp", (int)relay_pid);
        FILE *f = fopen(path, "r");
        char line[256], want[16];
        snprintf(want, sizeof want, ":%04X ", relay_port);
        bool up = false;
        while (f && fgets(line, sizeof line, f))
            up = up || (strstr(line, want) && strstr(line, " 0A ")); /* LISTEN */
        if (f)
            fclose(f);
        if (up)
            return;
        ewi_sleep_ms(20);
    }
    fail_msg("socat does not listen on %d", relay_port);
}

static void relay_kill(void)
{
    kill(relay_pid, SIGKILL);
    waitpid(relay_pid, NULL, 0);
    relay_pid = 0;
}

static void relay_url(char *buf, size_t len)
{
    /* heartbeat=1: an outage is noticed within seconds even without traffic. */
    snprintf(buf, len, "rabbitmq://guest:guest@127.0.0.1:%d/?heartbeat=1", relay_port);
}

static void send_during_outage_times_out_then_recovers(void **state)
{
    (void)state;
    EV(ev, "Outage", true);
    tally t;
    tally_init(&t, 3);
    capture cap;
    capture_init(&cap);
    char url[256];
    relay_url(url, sizeof url);
    relay_start();
    ew_options o = {.on_error = capture_error, .error_user = &cap, .send_timeout_ms = 1500,
                    .log_level = EW_LOG_ERROR};
    ew_manager *m = mgr_new_opts(url, "s1", &o);
    listen_tally(m, &ev, "L", false, 1, &t);
    assert_int_equal(ew_manager_start(m), EW_OK);
    assert_int_equal(ew_send(m, &ev, &(conf_event){.id = 0, .text = "before"}), EW_OK);
    assert_true(tally_wait_ids(&t, 0, 1, 10000));

    relay_kill();
    int64_t t0 = ewi_now_ms();
    while (!capture_has(&cap, "lost") && ewi_now_ms() - t0 < 10000)
        ewi_sleep_ms(20);
    assert_true(capture_has(&cap, "lost"));
    t0 = ewi_now_ms();
    assert_int_equal(ew_send(m, &ev, &(conf_event){.id = 1, .text = "during"}), EW_ETIMEDOUT);
    int64_t waited = ewi_now_ms() - t0;
    print_message("send during the outage failed after %lld ms; reports:\n%s",
                  (long long)waited, cap.text);
    assert_true(waited >= 1300 && waited < 5000);

    relay_start();
    /* After the reconnect the same manager sends and its listener receives. */
    ew_err rc = EW_ETIMEDOUT;
    for (int i = 0; i < 20 && rc != EW_OK; i++)
        rc = ew_send(m, &ev, &(conf_event){.id = 2, .text = "after"});
    assert_int_equal(rc, EW_OK);
    assert_true(tally_wait_ids(&t, 2, 3, 15000));
    assert_true(capture_count(&cap, EW_EDISCONNECTED) >= 1);
    ew_manager_free(m);
    relay_kill();
    tally_free(&t);
    char q[256];
    snprintf(q, sizeof q, "%s::L", ev.name);
    raw_delete(q, false);
    snprintf(q, sizeof q, "%s::L.dlq", ev.name);
    raw_delete(q, false);
    raw_delete(ev.name, true);
}

static int log_has_down;
static void watch_log(void *user, ew_log_level level, const char *msg)
{
    (void)user;
    (void)level;
    if (strstr(msg, "is down since"))
        log_has_down = 1;
}

static void timed_out_send_says_why(void **state)
{
    (void)state;
    EV(ev, "OutageText", true);
    char url[256];
    relay_url(url, sizeof url);
    relay_start();
    ew_options o = {.send_timeout_ms = 800, .log = watch_log, .log_level = EW_LOG_ERROR};
    ew_manager *m = mgr_new_opts(url, "s1", &o);
    assert_int_equal(ew_manager_start(m), EW_OK);
    assert_int_equal(ew_send(m, &ev, &(conf_event){.id = 0, .text = "x"}), EW_OK);
    relay_kill();
    ewi_sleep_ms(300);
    log_has_down = 0;
    ew_err rc;
    do
        rc = ew_send(m, &ev, &(conf_event){.id = 1, .text = "x"});
    while (rc == EW_OK); /* until the transport noticed the cut */
    assert_int_equal(rc, EW_ETIMEDOUT);
    assert_true(log_has_down);
    ew_manager_free(m);
    raw_delete(ev.name, true);
}

static void sends_queued_during_a_short_outage_all_arrive(void **state)
{
    (void)state;
    EV(ev, "Blip", true);
    enum { N = 200 };
    tally t;
    tally_init(&t, N);
    char url[256];
    relay_url(url, sizeof url);
    relay_start();
    ew_options o = {.send_timeout_ms = 30000, .log_level = EW_LOG_ERROR};
    ew_manager *m = mgr_new_opts(url, "s1", &o);
    listen_tally(m, &ev, "L", false, 2, &t);
    assert_int_equal(ew_manager_start(m), EW_OK);
    send_range(m, &ev, 0, N / 2);
    relay_kill();
    support_async_failures = 0;
    for (int64_t i = N / 2; i < N; i++)
        assert_int_equal(ew_send_async(m, &ev, NULL, &(conf_event){.id = i, .text = "x"},
                                       count_failure_, NULL),
                         EW_OK);
    ewi_sleep_ms(1500);
    relay_start();
    assert_int_equal(ew_flush(m, 30000), EW_OK);
    assert_int_equal(support_async_failures, 0);
    assert_true(tally_wait_all(&t, 30000));
    print_message("short outage: %zu duplicates\n", tally_dups(&t));
    ew_manager_free(m);
    relay_kill();
    tally_free(&t);
    char q[256];
    snprintf(q, sizeof q, "%s::L", ev.name);
    raw_delete(q, false);
    snprintf(q, sizeof q, "%s::L.dlq", ev.name);
    raw_delete(q, false);
    raw_delete(ev.name, true);
}

int main(void)
{
    support_init(rmq_test_url());
    relay_port = 38000 + (int)(getpid() % 2000);
    if (!port_accepts(5672)) {
        fprintf(stderr, "RabbitMQ is not running on 127.0.0.1:5672 "
                        "(scripts/brokers/rabbitmq.sh start)\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(send_during_outage_times_out_then_recovers),
        cmocka_unit_test(timed_out_send_says_why),
        cmocka_unit_test(sends_queued_during_a_short_outage_all_arrive),
    };
    return cmocka_run_group_tests_name("rabbitmq outages", tests, NULL, NULL);
}
