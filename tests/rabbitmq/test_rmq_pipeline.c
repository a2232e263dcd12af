/* A header-propagating pipeline end to end over RabbitMQ: a front service
 * sends OrderPlaced inside a session; the back service handles it and sends
 * OrderShipped from its listener; the session and a trace id travel along
 * both hops through the envelope pipeline. A raw librabbitmq consumer checks
 * what is on the wire: headers in the AMQP header table, content type,
 * message id and timestamp in the properties. */
#include "rmq_test.h"

#include <time.h>

typedef struct {
    int64_t id;
    const char *item;
} order;

static const ew_field order_fields[] = {EW_FIELD(order, id, EW_INT64),
                                        EW_FIELD(order, item, EW_STRING)};
static const ew_type order_type = {"order", sizeof(order), order_fields, 2};

/* ---- the pipeline: the current session follows the work ----------------- */

static _Thread_local char cur_session[64];
static _Thread_local char cur_trace[64];

static ew_err carry_send(void *user, ew_envelope *env, const ew_event_desc *ev)
{
    (void)user;
    (void)ev;
    if (!cur_session[0])
        return EW_OK;
    ew_err rc = ew_envelope_set_header(env, "session", cur_session);
    return rc == EW_OK ? ew_envelope_set_header(env, "trace", cur_trace) : rc;
}

static ew_err carry_handle(void *user, const ew_envelope *env, const ew_listener_desc *l)
{
    (void)user;
    (void)l;
    const char *s = ew_envelope_header(env, "session"), *t = ew_envelope_header(env, "trace");
    snprintf(cur_session, sizeof cur_session, "%s", s ? s : "");
    snprintf(cur_trace, sizeof cur_trace, "%s", t ? t : "");
    return EW_OK;
}

static void carry_after(void *user, const ew_envelope *env, const ew_listener_desc *l, ew_err rc)
{
    (void)user;
    (void)env;
    (void)l;
    (void)rc;
    cur_session[0] = cur_trace[0] = '\0';
}

static const ew_pipeline carry = {.name = "carry", .send = carry_send,
                                  .handle = carry_handle, .after = carry_after};

/* ---- the services ------------------------------------------------------- */

typedef struct {
    ew_manager *m;
    const ew_event_desc *shipped;
} back_service;

static ew_err on_placed(ew_delivery *d, const void *event, void *user)
{
    (void)d;
    back_service *b = user;
    const order *o = event;
    order s = {.id = o->id, .item = o->item};
    return ew_send(b->m, b->shipped, &s);
}

typedef struct {
    pthread_mutex_t mu;
    int n, ok;
    char last[256];
} shipped_log;

static ew_err on_shipped(ew_delivery *d, const void *event, void *user)
{
    shipped_log *log = user;
    const order *o = event;
    char want[64];
    snprintf(want, sizeof want, "session-%lld", (long long)o->id);
    const char *s = ew_delivery_header(d, "session"), *t = ew_delivery_header(d, "trace");
    bool good = s && t && strcmp(s, want) == 0 && strcmp(t, "trace/" ODD_VALUE) == 0;
    pthread_mutex_lock(&log->mu);
    log->n++;
    log->ok += good;
    snprintf(log->last, sizeof log->last, "id %lld session=%s trace=%s", (long long)o->id,
             s ? s : "(none)", t ? t : "(none)");
    pthread_mutex_unlock(&log->mu);
    return EW_OK;
}

static void session_travels_through_two_hops(void **state)
{
    (void)state;
    char placed_name[64], shipped_name[64];
    snprintf(placed_name, sizeof placed_name, "OrderPlaced_%s", support_run_id);
    snprintf(shipped_name, sizeof shipped_name, "OrderShipped_%s", support_run_id);
    ew_event_desc placed = {.type = &order_type, .name = placed_name, .durable = true};
    ew_event_desc shipped = {.type = &order_type, .name = shipped_name, .durable = true};

    ew_manager *front = mgr_new(rmq_test_url(), "front");
    ew_manager *back = mgr_new(rmq_test_url(), "back");
    ew_manager *audit = mgr_new(rmq_test_url(), "audit");
    assert_int_equal(ew_add_pipeline(front, &carry, NULL), EW_OK);
    assert_int_equal(ew_add_pipeline(back, &carry, NULL), EW_OK);
    back_service b = {back, &shipped};
    shipped_log log = {.mu = PTHREAD_MUTEX_INITIALIZER};
    assert_int_equal(ew_listen(back, &(ew_listener_desc){.event = &placed, .name = "Ship",
                                                         .concurrency = 2},
                               on_placed, &b),
                     EW_OK);
    assert_int_equal(ew_listen(audit, &(ew_listener_desc){.event = &shipped, .name = "Audit"},
                               on_shipped, &log),
                     EW_OK);
    assert_int_equal(ew_manager_start(back), EW_OK);
    assert_int_equal(ew_manager_start(audit), EW_OK);
    assert_int_equal(ew_manager_start(front), EW_OK);

    /* A raw observer queue on OrderShipped, bound like ours. */
    char raw_q[128];
    snprintf(raw_q, sizeof raw_q, "%s::raw-observer", shipped_name);
    amqp_connection_state_t c = raw_connect();
    amqp_queue_declare(c, 1, amqp_cstring_bytes(raw_q), 0, 0, 0, 0, amqp_empty_table);
    assert_true(raw_ok(c));
    amqp_queue_bind(c, 1, amqp_cstring_bytes(raw_q), amqp_cstring_bytes(shipped_name),
                    amqp_cstring_bytes("#"), amqp_empty_table);
    assert_true(raw_ok(c));

    enum { N = 20 };
    for (int i = 0; i < N; i++) {
        snprintf(cur_session, sizeof cur_session, "session-%d", i);
        snprintf(cur_trace, sizeof cur_trace, "trace/" ODD_VALUE);
        order o = {.id = i, .item = "book"};
        assert_int_equal(ew_send(front, &placed, &o), EW_OK);
    }
    cur_session[0] = '\0';
    int64_t deadline = ewi_now_ms() + 30000;
    for (;;) {
        pthread_mutex_lock(&log.mu);
        int n = log.n;
        pthread_mutex_unlock(&log.mu);
        if (n >= N || ewi_left_ms(deadline) == 0)
            break;
        ewi_sleep_ms(20);
    }
    print_message("audit: %d handled, %d with the sender's session and trace; last: %s\n",
                  log.n, log.ok, log.last);
    assert_int_equal(log.n, N);
    assert_int_equal(log.ok, N);

    /* On the wire: one copy per OrderShipped in the raw queue. */
    int seen = 0;
    int64_t now_s = ewi_wall_ms() / 1000;
    amqp_message_t msg;
    while (raw_get(c, raw_q, &msg)) {
        const amqp_basic_properties_t *p = &msg.properties;
        char h[256], id[64];
        assert_true(p->_flags & AMQP_BASIC_HEADERS_FLAG);
        assert_non_null(raw_header(&p->headers, "session", h, sizeof h));
        assert_int_equal(strncmp(h, "session-", 8), 0);
        assert_non_null(raw_header(&p->headers, "trace", h, sizeof h));
        assert_string_equal(h, "trace/" ODD_VALUE);
        assert_non_null(raw_header(&p->headers, EW_HDR_EVENT, h, sizeof h));
        assert_string_equal(h, shipped_name);
        assert_true(p->_flags & AMQP_BASIC_CONTENT_TYPE_FLAG);
        assert_int_equal(p->content_type.len, strlen(EW_CONTENT_TYPE_MSGPACK));
        assert_memory_equal(p->content_type.bytes, EW_CONTENT_TYPE_MSGPACK,
                            p->content_type.len);
        assert_true(p->_flags & AMQP_BASIC_MESSAGE_ID_FLAG);
        assert_non_null(raw_header(&p->headers, EW_HDR_MESSAGE_ID, id, sizeof id));
        assert_int_equal(p->message_id.len, strlen(id));
        assert_memory_equal(p->message_id.bytes, id, strlen(id));
        assert_true(p->_flags & AMQP_BASIC_TIMESTAMP_FLAG);
        assert_true((int64_t)p->timestamp > now_s - 120 && (int64_t)p->timestamp <= now_s + 5);
        assert_true(p->_flags & AMQP_BASIC_DELIVERY_MODE_FLAG);
        assert_int_equal(p->delivery_mode, 2); /* durable event: persistent */
        assert_int_equal(msg.body.len > 0, 1);
        amqp_destroy_message(&msg);
        seen++;
    }
    assert_int_equal(seen, N);
    amqp_queue_delete(c, 1, amqp_cstring_bytes(raw_q), 0, 0);
    raw_close(c);

    ew_manager_free(front);
    ew_manager_free(back);
    ew_manager_free(audit);
    char q[128];
    snprintf(q, sizeof q, "%s::Ship", placed_name);
    raw_delete(q, false);
    snprintf(q, sizeof q, "%s::Ship.dlq", placed_name);
    raw_delete(q, false);
    snprintf(q, sizeof q, "%s::Audit", shipped_name);
    raw_delete(q, false);
    snprintf(q, sizeof q, "%s::Audit.dlq", shipped_name);
    raw_delete(q, false);
    raw_delete(placed_name, true);
    raw_delete(shipped_name, true);
}

int main(void)
{
    support_init(rmq_test_url());
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(session_travels_through_two_hops),
    };
    return cmocka_run_group_tests_name("rabbitmq pipeline", tests, NULL, NULL);
}
