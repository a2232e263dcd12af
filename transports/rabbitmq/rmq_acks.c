/* Delivery tags of one consumer channel and their coalesced acks.
 *
 * The broker never has more than prefetch deliveries unacknowledged on a
 * channel, so what is tracked here is bounded by prefetch, whatever the
 * spread of the tags: one handler stuck for minutes while the others go on
 * leaves one open tag, not a window from it to the newest tag.
 *
 *   open  the tags handed to core and not settled, ascending (tags on a
 *         channel only grow); a settled one is marked in place and the
 *         array compacted when marks fill half of it
 *   done  the tags settled since the last flush, acknowledged by it
 *
 * A flush acknowledges exactly the done tags: the ones below the oldest open
 * tag with one basic.ack(multiple) (every unacknowledged tag below it is one
 * of them), the rest one by one. */
#include "rmq.h"

#include <stdlib.h>
#include <string.h>

#define MARK ((uint64_t)1 << 63) /* settled: a hole in open */

void rmq_tags_reset(rmq_tags *g)
{
    g->head = g->len = g->live = 0;
    g->ndone = 0;
    g->last = 0;
}

void rmq_tags_free(rmq_tags *g)
{
    free(g->open);
    free(g->done);
    memset(g, 0, sizeof *g);
}

/* Drops the holes: live entries move to the front. */
static void compact(rmq_tags *g)
{
    size_t n = 0;
    for (size_t i = g->head; i < g->len; i++)
        if (!(g->open[i] & MARK))
            g->open[n++] = g->open[i];
    g->head = 0;
    g->len = n;
}

bool rmq_tags_open(rmq_tags *g, uint64_t tag)
{
    if (tag <= g->last || (tag & MARK))
        return false; /* tags on a channel start at 1 and only grow */
    if (g->len == g->cap) {
        if (g->live <= g->cap / 2 && g->cap) {
            compact(g);
        } else {
            size_t cap = g->cap ? g->cap * 2 : 64;
            uint64_t *open = realloc(g->open, cap * sizeof *open);
            if (!open)
                return false;
            g->open = open;
            g->cap = cap;
        }
    }
    g->open[g->len++] = tag;
    g->live++;
    g->last = tag;
    return true;
}

bool rmq_tags_close(rmq_tags *g, uint64_t tag)
{
    size_t lo = g->head, hi = g->len;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        uint64_t v = g->open[mid] & ~MARK;
        if (v < tag)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == g->len || g->open[lo] != tag)
        return false; /* not open (settled twice, or from another channel) */
    g->open[lo] |= MARK;
    g->live--;
    while (g->head < g->len && (g->open[g->head] & MARK))
        g->head++;
    if (g->head == g->len)
        g->head = g->len = 0;
    return true;
}

bool rmq_tags_settled(rmq_tags *g, uint64_t tag)
{
    if (g->ndone == g->done_cap) {
        size_t cap = g->done_cap ? g->done_cap * 2 : 64;
        uint64_t *done = realloc(g->done, cap * sizeof *done);
        if (!done)
            return false;
        g->done = done;
        g->done_cap = cap;
    }
    g->done[g->ndone++] = tag;
    return true;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int rmq_tags_flush(rmq_tags *g, rmq_ack_fn ack, void *user)
{
    size_t n = g->ndone;
    g->ndone = 0;
    if (n == 0)
        return 0;
    /* Settles mostly come in order: sort only when they did not. */
    for (size_t i = 1; i < n; i++)
        if (g->done[i - 1] > g->done[i]) {
            qsort(g->done, n, sizeof *g->done, cmp_u64);
            break;
        }
    uint64_t oldest = g->live ? g->open[g->head] : UINT64_MAX;
    size_t below = 0;
    while (below < n && g->done[below] < oldest)
        below++;
    int rc;
    if (below && (rc = ack(user, g->done[below - 1], below > 1)) != 0)
        return rc;
    for (size_t i = below; i < n; i++)
        if ((rc = ack(user, g->done[i], false)) != 0)
            return rc;
    return 0;
}
