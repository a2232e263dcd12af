/* STOMP 1.2 frames: an incremental parser and a serializer. Pure bytes in,
 * bytes out: no sockets, no clocks, no logging, so every byte sequence a
 * broker (or an attacker) can send is unit-tested and fuzzed here.
 *
 * What the parser accepts (STOMP 1.2, section "Augmented BNF"):
 *   frame   = command EOL *(header EOL) EOL body NUL *(EOL)
 *   EOL     = LF / CR LF     (heart-beats are bare EOLs between frames)
 * with header escapes \r \n \c \\ (any other escape is an error) on every
 * frame but CONNECT and CONNECTED, which the spec leaves unescaped. A body is
 * content-length bytes followed by NUL when that header is present, else
 * everything up to the first NUL. When a header repeats, the first one counts
 * (the others are kept, in order). An unescaped ':' inside a value is taken
 * literally (brokers of 1.0/1.1 habits send it). NUL, and CR not followed by
 * LF, are refused in the command and header lines.
 *
 * Thread-safety: none. A parser or a frame belongs to one thread at a time. */
#ifndef EVENTWIRE_STOMP_FRAME_H
#define EVENTWIRE_STOMP_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec_internal.h"

/* The commands of STOMP 1.2; nothing else parses. */
typedef enum ewi_stomp_cmd {
    EWI_STOMP_NONE = 0,
    /* client frames */
    EWI_STOMP_CONNECT,
    EWI_STOMP_STOMP,
    EWI_STOMP_SEND,
    EWI_STOMP_SUBSCRIBE,
    EWI_STOMP_UNSUBSCRIBE,
    EWI_STOMP_ACK,
    EWI_STOMP_NACK,
    EWI_STOMP_BEGIN,
    EWI_STOMP_COMMIT,
    EWI_STOMP_ABORT,
    EWI_STOMP_DISCONNECT,
    /* server frames */
    EWI_STOMP_CONNECTED,
    EWI_STOMP_MESSAGE,
    EWI_STOMP_RECEIPT,
    EWI_STOMP_ERROR
} ewi_stomp_cmd;

/* The command's name ("SEND"), or "?" for a value outside the enum. */
const char *ewi_stomp_cmd_name(ewi_stomp_cmd cmd);
/* CONNECT, STOMP and CONNECTED carry their headers unescaped. */
bool ewi_stomp_cmd_raw_headers(ewi_stomp_cmd cmd);

/* One header, unescaped. key and value are NUL-terminated as well as
 * counted; neither contains a NUL (the parser refuses one). */
typedef struct ewi_stomp_header {
    const char *key;
    const char *value;
    size_t klen, vlen;
} ewi_stomp_header;

/* A parsed frame. Owns its memory: free with ewi_stomp_frame_free. */
typedef struct ewi_stomp_frame {
    ewi_stomp_cmd cmd;
    size_t nheaders;
    ewi_stomp_header *headers; /* in wire order, duplicates kept */
    uint8_t *body;             /* malloc'd, body[body_len] == 0; never NULL */
    size_t body_len;
    /* A MESSAGE whose body was over max_body: only its first max_body bytes
     * are in body, the rest was read and discarded (see "Skip mode" below);
     * wire_body_len is the body's length on the wire. */
    bool truncated;
    size_t wire_body_len;
    char *strings_;            /* storage behind the headers */
} ewi_stomp_frame;

void ewi_stomp_frame_free(ewi_stomp_frame *f); /* NULL allowed */
/* The first value of key (the one that counts), or NULL. Valid while f is. */
const char *ewi_stomp_frame_get(const ewi_stomp_frame *f, const char *key);
/* Takes the body out of f (caller frees; it is NUL-terminated one byte past
 * *len); f's body becomes empty. NULL only on ENOMEM. */
uint8_t *ewi_stomp_frame_take_body(ewi_stomp_frame *f, size_t *len);

/* Bounds on what the parser buffers. A frame over any of them is a protocol
 * error; memory never grows past max_frame plus a small constant.
 * Skip mode: a MESSAGE whose body is over max_body (by its content-length,
 * or with no content-length, by its length up to the NUL) is not an error:
 * its headers are kept, the first max_body bytes of its body too, the rest is
 * discarded as it streams in, and the frame comes out with truncated set. A
 * broker redelivers a message whose connection failed on it for ever; a
 * truncated frame can be settled instead (dead-lettered as too big). Too many
 * headers or an overlong header line stay errors for every command. */
typedef struct ewi_stomp_limits {
    size_t max_frame;      /* command + headers + body, bytes */
    size_t max_body;       /* bytes */
    size_t max_headers;    /* header lines in one frame */
    size_t max_header_len; /* bytes of one raw header line */
} ewi_stomp_limits;

/* Defaults: 1 MiB body, 64 KiB of headers beyond it, 128 headers, 8 KiB per
 * header line. */
ewi_stomp_limits ewi_stomp_default_limits(void);

typedef enum ewi_stomp_status {
    EWI_STOMP_MORE = 0, /* everything given was consumed; feed more */
    EWI_STOMP_FRAME,    /* a frame is complete: take it */
    EWI_STOMP_EBAD,     /* malformed input: see ewi_stomp_parser_error */
    EWI_STOMP_ELIMIT,   /* over a limit: see ewi_stomp_parser_error */
    EWI_STOMP_ENOMEM
} ewi_stomp_status;

typedef struct ewi_stomp_parser ewi_stomp_parser;

/* limits NULL: the defaults. NULL on ENOMEM. */
ewi_stomp_parser *ewi_stomp_parser_new(const ewi_stomp_limits *limits);
void ewi_stomp_parser_free(ewi_stomp_parser *p); /* NULL allowed */
/* Back to the state of a new parser (drops a half-read frame and errors):
 * for a fresh connection. */
void ewi_stomp_parser_reset(ewi_stomp_parser *p);

/* Feeds len bytes; *used (always set) tells how many were consumed. Stops
 * right after a frame's NUL with EWI_STOMP_FRAME: take the frame, then call
 * again with the rest. Errors are sticky until reset; *used then counts the
 * bytes accepted before the offending one. Any split of the input gives the
 * same frames, and the same error with the same text. */
ewi_stomp_status ewi_stomp_parse(ewi_stomp_parser *p, const uint8_t *data,
                                 size_t len, size_t *used);
/* After EWI_STOMP_FRAME: hands the frame over (caller frees). NULL if no
 * frame is ready. */
ewi_stomp_frame *ewi_stomp_parser_take(ewi_stomp_parser *p);
/* Why the parser stopped: a static-lifetime-of-p English sentence, "" when
 * nothing went wrong. */
const char *ewi_stomp_parser_error(const ewi_stomp_parser *p);
/* After an error: the first value of key among the headers of the failed
 * frame parsed so far (to say which subscription and message it was), or
 * NULL. Valid until the next call on p. */
const char *ewi_stomp_parser_partial_header(const ewi_stomp_parser *p, const char *key);
/* EOLs seen between frames since the last call (heart-beats); resets. */
size_t ewi_stomp_parser_heartbeats(ewi_stomp_parser *p);

/* ---- serializer -------------------------------------------------------- */

/* Building a frame into out: begin, any number of header, then end. On an
 * error, out is back at its length before begin (use the same mark). The
 * command decides escaping: headers of CONNECT/STOMP/CONNECTED cannot be
 * escaped, so LF, CR (and ':' in a key) make header() fail there; every other
 * frame escapes LF, CR, ':' and '\' in keys and values. NUL in a key or value
 * and an empty key always fail. */
typedef struct ewi_stomp_writer {
    ewi_buf *out;
    size_t mark; /* out->len at begin */
    ewi_stomp_cmd cmd;
    ew_err err;  /* the first failure; later calls do nothing */
} ewi_stomp_writer;

void ewi_stomp_write_begin(ewi_stomp_writer *w, ewi_buf *out, ewi_stomp_cmd cmd);
void ewi_stomp_write_header(ewi_stomp_writer *w, const char *key, const char *value);
void ewi_stomp_write_header_n(ewi_stomp_writer *w, const char *key, size_t klen,
                        const char *value, size_t vlen);
/* Writes content-length (when with_length), the blank line, the body and the
 * NUL. Returns the first error of the whole frame: EW_EINVAL for a header
 * that cannot be written, EW_ENOMEM; then out is restored. */
ew_err ewi_stomp_write_end(ewi_stomp_writer *w, const void *body, size_t len,
                     bool with_length);

/* A frame as parsed, written back (content-length always set). */
ew_err ewi_stomp_write_frame(ewi_buf *out, const ewi_stomp_frame *f);

#endif
