/* The URL options of every transport: one table of canonical names, with
 * their units, defaults, ranges and the transports that accept them, and the
 * old names still accepted as aliases. Each transport parses its URL through
 * ewi_opts_parse and copies what it needs into its own option struct.
 *
 * Internal; nothing here is installed. */
#ifndef EVENTWIRE_OPTIONS_H
#define EVENTWIRE_OPTIONS_H

#include "ewi.h"

/* The transports, as bits of ewi_opt_def.transports. */
enum {
    EWI_OPTS_LOCAL = 1u << 0,
    EWI_OPTS_RABBITMQ = 1u << 1,
    EWI_OPTS_STOMP = 1u << 2,
    EWI_OPTS_AMQP = 1u << 3,
    EWI_OPTS_BROKERS = EWI_OPTS_RABBITMQ | EWI_OPTS_STOMP | EWI_OPTS_AMQP,
    EWI_OPTS_ALL = EWI_OPTS_LOCAL | EWI_OPTS_BROKERS
};

/* Every canonical option; the index of its row in the table. */
typedef enum ewi_opt_id {
    EWI_OPT_PREFETCH,
    EWI_OPT_CAPACITY,
    EWI_OPT_DIALECT,
    EWI_OPT_QUEUE_NAMING,
    EWI_OPT_VHOST,
    EWI_OPT_SASL,
    EWI_OPT_AMQP_PORT,
    EWI_OPT_HEARTBEAT_MS,
    EWI_OPT_CONNECT_TIMEOUT_MS,
    EWI_OPT_RPC_TIMEOUT_MS,
    EWI_OPT_RECONNECT_MAX_MS,
    EWI_OPT_MAX_INFLIGHT,
    EWI_OPT_MAX_INFLIGHT_BYTES,
    EWI_OPT_PER_PROCESS_EXPIRES_MS,
    EWI_OPT_QUEUE_CHECK_MS,
    EWI_OPT_QUEUE_TYPE,
    EWI_OPT_CA,
    EWI_OPT_CERT,
    EWI_OPT_KEY,
    EWI_OPT_VERIFY,
    EWI_OPT_COUNT
} ewi_opt_id;

typedef enum ewi_opt_kind {
    EWI_OPTK_INT,  /* a decimal integer in [min, max] */
    EWI_OPTK_WORD, /* one of choices */
    EWI_OPTK_TEXT, /* any non-empty text */
    EWI_OPTK_FILE  /* a readable file */
} ewi_opt_kind;

/* ?queue_type= values, in the order of the table's choices. */
typedef enum ewi_queue_type {
    EWI_QUEUE_CLASSIC = 0,
    EWI_QUEUE_QUORUM
} ewi_queue_type;

/* The transports whose URL may list several hosts (EWI_OPTS_* bits); stomp://
 * and amqp:// take a list with dialect=rabbitmq only (their own check). */
#define EWI_OPTS_MULTI_HOST EWI_OPTS_BROKERS

/* ?verify= values, in the order of the table's choices. */
typedef enum ewi_verify {
    EWI_VERIFY_NAME = 0, /* the CA chain and the host name (the default) */
    EWI_VERIFY_PEER,     /* the CA chain only */
    EWI_VERIFY_NONE      /* nothing: tests with self-made certificates only */
} ewi_verify;

typedef struct ewi_opt_def {
    const char *name;      /* canonical */
    ewi_opt_kind kind;
    unsigned transports;   /* EWI_OPTS_* bits of the transports accepting it */
    bool tls_only;         /* only on rabbitmqs://, stomp+ssl://, amqps:// */
    const char *unit;      /* "ms", "messages" …; NULL when it has none */
    long dflt, min, max;   /* INT: default and range */
    bool zero_off;         /* INT: 0 is also allowed, and means off */
    const char *choices[4]; /* WORD: the values (NULL-terminated) */
    const char *meaning;   /* one line, for logs and the docs */
} ewi_opt_def;

/* The table (EWI_OPT_COUNT rows, in ewi_opt_id order). */
const ewi_opt_def *ewi_opt_table(void);
/* The row of a canonical name, or NULL. */
const ewi_opt_def *ewi_opt_find(const char *name);

/* An old name still accepted, with the factor that converts its value to
 * the canonical unit (heartbeat in seconds: 1000). */
typedef struct ewi_opt_alias {
    const char *name;
    ewi_opt_id canonical;
    long scale;
} ewi_opt_alias;
/* The aliases, terminated by a row with a NULL name. */
const ewi_opt_alias *ewi_opt_aliases(void);

/* One URL's options for one transport. Texts point into the URL (or into the
 * table for WORD values): valid while both live. */
typedef struct ewi_opts {
    unsigned transport;           /* the EWI_OPTS_* bit it was parsed for */
    bool tls;
    bool given[EWI_OPT_COUNT];    /* present in the URL (or an alias of it) */
    long num[EWI_OPT_COUNT];      /* INT: the value or the default;
                                     WORD: the index of the choice */
    const char *text[EWI_OPT_COUNT]; /* WORD (the canonical choice), TEXT and
                                        FILE values; NULL when absent */
} ewi_opts;

/* Parses every query parameter of url for transport (one EWI_OPTS_* bit),
 * tls being true on the transport's TLS scheme. Refuses with EW_EINVAL, the
 * reason in err: an unknown name (err lists the names the transport takes),
 * an option of another transport, a TLS option without TLS, a name given
 * twice (an alias and its canonical name count as the same), a value out of
 * range or not among the choices, a file that cannot be read, cert without
 * key or key without cert, several hosts on a transport outside
 * EWI_OPTS_MULTI_HOST. An alias is converted to the canonical unit and
 * logged once at warn level on m (NULL: not logged). Options of no concern to
 * the transport's dialect are for the transport to refuse. */
ew_err ewi_opts_parse(const ew_manager *m, const ewi_url *url, unsigned transport, bool tls,
                      ewi_opts *o, char *err, size_t errlen);

/* The canonical names transport accepts, ", "-separated, TLS-only ones
 * marked "(TLS)"; into buf. */
const char *ewi_opts_names(unsigned transport, char *buf, size_t len);

/* Checks that cert and key load and belong together (NULL, NULL: nothing to
 * check). EW_EINVAL with the reason in err; EW_OK also when this build has no
 * TLS library to check with. */
ew_err ewi_tls_check_pair(const char *cert, const char *key, char *err, size_t errlen);

#endif
