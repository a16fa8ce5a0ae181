/* SPDX-License-Identifier: MIT */
/*
 * test-control-socket.c - the control socket's file and peers (control.h), driven by control-
 * fixture.h: stale/live/foreign files at the socket path, a path too long, the socket mode and
 * cleanup; authorization of peers by uid and (primary or supplementary) group, with connections
 * made by a child that drops to another user and hands the connected socket back (SO_PEERCRED and
 * SO_PEERGROUPS are those of connect()).
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
#include "control-fixture.h"

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

        ctlfx_start(f);
        c = ctlfx_conn_open(f->path);
        ctlfx_conn_send_str(f, c, ctlfx_ping);
        ctlfx_assert_pong(f, c);
        ctlfx_conn_close(c);
}

static void test_live_socket_refused(void **state)
{
        struct fixture *f = *state;
        control *second = NULL;
        struct conn *c;

        ctlfx_start(f);
        assert_int_equal(control_new(f->event, f->path, ctlfx_fake_handler, f, &second),
                         -EADDRINUSE);
        assert_null(second);

        /* The first one still owns the path and answers. */
        c = ctlfx_conn_open(f->path);
        ctlfx_conn_send_str(f, c, ctlfx_ping);
        ctlfx_assert_pong(f, c);
        ctlfx_conn_close(c);
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

        assert_int_equal(control_new(f->event, f->path, ctlfx_fake_handler, f, &c), -EEXIST);
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
        assert_int_equal(control_new(f->event, path, ctlfx_fake_handler, f, &c), -ENAMETOOLONG);
        assert_null(c);
}

static void test_socket_mode_and_cleanup(void **state)
{
        struct fixture *f = *state;
        struct stat st;

        ctlfx_start(f);
        assert_int_equal(lstat(f->path, &st), 0);
        assert_true(S_ISSOCK(st.st_mode));
        assert_int_equal(st.st_mode & 07777, 0660);

        f->control = control_free(f->control);
        assert_int_equal(lstat(f->path, &st), -1);
        assert_int_equal(errno, ENOENT);
}

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
        ctlfx_start(f);
        assert_int_equal(chmod(f->dir, 0711), 0);
        assert_int_equal(chmod(f->path, 0666), 0);
        return true;
}

/* Reads the one refusal line and the end of the connection; the handler never runs. */
static void assert_refused(struct fixture *f, struct conn *c, const char *message)
{
        _cleanup_free_ char *error = NULL;
        json_t *result = NULL;

        assert_int_equal(ctlfx_conn_answer(f, c, &result, &error), -EREMOTEIO);
        assert_string_equal(error, message);
        ctlfx_assert_closed(f, c);
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
        ctlfx_conn_close(c);

        /* Root and the daemon's own user still are served. */
        c = ctlfx_conn_open(f->path);
        ctlfx_conn_send_str(f, c, ctlfx_ping);
        ctlfx_assert_pong(f, c);
        ctlfx_conn_close(c);
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
        ctlfx_conn_close(c);

        c = conn_open_as(f->path, 65534, 65534, member, ELEMENTSOF(member)); /* supplementary */
        ctlfx_conn_send_str(f, c, ctlfx_ping);
        ctlfx_assert_pong(f, c);
        ctlfx_conn_close(c);

        c = conn_open_as(f->path, 65534, 4242, NULL, 0); /* primary */
        ctlfx_conn_send_str(f, c, ctlfx_ping);
        ctlfx_assert_pong(f, c);
        ctlfx_conn_close(c);

        /* Back to no group. */
        control_set_group(f->control, (gid_t)-1);
        c = conn_open_as(f->path, 65534, 4242, NULL, 0);
        ctlfx_conn_send_str(f, c, ctlfx_ping); /* answered with the refusal, not a pong */
        {
                _cleanup_free_ char *error = NULL;
                json_t *result = NULL;

                assert_int_equal(ctlfx_conn_answer(f, c, &result, &error), -EREMOTEIO);
                assert_non_null(strstr(error, "permission denied"));
        }
        ctlfx_conn_close(c);
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
        ctlfx_conn_close(c);
        free(message);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_stale_socket_replaced, ctlfx_setup,
                                                ctlfx_teardown),
                cmocka_unit_test_setup_teardown(test_live_socket_refused, ctlfx_setup,
                                                ctlfx_teardown),
                cmocka_unit_test_setup_teardown(test_non_socket_refused, ctlfx_setup,
                                                ctlfx_teardown),
                cmocka_unit_test_setup_teardown(test_path_too_long, ctlfx_setup, ctlfx_teardown),
                cmocka_unit_test_setup_teardown(test_socket_mode_and_cleanup, ctlfx_setup,
                                                ctlfx_teardown),
                cmocka_unit_test_setup_teardown(test_peer_refused, ctlfx_setup, ctlfx_teardown),
                cmocka_unit_test_setup_teardown(test_peer_in_group, ctlfx_setup, ctlfx_teardown),
                cmocka_unit_test_setup_teardown(test_peer_group_named, ctlfx_setup, ctlfx_teardown),
        };

        log_setup("test-control-socket");
        return cmocka_run_group_tests(tests, NULL, NULL);
}
