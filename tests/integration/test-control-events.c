/* SPDX-License-Identifier: MIT */
/*
 * test-control-events.c - event subscriptions on the control socket (control.h), driven by
 * control-fixture.h: only subscribers get broadcasts, are not timed out, and are dropped beyond
 * their output bound, also while their own request is being handled, and at most
 * CONTROL_MAX_SUBSCRIBERS of them.
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

static void subscribe(struct fixture *f, struct conn *c)
{
        json_t *result = NULL;

        ctlfx_conn_send_str(f, c, ctlfx_events);
        assert_int_equal(ctlfx_conn_answer(f, c, &result, NULL), 0);
        assert_true(json_is_true(json_object_get(result, "subscribed")));
        json_decref(result);
}

static void test_broadcast_reaches_subscribers_only(void **state)
{
        struct fixture *f = *state;
        struct conn *sub, *other;
        _cleanup_free_ char *line = NULL;

        ctlfx_start(f);
        assert_int_equal(control_broadcast(NULL, "x"), 0);
        sub = ctlfx_conn_open(f->path);
        other = ctlfx_conn_open(f->path);
        subscribe(f, sub);
        ctlfx_conn_send_str(f, other, ctlfx_ping);
        ctlfx_assert_pong(f, other);
        assert_int_equal(control_subscribers(f->control), 1);
        assert_int_equal(f->calls, 1); /* "events" is answered by control, not the handler */

        assert_int_equal(control_broadcast(f->control, "{\"event\":1}\n"), 1);
        assert_int_equal(control_broadcast(f->control, "{\"event\":2}"), 1); /* newline added */
        assert_int_equal(ctlfx_conn_read_line(f, sub, &line), 1);
        assert_string_equal(line, "{\"event\":1}");
        free(line);
        line = NULL;
        assert_int_equal(ctlfx_conn_read_line(f, sub, &line), 1);
        assert_string_equal(line, "{\"event\":2}");

        /* A subscriber may still ask. */
        ctlfx_conn_send_str(f, sub, ctlfx_ping);
        ctlfx_assert_pong(f, sub);

        /* The other saw nothing. */
        {
                char buf[16];

                ctlfx_pump(f);
                assert_int_equal(recv(other->fd, buf, sizeof buf, 0), -1);
                assert_int_equal(errno, EAGAIN);
        }
        ctlfx_conn_close(sub);
        for (int i = 0; i < 100 && control_subscribers(f->control) > 0; i++)
                ctlfx_pump(f);
        assert_int_equal(control_subscribers(f->control), 0);
        assert_int_equal(control_broadcast(f->control, "x\n"), 0);
        ctlfx_conn_close(other);
}

/* A silent subscriber is not timed out; a silent ordinary client is. */
static void test_subscriber_not_timed_out(void **state)
{
        struct fixture *f = *state;
        struct conn *sub, *other;
        _cleanup_free_ char *line = NULL;
        int64_t until;

        ctlfx_start(f);
        control_set_client_timeout(f->control, 200 * 1000);
        sub = ctlfx_conn_open(f->path);
        other = ctlfx_conn_open(f->path);
        subscribe(f, sub);
        ctlfx_conn_send_str(f, other, ctlfx_ping);
        ctlfx_assert_pong(f, other);
        until = (int64_t)mono_usec() + 600 * 1000;
        while ((int64_t)mono_usec() < until)
                ctlfx_pump(f);
        ctlfx_assert_closed(f, other);
        assert_int_equal(control_broadcast(f->control, "still here\n"), 1);
        assert_int_equal(ctlfx_conn_read_line(f, sub, &line), 1);
        assert_string_equal(line, "still here");
        ctlfx_conn_close(sub);
        ctlfx_conn_close(other);
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

        ctlfx_start(f);
        slow = ctlfx_conn_open(f->path);
        other = ctlfx_conn_open(f->path);
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

        ctlfx_conn_send_str(f, other, ctlfx_ping);
        ctlfx_assert_pong(f, other);
        fast = ctlfx_conn_open(f->path);
        subscribe(f, fast);
        assert_int_equal(control_broadcast(f->control, "next\n"), 1);
        {
                _cleanup_free_ char *got = NULL;

                assert_int_equal(ctlfx_conn_read_line(f, fast, &got), 1);
                assert_string_equal(got, "next");
        }
        /* The dropped one gets what its socket held, then the end. */
        for (;;) {
                _cleanup_free_ char *got = NULL;
                int k = ctlfx_conn_read_line(f, slow, &got);

                assert_true(k >= 0);
                if (k == 0)
                        break;
        }
        ctlfx_conn_close(slow);
        ctlfx_conn_close(fast);
        ctlfx_conn_close(other);
}

/* A subscriber dropped by a broadcast made while its own request is being handled is closed
 * once the handler returns (not freed under it). */
static void test_subscriber_dropped_during_its_request(void **state)
{
        struct fixture *f = *state;
        struct conn *c, *other;

        ctlfx_start(f);
        c = ctlfx_conn_open(f->path);
        other = ctlfx_conn_open(f->path);
        subscribe(f, c);
        ctlfx_conn_send_str(f, c, "{\"v\":1,\"cmd\":\"flood\"}\n");
        for (int i = 0; i < 100 && f->calls == 0; i++)
                ctlfx_pump(f);
        assert_int_equal(f->broadcast_result, 0);
        assert_int_equal(control_subscribers(f->control), 0);
        for (;;) {
                _cleanup_free_ char *got = NULL;
                int k = ctlfx_conn_read_line(f, c, &got);

                assert_true(k >= 0);
                if (k == 0)
                        break;
                assert_null(strstr(got, "\"subscribers\"")); /* no answer after the drop */
        }
        ctlfx_conn_send_str(f, other, ctlfx_ping);
        ctlfx_assert_pong(f, other);
        ctlfx_conn_close(c);
        ctlfx_conn_close(other);
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

        ctlfx_start(f);
        for (size_t i = 0; i < CONTROL_MAX_SUBSCRIBERS; i++) {
                subs[i] = ctlfx_conn_open(f->path);
                subscribe(f, subs[i]);
        }
        assert_int_equal(control_subscribers(f->control), CONTROL_MAX_SUBSCRIBERS);
        one_more = ctlfx_conn_open(f->path);
        ctlfx_conn_send_str(f, one_more, ctlfx_events);
        ctlfx_assert_error_contains(f, one_more, "too many event subscribers (at most 16)");
        assert_int_equal(control_subscribers(f->control), CONTROL_MAX_SUBSCRIBERS);
        ctlfx_conn_send_str(f, one_more, ctlfx_ping);
        ctlfx_assert_pong(f, one_more);

        /* Fill every other slot with silent clients, and more. */
        for (size_t i = 0; i < ELEMENTSOF(silent); i++) {
                silent[i] = ctlfx_conn_open(f->path);
                ctlfx_pump(f);
        }
        for (int i = 0; i < 50; i++)
                ctlfx_pump(f);
        c = ctlfx_conn_open(f->path);
        ctlfx_conn_send_str(f, c, ctlfx_ping);
        ctlfx_assert_pong(f, c);
        assert_int_equal(control_subscribers(f->control), CONTROL_MAX_SUBSCRIBERS);
        assert_int_equal(control_broadcast(f->control, "{\"event\":\"x\"}\n"),
                         CONTROL_MAX_SUBSCRIBERS);
        for (size_t i = 0; i < CONTROL_MAX_SUBSCRIBERS; i++) {
                _cleanup_free_ char *line = NULL;

                assert_int_equal(ctlfx_conn_read_line(f, subs[i], &line), 1);
                assert_string_equal(line, "{\"event\":\"x\"}");
        }

        /* A subscriber that leaves frees its place. */
        ctlfx_conn_close(subs[0]);
        for (int i = 0; i < 100 && control_subscribers(f->control) == CONTROL_MAX_SUBSCRIBERS; i++)
                ctlfx_pump(f);
        subs[0] = ctlfx_conn_open(f->path);
        subscribe(f, subs[0]);

        ctlfx_conn_close(c);
        ctlfx_conn_close(one_more);
        for (size_t i = 0; i < ELEMENTSOF(silent); i++)
                ctlfx_conn_close(silent[i]);
        for (size_t i = 0; i < CONTROL_MAX_SUBSCRIBERS; i++)
                ctlfx_conn_close(subs[i]);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_broadcast_reaches_subscribers_only,
                                                ctlfx_setup, ctlfx_teardown),
                cmocka_unit_test_setup_teardown(test_subscriber_not_timed_out, ctlfx_setup,
                                                ctlfx_teardown),
                cmocka_unit_test_setup_teardown(test_subscriber_limit, ctlfx_setup, ctlfx_teardown),
                cmocka_unit_test_setup_teardown(test_slow_subscriber_dropped, ctlfx_setup,
                                                ctlfx_teardown),
                cmocka_unit_test_setup_teardown(test_subscriber_dropped_during_its_request,
                                                ctlfx_setup, ctlfx_teardown),
        };

        log_setup("test-control-events");
        return cmocka_run_group_tests(tests, NULL, NULL);
}
