#include "gateway.h"
#include "clock.h"
#include "dashboards.h"
#include "history.h"
#include "http.h"
#include "ingest.h"
#include "log.h"
#include "metrics.h"
#include "pipeline.h"
#include "session.h"
#include "sse.h"

#include <errno.h>
#include <malloc.h>
#include <microhttpd.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#define COMPONENT "gateway"

/* Period of the housekeeping timer: pings, idle timeouts, reconnects. */
#define GATEWAY_TICK_MS 250

/* How long shutdown waits for clients to take their close frames. */
#define GATEWAY_SHUTDOWN_GRACE_MS 3000

/* Messages waiting for the loop before the broker's deliveries pause. */
#define GATEWAY_MAX_PENDING_MESSAGES 100000

#define EPOLL_BATCH 256

/* Quiet time after sessions start or end before freed heap pages go back
 * to the system. */
#define GATEWAY_TRIM_AFTER_MS 1000

/* Period of the conflation timer: how late a conflated message may be. */
#define GATEWAY_CONFLATE_TICK_MS 20

/* Tags for the epoll sources that are not sessions. */
static char tag_mailbox, tag_signal, tag_timer, tag_conflate;

static bool epoll_add(int epoll_fd, int fd, uint32_t events, void *ptr)
{
    struct epoll_event ev = {.events = events, .data.ptr = ptr};

    return epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev) == 0;
}

static bool setup_signals(struct gateway *gw)
{
    sigset_t set;

    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    /* Blocked before any thread starts, so every thread inherits the mask
     * and the signals arrive only through the signalfd. */
    if (pthread_sigmask(SIG_BLOCK, &set, NULL) != 0)
        return false;
    signal(SIGPIPE, SIG_IGN);
    gw->signal_fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    return gw->signal_fd >= 0;
}

static int periodic_timer(long period_ms)
{
    struct itimerspec spec = {
        .it_interval = {0, period_ms * 1000000L},
        .it_value = {0, period_ms * 1000000L},
    };
    int fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);

    if (fd >= 0 && timerfd_settime(fd, 0, &spec, NULL) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static bool setup_timer(struct gateway *gw)
{
    gw->timer_fd = periodic_timer(GATEWAY_TICK_MS);
    gw->conflate_timer_fd = periodic_timer(GATEWAY_CONFLATE_TICK_MS);
    return gw->timer_fd >= 0 && gw->conflate_timer_fd >= 0;
}

bool gateway_start(struct gateway *gw, const struct config *cfg)
{
    memset(gw, 0, sizeof(*gw));
    gw->cfg = cfg;
    gw->epoll_fd = gw->signal_fd = gw->timer_fd = gw->conflate_timer_fd = -1;
    gw->ws_cfg.max_message_bytes = (size_t)cfg->max_message_bytes;
    gw->ws_cfg.send_queue_bytes = (size_t)cfg->send_queue_bytes;
    gw->ws_cfg.ping_interval_ms = (int64_t)cfg->ws_ping_interval * 1000;
    gw->ws_cfg.idle_timeout_ms = (int64_t)cfg->ws_idle_timeout * 1000;

    if (!setup_signals(gw)) {
        log_error(COMPONENT, "cannot set up signal handling: %s", strerror(errno));
        return false;
    }
    if (!mailbox_init(&gw->mailbox, GATEWAY_MAX_PENDING_MESSAGES) || !setup_timer(gw)) {
        log_error(COMPONENT, "cannot create the loop's file descriptors: %s", strerror(errno));
        return false;
    }
    gw->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    if (gw->epoll_fd < 0 || !epoll_add(gw->epoll_fd, gw->mailbox.eventfd, EPOLLIN, &tag_mailbox) ||
        !epoll_add(gw->epoll_fd, gw->signal_fd, EPOLLIN, &tag_signal) ||
        !epoll_add(gw->epoll_fd, gw->timer_fd, EPOLLIN, &tag_timer) ||
        !epoll_add(gw->epoll_fd, gw->conflate_timer_fd, EPOLLIN, &tag_conflate)) {
        log_error(COMPONENT, "cannot set up epoll: %s", strerror(errno));
        return false;
    }

    gw->hub = hub_create();
    if (gw->hub == NULL)
        return false;

    gw->pipeline = pipeline_create(cfg, &gw->mailbox);
    if (gw->pipeline == NULL)
        return false;
    struct sequencer initial;
    pipeline_initial_state(gw->pipeline, &initial);
    memcpy(gw->epoch, initial.epoch, sizeof(gw->epoch));
    gw->last_seq = initial.last_seq;
    if (!pipeline_start(gw->pipeline)) {
        log_error(COMPONENT, "cannot start the store thread");
        return false;
    }

    gw->history = history_create(cfg, &gw->mailbox);
    if (gw->history == NULL)
        return false;
    gw->flusher = flusher_create();

    if (cfg->dashboards[0] != '\0') {
        char err[600];
        gw->dashboards = dashboards_load(cfg->dashboards, err, sizeof(err));
        if (gw->dashboards == NULL) {
            log_error(COMPONENT, "%s", err);
            return false;
        }
        log_info(COMPONENT, "loaded %zu dashboard(s) from %s", json_array_size(gw->dashboards),
                 cfg->dashboards);
    }

    char auth_err[600];
    gw->auth = auth_create(cfg, auth_err, sizeof(auth_err));
    if (gw->auth == NULL) {
        log_error(COMPONENT, "%s", auth_err);
        return false;
    }
    if (auth_enabled(gw->auth))
        log_info(COMPONENT, "authentication on: %s%s%s; anonymous clients %s",
                 cfg->auth_jwt_algorithm[0] ? cfg->auth_jwt_algorithm : "",
                 cfg->auth_jwt_algorithm[0] ? " tokens" : "",
                 cfg->api_keys ? " and API keys" : "",
                 cfg->allow_anonymous ? "allowed" : "refused");

    gw->http = http_create(cfg, &gw->mailbox, gw->dashboards, gw->auth);
    if (gw->http == NULL)
        return false;

    gw->ingest = ingest_create(cfg, &gw->mailbox, gw->pipeline);
    if (gw->ingest == NULL)
        return false;
    ingest_start(gw->ingest);

    log_info(COMPONENT, "tidegate %s started: epoch %s, broker %s, subscriptions %zu",
             TIDEGATE_VERSION, gw->epoch, cfg->mqtt_url, cfg->subscribe.count);
    return true;
}

/* ---- sessions ---- */

static void session_index_add(struct gateway *gw, struct session *s)
{
    size_t slot = s->id % GATEWAY_SESSION_BUCKETS;

    s->id_next = gw->by_id[slot];
    gw->by_id[slot] = s;
    s->next = gw->sessions;
    if (gw->sessions != NULL)
        gw->sessions->prev = s;
    gw->sessions = s;
}

static void session_index_remove(struct gateway *gw, struct session *s)
{
    struct session **link = &gw->by_id[s->id % GATEWAY_SESSION_BUCKETS];

    while (*link != s)
        link = &(*link)->id_next;
    *link = s->id_next;

    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        gw->sessions = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
}

static struct session *session_find(struct gateway *gw, uint64_t id)
{
    struct session *s = gw->by_id[id % GATEWAY_SESSION_BUCKETS];

    while (s != NULL && s->id != id)
        s = s->id_next;
    return s;
}

/* Counts the WebSocket sessions from the IP address of @from. */
static size_t count_from_address(struct gateway *gw, const struct session *from)
{
    size_t count = 0;

    for (struct session *s = gw->sessions; s != NULL; s = s->next) {
        if (s->ws != NULL && s->address_len == from->address_len &&
            memcmp(s->peer, from->peer, s->address_len) == 0)
            count++;
    }
    return count;
}

static void accept_upgrade(struct gateway *gw, struct mail *m)
{
    struct session *s;

    if (gw->stopping) {
        ws_socket_close(m->u.upgrade.fd, m->u.upgrade.urh);
        return;
    }
    s = session_create(gw, m->u.upgrade.fd, m->u.upgrade.urh, m->u.upgrade.extra,
                       m->u.upgrade.extra_len, m->u.upgrade.peer, m->u.upgrade.principal);
    if (s == NULL) {
        log_error(COMPONENT, "out of memory creating a session for %s", m->u.upgrade.peer);
        ws_socket_close(m->u.upgrade.fd, m->u.upgrade.urh);
        return;
    }
    if (!epoll_add(gw->epoll_fd, m->u.upgrade.fd, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, s)) {
        log_error(COMPONENT, "cannot watch the socket of %s: %s", m->u.upgrade.peer,
                  strerror(errno));
        session_destroy(s);
        return;
    }
    free(m->u.upgrade.principal); /* its lists now belong to the session */
    m->u.upgrade.principal = NULL;
    /* The address is the peer up to its last ':'. */
    s->address_len = (unsigned char)strnlen(m->u.upgrade.address, sizeof(s->peer) - 1);
    session_index_add(gw, s);
    gw->churn_ms = clock_monotonic_ms();
    metrics_gauge_add(&metrics.clients_connected, 1);
    log_info(COMPONENT, "session %llu connected from %s as '%s'", (unsigned long long)s->id,
             s->peer, s->authenticated ? principal_name(&s->principal) : "(not authenticated yet)");

    if (atomic_load(&metrics.clients_connected) > gw->cfg->max_connections) {
        metrics_add(&metrics.limit_rejections, 1);
        log_limited(&gw->auth_rl, LOG_WARN, COMPONENT,
                    "session %llu (%s): closing: over max_connections (%d)",
                    (unsigned long long)s->id, s->peer, gw->cfg->max_connections);
        session_close(s, WS_CLOSE_TRY_AGAIN_LATER, "the gateway is full; try again later");
    } else if (count_from_address(gw, s) >
               (size_t)gw->cfg->max_connections_per_address) {
        metrics_add(&metrics.limit_rejections, 1);
        log_limited(&gw->auth_rl, LOG_WARN, COMPONENT,
                    "session %llu (%s): closing: over max_connections_per_address (%d)",
                    (unsigned long long)s->id, s->peer, gw->cfg->max_connections_per_address);
        session_close(s, WS_CLOSE_TRY_AGAIN_LATER,
                      "too many connections from your address; try again later");
    }

    /* Bytes that came with the handshake are parsed now: no epoll event
     * will announce them. */
    ws_conn_handle_events(s->ws, EPOLLIN);
    session_check_done(s);
}

static void accept_stream(struct gateway *gw, struct mail *m)
{
    struct session *s;

    if (gw->stopping) {
        sse_conn_close(m->u.sse_open.sse, "gateway shutting down");
        sse_conn_destroy(m->u.sse_open.sse);
        m->u.sse_open.sse = NULL;
        return;
    }
    s = session_create_sse(gw, m->u.sse_open.sse, m->u.sse_open.peer, m->u.sse_open.filter,
                           &m->u.sse_open.history, m->u.sse_open.principal);
    if (s == NULL) {
        log_error(COMPONENT, "out of memory creating a stream for %s", m->u.sse_open.peer);
        sse_conn_close(m->u.sse_open.sse, "out of memory");
        sse_conn_destroy(m->u.sse_open.sse);
        m->u.sse_open.sse = NULL;
        return;
    }
    m->u.sse_open.sse = NULL; /* the session owns it now */
    free(m->u.sse_open.principal);
    m->u.sse_open.principal = NULL;
    session_index_add(gw, s);
    metrics_gauge_add(&metrics.sse_streams, 1);
    log_info(COMPONENT, "session %llu (event stream) connected from %s for '%s'",
             (unsigned long long)s->id, s->peer, m->u.sse_open.filter);
    session_flush(s);
}

static void reap_sessions(struct gateway *gw)
{
    while (gw->reap != NULL) {
        struct session *s = gw->reap;
        gw->reap = s->reap_next;

        if (s->ws != NULL)
            epoll_ctl(gw->epoll_fd, EPOLL_CTL_DEL, ws_conn_fd(s->ws), NULL);
        session_index_remove(gw, s);
        gw->churn_ms = clock_monotonic_ms();
        metrics_gauge_add(s->ws ? &metrics.clients_connected : &metrics.sse_streams, -1);
        if (s->ws != NULL && ws_conn_close_code(s->ws) != 0)
            log_info(COMPONENT, "session %llu (%s) disconnected: %s (close code %u)",
                     (unsigned long long)s->id, s->peer, session_end_reason(s),
                     ws_conn_close_code(s->ws));
        else
            log_info(COMPONENT, "session %llu (%s%s) disconnected: %s", (unsigned long long)s->id,
                     s->peer, s->ws ? "" : ", event stream", session_end_reason(s));
        session_destroy(s);
    }
}

/* Grows the flush arrays to hold @count sessions. */
static bool reserve_flush(struct gateway *gw, size_t count)
{
    size_t cap = gw->flush_cap ? gw->flush_cap : 256;
    struct session **sessions;
    struct ws_conn **conns;

    if (count <= gw->flush_cap)
        return true;
    while (cap < count)
        cap *= 2;
    sessions = realloc(gw->flushing, cap * sizeof(*sessions));
    if (sessions == NULL)
        return false;
    gw->flushing = sessions;
    conns = realloc(gw->flush_conns, cap * sizeof(*conns));
    if (conns == NULL)
        return false;
    gw->flush_conns = conns;
    gw->flush_cap = cap;
    return true;
}

/* Writes the output of every dirty session, the WebSocket ones through the
 * flusher, then reaps those that are done. */
static void flush_dirty(struct gateway *gw)
{
    while (gw->dirty != NULL) {
        size_t count = 0;
        size_t conn_count = 0;

        for (struct session *s = gw->dirty; s != NULL; s = s->dirty_next)
            count++;
        if (!reserve_flush(gw, count)) {
            /* Out of memory, so write them one by one on this thread. */
            struct session *s = gw->dirty;
            gw->dirty = s->dirty_next;
            s->dirty = false;
            session_flush(s);
            session_check_done(s);
            continue;
        }

        count = 0;
        for (struct session *s = gw->dirty; s != NULL; s = s->dirty_next) {
            gw->flushing[count++] = s;
            s->dirty = false;
            if (s->ws != NULL)
                gw->flush_conns[conn_count++] = s->ws;
            else
                session_flush(s);
        }
        gw->dirty = NULL;

        flusher_run(gw->flusher, gw->flush_conns, conn_count);
        for (size_t i = 0; i < count; i++)
            session_check_done(gw->flushing[i]);
    }
}

/* ---- mailbox ---- */

/* Fans out a message the pipeline has sequenced and stored. */
static void route_message(struct gateway *gw, struct msg *m)
{
    gw->last_seq = m->seq;
    hub_match(gw->hub, m->topic, m->seq, session_deliver, m);
}

static void drain_mailbox(struct gateway *gw)
{
    struct mail *m = mailbox_take_all(&gw->mailbox);

    while (m != NULL) {
        struct mail *next = m->next;
        struct session *s;

        switch (m->kind) {
        case MAIL_MESSAGES:
            for (size_t i = 0; i < m->u.messages.count; i++)
                route_message(gw, m->u.messages.items[i]);
            break;
        case MAIL_UPGRADE:
            accept_upgrade(gw, m);
            break;
        case MAIL_PUBLISH_DONE:
            s = session_find(gw, m->u.publish_done.session_id);
            if (s != NULL)
                session_publish_done(s, m->u.publish_done.request_id_json, m->u.publish_done.ok,
                                     m->u.publish_done.error);
            break;
        case MAIL_SSE_OPEN:
            accept_stream(gw, m);
            break;
        case MAIL_HISTORY:
            s = session_find(gw, m->u.history.session_id);
            if (s != NULL)
                session_history_done(s, m);
            break;
        }
        mail_free(m);
        m = next;
    }
}

/* Connection set-up uses memory that is freed soon after (libmicrohttpd's
 * request pools, wslay contexts), and glibc keeps those pages. Once a burst
 * of connections is over, return the free pages to the system. */
static void trim_after_churn(struct gateway *gw, int64_t now)
{
    if (gw->churn_ms == 0 || now - gw->churn_ms < GATEWAY_TRIM_AFTER_MS)
        return;
    gw->churn_ms = 0;
    malloc_trim(0);
}

static void tick(struct gateway *gw)
{
    uint64_t expirations;
    int64_t now = clock_monotonic_ms();
    ssize_t n = read(gw->timer_fd, &expirations, sizeof(expirations));

    (void)n;
    ingest_tick(gw->ingest, now);
    int64_t wall = clock_realtime_ms();
    for (struct session *s = gw->sessions; s != NULL; s = s->next) {
        session_check_token(s, wall, now);
        session_tick(s, now);
        session_check_done(s);
    }
    trim_after_churn(gw, now);
}

static void flush_conflated(struct gateway *gw)
{
    uint64_t expirations;
    int64_t now = clock_monotonic_ms();
    ssize_t n = read(gw->conflate_timer_fd, &expirations, sizeof(expirations));

    (void)n;
    for (struct session *s = gw->sessions; s != NULL && gw->conflating_sessions > 0; s = s->next)
        session_flush_conflated(s, now);
}

static void begin_shutdown(struct gateway *gw, const char *why)
{
    if (gw->stopping)
        return;
    gw->stopping = true;
    log_info(COMPONENT, "stopping (%s): sending close 1001 to every client", why);
    http_quiesce(gw->http);
    for (struct session *s = gw->sessions; s != NULL; s = s->next) {
        session_close(s, WS_CLOSE_GOING_AWAY, "gateway shutting down");
    }
}

/* SIGHUP: reloads the plugin chain from the config file. Other settings
 * take effect at the next start. */
static void reload_plugins(struct gateway *gw)
{
    json_t *plugins = NULL;
    char *plugin_dir = NULL;
    char err[512];

    if (gw->cfg->config_file == NULL) {
        log_warn(COMPONENT, "SIGHUP: no --config file to reload plugins from; nothing changed");
        return;
    }
    log_info(COMPONENT, "SIGHUP: reloading the plugin chain from %s", gw->cfg->config_file);
    if (!config_read_plugins(gw->cfg->config_file, &plugins, &plugin_dir, err, sizeof(err))) {
        log_error(COMPONENT, "SIGHUP: %s; the old chain keeps running", err);
        return;
    }
    pipeline_reload_plugins(gw->pipeline, plugins,
                            plugin_dir ? plugin_dir : gw->cfg->plugin_dir);
    json_decref(plugins);
    free(plugin_dir);
}

static void handle_signal(struct gateway *gw)
{
    struct signalfd_siginfo info;

    while (read(gw->signal_fd, &info, sizeof(info)) == (ssize_t)sizeof(info)) {
        if (info.ssi_signo == SIGHUP)
            reload_plugins(gw);
        else
            begin_shutdown(gw, info.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT");
    }
}

static void loop_once(struct gateway *gw, int timeout_ms)
{
    struct epoll_event events[EPOLL_BATCH];
    int n = epoll_wait(gw->epoll_fd, events, EPOLL_BATCH, timeout_ms);

    if (n < 0 && errno != EINTR)
        log_error(COMPONENT, "epoll_wait failed: %s", strerror(errno));

    for (int i = 0; i < n; i++) {
        void *ptr = events[i].data.ptr;

        if (ptr == &tag_mailbox) {
            drain_mailbox(gw);
        } else if (ptr == &tag_signal) {
            handle_signal(gw);
        } else if (ptr == &tag_timer) {
            tick(gw);
        } else if (ptr == &tag_conflate) {
            flush_conflated(gw);
        } else {
            struct session *s = ptr; /* only WebSocket sessions are in epoll */
            ws_conn_handle_events(s->ws, events[i].events);
            session_check_done(s);
        }
    }
    flush_dirty(gw);
    reap_sessions(gw);
}

int gateway_run(struct gateway *gw)
{
    int64_t deadline;

    while (!gw->stopping)
        loop_once(gw, -1);

    /* Let the close frames leave, bounded in time. */
    deadline = clock_monotonic_ms() + GATEWAY_SHUTDOWN_GRACE_MS;
    while (gw->sessions != NULL && clock_monotonic_ms() < deadline)
        loop_once(gw, 50);

    ingest_stop(gw->ingest, 1000);
    mailbox_close(&gw->mailbox);

    /* Everything taken from the broker is committed before the exit. */
    pipeline_destroy(gw->pipeline);
    gw->pipeline = NULL;
    log_info(COMPONENT, "stopped");
    return 0;
}

void gateway_cleanup(struct gateway *gw)
{
    while (gw->sessions != NULL) {
        struct session *s = gw->sessions;
        session_index_remove(gw, s);
        session_destroy(s);
    }
    http_destroy(gw->http);
    json_decref(gw->dashboards);
    auth_destroy(gw->auth);
    ingest_destroy(gw->ingest);
    history_destroy(gw->history);
    pipeline_destroy(gw->pipeline);
    flusher_destroy(gw->flusher);
    free(gw->flushing);
    free(gw->flush_conns);
    if (gw->mailbox.eventfd > 0)
        mailbox_cleanup(&gw->mailbox);
    hub_destroy(gw->hub);
    if (gw->epoll_fd >= 0)
        close(gw->epoll_fd);
    if (gw->signal_fd >= 0)
        close(gw->signal_fd);
    if (gw->timer_fd >= 0)
        close(gw->timer_fd);
    if (gw->conflate_timer_fd >= 0)
        close(gw->conflate_timer_fd);
}
