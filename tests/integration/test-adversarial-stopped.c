/* SPDX-License-Identifier: MIT */
/*
 * test-adversarial-stopped.c - the adversarial battery, quick size, against the real daemon:
 * processes stopped (SIGSTOP). The supervisor stopped past the job timeout with jobs in flight and
 * uploads arriving (its pause is not the workers': nothing times out, everything is done once at
 * the first attempt, status answers soon after the continue; scripts/adversarial.sh --case sigstop
 * runs it at full size), and a worker stopped past it (killed, the attempt counts, the job is
 * retried and done).
 *
 * IMGD_TEST_FILTER=test_daemon_* runs only the cases whose names match.
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

/* Waits until status counts at least n jobs in `state` (fails after 30 s). */
static void wait_jobs_at_least(struct tu_daemon *d, const char *state, json_int_t n)
{
        for (int waited = 0;; waited += 50) {
                json_t *st = tu_status_json(d, NULL);
                json_int_t k = tu_jobs_in(st, state);

                json_decref(st);
                if (k >= n)
                        return;
                if (waited > 30000) {
                        char *log = advfx_log_of(d);
                        fail_msg("%lld jobs %s, not %lld or more; log:\n%s", (long long)k, state,
                                 (long long)n, log);
                }
                usleep(50 * 1000);
        }
}

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
        advfx_drop_images(&d, "during", during);
        sleep(stop_s);
        assert_int_equal(kill(d.pid, SIGCONT), 0);
        first_ms = status_ms(&d);
        printf("stopped %u s: status answered %.0f ms after SIGCONT\n", stop_s, first_ms);
        if (first_ms > 1000) {
                char *log = advfx_log_of(&d);
                fail_msg("status took %.0f ms after SIGCONT; log:\n%s", first_ms, log);
        }
        tu_daemon_wait_idle(&d, 120);
        advfx_assert_each_done_once(&d, first + during);
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
        advfx_drop_images(&d, "held", 1);
        advfx_wait_jobs(&d, "queued", 1);
        assert_int_equal(tu_daemon_children(&d, pids, 4), 1);
        /* Stopped once it is ready for work: then the job goes to it. */
        {
                char *ready = tu_path("worker %d ready", (int)pids[0]);
                advfx_wait_log(&d, ready, 20000);
                free(ready);
        }
        assert_int_equal(kill(pids[0], SIGSTOP), 0);
        assert_int_equal(tu_imgctl(&d, NULL, "resume", NULL), 0);
        advfx_wait_log(&d, "timed out after 2 s", 20000);
        tu_daemon_wait_idle(&d, 60);
        assert_int_equal(tu_ledger_int(&d, "SELECT count(*) FROM jobs WHERE state = 'done' AND "
                                           "attempts = 2"),
                         1);
        assert_int_equal(tu_ledger_int(&d, "SELECT count(*) FROM job_errors WHERE message LIKE "
                                           "'%timed out%'"),
                         1);
        assert_int_equal(tu_count_files(d.media, "*_s.webp"), 1);
        advfx_assert_verify_clean(&d);
        (void)kill(pids[0], SIGKILL); /* reaped by the daemon already; harmless */
        tu_daemon_cleanup(&d);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_daemon_stopped),
                cmocka_unit_test(test_worker_stopped),
        };

        /* IMGD_TEST_FILTER=test_daemon_* runs only the cases whose names match. */
        if (getenv("IMGD_TEST_FILTER"))
                cmocka_set_test_filter(getenv("IMGD_TEST_FILTER"));
        return cmocka_run_group_tests(tests, NULL, NULL);
}
