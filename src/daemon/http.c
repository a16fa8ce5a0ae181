/* SPDX-License-Identifier: MIT */
/*
 * http.c - GET /metrics and GET /health, served by libmicrohttpd in the sd_event loop; see
 * http.h.
 *
 * MHD runs in "external" mode with its own epoll set (MHD_USE_EPOLL without a polling
 * thread): the loop watches MHD's epoll descriptor, and on readiness, or when the timer set
 * from MHD_get_timeout() fires (a connection's idle timeout, or data MHD still has to
 * process), calls MHD_run(), which accepts, reads, answers and closes without blocking.
 * After each run the timer is set again. The request handler answers on its first call,
 * from the state the daemon has at that moment; nothing is kept between requests.
 *
 * Each accepted connection is tracked (MHD_OPTION_NOTIFY_CONNECTION) with the time of its
 * last activity (accepted, a request started, a response completed), for make_room(): MHD's
 * own limit is a little above HTTP_MAX_CONNECTIONS, and a connection past that number has
 * the quietest one shut down (shutdown(), not close(): the descriptor stays MHD's, which
 * sees the end of the stream and closes it).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <jansson.h>
#include <systemd/sd-daemon.h>

#include "daemon/http.h"
#include "shared/log.h"
#include "shared/macro.h"
#include "shared/time-util.h"

#define LISTEN_BACKLOG 64
/* MHD's own limit: room beyond HTTP_MAX_CONNECTIONS for the newcomer and for connections
 * closed here that MHD has not reaped yet. */
#define MHD_LIMIT (HTTP_MAX_CONNECTIONS + 8)

/* One accepted connection (MHD's socket_context), in http.conns. */
struct conn {
        struct conn *next, **pprev;
        int fd;
        uint64_t active_usec; /* accepted, or a request started or answered (monotonic) */
        bool evicted;         /* shut down here to make room; MHD closes it */
};

struct http {
        struct api_context *api;
        struct conn *conns;
        unsigned n_live; /* in conns and not evicted */
        bool closed;     /* a connection was closed during this MHD_run(): see schedule() */
        struct MHD_Daemon *mhd;
        sd_event_source *io, *timer;
        char *unix_path; /* a socket file bound here, removed at the end */
        char address[128];
};

static int set_flags(int fd)
{
        int fl = fcntl(fd, F_GETFD);

        if (fl < 0 || fcntl(fd, F_SETFD, fl | FD_CLOEXEC) < 0)
                return -errno;
        fl = fcntl(fd, F_GETFL);
        if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
                return -errno;
        return 0;
}

int http_take_passed_fd(void)
{
        char **names = NULL;
        int fd = -ENOENT, n, r;

        n = sd_listen_fds_with_names(1, &names);
        if (n < 0)
                log_warning_errno(n, "the sockets systemd passed (LISTEN_FDS): %m");
        if (n <= 0)
                return -ENOENT;
        for (int i = 0; i < n; i++) {
                int f = SD_LISTEN_FDS_START + i;
                const char *name = names && names[i] ? names[i] : "unknown";

                if (fd == -ENOENT && strcmp(name, HTTP_LISTEN_FDNAME) == 0) {
                        if (sd_is_socket(f, AF_UNSPEC, SOCK_STREAM, 1) <= 0) {
                                log_error("the socket systemd passed as '%s' is not a listening "
                                          "stream socket",
                                          name);
                                fd = -ENOTSOCK;
                                close(f);
                        } else if ((r = set_flags(f)) < 0) {
                                fd = log_error_errno(r, "the socket passed as '%s': %m", name);
                                close(f);
                        } else
                                fd = f;
                } else {
                        log_warning("ignoring the descriptor systemd passed as '%s' (imgd "
                                    "takes only one named '%s')",
                                    name, HTTP_LISTEN_FDNAME);
                        close(f);
                }
                if (names)
                        free(names[i]);
        }
        free(names);
        return fd;
}

/* Formats the address a socket is bound to into buf. */
static void format_address(int fd, char *buf, size_t size)
{
        struct sockaddr_storage ss = {};
        socklen_t len = sizeof ss;
        char host[INET6_ADDRSTRLEN] = "?";

        snprintf(buf, size, "?");
        if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
                return;
        if (ss.ss_family == AF_INET) {
                const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;

                inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
                snprintf(buf, size, "%s:%u", host, ntohs(in->sin_port));
        } else if (ss.ss_family == AF_INET6) {
                const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;

                inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
                snprintf(buf, size, "[%s]:%u", host, ntohs(in6->sin6_port));
        } else if (ss.ss_family == AF_UNIX) {
                const struct sockaddr_un *un = (const struct sockaddr_un *)&ss;

                snprintf(buf, size, "%s",
                         len > offsetof(struct sockaddr_un, sun_path) ? un->sun_path : "(unnamed)");
        }
}

/*
 * Removes the Unix socket file at un->sun_path when nothing answers on it (left by a process that
 * died); returns 0 (also when there is no file), -EADDRINUSE when a process answers, or
 * -EEXIST when it is not a socket.
 */
static int remove_stale_socket(const struct sockaddr_un *un, socklen_t len)
{
        _cleanup_close_ int fd = -1;
        struct stat st;

        if (lstat(un->sun_path, &st) < 0)
                return 0;
        if (!S_ISSOCK(st.st_mode))
                return -EEXIST;
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return -errno;
        /* Non-blocking: a live server with a full backlog answers EAGAIN, still in use. */
        if (connect(fd, (const struct sockaddr *)un, len) == 0 || errno == EAGAIN)
                return -EADDRINUSE;
        if (unlink(un->sun_path) < 0 && errno != ENOENT)
                return -errno;
        return 0;
}

/* Binds and listens on cfg->addr. Returns the descriptor, or a negative errno (logged). */
static int bind_listen(const struct config_http *cfg, char **ret_unix_path)
{
        const struct sockaddr *sa = (const struct sockaddr *)&cfg->addr;
        _cleanup_close_ int fd = -1;
        int one = 1, r;

        fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return log_error_errno(-errno, "http: listen = \"%s\" (line %d): socket: %m",
                                       cfg->listen, cfg->line);
        if (sa->sa_family == AF_UNIX) {
                r = remove_stale_socket((const struct sockaddr_un *)sa, cfg->addr_len);
                if (r == -EADDRINUSE)
                        return log_error_errno(r,
                                               "http: listen = \"%s\" (line %d): another "
                                               "process answers on that socket",
                                               cfg->listen, cfg->line);
                if (r < 0)
                        return log_error_errno(r, "http: listen = \"%s\" (line %d): %m",
                                               cfg->listen, cfg->line);
        } else
                (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (sa->sa_family == AF_INET6)
                (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
        if (bind(fd, sa, cfg->addr_len) < 0)
                return log_error_errno(-errno, "http: listen = \"%s\" (line %d): bind: %m",
                                       cfg->listen, cfg->line);
        if (sa->sa_family == AF_UNIX) {
                /* As open as a loopback port: any local user may read the metrics. */
                if (chmod(((const struct sockaddr_un *)sa)->sun_path, 0666) < 0)
                        log_warning_errno(-errno, "http: chmod %s: %m", cfg->listen);
                *ret_unix_path = strdup(((const struct sockaddr_un *)sa)->sun_path);
                if (!*ret_unix_path) {
                        unlink(((const struct sockaddr_un *)sa)->sun_path);
                        return log_error_errno(-ENOMEM, "http: %m");
                }
        }
        if (listen(fd, LISTEN_BACKLOG) < 0) {
                r = log_error_errno(-errno, "http: listen = \"%s\" (line %d): listen: %m",
                                    cfg->listen, cfg->line);
                if (*ret_unix_path) {
                        unlink(*ret_unix_path);
                        free(*ret_unix_path);
                        *ret_unix_path = NULL;
                }
                return r;
        }
        return TAKE_FD(fd);
}

/* Records activity on the connection of c: it is not the quiet one to close. */
static void touch(struct MHD_Connection *c)
{
        const union MHD_ConnectionInfo *info =
                MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
        struct conn *k = info ? info->socket_context : NULL;

        if (k)
                k->active_usec = mono_usec();
}

/*
 * Room for one more: with more than HTTP_MAX_CONNECTIONS open, the one quiet longest (other
 * than `keep`, the newcomer) is shut down; MHD sees it end and closes it at once. So idle
 * connections, or ones stuck in the middle of a request, cannot keep a scraper out.
 */
static void make_room(http *h, const struct conn *keep)
{
        struct conn *quiet = NULL;

        if (h->n_live <= HTTP_MAX_CONNECTIONS)
                return;
        for (struct conn *k = h->conns; k; k = k->next)
                if (k != keep && !k->evicted && (!quiet || k->active_usec < quiet->active_usec))
                        quiet = k;
        if (!quiet)
                return;
        log_debug("http: %u connections open; closing the one quiet for %" PRIu64 " ms", h->n_live,
                  (mono_usec() - quiet->active_usec) / USEC_PER_MSEC);
        (void)shutdown(quiet->fd, SHUT_RDWR);
        quiet->evicted = true;
        h->n_live--;
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
        http *h = cls;
        struct conn *k = *socket_context;

        if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
                const union MHD_ConnectionInfo *info =
                        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);

                k = calloc(1, sizeof *k);
                if (!k || !info) {
                        free(k); /* untracked: MHD's own limit and timeout still apply */
                        return;
                }
                k->fd = info->connect_fd;
                k->active_usec = mono_usec();
                k->next = h->conns;
                if (k->next)
                        k->next->pprev = &k->next;
                k->pprev = &h->conns;
                h->conns = k;
                h->n_live++;
                *socket_context = k;
                make_room(h, k);
        } else if (toe == MHD_CONNECTION_NOTIFY_CLOSED && k) {
                *k->pprev = k->next;
                if (k->next)
                        k->next->pprev = k->pprev;
                if (!k->evicted)
                        h->n_live--;
                h->closed = true;
                free(k);
                *socket_context = NULL;
        }
}

static void on_completed(void *cls, struct MHD_Connection *c, void **req_cls,
                         enum MHD_RequestTerminationCode toe)
{
        touch(c);
}

/*
 * Queues `body` (malloc'ed, taken over; NULL: out of memory) with `status` and `type`.
 * HEAD gets the headers alone (MHD leaves the body out).
 */
static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *type,
                             char *body, const char *allow)
{
        struct MHD_Response *resp;
        enum MHD_Result ret;

        if (!body)
                return MHD_NO; /* MHD closes the connection */
        resp = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
        if (!resp) {
                free(body);
                return MHD_NO;
        }
        (void)MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
        (void)MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
        if (allow)
                (void)MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
        ret = MHD_queue_response(c, status, resp);
        MHD_destroy_response(resp);
        return ret;
}

/*
 * The answer to GET /health: 200 or 503 in *ret_status and the JSON body (see http.h).
 * Returns the body (caller frees), or NULL on allocation failure.
 */
static char *health_body(http *h, unsigned *ret_status)
{
        _cleanup_(json_decrefp) json_t *alerts = json_array(), *failing = json_array();
        const struct api_context *ctx = h->api;
        unsigned counted = ctx->config->http.health_alerts;
        struct scheduler_report rep = {};
        bool paused = scheduler_paused(ctx->scheduler), ok;
        const char *state = ctx->state ? ctx->state : "starting";
        _cleanup_free_ char *text = NULL;
        char *line = NULL;
        json_t *body;
        int r;

        if (!alerts || !failing)
                return NULL;
        r = scheduler_report(ctx->scheduler, &rep);
        if (strcmp(state, "running") != 0)
                json_array_append_new(failing, json_string(state));
        if (r < 0)
                json_array_append_new(failing, json_string("ledger"));
        if (paused && (counted & CONFIG_HTTP_PAUSED))
                json_array_append_new(failing, json_string("paused"));
        for (int a = 0; a < _HEALTH_ALERT_MAX; a++) {
                if (!(rep.alerts.active & (1u << a)))
                        continue;
                json_array_append_new(alerts, json_string(health_alert_name(a)));
                if (counted & (1u << a))
                        json_array_append_new(failing, json_string(health_alert_name(a)));
        }
        ok = json_array_size(failing) == 0;
        body = json_pack("{s:s, s:s, s:s, s:b, s:O, s:O}", "status", ok ? "ok" : "failing", "state",
                         state, "level", rep.level ? rep.level : "full", "paused", paused, "alerts",
                         alerts, "failing", failing);
        if (!body)
                return NULL;
        /* A line ends the body, for people reading it with curl. */
        text = json_dumps(body, JSON_COMPACT);
        json_decref(body);
        if (!text || asprintf(&line, "%s\n", text) < 0)
                return NULL;
        *ret_status = ok ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE;
        return line;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **req_cls)
{
        http *h = cls;
        bool is_metrics = strcmp(url, "/metrics") == 0, is_health = strcmp(url, "/health") == 0;
        unsigned status = MHD_HTTP_OK;
        char *body;

        touch(c);
        if (!is_metrics && !is_health)
                return reply(c, MHD_HTTP_NOT_FOUND, "text/plain; charset=utf-8",
                             strdup("not found: imgd serves /metrics and /health\n"), NULL);
        if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
                return reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain; charset=utf-8",
                             strdup("method not allowed: use GET or HEAD\n"), "GET, HEAD");
        if (is_metrics) {
                _cleanup_free_ char *error = NULL;
                char *text = NULL;
                int r = api_metrics_text(h->api, &text, &error);

                if (r < 0) {
                        log_warning("http: GET /metrics: %s", error ?: strerror(-r));
                        if (asprintf(&body, "cannot render the metrics: %s\n",
                                     error ?: strerror(-r)) < 0)
                                body = NULL;
                        return reply(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "text/plain; charset=utf-8",
                                     body, NULL);
                }
                return reply(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", text,
                             NULL);
        }
        body = health_body(h, &status);
        return reply(c, status, "application/json", body, NULL);
}

/*
 * Sets the timer from MHD_get_timeout(): off when MHD waits for nothing but the socket. At
 * its connection limit MHD takes the listening socket out of its epoll set, and puts it back
 * only at the start of a run: when connections were closed during this one (evicted ones
 * reaped, after a burst filled the limit before they were), run again at once, or the
 * connections waiting in the backlog would wait for the next idle timeout (10 s).
 */
static void schedule(http *h)
{
        MHD_UNSIGNED_LONG_LONG ms = 0;

        if (h->closed) {
                h->closed = false;
                ms = 0;
        } else if (MHD_get_timeout(h->mhd, &ms) != MHD_YES) {
                (void)sd_event_source_set_enabled(h->timer, SD_EVENT_OFF);
                return;
        }
        (void)sd_event_source_set_time_relative(h->timer, (uint64_t)ms * USEC_PER_MSEC);
        (void)sd_event_source_set_enabled(h->timer, SD_EVENT_ONESHOT);
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
        http *h = userdata;

        (void)MHD_run(h->mhd);
        schedule(h);
        return 0;
}

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
        http *h = userdata;

        (void)MHD_run(h->mhd);
        schedule(h);
        return 0;
}

/* MHD's own messages (a refused connection, a broken request) are debug-level news. */
static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
        _cleanup_free_ char *msg = NULL;

        if (log_get_max_level() < LOG_DEBUG || vasprintf(&msg, fmt, ap) < 0)
                return;
        msg[strcspn(msg, "\n")] = '\0';
        log_debug("http: %s", msg);
}

int http_new(sd_event *e, const struct config_http *cfg, int passed_fd, struct api_context *ctx,
             http **ret)
{
        _cleanup_close_ int fd = passed_fd;
        const union MHD_DaemonInfo *info;
        http *h;
        int r;

        *ret = NULL;
        if (fd < 0 && cfg->addr_len == 0)
                return 0;
        h = calloc(1, sizeof *h);
        if (!h)
                return log_error_errno(-ENOMEM, "http: %m");
        h->api = ctx;
        if (fd < 0) {
                fd = bind_listen(cfg, &h->unix_path);
                if (fd < 0) {
                        http_free(h);
                        return fd;
                }
        } else if (cfg->listen)
                log_info("http: serving on the socket systemd passed; listen = \"%s\" is not "
                         "used",
                         cfg->listen);
        format_address(fd, h->address, sizeof h->address);

        h->mhd = MHD_start_daemon(
                MHD_USE_EPOLL | MHD_USE_ERROR_LOG, 0, NULL, NULL, on_request, h,
                MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, h, MHD_OPTION_LISTEN_SOCKET, fd,
                MHD_OPTION_CONNECTION_LIMIT, (unsigned)MHD_LIMIT, MHD_OPTION_NOTIFY_CONNECTION,
                on_connection, h, MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
                MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)HTTP_CONNECTION_TIMEOUT_S,
                MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)HTTP_CONNECTION_MEMORY, MHD_OPTION_END);
        if (!h->mhd) {
                r = log_error_errno(-EIO, "http: %s: cannot start the HTTP server", h->address);
                http_free(h);
                return r;
        }
        TAKE_FD(fd); /* MHD's now: MHD_stop_daemon() closes it */
        info = MHD_get_daemon_info(h->mhd, MHD_DAEMON_INFO_EPOLL_FD);
        if (!info) {
                r = log_error_errno(-EIO, "http: %s: no epoll descriptor", h->address);
                http_free(h);
                return r;
        }
        r = sd_event_add_io(e, &h->io, info->epoll_fd, EPOLLIN, on_io, h);
        if (r >= 0)
                r = sd_event_add_time_relative(e, &h->timer, CLOCK_MONOTONIC, 0, 0, on_timer, h);
        if (r < 0) {
                log_error_errno(r, "http: event loop: %m");
                http_free(h);
                return r;
        }
        schedule(h);
        log_info("http: serving /metrics and /health on %s", h->address);
        *ret = h;
        return 0;
}

http *http_free(http *h)
{
        if (!h)
                return NULL;
        h->io = sd_event_source_disable_unref(h->io);
        h->timer = sd_event_source_disable_unref(h->timer);
        if (h->mhd)
                MHD_stop_daemon(h->mhd);
        while (h->conns) { /* none, unless MHD left a close unreported */
                struct conn *k = h->conns;

                h->conns = k->next;
                free(k);
        }
        if (h->unix_path)
                (void)unlink(h->unix_path);
        free(h->unix_path);
        free(h);
        return NULL;
}

const char *http_address(const http *h)
{
        return h ? h->address : NULL;
}
