/* The one definition of the types split_types.h declares. */
#include "split_types.h"

EW_TYPE(split_line, EW_FIELD(split_line, sku, EW_STRING), EW_FIELD(split_line, qty, EW_UINT32));

EW_STRUCT_TYPE(split_order,
               EW_FIELD(struct split_order, id, EW_INT64),
               EW_NESTED_ARRAY(struct split_order, lines, split_line, nlines),
               EW_OPTIONAL_NESTED(struct split_order, first, split_line, has_first));

struct split_order split_sample(void)
{
    static split_line lines[2] = {{"a-1", 2}, {"b-2", 3}};
    return (struct split_order){.id = 42, .lines = lines, .nlines = 2, .has_first = true,
                                .first = {"first", 1}};
}
