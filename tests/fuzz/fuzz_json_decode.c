/* Fuzzes the JSON body decoder with a schema using every feature (nested,
 * recursive, arrays, optional, map, bytes). A body that decodes must
 * re-encode, decode again and re-encode to the same text, and survive a trip
 * through msgpack unchanged. */
#define FUZZ_NAME "fuzz_json_decode"
#include "fuzz_schema.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[512] = "";
    void *ev = NULL;
    ew_err rc = ew_decode(&fz_event_type, EW_FORMAT_JSON, data, size, NULL, &ev, err,
                          sizeof err);
    if (rc != EW_OK) {
        check(ev == NULL, "failed decode returned an event", err);
        check(rc == EW_EDECODE, "unexpected error code", err);
        check(strncmp(err, "fz_event", 8) == 0, "error without the type name", err);
        return 0;
    }
    /* Whatever JSON decoded, JSON can carry again. */
    uint8_t *e1 = NULL, *e2 = NULL, *m = NULL, *e3 = NULL;
    size_t l1 = 0, l2 = 0, ml = 0, l3 = 0;
    void *ev2 = NULL, *ev3 = NULL;
    rc = ew_encode(&fz_event_type, EW_FORMAT_JSON, ev, &e1, &l1, err, sizeof err);
    check(rc == EW_OK, "decoded event does not encode", err);
    rc = ew_decode(&fz_event_type, EW_FORMAT_JSON, e1, l1, NULL, &ev2, err, sizeof err);
    check(rc == EW_OK, "re-encoded body does not decode", err);
    rc = ew_encode(&fz_event_type, EW_FORMAT_JSON, ev2, &e2, &l2, err, sizeof err);
    check(rc == EW_OK, "second encode failed", err);
    check(l1 == l2 && memcmp(e1, e2, l1) == 0, "re-encoding is not stable", NULL);

    /* msgpack carries everything JSON does: the same event comes back. */
    rc = ew_encode(&fz_event_type, EW_FORMAT_MSGPACK, ev, &m, &ml, err, sizeof err);
    check(rc == EW_OK, "msgpack encode failed", err);
    rc = ew_decode(&fz_event_type, EW_FORMAT_MSGPACK, m, ml, NULL, &ev3, err, sizeof err);
    check(rc == EW_OK, "msgpack round trip does not decode", err);
    rc = ew_encode(&fz_event_type, EW_FORMAT_JSON, ev3, &e3, &l3, err, sizeof err);
    check(rc == EW_OK, "msgpack round trip does not encode", err);
    check(l3 == l1 && memcmp(e3, e1, l1) == 0, "msgpack round trip changed the event", NULL);

    free(e1);
    free(e2);
    free(e3);
    free(m);
    ew_event_free(&fz_event_type, ev3);
    ew_event_free(&fz_event_type, ev2);
    ew_event_free(&fz_event_type, ev);
    return 0;
}
