/* The AMQP 1.0 transport's URL options: defaults, every option, and the
 * errors a user gets for a typo or a contradiction. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "transports/amqp/amqp10.h"

static ew_err parse(const char *text, amqp10_options *o, char *err, size_t errlen)
{
    ewi_url u;
    char uerr[128];
    assert_int_equal(ewi_url_parse(text, &u, uerr, sizeof uerr), EW_OK);
    err[0] = '\0';
    ew_err rc = amqp10_options_parse(NULL, &u, o, err, errlen);
    ewi_url_free(&u);
    return rc;
}

static void defaults_are_artemis_on_5672(void **state)
{
    (void)state;
    amqp10_options o;
    char err[256];
    assert_int_equal(parse("amqp://", &o, err, sizeof err), EW_OK);
    assert_int_equal(o.dialect, AMQP10_DIALECT_ARTEMIS);
    assert_int_equal(o.naming, AMQP10_NAMING_EVENTWIRE);
    assert_false(o.tls);
    assert_string_equal(o.host, "127.0.0.1");
    assert_int_equal(o.port, 5672);
    assert_null(o.user);
    assert_null(o.password);
    assert_null(o.vhost);
    assert_null(o.sasl_mechs);
    assert_int_equal(o.max_inflight, 512);
    assert_int_equal(o.max_inflight_bytes, 16L << 20);
    assert_int_equal(o.expires_ms, 60000);
    assert_int_equal(o.queue_check_ms, 0);
    assert_int_equal(o.heartbeat_ms, 10000);
    amqp10_options_free(&o);

    assert_int_equal(parse("amqps://h", &o, err, sizeof err), EW_OK);
    assert_true(o.tls);
    assert_int_equal(o.port, 5671);
    assert_int_equal(o.verify, AMQP10_VERIFY_NAME);
    amqp10_options_free(&o);
}

static void every_option_is_read(void **state)
{
    (void)state;
    amqp10_options o;
    char err[256];
    /* File options must name a readable file: this test's own source. */
    char url[1024];
    snprintf(url, sizeof url,
             "amqps://u%%40x:p%%3Aw@broker:6000/v%%2Fh?dialect=rabbitmq"
             "&queue_naming=aspyx&ca=%s&verify=peer"
             "&sasl=PLAIN%%20EXTERNAL&max_inflight=50&max_inflight_bytes=65536"
             "&reconnect_max_ms=900&per_process_expires_ms=5000"
             "&queue_check_ms=250&prefetch=64&heartbeat_ms=1000",
             __FILE__);
    assert_int_equal(parse(url, &o, err, sizeof err), EW_OK);
    assert_int_equal(o.dialect, AMQP10_DIALECT_RABBITMQ);
    assert_int_equal(o.naming, AMQP10_NAMING_ASPYX);
    assert_string_equal(o.user, "u@x");
    assert_string_equal(o.password, "p:w");
    assert_string_equal(o.host, "broker");
    assert_int_equal(o.port, 6000);
    assert_string_equal(o.vhost, "v/h");
    assert_string_equal(o.ca_file, __FILE__);
    assert_int_equal(o.verify, AMQP10_VERIFY_PEER);
    assert_string_equal(o.sasl_mechs, "PLAIN EXTERNAL");
    assert_int_equal(o.max_inflight, 50);
    assert_int_equal(o.max_inflight_bytes, 65536);
    assert_int_equal(o.reconnect_max_ms, 900);
    assert_int_equal(o.expires_ms, 5000);
    assert_int_equal(o.queue_check_ms, 250);
    assert_int_equal(o.heartbeat_ms, 1000);
    amqp10_options_free(&o);

    assert_int_equal(parse("amqp://h?dialect=rabbitmq&vhost=other", &o, err, sizeof err),
                     EW_OK);
    assert_string_equal(o.vhost, "other");
    amqp10_options_free(&o);
}

static void mistakes_are_refused_with_a_reason(void **state)
{
    (void)state;
    static const struct {
        const char *url, *why;
    } bad[] = {
        {"amqp://h?dialet=rabbitmq", "unknown option 'dialet'"},
        {"amqp://h?dialect=activemq", "dialect 'activemq'"},
        {"amqp://h?queue_naming=short", "queue_naming must be one of eventwire, aspyx"},
        {"amqp://h?ca=/x.pem", "needs amqps://"},
        {"amqps://h?ca=/nonexistent/ca.pem", "ca file /nonexistent/ca.pem"},
        {"amqps://h?verify=maybe", "verify must be one of name, peer, none (not 'maybe')"},
        {"amqps://h?verify=none&verify=peer", "given twice"},
        {"amqp://h/vhost", "only exists with dialect=rabbitmq"},
        {"amqp://h/a?dialect=rabbitmq&vhost=b", "given twice"},
        {"amqp://h?max_inflight=0", "max_inflight"},
        {"amqp://h?max_inflight=lots", "max_inflight"},
        {"amqp://h?reconnect_max_ms=5", "reconnect_max_ms"},
        {"amqp://h?sasl=", "'sasl' is empty"},
        {"amqp://h?queue_check_ms=-1", "queue_check_ms"},
        {"amqp://h?heartbeat_ms=50", "heartbeat_ms"},
        {"stomp://h", "not amqp"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        amqp10_options o;
        char err[512];
        assert_int_equal(parse(bad[i].url, &o, err, sizeof err), EW_EINVAL);
        if (!strstr(err, bad[i].why))
            fail_msg("%s: error '%s' does not say '%s'", bad[i].url, err, bad[i].why);
        amqp10_options_free(&o);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(defaults_are_artemis_on_5672),
        cmocka_unit_test(every_option_is_read),
        cmocka_unit_test(mistakes_are_refused_with_a_reason),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
