/* The envelope: body, content type and headers, reference counted.
 *
 * Headers live in one string buffer (key\0value\0 pairs) indexed by an
 * entry array, both inline for the common case, and a small body is inline
 * too, so a typical envelope costs one allocation: it matters because the
 * sending thread allocates it and a worker thread frees it. Removing a header leaves a hole in the
 * buffer; the buffer is compacted when holes outweigh live data. */
#include "envelope_priv.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* Header limits enforced by the public setter; the manager sets them. */
static const ewi_env_limits default_limits = {64, 4096};

/* ---- the free pool ---------------------------------------------------------
 * An envelope is mostly made on one thread (a sender, a transport's reader)
 * and freed on another (the transport's I/O thread, a worker). malloc's
 * per-thread cache does not help that pattern: every free and every malloc
 * then takes its slow path. Freed envelopes go to a small per-thread list;
 * a full list moves as one batch to a shared stack of a few batches (one
 * lock per POOL_BATCH envelopes), where a thread whose list is empty takes
 * one. What does not fit is freed. Under AddressSanitizer envelopes are
 * plain malloc and free, so a use after free is still seen. */
#if defined(__SANITIZE_ADDRESS__)
#define POOL 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define POOL 0
#endif
#endif
#ifndef POOL
#define POOL 1
#endif

#if POOL
#define POOL_BATCH 32
#define POOL_BATCHES 8

typedef struct env_cache {
    ew_envelope *head;
    size_t n;
} env_cache;

static _Thread_local env_cache tl_cache;
static _Thread_local int tl_cache_state; /* 0 new, 1 registered, 2 thread exiting */
static pthread_key_t cache_key;
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static ew_envelope *pool_batch[POOL_BATCHES];
static atomic_size_t pool_n;

static void free_list(ew_envelope *e)
{
    while (e) {
        ew_envelope *next = e->pool_next;
        free(e);
        e = next;
    }
}

static void cache_destroy(void *p)
{
    env_cache *c = p;
    free_list(c->head);
    c->head = NULL;
    c->n = 0;
    tl_cache_state = 2; /* later frees on this thread go to free() */
}

static void cache_key_init(void)
{
    pthread_key_create(&cache_key, cache_destroy);
}

/* This thread's list, NULL once the thread is exiting. */
static env_cache *cache(void)
{
    if (tl_cache_state == 0) {
        pthread_once(&cache_once, cache_key_init);
        pthread_setspecific(cache_key, &tl_cache);
        tl_cache_state = 1;
    }
    return tl_cache_state == 1 ? &tl_cache : NULL;
}

static ew_envelope *env_alloc(void)
{
    env_cache *c = cache();
    if (c && !c->head && atomic_load_explicit(&pool_n, memory_order_relaxed)) {
        pthread_mutex_lock(&pool_mu);
        size_t n = atomic_load_explicit(&pool_n, memory_order_relaxed);
        if (n) {
            c->head = pool_batch[n - 1];
            c->n = POOL_BATCH;
            atomic_store_explicit(&pool_n, n - 1, memory_order_relaxed);
        }
        pthread_mutex_unlock(&pool_mu);
    }
    if (!c || !c->head)
        return malloc(sizeof(ew_envelope));
    ew_envelope *env = c->head;
    c->head = env->pool_next;
    c->n--;
    return env;
}

static void env_free(ew_envelope *env)
{
    env_cache *c = cache();
    if (!c) {
        free(env);
        return;
    }
    if (c->n == POOL_BATCH) {
        ew_envelope *batch = c->head;
        c->head = NULL;
        c->n = 0;
        pthread_mutex_lock(&pool_mu);
        size_t n = atomic_load_explicit(&pool_n, memory_order_relaxed);
        if (n < POOL_BATCHES) {
            pool_batch[n] = batch;
            atomic_store_explicit(&pool_n, n + 1, memory_order_relaxed);
            batch = NULL;
        }
        pthread_mutex_unlock(&pool_mu);
        free_list(batch);
    }
    env->pool_next = c->head;
    c->head = env;
    c->n++;
}
#else
static ew_envelope *env_alloc(void)
{
    return malloc(sizeof(ew_envelope));
}

static void env_free(ew_envelope *env)
{
    free(env);
}
#endif

ew_envelope *ewi_envelope_new(void)
{
    /* Not zeroed: the inline buffers need no zeroing. */
    ew_envelope *env = env_alloc();
    if (!env)
        return NULL;
    atomic_init(&env->refs, 1);
    env->body = NULL;
    env->body_len = 0;
    env->ct[0] = '\0';
    env->nh = 0;
    env->slen = 0;
    env->holes = 0;
    env->attempt = 0;
    env->sent_at = 0;
    env->h = env->h_inline;
    env->hcap = EWI_ENV_INLINE_HEADERS;
    env->s = env->s_inline;
    env->scap = sizeof env->s_inline;
    env->limits = &default_limits;
    return env;
}

ew_envelope *ewi_envelope_ref(ew_envelope *env)
{
    atomic_fetch_add_explicit(&env->refs, 1, memory_order_relaxed);
    return env;
}

static void free_body(ew_envelope *env)
{
    if (env->body != env->body_inline)
        free(env->body);
    env->body = NULL;
}

static void release_storage(ew_envelope *env)
{
    free_body(env);
    env->body_len = 0;
    if (env->h != env->h_inline)
        free(env->h);
    if (env->s != env->s_inline)
        free(env->s);
    env->h = env->h_inline;
    env->hcap = EWI_ENV_INLINE_HEADERS;
    env->s = env->s_inline;
    env->scap = sizeof env->s_inline;
    env->nh = 0;
    env->slen = 0;
    env->holes = 0;
    env->ct[0] = '\0';
}

void ewi_envelope_unref(ew_envelope *env)
{
    if (!env)
        return;
    if (atomic_fetch_sub_explicit(&env->refs, 1, memory_order_acq_rel) != 1)
        return;
    release_storage(env);
    env_free(env);
}

void ewi_envelope_clear(ew_envelope *env)
{
    release_storage(env);
    env->attempt = 0;
    env->sent_at = 0;
}

void ewi_envelope_set_limits(ew_envelope *env, const ewi_env_limits *limits)
{
    env->limits = limits ? limits : &default_limits;
}

ew_err ewi_envelope_set_body(ew_envelope *env, const void *data, size_t len)
{
    if (len <= sizeof env->body_inline) {
        free_body(env);
        if (len)
            memcpy(env->body_inline, data, len);
        env->body = env->body_inline;
        env->body_len = len;
        return EW_OK;
    }
    void *copy = malloc(len);
    if (!copy)
        return EW_ENOMEM;
    if (len)
        memcpy(copy, data, len);
    ewi_envelope_take_body(env, copy, len);
    return EW_OK;
}

void ewi_envelope_take_body(ew_envelope *env, void *data, size_t len)
{
    free_body(env);
    env->body = data;
    env->body_len = len;
}

ew_err ewi_envelope_set_content_type(ew_envelope *env, const char *ct)
{
    size_t n = ct ? strlen(ct) : 0;
    if (n >= sizeof env->ct)
        return EW_ETOOBIG;
    memcpy(env->ct, ct ? ct : "", n + 1);
    return EW_OK;
}

static const char *key_at(const ew_envelope *env, size_t i)
{
    return env->s + env->h[i].off;
}

static const char *value_at(const ew_envelope *env, size_t i)
{
    return env->s + env->h[i].off + env->h[i].klen + 1;
}

static ssize_t find(const ew_envelope *env, const char *key, size_t klen)
{
    for (size_t i = 0; i < env->nh; i++)
        if (env->h[i].klen == klen && memcmp(key_at(env, i), key, klen) == 0)
            return (ssize_t)i;
    return -1;
}

static void drop_entry(ew_envelope *env, size_t i)
{
    env->holes += env->h[i].klen + env->h[i].vlen + 2;
    memmove(&env->h[i], &env->h[i + 1], (env->nh - i - 1) * sizeof env->h[0]);
    env->nh--;
}

/* Rewrites the string buffer without holes. */
static void compact(ew_envelope *env)
{
    size_t at = 0;
    for (size_t i = 0; i < env->nh; i++) {
        size_t n = env->h[i].klen + env->h[i].vlen + 2;
        memmove(env->s + at, env->s + env->h[i].off, n);
        env->h[i].off = (uint32_t)at;
        at += n;
    }
    env->slen = at;
    env->holes = 0;
}

static ew_err grow_strings(ew_envelope *env, size_t need)
{
    if (env->holes > env->slen / 2)
        compact(env);
    if (env->slen + need <= env->scap)
        return EW_OK;
    size_t cap = env->scap * 2;
    while (cap < env->slen + need)
        cap *= 2;
    if (cap > UINT32_MAX)
        return EW_ETOOBIG;
    char *ns = env->s == env->s_inline ? malloc(cap) : realloc(env->s, cap);
    if (!ns)
        return EW_ENOMEM;
    if (env->s == env->s_inline)
        memcpy(ns, env->s_inline, env->slen);
    env->s = ns;
    env->scap = cap;
    return EW_OK;
}

/* Room for n more entries, in one allocation. */
static ew_err reserve_entries(ew_envelope *env, size_t n)
{
    if (env->nh + n <= env->hcap)
        return EW_OK;
    size_t cap = env->hcap * 2;
    while (cap < env->nh + n)
        cap *= 2;
    ewi_env_hdr *nh = env->h == env->h_inline ? malloc(cap * sizeof *nh)
                                              : realloc(env->h, cap * sizeof *nh);
    if (!nh)
        return EW_ENOMEM;
    if (env->h == env->h_inline)
        memcpy(nh, env->h_inline, env->nh * sizeof *nh);
    env->h = nh;
    env->hcap = cap;
    return EW_OK;
}

/* Caches the framework values the accessors return as numbers. */
static void note_framework_value(ew_envelope *env, const char *key, size_t klen,
                           const char *value, size_t vlen)
{
    bool attempt = klen == sizeof EW_HDR_ATTEMPT - 1 &&
                   memcmp(key, EW_HDR_ATTEMPT, sizeof EW_HDR_ATTEMPT - 1) == 0;
    if (!attempt && (klen != sizeof EW_HDR_SENT_AT - 1 ||
                     memcmp(key, EW_HDR_SENT_AT, sizeof EW_HDR_SENT_AT - 1) != 0))
        return;
    uint64_t n = 0;
    bool num = vlen > 0 && vlen <= 19;
    for (size_t i = 0; num && i < vlen; i++) {
        unsigned d = (unsigned)(unsigned char)value[i] - '0';
        num = d <= 9;
        n = n * 10 + d;
    }
    if (attempt)
        env->attempt = num && n <= UINT32_MAX ? (uint32_t)n : 0;
    else
        env->sent_at = num ? (int64_t)n : 0;
}

_Static_assert(sizeof EW_HDR_ATTEMPT == sizeof EW_HDR_SENT_AT,
               "note_framework looks at keys of one length");

static inline void note_framework(ew_envelope *env, const char *key, size_t klen,
                                  const char *value, size_t vlen)
{
    /* Most keys are not the two: their length tells, without a call. */
    if (klen == sizeof EW_HDR_ATTEMPT - 1)
        note_framework_value(env, key, klen, value, vlen);
}

ew_err ewi_envelope_put(ew_envelope *env, const char *key, size_t klen,
                        const char *value, size_t vlen)
{
    if (klen == 0 || memchr(key, '\0', klen) || memchr(value, '\0', vlen))
        return EW_EINVAL;
    ssize_t old = find(env, key, klen);
    if (old >= 0)
        drop_entry(env, (size_t)old);
    ew_err rc = EW_OK;
    if (env->nh == env->hcap)
        rc = reserve_entries(env, 1);
    /* grow_strings only when there is something to do: it is not cheap to
     * call. */
    if (rc == EW_OK && (env->holes || env->slen + klen + vlen + 2 > env->scap))
        rc = grow_strings(env, klen + vlen + 2);
    if (rc != EW_OK)
        return rc;
    ewi_env_hdr *h = &env->h[env->nh++];
    h->off = (uint32_t)env->slen;
    h->klen = (uint32_t)klen;
    h->vlen = (uint32_t)vlen;
    char *p = env->s + env->slen;
    memcpy(p, key, klen);
    p[klen] = '\0';
    memcpy(p + klen + 1, value, vlen);
    p[klen + 1 + vlen] = '\0';
    env->slen += klen + vlen + 2;
    note_framework(env, key, klen, value, vlen);
    return EW_OK;
}

ew_err ewi_envelope_put_received(ew_envelope *env, const ewi_env_kv *kv, size_t n)
{
    size_t need = 0;
    for (size_t i = 0; i < n; i++) {
        if (kv[i].klen > UINT32_MAX || kv[i].vlen > UINT32_MAX)
            return EW_ETOOBIG;
        need += kv[i].klen + kv[i].vlen + 2;
    }
    ew_err rc = reserve_entries(env, n);
    if (rc == EW_OK && (env->holes || env->slen + need > env->scap))
        rc = grow_strings(env, need);
    if (rc != EW_OK)
        return rc;
    for (size_t i = 0; i < n; i++) {
        const ewi_env_kv *p = &kv[i];
        if (p->klen == 0 || memchr(p->key, '\0', p->klen) ||
            memchr(p->value, '\0', p->vlen) || find(env, p->key, p->klen) >= 0)
            continue;
        ewi_env_hdr *h = &env->h[env->nh++];
        h->off = (uint32_t)env->slen;
        h->klen = (uint32_t)p->klen;
        h->vlen = (uint32_t)p->vlen;
        char *s = env->s + env->slen;
        memcpy(s, p->key, p->klen);
        s[p->klen] = '\0';
        memcpy(s + p->klen + 1, p->value, p->vlen);
        s[p->klen + 1 + p->vlen] = '\0';
        env->slen += p->klen + p->vlen + 2;
        note_framework(env, p->key, p->klen, p->value, p->vlen);
    }
    return EW_OK;
}

/* Appends key\0value\0 with no checks: the caller knows the key is absent
 * and neither holds a NUL. Room must have been reserved. */
static char *append(ew_envelope *env, const char *key, size_t klen, size_t vlen)
{
    ewi_env_hdr *h = &env->h[env->nh++];
    h->off = (uint32_t)env->slen;
    h->klen = (uint32_t)klen;
    h->vlen = (uint32_t)vlen;
    char *p = env->s + env->slen;
    memcpy(p, key, klen + 1);
    p[klen + 1 + vlen] = '\0';
    env->slen += klen + vlen + 2;
    return p + klen + 1;
}

#define KEY(k) k, sizeof k - 1

ew_err ewi_envelope_put_framework(ew_envelope *env, const char *event, size_t elen,
                                  const char id[36], uint64_t sent_ms)
{
    /* Two digits per division: this runs once per send. */
    static const char pairs[] = "00010203040506070809101112131415161718192021222324"
                                "25262728293031323334353637383940414243444546474849"
                                "50515253545556575859606162636465666768697071727374"
                                "75767778798081828384858687888990919293949596979899";
    char digits[20];
    size_t nd = 0;
    uint64_t v = sent_ms;
    while (v >= 100) {
        unsigned r = (unsigned)(v % 100);
        v /= 100;
        nd += 2;
        memcpy(digits + sizeof digits - nd, pairs + 2 * r, 2);
    }
    if (v >= 10) {
        nd += 2;
        memcpy(digits + sizeof digits - nd, pairs + 2 * v, 2);
    } else {
        digits[sizeof digits - ++nd] = (char)('0' + v);
    }
    size_t need = sizeof EW_HDR_EVENT + elen + 1 + sizeof EW_HDR_MESSAGE_ID + 36 + 1 +
                  sizeof EW_HDR_SENT_AT + nd + 1 + sizeof EW_HDR_ATTEMPT + 2;
    if (env->nh != 0 || env->hcap < 4)
        return EW_EINVAL;
    if (env->slen + need > env->scap) {
        ew_err rc = grow_strings(env, need);
        if (rc != EW_OK)
            return rc;
    }
    memcpy(append(env, KEY(EW_HDR_EVENT), elen), event, elen);
    memcpy(append(env, KEY(EW_HDR_MESSAGE_ID), 36), id, 36);
    memcpy(append(env, KEY(EW_HDR_SENT_AT), nd), digits + sizeof digits - nd, nd);
    append(env, KEY(EW_HDR_ATTEMPT), 1)[0] = '1';
    /* What note_framework would have read back. */
    env->sent_at = nd <= 19 ? (int64_t)sent_ms : 0;
    env->attempt = 1;
    return EW_OK;
}

ew_err ewi_envelope_header_n(const ew_envelope *env, size_t i, const char **key,
                             size_t *klen, const char **value, size_t *vlen)
{
    if (i >= env->nh)
        return EW_ENOTFOUND;
    *key = key_at(env, i);
    *klen = env->h[i].klen;
    *value = value_at(env, i);
    *vlen = env->h[i].vlen;
    return EW_OK;
}

void *ewi_envelope_body_buf(ew_envelope *env, size_t len)
{
    if (len <= sizeof env->body_inline) {
        free_body(env);
        env->body = env->body_inline;
        env->body_len = len;
        return env->body;
    }
    void *b = malloc(len);
    if (!b)
        return NULL;
    ewi_envelope_take_body(env, b, len);
    return b;
}

ew_envelope *ewi_envelope_clone(const ew_envelope *src)
{
    ew_envelope *env = ewi_envelope_new();
    if (!env)
        return NULL;
    env->limits = src->limits;
    if (ewi_envelope_set_body(env, src->body, src->body_len) != EW_OK)
        goto fail;
    memcpy(env->ct, src->ct, sizeof env->ct);
    for (size_t i = 0; i < src->nh; i++)
        if (ewi_envelope_put(env, key_at(src, i), src->h[i].klen,
                             value_at(src, i), src->h[i].vlen) != EW_OK)
            goto fail;
    return env;
fail:
    ewi_envelope_unref(env);
    return NULL;
}

/* ---- public ------------------------------------------------------------- */

static bool key_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
}

const char *ew_envelope_header(const ew_envelope *env, const char *key)
{
    if (!env || !key)
        return NULL;
    ssize_t i = find(env, key, strlen(key));
    return i < 0 ? NULL : value_at(env, (size_t)i);
}

ew_err ew_envelope_set_header(ew_envelope *env, const char *key, const char *value)
{
    if (!env || !key || !value)
        return ewi_fail(EW_EINVAL, "set header: NULL envelope, key or value");
    if (!*key || strncmp(key, "ew-", 3) == 0)
        return ewi_fail(EW_EINVAL, "set header '%.40s': %s", key,
                        *key ? "ew-* headers are the library's" : "empty key");
    size_t klen = strlen(key), vlen = strlen(value);
    for (size_t i = 0; i < klen; i++)
        if (!key_char(key[i]))
            return ewi_fail(EW_EINVAL,
                            "set header '%.40s': character %zu is not a letter, digit "
                            "or one of \"-_.\"", key, i);
    if (klen > env->limits->max_header_len || vlen > env->limits->max_header_len)
        return ewi_fail(EW_ETOOBIG, "set header '%.40s': key or value over %zu bytes",
                        key, env->limits->max_header_len);
    if (find(env, key, klen) < 0 && env->nh >= env->limits->max_headers)
        return ewi_fail(EW_ETOOBIG, "set header '%.40s': over %zu headers", key,
                        env->limits->max_headers);
    ew_err rc = ewi_envelope_put(env, key, klen, value, vlen);
    return rc == EW_OK ? rc : ewi_fail(rc, "set header '%.40s': %s", key, ew_strerror(rc));
}

ew_err ew_envelope_remove_header(ew_envelope *env, const char *key)
{
    if (!env || !key || strncmp(key, "ew-", 3) == 0)
        return ewi_fail(EW_EINVAL, "remove header: NULL argument or an ew-* header");
    ssize_t i = find(env, key, strlen(key));
    if (i < 0)
        return ewi_fail(EW_ENOTFOUND, "remove header '%.40s': not set", key);
    drop_entry(env, (size_t)i);
    return EW_OK;
}

size_t ew_envelope_header_count(const ew_envelope *env)
{
    return env ? env->nh : 0;
}

ew_err ew_envelope_header_at(const ew_envelope *env, size_t i, const char **key,
                             const char **value)
{
    if (!env || i >= env->nh)
        return ewi_fail(EW_ENOTFOUND, "header %zu: the envelope has %zu", i,
                        env ? env->nh : 0);
    if (key)
        *key = key_at(env, i);
    if (value)
        *value = value_at(env, i);
    return EW_OK;
}

const void *ew_envelope_body(const ew_envelope *env, size_t *len)
{
    if (len)
        *len = env ? env->body_len : 0;
    return env ? env->body : NULL;
}

const char *ew_envelope_content_type(const ew_envelope *env)
{
    return env ? env->ct : "";
}

const char *ew_envelope_event(const ew_envelope *env)
{
    return ew_envelope_header(env, EW_HDR_EVENT);
}

const char *ew_envelope_message_id(const ew_envelope *env)
{
    return ew_envelope_header(env, EW_HDR_MESSAGE_ID);
}

int64_t ew_envelope_sent_at(const ew_envelope *env)
{
    return env ? env->sent_at : 0;
}

uint32_t ew_envelope_attempt(const ew_envelope *env)
{
    return env ? env->attempt : 0;
}
