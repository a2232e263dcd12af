/* The schema both codec fuzz targets decode into: every feature of the
 * schema language (nested, recursive through optional nesting, arrays,
 * optional fields, maps, bytes). Define FUZZ_NAME before including. */
#ifndef EW_FUZZ_SCHEMA_H
#define EW_FUZZ_SCHEMA_H

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
        fprintf(stderr, "%s: %s: %s\n", FUZZ_NAME, what, err ? err : "");
        abort();
    }
}

#endif
