/* SPDX-License-Identifier: MIT */
/*
 * test-control.c - the control socket on a real Unix socket in a temporary directory, with a
 * real sd_event loop that the test drives itself (sd_event_run with short timeouts) while it
 * plays the client, and a fake handler that answers "ping" and refuses everything else.
 * Covers: several requests on one connection, pipelining and half-close, over-long requests,
 * idle clients, the client limit (the quietest client makes room for a new one, so a crowd of
 * silent connections locks nobody out), stale/live/foreign files at the socket path, the socket
 * mode, and cleanup; authorization of peers by uid and (primary or supplementary) group, with
 * connections made by a child that drops to another user and hands the connected socket
 * back (SO_PEERCRED and SO_PEERGROUPS are those of connect()); event subscriptions: only
 * subscribers get broadcasts, are not timed out, and are dropped beyond their output bound,
 * also while their own request is being handled, and at most CONTROL_MAX_SUBSCRIBERS of them.
 * Last, the real daemon under abuse (idle subscribers, silent connections, a 10 MB line,
 * invalid UTF-8, deep nesting): `imgctl status` still answers within 1 s, the latencies are
 * printed (issue 20).
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

#include "daemon/control.h"
#include "shared/log.h"
#include "shared/macro.h"
#include "shared/proto.h"
#include "testutil.h"

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

static int fake_handler(const char *cmd, const json_t *request, void *userdata, json_t **ret_result,
                        char **ret_error)
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
        struct sockaddr_un addr = { .sun_family = AF_UNIX };
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

/*
 * Issue 20: with every slot taken, a new connection is served and the client quiet longest
 * is told "too many clients" and closed; the others keep working. (It used to be the
 * newcomer that was turned away, so 64 silent connections locked everyone out.)
 */
static void test_full_evicts_quietest(void **state)
{
        struct fixture *f = *state;
        struct conn *clients[CONTROL_MAX_CLIENTS];
        struct conn *extra, *late;
        const size_t quiet = 5;

        start(f);
        /* Each client is known to be accepted once it got an answer. */
        for (size_t i = 0; i < CONTROL_MAX_CLIENTS; i++) {
                clients[i] = conn_open(f->path);
                conn_send_str(f, clients[i], ping);
                assert_pong(f, clients[i]);
        }
        /* All but one ask again: that one is now the quietest. */
        for (size_t i = 0; i < CONTROL_MAX_CLIENTS; i++) {
                if (i == quiet)
                        continue;
                conn_send_str(f, clients[i], ping);
                assert_pong(f, clients[i]);
        }

        extra = conn_open(f->path);
        conn_send_str(f, extra, ping);
        assert_pong(f, extra);
        assert_error_contains(f, clients[quiet], "too many clients");
        assert_closed(f, clients[quiet]);

        /* The ones already connected keep working. */
        conn_send_str(f, clients[0], ping);
        assert_pong(f, clients[0]);
        conn_send_str(f, clients[CONTROL_MAX_CLIENTS - 1], ping);
        assert_pong(f, clients[CONTROL_MAX_CLIENTS - 1]);

        /* The next newcomer takes the slot of the next quietest: clients[1], as clients[0]
         * has just asked again. */
        late = conn_open(f->path);
        conn_send_str(f, late, ping);
        assert_pong(f, late);
        assert_error_contains(f, clients[1], "too many clients");
        assert_closed(f, clients[1]);
        conn_send_str(f, extra, ping);
        assert_pong(f, extra);

        conn_close(late);
        conn_close(extra);
        for (size_t i = 0; i < CONTROL_MAX_CLIENTS; i++)
                conn_close(clients[i]);
}

/*
 * Issue 20: many more connections than slots that never send anything (a slot each until
 * their idle timeout, 30 s) delay a new client by nothing: it is answered at once.
 */
static void test_silent_crowd_does_not_lock_out(void **state)
{
        struct fixture *f = *state;
        struct conn *silent[100 + CONTROL_MAX_CLIENTS];
        struct conn *c;
        int64_t t0;

        start(f);
        for (size_t i = 0; i < ELEMENTSOF(silent); i++) {
                silent[i] = conn_open(f->path);
                pump(f);
        }
        for (int i = 0; i < 50; i++)
                pump(f);
        t0 = (int64_t)mono_usec();
        c = conn_open(f->path);
        conn_send_str(f, c, ping);
        assert_pong(f, c);
        print_message("ping behind %zu silent connections: %lld us\n", ELEMENTSOF(silent),
                      (long long)((int64_t)mono_usec() - t0));
        assert_true((int64_t)mono_usec() - t0 < 1000000);
        conn_close(c);
        for (size_t i = 0; i < ELEMENTSOF(silent); i++)
                conn_close(silent[i]);
}

static void test_stale_socket_replaced(void **state)
{
        struct fixture *f = *state;
        struct sockaddr_un addr = { .sun_family = AF_UNIX };
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
        char buf[16] = { 0 };
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
        struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
        struct msghdr msg = { .msg_iov = &iov,
                              .msg_iovlen = 1,
                              .msg_control = control_buf.buf,
                              .msg_controllen = sizeof control_buf.buf };
        struct conn *c = calloc(1, sizeof *c);
        int sv[2], status;
        pid_t pid;

        assert_non_null(c);
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                struct sockaddr_un addr = { .sun_family = AF_UNIX };
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
        static const gid_t other[] = { 4243, 4244 };
        static const gid_t member[] = { 4243, 4242 };
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
        assert_true(asprintf(&message,
                             "permission denied: uid 4321 is not root, imgd's user or "
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

/*
 * Issue 20: at most CONTROL_MAX_SUBSCRIBERS subscribers; one more is refused with an error and
 * stays an ordinary client. Subscribers are never evicted to make room: with all of them
 * idle and every other slot silent, a new client is still served and every subscriber still
 * gets events.
 */
static void test_subscriber_limit(void **state)
{
        struct fixture *f = *state;
        struct conn *subs[CONTROL_MAX_SUBSCRIBERS], *silent[CONTROL_MAX_CLIENTS];
        struct conn *one_more, *c;

        start(f);
        for (size_t i = 0; i < CONTROL_MAX_SUBSCRIBERS; i++) {
                subs[i] = conn_open(f->path);
                subscribe(f, subs[i]);
        }
        assert_int_equal(control_subscribers(f->control), CONTROL_MAX_SUBSCRIBERS);
        one_more = conn_open(f->path);
        conn_send_str(f, one_more, events);
        assert_error_contains(f, one_more, "too many event subscribers (at most 16)");
        assert_int_equal(control_subscribers(f->control), CONTROL_MAX_SUBSCRIBERS);
        conn_send_str(f, one_more, ping);
        assert_pong(f, one_more);

        /* Fill every other slot with silent clients, and more. */
        for (size_t i = 0; i < ELEMENTSOF(silent); i++) {
                silent[i] = conn_open(f->path);
                pump(f);
        }
        for (int i = 0; i < 50; i++)
                pump(f);
        c = conn_open(f->path);
        conn_send_str(f, c, ping);
        assert_pong(f, c);
        assert_int_equal(control_subscribers(f->control), CONTROL_MAX_SUBSCRIBERS);
        assert_int_equal(control_broadcast(f->control, "{\"event\":\"x\"}\n"),
                         CONTROL_MAX_SUBSCRIBERS);
        for (size_t i = 0; i < CONTROL_MAX_SUBSCRIBERS; i++) {
                _cleanup_free_ char *line = NULL;

                assert_int_equal(conn_read_line(f, subs[i], &line), 1);
                assert_string_equal(line, "{\"event\":\"x\"}");
        }

        /* A subscriber that leaves frees its place. */
        conn_close(subs[0]);
        for (int i = 0; i < 100 && control_subscribers(f->control) == CONTROL_MAX_SUBSCRIBERS; i++)
                pump(f);
        subs[0] = conn_open(f->path);
        subscribe(f, subs[0]);

        conn_close(c);
        conn_close(one_more);
        for (size_t i = 0; i < ELEMENTSOF(silent); i++)
                conn_close(silent[i]);
        for (size_t i = 0; i < CONTROL_MAX_SUBSCRIBERS; i++)
                conn_close(subs[i]);
}

/* ---- the real daemon under abuse (issue 20) ------------------------------------------ */

/* A blocking connection to the socket at path, with 10 s send and receive timeouts. */
static int raw_connect(const char *path)
{
        struct sockaddr_un addr = { .sun_family = AF_UNIX };
        struct timeval tv = { .tv_sec = 10 };
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

        assert_true(fd >= 0);
        snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path);
        assert_int_equal(connect(fd, (struct sockaddr *)&addr, sizeof addr), 0);
        assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv), 0);
        assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
        return fd;
}

/*
 * Sends data on fd and reads what comes back: a new string with the first answer line, or
 * "(closed)" when the daemon closed the connection without one. Stops sending when the
 * daemon stops reading (it answered already). Fails the test on a timeout.
 */
static char *raw_exchange_on(int fd, const char *data, size_t n)
{
        char buf[4096];
        size_t len = 0;
        ssize_t k;

        while (n > 0) {
                k = send(fd, data, n, MSG_NOSIGNAL);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0) {
                        assert_true(errno == EPIPE || errno == ECONNRESET);
                        break;
                }
                data += k;
                n -= (size_t)k;
        }
        for (;;) {
                char *nl = memchr(buf, '\n', len);

                if (nl)
                        return strndup(buf, (size_t)(nl - buf));
                assert_true(len < sizeof buf);
                k = recv(fd, buf + len, sizeof buf - len, 0);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k == 0 || (k < 0 && errno == ECONNRESET))
                        return strdup("(closed)");
                if (k < 0)
                        fail_msg("no answer within 10 s: %s", strerror(errno));
                len += (size_t)k;
        }
}

/* raw_exchange_on() on a connection of its own. */
static char *raw_exchange(const char *path, const char *data, size_t n)
{
        int fd = raw_connect(path);
        char *line = raw_exchange_on(fd, data, n);

        close(fd);
        return line;
}

/* How long `imgctl status` takes (its own start included); fails the test if it fails. */
static int64_t status_us(struct tu_daemon *d)
{
        int64_t t0 = tu_now_us();
        char *out = NULL;
        int r = tu_imgctl(d, &out, "status", NULL);

        if (r != 0)
                fail_msg("imgctl status exited %d: %s", r, out ? out : "");
        free(out);
        return tu_now_us() - t0;
}

static int cmp_i64(const void *a, const void *b)
{
        int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

        return (x > y) - (x < y);
}

/* Runs `imgctl status` n times (n <= 16); prints the median and the worst, fails the test if
 * any took 1 s or more. */
static void measure_status(struct tu_daemon *d, const char *what, unsigned n)
{
        int64_t t[16];

        assert_true(n > 0 && n <= ELEMENTSOF(t));
        for (unsigned i = 0; i < n; i++)
                t[i] = status_us(d);
        qsort(t, n, sizeof t[0], cmp_i64);
        print_message("imgctl status %s: median %.1f ms, worst %.1f ms (%u runs)\n", what,
                      (double)t[n / 2] / 1000, (double)t[n - 1] / 1000, n);
        if (t[n - 1] >= 1000000)
                fail_msg("imgctl status %s took %.1f ms", what, (double)t[n - 1] / 1000);
}

/* Malformed requests: a 10 MB line without a newline, a line of invalid UTF-8, 100000 nested
 * brackets (over the line limit) and 30000 (within it). */
struct abuse {
        char *big, *nested, *nested_short;
        size_t big_len, nested_len, nested_short_len;
};

static void abuse_init(struct abuse *a)
{
        a->big_len = 10u * 1024 * 1024;
        a->big = malloc(a->big_len);
        assert_non_null(a->big);
        memset(a->big, 'x', a->big_len);
        a->nested_len = 100000 + 1;
        a->nested = malloc(a->nested_len);
        assert_non_null(a->nested);
        memset(a->nested, '[', a->nested_len - 1);
        a->nested[a->nested_len - 1] = '\n';
        a->nested_short_len = 30000 + 1;
        a->nested_short = malloc(a->nested_short_len);
        assert_non_null(a->nested_short);
        memset(a->nested_short, '[', a->nested_short_len - 1);
        a->nested_short[a->nested_short_len - 1] = '\n';
}

static const char bad_utf8[] = "{\"v\":1,\"cmd\":\"st\xff\xfe\xc3\x28tus\"}\n";

static void abuse_free(struct abuse *a)
{
        free(a->big);
        free(a->nested);
        free(a->nested_short);
}

/* Sends each malformed request on its own connection; each must get an error answer (or, if
 * too long, be closed). */
static void abuse_once(const char *path, const struct abuse *a)
{
        struct {
                const char *data;
                size_t n;
                const char *expect;
                bool may_close; /* too long: the daemon may close before we read its answer */
        } cases[] = {
                { a->big, a->big_len, "request too long", true },
                { bad_utf8, sizeof bad_utf8 - 1, "not valid JSON", false },
                { a->nested, a->nested_len, "request too long", true },
                { a->nested_short, a->nested_short_len, "not valid JSON", false },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                char *got = raw_exchange(path, cases[i].data, cases[i].n);

                if (!(cases[i].may_close && strcmp(got, "(closed)") == 0) &&
                    (!strstr(got, "\"ok\":false") || !strstr(got, cases[i].expect)))
                        fail_msg("malformed request %zu answered \"%s\" (expected an error "
                                 "saying \"%s\")",
                                 i, got, cases[i].expect);
                free(got);
        }
}

/* The malformed requests again and again, each on its own connection, without looking at
 * the answers: for a child process, which must not return into the test (it never does). */
_Noreturn static void abuse_forever(const char *path, const struct abuse *a)
{
        const struct {
                const char *data;
                size_t n;
        } cases[] = {
                { a->big, a->big_len },
                { bad_utf8, sizeof bad_utf8 - 1 },
                { a->nested, a->nested_len },
                { a->nested_short, a->nested_short_len },
        };
        struct sockaddr_un addr = { .sun_family = AF_UNIX };
        char buf[4096];

        snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path);
        for (size_t i = 0;; i = (i + 1) % ELEMENTSOF(cases)) {
                int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
                size_t sent = 0;
                ssize_t k;

                if (fd < 0)
                        _exit(1);
                if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
                        close(fd);
                        usleep(1000);
                        continue;
                }
                while (sent < cases[i].n) {
                        k = send(fd, cases[i].data + sent, cases[i].n - sent, MSG_NOSIGNAL);
                        if (k <= 0)
                                break;
                        sent += (size_t)k;
                }
                (void)recv(fd, buf, sizeof buf, 0);
                close(fd);
        }
}

/*
 * Issue 20, against the real daemon: CONTROL_MAX_SUBSCRIBERS idle subscribers and 100
 * connections that never send anything (they used to lock everyone out, the silent ones for
 * 30 s, the subscribers for good), then malformed requests (a 10 MB line, invalid UTF-8,
 * deep nesting) sent again and again by another process: `imgctl status` answers within 1 s
 * throughout; the latencies are printed. One subscriber more is refused with an error.
 */
static void test_daemon_under_abuse(void **state)
{
        struct tu_daemon d;
        int subs[CONTROL_MAX_SUBSCRIBERS], silent[100], extra;
        struct abuse a;
        char *line, *out = NULL;
        json_t *st;
        pid_t abuser;

        (void)state;
        tu_daemon_setup(&d,
                        "( { name = \"s\"; width = 64; height = 64; fit = \"cover\"; "
                        "format = \"webp\"; } )",
                        1, NULL);
        tu_daemon_start(&d);
        abuse_init(&a);
        measure_status(&d, "alone", 9);

        for (size_t i = 0; i < ELEMENTSOF(subs); i++) {
                subs[i] = raw_connect(d.socket);
                line = raw_exchange_on(subs[i], events, strlen(events));
                assert_non_null(strstr(line, "\"subscribed\":true"));
                free(line);
        }
        for (size_t i = 0; i < ELEMENTSOF(silent); i++)
                silent[i] = raw_connect(d.socket);
        usleep(200 * 1000);
        measure_status(&d, "with 16 idle subscribers and 100 silent connections", 9);

        extra = raw_connect(d.socket);
        line = raw_exchange_on(extra, events, strlen(events));
        if (!strstr(line, "too many event subscribers"))
                fail_msg("subscriber %d was answered \"%s\"", CONTROL_MAX_SUBSCRIBERS + 1, line);
        free(line);
        close(extra);

        abuse_once(d.socket, &a);
        measure_status(&d, "after malformed requests", 5);

        /* The same, sent again and again by another process while status is asked. */
        abuser = fork();
        assert_true(abuser >= 0);
        if (abuser == 0)
                abuse_forever(d.socket, &a);
        usleep(100 * 1000);
        measure_status(&d, "while malformed requests keep coming", 15);
        kill(abuser, SIGKILL);
        waitpid(abuser, NULL, 0);

        /* The subscribers are all still there. */
        assert_int_equal(tu_imgctl(&d, &out, "status", "--json", NULL), 0);
        st = json_loads(out, 0, NULL);
        assert_non_null(st);
        assert_int_equal(json_integer_value(json_object_get(st, "subscribers")),
                         CONTROL_MAX_SUBSCRIBERS);
        json_decref(st);
        free(out);

        for (size_t i = 0; i < ELEMENTSOF(silent); i++)
                close(silent[i]);
        for (size_t i = 0; i < ELEMENTSOF(subs); i++)
                close(subs[i]);
        abuse_free(&a);
        tu_daemon_cleanup(&d);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_two_requests_one_connection, setup, teardown),
                cmocka_unit_test_setup_teardown(test_bad_requests_answered, setup, teardown),
                cmocka_unit_test_setup_teardown(test_pipelined_and_half_closed, setup, teardown),
                cmocka_unit_test_setup_teardown(test_request_too_long, setup, teardown),
                cmocka_unit_test_setup_teardown(test_longest_request_accepted, setup, teardown),
                cmocka_unit_test_setup_teardown(test_client_not_reading_disconnected, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_silent_client_disconnected, setup, teardown),
                cmocka_unit_test_setup_teardown(test_full_evicts_quietest, setup, teardown),
                cmocka_unit_test_setup_teardown(test_silent_crowd_does_not_lock_out, setup,
                                                teardown),
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
                cmocka_unit_test_setup_teardown(test_subscriber_limit, setup, teardown),
                cmocka_unit_test(test_daemon_under_abuse),
                cmocka_unit_test_setup_teardown(test_slow_subscriber_dropped, setup, teardown),
                cmocka_unit_test_setup_teardown(test_subscriber_dropped_during_its_request, setup,
                                                teardown),
        };

        log_setup("test-control");
        return cmocka_run_group_tests(tests, NULL, NULL);
}
