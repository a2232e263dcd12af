/* Fuzz target for the AMQP 1.0 message codec (envelope side). Checks,
 * aborting on any difference:
 *   - decoding never fails for anything but memory (bad input still gives
 *     an envelope, raw bytes under a content type no codec claims);
 *   - an envelope that decoded cleanly encodes, and decoding that gives the
 *     same body, content type and headers back;
 *   - encoding that second envelope gives the same bytes again;
 *   - decoding in place (the common shapes) and through proton's decoder
 *     give the same result, envelope and wire fields, header order included. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "transports/amqp/amqp10.h"

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_amqp_message: %s\n", what);
        abort();
    }
}

static void same_envelope(const ew_envelope *a, const ew_envelope *b)
{
    size_t la, lb;
    const void *ba = ew_envelope_body(a, &la), *bb = ew_envelope_body(b, &lb);
    check(la == lb && (la == 0 || memcmp(ba, bb, la) == 0), "body differs");
    check(strcmp(ew_envelope_content_type(a), ew_envelope_content_type(b)) == 0,
          "content type differs");
    check(ew_envelope_header_count(a) == ew_envelope_header_count(b),
          "header count differs");
    for (size_t i = 0; i < ew_envelope_header_count(a); i++) {
        const char *k, *v;
        check(ew_envelope_header_at(a, i, &k, &v) == EW_OK, "header_at");
        const char *w = ew_envelope_header(b, k);
        check(w && strcmp(v, w) == 0, "header value differs");
    }
}

/* The same headers in the same order. */
static void same_order(const ew_envelope *a, const ew_envelope *b)
{
    check(ew_envelope_header_count(a) == ew_envelope_header_count(b),
          "in place / proton: header count differs");
    for (size_t i = 0; i < ew_envelope_header_count(a); i++) {
        const char *ka, *va, *kb, *vb;
        check(ew_envelope_header_at(a, i, &ka, &va) == EW_OK &&
                  ew_envelope_header_at(b, i, &kb, &vb) == EW_OK,
              "header_at");
        check(strcmp(ka, kb) == 0 && strcmp(va, vb) == 0,
              "in place / proton: header differs");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[512], err2[512];
    ew_envelope *env = ewi_envelope_new();
    check(env != NULL, "out of memory");
    amqp10_wire_meta m1, m2;
    ew_err rc = amqp10_message_decode((const char *)data, size, env, &m1, err, sizeof err);
    check(rc == EW_OK || rc == EW_EDECODE, "decode failed without an envelope");
    ew_envelope *gen = ewi_envelope_new();
    check(gen != NULL, "out of memory");
    ew_err rc2 = amqp10_message_decode_generic((const char *)data, size, gen, &m2, err2,
                                               sizeof err2);
    check(rc == rc2, "in place / proton: results differ");
    check(rc != EW_EDECODE || strcmp(err, err2) == 0, "in place / proton: errors differ");
    same_envelope(env, gen);
    same_order(env, gen);
    check(m1.durable == m2.durable && m1.first_acquirer == m2.first_acquirer &&
              m1.delivery_count == m2.delivery_count,
          "in place / proton: header fields differ");
    ewi_envelope_unref(gen);
    if (rc == EW_OK) {
        uint8_t *b1, *b2;
        size_t n1, n2;
        check(amqp10_message_encode(env, false, &b1, &n1, err, sizeof err) == EW_OK,
              "re-encode failed");
        ew_envelope *back = ewi_envelope_new();
        check(amqp10_message_decode((const char *)b1, n1, back, NULL, err, sizeof err) ==
                  EW_OK,
              "decoding our own encoding failed");
        same_envelope(env, back);
        check(amqp10_message_encode(back, false, &b2, &n2, err, sizeof err) == EW_OK,
              "second encode failed");
        check(n1 == n2 && memcmp(b1, b2, n1) == 0, "encoding is not stable");
        free(b1);
        free(b2);
        ewi_envelope_unref(back);
    }
    ewi_envelope_unref(env);
    return 0;
}
