#include "flusher.h"
#include "log.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#define COMPONENT "flusher"

struct flusher {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t work_ready; /* the loop posted a job or requested a stop */
    pthread_cond_t work_done;  /* the worker finished its job */
    struct ws_conn *const *job;
    size_t job_count;
    bool busy;
    bool stopping;
};

static void flush_all(struct ws_conn *const *conns, size_t count)
{
    for (size_t i = 0; i < count; i++)
        ws_conn_flush(conns[i]);
}

static void *flusher_main(void *arg)
{
    struct flusher *f = arg;

    pthread_mutex_lock(&f->lock);
    for (;;) {
        while (!f->busy && !f->stopping)
            pthread_cond_wait(&f->work_ready, &f->lock);
        if (f->stopping)
            break;
        pthread_mutex_unlock(&f->lock);

        flush_all(f->job, f->job_count);

        pthread_mutex_lock(&f->lock);
        f->busy = false;
        pthread_cond_signal(&f->work_done);
    }
    pthread_mutex_unlock(&f->lock);
    return NULL;
}

struct flusher *flusher_create(void)
{
    struct flusher *f = calloc(1, sizeof(*f));

    if (f == NULL)
        return NULL;
    pthread_mutex_init(&f->lock, NULL);
    pthread_cond_init(&f->work_ready, NULL);
    pthread_cond_init(&f->work_done, NULL);
    if (pthread_create(&f->thread, NULL, flusher_main, f) != 0) {
        log_warn(COMPONENT, "cannot start the second writer thread: the event loop writes to "
                 "every client alone, and large fan-outs take longer");
        pthread_cond_destroy(&f->work_done);
        pthread_cond_destroy(&f->work_ready);
        pthread_mutex_destroy(&f->lock);
        free(f);
        return NULL;
    }
    pthread_setname_np(f->thread, "tidegate-flush");
    return f;
}

void flusher_destroy(struct flusher *f)
{
    if (f == NULL)
        return;
    pthread_mutex_lock(&f->lock);
    f->stopping = true;
    pthread_cond_signal(&f->work_ready);
    pthread_mutex_unlock(&f->lock);
    pthread_join(f->thread, NULL);
    pthread_cond_destroy(&f->work_done);
    pthread_cond_destroy(&f->work_ready);
    pthread_mutex_destroy(&f->lock);
    free(f);
}

void flusher_run(struct flusher *f, struct ws_conn *const *conns, size_t count)
{
    size_t half = count / 2;

    if (f == NULL || count < FLUSHER_MIN_SHARED) {
        flush_all(conns, count);
        return;
    }

    pthread_mutex_lock(&f->lock);
    f->job = conns;
    f->job_count = half;
    f->busy = true;
    pthread_cond_signal(&f->work_ready);
    pthread_mutex_unlock(&f->lock);

    flush_all(conns + half, count - half);

    pthread_mutex_lock(&f->lock);
    while (f->busy)
        pthread_cond_wait(&f->work_done, &f->lock);
    pthread_mutex_unlock(&f->lock);
}
