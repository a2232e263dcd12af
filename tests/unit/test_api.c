/* The public API's contracts on local://: what callbacks return, and what a
 * failing call tells its caller. */
#include "support.h"

/* ---- a dead-letter reader that refuses keeps the message ---------------- */

typedef struct refuser {
    int calls;
    ew_err answer;
} refuser;

static ew_err refuse(void *user, const ew_envelope *env)
{
    refuser *r = user;
    (void)env;
    r->calls++;
    return r->answer;
}

static ew_err always_fail(ew_delivery *d, const void *event, void *user)
{
    (void)d, (void)event, (void)user;
    return EW_ENORETRY;
}

static void refused_dead_letter_stays_on_the_queue(void **state)
{
    (void)state;
    support_init("local://");
    EV(ev, "Refuse", false);
    ew_manager *m = mgr_new("local://refuse", "s1");
    assert_int_equal(ew_listen(m, &(ew_listener_desc){.event = &ev, .name = "L"},
                               always_fail, NULL),
                     EW_OK);
    assert_int_equal(ew_manager_start(m), EW_OK);
    for (int i = 0; i < 3; i++)
        assert_int_equal(ew_send(m, &ev, &(conf_event){i, "x"}), EW_OK);
    /* Wait for the three dead letters: read them, refusing each. */
    refuser r = {0, EW_EBROKER};
    size_t got = 99;
    assert_int_equal(ew_dead_letters(m, &ev, "L", 1, 10000, refuse, &r, &got), EW_EBROKER);
    assert_int_equal(r.calls, 1);
    assert_int_equal(got, 0);
    /* Every one is still there: the refused one went back to the end. */
    dlq_box box = {0};
    size_t total = 0;
    while (total < 3) {
        got = 0;
        ew_err rc = ew_dead_letters(m, &ev, "L", 10, 10000, dlq_collect, &box, &got);
        if (rc != EW_OK || got == 0)
            fail_msg("dead letters after %zu of 3: %s (%zu taken)", total,
                     ew_strerror(rc), got);
        total += got;
    }
    assert_int_equal(total, 3);
    bool seen[3] = {false, false, false};
    for (size_t i = 0; i < total; i++) {
        assert_true(box.ids[i] >= 0 && box.ids[i] < 3);
        seen[box.ids[i]] = true;
        assert_string_equal(box.reason[i], "listener-failed");
    }
    assert_true(seen[0] && seen[1] && seen[2]);
    /* Nothing more. */
    got = 0;
    assert_int_equal(ew_dead_letters(m, &ev, "L", 10, 50, dlq_collect, &box, &got), EW_OK);
    assert_int_equal(got, 0);
    ew_manager_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(refused_dead_letter_stays_on_the_queue),
    };
    return cmocka_run_group_tests_name("api", tests, NULL, NULL);
}
