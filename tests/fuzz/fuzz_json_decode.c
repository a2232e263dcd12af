/* Fuzzes the JSON body decoder with a schema using every feature (nested,
 * recursive, arrays, optional, map, bytes). A body that decodes must
 * re-encode, decode again and re-encode to the same text, and survive a trip
 * through msgpack unchanged. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <eventwire/codec.h>

typedef struct fz_leaf {
    const char *name;
    int32_t n;
    bool has_b;
    ew_bytes b;
    double *vals;
    size_t nvals;
} fz_leaf;
EW_TYPE(fz_leaf, EW_FIELD(fz_leaf, name, EW_STRING), EW_FIELD(fz_leaf, n, EW_INT32),
        EW_OPTIONAL(fz_leaf, b, EW_BYTES, has_b), EW_ARRAY(fz_leaf, vals, EW_DOUBLE, nvals));

typedef struct fz_node {
    const char *v;
    struct fz_node *kids;
    size_t nkids;
} fz_node;
EW_DECLARE_TYPE(fz_node);
EW_TYPE(fz_node, EW_FIELD(fz_node, v, EW_STRING), EW_NESTED_ARRAY(fz_node, kids, fz_node, nkids));

typedef struct fz_event {
    uint64_t id;
    bool has_small;
    int8_t small;
    bool has_f;
    float f;
    bool has_flag;
    bool flag;
    bool has_s;
    const char *s;
    bool has_main;
    fz_leaf main;
    fz_leaf *leaves;
    size_t nleaves;
    bool has_tags;
    ew_map tags;
    bool has_blob;
    ew_bytes blob;
    const char **names;
    size_t nnames;
    bool has_tree;
    fz_node tree;
    uint16_t *ports;
    size_t nports;
} fz_event;
EW_TYPE(fz_event,
        EW_FIELD(fz_event, id, EW_UINT64),
        EW_OPTIONAL(fz_event, small, EW_INT8, has_small),
        EW_OPTIONAL(fz_event, f, EW_FLOAT, has_f),
        EW_OPTIONAL(fz_event, flag, EW_BOOL, has_flag),
        EW_OPTIONAL(fz_event, s, EW_STRING, has_s),
        EW_OPTIONAL_NESTED(fz_event, main, fz_leaf, has_main),
        EW_NESTED_ARRAY(fz_event, leaves, fz_leaf, nleaves),
        EW_OPTIONAL(fz_event, tags, EW_MAP, has_tags),
        EW_OPTIONAL(fz_event, blob, EW_BYTES, has_blob),
        EW_ARRAY(fz_event, names, EW_STRING, nnames),
        EW_OPTIONAL_NESTED(fz_event, tree, fz_node, has_tree),
        EW_ARRAY(fz_event, ports, EW_UINT16, nports));

static void check(int ok, const char *what, const char *err)
{
    if (!ok) {
        fprintf(stderr, "fuzz_json_decode: %s: %s\n", what, err ? err : "");
        abort();
    }
}

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
