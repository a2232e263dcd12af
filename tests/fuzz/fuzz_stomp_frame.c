/* Fuzz target for the STOMP frame codec. The first input byte picks how the
 * rest is split (bits 0-3: chunk size, 0 = all at once) and the limits (bit
 * 4: small ones). Checks, aborting on any difference:
 *   - parsing in chunks gives the same frames, status and error text as
 *     parsing all at once;
 *   - every parsed frame serializes, and parsing that gives the same frame
 *     back (content-length aside, which the serializer always writes);
 *   - serializing the re-parsed frame gives the same bytes again. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "transports/stomp/frame.h"

#define MAX_FRAMES 64

typedef struct parsed {
    ewi_stomp_frame *frames[MAX_FRAMES];
    size_t n, dropped;
    ewi_stomp_status status;
    char error[256];
} parsed;

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_stomp_frame: %s\n", what);
        abort();
    }
}

static void parse_chunked(const ewi_stomp_limits *lim, const uint8_t *data,
                          size_t len, size_t chunk, parsed *out)
{
    memset(out, 0, sizeof *out);
    ewi_stomp_parser *p = ewi_stomp_parser_new(lim);
    check(p != NULL, "parser_new");
    size_t off = 0;
    ewi_stomp_status st = EWI_STOMP_MORE;
    while (off < len && (st == EWI_STOMP_MORE || st == EWI_STOMP_FRAME)) {
        size_t take = chunk && chunk < len - off ? chunk : len - off;
        size_t pos = 0;
        while (pos < take) {
            size_t used;
            st = ewi_stomp_parse(p, data + off + pos, take - pos, &used);
            check(used <= take - pos, "used past the input");
            pos += used;
            if (st == EWI_STOMP_FRAME) {
                ewi_stomp_frame *f = ewi_stomp_parser_take(p);
                check(f != NULL, "FRAME without a frame");
                check(f->body[f->body_len] == 0, "body not NUL-terminated");
                if (out->n < MAX_FRAMES)
                    out->frames[out->n++] = f;
                else {
                    out->dropped++;
                    ewi_stomp_frame_free(f);
                }
            } else if (st != EWI_STOMP_MORE) {
                break;
            } else {
                check(pos == take, "MORE before the end of the input");
            }
        }
        off += take;
    }
    out->status = st == EWI_STOMP_FRAME ? EWI_STOMP_MORE : st;
    snprintf(out->error, sizeof out->error, "%s", ewi_stomp_parser_error(p));
    ewi_stomp_parser_free(p);
}

static void parsed_free(parsed *p)
{
    for (size_t i = 0; i < p->n; i++)
        ewi_stomp_frame_free(p->frames[i]);
}

static int is_length(const ewi_stomp_header *h)
{
    return h->klen == 14 && memcmp(h->key, "content-length", 14) == 0;
}

/* Same command, body and headers (in order, content-length headers aside
 * unless with_length). */
static int same_frame(const ewi_stomp_frame *a, const ewi_stomp_frame *b,
                      int with_length)
{
    if (a->cmd != b->cmd || a->body_len != b->body_len ||
        memcmp(a->body, b->body, a->body_len) != 0)
        return 0;
    size_t i = 0, j = 0;
    for (;;) {
        while (i < a->nheaders && !with_length && is_length(&a->headers[i]))
            i++;
        while (j < b->nheaders && !with_length && is_length(&b->headers[j]))
            j++;
        if (i == a->nheaders || j == b->nheaders)
            return i == a->nheaders && j == b->nheaders;
        const ewi_stomp_header *x = &a->headers[i++], *y = &b->headers[j++];
        if (x->klen != y->klen || x->vlen != y->vlen ||
            memcmp(x->key, y->key, x->klen) != 0 ||
            memcmp(x->value, y->value, x->vlen) != 0 ||
            strlen(x->key) != x->klen || strlen(x->value) != x->vlen)
            return 0;
    }
}

static void round_trip(const ewi_stomp_limits *lim, const ewi_stomp_frame *f)
{
    /* Escaping can double a header line; content-length can be added. */
    ewi_stomp_limits roomy = { .max_frame = 2 * lim->max_frame + 64,
                               .max_body = lim->max_body,
                               .max_headers = lim->max_headers + 1,
                               .max_header_len = 2 * lim->max_header_len + 32 };
    ewi_buf out = { 0 };
    check(ewi_stomp_write_frame(&out, f) == EW_OK, "a parsed frame does not serialize");
    parsed again;
    parse_chunked(&roomy, out.data, out.len, 0, &again);
    if (again.status != EWI_STOMP_MORE)
        fprintf(stderr, "re-parse: %s\n", again.error);
    check(again.status == EWI_STOMP_MORE && again.n == 1,
          "a serialized frame does not parse back as one frame");
    check(same_frame(f, again.frames[0], 0), "round trip changed the frame");
    ewi_buf out2 = { 0 };
    check(ewi_stomp_write_frame(&out2, again.frames[0]) == EW_OK, "second serialize");
    check(out.len == out2.len && memcmp(out.data, out2.data, out.len) == 0,
          "serializing is not stable");
    parsed_free(&again);
    ewi_buf_free(&out);
    ewi_buf_free(&out2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t mode = data[0];
    data++;
    size--;
    ewi_stomp_limits lim = ewi_stomp_default_limits();
    if (mode & 0x10)
        lim = (ewi_stomp_limits){ .max_frame = 512, .max_body = 256,
                                  .max_headers = 8, .max_header_len = 64 };
    size_t chunk = mode & 0x0f;

    parsed whole, split;
    parse_chunked(&lim, data, size, 0, &whole);
    parse_chunked(&lim, data, size, chunk, &split);
    check(whole.status == split.status, "status depends on the split");
    check(strcmp(whole.error, split.error) == 0, "error text depends on the split");
    check((whole.status == EWI_STOMP_MORE) == (whole.error[0] == 0),
          "an error without text, or text without an error");
    check(whole.n == split.n && whole.dropped == split.dropped,
          "frame count depends on the split");
    for (size_t i = 0; i < whole.n; i++) {
        check(same_frame(whole.frames[i], split.frames[i], 1),
              "frames depend on the split");
        check(whole.frames[i]->truncated == split.frames[i]->truncated &&
                  whole.frames[i]->wire_body_len == split.frames[i]->wire_body_len,
              "skip mode depends on the split");
        check(whole.frames[i]->body_len <= lim.max_body, "body over the limit kept");
        check(!whole.frames[i]->truncated ||
                  (whole.frames[i]->cmd == EWI_STOMP_MESSAGE &&
                   whole.frames[i]->wire_body_len > whole.frames[i]->body_len),
              "truncated without a reason");
        round_trip(&lim, whole.frames[i]);
    }
    parsed_free(&whole);
    parsed_free(&split);
    return 0;
}
