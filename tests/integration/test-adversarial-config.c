/* SPDX-License-Identifier: MIT */
/*
 * test-adversarial-config.c - the adversarial battery (issue 13), quick size, against the real
 * daemon: configurations, names and reloads.
 *
 *   (c) an output inside a watch and overlapping watches: the real `imgd --check-config`
 *       refuses each, naming both paths, and imgd does not start on it;
 *   (i) file names that would forge a line of the log (a newline and a fake "imgd: error:"
 *       or journald "<0>" prefix, an escape sequence): each is one line of the log;
 *   (l) a reload that changes the pipeline of 500 queued jobs (they render the new one) or
 *       removes their watch (500 held: no degradation, no alert, shown as held; done, each
 *       at its first attempt, once the watch is back).
 *
 * IMGD_TEST_FILTER=test_reload_* runs only the cases whose names match.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <sched.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shared/hash.h"
#include "testutil.h"
#include "adversarial-fixture.h"

/*
 * Runs `imgd <args...> -c config` (NULL-terminated) with its output in root/<log_name>, and
 * waits up to 10 s for it to exit. Returns its exit status and its output in *ret_out
 * (caller frees); fails the test if it is still running then (it started).
 */
static int run_imgd(struct tu_daemon *d, const char *log_name, char **ret_out, const char *a1,
                    const char *a2, const char *a3)
{
        char *log = tu_path("%s/%s", d->root, log_name);
        int status = 0;
        pid_t pid = fork();

        assert_true(pid >= 0);
        if (pid == 0) {
                int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

                if (fd >= 0) {
                        dup2(fd, STDERR_FILENO);
                        dup2(fd, STDOUT_FILENO);
                }
                execl(IMGD_BUILD_DIR "/imgd", "imgd", a1, a2, a3, (char *)NULL);
                _exit(127);
        }
        for (int waited = 0; waitpid(pid, &status, WNOHANG) != pid; waited += 20) {
                if (waited > 10000) {
                        kill(pid, SIGKILL);
                        waitpid(pid, NULL, 0);
                        *ret_out = tu_read_file(log, NULL);
                        fail_msg("imgd %s %s %s kept running:\n%s", a1, a2, a3 ? a3 : "",
                                 *ret_out ? *ret_out : "");
                }
                usleep(20 * 1000);
        }
        *ret_out = tu_read_file(log, NULL);
        if (!*ret_out)
                *ret_out = strdup("");
        free(log);
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/*
 * (c) Each overlap is refused by the real `imgd --check-config` (exit 1, the message naming
 * the watch at fault and what it overlaps), and imgd does not start on it either; nothing is
 * created inside the watched tree. Outputs inside a watch (directly, the watch itself, through
 * a symbolic link, inside another watch), a watch inside a recursive one, a watch path that is
 * a symbolic link to another, one folder watched twice under two names (a link higher up), a
 * watch inside another's output, the state directory inside a watch.
 */
static void test_check_config_refuses_overlaps(void **state)
{
        struct tu_daemon d;
        char *up2, *link, *rl, *conf_path;
        struct {
                const char *watches; /* printf format: %1$s uploads, %2$s media, %3$s root */
                const char *state;   /* NULL: root/state */
                const char *words[3];
        } cases[] = {
                { "{ path = \"%1$s\"; output = \"%1$s/out\"; pipeline = \"p\"; }",
                  NULL,
                  { "/uploads/out", "inside watched path" } },
                { "{ path = \"%1$s\"; output = \"%1$s\"; pipeline = \"p\"; }",
                  NULL,
                  { "inside watched path" } },
                { "{ path = \"%1$s\"; output = \"%3$s/link/out\"; pipeline = \"p\"; }",
                  NULL,
                  { "/link/out", "resolved", "inside watched path" } },
                { "{ path = \"%1$s\"; output = \"%2$s\"; pipeline = \"p\"; },"
                  "{ path = \"%3$s/up2\"; output = \"%1$s/o2\"; pipeline = \"p\"; }",
                  NULL,
                  { "/up2'", "inside watched path" } },
                { "{ path = \"%1$s\"; output = \"%2$s\"; pipeline = \"p\"; recursive = true; },"
                  "{ path = \"%1$s/sub\"; output = \"%3$s/o2\"; pipeline = \"p\"; }",
                  NULL,
                  { "/uploads/sub'", "recursive" } },
                { "{ path = \"%1$s\"; output = \"%2$s\"; pipeline = \"p\"; },"
                  "{ path = \"%3$s/link\"; output = \"%3$s/o2\"; pipeline = \"p\"; }",
                  NULL,
                  { "/link", "symbolic link" } },
                { "{ path = \"%1$s\"; output = \"%2$s\"; pipeline = \"p\"; },"
                  "{ path = \"%3$s/rl/uploads\"; output = \"%3$s/o2\"; pipeline = \"p\"; }",
                  NULL,
                  { "/rl/uploads'", "same directory" } },
                { "{ path = \"%1$s\"; output = \"%2$s\"; pipeline = \"p\"; },"
                  "{ path = \"%2$s/again\"; output = \"%3$s/o2\"; pipeline = \"p\"; }",
                  NULL,
                  { "/media/again'", "inside output" } },
                { "{ path = \"%1$s\"; output = \"%2$s\"; pipeline = \"p\"; }",
                  "%1$s/.state",
                  { "state_dir", "inside watched path" } },
        };

        (void)state;
        tu_daemon_setup(&d, PIPE, 1, NULL);
        up2 = tu_path("%s/up2", d.root);
        assert_int_equal(mkdir(up2, 0755), 0);
        link = tu_path("%s/link", d.root);
        assert_int_equal(symlink(d.uploads, link), 0);
        rl = tu_path("%s/rl", d.root);
        assert_int_equal(symlink(d.root, rl), 0);
        conf_path = tu_path("%s/overlap.conf", d.root);
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                char watches[2048], st[1024], *conf, *out = NULL;
                int rc;

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
                snprintf(watches, sizeof watches, cases[i].watches, d.uploads, d.media, d.root);
                if (cases[i].state)
                        snprintf(st, sizeof st, cases[i].state, d.uploads);
                else
                        snprintf(st, sizeof st, "%s", d.state);
#pragma GCC diagnostic pop
                conf = tu_path("state_dir = \"%s\";\nsocket = \"%s\";\nworkers = 1;\n"
                               "watch = ( %s );\npipelines = { p = %s; };\n",
                               st, d.socket, watches, PIPE);
                tu_write_file(conf_path, conf, (size_t)-1);
                rc = run_imgd(&d, "check.log", &out, "--check-config", "-c", conf_path);
                if (rc != 1)
                        fail_msg("case %zu: imgd --check-config exited %d on\n%s\n%s", i, rc, conf,
                                 out);
                for (size_t k = 0; k < ELEMENTSOF(cases[i].words) && cases[i].words[k]; k++)
                        if (!strstr(out, cases[i].words[k]))
                                fail_msg("case %zu: \"%s\" is not in what --check-config "
                                         "said:\n%s",
                                         i, cases[i].words[k], out);
                print_message("case %zu refused: %s", i, out);
                free(out);
                /* And imgd does not start on it. */
                rc = run_imgd(&d, "start.log", &out, "-c", conf_path, NULL);
                if (rc == 0 || !strstr(out, cases[i].words[0]))
                        fail_msg("case %zu: imgd exited %d on it:\n%s", i, rc, out);
                assert_true(access(d.socket, F_OK) < 0);
                free(out);
                free(conf);
        }
        /* Nothing was made inside the watched tree. */
        {
                char *out = NULL;
                int rc = tu_run(&out, "/usr/bin/find", d.uploads, "-mindepth", "1", NULL);

                assert_int_equal(rc, 0);
                if (out && *out)
                        fail_msg("made inside the watched tree:\n%s", out);
                free(out);
        }
        free(conf_path);
        free(link);
        free(rl);
        free(up2);
        tu_daemon_cleanup(&d);
}

/*
 * (i) Upload names made to forge lines of the log: a newline followed by what imgd writes in
 * front of an error ("imgd: error: ...") or by a journald priority prefix ("<0>", which
 * journald would file as an emergency), a carriage return, an escape sequence. Each name's
 * messages stay on their own line, with the control characters written as \xNN; nothing
 * else in the log starts like the forgery.
 */
static void test_names_do_not_forge_log_lines(void **state)
{
        static const char *const names[] = {
                "a\nimgd: error: forged one.png",
                "b\n<0>forged two.png",
                "c\r<3>forged three.png",
                "d\x1b[2Jforged four.png",
        };
        struct tu_daemon d;
        char *log;

        (void)state;
        tu_daemon_setup(&d, PIPE, 1, NULL);
        tu_daemon_start(&d);
        for (size_t i = 0; i < ELEMENTSOF(names); i++) {
                char *p = tu_path("%s/%s", d.uploads, names[i]);

                tu_make_image(p, 40 + (unsigned)i, 30, "png", false);
                free(p);
        }
        tu_daemon_wait_idle(&d, 60);
        advfx_assert_each_done_once(&d, ELEMENTSOF(names));
        log = advfx_log_of(&d);
        for (const char *line = log; *line;) {
                const char *end = strchr(line, '\n');
                size_t n = end ? (size_t)(end - line) : strlen(line);

                if ((n >= 19 && strncmp(line, "imgd: error: forged", 19) == 0) ||
                    (line[0] == '<' && strstr(line, "forged")) || memchr(line, '\r', n) ||
                    memchr(line, '\x1b', n))
                        fail_msg("a forged line in the log: \"%.*s\"; log:\n%s", (int)n, line, log);
                line += n + (end ? 1 : 0);
        }
        assert_non_null(strstr(log, "a\\x0aimgd: error: forged one.png"));
        assert_non_null(strstr(log, "b\\x0a<0>forged two.png"));
        assert_non_null(strstr(log, "d\\x1b[2Jforged four.png"));
        free(log);
        tu_daemon_cleanup(&d);
}

/* Writes the configuration: the watches (libconfig list body), pipeline p's body, and extra. */
static void write_conf(struct tu_daemon *d, const char *watches, const char *pipeline,
                       const char *extra)
{
        char *conf = tu_path("state_dir = \"%s\";\nsocket = \"%s\";\nworkers = 2;\n"
                             "watch = ( %s );\npipelines = { p = %s; };\n%s\n",
                             d->state, d->socket, watches, pipeline, extra ? extra : "");

        tu_write_file(d->config, conf, (size_t)-1);
        free(conf);
}

/* `imgctl reload`, which waits for the outcome. */
static void reload_now(struct tu_daemon *d)
{
        char *out = NULL;
        int rc = tu_imgctl(d, &out, "reload", NULL);

        if (rc != 0)
                fail_msg("imgctl reload exited %d: %s", rc, out ? out : "");
        free(out);
}

/* Drops n small distinct images named <prefix><i>.png into dir. */
static void drop_n(const char *dir, const char *prefix, unsigned n)
{
        for (unsigned i = 0; i < n; i++) {
                char *p = tu_path("%s/%s%03u.png", dir, prefix, i);

                tu_make_image(p, 16 + i % 25, 16 + i / 25, "png", false);
                free(p);
        }
}

#define PIPE_CHANGED                                                                               \
        "( { name = \"m\"; width = 12; height = 12; fit = \"inside\"; format = \"png\"; } )"

/*
 * 500 jobs queued (paused), then a reload that changes their pipeline (another variant,
 * another size and format): after the resume every job renders the pipeline as it is now,
 * at its first attempt; nothing of the old pipeline is published.
 */
static void test_reload_changes_pipeline_of_500_queued(void **state)
{
        enum { N = 500 };
        struct tu_daemon d;
        char *watch, *sample;
        unsigned w = 0, h = 0;

        (void)state;
        tu_daemon_setup(&d, PIPE, 2, NULL);
        watch = tu_path("{ path = \"%s\"; output = \"%s\"; pipeline = \"p\"; }", d.uploads,
                        d.media);
        write_conf(&d, watch, PIPE, "degradation = { enabled = false; };");
        tu_daemon_start(&d);
        assert_int_equal(tu_imgctl(&d, NULL, "pause", NULL), 0);
        drop_n(d.uploads, "q", N);
        advfx_wait_jobs_until(&d, "queued", N, 120);

        write_conf(&d, watch, PIPE_CHANGED, "degradation = { enabled = false; };");
        reload_now(&d);
        assert_int_equal(tu_imgctl(&d, NULL, "resume", NULL), 0);
        tu_daemon_wait_idle(&d, 600);
        assert_int_equal(tu_ledger_int(&d, "SELECT count(*) FROM jobs"), N);
        assert_int_equal(tu_ledger_int(&d, "SELECT count(*) FROM jobs WHERE state = 'done' AND "
                                           "attempts = 1"),
                         N);
        assert_int_equal(tu_count_files(d.media, "*_m.png"), N);
        assert_int_equal(tu_count_files(d.media, "*_s.webp"), 0);
        assert_int_equal(tu_count_files(d.media, ".imgd-*"), 0);
        sample = tu_path("%s/q499_m.png", d.media); /* 40 x 35 in, 12 x 11 out */
        assert_true(tu_image_props(sample, &w, &h, NULL, 0, NULL, NULL));
        assert_int_equal(w, 12);
        assert_int_equal(h, 11);
        advfx_assert_verify_clean(&d);
        free(sample);
        free(watch);
        tu_daemon_cleanup(&d);
}

/* A NOTIFY_SOCKET for the daemon to be started next: the test reads its STATUS= lines. */
struct notify_sock {
        int fd;
        char *path;
        char last_status[1024];
};

static void notify_open(struct notify_sock *n, const char *dir)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };

        n->path = tu_path("%s/notify.sock", dir);
        n->last_status[0] = '\0';
        n->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        assert_true(n->fd >= 0);
        snprintf(sa.sun_path, sizeof sa.sun_path, "%s", n->path);
        assert_int_equal(bind(n->fd, (struct sockaddr *)&sa, sizeof sa), 0);
        setenv("NOTIFY_SOCKET", n->path, 1);
}

/* Reads every waiting message; returns the last STATUS= line seen so far. */
static const char *notify_status(struct notify_sock *n)
{
        char buf[4096];
        ssize_t k;

        while ((k = recv(n->fd, buf, sizeof buf - 1, 0)) > 0) {
                char *at;

                buf[k] = '\0';
                for (at = buf; (at = strstr(at, "STATUS=")); at++) {
                        size_t len = strcspn(at + 7, "\n");

                        snprintf(n->last_status, sizeof n->last_status, "%.*s", (int)len, at + 7);
                }
        }
        return n->last_status;
}

static void notify_close(struct notify_sock *n)
{
        unsetenv("NOTIFY_SOCKET");
        close(n->fd);
        free(n->path);
}

/*
 * 500 jobs queued (paused), then a reload that removes their watch: once resumed they are
 * held, and held jobs are not a backlog (nothing can run them): with the degradation level
 * entered at 100 queued and the queue_depth alert at 100, the level returns to full, no
 * alert is active (status exits 0, every imgd_alert gauge is 0, STATUS= names none) and
 * STATUS= and status show the 500 as held. The watch configured again: all 500 done, each at
 * its first attempt.
 */
static void test_reload_removes_watch_of_500_queued(void **state)
{
        enum { N = 500 };
        static const char thresholds[] =
                "degradation = { recover_ms = 500; reduced = { queued = 100; };"
                " essential = { queued = 200; }; paused = { queued = 100000; }; };\n"
                "alerts = { queued = 100; };";
        struct tu_daemon d;
        struct notify_sock n;
        char *both, *other, *uploads2, *media2, *out = NULL;
        const char *line = "";
        json_t *st = NULL;
        int rc = -1;

        (void)state;
        tu_daemon_setup(&d, PIPE, 2, NULL);
        uploads2 = tu_path("%s/uploads2", d.root);
        media2 = tu_path("%s/media2", d.root);
        assert_int_equal(mkdir(uploads2, 0755), 0);
        other = tu_path("{ path = \"%s\"; output = \"%s\"; pipeline = \"p\"; }", uploads2, media2);
        both = tu_path("{ path = \"%s\"; output = \"%s\"; pipeline = \"p\"; }, %s", d.uploads,
                       d.media, other);
        write_conf(&d, both, PIPE, thresholds);
        notify_open(&n, d.root);
        tu_daemon_start(&d);
        assert_int_equal(tu_imgctl(&d, NULL, "pause", NULL), 0);
        drop_n(d.uploads, "h", N);
        advfx_wait_jobs_until(&d, "queued", N, 120);

        write_conf(&d, other, PIPE, thresholds);
        reload_now(&d);
        assert_int_equal(tu_imgctl(&d, NULL, "resume", NULL), 0);
        advfx_wait_jobs_until(&d, "held", N, 120);

        /* Held, not waiting: the level returns to full, no alert (allow the three steps of
         * recovery and the status timer). */
        for (int64_t until = tu_now_us() + 30 * 1000000LL;;) {
                const char *level;
                bool calm;

                json_decref(st);
                st = advfx_status_of(&d, &rc);
                level = json_string_value(json_object_get(json_object_get(st, "health"), "level"));
                line = notify_status(&n);
                calm = rc == 0 && level && strcmp(level, "full") == 0 &&
                       json_array_size(json_object_get(st, "alerts")) == 0 &&
                       strstr(line, "(500 held)") && !strstr(line, "ALERT");
                if (calm)
                        break;
                if (tu_now_us() > until) {
                        char *text = json_dumps(st, JSON_INDENT(2));
                        fail_msg("500 held jobs: status exits %d, STATUS=%s\n%s", rc, line, text);
                }
                usleep(200 * 1000);
        }
        assert_int_equal(advfx_status_jobs(st, "queued"), N);
        assert_int_equal(advfx_status_jobs(st, "held"), N);
        print_message("500 held: STATUS=%s\n", line);
        /* No longer read: closed, or imgd's sd_notify() would block once its queue is full. */
        notify_close(&n);
        assert_int_equal(tu_imgctl(&d, &out, "metrics", NULL), 0);
        if (strstr(out, "imgd_alert{alert=\"queue_depth\"} 1") ||
            strstr(out, "imgd_alert{alert=\"degraded\"} 1") ||
            !strstr(out, "imgd_degradation_level 0"))
                fail_msg("metrics with 500 held jobs:\n%s", out);
        free(out);
        json_decref(st);

        /* The watch back: all done at their first attempt, none dead, once each. (Without
         * the degradation levels now: a degraded job's re-render at full quality would be
         * a second run of it.) */
        write_conf(&d, both, PIPE, "degradation = { enabled = false; };");
        reload_now(&d);
        advfx_wait_jobs_until(&d, "done", N, 600);
        tu_daemon_wait_idle(&d, 120);
        assert_int_equal(tu_ledger_int(&d, "SELECT count(*) FROM jobs"), N);
        assert_int_equal(tu_ledger_int(&d, "SELECT count(*) FROM jobs WHERE state = 'done' AND "
                                           "attempts = 1"),
                         N);
        assert_int_equal(tu_count_files(d.media, "h*_s.webp"), N);
        free(both);
        free(other);
        free(uploads2);
        free(media2);
        tu_daemon_cleanup(&d);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                /* Configuration, names, reloads, descriptors, subscribers. */
                cmocka_unit_test(test_check_config_refuses_overlaps),
                cmocka_unit_test(test_names_do_not_forge_log_lines),
                cmocka_unit_test(test_reload_changes_pipeline_of_500_queued),
                cmocka_unit_test(test_reload_removes_watch_of_500_queued),
        };

        /* IMGD_TEST_FILTER=test_reload_* runs only the cases whose names match. */
        if (getenv("IMGD_TEST_FILTER"))
                cmocka_set_test_filter(getenv("IMGD_TEST_FILTER"));
        return cmocka_run_group_tests(tests, NULL, NULL);
}
