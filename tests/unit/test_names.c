#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include "ewi.h"

static void good_names(void **state)
{
    (void)state;
    char err[256];
    assert_int_equal(ewi_check_event_name("HelloEvent", err, sizeof err), EW_OK);
    assert_int_equal(ewi_check_event_name("order.created_v2-x", err, sizeof err), EW_OK);
    assert_int_equal(ewi_check_listener_name("Hello_Listener-2", err, sizeof err), EW_OK);
    assert_int_equal(ewi_check_server_name("host-123", err, sizeof err), EW_OK);
}

static void names_that_could_escape_their_address_are_refused(void **state)
{
    (void)state;
    const char *bad_events[] = {"", ".x", "x.", "a..b", "a/b", "a:b", "a::b", "a*", "a>",
                                "a#", "a b", "a\nb", "a\rb", "a\x01", "é", "../x",
                                "a,b", "a%b", "a\\b", "/exchange/x"};
    char err[256];
    for (size_t i = 0; i < sizeof bad_events / sizeof bad_events[0]; i++) {
        err[0] = '\0';
        if (ewi_check_event_name(bad_events[i], err, sizeof err) != EW_EINVAL)
            fail_msg("event name '%s' accepted", bad_events[i]);
        assert_true(strlen(err) > 0);
    }
    /* Listener names take no dots: "L.dlq" would collide with L's dead letters. */
    assert_int_equal(ewi_check_listener_name("a.b", err, sizeof err), EW_EINVAL);
    assert_int_equal(ewi_check_listener_name("a::b", err, sizeof err), EW_EINVAL);
    assert_int_equal(ewi_check_listener_name(NULL, err, sizeof err), EW_EINVAL);
    char longname[EW_MAX_EVENT_NAME + 2];
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    assert_int_equal(ewi_check_event_name(longname, err, sizeof err), EW_EINVAL);
    longname[EW_MAX_EVENT_NAME] = '\0';
    assert_int_equal(ewi_check_event_name(longname, err, sizeof err), EW_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(good_names),
        cmocka_unit_test(names_that_could_escape_their_address_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
