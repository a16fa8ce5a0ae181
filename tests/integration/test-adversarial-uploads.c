/* SPDX-License-Identifier: MIT */
/*
 * test-adversarial-uploads.c - the adversarial battery, quick size, against the real daemon, for
 * uploads that arrive the way an adversary (or an unlucky day) delivers them; each case checks
 * what a trustworthy daemon must do on the ledger, the output tree and `imgctl verify`. The full
 * sizes (50,000 files) are scripts/adversarial.sh.
 *
 *   - a burst that overflows the inotify queue, flat and in new sub-folders: every file done
 *     exactly once, nothing left half-published;
 *   - folders renamed into, within and out of the watched tree: what comes in is processed,
 *     what is renamed within stays watched, what leaves is no longer watched;
 *   - a source truncated, overwritten, deleted and replaced 20 times a second while its jobs
 *     run: the newest content wins and nothing stale is left published.
 *
 * IMGD_TEST_FILTER=test_overflow_* runs only the cases whose names match.
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

/* The kernel's default fs.inotify.max_queued_events is 16384: a burst of more events than
 * that while the daemon does not read overflows its queue. */
#define OVERFLOW_EVENTS 20000

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
        advfx_assert_each_done_once(&d, N);
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
        advfx_assert_each_done_once(&d, N);

        /* The rescan watches the new folders: a later upload there is seen at once. */
        late = tu_path("%s/d07/inner/late.png", d.uploads);
        tu_make_image(late, 64, 64, "png", false);
        out = tu_path("%s/d07/inner/late_s.webp", d.media);
        for (int waited = 0; access(out, F_OK) != 0; waited += 50) {
                if (waited > 30000) {
                        char *log = advfx_log_of(&d);
                        fail_msg("%s was not published; log:\n%s", out, log);
                }
                usleep(50 * 1000);
        }
        tu_daemon_wait_idle(&d, 60);
        advfx_assert_each_done_once(&d, N + 1);
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
                        char *log = advfx_log_of(d);
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
        assert_int_equal(tu_ledger_int(&d, "SELECT count(*) FROM jobs WHERE source_path LIKE "
                                           "'%after.png'"),
                         0);
        assert_int_equal(tu_ledger_int(&d, "SELECT count(*) FROM jobs WHERE state <> 'done'"), 0);
        /* Renamed within: the files are sources under their new names (each a job of its
         * own, as any new name is); the new one once. */
        assert_int_equal(tu_ledger_int(&d, "SELECT count(*) FROM jobs WHERE source_path LIKE "
                                           "'%/album-2026/deeper/%'"),
                         4);
        assert_int_equal(tu_ledger_int(&d, "SELECT count(*) FROM jobs WHERE source_path LIKE "
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
                char *log = advfx_log_of(&d);
                fail_msg("published from %s, the last content is %s; log:\n%s", recorded, final_sha,
                         log);
        }
        out = tu_path("%s/churn_s.webp", d.media);
        assert_true(tu_image_props(out, &w, &h, NULL, 0, NULL, NULL));
        assert_int_equal(w, 48);
        assert_int_equal(h, 12);
        assert_int_equal(tu_ledger_int(&d, "SELECT count(*) FROM jobs WHERE state IN "
                                           "('queued', 'running', 'retry')"),
                         0);
        assert_int_equal(tu_count_files(d.media, ".imgd-*"), 0);
        assert_int_equal(tu_count_files(d.media, "*_s.webp"), 1);
        advfx_assert_verify_clean(&d);

        json_decref(manifest);
        free(manifest_path);
        free(out);
        free(src);
        free(tmp);
        tu_daemon_cleanup(&d);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_overflow_flat),
                cmocka_unit_test(test_overflow_new_subfolders),
                cmocka_unit_test(test_folders_renamed),
                cmocka_unit_test(test_source_churn),
        };

        /* IMGD_TEST_FILTER=test_overflow_* runs only the cases whose names match. */
        if (getenv("IMGD_TEST_FILTER"))
                cmocka_set_test_filter(getenv("IMGD_TEST_FILTER"));
        return cmocka_run_group_tests(tests, NULL, NULL);
}
