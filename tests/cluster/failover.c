/* The cluster tests' common run (failover.h). */
#include "failover.h"

/* The receiver's tally and activity marks. */
static flow F;
static size_t n_events;
static fo_pacing pace;

/* 0 pending, else 1 + the ew_err; calloc'd per run (outcome_mem). */
static _Atomic int *outcome;
static void *outcome_mem;
static _Atomic size_t completed;
static _Atomic bool half_sent;
/* The sender waits here after the first half until the kill is done. */
static bool killing;
static pthread_mutex_t kill_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t kill_cv = PTHREAD_COND_INITIALIZER;
/* The last failed outcome (monotonic ms): the end of the window in which
 * the broker refused sends. */
static _Atomic int64_t last_failed_ms;
static _Atomic size_t redelivered;      /* handlings with attempt > 1 */
static _Atomic size_t delivery_counted; /* ... carrying x-delivery-count */
/* When the first event sent after the kill (the second half) was handled. */
static _Atomic int64_t first_after_kill_ms;
static _Atomic size_t handled_at_kill;

typedef struct sender {
    ew_manager *m;
    const ew_event_desc *ev;
    pthread_t th;
    bool running;
} sender;
static sender S;

void fo_init(size_t n, fo_pacing pacing)
{
    n_events = n;
    pace = pacing;
    outcome = outcome_mem = calloc(n, sizeof *outcome);
    assert_non_null(outcome_mem);
    atomic_store(&completed, 0);
    atomic_store(&half_sent, false);
    killing = false;
    atomic_store(&last_failed_ms, 0);
    atomic_store(&redelivered, 0);
    atomic_store(&delivery_counted, 0);
    atomic_store(&first_after_kill_ms, 0);
    atomic_store(&handled_at_kill, 0);
    flow_init(&F, n);
}

void fo_free(void)
{
    tally_free(&F.t);
    free(outcome_mem);
    outcome = outcome_mem = NULL;
}

tally_ref *fo_tref(void)
{
    return tref(&F.t, "receiver");
}

static void send_done(void *user, ew_err err)
{
    atomic_store(&outcome[(uintptr_t)user], 1 + (int)err);
    if (err != EW_OK && err != EW_EINDOUBT)
        atomic_store(&last_failed_ms, ewi_now_ms());
    atomic_fetch_add(&completed, 1);
    /* The end wait watches completions too. */
    pthread_mutex_lock(&F.t.mu);
    pthread_cond_broadcast(&F.t.cv);
    pthread_mutex_unlock(&F.t.mu);
}

static void *send_stream(void *arg)
{
    sender *s = arg;
    for (size_t i = 0; i < n_events; i++) {
        conf_event e = {.id = (int64_t)i, .text = FAULTS_TEXT};
        ew_err rc = ew_send_async(s->m, s->ev, NULL, &e, send_done, (void *)(uintptr_t)i);
        if (rc != EW_OK)
            send_done((void *)(uintptr_t)i, rc); /* the callback never runs then */
        /* A stream, not one burst: the kill lands inside it, and the second
         * half lasts through the failover. */
        int h = i >= n_events / 2;
        if (pace.every[h] && i % pace.every[h] == pace.every[h] - 1)
            ewi_sleep_ms(pace.ms[h]);
        if (i == n_events / 2 - 1) {
            atomic_store(&half_sent, true);
            pthread_mutex_lock(&kill_mu);
            while (!killing)
                pthread_cond_wait(&kill_cv, &kill_mu);
            pthread_mutex_unlock(&kill_mu);
        }
    }
    ew_flush(s->m, 180000);
    return NULL;
}

void fo_send_start(ew_manager *m, const ew_event_desc *ev)
{
    S = (sender){.m = m, .ev = ev};
    assert_int_equal(pthread_create(&S.th, NULL, send_stream, &S), 0);
    S.running = true;
}

void fo_send_join(void)
{
    if (S.running)
        pthread_join(S.th, NULL);
    S.running = false;
}

ew_err fo_listener(ew_delivery *d, const void *event, void *user)
{
    if (ew_delivery_attempt(d) > 1)
        atomic_fetch_add(&redelivered, 1);
    if (ew_delivery_header(d, "x-delivery-count"))
        atomic_fetch_add(&delivery_counted, 1);
    ew_err rc = flow_listener(d, event, user);
    int64_t zero = 0;
    if ((size_t)((const conf_event *)event)->id >= n_events / 2)
        atomic_compare_exchange_strong(&first_after_kill_ms, &zero, ewi_now_ms());
    return rc;
}

static bool ready_to_kill_(void *arg)
{
    (void)arg;
    return atomic_load(&half_sent) && tally_total(&F.t) >= n_events / 5;
}

bool fo_wait_ready_to_kill(int timeout_ms)
{
    bool ok = wait_until(ready_to_kill_, NULL, timeout_ms);
    atomic_store(&handled_at_kill, tally_total(&F.t));
    return ok;
}

void fo_killed(void)
{
    flow_mark(&F);
    pthread_mutex_lock(&kill_mu);
    killing = true;
    pthread_cond_signal(&kill_cv);
    pthread_mutex_unlock(&kill_mu);
}

/* Every send completed and every id sent with EW_OK handled (F.t.mu held). */
static bool ok_ones_handled_locked(void)
{
    if (atomic_load(&completed) < n_events)
        return false;
    for (size_t i = 0; i < n_events; i++)
        if (atomic_load(&outcome[i]) == 1 + EW_OK && !F.t.seen[i])
            return false;
    return true;
}

bool fo_wait_all(int stall_ms)
{
    /* Waits on the tally's condition (handlings and send completions
     * signal it) until every EW_OK send was handled, or nothing happened
     * for stall_ms. */
    pthread_mutex_lock(&F.t.mu);
    bool ok;
    while (!(ok = ok_ones_handled_locked())) {
        int64_t last = atomic_load(&F.last_ms), mark = atomic_load(&F.mark_ms);
        int64_t until = (last > mark ? last : mark) + stall_ms;
        if (ewi_left_ms(until) <= 0)
            break;
        ewi_cond_wait_until(&F.t.cv, &F.t.mu, until);
    }
    pthread_mutex_unlock(&F.t.mu);
    return ok;
}

void fo_count(fo_tally *t)
{
    memset(t, 0, sizeof *t);
    size_t by_code[64] = {0};
    pthread_mutex_lock(&F.t.mu);
    for (size_t i = 0; i < n_events; i++) {
        int o = atomic_load(&outcome[i]);
        bool seen = F.t.seen[i] > 0;
        if (o == 0) {
            t->pending++;
        } else if (o == 1 + EW_OK) {
            t->ok++;
            t->lost += !seen;
        } else if (o == 1 + EW_EINDOUBT) {
            t->indoubt++;
            t->indoubt_arrived += seen;
        } else {
            t->failed++;
            t->failed_arrived += seen;
            if (o - 1 < 64)
                by_code[o - 1]++;
        }
    }
    pthread_mutex_unlock(&F.t.mu);
    for (int c = 0; c < 64; c++)
        if (by_code[c])
            snprintf(t->codes + strlen(t->codes), sizeof t->codes - strlen(t->codes),
                     "%s%s:%zu", t->codes[0] ? "," : "", err_name((ew_err)c), by_code[c]);
    if (!t->codes[0])
        snprintf(t->codes, sizeof t->codes, "none");
    t->duplicated = tally_dups(&F.t);
    t->handled = tally_total(&F.t) - t->duplicated;
    t->redelivered = atomic_load(&redelivered);
    t->delivery_counted = atomic_load(&delivery_counted);
    t->handled_at_kill = atomic_load(&handled_at_kill);
    int64_t mark = atomic_load(&F.mark_ms);
    int64_t first = atomic_load(&first_after_kill_ms);
    t->no_service_ms = first ? first - mark : -1;
    int64_t lf = atomic_load(&last_failed_ms);
    t->failed_until_ms = lf ? lf - mark : 0;
}

void fo_explain(const fo_tally *t, bool underway, int kill_rc, bool all, int stall_ms)
{
    if (!underway)
        print_message("the stream never got under way (%zu handled)\n", t->handled_at_kill);
    if (kill_rc != 0)
        print_message("the kill failed with %d\n", kill_rc);
    if (!all)
        print_message("no progress for %d ms with sends or handlings missing\n", stall_ms);
    if (t->no_service_ms < 0)
        print_message("no event sent after the kill was handled\n");
    if (t->failed_arrived)
        print_message("%zu sends that failed (not in doubt: %s) arrived\n", t->failed_arrived,
                      t->codes);
    if (t->lost || t->pending)
        print_message("%zu ids sent with EW_OK never handled, %zu sends pending\n", t->lost,
                      t->pending);
}
