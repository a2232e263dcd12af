/* STOMP 1.2 frame parser and serializer; see frame.h for the grammar. */
#include "transports/stomp/frame.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- commands ------------------------------------------------------------ */

static const char *const cmd_names[] = {
    [EWI_STOMP_NONE] = "?",
    [EWI_STOMP_CONNECT] = "CONNECT",
    [EWI_STOMP_STOMP] = "STOMP",
    [EWI_STOMP_SEND] = "SEND",
    [EWI_STOMP_SUBSCRIBE] = "SUBSCRIBE",
    [EWI_STOMP_UNSUBSCRIBE] = "UNSUBSCRIBE",
    [EWI_STOMP_ACK] = "ACK",
    [EWI_STOMP_NACK] = "NACK",
    [EWI_STOMP_BEGIN] = "BEGIN",
    [EWI_STOMP_COMMIT] = "COMMIT",
    [EWI_STOMP_ABORT] = "ABORT",
    [EWI_STOMP_DISCONNECT] = "DISCONNECT",
    [EWI_STOMP_CONNECTED] = "CONNECTED",
    [EWI_STOMP_MESSAGE] = "MESSAGE",
    [EWI_STOMP_RECEIPT] = "RECEIPT",
    [EWI_STOMP_ERROR] = "ERROR",
};
#define NCMDS (sizeof cmd_names / sizeof cmd_names[0])
/* Longer than every command name: lines past it cannot be a command. */
#define MAX_CMD_LEN 16

const char *ewi_stomp_cmd_name(ewi_stomp_cmd cmd)
{
    return (unsigned)cmd < NCMDS ? cmd_names[cmd] : "?";
}

bool ewi_stomp_cmd_raw_headers(ewi_stomp_cmd cmd)
{
    return cmd == EWI_STOMP_CONNECT || cmd == EWI_STOMP_STOMP ||
           cmd == EWI_STOMP_CONNECTED;
}

static ewi_stomp_cmd cmd_lookup(const uint8_t *s, size_t n)
{
    for (size_t i = 1; i < NCMDS; i++)
        if (strlen(cmd_names[i]) == n && memcmp(cmd_names[i], s, n) == 0)
            return (ewi_stomp_cmd)i;
    return EWI_STOMP_NONE;
}

/* ---- frames -------------------------------------------------------------- */

void ewi_stomp_frame_free(ewi_stomp_frame *f)
{
    if (!f)
        return;
    if (f->headers != (ewi_stomp_header *)(f + 1))
        free(f->headers);
    free(f->strings_);
    free(f->body);
    free(f);
}

const char *ewi_stomp_frame_get(const ewi_stomp_frame *f, const char *key)
{
    size_t klen = strlen(key);
    for (size_t i = 0; i < f->nheaders; i++)
        if (f->headers[i].klen == klen &&
            memcmp(f->headers[i].key, key, klen) == 0)
            return f->headers[i].value;
    return NULL;
}

uint8_t *ewi_stomp_frame_take_body(ewi_stomp_frame *f, size_t *len)
{
    uint8_t *empty = malloc(1);
    if (!empty)
        return NULL;
    empty[0] = 0;
    uint8_t *b = f->body;
    *len = f->body_len;
    f->body = empty;
    f->body_len = 0;
    return b;
}

ewi_stomp_limits ewi_stomp_default_limits(void)
{
    return (ewi_stomp_limits){ .max_frame = (1u << 20) + (64u << 10),
                               .max_body = 1u << 20,
                               .max_headers = 128,
                               .max_header_len = 8192 };
}

/* ---- parser -------------------------------------------------------------- */

typedef enum pstate {
    P_IDLE,     /* between frames: EOLs (heart-beats) */
    P_COMMAND,  /* the command line */
    P_HEADER,   /* header lines, up to the blank one */
    P_BODY_LEN, /* content-length bytes */
    P_TERM,     /* the NUL after a content-length body */
    P_BODY_NUL, /* a body up to the first NUL */
    P_FAILED
} pstate;

typedef struct hdr_off {
    size_t koff, klen, voff, vlen;
} hdr_off;

struct ewi_stomp_parser {
    ewi_stomp_limits lim;
    pstate state;
    ewi_stomp_status failure; /* when P_FAILED */
    bool cr;                  /* P_IDLE: a CR waits for its LF */

    uint8_t *line; /* the raw line being read, without its LF */
    size_t line_len, line_cap;

    ewi_stomp_cmd cmd;
    char *strings; /* unescaped "key\0value\0" pairs */
    size_t str_len, str_cap;
    size_t str_hint; /* the last frame's strings: the next one's first size */
    hdr_off *hdrs;
    size_t nhdrs, hdr_cap;

    uint8_t *body;
    size_t body_len, body_cap, content_length;
    size_t body_seen; /* body bytes read, kept or (skip mode) discarded */
    bool truncated;   /* skip mode: a MESSAGE body over max_body */

    size_t frame_bytes; /* of the current frame, command to NUL */
    size_t heartbeats;
    ewi_stomp_frame *ready;
    char err[200];
};

ewi_stomp_parser *ewi_stomp_parser_new(const ewi_stomp_limits *limits)
{
    ewi_stomp_parser *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->lim = limits ? *limits : ewi_stomp_default_limits();
    /* A zero limit would make every frame an error: treat it as "default". */
    ewi_stomp_limits d = ewi_stomp_default_limits();
    if (!p->lim.max_frame)
        p->lim.max_frame = d.max_frame;
    if (!p->lim.max_body)
        p->lim.max_body = d.max_body;
    if (!p->lim.max_headers)
        p->lim.max_headers = d.max_headers;
    if (!p->lim.max_header_len)
        p->lim.max_header_len = d.max_header_len;
    return p;
}

static void frame_reset(ewi_stomp_parser *p)
{
    p->line_len = 0;
    p->cmd = EWI_STOMP_NONE;
    p->str_len = 0;
    p->nhdrs = 0;
    free(p->body);
    p->body = NULL;
    p->body_len = p->body_cap = p->content_length = 0;
    p->body_seen = 0;
    p->truncated = false;
    p->frame_bytes = 0;
}

void ewi_stomp_parser_reset(ewi_stomp_parser *p)
{
    frame_reset(p);
    ewi_stomp_frame_free(p->ready);
    p->ready = NULL;
    p->state = P_IDLE;
    p->cr = false;
    p->heartbeats = 0;
    p->err[0] = 0;
}

void ewi_stomp_parser_free(ewi_stomp_parser *p)
{
    if (!p)
        return;
    ewi_stomp_frame_free(p->ready);
    free(p->line);
    free(p->strings);
    free(p->hdrs);
    free(p->body);
    free(p);
}

const char *ewi_stomp_parser_error(const ewi_stomp_parser *p)
{
    return p->err;
}

size_t ewi_stomp_parser_heartbeats(ewi_stomp_parser *p)
{
    size_t n = p->heartbeats;
    p->heartbeats = 0;
    return n;
}

ewi_stomp_frame *ewi_stomp_parser_take(ewi_stomp_parser *p)
{
    ewi_stomp_frame *f = p->ready;
    p->ready = NULL;
    return f;
}

static ewi_stomp_status fail(ewi_stomp_parser *p, ewi_stomp_status st,
                             const char *fmt, ...) EWI_PRINTF(3, 4);

static ewi_stomp_status fail(ewi_stomp_parser *p, ewi_stomp_status st,
                             const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->err, sizeof p->err, fmt, ap);
    va_end(ap);
    p->state = P_FAILED;
    p->failure = st;
    return st;
}

static ewi_stomp_status fail_nomem(ewi_stomp_parser *p)
{
    return fail(p, EWI_STOMP_ENOMEM, "out of memory while parsing a frame");
}

/* Grows *buf to hold need bytes; need is bounded by the limits. */
static bool grow(void *bufp, size_t *cap, size_t need, size_t elem)
{
    void **buf = bufp;
    if (need <= *cap)
        return true;
    size_t nc = *cap ? *cap : 64;
    while (nc < need)
        nc *= 2;
    void *nb = realloc(*buf, nc * elem);
    if (!nb)
        return false;
    *buf = nb;
    *cap = nc;
    return true;
}

/* Printable excerpt of untrusted bytes for error messages: non-printable
 * bytes as \xNN, cut to fit dst. */
static void excerpt(char *dst, size_t dstlen, const uint8_t *s, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char one[5];
        int k = (s[i] >= 0x20 && s[i] < 0x7f)
                    ? snprintf(one, sizeof one, "%c", s[i])
                    : snprintf(one, sizeof one, "\\x%02x", s[i]);
        if (o + (size_t)k >= dstlen)
            break;
        memcpy(dst + o, one, (size_t)k);
        o += (size_t)k;
    }
    dst[o] = 0;
}

static ewi_stomp_status count_bytes(ewi_stomp_parser *p, size_t n)
{
    if (n > p->lim.max_frame - p->frame_bytes)
        return fail(p, EWI_STOMP_ELIMIT, "frame larger than %zu bytes",
                    p->lim.max_frame);
    p->frame_bytes += n;
    return EWI_STOMP_MORE;
}

/* Appends src unescaped (or raw) plus a NUL to strings; *out_len gets the
 * unescaped length. */
static ewi_stomp_status put_string(ewi_stomp_parser *p, const uint8_t *src,
                                   size_t n, bool raw, const char *what,
                                   size_t *out_off, size_t *out_len)
{
    /* A new frame's strings start at the last frame's size: one
     * allocation per frame, not one per doubling. */
    size_t need = p->str_len + n + 1;
    if (!grow(&p->strings, &p->str_cap, !p->str_cap && p->str_hint > need ? p->str_hint : need,
              1))
        return fail_nomem(p);
    char *dst = p->strings + p->str_len;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        /* Runs without a backslash (most headers: all of them) in one copy. */
        const uint8_t *bs = raw ? NULL : memchr(src + i, '\\', n - i);
        size_t run = bs ? (size_t)(bs - (src + i)) : n - i;
        memcpy(dst + o, src + i, run);
        o += run;
        i += run;
        if (i == n)
            break;
        if (++i == n)
            return fail(p, EWI_STOMP_EBAD, "header %s ends in a lone backslash",
                        what);
        switch (src[i]) {
        case 'r': dst[o++] = '\r'; break;
        case 'n': dst[o++] = '\n'; break;
        case 'c': dst[o++] = ':'; break;
        case '\\': dst[o++] = '\\'; break;
        default: {
            char ex[8];
            excerpt(ex, sizeof ex, &src[i], 1);
            return fail(p, EWI_STOMP_EBAD,
                        "undefined escape \\%s in a header %s", ex, what);
        }
        }
    }
    dst[o] = 0;
    *out_off = p->str_len;
    *out_len = o;
    p->str_len += o + 1;
    return EWI_STOMP_MORE;
}

static ewi_stomp_status command_line(ewi_stomp_parser *p)
{
    p->cmd = cmd_lookup(p->line, p->line_len);
    if (p->cmd == EWI_STOMP_NONE) {
        char ex[48];
        excerpt(ex, sizeof ex, p->line, p->line_len);
        return fail(p, EWI_STOMP_EBAD, "unknown command '%s'", ex);
    }
    p->state = P_HEADER;
    return EWI_STOMP_MORE;
}

/* Strict decimal: digits only, no sign or blanks, no overflow. */
static bool parse_length(const char *s, size_t *out)
{
    if (!*s)
        return false;
    size_t v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return false;
        size_t d = (size_t)(*s - '0');
        if (v > (SIZE_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

static ewi_stomp_status headers_done(ewi_stomp_parser *p)
{
    const char *cl = NULL;
    for (size_t i = 0; i < p->nhdrs && !cl; i++)
        if (p->hdrs[i].klen == 14 &&
            memcmp(p->strings + p->hdrs[i].koff, "content-length", 14) == 0)
            cl = p->strings + p->hdrs[i].voff;
    if (!cl) {
        p->state = P_BODY_NUL;
        return EWI_STOMP_MORE;
    }
    size_t n;
    if (!parse_length(cl, &n)) {
        char ex[48];
        excerpt(ex, sizeof ex, (const uint8_t *)cl, strlen(cl));
        return fail(p, EWI_STOMP_EBAD, "bad content-length '%s'", ex);
    }
    size_t keep = n;
    if (n > p->lim.max_body) {
        if (p->cmd != EWI_STOMP_MESSAGE)
            return fail(p, EWI_STOMP_ELIMIT,
                        "content-length %zu is over the body limit of %zu bytes",
                        n, p->lim.max_body);
        /* Skip mode: keep what fits, discard the rest as it comes. */
        keep = p->lim.max_body;
        p->truncated = true;
    }
    /* The kept body and its NUL must fit the frame limit too. */
    if (keep >= p->lim.max_frame - p->frame_bytes)
        return fail(p, EWI_STOMP_ELIMIT, "frame larger than %zu bytes",
                    p->lim.max_frame);
    p->body = malloc(keep + 1);
    if (!p->body)
        return fail_nomem(p);
    p->body_cap = keep + 1;
    p->content_length = n;
    p->state = n ? P_BODY_LEN : P_TERM;
    return EWI_STOMP_MORE;
}

static ewi_stomp_status header_line(ewi_stomp_parser *p)
{
    if (p->line_len == 0)
        return headers_done(p);
    if (p->nhdrs == p->lim.max_headers)
        return fail(p, EWI_STOMP_ELIMIT, "more than %zu headers in a %s frame",
                    p->lim.max_headers, ewi_stomp_cmd_name(p->cmd));
    const uint8_t *colon = memchr(p->line, ':', p->line_len);
    if (!colon) {
        char ex[48];
        excerpt(ex, sizeof ex, p->line, p->line_len);
        return fail(p, EWI_STOMP_EBAD, "header line without ':' ('%s')", ex);
    }
    size_t klen = (size_t)(colon - p->line);
    if (klen == 0)
        return fail(p, EWI_STOMP_EBAD, "header with an empty name");
    if (!grow(&p->hdrs, &p->hdr_cap, p->nhdrs + 1, sizeof *p->hdrs))
        return fail_nomem(p);
    bool raw = ewi_stomp_cmd_raw_headers(p->cmd);
    hdr_off *h = &p->hdrs[p->nhdrs];
    ewi_stomp_status st = put_string(p, p->line, klen, raw, "name", &h->koff,
                                     &h->klen);
    if (st != EWI_STOMP_MORE)
        return st;
    st = put_string(p, colon + 1, p->line_len - klen - 1, raw, "value",
                    &h->voff, &h->vlen);
    if (st != EWI_STOMP_MORE)
        return st;
    p->nhdrs++;
    return EWI_STOMP_MORE;
}

/* A header line wholly in data[0..n) (n excludes its LF) that needs nothing
 * but two copies: no backslash, NUL or stray CR, a non-empty name, within
 * every limit. Takes it and returns true; returns false without a change
 * otherwise, and the byte-at-a-time path below then reads the line (and
 * reports its error, if any, with the same text for every split). One
 * strcspn finds the ':' and one the end of the value: most lines of a frame
 * are read this way. */
static bool header_line_fast(ewi_stomp_parser *p, const uint8_t *line, size_t n)
{
    if (ewi_stomp_cmd_raw_headers(p->cmd) || p->nhdrs == p->lim.max_headers ||
        n > p->lim.max_header_len + 1 || n >= p->lim.max_frame - p->frame_bytes)
        return false;
    /* strcspn stops at the LF at the latest (memchr found it), or at a NUL. */
    const char *s = (const char *)line;
    size_t klen = strcspn(s, ":\\\r\n");
    if (klen == 0 || klen >= n || s[klen] != ':')
        return false;
    size_t vend = klen + 1 + strcspn(s + klen + 1, "\\\r\n");
    size_t m = n;
    if (vend == n - 1 && s[vend] == '\r')
        m = n - 1; /* the CR of a CRLF */
    if (vend != m || m > p->lim.max_header_len)
        return false;
    size_t need = p->str_len + m + 1;
    if (!grow(&p->hdrs, &p->hdr_cap, p->nhdrs + 1, sizeof *p->hdrs) ||
        !grow(&p->strings, &p->str_cap,
              !p->str_cap && p->str_hint > need ? p->str_hint : need, 1))
        return false; /* the slow path reports the ENOMEM */
    hdr_off *h = &p->hdrs[p->nhdrs++];
    char *dst = p->strings + p->str_len;
    size_t vlen = m - klen - 1;
    memcpy(dst, s, klen);
    dst[klen] = 0;
    memcpy(dst + klen + 1, s + klen + 1, vlen);
    dst[m] = 0;
    h->koff = p->str_len;
    h->klen = klen;
    h->voff = p->str_len + klen + 1;
    h->vlen = vlen;
    p->str_len += m + 1;
    p->frame_bytes += n + 1;
    return true;
}

static ewi_stomp_status line_too_long(ewi_stomp_parser *p)
{
    if (p->state == P_COMMAND) {
        char ex[48];
        excerpt(ex, sizeof ex, p->line, p->line_len);
        return fail(p, EWI_STOMP_EBAD, "unknown command '%s...'", ex);
    }
    return fail(p, EWI_STOMP_ELIMIT,
                "header line longer than %zu bytes in a %s frame",
                p->lim.max_header_len, ewi_stomp_cmd_name(p->cmd));
}

/* Reads line bytes up to LF; processes the line when it is complete.
 * Bytes are judged one at a time, in order (frame limit, line limit, NUL),
 * so the error does not depend on how the input was split. */
static ewi_stomp_status line_bytes(ewi_stomp_parser *p, const uint8_t *data,
                                   size_t len, size_t *i)
{
    const uint8_t *start = data + *i;
    size_t avail = len - *i;
    const uint8_t *lf = memchr(start, '\n', avail);
    size_t n = lf ? (size_t)(lf - start) : avail;
    if (lf && p->state == P_HEADER && p->line_len == 0 && n > 1 &&
        header_line_fast(p, start, n)) {
        *i += n + 1;
        return EWI_STOMP_MORE;
    }
    size_t limit = p->state == P_COMMAND ? MAX_CMD_LEN : p->lim.max_header_len;
    /* One byte of slack for the CR of a CRLF. */
    size_t room_line = limit + 1 - p->line_len;
    size_t room_frame = p->lim.max_frame - p->frame_bytes;
    size_t k = n < room_line ? n : room_line;
    if (k > room_frame)
        k = room_frame;
    const uint8_t *nul = memchr(start, 0, k);
    if (nul)
        k = (size_t)(nul - start);
    if (!grow(&p->line, &p->line_cap, p->line_len + k, 1))
        return fail_nomem(p);
    if (k)
        memcpy(p->line + p->line_len, start, k);
    p->line_len += k;
    p->frame_bytes += k;
    *i += k;
    if (nul)
        return fail(p, EWI_STOMP_EBAD, "NUL byte inside a %s line",
                    p->state == P_COMMAND ? "command" : "header");
    if (k < n || (lf && k == room_frame)) {
        if (k == room_frame)
            return fail(p, EWI_STOMP_ELIMIT, "frame larger than %zu bytes",
                        p->lim.max_frame);
        return line_too_long(p);
    }
    if (!lf)
        return EWI_STOMP_MORE;
    (*i)++;
    p->frame_bytes++;
    if (p->line_len && p->line[p->line_len - 1] == '\r')
        p->line_len--;
    if (memchr(p->line, '\r', p->line_len))
        return fail(p, EWI_STOMP_EBAD, "CR not followed by LF inside a %s line",
                    p->state == P_COMMAND ? "command" : "header");
    ewi_stomp_status st;
    if (p->state == P_COMMAND)
        st = command_line(p);
    else if (p->line_len > limit)
        st = line_too_long(p);
    else
        st = header_line(p);
    p->line_len = 0;
    return st;
}

static ewi_stomp_status complete(ewi_stomp_parser *p)
{
    /* The frame and its header array in one allocation; every field is set
     * below (no calloc: zeroing what is written anyway costs per frame). */
    ewi_stomp_frame *f = malloc(sizeof *f + p->nhdrs * sizeof *f->headers);
    if (!f)
        return fail_nomem(p);
    if (!p->body) {
        p->body = malloc(1);
        p->body_cap = 1;
    }
    if (!p->body) {
        free(f);
        return fail_nomem(p);
    }
    f->headers = p->nhdrs ? (ewi_stomp_header *)(f + 1) : NULL;
    p->body[p->body_len] = 0;
    f->cmd = p->cmd;
    f->body = p->body;
    f->body_len = p->body_len;
    f->truncated = p->truncated;
    f->wire_body_len = p->truncated ? p->body_seen : p->body_len;
    p->body = NULL;
    /* The strings move into the frame; the parser starts a new buffer. */
    f->strings_ = p->strings;
    p->str_hint = p->str_len < 16384 ? p->str_len : 16384;
    p->strings = NULL;
    p->str_cap = 0;
    f->nheaders = p->nhdrs;
    for (size_t i = 0; i < p->nhdrs; i++) {
        f->headers[i].key = f->strings_ + p->hdrs[i].koff;
        f->headers[i].klen = p->hdrs[i].klen;
        f->headers[i].value = f->strings_ + p->hdrs[i].voff;
        f->headers[i].vlen = p->hdrs[i].vlen;
    }
    frame_reset(p);
    p->ready = f;
    p->state = P_IDLE;
    return EWI_STOMP_FRAME;
}

const char *ewi_stomp_parser_partial_header(const ewi_stomp_parser *p, const char *key)
{
    size_t klen = strlen(key);
    if (!p->strings)
        return NULL;
    for (size_t i = 0; i < p->nhdrs; i++)
        if (p->hdrs[i].klen == klen && memcmp(p->strings + p->hdrs[i].koff, key, klen) == 0)
            return p->strings + p->hdrs[i].voff;
    return NULL;
}

ewi_stomp_status ewi_stomp_parse(ewi_stomp_parser *p, const uint8_t *data,
                                 size_t len, size_t *used)
{
    size_t i = 0;
    ewi_stomp_status st = EWI_STOMP_MORE;
    *used = 0;
    if (p->state == P_FAILED)
        return p->failure;
    if (p->ready) /* the caller has not taken the last frame yet */
        return EWI_STOMP_FRAME;
    while (i < len && st == EWI_STOMP_MORE) {
        switch (p->state) {
        case P_IDLE: {
            uint8_t c = data[i];
            if (c == '\n') {
                p->cr = false;
                p->heartbeats++;
                i++;
            } else if (p->cr) {
                st = fail(p, EWI_STOMP_EBAD, "CR not followed by LF between frames");
            } else if (c == '\r') {
                p->cr = true;
                i++;
            } else {
                p->state = P_COMMAND;
            }
            break;
        }
        case P_COMMAND:
        case P_HEADER:
            st = line_bytes(p, data, len, &i);
            break;
        case P_BODY_LEN: {
            size_t n = p->content_length - p->body_seen;
            if (n > len - i)
                n = len - i;
            /* What fits the kept body (all of it unless skipping). */
            size_t room = p->body_cap - 1 - p->body_len;
            size_t k = n < room ? n : room;
            st = count_bytes(p, k);
            if (st != EWI_STOMP_MORE)
                break;
            memcpy(p->body + p->body_len, data + i, k);
            p->body_len += k;
            p->body_seen += n;
            i += n;
            if (p->body_seen == p->content_length)
                p->state = P_TERM;
            break;
        }
        case P_TERM:
            if (data[i] != 0) {
                st = fail(p, EWI_STOMP_EBAD,
                          "%s frame: no NUL after its content-length (%zu) body",
                          ewi_stomp_cmd_name(p->cmd), p->content_length);
                break;
            }
            st = count_bytes(p, 1);
            if (st != EWI_STOMP_MORE)
                break;
            i++;
            st = complete(p);
            break;
        case P_BODY_NUL: {
            const uint8_t *nul = memchr(data + i, 0, len - i);
            size_t n = nul ? (size_t)(nul - (data + i)) : len - i;
            size_t room_body = p->lim.max_body - p->body_len;
            size_t room_frame = p->lim.max_frame - p->frame_bytes;
            size_t k = n < room_body ? n : room_body;
            if (k > room_frame)
                k = room_frame;
            if (!grow(&p->body, &p->body_cap, p->body_len + k + 1, 1)) {
                st = fail_nomem(p);
                break;
            }
            memcpy(p->body + p->body_len, data + i, k);
            p->body_len += k;
            p->body_seen += k;
            p->frame_bytes += k;
            i += k;
            if (k == room_frame && (k < n || nul)) {
                st = fail(p, EWI_STOMP_ELIMIT, "frame larger than %zu bytes",
                          p->lim.max_frame);
            } else if (k < n && p->cmd == EWI_STOMP_MESSAGE) {
                /* Skip mode: discard up to the NUL. */
                p->truncated = true;
                p->body_seen += n - k;
                i += n - k;
                if (nul) {
                    p->frame_bytes++;
                    i++;
                    st = complete(p);
                }
            } else if (k < n) {
                st = fail(p, EWI_STOMP_ELIMIT,
                          "%s frame body longer than %zu bytes",
                          ewi_stomp_cmd_name(p->cmd), p->lim.max_body);
            } else if (nul) {
                p->frame_bytes++;
                i++;
                st = complete(p);
            }
            break;
        }
        case P_FAILED:
            st = p->failure;
            break;
        }
    }
    *used = i;
    return st;
}

/* ---- serializer ---------------------------------------------------------- */

void ewi_stomp_write_begin(ewi_stomp_writer *w, ewi_buf *out, ewi_stomp_cmd cmd)
{
    w->out = out;
    w->mark = out->len;
    w->cmd = cmd;
    w->err = EW_OK;
    const char *name = ewi_stomp_cmd_name(cmd);
    if (cmd == EWI_STOMP_NONE || (unsigned)cmd >= NCMDS) {
        w->err = EW_EINVAL;
        return;
    }
    if (ewi_buf_append(out, name, strlen(name)) != EW_OK ||
        ewi_buf_append(out, "\n", 1) != EW_OK)
        w->err = EW_ENOMEM;
}

/* Bytes a header name or value cannot hold as they are: 1 for those STOMP
 * escapes, 2 for NUL, which nothing can carry. */
static const uint8_t special[256] = {[0] = 2, ['\n'] = 1, ['\r'] = 1, [':'] = 1,
                                     ['\\'] = 1};

/* Writes s escaped at d, which has room for 2 * n bytes; the end, or NULL
 * for what cannot be written. One table lookup per byte; most keys and
 * values have nothing to escape. */
/* How many bytes of u[0..n) from the start need no escape: four table
 * lookups per step. */
static size_t plain_run(const uint8_t *u, size_t n)
{
    size_t i = 0;
    while (i + 4 <= n &&
           !(special[u[i]] | special[u[i + 1]] | special[u[i + 2]] | special[u[i + 3]]))
        i += 4;
    while (i < n && !special[u[i]])
        i++;
    return i;
}

static uint8_t *put_escaped(uint8_t *d, const char *s, size_t n, bool raw, bool is_key)
{
    const uint8_t *u = (const uint8_t *)s;
    for (size_t i = 0; i < n; i++) {
        /* The bytes up to the next one to escape, in one copy. */
        size_t run = plain_run(u + i, n - i);
        memcpy(d, u + i, run);
        d += run;
        i += run;
        if (i == n)
            break;
        uint8_t c = u[i];
        if (special[c] == 2)
            return NULL;
        if (raw) {
            /* CONNECT and CONNECTED: no escapes; ':' and '\\' are fine in a
             * value, '\\' in a name too. */
            if (c == '\n' || c == '\r' || (c == ':' && is_key))
                return NULL;
            *d++ = c;
            continue;
        }
        *d++ = '\\';
        *d++ = c == '\n' ? 'n' : c == '\r' ? 'r' : c == ':' ? 'c' : '\\';
    }
    return d;
}

void ewi_stomp_write_header_n(ewi_stomp_writer *w, const char *key, size_t klen,
                        const char *value, size_t vlen)
{
    if (w->err)
        return;
    if (klen == 0) {
        w->err = EW_EINVAL;
        return;
    }
    /* Room for the worst case (every byte escaped), reserved once. */
    if (klen > SIZE_MAX / 4 || vlen > SIZE_MAX / 4 ||
        ewi_buf_reserve(w->out, 2 * klen + 2 * vlen + 2) != EW_OK) {
        w->err = EW_ENOMEM;
        return;
    }
    bool raw = ewi_stomp_cmd_raw_headers(w->cmd);
    uint8_t *d = put_escaped(w->out->data + w->out->len, key, klen, raw, true);
    if (d) {
        *d++ = ':';
        d = put_escaped(d, value, vlen, raw, false);
    }
    if (!d) {
        w->err = EW_EINVAL;
        return;
    }
    *d++ = '\n';
    w->out->len = (size_t)(d - w->out->data);
}

void ewi_stomp_write_header(ewi_stomp_writer *w, const char *key, const char *value)
{
    /* Most headers have nothing to escape: one strcspn per string finds
     * that and the length at once, and the line is two copies. */
    if (!w->err && !ewi_stomp_cmd_raw_headers(w->cmd)) {
        size_t klen = strcspn(key, ":\\\r\n"), vlen = strcspn(value, ":\\\r\n");
        if (klen && !key[klen] && !value[vlen]) {
            if (ewi_buf_reserve(w->out, klen + vlen + 2) != EW_OK) {
                w->err = EW_ENOMEM;
                return;
            }
            uint8_t *d = w->out->data + w->out->len;
            memcpy(d, key, klen);
            d[klen] = ':';
            memcpy(d + klen + 1, value, vlen);
            d[klen + 1 + vlen] = '\n';
            w->out->len += klen + vlen + 2;
            return;
        }
    }
    ewi_stomp_write_header_n(w, key, strlen(key), value, strlen(value));
}

ew_err ewi_stomp_write_end(ewi_stomp_writer *w, const void *body, size_t len,
                     bool with_length)
{
    ew_err e = w->err;
    if (!e && with_length) {
        /* "content-length:N\n", the digits written backwards. */
        char cl[48] = "content-length:";
        char digits[24];
        size_t nd = 0, v = len;
        do {
            digits[nd++] = (char)('0' + v % 10);
            v /= 10;
        } while (v);
        size_t o = 15;
        while (nd)
            cl[o++] = digits[--nd];
        cl[o++] = '\n';
        e = ewi_buf_append(w->out, cl, o);
    }
    if (!e)
        e = ewi_buf_append(w->out, "\n", 1);
    if (!e && len)
        e = ewi_buf_append(w->out, body, len);
    if (!e)
        e = ewi_buf_append(w->out, "", 1); /* the NUL */
    if (e)
        w->out->len = w->mark;
    w->err = e;
    return e;
}

ew_err ewi_stomp_write_frame(ewi_buf *out, const ewi_stomp_frame *f)
{
    ewi_stomp_writer w;
    ewi_stomp_write_begin(&w, out, f->cmd);
    for (size_t i = 0; i < f->nheaders; i++) {
        const ewi_stomp_header *h = &f->headers[i];
        /* The body's real length replaces whatever was said. */
        if (h->klen == 14 && memcmp(h->key, "content-length", 14) == 0)
            continue;
        ewi_stomp_write_header_n(&w, h->key, h->klen, h->value, h->vlen);
    }
    return ewi_stomp_write_end(&w, f->body, f->body_len, true);
}
