/* Event types shared by two translation units (split_types.c defines them,
 * test_schema_split.c uses them): one typedef name, one bare struct tag. */
#ifndef EW_TEST_SPLIT_TYPES_H
#define EW_TEST_SPLIT_TYPES_H

#include <eventwire/eventwire.h>

typedef struct split_line {
    const char *sku;
    uint32_t qty;
} split_line;
EW_TYPE_DECLARE(split_line);

/* No typedef: known as `struct split_order` only. */
struct split_order {
    int64_t id;
    split_line *lines;
    size_t nlines;
    bool has_first;
    split_line first;
};
EW_STRUCT_TYPE_DECLARE(split_order);

/* Defined in split_types.c: a value of every field, for round trips. */
struct split_order split_sample(void);

#endif
