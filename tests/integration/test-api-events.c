/* SPDX-License-Identifier: MIT */
/*
 * test-api-events.c - event subscriptions and the socket's peers end to end on the real imgd:
 * events read by a raw socket client and by `imgctl events` (names that are not UTF-8 included), a
 * subscriber that never reads being dropped while imgd keeps answering, and the refusal of a peer
 * that is not root, imgd's user or in its group.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#include "shared/hash.h"
#include "shared/proto.h"
#include "testutil.h"
#include "api-fixture.h"

/* The daemon delivers events only once main.c wires them (api.control set, api_on_event
 * registered with the scheduler); say so rather than time out. */
static void assert_events_wired(struct tu_daemon *d)
{
        if (apifx_status_int(d, NULL, "subscribers") == 0)
                fail_msg("imgd counts no subscriber: is main.c wiring events (d->api.control = "
                         "d->control; scheduler_set_event_handler(d->scheduler, api_on_event, "
                         "&d->api))?");
}

/* Subscribes c to events and checks the answer. */
static void raw_subscribe(struct raw *c, const char *path)
{
        char *line;

        apifx_raw_connect(c, path);
        apifx_raw_send(c, "{\"v\":1,\"cmd\":\"events\"}\n");
        line = apifx_raw_read_line(c, 5000, NULL);
        assert_non_null(line);
        assert_string_equal(line, "{\"v\":1,\"ok\":true,\"result\":{\"subscribed\":true}}");
        free(line);
}

/* A subscriber receives "queued", then "done" with the outputs, for a dropped file; status
 * counts it. */
static void test_events_raw(void **state)
{
        struct tu_daemon d;
        struct raw c;
        bool queued = false, done = false;
        json_int_t id = 0;

        (void)state;
        tu_daemon_setup(&d, TWO_VARIANTS, 1, NULL);
        tu_daemon_start(&d);
        raw_subscribe(&c, d.socket);
        assert_events_wired(&d);
        assert_int_equal(apifx_status_int(&d, NULL, "subscribers"), 1);
        apifx_drop_image(&d, "a.jpg", 640, 480);

        while (!done) {
                char *line = apifx_raw_read_line(&c, 30000, NULL);
                json_t *ev, *job;
                const char *name;

                if (!line)
                        fail_msg("no event within 30 s:\n%s", (char *)tu_read_file(d.log, NULL));
                assert_int_equal(proto_parse_event(line, strlen(line), &ev, NULL), 0);
                assert_true(json_is_integer(json_object_get(ev, "at_us")));
                name = json_string_value(json_object_get(ev, "event"));
                job = json_object_get(ev, "job");
                assert_non_null(
                        strstr(json_string_value(json_object_get(job, "source")), "/a.jpg"));
                if (strcmp(name, "queued") == 0) {
                        assert_false(queued);
                        queued = true;
                        id = json_integer_value(json_object_get(job, "id"));
                } else if (strcmp(name, "done") == 0) {
                        json_t *outs = json_object_get(job, "outputs"), *o;
                        size_t i;

                        assert_true(queued); /* queued came first */
                        assert_int_equal(json_integer_value(json_object_get(job, "id")), id);
                        assert_int_equal(json_array_size(outs), 2);
                        json_array_foreach(outs, i, o)
                        {
                                struct stat st;
                                const char *p = json_string_value(json_object_get(o, "path"));

                                assert_int_equal(stat(p, &st), 0);
                                assert_int_equal(st.st_size,
                                                 json_integer_value(json_object_get(o, "bytes")));
                        }
                        done = true;
                }
                json_decref(ev);
                free(line);
        }
        close(c.fd);
        for (int i = 0; i < 100 && apifx_status_int(&d, NULL, "subscribers") != 0; i++)
                usleep(20 * 1000);
        assert_int_equal(apifx_status_int(&d, NULL, "subscribers"), 0);
        tu_daemon_cleanup(&d);
}

/* A file name that is not UTF-8 still gets its events (and its hook-visible fields), with
 * the bytes that are not UTF-8 replaced by U+FFFD; its outputs are published under the raw
 * name. */
static void test_events_non_utf8(void **state)
{
        struct tu_daemon d;
        struct raw c;
        bool queued = false, done = false;
        char *p, *out;

        (void)state;
        tu_daemon_setup(&d, TWO_VARIANTS, 1, NULL);
        tu_daemon_start(&d);
        raw_subscribe(&c, d.socket);
        assert_events_wired(&d);
        apifx_drop_image(&d, "caf\xe9.jpg", 320, 240); /* Latin-1 e-acute */

        while (!done) {
                char *line = apifx_raw_read_line(&c, 30000, NULL);
                json_t *ev, *job;
                const char *name, *source;

                if (!line)
                        fail_msg("no event within 30 s:\n%s", (char *)tu_read_file(d.log, NULL));
                assert_int_equal(proto_parse_event(line, strlen(line), &ev, NULL), 0);
                name = json_string_value(json_object_get(ev, "event"));
                job = json_object_get(ev, "job");
                source = json_string_value(json_object_get(job, "source"));
                assert_non_null(source);
                assert_non_null(strstr(source, "/caf\xef\xbf\xbd.jpg"));
                if (strcmp(name, "queued") == 0)
                        queued = true;
                else if (strcmp(name, "done") == 0) {
                        const json_t *outs = json_object_get(job, "outputs");

                        assert_true(queued);
                        assert_int_equal(json_array_size(outs), 2);
                        assert_non_null(strstr(
                                json_string_value(json_object_get(json_array_get(outs, 0), "path")),
                                "caf\xef\xbf\xbd_"));
                        done = true;
                }
                json_decref(ev);
                free(line);
        }
        close(c.fd);
        out = tu_path("%s/caf\xe9_s.webp", d.media);
        p = tu_path("%s/caf\xe9_m.jpg", d.media);
        if (access(out, F_OK) != 0 || access(p, F_OK) != 0) {
                char *ls = NULL;

                tu_run(&ls, "/bin/ls", "-b", d.media, NULL);
                fail_msg("no output under the raw name in %s:\n%s", d.media, ls ? ls : "");
        }
        free(out);
        free(p);

        /* The manifest names the files lossily for people and by their bytes for programs:
         * imgctl verify finds both outputs intact. */
        {
                char *mpath = tu_path("%s/caf\xe9.manifest.json", d.media), *text;
                json_t *m, *o;

                text = tu_read_file(mpath, NULL);
                m = json_loads(text, 0, NULL);
                assert_non_null(m);
                assert_non_null(strstr(json_string_value(json_object_get(m, "source")),
                                       "/caf\xef\xbf\xbd.jpg"));
                assert_non_null(strstr(json_string_value(json_object_get(m, "source_hex")),
                                       "636166e92e6a7067")); /* "caf\xe9.jpg" */
                o = json_array_get(json_object_get(m, "outputs"), 0);
                assert_non_null(
                        strstr(json_string_value(json_object_get(o, "file")), "caf\xef\xbf\xbd_"));
                assert_non_null(strstr(json_string_value(json_object_get(o, "file_hex")),
                                       "636166e95f")); /* "caf\xe9_" */
                json_decref(m);
                free(text);
                free(mpath);
                assert_int_equal(tu_imgctl(&d, &out, "verify", NULL), 0);
                apifx_assert_contains(out, "ok: 1 manifest(s), 2 file(s) checked");
                free(out);
        }
        tu_daemon_cleanup(&d);
}

/* Starts imgctl -s SOCKET args... with stdout into out_path; returns its pid. */
static pid_t spawn_imgctl(struct tu_daemon *d, const char *out_path, const char *a1, const char *a2)
{
        pid_t pid = fork();

        assert_true(pid >= 0);
        if (pid == 0) {
                int fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

                if (fd < 0 || dup2(fd, STDOUT_FILENO) < 0)
                        _exit(126);
                execl(IMGD_BUILD_DIR "/imgctl", "imgctl", "-s", d->socket, a1, a2, (char *)NULL);
                _exit(127);
        }
        return pid;
}

static int wait_child(pid_t pid, int timeout_ms)
{
        int status = 0;

        for (int waited = 0; waited <= timeout_ms; waited += 20) {
                if (waitpid(pid, &status, WNOHANG) == pid)
                        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
                usleep(20 * 1000);
        }
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        fail_msg("child %d did not exit within %d ms", (int)pid, timeout_ms);
        return -1;
}

/* `imgctl events` prints the events and, without --follow, exits once nothing is left. */
static void test_events_imgctl(void **state)
{
        struct tu_daemon d;
        char *human = NULL, *json = NULL, *hpath, *jpath;
        pid_t ph, pj;

        (void)state;
        tu_daemon_setup(&d, ONE_VARIANT, 1, NULL);
        tu_daemon_start(&d);
        {
                struct raw probe;

                raw_subscribe(&probe, d.socket);
                assert_events_wired(&d);
                close(probe.fd);
        }
        /* Nothing to wait for: returns at once. */
        assert_int_equal(tu_imgctl(&d, NULL, "events", NULL), 0);

        assert_int_equal(tu_imgctl(&d, NULL, "pause", NULL), 0);
        apifx_drop_image(&d, "a.jpg", 300, 200);
        apifx_drop_text(&d, "b.jpg");
        apifx_wait_count(&d, "queued", 2, 10000);
        hpath = tu_path("%s/events.txt", d.root);
        jpath = tu_path("%s/events.json", d.root);
        ph = spawn_imgctl(&d, hpath, "events", NULL);
        pj = spawn_imgctl(&d, jpath, "events", "--json");
        usleep(300 * 1000); /* subscribed */
        assert_int_equal(tu_imgctl(&d, NULL, "resume", NULL), 0);
        assert_int_equal(wait_child(ph, 30000), 0);
        assert_int_equal(wait_child(pj, 30000), 0);

        human = tu_read_file(hpath, NULL);
        apifx_assert_contains(human, "done      #");
        apifx_assert_contains(human, "/a.jpg  1 output\n");
        apifx_assert_contains(human, "dead      #");
        apifx_assert_contains(human, "not a supported image");
        json = tu_read_file(jpath, NULL);
        assert_int_equal(apifx_count_lines(json), 2);
        for (char *l = json, *nl; (nl = strchr(l, '\n')); l = nl + 1) {
                json_t *ev = NULL;

                assert_int_equal(proto_parse_event(l, (size_t)(nl - l), &ev, NULL), 0);
                json_decref(ev);
        }
        apifx_assert_contains(json, "\"event\":\"done\"");
        apifx_assert_contains(json, "\"event\":\"dead\"");

        free(human);
        free(json);
        free(hpath);
        free(jpath);
        tu_daemon_cleanup(&d);
}

/* A subscriber that never reads is dropped once its unread events pass the bound; imgd
 * answers status all along. Events are made large with long paths (a deep tree of long
 * folder names, made before the start so the watches are set), and small in number: files
 * dropped while paused are only queued. */
static void test_slow_subscriber_dropped(void **state)
{
        struct tu_daemon d;
        char component[201], *deep, *p;
        struct raw c;
        bool dropped = false, eof = false;
        unsigned files = 0;

        (void)state;
        memset(component, 'd', sizeof component - 1);
        component[sizeof component - 1] = '\0';
        tu_daemon_setup(&d, ONE_VARIANT, 1, NULL);
        deep = strdup(d.uploads);
        assert_non_null(deep);
        for (int i = 0; i < 15; i++) {
                p = tu_path("%s/%s", deep, component);
                free(deep);
                deep = p;
                assert_int_equal(mkdir(deep, 0755), 0);
        }
        tu_daemon_start(&d);
        assert_int_equal(tu_imgctl(&d, NULL, "pause", NULL), 0);
        raw_subscribe(&c, d.socket);
        assert_events_wired(&d);

        while (!dropped) {
                for (int i = 0; i < 50; i++, files++) {
                        p = tu_path("%s/%s-%u.jpg", deep, component, files);
                        tu_write_file(p, "x", 1);
                        free(p);
                }
                /* Answered within imgctl's 10 s: the stalled subscriber holds nothing up. */
                assert_int_equal(tu_imgctl(&d, NULL, "status", NULL), 0);
                for (int i = 0; i < 20 && !dropped; i++) {
                        dropped = tu_log_contains(&d, "events subscriber dropped");
                        usleep(25 * 1000);
                }
                if (files >= 3000)
                        fail_msg("subscriber not dropped after %u events", files);
        }
        assert_int_equal(apifx_status_int(&d, NULL, "subscribers"), 0);
        assert_int_equal(tu_imgctl(&d, NULL, "status", NULL), 0);

        /* What the kernel buffered is still there, then the end. */
        for (int i = 0; i < 100000 && !eof; i++) {
                char *line = apifx_raw_read_line(&c, 5000, &eof);

                if (!line && !eof)
                        fail_msg("the dropped subscriber's connection is still open");
                free(line);
        }
        assert_true(eof);
        close(c.fd);
        free(deep);
        tu_daemon_cleanup(&d);
}

/* A peer that is not root, imgd's user or in its group is refused with one line and
 * closed (imgctl: exit 3); imgd goes on serving others. The socket's mode would stop such a
 * peer first, so the test opens it up to show imgd's own check. */
static void test_authorization(void **state)
{
        struct tu_daemon d;
        char buf[512] = "";
        int pipefd[2], status;
        ssize_t n;
        pid_t pid;

        (void)state;
        if (geteuid() != 0)
                skip();
        tu_daemon_setup(&d, ONE_VARIANT, 1, NULL);
        tu_daemon_start(&d);
        assert_int_equal(chmod(d.root, 0711), 0);
        assert_int_equal(chmod(d.socket, 0666), 0);

        assert_int_equal(pipe2(pipefd, O_CLOEXEC), 0);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                struct raw c;
                char *line;

                if (setgroups(0, NULL) < 0 || setgid(65534) < 0 || setuid(65534) < 0)
                        _exit(10);
                apifx_raw_connect(&c, d.socket);
                line = apifx_raw_read_line(&c, 5000, NULL);
                if (line && write(pipefd[1], line, strlen(line)) < 0)
                        _exit(11);
                _exit(line ? 0 : 12);
        }
        close(pipefd[1]);
        n = read(pipefd[0], buf, sizeof buf - 1);
        close(pipefd[0]);
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
        assert_true(n > 0);
        buf[n] = '\0';
        /* control_group defaults to "imgd" where that group exists (an installed imgd). */
        if (getgrnam("imgd"))
                assert_string_equal(buf, "{\"v\":1,\"ok\":false,\"error\":\"permission denied: "
                                         "uid 65534 is not root, imgd's user or in group imgd\"}");
        else
                assert_string_equal(buf, "{\"v\":1,\"ok\":false,\"error\":\"permission denied: "
                                         "uid 65534 is not root or imgd's user\"}");

        /* imgctl as that user: the message, exit status 3. */
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                int null = open("/dev/null", O_WRONLY | O_CLOEXEC);

                if (null < 0 || dup2(null, STDOUT_FILENO) < 0 || dup2(null, STDERR_FILENO) < 0 ||
                    setgroups(0, NULL) < 0 || setgid(65534) < 0 || setuid(65534) < 0)
                        _exit(10);
                execl(IMGD_BUILD_DIR "/imgctl", "imgctl", "-s", d.socket, "status", (char *)NULL);
                _exit(127);
        }
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        if (WEXITSTATUS(status) != 127) /* the build tree may not be reachable for nobody */
                assert_int_equal(WEXITSTATUS(status), 3);

        assert_true(tu_log_contains(&d, "refused pid"));
        assert_int_equal(tu_imgctl(&d, NULL, "status", NULL), 0);
        tu_daemon_cleanup(&d);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_events_raw),
                cmocka_unit_test(test_events_non_utf8),
                cmocka_unit_test(test_events_imgctl),
                cmocka_unit_test(test_slow_subscriber_dropped),
                cmocka_unit_test(test_authorization),
        };

        signal(SIGPIPE, SIG_IGN);
        return cmocka_run_group_tests(tests, NULL, NULL);
}
