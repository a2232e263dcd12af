/* STOMP 1.2 frame codec: the specification's examples, escaping, bodies,
 * heart-beats, limits, malformed input, and the serializer's escaping. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "transports/stomp/frame.h"

#define LIT(s) (const uint8_t *)(s), sizeof(s) - 1

/* Parses all of data (chunk bytes at a time; 0 = all at once) into frames[];
 * returns the final status; *nframes counts frames. */
static ewi_stomp_status parse_all(ewi_stomp_parser *p, const uint8_t *data,
                                  size_t len, size_t chunk,
                                  ewi_stomp_frame **frames, size_t max,
                                  size_t *nframes)
{
    size_t off = 0, n = 0;
    ewi_stomp_status st = EWI_STOMP_MORE;
    while (off < len) {
        size_t take = chunk && chunk < len - off ? chunk : len - off;
        size_t pos = 0;
        while (pos < take) {
            size_t used;
            st = ewi_stomp_parse(p, data + off + pos, take - pos, &used);
            pos += used;
            if (st == EWI_STOMP_FRAME) {
                ewi_stomp_frame *f = ewi_stomp_parser_take(p);
                assert_non_null(f);
                if (n < max)
                    frames[n++] = f;
                else
                    ewi_stomp_frame_free(f);
                st = EWI_STOMP_MORE;
            } else if (st != EWI_STOMP_MORE) {
                *nframes = n;
                return st;
            }
        }
        off += take;
    }
    *nframes = n;
    return st;
}

/* One frame out of a complete text, checked to be the same whole and byte by
 * byte. */
static ewi_stomp_frame *one(const uint8_t *data, size_t len)
{
    ewi_stomp_frame *f[2] = { 0 }, *g[2] = { 0 };
    size_t n = 0, m = 0;
    ewi_stomp_parser *p = ewi_stomp_parser_new(NULL);
    assert_int_equal(parse_all(p, data, len, 0, f, 2, &n), EWI_STOMP_MORE);
    assert_int_equal(n, 1);
    ewi_stomp_parser_reset(p);
    assert_int_equal(parse_all(p, data, len, 1, g, 2, &m), EWI_STOMP_MORE);
    assert_int_equal(m, 1);
    assert_int_equal(f[0]->cmd, g[0]->cmd);
    assert_int_equal(f[0]->nheaders, g[0]->nheaders);
    for (size_t i = 0; i < f[0]->nheaders; i++) {
        assert_string_equal(f[0]->headers[i].key, g[0]->headers[i].key);
        assert_string_equal(f[0]->headers[i].value, g[0]->headers[i].value);
    }
    assert_int_equal(f[0]->body_len, g[0]->body_len);
    assert_memory_equal(f[0]->body, g[0]->body, f[0]->body_len + 1);
    ewi_stomp_frame_free(g[0]);
    ewi_stomp_parser_free(p);
    return f[0];
}

/* The status and error text of parsing bad input whole and byte by byte. */
static void bad(const uint8_t *data, size_t len, ewi_stomp_status want,
                const char *text)
{
    for (size_t chunk = 0; chunk <= 1; chunk++) {
        ewi_stomp_parser *p = ewi_stomp_parser_new(NULL);
        ewi_stomp_frame *f[4];
        size_t n = 0;
        ewi_stomp_status st = parse_all(p, data, len, chunk, f, 4, &n);
        for (size_t i = 0; i < n; i++)
            ewi_stomp_frame_free(f[i]);
        if (st != want)
            fail_msg("status %d, want %d (error '%s')", st, want,
                     ewi_stomp_parser_error(p));
        if (!strstr(ewi_stomp_parser_error(p), text))
            fail_msg("error '%s' does not say '%s'", ewi_stomp_parser_error(p),
                     text);
        ewi_stomp_parser_free(p);
    }
}

/* ---- the specification's examples ---------------------------------------- */

static void spec_connect(void **state)
{
    (void)state;
    ewi_stomp_frame *f = one(LIT("CONNECT\naccept-version:1.2\n"
                                 "host:stomp.github.org\n\n\0"));
    assert_int_equal(f->cmd, EWI_STOMP_CONNECT);
    assert_int_equal(f->nheaders, 2);
    assert_string_equal(ewi_stomp_frame_get(f, "accept-version"), "1.2");
    assert_string_equal(ewi_stomp_frame_get(f, "host"), "stomp.github.org");
    assert_int_equal(f->body_len, 0);
    ewi_stomp_frame_free(f);
}

static void spec_send_and_message(void **state)
{
    (void)state;
    ewi_stomp_frame *f = one(LIT("SEND\ndestination:/queue/a\n"
                                 "content-type:text/plain\n\nhello queue a\0"));
    assert_int_equal(f->cmd, EWI_STOMP_SEND);
    assert_string_equal(ewi_stomp_frame_get(f, "destination"), "/queue/a");
    assert_string_equal((char *)f->body, "hello queue a");
    ewi_stomp_frame_free(f);

    f = one(LIT("MESSAGE\nsubscription:0\nmessage-id:007\n"
                "destination:/queue/a\ncontent-type:text/plain\n\n"
                "hello queue a\0"));
    assert_int_equal(f->cmd, EWI_STOMP_MESSAGE);
    assert_string_equal(ewi_stomp_frame_get(f, "message-id"), "007");
    assert_null(ewi_stomp_frame_get(f, "receipt"));
    ewi_stomp_frame_free(f);
}

static void spec_receipt_and_error(void **state)
{
    (void)state;
    ewi_stomp_frame *f = one(LIT("RECEIPT\nreceipt-id:message-12345\n\n\0"));
    assert_int_equal(f->cmd, EWI_STOMP_RECEIPT);
    assert_string_equal(ewi_stomp_frame_get(f, "receipt-id"), "message-12345");
    ewi_stomp_frame_free(f);

    f = one(LIT("ERROR\nreceipt-id:message-12345\ncontent-type:text/plain\n"
                "content-length:170\nmessage:malformed frame received\n\n"
                "The message:\n-----\nMESSAGE\ndestined:/queue/a\nreceipt:"
                "message-12345\n\nHello queue a!\n-----\nDid not contain a "
                "destination header, which is REQUIRED\nfor message propagation.\n\0"));
    assert_int_equal(f->cmd, EWI_STOMP_ERROR);
    assert_string_equal(ewi_stomp_frame_get(f, "message"), "malformed frame received");
    assert_int_equal(f->body_len, 170);
    ewi_stomp_frame_free(f);
}

/* "If a client or a server receives repeated frame header entries, only the
 * first header entry SHOULD be used as the value of header entry." */
static void repeated_headers_first_wins(void **state)
{
    (void)state;
    ewi_stomp_frame *f = one(LIT("MESSAGE\nfoo:World\nfoo:Hello\n\n\0"));
    assert_string_equal(ewi_stomp_frame_get(f, "foo"), "World");
    assert_int_equal(f->nheaders, 2);
    assert_string_equal(f->headers[1].value, "Hello");
    ewi_stomp_frame_free(f);

    /* The first content-length decides the body. */
    f = one(LIT("SEND\ncontent-length:3\ncontent-length:1\n\na\0b\0"));
    assert_int_equal(f->body_len, 3);
    assert_memory_equal(f->body, "a\0b", 3);
    ewi_stomp_frame_free(f);
}

/* ---- escaping ------------------------------------------------------------- */

static void escapes_decode(void **state)
{
    (void)state;
    ewi_stomp_frame *f = one(LIT("MESSAGE\nk\\cey\\n:a\\\\b\\r\\cc\n\n\0"));
    assert_int_equal(f->nheaders, 1);
    assert_int_equal(f->headers[0].klen, 5);
    assert_string_equal(f->headers[0].key, "k:ey\n");
    assert_string_equal(f->headers[0].value, "a\\b\r:c");
    ewi_stomp_frame_free(f);
}

static void unescaped_colon_in_value_is_literal(void **state)
{
    (void)state;
    ewi_stomp_frame *f = one(LIT("MESSAGE\nurl:http://x:80/\nempty:\n\n\0"));
    assert_string_equal(ewi_stomp_frame_get(f, "url"), "http://x:80/");
    assert_string_equal(ewi_stomp_frame_get(f, "empty"), "");
    ewi_stomp_frame_free(f);
}

static void connect_frames_are_not_unescaped(void **state)
{
    (void)state;
    ewi_stomp_frame *f = one(LIT("CONNECT\nlogin:a\\nb\npasscode:x:y\\q\n\n\0"));
    assert_string_equal(ewi_stomp_frame_get(f, "login"), "a\\nb");
    assert_string_equal(ewi_stomp_frame_get(f, "passcode"), "x:y\\q");
    ewi_stomp_frame_free(f);
    f = one(LIT("CONNECTED\nversion:1.2\nserver:Rabbit\\c3\n\n\0"));
    assert_string_equal(ewi_stomp_frame_get(f, "server"), "Rabbit\\c3");
    ewi_stomp_frame_free(f);
    f = one(LIT("STOMP\nhost:a\\b\n\n\0"));
    assert_string_equal(ewi_stomp_frame_get(f, "host"), "a\\b");
    ewi_stomp_frame_free(f);
}

static void undefined_escapes_are_errors(void **state)
{
    (void)state;
    bad(LIT("MESSAGE\nk:a\\tb\n\n\0"), EWI_STOMP_EBAD, "undefined escape \\t");
    bad(LIT("MESSAGE\nk\\x:v\n\n\0"), EWI_STOMP_EBAD, "undefined escape \\x");
    bad(LIT("MESSAGE\nk:v\\\n\n\0"), EWI_STOMP_EBAD, "lone backslash");
    bad(LIT("MESSAGE\nk:\\\x01\n\n\0"), EWI_STOMP_EBAD, "\\x01");
}

/* ---- bodies ---------------------------------------------------------------- */

static void content_length_body_with_nuls(void **state)
{
    (void)state;
    ewi_stomp_frame *f = one(LIT("SEND\ncontent-length:5\n\na\0b\0c\0"));
    assert_int_equal(f->body_len, 5);
    assert_memory_equal(f->body, "a\0b\0c", 6);
    ewi_stomp_frame_free(f);

    f = one(LIT("SEND\ncontent-length:0\n\n\0"));
    assert_int_equal(f->body_len, 0);
    assert_int_equal(f->body[0], 0);
    ewi_stomp_frame_free(f);
}

static void body_without_length_ends_at_nul(void **state)
{
    (void)state;
    ewi_stomp_frame *f = one(LIT("SEND\ndestination:/q\n\nline1\nline2\r\n\0"));
    assert_int_equal(f->body_len, 13);
    assert_string_equal((char *)f->body, "line1\nline2\r\n");
    size_t len;
    uint8_t *b = ewi_stomp_frame_take_body(f, &len);
    assert_int_equal(len, 13);
    assert_string_equal((char *)b, "line1\nline2\r\n");
    free(b);
    assert_int_equal(f->body_len, 0);
    ewi_stomp_frame_free(f);
}

static void missing_nul_after_length_body(void **state)
{
    (void)state;
    bad(LIT("SEND\ncontent-length:2\n\nabc\0"), EWI_STOMP_EBAD,
        "no NUL after its content-length (2) body");
}

static void bad_content_lengths(void **state)
{
    (void)state;
    bad(LIT("SEND\ncontent-length:-1\n\n\0"), EWI_STOMP_EBAD, "bad content-length '-1'");
    bad(LIT("SEND\ncontent-length:12a\n\n\0"), EWI_STOMP_EBAD, "bad content-length");
    bad(LIT("SEND\ncontent-length:\n\n\0"), EWI_STOMP_EBAD, "bad content-length ''");
    bad(LIT("SEND\ncontent-length: 5\n\n12345\0"), EWI_STOMP_EBAD, "bad content-length");
    bad(LIT("SEND\ncontent-length:99999999999999999999999999\n\n\0"),
        EWI_STOMP_EBAD, "bad content-length");
}

/* ---- line ends and heart-beats ------------------------------------------- */

static void crlf_line_ends(void **state)
{
    (void)state;
    ewi_stomp_frame *f = one(LIT("SEND\r\ndestination:/q\r\nk:v\r\n\r\nbody\0"));
    assert_int_equal(f->cmd, EWI_STOMP_SEND);
    assert_string_equal(ewi_stomp_frame_get(f, "destination"), "/q");
    assert_string_equal(ewi_stomp_frame_get(f, "k"), "v");
    assert_string_equal((char *)f->body, "body");
    ewi_stomp_frame_free(f);
}

static void heartbeats_between_frames(void **state)
{
    (void)state;
    static const char text[] = "\n\r\n\nRECEIPT\nreceipt-id:1\n\n\0\n\n"
                               "RECEIPT\nreceipt-id:2\n\n\0\r\n";
    for (size_t chunk = 0; chunk <= 3; chunk++) {
        ewi_stomp_parser *p = ewi_stomp_parser_new(NULL);
        ewi_stomp_frame *f[4];
        size_t n;
        assert_int_equal(parse_all(p, (const uint8_t *)text, sizeof text - 1,
                                   chunk, f, 4, &n),
                         EWI_STOMP_MORE);
        assert_int_equal(n, 2);
        assert_string_equal(ewi_stomp_frame_get(f[0], "receipt-id"), "1");
        assert_string_equal(ewi_stomp_frame_get(f[1], "receipt-id"), "2");
        assert_int_equal(ewi_stomp_parser_heartbeats(p), 6);
        assert_int_equal(ewi_stomp_parser_heartbeats(p), 0);
        ewi_stomp_frame_free(f[0]);
        ewi_stomp_frame_free(f[1]);
        ewi_stomp_parser_free(p);
    }
}

static void bare_cr_is_an_error(void **state)
{
    (void)state;
    bad(LIT("\rSEND\n\n\0"), EWI_STOMP_EBAD, "CR not followed by LF between frames");
    bad(LIT("SEND\nk:a\rb\n\n\0"), EWI_STOMP_EBAD, "CR not followed by LF inside a header");
    bad(LIT("SE\rND\n\n\0"), EWI_STOMP_EBAD, "CR not followed by LF inside a command line");
}

static void parser_stops_after_each_frame(void **state)
{
    (void)state;
    static const char text[] = "RECEIPT\nreceipt-id:1\n\n\0RECEIPT\nreceipt-id:2\n\n\0";
    ewi_stomp_parser *p = ewi_stomp_parser_new(NULL);
    size_t used;
    assert_int_equal(ewi_stomp_parse(p, (const uint8_t *)text, sizeof text - 1, &used),
                     EWI_STOMP_FRAME);
    assert_int_equal(used, 23);
    /* Not taken yet: the parser waits and consumes nothing. */
    size_t again;
    assert_int_equal(ewi_stomp_parse(p, (const uint8_t *)text + used,
                                     sizeof text - 1 - used, &again),
                     EWI_STOMP_FRAME);
    assert_int_equal(again, 0);
    ewi_stomp_frame_free(ewi_stomp_parser_take(p));
    assert_null(ewi_stomp_parser_take(p));
    assert_int_equal(ewi_stomp_parse(p, (const uint8_t *)text + used,
                                     sizeof text - 1 - used, &again),
                     EWI_STOMP_FRAME);
    assert_int_equal(used + again, sizeof text - 1);
    ewi_stomp_frame *f = ewi_stomp_parser_take(p);
    assert_string_equal(ewi_stomp_frame_get(f, "receipt-id"), "2");
    ewi_stomp_frame_free(f);
    ewi_stomp_parser_free(p);
}

/* ---- malformed frames ------------------------------------------------------ */

static void malformed_frames(void **state)
{
    (void)state;
    bad(LIT("FOO\n\n\0"), EWI_STOMP_EBAD, "unknown command 'FOO'");
    bad(LIT("send\n\n\0"), EWI_STOMP_EBAD, "unknown command 'send'");
    bad(LIT("SEND \n\n\0"), EWI_STOMP_EBAD, "unknown command 'SEND '");
    bad(LIT("ACKNOWLEDGEMENTS_ARE_LONG\n\n\0"), EWI_STOMP_EBAD, "unknown command");
    bad(LIT("\0"), EWI_STOMP_EBAD, "NUL byte inside a command line");
    bad(LIT("SEND\nnocolon\n\n\0"), EWI_STOMP_EBAD, "header line without ':' ('nocolon')");
    bad(LIT("SEND\n:value\n\n\0"), EWI_STOMP_EBAD, "empty name");
    bad(LIT("SEND\nk:v\0x\n\n\0"), EWI_STOMP_EBAD, "NUL byte inside a header line");
    bad(LIT("SEND\n\0"), EWI_STOMP_EBAD, "NUL byte inside a header line");
}

static void errors_are_sticky_until_reset(void **state)
{
    (void)state;
    ewi_stomp_parser *p = ewi_stomp_parser_new(NULL);
    size_t used;
    assert_int_equal(ewi_stomp_parse(p, LIT("BAD\n"), &used), EWI_STOMP_EBAD);
    assert_int_equal(ewi_stomp_parse(p, LIT("SEND\n\n\0"), &used), EWI_STOMP_EBAD);
    assert_int_equal(used, 0);
    ewi_stomp_parser_reset(p);
    assert_string_equal(ewi_stomp_parser_error(p), "");
    assert_int_equal(ewi_stomp_parse(p, LIT("SEND\n\n\0"), &used), EWI_STOMP_FRAME);
    ewi_stomp_frame_free(ewi_stomp_parser_take(p));
    /* A reset also drops a half-read frame. */
    assert_int_equal(ewi_stomp_parse(p, LIT("SEND\nk:"), &used), EWI_STOMP_MORE);
    ewi_stomp_parser_reset(p);
    assert_int_equal(ewi_stomp_parse(p, LIT("RECEIPT\n\n\0"), &used), EWI_STOMP_FRAME);
    ewi_stomp_frame *f = ewi_stomp_parser_take(p);
    assert_int_equal(f->cmd, EWI_STOMP_RECEIPT);
    assert_int_equal(f->nheaders, 0);
    ewi_stomp_frame_free(f);
    ewi_stomp_parser_free(p);
}

/* ---- limits ---------------------------------------------------------------- */

static ewi_stomp_status feed_limited(const ewi_stomp_limits *lim, const uint8_t *data,
                                     size_t len, size_t *consumed, char *err,
                                     size_t errlen)
{
    ewi_stomp_parser *p = ewi_stomp_parser_new(lim);
    ewi_stomp_frame *f[2];
    size_t n;
    ewi_stomp_status st = parse_all(p, data, len, 7, f, 2, &n);
    for (size_t i = 0; i < n; i++)
        ewi_stomp_frame_free(f[i]);
    snprintf(err, errlen, "%s", ewi_stomp_parser_error(p));
    *consumed = n;
    ewi_stomp_parser_free(p);
    return st;
}

static void limits_are_protocol_errors(void **state)
{
    (void)state;
    ewi_stomp_limits lim = { .max_frame = 200, .max_body = 100, .max_headers = 3,
                             .max_header_len = 20 };
    char err[256];
    size_t n;

    assert_int_equal(feed_limited(&lim, LIT("SEND\na:1\nb:2\nc:3\n\n\0"), &n, err, sizeof err),
                     EWI_STOMP_MORE);
    assert_int_equal(n, 1);
    assert_int_equal(feed_limited(&lim, LIT("SEND\na:1\nb:2\nc:3\nd:4\n\n\0"), &n, err, sizeof err),
                     EWI_STOMP_ELIMIT);
    assert_string_equal(err, "more than 3 headers in a SEND frame");

    /* 20 bytes is fine, 21 is not; CRLF does not count against it. */
    assert_int_equal(feed_limited(&lim, LIT("SEND\nk:345678901234567890\r\n\n\0"), &n, err, sizeof err),
                     EWI_STOMP_MORE);
    assert_int_equal(feed_limited(&lim, LIT("SEND\nk:3456789012345678901\n\n\0"), &n, err, sizeof err),
                     EWI_STOMP_ELIMIT);
    assert_string_equal(err, "header line longer than 20 bytes in a SEND frame");

    assert_int_equal(feed_limited(&lim, LIT("SEND\ncontent-length:101\n\n\0"), &n, err, sizeof err),
                     EWI_STOMP_ELIMIT);
    assert_string_equal(err, "content-length 101 is over the body limit of 100 bytes");

    uint8_t big[400];
    memcpy(big, "SEND\n\n", 6);
    memset(big + 6, 'x', sizeof big - 6);
    assert_int_equal(feed_limited(&lim, big, sizeof big, &n, err, sizeof err), EWI_STOMP_ELIMIT);
    assert_string_equal(err, "SEND frame body longer than 100 bytes");

    /* Headers and body within their own limits, over the frame's. */
    ewi_stomp_limits small = { .max_frame = 40, .max_body = 100, .max_headers = 10,
                               .max_header_len = 100 };
    assert_int_equal(feed_limited(&small, LIT("SEND\ndestination:/queue/abcdefghijklmnop\n\n\0"),
                                  &n, err, sizeof err),
                     EWI_STOMP_ELIMIT);
    assert_string_equal(err, "frame larger than 40 bytes");
    assert_int_equal(feed_limited(&small, LIT("SEND\ncontent-length:30\n\n"
                                              "123456789012345678901234567890\0"),
                                  &n, err, sizeof err),
                     EWI_STOMP_ELIMIT);
    assert_string_equal(err, "frame larger than 40 bytes");
}

/* An endless header line or body is refused after the limit, not buffered. */
static void endless_input_is_bounded(void **state)
{
    (void)state;
    ewi_stomp_limits lim = { .max_frame = 4096, .max_body = 1024, .max_headers = 8,
                             .max_header_len = 256 };
    uint8_t chunk[100];
    memset(chunk, 'a', sizeof chunk);
    for (int kind = 0; kind < 2; kind++) {
        ewi_stomp_parser *p = ewi_stomp_parser_new(&lim);
        size_t used, total = 0;
        const char *head = kind ? "SEND\n\n" : "SEND\nk:";
        assert_int_equal(ewi_stomp_parse(p, (const uint8_t *)head, strlen(head), &used),
                         EWI_STOMP_MORE);
        ewi_stomp_status st = EWI_STOMP_MORE;
        for (int i = 0; i < 1000 && st == EWI_STOMP_MORE; i++) {
            st = ewi_stomp_parse(p, chunk, sizeof chunk, &used);
            total += used;
        }
        assert_int_equal(st, EWI_STOMP_ELIMIT);
        assert_true(total <= (kind ? 1024u : 256u));
        ewi_stomp_parser_free(p);
    }
}

/* Skip mode: a MESSAGE over the body limit keeps its headers and the first
 * max_body bytes, the rest is discarded; the next frame parses normally, and
 * the result does not depend on how the input was split. */
static void oversized_message_is_truncated_not_an_error(void **state)
{
    (void)state;
    ewi_stomp_limits lim = { .max_frame = 400, .max_body = 100, .max_headers = 8,
                             .max_header_len = 64 };
    /* with content-length (300 bytes, NULs inside), then without (up to NUL) */
    uint8_t in[1200];
    size_t len = 0;
    const char *h1 = "MESSAGE\nsubscription:7\nmessage-id:m-1\nack:a-1\ncontent-length:300\n\n";
    memcpy(in + len, h1, strlen(h1));
    len += strlen(h1);
    for (int i = 0; i < 300; i++)
        in[len++] = (uint8_t)(i % 7 == 3 ? 0 : 'a' + i % 26);
    in[len++] = 0;
    in[len++] = '\n';
    const char *h2 = "MESSAGE\nsubscription:7\nmessage-id:m-2\nack:a-2\n\n";
    memcpy(in + len, h2, strlen(h2));
    len += strlen(h2);
    memset(in + len, 'z', 250);
    len += 250;
    in[len++] = 0;
    const char *h3 = "RECEIPT\nreceipt-id:r\n\n";
    memcpy(in + len, h3, strlen(h3) + 1);
    len += strlen(h3) + 1;

    for (size_t chunk = 0; chunk <= 13; chunk++) {
        ewi_stomp_parser *p = ewi_stomp_parser_new(&lim);
        ewi_stomp_frame *f[4] = { 0 };
        size_t n = 0;
        assert_int_equal(parse_all(p, in, len, chunk, f, 4, &n), EWI_STOMP_MORE);
        assert_int_equal(n, 3);
        assert_int_equal(f[0]->cmd, EWI_STOMP_MESSAGE);
        assert_true(f[0]->truncated);
        assert_int_equal(f[0]->body_len, 100);
        assert_int_equal(f[0]->wire_body_len, 300);
        assert_memory_equal(f[0]->body, in + strlen(h1), 100);
        assert_int_equal(f[0]->body[100], 0);
        assert_string_equal(ewi_stomp_frame_get(f[0], "ack"), "a-1");
        assert_string_equal(ewi_stomp_frame_get(f[0], "message-id"), "m-1");
        assert_string_equal(ewi_stomp_frame_get(f[0], "subscription"), "7");
        assert_true(f[1]->truncated);
        assert_int_equal(f[1]->body_len, 100);
        assert_int_equal(f[1]->wire_body_len, 250);
        assert_string_equal(ewi_stomp_frame_get(f[1], "ack"), "a-2");
        assert_int_equal(f[2]->cmd, EWI_STOMP_RECEIPT);
        assert_false(f[2]->truncated);
        for (size_t i = 0; i < n; i++)
            ewi_stomp_frame_free(f[i]);
        ewi_stomp_parser_free(p);
    }

    /* At the limit exactly: whole, not truncated. */
    ewi_stomp_parser *p = ewi_stomp_parser_new(&lim);
    uint8_t ok[200];
    const char *h = "MESSAGE\ncontent-length:100\n\n";
    memcpy(ok, h, strlen(h));
    memset(ok + strlen(h), 'q', 100);
    ok[strlen(h) + 100] = 0;
    ewi_stomp_frame *g[2];
    size_t n;
    assert_int_equal(parse_all(p, ok, strlen(h) + 101, 0, g, 2, &n), EWI_STOMP_MORE);
    assert_int_equal(n, 1);
    assert_false(g[0]->truncated);
    assert_int_equal(g[0]->body_len, 100);
    assert_int_equal(g[0]->wire_body_len, 100);
    ewi_stomp_frame_free(g[0]);
    ewi_stomp_parser_free(p);
}

/* An endless MESSAGE body is read in bounded memory (skip mode never ends
 * without a NUL, but it never buffers either); a content-length body is
 * skipped however long it says it is. */
static void skip_mode_memory_is_bounded(void **state)
{
    (void)state;
    ewi_stomp_limits lim = { .max_frame = 4096, .max_body = 1024, .max_headers = 8,
                             .max_header_len = 256 };
    uint8_t chunk[4096];
    memset(chunk, 'b', sizeof chunk);
    ewi_stomp_parser *p = ewi_stomp_parser_new(&lim);
    size_t used;
    const char *head = "MESSAGE\nack:x\ncontent-length:100000000\n\n";
    assert_int_equal(ewi_stomp_parse(p, (const uint8_t *)head, strlen(head), &used),
                     EWI_STOMP_MORE);
    size_t total = 0;
    while (total < 100000000u) {
        size_t k = 100000000u - total < sizeof chunk ? 100000000u - total : sizeof chunk;
        assert_int_equal(ewi_stomp_parse(p, chunk, k, &used), EWI_STOMP_MORE);
        assert_int_equal(used, k);
        total += k;
    }
    assert_int_equal(ewi_stomp_parse(p, (const uint8_t *)"", 1, &used), EWI_STOMP_FRAME);
    ewi_stomp_frame *f = ewi_stomp_parser_take(p);
    assert_true(f->truncated);
    assert_int_equal(f->body_len, 1024);
    assert_int_equal(f->wire_body_len, 100000000u);
    ewi_stomp_frame_free(f);
    ewi_stomp_parser_free(p);
}

/* Other commands over the body limit, and too many or too long headers on
 * any frame, stay errors; the headers parsed before the error can be read. */
static void skip_mode_is_for_message_bodies_only(void **state)
{
    (void)state;
    ewi_stomp_limits lim = { .max_frame = 400, .max_body = 10, .max_headers = 3,
                             .max_header_len = 30 };
    char err[256];
    size_t n;
    assert_int_equal(feed_limited(&lim, LIT("ERROR\ncontent-length:11\n\n12345678901\0"), &n,
                                  err, sizeof err),
                     EWI_STOMP_ELIMIT);
    assert_string_equal(err, "content-length 11 is over the body limit of 10 bytes");
    assert_int_equal(feed_limited(&lim, LIT("MESSAGE\na:1\nb:2\nc:3\nd:4\n\n\0"), &n, err,
                                  sizeof err),
                     EWI_STOMP_ELIMIT);
    assert_string_equal(err, "more than 3 headers in a MESSAGE frame");

    ewi_stomp_parser *p = ewi_stomp_parser_new(&lim);
    size_t used;
    const uint8_t bad[] = "MESSAGE\nsubscription:4\nmessage-id:m\\c9\nk:0123456789012345678901234567890\n\n";
    assert_int_equal(ewi_stomp_parse(p, bad, sizeof bad - 1, &used), EWI_STOMP_ELIMIT);
    assert_string_equal(ewi_stomp_parser_partial_header(p, "subscription"), "4");
    assert_string_equal(ewi_stomp_parser_partial_header(p, "message-id"), "m:9");
    assert_null(ewi_stomp_parser_partial_header(p, "ack"));
    ewi_stomp_parser_reset(p);
    assert_null(ewi_stomp_parser_partial_header(p, "subscription"));
    ewi_stomp_parser_free(p);
}

/* ---- serializer ------------------------------------------------------------ */

static void serializer_escapes_values(void **state)
{
    (void)state;
    ewi_buf out = { 0 };
    ewi_stomp_writer w;
    ewi_stomp_write_begin(&w, &out, EWI_STOMP_SEND);
    ewi_stomp_write_header(&w, "destination", "/queue/a");
    /* An attempt to inject a header and a whole frame through a value. */
    ewi_stomp_write_header(&w, "x:y", "v\ndestination:/queue/evil\n\nSEND\n\\r\r");
    assert_int_equal(ewi_stomp_write_end(&w, "hi", 2, true), EW_OK);
    static const char want[] = "SEND\ndestination:/queue/a\n"
                               "x\\cy:v\\ndestination\\c/queue/evil\\n\\nSEND\\n\\\\r\\r\n"
                               "content-length:2\n\nhi";
    assert_int_equal(out.len, sizeof want); /* with the NUL */
    assert_memory_equal(out.data, want, sizeof want);

    ewi_stomp_frame *f = one(out.data, out.len);
    assert_int_equal(f->nheaders, 3);
    assert_string_equal(ewi_stomp_frame_get(f, "destination"), "/queue/a");
    assert_string_equal(ewi_stomp_frame_get(f, "x:y"),
                        "v\ndestination:/queue/evil\n\nSEND\n\\r\r");
    ewi_stomp_frame_free(f);
    ewi_buf_free(&out);
}

/* A header given as C strings and the same header given with its lengths
 * give the same bytes, whether or not (and wherever) something needs an
 * escape, on escaped and unescaped frames alike. */
static void serializer_c_strings_match_counted(void **state)
{
    (void)state;
    static const char *const vals[] = {"", "plain", ":lead", "trail:", "mid:dle",
                                       "a\\b", "\n", "x\ry", "long value without any "
                                       "escape at all, past sixteen bytes"};
    static const ewi_stomp_cmd cmds[] = {EWI_STOMP_SEND, EWI_STOMP_ACK, EWI_STOMP_CONNECT};
    for (size_t c = 0; c < sizeof cmds / sizeof cmds[0]; c++)
        for (size_t k = 0; k < sizeof vals / sizeof vals[0]; k++)
            for (size_t v = 0; v < sizeof vals / sizeof vals[0]; v++) {
                ewi_buf a = {0}, b = {0};
                ewi_stomp_writer wa, wb;
                ewi_stomp_write_begin(&wa, &a, cmds[c]);
                ewi_stomp_write_header(&wa, vals[k], vals[v]);
                ew_err ea = ewi_stomp_write_end(&wa, NULL, 0, false);
                ewi_stomp_write_begin(&wb, &b, cmds[c]);
                ewi_stomp_write_header_n(&wb, vals[k], strlen(vals[k]), vals[v],
                                         strlen(vals[v]));
                ew_err eb = ewi_stomp_write_end(&wb, NULL, 0, false);
                if (ea != eb || a.len != b.len || (a.len && memcmp(a.data, b.data, a.len)))
                    fail_msg("cmd %d, header '%s':'%s': C strings and lengths differ",
                             (int)cmds[c], vals[k], vals[v]);
                if (!ea && cmds[c] != EWI_STOMP_CONNECT) {
                    ewi_stomp_frame *f = one(a.data, a.len);
                    assert_string_equal(f->headers[0].key, vals[k]);
                    assert_string_equal(f->headers[0].value, vals[v]);
                    ewi_stomp_frame_free(f);
                }
                ewi_buf_free(&a);
                ewi_buf_free(&b);
            }
}

/* Header lines read whole from one buffer and byte by byte agree, for lines
 * that need no unescaping and lines around them that do. */
static void header_lines_whole_and_split_agree(void **state)
{
    (void)state;
    ewi_stomp_frame *f = one(LIT("MESSAGE\r\nplain:value\r\nk:v:w\n"
                                 "esc:a\\cb\\\\c\r\nx:\nlast:one\n\nbody\0"));
    assert_int_equal(f->nheaders, 5);
    assert_string_equal(ewi_stomp_frame_get(f, "plain"), "value");
    assert_string_equal(ewi_stomp_frame_get(f, "k"), "v:w");
    assert_string_equal(ewi_stomp_frame_get(f, "esc"), "a:b\\c");
    assert_string_equal(ewi_stomp_frame_get(f, "x"), "");
    assert_string_equal(ewi_stomp_frame_get(f, "last"), "one");
    assert_string_equal((const char *)f->body, "body");
    ewi_stomp_frame_free(f);
    bad(LIT("MESSAGE\nok:1\nbad:a\rb\n\n"), EWI_STOMP_EBAD, "CR not followed by LF");
    bad(LIT("MESSAGE\nok:1\n:novalue\n\n"), EWI_STOMP_EBAD, "empty name");
}

static void serializer_refuses_what_it_cannot_write(void **state)
{
    (void)state;
    ewi_buf out = { 0 };
    ewi_buf_append(&out, "keep", 4);
    ewi_stomp_writer w;

    /* CONNECT is not escaped: no line breaks, no ':' in names. */
    ewi_stomp_write_begin(&w, &out, EWI_STOMP_CONNECT);
    ewi_stomp_write_header(&w, "login", "a\nb");
    assert_int_equal(ewi_stomp_write_end(&w, NULL, 0, false), EW_EINVAL);
    assert_int_equal(out.len, 4);
    ewi_stomp_write_begin(&w, &out, EWI_STOMP_CONNECT);
    ewi_stomp_write_header(&w, "a:b", "c");
    assert_int_equal(ewi_stomp_write_end(&w, NULL, 0, false), EW_EINVAL);
    ewi_stomp_write_begin(&w, &out, EWI_STOMP_CONNECT);
    ewi_stomp_write_header(&w, "passcode", "p\r");
    assert_int_equal(ewi_stomp_write_end(&w, NULL, 0, false), EW_EINVAL);
    assert_int_equal(out.len, 4);

    /* A ':' or '\' in a CONNECT value is fine and arrives unchanged. */
    ewi_stomp_write_begin(&w, &out, EWI_STOMP_CONNECT);
    ewi_stomp_write_header(&w, "passcode", "p:a\\ss");
    assert_int_equal(ewi_stomp_write_end(&w, NULL, 0, false), EW_OK);
    ewi_stomp_frame *f = one(out.data + 4, out.len - 4);
    assert_string_equal(ewi_stomp_frame_get(f, "passcode"), "p:a\\ss");
    ewi_stomp_frame_free(f);
    out.len = 4;

    /* NUL and empty names anywhere. */
    ewi_stomp_write_begin(&w, &out, EWI_STOMP_SEND);
    ewi_stomp_write_header_n(&w, "k", 1, "a\0b", 3);
    assert_int_equal(ewi_stomp_write_end(&w, NULL, 0, true), EW_EINVAL);
    ewi_stomp_write_begin(&w, &out, EWI_STOMP_SEND);
    ewi_stomp_write_header(&w, "", "v");
    assert_int_equal(ewi_stomp_write_end(&w, NULL, 0, true), EW_EINVAL);
    ewi_stomp_write_begin(&w, &out, EWI_STOMP_NONE);
    assert_int_equal(ewi_stomp_write_end(&w, NULL, 0, true), EW_EINVAL);
    assert_int_equal(out.len, 4);
    assert_memory_equal(out.data, "keep", 4);
    ewi_buf_free(&out);
}

static void write_frame_round_trips(void **state)
{
    (void)state;
    ewi_stomp_frame *f = one(LIT("MESSAGE\nk\\c:\\n\\\\\ncontent-length:3\nk\\c:2\n"
                                 "h\xc3\xa9llo:w\xc3\xb6rld\n\na\0b\0\n"));
    ewi_buf out = { 0 };
    assert_int_equal(ewi_stomp_write_frame(&out, f), EW_OK);
    ewi_stomp_frame *g = one(out.data, out.len);
    assert_int_equal(g->cmd, EWI_STOMP_MESSAGE);
    assert_string_equal(ewi_stomp_frame_get(g, "k:"), "\n\\");
    assert_string_equal(g->headers[1].value, "2");
    assert_string_equal(ewi_stomp_frame_get(g, "h\xc3\xa9llo"), "w\xc3\xb6rld");
    assert_string_equal(ewi_stomp_frame_get(g, "content-length"), "3");
    assert_memory_equal(g->body, "a\0b", 3);
    ewi_stomp_frame_free(f);
    ewi_stomp_frame_free(g);
    ewi_buf_free(&out);
}

static void command_names(void **state)
{
    (void)state;
    assert_string_equal(ewi_stomp_cmd_name(EWI_STOMP_UNSUBSCRIBE), "UNSUBSCRIBE");
    assert_string_equal(ewi_stomp_cmd_name((ewi_stomp_cmd)99), "?");
    assert_true(ewi_stomp_cmd_raw_headers(EWI_STOMP_CONNECTED));
    assert_false(ewi_stomp_cmd_raw_headers(EWI_STOMP_MESSAGE));
    /* Every command parses back to itself. */
    for (int c = EWI_STOMP_CONNECT; c <= EWI_STOMP_ERROR; c++) {
        ewi_buf out = { 0 };
        ewi_stomp_writer w;
        ewi_stomp_write_begin(&w, &out, (ewi_stomp_cmd)c);
        assert_int_equal(ewi_stomp_write_end(&w, NULL, 0, false), EW_OK);
        ewi_stomp_frame *f = one(out.data, out.len);
        assert_int_equal(f->cmd, c);
        ewi_stomp_frame_free(f);
        ewi_buf_free(&out);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(spec_connect),
        cmocka_unit_test(spec_send_and_message),
        cmocka_unit_test(spec_receipt_and_error),
        cmocka_unit_test(repeated_headers_first_wins),
        cmocka_unit_test(escapes_decode),
        cmocka_unit_test(unescaped_colon_in_value_is_literal),
        cmocka_unit_test(connect_frames_are_not_unescaped),
        cmocka_unit_test(undefined_escapes_are_errors),
        cmocka_unit_test(content_length_body_with_nuls),
        cmocka_unit_test(body_without_length_ends_at_nul),
        cmocka_unit_test(missing_nul_after_length_body),
        cmocka_unit_test(bad_content_lengths),
        cmocka_unit_test(crlf_line_ends),
        cmocka_unit_test(heartbeats_between_frames),
        cmocka_unit_test(bare_cr_is_an_error),
        cmocka_unit_test(parser_stops_after_each_frame),
        cmocka_unit_test(malformed_frames),
        cmocka_unit_test(errors_are_sticky_until_reset),
        cmocka_unit_test(limits_are_protocol_errors),
        cmocka_unit_test(endless_input_is_bounded),
        cmocka_unit_test(oversized_message_is_truncated_not_an_error),
        cmocka_unit_test(skip_mode_memory_is_bounded),
        cmocka_unit_test(skip_mode_is_for_message_bodies_only),
        cmocka_unit_test(serializer_escapes_values),
        cmocka_unit_test(serializer_c_strings_match_counted),
        cmocka_unit_test(header_lines_whole_and_split_agree),
        cmocka_unit_test(serializer_refuses_what_it_cannot_write),
        cmocka_unit_test(write_frame_round_trips),
        cmocka_unit_test(command_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
