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

#include "imgd/hash.h"
#include "testutil.h"

#define PIPE                                                                                   \
        "( { name = \"s\"; width = 48; height = 48; fit = \"inside\"; format = \"webp\"; } )"

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
                        paths[i] = tu_path("%s/d%02u/inner/f%03u.png", d.uploads,
                                           (i - TOP) / PER, i);
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
                fail_msg("published from %s, the last content is %s; log:\n%s", recorded,
                         final_sha, log);
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
                    !strstr(text, "Read-only file system") || !strstr(text, targets[i]))
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
        drop_images(&d, "first", first);
        wait_jobs(&d, "running", 2);
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

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_overflow_flat),
                cmocka_unit_test(test_overflow_new_subfolders),
                cmocka_unit_test(test_folders_renamed),
                cmocka_unit_test(test_source_churn),
                cmocka_unit_test(test_wal_deleted),
                cmocka_unit_test(test_shm_deleted),
                cmocka_unit_test(test_ledger_read_only),
                cmocka_unit_test(test_ledger_read_only_at_completion),
                cmocka_unit_test(test_start_read_only),
                cmocka_unit_test(test_state_dir_full),
                cmocka_unit_test(test_daemon_stopped),
                cmocka_unit_test(test_worker_stopped),
        };

        /* IMGD_TEST_FILTER=test_wal_* runs only the cases whose names match. */
        if (getenv("IMGD_TEST_FILTER"))
                cmocka_set_test_filter(getenv("IMGD_TEST_FILTER"));
        return cmocka_run_group_tests(tests, NULL, NULL);
}
