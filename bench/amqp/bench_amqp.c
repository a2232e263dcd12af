/* bench_amqp: events per second through an AMQP 1.0 broker (RabbitMQ's
 * plugin or ActiveMQ Artemis), from the first send to the last receive, in
 * one run:
 *   raw       a bare qpid-proton-c client: one connection, an unsettled
 *             sender (durable messages, completion on the accepted outcome,
 *             as many in flight as the link credit allows) and a receiver
 *             with credit 1000 that decodes each message (pn_message_decode,
 *             as a consumer that reads the body must; raw librabbitmq and
 *             the raw STOMP client decode what they receive too) and
 *             accepts it
 *   eventwire ew_send_async of a durable event, a listener with prefetch
 *             1000 (encode, framework headers, the I/O thread hand-offs, a
 *             worker, decode into a fresh struct, accept)
 *   python    python3-qpid-proton doing what raw does (bench_amqp_py.py)
 * and on Artemis also
 *   aspyx     a real aspyx-event 0.9.3 service (bench_amqp_aspyx.py, in the
 *             virtual environment of scripts/python-env.sh): send_event of
 *             an @event dataclass, an @event_listener, through its own
 *             AMQPProvider (JSON, not durable, fire-and-forget sends,
 *             receiver credit 10, an asyncio run per event)
 *   eventwire the same event in aspyx's form (JSON, not durable), for the
 *   (aspyx)   like-for-like ratio
 * Topology: on RabbitMQ a topic exchange and a durable queue bound with '#',
 * declared over AMQP 0-9-1 as the rabbitmq dialect does; on Artemis a
 * multicast address and an auto-created queue (FQQN source), attached
 * before the first send. Payloads are ~100 bytes. Raw and eventwire run
 * `rounds` times alternately and the medians are compared.
 *
 * Every run is a child process of its own, so that its CPU time (user +
 * system, all threads, per message; for the Python runs the interpreter's)
 * and peak RSS belong to that side alone. Latency runs (raw, eventwire; as
 * many rounds per side, alternating) send at a fixed rate and measure from
 * the send to the receiver / listener, p50 / p99 / p99.9, medians over the
 * rounds. Lines starting with "@ " carry the figures as JSON for
 * scripts/bench.
 *
 *   bench_amqp [-n events] [-r rounds] [-l latency events] [-R rate]
 *              [--only raw|ew] [--no-python] [--no-aspyx] [--raw-headers]
 *              [--raw-batch] [URL]
 *   (-h for the defaults)
 *   URL default: $EW_BENCH_AMQP_URL, else
 *                amqp://guest:guest@127.0.0.1:5672?dialect=rabbitmq
 *   On Artemis: amqp://artemis:artemis@127.0.0.1:5673?dialect=artemis */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_tcp_socket.h>

#include <proton/connection.h>
#include <proton/delivery.h>
#include <proton/link.h>
#include <proton/message.h>
#include <proton/proactor.h>
#include <proton/sasl.h>
#include <proton/session.h>
#include <proton/transport.h>

#include "../common/bench.h"
#include "ewi.h"
#include "transports/amqp/amqp10.h"
#include "transports/rmqadmin/rmqadmin.h"

#ifndef EW_BENCH_PY
#define EW_BENCH_PY "bench_amqp_py.py"
#endif
#ifndef EW_BENCH_ASPYX
#define EW_BENCH_ASPYX "bench_amqp_aspyx.py"
#endif
#ifndef EW_BENCH_PYENV
#define EW_BENCH_PYENV "python-env"
#endif
#ifndef EW_BENCH_ROOT
#define EW_BENCH_ROOT "."
#endif

#define CREDIT 1000
#define PAYLOAD 100

static char run_id[32];

static void die(const char *what)
{
    fprintf(stderr, "bench_amqp: %s\n", what);
    exit(1);
}

/* Declares exchange `name` and durable queue `name`::q bound to it. */
static void declare(const amqp10_options *o, const char *name, char *queue, size_t qlen)
{
    char err[512];
    snprintf(queue, qlen, "%s::q", name);
    rmqa_conf c = {.host = o->host, .port = o->port, .vhost = o->vhost, .user = o->user,
                   .password = o->password, .connect_timeout_ms = 5000};
    rmqa *a = rmqa_new(&c);
    rmqa_decl d = {.kind = RMQA_LISTENER, .event = name, .queue = queue, .durable = true};
    if (!a || rmqa_ensure(a, &d, err, sizeof err) != EW_OK) {
        rmqa_free(a);
        die(a ? err : "out of memory");
    }
    rmqa_free(a);
}

/* Deletes what a run declared (queue name::listener, its .dlq, exchange
 * name), so that runs leave nothing on the broker. */
static void drop(const amqp10_options *o, const char *name, const char *listener)
{
    amqp_connection_state_t c = amqp_new_connection();
    amqp_socket_t *s = amqp_tcp_socket_new(c);
    if (!s || amqp_socket_open(s, o->host, o->port) != AMQP_STATUS_OK) {
        amqp_destroy_connection(c);
        return;
    }
    amqp_login(c, o->vhost ? o->vhost : "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN,
               o->user ? o->user : "guest", o->password ? o->password : "guest");
    amqp_channel_open(c, 1);
    amqp_get_rpc_reply(c);
    char q[160];
    snprintf(q, sizeof q, "%s::%s", name, listener);
    amqp_queue_delete(c, 1, amqp_cstring_bytes(q), 0, 0);
    amqp_get_rpc_reply(c);
    strcat(q, ".dlq");
    amqp_queue_delete(c, 1, amqp_cstring_bytes(q), 0, 0);
    amqp_get_rpc_reply(c);
    amqp_exchange_delete(c, 1, amqp_cstring_bytes(name), 0);
    amqp_get_rpc_reply(c);
    amqp_connection_close(c, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(c);
}

/* ---- raw proton-c ------------------------------------------------------- */

/* --raw-headers: the raw client's messages carry what eventwire's do (a
 * string message-id, subject, content-type, creation-time and ew-attempt
 * in the application properties). */
static bool raw_headers;

typedef struct raw {
    int n, sent, accepted, received;
    int64_t t_first, t_last;
    pn_link_t *snd, *rcv;
    pn_message_t *msg;
    pn_rwbytes_t buf;
    char *in;
    size_t in_cap;
    char payload[PAYLOAD];
    bool done, failed;
    bool rcv_open; /* Artemis: sends wait for the receiver's queue */
    long rate;     /* > 0: a latency run, sends paced at this rate */
    int64_t t0_ns;
    pn_proactor_t *proactor;
    pn_message_t *rmsg;
    bench_lat *lat;
} raw;

static void raw_send_some(raw *r)
{
    while (r->rcv_open && r->sent < r->n && pn_link_credit(r->snd) > 0) {
        if (r->rate) {
            if (r->sent == 0)
                r->t0_ns = bench_now_ns();
            int64_t due = r->t0_ns + (int64_t)((double)r->sent * 1e9 / (double)r->rate);
            int64_t now = bench_now_ns();
            if (due > now) {
                pn_proactor_set_timeout(r->proactor, (pn_millis_t)((due - now) / 1000000));
                return;
            }
            memcpy(r->payload, &now, sizeof now);
        }
        pn_message_clear(r->msg);
        pn_message_set_durable(r->msg, true);
        pn_atom_t id = {.type = PN_ULONG};
        id.u.as_ulong = (uint64_t)r->sent;
        char mid[48];
        if (raw_headers) {
            snprintf(mid, sizeof mid, "00000000-0000-4000-8000-%012d", r->sent);
            id = (pn_atom_t){.type = PN_STRING};
            id.u.as_bytes = pn_bytes(strlen(mid), mid);
            pn_message_set_subject(r->msg, "AmqpBenchRaw");
            pn_message_set_content_type(r->msg, "application/msgpack");
            pn_message_set_creation_time(r->msg, (pn_timestamp_t)ewi_wall_ms());
            pn_data_t *ap = pn_message_properties(r->msg);
            pn_data_put_map(ap);
            pn_data_enter(ap);
            pn_data_put_string(ap, pn_bytes(10, "ew-attempt"));
            pn_data_put_string(ap, pn_bytes(1, "1"));
            pn_data_exit(ap);
        }
        pn_message_set_id(r->msg, id);
        pn_data_put_binary(pn_message_body(r->msg), pn_bytes(PAYLOAD, r->payload));
        pn_message_set_inferred(r->msg, true);
        if (r->sent == 0)
            r->t_first = bench_now_ns();
        uint64_t tag = (uint64_t)r->sent++;
        pn_delivery(r->snd, pn_dtag((const char *)&tag, sizeof tag));
        if (pn_message_send(r->msg, r->snd, &r->buf) < 0)
            die("pn_message_send failed");
    }
}

static void raw_receive(raw *r, pn_delivery_t *d)
{
    if (!pn_delivery_readable(d) || pn_delivery_partial(d))
        return;
    size_t len = pn_delivery_pending(d);
    if (len > r->in_cap && !(r->in = realloc(r->in, r->in_cap = len)))
        die("out of memory");
    pn_link_t *l = pn_delivery_link(d);
    pn_link_recv(l, r->in, len);
    pn_link_advance(l);
    if (pn_message_decode(r->rmsg, r->in, len) != 0)
        die("raw: a message proton cannot decode");
    pn_data_t *b = pn_message_body(r->rmsg);
    pn_data_rewind(b);
    if (!pn_data_next(b) || pn_data_type(b) != PN_BINARY)
        die("raw: a message without its binary body");
    pn_bytes_t v = pn_data_get_binary(b);
    int64_t sent;
    if (r->lat && v.size >= sizeof sent) {
        memcpy(&sent, v.start, sizeof sent);
        bench_lat_add(r->lat, sent);
    }
    pn_delivery_update(d, PN_ACCEPTED);
    pn_delivery_settle(d);
    if (++r->received == r->n) {
        r->t_last = bench_now_ns();
        r->done = true;
        pn_connection_close(pn_session_connection(pn_link_session(l)));
    }
    int credit = pn_link_credit(l);
    if (credit < CREDIT / 2)
        pn_link_flow(l, CREDIT - credit);
}

static void raw_event(raw *r, pn_event_t *e)
{
    switch (pn_event_type(e)) {
    case PN_LINK_FLOW:
        if (pn_event_link(e) == r->snd)
            raw_send_some(r);
        break;
    case PN_LINK_REMOTE_OPEN:
        if (pn_event_link(e) == r->rcv) {
            r->rcv_open = true;
            raw_send_some(r);
        }
        break;
    case PN_DELIVERY: {
        pn_delivery_t *d = pn_event_delivery(e);
        if (pn_delivery_link(d) == r->rcv) {
            raw_receive(r, d);
        } else if (pn_delivery_remote_state(d)) {
            if (pn_delivery_remote_state(d) != PN_ACCEPTED)
                r->failed = true;
            r->accepted++;
            pn_delivery_settle(d);
        }
        break;
    }
    case PN_TRANSPORT_CLOSED: {
        pn_condition_t *c = pn_transport_condition(pn_event_transport(e));
        if (!r->done && pn_condition_is_set(c)) {
            fprintf(stderr, "raw: %s: %s\n", pn_condition_get_name(c),
                    pn_condition_get_description(c));
            r->failed = true;
        }
        r->done = true;
        break;
    }
    case PN_PROACTOR_TIMEOUT:
        /* Send from the connection's own batch, which also writes. */
        pn_connection_wake(pn_session_connection(pn_link_session(r->snd)));
        break;
    case PN_CONNECTION_WAKE:
        raw_send_some(r);
        break;
    case PN_CONNECTION_REMOTE_CLOSE:
        pn_connection_close(pn_event_connection(e));
        break;
    default:
        break;
    }
}

static bool artemis(const amqp10_options *o)
{
    return o->dialect == AMQP10_DIALECT_ARTEMIS;
}

/* Artemis: multicast address `name` (capability topic), queue name.q on it
 * (FQQN source). */
static void set_topic(pn_terminus_t *t)
{
    pn_data_put_symbol(pn_terminus_capabilities(t), pn_bytes(5, "topic"));
}

/* What one run does. */
typedef struct job {
    const amqp10_options *o;
    const char *url;
    int n;
    bool aspyx_form;
    long rate; /* > 0: a latency run at this rate */
} job;

static void run_raw(void *arg, bench_result *res)
{
    bench_raw_sched();
    const job *j = arg;
    const amqp10_options *o = j->o;
    int n = j->n;
    char name[64], queue[128], target[256], source[256];
    /* Each run is a process of its own: its pid makes the names unique. */
    snprintf(name, sizeof name, "AmqpBenchRaw_%s_%d", run_id, (int)getpid());
    if (artemis(o)) {
        snprintf(target, sizeof target, "%s", name);
        snprintf(source, sizeof source, "%s::%s.q", name, name);
    } else {
        declare(o, name, queue, sizeof queue);
        snprintf(target, sizeof target, "/exchange/%s/%s", name, name);
        snprintf(source, sizeof source, "/amq/queue/%s", queue);
    }

    bench_lat lat;
    raw r = {.n = n, .msg = pn_message(), .rcv_open = !artemis(o), .rate = j->rate,
             .rmsg = pn_message(), .lat = j->rate ? &lat : NULL};
    if (j->rate)
        bench_lat_init(&lat, n);
    memset(r.payload, 'x', sizeof r.payload);
    pn_proactor_t *p = pn_proactor();
    r.proactor = p;
    pn_connection_t *c = pn_connection();
    pn_transport_t *tr = pn_transport();
    pn_sasl_allowed_mechs(pn_sasl(tr), o->user ? "PLAIN" : "ANONYMOUS");
    pn_sasl_set_allow_insecure_mechs(pn_sasl(tr), true);
    if (o->user)
        pn_connection_set_user(c, o->user);
    if (o->password)
        pn_connection_set_password(c, o->password);
    pn_connection_set_container(c, name);
    pn_connection_open(c);
    pn_session_t *s1 = pn_session(c), *s2 = pn_session(c);
    pn_session_open(s1);
    pn_session_open(s2);
    r.snd = pn_sender(s1, "raw-send");
    pn_terminus_set_address(pn_link_target(r.snd), target);
    if (artemis(o))
        set_topic(pn_link_target(r.snd));
    pn_link_set_snd_settle_mode(r.snd, PN_SND_UNSETTLED);
    pn_link_open(r.snd);
    r.rcv = pn_receiver(s2, "raw-recv");
    pn_terminus_set_address(pn_link_source(r.rcv), source);
    if (artemis(o))
        set_topic(pn_link_source(r.rcv));
    pn_link_open(r.rcv);
    pn_link_flow(r.rcv, CREDIT);
    char addr[PN_MAX_ADDR], port[16];
    snprintf(port, sizeof port, "%d", o->port);
    pn_proactor_addr(addr, sizeof addr, o->host, port);
    pn_proactor_connect2(p, c, tr, addr);
    while (!r.done) {
        pn_event_batch_t *b = pn_proactor_wait(p);
        pn_event_t *e;
        while ((e = pn_event_batch_next(b)))
            raw_event(&r, e);
        pn_proactor_done(p, b);
    }
    pn_proactor_free(p);
    pn_message_free(r.msg);
    if (r.rmsg)
        pn_message_free(r.rmsg);
    free(r.buf.start);
    free(r.in);
    if (!artemis(o))
        drop(o, name, "q");
    if (r.failed || r.received != n)
        die("raw run failed");
    res->rate = n * 1e9 / (double)(r.t_last - r.t_first ? r.t_last - r.t_first : 1);
    if (j->rate) {
        res->p50 = bench_lat_pct(&lat, 0.50);
        res->p99 = bench_lat_pct(&lat, 0.99);
        res->p999 = bench_lat_pct(&lat, 0.999);
    }
}

/* ---- eventwire ---------------------------------------------------------- */

typedef struct {
    int64_t id;
    char *text;
} bench_event;

EW_TYPE(bench_event, EW_FIELD(bench_event, id, EW_INT64),
        EW_FIELD(bench_event, text, EW_STRING));

static atomic_int ew_received;
static _Atomic int64_t ew_t_last;
static int ew_target;
static bench_lat *ew_lat;

static ew_err on_bench(ew_delivery *d, const void *event, void *user)
{
    (void)d;
    (void)user;
    if (ew_lat)
        bench_lat_add(ew_lat, ((const bench_event *)event)->id);
    if (atomic_fetch_add(&ew_received, 1) + 1 == ew_target)
        atomic_store(&ew_t_last, bench_now_ns());
    return EW_OK;
}

static void count_fail(void *user, ew_err err)
{
    if (err != EW_OK)
        atomic_fetch_add((atomic_int *)user, 1);
}

/* aspyx_form: the event as aspyx-event sends it (JSON, not durable). */
static void run_eventwire(void *arg, bench_result *res)
{
    const job *j = arg;
    const amqp10_options *o = j->o;
    const char *url = j->url;
    int n = j->n;
    bool aspyx_form = j->aspyx_form;
    bench_lat lat;
    ew_lat = j->rate ? &lat : NULL;
    if (j->rate)
        bench_lat_init(&lat, n);
    char name[64];
    snprintf(name, sizeof name, "AmqpBenchEw%s_%s_%d", aspyx_form ? "Json" : "", run_id,
             (int)getpid());
    ew_event_desc ev = {.type = &bench_event_type, .name = name, .durable = !aspyx_form,
                        .format = aspyx_form ? EW_FORMAT_JSON : EW_FORMAT_DEFAULT};
    ew_manager *m;
    ew_options opts = {.server_name = "bench"};
    if (ew_manager_new(&m, url, &opts) != EW_OK)
        die("ew_manager_new failed");
    /* A listener name of its own per run: queue names are unique per
     * broker on Artemis. */
    char lname[80];
    snprintf(lname, sizeof lname, "q_%s", name);
    ew_listener_desc ld = {.event = &ev, .name = lname, .concurrency = 1,
                           .prefetch = CREDIT};
    if (ew_listen(m, &ld, on_bench, NULL) != EW_OK || ew_manager_start(m) != EW_OK)
        die("eventwire start failed (is the broker running?)");
    atomic_store(&ew_received, 0);
    ew_target = n;
    /* ~100 bytes of msgpack: {"id": <int>, "text": <86 chars>} */
    char text[87];
    memset(text, 'x', sizeof text - 1);
    text[sizeof text - 1] = '\0';
    atomic_int failed = 0;
    int64_t t0 = bench_now_ns();
    for (int i = 0; i < n; i++) {
        bench_event e = {.id = i, .text = text};
        if (j->rate) {
            bench_pace(t0, i, j->rate);
            e.id = bench_now_ns();
        }
        if (ew_send_async(m, &ev, NULL, &e, count_fail, &failed) != EW_OK)
            die("ew_send_async failed");
    }
    if (ew_flush(m, 300000) != EW_OK || failed)
        die("eventwire sends failed");
    while (atomic_load(&ew_received) < n)
        ewi_sleep_ms(1);
    int64_t t1 = atomic_load(&ew_t_last);
    ew_manager_free(m);
    if (!artemis(o))
        drop(o, name, lname);
    res->rate = n * 1e9 / (double)(t1 - t0 ? t1 - t0 : 1);
    if (j->rate) {
        res->p50 = bench_lat_pct(&lat, 0.50);
        res->p99 = bench_lat_pct(&lat, 0.99);
        res->p999 = bench_lat_pct(&lat, 0.999);
    }
}

/* ---- python3-qpid-proton ------------------------------------------------- */

static void run_python(void *arg, bench_result *res)
{
    const job *j = arg;
    const amqp10_options *o = j->o;
    int n = j->n;
    char name[64], queue[128], cmd[1024], target[256], source[256];
    snprintf(name, sizeof name, "AmqpBenchPy_%s_%d", run_id, (int)getpid());
    if (artemis(o)) {
        snprintf(target, sizeof target, "%s", name);
        snprintf(source, sizeof source, "%s::%s.q", name, name);
    } else {
        declare(o, name, queue, sizeof queue);
        snprintf(target, sizeof target, "/exchange/%s/%s", name, name);
        snprintf(source, sizeof source, "/amq/queue/%s", queue);
    }
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 %s 'amqp://%s%s%s%s%s:%d' '%s' '%s' %d %d",
             EW_BENCH_PY, o->user ? o->user : "", o->password ? ":" : "",
             o->password ? o->password : "", o->user ? "@" : "", o->host, o->port, target,
             source, n, CREDIT);
    FILE *f = popen(cmd, "r");
    double rate = 0;
    if (!f || fscanf(f, "%lf", &rate) != 1)
        rate = 0;
    if (f && pclose(f) != 0)
        rate = 0;
    if (!artemis(o))
        drop(o, name, "q");
    res->rate = rate;
}

/* ---- aspyx-event (Artemis only) ------------------------------------------ */

static void run_aspyx(void *arg, bench_result *res)
{
    const job *j = arg;
    const amqp10_options *o = j->o;
    int n = j->n;
    char cmd[2048];
    /* The pinned virtual environment, made once (idempotent). */
    snprintf(cmd, sizeof cmd, "'%s/scripts/python-env.sh' '%s' 0.9.3 >&2", EW_BENCH_ROOT,
             EW_BENCH_PYENV);
    if (system(cmd) != 0)
        die("scripts/python-env.sh failed");
    snprintf(cmd, sizeof cmd, "'%s/bin/python' '%s' '%s' %d '%s' '%s' AspyxBench_%s %d",
             EW_BENCH_PYENV, EW_BENCH_ASPYX, o->host, o->port, o->user ? o->user : "",
             o->password ? o->password : "", run_id, n);
    FILE *f = popen(cmd, "r");
    double rate = 0;
    if (!f || fscanf(f, "%lf", &rate) != 1)
        rate = 0;
    if (f && pclose(f) != 0)
        rate = 0;
    res->rate = rate;
}

/* ---- main --------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f, "usage: bench_amqp [options] [URL]\n"
               "  -n N           events per throughput run (default 100000)\n"
               "  -r N           rounds, 1..15 (default 3); raw and eventwire alternate\n"
               "  -l N           events of the latency run, 0 for none (default 5000)\n"
               "  -R N           send rate of the latency run, events/s (default 1000)\n"
               "  --only raw|ew  raw proton-c or eventwire only (no Python runs)\n"
               "  --no-python    leave out python3-qpid-proton\n"
               "  --no-aspyx     leave out aspyx-event (Artemis only)\n"
               "  --raw-headers  raw proton-c's messages also carry eventwire's\n"
               "                 properties (string message-id, subject, content-type,\n"
               "                 creation-time) and ew-attempt, so that the broker\n"
               "                 handles the same sections on both sides\n"
               "  --raw-batch    raw proton-c runs under SCHED_BATCH, as eventwire's\n"
               "                 own threads do by default (EW_THREADS)\n"
               "  -h, --help     this text\n"
               "URL: $EW_BENCH_AMQP_URL, else amqp://guest:guest@127.0.0.1:5672?dialect=rabbitmq;\n"
               "     Artemis: amqp://artemis:artemis@127.0.0.1:5673?dialect=artemis\n");
}

int main(int argc, char **argv)
{
    long n = 100000, rounds = 3, lat_n = 5000, lat_rate = 1000;
    bool python = true, aspyx = true, run_raw_side = true, run_ew_side = true;
    const char *url = getenv("EW_BENCH_AMQP_URL");
    if (!url || !*url)
        url = "amqp://guest:guest@127.0.0.1:5672?dialect=rabbitmq";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool ok = true;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "-n") == 0) {
            ok = bench_count(v, 100000000, &n), i++;
        } else if (strcmp(a, "-r") == 0) {
            ok = bench_count(v, 15, &rounds), i++;
        } else if (strcmp(a, "-l") == 0) {
            ok = v && (strcmp(v, "0") == 0 ? (lat_n = 0, true) : bench_count(v, 10000000, &lat_n)),
            i++;
        } else if (strcmp(a, "-R") == 0) {
            ok = bench_count(v, 10000000, &lat_rate), i++;
        } else if (strcmp(a, "--only") == 0) {
            ok = v && (strcmp(v, "raw") == 0 || strcmp(v, "ew") == 0), i++;
            if (ok) {
                run_raw_side = strcmp(v, "raw") == 0;
                run_ew_side = !run_raw_side;
                python = aspyx = false;
            }
        } else if (strcmp(a, "--raw-headers") == 0) {
            raw_headers = true;
        } else if (strcmp(a, "--raw-batch") == 0) {
            bench_raw_batch = true;
        } else if (strcmp(a, "--no-python") == 0) {
            python = false;
        } else if (strcmp(a, "--no-aspyx") == 0) {
            aspyx = false;
        } else if (a[0] != '-' && strstr(a, "://")) {
            url = a;
        } else {
            ok = false;
        }
        if (!ok) {
            fprintf(stderr, "bench_amqp: bad argument '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    snprintf(run_id, sizeof run_id, "%x", (unsigned)getpid());
    ewi_url u;
    amqp10_options o;
    char err[256];
    if (ewi_url_parse(url, &u, err, sizeof err) != EW_OK ||
        amqp10_options_parse(NULL, &u, &o, err, sizeof err) != EW_OK)
        die(err);
    ewi_url_free(&u);
    /* aspyx-event's addresses do not meet on RabbitMQ's plugin (see
     * tests/amqp/aspyx_wire_standin.py): it runs on Artemis only. */
    aspyx = aspyx && artemis(&o);
    const char *broker = artemis(&o) ? "artemis" : "rabbitmq";

    double raw_r[15] = {0}, ew_r[15] = {0}, raw_c[15] = {0}, ew_c[15] = {0}, raw_m[15] = {0},
           ew_m[15] = {0};
    printf("bench_amqp: %ld durable events of ~%d bytes, %s AMQP 1.0 at %s:%d, "
           "receiver credit %d, %ld round(s)\n", n, PAYLOAD,
           artemis(&o) ? "Artemis" : "RabbitMQ", o.host, o.port, CREDIT, rounds);
    job jb = {.o = &o, .url = url, .n = (int)n};
    for (int i = 0; i < rounds; i++) {
        if (run_raw_side) {
            bench_result x = bench_in_child(run_raw, &jb);
            raw_r[i] = x.rate;
            raw_c[i] = x.cpu_s * 1e6 / (double)n;
            raw_m[i] = (double)x.rss_kb;
            bench_emit_rate("amqp", broker, bench_raw_impl(raw_headers), "", i + 1, n, &x);
        }
        if (run_ew_side) {
            bench_result x = bench_in_child(run_eventwire, &jb);
            ew_r[i] = x.rate;
            ew_c[i] = x.cpu_s * 1e6 / (double)n;
            ew_m[i] = (double)x.rss_kb;
            bench_emit_rate("amqp", broker, "eventwire", "", i + 1, n, &x);
        }
        printf("  round %d: raw proton-c %8.0f msgs/s (%.1f us CPU/msg)   eventwire "
               "%8.0f msgs/s (%.1f us CPU/msg)\n",
               i + 1, raw_r[i], raw_c[i], ew_r[i], ew_c[i]);
        fflush(stdout);
    }
    int k = (int)rounds;
    double raw_m_ = bench_median(raw_r, k), ew_m_ = bench_median(ew_r, k);
    double py = 0, ewj = 0, asp = 0;
    if (python) {
        bench_result x = bench_in_child(run_python, &jb);
        py = x.rate;
        if (py > 0)
            bench_emit_rate("amqp", broker, "python-qpid-proton", "", 1, n, &x);
    }
    if (aspyx) {
        job jj = jb;
        jj.aspyx_form = true;
        bench_result x = bench_in_child(run_eventwire, &jj);
        ewj = x.rate;
        bench_emit_rate("amqp", broker, "eventwire-json", "", 1, n, &x);
        printf("  eventwire in aspyx's form (JSON, not durable): %8.0f msgs/s (%.1f us CPU/msg)\n",
               ewj, x.cpu_s * 1e6 / (double)n);
        x = bench_in_child(run_aspyx, &jb);
        asp = x.rate;
        if (asp > 0)
            bench_emit_rate("amqp", broker, "aspyx-event", "", 1, n, &x);
    }
    printf("raw proton-c      %8.0f msgs/s (median), %.1f us CPU/msg, peak RSS %.0f KiB\n", raw_m_,
           bench_median(raw_c, k), bench_median(raw_m, k));
    printf("eventwire         %8.0f msgs/s (median), %.1f us CPU/msg, peak RSS %.0f KiB\n", ew_m_,
           bench_median(ew_c, k), bench_median(ew_m, k));
    if (python)
        printf("python3-proton    %8.0f msgs/s%s\n", py, py > 0 ? "" : " (failed)");
    if (aspyx) {
        printf("eventwire (JSON, not durable) %8.0f msgs/s\n", ewj);
        printf("aspyx-event 0.9.3 %8.0f msgs/s (JSON, not durable)%s\n", asp,
               asp > 0 ? "" : " (failed)");
    }
    if (raw_m_ > 0)
        printf("eventwire / raw proton-c   = %.2f\n", ew_m_ / raw_m_);
    if (python && py > 0)
        printf("eventwire / python3-proton = %.2f\n", ew_m_ / py);
    if (aspyx && asp > 0)
        printf("eventwire / aspyx-event    = %.2f (both JSON, not durable)\n", ewj / asp);
    if (lat_n > 0) {
        job jl = {.o = &o, .url = url, .n = (int)lat_n, .rate = lat_rate};
        bench_result lr, le;
        bench_latency_rounds("amqp", broker, "", bench_raw_impl(raw_headers), lat_n,
                             lat_rate, (int)rounds, run_raw_side ? run_raw : NULL,
                             run_ew_side ? run_eventwire : NULL, &jl, &lr, &le);
        printf("latency, %ld events at %ld/s, medians of %d rounds, p50 / p99 / p99.9: "
               "raw %.0f / %.0f / %.0f us, eventwire %.0f / %.0f / %.0f us\n",
               lat_n, lat_rate, (int)rounds, lr.p50, lr.p99, lr.p999, le.p50, le.p99, le.p999);
    }
    amqp10_options_free(&o);
    return 0;
}
