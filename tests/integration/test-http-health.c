/* SPDX-License-Identifier: MIT */
/*
 * test-http-health.c - GET /health (http.h) on the real imgd: its transitions (an operator's
 * pause, an alert, a reload of health_alerts) and its answer while the daemon stops.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon/http.h"
#include "testutil.h"
#include "http-fixture.h"

/* GET /health until its body contains `text` (within 15 s); returns the last reply. */
static void health_until(const char *port, const char *text, struct reply *r)
{
        for (int i = 0; i < 150; i++) {
                httpfx_must_request(port, "GET", "/health", r);
                if (strstr(r->body, text))
                        return;
                httpfx_reply_done(r);
                usleep(100 * 1000);
        }
        httpfx_must_request(port, "GET", "/health", r);
        fail_msg("/health never said %s; last: %d %s", text, r->status, r->body);
}

static void rewrite_config(struct tu_daemon *d, const char *from, const char *to)
{
        char *text = tu_read_file(d->config, NULL), *at, *next;

        assert_non_null(text);
        at = strstr(text, from);
        assert_non_null(at);
        *at = '\0';
        next = tu_path("%s%s%s", text, to, at + strlen(from));
        tu_write_file(d->config, next, (size_t)-1);
        free(next);
        free(text);
}

static void test_health_transitions(void **state)
{
        struct tu_daemon d;
        struct reply r;
        char *port, *v;

        tu_daemon_setup(&d, PIPE, 1,
                        "alerts = { queued = 1; };\n"
                        "http = { listen = \"127.0.0.1:0\";\n"
                        "         health_alerts = [ \"queue_depth\", \"paused\" ]; };");
        tu_daemon_start(&d);
        port = httpfx_logged_port(&d);

        httpfx_must_request(port, "GET", "/health", &r);
        assert_int_equal(r.status, 200);
        v = httpfx_header(&r, "Content-Type");
        assert_string_equal(v, "application/json");
        free(v);
        assert_string_equal(r.body, "{\"status\":\"ok\",\"state\":\"running\",\"level\":\"full\","
                                    "\"paused\":false,\"alerts\":[],\"failing\":[]}\n");
        httpfx_reply_done(&r);

        /* An operator's pause, counted: 503. */
        assert_int_equal(tu_imgctl(&d, NULL, "pause", NULL), 0);
        httpfx_must_request(port, "GET", "/health", &r);
        assert_int_equal(r.status, 503);
        assert_non_null(strstr(r.body, "\"status\":\"failing\""));
        assert_non_null(strstr(r.body, "\"paused\":true"));
        assert_non_null(strstr(r.body, "\"failing\":[\"paused\"]"));
        httpfx_reply_done(&r);
        httpfx_must_request(port, "HEAD", "/health", &r);
        assert_int_equal(r.status, 503);
        httpfx_reply_done(&r);

        /* A job waits: the queue_depth alert (at 1), counted too. */
        httpfx_drop_image(&d, "a.jpg");
        health_until(port, "\"alerts\":[\"queue_depth\"]", &r);
        assert_int_equal(r.status, 503);
        assert_non_null(strstr(r.body, "\"failing\":[\"paused\",\"queue_depth\"]"));
        httpfx_reply_done(&r);

        /* The operator stops counting them: a reload applies at once, and the alert is
         * still listed. */
        rewrite_config(&d, "health_alerts = [ \"queue_depth\", \"paused\" ]",
                       "health_alerts = [ ]");
        assert_int_equal(tu_imgctl(&d, NULL, "reload", NULL), 0);
        httpfx_must_request(port, "GET", "/health", &r);
        assert_int_equal(r.status, 200);
        assert_non_null(strstr(r.body, "\"status\":\"ok\""));
        assert_non_null(strstr(r.body, "\"alerts\":[\"queue_depth\"]"));
        assert_non_null(strstr(r.body, "\"failing\":[]"));
        httpfx_reply_done(&r);

        /* Counted again (the default: every alert, not the pause): 503 for the alert alone. */
        rewrite_config(&d, "health_alerts = [ ];", "");
        assert_int_equal(tu_imgctl(&d, NULL, "reload", NULL), 0);
        httpfx_must_request(port, "GET", "/health", &r);
        assert_int_equal(r.status, 503);
        assert_non_null(strstr(r.body, "\"failing\":[\"queue_depth\"]"));
        httpfx_reply_done(&r);

        /* Resumed and drained: 200 again. */
        assert_int_equal(tu_imgctl(&d, NULL, "resume", NULL), 0);
        tu_daemon_wait_idle(&d, 60);
        health_until(port, "\"alerts\":[]", &r);
        assert_int_equal(r.status, 200);
        assert_non_null(strstr(r.body, "\"status\":\"ok\""));
        httpfx_reply_done(&r);

        free(port);
        assert_true(WIFEXITED(tu_daemon_stop(&d, SIGTERM)));
        tu_daemon_cleanup(&d);
}

/* While imgd drains at SIGTERM (a job still running, slowed down in the worker), /health is
 * 503 "stopping" whatever health_alerts counts, and /metrics still answers. */
static void test_health_stopping(void **state)
{
#ifdef IMGD_FAULT_INJECTION
        struct tu_daemon d;
        struct reply r;
        bool running = false;
        char *port;
        int status;

        setenv("IMGD_FAULT_DELAY", "worker.job", 1);
        setenv("IMGD_FAULT_DELAY_MS", "4000", 1);
        tu_daemon_setup(&d, PIPE, 1, "http = { listen = \"127.0.0.1:0\"; health_alerts = [ ]; };");
        tu_daemon_start(&d);
        unsetenv("IMGD_FAULT_DELAY");
        unsetenv("IMGD_FAULT_DELAY_MS");
        port = httpfx_logged_port(&d);
        httpfx_drop_image(&d, "a.jpg");
        for (int i = 0; i < 500; i++) {
                httpfx_must_request(port, "GET", "/metrics", &r);
                running = strstr(r.body, "imgd_jobs{state=\"running\"} 1\n") != NULL;
                httpfx_reply_done(&r);
                if (running)
                        break;
                usleep(10 * 1000);
        }
        assert_true(running);

        kill(d.pid, SIGTERM);
        health_until(port, "\"state\":\"stopping\"", &r);
        assert_int_equal(r.status, 503);
        assert_non_null(strstr(r.body, "\"failing\":[\"stopping\"]"));
        httpfx_reply_done(&r);
        httpfx_must_request(port, "GET", "/metrics", &r);
        assert_int_equal(r.status, 200);
        httpfx_reply_done(&r);
        status = tu_daemon_wait_exit(&d, 30000);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        free(port);
        tu_daemon_cleanup(&d);
#else
        skip();
#endif
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_health_transitions),
                cmocka_unit_test(test_health_stopping),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
