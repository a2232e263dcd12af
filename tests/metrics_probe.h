/* Reading one metric of a manager in a test: a visit that picks the point
 * with a name and (when given) the value of its first label. For unit,
 * conformance and fault tests. */
#ifndef EW_METRICS_PROBE_H
#define EW_METRICS_PROBE_H

#include <stdint.h>
#include <string.h>

#include <eventwire/eventwire.h>

#define METRIC_ABSENT UINT64_MAX

typedef struct metric_probe {
    const char *name, *label; /* label NULL: the point without labels */
    uint64_t value;           /* counters and gauges; histograms: count */
    double sum;
    size_t found;
} metric_probe;

static inline void metric_probe_fn(void *user, const ew_metric *x)
{
    metric_probe *p = user;
    if (strcmp(x->name, p->name) != 0)
        return;
    if (p->label ? x->nlabels == 0 || strcmp(x->labels[0].value, p->label) != 0
                 : x->nlabels != 0)
        return;
    p->found++;
    p->value = x->kind == EW_METRIC_HISTOGRAM ? x->count : x->value;
    p->sum = x->sum;
}

/* The value of metric name at label (NULL: no label); METRIC_ABSENT when
 * there is no such point. A histogram gives its count. */
static inline uint64_t metric_value(ew_manager *m, const char *name, const char *label)
{
    metric_probe p = {name, label, METRIC_ABSENT, 0, 0};
    if (ew_metrics_visit(m, metric_probe_fn, &p) != EW_OK)
        return METRIC_ABSENT;
    return p.value;
}

#endif
