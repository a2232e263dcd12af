/* Fuzz target: envelope header maps. The input is a script of operations
 * (set, put as from the wire, remove, clone) with keys and values cut from
 * the input; after each step the envelope must agree with a simple model
 * kept beside it, and never crash or leak. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "envelope_priv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAXH 16

typedef struct {
    char k[MAXH][40];
    char v[MAXH][600];
    int n;
} model;

static int model_find(const model *m, const char *k)
{
    for (int i = 0; i < m->n; i++)
        if (strcmp(m->k[i], k) == 0)
            return i;
    return -1;
}

static void model_put(model *m, const char *k, const char *v)
{
    int i = model_find(m, k);
    if (i >= 0) {
        memmove(&m->k[i], &m->k[i + 1], (size_t)(m->n - i - 1) * sizeof m->k[0]);
        memmove(&m->v[i], &m->v[i + 1], (size_t)(m->n - i - 1) * sizeof m->v[0]);
        m->n--;
    }
    strcpy(m->k[m->n], k);
    strcpy(m->v[m->n], v);
    m->n++;
}

/* Takes a NUL-free string of at most max bytes from the input. */
static size_t take(const uint8_t **p, const uint8_t *end, char *out, size_t max)
{
    size_t len = *p < end ? **p % (max + 1) : 0;
    if (*p < end)
        (*p)++;
    size_t n = 0;
    while (n < len && *p < end) {
        char c = (char)**p;
        (*p)++;
        out[n++] = c ? c : 'x';
    }
    out[n] = '\0';
    return n;
}

static void check(const ew_envelope *env, const model *m)
{
    if ((int)ew_envelope_header_count(env) != m->n)
        abort();
    for (int i = 0; i < m->n; i++) {
        const char *k, *v;
        if (ew_envelope_header_at(env, (size_t)i, &k, &v) != EW_OK || strcmp(k, m->k[i]) ||
            strcmp(v, m->v[i]) || strcmp(ew_envelope_header(env, k), v))
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const ewi_env_limits limits = {MAXH, 512};
    const uint8_t *p = data, *end = data + size;
    ew_envelope *env = ewi_envelope_new();
    ewi_envelope_set_limits(env, &limits);
    model m = {.n = 0};
    char k[40], v[600];
    while (p < end) {
        uint8_t op = *p++ % 4;
        take(&p, end, k, 32);
        if (op == 0) { /* public setter: validated, limited */
            take(&p, end, v, 520);
            ew_err rc = ew_envelope_set_header(env, k, v);
            if (rc == EW_OK)
                model_put(&m, k, v);
            else if (rc != EW_EINVAL && rc != EW_ETOOBIG)
                abort();
        } else if (op == 1 && m.n < MAXH) { /* from the wire: any key */
            size_t vl = take(&p, end, v, 520);
            if (k[0] && ewi_envelope_put(env, k, strlen(k), v, vl) == EW_OK)
                model_put(&m, k, v);
        } else if (op == 2) {
            ew_err rc = ew_envelope_remove_header(env, k);
            int i = model_find(&m, k);
            if (rc == EW_OK) {
                if (i < 0)
                    abort();
                memmove(&m.k[i], &m.k[i + 1], (size_t)(m.n - i - 1) * sizeof m.k[0]);
                memmove(&m.v[i], &m.v[i + 1], (size_t)(m.n - i - 1) * sizeof m.v[0]);
                m.n--;
            } else if (rc == EW_ENOTFOUND && i >= 0) {
                abort();
            }
        } else if (op == 3) {
            ew_envelope *c = ewi_envelope_clone(env);
            if (!c)
                abort();
            ewi_envelope_unref(env);
            env = c;
        }
        check(env, &m);
    }
    ewi_envelope_unref(env);
    return 0;
}
