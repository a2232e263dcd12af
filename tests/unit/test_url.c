#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "ewi.h"

static void full_url(void **state)
{
    (void)state;
    ewi_url u;
    char err[128];
    assert_int_equal(ewi_url_parse("RabbitMQ://us%40er:p%3Ass@broker-1.local:5673/my%2Fvhost"
                                   "?prefetch=500&dialect=artemis&empty=&flag",
                                   &u, err, sizeof err),
                     EW_OK);
    assert_string_equal(u.scheme, "rabbitmq");
    assert_string_equal(u.user, "us@er");
    assert_string_equal(u.password, "p:ss");
    assert_string_equal(u.host, "broker-1.local");
    assert_int_equal(u.port, 5673);
    assert_string_equal(u.path, "my/vhost");
    assert_string_equal(ewi_url_param(&u, "dialect"), "artemis");
    assert_string_equal(ewi_url_param(&u, "empty"), "");
    assert_string_equal(ewi_url_param(&u, "flag"), "");
    assert_null(ewi_url_param(&u, "nope"));
    long n;
    assert_int_equal(ewi_url_param_int(&u, "prefetch", 1, 1, 1000, &n), EW_OK);
    assert_int_equal(n, 500);
    assert_int_equal(ewi_url_param_int(&u, "dialect", 1, 1, 1000, &n), EW_EINVAL);
    assert_int_equal(ewi_url_param_int(&u, "absent", 7, 1, 1000, &n), EW_OK);
    assert_int_equal(n, 7);
    assert_int_equal(ewi_url_param_int(&u, "prefetch", 1, 1, 100, &n), EW_EINVAL);
    ewi_url_free(&u);
}

static void minimal_urls(void **state)
{
    (void)state;
    ewi_url u;
    char err[128];
    assert_int_equal(ewi_url_parse("local://", &u, err, sizeof err), EW_OK);
    assert_string_equal(u.scheme, "local");
    assert_string_equal(u.host, "");
    assert_null(u.user);
    assert_null(u.password);
    assert_null(u.path);
    assert_int_equal(u.port, 0);
    ewi_url_free(&u);
    assert_int_equal(ewi_url_parse("amqp://[::1]:5672/", &u, err, sizeof err), EW_OK);
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.port, 5672);
    assert_string_equal(u.path, "");
    ewi_url_free(&u);
    /* A password may contain an unescaped '@' before the last one. */
    assert_int_equal(ewi_url_parse("stomp://a:b@c@h", &u, err, sizeof err), EW_OK);
    assert_string_equal(u.password, "b@c");
    assert_string_equal(u.host, "h");
    ewi_url_free(&u);
}

static void bad_urls(void **state)
{
    (void)state;
    const char *bad[] = {"", "nothing", "://host", "a b://h", "rabbitmq://h:0",
                         "rabbitmq://h:65536", "rabbitmq://h:12ab", "rabbitmq://h:",
                         "rabbitmq://h/%zz", "rabbitmq://h/%00", "rabbitmq://h?=v",
                         "rabbitmq://h#frag", "rabbitmq://[::1", "rabbitmq://h o",
                         "rabbitmq://h/\x01", "rabbitmq://u:%4@h", "rabbitmq://h$x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ewi_url u;
        char err[128] = "";
        if (ewi_url_parse(bad[i], &u, err, sizeof err) != EW_EINVAL)
            fail_msg("accepted '%s'", bad[i]);
        assert_true(strlen(err) > 0);
    }
    ewi_url u;
    char err[128];
    assert_int_equal(ewi_url_parse(NULL, &u, err, sizeof err), EW_EINVAL);
}

static void host_lists(void **state)
{
    (void)state;
    ewi_url u;
    char err[128];
    assert_int_equal(ewi_url_parse("rabbitmq://u:p@h1:5672,h2:5673,h3/vh?queue_type=quorum",
                                   &u, err, sizeof err),
                     EW_OK);
    assert_int_equal(u.nhosts, 3);
    assert_string_equal(u.hosts[0].host, "h1");
    assert_int_equal(u.hosts[0].port, 5672);
    assert_string_equal(u.hosts[1].host, "h2");
    assert_int_equal(u.hosts[1].port, 5673);
    assert_string_equal(u.hosts[2].host, "h3");
    assert_int_equal(u.hosts[2].port, 0); /* the transport's default */
    /* host and port stay the first entry's, for single-host readers. */
    assert_string_equal(u.host, "h1");
    assert_int_equal(u.port, 5672);
    assert_string_equal(u.user, "u");
    assert_string_equal(u.password, "p");
    assert_string_equal(u.path, "vh");
    assert_string_equal(ewi_url_param(&u, "queue_type"), "quorum");
    ewi_url_free(&u);

    assert_int_equal(ewi_url_parse("amqp://[::1]:5672,127.0.0.1,[fe80::2]", &u, err, sizeof err),
                     EW_OK);
    assert_int_equal(u.nhosts, 3);
    assert_string_equal(u.hosts[0].host, "::1");
    assert_int_equal(u.hosts[0].port, 5672);
    assert_string_equal(u.hosts[1].host, "127.0.0.1");
    assert_int_equal(u.hosts[1].port, 0);
    assert_string_equal(u.hosts[2].host, "fe80::2");
    assert_int_equal(u.hosts[2].port, 0);
    assert_null(u.path);
    ewi_url_free(&u);

    /* One host: a list of one. */
    assert_int_equal(ewi_url_parse("stomp://h:61613", &u, err, sizeof err), EW_OK);
    assert_int_equal(u.nhosts, 1);
    assert_string_equal(u.hosts[0].host, "h");
    assert_int_equal(u.hosts[0].port, 61613);
    ewi_url_free(&u);
    assert_int_equal(ewi_url_parse("local://", &u, err, sizeof err), EW_OK);
    assert_int_equal(u.nhosts, 1);
    assert_string_equal(u.hosts[0].host, "");
    ewi_url_free(&u);
}

static void bad_host_lists(void **state)
{
    (void)state;
    static const struct {
        const char *url, *says;
    } bad[] = {
        {"rabbitmq://h1,,h3", "empty entry (host 2 of 3)"},
        {"rabbitmq://h1,", "empty entry (host 2 of 2)"},
        {"rabbitmq://,h2/vh", "empty entry (host 1 of 2)"},
        {"rabbitmq://u:p@h1:5672,:5673", "without a host (host 2 of 2)"},
        {"rabbitmq://h1:5672,h2:0", "port 0 is out of range (host 2 of 2)"},
        {"rabbitmq://h1:5672,h2:70000", "port 70000 is out of range (host 2 of 2)"},
        {"rabbitmq://h1:5672,h2:x", "not a number (host 2 of 2)"},
        {"rabbitmq://h1,h2:", "empty or too long (host 2 of 2)"},
        {"rabbitmq://h1,[::1", "unclosed IPv6 literal (host 2 of 2)"},
        {"rabbitmq://[::1]x,h2", "junk after the IPv6 literal (host 1 of 2)"},
        {"rabbitmq://h1,h$2", "invalid character (host 2 of 2)"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ewi_url u;
        char err[128] = "";
        if (ewi_url_parse(bad[i].url, &u, err, sizeof err) != EW_EINVAL)
            fail_msg("accepted '%s'", bad[i].url);
        if (!strstr(err, bad[i].says))
            fail_msg("'%s': error '%s' does not say '%s'", bad[i].url, err, bad[i].says);
    }
}

static void redaction_hides_the_password_only(void **state)
{
    (void)state;
    char *r = ewi_url_redacted("rabbitmq://guest:s3cret@host:5672/v?x=1");
    assert_string_equal(r, "rabbitmq://guest:***@host:5672/v?x=1");
    free(r);
    r = ewi_url_redacted("rabbitmq://guest@host/");
    assert_string_equal(r, "rabbitmq://guest@host/");
    free(r);
    r = ewi_url_redacted("stomp://u:p%40ss@h");
    assert_null(strstr(r, "p%40ss"));
    free(r);
    /* Unescaped '/', '#' or '?'-free junk in a password: still hidden. */
    r = ewi_url_redacted("rabbitmq://u:pa/ss#x@host/vh?a=1");
    assert_string_equal(r, "rabbitmq://u:***@host/vh?a=1");
    free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(full_url),
        cmocka_unit_test(minimal_urls),
        cmocka_unit_test(bad_urls),
        cmocka_unit_test(host_lists),
        cmocka_unit_test(bad_host_lists),
        cmocka_unit_test(redaction_hides_the_password_only),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
