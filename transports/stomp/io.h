/* The STOMP transport's I/O thread, split in three files along its seams:
 * io.c the loop (work from other threads, output, deadlines, shutdown),
 * io_frames.c the frames that come in (MESSAGE, RECEIPT, ERROR) and their
 * dispatch, io_conn.c the connection's lifecycle (connect, CONNECTED,
 * resubscribe, drop). Private to those three files. */
#ifndef EW_STOMP_IO_H
#define EW_STOMP_IO_H

#include "transports/stomp/stomp.h"

#define RBUF 65536
#define DEADLINE_SCAN_MS 100
/* A SEND resent this many times, each ended by an ERROR, fails with it. */
#define MAX_ERROR_RESENDS 3
/* A subscription given up after MAX_ERROR_RESENDS refusals is tried again
 * after GIVEN_UP_FACTOR x reconnect_max_ms, doubling up to GIVEN_UP_CAP_MS:
 * each refusal costs every listener its connection (the broker closes it),
 * so not with every reconnect, but a transport resumes every listener. */
#define GIVEN_UP_FACTOR 10
#define GIVEN_UP_CAP_MS 600000

typedef struct io {
    ewi_transport *t;
    int role; /* STOMP_PUB or STOMP_SUB */
    ewi_sock *sock;
    ewi_stomp_parser *parser;
    ewi_buf out;
    size_t out_off;
    stomp_pending *infl_head, *infl_tail; /* written, waiting for RECEIPT */
    int64_t infl_due; /* no in-flight deadline is before it (0: unknown) */
    stomp_req *waiting;                   /* requests waiting for a RECEIPT */
    stomp_heartbeat hb;
    int64_t last_rx, last_tx, last_scan;
    ewi_reconnect rc;      /* when to connect again */
    size_t host_next;      /* the node the next connect tries first */
    size_t host_cur;       /* the node of the current connection */
    uint64_t gen;          /* connection generation */
    uint64_t wseq;         /* receipt-bearing frames written, in order */
    uint64_t next_sub_gen;
    bool dropped_by_error; /* the last drop came with an ERROR frame */
    ewi_deliveries dl;     /* read and not yet handed to the workers */
    uint8_t rbuf[RBUF];
} io;

/* ---- io.c: completions, output, subscriptions ---- */
void stomp_io_complete_pub(ewi_transport *t, stomp_pending *pd, int err, const char *detail);
bool stomp_io_finish_req(ewi_transport *t, stomp_req *r, ew_err rc, const char *text);
bool stomp_io_ever_up(ewi_transport *t);
bool stomp_io_out_pending(const io *s);
bool stomp_io_flush_out(io *s, char *err, size_t errlen);
ew_err stomp_io_write_subscribe(io *s, stomp_sub *ss);
stomp_sub *stomp_io_sub_by_gen(ewi_transport *t, uint64_t gen);
void stomp_io_free_dlq_queue(stomp_sub *ss);
void stomp_io_sub_check(io *s, stomp_sub *ss);

/* ---- io_frames.c ---- */
void stomp_io_fail_pub_now(io *s, stomp_pending *pd, int err, const char *text);
void stomp_io_on_receipt(io *s, const char *id);
bool stomp_io_read_in(io *s, char *why, size_t whylen);
/* ss's SUBSCRIBE (or its queue's declaration) was refused once more: a
 * strike, and after MAX_ERROR_RESENDS in a row it is given up (reported,
 * retried now and then). retry_here: nothing closed the connection, so
 * before that it is tried again shortly (decl_wait) rather than by the
 * reconnect. */
void stomp_io_sub_refused(io *s, stomp_sub *ss, bool retry_here, const char *text);

/* ---- io_conn.c ---- */
const char *stomp_io_role_name(const io *s);
void stomp_io_set_state(io *s, stomp_state st, ew_err code, const char *why);
void stomp_io_drop(io *s, ew_err code, const char *why);
bool stomp_io_connect_once(io *s, char *why, size_t whylen, ew_err *code);
/* Before a SUBSCRIBE that is not ss's first: its queue declared again over
 * AMQP 0-9-1 when it is consumed through /amq/queue/ (admin_decl). true:
 * subscribe it now; false: not now (refused: a strike; or the
 * administration connection is unreachable, *transient set). */
bool stomp_io_declare_sub(io *s, stomp_sub *ss, bool *transient);

#endif
