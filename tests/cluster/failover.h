/* The cluster tests' common run: a sender streams durable events while a
 * broker node is killed, and every send's outcome and every handling is
 * counted by id.
 *
 *   fo_init(n, pacing)          before each run
 *   ew_listen(..., fo_listener, fo_tref())
 *   fo_send_start(m, &ev)       the stream, on a thread of its own; it waits
 *                               after the first half until fo_killed()
 *   fo_wait_ready_to_kill(ms)   half sent and a fifth handled
 *   ... kill ...; fo_killed()
 *   fo_wait_all(stall_ms)       every EW_OK send handled, or no progress
 *   fo_send_join(); fo_count(&tally); fo_free()
 *
 * One run at a time per process. */
#ifndef EW_TESTS_CLUSTER_FAILOVER_H
#define EW_TESTS_CLUSTER_FAILOVER_H

#include "faults.h"

/* The stream's pacing: a pause of ms after every `every` sends, in the
 * first half and in the second (which runs into the failover). */
typedef struct fo_pacing {
    size_t every[2];
    int ms[2];
} fo_pacing;

typedef struct fo_tally {
    size_t ok, indoubt, failed, pending, indoubt_arrived, failed_arrived, lost;
    size_t handled, duplicated, redelivered, delivery_counted, handled_at_kill;
    int64_t no_service_ms;   /* kill to the first handling of an event sent
                                after it; -1: none */
    int64_t failed_until_ms; /* kill to the last send that failed; 0: none */
    char codes[512];         /* the codes of the failed sends, "none" */
} fo_tally;

void fo_init(size_t n, fo_pacing pacing);
void fo_free(void);

/* The receiver's listener and its user pointer. */
ew_err fo_listener(ew_delivery *d, const void *event, void *user);
tally_ref *fo_tref(void);

void fo_send_start(ew_manager *m, const ew_event_desc *ev);
bool fo_wait_ready_to_kill(int timeout_ms);
/* The kill is done: the mark for the time without service; the sender goes
 * on with the second half. */
void fo_killed(void);
bool fo_wait_all(int stall_ms);
void fo_send_join(void);
void fo_count(fo_tally *t);
/* Prints why a run failed: what the common checks found. */
void fo_explain(const fo_tally *t, bool underway, int kill_rc, bool all, int stall_ms);

#endif
