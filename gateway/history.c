#include "history.h"
#include "log.h"
#include "metrics.h"
#include "store.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define COMPONENT "history"

struct job {
    struct job *next;
    uint64_t session_id;
    char *request_id_json;
    char *filter;
    struct history_request req;
    uint64_t upto_seq;
};

struct history_worker {
    const struct config *cfg;
    struct mailbox *mb;
    struct store_reader *reader;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    struct job *head;
    struct job *tail;
    bool stopping;
    struct log_ratelimit error_rl;
};

static void job_free(struct job *job)
{
    free(job->request_id_json);
    free(job->filter);
    free(job);
}

static void run_job(struct history_worker *w, struct job *job)
{
    struct mail *mail = calloc(1, sizeof(*mail));

    if (mail == NULL) {
        job_free(job);
        return;
    }
    mail->kind = MAIL_HISTORY;
    mail->u.history.session_id = job->session_id;
    mail->u.history.request_id_json = job->request_id_json;
    mail->u.history.filter = job->filter;
    mail->u.history.kind = job->req.kind;
    job->request_id_json = NULL;
    job->filter = NULL;

    if (store_reader_history(w->reader, mail->u.history.filter, &job->req, job->upto_seq,
                             (size_t)w->cfg->history_max_messages,
                             &mail->u.history.result) != STORE_OK) {
        mail->u.history.failed = true;
        log_limited(&w->error_rl, LOG_ERROR, COMPONENT, "session %llu: %s",
                    (unsigned long long)job->session_id, store_reader_error(w->reader));
    }
    metrics_add(&metrics.history_requests, 1);
    job_free(job);
    mailbox_post(w->mb, mail);
}

static void *history_main(void *arg)
{
    struct history_worker *w = arg;

    for (;;) {
        struct job *job;

        pthread_mutex_lock(&w->lock);
        while (w->head == NULL && !w->stopping)
            pthread_cond_wait(&w->wake, &w->lock);
        if (w->stopping) {
            pthread_mutex_unlock(&w->lock);
            break;
        }
        job = w->head;
        w->head = job->next;
        if (w->head == NULL)
            w->tail = NULL;
        pthread_mutex_unlock(&w->lock);

        run_job(w, job);
    }
    return NULL;
}

struct history_worker *history_create(const struct config *cfg, struct mailbox *mb)
{
    struct history_worker *w = calloc(1, sizeof(*w));
    char err[512];

    if (w == NULL)
        return NULL;
    w->cfg = cfg;
    w->mb = mb;
    w->reader = store_reader_open(cfg->db, err, sizeof(err));
    if (w->reader == NULL) {
        log_error(COMPONENT, "cannot open a reader on the window store: %s", err);
        free(w);
        return NULL;
    }
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->wake, NULL);
    if (pthread_create(&w->thread, NULL, history_main, w) != 0) {
        log_error(COMPONENT, "cannot start the history thread");
        store_reader_close(w->reader);
        free(w);
        return NULL;
    }
    return w;
}

void history_destroy(struct history_worker *w)
{
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->lock);
    w->stopping = true;
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->lock);
    pthread_join(w->thread, NULL);

    while (w->head != NULL) {
        struct job *next = w->head->next;
        job_free(w->head);
        w->head = next;
    }
    store_reader_close(w->reader);
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->wake);
    free(w);
}

bool history_submit(struct history_worker *w, uint64_t session_id, const char *request_id_json,
                    const char *filter, const struct history_request *req, uint64_t upto_seq)
{
    struct job *job = calloc(1, sizeof(*job));

    if (job == NULL)
        return false;
    job->session_id = session_id;
    job->filter = strdup(filter);
    job->request_id_json = request_id_json ? strdup(request_id_json) : NULL;
    job->req = *req;
    job->upto_seq = upto_seq;
    if (job->filter == NULL || (request_id_json != NULL && job->request_id_json == NULL)) {
        job_free(job);
        return false;
    }

    pthread_mutex_lock(&w->lock);
    if (w->tail != NULL)
        w->tail->next = job;
    else
        w->head = job;
    w->tail = job;
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->lock);
    return true;
}
