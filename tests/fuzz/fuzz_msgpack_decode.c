/* Fuzzes the msgpack body decoder with a schema using every feature
 * (nested, recursive, arrays, optional, map, bytes). A body that decodes
 * must re-encode, decode again and re-encode to the same bytes; if JSON can
 * carry it, the JSON round trip must give the same event back. */
#define FUZZ_NAME "fuzz_msgpack_decode"
#include "fuzz_schema.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[512] = "";
    void *ev = NULL;
    ew_err rc = ew_decode(&fz_event_type, EW_FORMAT_MSGPACK, data, size, NULL, &ev,
                          err, sizeof err);
    if (rc != EW_OK) {
        check(ev == NULL, "failed decode returned an event", err);
        check(rc == EW_EDECODE, "unexpected error code", err);
        check(strncmp(err, "fz_event", 8) == 0, "error without the type name", err);
        return 0;
    }
    uint8_t *e1 = NULL, *e2 = NULL;
    size_t l1 = 0, l2 = 0;
    void *ev2 = NULL;
    rc = ew_encode(&fz_event_type, EW_FORMAT_MSGPACK, ev, &e1, &l1, err, sizeof err);
    check(rc == EW_OK, "decoded event does not encode", err);
    rc = ew_decode(&fz_event_type, EW_FORMAT_MSGPACK, e1, l1, NULL, &ev2, err, sizeof err);
    check(rc == EW_OK, "re-encoded body does not decode", err);
    rc = ew_encode(&fz_event_type, EW_FORMAT_MSGPACK, ev2, &e2, &l2, err, sizeof err);
    check(rc == EW_OK, "second encode failed", err);
    check(l1 == l2 && memcmp(e1, e2, l1) == 0, "re-encoding is not stable", NULL);

    /* Through JSON when it can carry the event (not NaN, infinities, uint64
     * above int64, duplicate map keys): the same event comes back. */
    uint8_t *j = NULL;
    size_t jl = 0;
    rc = ew_encode(&fz_event_type, EW_FORMAT_JSON, ev, &j, &jl, err, sizeof err);
    if (rc == EW_OK) {
        void *ev3 = NULL;
        uint8_t *e3 = NULL;
        size_t l3 = 0;
        rc = ew_decode(&fz_event_type, EW_FORMAT_JSON, j, jl, NULL, &ev3, err, sizeof err);
        check(rc == EW_OK, "JSON of a decoded event does not decode", err);
        rc = ew_encode(&fz_event_type, EW_FORMAT_MSGPACK, ev3, &e3, &l3, err, sizeof err);
        check(rc == EW_OK, "JSON round trip does not encode", err);
        check(l3 == l1 && memcmp(e3, e1, l1) == 0, "JSON round trip changed the event", NULL);
        free(e3);
        ew_event_free(&fz_event_type, ev3);
        free(j);
    } else {
        check(rc == EW_EENCODE, "JSON encode failed oddly", err);
    }
    free(e1);
    free(e2);
    ew_event_free(&fz_event_type, ev2);
    ew_event_free(&fz_event_type, ev);
    return 0;
}
