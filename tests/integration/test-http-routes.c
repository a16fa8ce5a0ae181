/* SPDX-License-Identifier: MIT */
/*
 * test-http-routes.c - GET /metrics (http.h) on the real imgd, over real TCP on the loopback (and
 * a Unix socket) with the HTTP client of http-fixture.h: routes, methods and HEAD, silent and slow
 * clients against the supervisor's responsiveness, socket activation (systemd-socket-activate, or
 * the LISTEN_FDS protocol by hand when it is not installed), configuration errors, and `promtool
 * check metrics` on the real body.
 *
 *   test-http-routes            everything but promtool
 *   test-http-routes promtool   only the promtool lint (its own ctest test, test-http-promtool)
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

static void test_metrics_and_routes(void **state)
{
        struct tu_daemon d;
        struct reply r;
        char *port, *v, *cli = NULL, *garbage;

        tu_daemon_setup(&d, PIPE, 1, "http = { listen = \"127.0.0.1:0\"; };");
        tu_daemon_start(&d);
        port = httpfx_logged_port(&d);
        httpfx_drop_image(&d, "a.jpg");
        garbage = tu_path("%s/b.jpg", d.uploads);
        tu_write_file(garbage, "not an image", (size_t)-1);
        free(garbage);
        tu_daemon_wait_idle(&d, 60);

        httpfx_must_request(port, "GET", "/metrics", &r);
        assert_int_equal(r.status, 200);
        v = httpfx_header(&r, "Content-Type");
        assert_string_equal(v, "text/plain; version=0.0.4; charset=utf-8");
        free(v);
        assert_non_null(strstr(r.body, "# TYPE imgd_jobs gauge\n"));
        assert_non_null(strstr(r.body, "imgd_jobs{state=\"done\"} 1\n"));
        assert_non_null(strstr(r.body, "imgd_jobs{state=\"dead\"} 1\n"));
        assert_non_null(strstr(r.body, "imgd_jobs_processed_total{pipeline=\"p\"} 1\n"));
        assert_non_null(strstr(r.body, "imgd_job_duration_seconds_count{pipeline=\"p\"} 1\n"));
        /* The same families as `imgctl metrics`, in the same order. */
        assert_int_equal(tu_imgctl(&d, &cli, "metrics", NULL), 0);
        {
                const char *a = r.body, *b = cli;

                while ((b = strstr(b, "# TYPE "))) {
                        const char *end = strchr(b, '\n');
                        char *line = strndup(b, (size_t)(end - b + 1));

                        a = strstr(a, line);
                        if (!a)
                                fail_msg("GET /metrics lacks (or reorders) %s", line);
                        free(line);
                        b = end;
                }
        }
        free(cli);
        httpfx_reply_done(&r);

        /* HEAD: the headers of GET, no body. */
        httpfx_must_request(port, "HEAD", "/metrics", &r);
        assert_int_equal(r.status, 200);
        v = httpfx_header(&r, "Content-Length");
        assert_non_null(v);
        assert_true(atoi(v) > 1000);
        free(v);
        assert_int_equal(r.body_len, 0);
        httpfx_reply_done(&r);
        httpfx_must_request(port, "HEAD", "/health", &r);
        assert_int_equal(r.status, 200);
        assert_int_equal(r.body_len, 0);
        httpfx_reply_done(&r);

        /* A query string does not change the path. */
        httpfx_must_request(port, "GET", "/metrics?debug=1", &r);
        assert_int_equal(r.status, 200);
        httpfx_reply_done(&r);

        /* Other paths 404, other methods 405 with Allow. */
        static const char *const paths[] = { "/", "/metrics/", "/healthz", "/../metrics",
                                             "/METRICS" };
        for (size_t i = 0; i < ELEMENTSOF(paths); i++) {
                httpfx_must_request(port, "GET", paths[i], &r);
                if (r.status != 404)
                        fail_msg("GET %s: %d, expected 404", paths[i], r.status);
                httpfx_reply_done(&r);
        }
        static const char *const methods[] = { "POST", "PUT", "DELETE", "OPTIONS", "PATCH" };
        for (size_t i = 0; i < ELEMENTSOF(methods); i++) {
                httpfx_must_request(port, methods[i], i % 2 ? "/health" : "/metrics", &r);
                if (r.status != 405)
                        fail_msg("%s: %d, expected 405", methods[i], r.status);
                v = httpfx_header(&r, "Allow");
                assert_string_equal(v, "GET, HEAD");
                free(v);
                httpfx_reply_done(&r);
        }
        /* A request imgd's HTTP server will not parse gets an error, never a hang. */
        assert_int_equal(httpfx_request(port, "GET", "not-a-path", 10000, &r), 0);
        assert_true(r.status >= 400 || r.status == 0);
        httpfx_reply_done(&r);

        free(port);
        assert_true(WIFEXITED(tu_daemon_stop(&d, SIGTERM)));
        tu_daemon_cleanup(&d);
}

/* listen = an absolute path: a Unix socket, removed at the stop. */
static void test_unix_socket(void **state)
{
        struct tu_daemon d;
        struct reply r;
        char *extra, *path, *root = tu_mkdtemp();
        struct stat st;

        path = tu_path("%s/http.sock", root);
        extra = tu_path("http = { listen = \"%s\"; };", path);
        tu_daemon_setup(&d, PIPE, 1, extra);
        /* A stale socket file (its process died) is replaced. */
        {
                struct sockaddr_un un = { .sun_family = AF_UNIX };
                int fd = socket(AF_UNIX, SOCK_STREAM, 0);

                snprintf(un.sun_path, sizeof un.sun_path, "%s", path);
                assert_int_equal(bind(fd, (struct sockaddr *)&un, sizeof un), 0);
                close(fd);
        }
        tu_daemon_start(&d);
        httpfx_must_request(path, "GET", "/health", &r);
        assert_int_equal(r.status, 200);
        assert_non_null(strstr(r.body, "\"status\":\"ok\""));
        httpfx_reply_done(&r);
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0666);
        assert_true(WIFEXITED(tu_daemon_stop(&d, SIGTERM)));
        assert_int_equal(access(path, F_OK), -1);

        /* A socket a live process listens on is left alone, and the start refused. */
        {
                struct sockaddr_un un = { .sun_family = AF_UNIX };
                int fd = socket(AF_UNIX, SOCK_STREAM, 0);
                char *out = NULL;

                snprintf(un.sun_path, sizeof un.sun_path, "%s", path);
                assert_int_equal(bind(fd, (struct sockaddr *)&un, sizeof un), 0);
                assert_int_equal(listen(fd, 4), 0);
                assert_int_equal(tu_run(&out, IMGD_BUILD_DIR "/imgd", "-c", d.config, NULL), 1);
                if (!strstr(out, "another process answers on that socket"))
                        fail_msg("imgd on a live Unix socket:\n%s", out);
                assert_int_equal(access(path, F_OK), 0);
                free(out);
                close(fd);
        }
        tu_daemon_cleanup(&d);
        tu_rm_rf(root);
        free(root);
        free(path);
        free(extra);
}

/* Microseconds `imgctl status` takes; fails the test if it fails. */
static int64_t status_time_us(struct tu_daemon *d)
{
        int64_t t0 = tu_now_us();

        assert_int_equal(tu_imgctl(d, NULL, "status", NULL), 0);
        return tu_now_us() - t0;
}

/*
 * Runs `imgctl status` 5 times: the best must answer within 1 s (a supervisor held up by
 * HTTP clients would be slow every time; one slow start of imgctl on a loaded machine is not
 * that), and the worst within 5 s.
 */
static void status_times(struct tu_daemon *d, unsigned n, const char *what)
{
        int64_t best = INT64_MAX, worst = 0;

        for (int i = 0; i < 5; i++) {
                int64_t t = status_time_us(d);

                best = t < best ? t : best;
                worst = t > worst ? t : worst;
        }
        print_message("imgctl status with %u %s: best %lld ms, worst %lld ms\n", n, what,
                      (long long)(best / 1000), (long long)(worst / 1000));
        assert_true(best < 1000000);
        assert_true(worst < 5000000);
}

static void test_slow_clients(void **state)
{
        enum { SILENT = 50, SLOW = 5, OVER = HTTP_MAX_CONNECTIONS + 10 };
        int fds[OVER + SLOW];
        unsigned n = 0;
        struct tu_daemon d;
        struct reply r;
        char *port;
        int64_t t;

        tu_daemon_setup(&d, PIPE, 1, "http = { listen = \"127.0.0.1:0\"; };");
        tu_daemon_start(&d);
        port = httpfx_logged_port(&d);

        /* 50 connections that say nothing, 5 that stop in the middle of a request line. */
        for (; n < SILENT; n++)
                assert_true((fds[n] = httpfx_connect_to(port)) >= 0);
        for (; n < SILENT + SLOW; n++) {
                assert_true((fds[n] = httpfx_connect_to(port)) >= 0);
                assert_int_equal(write(fds[n], "GET /metr", 9), 9);
        }
        usleep(200 * 1000);
        status_times(&d, n, "idle HTTP connections");
        t = tu_now_us();
        assert_int_equal(httpfx_request(port, "GET", "/metrics", 5000, &r), 0);
        assert_int_equal(r.status, 200);
        assert_non_null(strstr(r.body, "imgd_jobs{state=\"queued\"}"));
        httpfx_reply_done(&r);
        print_message("GET /metrics beside them: %lld ms\n", (long long)((tu_now_us() - t) / 1000));

        /* More than the limit: the daemon still answers at once, and so does HTTP, the
         * quietest connections being closed to make room. */
        for (; n < OVER + SLOW; n++)
                assert_true((fds[n] = httpfx_connect_to(port)) >= 0);
        status_times(&d, n, "HTTP connections, over the limit");
        t = tu_now_us();
        assert_int_equal(httpfx_request(port, "GET", "/metrics", 5000, &r), 0);
        assert_int_equal(r.status, 200);
        httpfx_reply_done(&r);
        print_message("GET /metrics over the limit: answered after %lld ms\n",
                      (long long)((tu_now_us() - t) / 1000));
        assert_true(tu_now_us() - t < 3000000);
        /* The first one, quiet longest, was closed, well before its timeout. */
        {
                struct pollfd p = { .fd = fds[0], .events = POLLIN };
                char c;

                assert_int_equal(poll(&p, 1, 1000), 1);
                assert_true(read(fds[0], &c, 1) <= 0);
        }
        /* Over and over: every new request is served. */
        t = tu_now_us();
        for (int i = 0; i < 20; i++) {
                int extra = httpfx_connect_to(port);

                assert_true(extra >= 0);
                assert_int_equal(httpfx_request(port, "GET", "/health", 5000, &r), 0);
                assert_int_equal(r.status, 200);
                httpfx_reply_done(&r);
                close(extra);
        }
        print_message("20 more connections and requests over the limit: %lld ms\n",
                      (long long)((tu_now_us() - t) / 1000));

        /* Each silent connection is closed by the server within the timeout (and a bit). */
        t = tu_now_us();
        for (unsigned i = 0; i < n; i++) {
                struct pollfd p = { .fd = fds[i], .events = POLLIN };
                int64_t left = (HTTP_CONNECTION_TIMEOUT_S + 10) * 1000000LL - (tu_now_us() - t);
                char c;

                if (left < 0 || poll(&p, 1, (int)(left / 1000)) != 1)
                        fail_msg("HTTP connection %u was not closed by imgd", i);
                while (read(fds[i], &c, 1) > 0)
                        ;
                close(fds[i]);
        }
        assert_true(status_time_us(&d) < 1000000);
        free(port);
        assert_true(WIFEXITED(tu_daemon_stop(&d, SIGTERM)));
        tu_daemon_cleanup(&d);
}

/* A listening TCP socket on 127.0.0.1, any free port; its port in *ret_port. */
static int listen_any(unsigned *ret_port)
{
        struct sockaddr_in in = { .sin_family = AF_INET,
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof in;
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

        assert_true(fd >= 0);
        assert_int_equal(bind(fd, (struct sockaddr *)&in, sizeof in), 0);
        assert_int_equal(listen(fd, 16), 0);
        assert_int_equal(getsockname(fd, (struct sockaddr *)&in, &len), 0);
        *ret_port = ntohs(in.sin_port);
        return fd;
}

static pid_t read_pid(const char *lock)
{
        char *text = tu_read_file(lock, NULL);
        pid_t pid = text ? (pid_t)atoi(text) : 0;

        free(text);
        return pid;
}

/*
 * imgd gets its listening socket from systemd's protocol and serves on it instead of binding
 * http.listen (here a port the test holds, which imgd could not bind): with
 * systemd-socket-activate when installed (imgd starts at the first connection, as under
 * imgd-http.socket), else with LISTEN_FDS, LISTEN_PID (the child's own) and LISTEN_FDNAMES
 * set by hand in the child. The workers see neither the variables nor the socket.
 */
static void socket_activation(bool by_hand)
{
        struct tu_daemon d;
        struct reply r;
        unsigned busy_port, port;
        int busy = listen_any(&busy_port), lfd = -1;
        char *extra, *lock, *portstr, *log;
        pid_t wrapper, imgd = 0, workers[8];
        unsigned nw;
        int status;

        extra = tu_path("http = { listen = \"127.0.0.1:%u\"; };", busy_port);
        tu_daemon_setup(&d, PIPE, 1, extra);
        free(extra);
        if (by_hand) {
                lfd = listen_any(&port);
        } else {
                /* A free port for systemd-socket-activate to bind. */
                int f = listen_any(&port);
                close(f);
        }
        portstr = tu_path("%u", port);

        wrapper = fork();
        assert_true(wrapper >= 0);
        if (wrapper == 0) {
                int fd = open(d.log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
                char *pid;

                if (fd >= 0) {
                        dup2(fd, STDERR_FILENO);
                        dup2(fd, STDOUT_FILENO);
                }
                if (!by_hand) {
                        char *listen = tu_path("127.0.0.1:%u", port);

                        execlp("systemd-socket-activate", "systemd-socket-activate", "-l", listen,
                               "--fdname=http", IMGD_BUILD_DIR "/imgd", "-v", "-c", d.config,
                               (char *)NULL);
                        _exit(127);
                }
                /* LISTEN_PID is this process's: set here, after the fork. */
                if (dup2(lfd, 3) != 3)
                        _exit(126);
                pid = tu_path("%d", (int)getpid());
                setenv("LISTEN_FDS", "1", 1);
                setenv("LISTEN_PID", pid, 1);
                setenv("LISTEN_FDNAMES", "http", 1);
                execl(IMGD_BUILD_DIR "/imgd", "imgd", "-v", "-c", d.config, (char *)NULL);
                _exit(127);
        }
        if (lfd >= 0)
                close(lfd);
        lock = tu_path("%s/imgd.lock", d.state);

        /* The first request starts imgd (systemd-socket-activate) and is answered by it. */
        for (int i = 0; i < 100; i++) {
                if (httpfx_request(portstr, "GET", "/metrics", 20000, &r) == 0)
                        break;
                usleep(50 * 1000); /* systemd-socket-activate not listening yet */
        }
        if (r.status != 200) {
                log = tu_read_file(d.log, NULL);
                fail_msg("GET /metrics through the passed socket: %d\n%s", r.status, log);
        }
        assert_non_null(strstr(r.body, "# TYPE imgd_jobs gauge"));
        httpfx_reply_done(&r);
        for (int i = 0; i < 500 && tu_imgctl(&d, NULL, "status", NULL) != 0; i++)
                usleep(20 * 1000);
        httpfx_must_request(portstr, "GET", "/health", &r);
        assert_int_equal(r.status, 200);
        httpfx_reply_done(&r);
        assert_true(tu_log_contains(&d, "serving on the socket systemd passed"));

        imgd = read_pid(lock);
        assert_true(imgd > 0);
        if (by_hand)
                assert_int_equal(imgd, wrapper);
        /* The workers inherit neither the variables nor the socket. */
        d.pid = imgd;
        nw = tu_daemon_children(&d, workers, ELEMENTSOF(workers));
        d.pid = 0;
        assert_true(nw >= 1);
        for (unsigned i = 0; i < nw; i++) {
                char *path = tu_path("/proc/%d/environ", (int)workers[i]);
                size_t len = 0;
                char *env = tu_read_file(path, &len);

                assert_non_null(env);
                for (size_t k = 0; k < len; k += strlen(env + k) + 1)
                        if (strncmp(env + k, "LISTEN_", 7) == 0)
                                fail_msg("worker %d has %s", (int)workers[i], env + k);
                free(env);
                free(path);
        }

        kill(imgd, SIGTERM);
        for (int i = 0; i < 3000 && waitpid(wrapper, &status, WNOHANG) == 0; i++)
                usleep(10 * 1000);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
        close(busy);
        free(portstr);
        free(lock);
        tu_daemon_cleanup(&d);
}

static void test_socket_activation(void **state)
{
        if (access("/usr/bin/systemd-socket-activate", X_OK) == 0 ||
            access("/bin/systemd-socket-activate", X_OK) == 0)
                socket_activation(false);
        else
                print_message("systemd-socket-activate is not installed (Debian: systemd); "
                              "passing the socket by hand only\n");
        socket_activation(true);
}

static void expect_config_error(const char *text, const char *message, int line)
{
        struct tu_daemon d;
        char *out = NULL, *where;
        int status;

        tu_daemon_setup(&d, PIPE, 1, text);
        status = tu_run(&out, IMGD_BUILD_DIR "/imgd", "--check-config", "-c", d.config, NULL);
        if (status != 1 || !strstr(out, message))
                fail_msg("%s: exit %d, expected 1 and \"%s\":\n%s", text, status, message, out);
        /* The line of the setting: the configuration's 6th line is where `extra` starts. */
        where = tu_path("%s:%d: ", d.config, line);
        if (!strstr(out, where))
                fail_msg("%s: expected the message at %s:\n%s", text, where, out);
        free(where);
        free(out);
        tu_daemon_cleanup(&d);
}

static void test_bad_config(void **state)
{
        struct tu_daemon d;
        char *out = NULL;
        int status;
        unsigned port;
        int busy;

        expect_config_error("http = {\n listen = \"localhost:9118\"; };", "not a numeric IPv4", 7);
        expect_config_error("http = { listen = \"127.0.0.1:65536\"; };", "the port must be", 6);
        expect_config_error("http = { listen = \"127.0.0.1:\"; };", "the port must be", 6);
        expect_config_error("http = { listen = \"127.0.0.1:-1\"; };", "the port must be", 6);
        expect_config_error("http = { listen = \"127.0.0.1\"; };", "expected IPV4:PORT", 6);
        expect_config_error("http = { listen = \"::1:9118\"; };", "not a numeric IPv4", 6);
        expect_config_error("http = { listen = \"[::1:9118\"; };", "in brackets", 6);
        expect_config_error("http = { listen = \"[127.0.0.1]:9118\"; };", "IPv6", 6);
        expect_config_error("http = { listen = \"run/imgd.http\"; };", "expected IPV4:PORT", 6);
        expect_config_error("http = { listen = 9118; };", "'listen' must be a string", 6);
        expect_config_error("http = {\n\n health_alerts = [ \"breaker\", \"nope\" ]; };",
                            "unknown name \"nope\"", 8);
        expect_config_error("http = { port = 9118; };", "unknown setting 'port' in http", 6);
        expect_config_error("http = \"127.0.0.1:9118\";", "'http' must be a group", 6);

        /* Accepted. */
        static const char *const good[] = {
                "http = { listen = \"[::1]:9118\"; };",
                "http = { listen = \"0.0.0.0:9118\"; health_alerts = [ ]; };",
                "http = { listen = \"/run/imgd/http.sock\"; health_alerts = [ \"error_rate\", "
                "\"queue_depth\", \"queue_age\", \"drain_time\", \"breaker\", \"degraded\", "
                "\"paused\" ]; };",
                "http = { health_alerts = [ \"breaker\" ]; };",
        };
        for (size_t i = 0; i < ELEMENTSOF(good); i++) {
                tu_daemon_setup(&d, PIPE, 1, good[i]);
                status = tu_run(&out, IMGD_BUILD_DIR "/imgd", "--check-config", "-c", d.config,
                                NULL);
                if (status != 0)
                        fail_msg("%s: exit %d:\n%s", good[i], status, out);
                free(out);
                tu_daemon_cleanup(&d);
        }

        /* An address in use stops the start, naming it (exit 1: not the file's fault). */
        busy = listen_any(&port);
        {
                char *extra = tu_path("http = { listen = \"127.0.0.1:%u\"; };", port);
                char *want = tu_path("listen = \"127.0.0.1:%u\" (line 6): bind: Address already "
                                     "in use",
                                     port);

                tu_daemon_setup(&d, PIPE, 1, extra);
                status = tu_run(&out, IMGD_BUILD_DIR "/imgd", "-c", d.config, NULL);
                if (status != 1 || !strstr(out, want))
                        fail_msg("imgd on a port in use: exit %d, expected 1 and \"%s\":\n%s",
                                 status, want, out);
                free(out);
                free(want);
                free(extra);
                tu_daemon_cleanup(&d);
        }
        close(busy);
}

/* `promtool check metrics` on the real body of GET /metrics, with jobs done, dead and
 * retried, so that every labelled family has samples: any lint problem fails. */
static void test_promtool(void **state)
{
        static const char *const dirs[] = { "/usr/bin", "/usr/local/bin", "/bin" };
        char *promtool = NULL, *port, *body, *out = NULL, *garbage, *cmd;
        struct tu_daemon d;
        struct reply r;
        int status;

        for (size_t i = 0; i < ELEMENTSOF(dirs) && !promtool; i++) {
                promtool = tu_path("%s/promtool", dirs[i]);
                if (access(promtool, X_OK) != 0) {
                        free(promtool);
                        promtool = NULL;
                }
        }
        if (!promtool)
                fail_msg("promtool is not installed; it comes with the Debian package "
                         "prometheus (scripts/deps.sh --tests installs it)");

        tu_daemon_setup(&d, PIPE, 1, "http = { listen = \"127.0.0.1:0\"; };");
        tu_daemon_start(&d);
        port = httpfx_logged_port(&d);
        httpfx_drop_image(&d, "a.jpg");
        garbage = tu_path("%s/b.jpg", d.uploads);
        tu_write_file(garbage, "not an image", (size_t)-1);
        free(garbage);
        tu_daemon_wait_idle(&d, 60);
        httpfx_must_request(port, "GET", "/metrics", &r);
        assert_int_equal(r.status, 200);
        assert_non_null(strstr(r.body, "imgd_jobs_failed_total{reason="));
        body = tu_path("%s/metrics.txt", d.root);
        tu_write_file(body, r.body, r.body_len);
        httpfx_reply_done(&r);

        cmd = tu_path("'%s' check metrics < '%s' 2>&1", promtool, body);
        status = tu_run(&out, "/bin/sh", "-c", cmd, NULL);
        if (status != 0 || (out && *out))
                fail_msg("promtool check metrics: exit %d:\n%s", status, out ? out : "");
        print_message("promtool check metrics: clean\n");
        free(out);
        free(cmd);
        free(body);
        free(port);
        free(promtool);
        assert_true(WIFEXITED(tu_daemon_stop(&d, SIGTERM)));
        tu_daemon_cleanup(&d);
}

int main(int argc, char **argv)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_metrics_and_routes), cmocka_unit_test(test_unix_socket),
                cmocka_unit_test(test_slow_clients),       cmocka_unit_test(test_socket_activation),
                cmocka_unit_test(test_bad_config),
        };
        const struct CMUnitTest lint[] = {
                cmocka_unit_test(test_promtool),
        };

        if (argc > 1 && strcmp(argv[1], "promtool") == 0)
                return cmocka_run_group_tests(lint, NULL, NULL);
        return cmocka_run_group_tests(tests, NULL, NULL);
}
