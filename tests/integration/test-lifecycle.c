/* SPDX-License-Identifier: MIT */
/*
 * test-lifecycle.c - imgd as a service: the real daemon with a real NOTIFY_SOCKET (a
 * datagram socket this test listens on), checking the sd_notify messages and their order;
 * SIGHUP with a good and with a bad configuration, and with one whose output is inside the
 * watched tree through a symbolic link; SIGTERM while busy; a second imgd on the same state
 * directory or socket refused before it touches anything (issue 20).
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#include "shared/log.h"
#include "testutil.h"

#define PIPE_1 "( { name = \"s\"; width = 64; height = 64; fit = \"cover\"; format = \"webp\"; } )"

struct notify_listener {
        int fd;
        char *path;
        char log[16384]; /* every message received, "|"-separated */
};

static void listener_open(struct notify_listener *n, const char *dir)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };

        n->path = tu_path("%s/notify.sock", dir);
        n->log[0] = '\0';
        n->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        assert_true(n->fd >= 0);
        snprintf(sa.sun_path, sizeof sa.sun_path, "%s", n->path);
        assert_int_equal(bind(n->fd, (struct sockaddr *)&sa, sizeof sa), 0);
        setenv("NOTIFY_SOCKET", n->path, 1);
}

/* Reads every waiting message into the log. */
static void listener_drain(struct notify_listener *n)
{
        char buf[4096];
        ssize_t k;

        while ((k = recv(n->fd, buf, sizeof buf - 1, 0)) > 0) {
                buf[k] = '\0';
                strncat(n->log, buf, sizeof n->log - strlen(n->log) - 2);
                strncat(n->log, "|", sizeof n->log - strlen(n->log) - 1);
        }
}

/* Waits up to timeout_ms for a message containing `text` after position *pos; returns the
 * position just after it. Fails the test when it does not come. */
static size_t listener_expect(struct notify_listener *n, size_t pos, const char *text,
                              int timeout_ms)
{
        for (int waited = 0; waited <= timeout_ms; waited += 20) {
                listener_drain(n);
                const char *hit = strstr(n->log + pos, text);
                if (hit)
                        return (size_t)(hit - n->log) + strlen(text);
                usleep(20 * 1000);
        }
        fail_msg("no \"%s\" from imgd within %d ms; got: %s", text, timeout_ms, n->log + pos);
        return 0;
}

static void listener_close(struct notify_listener *n)
{
        unsetenv("NOTIFY_SOCKET");
        close(n->fd);
        free(n->path);
}

/* READY=1 once the ledger, the watches and the workers are up; STATUS= follows the work;
 * RELOADING=1 with MONOTONIC_USEC= then READY=1 on SIGHUP; STOPPING=1 on SIGTERM. */
static void test_notify_sequence(void **state)
{
        struct tu_daemon d;
        struct notify_listener n;
        size_t pos;
        char *p;

        tu_daemon_setup(&d, PIPE_1, 1, NULL);
        listener_open(&n, d.root);
        tu_daemon_start(&d);
        pos = listener_expect(&n, 0, "READY=1", 5000);
        /* READY came after the socket answered, so the workers and watches were up. */
        pos = listener_expect(&n, pos, "STATUS=0 queued", 5000);

        p = tu_path("%s/a.jpg", d.uploads);
        tu_make_image(p, 300, 200, "jpeg", false);
        free(p);
        tu_daemon_wait_idle(&d, 30);

        kill(d.pid, SIGHUP);
        pos = listener_expect(&n, pos, "RELOADING=1", 5000);
        assert_non_null(strstr(n.log, "MONOTONIC_USEC="));
        pos = listener_expect(&n, pos, "READY=1", 5000);

        kill(d.pid, SIGTERM);
        pos = listener_expect(&n, pos, "STOPPING=1", 5000);
        int status = tu_daemon_wait_exit(&d, 10000);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
        listener_close(&n);
        tu_daemon_cleanup(&d);
}

/* SIGHUP with a valid new configuration: a new watch takes effect. With a broken one: the
 * reload is rejected with the file, line and problem logged, and the old watches go on. */
static void test_reload(void **state)
{
        struct tu_daemon d;
        char *conf, *second, *second_out, *p, *log, *out = NULL;

        tu_daemon_setup(&d, PIPE_1, 1, NULL);
        tu_daemon_start(&d);
        second = tu_path("%s/uploads2", d.root);
        second_out = tu_path("%s/media2", d.root);
        assert_int_equal(mkdir(second, 0755), 0);

        /* Broken: a variant with an unknown fit. */
        conf = tu_read_file(d.config, NULL);
        char *broken = tu_path("%s\nwatch2_typo = 1;\n", conf);
        tu_write_file(d.config, broken, (size_t)-1);
        kill(d.pid, SIGHUP);
        usleep(500 * 1000);
        log = tu_read_file(d.log, NULL);
        if (!strstr(log, "reload rejected") || !strstr(log, "watch2_typo"))
                fail_msg("a bad reload was not rejected with its reason:\n%s", log);
        free(log);
        p = tu_path("%s/still.jpg", d.uploads);
        tu_make_image(p, 200, 200, "jpeg", false);
        free(p);
        tu_daemon_wait_idle(&d, 30);
        p = tu_path("%s/still_s.webp", d.media);
        assert_true(tu_image_props(p, NULL, NULL, NULL, 0, NULL, NULL));
        free(p);

        /* Good: a second watch into its own output tree. */
        char *good = tu_path("state_dir = \"%s\";\nsocket = \"%s\";\nworkers = 1;\n"
                             "watch = ( { path = \"%s\"; output = \"%s\"; pipeline = \"p\"; },\n"
                             "          { path = \"%s\"; output = \"%s\"; pipeline = \"p\"; } );\n"
                             "pipelines = { p = %s; };\n",
                             d.state, d.socket, d.uploads, d.media, second, second_out, PIPE_1);
        tu_write_file(d.config, good, (size_t)-1);
        kill(d.pid, SIGHUP);
        usleep(500 * 1000);
        assert_int_equal(tu_imgctl(&d, &out, "status", "--json", NULL), 0);
        assert_non_null(strstr(out, second));
        free(out);
        p = tu_path("%s/new.png", second);
        tu_make_image(p, 200, 100, "png", false);
        free(p);
        tu_daemon_wait_idle(&d, 30);
        p = tu_path("%s/new_s.webp", second_out);
        assert_true(tu_image_props(p, NULL, NULL, NULL, 0, NULL, NULL));
        free(p);

        free(conf);
        free(broken);
        free(good);
        free(second);
        free(second_out);
        tu_daemon_cleanup(&d);
}

/*
 * An output reached through a symbolic link into the watched tree: --check-config refuses
 * it, and so does a SIGHUP, naming the resolved path, with the running configuration kept:
 * a new upload is published to the old output and nothing is written inside the watched
 * tree (where outputs would come back as uploads, over and over).
 */
static void test_reload_overlap(void **state)
{
        struct tu_daemon d;
        char *link, *conf, *p, *inside, *out = NULL;
        bool rejected = false;
        int r;

        tu_daemon_setup(&d, PIPE_1, 1, NULL);
        tu_daemon_start(&d);
        link = tu_path("%s/link-up", d.root);
        assert_int_equal(symlink(d.uploads, link), 0);
        conf = tu_path("state_dir = \"%s\";\nsocket = \"%s\";\nworkers = 1;\n"
                       "watch = ( { path = \"%s\"; output = \"%s/out\"; pipeline = \"p\";\n"
                       "            recursive = true; } );\n"
                       "pipelines = { p = %s; };\n",
                       d.state, d.socket, d.uploads, link, PIPE_1);
        tu_write_file(d.config, conf, (size_t)-1);

        r = tu_run(&out, IMGD_BUILD_DIR "/imgd", "--check-config", "-c", d.config, NULL);
        if (r == 0 || !strstr(out, "inside watched path") || !strstr(out, "resolved:"))
                fail_msg("--check-config accepted an output inside the watch (%d): %s", r, out);
        free(out);

        kill(d.pid, SIGHUP);
        for (int waited = 0; waited < 20000 && !rejected; waited += 50) {
                rejected = tu_log_contains(&d, "reload rejected");
                if (!rejected)
                        usleep(50 * 1000);
        }
        if (!rejected || !tu_log_contains(&d, "inside watched path"))
                fail_msg("the reload was not rejected:\n%s", (char *)tu_read_file(d.log, NULL));

        p = tu_path("%s/after.jpg", d.uploads);
        tu_make_image(p, 200, 200, "jpeg", false);
        free(p);
        tu_daemon_wait_idle(&d, 30);
        p = tu_path("%s/after_s.webp", d.media);
        assert_true(tu_image_props(p, NULL, NULL, NULL, 0, NULL, NULL));
        free(p);
        inside = tu_path("%s/out", d.uploads);
        assert_int_equal(access(inside, F_OK), -1);
        assert_int_equal(tu_count_files(d.uploads, "*"), 1);

        free(inside);
        free(conf);
        free(link);
        tu_daemon_cleanup(&d);
}

/* SIGTERM while busy: running jobs finish (or are handed back) and nothing is lost; the
 * next start completes whatever was left. */
static void test_sigterm_while_busy(void **state)
{
        struct tu_daemon d;
        char *out = NULL;
        json_t *st;

        tu_daemon_setup(&d, PIPE_1, 2, NULL);
        tu_daemon_start(&d);
        for (unsigned i = 0; i < 8; i++) {
                char *p = tu_path("%s/busy%u.jpg", d.uploads, i);
                tu_make_image(p, 2400, 1600, "jpeg", false);
                free(p);
        }
        usleep(200 * 1000);
        kill(d.pid, SIGTERM);
        int status = tu_daemon_wait_exit(&d, 30000);
        assert_true(status != -1);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);

        tu_daemon_start(&d);
        tu_daemon_wait_idle(&d, 60);
        assert_int_equal(tu_imgctl(&d, &out, "status", "--json", NULL), 0);
        st = json_loads(out, 0, NULL);
        assert_non_null(st);
        assert_int_equal(json_integer_value(json_object_get(json_object_get(st, "jobs"), "done")),
                         8);
        assert_int_equal(json_integer_value(json_object_get(json_object_get(st, "jobs"), "dead")),
                         0);
        json_decref(st);
        free(out);
        assert_int_equal(tu_count_files(d.media, "*_s.webp"), 8);
        tu_daemon_cleanup(&d);
}

/*
 * Under journald, job lines carry imgd's own fields, IMGD_JOB_ID=, IMGD_SOURCE=,
 * IMGD_PIPELINE= and IMGD_EVENT= (journalctl -u imgd IMGD_JOB_ID=42), a MESSAGE_ID= for each
 * kind of event, and the caller's CODE_FILE=/CODE_LINE=/CODE_FUNC=, not log.c's log_job.
 * The test plays journald: it listens on /run/systemd/journal/socket (only where no real
 * journald owns it) and points JOURNAL_STREAM at the daemon's stderr.
 */
static void test_journal_fields(void **state)
{
        const char *path = "/run/systemd/journal/socket";
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        struct tu_daemon d;
        struct stat st;
        char buf[8192], stream[64], *p, *want, *queued_id, *done_id;
        bool queued = false, done = false;
        int fd;

        snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
        if (stat(path, &st) == 0) {
                /* One nobody listens on was left by an earlier run that failed: remove it. */
                int probe = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

                if (probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof sa) < 0 &&
                    errno == ECONNREFUSED)
                        (void)unlink(path);
                if (probe >= 0)
                        close(probe);
        }
        if (stat(path, &st) == 0 || (mkdir("/run/systemd", 0755) < 0 && errno != EEXIST) ||
            (mkdir("/run/systemd/journal", 0755) < 0 && errno != EEXIST)) {
                /* A real journald is here (or /run is not ours): do not disturb it. */
                skip();
        }
        fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        assert_true(fd >= 0);
        snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
        assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);

        tu_daemon_setup(&d, PIPE_1, 1, NULL);
        tu_write_file(d.log, "", 0);
        assert_int_equal(stat(d.log, &st), 0);
        snprintf(stream, sizeof stream, "%llu:%llu", (unsigned long long)st.st_dev,
                 (unsigned long long)st.st_ino);
        setenv("JOURNAL_STREAM", stream, 1);
        tu_daemon_start(&d);
        unsetenv("JOURNAL_STREAM");
        p = tu_path("%s/j.png", d.uploads);
        tu_make_image(p, 100, 100, "png", false);
        tu_daemon_wait_idle(&d, 30);
        want = tu_path("\nIMGD_SOURCE=%s\n", p);
        queued_id = tu_path("MESSAGE_ID=%s\n", log_job_message_id(LOG_JOB_QUEUED));
        done_id = tu_path("MESSAGE_ID=%s\n", log_job_message_id(LOG_JOB_DONE));
        for (int i = 0; i < 200 && !(queued && done); i++) {
                ssize_t k = recv(fd, buf, sizeof buf - 1, 0);
                bool job1;

                if (k < 0) {
                        usleep(10 * 1000);
                        continue;
                }
                buf[k] = '\0';
                /* journald's own JOB_ID= is not used (it is systemd's job, not imgd's). */
                if (strstr(buf, "\nJOB_ID=") || strncmp(buf, "JOB_ID=", 7) == 0 ||
                    strstr(buf, "CODE_FUNC=log_job"))
                        fail_msg("a job message with journald's names or log.c's site:\n%s", buf);
                job1 = strstr(buf, "\nIMGD_JOB_ID=1\n") && strstr(buf, want) &&
                       strstr(buf, "SYSLOG_IDENTIFIER=imgd") && strstr(buf, "MESSAGE=job 1") &&
                       strstr(buf, "\nIMGD_PIPELINE=p\n");
                if (job1 && strstr(buf, queued_id) && strstr(buf, "\nIMGD_EVENT=queued\n") &&
                    strstr(buf, "\nCODE_FILE=src/daemon/main.c\n") && strstr(buf, "\nCODE_LINE="))
                        queued = true;
                if (job1 && strstr(buf, done_id) && strstr(buf, "\nIMGD_EVENT=done\n") &&
                    strstr(buf, "\nCODE_FILE=src/daemon/scheduler-complete.c\n") &&
                    strstr(buf, "\nCODE_FUNC=") && !strstr(buf, "CODE_FILE=src/shared/log.c"))
                        done = true;
        }
        close(fd);
        unlink(path);
        assert_true(queued);
        assert_true(done);
        free(done_id);
        free(queued_id);
        free(want);
        free(p);
        tu_daemon_cleanup(&d);
}

/* The number of jobs in `state`, from `imgctl status --json` (whatever its exit status). */
static long status_jobs(struct tu_daemon *d, const char *state)
{
        char *out = NULL;
        json_t *j;
        long n;

        (void)tu_imgctl(d, &out, "status", "--json", NULL);
        j = json_loads(out ? out : "", 0, NULL);
        free(out);
        assert_non_null(j);
        n = (long)json_integer_value(json_object_get(json_object_get(j, "jobs"), state));
        json_decref(j);
        return n;
}

static void drop_image(struct tu_daemon *d, const char *name)
{
        char *p = tu_path("%s/%s", d->uploads, name);

        tu_make_image(p, 300, 200, "jpeg", false);
        free(p);
}

static void assert_contains(const char *text, const char *part)
{
        if (!text || !strstr(text, part))
                fail_msg("\"%s\" not found in:\n%s", part, text ? text : "(nothing)");
}

static void assert_lacks(const char *text, const char *part)
{
        if (text && strstr(text, part))
                fail_msg("\"%s\" found in:\n%s", part, text);
}

/*
 * Alerts: with thresholds of 2 waiting jobs, 1 s of age and 1 s of predicted drain time, a
 * paused daemon with 3 jobs waiting makes `imgctl status` (and --json) exit 1 naming each
 * alert, sets the imgd_alert gauges, and names them on the STATUS= line; once resumed and
 * idle, status exits 0 and the alerts are gone everywhere.
 */
static void test_alerts(void **state)
{
        struct tu_daemon d;
        struct notify_listener n;
        char *out = NULL;
        json_t *j;
        size_t pos;

        (void)state;
        tu_daemon_setup(&d, PIPE_1, 1, "alerts = { queued = 2; oldest_s = 1; drain_s = 1; };");
        listener_open(&n, d.root);
        tu_daemon_start(&d);
        pos = listener_expect(&n, 0, "READY=1", 5000);

        assert_int_equal(tu_imgctl(&d, &out, "status", NULL), 0);
        assert_contains(out, "backlog  none");
        assert_lacks(out, "ALERT");
        free(out);
        assert_int_equal(tu_imgctl(&d, &out, "metrics", NULL), 0);
        assert_contains(out, "imgd_alert{alert=\"queue_depth\"} 0\n");
        assert_contains(out, "imgd_drain_seconds 0.000\n");
        free(out);

        /* One job done first, so that jobs are known to finish at some rate. */
        drop_image(&d, "first.jpg");
        tu_daemon_wait_idle(&d, 30);

        assert_int_equal(tu_imgctl(&d, NULL, "pause", NULL), 0);
        drop_image(&d, "a.jpg");
        drop_image(&d, "b.jpg");
        drop_image(&d, "c.jpg");
        for (int waited = 0; status_jobs(&d, "queued") < 3; waited += 50) {
                assert_true(waited < 20000);
                usleep(50 * 1000);
        }
        usleep(1100 * 1000); /* the oldest has waited over 1 s */

        assert_int_equal(tu_imgctl(&d, &out, "status", NULL), 1);
        assert_contains(out, "ALERT    3 jobs waiting (alert at 2)\n");
        assert_contains(out, "ALERT    oldest queued job waiting ");
        assert_contains(out, "ALERT    backlog of 3 jobs drains in about ");
        assert_contains(out, "backlog  3 jobs, drained in about ");
        assert_lacks(out, "circuit breaker");
        free(out);

        assert_int_equal(tu_imgctl(&d, &out, "status", "--json", NULL), 1);
        j = json_loads(out, 0, NULL);
        assert_non_null(j);
        {
                const json_t *alerts = json_object_get(j, "alerts");
                const char *want[] = { "queue_depth", "queue_age", "drain_time" };

                assert_int_equal(json_array_size(alerts), 3);
                for (size_t i = 0; i < 3; i++)
                        assert_string_equal(json_string_value(json_object_get(
                                                    json_array_get(alerts, i), "alert")),
                                            want[i]);
                assert_int_equal(json_integer_value(
                                         json_object_get(json_object_get(j, "health"), "backlog")),
                                 3);
                assert_true(json_real_value(json_object_get(json_object_get(j, "health"),
                                                            "finished_per_s")) > 0);
        }
        json_decref(j);
        free(out);

        assert_int_equal(tu_imgctl(&d, &out, "metrics", NULL), 0);
        assert_contains(out, "imgd_alert{alert=\"queue_depth\"} 1\n");
        assert_contains(out, "imgd_alert{alert=\"queue_age\"} 1\n");
        assert_contains(out, "imgd_alert{alert=\"drain_time\"} 1\n");
        assert_contains(out, "imgd_alert{alert=\"breaker\"} 0\n");
        assert_contains(out, "imgd_alert{alert=\"degraded\"} 0\n");
        free(out);
        pos = listener_expect(&n, pos, "ALERT: queue_depth, queue_age, drain_time, breaker closed",
                              5000);

        assert_int_equal(tu_imgctl(&d, NULL, "resume", NULL), 0);
        tu_daemon_wait_idle(&d, 60);
        assert_int_equal(tu_imgctl(&d, &out, "status", NULL), 0);
        assert_lacks(out, "ALERT");
        free(out);
        /* The next STATUS= line: nothing queued, no alert. */
        pos = listener_expect(&n, pos, "STATUS=0 queued, 0 running, 0 retry, 0 dead, level full",
                              5000);
        {
                const char *end = strchr(n.log + pos, '|');
                char *line = strndup(n.log + pos, end ? (size_t)(end - (n.log + pos)) : 256);

                assert_lacks(line, "ALERT");
                assert_contains(line, "breaker closed");
                free(line);
        }
        listener_close(&n);
        tu_daemon_cleanup(&d);
}

/* ---- one imgd per state directory and per socket (issue 20) ------------------------- */

/* A configuration like d's with `key` (state_dir or socket) set to `value`, written to
 * root/<name>; the caller frees the returned path. */
static char *config_with(struct tu_daemon *d, const char *name, const char *key, const char *value)
{
        char *conf = tu_read_file(d->config, NULL), *path = tu_path("%s/%s", d->root, name);
        char *line, *end, *edited;

        assert_non_null(conf);
        line = strstr(conf, key);
        assert_non_null(line);
        end = strchr(line, '\n');
        assert_non_null(end);
        edited = tu_path("%.*s%s = \"%s\";%s", (int)(line - conf), conf, key, value, end);
        tu_write_file(path, edited, (size_t)-1);
        free(edited);
        free(conf);
        return path;
}

/*
 * Starts a second imgd on `config`, logging to root/<log_name>, and waits up to 10 s for it
 * to exit by itself. Returns its log (caller frees); fails the test if it did not exit, or
 * exited 0. *ret_elapsed_us: how long it ran.
 */
static char *run_second(struct tu_daemon *d, const char *config, const char *log_name,
                        int64_t *ret_elapsed_us)
{
        struct tu_daemon second = { .log = tu_path("%s/%s", d->root, log_name) };
        int64_t t0 = tu_now_us();
        char *log;
        int status;
        pid_t pid = fork();

        assert_true(pid >= 0);
        if (pid == 0) {
                int fd = open(second.log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

                if (fd >= 0) {
                        dup2(fd, STDERR_FILENO);
                        dup2(fd, STDOUT_FILENO);
                }
                execl(IMGD_BUILD_DIR "/imgd", "imgd", "-v", "-c", config, (char *)NULL);
                _exit(127);
        }
        second.pid = pid;
        status = tu_daemon_wait_exit(&second, 10000);
        *ret_elapsed_us = tu_now_us() - t0;
        if (status == -1)
                (void)tu_daemon_stop(&second, SIGKILL);
        log = tu_read_file(second.log, NULL);
        if (status == -1)
                fail_msg("a second imgd on %s kept running:\n%s", config, log ? log : "");
        if (!WIFEXITED(status) || WEXITSTATUS(status) == 0)
                fail_msg("a second imgd on %s exited with status %d:\n%s", config, status,
                         log ? log : "");
        free(second.log);
        return log;
}

/* Every job done at its first attempt, none dead, from `imgctl jobs --json`; returns how
 * many jobs there are. */
static size_t assert_all_done_first_attempt(struct tu_daemon *d)
{
        char *out = NULL;
        json_t *j, *job;
        size_t i, n;

        assert_int_equal(tu_imgctl(d, &out, "jobs", "--json", NULL), 0);
        j = json_loads(out, 0, NULL);
        assert_non_null(j);
        n = json_array_size(json_object_get(j, "jobs"));
        json_array_foreach(json_object_get(j, "jobs"), i, job)
        {
                const char *st = json_string_value(json_object_get(job, "state"));
                json_int_t attempts = json_integer_value(json_object_get(job, "attempts"));

                if (!st || strcmp(st, "done") != 0 || attempts != 1)
                        fail_msg("job %lld is %s after %lld attempt(s):\n%s",
                                 (long long)json_integer_value(json_object_get(job, "id")),
                                 st ? st : "?", (long long)attempts, out);
        }
        json_decref(j);
        free(out);
        return n;
}

/*
 * Issue 20: a second imgd on the same configuration, started while the first is rendering,
 * refuses at once, naming the lock file and the first one's pid, before it recovers, opens
 * or sweeps anything: the first finishes every job at its first attempt. The same with only
 * the state directory shared (another socket), which used to run two daemons on one ledger.
 */
static void test_second_instance_refused(void **state)
{
        struct tu_daemon d;
        char *log, *other_socket, *config2, *lock, *pid;
        int64_t elapsed;

        (void)state;
        tu_daemon_setup(&d, PIPE_1, 2, NULL);
        tu_daemon_start(&d);
        /* Six slow jobs (large PNGs), queued while paused, so that the second imgd comes
         * while two of them are running. */
        assert_int_equal(tu_imgctl(&d, NULL, "pause", NULL), 0);
        for (unsigned i = 0; i < 6; i++) {
                char *p = tu_path("%s/busy%u.png", d.uploads, i);

                tu_make_image(p, 3000, 2000, "png", false);
                free(p);
        }
        for (int waited = 0; status_jobs(&d, "queued") < 6; waited += 20) {
                assert_true(waited < 20000);
                usleep(20 * 1000);
        }
        assert_int_equal(tu_imgctl(&d, NULL, "resume", NULL), 0);
        for (int waited = 0; status_jobs(&d, "running") == 0; waited += 5) {
                assert_true(waited < 20000);
                usleep(5 * 1000);
        }

        lock = tu_path("%s/imgd.lock", d.state);
        pid = tu_path("pid %d", (int)d.pid);
        log = run_second(&d, d.config, "second.log", &elapsed);
        print_message("second imgd on the same configuration refused after %lld ms\n",
                      (long long)(elapsed / 1000));
        assert_true(elapsed < 5 * 1000000);
        assert_contains(log, "refusing to start");
        assert_contains(log, lock);
        assert_contains(log, pid);
        assert_lacks(log, "recovered");
        assert_lacks(log, "ledger");
        free(log);

        other_socket = tu_path("%s/other.sock", d.root);
        config2 = config_with(&d, "other-socket.conf", "socket", other_socket);
        log = run_second(&d, config2, "second-other-socket.log", &elapsed);
        assert_contains(log, "refusing to start");
        assert_contains(log, lock);
        assert_lacks(log, "recovered");
        assert_true(access(other_socket, F_OK) < 0);
        free(log);

        tu_daemon_wait_idle(&d, 120);
        assert_int_equal(assert_all_done_first_attempt(&d), 6);
        assert_int_equal(status_jobs(&d, "dead"), 0);
        assert_int_equal(tu_count_files(d.media, "*_s.webp"), 6);

        free(other_socket);
        free(config2);
        free(lock);
        free(pid);
        tu_daemon_cleanup(&d);
}

/*
 * Issue 20: a second imgd with its own state directory but the first one's socket refuses
 * before it creates its ledger, and leaves the live socket alone: the first still answers.
 */
static void test_second_instance_same_socket_refused(void **state)
{
        struct tu_daemon d;
        char *log, *other_state, *config2, *lock, *db;
        int64_t elapsed;

        (void)state;
        tu_daemon_setup(&d, PIPE_1, 1, NULL);
        tu_daemon_start(&d);

        other_state = tu_path("%s/other-state", d.root);
        config2 = config_with(&d, "other-state.conf", "state_dir", other_state);
        lock = tu_path("%s.lock", d.socket);
        log = run_second(&d, config2, "second-other-state.log", &elapsed);
        print_message("second imgd on the same socket refused after %lld ms\n",
                      (long long)(elapsed / 1000));
        assert_contains(log, "refusing to start");
        assert_contains(log, lock);
        db = tu_path("%s/imgd.db", other_state);
        assert_true(access(db, F_OK) < 0);
        free(log);

        assert_int_equal(tu_imgctl(&d, NULL, "status", NULL), 0);
        drop_image(&d, "after.jpg");
        tu_daemon_wait_idle(&d, 60);
        assert_int_equal(assert_all_done_first_attempt(&d), 1);

        /* Once the first has stopped, the same configurations start (the locks are free). */
        assert_int_equal(tu_daemon_stop(&d, SIGTERM), 0);
        {
                struct tu_daemon again = d;

                again.config = config2;
                again.log = tu_path("%s/again.log", d.root);
                tu_daemon_start(&again);
                assert_int_equal(tu_daemon_stop(&again, SIGTERM), 0);
                free(again.log);
        }
        tu_daemon_start(&d);
        assert_int_equal(tu_imgctl(&d, NULL, "status", NULL), 0);

        free(other_state);
        free(config2);
        free(lock);
        free(db);
        tu_daemon_cleanup(&d);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_notify_sequence),
                cmocka_unit_test(test_reload),
                cmocka_unit_test(test_reload_overlap),
                cmocka_unit_test(test_sigterm_while_busy),
                cmocka_unit_test(test_journal_fields),
                cmocka_unit_test(test_alerts),
                cmocka_unit_test(test_second_instance_refused),
                cmocka_unit_test(test_second_instance_same_socket_refused),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
