/* SPDX-License-Identifier: MIT */
/*
 * control.c - the daemon's control socket (see control.h). One listening Unix stream socket
 * and up to CONTROL_MAX_CLIENTS connections, all driven by the daemon's sd_event loop; no
 * call here blocks. Each connection carries any number of request lines, answered in order.
 * This file binds the socket, accepts connections, sets the limits and broadcasts events;
 * who may connect is control-auth.c, a connection control-client.c, the reading of requests
 * and writing of answers control-framing.c (control-private.h says what they share).
 *
 * Limits, so that no client can stall or exhaust the daemon:
 *   - input: one buffer of PROTO_MAX_LINE + 1 bytes per client (a line and its newline);
 *     a longer line is answered "request too long" and the client is disconnected
 *     (control-framing.c);
 *   - output: at most CONTROL_MAX_OUTPUT bytes of unsent answers per client, and
 *     CONTROL_MAX_SUBSCRIBER_OUTPUT for a subscriber (answers and events); a client that
 *     does not read is disconnected beyond that (control-client.c);
 *   - time: a client that sends no complete request for the idle timeout (reset by each
 *     request) is disconnected, except a subscriber, which is expected to be silent;
 *   - count: at most CONTROL_MAX_SUBSCRIBERS of the clients are subscribers (a further
 *     {"cmd":"events"} is answered with an error); when all CONTROL_MAX_CLIENTS slots are
 *     (both fewer when RLIMIT_NOFILE is low, control_limits(), and when accept() fails for
 *     want of descriptors the quiet client is evicted too)
 *     taken, a new (authorized) connection takes the slot of the ordinary client that has
 *     been quiet longest (control_evict(): nothing read from it or written to it), which gets
 *     one error line and is closed. Since subscribers can hold only some of the slots, there
 *     is always such a client: a crowd of silent or idle connections delays an operator's
 *     request by nothing, and a new connection is the last to be evicted. Only where no
 *     client can be evicted (not possible with these limits) is the newcomer refused.
 */
#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "daemon/control-private.h"
#include "shared/log.h"
#include "shared/macro.h"
#include "shared/proto.h"
#include "shared/time-util.h"

#define CONTROL_ACCEPT_BURST 32
#define CONTROL_ACCEPT_PAUSE_USEC (1 * USEC_PER_SEC)

static int control_on_accept_pause(sd_event_source *s, uint64_t usec, void *userdata)
{
        control *c = userdata;

        (void)s;
        (void)usec;
        c->accept_pause = sd_event_source_disable_unref(c->accept_pause);
        (void)sd_event_source_set_enabled(c->io, SD_EVENT_ON);
        return 0;
}

/* Stops accepting for a moment: without it, a full descriptor table would wake the loop
 * again at once, forever. */
static void control_pause_accept(control *c)
{
        int r;

        if (c->accept_pause)
                return;
        r = sd_event_add_time_relative(c->event, &c->accept_pause, CLOCK_MONOTONIC,
                                       CONTROL_ACCEPT_PAUSE_USEC, 0, control_on_accept_pause, c);
        if (r >= 0)
                (void)sd_event_source_set_enabled(c->io, SD_EVENT_OFF);
}

static int control_on_accept(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
        control *c = userdata;
        int cfd, r;

        (void)s;
        (void)revents;

        for (unsigned i = 0; i < CONTROL_ACCEPT_BURST; i++) {
                cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (cfd < 0) {
                        if (errno == EAGAIN || errno == EWOULDBLOCK)
                                break;
                        if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
                                continue;
                        log_warning_errno(errno, "control socket %s: accept: %m", c->path);
                        /* Out of descriptors: a quiet client gives its own up for the new
                         * one, as when the slots are full; else wait a moment. */
                        if ((errno == EMFILE || errno == ENFILE) && c->n_clients > 0 &&
                            control_evict(c))
                                continue;
                        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
                            errno == ENOMEM)
                                control_pause_accept(c);
                        break;
                }
                r = control_client_new(c, cfd);
                if (r < 0)
                        log_warning_errno(r, "control socket %s: cannot take a client: %m",
                                          c->path);
        }
        /* Never fail: a failing handler would disable the listener for good. */
        return 0;
}

/*
 * Makes path free for our socket: nothing there, or a stale socket nobody answers on (which
 * is removed). -EADDRINUSE when a live socket answers, -EEXIST when path is something else.
 * Logs failures.
 */
static int control_take_path(const char *path, const struct sockaddr_un *addr, socklen_t alen)
{
        _cleanup_close_ int fd = -1;
        struct stat st;

        if (lstat(path, &st) < 0) {
                if (errno == ENOENT)
                        return 0;
                return log_error_errno(errno, "control socket %s: %m", path);
        }
        if (!S_ISSOCK(st.st_mode))
                return log_error_errno(-EEXIST,
                                       "control socket %s: exists and is not a socket; refusing "
                                       "to replace it",
                                       path);

        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return log_error_errno(errno, "control socket %s: socket: %m", path);
        /* A non-blocking connect to a live listener succeeds, or fails with EAGAIN when its
         * backlog is full; either way somebody is there. */
        if (connect(fd, (const struct sockaddr *)addr, alen) == 0 || errno == EAGAIN ||
            errno == EINPROGRESS)
                return log_error_errno(-EADDRINUSE, "another imgd is already listening on %s",
                                       path);
        if (errno == ENOENT)
                return 0; /* gone meanwhile */
        if (errno != ECONNREFUSED)
                return log_error_errno(
                        errno, "control socket %s: cannot tell whether it is in use: %m", path);

        if (unlink(path) < 0 && errno != ENOENT)
                return log_error_errno(errno, "control socket %s: cannot remove stale socket: %m",
                                       path);
        log_debug("control socket %s: removed stale socket", path);
        return 0;
}

static inline void control_freep(control **c)
{
        control_free(*c);
}

/*
 * Sets c's client and subscriber limits from the descriptors the process may have: a quarter
 * of RLIMIT_NOFILE at most for clients (but CONTROL_MIN_CLIENTS at least, CONTROL_MAX_CLIENTS at
 * most), a quarter of those for subscribers (CONTROL_MAX_SUBSCRIBERS at most). Under `ulimit -n
 * 64` a crowd of silent connections would otherwise take the descriptors that intake, the
 * ledger and the workers need, and then accept() itself would fail for the operator.
 */
static void control_limits(control *c)
{
        struct rlimit rl;
        rlim_t quarter = CONTROL_MAX_CLIENTS;

        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
                quarter = rl.rlim_cur / 4;
        c->max_clients = quarter < CONTROL_MIN_CLIENTS   ? CONTROL_MIN_CLIENTS
                         : quarter > CONTROL_MAX_CLIENTS ? CONTROL_MAX_CLIENTS
                                                         : (unsigned)quarter;
        c->max_subscribers = c->max_clients / 4 < CONTROL_MAX_SUBSCRIBERS ? c->max_clients / 4
                                                                          : CONTROL_MAX_SUBSCRIBERS;
        if (c->max_clients < CONTROL_MAX_CLIENTS)
                log_info("control socket %s: at most %u clients and %u event subscribers "
                         "(RLIMIT_NOFILE is %llu)",
                         c->path, c->max_clients, c->max_subscribers,
                         (unsigned long long)rl.rlim_cur);
}

int control_new(sd_event *e, const char *path, control_handler_fn fn, void *userdata, control **ret)
{
        _cleanup_(control_freep) control *c = NULL;
        struct sockaddr_un addr = { .sun_family = AF_UNIX };
        socklen_t alen;
        struct stat st;
        size_t len;
        mode_t old_umask;
        int r;

        assert(e);
        assert(path);
        assert(fn);
        assert(ret);

        len = strlen(path);
        if (len == 0)
                return log_error_errno(-EINVAL, "control socket: empty path");
        if (len >= sizeof addr.sun_path)
                return log_error_errno(-ENAMETOOLONG,
                                       "control socket %s: path too long (%zu bytes, at most %zu)",
                                       path, len, sizeof addr.sun_path - 1);
        memcpy(addr.sun_path, path, len + 1);
        alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1);

        c = calloc(1, sizeof *c);
        if (!c)
                return log_error_errno(-ENOMEM, "control socket %s: %m", path);
        c->fd = -1;
        c->event = sd_event_ref(e);
        c->fn = fn;
        c->userdata = userdata;
        c->client_timeout_usec = CONTROL_CLIENT_TIMEOUT_USEC;
        c->uid = geteuid();
        c->path = strdup(path);
        if (!c->path)
                return log_error_errno(-ENOMEM, "control socket %s: %m", path);
        control_limits(c);

        c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (c->fd < 0)
                return log_error_errno(errno, "control socket %s: socket: %m", path);

        r = control_take_path(path, &addr, alen);
        if (r < 0)
                return r;

        /* Created owner-only, then opened to the group: never more open than 0660. */
        old_umask = umask(0177);
        r = bind(c->fd, (const struct sockaddr *)&addr, alen);
        umask(old_umask);
        if (r < 0)
                return log_error_errno(errno, "control socket %s: bind: %m", path);
        if (lstat(path, &st) < 0)
                return log_error_errno(errno, "control socket %s: %m", path);
        c->bound = true;
        c->dev = st.st_dev;
        c->ino = st.st_ino;
        c->socket_gid = st.st_gid;

        if (chmod(path, 0660) < 0)
                return log_error_errno(errno, "control socket %s: chmod: %m", path);
        c->mode = 0660;
        if (listen(c->fd, SOMAXCONN) < 0)
                return log_error_errno(errno, "control socket %s: listen: %m", path);

        r = sd_event_add_io(e, &c->io, c->fd, EPOLLIN, control_on_accept, c);
        if (r < 0)
                return log_error_errno(r, "control socket %s: cannot watch it: %m", path);

        *ret = TAKE_PTR(c);
        return 0;
}

control *control_free(control *c)
{
        struct stat st;

        if (!c)
                return NULL;

        while (c->clients)
                control_client_free(c->clients);
        c->io = sd_event_source_disable_unref(c->io);
        c->accept_pause = sd_event_source_disable_unref(c->accept_pause);
        if (c->fd >= 0)
                close(c->fd);
        /* Unlink only the socket we bound, not one another daemon put there since. */
        if (c->bound && lstat(c->path, &st) == 0 && st.st_dev == c->dev && st.st_ino == c->ino)
                (void)unlink(c->path);
        sd_event_unref(c->event);
        free(c->path);
        free(c->group_name);
        free(c->read_group_name);
        free(c);
        return NULL;
}

void control_set_client_timeout(control *c, uint64_t usec)
{
        assert(c);
        c->client_timeout_usec = usec > 0 ? usec : CONTROL_CLIENT_TIMEOUT_USEC;
}

int control_broadcast(control *c, const char *line)
{
        _cleanup_free_ char *terminated = NULL;
        struct client *cl, *next;
        size_t n;
        int sent = 0, r;

        if (!c)
                return 0;
        assert(line);
        n = strlen(line);
        if (n == 0 || line[n - 1] != '\n') {
                if (asprintf(&terminated, "%s\n", line) < 0)
                        return -ENOMEM;
                line = terminated;
                n++;
        }

        for (cl = c->clients; cl; cl = next) {
                next = cl->next;
                if (!cl->subscriber || cl->draining || cl->broken)
                        continue;
                r = control_client_queue(cl, line, n);
                if (r == -ENOBUFS) {
                        log_warning("control client pid %d: events subscriber dropped: more than "
                                    "%u KiB of events unread",
                                    (int)cl->cred.pid, CONTROL_MAX_SUBSCRIBER_OUTPUT / 1024);
                } else if (r < 0) {
                        return r; /* -ENOMEM: the other subscribers stay, without this line */
                } else {
                        r = control_client_flush(cl);
                        if (r >= 0)
                                r = control_client_arm(cl);
                        if (r >= 0) {
                                sent++;
                                continue;
                        }
                        log_debug_errno(r, "control client pid %d: disconnecting: %m",
                                        (int)cl->cred.pid);
                }
                if (cl == c->serving)
                        cl->broken = true; /* client_handle_line() returns, then it is freed */
                else
                        control_client_free(cl);
        }
        return sent;
}

unsigned control_subscribers(const control *c)
{
        return c ? c->n_subscribers : 0;
}
