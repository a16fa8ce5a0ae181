/* SPDX-License-Identifier: MIT */
/*
 * test-degrade.c - graceful degradation against the real daemon: a backlog past the
 * configured thresholds lowers the level (reduced, essential); jobs rendered meanwhile are
 * recorded as degraded, skip their non-essential variants, and are rendered again at full
 * quality once health returns, so degradation is temporary for the outputs too; a reload
 * applies new thresholds.
 */
#include <jansson.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

#include "testutil.h"

#define PIPE                                                                                       \
        "( { name = \"thumb\"; width = 64; height = 64; fit = \"cover\"; format = \"webp\"; "      \
        "essential = true; },"                                                                     \
        "  { name = \"big\"; width = 900; height = 900; fit = \"inside\"; format = \"jpeg\"; "     \
        "quality = 90; } )"

#define DEGRADATION                                                                                \
        "degradation = { recover_ms = 600;"                                                        \
        "  reduced = { queued = 3; }; essential = { queued = 6; }; paused = { queued = 100000; "   \
        "}; };"

static void test_backlog_degrades_then_recovers(void **state)
{
        struct tu_daemon d;
        const unsigned n = 16;

        tu_daemon_setup(&d, PIPE, 1, DEGRADATION);
        tu_daemon_start(&d);
        /* A burst: far more queued than the thresholds, with a single worker. Intake is
         * paused until the backlog has been seen, so that it does not depend on how fast
         * the worker renders against how fast this test makes the images. */
        assert_int_equal(tu_imgctl(&d, NULL, "pause", NULL), 0);
        for (unsigned i = 0; i < n; i++) {
                char *tmp = tu_path("%s/burst%02u.jpg", d.root, i);
                char *dst = tu_path("%s/burst%02u.jpg", d.uploads, i);
                tu_make_image(tmp, 1800, 1200, "jpeg", false);
                assert_int_equal(rename(tmp, dst), 0);
                free(tmp);
                free(dst);
        }
        for (int waited = 0; waited < 100; waited++) {
                if (tu_log_contains(&d, "degradation level essential"))
                        break;
                usleep(100 * 1000);
        }
        assert_int_equal(tu_imgctl(&d, NULL, "resume", NULL), 0);
        tu_daemon_wait_idle(&d, 120);
        assert_true(tu_log_contains(&d, "degradation level essential"));

        /* Health returns; the degraded jobs are rendered again, until none is left. */
        for (int waited = 0; waited < 60; waited++) {
                if (tu_ledger_int(&d, "SELECT count(*) FROM jobs WHERE degraded = 1") == 0 &&
                    tu_ledger_int(&d, "SELECT count(*) FROM jobs WHERE state IN "
                                      "('queued','running','retry')") == 0)
                        break;
                usleep(500 * 1000);
        }
        assert_true(tu_log_contains(&d, "rendering"));
        assert_true(tu_log_contains(&d, "degraded job(s) again at full quality"));
        assert_int_equal(tu_ledger_int(&d, "SELECT count(*) FROM jobs WHERE degraded = 1"), 0);
        assert_int_equal(tu_ledger_int(&d, "SELECT count(*) FROM jobs WHERE state = 'done'"), n);
        /* Every source has both variants again, the big one at its full quality. */
        assert_int_equal(tu_count_files(d.media, "*_thumb.webp"), n);
        assert_int_equal(tu_count_files(d.media, "*_big.jpg"), n);
        assert_int_equal(tu_ledger_int(&d, "SELECT count(*) FROM outputs WHERE variant = 'big'"),
                         n);
        char *m = tu_path("%s/burst00.manifest.json", d.media);
        char *text = tu_read_file(m, NULL);
        assert_non_null(text);
        assert_non_null(strstr(text, "\"degraded\": false"));
        free(text);
        free(m);
        tu_daemon_cleanup(&d);
}

/* The degradation level from `imgctl status --json`. */
static char *level_of(struct tu_daemon *d)
{
        char *out = NULL, *level;
        json_t *j;

        (void)tu_imgctl(d, &out, "status", "--json", NULL); /* 1 while alerts are active */
        j = json_loads(out ? out : "", 0, NULL);
        assert_non_null(j);
        level = strdup(json_string_value(json_object_get(json_object_get(j, "health"), "level")));
        json_decref(j);
        free(out);
        return level;
}

static void wait_level(struct tu_daemon *d, const char *want, int timeout_ms)
{
        char *level = NULL;

        for (int waited = 0;; waited += 100) {
                free(level);
                level = level_of(d);
                if (strcmp(level, want) == 0)
                        break;
                if (waited > timeout_ms) {
                        char *log = tu_read_file(d->log, NULL);
                        fail_msg("level %s, not %s, after %d ms; daemon log:\n%s", level, want,
                                 timeout_ms, log ? log : "");
                }
                usleep(100 * 1000);
        }
        free(level);
}

/*
 * A reload applies new degradation thresholds: paused intake holds 4 queued jobs, over a
 * reduced threshold of 3 (with a recovery that would take 10 minutes); after SIGHUP with a
 * threshold of 9 the level is full again at the next sample, not after the old wait.
 */
static void test_reload_thresholds(void **state)
{
        struct tu_daemon d;
        char *conf;

        (void)state;
        tu_daemon_setup(&d, PIPE, 1,
                        "degradation = { recover_ms = 600000; reduced = { queued = 3; }; };");
        tu_daemon_start(&d);
        assert_int_equal(tu_imgctl(&d, NULL, "pause", NULL), 0);
        for (unsigned i = 0; i < 4; i++) {
                char *p = tu_path("%s/q%u.jpg", d.uploads, i);
                tu_make_image(p, 200, 100, "jpeg", false);
                free(p);
        }
        wait_level(&d, "reduced", 20000);

        conf = tu_read_file(d.config, NULL);
        assert_non_null(conf);
        {
                char *at = strstr(conf, "queued = 3;");
                assert_non_null(at);
                memcpy(at, "queued = 9;", 11); /* same length; 9 is above the 4 queued */
        }
        tu_write_file(d.config, conf, strlen(conf));
        kill(d.pid, SIGHUP);
        for (int waited = 0; !tu_log_contains(&d, "degradation thresholds changed"); waited += 50) {
                assert_true(waited < 10000);
                usleep(50 * 1000);
        }
        wait_level(&d, "full", 10000);
        free(conf);
        assert_int_equal(tu_imgctl(&d, NULL, "resume", NULL), 0);
        tu_daemon_wait_idle(&d, 60);
        tu_daemon_cleanup(&d);
}

/* Waits (up to 60 s) until no job is left degraded, then until the daemon is idle: back at
 * full health the degraded jobs are queued again, in batches, for their full render. */
static void wait_rerendered(struct tu_daemon *d)
{
        for (int waited = 0; waited < 120; waited++) {
                if (tu_ledger_int(d, "SELECT count(*) FROM jobs WHERE degraded = 1") == 0)
                        break;
                usleep(500 * 1000);
        }
        tu_daemon_wait_idle(d, 60);
}

/* Makes n images of w x h in `format` ("jpeg", "png") outside the watched folder, then moves
 * them all in at once. */
static void drop_images(struct tu_daemon *d, const char *prefix, unsigned n, unsigned w, unsigned h,
                        const char *format)
{
        for (unsigned i = 0; i < n; i++) {
                char *tmp = tu_path("%s/%s%03u.%s", d->root, prefix, i, format);
                tu_make_image(tmp, w, h, format, false);
                free(tmp);
        }
        for (unsigned i = 0; i < n; i++) {
                char *tmp = tu_path("%s/%s%03u.%s", d->root, prefix, i, format);
                char *dst = tu_path("%s/%s%03u.%s", d->uploads, prefix, i, format);
                assert_int_equal(rename(tmp, dst), 0);
                free(tmp);
                free(dst);
        }
}

/*
 * A backlog over every threshold, paused included, still drains: the paused level keeps a
 * trickle of one job at a time going, oldest first, so the queue shrinks, the level steps
 * back down and the daemon returns to full health (before, paused claimed nothing and the
 * only way out, a shorter queue, could never come).
 */
static void test_backlog_over_paused_drains(void **state)
{
        struct tu_daemon d;
        const unsigned n = 100;

        (void)state;
        tu_daemon_setup(&d, PIPE, 2,
                        "degradation = { recover_ms = 300; reduced = { queued = 20; };"
                        "  essential = { queued = 40; }; paused = { queued = 60; }; };");
        tu_daemon_start(&d);
        assert_int_equal(tu_imgctl(&d, NULL, "pause", NULL), 0);
        drop_images(&d, "deep", n, 300, 200, "jpeg");
        wait_level(&d, "paused", 30000);
        assert_int_equal(tu_imgctl(&d, NULL, "resume", NULL), 0);
        tu_daemon_wait_idle(&d, 120);
        /* Every job finished (done; back at full health a degraded one may already be
         * queued again for its full render, so "done" is counted at the end). */
        assert_int_equal(tu_ledger_int(&d, "SELECT count(*) FROM jobs"), n);
        assert_int_equal(tu_ledger_int(&d, "SELECT count(*) FROM jobs WHERE state NOT IN "
                                           "('done', 'queued', 'running')"),
                         0);
        wait_level(&d, "full", 30000);
        /* Back at full health, what was rendered degraded is rendered again. */
        wait_rerendered(&d);
        assert_int_equal(tu_ledger_int(&d, "SELECT count(*) FROM jobs WHERE degraded = 1"), 0);
        assert_int_equal(tu_ledger_int(&d, "SELECT count(*) FROM jobs WHERE state = 'done'"), n);
        assert_int_equal(tu_count_files(d.media, "*_thumb.webp"), n);
        assert_int_equal(tu_count_files(d.media, "*_big.jpg"), n);
        tu_daemon_cleanup(&d);
}

/*
 * An operator's pause is not ill health: jobs held by `imgctl pause` for longer than the
 * paused level's age threshold do not move the level, and after `imgctl resume` they drain.
 * Without the fix the held jobs' age took the level to paused, which claimed nothing, so
 * nothing ever ran again.
 */
static void test_operator_pause_is_not_ill_health(void **state)
{
        struct tu_daemon d;
        const unsigned n = 10;
        char *level;

        (void)state;
        /* Only the age counts here: the machine's memory (shared with other tests) and the
         * error rate are kept out of reach. */
        tu_daemon_setup(&d, PIPE, 1,
                        "degradation = { recover_ms = 300;"
                        "  reduced = { oldest_s = 1; memory = 1.0; error_rate = 1.0; };"
                        "  essential = { oldest_s = 2; memory = 1.0; error_rate = 1.0; };"
                        "  paused = { oldest_s = 3; memory = 1.0; error_rate = 1.0; }; };");
        tu_daemon_start(&d);
        assert_int_equal(tu_imgctl(&d, NULL, "pause", NULL), 0);
        drop_images(&d, "held", n, 300, 200, "jpeg");
        sleep(5); /* the maintenance window: past every age threshold */
        level = level_of(&d);
        if (strcmp(level, "full") != 0) {
                char *out = NULL, *log = tu_read_file(d.log, NULL);
                (void)tu_imgctl(&d, &out, "status", NULL);
                fail_msg("level %s during the operator's pause:\n%s\nlog:\n%s", level,
                         out ? out : "", log ? log : "");
        }
        free(level);
        assert_int_equal(tu_imgctl(&d, NULL, "resume", NULL), 0);
        tu_daemon_wait_idle(&d, 60);
        assert_int_equal(tu_ledger_int(&d, "SELECT count(*) FROM jobs"), n);
        /* Waits count from the resume: on a slow machine the last of them may have waited
         * long enough for a level, which is left again once the queue is empty. */
        wait_level(&d, "full", 30000);
        wait_rerendered(&d);
        assert_int_equal(tu_ledger_int(&d, "SELECT count(*) FROM jobs WHERE state = 'done'"), n);
        assert_int_equal(tu_count_files(d.media, "*_big.jpg"), n);
        tu_daemon_cleanup(&d);
}

/*
 * The age of the oldest job alone, with no operator involved, takes the level to paused
 * (here the only worker is stopped while uploads arrive); once the worker goes on, the
 * trickle drains the backlog, oldest first, and the level steps back to full. Without the
 * trickle nothing was claimed after the stopped worker's job, and the level never left.
 */
static void test_age_over_paused_drains(void **state)
{
        struct tu_daemon d;
        const unsigned n = 10;
        pid_t worker;

        (void)state;
        tu_daemon_setup(&d, PIPE, 1,
                        "degradation = { recover_ms = 300; reduced = { oldest_s = 1; };"
                        "  essential = { oldest_s = 2; }; paused = { oldest_s = 3; }; };");
        tu_daemon_start(&d);
        assert_int_equal(tu_daemon_children(&d, &worker, 1), 1);
        assert_int_equal(kill(worker, SIGSTOP), 0);
        drop_images(&d, "aged", n, 300, 200, "jpeg");
        wait_level(&d, "paused", 30000);
        assert_int_equal(kill(worker, SIGCONT), 0);
        tu_daemon_wait_idle(&d, 120);
        assert_int_equal(tu_ledger_int(&d, "SELECT count(*) FROM jobs"), n);
        assert_int_equal(tu_ledger_int(&d, "SELECT count(*) FROM jobs WHERE state = 'dead'"), 0);
        wait_level(&d, "full", 30000);
        wait_rerendered(&d);
        assert_int_equal(tu_ledger_int(&d, "SELECT count(*) FROM jobs WHERE state = 'done'"), n);
        assert_int_equal(tu_count_files(d.media, "*_big.jpg"), n);
        tu_daemon_cleanup(&d);
}

/*
 * A backfill is planned work, not a backlog: background jobs queued far past the thresholds
 * (here held by the operator's pause so that they stay queued) leave the level full, raise no
 * alert about waiting jobs, and the reconciliation renders at full quality.
 */
static void test_backfill_is_not_a_backlog(void **state)
{
        struct tu_daemon d;
        char *conf, *level;

        (void)state;
        tu_daemon_setup(&d, "( { name = \"thumb\"; width = 32; height = 32; format = \"webp\"; } )",
                        1, DEGRADATION);
        tu_daemon_start(&d);
        for (unsigned i = 0; i < 10; i++) {
                char *p = tu_path("%s/src%02u.png", d.uploads, i);

                tu_make_image(p, 40 + i, 30, "png", false);
                tu_daemon_wait_idle(&d, 60); /* one at a time: no backlog of uploads */
                free(p);
        }
        assert_int_equal(tu_ledger_int(&d, "SELECT count(*) FROM jobs WHERE degraded = 1"), 0);

        conf = tu_path("state_dir = \"%s\";\nsocket = \"%s\";\nworkers = 1;\n"
                       "watch = ( { path = \"%s\"; output = \"%s\"; pipeline = \"p\"; } );\n"
                       "pipelines = { p = ( { name = \"thumb\"; width = 32; height = 32; "
                       "format = \"webp\"; }, { name = \"x\"; width = 24; height = 24; "
                       "format = \"jpeg\"; } ); };\n%s\n",
                       d.state, d.socket, d.uploads, d.media, DEGRADATION);
        tu_write_file(d.config, conf, (size_t)-1);
        free(conf);
        assert_int_equal(tu_imgctl(&d, NULL, "pause", NULL), 0);
        assert_int_equal(tu_imgctl(&d, NULL, "reload", NULL), 0);
        for (int waited = 0; tu_ledger_int(&d, "SELECT count(*) FROM jobs WHERE redo IS NOT "
                                               "NULL AND state = 'queued'") < 10;
             waited += 50) {
                assert_true(waited < 20000);
                usleep(50 * 1000);
        }
        /* Several health checks (recover_ms 600: one at least every 150 ms). */
        usleep(1500 * 1000);
        level = level_of(&d);
        assert_string_equal(level, "full");
        free(level);
        assert_false(tu_log_contains(&d, "degradation level"));
        assert_int_equal(tu_imgctl(&d, NULL, "resume", NULL), 0);
        tu_daemon_wait_idle(&d, 120);
        assert_int_equal(tu_ledger_int(&d, "SELECT count(*) FROM jobs WHERE redo IS NOT NULL "
                                           "AND state = 'done' AND degraded = 0"),
                         10);
        tu_daemon_cleanup(&d);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_backlog_degrades_then_recovers),
                cmocka_unit_test(test_reload_thresholds),
                cmocka_unit_test(test_backlog_over_paused_drains),
                cmocka_unit_test(test_operator_pause_is_not_ill_health),
                cmocka_unit_test(test_age_over_paused_drains),
                cmocka_unit_test(test_backfill_is_not_a_backlog),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
