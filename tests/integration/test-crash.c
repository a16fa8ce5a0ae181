/* SPDX-License-Identifier: MIT */
/*
 * test-crash.c - imgd's crash-safety promise, tested against the real daemon: whatever
 * happens to the process or the machine, no job is lost, no output is half-written, corrupt
 * or published twice, and verified work is not redone.
 *
 *   crash points  the daemon _exits at each named step (fault.h) and is restarted;
 *   kill -9       the daemon and, separately, its workers are SIGKILLed at random moments,
 *                 many times ($IMGD_CRASH_BATTERY=full for the long run: scripts/crash-battery.sh);
 *   power cut     the fsshim journal replays only what was fsynced, the daemon restarts on
 *                 that; a deliberately broken run (no directory fsync, no file fsync) must be
 *                 caught;
 *   disk full     the output tree refuses writes: no attempt is used, nothing partial is
 *                 published, and the job completes once space returns.
 *
 * After each scenario check() walks the tree and the ledger and counts what is wrong.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <fnmatch.h>
#include <ftw.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "shared/hash.h"
#include "testutil.h"

#define PIPE_3                                                                                     \
        "( { name = \"s\"; width = 64; height = 64; fit = \"cover\"; format = \"webp\"; "          \
        "mask = \"circle\"; },"                                                                    \
        "  { name = \"m\"; width = 160; height = 160; fit = \"inside\"; format = \"jpeg\"; },"     \
        "  { name = \"l\"; width = 320; height = 320; fit = \"inside\"; format = \"png\"; } )"

/* PIPE_3 and one variant more: what a backfill adds (test_kill9_backfill). */
#define PIPE_4                                                                                     \
        "( { name = \"s\"; width = 64; height = 64; fit = \"cover\"; format = \"webp\"; "          \
        "mask = \"circle\"; },"                                                                    \
        "  { name = \"m\"; width = 160; height = 160; fit = \"inside\"; format = \"jpeg\"; },"     \
        "  { name = \"l\"; width = 320; height = 320; fit = \"inside\"; format = \"png\"; },"      \
        "  { name = \"x\"; width = 48; height = 48; fit = \"cover\"; format = \"jpeg\"; } )"

/* The outputs check() expects of every done source. */
static unsigned outputs_per_source = 3;

/* Fast retries, and enough attempts that killed workers never make a job dead. */
#define RETRY_FAST "retry = { max_attempts = 100; base_delay_ms = 20; max_delay_ms = 200; };"

struct counts {
        unsigned sources, jobs, lost, corrupt, duplicate, leftover, stuck;
};

/* ------------------------------------------------------------------ the checker */

struct file_list {
        char **paths;
        size_t n;
};

static struct file_list *walk_target;

static int collect(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
        (void)st;
        (void)ftw;
        if (flag == FTW_F) {
                walk_target->paths =
                        realloc(walk_target->paths, (walk_target->n + 1) * sizeof(char *));
                walk_target->paths[walk_target->n++] = strdup(path);
        }
        return 0;
}

static void list_files(const char *dir, struct file_list *out)
{
        *out = (struct file_list){};
        walk_target = out;
        nftw(dir, collect, 32, FTW_PHYS);
}

static void free_files(struct file_list *l)
{
        for (size_t i = 0; i < l->n; i++)
                free(l->paths[i]);
        free(l->paths);
}

static bool hash_file(const char *path, char sha[HASH_HEX_SIZE])
{
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        bool ok = fd >= 0 && hash_sha256_fd(fd, 0, sha) == 0;

        if (fd >= 0)
                close(fd);
        return ok;
}

static bool in_list(char **list, size_t n, const char *p)
{
        for (size_t i = 0; i < n; i++)
                if (strcmp(list[i], p) == 0)
                        return true;
        return false;
}

static struct counts check(struct tu_daemon *d, bool verbose)
{
        struct counts c = {};
        struct file_list sources, outputs;
        char **expected = NULL;
        size_t n_expected = 0;
        char *db_path = tu_path("%s/imgd.db", d->state);
        sqlite3 *db = NULL;
        sqlite3_stmt *st;

        assert_int_equal(sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL), 0);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        assert_string_equal((const char *)sqlite3_column_text(st, 0), "ok");
        sqlite3_finalize(st);

        assert_int_equal(sqlite3_prepare_v2(db,
                                            "SELECT count(*), sum(state IN ('queued', "
                                            "'running', 'retry')) FROM jobs",
                                            -1, &st, NULL),
                         0);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        c.jobs = (unsigned)sqlite3_column_int(st, 0);
        c.stuck = (unsigned)sqlite3_column_int(st, 1);
        sqlite3_finalize(st);

        /* The same content rendered twice for one path is a duplicate publication (a
         * reconciliation job of it aside, once: its outputs are the source's from then on; and
         * retractions and moves, which render nothing). */
        assert_int_equal(sqlite3_prepare_v2(db,
                                            "SELECT count(*) FROM (SELECT 1 FROM jobs "
                                            "WHERE state = 'done' AND kind IS NULL "
                                            "GROUP BY source_path, source_sha256, "
                                            "redo IS NULL HAVING count(*) > 1)",
                                            -1, &st, NULL),
                         0);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        c.duplicate += (unsigned)sqlite3_column_int(st, 0);
        sqlite3_finalize(st);

        list_files(d->uploads, &sources);
        for (size_t i = 0; i < sources.n; i++) {
                const char *src = sources.paths[i];
                const char *name = strrchr(src, '/') + 1;
                char sha[HASH_HEX_SIZE];
                sqlite3_int64 id = 0;
                bool done = false;

                if (name[0] == '.')
                        continue;
                c.sources++;
                assert_true(hash_file(src, sha));
                assert_int_equal(sqlite3_prepare_v2(db,
                                                    "SELECT id, state = 'done' AND "
                                                    "source_sha256 = ?2, output_key FROM jobs "
                                                    "WHERE source_path = ?1 ORDER BY id DESC "
                                                    "LIMIT 1",
                                                    -1, &st, NULL),
                                 0);
                sqlite3_bind_text(st, 1, src, -1, SQLITE_STATIC);
                sqlite3_bind_text(st, 2, sha, -1, SQLITE_STATIC);
                if (sqlite3_step(st) == SQLITE_ROW) {
                        id = sqlite3_column_int64(st, 0);
                        done = sqlite3_column_int(st, 1);
                        if (done) {
                                expected = realloc(expected, (n_expected + 1) * sizeof(char *));
                                expected[n_expected++] =
                                        tu_path("%s.manifest.json", sqlite3_column_text(st, 2));
                        }
                }
                sqlite3_finalize(st);
                if (!done) {
                        if (verbose)
                                fprintf(stderr, "lost: %s has no done job for its content\n", src);
                        c.lost++;
                        continue;
                }

                assert_int_equal(sqlite3_prepare_v2(db,
                                                    "SELECT path, sha256 FROM outputs "
                                                    "WHERE job_id = ?1",
                                                    -1, &st, NULL),
                                 0);
                sqlite3_bind_int64(st, 1, id);
                unsigned n_out = 0;
                while (sqlite3_step(st) == SQLITE_ROW) {
                        const char *p = (const char *)sqlite3_column_text(st, 0);
                        const char *want = (const char *)sqlite3_column_text(st, 1);
                        char got[HASH_HEX_SIZE];

                        n_out++;
                        expected = realloc(expected, (n_expected + 1) * sizeof(char *));
                        expected[n_expected++] = strdup(p);
                        if (!hash_file(p, got)) {
                                if (verbose)
                                        fprintf(stderr, "lost: output %s is missing\n", p);
                                c.lost++;
                        } else if (strcmp(got, want) != 0 ||
                                   !tu_image_props(p, NULL, NULL, NULL, 0, NULL, NULL)) {
                                if (verbose)
                                        fprintf(stderr, "corrupt: output %s\n", p);
                                c.corrupt++;
                        }
                }
                sqlite3_finalize(st);
                if (n_out != outputs_per_source) {
                        if (verbose)
                                fprintf(stderr, "corrupt: job %lld has %u outputs\n", (long long)id,
                                        n_out);
                        c.corrupt++;
                }
                /* The manifest names this content. */
                char *mp = expected[n_expected - n_out - 1];
                char *text = tu_read_file(mp, NULL);
                if (!text || !strstr(text, sha)) {
                        if (verbose)
                                fprintf(stderr, "corrupt: manifest %s\n", mp);
                        c.corrupt++;
                }
                free(text);
        }

        list_files(d->media, &outputs);
        for (size_t i = 0; i < outputs.n; i++) {
                const char *name = strrchr(outputs.paths[i], '/') + 1;

                if (fnmatch(".imgd-*.tmp", name, 0) == 0) {
                        if (verbose)
                                fprintf(stderr, "leftover: %s\n", outputs.paths[i]);
                        c.leftover++;
                } else if (!in_list(expected, n_expected, outputs.paths[i])) {
                        if (verbose)
                                fprintf(stderr, "duplicate: %s belongs to no job\n",
                                        outputs.paths[i]);
                        c.duplicate++;
                }
        }
        for (size_t i = 0; i < n_expected; i++)
                free(expected[i]);
        free(expected);
        free_files(&sources);
        free_files(&outputs);
        sqlite3_close(db);
        free(db_path);
        return c;
}

static void print_counts(const char *what, const struct counts *c, unsigned kills)
{
        fprintf(stderr,
                "%s: kills %u, sources %u, jobs %u, lost %u, corrupt %u, duplicate %u, "
                "leftover %u, stuck %u\n",
                what, kills, c->sources, c->jobs, c->lost, c->corrupt, c->duplicate, c->leftover,
                c->stuck);
}

static void assert_clean(const struct counts *c, unsigned sources)
{
        assert_int_equal(c->sources, sources);
        assert_int_equal(c->lost, 0);
        assert_int_equal(c->corrupt, 0);
        assert_int_equal(c->duplicate, 0);
        assert_int_equal(c->leftover, 0);
        assert_int_equal(c->stuck, 0);
}

/* Drops image i (a JPEG, PNG or WebP of varying size) into the upload tree by rename. */
static void drop(struct tu_daemon *d, unsigned i)
{
        static const char *const fmts[] = { "jpeg", "png", "webp" };
        static const char *const exts[] = { "jpg", "png", "webp" };
        const char *fmt = fmts[i % 3];
        char *tmp = tu_path("%s/img%03u.%s", d->root, i, exts[i % 3]);
        char *dst = tu_path("%s/%s/img%03u.%s", d->uploads, i % 2 ? "sub" : ".", i, exts[i % 3]);

        tu_make_image(tmp, 600 + 37 * (i % 11), 400 + 23 * (i % 7), fmt, i % 4 == 0);
        char *sub = tu_path("%s/sub", d->uploads);
        mkdir(sub, 0755);
        free(sub);
        if (rename(tmp, dst) != 0)
                fail_msg("rename %s: %m", dst);
        free(tmp);
        free(dst);
}

static int64_t job_attempts(struct tu_daemon *d, const char *state)
{
        char *db_path = tu_path("%s/imgd.db", d->state);
        sqlite3 *db;
        sqlite3_stmt *st;
        int64_t v = -1;

        assert_int_equal(sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_prepare_v2(db, "SELECT max(attempts) FROM jobs WHERE state = ?1",
                                            -1, &st, NULL),
                         0);
        sqlite3_bind_text(st, 1, state, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL)
                v = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        sqlite3_close(db);
        free(db_path);
        return v;
}

/* ------------------------------------------------------------------ crash points */

static void crash_at(const char *point, bool staged)
{
        struct tu_daemon d;
        struct counts c;
        int status;

        tu_daemon_setup(&d, PIPE_3, 1, RETRY_FAST);
        setenv("IMGD_FAULT", point, 1);
        tu_daemon_start(&d);
        unsetenv("IMGD_FAULT");
        drop(&d, 1);
        status = tu_daemon_wait_exit(&d, 30000);
        if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 99)
                fail_msg("%s: the daemon did not stop at the fault point (status %d)", point,
                         status);

        tu_daemon_start(&d);
        tu_daemon_wait_idle(&d, 60);
        c = check(&d, true);
        print_counts(point, &c, 1);
        assert_clean(&c, 1);
        /* Verified work is published from staging, not rendered again. */
        if (staged) {
                assert_int_equal(job_attempts(&d, "done"), 1);
                assert_true(tu_log_contains(&d, "published from staging after restart"));
        }
        tu_daemon_cleanup(&d);
}

/* A worker that dies at a step of writing an output costs that attempt; the job is
 * rendered again and published once. */
static void worker_crash_at(const char *point)
{
        struct tu_daemon d;
        struct counts c;
        char *once;

        tu_daemon_setup(&d, PIPE_3, 1, RETRY_FAST);
        once = tu_path("%s/fault-once", d.root);
        setenv("IMGD_FAULT", point, 1);
        setenv("IMGD_FAULT_ONCE", once, 1);
        tu_daemon_start(&d);
        unsetenv("IMGD_FAULT");
        unsetenv("IMGD_FAULT_ONCE");
        drop(&d, 1);
        tu_daemon_wait_idle(&d, 60);
        c = check(&d, true);
        print_counts(point, &c, 1);
        assert_clean(&c, 1);
        assert_true(access(once, F_OK) == 0); /* the fault did fire */
        assert_true(tu_log_contains(&d, "worker exited with status 99"));
        assert_int_equal(job_attempts(&d, "done"), 2);
        free(once);
        tu_daemon_cleanup(&d);
}

static void test_crash_points(void **state)
{
#ifndef IMGD_FAULT_INJECTION
        skip();
#endif
        crash_at("stage.after_commit", true);
        crash_at("publish.after_rename", true);
        crash_at("publish.after_dir_fsync", true);
        crash_at("ledger.before_complete", true);
        crash_at("ledger.after_complete", false);
        worker_crash_at("worker.after_write");
        worker_crash_at("worker.after_fsync");
}

/* ------------------------------------------------------------------ kill -9 battery */

static unsigned rnd(unsigned n)
{
        return (unsigned)random() % n;
}

static void test_kill9_battery(void **state)
{
        bool full = getenv("IMGD_CRASH_BATTERY") && !strcmp(getenv("IMGD_CRASH_BATTERY"), "full");
        unsigned n_images = full ? 60 : 16, rounds = full ? 120 : 14;
        unsigned kills = 0, worker_kills = 0, dropped = 0;
        struct tu_daemon d;
        struct counts c;
        int64_t t0, recovery_us = 0;

        srandom((unsigned)tu_now_us());
        tu_daemon_setup(&d, PIPE_3, 2, RETRY_FAST);
        for (unsigned r = 0; r < rounds; r++) {
                tu_daemon_start(&d);
                /* Keep new files arriving during the first rounds. */
                for (unsigned k = 0; k < 3 && dropped < n_images; k++)
                        drop(&d, dropped++);
                if (r % 3 == 2) {
                        /* Kill workers, not the daemon: each costs one attempt, nothing more. */
                        for (unsigned k = 0; k < 4; k++) {
                                pid_t pids[16];
                                unsigned n;
                                usleep(20000 + rnd(150000));
                                n = tu_daemon_children(&d, pids, 16);
                                if (n > 0 && kill(pids[rnd(n)], SIGKILL) == 0)
                                        worker_kills++;
                        }
                }
                usleep(20000 + rnd(400000));
                tu_daemon_stop(&d, SIGKILL);
                kills++;
        }
        while (dropped < n_images)
                drop(&d, dropped++);
        t0 = tu_now_us();
        tu_daemon_start(&d);
        recovery_us = tu_now_us() - t0;
        tu_daemon_wait_idle(&d, full ? 600 : 120);
        c = check(&d, true);
        print_counts("kill -9 battery", &c, kills + worker_kills);
        fprintf(stderr,
                "kill -9 battery: %u daemon kills, %u worker kills, restart to socket "
                "ready %.0f ms\n",
                kills, worker_kills, (double)recovery_us / 1e3);
        assert_clean(&c, n_images);
        tu_daemon_cleanup(&d);
}

/*
 * kill -9 during a backfill (issue 17): sources done with three variants, a fourth added;
 * the daemon is killed at random moments while the reconciliation pass queues and the jobs
 * render the new variant, and restarted each time (a new pass at every start). At the end
 * every source has its four outputs, the three old ones unchanged, nothing lost, corrupt,
 * published twice or left over, and the plan has nothing missing.
 */
static void test_kill9_backfill(void **state)
{
        bool full = getenv("IMGD_CRASH_BATTERY") && !strcmp(getenv("IMGD_CRASH_BATTERY"), "full");
        unsigned n_images = full ? 60 : 20, rounds = full ? 60 : 10, kills = 0, worker_kills = 0;
        struct tu_daemon d;
        struct counts c;
        json_t *plan = NULL;
        char *conf;

        srandom((unsigned)tu_now_us());
        tu_daemon_setup(&d, PIPE_3, 2, RETRY_FAST);
        tu_daemon_start(&d);
        for (unsigned i = 0; i < n_images; i++)
                drop(&d, i);
        tu_daemon_wait_idle(&d, full ? 600 : 240);
        tu_daemon_stop(&d, SIGTERM);

        conf = tu_path("state_dir = \"%s\";\nsocket = \"%s\";\nworkers = 2;\n"
                       "watch = ( { path = \"%s\"; output = \"%s\"; pipeline = \"p\"; "
                       "recursive = true; } );\npipelines = { p = %s; };\n%s\n",
                       d.state, d.socket, d.uploads, d.media, PIPE_4, RETRY_FAST);
        tu_write_file(d.config, conf, (size_t)-1);
        free(conf);
        for (unsigned r = 0; r < rounds; r++) {
                tu_daemon_start(&d);
                if (r % 3 == 2) {
                        pid_t pids[16];
                        unsigned n;

                        usleep(20000 + rnd(100000));
                        n = tu_daemon_children(&d, pids, 16);
                        if (n > 0 && kill(pids[rnd(n)], SIGKILL) == 0)
                                worker_kills++;
                }
                usleep(10000 + rnd(200000));
                tu_daemon_stop(&d, SIGKILL);
                kills++;
        }
        tu_daemon_start(&d);
        for (int waited = 0;; waited += 50) {
                json_decref(plan);
                plan = tu_imgctl_json(&d, "plan", NULL, NULL);
                if (!json_is_true(json_object_get(plan, "scanning")))
                        break;
                if (waited > 60000)
                        fail_msg("the reconciliation pass did not end");
                usleep(50 * 1000);
        }
        json_decref(plan);
        tu_daemon_wait_idle(&d, full ? 600 : 240);
        outputs_per_source = 4;
        c = check(&d, true);
        outputs_per_source = 3;
        print_counts("kill -9 during a backfill", &c, kills + worker_kills);
        fprintf(stderr,
                "kill -9 during a backfill: %u daemon kills, %u worker kills; %" PRId64
                " reconciliation job(s) needed more than one attempt\n",
                kills, worker_kills,
                tu_ledger_int(&d, "SELECT count(*) FROM jobs WHERE redo IS NOT NULL "
                                  "AND attempts > 1"));
        assert_clean(&c, n_images);
        assert_int_equal(tu_count_files(d.media, "*_x.jpg") +
                                 tu_count_files(d.media, "sub/*_x.jpg"),
                         n_images);
        /* A new pass finds every output current. */
        assert_int_equal(tu_imgctl(&d, NULL, "reload", NULL), 0);
        for (int waited = 0;; waited += 50) {
                const json_t *vs;

                plan = tu_imgctl_json(&d, "plan", NULL, NULL);
                if (json_is_true(json_object_get(plan, "scanning"))) {
                        json_decref(plan);
                        assert_true(waited < 60000);
                        usleep(50 * 1000);
                        continue;
                }
                vs = json_object_get(json_array_get(json_object_get(plan, "watches"), 0),
                                     "variants");
                assert_int_equal(json_array_size(vs), 4);
                for (size_t i = 0; i < 4; i++) {
                        const json_t *v = json_array_get(vs, i);
                        assert_int_equal(json_integer_value(json_object_get(v, "current")),
                                         n_images);
                        assert_int_equal(json_integer_value(json_object_get(v, "missing")), 0);
                        assert_int_equal(json_integer_value(json_object_get(v, "stale")), 0);
                }
                assert_int_equal(json_integer_value(json_object_get(plan, "queued")), 0);
                json_decref(plan);
                break;
        }
        tu_daemon_cleanup(&d);
}

/*
 * kill -9 while sources of a watch with on_delete = "retract" are deleted, moved out and
 * renamed (files, and once a directory): the daemon is killed at random moments and restarted
 * (a deletion or rename it did not see is found by the pass at the next start). At the end
 * every remaining source has its outputs (a renamed one under its new name), the deleted and
 * moved-out ones none: nothing lost, corrupt, published twice, left over or orphaned, and
 * imgctl verify agrees.
 */
static void test_kill9_retract(void **state)
{
        bool full = getenv("IMGD_CRASH_BATTERY") && !strcmp(getenv("IMGD_CRASH_BATTERY"), "full");
        unsigned n_images = full ? 60 : 20, rounds = full ? 60 : 10, kills = 0, left;
        unsigned deleted = 0, moved_out = 0, renamed = 0;
        struct tu_daemon d;
        struct counts c;
        char *conf, *out = NULL, *gone;

        srandom((unsigned)tu_now_us());
        tu_daemon_setup(&d, PIPE_3, 2, RETRY_FAST);
        conf = tu_path("state_dir = \"%s\";\nsocket = \"%s\";\nworkers = 2;\n"
                       "watch = ( { path = \"%s\"; output = \"%s\"; pipeline = \"p\"; "
                       "recursive = true; on_delete = \"retract\"; } );\n"
                       "pipelines = { p = %s; };\n%s\n",
                       d.state, d.socket, d.uploads, d.media, PIPE_3, RETRY_FAST);
        tu_write_file(d.config, conf, (size_t)-1);
        free(conf);
        gone = tu_path("%s/gone", d.root);
        assert_int_equal(mkdir(gone, 0755), 0);
        tu_daemon_start(&d);
        for (unsigned i = 0; i < n_images; i++)
                drop(&d, i);
        tu_daemon_wait_idle(&d, full ? 600 : 240);

        left = n_images;
        for (unsigned r = 0; r < rounds; r++) {
                if (r > 0)
                        tu_daemon_start(&d);
                for (unsigned k = 0; k < 2 && left > 2; k++) {
                        struct file_list sources;
                        const char *victim;
                        char *to;
                        unsigned what = rnd(3);

                        list_files(d.uploads, &sources);
                        victim = sources.paths[rnd((unsigned)sources.n)];
                        if (what == 0) {
                                assert_int_equal(unlink(victim), 0);
                                deleted++;
                                left--;
                        } else if (what == 1) {
                                to = tu_path("%s/%u-%s", gone, r * 2 + k, strrchr(victim, '/') + 1);
                                assert_int_equal(rename(victim, to), 0);
                                free(to);
                                moved_out++;
                                left--;
                        } else {
                                to = tu_path("%s/r%u-%s", d.uploads, r * 2 + k,
                                             strrchr(victim, '/') + 1);
                                assert_int_equal(rename(victim, to), 0);
                                free(to);
                                renamed++;
                        }
                        free_files(&sources);
                }
                if (r == rounds / 2) {
                        /* A directory renamed with its sources. */
                        char *from = tu_path("%s/sub", d.uploads),
                             *to = tu_path("%s/sub2", d.uploads);

                        if (rename(from, to) == 0)
                                renamed++;
                        free(from);
                        free(to);
                }
                usleep(rnd(150000));
                tu_daemon_stop(&d, SIGKILL);
                kills++;
        }
        tu_daemon_start(&d);
        for (int waited = 0;; waited += 50) {
                json_t *plan = tu_imgctl_json(&d, "plan", NULL, NULL);
                bool scanning = json_is_true(json_object_get(plan, "scanning"));

                json_decref(plan);
                if (!scanning)
                        break;
                if (waited > 60000)
                        fail_msg("the reconciliation pass did not end");
                usleep(50 * 1000);
        }
        tu_daemon_wait_idle(&d, full ? 600 : 240);
        c = check(&d, true);
        print_counts("kill -9 during retraction", &c, kills);
        fprintf(stderr,
                "kill -9 during retraction: %u deleted, %u moved out, %u renamed; %" PRId64
                " retraction(s), %" PRId64 " move(s) done, %" PRId64 " render(s)\n",
                deleted, moved_out, renamed,
                tu_ledger_int(&d, "SELECT count(*) FROM jobs WHERE kind = 'retract' "
                                  "AND state = 'done'"),
                tu_ledger_int(&d, "SELECT count(*) FROM jobs WHERE kind = 'move' "
                                  "AND state = 'done'"),
                tu_ledger_int(&d, "SELECT count(*) FROM jobs WHERE kind IS NULL "
                                  "AND state = 'done'"));
        assert_clean(&c, left);
        if (tu_imgctl(&d, &out, "verify", NULL) != 0)
                fail_msg("imgctl verify: %s", out ? out : "");
        free(out);
        free(gone);
        tu_daemon_cleanup(&d);
}

/* ------------------------------------------------------------------ power cut */

struct snap {
        unsigned long long ino;
        char *path;
};

/* Rebuilds `dst` as the fsshim journal says a power cut would have left `root`. */
static void replay_journal(const char *log_dir, const char *root, const char *dst)
{
        char *jpath = tu_path("%s/journal", log_dir);
        char *text = tu_read_file(jpath, NULL);
        struct snap *snaps = NULL;
        size_t n_snaps = 0;
        /* Directory listings: path -> text block (last wins). */
        char **dir_paths = NULL, **dir_blocks = NULL;
        size_t n_dirs = 0;

        for (char *line = text ? strtok(text, "\n") : NULL; line; line = strtok(NULL, "\n")) {
                if (line[0] == 'F') {
                        unsigned long long ino;
                        char p[4096];
                        if (sscanf(line, "F %llu %4095s", &ino, p) != 2)
                                continue;
                        snaps = realloc(snaps, (n_snaps + 1) * sizeof *snaps);
                        snaps[n_snaps++] = (struct snap){ ino, strdup(p) };
                } else if (line[0] == 'D') {
                        char *block = strdup("");
                        const char *dpath = line + 2;
                        char *l2;
                        while ((l2 = strtok(NULL, "\n")) && strcmp(l2, "E") != 0) {
                                char *nb = tu_path("%s%s\n", block, l2);
                                free(block);
                                block = nb;
                        }
                        size_t k;
                        for (k = 0; k < n_dirs; k++)
                                if (!strcmp(dir_paths[k], dpath))
                                        break;
                        if (k == n_dirs) {
                                dir_paths = realloc(dir_paths, (n_dirs + 1) * sizeof(char *));
                                dir_blocks = realloc(dir_blocks, (n_dirs + 1) * sizeof(char *));
                                dir_paths[n_dirs] = strdup(dpath);
                                dir_blocks[n_dirs++] = block;
                        } else {
                                free(dir_blocks[k]);
                                dir_blocks[k] = block;
                        }
                }
        }

        /* Breadth-first from the root: each directory as last fsynced. */
        char **queue = malloc(sizeof(char *));
        size_t qn = 1;
        queue[0] = strdup(root);
        assert_int_equal(mkdir(dst, 0755), 0);
        while (qn > 0) {
                char *dir = queue[--qn];
                const char *block = NULL;
                for (size_t k = 0; k < n_dirs; k++)
                        if (!strcmp(dir_paths[k], dir))
                                block = dir_blocks[k];
                char *copy = block ? strdup(block) : NULL;
                char *save = NULL;
                for (char *e = copy ? strtok_r(copy, "\n", &save) : NULL; e;
                     e = strtok_r(NULL, "\n", &save)) {
                        char type;
                        unsigned long long ino;
                        char name[1024];
                        if (sscanf(e, "%c %llu %1023[^\n]", &type, &ino, name) != 3)
                                continue;
                        char *src = tu_path("%s/%s", dir, name);
                        char *out = tu_path("%s%s", dst, src + strlen(root));
                        if (type == 'd') {
                                mkdir(out, 0755);
                                queue = realloc(queue, (qn + 1) * sizeof(char *));
                                queue[qn++] = strdup(src);
                        } else {
                                const char *snap = NULL;
                                for (size_t k = 0; k < n_snaps; k++)
                                        if (snaps[k].ino == ino)
                                                snap = snaps[k].path; /* last wins */
                                size_t len = 0;
                                void *data = snap ? tu_read_file(snap, &len) : NULL;
                                tu_write_file(out, data ? data : "", len);
                                free(data);
                        }
                        free(src);
                        free(out);
                }
                free(copy);
                free(dir);
        }
        free(queue);
        for (size_t k = 0; k < n_snaps; k++)
                free(snaps[k].path);
        free(snaps);
        for (size_t k = 0; k < n_dirs; k++) {
                free(dir_paths[k]);
                free(dir_blocks[k]);
        }
        free(dir_paths);
        free(dir_blocks);
        free(text);
        free(jpath);
}

/*
 * One power cut: run imgd under the shim (skipping the fsyncs named in `skip`), cut the power
 * `cut_ms` after the drops (or, with cut_ms < 0, once every job is done), replay the journal
 * over the output tree, restart without the shim and count what is wrong.
 */
static struct counts power_cut(const char *skip, int cut_ms, unsigned n_images)
{
        struct tu_daemon d;
        struct counts c;
        char *log_dir, *crashed, *rebuilt;

        tu_daemon_setup(&d, PIPE_3, 2, RETRY_FAST);
        assert_int_equal(mkdir(d.media, 0755), 0);
        log_dir = tu_path("%s/shim", d.root);
        assert_int_equal(mkdir(log_dir, 0755), 0);
        setenv("LD_PRELOAD", IMGD_FSSHIM, 1);
        setenv("ASAN_OPTIONS", "verify_asan_link_order=0:detect_leaks=0", 1);
        setenv("IMGD_SHIM_ROOT", d.media, 1);
        setenv("IMGD_SHIM_LOG", log_dir, 1);
        if (skip)
                setenv("IMGD_FAULT_SKIP", skip, 1);
        tu_daemon_start(&d);
        unsetenv("LD_PRELOAD");
        unsetenv("ASAN_OPTIONS");
        unsetenv("IMGD_FAULT_SKIP");
        for (unsigned i = 0; i < n_images; i++)
                drop(&d, i);
        if (cut_ms < 0)
                tu_daemon_wait_idle(&d, 60);
        else
                usleep((useconds_t)cut_ms * 1000);
        tu_daemon_stop(&d, SIGKILL); /* the power cut */
        usleep(100 * 1000);
        /* workers die with the daemon */

        crashed = tu_path("%s/media.crashed", d.root);
        rebuilt = tu_path("%s/media.rebuilt", d.root);
        replay_journal(log_dir, d.media, rebuilt);
        assert_int_equal(rename(d.media, crashed), 0);
        assert_int_equal(rename(rebuilt, d.media), 0);

        tu_daemon_start(&d);
        tu_daemon_wait_idle(&d, 60);
        c = check(&d, skip == NULL);
        tu_daemon_cleanup(&d);
        free(log_dir);
        free(crashed);
        free(rebuilt);
        return c;
}

static void test_power_cut(void **state)
{
        struct counts c;
        unsigned failures;

#ifndef IMGD_FAULT_INJECTION
        skip();
#endif
        srandom((unsigned)tu_now_us());
        /* The real thing: cuts at random moments, and after everything is done. */
        for (unsigned t = 0; t < 6; t++) {
                int cut = t == 0 ? -1 : (int)(50 + rnd(900));
                c = power_cut(NULL, cut, 6);
                print_counts(cut < 0 ? "power cut after idle" : "power cut while busy", &c, 1);
                assert_clean(&c, 6);
        }

        /* Broken builds must be caught: without the directory fsync, published files vanish
         * at a power cut while the ledger says done; without the file fsync, they are empty. */
        c = power_cut("publish.dir_fsync", -1, 4);
        print_counts("power cut, no directory fsync (must fail)", &c, 1);
        failures = c.lost + c.corrupt;
        assert_true(failures > 0);

        c = power_cut("worker.file_fsync,publish.file_fsync", -1, 4);
        print_counts("power cut, no file fsync (must fail)", &c, 1);
        failures = c.lost + c.corrupt;
        assert_true(failures > 0);
}

/* ------------------------------------------------------------------ disk full */

static void test_disk_full(void **state)
{
        struct tu_daemon d;
        struct counts c;
        char *flag;
        int64_t attempts;

        tu_daemon_setup(&d, PIPE_3, 1,
                        "retry = { max_attempts = 2; base_delay_ms = 100; "
                        "max_delay_ms = 300; };\n"
                        "breaker = { output_failures = 3; cooldown_ms = 500; "
                        "max_cooldown_ms = 1000; };");
        assert_int_equal(mkdir(d.media, 0755), 0);
        flag = tu_path("%s/disk-full", d.root);
        setenv("LD_PRELOAD", IMGD_FSSHIM, 1);
        setenv("ASAN_OPTIONS", "verify_asan_link_order=0:detect_leaks=0", 1);
        setenv("IMGD_SHIM_ROOT", d.media, 1);
        setenv("IMGD_SHIM_ENOSPC", flag, 1);
        tu_daemon_start(&d);
        unsetenv("LD_PRELOAD");
        unsetenv("ASAN_OPTIONS");
        unsetenv("IMGD_SHIM_ROOT");
        unsetenv("IMGD_SHIM_ENOSPC");
        tu_write_file(flag, "", 0); /* the disk fills up */
        drop(&d, 2);
        drop(&d, 3);

        /* Several rounds of failing for the disk: more than max_attempts, and yet no attempt
         * is used, nothing is published, nothing is dead. */
        for (int waited = 0; waited < 300 && !tu_log_contains(&d, "half-open"); waited++)
                usleep(50 * 1000);
        assert_true(tu_log_contains(&d, "No space left on device"));
        assert_true(tu_log_contains(&d, "no attempt used"));
        /* The breaker opened on the repeated output failures, and probes after cool-downs. */
        assert_true(tu_log_contains(&d, "circuit breaker open"));
        assert_true(tu_log_contains(&d, "half-open"));
        /* Not closed (open, or half-open on a probe): an alert, and status says so. */
        {
                char *out = NULL;

                assert_int_equal(tu_imgctl(&d, &out, "status", NULL), 1);
                if (!out || !strstr(out, "ALERT    circuit breaker "))
                        fail_msg("no breaker alert in imgctl status:\n%s", out ? out : "");
                free(out);
        }
        assert_int_equal(job_attempts(&d, "dead"), -1);
        assert_int_equal(job_attempts(&d, "done"), -1);
        assert_true(job_attempts(&d, "queued") <= 0);
        assert_int_equal(tu_count_files(d.media, "*"), 0);

        /* Space returns: everything completes, each job in one attempt. */
        assert_int_equal(unlink(flag), 0);
        tu_daemon_wait_idle(&d, 60);
        assert_true(tu_log_contains(&d, "circuit breaker closed"));
        {
                char *out = NULL;

                (void)tu_imgctl(&d, &out, "status", NULL); /* the error rate may still alert */
                if (!out || !strstr(out, "breaker  closed") || strstr(out, "ALERT    circuit"))
                        fail_msg("the breaker alert outlived the breaker:\n%s", out ? out : "");
                free(out);
        }
        c = check(&d, true);
        print_counts("disk full", &c, 0);
        assert_clean(&c, 2);
        attempts = job_attempts(&d, "done");
        assert_int_equal(attempts, 1);
        free(flag);
        tu_daemon_cleanup(&d);
}

/* ------------------------------------------------------------------ fsync error */

/* An fsync that fails: the temporary file is discarded and the output rendered again (the
 * fsync itself is never retried); nothing partial or unsynced is published. */
static void test_fsync_error(void **state)
{
        struct tu_daemon d;
        struct counts c;
        char *flag;

        tu_daemon_setup(&d, PIPE_3, 1, RETRY_FAST);
        assert_int_equal(mkdir(d.media, 0755), 0);
        flag = tu_path("%s/fsync-fails", d.root);
        tu_write_file(flag, "", 0);
        setenv("LD_PRELOAD", IMGD_FSSHIM, 1);
        setenv("ASAN_OPTIONS", "verify_asan_link_order=0:detect_leaks=0", 1);
        setenv("IMGD_SHIM_ROOT", d.media, 1);
        setenv("IMGD_SHIM_FSYNC_EIO", flag, 1);
        tu_daemon_start(&d);
        unsetenv("LD_PRELOAD");
        unsetenv("ASAN_OPTIONS");
        unsetenv("IMGD_SHIM_ROOT");
        unsetenv("IMGD_SHIM_FSYNC_EIO");
        drop(&d, 5);
        tu_daemon_wait_idle(&d, 60);
        assert_int_equal(access(flag, F_OK), -1); /* the failure happened */
        assert_true(tu_log_contains(&d, "fsync: Input/output error"));
        c = check(&d, true);
        print_counts("fsync error", &c, 0);
        assert_clean(&c, 1);
        free(flag);
        tu_daemon_cleanup(&d);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_crash_points),   cmocka_unit_test(test_kill9_battery),
                cmocka_unit_test(test_kill9_backfill), cmocka_unit_test(test_kill9_retract),
                cmocka_unit_test(test_power_cut),      cmocka_unit_test(test_disk_full),
                cmocka_unit_test(test_fsync_error),
        };
        /* IMGD_TEST_FILTER=test_kill9_* runs only the cases whose names match. */
        if (getenv("IMGD_TEST_FILTER"))
                cmocka_set_test_filter(getenv("IMGD_TEST_FILTER"));
        return cmocka_run_group_tests(tests, NULL, NULL);
}
