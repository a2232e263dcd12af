/* Fault 5: bodies that do not decode. Published past the codec (as a
 * broken or foreign producer would): garbage bytes, truncated msgpack,
 * msgpack with the wrong field types, a truncated JSON body, an unknown
 * content type, a 10 MB body over the manager's max_body (1 MiB), and on
 * RabbitMQ a message from a raw AMQP 0-9-1 client with no eventwire headers
 * at all. Each must land in the dead-letter queue once, with its reason
 * (decode-failed or too-big) and an error text; good events sent between
 * them are all handled; and the process does not grow: live heap (and RSS)
 * measured after a warm-up round and after ROUNDS more.
 *
 *   fault_bad_bodies URL */
#include "faults.h"

#include <malloc.h>

#ifdef FAULTS_HAVE_RMQ
#include <amqp.h>
#include <amqp_tcp_socket.h>
#endif

enum { MAX_ROUNDS = 16, EACH = 40, GOOD = 100, BIG = 10 * 1024 * 1024, FOREIGN = 10 };
#define HEAP_GROWTH_MAX (4u << 20)

static const char *URL;
/* Rounds after the warm-up one; $EW_FAULT_ROUNDS (1..16) changes it, to
 * see whether a growth levels off. */
static int ROUNDS = 3;

/* publish_raw (support.h) that returns the outcome instead of failing. */
static ew_err raw_publish(ew_manager *m, const char *event, const char *ct, const void *body,
                          size_t len)
{
    return publish_raw_rc(m, event, ct, body, len, 30000);
}

#ifdef FAULTS_HAVE_RMQ
/* A foreign producer: a raw 0-9-1 publish to exchange E, routing key E, no
 * headers, no content type. */
static bool foreign_publish(const char *event, size_t count)
{
    amqp_connection_state_t c = amqp_new_connection();
    amqp_socket_t *s = amqp_tcp_socket_new(c);
    bool ok = s && amqp_socket_open(s, "127.0.0.1", 5672) == AMQP_STATUS_OK &&
              amqp_login(c, "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, "guest", "guest")
                      .reply_type == AMQP_RESPONSE_NORMAL;
    if (ok) {
        amqp_channel_open(c, 1);
        ok = amqp_get_rpc_reply(c).reply_type == AMQP_RESPONSE_NORMAL;
    }
    amqp_basic_properties_t p = {._flags = AMQP_BASIC_DELIVERY_MODE_FLAG, .delivery_mode = 2};
    for (size_t i = 0; ok && i < count; i++) {
        const char *body = "not msgpack at all";
        amqp_bytes_t b = {strlen(body), (void *)(uintptr_t)body};
        ok = amqp_basic_publish(c, 1, amqp_cstring_bytes(event), amqp_cstring_bytes(event), 0,
                                0, &p, b) == AMQP_STATUS_OK;
    }
    if (ok) {
        amqp_channel_close(c, 1, AMQP_REPLY_SUCCESS);
        amqp_connection_close(c, AMQP_REPLY_SUCCESS);
    }
    amqp_destroy_connection(c);
    return ok;
}
#endif

/* Log and error sinks that keep what is not an expected dead letter: the
 * hundreds of those would push the interesting lines out of the capture. */
static void log_unexpected(void *user, ew_log_level level, const char *msg)
{
    if (!strstr(msg, "dead-lettered to"))
        fcapture_log(user, level, msg);
}

static void error_unexpected(void *user, const ew_error_info *info)
{
    if (!strstr(info->text, "dead-lettered to"))
        fcapture_error(user, info);
}

typedef struct kind {
    const char *name, *ct;
    const void *body;
    size_t len;
} kind;

static void bad_bodies_are_dead_lettered_and_nothing_grows(void **state)
{
    (void)state;
    ftarget tg = ftarget_of(URL);
    EV(ev, "FaultBodies", true);
    flow f;
    flow_init(&f, (size_t)(ROUNDS + 1) * GOOD + 1);
    fcapture c;
    fcapture_init(&c);
    ew_options o = {.on_error = error_unexpected, .error_user = &c, .log = log_unexpected,
                    .log_user = &c};
    ew_manager *m = mgr_new_opts(URL, "s1", &o);
    flow_listen(m, &ev, "Strict", 2, 0, &f, "s1");
    assert_int_equal(ew_manager_start(m), EW_OK);

    /* The bad bodies. */
    uint8_t *good = NULL, *bigbody = NULL;
    size_t good_len = 0;
    conf_event ge = {.id = 7, .text = FAULTS_TEXT};
    assert_int_equal(ew_encode(&conf_event_type, EW_FORMAT_MSGPACK, &ge, &good, &good_len, NULL,
                               0),
                     EW_OK);
    /* 10 MB of a well-formed event: too big, not undecodable. */
    bigbody = malloc(BIG);
    assert_non_null(bigbody);
    size_t slen = BIG - 16;
    uint8_t head[] = {0x82, 0xa2, 'i', 'd', 0x01, 0xa4, 't', 'e', 'x', 't', 0xdb,
                      (uint8_t)(slen >> 24), (uint8_t)(slen >> 16), (uint8_t)(slen >> 8),
                      (uint8_t)slen};
    memcpy(bigbody, head, sizeof head);
    memset(bigbody + sizeof head, 'x', BIG - sizeof head);
    size_t big_len = sizeof head + slen;
    static const char wrong[] = "\x82\xa2id\xa3" "abc\xa4text\x05";
    static const char cut_json[] = "{\"id\": 12, \"text\": \"ab";
    const kind kinds[] = {
        {"garbage", EW_CONTENT_TYPE_MSGPACK, "\xc1\xc1\xc1garbage", 10},
        {"truncated-msgpack", EW_CONTENT_TYPE_MSGPACK, good, good_len / 2},
        {"wrong-types", EW_CONTENT_TYPE_MSGPACK, wrong, sizeof wrong - 1},
        {"truncated-json", EW_CONTENT_TYPE_JSON, cut_json, sizeof cut_json - 1},
        {"unknown-content-type", "text/plain", "hello", 5},
    };
    const size_t nkinds = sizeof kinds / sizeof kinds[0];
    bool foreign = false;
#ifdef FAULTS_HAVE_RMQ
    foreign = tg.rmq_backed;
#endif

    fdlq dl = {0};
    size_t want_dlq = 0, publish_failed = 0, big_failed = 0;
    ew_err big_rc = EW_OK;
    size_t big_seen_off = 0;
    long rss0 = 0;
    size_t heap0 = 0;
    int64_t t0 = ewi_now_ms();
    bool flowing = true;
    for (int round = 0; round <= ROUNDS; round++) {
        for (size_t i = 0; i < EACH; i++) {
            for (size_t k = 0; k < nkinds; k++)
                publish_failed += raw_publish(m, ev.name, kinds[k].ct, kinds[k].body,
                                              kinds[k].len) != EW_OK;
            for (size_t g = 0; g < GOOD / EACH + 1; g++) {
                size_t id = (size_t)round * GOOD + i * (GOOD / EACH + 1) + g;
                if (id < (size_t)(round + 1) * GOOD)
                    flowing &= ew_send(m, &ev, &(conf_event){.id = (int64_t)id,
                                                             .text = "good"}) == EW_OK;
            }
        }
        want_dlq += EACH * nkinds;
        /* $EW_FAULT_BIG=0 leaves the big body out (to tell what grows). */
        bool with_big = !getenv("EW_FAULT_BIG") || atoi(getenv("EW_FAULT_BIG")) != 0;
        ew_err rc = with_big ? raw_publish(m, ev.name, EW_CONTENT_TYPE_MSGPACK, bigbody,
                                           big_len)
                             : EW_OK;
        if (!with_big)
            big_seen_off++;
        if (rc != EW_OK) {
            big_failed++;
            big_rc = rc;
        } else if (with_big) {
            want_dlq++;
        }
#ifdef FAULTS_HAVE_RMQ
        if (foreign) {
            if (foreign_publish(ev.name, FOREIGN))
                want_dlq += FOREIGN;
            else
                publish_failed++;
        }
#endif
        flowing &= tally_wait_ids(&f.t, (size_t)round * GOOD, (size_t)(round + 1) * GOOD,
                                  20000);
        if (!flowing)
            break; /* stuck: no point in more rounds */
        fdlq_take(m, &ev, "Strict", &dl, want_dlq - dl.n, 5000);
        print_message("round %d: %zu dead letters so far; live heap %zu KiB, RSS %ld KiB\n",
                      round, dl.n, heap_live_bytes() / 1024, rss_kib());
        if (round == 0) {
            /* Workers settle a message after its dead letter is taken: let
             * them finish before counting. */
            if (!wait_until(manager_idle_cond, m, 20000))
                print_message("round 0: the listener is still busy after 20 s\n");
            malloc_trim(0);
            heap0 = heap_live_bytes();
            rss0 = rss_kib();
        }
    }
    if (flowing && !wait_until(manager_idle_cond, m, 20000))
        print_message("the listener is still busy 20 s after the last round\n");
    /* What the transport frees after a settle may take a moment more: the
     * heap must come back under the limit within 10 s (a leak never does). */
    size_t heap1;
    int64_t heap_deadline = ewi_now_ms() + 10000;
    for (;;) {
        malloc_trim(0);
        heap1 = heap_live_bytes();
        if ((long)heap1 - (long)heap0 < (long)HEAP_GROWTH_MAX || ewi_left_ms(heap_deadline) == 0)
            break;
        ewi_sleep_ms(50);
    }
    heap_profile();
    long rss1 = rss_kib();
    /* Still serving. */
    if (flowing)
        flowing = ew_send(m, &ev, &(conf_event){.id = (ROUNDS + 1) * GOOD, .text = "last"}) ==
                      EW_OK &&
                  tally_wait_all(&f.t, 30000);
    int64_t total_ms = ewi_now_ms() - t0;
    /* Nothing more may come: a last poison message of its own content type
     * is the next dead letter; one of the others again would come before it
     * (or beside it: two workers, so a final look once it is there). */
    static const char sentinel_ct[] = "application/x-eventwire-sentinel";
    bool sentinel = false;
    if (flowing && raw_publish(m, ev.name, sentinel_ct, "end", 3) == EW_OK) {
        want_dlq++;
        int64_t deadline = ewi_now_ms() + 30000;
        while (!sentinel && ewi_left_ms(deadline) > 0 &&
               fdlq_take(m, &ev, "Strict", &dl, 1, 5000) == 1)
            sentinel = strcmp(dl.last_ct, sentinel_ct) == 0;
        if (!sentinel)
            print_message("the sentinel dead letter did not arrive\n");
        fdlq_take(m, &ev, "Strict", &dl, 10, 100);
    } else {
        publish_failed++;
    }

    size_t dups = tally_dups(&f.t), distinct = tally_total(&f.t) - dups;
    size_t decode_failed = dl.by_reason[2], too_big = dl.by_reason[3];
    size_t poison = (size_t)(ROUNDS + 1) * (EACH * nkinds + 1 + (foreign ? FOREIGN : 0)) + 1;
    long heap_growth = (long)heap1 - (long)heap0;
    bool ok = flowing && sentinel && publish_failed == 0 && big_failed == 0 && dl.n == want_dlq &&
              too_big + big_seen_off == (size_t)ROUNDS + 1 && decode_failed == want_dlq - too_big &&
              heap_growth < (long)HEAP_GROWTH_MAX;
    fault_result("bad-bodies", &tg,
                 "sent=%zu handled=%zu lost=%zu duplicated=%zu poison=%zu dead_letters=%zu "
                 "decode_failed=%zu too_big=%zu heap_growth_kib=%ld rss_before_kib=%ld "
                 "rss_after_kib=%ld total_ms=%lld status=%s",
                 f.t.n, distinct, f.t.n - distinct, dups, poison, dl.n, decode_failed, too_big,
                 heap_growth / 1024, rss0, rss1, (long long)total_ms, ok ? "pass" : "fail");
    for (size_t r = 0; r < FDLQ_REASONS; r++)
        if (dl.by_reason[r])
            print_message("  %zu dead letters %s, e.g. \"%s\"\n", dl.by_reason[r],
                          FDLQ_REASON[r], dl.error[r]);
    if (!ok)
        print_message("besides the dead letters, the manager reported:\n%s\n", c.text);
    ew_manager_free(m);
    const char *ls[] = {"Strict", NULL};
    cleanup_event(&tg, ev.name, ls);
    free(good);
    free(bigbody);

    /* Freed before the checks: a failure reports no leak of its own. */
    tally_free(&f.t);
    assert_int_equal(publish_failed, 0);
    if (big_failed)
        fail_msg("publishing the 10 MB body failed (%s): the test needs it on the broker",
                 ew_strerror(big_rc));
    if (!flowing)
        fail_msg("good events stopped flowing between the bad bodies (see the tally above)");
    if (!sentinel)
        fail_msg("the last dead letter (a sentinel) never arrived");
    assert_int_equal(too_big + big_seen_off, (size_t)ROUNDS + 1);
    assert_int_equal(decode_failed, want_dlq - too_big);
    assert_int_equal(dl.n, want_dlq);
    if (heap_growth >= (long)HEAP_GROWTH_MAX)
        fail_msg("live heap grew by %ld KiB over %d rounds of poison", heap_growth / 1024,
                 ROUNDS);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s URL\n", argv[0]);
        return 2;
    }
    URL = argv[1];
    if (getenv("EW_FAULT_ROUNDS")) {
        ROUNDS = atoi(getenv("EW_FAULT_ROUNDS"));
        if (ROUNDS < 1 || ROUNDS > MAX_ROUNDS)
            ROUNDS = 3;
    }
    support_init(URL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(bad_bodies_are_dead_lettered_and_nothing_grows),
    };
    return cmocka_run_group_tests_name("fault: bodies that do not decode", tests, NULL, NULL);
}
