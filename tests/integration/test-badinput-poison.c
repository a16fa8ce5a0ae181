/* SPDX-License-Identifier: MIT */
/*
 * test-badinput-poison.c - issue 4's hostile sources, against the real daemon:
 *
 *   poison file        a source the worker abort()s on (IMGD_TEST_CRASH_SHA, test builds
 *                      only) ends dead after exactly retry.max_attempts, good files flow on.
 *   bombs              a PNG, a JPEG and a WebP whose headers claim far more than max_pixels
 *                      die at once, with the limit in the error and little worker memory.
 *
 * Checks that are independent of each other are collected (CHECK) and reported together, so one
 * run shows every broken promise; the test then fails.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>

#include "shared/hash.h"
#include "testutil.h"
#include "badinput-fixture.h"

static void test_poison(void **state)
{
        static const char *const fmts[] = { "jpeg", "png", "webp", "gif", "jpeg", "png" };
        static const char *const exts[] = { "jpg", "png", "webp", "gif", "jpg", "png" };
        const unsigned max_attempts = 3, n_good = ELEMENTSOF(fmts);
        char sha[HASH_HEX_SIZE], prefix[17];
        char *staged, *poison;
        struct tu_daemon *const d = badfx_daemon_new();
        struct job_row j;
        sqlite3 *db;
        int fd;

        (void)state;
#ifndef IMGD_FAULT_INJECTION
        skip(); /* the IMGD_TEST_CRASH_SHA hook exists in fault-injection builds only */
#endif
        tu_daemon_setup(d, PIPE_T, 2,
                        "limits = { job_timeout = 10; };\n"
                        "retry = { max_attempts = 3; base_delay_ms = 50; max_delay_ms = 200; };");
        staged = tu_path("%s/stage/poison.jpg", d->root);
        poison = tu_path("%s/poison.jpg", d->uploads);
        tu_make_image(staged, 333, 222, "jpeg", false);
        fd = open(staged, O_RDONLY | O_CLOEXEC);
        assert_true(fd >= 0);
        assert_int_equal(hash_sha256_fd(fd, 0, sha), 0);
        close(fd);
        snprintf(prefix, sizeof prefix, "%.16s", sha);

        /* Workers inherit the daemon's environment. */
        setenv("IMGD_TEST_CRASH_SHA", prefix, 1);
        tu_daemon_start(d);
        unsetenv("IMGD_TEST_CRASH_SHA");

        badfx_rename_or_fail(staged, poison);
        for (unsigned i = 0; i < n_good; i++) {
                char *s = tu_path("%s/stage/good%u.%s", d->root, i, exts[i]);
                char *p = tu_path("%s/good%u.%s", d->uploads, i, exts[i]);
                tu_make_image(s, 300 + 17 * i, 200 + 11 * i, fmts[i], i % 2 == 1);
                badfx_rename_or_fail(s, p);
                free(s);
                free(p);
        }
        tu_daemon_wait_idle(d, 60);
        badfx_assert_daemon_alive(d, "after the poison file");

        db = badfx_ledger_open(d);
        if (!badfx_job_of(db, poison, &j))
                fail_msg("%s: no job", poison);
        fprintf(stderr, "poison: job %lld %s after %d attempt(s): %s\n  every attempt: %s\n",
                (long long)j.id, j.state, j.attempts, j.error ? j.error : "(none)",
                j.errors ? j.errors : "(none)");
        CHECK(strcmp(j.state, "dead") == 0, "the poison job is %s, not dead", j.state);
        CHECK(j.attempts == (int)max_attempts, "the poison job used %d attempts, not %u",
              j.attempts, max_attempts);
        CHECK(j.n_errors == (int)max_attempts, "%d attempt errors recorded, not %u", j.n_errors,
              max_attempts);
        CHECK(j.error && strstr(j.error, "killed by SIGABRT"),
              "the poison job's error does not name SIGABRT: %s", j.error ? j.error : "");
        {
                /* Each attempt's own error names the signal. */
                unsigned n = 0;
                for (const char *p = j.errors; p && (p = strstr(p, "SIGABRT")); p++)
                        n++;
                CHECK(n == max_attempts, "%u of %u attempt errors name SIGABRT: %s", n,
                      max_attempts, j.errors ? j.errors : "");
        }
        CHECK(j.n_outputs == 0, "the poison job has %d outputs", j.n_outputs);
        badfx_job_row_clear(&j);

        for (unsigned i = 0; i < n_good; i++) {
                char *p = tu_path("%s/good%u.%s", d->uploads, i, exts[i]);
                char *o = tu_path("%s/good%u_t.webp", d->media, i);
                unsigned w = 0, h = 0;

                if (!badfx_job_of(db, p, &j)) {
                        badfx_problem("%s: no job", p);
                } else {
                        CHECK(strcmp(j.state, "done") == 0 && j.attempts == 1,
                              "%s: %s after %d attempt(s) (%s), while the poison file crashed "
                              "workers",
                              p, j.state, j.attempts, j.error ? j.error : "");
                        badfx_job_row_clear(&j);
                }
                CHECK(tu_image_props(o, &w, &h, NULL, 0, NULL, NULL) && w == 64 && h == 64,
                      "%s: missing or wrong (%ux%u)", o, w, h);
                free(p);
                free(o);
        }
        sqlite3_close(db);

        CHECK(badfx_log_count(d, "worker killed by SIGABRT") >= max_attempts,
              "the log names SIGABRT %u times, expected %u",
              badfx_log_count(d, "worker killed by SIGABRT"), max_attempts);
        {
                /* The killed workers were replaced. */
                pid_t pids[8];
                unsigned n = 0;
                for (int t = 0; t < 100 && (n = tu_daemon_children(d, pids, 8)) < 2; t++)
                        usleep(50 * 1000);
                CHECK(n == 2, "%u workers after the crashes, expected 2", n);
        }
        if (badfx_problems)
                badfx_print_log_tail(d, 6000);
        free(staged);
        free(poison);
        tu_daemon_cleanup(d);
        badfx_end_checks("poison file");
}

static void test_bombs(void **state)
{
        static const struct {
                const char *fmt, *ext;
                unsigned w, h;
        } bombs[] = { { "png", "png", 60000, 60000 },
                      { "jpeg", "jpg", 65000, 65000 },
                      /* libvips' own WebP header read allocates the canvas (1 GiB here). */
                      { "webp", "webp", 16383, 16383 } };
        const uint64_t rss_bound = 200 * MIB;
        struct memory mem = {}, base = {};
        struct tu_daemon *const d = badfx_daemon_new();
        sqlite3 *db;
        json_t *st;

        (void)state;
        /* The default limits.max_pixels (100 megapixels) applies. */
        tu_daemon_setup(d, PIPE_T, 1, NULL);
        tu_daemon_start(d);
        db = badfx_ledger_open(d);
        usleep(300 * 1000); /* the worker is up */
        badfx_sample_memory(d, NULL, &base);

        for (size_t i = 0; i < ELEMENTSOF(bombs); i++) {
                char *real = tu_path("%s/stage/real.%s", d->root, bombs[i].ext);
                char *staged = tu_path("%s/stage/bomb-%s.%s", d->root, bombs[i].fmt, bombs[i].ext);
                char *dest = tu_path("%s/bomb-%s.%s", d->uploads, bombs[i].fmt, bombs[i].ext);
                char *out = tu_path("%s/bomb-%s_t.webp", d->media, bombs[i].fmt);
                unsigned char *p;
                size_t len;
                struct job_row j;
                int64_t t0, ms;
                bool ok;

                tu_make_image(real, 64, 48, bombs[i].fmt, false);
                p = badfx_read_or_fail(real, &len);
                ok = i == 0   ? badfx_png_patch_ihdr(p, len, bombs[i].w, bombs[i].h)
                     : i == 1 ? badfx_jpeg_patch_sof(p, len, bombs[i].w, bombs[i].h)
                              : badfx_webp_patch_size(p, len, bombs[i].w, bombs[i].h);
                assert_true(ok);
                tu_write_file(staged, p, len);
                free(p);

                t0 = tu_now_us();
                badfx_rename_or_fail(staged, dest);
                ms = badfx_wait_final(d, db, dest, t0, 15000, &mem, &j);
                fprintf(stderr,
                        "bomb %s (%ux%u claimed, %zu bytes): %s in %lld ms after %d attempt(s): "
                        "%s\n",
                        bombs[i].fmt, bombs[i].w, bombs[i].h, len, j.state[0] ? j.state : "no job",
                        (long long)ms, j.attempts, j.error ? j.error : "(no error)");
                CHECK(strcmp(j.state, "dead") == 0, "the %s bomb is %s, not dead", bombs[i].fmt,
                      j.state[0] ? j.state : "not a job");
                CHECK(ms >= 0 && ms <= 2500, "the %s bomb took %lld ms to be refused", bombs[i].fmt,
                      (long long)ms);
                CHECK(j.attempts == 1, "the %s bomb used %d attempts", bombs[i].fmt, j.attempts);
                CHECK(j.error && strstr(j.error, "limit"),
                      "the %s bomb's error does not mention the limit: %s", bombs[i].fmt,
                      j.error ? j.error : "(none)");
                CHECK(access(out, F_OK) != 0, "the %s bomb was published as %s", bombs[i].fmt, out);
                badfx_job_row_clear(&j);
                free(real);
                free(staged);
                free(dest);
                free(out);
        }
        badfx_assert_daemon_alive(d, "after the bombs");
        st = badfx_status_json(d, NULL);
        badfx_sample_memory(d, st, &mem);
        json_decref(st);
        fprintf(stderr,
                "bombs: worker peak RSS VmHWM %.1f MiB (%.1f MiB before the bombs), status "
                "peak_rss %.1f MiB\n",
                (double)mem.hwm / MIB, (double)base.hwm / MIB, (double)mem.status_peak / MIB);
        CHECK(mem.hwm > 0, "no worker's VmHWM could be read");
        CHECK(mem.hwm < rss_bound && mem.status_peak < rss_bound,
              "a worker used %.1f MiB (VmHWM) / %.1f MiB (peak_rss) on the bombs, not well under "
              "200 MiB",
              (double)mem.hwm / MIB, (double)mem.status_peak / MIB);
        CHECK(badfx_log_count(d, "worker killed by") == 0, "a worker was killed on a bomb");

        if (badfx_problems)
                badfx_print_log_tail(d, 4000);
        sqlite3_close(db);
        tu_daemon_cleanup(d);
        badfx_end_checks("decompression bombs");
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_teardown(test_poison, badfx_teardown),
                cmocka_unit_test_teardown(test_bombs, badfx_teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
