/* SPDX-License-Identifier: MIT */
/*
 * test-adversarial.c - the adversarial battery, quick size, against the real daemon: each
 * case states what a trustworthy daemon must do when uploads arrive the way an adversary (or
 * an unlucky day) delivers them, and checks it on the ledger, the output tree and `imgctl
 * verify`. The full sizes (50,000 files) are scripts/adversarial.sh.
 *
 *   - a burst that overflows the inotify queue, flat and in new sub-folders: every file done
 *     exactly once, nothing left half-published;
 *   - folders renamed into, within and out of the watched tree: what comes in is processed,
 *     what is renamed within stays watched, what leaves is no longer watched;
 *   - a source truncated, overwritten, deleted and replaced 20 times a second while its jobs
 *     run: the newest content wins and nothing stale is left published.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shared/hash.h"
#include "testutil.h"

#define PIPE "( { name = \"s\"; width = 48; height = 48; fit = \"inside\"; format = \"webp\"; } )"

/* The kernel's default fs.inotify.max_queued_events is 16384: a burst of more events than
 * that while the daemon does not read overflows its queue. */
#define OVERFLOW_EVENTS 20000

static int64_t query(struct tu_daemon *d, const char *sql)
{
        char *db_path = tu_path("%s/imgd.db", d->state);
        sqlite3 *db;
        sqlite3_stmt *st;
        int64_t v = -1;

        assert_int_equal(sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
        if (sqlite3_step(st) == SQLITE_ROW)
                v = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        sqlite3_close(db);
        free(db_path);
        return v;
}

/* The daemon's log, for a failure message; caller frees. */
static char *log_of(struct tu_daemon *d)
{
        char *log = tu_read_file(d->log, NULL);
        return log ? log : strdup("");
}

/* `imgctl verify` finds every recorded output and nothing else wrong. */
static void assert_verify_clean(struct tu_daemon *d)
{
        char *out = NULL;
        int r = tu_imgctl(d, &out, "verify", NULL);

        if (r != 0)
                fail_msg("imgctl verify exited %d:\n%s", r, out ? out : "");
        free(out);
}

/*
 * Closes each of the n files after opening it for writing, round after round, until `events`
 * IN_CLOSE_WRITE events are queued: the kernel coalesces only an event identical to the last
 * one queued, so going round the files keeps every one.
 */
static void churn_close_write(char **paths, unsigned n, unsigned events)
{
        for (unsigned k = 0; k < events; k++) {
                int fd = open(paths[k % n], O_WRONLY | O_CLOEXEC);
                assert_true(fd >= 0);
                close(fd);
        }
}

/* Each of the n paths: one job, done at the first attempt, its output and manifest there. */
static void assert_each_done_once(struct tu_daemon *d, unsigned n)
{
        int64_t jobs = query(d, "SELECT count(*) FROM jobs");
        int64_t done = query(d, "SELECT count(*) FROM jobs WHERE state = 'done' AND attempts = 1");

        if (jobs != n || done != n) {
                char *log = log_of(d);
                fail_msg("%lld jobs, %lld done at the first attempt, for %u files; log:\n%s",
                         (long long)jobs, (long long)done, n, log);
        }
        assert_int_equal(query(d, "SELECT count(DISTINCT source_path) FROM jobs"), n);
        assert_int_equal(tu_count_files(d->media, "*_s.webp"), n);
        assert_int_equal(tu_count_files(d->media, "*.manifest.json"), n);
        assert_int_equal(tu_count_files(d->media, ".imgd-*"), 0);
        assert_verify_clean(d);
}

/*
 * A burst of 200 uploads whose events overflow the inotify queue while the daemon is stopped:
 * the overflow is noticed, the tree rescanned, and every file is done exactly once (the
 * repeated close-after-write events of one unchanged file make no second job).
 */
static void test_overflow_flat(void **state)
{
        struct tu_daemon d;
        enum { N = 200 };
        char *paths[N];

        (void)state;
        tu_daemon_setup(&d, PIPE, 2, NULL);
        tu_daemon_start(&d);
        assert_int_equal(kill(d.pid, SIGSTOP), 0);
        for (unsigned i = 0; i < N; i++) {
                paths[i] = tu_path("%s/burst%03u.png", d.uploads, i);
                tu_make_image(paths[i], 40 + i % 50, 30 + i % 40, "png", false);
        }
        churn_close_write(paths, N, OVERFLOW_EVENTS);
        assert_int_equal(kill(d.pid, SIGCONT), 0);
        tu_daemon_wait_idle(&d, 300);
        assert_true(tu_log_contains(&d, "inotify queue overflowed"));
        assert_each_done_once(&d, N);
        for (unsigned i = 0; i < N; i++)
                free(paths[i]);
        tu_daemon_cleanup(&d);
}

/*
 * The same overflow while 20 new sub-folders (two levels deep) are made and filled: folders
 * whose creation events were lost are found and watched by the rescan, their files are done
 * exactly once, and a file dropped into one of them afterwards is seen by inotify.
 */
static void test_overflow_new_subfolders(void **state)
{
        struct tu_daemon d;
        enum { DIRS = 20, PER = 8, TOP = 20, N = DIRS * PER + TOP };
        char *paths[N], *late, *out;

        (void)state;
        tu_daemon_setup(&d, PIPE, 2, NULL);
        tu_daemon_start(&d);
        assert_int_equal(kill(d.pid, SIGSTOP), 0);
        for (unsigned i = 0; i < N; i++) {
                if (i < TOP)
                        paths[i] = tu_path("%s/top%03u.png", d.uploads, i);
                else
                        paths[i] =
                                tu_path("%s/d%02u/inner/f%03u.png", d.uploads, (i - TOP) / PER, i);
                tu_make_image(paths[i], 40 + i % 50, 30 + i % 40, "png", false);
        }
        /* The new folders are not watched yet: the events come from the top folder's files. */
        churn_close_write(paths, TOP, OVERFLOW_EVENTS);
        assert_int_equal(kill(d.pid, SIGCONT), 0);
        tu_daemon_wait_idle(&d, 300);
        assert_true(tu_log_contains(&d, "inotify queue overflowed"));
        assert_each_done_once(&d, N);

        /* The rescan watches the new folders: a later upload there is seen at once. */
        late = tu_path("%s/d07/inner/late.png", d.uploads);
        tu_make_image(late, 64, 64, "png", false);
        out = tu_path("%s/d07/inner/late_s.webp", d.media);
        for (int waited = 0; access(out, F_OK) != 0; waited += 50) {
                if (waited > 30000) {
                        char *log = log_of(&d);
                        fail_msg("%s was not published; log:\n%s", out, log);
                }
                usleep(50 * 1000);
        }
        tu_daemon_wait_idle(&d, 60);
        assert_each_done_once(&d, N + 1);
        for (unsigned i = 0; i < N; i++)
                free(paths[i]);
        free(late);
        free(out);
        tu_daemon_cleanup(&d);
}

/* Waits until the daemon has published `rel`'s output below media (fails after 30 s). */
static void wait_published(struct tu_daemon *d, const char *rel)
{
        char *out = tu_path("%s/%s_s.webp", d->media, rel);

        for (int waited = 0; access(out, F_OK) != 0; waited += 50) {
                if (waited > 30000) {
                        char *log = log_of(d);
                        fail_msg("%s was not published; log:\n%s", out, log);
                }
                usleep(50 * 1000);
        }
        free(out);
}

/*
 * Folders renamed into the tree are processed with everything in them; a folder renamed
 * within the tree stays watched under its new name; a folder renamed out of it is no longer
 * watched (what is written there afterwards is not the daemon's), while the tree still is.
 */
static void test_folders_renamed(void **state)
{
        struct tu_daemon d;
        char *outside, *inside, *within, *gone, *p;

        (void)state;
        tu_daemon_setup(&d, PIPE, 2, NULL);
        tu_daemon_start(&d);

        /* Into: a folder filled elsewhere (on the same file system) and moved in. */
        outside = tu_path("%s/staging/album", d.root);
        for (unsigned i = 0; i < 3; i++) {
                p = tu_path("%s/deeper/a%u.png", outside, i);
                tu_make_image(p, 60 + i, 40, "png", false);
                free(p);
        }
        inside = tu_path("%s/album", d.uploads);
        assert_int_equal(rename(outside, inside), 0);
        for (unsigned i = 0; i < 3; i++) {
                p = tu_path("album/deeper/a%u", i);
                wait_published(&d, p);
                free(p);
        }

        /* Within: renamed, then written to under the new name. */
        within = tu_path("%s/album-2026", d.uploads);
        assert_int_equal(rename(inside, within), 0);
        p = tu_path("%s/deeper/new.png", within);
        tu_make_image(p, 70, 50, "png", false);
        free(p);
        wait_published(&d, "album-2026/deeper/new");

        /* Out of: moved away, then written to; the tree itself is still watched. */
        gone = tu_path("%s/moved-out", d.root);
        assert_int_equal(rename(within, gone), 0);
        p = tu_path("%s/deeper/after.png", gone);
        tu_make_image(p, 80, 50, "png", false);
        free(p);
        p = tu_path("%s/sentinel.png", d.uploads);
        tu_make_image(p, 90, 50, "png", false);
        free(p);
        wait_published(&d, "sentinel");
        tu_daemon_wait_idle(&d, 60);
        assert_int_equal(query(&d, "SELECT count(*) FROM jobs WHERE source_path LIKE "
                                   "'%after.png'"),
                         0);
        assert_int_equal(query(&d, "SELECT count(*) FROM jobs WHERE state <> 'done'"), 0);
        /* Renamed within: the files are sources under their new names (each a job of its
         * own, as any new name is); the new one once. */
        assert_int_equal(query(&d, "SELECT count(*) FROM jobs WHERE source_path LIKE "
                                   "'%/album-2026/deeper/%'"),
                         4);
        assert_int_equal(query(&d, "SELECT count(*) FROM jobs WHERE source_path LIKE "
                                   "'%/album/deeper/%'"),
                         3);
        assert_int_equal(tu_count_files(d.media, ".imgd-*"), 0);

        free(outside);
        free(inside);
        free(within);
        free(gone);
        tu_daemon_cleanup(&d);
}

/* SHA-256 of a file's content, in hex. */
static void sha256_of(const char *path, char hex[static HASH_HEX_SIZE])
{
        int fd = open(path, O_RDONLY | O_CLOEXEC);

        assert_true(fd >= 0);
        assert_int_equal(hash_sha256_fd(fd, UINT64_MAX, hex), 0);
        close(fd);
}

/*
 * One source truncated, overwritten in place, deleted and replaced by rename, 20 times a
 * second for 3 s while its jobs run, then replaced a last time: what is published for it in
 * the end is made from the last content (the manifest names its SHA-256, the output has its
 * proportions), and nothing is left half-done.
 */
static void test_source_churn(void **state)
{
        struct tu_daemon d;
        char *src, *tmp, *manifest_path, *out, final_sha[HASH_HEX_SIZE];
        const char *recorded;
        json_t *manifest;
        unsigned w = 0, h = 0;
        int64_t start = tu_now_us();

        (void)state;
        tu_daemon_setup(&d, PIPE, 1, NULL);
        tu_daemon_start(&d);
        src = tu_path("%s/churn.png", d.uploads);
        tmp = tu_path("%s/churn-next.png", d.root);
        for (unsigned k = 0; tu_now_us() - start < 3000000; k++) {
                switch (k % 4) {
                case 0: /* overwritten in place */
                        tu_make_image(src, 300 + k, 200, "png", false);
                        break;
                case 1: /* truncated */
                        (void)truncate(src, 0);
                        break;
                case 2: /* deleted */
                        (void)unlink(src);
                        break;
                case 3: /* replaced by rename */
                        tu_make_image(tmp, 200, 300 + k, "png", false);
                        assert_int_equal(rename(tmp, src), 0);
                        break;
                }
                usleep(50 * 1000);
        }
        /* The last word: 480 x 120, a shape none of the churn had. */
        tu_make_image(tmp, 480, 120, "png", false);
        assert_int_equal(rename(tmp, src), 0);
        sha256_of(src, final_sha);
        tu_daemon_wait_idle(&d, 120);

        manifest_path = tu_path("%s/churn.manifest.json", d.media);
        manifest = json_load_file(manifest_path, 0, NULL);
        assert_non_null(manifest);
        recorded = json_string_value(json_object_get(manifest, "source_sha256"));
        assert_non_null(recorded);
        if (strcmp(recorded, final_sha) != 0) {
                char *log = log_of(&d);
                fail_msg("published from %s, the last content is %s; log:\n%s", recorded, final_sha,
                         log);
        }
        out = tu_path("%s/churn_s.webp", d.media);
        assert_true(tu_image_props(out, &w, &h, NULL, 0, NULL, NULL));
        assert_int_equal(w, 48);
        assert_int_equal(h, 12);
        assert_int_equal(query(&d, "SELECT count(*) FROM jobs WHERE state IN "
                                   "('queued', 'running', 'retry')"),
                         0);
        assert_int_equal(tu_count_files(d.media, ".imgd-*"), 0);
        assert_int_equal(tu_count_files(d.media, "*_s.webp"), 1);
        assert_verify_clean(&d);

        json_decref(manifest);
        free(manifest_path);
        free(out);
        free(src);
        free(tmp);
        tu_daemon_cleanup(&d);
}

/* ---- the state directory's storage ----------------------------------------------------- */

/* Moves n images made in root/staging into uploads (each complete at once: IN_MOVED_TO). */
static void drop_images(struct tu_daemon *d, const char *prefix, unsigned n)
{
        for (unsigned i = 0; i < n; i++) {
                char *tmp = tu_path("%s/staging/%s%03u.png", d->root, prefix, i);
                char *dst = tu_path("%s/%s%03u.png", d->uploads, prefix, i);

                tu_make_image(tmp, 40 + i % 30, 30 + i % 20, "png", false);
                assert_int_equal(rename(tmp, dst), 0);
                free(tmp);
                free(dst);
        }
}

/* Waits until the daemon's log holds `text` (fails after timeout_ms). */
static void wait_log(struct tu_daemon *d, const char *text, int timeout_ms)
{
        for (int waited = 0; !tu_log_contains(d, text); waited += 50) {
                if (waited > timeout_ms) {
                        char *log = log_of(d);
                        fail_msg("the log does not say \"%s\" within %d ms:\n%s", text, timeout_ms,
                                 log);
                }
                usleep(50 * 1000);
        }
}

static int compare_strings(const void *a, const void *b)
{
        return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * "name:inode " for each output in media (flat), sorted by name; caller frees. A job rendered
 * and published again replaces its outputs by new files: the signature changes.
 */
static char *outputs_signature(struct tu_daemon *d)
{
        DIR *dir = opendir(d->media);
        struct dirent *de;
        char **names = NULL, *sig;
        size_t n = 0, len = 0;

        assert_non_null(dir);
        while ((de = readdir(dir))) {
                if (!strstr(de->d_name, "_s.webp"))
                        continue;
                names = realloc(names, (n + 1) * sizeof *names);
                assert_non_null(names);
                names[n++] = tu_path("%s:%llu ", de->d_name, (unsigned long long)de->d_ino);
        }
        closedir(dir);
        qsort(names, n, sizeof *names, compare_strings);
        for (size_t i = 0; i < n; i++)
                len += strlen(names[i]);
        sig = calloc(1, len + 1);
        assert_non_null(sig);
        for (size_t i = 0; i < n; i++) {
                strcat(sig, names[i]);
                free(names[i]);
        }
        free(names);
        return sig;
}

/* Kills the daemon with SIGKILL (a crash: nothing is closed or checkpointed) and starts it
 * again on the same tree. */
static void crash_and_restart(struct tu_daemon *d)
{
        int status = tu_daemon_stop(d, SIGKILL);

        assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        tu_daemon_start(d);
}

/*
 * The ledger's write-ahead log deleted under the running daemon (`rm STATE/imgd.db-wal`):
 * SQLite would go on writing into the unlinked file, and every transition since the last
 * checkpoint would be lost with the next crash. A trustworthy daemon notices, says so naming
 * the file, checkpoints what the unlinked log holds into the database while it still can and
 * starts a new log. Checked twice: the log deleted while idle (its earlier commits must
 * survive a kill -9 a few seconds later), and deleted with uploads arriving after it (their
 * jobs must survive a kill -9 right after they are done). Every job done exactly once.
 */
static void test_wal_deleted(void **state)
{
        struct tu_daemon d;
        char *wal, *before, *after;

        (void)state;
        tu_daemon_setup(&d, PIPE, 2, NULL);
        wal = tu_path("%s/imgd.db-wal", d.state);
        tu_daemon_start(&d);

        /* Idle: ten jobs done, their commits in the log; the log deleted, then a crash. */
        drop_images(&d, "idle", 10);
        tu_daemon_wait_idle(&d, 120);
        before = outputs_signature(&d);
        assert_int_equal(unlink(wal), 0);
        wait_log(&d, "imgd.db-wal was removed", 10000);
        crash_and_restart(&d);
        tu_daemon_wait_idle(&d, 120);
        assert_each_done_once(&d, 10);
        /* Not rendered and published a second time because the ledger forgot them. */
        after = outputs_signature(&d);
        if (strcmp(before, after) != 0) {
                char *log = log_of(&d);
                fail_msg("outputs published again after the restart:\nbefore %s\nafter  %s\n"
                         "log:\n%s",
                         before, after, log);
        }
        free(before);
        free(after);

        /* Busy: the log deleted, then ten more uploads done, then a crash at once. */
        assert_int_equal(unlink(wal), 0);
        drop_images(&d, "busy", 10);
        tu_daemon_wait_idle(&d, 120);
        before = outputs_signature(&d);
        crash_and_restart(&d);
        tu_daemon_wait_idle(&d, 120);
        assert_each_done_once(&d, 20);
        after = outputs_signature(&d);
        if (strcmp(before, after) != 0) {
                char *log = log_of(&d);
                fail_msg("outputs published again after the restart:\nbefore %s\nafter  %s\n"
                         "log:\n%s",
                         before, after, log);
        }
        assert_int_equal(access(wal, F_OK), 0);

        free(before);
        free(after);
        free(wal);
        tu_daemon_cleanup(&d);
}

/*
 * The WAL index deleted under the running daemon (`rm STATE/imgd.db-shm`): imgd's own
 * connection keeps the mapping it has, so the ledger stays durable, but no new index can be
 * made while it runs. A trustworthy daemon says so, naming the file and what it means, and
 * loses nothing: uploads after it are done exactly once across a kill -9 and a restart, which
 * makes the index again.
 */
static void test_shm_deleted(void **state)
{
        struct tu_daemon d;
        char *shm, *before, *after;

        (void)state;
        tu_daemon_setup(&d, PIPE, 2, NULL);
        shm = tu_path("%s/imgd.db-shm", d.state);
        tu_daemon_start(&d);
        drop_images(&d, "first", 5);
        tu_daemon_wait_idle(&d, 120);
        assert_int_equal(unlink(shm), 0);
        wait_log(&d, "imgd.db-shm was removed", 10000);
        drop_images(&d, "then", 5);
        tu_daemon_wait_idle(&d, 120);
        before = outputs_signature(&d);
        crash_and_restart(&d);
        tu_daemon_wait_idle(&d, 120);
        assert_int_equal(access(shm, F_OK), 0);
        assert_each_done_once(&d, 10);
        after = outputs_signature(&d);
        assert_string_equal(before, after);
        free(before);
        free(after);
        free(shm);
        tu_daemon_cleanup(&d);
}

/* The daemon's answer to `imgctl status --json` (which exits 1 while an alert is active). */
static json_t *status_json(struct tu_daemon *d)
{
        char *out = NULL;
        json_error_t err;
        json_t *j;
        int r = tu_imgctl(d, &out, "status", "--json", NULL);

        if (r != 0 && r != 1)
                fail_msg("imgctl status failed (%d): %s", r, out ? out : "");
        j = json_loads(out, 0, &err);
        if (!j)
                fail_msg("imgctl status --json printed no JSON (%s): %s", err.text, out);
        free(out);
        return j;
}

/* The messages of the active alerts in a status answer, one a line; caller frees. */
static char *alert_messages(const json_t *status)
{
        const json_t *alerts = json_object_get(status, "alerts");
        char *all = strdup("");

        for (size_t i = 0; i < json_array_size(alerts); i++) {
                const json_t *a = json_array_get(alerts, i);
                char *next = tu_path("%s%s: %s\n", all,
                                     json_string_value(json_object_get(a, "alert")) ?: "?",
                                     json_string_value(json_object_get(a, "message")) ?: "?");
                free(all);
                all = next;
        }
        return all;
}

/* PRAGMA integrity_check of the ledger is "ok". */
static void assert_ledger_intact(struct tu_daemon *d)
{
        char *db_path = tu_path("%s/imgd.db", d->state);
        sqlite3 *db;
        sqlite3_stmt *st;

        assert_int_equal(sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
        sqlite3_busy_timeout(db, 5000);
        assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL),
                         SQLITE_OK);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        assert_string_equal((const char *)sqlite3_column_text(st, 0), "ok");
        sqlite3_finalize(st);
        sqlite3_close(db);
        free(db_path);
}

static json_int_t jobs_in(const json_t *status, const char *state)
{
        return json_integer_value(json_object_get(json_object_get(status, "jobs"), state));
}

/* Waits until status counts at least n jobs in `state` (fails after 30 s). */
static void wait_jobs_at_least(struct tu_daemon *d, const char *state, json_int_t n)
{
        for (int waited = 0;; waited += 50) {
                json_t *st = status_json(d);
                json_int_t k = jobs_in(st, state);

                json_decref(st);
                if (k >= n)
                        return;
                if (waited > 30000) {
                        char *log = log_of(d);
                        fail_msg("%lld jobs %s, not %lld or more; log:\n%s", (long long)k, state,
                                 (long long)n, log);
                }
                usleep(50 * 1000);
        }
}

/* Waits until status counts n jobs in `state` (fails after 30 s). */
static void wait_jobs(struct tu_daemon *d, const char *state, json_int_t n)
{
        for (int waited = 0;; waited += 50) {
                json_t *st = status_json(d);
                json_int_t k = jobs_in(st, state);

                json_decref(st);
                if (k == n)
                        return;
                if (waited > 30000) {
                        char *log = log_of(d);
                        fail_msg("%lld jobs %s, not %lld; log:\n%s", (long long)k, state,
                                 (long long)n, log);
                }
                usleep(50 * 1000);
        }
}

/* Stops (SIGSTOP) or continues (SIGCONT) the daemon's workers. */
static void signal_workers(struct tu_daemon *d, int sig)
{
        pid_t pids[16];
        unsigned k = tu_daemon_children(d, pids, 16);

        for (unsigned i = 0; i < k; i++)
                kill(pids[i], sig);
}

/* Starts the daemon with the fsshim (tests/tools/fsshim.c) acting on its state directory:
 * `var` (IMGD_SHIM_EROFS or IMGD_SHIM_ENOSPC) names the flag file that turns the fault on. */
static void start_with_shim(struct tu_daemon *d, const char *var, const char *flag)
{
        setenv("LD_PRELOAD", IMGD_FSSHIM, 1);
        setenv("ASAN_OPTIONS", "verify_asan_link_order=0:detect_leaks=0", 1);
        setenv("IMGD_SHIM_ROOT", d->state, 1);
        setenv(var, flag, 1);
        tu_daemon_start(d);
        unsetenv("LD_PRELOAD");
        unsetenv("ASAN_OPTIONS");
        unsetenv("IMGD_SHIM_ROOT");
        unsetenv(var);
}

/*
 * The state directory's file system turns read-only under the running daemon (as the kernel
 * does after an error, with errors=remount-ro: the files open stay open, every write fails
 * with EROFS), with jobs in flight and uploads arriving. A trustworthy daemon keeps the
 * ledger intact, says what is wrong naming the ledger file and the cause (log, and an alert
 * in `imgctl status`), fails no job for it (nothing retried with an attempt used, nothing
 * dead): work waits and intake is retried; once the file system is writable again every
 * upload is done exactly once.
 */
static void test_ledger_read_only(void **state)
{
        const unsigned before = 6, inflight = 6, during = 8;
        struct tu_daemon d;
        char *flag, *alerts, *text;
        json_t *st;

        (void)state;
        tu_daemon_setup(&d, PIPE, 2, "retry = { base_delay_ms = 200; max_delay_ms = 2000; };\n");
        assert_int_equal(mkdir(d.state, 0750), 0);
        flag = tu_path("%s/state-read-only", d.root);
        start_with_shim(&d, "IMGD_SHIM_EROFS", flag);
        drop_images(&d, "before", before);
        tu_daemon_wait_idle(&d, 120);

        /* Uploads taken in; the file system turns read-only while the workers render the
         * first two of them (held with SIGSTOP until then), then more arrive. */
        assert_int_equal(tu_imgctl(&d, NULL, "pause", NULL), 0);
        drop_images(&d, "inflight", inflight);
        wait_jobs(&d, "queued", inflight);
        signal_workers(&d, SIGSTOP);
        assert_int_equal(tu_imgctl(&d, NULL, "resume", NULL), 0);
        wait_jobs(&d, "running", 2);
        tu_write_file(flag, "", 0);
        signal_workers(&d, SIGCONT);
        drop_images(&d, "during", during);
        sleep(4);
        assert_int_equal(query(&d, "SELECT count(*) FROM jobs WHERE state IN ('dead', 'retry') "
                                   "OR attempts > 1"),
                         0);

        st = status_json(&d);
        alerts = alert_messages(st);
        text = log_of(&d);
        if (!strstr(text, "imgd.db") || !strstr(text, "Read-only file system"))
                fail_msg("the log does not name the ledger and EROFS:\n%s", text);
        if (!strstr(alerts, "imgd.db") || !strstr(alerts, "Read-only file system"))
                fail_msg("no alert names the ledger and EROFS:\n%s\nlog:\n%s", alerts, text);
        free(alerts);
        free(text);
        json_decref(st);
        /* The alert is one of health.h's list: in the metrics too, as every alert is. */
        {
                char *metrics = NULL;

                assert_int_equal(tu_imgctl(&d, &metrics, "metrics", NULL), 0);
                if (!strstr(metrics, "imgd_alert{alert=\"ledger_failing\"} 1\n"))
                        fail_msg("imgd_alert{alert=\"ledger_failing\"} is not 1:\n%s", metrics);
                free(metrics);
        }

        /* Writable again: everything done, once, at the first attempt. */
        assert_int_equal(unlink(flag), 0);
        for (int waited = 0;; waited += 500) {
                st = status_json(&d);
                json_int_t done = jobs_in(st, "done"), running = jobs_in(st, "running");
                json_decref(st);
                if (done >= before + inflight + during && running == 0)
                        break;
                if (waited > 120000) {
                        char *log = log_of(&d);
                        fail_msg("%lld of %u done 120 s after the file system was writable "
                                 "again; log:\n%s",
                                 (long long)done, before + inflight + during, log);
                }
                usleep(500 * 1000);
        }
        tu_daemon_wait_idle(&d, 60);
        assert_each_done_once(&d, before + inflight + during);
        assert_ledger_intact(&d);
        st = status_json(&d);
        alerts = alert_messages(st);
        if (strstr(alerts, "imgd.db"))
                fail_msg("the ledger's alert outlived the fault:\n%s", alerts);
        free(alerts);
        json_decref(st);
        free(flag);
        tu_daemon_cleanup(&d);
}

/*
 * The same between publication and the ledger's record of it: the job's outputs are in
 * place when the file system turns read-only, and its completion cannot be committed. The
 * job must not be left running until its lease expires (then retried, its attempt used, and
 * rendered and published again): it is recorded done, as it is, once the ledger can write.
 */
static void test_ledger_read_only_at_completion(void **state)
{
        struct tu_daemon d;
        char *flag, *out, *before, *after, *alerts;
        json_t *st;
        int64_t t0;

        (void)state;
        tu_daemon_setup(&d, PIPE, 1, "limits = { job_timeout = 5; };\n");
        assert_int_equal(mkdir(d.state, 0750), 0);
        flag = tu_path("%s/state-read-only", d.root);
        /* Two seconds between publishing and completing, for the test to act in. */
        setenv("IMGD_FAULT_DELAY", "ledger.before_complete", 1);
        setenv("IMGD_FAULT_DELAY_MS", "2000", 1);
        start_with_shim(&d, "IMGD_SHIM_EROFS", flag);
        unsetenv("IMGD_FAULT_DELAY");
        unsetenv("IMGD_FAULT_DELAY_MS");

        drop_images(&d, "late", 1);
        out = tu_path("%s/late000_s.webp", d.media);
        for (int waited = 0; access(out, F_OK) != 0; waited += 10) {
                if (waited > 60000)
                        fail_msg("%s was not published", out);
                usleep(10 * 1000);
        }
        tu_write_file(flag, "", 0);
        before = outputs_signature(&d);
        sleep(4);
        st = status_json(&d);
        assert_int_equal(jobs_in(st, "done"), 0);
        alerts = alert_messages(st);
        if (!strstr(alerts, "Read-only file system"))
                fail_msg("no alert names EROFS:\n%s", alerts);
        free(alerts);
        json_decref(st);

        /* Writable again: recorded done within seconds, not after a lease of 65 s. */
        t0 = tu_now_us();
        assert_int_equal(unlink(flag), 0);
        for (;;) {
                st = status_json(&d);
                json_int_t done = jobs_in(st, "done");
                json_decref(st);
                if (done == 1)
                        break;
                if (tu_now_us() - t0 > 20000000) {
                        char *log = log_of(&d);
                        fail_msg("not done 20 s after the ledger was writable again; log:\n%s",
                                 log);
                }
                usleep(200 * 1000);
        }
        tu_daemon_wait_idle(&d, 60);
        assert_each_done_once(&d, 1);
        after = outputs_signature(&d);
        assert_string_equal(before, after);
        assert_ledger_intact(&d);
        free(before);
        free(after);
        free(out);
        free(flag);
        tu_daemon_cleanup(&d);
}

/*
 * Runs imgd on d's configuration in a mount namespace of its own where `target` (the state
 * directory, or the ledger file alone) is bind-mounted read-only, its output in d's log.
 * Returns the wait status, or -1 when no namespace or mount could be made (not root).
 */
static int run_on_read_only(struct tu_daemon *d, const char *target)
{
        int status;
        pid_t pid = fork();

        assert_true(pid >= 0);
        if (pid == 0) {
                int fd = open(d->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

                /* Nothing done here may reach the namespace the tests run in. */
                if (fd < 0 || unshare(CLONE_NEWNS) < 0 ||
                    mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
                    mount(target, target, NULL, MS_BIND, NULL) < 0 ||
                    mount(NULL, target, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL) < 0)
                        _exit(200);
                dup2(fd, STDERR_FILENO);
                dup2(fd, STDOUT_FILENO);
                execl(IMGD_BUILD_DIR "/imgd", "imgd", "-c", d->config, (char *)NULL);
                _exit(127);
        }
        assert_int_equal(waitpid(pid, &status, 0), pid);
        return WIFEXITED(status) && WEXITSTATUS(status) == 200 ? -1 : status;
}

/*
 * imgd started on a ledger it cannot write: the state directory's file system read-only, or
 * the ledger file alone (a read-only bind mount). It must refuse at once, with a message
 * naming the ledger (or its directory) and EROFS, and the exit status of an error of its
 * environment (78, EX_CONFIG, which the unit's RestartPreventExitStatus= stops on), rather
 * than start and fail every job, or exit 1 into a restart loop.
 */
static void test_start_read_only(void **state)
{
        struct tu_daemon d;
        char *db, *text;
        const char *targets[2];

        (void)state;
        tu_daemon_setup(&d, PIPE, 1, NULL);
        tu_daemon_start(&d);
        drop_images(&d, "first", 2);
        tu_daemon_wait_idle(&d, 60);
        assert_true(WIFEXITED(tu_daemon_stop(&d, SIGTERM)));
        db = tu_path("%s/imgd.db", d.state);
        targets[0] = d.state;
        targets[1] = db;
        for (size_t i = 0; i < 2; i++) {
                int status = run_on_read_only(&d, targets[i]);

                if (status == -1)
                        skip();
                text = log_of(&d);
                if (!WIFEXITED(status) || WEXITSTATUS(status) != 78 ||
                    (!strstr(text, "Read-only file system") && !strstr(text, "EROFS")) ||
                    !strstr(text, targets[i]))
                        fail_msg("%s read-only: wait status %#x, wanted exit 78 and a message "
                                 "naming it and EROFS:\n%s",
                                 targets[i], (unsigned)status, text);
                free(text);
        }
        /* Writable: it starts, and the two jobs are as they were. */
        tu_daemon_start(&d);
        tu_daemon_wait_idle(&d, 60);
        assert_each_done_once(&d, 2);
        free(db);
        tu_daemon_cleanup(&d);
}

/* Fills the file system holding path with a file there until a write fails with ENOSPC. */
static void fill_up(const char *path)
{
        static char block[65536];
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        ssize_t k;

        assert_true(fd >= 0);
        memset(block, 0x5a, sizeof block);
        while ((k = write(fd, block, sizeof block)) > 0)
                ;
        /* The last bytes a block would not hold. */
        while (write(fd, block, 1) == 1)
                ;
        assert_int_equal(errno, ENOSPC);
        close(fd);
}

/*
 * The state directory's own file system (a real 8 MiB tmpfs, in a mount namespace of the
 * test's own) fills up while jobs are in flight and uploads arrive, then a file is removed
 * and the space comes back. A trustworthy daemon keeps the ledger intact, names the ledger
 * and ENOSPC in its log and in a status alert, fails no job for it, retries intake, and does
 * every upload exactly once when there is space again. (test-intake-faults covers the same
 * with the fsshim, for intake and hand-backs alone.)
 */
static void test_state_dir_full(void **state)
{
        const unsigned before = 4, inflight = 4, during = 6;
        struct tu_daemon d;
        char *filler, *alerts, *text;
        json_t *st;

        (void)state;
        tu_daemon_setup(&d, PIPE, 2, "retry = { base_delay_ms = 200; max_delay_ms = 2000; };\n");
        assert_int_equal(mkdir(d.state, 0750), 0);
        /* The test program's own mount namespace: the tmpfs and the daemon live in it. */
        if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
            mount("imgd-test", d.state, "tmpfs", 0, "size=8m,mode=0750") < 0) {
                tu_daemon_cleanup(&d);
                skip();
        }
        filler = tu_path("%s/filler", d.state);
        tu_daemon_start(&d);
        drop_images(&d, "before", before);
        tu_daemon_wait_idle(&d, 120);

        assert_int_equal(tu_imgctl(&d, NULL, "pause", NULL), 0);
        drop_images(&d, "inflight", inflight);
        wait_jobs(&d, "queued", inflight);
        signal_workers(&d, SIGSTOP);
        assert_int_equal(tu_imgctl(&d, NULL, "resume", NULL), 0);
        wait_jobs(&d, "running", 2);
        fill_up(filler);
        signal_workers(&d, SIGCONT);
        drop_images(&d, "during", during);
        sleep(4);

        assert_int_equal(query(&d, "SELECT count(*) FROM jobs WHERE state IN ('dead', 'retry') "
                                   "OR attempts > 1"),
                         0);
        st = status_json(&d);
        alerts = alert_messages(st);
        text = log_of(&d);
        if (!strstr(text, "imgd.db") || !strstr(text, "No space left on device"))
                fail_msg("the log does not name the ledger and ENOSPC:\n%s", text);
        if (!strstr(alerts, "imgd.db") || !strstr(alerts, "No space left on device"))
                fail_msg("no alert names the ledger and ENOSPC:\n%s\nlog:\n%s", alerts, text);
        free(alerts);
        free(text);
        json_decref(st);

        /* Space again: everything done, once, at the first attempt. */
        assert_int_equal(unlink(filler), 0);
        for (int waited = 0;; waited += 500) {
                st = status_json(&d);
                json_int_t done = jobs_in(st, "done"), running = jobs_in(st, "running");
                json_decref(st);
                if (done >= before + inflight + during && running == 0)
                        break;
                if (waited > 120000) {
                        char *log = log_of(&d);
                        fail_msg("%lld of %u done 120 s after the space came back; log:\n%s",
                                 (long long)done, before + inflight + during, log);
                }
                usleep(500 * 1000);
        }
        tu_daemon_wait_idle(&d, 60);
        assert_each_done_once(&d, before + inflight + during);
        assert_ledger_intact(&d);
        st = status_json(&d);
        alerts = alert_messages(st);
        if (strstr(alerts, "imgd.db"))
                fail_msg("the ledger's alert outlived the fault:\n%s", alerts);
        free(alerts);
        json_decref(st);
        tu_daemon_stop(&d, SIGTERM);
        assert_int_equal(umount2(d.state, MNT_DETACH), 0);
        free(filler);
        tu_daemon_cleanup(&d);
}

/* ---- the daemon and its workers stopped --------------------------------------------------- */

/* Milliseconds `imgctl status` takes to answer. */
static double status_ms(struct tu_daemon *d)
{
        int64_t t0 = tu_now_us();
        int r = tu_imgctl(d, NULL, "status", NULL);

        assert_true(r == 0 || r == 1);
        return (double)(tu_now_us() - t0) / 1e3;
}

/*
 * The supervisor stopped (SIGSTOP) with jobs in flight and uploads arriving, for longer than
 * the job timeout (5 s here, $IMGD_SIGSTOP_S; 40 s in scripts/adversarial.sh --case sigstop),
 * then continued. The workers went on meanwhile: what they finished is no timeout, the
 * supervisor's pause is not theirs. Everything is done exactly once at the first attempt,
 * nothing timed out or lost its lease, and status answers within a second of the continue.
 */
static void test_daemon_stopped(void **state)
{
        const char *env = getenv("IMGD_SIGSTOP_S");
        unsigned stop_s = env && atoi(env) > 0 ? (unsigned)atoi(env) : 5;
        const unsigned first = 8, during = 12;
        struct tu_daemon d;
        double first_ms;

        (void)state;
        tu_daemon_setup(&d, PIPE, 2, "limits = { job_timeout = 3; };\n");
        tu_daemon_start(&d);
        /* Big enough to be in flight when the supervisor stops (small ones may all be done
         * between two looks at status). */
        for (unsigned i = 0; i < first; i++) {
                char *tmp = tu_path("%s/staging/first%03u.png", d.root, i);
                char *dst = tu_path("%s/first%03u.png", d.uploads, i);

                tu_make_image(tmp, 2400 + i, 1600, "png", false);
                assert_int_equal(rename(tmp, dst), 0);
                free(tmp);
                free(dst);
        }
        wait_jobs_at_least(&d, "running", 1);
        assert_int_equal(kill(d.pid, SIGSTOP), 0);
        drop_images(&d, "during", during);
        sleep(stop_s);
        assert_int_equal(kill(d.pid, SIGCONT), 0);
        first_ms = status_ms(&d);
        printf("stopped %u s: status answered %.0f ms after SIGCONT\n", stop_s, first_ms);
        if (first_ms > 1000) {
                char *log = log_of(&d);
                fail_msg("status took %.0f ms after SIGCONT; log:\n%s", first_ms, log);
        }
        tu_daemon_wait_idle(&d, 120);
        assert_each_done_once(&d, first + during);
        assert_false(tu_log_contains(&d, "timed out after"));
        assert_false(tu_log_contains(&d, "lease expired"));
        tu_daemon_cleanup(&d);
}

/*
 * A worker stopped (SIGSTOP) past the job timeout: it is killed, the attempt counts (the
 * worker, not the supervisor, failed to answer), the job is retried on a new worker and done.
 */
static void test_worker_stopped(void **state)
{
        struct tu_daemon d;
        pid_t pids[4];

        (void)state;
        tu_daemon_setup(&d, PIPE, 1,
                        "limits = { job_timeout = 2; };\n"
                        "retry = { base_delay_ms = 100; max_delay_ms = 500; };\n");
        tu_daemon_start(&d);
        assert_int_equal(tu_imgctl(&d, NULL, "pause", NULL), 0);
        drop_images(&d, "held", 1);
        wait_jobs(&d, "queued", 1);
        assert_int_equal(tu_daemon_children(&d, pids, 4), 1);
        /* Stopped once it is ready for work: then the job goes to it. */
        {
                char *ready = tu_path("worker %d ready", (int)pids[0]);
                wait_log(&d, ready, 20000);
                free(ready);
        }
        assert_int_equal(kill(pids[0], SIGSTOP), 0);
        assert_int_equal(tu_imgctl(&d, NULL, "resume", NULL), 0);
        wait_log(&d, "timed out after 2 s", 20000);
        tu_daemon_wait_idle(&d, 60);
        assert_int_equal(query(&d, "SELECT count(*) FROM jobs WHERE state = 'done' AND "
                                   "attempts = 2"),
                         1);
        assert_int_equal(query(&d, "SELECT count(*) FROM job_errors WHERE message LIKE "
                                   "'%timed out%'"),
                         1);
        assert_int_equal(tu_count_files(d.media, "*_s.webp"), 1);
        assert_verify_clean(&d);
        (void)kill(pids[0], SIGKILL); /* reaped by the daemon already; harmless */
        tu_daemon_cleanup(&d);
}

/* ==== Issue 13, the rest of the battery (wt/audit) ==========================================
 *
 *   (c) an output inside a watch and overlapping watches: the real `imgd --check-config`
 *       refuses each, naming both paths, and imgd does not start on it;
 *   (e) a subscriber that never reads while 2,000 jobs run: it is dropped, not buffered for,
 *       every job is done once, status is answered within 1 s throughout (the rest of
 *       (e), the silent crowd and malformed requests, is test-control's test_daemon_under_abuse);
 *   (i) file names that would forge a line of the log (a newline and a fake "imgd: error:"
 *       or journald "<0>" prefix, an escape sequence): each is one line of the log;
 *   (k) imgd started with 64 file descriptors (`ulimit -n 64`), a burst of uploads and
 *       silent control clients: no crash, no job lost, clear errors; and a folder renamed
 *       in while no descriptor is free is read once there are;
 *   (l) a reload that changes the pipeline of 500 queued jobs (they render the new one) or
 *       removes their watch (500 held: no degradation, no alert, shown as held; done, each
 *       at its first attempt, once the watch is back).
 * (j), the inotify watch limit at start-up, is test-watch's test_unwatched_at_start.
 */
#include <dirent.h>
#include <errno.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

/* `imgctl status --json`: the answer (caller frees) and, in *ret_rc, imgctl's exit status
 * (1 while an alert is active). */
static json_t *status_of(struct tu_daemon *d, int *ret_rc)
{
        char *out = NULL;
        int rc = tu_imgctl(d, &out, "status", "--json", NULL);
        json_t *st = json_loads(out ? out : "", 0, NULL);

        if (!st || (rc != 0 && rc != 1))
                fail_msg("imgctl status --json exited %d: %s", rc, out ? out : "");
        free(out);
        if (ret_rc)
                *ret_rc = rc;
        return st;
}

static long long status_jobs(const json_t *st, const char *state)
{
        return json_integer_value(json_object_get(json_object_get(st, "jobs"), state));
}

/* Waits until `imgctl status` counts `want` jobs in `state` (fails after timeout_s). */
static void wait_jobs_until(struct tu_daemon *d, const char *state, long long want, int timeout_s)
{
        long long n = -1;

        for (int64_t until = tu_now_us() + (int64_t)timeout_s * 1000000; tu_now_us() < until;) {
                json_t *st = status_of(d, NULL);

                n = status_jobs(st, state);
                json_decref(st);
                if (n == want)
                        return;
                usleep(100 * 1000);
        }
        {
                char *log = log_of(d);
                fail_msg("%lld %s job(s) after %d s, expected %lld; log:\n%s", n, state, timeout_s,
                         want, log);
        }
}

/* The value of a "Name:   N kB" line of /proc/<pid>/status, in kB; -1 if absent. */
static long proc_kb(pid_t pid, const char *name)
{
        char *path = tu_path("/proc/%d/status", (int)pid), *text = tu_read_file(path, NULL);
        const char *at = text ? strstr(text, name) : NULL;
        long kb = -1;

        if (at)
                kb = strtol(at + strlen(name) + 1, NULL, 10);
        free(text);
        free(path);
        return kb;
}

/* A connection to the daemon's socket. */
static int connect_raw(struct tu_daemon *d)
{
        struct sockaddr_un addr = { .sun_family = AF_UNIX };
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

        assert_true(fd >= 0);
        snprintf(addr.sun_path, sizeof addr.sun_path, "%s", d->socket);
        assert_int_equal(connect(fd, (struct sockaddr *)&addr, sizeof addr), 0);
        return fd;
}

/*
 * How long the daemon takes to answer a status request, in microseconds: connect, send
 * {"cmd":"status"}, read the whole answer line, as imgctl does, but without starting a
 * program (which, on a loaded machine, measures the machine rather than the daemon). Fails
 * the test when no answer comes within 10 s or the answer is not a status.
 */
static int64_t status_latency_us(struct tu_daemon *d)
{
        static const char request[] = "{\"v\":1,\"cmd\":\"status\"}\n";
        struct timeval tv = { .tv_sec = 10 };
        int64_t t0 = tu_now_us();
        int fd = connect_raw(d);
        char buf[65536];
        size_t len = 0;

        assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
        assert_int_equal(send(fd, request, strlen(request), MSG_NOSIGNAL),
                         (ssize_t)strlen(request));
        while (!memchr(buf, '\n', len)) {
                ssize_t k = len < sizeof buf ? recv(fd, buf + len, sizeof buf - len, 0) : 0;

                if (k <= 0)
                        fail_msg("no status answer within 10 s (%zu bytes): %s", len,
                                 k < 0 ? strerror(errno) : "closed");
                len += (size_t)k;
        }
        t0 = tu_now_us() - t0;
        close(fd);
        if (!memmem(buf, len, "\"ok\":true", 9))
                fail_msg("status answered: %.*s", (int)(len < 300 ? len : 300), buf);
        return t0;
}

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
 * (e) A subscriber that asks for events and then never reads, while 2,000 jobs are done: the
 * daemon keeps at most CONTROL_MAX_SUBSCRIBER_OUTPUT for it and then drops it (its memory
 * does not grow with the backlog of events), every job is done once, and a status request
 * is answered within 1 s throughout (sampled every 100 ms, timed on the socket; the worst and
 * the daemon's peak resident size are printed).
 */
static void test_subscriber_never_reads(void **state)
{
        enum { N = 2000 };
        static const char events[] = "{\"v\":1,\"cmd\":\"events\"}\n";
        struct tu_daemon d;
        int sub, rcvbuf = 4096, samples = 0;
        int64_t worst = 0, t0;
        long hwm_before, hwm_after;
        json_t *st;

        (void)state;
        tu_daemon_setup(&d, PIPE, 2, "degradation = { enabled = false; };");
        /* Under AddressSanitizer, freed memory waits in a quarantine of 256 MiB before reuse,
         * which the peak would measure instead of what imgd keeps: keep it small here. */
        {
                const char *asan = getenv("ASAN_OPTIONS");
                char *opts = tu_path("%s%squarantine_size_mb=1", asan ? asan : "",
                                     asan && *asan ? ":" : "");

                setenv("ASAN_OPTIONS", opts, 1);
                tu_daemon_start(&d);
                if (asan)
                        setenv("ASAN_OPTIONS", asan, 1);
                else
                        unsetenv("ASAN_OPTIONS");
                free(opts);
        }
        hwm_before = proc_kb(d.pid, "VmHWM:");
        sub = connect_raw(&d);
        assert_int_equal(setsockopt(sub, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf), 0);
        assert_int_equal(send(sub, events, strlen(events), MSG_NOSIGNAL), (ssize_t)strlen(events));
        for (int waited = 0;; waited += 50) {
                st = status_of(&d, NULL);
                if (json_integer_value(json_object_get(st, "subscribers")) == 1)
                        break;
                json_decref(st);
                assert_true(waited < 10000);
                usleep(50 * 1000);
        }
        json_decref(st);

        /* The 2,000 uploads, intake running as they come, the workers too. */
        t0 = tu_now_us();
        for (unsigned i = 0; i < N; i++) {
                char *p = tu_path("%s/s%02u/up%04u.png", d.uploads, i / 100, i);

                tu_make_image(p, 16 + i % 50, 16 + i / 50, "png", false);
                free(p);
                if (i % 100 == 99) {
                        int64_t us = status_latency_us(&d);
                        worst = us > worst ? us : worst;
                        samples++;
                }
        }
        for (;;) {
                int64_t us = status_latency_us(&d);
                bool idle;

                worst = us > worst ? us : worst;
                samples++;
                st = status_of(&d, NULL);
                idle = status_jobs(st, "done") == N &&
                       !json_is_true(json_object_get(st, "intake_pending"));
                json_decref(st);
                if (idle)
                        break;
                if (tu_now_us() - t0 > 600 * 1000000LL) {
                        char *log = log_of(&d);
                        fail_msg("2,000 jobs not done in 600 s; log:\n%s", log);
                }
                usleep(100 * 1000);
        }
        hwm_after = proc_kb(d.pid, "VmHWM:");
        print_message("2,000 jobs with a subscriber that never reads: %.1f s; imgctl status "
                      "worst %.1f ms of %d samples (a status request on the socket); imgd VmHWM "
                      "%ld kB before, %ld kB after\n",
                      (double)(tu_now_us() - t0) / 1e6, (double)worst / 1000, samples, hwm_before,
                      hwm_after);
        if (worst >= 1000000)
                fail_msg("a status request took %.1f ms", (double)worst / 1000);
        /* Dropped: its events are not kept for it without bound. */
        st = status_of(&d, NULL);
        assert_int_equal(json_integer_value(json_object_get(st, "subscribers")), 0);
        json_decref(st);
        assert_true(tu_log_contains(&d, "subscriber"));
        /* A daemon that buffered every event for it (about 600 bytes each, three each job)
         * would have grown by over 3 MB; the bound is 1 MiB. */
        assert_true(hwm_after - hwm_before < 16 * 1024);
        tu_daemon_wait_idle(&d, 120);
        assert_each_done_once(&d, N);
        close(sub);
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
        assert_each_done_once(&d, ELEMENTSOF(names));
        log = log_of(&d);
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

/* tu_daemon_start() with RLIMIT_NOFILE set to nofile, soft and hard, for imgd alone. */
static void start_with_nofile(struct tu_daemon *d, rlim_t nofile)
{
        pid_t pid = fork();

        assert_true(pid >= 0);
        if (pid == 0) {
                struct rlimit rl = { .rlim_cur = nofile, .rlim_max = nofile };
                int fd = open(d->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);

                if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
                        _exit(126);
                if (fd >= 0) {
                        dup2(fd, STDERR_FILENO);
                        dup2(fd, STDOUT_FILENO);
                }
                execl(IMGD_BUILD_DIR "/imgd", "imgd", "-v", "-c", d->config, (char *)NULL);
                _exit(127);
        }
        d->pid = pid;
        for (int waited = 0;; waited += 10) {
                int status;

                if (tu_imgctl(d, NULL, "status", NULL) == 0)
                        return;
                if (waitpid(pid, &status, WNOHANG) == pid) {
                        char *log = log_of(d);

                        d->pid = 0;
                        fail_msg("imgd exited during start-up (status %d):\n%s", status, log);
                }
                if (waited > 20000) {
                        kill(pid, SIGKILL);
                        fail_msg("imgd did not answer within 20 s");
                }
                usleep(10 * 1000);
        }
}

/*
 * (k) imgd started with 64 file descriptors (soft and hard: `ulimit -n 64`), 40 control
 * clients that connect and stay silent, then 400 uploads in a burst while `imgctl status` is
 * asked: imgd does not crash, answers status within 1 s, makes every upload a job once and
 * does it, and says what ran short ("Too many open files") if anything did. (The silent
 * clients used to take every descriptor: accept() failed for `imgctl status` until they
 * timed out, 30 s later, and intake failed with EMFILE meanwhile.)
 */
static void test_fd_limit_64(void **state)
{
        enum { N = 400, SILENT = 60 };
        struct tu_daemon d;
        int silent[SILENT];
        int64_t worst = 0;
        char *log;

        (void)state;
        tu_daemon_setup(&d, PIPE, 2, "degradation = { enabled = false; };");
        start_with_nofile(&d, 64);
        {
                struct rlimit got;

                assert_int_equal(prlimit(d.pid, RLIMIT_NOFILE, NULL, &got), 0);
                assert_int_equal(got.rlim_cur, 64);
                assert_int_equal(got.rlim_max, 64);
        }
        for (unsigned i = 0; i < SILENT; i++)
                silent[i] = connect_raw(&d);
        for (unsigned i = 0; i < N; i++) {
                char *p = tu_path("%s/d%u/fd%03u.png", d.uploads, i % 8, i);

                tu_make_image(p, 20 + i % 40, 20 + i / 40, "png", false);
                free(p);
                if (i % 50 == 49) {
                        int64_t us = status_latency_us(&d);
                        worst = us > worst ? us : worst;
                }
        }
        for (int64_t until = tu_now_us() + 300 * 1000000LL;;) {
                json_t *st = status_of(&d, NULL);
                int64_t us = status_latency_us(&d);
                bool done = status_jobs(st, "done") == N &&
                            !json_is_true(json_object_get(st, "intake_pending")) &&
                            json_integer_value(json_object_get(st, "intake_retry")) == 0;

                worst = us > worst ? us : worst;
                json_decref(st);
                if (done)
                        break;
                if (tu_now_us() > until) {
                        log = log_of(&d);
                        fail_msg("not every upload was done within 300 s; log:\n%s", log);
                }
                usleep(200 * 1000);
        }
        assert_int_equal(kill(d.pid, 0), 0);
        /* Clients are limited to a quarter of the descriptors, and the log says so. */
        assert_true(tu_log_contains(&d, "at most 16 clients and 4 event subscribers "
                                        "(RLIMIT_NOFILE is 64)"));
        log = log_of(&d);
        print_message("64 descriptors, %d silent clients, %d uploads: a status request took %.1f "
                      "ms at worst; "
                      "\"Too many open files\" %s in the log\n",
                      SILENT, N, (double)worst / 1000,
                      strstr(log, "Too many open files") ? "is" : "is not");
        free(log);
        if (worst >= 1000000)
                fail_msg("a status request took %.1f ms", (double)worst / 1000);
        tu_daemon_wait_idle(&d, 120);
        assert_each_done_once(&d, N);
        for (unsigned i = 0; i < SILENT; i++)
                close(silent[i]);
        tu_daemon_cleanup(&d);
}

/* The lowest descriptor number that pid does not use. */
static rlim_t lowest_free_fd(pid_t pid)
{
        char *dir = tu_path("/proc/%d/fd", (int)pid);
        bool used[4096] = { false };
        DIR *dp = opendir(dir);
        struct dirent *de;
        rlim_t n = 0;

        assert_non_null(dp);
        while ((de = readdir(dp))) {
                long fd = strtol(de->d_name, NULL, 10);

                if (de->d_name[0] != '.' && fd >= 0 && fd < 4096)
                        used[fd] = true;
        }
        closedir(dp);
        free(dir);
        while (n < 4096 && used[n])
                n++;
        return n;
}

/*
 * (k) A folder of uploads renamed into the tree while imgd has no descriptor to spare: its
 * files came before its watch, so they have no events, and the folder cannot be read. It is
 * read again by the periodic scan once descriptors are back, and each file becomes a job
 * once. (Its files used to be lost until the next restart: the failed read was only logged.)
 */
static void test_fd_exhausted_folder_moved_in(void **state)
{
        enum { N = 5 };
        struct tu_daemon d;
        struct rlimit old, low;
        char *outside, *inside, *msg;

        (void)state;
        tu_daemon_setup(&d, PIPE, 1, "unwatched_scan_interval = 2;");
        tu_daemon_start(&d);
        assert_int_equal(tu_imgctl(&d, NULL, "pause", NULL), 0); /* intake alone is tested */
        outside = tu_path("%s/staging/album", d.root);
        for (unsigned i = 0; i < N; i++) {
                char *p = tu_path("%s/a%u.png", outside, i);

                tu_make_image(p, 30 + i, 20, "png", false);
                free(p);
        }
        usleep(300 * 1000); /* the control connection closed */
        assert_int_equal(prlimit(d.pid, RLIMIT_NOFILE, NULL, &old), 0);
        low = old;
        low.rlim_cur = lowest_free_fd(d.pid);
        assert_int_equal(prlimit(d.pid, RLIMIT_NOFILE, &low, NULL), 0);

        inside = tu_path("%s/album", d.uploads);
        assert_int_equal(rename(outside, inside), 0);
        msg = tu_path("scan %s: Too many open files", inside);
        for (int waited = 0; !tu_log_contains(&d, msg); waited += 50) {
                if (waited > 20000) {
                        char *log = log_of(&d);
                        fail_msg("no \"%s\" in the log:\n%s", msg, log);
                }
                usleep(50 * 1000);
        }
        usleep(500 * 1000);
        assert_int_equal(prlimit(d.pid, RLIMIT_NOFILE, &old, NULL), 0);
        wait_jobs_until(&d, "queued", N, 30);
        assert_int_equal(query(&d, "SELECT count(*) FROM jobs"), N);
        assert_int_equal(query(&d, "SELECT count(DISTINCT source_path) FROM jobs"), N);
        free(msg);
        free(inside);
        free(outside);
        tu_daemon_cleanup(&d);
}

/* ---- (l) reloads under 500 queued jobs ---- */

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
        wait_jobs_until(&d, "queued", N, 120);

        write_conf(&d, watch, PIPE_CHANGED, "degradation = { enabled = false; };");
        reload_now(&d);
        assert_int_equal(tu_imgctl(&d, NULL, "resume", NULL), 0);
        tu_daemon_wait_idle(&d, 600);
        assert_int_equal(query(&d, "SELECT count(*) FROM jobs"), N);
        assert_int_equal(query(&d, "SELECT count(*) FROM jobs WHERE state = 'done' AND "
                                   "attempts = 1"),
                         N);
        assert_int_equal(tu_count_files(d.media, "*_m.png"), N);
        assert_int_equal(tu_count_files(d.media, "*_s.webp"), 0);
        assert_int_equal(tu_count_files(d.media, ".imgd-*"), 0);
        sample = tu_path("%s/q499_m.png", d.media); /* 40 x 35 in, 12 x 11 out */
        assert_true(tu_image_props(sample, &w, &h, NULL, 0, NULL, NULL));
        assert_int_equal(w, 12);
        assert_int_equal(h, 11);
        assert_verify_clean(&d);
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
        wait_jobs_until(&d, "queued", N, 120);

        write_conf(&d, other, PIPE, thresholds);
        reload_now(&d);
        assert_int_equal(tu_imgctl(&d, NULL, "resume", NULL), 0);
        wait_jobs_until(&d, "held", N, 120);

        /* Held, not waiting: the level returns to full, no alert (allow the three steps of
         * recovery and the status timer). */
        for (int64_t until = tu_now_us() + 30 * 1000000LL;;) {
                const char *level;
                bool calm;

                json_decref(st);
                st = status_of(&d, &rc);
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
        assert_int_equal(status_jobs(st, "queued"), N);
        assert_int_equal(status_jobs(st, "held"), N);
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
        wait_jobs_until(&d, "done", N, 600);
        tu_daemon_wait_idle(&d, 120);
        assert_int_equal(query(&d, "SELECT count(*) FROM jobs"), N);
        assert_int_equal(query(&d, "SELECT count(*) FROM jobs WHERE state = 'done' AND "
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
                cmocka_unit_test(test_overflow_flat),
                cmocka_unit_test(test_overflow_new_subfolders),
                cmocka_unit_test(test_folders_renamed),
                cmocka_unit_test(test_source_churn),
                /* The state directory's storage. */
                cmocka_unit_test(test_wal_deleted),
                cmocka_unit_test(test_shm_deleted),
                cmocka_unit_test(test_ledger_read_only),
                cmocka_unit_test(test_ledger_read_only_at_completion),
                cmocka_unit_test(test_start_read_only),
                cmocka_unit_test(test_state_dir_full),
                cmocka_unit_test(test_daemon_stopped),
                cmocka_unit_test(test_worker_stopped),
                /* Configuration, names, reloads, descriptors, subscribers. */
                cmocka_unit_test(test_check_config_refuses_overlaps),
                cmocka_unit_test(test_names_do_not_forge_log_lines),
                cmocka_unit_test(test_reload_changes_pipeline_of_500_queued),
                cmocka_unit_test(test_reload_removes_watch_of_500_queued),
                cmocka_unit_test(test_fd_limit_64),
                cmocka_unit_test(test_fd_exhausted_folder_moved_in),
                cmocka_unit_test(test_subscriber_never_reads),
        };

        /* IMGD_TEST_FILTER=test_wal_* runs only the cases whose names match. */
        if (getenv("IMGD_TEST_FILTER"))
                cmocka_set_test_filter(getenv("IMGD_TEST_FILTER"));
        return cmocka_run_group_tests(tests, NULL, NULL);
}
