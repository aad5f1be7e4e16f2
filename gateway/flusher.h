/*
 * A second writer for the fan-out. When one loop turn leaves many WebSocket
 * connections with output, the loop writes half of them and the flusher's
 * thread writes the other half. The system calls of a large fan-out then run
 * on two cores, and the last client gets its frame sooner.
 *
 * Threading: flusher_run is called from the loop thread only and returns
 * when every connection has been written. Meanwhile the worker calls
 * ws_conn_flush on its half and touches nothing else; ws_conn_flush changes
 * only its own connection, and frames count their references atomically.
 */
#ifndef TIDEGATE_FLUSHER_H
#define TIDEGATE_FLUSHER_H

#include "ws.h"

#include <stddef.h>

/* Fewer connections than this are written by the loop alone, because the
 * hand-off costs two thread wake-ups. The value is an estimate, not a
 * measured break-even point. */
#define FLUSHER_MIN_SHARED 128

struct flusher;

/* Starts the worker thread. Returns NULL when it cannot start, and
 * flusher_run then writes everything on the calling thread. */
struct flusher *flusher_create(void);

/* Stops and joins the worker thread. Accepts NULL. */
void flusher_destroy(struct flusher *f);

/* Calls ws_conn_flush on each of @conns, sharing the work with the worker
 * when there are FLUSHER_MIN_SHARED or more. */
void flusher_run(struct flusher *f, struct ws_conn *const *conns, size_t count);

#endif
