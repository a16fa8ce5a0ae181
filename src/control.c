/* SPDX-License-Identifier: MIT */
/*
 * control.c - the daemon's control socket (see control.h). One listening Unix stream socket
 * and up to CONTROL_MAX_CLIENTS connections, all driven by the daemon's sd_event loop; no
 * call here blocks. Each connection carries any number of request lines, answered in order.
 *
 * Limits, so that no client can stall or exhaust the daemon:
 *   - input: one buffer of PROTO_MAX_LINE + 1 bytes per client (a line and its newline);
 *     a longer line is answered "request too long" and the client is disconnected;
 *   - output: at most CONTROL_MAX_OUTPUT bytes of unsent answers per client; a client that
 *     does not read its answers is disconnected beyond that;
 *   - time: a client that sends no complete request for the idle timeout (reset by each
 *     request) is disconnected;
 *   - count: beyond CONTROL_MAX_CLIENTS, a new connection gets one error line and is closed.
 *
 * Client states and the function that performs each transition:
 *
 *   client_new()                 client_on_io(): EOF, or client_handle_input(): line too long
 *       |                                      (error answer queued)
 *       v                                           |
 *     OPEN (reading; answers written as the socket  +---> DRAINING (no more reading)
 *       |   accepts them, EPOLLOUT while blocked)                 |
 *       |                                                         | queue written
 *       +--- I/O error, idle timeout (client_on_timer),           v
 *            output over CONTROL_MAX_OUTPUT ------------------> closed: client_free()
 */
#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "imgd/control.h"
#include "imgd/log.h"
#include "imgd/macro.h"
#include "imgd/proto.h"

#define USEC_PER_SEC UINT64_C(1000000)
#define CONTROL_MAX_OUTPUT (4u * 1024 * 1024)
#define CONTROL_INPUT_SIZE (PROTO_MAX_LINE + 1)
#define CONTROL_ACCEPT_BURST 32
#define CONTROL_ACCEPT_PAUSE_USEC (1 * USEC_PER_SEC)

struct client {
        control *control;
        struct client *prev, *next;
        int fd;
        sd_event_source *io;
        sd_event_source *timer;
        struct ucred cred; /* the peer at connect time (SO_PEERCRED), for authorization */

        char *in; /* CONTROL_INPUT_SIZE bytes */
        size_t in_len;

        char *out; /* unsent answers are out[out_start..out_end) */
        size_t out_start, out_end, out_alloc;

        bool draining; /* reads no more; closed once the output is written */
};

struct control {
        sd_event *event;
        char *path;
        int fd;
        sd_event_source *io;
        sd_event_source *accept_pause; /* re-enables accepting after EMFILE and friends */

        bool bound; /* path is our socket: dev/ino identify it, so we unlink only ours */
        dev_t dev;
        ino_t ino;

        control_handler_fn fn;
        void *userdata;

        struct client *clients;
        unsigned n_clients;
        bool warned_full; /* logged "too many clients" since the last client left */
        uint64_t client_timeout_usec;
};

static void client_free(struct client *cl)
{
        control *c;

        if (!cl)
                return;
        c = cl->control;

        if (cl->prev)
                cl->prev->next = cl->next;
        else
                c->clients = cl->next;
        if (cl->next)
                cl->next->prev = cl->prev;
        assert(c->n_clients > 0);
        c->n_clients--;
        c->warned_full = false;

        sd_event_source_disable_unref(cl->io);
        sd_event_source_disable_unref(cl->timer);
        if (cl->fd >= 0)
                close(cl->fd);
        free(cl->in);
        free(cl->out);
        free(cl);
}

static size_t client_pending(const struct client *cl)
{
        return cl->out_end - cl->out_start;
}

/*
 * Where authorization goes. There is no policy yet: the socket's mode (0660) and owner decide
 * who can connect, and every connected client may run every command. A policy would look at
 * cl->cred (uid, gid, pid as the kernel reported them at connect time) and at cmd, e.g.
 * allow read-only commands to all and commands that change jobs only to root or to members
 * of the socket's group. Returns 0 to allow, or -EPERM with a message in *ret_error.
 */
static int client_authorize(const struct client *cl, const char *cmd, char **ret_error)
{
        (void)cl;
        (void)cmd;
        (void)ret_error;
        return 0;
}

/* Appends n bytes to the output queue. -ENOBUFS beyond CONTROL_MAX_OUTPUT; unchanged on
 * failure. */
static int client_queue(struct client *cl, const char *data, size_t n)
{
        size_t pending = client_pending(cl), want;
        char *p;

        if (n > CONTROL_MAX_OUTPUT - pending)
                return -ENOBUFS;

        if (cl->out_start > 0 && cl->out_end + n > cl->out_alloc) {
                memmove(cl->out, cl->out + cl->out_start, pending);
                cl->out_start = 0;
                cl->out_end = pending;
        }
        if (cl->out_end + n > cl->out_alloc) {
                want = cl->out_alloc ? cl->out_alloc : 4096;
                while (want < cl->out_end + n)
                        want *= 2;
                p = realloc(cl->out, want);
                if (!p)
                        return -ENOMEM;
                cl->out = p;
                cl->out_alloc = want;
        }
        memcpy(cl->out + cl->out_end, data, n);
        cl->out_end += n;
        return 0;
}

/* Writes as much of the output queue as the socket takes. Returns 0 (the rest, if any,
 * waits for EPOLLOUT) or a negative errno when the connection is broken. */
static int client_flush(struct client *cl)
{
        ssize_t n;

        while (client_pending(cl) > 0) {
                n = send(cl->fd, cl->out + cl->out_start, client_pending(cl),
                         MSG_NOSIGNAL | MSG_DONTWAIT);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN || errno == EWOULDBLOCK)
                                return 0;
                        return negative_errno();
                }
                cl->out_start += (size_t)n;
        }
        cl->out_start = cl->out_end = 0;
        return 0;
}

/* Queues an error answer; -ENOMEM/-ENOBUFS if it cannot. */
static int client_queue_error(struct client *cl, const char *message)
{
        _cleanup_free_ char *line = proto_format_error(message);

        if (!line)
                return -ENOMEM;
        return client_queue(cl, line, strlen(line));
}

/* Answers one request line (without its newline). Returns 0, or a negative errno when the
 * answer cannot be queued (the client is then disconnected). */
static int client_handle_line(struct client *cl, const char *line, size_t n)
{
        control *c = cl->control;
        _cleanup_(json_decrefp) json_t *req = NULL;
        _cleanup_(json_decrefp) json_t *result = NULL;
        _cleanup_free_ char *error = NULL, *answer = NULL, *too_big = NULL;
        const char *cmd = NULL;
        size_t len;
        int r;

        r = sd_event_source_set_time_relative(cl->timer, c->client_timeout_usec);
        if (r >= 0)
                r = sd_event_source_set_enabled(cl->timer, SD_EVENT_ONESHOT);
        if (r < 0)
                return r;

        r = proto_parse_request(line, n, &req, &cmd, &error);
        if (r >= 0)
                r = client_authorize(cl, cmd, &error);
        if (r >= 0) {
                r = c->fn(cmd, req, c->userdata, &result, &error);
                if (r >= 0)
                        answer = proto_format_ok(result);
        }
        if (r < 0) {
                log_debug("control client pid %d: %s: %s", (int)cl->cred.pid,
                          cmd ? cmd : "(bad request)", error ? error : strerror(-r));
                answer = proto_format_error(error ? error : strerror(-r));
        }
        if (!answer)
                return -ENOMEM;

        len = strlen(answer);
        if (len - 1 > PROTO_MAX_LINE) {
                if (asprintf(&too_big, "response too large (%zu bytes, at most %d); ask for less",
                             len - 1, PROTO_MAX_LINE) < 0)
                        return -ENOMEM;
                return client_queue_error(cl, too_big);
        }
        return client_queue(cl, answer, len);
}

/* Answers every complete line in the input buffer and keeps the incomplete rest. With
 * at_eof, an unterminated last line is answered too. Returns 0 or a negative errno. */
static int client_handle_input(struct client *cl, bool at_eof)
{
        size_t start = 0, n;
        char *nl;
        int r;

        while (!cl->draining && start < cl->in_len) {
                nl = memchr(cl->in + start, '\n', cl->in_len - start);
                if (!nl) {
                        if (!at_eof)
                                break;
                        nl = cl->in + cl->in_len; /* the unterminated last line */
                }
                n = (size_t)(nl - (cl->in + start));
                if (n > 0 && cl->in[start + n - 1] == '\r')
                        n--;
                r = client_handle_line(cl, cl->in + start, n);
                if (r < 0)
                        return r;
                start = (size_t)(nl - cl->in) + (nl < cl->in + cl->in_len ? 1 : 0);
        }

        if (start > 0) {
                memmove(cl->in, cl->in + start, cl->in_len - start);
                cl->in_len -= start;
        }

        if (cl->in_len >= CONTROL_INPUT_SIZE) {
                /* A full buffer without a newline: the line is longer than allowed. */
                char message[64];

                log_debug("control client pid %d: request longer than %d bytes",
                          (int)cl->cred.pid, PROTO_MAX_LINE);
                snprintf(message, sizeof message, "request too long (more than %d bytes)",
                         PROTO_MAX_LINE);
                cl->in_len = 0;
                cl->draining = true;
                r = client_queue_error(cl, message);
                if (r < 0)
                        return r;
        }
        if (at_eof)
                cl->draining = true;
        return 0;
}

/* Reads what is available. Returns 0, or a negative errno when the connection is broken. */
static int client_read(struct client *cl)
{
        ssize_t n;

        assert(cl->in_len < CONTROL_INPUT_SIZE);

        n = read(cl->fd, cl->in + cl->in_len, CONTROL_INPUT_SIZE - cl->in_len);
        if (n < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                        return 0;
                return negative_errno();
        }
        cl->in_len += (size_t)n;
        return client_handle_input(cl, n == 0);
}

static int client_on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
        struct client *cl = userdata;
        uint32_t events;
        int r = 0;

        (void)s;
        (void)fd;

        if ((revents & (EPOLLIN | EPOLLHUP | EPOLLERR)) && !cl->draining)
                r = client_read(cl);
        if (r >= 0)
                r = client_flush(cl);
        if (r < 0) {
                log_debug_errno(r, "control client pid %d: disconnecting: %m", (int)cl->cred.pid);
                goto disconnect;
        }

        events = (cl->draining ? 0 : EPOLLIN) | (client_pending(cl) > 0 ? EPOLLOUT : 0);
        if (events == 0)
                goto disconnect; /* draining and everything written */
        r = sd_event_source_set_io_events(cl->io, events);
        if (r < 0)
                goto disconnect;
        return 0;

disconnect:
        client_free(cl);
        return 0;
}

static int client_on_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
        struct client *cl = userdata;

        (void)s;
        (void)usec;
        log_debug("control client pid %d: silent for %llu ms, disconnecting", (int)cl->cred.pid,
                  (unsigned long long)(cl->control->client_timeout_usec / 1000));
        client_free(cl);
        return 0;
}

/* Takes over fd (closed on failure too). Returns 0 or a negative errno. */
static int client_new(control *c, int fd)
{
        _cleanup_close_ int cfd = fd;
        struct client *cl;
        socklen_t len = sizeof cl->cred;
        int r;

        cl = calloc(1, sizeof *cl);
        if (!cl)
                return -ENOMEM;
        cl->control = c;
        cl->fd = -1;
        if (getsockopt(cfd, SOL_SOCKET, SO_PEERCRED, &cl->cred, &len) < 0) {
                r = negative_errno();
                goto free_client;
        }
        cl->in = malloc(CONTROL_INPUT_SIZE);
        if (!cl->in) {
                r = -ENOMEM;
                goto free_client;
        }
        r = sd_event_add_io(c->event, &cl->io, cfd, EPOLLIN, client_on_io, cl);
        if (r < 0)
                goto free_client;
        r = sd_event_add_time_relative(c->event, &cl->timer, CLOCK_MONOTONIC,
                                       c->client_timeout_usec, 0, client_on_timer, cl);
        if (r < 0)
                goto free_client;

        cl->fd = TAKE_FD(cfd);
        cl->next = c->clients;
        if (c->clients)
                c->clients->prev = cl;
        c->clients = cl;
        c->n_clients++;
        log_debug("control client connected: pid %d uid %u gid %u", (int)cl->cred.pid,
                  (unsigned)cl->cred.uid, (unsigned)cl->cred.gid);
        return 0;

free_client:
        sd_event_source_disable_unref(cl->io);
        sd_event_source_disable_unref(cl->timer);
        free(cl->in);
        free(cl);
        return r;
}

/* Answers a connection beyond the limit with one error line and closes it. */
static void control_reject(control *c, int fd)
{
        _cleanup_close_ int cfd = fd;
        _cleanup_free_ char *line = proto_format_error("too many clients");

        if (!c->warned_full) {
                log_warning("control socket %s: refusing clients beyond %d", c->path,
                            CONTROL_MAX_CLIENTS);
                c->warned_full = true;
        }
        /* A new socket's buffer is empty: one short line fits, or the client is gone. */
        if (line)
                (void)send(cfd, line, strlen(line), MSG_NOSIGNAL | MSG_DONTWAIT);
}

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
                                       CONTROL_ACCEPT_PAUSE_USEC, 0, control_on_accept_pause,
                                       c);
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
                        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
                            errno == ENOMEM)
                                control_pause_accept(c);
                        break;
                }
                if (c->n_clients >= CONTROL_MAX_CLIENTS) {
                        control_reject(c, cfd);
                        continue;
                }
                r = client_new(c, cfd);
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
                return log_error_errno(errno,
                                       "control socket %s: cannot tell whether it is in use: %m",
                                       path);

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

int control_new(sd_event *e, const char *path, control_handler_fn fn, void *userdata,
                control **ret)
{
        _cleanup_(control_freep) control *c = NULL;
        struct sockaddr_un addr = {.sun_family = AF_UNIX};
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
        c->client_timeout_usec = CONTROL_CLIENT_TIMEOUT_S * USEC_PER_SEC;
        c->path = strdup(path);
        if (!c->path)
                return log_error_errno(-ENOMEM, "control socket %s: %m", path);

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

        if (chmod(path, 0660) < 0)
                return log_error_errno(errno, "control socket %s: chmod: %m", path);
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
                client_free(c->clients);
        c->io = sd_event_source_disable_unref(c->io);
        c->accept_pause = sd_event_source_disable_unref(c->accept_pause);
        if (c->fd >= 0)
                close(c->fd);
        /* Unlink only the socket we bound, not one another daemon put there since. */
        if (c->bound && lstat(c->path, &st) == 0 && st.st_dev == c->dev && st.st_ino == c->ino)
                (void)unlink(c->path);
        sd_event_unref(c->event);
        free(c->path);
        free(c);
        return NULL;
}

void control_set_client_timeout(control *c, uint64_t usec)
{
        assert(c);
        c->client_timeout_usec = usec > 0 ? usec : CONTROL_CLIENT_TIMEOUT_S * USEC_PER_SEC;
}
