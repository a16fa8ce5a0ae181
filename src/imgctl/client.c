/* SPDX-License-Identifier: MIT */
/*
 * client.c - imgctl's connection to imgd's control socket (imgctl.h).
 *
 * The socket is -s, else the "socket" setting of the configuration named by -c, else
 * $IMGD_SOCKET, else CONFIG_DEFAULT_SOCKET. The first request connects; every request is one
 * line and its answer one line of at most PROTO_MAX_LINE bytes, parsed with the same codec
 * as the daemon's (shared/proto.h), over one connection. Every read and write has a deadline
 * of IO_TIMEOUT_USEC (events reads lines as long as it runs). imgctl never touches the ledger
 * itself: every change is a request to imgd.
 *
 * States of a client: closed (fd -1) -> client_call() connects -> open -> client_close() ->
 * closed. buf holds what was read beyond the last line returned.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "shared/config.h"
#include "shared/proto.h"
#include "shared/time-util.h"
#include "imgctl/imgctl.h"

/* ---- answers -------------------------------------------------------------------------- */

int64_t client_get_int(const json_t *o, const char *key)
{
        return (int64_t)json_integer_value(json_object_get(o, key));
}

/*
 * Whether a status answer says imgd has nothing left to do: no job queued (but held, waiting
 * for its watch to be configured again), running or waiting for a retry, no upload reported
 * by the kernel that it has not taken in yet (a file dropped just before the question is not
 * a job yet, but it will be), none waiting for its intake to be retried.
 */
bool client_status_idle(const json_t *status)
{
        const json_t *jobs = json_object_get(status, "jobs");

        return client_get_int(jobs, "queued") - client_get_int(jobs, "held") +
                               client_get_int(jobs, "running") + client_get_int(jobs, "retry") ==
                       0 &&
               !json_is_true(json_object_get(status, "intake_pending")) &&
               client_get_int(status, "intake_retry") == 0;
}

/* The string at key, or `fallback` when it is missing or not a string. */
const char *client_get_str(const json_t *o, const char *key, const char *fallback)
{
        const char *s = json_string_value(json_object_get(o, key));

        return s ? s : fallback;
}

/* ---- the connection ------------------------------------------------------------------- */

/*
 * Connects to the socket; while it does not exist or refuses (imgd starting or restarting),
 * tries again every 50 ms for up to ctl->connect_wait_usec. Returns 0, or a negative errno with
 * the message in *ret_error: "cannot connect to PATH: CAUSE (HINT)".
 */
static int client_connect(struct client *ctl, char **ret_error)
{
        struct sockaddr_un addr = { .sun_family = AF_UNIX };
        struct timeval tv = { .tv_sec = (time_t)(IO_TIMEOUT_USEC / USEC_PER_SEC) };
        _cleanup_close_ int fd = -1;
        const char *hint = "";
        int r;

        if (strlen(ctl->socket) >= sizeof addr.sun_path) {
                *ret_error =
                        imgctl_asprintf("cannot connect to %s: path too long (at most %zu bytes)",
                                        ctl->socket, sizeof addr.sun_path - 1);
                return -ENAMETOOLONG;
        }
        memcpy(addr.sun_path, ctl->socket, strlen(ctl->socket) + 1);

        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
                r = negative_errno();
                *ret_error = imgctl_asprintf("cannot create a socket: %s", strerror(-r));
                return r;
        }
        /* A connect to a listener whose backlog is full would wait: bound it too. */
        (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        for (int64_t until = (int64_t)mono_usec() + ctl->connect_wait_usec;;) {
                if (connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0) {
                        r = 0;
                        break;
                }
                r = negative_errno();
                if ((r != -ENOENT && r != -ECONNREFUSED) || (int64_t)mono_usec() >= until)
                        break;
                (void)usleep(50 * USEC_PER_MSEC);
        }
        if (r < 0) {
                switch (-r) {
                case ENOENT:
                case ECONNREFUSED:
                        hint = " (is imgd running?)";
                        break;
                case EACCES:
                case EPERM:
                        hint = " (imgctl must run as root or as a member of the socket's group)";
                        break;
                case EAGAIN:
                case EINPROGRESS:
                        r = -ETIMEDOUT;
                        hint = " (imgd is not accepting connections)";
                        break;
                default:
                        break;
                }
                *ret_error = imgctl_asprintf("cannot connect to %s: %s%s", ctl->socket,
                                             strerror(-r), hint);
                return r;
        }
        if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) {
                r = negative_errno();
                *ret_error = imgctl_asprintf("%s: %s", ctl->socket, strerror(-r));
                return r;
        }
        ctl->fd = TAKE_FD(fd);
        return 0;
}

/* Waits until fd is ready for `events` or the deadline (monotonic µs) passes. */
static int client_poll(struct client *ctl, short events, int64_t deadline)
{
        struct pollfd p = { .fd = ctl->fd, .events = events };
        int64_t left;
        int r;

        for (;;) {
                left = deadline - (int64_t)mono_usec();
                if (left <= 0)
                        return -ETIMEDOUT;
                r = poll(&p, 1,
                         (int)((left + (int64_t)USEC_PER_MSEC - 1) / (int64_t)USEC_PER_MSEC));
                if (r > 0)
                        return 0;
                if (r < 0 && errno != EINTR)
                        return negative_errno();
        }
}

static int client_send(struct client *ctl, const char *data, size_t n, int64_t deadline)
{
        ssize_t k;
        int r;

        while (n > 0) {
                k = send(ctl->fd, data, n, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno != EAGAIN && errno != EWOULDBLOCK)
                                return negative_errno();
                        r = client_poll(ctl, POLLOUT, deadline);
                        if (r < 0)
                                return r;
                        continue;
                }
                data += k;
                n -= (size_t)k;
        }
        return 0;
}

/*
 * Reads one answer line. Returns 0 with the line (NUL-terminated in place, without its
 * newline, valid until the next call) and its length, -ECONNRESET when imgd closed the
 * connection, -EMSGSIZE for an over-long line, -ETIMEDOUT, or another negative errno.
 */
int client_read_line(struct client *ctl, int64_t deadline, char **ret_line, size_t *ret_n)
{
        const size_t size = PROTO_MAX_LINE + 1;
        char *nl;
        ssize_t k;
        int r;

        if (!ctl->buf) {
                ctl->buf = malloc(size);
                if (!ctl->buf)
                        imgctl_oom();
        }
        /* Drop the previous answer. */
        memmove(ctl->buf, ctl->buf + ctl->used, ctl->len - ctl->used);
        ctl->len -= ctl->used;
        ctl->used = 0;

        for (;;) {
                nl = memchr(ctl->buf, '\n', ctl->len);
                if (nl) {
                        *nl = '\0';
                        *ret_line = ctl->buf;
                        *ret_n = (size_t)(nl - ctl->buf);
                        ctl->used = *ret_n + 1;
                        return 0;
                }
                if (ctl->len >= size)
                        return -EMSGSIZE;
                k = recv(ctl->fd, ctl->buf + ctl->len, size - ctl->len, 0);
                if (k == 0)
                        return -ECONNRESET;
                if (k > 0) {
                        ctl->len += (size_t)k;
                        continue;
                }
                if (errno == EINTR)
                        continue;
                if (errno != EAGAIN && errno != EWOULDBLOCK)
                        return negative_errno();
                r = client_poll(ctl, POLLIN, deadline);
                if (r < 0)
                        return r;
        }
}

/*
 * Sends one request and reads its answer. Returns 0 with the result in *ret_result (owned by
 * the caller); -EREMOTEIO when imgd answered with an error; another negative errno when imgd
 * could not be reached or not understood. On failure the message is in *ret_error.
 */
int client_call(struct client *ctl, const json_t *req, json_t **ret_result, char **ret_error)
{
        int64_t deadline = (int64_t)mono_usec() + (int64_t)IO_TIMEOUT_USEC;
        _cleanup_free_ char *line = NULL, *error = NULL;
        char *answer = NULL;
        size_t n = 0;
        int r;

        if (ctl->fd < 0) {
                r = client_connect(ctl, ret_error);
                if (r < 0)
                        return r;
        }

        line = proto_format_request(req);
        if (!line)
                imgctl_oom();
        if (strlen(line) > PROTO_MAX_LINE + 1) {
                *ret_error =
                        imgctl_asprintf("request too long (more than %d bytes)", PROTO_MAX_LINE);
                return -EMSGSIZE;
        }

        r = client_send(ctl, line, strlen(line), deadline);
        /* imgd may have answered and closed before the request arrived (a refused peer):
         * its answer is still there to read. */
        if (r >= 0 || r == -EPIPE || r == -ECONNRESET)
                r = client_read_line(ctl, deadline, &answer, &n);
        switch (r) {
        case 0:
                break;
        case -ETIMEDOUT:
                *ret_error = imgctl_asprintf("no answer from imgd on %s within %d s", ctl->socket,
                                             (int)(IO_TIMEOUT_USEC / USEC_PER_SEC));
                return r;
        case -ECONNRESET:
        case -EPIPE:
                *ret_error = imgctl_asprintf("imgd on %s closed the connection", ctl->socket);
                return r;
        case -EMSGSIZE:
                *ret_error = imgctl_asprintf("answer from imgd on %s is longer than %d bytes",
                                             ctl->socket, PROTO_MAX_LINE);
                return r;
        default:
                *ret_error = imgctl_asprintf("%s: %s", ctl->socket, strerror(-r));
                return r;
        }

        r = proto_parse_response(answer, n, ret_result, &error);
        if (r == -ENOMEM)
                imgctl_oom();
        if (r == -EREMOTEIO) {
                *ret_error = TAKE_PTR(error);
                return r;
        }
        if (r < 0) {
                *ret_error = imgctl_asprintf("cannot understand imgd's answer: %s",
                                             error ? error : strerror(-r));
                return r;
        }
        return 0;
}

void client_close(struct client *ctl)
{
        if (ctl->fd >= 0)
                close(ctl->fd);
        ctl->fd = -1;
        free(ctl->buf);
        ctl->buf = NULL;
        ctl->len = ctl->used = 0;
}

/* ---- requests ------------------------------------------------------------------------- */

/* Prints a failed call's message and returns the exit status for it. */
int client_failed(int r, const char *error)
{
        _cleanup_free_ char *clean = output_clean(error ? error : strerror(-r), 0);

        imgctl_error("%s", clean);
        if (r == -EREMOTEIO && strncmp(clean, "permission denied: '", 20) == 0 &&
            strstr(clean, "needs the operator role"))
                return EXIT_FORBIDDEN;
        /* imgd refusing the connection is not a failed command: it was not reached. */
        if (r == -EREMOTEIO && strncmp(clean, "permission denied", 17) == 0)
                return EXIT_UNREACHABLE;
        return r == -EREMOTEIO ? EXIT_FAILED : EXIT_UNREACHABLE;
}

/* Sends a request and stores the result; returns EXIT_OK or the failure's exit status. */
int client_request(struct client *ctl, json_t *req, json_t **ret_result)
{
        _cleanup_free_ char *error = NULL;
        int r;

        if (!req)
                imgctl_oom();
        r = client_call(ctl, req, ret_result, &error);
        json_decref(req);
        if (r < 0)
                return client_failed(r, error);
        return EXIT_OK;
}

json_t *client_request_with_id(const char *cmd, int64_t id)
{
        json_t *req = proto_request_new(cmd);

        if (!req || json_object_set_new(req, "id", json_integer(id)) < 0)
                imgctl_oom();
        return req;
}

/* ---- the socket ----------------------------------------------------------------------- */

int client_find_socket(const char *socket_arg, const char *config_arg, char **ret)
{
        _cleanup_free_ char *error = NULL, *clean = NULL;
        struct config *cfg = NULL;
        const char *env;
        int r;

        if (socket_arg) {
                *ret = imgctl_strdup(socket_arg);
                return EXIT_OK;
        }
        if (config_arg) {
                r = config_load(config_arg, &cfg, &error);
                if (r < 0) {
                        if (r == -ENOMEM && !error)
                                imgctl_oom();
                        clean = output_clean(error ? error : strerror(-r), 0);
                        imgctl_error("cannot read the socket path from %s: %s", config_arg, clean);
                        return EXIT_UNREACHABLE;
                }
                *ret = imgctl_strdup(cfg->socket && *cfg->socket ? cfg->socket
                                                                 : CONFIG_DEFAULT_SOCKET);
                config_free(cfg);
                return EXIT_OK;
        }
        env = getenv("IMGD_SOCKET");
        *ret = imgctl_strdup(env && *env ? env : CONFIG_DEFAULT_SOCKET);
        return EXIT_OK;
}
