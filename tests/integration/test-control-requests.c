/* SPDX-License-Identifier: MIT */
/*
 * test-control-requests.c - requests on the control socket (control.h), driven by control-
 * fixture.h: several requests on one connection, pipelining and half-close, over-long requests and
 * the longest accepted, clients that do not read or stay silent, the client limit (the quietest
 * client makes room for a new one, so a crowd of silent connections locks nobody out), and freeing
 * the socket with clients connected.
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

static void test_two_requests_one_connection(void **state)
{
        struct fixture *f = *state;
        struct conn *c;

        ctlfx_start(f);
        c = ctlfx_conn_open(f->path);

        ctlfx_conn_send_str(f, c, ctlfx_ping);
        ctlfx_assert_pong(f, c);
        ctlfx_conn_send_str(f, c, "{\"v\":1,\"cmd\":\"frobnicate\"}\n");
        ctlfx_assert_error_contains(f, c, "unknown command 'frobnicate'");
        /* Still open for a third. */
        ctlfx_conn_send_str(f, c, ctlfx_ping);
        ctlfx_assert_pong(f, c);
        assert_int_equal(f->calls, 3);
        ctlfx_conn_close(c);
}

static void test_bad_requests_answered(void **state)
{
        struct fixture *f = *state;
        struct conn *c;

        ctlfx_start(f);
        c = ctlfx_conn_open(f->path);

        ctlfx_conn_send_str(f, c, "not json\n");
        ctlfx_assert_error_contains(f, c, "not valid JSON");
        ctlfx_conn_send_str(f, c, "{\"v\":2,\"cmd\":\"ping\"}\n");
        ctlfx_assert_error_contains(f, c, "unsupported protocol version 2 (this imgd speaks 1)");
        ctlfx_conn_send_str(f, c, "{\"v\":1}\r\n");
        ctlfx_assert_error_contains(f, c, "cmd");
        /* None of them reached the handler; the connection still works. */
        assert_int_equal(f->calls, 0);
        ctlfx_conn_send_str(f, c, ctlfx_ping);
        ctlfx_assert_pong(f, c);
        ctlfx_conn_close(c);
}

static void test_pipelined_and_half_closed(void **state)
{
        struct fixture *f = *state;
        struct conn *c;

        ctlfx_start(f);
        c = ctlfx_conn_open(f->path);

        /* Two requests in one write, then the client stops writing: both are answered, in
         * order, and then the daemon closes. The last line has no newline. */
        ctlfx_conn_send_str(f, c, "{\"v\":1,\"cmd\":\"ping\"}\n{\"v\":1,\"cmd\":\"nope\"}");
        assert_int_equal(shutdown(c->fd, SHUT_WR), 0);
        ctlfx_assert_pong(f, c);
        ctlfx_assert_error_contains(f, c, "unknown command 'nope'");
        ctlfx_assert_closed(f, c);
        ctlfx_conn_close(c);
}

static void test_request_too_long(void **state)
{
        struct fixture *f = *state;
        size_t n = PROTO_MAX_LINE + 100;
        _cleanup_free_ char *big = malloc(n);
        struct conn *c, *other;

        assert_non_null(big);
        memset(big, 'x', n);
        ctlfx_start(f);
        other = ctlfx_conn_open(f->path);
        c = ctlfx_conn_open(f->path);

        ctlfx_conn_send(f, c, big, n);
        ctlfx_assert_error_contains(f, c, "request too long");
        ctlfx_assert_closed(f, c);
        assert_int_equal(f->calls, 0);

        /* Other clients are not affected. */
        ctlfx_conn_send_str(f, other, ctlfx_ping);
        ctlfx_assert_pong(f, other);
        ctlfx_conn_close(c);
        ctlfx_conn_close(other);
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

        ctlfx_start(f);
        c = ctlfx_conn_open(f->path);
        ctlfx_conn_send(f, c, line, n + 1);
        ctlfx_assert_pong(f, c);
        ctlfx_conn_close(c);
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
        ctlfx_start(f);
        c = ctlfx_conn_open(f->path);
        while (!closed && total < 64u * 1024 * 1024) {
                k = send(c->fd, req, n, MSG_NOSIGNAL);
                if (k < 0 && (errno == EPIPE || errno == ECONNRESET))
                        closed = true;
                else if (k < 0)
                        assert_true(errno == EAGAIN || errno == EINTR);
                else
                        total += (size_t)k;
                ctlfx_pump(f);
        }
        assert_true(closed);
        /* Somewhere past the 4 MiB output bound plus what the socket buffers hold. */
        assert_true(total > 4u * 1024 * 1024);
        ctlfx_conn_close(c);
}

static void test_silent_client_disconnected(void **state)
{
        struct fixture *f = *state;
        struct conn *c;
        int64_t t0, elapsed;

        ctlfx_start(f);
        control_set_client_timeout(f->control, 200 * 1000);
        c = ctlfx_conn_open(f->path);
        t0 = (int64_t)mono_usec();

        /* One request resets the timer; then silence. */
        ctlfx_conn_send_str(f, c, ctlfx_ping);
        ctlfx_assert_pong(f, c);
        ctlfx_assert_closed(f, c);
        elapsed = (int64_t)mono_usec() - t0;
        assert_true(elapsed >= 200 * 1000);
        assert_true(elapsed < WAIT_US);
        ctlfx_conn_close(c);
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

        ctlfx_start(f);
        /* Each client is known to be accepted once it got an answer. */
        for (size_t i = 0; i < CONTROL_MAX_CLIENTS; i++) {
                clients[i] = ctlfx_conn_open(f->path);
                ctlfx_conn_send_str(f, clients[i], ctlfx_ping);
                ctlfx_assert_pong(f, clients[i]);
        }
        /* All but one ask again: that one is now the quietest. */
        for (size_t i = 0; i < CONTROL_MAX_CLIENTS; i++) {
                if (i == quiet)
                        continue;
                ctlfx_conn_send_str(f, clients[i], ctlfx_ping);
                ctlfx_assert_pong(f, clients[i]);
        }

        extra = ctlfx_conn_open(f->path);
        ctlfx_conn_send_str(f, extra, ctlfx_ping);
        ctlfx_assert_pong(f, extra);
        ctlfx_assert_error_contains(f, clients[quiet], "too many clients");
        ctlfx_assert_closed(f, clients[quiet]);

        /* The ones already connected keep working. */
        ctlfx_conn_send_str(f, clients[0], ctlfx_ping);
        ctlfx_assert_pong(f, clients[0]);
        ctlfx_conn_send_str(f, clients[CONTROL_MAX_CLIENTS - 1], ctlfx_ping);
        ctlfx_assert_pong(f, clients[CONTROL_MAX_CLIENTS - 1]);

        /* The next newcomer takes the slot of the next quietest: clients[1], as clients[0]
         * has just asked again. */
        late = ctlfx_conn_open(f->path);
        ctlfx_conn_send_str(f, late, ctlfx_ping);
        ctlfx_assert_pong(f, late);
        ctlfx_assert_error_contains(f, clients[1], "too many clients");
        ctlfx_assert_closed(f, clients[1]);
        ctlfx_conn_send_str(f, extra, ctlfx_ping);
        ctlfx_assert_pong(f, extra);

        ctlfx_conn_close(late);
        ctlfx_conn_close(extra);
        for (size_t i = 0; i < CONTROL_MAX_CLIENTS; i++)
                ctlfx_conn_close(clients[i]);
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

        ctlfx_start(f);
        for (size_t i = 0; i < ELEMENTSOF(silent); i++) {
                silent[i] = ctlfx_conn_open(f->path);
                ctlfx_pump(f);
        }
        for (int i = 0; i < 50; i++)
                ctlfx_pump(f);
        t0 = (int64_t)mono_usec();
        c = ctlfx_conn_open(f->path);
        ctlfx_conn_send_str(f, c, ctlfx_ping);
        ctlfx_assert_pong(f, c);
        print_message("ping behind %zu silent connections: %lld us\n", ELEMENTSOF(silent),
                      (long long)((int64_t)mono_usec() - t0));
        assert_true((int64_t)mono_usec() - t0 < 1000000);
        ctlfx_conn_close(c);
        for (size_t i = 0; i < ELEMENTSOF(silent); i++)
                ctlfx_conn_close(silent[i]);
}

static void test_free_with_clients(void **state)
{
        struct fixture *f = *state;
        struct conn *c1, *c2;

        ctlfx_start(f);
        c1 = ctlfx_conn_open(f->path);
        c2 = ctlfx_conn_open(f->path);
        ctlfx_conn_send_str(f, c1, ctlfx_ping);
        ctlfx_assert_pong(f, c1);
        /* c2 is still in the accept queue or connected but silent; both are dropped. */
        f->control = control_free(f->control);
        ctlfx_assert_closed(f, c1);
        ctlfx_assert_closed(f, c2);
        ctlfx_conn_close(c1);
        ctlfx_conn_close(c2);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_two_requests_one_connection, ctlfx_setup,
                                                ctlfx_teardown),
                cmocka_unit_test_setup_teardown(test_bad_requests_answered, ctlfx_setup,
                                                ctlfx_teardown),
                cmocka_unit_test_setup_teardown(test_pipelined_and_half_closed, ctlfx_setup,
                                                ctlfx_teardown),
                cmocka_unit_test_setup_teardown(test_request_too_long, ctlfx_setup, ctlfx_teardown),
                cmocka_unit_test_setup_teardown(test_longest_request_accepted, ctlfx_setup,
                                                ctlfx_teardown),
                cmocka_unit_test_setup_teardown(test_client_not_reading_disconnected, ctlfx_setup,
                                                ctlfx_teardown),
                cmocka_unit_test_setup_teardown(test_silent_client_disconnected, ctlfx_setup,
                                                ctlfx_teardown),
                cmocka_unit_test_setup_teardown(test_full_evicts_quietest, ctlfx_setup,
                                                ctlfx_teardown),
                cmocka_unit_test_setup_teardown(test_silent_crowd_does_not_lock_out, ctlfx_setup,
                                                ctlfx_teardown),
                cmocka_unit_test_setup_teardown(test_free_with_clients, ctlfx_setup,
                                                ctlfx_teardown),
        };

        log_setup("test-control-requests");
        return cmocka_run_group_tests(tests, NULL, NULL);
}
