/* SPDX-License-Identifier: MIT */
/*
 * test-degrade.c - graceful degradation against the real daemon: a backlog past the
 * configured thresholds lowers the level (reduced, essential); jobs rendered meanwhile are
 * recorded as degraded, skip their non-essential variants, and are rendered again at full
 * quality once health returns, so degradation is temporary for the outputs too.
 */
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

#include "testutil.h"

#define PIPE                                                                                   \
        "( { name = \"thumb\"; width = 64; height = 64; fit = \"cover\"; format = \"webp\"; "    \
        "essential = true; },"                                                                  \
        "  { name = \"big\"; width = 900; height = 900; fit = \"inside\"; format = \"jpeg\"; "   \
        "quality = 90; } )"

#define DEGRADATION                                                                            \
        "degradation = { recover_ms = 600;"                                                     \
        "  reduced = { queued = 3; }; essential = { queued = 6; }; paused = { queued = 100000; }; };"

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
                if (query(&d, "SELECT count(*) FROM jobs WHERE degraded = 1") == 0 &&
                    query(&d, "SELECT count(*) FROM jobs WHERE state IN "
                              "('queued','running','retry')") == 0)
                        break;
                usleep(500 * 1000);
        }
        assert_true(tu_log_contains(&d, "rendering"));
        assert_true(tu_log_contains(&d, "degraded job(s) again at full quality"));
        assert_int_equal(query(&d, "SELECT count(*) FROM jobs WHERE degraded = 1"), 0);
        assert_int_equal(query(&d, "SELECT count(*) FROM jobs WHERE state = 'done'"), n);
        /* Every source has both variants again, the big one at its full quality. */
        assert_int_equal(tu_count_files(d.media, "*_thumb.webp"), n);
        assert_int_equal(tu_count_files(d.media, "*_big.jpg"), n);
        assert_int_equal(query(&d, "SELECT count(*) FROM outputs WHERE variant = 'big'"), n);
        char *m = tu_path("%s/burst00.manifest.json", d.media);
        char *text = tu_read_file(m, NULL);
        assert_non_null(text);
        assert_non_null(strstr(text, "\"degraded\": false"));
        free(text);
        free(m);
        tu_daemon_cleanup(&d);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_backlog_degrades_then_recovers),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
