/* eventwire: typed events between services over a message broker.
 * The umbrella header: include this one. */
#ifndef EVENTWIRE_EVENTWIRE_H
#define EVENTWIRE_EVENTWIRE_H

#include <eventwire/export.h>
#include <eventwire/error.h>
#include <eventwire/log.h>
#include <eventwire/schema.h>
#include <eventwire/codec.h>
#include <eventwire/envelope.h>
#include <eventwire/manager.h>
#include <eventwire/metrics.h>
#include <eventwire/trace.h>
#include <eventwire/version.h>

#endif
