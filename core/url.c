/* Transport URLs:
 * scheme://[user[:password]@]host[:port][,host[:port]...][/path][?k=v&...]. */
#include "ewi.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* A decoded copy of [s, s+n); NULL on a bad escape, an escaped NUL or ENOMEM. */
static char *decode(const char *s, size_t n, bool plus_is_space)
{
    char *out = malloc(n + 1), *o = out;
    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%') {
            int hi = i + 1 < n ? hexval(s[i + 1]) : -1;
            int lo = i + 2 < n ? hexval(s[i + 2]) : -1;
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
                free(out);
                return NULL;
            }
            *o++ = (char)(hi * 16 + lo);
            i += 2;
        } else if (s[i] == '+' && plus_is_space) {
            *o++ = ' ';
        } else {
            *o++ = s[i];
        }
    }
    *o = '\0';
    return out;
}

void ewi_url_free(ewi_url *u)
{
    if (!u)
        return;
    free(u->scheme);
    free(u->user);
    if (u->password) {
        /* Credentials should not linger in freed memory. */
        volatile char *p = u->password;
        while (*p)
            *p++ = 0;
        free(u->password);
    }
    free(u->host);
    for (size_t i = 0; i < u->nhosts; i++)
        free(u->hosts[i].host);
    free(u->hosts);
    free(u->path);
    for (size_t i = 0; i < u->nparams; i++) {
        free(u->params[i].key);
        free(u->params[i].value);
    }
    free(u->params);
    memset(u, 0, sizeof *u);
}

#define FAIL(...)                                   \
    do {                                            \
        snprintf(err, errlen, __VA_ARGS__);         \
        ewi_url_free(out);                          \
        return EW_EINVAL;                           \
    } while (0)

static ew_err parse_query(const char *q, ewi_url *out, char *err, size_t errlen)
{
    while (*q) {
        const char *end = strchr(q, '&');
        size_t n = end ? (size_t)(end - q) : strlen(q);
        if (n) {
            const char *eq = memchr(q, '=', n);
            size_t kn = eq ? (size_t)(eq - q) : n;
            if (kn == 0)
                FAIL("URL query has a parameter without a name");
            ewi_url_kv *np = realloc(out->params, (out->nparams + 1) * sizeof *np);
            if (!np)
                FAIL("out of memory");
            out->params = np;
            ewi_url_kv *kv = &np[out->nparams];
            kv->key = decode(q, kn, true);
            kv->value = eq ? decode(eq + 1, n - kn - 1, true) : strdup("");
            out->nparams++;
            if (!kv->key || !kv->value)
                FAIL("URL query parameter %zu has a bad %%-escape", out->nparams);
        }
        q += n + (end ? 1 : 0);
    }
    return EW_OK;
}

/* One host[:port] entry of the authority: [hostp, hostp+hlen). The k-th of
 * n (named in errors when n > 1). */
static ew_err parse_host(const char *hostp, size_t hlen, ewi_url_host *h, size_t k, size_t n,
                         char *err, size_t errlen)
{
    char which[64] = "";
    if (n > 1)
        snprintf(which, sizeof which, " (host %zu of %zu)", k, n);
    const char *portp = NULL, *end = hostp + hlen;
    if (hlen && hostp[0] == '[') {
        const char *close = memchr(hostp, ']', hlen);
        if (!close) {
            snprintf(err, errlen, "URL has an unclosed IPv6 literal%s", which);
            return EW_EINVAL;
        }
        h->host = strndup(hostp + 1, (size_t)(close - hostp - 1));
        if (close + 1 < end) {
            if (close[1] != ':') {
                snprintf(err, errlen, "URL has junk after the IPv6 literal%s", which);
                return EW_EINVAL;
            }
            portp = close + 2;
        }
    } else {
        const char *colon = memchr(hostp, ':', hlen);
        h->host = strndup(hostp, colon ? (size_t)(colon - hostp) : hlen);
        if (colon)
            portp = colon + 1;
    }
    if (!h->host) {
        snprintf(err, errlen, "out of memory");
        return EW_ENOMEM;
    }
    if (n > 1 && !h->host[0]) {
        snprintf(err, errlen, "URL host list has an entry without a host%s", which);
        return EW_EINVAL;
    }
    for (const char *c = h->host; *c; c++)
        if (!isalnum((unsigned char)*c) && *c != '-' && *c != '.' && *c != '_' && *c != ':') {
            snprintf(err, errlen, "URL host has an invalid character%s", which);
            return EW_EINVAL;
        }
    if (portp) {
        size_t pn = (size_t)(end - portp);
        if (pn == 0 || pn > 5) {
            snprintf(err, errlen, "URL port is empty or too long%s", which);
            return EW_EINVAL;
        }
        long port = 0;
        for (size_t i = 0; i < pn; i++) {
            if (!isdigit((unsigned char)portp[i])) {
                snprintf(err, errlen, "URL port is not a number%s", which);
                return EW_EINVAL;
            }
            port = port * 10 + (portp[i] - '0');
        }
        if (port < 1 || port > 65535) {
            snprintf(err, errlen, "URL port %ld is out of range%s", port, which);
            return EW_EINVAL;
        }
        h->port = (int)port;
    }
    return EW_OK;
}

ew_err ewi_url_parse(const char *text, ewi_url *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (!text)
        FAIL("URL is NULL");
    for (const char *c = text; *c; c++)
        if ((unsigned char)*c <= 0x20 || *c == 0x7f)
            FAIL("URL contains a space or control character");
    const char *sep = strstr(text, "://");
    if (!sep || sep == text)
        FAIL("URL has no scheme (expected scheme://...)");
    for (const char *c = text; c < sep; c++)
        if (!isalnum((unsigned char)*c) && *c != '+' && *c != '-' && *c != '.')
            FAIL("URL scheme has an invalid character");
    out->scheme = strndup(text, (size_t)(sep - text));
    if (!out->scheme)
        FAIL("out of memory");
    for (char *c = out->scheme; *c; c++)
        *c = (char)tolower((unsigned char)*c);

    const char *auth = sep + 3;
    size_t alen = strcspn(auth, "/?#");
    if (auth[alen] == '#')
        FAIL("URL fragments are not supported");
    const char *at = NULL;
    for (size_t i = 0; i < alen; i++)
        if (auth[i] == '@')
            at = auth + i; /* the last '@': passwords may hold escaped ones */
    const char *hostp = auth;
    if (at) {
        const char *colon = memchr(auth, ':', (size_t)(at - auth));
        size_t un = colon ? (size_t)(colon - auth) : (size_t)(at - auth);
        out->user = decode(auth, un, false);
        if (!out->user)
            FAIL("URL user has a bad %%-escape");
        if (colon) {
            out->password = decode(colon + 1, (size_t)(at - colon - 1), false);
            if (!out->password)
                FAIL("URL password has a bad %%-escape");
        }
        hostp = at + 1;
    }
    /* host[:port][,host[:port]...]: one entry, or several with none empty. */
    const char *hend = auth + alen;
    size_t nentries = 1;
    for (const char *c = hostp; c < hend; c++)
        nentries += *c == ',';
    out->hosts = calloc(nentries, sizeof *out->hosts);
    if (!out->hosts)
        FAIL("out of memory");
    for (const char *e = hostp; out->nhosts < nentries;) {
        const char *comma = memchr(e, ',', (size_t)(hend - e));
        size_t n = (size_t)((comma ? comma : hend) - e);
        size_t k = out->nhosts + 1;
        if (n == 0 && nentries > 1)
            FAIL("URL host list has an empty entry (host %zu of %zu)", k, nentries);
        ewi_url_host *h = &out->hosts[out->nhosts++];
        if (parse_host(e, n, h, k, nentries, err, errlen) != EW_OK) {
            ewi_url_free(out);
            return EW_EINVAL;
        }
        e += n + 1;
    }
    out->host = strdup(out->hosts[0].host);
    if (!out->host)
        FAIL("out of memory");
    out->port = out->hosts[0].port;

    const char *rest = auth + alen;
    if (*rest == '/') {
        size_t pn = strcspn(rest + 1, "?");
        out->path = decode(rest + 1, pn, false);
        if (!out->path)
            FAIL("URL path has a bad %%-escape");
        rest += 1 + pn;
    }
    if (*rest == '?')
        return parse_query(rest + 1, out, err, errlen);
    return EW_OK;
}

const char *ewi_url_param(const ewi_url *u, const char *key)
{
    for (size_t i = 0; i < u->nparams; i++)
        if (strcmp(u->params[i].key, key) == 0)
            return u->params[i].value;
    return NULL;
}

ew_err ewi_url_param_int(const ewi_url *u, const char *key, long dflt,
                         long min, long max, long *out)
{
    const char *v = ewi_url_param(u, key);
    if (!v) {
        *out = dflt;
        return EW_OK;
    }
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno || end == v || *end || n < min || n > max)
        return EW_EINVAL;
    *out = n;
    return EW_OK;
}

char *ewi_url_redacted(const char *text)
{
    if (!text)
        return strdup("(null)");
    const char *sep = strstr(text, "://");
    if (!sep)
        return strdup(text);
    /* The credentials end at the last '@' before the query: a password
     * with an unescaped '/', '?' or '#' must be hidden too, even though such
     * a URL does not parse. */
    const char *auth = sep + 3;
    size_t alen = strcspn(auth, "?");
    const char *at = NULL;
    for (size_t i = 0; i < alen; i++)
        if (auth[i] == '@')
            at = auth + i;
    const char *colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
    if (!colon)
        return strdup(text);
    size_t head = (size_t)(colon + 1 - text);
    size_t tail = strlen(at);
    char *r = malloc(head + 3 + tail + 1);
    if (!r)
        return NULL;
    memcpy(r, text, head);
    memcpy(r + head, "***", 3);
    memcpy(r + head + 3, at, tail + 1);
    return r;
}
