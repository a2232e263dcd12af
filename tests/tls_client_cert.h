/* A client certificate for the TLS tests: an EC key and a certificate for
 * it, signed by the test brokers' CA when its key is readable (so that a
 * listener that verifies client certificates against that CA accepts it),
 * else self-signed; and a second key that belongs to no certificate. Made
 * with the openssl command in a fresh temporary directory. Header-only. */
#ifndef EW_TLS_CLIENT_CERT_H
#define EW_TLS_CLIENT_CERT_H

#include "support.h"

#include <errno.h>

typedef struct client_cert {
    char dir[256];
    char ca_dir[256]; /* the brokers' CA: $EW_BROKER_STATE/tls */
    char cert[320], key[320], other_key[320];
} client_cert;

static SUPPORT_UNUSED void client_cert_make(client_cert *cc)
{
    const char *state = getenv("EW_BROKER_STATE");
    snprintf(cc->ca_dir, sizeof cc->ca_dir, "%s/tls",
             state && *state ? state : "/tmp/eventwire-brokers");
    snprintf(cc->dir, sizeof cc->dir, "/tmp/eventwire-client-cert-XXXXXX");
    if (!mkdtemp(cc->dir))
        fail_msg("mkdtemp %s: %s", cc->dir, strerror(errno));
    snprintf(cc->cert, sizeof cc->cert, "%s/client.pem", cc->dir);
    snprintf(cc->key, sizeof cc->key, "%s/client.key", cc->dir);
    snprintf(cc->other_key, sizeof cc->other_key, "%s/other.key", cc->dir);
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "set -e; d='%s'; ca='%s'\n"
             "openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
             "  -keyout \"$d/client.key\" -subj /CN=eventwire-test-client "
             "  -out \"$d/client.csr\" 2>\"$d/log\"\n"
             "if [ -r \"$ca/ca.key\" ]; then\n"
             "  openssl x509 -req -in \"$d/client.csr\" -CA \"$ca/ca.pem\" -CAkey \"$ca/ca.key\" "
             "    -set_serial %d -days 2 -out \"$d/client.pem\" 2>>\"$d/log\"\n"
             "else\n"
             "  openssl x509 -req -in \"$d/client.csr\" -signkey \"$d/client.key\" -days 2 "
             "    -out \"$d/client.pem\" 2>>\"$d/log\"\n"
             "fi\n"
             "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 "
             "  -out \"$d/other.key\" 2>>\"$d/log\"\n",
             cc->dir, cc->ca_dir, (int)getpid());
    if (system(cmd) != 0)
        fail_msg("making a client certificate in %s failed (openssl needed; see %s/log)",
                 cc->dir, cc->dir);
}

static SUPPORT_UNUSED void client_cert_free(client_cert *cc)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", cc->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", cc->dir);
}

/* Log lines of a manager, kept for client_cert_refused. */
typedef struct cc_log {
    char text[8192];
    size_t len;
} cc_log;

static SUPPORT_UNUSED void cc_keep(void *user, ew_log_level level, const char *msg)
{
    cc_log *l = user;
    if (level > EW_LOG_WARN)
        return;
    int n = snprintf(l->text + l->len, sizeof l->text - l->len, "%s\n", msg);
    if (n > 0 && (size_t)n < sizeof l->text - l->len)
        l->len += (size_t)n;
}

/* ew_manager_new(url) fails with EW_EINVAL and logs a line saying says. */
static SUPPORT_UNUSED void client_cert_refused(const char *url, const char *says)
{
    cc_log log = {.len = 0};
    ew_options o = {.server_name = "ccbad", .log = cc_keep, .log_user = &log,
                    .log_level = EW_LOG_WARN};
    ew_manager *m = NULL;
    ew_err rc = ew_manager_new(&m, url, &o);
    if (rc != EW_EINVAL || !strstr(log.text, says)) {
        ew_manager_free(m);
        fail_msg("ew_manager_new(%s): %s, log:\n%s\nwant EW_EINVAL saying '%s'", url,
                 ew_strerror(rc), log.text, says);
    }
}

#endif
