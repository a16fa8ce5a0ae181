/* SPDX-License-Identifier: MIT */
/*
 * test-control.c - the control socket on a real Unix socket in a temporary directory, with a
 * real sd_event loop that the test drives itself (sd_event_run with short timeouts) while it
 * plays the client, and a fake handler that answers "ping" and refuses everything else.
 * Covers: several requests on one connection, pipelining and half-close, over-long requests,
 * idle clients, the client limit, stale/live/foreign files at the socket path, the socket
 * mode, and cleanup; authorization of peers by uid and (primary or supplementary) group, with
 * connections made by a child that drops to another user and hands the connected socket
 * back (SO_PEERCRED and SO_PEERGROUPS are those of connect()); event subscriptions: only
 * subscribers get broadcasts, are not timed out, and are dropped beyond their output bound,
 * also while their own request is being handled.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "imgd/control.h"
#include "imgd/log.h"
#include "imgd/macro.h"
#include "imgd/proto.h"

#define PUMP_SLICE_US 10000
#define WAIT_US (5 * 1000000)

struct fixture {
        char *dir;
        char *path;
        sd_event *event;
        control *control;
        unsigned calls;
        int broadcast_result; /* of the last "flood" */
};

/* A client connection with its own read buffer. */
struct conn {
        int fd;
        char buf[PROTO_MAX_LINE + 2];
        size_t len;
};

static char *make_temp_dir(void)
{
        const char *tmp = getenv("TMPDIR");
        char *dir = NULL;

        /* The socket path must fit in sun_path: fall back to /tmp for a long $TMPDIR. */
        if (!tmp || !*tmp || strlen(tmp) > 60)
                tmp = "/tmp";
        assert_true(asprintf(&dir, "%s/imgd-test-control-XXXXXX", tmp) > 0);
        assert_non_null(mkdtemp(dir));
        return dir;
}

static int rm_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
        (void)st;
        (void)ftw;
        if (type == FTW_DP)
                return rmdir(path);
        return unlink(path);
}

static void remove_tree(const char *dir)
{
        if (dir)
                (void)nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static int fake_handler(const char *cmd, const json_t *request, void *userdata,
                        json_t **ret_result, char **ret_error)
{
        struct fixture *f = userdata;

        (void)request;
        f->calls++;
        if (strcmp(cmd, "ping") == 0) {
                *ret_result = json_pack("{s:b}", "pong", 1);
                return *ret_result ? 0 : -ENOMEM;
        }
        if (strcmp(cmd, "flood") == 0) {
                /* Broadcasts while a request is being handled, until no subscriber is left
                 * (the asking client may be one of them). */
                static char line[16 * 1024];

                memset(line, 'e', sizeof line - 2);
                line[sizeof line - 2] = '\n';
                for (int i = 0; i < 1000; i++) {
                        f->broadcast_result = control_broadcast(f->control, line);
                        if (f->broadcast_result <= 0)
                                break;
                }
                *ret_result = json_pack("{s:i}", "subscribers", f->broadcast_result);
                return *ret_result ? 0 : -ENOMEM;
        }
        if (asprintf(ret_error, "unknown command '%s'", cmd) < 0)
                return -ENOMEM;
        return -EOPNOTSUPP;
}

static int setup(void **state)
{
        struct fixture *f = calloc(1, sizeof *f);

        assert_non_null(f);
        f->dir = make_temp_dir();
        assert_true(asprintf(&f->path, "%s/imgd.sock", f->dir) > 0);
        assert_int_equal(sd_event_new(&f->event), 0);
        *state = f;
        return 0;
}

static int teardown(void **state)
{
        struct fixture *f = *state;

        f->control = control_free(f->control);
        sd_event_unref(f->event);
        remove_tree(f->dir);
        free(f->path);
        free(f->dir);
        free(f);
        return 0;
}

static void start(struct fixture *f)
{
        assert_int_equal(control_new(f->event, f->path, fake_handler, f, &f->control), 0);
        assert_non_null(f->control);
}

static void pump(struct fixture *f)
{
        assert_true(sd_event_run(f->event, PUMP_SLICE_US) >= 0);
}

static struct conn *conn_open(const char *path)
{
        struct sockaddr_un addr = {.sun_family = AF_UNIX};
        struct conn *c = calloc(1, sizeof *c);

        assert_non_null(c);
        snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path);
        c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        assert_true(c->fd >= 0);
        assert_int_equal(connect(c->fd, (struct sockaddr *)&addr, sizeof addr), 0);
        return c;
}

static void conn_close(struct conn *c)
{
        if (!c)
                return;
        close(c->fd);
        free(c);
}

/* Sends everything, running the loop whenever the socket is full. */
static void conn_send(struct fixture *f, struct conn *c, const char *data, size_t n)
{
        int64_t deadline = (int64_t)mono_usec() + WAIT_US;
        ssize_t k;

        while (n > 0) {
                k = send(c->fd, data, n, MSG_NOSIGNAL);
                if (k < 0) {
                        assert_true(errno == EAGAIN || errno == EINTR);
                        assert_true((int64_t)mono_usec() < deadline);
                        pump(f);
                        continue;
                }
                data += k;
                n -= (size_t)k;
        }
}

static void conn_send_str(struct fixture *f, struct conn *c, const char *s)
{
        conn_send(f, c, s, strlen(s));
}

/*
 * Runs the loop until a whole line arrived (returns 1, the line without "\n" in *ret_line,
 * owned by the caller), the daemon closed the connection (0; ECONNRESET counts as closed),
 * or WAIT_US passed (-ETIMEDOUT).
 */
static int conn_read_line(struct fixture *f, struct conn *c, char **ret_line)
{
        int64_t deadline = (int64_t)mono_usec() + WAIT_US;
        char *nl;
        ssize_t k;

        for (;;) {
                nl = memchr(c->buf, '\n', c->len);
                if (nl) {
                        size_t n = (size_t)(nl - c->buf);

                        *ret_line = strndup(c->buf, n);
                        assert_non_null(*ret_line);
                        memmove(c->buf, nl + 1, c->len - n - 1);
                        c->len -= n + 1;
                        return 1;
                }
                assert_true(c->len < sizeof c->buf);
                k = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
                if (k == 0 || (k < 0 && errno == ECONNRESET))
                        return 0;
                if (k > 0) {
                        c->len += (size_t)k;
                        continue;
                }
                assert_true(errno == EAGAIN || errno == EINTR);
                if ((int64_t)mono_usec() >= deadline)
                        return -ETIMEDOUT;
                pump(f);
        }
}

/* Reads one answer: returns 0 with the result (caller decrefs), or -EREMOTEIO with the
 * error message in *ret_error. Fails the test on anything else. */
static int conn_answer(struct fixture *f, struct conn *c, json_t **ret_result, char **ret_error)
{
        _cleanup_free_ char *line = NULL;
        int r;

        assert_int_equal(conn_read_line(f, c, &line), 1);
        r = proto_parse_response(line, strlen(line), ret_result, ret_error);
        assert_true(r == 0 || r == -EREMOTEIO);
        return r;
}

static void assert_pong(struct fixture *f, struct conn *c)
{
        json_t *result = NULL;

        assert_int_equal(conn_answer(f, c, &result, NULL), 0);
        assert_true(json_is_true(json_object_get(result, "pong")));
        json_decref(result);
}

static void assert_error_contains(struct fixture *f, struct conn *c, const char *what)
{
        _cleanup_free_ char *error = NULL;
        json_t *result = NULL;

        assert_int_equal(conn_answer(f, c, &result, &error), -EREMOTEIO);
        assert_non_null(strstr(error, what));
}

/* Runs the loop until the daemon closes c; fails the test if it does not within WAIT_US. */
static void assert_closed(struct fixture *f, struct conn *c)
{
        _cleanup_free_ char *line = NULL;
        int r = conn_read_line(f, c, &line);

        if (r == 1)
                fail_msg("expected the connection to close, got \"%s\"", line);
        assert_int_equal(r, 0);
}

static const char ping[] = "{\"v\":1,\"cmd\":\"ping\"}\n";

static void test_two_requests_one_connection(void **state)
{
        struct fixture *f = *state;
        struct conn *c;

        start(f);
        c = conn_open(f->path);

        conn_send_str(f, c, ping);
        assert_pong(f, c);
        conn_send_str(f, c, "{\"v\":1,\"cmd\":\"frobnicate\"}\n");
        assert_error_contains(f, c, "unknown command 'frobnicate'");
        /* Still open for a third. */
        conn_send_str(f, c, ping);
        assert_pong(f, c);
        assert_int_equal(f->calls, 3);
        conn_close(c);
}

static void test_bad_requests_answered(void **state)
{
        struct fixture *f = *state;
        struct conn *c;

        start(f);
        c = conn_open(f->path);

        conn_send_str(f, c, "not json\n");
        assert_error_contains(f, c, "not valid JSON");
        conn_send_str(f, c, "{\"v\":2,\"cmd\":\"ping\"}\n");
        assert_error_contains(f, c, "unsupported protocol version 2 (this imgd speaks 1)");
        conn_send_str(f, c, "{\"v\":1}\r\n");
        assert_error_contains(f, c, "cmd");
        /* None of them reached the handler; the connection still works. */
        assert_int_equal(f->calls, 0);
        conn_send_str(f, c, ping);
        assert_pong(f, c);
        conn_close(c);
}

static void test_pipelined_and_half_closed(void **state)
{
        struct fixture *f = *state;
        struct conn *c;

        start(f);
        c = conn_open(f->path);

        /* Two requests in one write, then the client stops writing: both are answered, in
         * order, and then the daemon closes. The last line has no newline. */
        conn_send_str(f, c, "{\"v\":1,\"cmd\":\"ping\"}\n{\"v\":1,\"cmd\":\"nope\"}");
        assert_int_equal(shutdown(c->fd, SHUT_WR), 0);
        assert_pong(f, c);
        assert_error_contains(f, c, "unknown command 'nope'");
        assert_closed(f, c);
        conn_close(c);
}

static void test_request_too_long(void **state)
{
        struct fixture *f = *state;
        size_t n = PROTO_MAX_LINE + 100;
        _cleanup_free_ char *big = malloc(n);
        struct conn *c, *other;

        assert_non_null(big);
        memset(big, 'x', n);
        start(f);
        other = conn_open(f->path);
        c = conn_open(f->path);

        conn_send(f, c, big, n);
        assert_error_contains(f, c, "request too long");
        assert_closed(f, c);
        assert_int_equal(f->calls, 0);

        /* Other clients are not affected. */
        conn_send_str(f, other, ping);
        assert_pong(f, other);
        conn_close(c);
        conn_close(other);
}

static void test_longest_request_accepted(void **state)
{
        struct fixture *f = *state;
        const char *head = "{\"v\":1,\"cmd\":\"ping\",\"pad\":\"";
        size_t n = PROTO_MAX_LINE; /* exactly the limit, without the newline */
        _cleanup_free_ char *line = malloc(n + 1);
        struct conn *c;

        assert_non_null(line);
        memset(line, 'a', n);
        memcpy(line, head, strlen(head));
        memcpy(line + n - 2, "\"}", 2);
        line[n] = '\n';

        start(f);
        c = conn_open(f->path);
        conn_send(f, c, line, n + 1);
        assert_pong(f, c);
        conn_close(c);
}

static void test_client_not_reading_disconnected(void **state)
{
        struct fixture *f = *state;
        size_t cmd_len = 30000, total = 0;
        _cleanup_free_ char *req = NULL;
        struct conn *c;
        bool closed = false;
        ssize_t k;
        size_t n;

        /* Each request is answered with an error that repeats its 30000-byte command; the
         * client never reads, so the answers pile up until the daemon gives up on it. */
        assert_true(asprintf(&req, "{\"v\":1,\"cmd\":\"%0*d\"}\n", (int)cmd_len, 0) > 0);
        n = strlen(req);
        start(f);
        c = conn_open(f->path);
        while (!closed && total < 64u * 1024 * 1024) {
                k = send(c->fd, req, n, MSG_NOSIGNAL);
                if (k < 0 && (errno == EPIPE || errno == ECONNRESET))
                        closed = true;
                else if (k < 0)
                        assert_true(errno == EAGAIN || errno == EINTR);
                else
                        total += (size_t)k;
                pump(f);
        }
        assert_true(closed);
        /* Somewhere past the 4 MiB output bound plus what the socket buffers hold. */
        assert_true(total > 4u * 1024 * 1024);
        conn_close(c);
}

static void test_silent_client_disconnected(void **state)
{
        struct fixture *f = *state;
        struct conn *c;
        int64_t t0, elapsed;

        start(f);
        control_set_client_timeout(f->control, 200 * 1000);
        c = conn_open(f->path);
        t0 = (int64_t)mono_usec();

        /* One request resets the timer; then silence. */
        conn_send_str(f, c, ping);
        assert_pong(f, c);
        assert_closed(f, c);
        elapsed = (int64_t)mono_usec() - t0;
        assert_true(elapsed >= 200 * 1000);
        assert_true(elapsed < WAIT_US);
        conn_close(c);
}

static void test_too_many_clients(void **state)
{
        struct fixture *f = *state;
        struct conn *clients[CONTROL_MAX_CLIENTS];
        struct conn *extra, *late;

        start(f);
        /* Each client is known to be accepted once it got an answer. */
        for (size_t i = 0; i < CONTROL_MAX_CLIENTS; i++) {
                clients[i] = conn_open(f->path);
                conn_send_str(f, clients[i], ping);
                assert_pong(f, clients[i]);
        }

        extra = conn_open(f->path);
        assert_error_contains(f, extra, "too many clients");
        assert_closed(f, extra);
        conn_close(extra);

        /* The ones already connected keep working. */
        conn_send_str(f, clients[0], ping);
        assert_pong(f, clients[0]);

        /* A slot freed is a slot available. */
        conn_close(clients[CONTROL_MAX_CLIENTS - 1]);
        clients[CONTROL_MAX_CLIENTS - 1] = NULL;
        for (int i = 0; i < 20; i++)
                pump(f);
        late = conn_open(f->path);
        conn_send_str(f, late, ping);
        assert_pong(f, late);
        conn_close(late);

        for (size_t i = 0; i < CONTROL_MAX_CLIENTS; i++)
                conn_close(clients[i]);
}

static void test_stale_socket_replaced(void **state)
{
        struct fixture *f = *state;
        struct sockaddr_un addr = {.sun_family = AF_UNIX};
        struct stat st;
        struct conn *c;
        int fd;

        /* A socket file nobody listens on, as a crashed daemon leaves it. */
        snprintf(addr.sun_path, sizeof addr.sun_path, "%s", f->path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(fd >= 0);
        assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof addr), 0);
        assert_int_equal(listen(fd, 1), 0);
        close(fd);
        assert_int_equal(lstat(f->path, &st), 0);
        assert_true(S_ISSOCK(st.st_mode));

        start(f);
        c = conn_open(f->path);
        conn_send_str(f, c, ping);
        assert_pong(f, c);
        conn_close(c);
}

static void test_live_socket_refused(void **state)
{
        struct fixture *f = *state;
        control *second = NULL;
        struct conn *c;

        start(f);
        assert_int_equal(control_new(f->event, f->path, fake_handler, f, &second), -EADDRINUSE);
        assert_null(second);

        /* The first one still owns the path and answers. */
        c = conn_open(f->path);
        conn_send_str(f, c, ping);
        assert_pong(f, c);
        conn_close(c);
}

static void test_non_socket_refused(void **state)
{
        struct fixture *f = *state;
        control *c = NULL;
        char buf[16] = {0};
        int fd;

        fd = open(f->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, "precious", 8), 8);
        close(fd);

        assert_int_equal(control_new(f->event, f->path, fake_handler, f, &c), -EEXIST);
        assert_null(c);

        /* Left alone. */
        fd = open(f->path, O_RDONLY | O_CLOEXEC);
        assert_true(fd >= 0);
        assert_int_equal(read(fd, buf, sizeof buf - 1), 8);
        close(fd);
        assert_string_equal(buf, "precious");
}

static void test_path_too_long(void **state)
{
        struct fixture *f = *state;
        char path[sizeof(((struct sockaddr_un *)0)->sun_path) + 16];
        control *c = NULL;

        memset(path, 'a', sizeof path - 1);
        path[0] = '/';
        path[sizeof path - 1] = '\0';
        assert_int_equal(control_new(f->event, path, fake_handler, f, &c), -ENAMETOOLONG);
        assert_null(c);
}

static void test_socket_mode_and_cleanup(void **state)
{
        struct fixture *f = *state;
        struct stat st;

        start(f);
        assert_int_equal(lstat(f->path, &st), 0);
        assert_true(S_ISSOCK(st.st_mode));
        assert_int_equal(st.st_mode & 07777, 0660);

        f->control = control_free(f->control);
        assert_int_equal(lstat(f->path, &st), -1);
        assert_int_equal(errno, ENOENT);
}

static void test_free_with_clients(void **state)
{
        struct fixture *f = *state;
        struct conn *c1, *c2;

        start(f);
        c1 = conn_open(f->path);
        c2 = conn_open(f->path);
        conn_send_str(f, c1, ping);
        assert_pong(f, c1);
        /* c2 is still in the accept queue or connected but silent; both are dropped. */
        f->control = control_free(f->control);
        assert_closed(f, c1);
        assert_closed(f, c2);
        conn_close(c1);
        conn_close(c2);
}


/* ---- authorization ------------------------------------------------------------------- */

/*
 * A connection to path made by a child running as uid/gid with supplementary groups
 * groups[0..n): the child connects and hands the socket over (SCM_RIGHTS), so the daemon
 * sees that user's credentials, as the kernel recorded them at connect().
 */
static struct conn *conn_open_as(const char *path, uid_t uid, gid_t gid, const gid_t *groups,
                                 size_t n)
{
        union {
                struct cmsghdr h;
                char buf[CMSG_SPACE(sizeof(int))];
        } control_buf;
        char byte = 0;
        struct iovec iov = {.iov_base = &byte, .iov_len = 1};
        struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1,
                             .msg_control = control_buf.buf,
                             .msg_controllen = sizeof control_buf.buf};
        struct conn *c = calloc(1, sizeof *c);
        int sv[2], status;
        pid_t pid;

        assert_non_null(c);
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                struct sockaddr_un addr = {.sun_family = AF_UNIX};
                struct cmsghdr *cm;
                int fd;

                close(sv[0]);
                if (setgroups(n, groups) < 0 || setgid(gid) < 0 || setuid(uid) < 0)
                        _exit(10);
                snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path);
                fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0)
                        _exit(11);
                cm = CMSG_FIRSTHDR(&msg);
                cm->cmsg_level = SOL_SOCKET;
                cm->cmsg_type = SCM_RIGHTS;
                cm->cmsg_len = CMSG_LEN(sizeof(int));
                memcpy(CMSG_DATA(cm), &fd, sizeof fd);
                _exit(sendmsg(sv[1], &msg, 0) == 1 ? 0 : 12);
        }
        close(sv[1]);
        assert_int_equal(recvmsg(sv[0], &msg, 0), 1);
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
        assert_non_null(CMSG_FIRSTHDR(&msg));
        memcpy(&c->fd, CMSG_DATA(CMSG_FIRSTHDR(&msg)), sizeof c->fd);
        close(sv[0]);
        assert_true(fcntl(c->fd, F_SETFL, O_NONBLOCK) == 0);
        return c;
}

/* Starts the socket open to everybody, so that only imgd's own check decides. */
static bool start_open(struct fixture *f)
{
        if (geteuid() != 0)
                return false;
        start(f);
        assert_int_equal(chmod(f->dir, 0711), 0);
        assert_int_equal(chmod(f->path, 0666), 0);
        return true;
}

/* Reads the one refusal line and the end of the connection; the handler never runs. */
static void assert_refused(struct fixture *f, struct conn *c, const char *message)
{
        _cleanup_free_ char *error = NULL;
        json_t *result = NULL;

        assert_int_equal(conn_answer(f, c, &result, &error), -EREMOTEIO);
        assert_string_equal(error, message);
        assert_closed(f, c);
        assert_int_equal(f->calls, 0);
}

static void test_peer_refused(void **state)
{
        struct fixture *f = *state;
        struct conn *c;

        if (!start_open(f))
                skip();
        c = conn_open_as(f->path, 65534, 65534, NULL, 0);
        assert_refused(f, c, "permission denied: uid 65534 is not root or imgd's user");
        conn_close(c);

        /* Root and the daemon's own user still are served. */
        c = conn_open(f->path);
        conn_send_str(f, c, ping);
        assert_pong(f, c);
        conn_close(c);
}

static void test_peer_in_group(void **state)
{
        struct fixture *f = *state;
        static const gid_t other[] = {4243, 4244};
        static const gid_t member[] = {4243, 4242};
        struct conn *c;

        if (!start_open(f))
                skip();
        control_set_group(f->control, 4242); /* no such group name: shown by number */

        c = conn_open_as(f->path, 65534, 65534, other, ELEMENTSOF(other));
        assert_refused(f, c,
                       "permission denied: uid 65534 is not root, imgd's user or in group 4242");
        conn_close(c);

        c = conn_open_as(f->path, 65534, 65534, member, ELEMENTSOF(member)); /* supplementary */
        conn_send_str(f, c, ping);
        assert_pong(f, c);
        conn_close(c);

        c = conn_open_as(f->path, 65534, 4242, NULL, 0); /* primary */
        conn_send_str(f, c, ping);
        assert_pong(f, c);
        conn_close(c);

        /* Back to no group. */
        control_set_group(f->control, (gid_t)-1);
        c = conn_open_as(f->path, 65534, 4242, NULL, 0);
        conn_send_str(f, c, ping); /* answered with the refusal, not a pong */
        {
                _cleanup_free_ char *error = NULL;
                json_t *result = NULL;

                assert_int_equal(conn_answer(f, c, &result, &error), -EREMOTEIO);
                assert_non_null(strstr(error, "permission denied"));
        }
        conn_close(c);
}

/* The group is named by its name when it has one. */
static void test_peer_group_named(void **state)
{
        struct fixture *f = *state;
        struct group *g = getgrgid(65534);
        char *message = NULL;
        struct conn *c;

        if (!g || !start_open(f))
                skip();
        assert_true(asprintf(&message, "permission denied: uid 4321 is not root, imgd's user or "
                                       "in group %s",
                             g->gr_name) > 0);
        control_set_group(f->control, 65534);
        c = conn_open_as(f->path, 4321, 4321, NULL, 0);
        assert_refused(f, c, message);
        conn_close(c);
        free(message);
}

/* ---- subscriptions ------------------------------------------------------------------- */

static const char events[] = "{\"v\":1,\"cmd\":\"events\"}\n";

static void subscribe(struct fixture *f, struct conn *c)
{
        json_t *result = NULL;

        conn_send_str(f, c, events);
        assert_int_equal(conn_answer(f, c, &result, NULL), 0);
        assert_true(json_is_true(json_object_get(result, "subscribed")));
        json_decref(result);
}

static void test_broadcast_reaches_subscribers_only(void **state)
{
        struct fixture *f = *state;
        struct conn *sub, *other;
        _cleanup_free_ char *line = NULL;

        start(f);
        assert_int_equal(control_broadcast(NULL, "x"), 0);
        sub = conn_open(f->path);
        other = conn_open(f->path);
        subscribe(f, sub);
        conn_send_str(f, other, ping);
        assert_pong(f, other);
        assert_int_equal(control_subscribers(f->control), 1);
        assert_int_equal(f->calls, 1); /* "events" is answered by control, not the handler */

        assert_int_equal(control_broadcast(f->control, "{\"event\":1}\n"), 1);
        assert_int_equal(control_broadcast(f->control, "{\"event\":2}"), 1); /* newline added */
        assert_int_equal(conn_read_line(f, sub, &line), 1);
        assert_string_equal(line, "{\"event\":1}");
        free(line);
        line = NULL;
        assert_int_equal(conn_read_line(f, sub, &line), 1);
        assert_string_equal(line, "{\"event\":2}");

        /* A subscriber may still ask. */
        conn_send_str(f, sub, ping);
        assert_pong(f, sub);

        /* The other saw nothing. */
        {
                char buf[16];

                pump(f);
                assert_int_equal(recv(other->fd, buf, sizeof buf, 0), -1);
                assert_int_equal(errno, EAGAIN);
        }
        conn_close(sub);
        for (int i = 0; i < 100 && control_subscribers(f->control) > 0; i++)
                pump(f);
        assert_int_equal(control_subscribers(f->control), 0);
        assert_int_equal(control_broadcast(f->control, "x\n"), 0);
        conn_close(other);
}

/* A silent subscriber is not timed out; a silent ordinary client is. */
static void test_subscriber_not_timed_out(void **state)
{
        struct fixture *f = *state;
        struct conn *sub, *other;
        _cleanup_free_ char *line = NULL;
        int64_t until;

        start(f);
        control_set_client_timeout(f->control, 200 * 1000);
        sub = conn_open(f->path);
        other = conn_open(f->path);
        subscribe(f, sub);
        conn_send_str(f, other, ping);
        assert_pong(f, other);
        until = (int64_t)mono_usec() + 600 * 1000;
        while ((int64_t)mono_usec() < until)
                pump(f);
        assert_closed(f, other);
        assert_int_equal(control_broadcast(f->control, "still here\n"), 1);
        assert_int_equal(conn_read_line(f, sub, &line), 1);
        assert_string_equal(line, "still here");
        conn_close(sub);
        conn_close(other);
}

/* A subscriber that does not read is dropped once its queue passes the bound; the others and
 * the socket go on. */
static void test_slow_subscriber_dropped(void **state)
{
        struct fixture *f = *state;
        static char line[8192];
        struct conn *slow, *fast, *other;
        unsigned sent = 0;
        int r = 1;

        start(f);
        slow = conn_open(f->path);
        other = conn_open(f->path);
        subscribe(f, slow);
        memset(line, 'e', sizeof line - 2);
        line[sizeof line - 2] = '\n';
        /* The bound and a kernel socket buffer of a few hundred KiB. */
        while (r > 0 && sent < 16 * (CONTROL_MAX_SUBSCRIBER_OUTPUT / sizeof line)) {
                r = control_broadcast(f->control, line);
                sent++;
        }
        assert_int_equal(r, 0);
        assert_true(sent * sizeof line > CONTROL_MAX_SUBSCRIBER_OUTPUT);
        assert_int_equal(control_subscribers(f->control), 0);

        conn_send_str(f, other, ping);
        assert_pong(f, other);
        fast = conn_open(f->path);
        subscribe(f, fast);
        assert_int_equal(control_broadcast(f->control, "next\n"), 1);
        {
                _cleanup_free_ char *got = NULL;

                assert_int_equal(conn_read_line(f, fast, &got), 1);
                assert_string_equal(got, "next");
        }
        /* The dropped one gets what its socket held, then the end. */
        for (;;) {
                _cleanup_free_ char *got = NULL;
                int k = conn_read_line(f, slow, &got);

                assert_true(k >= 0);
                if (k == 0)
                        break;
        }
        conn_close(slow);
        conn_close(fast);
        conn_close(other);
}

/* A subscriber dropped by a broadcast made while its own request is being handled is closed
 * once the handler returns (not freed under it). */
static void test_subscriber_dropped_during_its_request(void **state)
{
        struct fixture *f = *state;
        struct conn *c, *other;

        start(f);
        c = conn_open(f->path);
        other = conn_open(f->path);
        subscribe(f, c);
        conn_send_str(f, c, "{\"v\":1,\"cmd\":\"flood\"}\n");
        for (int i = 0; i < 100 && f->calls == 0; i++)
                pump(f);
        assert_int_equal(f->broadcast_result, 0);
        assert_int_equal(control_subscribers(f->control), 0);
        for (;;) {
                _cleanup_free_ char *got = NULL;
                int k = conn_read_line(f, c, &got);

                assert_true(k >= 0);
                if (k == 0)
                        break;
                assert_null(strstr(got, "\"subscribers\"")); /* no answer after the drop */
        }
        conn_send_str(f, other, ping);
        assert_pong(f, other);
        conn_close(c);
        conn_close(other);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_two_requests_one_connection, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_bad_requests_answered, setup, teardown),
                cmocka_unit_test_setup_teardown(test_pipelined_and_half_closed, setup, teardown),
                cmocka_unit_test_setup_teardown(test_request_too_long, setup, teardown),
                cmocka_unit_test_setup_teardown(test_longest_request_accepted, setup, teardown),
                cmocka_unit_test_setup_teardown(test_client_not_reading_disconnected, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_silent_client_disconnected, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_too_many_clients, setup, teardown),
                cmocka_unit_test_setup_teardown(test_stale_socket_replaced, setup, teardown),
                cmocka_unit_test_setup_teardown(test_live_socket_refused, setup, teardown),
                cmocka_unit_test_setup_teardown(test_non_socket_refused, setup, teardown),
                cmocka_unit_test_setup_teardown(test_path_too_long, setup, teardown),
                cmocka_unit_test_setup_teardown(test_socket_mode_and_cleanup, setup, teardown),
                cmocka_unit_test_setup_teardown(test_free_with_clients, setup, teardown),
                cmocka_unit_test_setup_teardown(test_peer_refused, setup, teardown),
                cmocka_unit_test_setup_teardown(test_peer_in_group, setup, teardown),
                cmocka_unit_test_setup_teardown(test_peer_group_named, setup, teardown),
                cmocka_unit_test_setup_teardown(test_broadcast_reaches_subscribers_only, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_subscriber_not_timed_out, setup, teardown),
                cmocka_unit_test_setup_teardown(test_slow_subscriber_dropped, setup, teardown),
                cmocka_unit_test_setup_teardown(test_subscriber_dropped_during_its_request, setup,
                                                teardown),
        };

        log_setup("test-control");
        return cmocka_run_group_tests(tests, NULL, NULL);
}
