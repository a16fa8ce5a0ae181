/* SPDX-License-Identifier: MIT */
/*
 * control-fixture.c - the harness of the test-control-* programs: the control socket on a real
 * Unix socket in a temporary directory, with a real sd_event loop that the test drives itself
 * (sd_event_run with short timeouts) while it plays the client, a fake handler that answers "ping"
 * and refuses everything else, and client connections that send requests and read answers.
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

char *ctlfx_make_temp_dir(void)
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

int ctlfx_rm_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
        (void)st;
        (void)ftw;
        if (type == FTW_DP)
                return rmdir(path);
        return unlink(path);
}

void ctlfx_remove_tree(const char *dir)
{
        if (dir)
                (void)nftw(dir, ctlfx_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

int ctlfx_fake_handler(const char *cmd, const json_t *request, void *userdata, json_t **ret_result,
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

int ctlfx_setup(void **state)
{
        struct fixture *f = calloc(1, sizeof *f);

        assert_non_null(f);
        f->dir = ctlfx_make_temp_dir();
        assert_true(asprintf(&f->path, "%s/imgd.sock", f->dir) > 0);
        assert_int_equal(sd_event_new(&f->event), 0);
        *state = f;
        return 0;
}

int ctlfx_teardown(void **state)
{
        struct fixture *f = *state;

        f->control = control_free(f->control);
        sd_event_unref(f->event);
        ctlfx_remove_tree(f->dir);
        free(f->path);
        free(f->dir);
        free(f);
        return 0;
}

void ctlfx_start(struct fixture *f)
{
        assert_int_equal(control_new(f->event, f->path, ctlfx_fake_handler, f, &f->control), 0);
        assert_non_null(f->control);
}

void ctlfx_pump(struct fixture *f)
{
        assert_true(sd_event_run(f->event, PUMP_SLICE_US) >= 0);
}

struct conn *ctlfx_conn_open(const char *path)
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

void ctlfx_conn_close(struct conn *c)
{
        if (!c)
                return;
        close(c->fd);
        free(c);
}

void ctlfx_conn_send(struct fixture *f, struct conn *c, const char *data, size_t n)
{
        int64_t deadline = (int64_t)mono_usec() + WAIT_US;
        ssize_t k;

        while (n > 0) {
                k = send(c->fd, data, n, MSG_NOSIGNAL);
                if (k < 0) {
                        assert_true(errno == EAGAIN || errno == EINTR);
                        assert_true((int64_t)mono_usec() < deadline);
                        ctlfx_pump(f);
                        continue;
                }
                data += k;
                n -= (size_t)k;
        }
}

void ctlfx_conn_send_str(struct fixture *f, struct conn *c, const char *s)
{
        ctlfx_conn_send(f, c, s, strlen(s));
}

int ctlfx_conn_read_line(struct fixture *f, struct conn *c, char **ret_line)
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
                ctlfx_pump(f);
        }
}

int ctlfx_conn_answer(struct fixture *f, struct conn *c, json_t **ret_result, char **ret_error)
{
        _cleanup_free_ char *line = NULL;
        int r;

        assert_int_equal(ctlfx_conn_read_line(f, c, &line), 1);
        r = proto_parse_response(line, strlen(line), ret_result, ret_error);
        assert_true(r == 0 || r == -EREMOTEIO);
        return r;
}

void ctlfx_assert_pong(struct fixture *f, struct conn *c)
{
        json_t *result = NULL;

        assert_int_equal(ctlfx_conn_answer(f, c, &result, NULL), 0);
        assert_true(json_is_true(json_object_get(result, "pong")));
        json_decref(result);
}

void ctlfx_assert_error_contains(struct fixture *f, struct conn *c, const char *what)
{
        _cleanup_free_ char *error = NULL;
        json_t *result = NULL;

        assert_int_equal(ctlfx_conn_answer(f, c, &result, &error), -EREMOTEIO);
        assert_non_null(strstr(error, what));
}

void ctlfx_assert_closed(struct fixture *f, struct conn *c)
{
        _cleanup_free_ char *line = NULL;
        int r = ctlfx_conn_read_line(f, c, &line);

        if (r == 1)
                fail_msg("expected the connection to close, got \"%s\"", line);
        assert_int_equal(r, 0);
}

const char ctlfx_ping[] = "{\"v\":1,\"cmd\":\"ping\"}\n";

const char ctlfx_events[] = "{\"v\":1,\"cmd\":\"events\"}\n";
