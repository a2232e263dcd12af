/* The URL option table (core/options.c): canonical names and units, old
 * names read as aliases with one warning each, verify values, unknown names
 * refused with the list of valid ones, and the README's option table checked
 * against the table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "options.h"

/* ---- a manager whose log lines are kept --------------------------------- */

typedef struct logbook {
    char lines[32][1024];
    int levels[32];
    int n;
} logbook;

static void keep_line(void *user, ew_log_level level, const char *msg)
{
    logbook *b = user;
    if (b->n < 32) {
        snprintf(b->lines[b->n], sizeof b->lines[0], "%s", msg);
        b->levels[b->n++] = level;
    }
}

static int count_warnings(const logbook *b, const char *says)
{
    int n = 0;
    for (int i = 0; i < b->n; i++)
        if (b->levels[i] == EW_LOG_WARN && strstr(b->lines[i], says))
            n++;
    return n;
}

static void print_log(const logbook *b)
{
    for (int i = 0; i < b->n; i++)
        print_message("log[%d] level %d: %s\n", i, b->levels[i], b->lines[i]);
}

/* Parses text for transport with m logging into b. */
static ew_err parse(const char *text, unsigned transport, bool tls, ewi_opts *o, logbook *b,
                    char *err, size_t errlen)
{
    ew_manager *m = NULL;
    ew_options mo = {.log_level = EW_LOG_DEBUG, .log = keep_line, .log_user = b};
    if (b) {
        memset(b, 0, sizeof *b);
        assert_int_equal(ew_manager_new(&m, "local://opts-test", &mo), EW_OK);
        b->n = 0; /* the manager's own start line */
    }
    ewi_url u;
    char uerr[256];
    if (ewi_url_parse(text, &u, uerr, sizeof uerr) != EW_OK)
        fail_msg("bad test URL %s: %s", text, uerr);
    ew_err rc = ewi_opts_parse(m, &u, transport, tls, o, err, errlen);
    /* Texts point into the URL: the tests read numbers only after this. */
    ewi_url_free(&u);
    ew_manager_free(m);
    return rc;
}

/* ---- the table itself ----------------------------------------------------- */

static void every_row_is_complete(void **state)
{
    (void)state;
    const ewi_opt_def *t = ewi_opt_table();
    for (size_t i = 0; i < EWI_OPT_COUNT; i++) {
        if (!t[i].name || !t[i].meaning || !t[i].transports)
            fail_msg("row %zu is incomplete", i);
        assert_ptr_equal(ewi_opt_find(t[i].name), &t[i]);
        if (t[i].kind == EWI_OPTK_INT &&
            !((t[i].dflt >= t[i].min && t[i].dflt <= t[i].max) || (t[i].zero_off && !t[i].dflt)))
            fail_msg("%s: default %ld outside %ld..%ld", t[i].name, t[i].dflt, t[i].min,
                     t[i].max);
        if (t[i].kind == EWI_OPTK_WORD && !t[i].choices[0])
            fail_msg("%s: no choices", t[i].name);
        if (strlen(t[i].name) > 3 && strcmp(t[i].name + strlen(t[i].name) - 3, "_ms") == 0)
            assert_string_equal(t[i].unit, "ms");
    }
    for (const ewi_opt_alias *a = ewi_opt_aliases(); a->name; a++) {
        assert_null(ewi_opt_find(a->name)); /* an alias is never also canonical */
        assert_true(a->canonical < EWI_OPT_COUNT);
    }
}

static void the_same_default_on_every_transport(void **state)
{
    (void)state;
    const unsigned ts[] = {EWI_OPTS_RABBITMQ, EWI_OPTS_STOMP, EWI_OPTS_AMQP};
    for (size_t i = 0; i < 3; i++) {
        ewi_opts o;
        char err[600];
        assert_int_equal(parse("x://h", ts[i], true, &o, NULL, err, sizeof err), EW_OK);
        assert_int_equal(o.num[EWI_OPT_HEARTBEAT_MS], 10000);
        assert_int_equal(o.num[EWI_OPT_MAX_INFLIGHT], EWI_DEFAULT_MAX_INFLIGHT);
        assert_int_equal(o.num[EWI_OPT_RECONNECT_MAX_MS], 5000);
        assert_int_equal(o.num[EWI_OPT_PER_PROCESS_EXPIRES_MS], 60000);
        assert_int_equal(o.num[EWI_OPT_PREFETCH], 256);
        assert_int_equal(o.num[EWI_OPT_VERIFY], EWI_VERIFY_NAME);
        assert_string_equal(o.text[EWI_OPT_VERIFY], "name");
        assert_false(o.given[EWI_OPT_HEARTBEAT_MS]);
    }
}

/* ---- aliases and units ---------------------------------------------------- */

static void old_names_are_converted_and_warned_once_each(void **state)
{
    (void)state;
    char url[1024];
    snprintf(url, sizeof url,
             "x://h?heartbeat=5&cacert=%s&queue_expires=7000&reconnect_max=300"
             "&connect_timeout=2000&rpc_timeout=1500&verify=true",
             __FILE__);
    ewi_opts o;
    logbook b;
    char err[600];
    ew_err rc = parse(url, EWI_OPTS_RABBITMQ, true, &o, &b, err, sizeof err);
    if (rc != EW_OK)
        fail_msg("%s: %s", url, err);
    assert_int_equal(o.num[EWI_OPT_HEARTBEAT_MS], 5000); /* seconds → ms */
    assert_true(o.given[EWI_OPT_HEARTBEAT_MS]);
    assert_true(o.given[EWI_OPT_CA]);
    assert_int_equal(o.num[EWI_OPT_PER_PROCESS_EXPIRES_MS], 7000);
    assert_int_equal(o.num[EWI_OPT_RECONNECT_MAX_MS], 300);
    assert_int_equal(o.num[EWI_OPT_CONNECT_TIMEOUT_MS], 2000);
    assert_int_equal(o.num[EWI_OPT_RPC_TIMEOUT_MS], 1500);
    assert_int_equal(o.num[EWI_OPT_VERIFY], EWI_VERIFY_NAME);
    static const char *const says[] = {"heartbeat=5 is an old name, read as heartbeat_ms=5000",
                                       "'cacert' is an old name: use ca=",
                                       "'queue_expires' is an old name: use per_process_expires_ms=7000",
                                       "'reconnect_max' is an old name: use reconnect_max_ms=300",
                                       "'connect_timeout' is an old name: use connect_timeout_ms=2000",
                                       "'rpc_timeout' is an old name: use rpc_timeout_ms=1500",
                                       "verify=true is an old value: use verify=name"};
    for (size_t i = 0; i < sizeof says / sizeof says[0]; i++)
        if (count_warnings(&b, says[i]) != 1) {
            print_log(&b);
            fail_msg("want one warning saying \"%s\"", says[i]);
        }
    assert_int_equal(b.n, 7); /* nothing else */

    /* The canonical names log nothing. */
    assert_int_equal(parse("x://h?heartbeat_ms=5000&verify=peer", EWI_OPTS_STOMP, true, &o, &b,
                           err, sizeof err),
                     EW_OK);
    assert_int_equal(b.n, 0);
    assert_int_equal(o.num[EWI_OPT_VERIFY], EWI_VERIFY_PEER);
}

static void a_refused_url_logs_no_alias_warning(void **state)
{
    (void)state;
    ewi_opts o;
    logbook b;
    char err[600];
    assert_int_equal(parse("x://h?heartbeat=5&max_inflight=0", EWI_OPTS_RABBITMQ, false, &o, &b,
                           err, sizeof err),
                     EW_EINVAL);
    assert_int_equal(b.n, 0);
    assert_non_null(strstr(err, "max_inflight must be an integer in 1..1000000"));
}

static void an_alias_and_its_name_are_one_option(void **state)
{
    (void)state;
    ewi_opts o;
    char err[600];
    assert_int_equal(parse("x://h?heartbeat=5&heartbeat_ms=5000", EWI_OPTS_STOMP, false, &o,
                           NULL, err, sizeof err),
                     EW_EINVAL);
    assert_non_null(strstr(err, "'heartbeat' and 'heartbeat_ms' are the same option"));
    assert_int_equal(parse("x://h?max_inflight=5&max_inflight=6", EWI_OPTS_AMQP, false, &o, NULL,
                           err, sizeof err),
                     EW_EINVAL);
    assert_non_null(strstr(err, "'max_inflight' is given twice"));
}

static void units_and_ranges(void **state)
{
    (void)state;
    static const struct {
        const char *url;
        const char *says; /* NULL: accepted */
    } cases[] = {
        {"x://h?heartbeat_ms=0", NULL},
        {"x://h?heartbeat=0", NULL},
        {"x://h?heartbeat_ms=50", "heartbeat_ms must be 0 (off) or an integer in 100..3600000 ms"},
        {"x://h?heartbeat=3601", "heartbeat must be 0 (off) or 1..3600, in units of 1000 ms (or give heartbeat_ms)"},
        {"x://h?heartbeat=abc", "heartbeat must be"},
        {"x://h?heartbeat=99999999999999999999", "heartbeat must be"},
        {"x://h?reconnect_max_ms=50", "reconnect_max_ms must be an integer in 100..600000 ms"},
        {"x://h?max_inflight=1000000", NULL},
        {"x://h?max_inflight=1000001", "max_inflight must be"},
        {"x://h?per_process_expires_ms=999", "per_process_expires_ms must be"},
        {"x://h?prefetch=", "prefetch must be"},
        {"x://h?verify=maybe", "verify must be one of name, peer, none (not 'maybe')"},
        {"x://h?verify=0", NULL},
        {"x://h?ca=/nonexistent/ca.pem", "ca file /nonexistent/ca.pem: No such file"},
        {"x://h?ca=", "option 'ca' is empty"},
        {"x://h?cert=" __FILE__, "cert and key go together: cert without key"},
        {"x://h?key=" __FILE__, "cert and key go together: key without cert"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ewi_opts o;
        char err[600] = "";
        ew_err rc = parse(cases[i].url, EWI_OPTS_RABBITMQ, true, &o, NULL, err, sizeof err);
        if (!cases[i].says && rc != EW_OK)
            fail_msg("%s: refused (%s)", cases[i].url, err);
        if (cases[i].says && (rc != EW_EINVAL || !strstr(err, cases[i].says)))
            fail_msg("%s: %d '%s', want EW_EINVAL saying '%s'", cases[i].url, rc, err,
                     cases[i].says);
    }
    ewi_opts o;
    char err[600];
    assert_int_equal(parse("x://h?verify=0", EWI_OPTS_AMQP, true, &o, NULL, err, sizeof err),
                     EW_OK);
    assert_int_equal(o.num[EWI_OPT_VERIFY], EWI_VERIFY_NONE);
    assert_int_equal(parse("x://h?verify=false", EWI_OPTS_AMQP, true, &o, NULL, err, sizeof err),
                     EW_OK);
    assert_int_equal(o.num[EWI_OPT_VERIFY], EWI_VERIFY_NONE);
    assert_int_equal(parse("x://h?verify=1", EWI_OPTS_AMQP, true, &o, NULL, err, sizeof err),
                     EW_OK);
    assert_int_equal(o.num[EWI_OPT_VERIFY], EWI_VERIFY_NAME);
}

/* ---- unknown names ------------------------------------------------------- */

static void unknown_and_foreign_names_are_refused_with_the_valid_ones(void **state)
{
    (void)state;
    ewi_opts o;
    char err[600];
    assert_int_equal(parse("x://h?hearbeat_ms=5", EWI_OPTS_STOMP, false, &o, NULL, err,
                           sizeof err),
                     EW_EINVAL);
    assert_non_null(strstr(err, "unknown option 'hearbeat_ms'"));
    assert_non_null(strstr(err, "stomp:// takes: prefetch, dialect, amqp_port, heartbeat_ms"));
    assert_non_null(strstr(err, "verify (TLS)"));
    /* A real option, but of another transport. */
    assert_int_equal(parse("x://h?capacity=5", EWI_OPTS_AMQP, false, &o, NULL, err, sizeof err),
                     EW_EINVAL);
    assert_non_null(strstr(err, "unknown option 'capacity' here"));
    assert_int_equal(parse("x://h?ca=" __FILE__, EWI_OPTS_RABBITMQ, false, &o, NULL, err,
                           sizeof err),
                     EW_EINVAL);
    assert_non_null(strstr(err, "option 'ca' needs rabbitmqs:// (TLS)"));

    /* At ew_manager_new, with the name and the list in the error log. */
    logbook b;
    memset(&b, 0, sizeof b);
    ew_options mo = {.log_level = EW_LOG_ERROR, .log = keep_line, .log_user = &b};
    ew_manager *m = NULL;
    assert_int_equal(ew_manager_new(&m, "local://opts-test?capacty=5", &mo), EW_EINVAL);
    assert_null(m);
    bool seen = false;
    for (int i = 0; i < b.n; i++)
        seen |= strstr(b.lines[i], "unknown option 'capacty'") &&
                strstr(b.lines[i], "local:// takes: prefetch, capacity");
    if (!seen) {
        print_log(&b);
        fail_msg("ew_manager_new did not name the unknown option and the valid ones");
    }
}

static void queue_type_and_host_lists(void **state)
{
    (void)state;
    ewi_opts o;
    char err[600];
    assert_int_equal(parse("rabbitmq://h", EWI_OPTS_RABBITMQ, false, &o, NULL, err, sizeof err),
                     EW_OK);
    assert_int_equal(o.num[EWI_OPT_QUEUE_TYPE], EWI_QUEUE_CLASSIC);
    assert_string_equal(o.text[EWI_OPT_QUEUE_TYPE], "classic");
    assert_int_equal(parse("rabbitmq://h1,h2:5673,h3?queue_type=quorum", EWI_OPTS_RABBITMQ,
                           false, &o, NULL, err, sizeof err),
                     EW_OK);
    assert_int_equal(o.num[EWI_OPT_QUEUE_TYPE], EWI_QUEUE_QUORUM);
    assert_int_equal(parse("rabbitmq://h?queue_type=stream", EWI_OPTS_RABBITMQ, false, &o,
                           NULL, err, sizeof err),
                     EW_EINVAL);
    assert_non_null(strstr(err, "queue_type must be one of classic, quorum"));
    /* Only broker transports declare queues with a type (stomp:// and
     * amqp:// with dialect=rabbitmq only: their own check). */
    assert_int_equal(parse("stomp://h1,h2?queue_type=quorum", EWI_OPTS_STOMP, false, &o, NULL,
                           err, sizeof err),
                     EW_OK);
    assert_int_equal(parse("local://?queue_type=quorum", EWI_OPTS_LOCAL, false, &o, NULL, err,
                           sizeof err),
                     EW_EINVAL);
    /* A transport that takes one host refuses a list rather than using its
     * first entry. */
    assert_int_equal(parse("local://a,b", EWI_OPTS_LOCAL, false, &o, NULL, err, sizeof err),
                     EW_EINVAL);
    assert_non_null(strstr(err, "takes one host, not a list of 2"));
}

/* ---- the README's table ---------------------------------------------------- */

/* The repository's README.md, found from this file's path. */
static char *read_readme(void)
{
    char path[4096];
    snprintf(path, sizeof path, "%s", __FILE__);
    char *cut = strstr(path, "tests/unit/test_options.c");
    if (!cut)
        fail_msg("cannot find the repository from %s", __FILE__);
    strcpy(cut, "README.md");
    FILE *f = fopen(path, "r");
    if (!f)
        fail_msg("cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = calloc(1, (size_t)n + 1);
    assert_non_null(text);
    assert_int_equal(fread(text, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    return text;
}

/* The transports named in a README cell: "all", "broker transports", or
 * `rabbitmq`, `stomp`, `amqp`, `local` in backticks; "TLS" sets *tls. */
static unsigned readme_transports(const char *cell, bool *tls)
{
    unsigned t = 0;
    *tls = strstr(cell, "TLS") != NULL;
    if (strstr(cell, "all"))
        t |= EWI_OPTS_ALL;
    if (strstr(cell, "broker transports"))
        t |= EWI_OPTS_BROKERS;
    static const struct {
        const char *name;
        unsigned bit;
    } names[] = {{"`rabbitmq`", EWI_OPTS_RABBITMQ},
                 {"`stomp`", EWI_OPTS_STOMP},
                 {"`amqp`", EWI_OPTS_AMQP},
                 {"`local`", EWI_OPTS_LOCAL}};
    for (size_t i = 0; i < 4; i++)
        if (strstr(cell, names[i].name))
            t |= names[i].bit;
    return t;
}

static void the_readme_table_matches_the_table(void **state)
{
    (void)state;
    char *text = read_readme();
    char *at = strstr(text, "Common URL options");
    if (!at)
        fail_msg("README.md has no \"Common URL options\" table");
    at = strstr(at, "\n|");
    assert_non_null(at);
    bool seen[EWI_OPT_COUNT] = {false};
    int rows = 0;
    /* Each line starting with '|' up to the first line that does not. */
    for (char *line = at + 1; line && *line == '|';) {
        char *end = strchr(line, '\n');
        if (end)
            *end = '\0';
        char *cells[4] = {NULL};
        int nc = 0;
        for (char *c = line + 1; nc < 4 && c && *c;) {
            char *bar = strchr(c, '|');
            if (bar)
                *bar = '\0';
            cells[nc++] = c;
            c = bar ? bar + 1 : NULL;
        }
        line = end ? end + 1 : NULL;
        if (nc < 3 || strstr(cells[0], "---") || strstr(cells[0], "option"))
            continue; /* the header and the rule under it */
        rows++;
        bool tls;
        unsigned t = readme_transports(cells[1], &tls);
        int names = 0;
        /* Every `name=…` in the first cell. */
        for (char *tick = strchr(cells[0], '`'); tick; tick = strchr(tick, '`')) {
            char *close = strchr(tick + 1, '`');
            if (!close)
                fail_msg("README row '%s': unclosed backtick", cells[0]);
            *close = '\0';
            char *name = tick + 1;
            char *eq = strchr(name, '=');
            if (eq)
                *eq = '\0';
            const ewi_opt_def *d = ewi_opt_find(name);
            if (!d)
                fail_msg("README names option '%s', which is not in core's table", name);
            if (d->transports != t)
                fail_msg("README: option '%s' for transports 0x%x, core's table says 0x%x",
                         name, t, d->transports);
            if (d->tls_only != tls)
                fail_msg("README: option '%s' %s TLS only", name,
                         d->tls_only ? "should say it is" : "is not");
            seen[d - ewi_opt_table()] = true;
            names++;
            tick = close + 1;
        }
        if (!names)
            fail_msg("README option row without an option name: %s", cells[0]);
    }
    assert_true(rows > 0);
    for (size_t i = 0; i < EWI_OPT_COUNT; i++)
        if (!seen[i])
            fail_msg("README's option table lacks '%s'", ewi_opt_table()[i].name);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_row_is_complete),
        cmocka_unit_test(the_same_default_on_every_transport),
        cmocka_unit_test(old_names_are_converted_and_warned_once_each),
        cmocka_unit_test(a_refused_url_logs_no_alias_warning),
        cmocka_unit_test(an_alias_and_its_name_are_one_option),
        cmocka_unit_test(units_and_ranges),
        cmocka_unit_test(unknown_and_foreign_names_are_refused_with_the_valid_ones),
        cmocka_unit_test(queue_type_and_host_lists),
        cmocka_unit_test(the_readme_table_matches_the_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
