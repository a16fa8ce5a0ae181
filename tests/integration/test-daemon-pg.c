/* SPDX-License-Identifier: MIT */
/*
 * test-daemon-pg.c - the real imgd on the PostgreSQL engine (ledger = { engine =
 * "postgresql"; ... }), on a server of the test's own (tests/tools/pg-fixture.c):
 * `imgd --check-config` connects and reports the schema's version (and refuses a database it
 * cannot reach, without the conninfo in its message, and a schema newer than this imgd,
 * leaving it as it is, as the start does), and uploads dropped into the watched
 * tree end done, with their outputs, recorded in the database, leases owned by the configured
 * node; after a restart the daemon finds them done and renders nothing again.
 *
 * PostgreSQL (Debian package postgresql) must be installed; scripts/deps.sh --tests installs
 * it. A missing server fails the test rather than skipping it.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg-fixture.h"
#include "testutil.h"

#define AVATAR                                                                                     \
        "( { name = \"small\"; width = 100; height = 100; fit = \"cover\"; format = \"webp\"; } )"

static char *ledger_conf(const char *conninfo)
{
        /* conninfo quotes its options with '...': no double quote to escape. */
        return tu_path("ledger = { engine = \"postgresql\"; conninfo = \"%s\"; node = \"n1\"; };",
                       conninfo);
}

/* Runs imgd --check-config on d's configuration; its output in *out (the previous freed). */
static int check_config(const struct tu_daemon *d, char **out)
{
        free(*out);
        *out = NULL;
        return tu_run(out, IMGD_BUILD_DIR "/imgd", "--check-config", "-c", d->config, NULL);
}

static void test_check_config(void **state)
{
        _cleanup_free_ char *conninfo = pgfx_schema_new(), *extra = ledger_conf(conninfo);
        _cleanup_free_ char *out = NULL, *bad = NULL;
        struct tu_daemon d = {};
        int r;

        tu_daemon_setup(&d, AVATAR, 1, extra);
        r = check_config(&d, &out);
        if (r != 0)
                fail_msg("imgd --check-config: %d\n%s", r, out ? out : "");
        assert_non_null(strstr(out, "schema version 3"));
        assert_non_null(strstr(out, "configuration OK"));
        /* imgd created the schema in the connection's schema. */
        assert_int_equal(pgfx_int(conninfo, "SELECT version FROM schema_version"), 3);

        /* A schema newer than this imgd (written by a later version): refused, naming both
         * versions, and left as it is; so does the start. */
        pgfx_exec(conninfo, "UPDATE schema_version SET version = 99");
        r = check_config(&d, &out);
        if (r != 1 || !strstr(out, "schema version 99 is newer than this imgd supports (3)") ||
            strstr(out, "configuration OK"))
                fail_msg("imgd --check-config on a newer schema: %d\n%s", r, out);
        assert_int_equal(pgfx_int(conninfo, "SELECT version FROM schema_version"), 99);
        free(out);
        out = NULL;
        /* (Bounded: an imgd that started would run until stopped.) */
        r = tu_run(&out, "/usr/bin/timeout", "30", IMGD_BUILD_DIR "/imgd", "-c", d.config, NULL);
        if (r == 0 || !strstr(out, "schema version 99 is newer than this imgd"))
                fail_msg("imgd started on a newer schema: %d\n%s", r, out);
        assert_int_equal(pgfx_int(conninfo, "SELECT version FROM schema_version"), 99);
        tu_daemon_cleanup(&d);

        /* No server there: refused, and the conninfo is not repeated (a password in it is
         * refused before: the configuration's own check). */
        bad = ledger_conf("host=/nonexistent/imgd-test dbname=secretdb connect_timeout=2");
        tu_daemon_setup(&d, AVATAR, 1, bad);
        r = check_config(&d, &out);
        if (r != 1 || !strstr(out, "cannot connect to PostgreSQL") || strstr(out, "secretdb") ||
            strstr(out, "configuration OK"))
                fail_msg("imgd --check-config on a server not there: %d\n%s", r, out);
        tu_daemon_cleanup(&d);
}

static void test_end_to_end(void **state)
{
        _cleanup_free_ char *conninfo = pgfx_schema_new(), *extra = ledger_conf(conninfo);
        struct tu_daemon d = {};

        tu_daemon_setup(&d, AVATAR, 2, extra);
        tu_daemon_start(&d);
        assert_true(tu_log_contains(&d, "postgresql://"));
        for (int i = 0; i < 3; i++) {
                char *p = tu_path("%s/a%d.jpg", d.uploads, i);

                tu_make_image(p, 320 + 8 * i, 240, "jpeg", false);
                free(p);
        }
        tu_daemon_wait_idle(&d, 60);
        assert_int_equal(tu_count_files(d.media, "*_small.webp"), 3);
        assert_int_equal(pgfx_int(conninfo, "SELECT count(*) FROM jobs WHERE state = 'done'"), 3);
        assert_int_equal(pgfx_int(conninfo, "SELECT count(*) FROM outputs"), 3);
        assert_int_equal(pgfx_int(conninfo, "SELECT min(fence) FROM jobs"), 1);
        assert_int_equal(pgfx_int(conninfo, "SELECT sum(n) FROM job_counts WHERE state = 'done'"),
                         3);
        assert_int_equal(tu_daemon_stop(&d, SIGTERM), 0);

        /* A restart finds them done: nothing rendered again. */
        tu_daemon_start(&d);
        tu_daemon_wait_idle(&d, 60);
        assert_int_equal(pgfx_int(conninfo, "SELECT count(*) FROM jobs"), 3);
        assert_int_equal(pgfx_int(conninfo, "SELECT max(attempts) FROM jobs"), 1);
        tu_daemon_cleanup(&d);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_check_config),
                cmocka_unit_test(test_end_to_end),
        };
        int failed = cmocka_run_group_tests(tests, NULL, NULL);

        pgfx_server_stop();
        return failed;
}
