#ifndef EVENTWIRE_VERSION_H
#define EVENTWIRE_VERSION_H

#include <eventwire/export.h>

#define EW_VERSION_MAJOR 0
#define EW_VERSION_MINOR 1
#define EW_VERSION_PATCH 0
#define EW_VERSION_STRING "0.1.0"

EW_BEGIN_DECLS
/* The library's version text, e.g. "0.1.0". Thread-safe. */
EW_API const char *ew_version(void);
EW_END_DECLS

#endif
