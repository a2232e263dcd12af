/* eventwire serve: an HTTP gateway to one broker URL. POST publishes,
 * GET streams Server-Sent Events, /metrics, /healthz and /readyz serve
 * probes, / a page that watches events live. SIGINT or SIGTERM: stop
 * accepting, end every stream, stop the manager, exit 0. */
#include "gateway.h"

#include <arpa/inet.h>
#include <getopt.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void help(FILE *f)
{
    fprintf(f,
            "Usage: eventwire serve URL --http HOST:PORT [options]\n"
            "\n"
            "An HTTP gateway to the broker at URL:\n"
            "  POST /events/NAME   publish the JSON object in the body (headers\n"
            "                      X-Ew-Header-K: V become user headers); 202 with\n"
            "                      {\"id\":...}; 400 bad JSON, 413 too big, 503 broker\n"
            "                      unreachable, 504 sent but not confirmed\n"
            "  GET /events/NAME    text/event-stream of NAME (event:, id: message id,\n"
            "                      data: JSON body); resumes after Last-Event-ID from\n"
            "                      a buffer of the last --buffer events\n"
            "  GET /metrics        Prometheus text\n"
            "  GET /healthz        200 while the gateway runs\n"
            "  GET /readyz         200 when the manager consumes, else 503\n"
            "  GET /               a page that watches an event (/?event=NAME)\n"
            "It writes \"eventwire serve: listening on http://HOST:PORT/\" on stderr\n"
            "once it serves (PORT 0 takes a free port). SIGINT or SIGTERM ends every\n"
            "stream, stops the manager and exits 0.\n"
            "\n"
            "  --http HOST:PORT    where to listen (required); use 127.0.0.1\n"
            "  --buffer N          events kept per event name for resumes (default 1000)\n"
            "  --retry-ms MS       the reconnect delay sent to clients (default 2000)\n"
            "  --max-stream-s S    end each stream after S seconds; clients reconnect\n"
            "                      and resume (default 0: never)\n"
            "  --body-limit B      largest POST body in bytes (default 65536)\n"
            "  --keepalive-s S     a comment line on idle streams every S s (default 15)\n"
            "  --max-events N      event names watched at most (default 64)\n"
            "  --max-streams N     streams open at most (default 256)\n"
            "  --durable           events are durable (as their other senders and\n"
            "                      listeners declare them)\n"
            "  --format F          published bodies: msgpack (default) or json\n"
            CLI_COMMON_HELP
            "\n"
            "Example:\n"
            "  eventwire serve rabbitmq://guest:guest@127.0.0.1/ --http 127.0.0.1:8080\n"
            "  curl -N http://127.0.0.1:8080/events/HelloEvent\n"
            "  curl -d '{\"world\":\"http\"}' http://127.0.0.1:8080/events/HelloEvent\n"
            "\n" CLI_EXIT_CODES);
}

/* Binds host:port; -1 with the error printed and its exit code in *code. */
static int bind_http(const char *spec, char *shown, size_t shownlen, int *code)
{
    *code = CLI_USAGE;
    const char *colon = strrchr(spec, ':');
    if (!colon || colon == spec || !colon[1])
        return cli_fail("serve", CLI_USAGE, "--http '%s': expected HOST:PORT", spec), -1;
    char host[256];
    snprintf(host, sizeof host, "%.*s", (int)(colon - spec), spec);
    if (host[0] == '[' && host[strlen(host) - 1] == ']') {
        memmove(host, host + 1, strlen(host));
        host[strlen(host) - 1] = '\0';
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV}, *ai;
    int gr = getaddrinfo(host, colon + 1, &hints, &ai);
    if (gr != 0)
        return cli_fail("serve", CLI_USAGE, "--http '%s': %s", spec, gai_strerror(gr)), -1;
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 64) != 0) {
        *code = cli_fail("serve", CLI_ERROR, "--http %s: cannot listen: %m", spec);
        if (fd >= 0)
            close(fd);
        freeaddrinfo(ai);
        return -1;
    }
    freeaddrinfo(ai);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char h[INET6_ADDRSTRLEN] = "?", p[16] = "?";
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
        getnameinfo((struct sockaddr *)&ss, sl, h, sizeof h, p, sizeof p,
                    NI_NUMERICHOST | NI_NUMERICSERV);
    snprintf(shown, shownlen, strchr(h, ':') ? "[%s]:%s" : "%s:%s", h, p);
    return fd;
}

static int setup(ew_manager *m, void *user)
{
    (void)user;
    ew_err rc = gw_pipeline_install(m);
    return rc == EW_OK ? CLI_OK : cli_fail_ew("serve", rc, "pipeline");
}

int cli_serve(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"http", required_argument, NULL, 'H'},
        {"buffer", required_argument, NULL, 'b'},
        {"retry-ms", required_argument, NULL, 'r'},
        {"max-stream-s", required_argument, NULL, 's'},
        {"body-limit", required_argument, NULL, 'l'},
        {"keepalive-s", required_argument, NULL, 'k'},
        {"max-events", required_argument, NULL, 'e'},
        {"max-streams", required_argument, NULL, 'S'},
        {"durable", no_argument, NULL, 'd'},
        {"format", required_argument, NULL, 'f'},
        {"help", no_argument, NULL, 'h'},
        CLI_COMMON_LONGOPTS,
        {NULL, 0, NULL, 0}};
    static gateway g; /* the one gateway of this process */
    memset(&g, 0, sizeof g);
    cli_common_init(&g.c, "serve");
    g.o = (gw_options){.buffer = 1000, .retry_ms = 2000, .body_limit = 65536,
                       .keepalive_s = 15, .max_events = 64, .max_streams = 256,
                       .format = EW_FORMAT_MSGPACK};
    int opt;
    long *num = NULL;
    optind = 1;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":hv", longopts, NULL)) != -1) {
        int r = cli_common_opt(&g.c, opt, optarg);
        if (r < 0)
            return CLI_USAGE;
        if (r > 0)
            continue;
        long min = 1, max = 1000000000L;
        const char *oname = NULL;
        switch (opt) {
        case 'H': g.o.http = optarg; continue;
        case 'd': g.o.durable = true; continue;
        case 'f':
            if ((g.o.format = cli_format(g.c.cmd, optarg)) == EW_FORMAT_DEFAULT)
                return CLI_USAGE;
            continue;
        case 'h': help(stdout); return CLI_OK;
        case 'b': num = &g.o.buffer, oname = "--buffer", max = 1000000; break;
        case 'r': num = &g.o.retry_ms, oname = "--retry-ms", max = 3600000; break;
        case 's': num = &g.o.max_stream_s, oname = "--max-stream-s", min = 0; break;
        case 'l': num = &g.o.body_limit, oname = "--body-limit", max = 64L << 20; break;
        case 'k': num = &g.o.keepalive_s, oname = "--keepalive-s", max = 3600; break;
        case 'e': num = &g.o.max_events, oname = "--max-events", max = 100000; break;
        case 'S': num = &g.o.max_streams, oname = "--max-streams", max = 100000; break;
        default: return cli_bad_option(g.c.cmd, argv, opt);
        }
        if ((*num = cli_number(g.c.cmd, oname, optarg, min, max)) < 0)
            return CLI_USAGE;
    }
    if (argc - optind != 1)
        return cli_fail(g.c.cmd, CLI_USAGE, "expected URL (see eventwire serve --help)");
    if (!g.o.http)
        return cli_fail(g.c.cmd, CLI_USAGE, "--http HOST:PORT is required "
                        "(see eventwire serve --help)");

    /* The signals come to sigwait below only: every thread started from
     * here on (the library's, libmicrohttpd's) inherits this mask. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    char where[300];
    int code;
    int fd = bind_http(g.o.http, where, sizeof where, &code);
    if (fd < 0)
        return code;
    pthread_mutex_init(&g.topics_mu, NULL);
    pthread_mutex_init(&g.subscribe_mu, NULL);
    code = cli_manager(&g.c, argv[optind], &g.m, setup, NULL);
    if (code != CLI_OK) {
        close(fd);
        return code;
    }
    atomic_store(&g.c.report_errors, true);
    if (gw_http_start(&g, fd) != 0) {
        close(fd);
        code = cli_fail(g.c.cmd, CLI_ERROR, "the HTTP server did not start on %s", where);
        goto stop;
    }
    fprintf(stderr, "eventwire serve: listening on http://%s/\n", where);
    fflush(stderr);
    int sig = 0;
    sigwait(&sigs, &sig);
    fprintf(stderr, "eventwire serve: %s: stopping\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    gw_http_stop(&g);
stop:;
    ew_err rc = ew_manager_stop(g.m, 10000);
    ew_manager_free(g.m);
    gw_topics_free(&g);
    if (code == CLI_OK && rc != EW_OK && rc != EW_ETIMEDOUT)
        code = cli_fail_ew(g.c.cmd, rc, "stop");
    if (code == CLI_OK) {
        fprintf(stderr, "eventwire serve: stopped\n");
        fflush(stderr);
    }
    return code;
}
