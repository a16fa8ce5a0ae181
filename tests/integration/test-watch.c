/* SPDX-License-Identifier: MIT */
/*
 * test-watch.c - the start-up scan of watch.c on a real tree: every file is reported once,
 * hidden names and hidden folders are passed over, other file types are reported (for intake
 * to refuse), sub-folders only for recursive watches; and a large folder is reported in name
 * order, batch by batch, so that the ledger lookups that follow walk its path index forward;
 * a file changed within the last 2 s is reported only once it has stopped changing for 2 s.
 *
 * With the real daemon:
 *  - an inotify queue overflow (20 000 uploads made while the daemon is stopped with SIGSTOP)
 *    is followed by a rescan that takes turns with the event loop: `imgctl status` answers
 *    within a second throughout, and every upload becomes one job;
 *  - past the inotify watch limit (a real one: the daemon runs in a user namespace of its own
 *    whose max_inotify_watches is lowered, the machine's limit is not touched), uploads in
 *    the folders that could not be watched are found by the periodic scan, status says how
 *    many folders are not watched, and they are watched again once the limit allows; a tree
 *    larger than the limit at start-up: imgd starts, names the limit and the first folder
 *    not watched, and loses no upload;
 *  - a file still being written when the start-up scan or the walk of a new folder finds it
 *    becomes one job once complete, not a failed job for its first half.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <sched.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "daemon/watch.h"
#include "testutil.h"

#define N_FILES 2500
#define BATCH 1024 /* watch.c's WATCH_SCAN_BATCH */

struct seen {
        char **paths;
        size_t n, allocated;
};

static void on_file(const struct watch_config *w, const char *path, void *userdata)
{
        struct seen *s = userdata;

        (void)w;
        if (s->n == s->allocated) {
                s->allocated = s->allocated ? 2 * s->allocated : 256;
                s->paths = realloc(s->paths, s->allocated * sizeof *s->paths);
                assert_non_null(s->paths);
        }
        s->paths[s->n] = strdup(path);
        assert_non_null(s->paths[s->n]);
        s->n++;
}

static void seen_clear(struct seen *s)
{
        for (size_t i = 0; i < s->n; i++)
                free(s->paths[i]);
        free(s->paths);
        *s = (struct seen){};
}

static size_t count_path(const struct seen *s, const char *path)
{
        size_t k = 0;

        for (size_t i = 0; i < s->n; i++)
                k += strcmp(s->paths[i], path) == 0;
        return k;
}

/* Writes a one-byte file whose last change was an hour ago: a walk reports it at once. */
static void put_old(const char *path)
{
        struct timespec t[2] = { { .tv_sec = time(NULL) - 3600 }, { .tv_sec = time(NULL) - 3600 } };

        tu_write_file(path, "x", 1);
        assert_int_equal(utimensat(AT_FDCWD, path, t, AT_SYMLINK_NOFOLLOW), 0);
}

/* Scans `up` with one watch; the paths reported go to *s. */
static int scan(const char *up, bool recursive, struct seen *s)
{
        struct watch_config wc = {
                .path = (char *)up,
                .output = "/nonexistent",
                .pipeline_name = "p",
                .recursive = recursive,
        };
        struct config cfg = { .watches = &wc, .n_watches = 1 };
        sd_event *e = NULL;
        watch *w = NULL;
        int r;

        assert_int_equal(sd_event_new(&e), 0);
        assert_int_equal(watch_new(e, &cfg, on_file, s, &w), 0);
        r = watch_scan(w);
        watch_free(w);
        sd_event_unref(e);
        return r;
}

static void test_scan_tree(void **state)
{
        char *root = tu_mkdtemp(), *up = tu_path("%s/up", root), *p;
        unsigned order[N_FILES], descents = 0;
        const char *prev = NULL;
        struct seen s = {};

        (void)state;
        assert_int_equal(mkdir(up, 0755), 0);
        /* Created in a scrambled order: neither creation nor hash order is name order. */
        for (unsigned i = 0; i < N_FILES; i++)
                order[i] = (i * 1237u) % N_FILES;
        /* Files last changed an hour ago: the walk reports each at once (test_scan_settles
         * has the ones that may still be being written). */
        for (unsigned i = 0; i < N_FILES; i++) {
                p = tu_path("%s/f%04u.jpg", up, order[i]);
                put_old(p);
                free(p);
        }
        p = tu_path("%s/.hidden.jpg", up), put_old(p), free(p);
        p = tu_path("%s/upload.jpg.part", up), put_old(p), free(p);
        p = tu_path("%s/link.jpg", up);
        assert_int_equal(symlink("/etc/passwd", p), 0);
        free(p);
        p = tu_path("%s/sub", up), assert_int_equal(mkdir(p, 0755), 0), free(p);
        p = tu_path("%s/sub/a.jpg", up), put_old(p), free(p);
        p = tu_path("%s/sub/b.jpg", up), put_old(p), free(p);
        p = tu_path("%s/.cache", up), assert_int_equal(mkdir(p, 0755), 0), free(p);
        p = tu_path("%s/.cache/c.jpg", up), put_old(p), free(p);

        assert_int_equal(scan(up, true, &s), N_FILES + 3);
        assert_int_equal(s.n, N_FILES + 3);
        for (unsigned i = 0; i < N_FILES; i += 97) {
                p = tu_path("%s/f%04u.jpg", up, i);
                assert_int_equal(count_path(&s, p), 1);
                free(p);
        }
        p = tu_path("%s/link.jpg", up), assert_int_equal(count_path(&s, p), 1), free(p);
        p = tu_path("%s/sub/a.jpg", up), assert_int_equal(count_path(&s, p), 1), free(p);
        p = tu_path("%s/sub/b.jpg", up), assert_int_equal(count_path(&s, p), 1), free(p);

        /* Name order within each batch: the top folder's names go down at most once per
         * batch boundary (the folder holds N_FILES + 2 entries to report and "sub"). */
        for (size_t i = 0; i < s.n; i++) {
                const char *name = s.paths[i] + strlen(up) + 1;

                if (strchr(name, '/'))
                        continue;
                if (prev && strcmp(name, prev) < 0)
                        descents++;
                prev = name;
        }
        assert_true(descents <= (N_FILES + 3) / BATCH);
        seen_clear(&s);

        /* Not recursive: the sub-folder is passed over. */
        assert_int_equal(scan(up, false, &s), N_FILES + 1);
        p = tu_path("%s/sub/a.jpg", up), assert_int_equal(count_path(&s, p), 0), free(p);
        seen_clear(&s);

        tu_rm_rf(root);
        free(up);
        free(root);
}

/*
 * A file a walk finds changed within the last 2 s may still be being written: it is reported
 * when its writer closes it (its event), or once it has not changed for 2 s if the writer
 * keeps it open, and once either way. A file last changed long ago is reported at once by the
 * same walk.
 */
static void test_scan_settles(void **state)
{
        char *root = tu_mkdtemp(), *up = tu_path("%s/up", root);
        char *fresh = tu_path("%s/fresh.jpg", up), *growing = tu_path("%s/growing.jpg", up);
        char *stalled = tu_path("%s/stalled.jpg", up), *old = tu_path("%s/old.jpg", up);
        struct watch_config wc = {
                .path = up,
                .output = "/nonexistent",
                .pipeline_name = "p",
                .recursive = true,
        };
        struct config cfg = { .watches = &wc, .n_watches = 1 };
        int64_t t0, fresh_at = 0, growing_at = 0, stalled_at = 0, last_write = 0;
        sd_event *e = NULL;
        watch *w = NULL;
        struct seen s = {};
        int fd, stalled_fd;

        (void)state;
        assert_int_equal(mkdir(up, 0755), 0);
        put_old(old);
        tu_write_file(fresh, "x", 1);
        fd = open(growing, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, "x", 1), 1);
        stalled_fd = open(stalled, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        assert_true(stalled_fd >= 0);

        assert_int_equal(sd_event_new(&e), 0);
        assert_int_equal(watch_new(e, &cfg, on_file, &s, &w), 0);
        t0 = tu_now_us();
        assert_int_equal(watch_scan(w), 4);
        /* Only the old file at once; the others are still to come. */
        assert_int_equal(s.n, 1);
        assert_int_equal(count_path(&s, old), 1);
        assert_true(watch_intake_pending(w));

        /* growing.jpg: written a byte every 300 ms for 3 s, then closed. stalled.jpg: written
         * for 1 s, then left open and unchanged. */
        while (tu_now_us() - t0 < 7 * 1000000) {
                int64_t now = tu_now_us();

                if (now - t0 < 3 * 1000000 && now - last_write >= 300 * 1000) {
                        assert_int_equal(write(fd, "x", 1), 1);
                        if (now - t0 < 1000000)
                                assert_int_equal(write(stalled_fd, "x", 1), 1);
                        last_write = now;
                } else if (now - t0 >= 3 * 1000000 && fd >= 0) {
                        close(fd);
                        fd = -1;
                }
                assert_true(sd_event_run(e, 50 * 1000) >= 0);
                if (!fresh_at && count_path(&s, fresh))
                        fresh_at = tu_now_us() - t0;
                if (!growing_at && count_path(&s, growing))
                        growing_at = tu_now_us() - t0;
                if (!stalled_at && count_path(&s, stalled))
                        stalled_at = tu_now_us() - t0;
        }
        print_message("reported after: fresh.jpg %.2f s, growing.jpg (closed at 3 s) %.2f s, "
                      "stalled.jpg (last written at 0.9 s, left open) %.2f s\n",
                      (double)fresh_at / 1e6, (double)growing_at / 1e6, (double)stalled_at / 1e6);
        assert_int_equal(count_path(&s, fresh), 1);
        assert_int_equal(count_path(&s, growing), 1);
        assert_int_equal(count_path(&s, stalled), 1);
        assert_int_equal(s.n, 4);
        assert_true(fresh_at >= 1900 * 1000 && fresh_at < 4 * 1000000);
        assert_true(growing_at >= 2900 * 1000);
        assert_true(stalled_at >= 2800 * 1000 && stalled_at < 6 * 1000000);
        assert_false(watch_intake_pending(w));

        close(stalled_fd);
        watch_free(w);
        sd_event_unref(e);
        seen_clear(&s);
        tu_rm_rf(root);
        free(old), free(stalled), free(growing), free(fresh), free(up), free(root);
}

/* ---- with the real daemon ------------------------------------------------------------------ */

/* The daemon's answer to `imgctl status --json` (which exits 1 while an alert is active); the
 * time it took in *ret_usec when not NULL. */
static json_t *status_json(struct tu_daemon *d, int64_t *ret_usec)
{
        int64_t t0 = tu_now_us();
        char *out = NULL;
        json_error_t err;
        json_t *j;
        int r = tu_imgctl(d, &out, "status", "--json", NULL);

        if (ret_usec)
                *ret_usec = tu_now_us() - t0;
        if (r != 0 && r != 1)
                fail_msg("imgctl status failed (%d): %s", r, out ? out : "");
        j = json_loads(out, 0, &err);
        if (!j)
                fail_msg("imgctl status --json printed no JSON (%s): %s", err.text, out);
        free(out);
        return j;
}

static json_int_t jobs_in(const json_t *status, const char *state)
{
        return json_integer_value(json_object_get(json_object_get(status, "jobs"), state));
}

static json_int_t status_int(const json_t *status, const char *key)
{
        return json_integer_value(json_object_get(status, key));
}

static const char *alert_message(const json_t *status, const char *name)
{
        const json_t *alerts = json_object_get(status, "alerts");

        for (size_t i = 0; i < json_array_size(alerts); i++) {
                const json_t *a = json_array_get(alerts, i);
                const char *n = json_string_value(json_object_get(a, "alert"));
                if (n && strcmp(n, name) == 0)
                        return json_string_value(json_object_get(a, "message"));
        }
        return NULL;
}

/* One integer from the ledger (read-only, beside the daemon). */
static int64_t ledger_int(struct tu_daemon *d, const char *sql)
{
        char *db_path = tu_path("%s/imgd.db", d->state);
        sqlite3 *db;
        sqlite3_stmt *st;
        int64_t v = -1;

        assert_int_equal(sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
        sqlite3_busy_timeout(db, 5000);
        assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
        if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL)
                v = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        sqlite3_close(db);
        free(db_path);
        return v;
}

static void assert_once_each(struct tu_daemon *d, int64_t n)
{
        assert_int_equal(ledger_int(d, "SELECT count(*) FROM jobs"), n);
        assert_int_equal(ledger_int(d, "SELECT count(DISTINCT source_path) FROM jobs"), n);
}

static void fail_with_log(struct tu_daemon *d, const json_t *st, const char *what)
{
        char *text = st ? json_dumps(st, JSON_INDENT(2)) : NULL;
        char *log = tu_read_file(d->log, NULL);
        size_t len = log ? strlen(log) : 0;

        fail_msg("%s; last status:\n%s\ndaemon log (end):\n%s", what, text ? text : "",
                 log ? log + (len > 20000 ? len - 20000 : 0) : "");
}

/* Waits up to timeout_s for `queued` jobs and nothing left to take in; returns the answer. */
static json_t *wait_queued(struct tu_daemon *d, json_int_t queued, unsigned timeout_s)
{
        int64_t until = tu_now_us() + (int64_t)timeout_s * 1000000;

        for (;;) {
                json_t *st = status_json(d, NULL);

                if (jobs_in(st, "queued") >= queued &&
                    !json_is_true(json_object_get(st, "intake_pending")))
                        return st;
                if (tu_now_us() > until) {
                        char what[128];
                        snprintf(what, sizeof what, "not %lld jobs queued within %u s",
                                 (long long)queued, timeout_s);
                        fail_with_log(d, st, what);
                }
                json_decref(st);
                usleep(200 * 1000);
        }
}

#define OVERFLOW_FILES 20000

static void test_overflow_rescan(void **state)
{
        char *q = tu_read_file("/proc/sys/fs/inotify/max_queued_events", NULL);
        int64_t max_us = 0, t0, total_us = 0;
        unsigned samples = 0;
        struct tu_daemon d;
        json_t *st = NULL;

        (void)state;
        /* Two events an upload (IN_CREATE, IN_CLOSE_WRITE): the queue must overflow. */
        if (!q || atol(q) >= 2 * OVERFLOW_FILES) {
                free(q);
                skip();
        }
        free(q);
        tu_daemon_setup(&d, "( { name = \"s\"; width = 8; height = 8; format = \"png\"; } )", 1,
                        NULL);
        tu_daemon_start(&d);
        assert_int_equal(tu_imgctl(&d, NULL, "pause", NULL), 0); /* intake alone is tested */

        assert_int_equal(kill(d.pid, SIGSTOP), 0);
        for (unsigned i = 0; i < OVERFLOW_FILES; i++) {
                char path[512], content[32];
                int fd, len = snprintf(content, sizeof content, "upload %u\n", i);

                snprintf(path, sizeof path, "%s/f%05u.jpg", d.uploads, i);
                fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
                assert_true(fd >= 0);
                assert_int_equal(write(fd, content, (size_t)len), len);
                close(fd);
        }
        assert_int_equal(kill(d.pid, SIGCONT), 0);

        /* Status all along: the rescan takes turns with the control socket. */
        t0 = tu_now_us();
        for (;;) {
                int64_t us;

                json_decref(st);
                st = status_json(&d, &us);
                samples++;
                total_us += us;
                if (us > max_us)
                        max_us = us;
                if (jobs_in(st, "queued") >= OVERFLOW_FILES &&
                    !json_is_true(json_object_get(st, "intake_pending")))
                        break;
                if (tu_now_us() - t0 > 600 * 1000000LL)
                        fail_with_log(&d, st, "the uploads were not all taken in within 600 s");
        }
        printf("%u uploads after an overflow: taken in in %.1f s; imgctl status answered %u "
               "times, in %.0f ms at most, %.0f ms on average\n",
               OVERFLOW_FILES, (double)(tu_now_us() - t0) / 1e6, samples, (double)max_us / 1e3,
               (double)total_us / samples / 1e3);
        if (!tu_log_contains(&d, "inotify queue overflowed"))
                fail_with_log(&d, st, "the inotify queue did not overflow");
        assert_int_equal(jobs_in(st, "queued"), OVERFLOW_FILES);
        json_decref(st);
        assert_once_each(&d, OVERFLOW_FILES);
        if (max_us >= 1000000)
                fail_msg("imgctl status took %.1f s during the rescan (at most 1 s)",
                         (double)max_us / 1e6);
        tu_daemon_cleanup(&d);
}

/* Writes text to path; false if it cannot. */
static bool put(const char *path, const char *text)
{
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        bool ok;

        if (fd < 0)
                return false;
        ok = write(fd, text, strlen(text)) == (ssize_t)strlen(text);
        return close(fd) == 0 && ok;
}

#define SKIP_STATUS 77

/* The daemon started in a user namespace, killed at exit if a failed test left it running. */
static pid_t userns_daemon;

static void kill_userns_daemon(void)
{
        if (userns_daemon > 0) {
                kill(userns_daemon, SIGKILL);
                waitpid(userns_daemon, NULL, 0);
        }
}

/*
 * Starts the daemon in a user namespace of its own (root mapped to root) whose inotify watch
 * limit is max_watches. Skips the test where user namespaces are not available.
 */
static void start_in_userns(struct tu_daemon *d, unsigned max_watches)
{
        pid_t pid = fork();
        char limit[32];

        assert_true(pid >= 0);
        snprintf(limit, sizeof limit, "%u", max_watches);
        if (pid == 0) {
                int fd = open(d->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
                char map[64];

                snprintf(map, sizeof map, "0 %d 1", (int)getuid());
                if (unshare(CLONE_NEWUSER) < 0 || !put("/proc/self/setgroups", "deny") ||
                    !put("/proc/self/uid_map", map) || !put("/proc/self/gid_map", map) ||
                    !put("/proc/sys/user/max_inotify_watches", limit))
                        _exit(SKIP_STATUS);
                if (fd >= 0) {
                        dup2(fd, STDERR_FILENO);
                        dup2(fd, STDOUT_FILENO);
                }
                execl(IMGD_BUILD_DIR "/imgd", "imgd", "-v", "-c", d->config, (char *)NULL);
                _exit(127);
        }
        for (int i = 0; i < 2000; i++) {
                int status;

                int rc = tu_imgctl(d, NULL, "status", NULL);

                /* 1: an alert is active, such as the unwatched folders' one. */
                if (rc == 0 || rc == 1) {
                        d->pid = userns_daemon = pid;
                        atexit(kill_userns_daemon);
                        return;
                }
                if (waitpid(pid, &status, WNOHANG) == pid) {
                        if (WIFEXITED(status) && WEXITSTATUS(status) == SKIP_STATUS)
                                skip(); /* no user namespaces here */
                        fail_with_log(d, NULL, "imgd exited during start-up");
                }
                usleep(10 * 1000);
        }
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        fail_msg("imgd did not answer within 20 s");
}

/* Sets the inotify watch limit of the daemon's user namespace. */
static void set_watch_limit(struct tu_daemon *d, unsigned max_watches)
{
        pid_t pid = fork();
        int status;

        assert_true(pid >= 0);
        if (pid == 0) {
                char ns[64], limit[32];
                int fd;

                snprintf(ns, sizeof ns, "/proc/%d/ns/user", (int)d->pid);
                snprintf(limit, sizeof limit, "%u", max_watches);
                fd = open(ns, O_RDONLY | O_CLOEXEC);
                if (fd < 0 || setns(fd, CLONE_NEWUSER) < 0 ||
                    !put("/proc/sys/user/max_inotify_watches", limit))
                        _exit(1);
                _exit(0);
        }
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static void drop_in(struct tu_daemon *d, unsigned dir, const char *name)
{
        char *p = tu_path("%s/s%u/%s.jpg", d->uploads, dir, name);
        char *content = tu_path("%u %s", dir, name);

        tu_write_file(p, content, (size_t)-1);
        free(content);
        free(p);
}

static json_t *wait_unwatched(struct tu_daemon *d, json_int_t n, unsigned timeout_s)
{
        int64_t until = tu_now_us() + (int64_t)timeout_s * 1000000;

        for (;;) {
                json_t *st = status_json(d, NULL);

                if (status_int(st, "unwatched_folders") == n)
                        return st;
                if (tu_now_us() > until)
                        fail_with_log(d, st, "unwatched_folders did not reach its count");
                json_decref(st);
                usleep(200 * 1000);
        }
}

static void test_unwatched_folders(void **state)
{
        struct tu_daemon d;
        const char *msg;
        json_t *st;

        (void)state;
        if (geteuid() != 0)
                skip(); /* the user namespace maps root to root */
        tu_daemon_setup(&d, "( { name = \"s\"; width = 8; height = 8; format = \"png\"; } )", 1,
                        "unwatched_scan_interval = 2;");
        /* The upload folder and two more: of five new folders, three cannot be watched. */
        start_in_userns(&d, 3);
        assert_int_equal(tu_imgctl(&d, NULL, "pause", NULL), 0); /* intake alone is tested */
        for (unsigned i = 0; i < 5; i++) {
                char *p = tu_path("%s/s%u", d.uploads, i);
                assert_int_equal(mkdir(p, 0755), 0);
                free(p);
        }
        st = wait_unwatched(&d, 3, 30);
        json_decref(st);
        assert_true(tu_log_contains(&d, "inotify watch limit reached"));

        /* Uploads in every folder are taken in, the unwatched ones by the periodic scan. */
        for (unsigned i = 0; i < 5; i++) {
                drop_in(&d, i, "a");
                drop_in(&d, i, "b");
        }
        st = wait_queued(&d, 10, 30);
        json_decref(st);
        drop_in(&d, 4, "later"); /* and later ones too */
        st = wait_queued(&d, 11, 30);
        assert_int_equal(status_int(st, "unwatched_folders"), 3);
        msg = alert_message(st, "unwatched_folders");
        if (!msg || !strstr(msg, "3 folder(s) not watched") || !strstr(msg, "inotify watch limit"))
                fail_with_log(&d, st, "no alert for the unwatched folders");
        json_decref(st);

        /* The limit is raised: the next scan watches them, the alert goes. */
        set_watch_limit(&d, 100);
        st = wait_unwatched(&d, 0, 30);
        assert_null(alert_message(st, "unwatched_folders"));
        json_decref(st);
        assert_true(tu_log_contains(&d, "watching "));
        drop_in(&d, 3, "watched");
        st = wait_queued(&d, 12, 30);
        json_decref(st);
        assert_once_each(&d, 12);
        tu_daemon_cleanup(&d);
        userns_daemon = 0;
}

/* Waits up to timeout_s until the ledger holds n jobs, none of them queued or running. */
static void wait_jobs_finished(struct tu_daemon *d, int64_t n, unsigned timeout_s)
{
        int64_t until = tu_now_us() + (int64_t)timeout_s * 1000000;

        while (ledger_int(d, "SELECT count(*) FROM jobs") != n ||
               ledger_int(d, "SELECT count(*) FROM jobs WHERE state IN ('queued', 'retry', "
                             "'running')") != 0) {
                if (tu_now_us() > until) {
                        char what[128];
                        snprintf(what, sizeof what, "not %lld jobs finished within %u s",
                                 (long long)n, timeout_s);
                        fail_with_log(d, NULL, what);
                }
                usleep(200 * 1000);
        }
}

/*
 * Issue 13 (j): imgd started on a tree of more folders than the inotify watch limit allows
 * (31 folders, 10 watches: the machine's fs.inotify.max_user_watches is not touched, the
 * daemon's user namespace has the limit) starts, says which limit ran short and names the
 * first folder not watched (log, status alert), raises the unwatched_folders alert in the
 * metrics (imgd_alert) as in status, and loses nothing: every upload there at the start, and
 * every one made later in any folder, is done once.
 */
static void test_unwatched_at_start(void **state)
{
        enum { DIRS = 30, LIMIT = 10 };
        struct tu_daemon d;
        const char *msg;
        char *out = NULL, *first;
        json_t *st;
        unsigned n = 0;

        (void)state;
        if (geteuid() != 0)
                skip(); /* the user namespace maps root to root */
        tu_daemon_setup(&d, "( { name = \"s\"; width = 8; height = 8; format = \"png\"; } )", 1,
                        "unwatched_scan_interval = 2;");
        for (unsigned i = 0; i < DIRS; i++)
                for (unsigned k = 0; k < 2; k++, n++) {
                        char *p = tu_path("%s/d%02u/before%u.png", d.uploads, i, k);

                        tu_make_image(p, 10 + i, 10 + k, "png", false);
                        free(p);
                }
        start_in_userns(&d, LIMIT);
        wait_jobs_finished(&d, n, 120);
        st = wait_unwatched(&d, DIRS + 1 - LIMIT, 30);
        msg = alert_message(st, "unwatched_folders");
        /* The folders are watched in name order: the first not watched is d09. */
        first = tu_path("(first: %s/d%02u)", d.uploads, LIMIT - 1);
        if (!msg || !strstr(msg, "21 folder(s) not watched") || !strstr(msg, first) ||
            !strstr(msg, "fs.inotify.max_user_watches") || !strstr(msg, "scanned every 2 s"))
                fail_with_log(&d, st, "the alert does not name the limit and the folders");
        json_decref(st);
        assert_true(tu_log_contains(&d, "inotify watch limit reached"));
        assert_int_equal(tu_imgctl(&d, &out, "metrics", NULL), 0);
        if (!strstr(out, "imgd_alert{alert=\"unwatched_folders\"} 1\n") ||
            !strstr(out, "imgd_unwatched_folders 21\n"))
                fail_msg("metrics:\n%s", out);
        free(out);

        /* Later uploads, in every folder: watched or not, each is done once. */
        for (unsigned i = 0; i < DIRS; i++, n++) {
                char *p = tu_path("%s/d%02u/after.png", d.uploads, i);

                tu_make_image(p, 30 + i, 20, "png", false);
                free(p);
        }
        wait_jobs_finished(&d, n, 120);
        assert_once_each(&d, n);
        assert_int_equal(ledger_int(&d, "SELECT count(*) FROM jobs WHERE state = 'done'"), n);
        free(first);
        tu_daemon_cleanup(&d);
        userns_daemon = 0;
}

/*
 * A file its writer has not finished when imgd finds it by a walk (the start-up scan here,
 * the walk of a folder made and filled at once in the second part) is taken when complete:
 * one job, done at the first attempt, no failed job for the half of it that was there. Before
 * files found by walks waited to settle, each half-written file became a dead job ("libpng
 * read error") and a second job once it was closed.
 */
static void test_half_written_when_found(void **state)
{
        struct tu_daemon d;
        char *sample, *data, *at_start, *in_new, *dir;
        size_t len;
        int fd;

        (void)state;
        tu_daemon_setup(&d, "( { name = \"s\"; width = 8; height = 8; format = \"png\"; } )", 1,
                        NULL);
        sample = tu_path("%s/sample.png", d.root);
        tu_make_image(sample, 64, 48, "png", false);
        data = tu_read_file(sample, &len);
        at_start = tu_path("%s/at-start.png", d.uploads);
        fd = open(at_start, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, data, len / 2), (ssize_t)(len / 2));
        tu_daemon_start(&d);
        usleep(1000 * 1000);
        assert_int_equal(write(fd, data + len / 2, len - len / 2), (ssize_t)(len - len / 2));
        close(fd);

        dir = tu_path("%s/new", d.uploads);
        in_new = tu_path("%s/in-new.png", dir);
        assert_int_equal(mkdir(dir, 0755), 0);
        fd = open(in_new, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, data, len / 2), (ssize_t)(len / 2));
        usleep(1000 * 1000); /* the folder's walk has met the half */
        assert_int_equal(write(fd, data + len / 2, len - len / 2), (ssize_t)(len - len / 2));
        close(fd);

        tu_daemon_wait_idle(&d, 60);
        wait_jobs_finished(&d, 2, 60);
        if (ledger_int(&d, "SELECT count(*) FROM jobs WHERE state = 'done' AND attempts = 1") != 2)
                fail_with_log(&d, NULL, "not one job done at the first attempt per file");
        assert_once_each(&d, 2);
        assert_false(tu_log_contains(&d, "error"));
        free(sample), free(data), free(at_start), free(in_new), free(dir);
        tu_daemon_cleanup(&d);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_scan_tree),
                cmocka_unit_test(test_scan_settles),
                cmocka_unit_test(test_overflow_rescan),
                cmocka_unit_test(test_unwatched_folders),
                cmocka_unit_test(test_unwatched_at_start),
                cmocka_unit_test(test_half_written_when_found),
        };

        /* IMGD_TEST_FILTER=test_scan_* runs only the cases whose names match. */
        if (getenv("IMGD_TEST_FILTER"))
                cmocka_set_test_filter(getenv("IMGD_TEST_FILTER"));
        return cmocka_run_group_tests(tests, NULL, NULL);
}
