/* SPDX-License-Identifier: MIT */
/*
 * test-intake-faults.c - uploads that arrive while the machine fails the daemon are taken in
 * once the fault clears, each exactly once, with the real daemon and real faults:
 *
 *   ledger disk full   the fsshim (tests/tools/fsshim.c) makes every write below the state
 *                      directory fail with ENOSPC, so SQLite answers "database or disk is
 *                      full"; status shows the uploads waiting for a retry, with an alert;
 *   out of descriptors the daemon's RLIMIT_NOFILE is lowered (prlimit) to the descriptors it
 *                      has, so opening an upload fails with EMFILE, then raised again;
 *   hand-back          a job whose outputs cannot be recorded (ledger disk full) is handed
 *                      back to the ledger once it can write again, without using an attempt,
 *                      long before its lease (job_timeout + 60 s) would expire.
 */
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

#define PIPE_1                                                                                     \
        "( { name = \"small\"; width = 32; height = 32; fit = \"cover\"; format = \"png\"; } )"
#define PIPE_SLOW                                                                                  \
        "( { name = \"a\"; width = 2000; height = 2000; fit = \"inside\"; format = \"webp\"; "     \
        "quality = 90; },"                                                                         \
        "  { name = \"b\"; width = 1800; height = 1800; fit = \"inside\"; format = \"webp\"; "     \
        "quality = 90; },"                                                                         \
        "  { name = \"c\"; width = 1600; height = 1600; fit = \"inside\"; format = \"webp\"; "     \
        "quality = 90; } )"

/* Every upload has exactly one job, and there are n of them. */
static void assert_once_each(struct tu_daemon *d, int64_t n)
{
        assert_int_equal(tu_ledger_int(d, "SELECT count(*) FROM jobs"), n);
        assert_int_equal(tu_ledger_int(d, "SELECT count(DISTINCT source_path) FROM jobs"), n);
}

/* Moves n images made in root/staging into uploads (complete at once: IN_MOVED_TO). */
static void drop_images(struct tu_daemon *d, const char *prefix, unsigned n)
{
        for (unsigned i = 0; i < n; i++) {
                char *tmp = tu_path("%s/staging/%s%03u.png", d->root, prefix, i);
                char *dst = tu_path("%s/%s%03u.png", d->uploads, prefix, i);

                tu_make_image(tmp, 16 + i % 7, 16, "png", false);
                assert_int_equal(rename(tmp, dst), 0);
                free(tmp);
                free(dst);
        }
}

/* Waits until status satisfies done(status) or timeout_s passes; returns the last answer. */
static json_t *wait_status(struct tu_daemon *d, unsigned timeout_s, const char *what,
                           bool (*done)(const json_t *status, void *arg), void *arg)
{
        int64_t until = tu_now_us() + (int64_t)timeout_s * 1000000;

        for (;;) {
                json_t *st = tu_status_json(d, NULL);

                if (done(st, arg))
                        return st;
                if (tu_now_us() > until) {
                        char *text = json_dumps(st, JSON_INDENT(2));
                        char *log = tu_read_file(d->log, NULL);
                        fail_msg("%s: not within %u s; last status:\n%s\ndaemon log:\n%s", what,
                                 timeout_s, text ? text : "", log ? log : "");
                }
                json_decref(st);
                usleep(200 * 1000);
        }
}

static bool taken_in(const json_t *st, void *arg)
{
        json_int_t n = *(json_int_t *)arg;

        return !json_is_true(json_object_get(st, "intake_pending")) &&
               tu_jobs_in(st, "queued") + tu_jobs_in(st, "running") + tu_jobs_in(st, "retry") +
                               tu_jobs_in(st, "done") + tu_jobs_in(st, "dead") >=
                       n;
}

static bool all_done(const json_t *st, void *arg)
{
        json_int_t n = *(json_int_t *)arg;

        return tu_jobs_in(st, "done") >= n && tu_jobs_in(st, "running") == 0;
}

static bool events_read(const json_t *st, void *arg)
{
        (void)arg;
        return !json_is_true(json_object_get(st, "intake_pending"));
}

/* ------------------------------------------------------------------ ledger disk full */

static void start_with_full_ledger(struct tu_daemon *d, const char *flag)
{
        setenv("LD_PRELOAD", IMGD_FSSHIM, 1);
        setenv("ASAN_OPTIONS", "verify_asan_link_order=0:detect_leaks=0", 1);
        setenv("IMGD_SHIM_ROOT", d->state, 1);
        setenv("IMGD_SHIM_ENOSPC", flag, 1);
        tu_daemon_start(d);
        unsetenv("LD_PRELOAD");
        unsetenv("ASAN_OPTIONS");
        unsetenv("IMGD_SHIM_ROOT");
        unsetenv("IMGD_SHIM_ENOSPC");
}

static void test_ledger_full(void **state)
{
        const json_int_t n = 30;
        struct tu_daemon d;
        char *flag;
        json_t *during, *st;
        const char *msg;

        (void)state;
        tu_daemon_setup(&d, PIPE_1, 1, NULL);
        assert_int_equal(mkdir(d.state, 0755), 0);
        flag = tu_path("%s/ledger-full", d.root);
        start_with_full_ledger(&d, flag);

        tu_write_file(flag, "", 0); /* the ledger's disk fills up */
        drop_images(&d, "full", (unsigned)n);
        st = wait_status(&d, 60, "inotify events read", events_read, NULL);
        json_decref(st);
        sleep(2); /* a retry or two fails too */
        during = tu_status_json(&d, NULL);
        assert_true(tu_log_contains(&d, "database or disk is full"));
        assert_int_equal(tu_jobs_in(during, "queued") + tu_jobs_in(during, "done"), 0);

        /* Space returns: every upload is taken in and done, once. */
        assert_int_equal(unlink(flag), 0);
        st = wait_status(&d, 120, "all uploads done after the disk has space again", all_done,
                         (void *)&n);
        json_decref(st);
        assert_once_each(&d, n);
        assert_int_equal(tu_count_files(d.media, "*_small.png"), n);

        /* While it lasted, status said so: the uploads waiting, and an alert. */
        assert_int_equal(json_integer_value(json_object_get(during, "intake_retry")), n);
        msg = tu_alert_message(during, "intake_failing");
        if (!msg || !strstr(msg, "database or disk is full"))
                fail_msg("no intake_failing alert naming the cause: %s", msg ? msg : "(none)");
        st = tu_status_json(&d, NULL);
        assert_int_equal(json_integer_value(json_object_get(st, "intake_retry")), 0);
        assert_null(tu_alert_message(st, "intake_failing"));
        json_decref(st);
        json_decref(during);
        free(flag);
        tu_daemon_cleanup(&d);
}

/* ------------------------------------------------------------------ out of descriptors */

/* The lowest descriptor number pid does not use. */
static int lowest_free_fd(pid_t pid)
{
        char *dir = tu_path("/proc/%d/fd", (int)pid);
        bool used[4096] = {};
        struct dirent *de;
        DIR *dp = opendir(dir);
        int n = 0;

        assert_non_null(dp);
        while ((de = readdir(dp))) {
                int fd = atoi(de->d_name);
                if (de->d_name[0] != '.' && fd >= 0 && fd < 4096)
                        used[fd] = true;
        }
        closedir(dp);
        free(dir);
        while (n < 4096 && used[n])
                n++;
        return n;
}

static void test_out_of_descriptors(void **state)
{
        const json_int_t n = 40;
        struct rlimit old, low;
        struct tu_daemon d;
        json_t *st;

        (void)state;
        tu_daemon_setup(&d, PIPE_1, 1, NULL);
        tu_daemon_start(&d);
        /* Jobs stay queued: what is tested is intake alone. */
        assert_int_equal(tu_imgctl(&d, NULL, "pause", NULL), 0);
        usleep(300 * 1000); /* the control connection closed */

        assert_int_equal(prlimit(d.pid, RLIMIT_NOFILE, NULL, &old), 0);
        low = old;
        low.rlim_cur = (rlim_t)lowest_free_fd(d.pid);
        assert_int_equal(prlimit(d.pid, RLIMIT_NOFILE, &low, NULL), 0);

        for (json_int_t i = 0; i < n; i++) {
                char *p = tu_path("%s/fd%03d.jpg", d.uploads, (int)i);
                char content[32];

                snprintf(content, sizeof content, "upload %d", (int)i);
                tu_write_file(p, content, (size_t)-1);
                free(p);
        }
        for (int i = 0; i < 100 && !tu_log_contains(&d, "Too many open files"); i++)
                usleep(100 * 1000);
        assert_true(tu_log_contains(&d, "Too many open files"));
        sleep(2);

        /* Descriptors again: every upload becomes a job, once. */
        assert_int_equal(prlimit(d.pid, RLIMIT_NOFILE, &old, NULL), 0);
        st = wait_status(&d, 90, "all uploads taken in once descriptors are available", taken_in,
                         (void *)&n);
        assert_int_equal(tu_jobs_in(st, "queued"), n);
        assert_int_equal(json_integer_value(json_object_get(st, "intake_retry")), 0);
        json_decref(st);
        assert_once_each(&d, n);
        tu_daemon_cleanup(&d);
}

/* ------------------------------------------------------------------ hand-back */

/* Stops (SIGSTOP) or continues the daemon's workers. */
static void signal_workers(struct tu_daemon *d, int sig)
{
        pid_t pids[16];
        unsigned k = tu_daemon_children(d, pids, 16);

        for (unsigned i = 0; i < k; i++)
                kill(pids[i], sig);
}

static bool one_running(const json_t *st, void *arg)
{
        (void)arg;
        return tu_jobs_in(st, "running") == 1;
}

static void test_handback_retried(void **state)
{
        struct tu_daemon d;
        char *flag, *src = NULL;
        json_t *st;
        bool blocked = false;
        int64_t t0;

        (void)state;
        tu_daemon_setup(&d, PIPE_SLOW, 1,
                        "limits = { job_timeout = 120; };\n"
                        "retry = { base_delay_ms = 200; max_delay_ms = 1000; };\n");
        assert_int_equal(mkdir(d.state, 0755), 0);
        flag = tu_path("%s/ledger-full", d.root);
        start_with_full_ledger(&d, flag);

        /* Until the ledger is full while the job runs (a fast machine may finish a render
         * before the test stops its worker: then with another upload). */
        for (unsigned round = 0; round < 4 && !blocked; round++) {
                char *tmp = tu_path("%s/staging/big%u.png", d.root, round);

                free(src);
                src = tu_path("%s/big%u.png", d.uploads, round);
                tu_make_image(tmp, 4000, 4000, "png", false);
                assert_int_equal(rename(tmp, src), 0);
                free(tmp);
                st = wait_status(&d, 60, "the job running", one_running, NULL);
                json_decref(st);
                signal_workers(&d, SIGSTOP);
                /* Its claim committed (a claim waits for the next commit, 500 ms at most):
                 * the stage, not the claim, is what finds the ledger full. */
                for (int i = 0; i < 100 && tu_ledger_int(&d, "SELECT count(*) FROM jobs "
                                                             "WHERE state = 'running'") == 0;
                     i++)
                        usleep(50 * 1000);
                st = tu_status_json(&d, NULL);
                if (tu_jobs_in(st, "running") == 1) {
                        tu_write_file(flag, "", 0); /* the ledger's disk fills up */
                        blocked = true;
                }
                json_decref(st);
                signal_workers(&d, SIGCONT);
                if (!blocked) {
                        json_int_t done = round + 1;
                        st = wait_status(&d, 60, "the job done", all_done, &done);
                        json_decref(st);
                }
        }
        assert_true(blocked);
        for (int i = 0; i < 600 && !tu_log_contains(&d, "hand back job"); i++)
                usleep(100 * 1000);
        if (!tu_log_contains(&d, "hand back job")) {
                char *log = tu_read_file(d.log, NULL);
                fail_msg("the hand-back did not fail with the ledger full:\n%s", log ? log : "");
        }
        sleep(2);

        /* Space returns: the job is handed back and done again, in well under its lease
         * (180 s), with no attempt used for the ledger's fault. */
        t0 = tu_now_us();
        assert_int_equal(unlink(flag), 0);
        {
                json_int_t n = tu_ledger_int(&d, "SELECT count(*) FROM jobs");
                st = wait_status(&d, 90, "the handed-back job done", all_done, &n);
                json_decref(st);
        }
        printf("handed back and done %.1f s after the ledger had space again\n",
               (double)(tu_now_us() - t0) / 1e6);
        assert_true(tu_log_contains(&d, "handed back to the ledger"));
        assert_int_equal(tu_ledger_int(&d, "SELECT max(attempts) FROM jobs WHERE state = 'done'"),
                         1);
        assert_int_equal(tu_ledger_int(&d, "SELECT count(*) FROM jobs WHERE state != 'done'"), 0);
        free(src);
        free(flag);
        tu_daemon_cleanup(&d);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_ledger_full),
                cmocka_unit_test(test_out_of_descriptors),
                cmocka_unit_test(test_handback_retried),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
