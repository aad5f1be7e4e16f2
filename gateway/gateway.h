/*
 * The gateway: owns the components and runs the event loop on the main
 * thread. The loop waits on epoll for client sockets, the mailbox (broker
 * messages, upgraded sockets, publish results), a periodic timer and the
 * termination signals.
 */
#ifndef TIDEGATE_GATEWAY_H
#define TIDEGATE_GATEWAY_H

#include "auth.h"
#include "config.h"
#include "hub.h"
#include "mailbox.h"
#include "sequencer.h"
#include "flusher.h"
#include "ws.h"

#include <stdbool.h>
#include <stdint.h>

struct session;
struct ingest;
struct http;
struct pipeline;
struct history_worker;

#define GATEWAY_SESSION_BUCKETS 4096

struct gateway {
    const struct config *cfg;
    struct ws_config ws_cfg;
    struct mailbox mailbox;
    struct hub *hub;
    struct pipeline *pipeline;
    struct history_worker *history;
    struct ingest *ingest;
    struct http *http;
    json_t *dashboards; /* from the dashboards file, or NULL */
    struct auth *auth;
    struct log_ratelimit auth_rl;

    int epoll_fd;
    int signal_fd;
    int timer_fd;
    int conflate_timer_fd;

    struct session *sessions;  /* every live session, doubly linked */
    struct session *by_id[GATEWAY_SESSION_BUCKETS];
    struct session *dirty;     /* sessions with output to flush */
    struct flusher *flusher;   /* second writer, or NULL when the loop writes alone */
    struct session **flushing; /* dirty sessions of the current flush */
    struct ws_conn **flush_conns; /* their WebSocket connections, for the flusher */
    size_t flush_cap;          /* capacity of flushing and flush_conns */
    struct session *reap;      /* sessions whose connection is done */
    uint64_t next_session_id;
    size_t conflating_sessions; /* sessions with conflated messages waiting */
    char epoch[SEQUENCER_EPOCH_LEN + 1];
    uint64_t last_seq; /* seq of the newest message the loop has fanned out */
    int64_t churn_ms;  /* monotonic ms of the last session start or end; 0 after a trim */
    bool stopping;
};

/* Starts every component. Returns false with the reason logged. */
bool gateway_start(struct gateway *gw, const struct config *cfg);

/* Runs until SIGTERM or SIGINT, then shuts down gracefully. Returns the
 * process exit status. */
int gateway_run(struct gateway *gw);

void gateway_cleanup(struct gateway *gw);

#endif
