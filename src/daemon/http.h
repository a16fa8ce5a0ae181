/* SPDX-License-Identifier: MIT */
/*
 * http.h - the daemon's HTTP endpoint for monitoring: GET /metrics (the Prometheus text
 * exposition of api_metrics_text(), the same as `imgctl metrics`) and GET /health (200 or
 * 503 with a short JSON body). HEAD works on both; other paths are answered 404, other
 * methods 405 (with "Allow: GET, HEAD"). Nothing here changes the daemon: it only observes,
 * like the control socket's read-only commands.
 *
 * HTTP is libmicrohttpd's, run inside the daemon's sd_event loop without a thread of its own
 * (MHD_USE_EPOLL in external mode): MHD's epoll descriptor is an io source of the loop, and a
 * timer follows MHD_get_timeout(), each calling MHD_run(), which never blocks. Bounds: each
 * connection is closed after HTTP_CONNECTION_TIMEOUT_S seconds without progress and has at
 * most HTTP_CONNECTION_MEMORY bytes for its request; at most HTTP_MAX_CONNECTIONS are kept
 * open, and room is made for one more: a new connection past that number is served, and
 * the open one that has been quiet longest (no request started or answered since it was
 * accepted or last served) is closed. So slow or silent clients never take the supervisor's
 * time, nor keep a scraper out.
 *
 * GET /health: 200 with {"status":"ok",...} while imgd is running and none of the conditions
 * counted by http.health_alerts (config.h) holds, else 503 with "status":"failing" and the
 * conditions in "failing": the active alerts counted ("breaker", "queue_age", ...),
 * "paused" for an operator's pause when that is counted, "stopping" while imgd drains, and
 * "ledger" when the ledger cannot be read. "alerts" lists every active alert, counted or not.
 *
 * Where it listens: a listening stream socket passed by systemd under the name
 * HTTP_LISTEN_FDNAME (systemd/imgd-http.socket, FileDescriptorName=http) wins; else
 * http.listen of the configuration; with neither, there is no HTTP endpoint.
 */
#pragma once

#include <systemd/sd-event.h>

#include "daemon/api.h"
#include "shared/config.h"

#define HTTP_MAX_CONNECTIONS 64
#define HTTP_CONNECTION_TIMEOUT_S 10
#define HTTP_CONNECTION_MEMORY (32u * 1024) /* request line, headers: more is refused */
#define HTTP_LISTEN_FDNAME "http"

typedef struct http http;

/*
 * Takes the socket systemd passed under the name HTTP_LISTEN_FDNAME (LISTEN_FDS,
 * LISTEN_FDNAMES; the variables are removed from the environment, so worker processes do
 * not see them): returns its descriptor (close-on-exec, non-blocking; the caller owns it),
 * -ENOENT when none was passed, -ENOTSOCK (logged) when it is not a listening stream
 * socket. Other passed descriptors are closed, with a warning. Call it once, before any
 * process is started.
 */
int http_take_passed_fd(void);

/*
 * Starts serving on `passed_fd` (taken over, closed on failure too) when it is >= 0, else on
 * cfg->addr (bound here; a stale Unix socket file is replaced, one a live process answers on
 * is refused). Requests are answered from ctx, which must outlive the http; ctx->config is
 * read at each request, so a reload's health_alerts apply at once. Returns 0 and *ret, 0
 * and *ret = NULL when there is nowhere to listen, or a negative errno (logged with the
 * address).
 */
int http_new(sd_event *e, const struct config_http *cfg, int passed_fd, struct api_context *ctx,
             http **ret);

/* Closes every connection and the listening socket (a Unix socket file bound here is
 * removed). Accepts NULL; returns NULL. */
http *http_free(http *h);

/* Where it listens, e.g. "127.0.0.1:9118" (the port bound when 0 was asked for),
 * "[::1]:9118", "/run/imgd/http.sock". */
const char *http_address(const http *h);
