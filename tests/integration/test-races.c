/* SPDX-License-Identifier: MIT */
/*
 * test-races.c - races between uploads, jobs and workers, against the real daemon with real
 * workers, real files and real signals (SIGSTOP/SIGCONT of the daemon and of its workers
 * hold a job in flight, or a result and a timeout back, at exactly the moment a race needs):
 *
 * - a job superseded by a new upload of its path fails: the new upload is neither
 *   quarantined nor lost, and is processed; the old job ends cancelled, not dead;
 * - content whose job was cancelled (moved away while queued, then moved back; cancelled by
 *   an operator) is processed when it comes back: by its watch event, by `imgctl enqueue`,
 *   by the scan at the next start;
 * - a daemon stopped past the job timeout while jobs run: the results that arrived meanwhile
 *   win over the overdue timeouts, and no worker being killed is handed the next job;
 * - a worker that hangs before it says it is ready is killed after job_timeout and replaced,
 *   so the only worker's slot is not held for ever.
 */
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "testutil.h"

#define ONE_VARIANT                                                                                \
        "( { name = \"s\"; width = 64; height = 64; fit = \"cover\"; format = \"webp\"; } )"

/* ---- helpers ---------------------------------------------------------------------------- */

/* A member of `imgctl status --json` (of its group `group` unless NULL). */
static json_int_t status_int(struct tu_daemon *d, const char *group, const char *key)
{
        json_t *st = tu_status_json(d, NULL);
        json_t *o = group ? json_object_get(st, group) : st;
        json_t *v = json_object_get(o, key);
        json_int_t n;

        assert_true(json_is_integer(v));
        n = json_integer_value(v);
        json_decref(st);
        return n;
}

static json_int_t count_state(struct tu_daemon *d, const char *state)
{
        return status_int(d, "jobs", state);
}

/* Waits up to timeout_ms for `state` to hold at least `want` jobs. */
static void wait_count(struct tu_daemon *d, const char *state, json_int_t want, int timeout_ms)
{
        json_int_t n = -1;

        for (int waited = 0; waited <= timeout_ms; waited += 50) {
                n = count_state(d, state);
                if (n >= want)
                        return;
                usleep(50 * 1000);
        }
        fail_msg("%lld %s job(s) after %d ms, expected %lld", (long long)n, state, timeout_ms,
                 (long long)want);
}

/* The jobs of `source` (newest first), from `imgctl jobs --json`; caller decrefs. */
static json_t *jobs_of(struct tu_daemon *d, const char *source)
{
        json_t *all = tu_imgctl_json(d, "jobs", "--limit", "1000");
        json_t *mine = json_array(), *job;
        size_t i;

        json_array_foreach(json_object_get(all, "jobs"), i, job)
        {
                if (strcmp(json_string_value(json_object_get(job, "source")), source) == 0)
                        json_array_append(mine, job);
        }
        json_decref(all);
        return mine;
}

static const char *job_state(const json_t *job)
{
        return json_string_value(json_object_get(job, "state"));
}

/* Renames from -> to, failing the test with the cause. */
static void move(const char *from, const char *to)
{
        if (rename(from, to) != 0)
                fail_msg("rename %s -> %s: %m", from, to);
}

static bool exists(const char *path)
{
        struct stat st;

        return lstat(path, &st) == 0;
}

/* The daemon's one worker, once it is idle (ready for a job). */
static pid_t the_worker(struct tu_daemon *d)
{
        pid_t pids[4];

        for (int waited = 0; waited <= 20000; waited += 50) {
                if (status_int(d, "workers", "idle") == 1 && tu_daemon_children(d, pids, 4) == 1)
                        return pids[0];
                usleep(50 * 1000);
        }
        fail_msg("the worker did not become idle");
        return 0;
}

/* A file that starts like a PNG and is not one: it fails in the decoder, for good. */
static void write_corrupt_png(const char *path)
{
        static const char png[] = "\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\x10\0\0\0\x10\0\x08\x06"
                                  "\0\0\0 and then nothing a decoder could use";

        tu_write_file(path, png, sizeof png - 1);
}

/* ---- a superseded job's failure -------------------------------------------------------- */

/*
 * A corrupt PNG is uploaded and its job handed to the worker, which is held with SIGSTOP so
 * that the job stays in flight; meanwhile a good image is moved over it. The old job's
 * failure must not move the good file to quarantine (nor retry or kill anything for it):
 * the good file stays and is processed, and the old job ends cancelled as superseded.
 *
 * With `daemon_stopped`, the daemon is stopped too while the good file arrives and the
 * worker fails, so that the old job's failure may be handled before the daemon has taken in
 * the new upload (the worker's result and the watch event wait in the same loop turn, in
 * either order): the file there is not the job's, and stays.
 */
static void superseded_failure(bool daemon_stopped)
{
        struct tu_daemon d;
        char *quarantine, *conf, *bad, *good, *source, *held, *output;
        json_t *jobs, *newest, *oldest;
        pid_t worker;

        tu_daemon_setup(&d, ONE_VARIANT, 1, NULL);
        quarantine = tu_path("%s/quarantine", d.root);
        conf = tu_path("state_dir = \"%s\";\nsocket = \"%s\";\nworkers = 1;\n"
                       "watch = ( { path = \"%s\"; output = \"%s\"; pipeline = \"p\"; "
                       "recursive = true; quarantine = \"%s\"; } );\n"
                       "pipelines = { p = %s; };\n",
                       d.state, d.socket, d.uploads, d.media, quarantine, ONE_VARIANT);
        tu_write_file(d.config, conf, (size_t)-1);
        free(conf);
        tu_daemon_start(&d);
        bad = tu_path("%s/bad.png", d.root);
        good = tu_path("%s/good.png", d.root);
        source = tu_path("%s/photo.png", d.uploads);
        held = tu_path("%s/photo.png", quarantine);
        output = tu_path("%s/photo_s.webp", d.media);

        worker = the_worker(&d);
        assert_int_equal(kill(worker, SIGSTOP), 0);
        write_corrupt_png(bad);
        tu_make_image(good, 300, 200, "png", false);
        move(bad, source);
        wait_count(&d, "running", 1, 20000); /* on the stopped worker */
        if (!daemon_stopped) {
                move(good, source);
                wait_count(&d, "queued", 1, 20000); /* the new upload's job */
                assert_int_equal(kill(worker, SIGCONT), 0);
        } else {
                assert_int_equal(kill(d.pid, SIGSTOP), 0);
                move(good, source);
                assert_int_equal(kill(worker, SIGCONT), 0);
                usleep(1000 * 1000); /* the worker's failure is in the socket */
                assert_int_equal(kill(d.pid, SIGCONT), 0);
        }
        tu_daemon_wait_idle(&d, 60);

        if (!exists(source) || exists(held))
                fail_msg("the new upload %s was %s", source, exists(held) ? "quarantined" : "lost");
        assert_true(exists(output));
        jobs = jobs_of(&d, source);
        assert_int_equal(json_array_size(jobs), 2);
        newest = json_array_get(jobs, 0);
        oldest = json_array_get(jobs, 1);
        assert_string_equal(job_state(newest), "done");
        assert_int_equal(json_integer_value(json_object_get(newest, "attempts")), 1);
        if (!daemon_stopped) {
                /* Superseded when it failed: cancelled, with why. */
                assert_string_equal(job_state(oldest), "cancelled");
                assert_non_null(
                        strstr(json_string_value(json_object_get(oldest, "error")), "superseded"));
        }
        json_decref(jobs);
        assert_int_equal(tu_count_files(quarantine, "*"), 0);
        free(bad);
        free(good);
        free(source);
        free(held);
        free(output);
        free(quarantine);
        tu_daemon_cleanup(&d);
}

static void test_superseded_failure(void **state)
{
        (void)state;
        superseded_failure(false);
}

static void test_superseded_failure_daemon_stopped(void **state)
{
        (void)state;
        superseded_failure(true);
}

/* ---- cancelled content coming back ----------------------------------------------------- */

/* An image made beside the watched tree, then renamed into it (one IN_MOVED_TO). */
static char *drop_image(struct tu_daemon *d, const char *name)
{
        char *tmp = tu_path("%s/%s", d->root, name);
        char *dest = tu_path("%s/%s", d->uploads, name);

        tu_make_image(tmp, 300, 200, "jpeg", false);
        move(tmp, dest);
        free(tmp);
        return dest;
}

/* Pauses the daemon's intake and queues one image `name` in it; returns the path
 * of the upload (caller frees). */
static char *queue_paused(struct tu_daemon *d, const char *name)
{
        char *src;

        json_decref(tu_imgctl_json(d, "pause", NULL, NULL));
        src = drop_image(d, name);
        wait_count(d, "queued", 1, 20000);
        return src;
}

/*
 * A job is queued (intake paused), its file moved away: the job is cancelled when claimed
 * ("source removed before processing"). The same file moved back while imgd runs is
 * processed. A cancelled job cannot be retried: the answer says to enqueue its file.
 */
static void test_cancelled_then_moved_back(void **state)
{
        struct tu_daemon d;
        char *out = NULL, *away, *src, *output, ids[32];
        json_t *jobs;

        (void)state;
        tu_daemon_setup(&d, ONE_VARIANT, 1, NULL);
        tu_daemon_start(&d);
        src = queue_paused(&d, "a.jpg");
        away = tu_path("%s/a.jpg", d.root);
        move(src, away);
        json_decref(tu_imgctl_json(&d, "resume", NULL, NULL));
        wait_count(&d, "cancelled", 1, 20000);
        tu_daemon_wait_idle(&d, 30);
        move(away, src);
        tu_daemon_wait_idle(&d, 60);

        assert_int_equal(count_state(&d, "done"), 1);
        output = tu_path("%s/a_s.webp", d.media);
        assert_true(exists(output));
        jobs = jobs_of(&d, src);
        assert_int_equal(json_array_size(jobs), 2);
        assert_string_equal(job_state(json_array_get(jobs, 0)), "done");
        assert_string_equal(job_state(json_array_get(jobs, 1)), "cancelled");

        snprintf(ids, sizeof ids, "%lld",
                 (long long)json_integer_value(json_object_get(json_array_get(jobs, 1), "id")));
        assert_int_equal(tu_imgctl(&d, &out, "retry", ids, NULL), 1);
        if (!out || !strstr(out, "is cancelled") || !strstr(out, "imgctl enqueue"))
                fail_msg("retry of a cancelled job: %s", out ? out : "");
        free(out);
        json_decref(jobs);
        free(output);
        free(away);
        free(src);
        tu_daemon_cleanup(&d);
}

/* Cancelled by the operator, enqueued by the operator: a new job, processed. */
static void test_cancelled_then_enqueued(void **state)
{
        struct tu_daemon d;
        char *src, ids[32];
        json_t *jobs, *r;

        (void)state;
        tu_daemon_setup(&d, ONE_VARIANT, 1, NULL);
        tu_daemon_start(&d);
        src = queue_paused(&d, "b.jpg");
        jobs = jobs_of(&d, src);
        snprintf(ids, sizeof ids, "%lld",
                 (long long)json_integer_value(json_object_get(json_array_get(jobs, 0), "id")));
        json_decref(jobs);
        assert_int_equal(tu_imgctl(&d, NULL, "cancel", ids, NULL), 0);

        r = tu_imgctl_json(&d, "enqueue", src, NULL);
        if (!json_is_true(json_object_get(r, "created")))
                fail_msg("enqueue of content whose job was cancelled created no job: %s",
                         json_dumps(r, JSON_COMPACT));
        json_decref(r);
        json_decref(tu_imgctl_json(&d, "resume", NULL, NULL));
        tu_daemon_wait_idle(&d, 60);
        assert_int_equal(count_state(&d, "done"), 1);
        free(src);
        tu_daemon_cleanup(&d);
}

/* Queued, moved away while imgd is down and cancelled at the next start (its file gone),
 * moved back while imgd is down again: the scan at start takes it in. */
static void test_cancelled_then_restart(void **state)
{
        struct tu_daemon d;
        char *src, *away, *output;

        (void)state;
        tu_daemon_setup(&d, ONE_VARIANT, 1, NULL);
        tu_daemon_start(&d);
        src = queue_paused(&d, "c.jpg");
        tu_daemon_stop(&d, SIGTERM);
        away = tu_path("%s/c.jpg", d.root);
        move(src, away);
        tu_daemon_start(&d); /* not paused: claims the job, finds its file gone */
        wait_count(&d, "cancelled", 1, 20000);
        tu_daemon_wait_idle(&d, 30);
        tu_daemon_stop(&d, SIGTERM);
        move(away, src);
        tu_daemon_start(&d);
        tu_daemon_wait_idle(&d, 60);

        assert_int_equal(count_state(&d, "done"), 1);
        output = tu_path("%s/c_s.webp", d.media);
        assert_true(exists(output));
        free(output);
        free(away);
        free(src);
        tu_daemon_cleanup(&d);
}

/* ---- a stopped daemon's overdue timeouts ----------------------------------------------- */

/*
 * Jobs run while the daemon is stopped (SIGSTOP) for longer than limits.job_timeout; the
 * workers finish them meanwhile. Continued (SIGCONT), the daemon finds each result and its
 * overdue timeout ready at once: the result must win, and no worker may be killed for a job
 * it has finished, nor handed a job while it is being killed. Every job is done at its first
 * attempt, and nothing was killed. Four workers, four rounds: which of the two the event
 * loop takes first varies (before the fix, 8 of 8 runs had a job fail "worker killed by
 * SIGKILL").
 */
static void test_stopped_past_timeout(void **state)
{
        const unsigned timeout_s = 3, workers = 4, rounds = 4, per_round = 8;
        struct tu_daemon d;
        char *extra, *image, *png;
        size_t i, png_len;
        json_t *all, *job;

        (void)state;
        extra = tu_path("limits = { job_timeout = %u; };\n"
                        "retry = { max_attempts = 5; base_delay_ms = 50; max_delay_ms = 200; };",
                        timeout_s);
        tu_daemon_setup(&d, ONE_VARIANT, workers, extra);
        free(extra);
        /* Large enough to take a while to decode: still running when the daemon is stopped. */
        image = tu_path("%s/image.png", d.root);
        tu_make_image(image, 1600, 1200, "png", false);
        png = tu_read_file(image, &png_len);
        assert_non_null(png);
        tu_daemon_start(&d);

        for (unsigned round = 0; round < rounds; round++) {
                int waited;

                json_decref(tu_imgctl_json(&d, "pause", NULL, NULL));
                for (unsigned k = 0; k < per_round; k++) {
                        char *tmp = tu_path("%s/r%u-%u.png", d.root, round, k);
                        char *dest = tu_path("%s/r%u-%u.png", d.uploads, round, k);

                        tu_write_file(tmp, png, png_len);
                        move(tmp, dest);
                        free(tmp);
                        free(dest);
                }
                wait_count(&d, "queued", per_round, 20000);
                json_decref(tu_imgctl_json(&d, "resume", NULL, NULL));
                /* Every worker on a job, then the daemon stopped past their timeouts. */
                for (waited = 0; waited < 5000 && status_int(&d, "workers", "busy") < workers;
                     waited += 5)
                        usleep(5 * 1000);
                assert_int_equal(kill(d.pid, SIGSTOP), 0);
                usleep((timeout_s * 1000 + 2000) * 1000);
                assert_int_equal(kill(d.pid, SIGCONT), 0);
                tu_daemon_wait_idle(&d, 120);
        }

        all = tu_imgctl_json(&d, "jobs", "--limit", "1000");
        assert_int_equal(json_array_size(json_object_get(all, "jobs")), rounds * per_round);
        json_array_foreach(json_object_get(all, "jobs"), i, job)
        {
                json_int_t attempts = json_integer_value(json_object_get(job, "attempts"));

                if (strcmp(job_state(job), "done") != 0 || attempts != 1)
                        fail_msg("job %lld %s: %s after %lld attempt(s): %s",
                                 (long long)json_integer_value(json_object_get(job, "id")),
                                 json_string_value(json_object_get(job, "source")), job_state(job),
                                 (long long)attempts,
                                 json_dumps(json_object_get(job, "error"), JSON_ENCODE_ANY));
        }
        json_decref(all);
        assert_false(tu_log_contains(&d, "killed by SIG"));
        assert_false(tu_log_contains(&d, "timed out after"));
        free(png);
        free(image);
        tu_daemon_cleanup(&d);
}

/*
 * The only worker hangs before its "ready" (a delay at the fault point worker.before_ready,
 * in the first worker only): after job_timeout (2 s) it is killed and replaced, and the upload
 * is done at its first attempt (it was never dispatched to the hung worker). Before the start
 * had a timeout, the upload stayed queued for ever.
 */
static void test_worker_hangs_at_start(void **state)
{
        struct tu_daemon d;
        char *once, *src;
        int64_t t0;
        json_t *all, *job;

        (void)state;
        tu_daemon_setup(&d, ONE_VARIANT, 1, "limits = { job_timeout = 2; };");
        once = tu_path("%s/fault-once", d.root);
        setenv("IMGD_FAULT_DELAY", "worker.before_ready", 1);
        setenv("IMGD_FAULT_DELAY_MS", "600000", 1);
        setenv("IMGD_FAULT_ONCE", once, 1);
        tu_daemon_start(&d);
        unsetenv("IMGD_FAULT_ONCE");
        unsetenv("IMGD_FAULT_DELAY_MS");
        unsetenv("IMGD_FAULT_DELAY");
        t0 = tu_now_us();
        src = tu_path("%s/a.png", d.uploads);
        tu_make_image(src, 80, 60, "png", false);
        tu_daemon_wait_idle(&d, 30);
        print_message("done %.1f s after the upload (job_timeout 2 s)\n",
                      (double)(tu_now_us() - t0) / 1e6);
        all = tu_imgctl_json(&d, "jobs", NULL, NULL);
        assert_int_equal(json_array_size(json_object_get(all, "jobs")), 1);
        job = json_array_get(json_object_get(all, "jobs"), 0);
        assert_string_equal(json_string_value(json_object_get(job, "state")), "done");
        assert_int_equal(json_integer_value(json_object_get(job, "attempts")), 1);
        json_decref(all);
        assert_true(tu_log_contains(&d, "not ready after 2 s; killing it"));
        free(src), free(once);
        tu_daemon_cleanup(&d);
}

/*
 * The daemon is late to hand a job over: a delay at the fault point pool.dispatch (3 s, the
 * first dispatch only) holds it between waking up for the job and sending it, as a stopped
 * or overloaded daemon would be. The job's limit (job_timeout 2 s) counts from when the
 * worker got the job, not from when the daemon woke up: the job is done at its first
 * attempt. Before the fix the timeout was armed against the loop's wake-up time, already
 * past, and the worker was killed at once ("timed out after 2 s").
 */
static void test_dispatch_late(void **state)
{
        struct tu_daemon d;
        char *once, *src;
        json_t *all, *job;

        (void)state;
        tu_daemon_setup(&d, ONE_VARIANT, 1, "limits = { job_timeout = 2; };");
        once = tu_path("%s/fault-once", d.root);
        setenv("IMGD_FAULT_DELAY", "pool.dispatch", 1);
        setenv("IMGD_FAULT_DELAY_MS", "3000", 1);
        setenv("IMGD_FAULT_ONCE", once, 1);
        tu_daemon_start(&d);
        unsetenv("IMGD_FAULT_ONCE");
        unsetenv("IMGD_FAULT_DELAY_MS");
        unsetenv("IMGD_FAULT_DELAY");
        src = tu_path("%s/a.png", d.uploads);
        tu_make_image(src, 80, 60, "png", false);
        tu_daemon_wait_idle(&d, 30);
        assert_true(access(once, F_OK) == 0); /* the delay did happen */
        all = tu_imgctl_json(&d, "jobs", NULL, NULL);
        assert_int_equal(json_array_size(json_object_get(all, "jobs")), 1);
        job = json_array_get(json_object_get(all, "jobs"), 0);
        assert_string_equal(json_string_value(json_object_get(job, "state")), "done");
        assert_int_equal(json_integer_value(json_object_get(job, "attempts")), 1);
        json_decref(all);
        assert_false(tu_log_contains(&d, "timed out after"));
        free(src), free(once);
        tu_daemon_cleanup(&d);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_superseded_failure),
                cmocka_unit_test(test_superseded_failure_daemon_stopped),
                cmocka_unit_test(test_cancelled_then_moved_back),
                cmocka_unit_test(test_cancelled_then_enqueued),
                cmocka_unit_test(test_cancelled_then_restart),
                cmocka_unit_test(test_stopped_past_timeout),
                cmocka_unit_test(test_worker_hangs_at_start),
                cmocka_unit_test(test_dispatch_late),
        };

        /* IMGD_TEST_FILTER=test_worker_* runs only the cases whose names match. */
        if (getenv("IMGD_TEST_FILTER"))
                cmocka_set_test_filter(getenv("IMGD_TEST_FILTER"));
        return cmocka_run_group_tests(tests, NULL, NULL);
}
