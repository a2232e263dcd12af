/* eventwire dlq: a listener's dead letters. list and show look without
 * taking; replay puts each back on the listener's queue and takes it off the
 * dead letters only once the broker confirmed the republish (a replay killed
 * in the middle leaves every message on one queue or the other, possibly
 * both, never on neither); purge takes them off. */
#include "cli.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void help(FILE *f)
{
    fprintf(f,
            "Usage: eventwire dlq URL EVENT LISTENER list|show|replay|purge [options]\n"
            "\n"
            "The dead letters of listener LISTENER of EVENT (queue EVENT::LISTENER.dlq),\n"
            "oldest first, one JSON line each on stdout:\n"
            "  list    id, event, sent_at, and the reason headers (\"dead_letter\":\n"
            "          reason, error, queue, attempts, server); nothing is taken\n"
            "  show    the same with the user headers and the body; nothing is taken\n"
            "  replay  sends each one again to EVENT::LISTENER only (new message id,\n"
            "          attempt 1, user headers kept) and takes it off the dead letters\n"
            "          once the broker confirmed that send; prints {\"replayed\":id,\n"
            "          \"id\":new id}. Killed midway, a message may be in both queues,\n"
            "          never in neither. It stops at a message it replayed itself that\n"
            "          failed again\n"
            "  purge   takes them off for good; prints {\"purged\":id}\n"
            "A listener without dead letters (or without a dead-letter queue yet)\n"
            "prints nothing.\n"
            "\n"
            "  --reason R          only dead letters of reason R (listener-failed,\n"
            "                      handle-refused, decode-failed, too-big); replay and\n"
            "                      purge stop at the first one of another reason, since\n"
            "                      they work through the queue in order\n"
            "  --limit N           at most N dead letters (default: 100 for list and\n"
            "                      show, all for replay and purge)\n"
            "  --rate R            replay at most R messages per second\n"
            "  --wait MS           wait up to MS for the first dead letter (default 1000)\n"
            CLI_COMMON_HELP
            "\n"
            "Example:\n"
            "  eventwire dlq rabbitmq://guest:guest@127.0.0.1/ OrderPlaced Billing list\n"
            "  eventwire dlq rabbitmq://guest:guest@127.0.0.1/ OrderPlaced Billing replay --rate 100\n"
            "\n" CLI_EXIT_CODES);
}

enum action { LIST, SHOW, REPLAY, PURGE };

/* The ids this run replayed: a replay that fails again comes back as a dead
 * letter with that id, and the run stops there instead of going round. */
typedef struct id_set {
    char (*slot)[37];
    size_t cap, n;
} id_set;

static size_t id_hash(const char *id)
{
    size_t h = 1469598103934665603u;
    for (; *id; id++)
        h = (h ^ (unsigned char)*id) * 1099511628211u;
    return h;
}

static bool id_set_has(const id_set *s, const char *id)
{
    if (!s->cap)
        return false;
    for (size_t i = id_hash(id) & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
        if (!s->slot[i][0])
            return false;
        if (strcmp(s->slot[i], id) == 0)
            return true;
    }
}

static bool id_set_add(id_set *s, const char *id)
{
    if ((s->n + 1) * 2 > s->cap) {
        id_set g = {NULL, s->cap ? s->cap * 2 : 1024, 0};
        if (!(g.slot = calloc(g.cap, sizeof *g.slot)))
            return false;
        for (size_t i = 0; i < s->cap; i++)
            if (s->slot[i][0])
                id_set_add(&g, s->slot[i]);
        free(s->slot);
        *s = g;
    }
    size_t i = id_hash(id) & (s->cap - 1);
    while (s->slot[i][0])
        i = (i + 1) & (s->cap - 1);
    snprintf(s->slot[i], sizeof s->slot[i], "%s", id);
    s->n++;
    return true;
}

typedef struct dlq_run {
    ew_manager *m;
    const ew_event_desc *desc;
    const char *listener;
    enum action action;
    const char *reason;
    long rate;
    struct timespec next; /* the earliest time of the next replay */
    cli_headers *headers;
    size_t done;
    bool stopped_by_reason;
    bool came_back;  /* met a dead letter this run had replayed */
    id_set replayed;
    ew_err send_rc;
    char send_err[512];
    int print_errors;
} dlq_run;

static bool reason_matches(const dlq_run *r, const ew_envelope *env)
{
    if (!r->reason)
        return true;
    const char *why = ew_envelope_header(env, EW_HDR_DLQ_REASON);
    return why && strcmp(why, r->reason) == 0;
}

static ew_err look(void *user, const ew_envelope *env)
{
    dlq_run *r = user;
    if (!reason_matches(r, env))
        return EW_OK;
    char err[512];
    json_t *line = cli_envelope_json(env, NULL, r->action == SHOW, err, sizeof err);
    if (!line) {
        /* Printed as far as it goes: the listing carries on. */
        line = cli_envelope_json(env, NULL, false, err, sizeof err);
        if (line)
            json_object_set_new(line, "body_error", json_string(err));
        r->print_errors++;
    }
    if (line) {
        cli_print_line(line);
        json_decref(line);
    }
    r->done++;
    return EW_OK;
}

static void pace(dlq_run *r)
{
    if (r->rate <= 0)
        return;
    /* Rate limiting is the one wait here: a sleep is what is asked for. */
    clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &r->next, NULL);
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    long step = 1000000000L / r->rate;
    r->next = now;
    r->next.tv_nsec += step;
    while (r->next.tv_nsec >= 1000000000L) {
        r->next.tv_nsec -= 1000000000L;
        r->next.tv_sec++;
    }
}

static ew_err take(void *user, const ew_envelope *env)
{
    dlq_run *r = user;
    if (!reason_matches(r, env)) {
        r->stopped_by_reason = true;
        return EW_EREFUSED; /* it and the rest stay */
    }
    const char *id = ew_envelope_message_id(env);
    if (r->action == REPLAY && id && id_set_has(&r->replayed, id)) {
        r->came_back = true;
        return EW_EREFUSED; /* replayed once by this run and failed again */
    }
    json_t *line = json_object();
    if (r->action == REPLAY) {
        pace(r);
        size_t len;
        const void *body = ew_envelope_body(env, &len);
        ew_format fmt = ew_format_from_content_type(ew_envelope_content_type(env));
        if (fmt == EW_FORMAT_DEFAULT) {
            r->send_rc = EW_EDECODE;
            snprintf(r->send_err, sizeof r->send_err,
                     "dead letter %s: unknown event format '%s'; it stays", id ? id : "?",
                     ew_envelope_content_type(env));
            json_decref(line);
            return EW_EDECODE;
        }
        r->headers->copy_from = env;
        ew_err rc = ew_send_to(r->m, r->desc, r->listener,
                               &(ew_raw_event){body, len, fmt});
        r->headers->copy_from = NULL;
        if (rc != EW_OK) {
            r->send_rc = rc;
            snprintf(r->send_err, sizeof r->send_err, "replaying %s: %s", id ? id : "?",
                     ew_last_error()[0] ? ew_last_error() : ew_strerror(rc));
            json_decref(line);
            return rc; /* it and the rest stay */
        }
        if (!id_set_add(&r->replayed, cli_last_message_id())) {
            r->send_rc = EW_ENOMEM;
            snprintf(r->send_err, sizeof r->send_err, "out of memory");
            /* Sent and not taken: a duplicate at worst, and the run ends. */
            json_decref(line);
            return EW_ENOMEM;
        }
        json_object_set_new(line, "replayed", json_string(id ? id : ""));
        json_object_set_new(line, "id", json_string(cli_last_message_id()));
    } else {
        json_object_set_new(line, "purged", json_string(id ? id : ""));
    }
    cli_print_line(line);
    json_decref(line);
    r->done++;
    return EW_OK;
}

int cli_dlq(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"reason", required_argument, NULL, 'r'}, {"limit", required_argument, NULL, 'n'},
        {"rate", required_argument, NULL, 'R'},   {"wait", required_argument, NULL, 'w'},
        {"help", no_argument, NULL, 'h'},         CLI_COMMON_LONGOPTS,
        {NULL, 0, NULL, 0}};
    cli_common c;
    cli_common_init(&c, "dlq");
    const char *reason = NULL;
    long limit = -1, rate = 0, wait_ms = 1000;
    int opt;
    optind = 1;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":hv", longopts, NULL)) != -1) {
        int r = cli_common_opt(&c, opt, optarg);
        if (r < 0)
            return CLI_USAGE;
        if (r > 0)
            continue;
        switch (opt) {
        case 'r': reason = optarg; break;
        case 'n':
            if ((limit = cli_number(c.cmd, "--limit", optarg, 1, 1000000000)) < 0)
                return CLI_USAGE;
            break;
        case 'R':
            if ((rate = cli_number(c.cmd, "--rate", optarg, 1, 1000000)) < 0)
                return CLI_USAGE;
            break;
        case 'w':
            if ((wait_ms = cli_number(c.cmd, "--wait", optarg, 0, 3600000)) < 0)
                return CLI_USAGE;
            break;
        case 'h': help(stdout); return CLI_OK;
        default: return cli_bad_option(c.cmd, argv, opt);
        }
    }
    if (argc - optind != 4)
        return cli_fail(c.cmd, CLI_USAGE,
                        "expected URL EVENT LISTENER list|show|replay|purge (see eventwire "
                        "dlq --help)");
    const char *what = argv[optind + 3];
    enum action action;
    if (strcmp(what, "list") == 0)
        action = LIST;
    else if (strcmp(what, "show") == 0)
        action = SHOW;
    else if (strcmp(what, "replay") == 0)
        action = REPLAY;
    else if (strcmp(what, "purge") == 0)
        action = PURGE;
    else
        return cli_fail(c.cmd, CLI_USAGE, "unknown action '%s' (list, show, replay or purge)",
                        what);
    if (rate && action != REPLAY)
        return cli_fail(c.cmd, CLI_USAGE, "--rate applies to replay only");

    /* Replays are durable sends: confirmed by the broker before the dead
     * letter is taken (every event's exchange is durable, so this declares
     * nothing new). */
    ew_event_desc desc = {.type = &ew_raw_type, .name = argv[optind + 1], .durable = true};
    cli_headers headers = {0};
    dlq_run r = {.desc = &desc, .listener = argv[optind + 2], .action = action,
                 .reason = reason, .rate = rate, .headers = &headers};
    ew_manager *m;
    int code = cli_manager(&c, argv[optind], &m, NULL, NULL);
    if (code != CLI_OK)
        return code;
    ew_err rc = cli_headers_install(m, &headers);
    if (rc != EW_OK) {
        code = cli_fail_ew(c.cmd, rc, "headers");
        goto done;
    }
    r.m = m;
    clock_gettime(CLOCK_MONOTONIC, &r.next);
    ew_dead_letter_options o = {.event = &desc, .listener = r.listener,
                                .timeout_ms = (int)wait_ms, .user = &r};
    if (action == LIST || action == SHOW) {
        o.max = (size_t)(limit > 0 ? limit : 100);
        o.fn = look;
        rc = ew_dead_letters_peek(m, &o, NULL);
    } else {
        o.fn = take;
        /* In batches, each one settled before the next is read. */
        for (;;) {
            size_t left = limit > 0 ? (size_t)limit - r.done : 100;
            if (left == 0)
                break;
            o.max = left < 100 ? left : 100;
            size_t taken = 0;
            rc = ew_dead_letters(m, &o, &taken);
            /* Each batch waits --wait for its first message: over STOMP and
             * AMQP 1.0 a batch is a fresh subscription, whose messages take
             * a moment to come. */
            if (rc != EW_OK || taken == 0)
                break;
        }
    }
    if (r.send_rc != EW_OK) {
        code = cli_fail(c.cmd, cli_exit_for(r.send_rc), "%s (%zu done before)", r.send_err,
                        r.done);
        goto done;
    } else if (rc == EW_ENOTFOUND && r.done == 0) {
        rc = EW_OK; /* no dead-letter queue (yet): no dead letters */
    } else if (rc == EW_EREFUSED && r.came_back) {
        rc = EW_OK;
        fprintf(stderr, "eventwire dlq: stopped after %zu: a message replayed by this run is "
                "a dead letter again\n", r.done);
    } else if (rc == EW_EREFUSED && r.stopped_by_reason) {
        rc = EW_OK;
        fprintf(stderr, "eventwire dlq: stopped at a dead letter of another reason than "
                "'%s' after %zu\n", reason, r.done);
    }
    if (rc != EW_OK)
        code = cli_fail_ew(c.cmd, rc, "reading dead letters");
    else if (r.print_errors)
        code = cli_fail(c.cmd, CLI_ERROR, "%d dead letters have a body that does not print",
                        r.print_errors);
done:
    ew_manager_stop(m, c.send_timeout_ms);
    ew_manager_free(m);
    cli_headers_free(&headers);
    free(r.replayed.slot);
    return code;
}
