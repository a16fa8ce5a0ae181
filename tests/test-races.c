/* SPDX-License-Identifier: MIT */
/*
 * test-races.c - races between uploads, jobs and workers, against the real daemon with real
 * workers, real files and real signals (SIGSTOP/SIGCONT of the daemon and of its workers
 * hold a job in flight, or a result and a timeout back, at exactly the moment a race needs):
 *
 * - a daemon stopped past the job timeout while jobs run: the results that arrived meanwhile
 *   win over the overdue timeouts, and no worker being killed is handed the next job.
 */
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "testutil.h"

#define ONE_VARIANT                                                                                \
        "( { name = \"s\"; width = 64; height = 64; fit = \"cover\"; format = \"webp\"; } )"

/* ---- helpers ---------------------------------------------------------------------------- */

/* Runs `imgctl <args...> --json` (up to three arguments); fails the test unless it exits 0. */
static json_t *imgctl_json(struct tu_daemon *d, const char *cmd, const char *a1, const char *a2)
{
        char *out = NULL;
        json_error_t err;
        json_t *j;
        int r;

        if (a2)
                r = tu_imgctl(d, &out, cmd, a1, a2, "--json", NULL);
        else if (a1)
                r = tu_imgctl(d, &out, cmd, a1, "--json", NULL);
        else
                r = tu_imgctl(d, &out, cmd, "--json", NULL);
        if (r != 0)
                fail_msg("imgctl %s %s failed (%d): %s", cmd, a1 ? a1 : "", r, out ? out : "");
        j = json_loads(out, 0, &err);
        if (!j)
                fail_msg("imgctl %s --json printed no JSON (%s): %s", cmd, err.text, out);
        free(out);
        return j;
}

/* A member of `imgctl status --json` (of its group `group` unless NULL). */
static json_int_t status_int(struct tu_daemon *d, const char *group, const char *key)
{
        json_t *st = imgctl_json(d, "status", NULL, NULL);
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

/* ---- a stopped daemon's overdue timeouts ----------------------------------------------- */

/*
 * Jobs run while the daemon is stopped (SIGSTOP) for longer than limits.job_timeout; the
 * workers finish them meanwhile. Continued (SIGCONT), the daemon finds each result and its
 * overdue timeout ready at once: the result must win, and no worker may be killed for a job
 * it has finished, nor handed a job while it is being killed. Every job is done at its first
 * attempt, and nothing was killed. Several rounds: which of the two the event loop takes
 * first varies (before the fix, the next jobs failed "worker killed by SIGKILL" in 5 of 6
 * runs).
 */
static void test_stopped_past_timeout(void **state)
{
        const unsigned timeout_s = 2, rounds = 4, per_round = 4;
        struct tu_daemon d;
        char *extra;
        json_t *all, *job;
        size_t i;

        (void)state;
        extra = tu_path("limits = { job_timeout = %u; };\n"
                        "retry = { max_attempts = 5; base_delay_ms = 50; max_delay_ms = 200; };",
                        timeout_s);
        tu_daemon_setup(&d, ONE_VARIANT, 2, extra);
        free(extra);
        tu_daemon_start(&d);

        for (unsigned round = 0; round < rounds; round++) {
                int waited;

                json_decref(imgctl_json(&d, "pause", NULL, NULL));
                for (unsigned k = 0; k < per_round; k++) {
                        char *tmp = tu_path("%s/r%u-%u.png", d.root, round, k);
                        char *dest = tu_path("%s/r%u-%u.png", d.uploads, round, k);

                        /* Large enough to take a while to decode: still running when the
                         * daemon is stopped. */
                        tu_make_image(tmp, 1600, 1200, "png", false);
                        move(tmp, dest);
                        free(tmp);
                        free(dest);
                }
                wait_count(&d, "queued", per_round, 20000);
                json_decref(imgctl_json(&d, "resume", NULL, NULL));
                for (waited = 0; waited < 5000 && status_int(&d, NULL, "running") == 0; waited += 5)
                        usleep(5 * 1000);
                assert_int_equal(kill(d.pid, SIGSTOP), 0);
                usleep((timeout_s * 1000 + 2000) * 1000);
                assert_int_equal(kill(d.pid, SIGCONT), 0);
                tu_daemon_wait_idle(&d, 120);
        }

        all = imgctl_json(&d, "jobs", "--limit", "1000");
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
        tu_daemon_cleanup(&d);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_stopped_past_timeout),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
