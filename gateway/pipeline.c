#include "pipeline.h"
#include "chain.h"
#include "log.h"
#include "metrics.h"
#include "store.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define COMPONENT "store"

/* Most messages committed in one transaction. */
#define PIPELINE_BATCH_MAX 4096

/* How long a commit waits for a lock another process holds on the file.
 * While the store is degraded it does not wait at all, so messages keep
 * flowing live at full speed and each batch still retries. */
#define PIPELINE_BUSY_TIMEOUT_MS 1000

/* In batched mode, submitters wait while this many messages are queued. */
#define PIPELINE_QUEUE_MAX 100000

struct pipeline {
    const struct config *cfg;
    struct mailbox *mb;
    struct store *store;
    struct sequencer sequencer; /* owned by the thread after start */
    struct sequencer initial;
    bool wait_for_commit;

    pthread_t thread;
    pthread_mutex_t work_lock; /* one batch is processed at a time */
    pthread_mutex_t lock;
    pthread_cond_t queued;    /* the thread waits for work */
    pthread_cond_t committed; /* submitters wait for their ticket */
    struct msg **queue;
    size_t queue_len;
    size_t queue_cap;
    uint64_t tickets_issued;
    uint64_t tickets_done;
    bool stopping;

    atomic_bool healthy;
    struct log_ratelimit error_rl;

    /* The chain runs on the pipeline thread. A reload leaves the new chain
     * in next_chain; the thread swaps it in between batches. chain_lock
     * keeps /metrics from reading a chain while it is swapped or freed. */
    pthread_mutex_t chain_lock;
    struct chain *chain;
    struct chain *next_chain;
};

static void render_chain_metrics(void *arg, struct buf *out)
{
    struct pipeline *p = arg;

    pthread_mutex_lock(&p->chain_lock);
    chain_render_metrics(p->chain, out);
    pthread_mutex_unlock(&p->chain_lock);
}

struct pipeline *pipeline_create(const struct config *cfg, struct mailbox *mb)
{
    struct store_options opts = {
        .path = cfg->db,
        .window_ms = (int64_t)cfg->window_seconds * 1000,
        .max_messages = cfg->window_max_messages,
    };
    struct pipeline *p = calloc(1, sizeof(*p));
    char err[512];

    if (p == NULL)
        return NULL;
    p->cfg = cfg;
    p->mb = mb;
    p->wait_for_commit = strcmp(cfg->durability, "commit") == 0;

    p->chain = chain_create(cfg->plugins, cfg->plugin_dir, err, sizeof(err));
    if (p->chain == NULL) {
        log_error("plugin", "cannot load the plugin chain: %s", err);
        free(p);
        return NULL;
    }

    p->store = store_open(&opts, err, sizeof(err));
    if (p->store == NULL) {
        log_error(COMPONENT, "cannot open the window store: %s", err);
        chain_destroy(p->chain);
        free(p);
        return NULL;
    }
    store_set_busy_timeout(p->store, PIPELINE_BUSY_TIMEOUT_MS);
    store_sequencer_state(p->store, &p->sequencer);
    p->initial = p->sequencer;
    atomic_init(&p->healthy, true);
    metrics_set_store_healthy(true);

    pthread_mutex_init(&p->lock, NULL);
    pthread_mutex_init(&p->work_lock, NULL);
    pthread_mutex_init(&p->chain_lock, NULL);
    pthread_cond_init(&p->queued, NULL);
    pthread_cond_init(&p->committed, NULL);
    metrics_set_extra(render_chain_metrics, p);
    log_info(COMPONENT, "opened %s: epoch %s, next seq %llu, window %ds / %d messages, "
             "durability %s",
             cfg->db, p->sequencer.epoch, (unsigned long long)p->sequencer.last_seq + 1,
             cfg->window_seconds, cfg->window_max_messages, cfg->durability);
    return p;
}

void pipeline_initial_state(const struct pipeline *p, struct sequencer *out)
{
    *out = p->initial;
}

bool pipeline_store_healthy(const struct pipeline *p)
{
    return atomic_load(&p->healthy);
}

static void process_batch(struct pipeline *p, struct msg **batch, size_t count,
                          void (*done)(struct pipeline *p, uint64_t ticket), uint64_t ticket);

void pipeline_submit(struct pipeline *p, struct msg *m)
{
    uint64_t ticket;

    /* In commit mode Paho hands over one message at a time and its PUBACK
     * waits for the commit anyway, so the work is done right here, on
     * Paho's thread: no hand-off to the pipeline thread and back. */
    if (p->wait_for_commit) {
        pthread_mutex_lock(&p->work_lock);
        process_batch(p, &m, 1, NULL, 0);
        pthread_mutex_unlock(&p->work_lock);
        return;
    }

    pthread_mutex_lock(&p->lock);
    while (p->queue_len >= PIPELINE_QUEUE_MAX && !p->stopping)
        pthread_cond_wait(&p->committed, &p->lock);
    if (p->queue_len == p->queue_cap) {
        size_t cap = p->queue_cap ? p->queue_cap * 2 : 1024;
        struct msg **q = realloc(p->queue, cap * sizeof(*q));
        if (q == NULL) {
            pthread_mutex_unlock(&p->lock);
            log_error(COMPONENT, "out of memory queueing a message on '%s'; dropped", m->topic);
            msg_unref(m);
            return;
        }
        p->queue = q;
        p->queue_cap = cap;
    }
    p->queue[p->queue_len++] = m;
    ticket = ++p->tickets_issued;
    pthread_cond_signal(&p->queued);

    (void)ticket;
    pthread_mutex_unlock(&p->lock);
}

/* Drops redeliveries of messages already stored; returns the new count.
 * NOTE: the check compares with the stored message, so a redelivery that
 * a plugin had changed before it was stored is not recognised. */
static size_t drop_duplicates(struct pipeline *p, struct msg **batch, size_t count)
{
    size_t kept = 0;

    for (size_t i = 0; i < count; i++) {
        if (batch[i]->dup && store_is_duplicate(p->store, batch[i])) {
            metrics_add(&metrics.duplicates_dropped, 1);
            log_debug(COMPONENT, "dropping a redelivered message on '%s' (MQTT id %u): "
                      "already stored",
                      batch[i]->topic, batch[i]->mqtt_id);
            msg_unref(batch[i]);
            continue;
        }
        batch[kept++] = batch[i];
    }
    return kept;
}

static void commit_batch(struct pipeline *p, struct msg **batch, size_t count)
{
    bool was_healthy = atomic_load(&p->healthy);

    for (size_t i = 0; i < count; i++)
        sequencer_assign(&p->sequencer, batch[i]);

    if (store_append(p->store, batch, count) == STORE_OK) {
        metrics_add(&metrics.messages_stored, count);
        if (!was_healthy) {
            log_info(COMPONENT, "the store works again; new messages are stored");
            atomic_store(&p->healthy, true);
            metrics_set_store_healthy(true);
            store_set_busy_timeout(p->store, PIPELINE_BUSY_TIMEOUT_MS);
        }
        return;
    }

    /* Live delivery goes on; the next batch tries the store again. */
    metrics_add(&metrics.store_errors, 1);
    metrics_add(&metrics.messages_not_stored, count);
    atomic_store(&p->healthy, false);
    metrics_set_store_healthy(false);
    store_set_busy_timeout(p->store, 0);
    log_limited(&p->error_rl, LOG_ERROR, COMPONENT,
                "%s (%s); %zu message(s) delivered live but not stored, seq %llu to %llu",
                store_error(p->store), p->cfg->db, count, (unsigned long long)batch[0]->seq,
                (unsigned long long)batch[count - 1]->seq);
}

/* Hands the batch to the loop in one mail. Adopts @list's items. */
static void forward(struct pipeline *p, struct msg_list *list)
{
    struct mail *mail;

    if (list->count == 0) {
        msg_list_cleanup(list);
        return;
    }
    mail = calloc(1, sizeof(*mail));
    if (mail == NULL) {
        log_limited(&p->error_rl, LOG_ERROR, COMPONENT,
                    "out of memory forwarding %zu message(s), seq %llu to %llu; they are stored "
                    "but not delivered live", list->count,
                    (unsigned long long)list->items[0]->seq,
                    (unsigned long long)list->items[list->count - 1]->seq);
        msg_list_cleanup(list);
        return;
    }
    mail->kind = MAIL_MESSAGES;
    mail->u.messages.items = list->items;
    mail->u.messages.count = list->count;
    *list = (struct msg_list){0};
    mailbox_post(p->mb, mail);
}

static void swap_chain_if_reloaded(struct pipeline *p)
{
    struct chain *old = NULL;

    pthread_mutex_lock(&p->lock);
    if (p->next_chain != NULL) {
        pthread_mutex_lock(&p->chain_lock);
        old = p->chain;
        p->chain = p->next_chain;
        p->next_chain = NULL;
        /* The old instances are cleaned up on this thread, after their
         * last transform. */
        chain_destroy(old);
        pthread_mutex_unlock(&p->chain_lock);
    }
    pthread_mutex_unlock(&p->lock);
    if (old != NULL)
        log_info("plugin", "reloaded the plugin chain: %zu instance(s)",
                 chain_instance_count(p->chain));
}

/* Drops duplicates, runs the chain, sequences and commits @batch, then
 * calls @done (the PUBACKs may go) and forwards the result to the loop.
 * Adopts the messages. Call with work_lock held. */
static void process_batch(struct pipeline *p, struct msg **batch, size_t count,
                          void (*done)(struct pipeline *p, uint64_t ticket), uint64_t ticket)
{
    struct msg_list out = {0};

    swap_chain_if_reloaded(p);
    count = drop_duplicates(p, batch, count);
    for (size_t i = 0; i < count; i++)
        chain_run(p->chain, batch[i], &out);
    if (out.count > 0)
        commit_batch(p, out.items, out.count);
    if (done != NULL)
        done(p, ticket);
    forward(p, &out);
}

static void tickets_done(struct pipeline *p, uint64_t ticket)
{
    pthread_mutex_lock(&p->lock);
    p->tickets_done = ticket;
    pthread_cond_broadcast(&p->committed);
    pthread_mutex_unlock(&p->lock);
}

static void *pipeline_main(void *arg)
{
    struct pipeline *p = arg;
    struct msg *batch[PIPELINE_BATCH_MAX];

    for (;;) {
        size_t count;
        uint64_t last_ticket;

        pthread_mutex_lock(&p->lock);
        while (p->queue_len == 0 && !p->stopping && p->next_chain == NULL)
            pthread_cond_wait(&p->queued, &p->lock);
        if (p->queue_len == 0 && p->stopping) {
            pthread_mutex_unlock(&p->lock);
            break;
        }
        if (p->queue_len == 0) {
            pthread_mutex_unlock(&p->lock);
            pthread_mutex_lock(&p->work_lock);
            swap_chain_if_reloaded(p);
            pthread_mutex_unlock(&p->work_lock);
            continue;
        }
        count = p->queue_len < PIPELINE_BATCH_MAX ? p->queue_len : PIPELINE_BATCH_MAX;
        memcpy(batch, p->queue, count * sizeof(*batch));
        memmove(p->queue, p->queue + count, (p->queue_len - count) * sizeof(*p->queue));
        p->queue_len -= count;
        last_ticket = p->tickets_issued - p->queue_len;
        pthread_mutex_unlock(&p->lock);

        pthread_mutex_lock(&p->work_lock);
        process_batch(p, batch, count, tickets_done, last_ticket);
        pthread_mutex_unlock(&p->work_lock);
    }
    pthread_mutex_lock(&p->work_lock);
    swap_chain_if_reloaded(p);
    pthread_mutex_unlock(&p->work_lock);
    return NULL;
}

bool pipeline_start(struct pipeline *p)
{
    return pthread_create(&p->thread, NULL, pipeline_main, p) == 0;
}

void pipeline_destroy(struct pipeline *p)
{
    if (p == NULL)
        return;
    pthread_mutex_lock(&p->lock);
    p->stopping = true;
    pthread_cond_broadcast(&p->queued);
    pthread_cond_broadcast(&p->committed);
    pthread_mutex_unlock(&p->lock);
    if (p->thread)
        pthread_join(p->thread, NULL);

    metrics_set_extra(NULL, NULL);
    chain_destroy(p->next_chain);
    chain_destroy(p->chain);
    store_close(p->store, p->sequencer.last_seq);
    log_info(COMPONENT, "closed %s at seq %llu", p->cfg->db,
             (unsigned long long)p->sequencer.last_seq);
    free(p->queue);
    pthread_mutex_destroy(&p->lock);
    pthread_mutex_destroy(&p->work_lock);
    pthread_mutex_destroy(&p->chain_lock);
    pthread_cond_destroy(&p->queued);
    pthread_cond_destroy(&p->committed);
    free(p);
}

bool pipeline_reload_plugins(struct pipeline *p, json_t *plugins, const char *plugin_dir)
{
    char err[1024];
    struct chain *next = chain_create(plugins, plugin_dir, err, sizeof(err));
    struct chain *unused = NULL;

    if (next == NULL) {
        log_error("plugin", "reload failed, the old chain keeps running: %s", err);
        return false;
    }
    pthread_mutex_lock(&p->lock);
    unused = p->next_chain; /* a reload that was never picked up */
    p->next_chain = next;
    pthread_cond_signal(&p->queued);
    pthread_mutex_unlock(&p->lock);
    chain_destroy(unused);
    return true;
}
