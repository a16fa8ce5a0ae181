/* SPDX-License-Identifier: MIT */
/*
 * adversarial-fixture.c - helpers of the adversarial battery (test-adversarial-*): the daemon's
 * log, `imgctl verify` clean, every upload done exactly once, images dropped into the uploads, and
 * waits on the log and on the job counts of status.
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

char *advfx_log_of(struct tu_daemon *d)
{
        /* Its end: what a failure message can hold (cmocka cuts a longer one), and where the
         * daemon says what it did last. */
        const size_t keep = 3000;
        char *log = tu_read_file(d->log, NULL);
        size_t n = log ? strlen(log) : 0;

        if (!log)
                return strdup("");
        if (n > keep) {
                memmove(log + 4, log + n - keep, keep + 1);
                memcpy(log, "...\n", 4);
        }
        return log;
}

void advfx_assert_verify_clean(struct tu_daemon *d)
{
        char *out = NULL;
        int r = tu_imgctl(d, &out, "verify", NULL);

        if (r != 0)
                fail_msg("imgctl verify exited %d:\n%s", r, out ? out : "");
        free(out);
}

void advfx_assert_each_done_once(struct tu_daemon *d, unsigned n)
{
        int64_t jobs = tu_ledger_int(d, "SELECT count(*) FROM jobs");
        int64_t done =
                tu_ledger_int(d, "SELECT count(*) FROM jobs WHERE state = 'done' AND attempts = 1");

        if (jobs != n || done != n) {
                char *log = advfx_log_of(d);
                fail_msg("%lld jobs, %lld done at the first attempt, for %u files; log:\n%s",
                         (long long)jobs, (long long)done, n, log);
        }
        assert_int_equal(tu_ledger_int(d, "SELECT count(DISTINCT source_path) FROM jobs"), n);
        assert_int_equal(tu_count_files(d->media, "*_s.webp"), n);
        assert_int_equal(tu_count_files(d->media, "*.manifest.json"), n);
        assert_int_equal(tu_count_files(d->media, ".imgd-*"), 0);
        advfx_assert_verify_clean(d);
}

void advfx_drop_images(struct tu_daemon *d, const char *prefix, unsigned n)
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

void advfx_wait_log(struct tu_daemon *d, const char *text, int timeout_ms)
{
        for (int waited = 0; !tu_log_contains(d, text); waited += 50) {
                if (waited > timeout_ms) {
                        char *log = advfx_log_of(d);
                        fail_msg("the log does not say \"%s\" within %d ms:\n%s", text, timeout_ms,
                                 log);
                }
                usleep(50 * 1000);
        }
}

void advfx_wait_jobs(struct tu_daemon *d, const char *state, json_int_t n)
{
        for (int waited = 0;; waited += 50) {
                json_t *st = tu_status_json(d, NULL);
                json_int_t k = tu_jobs_in(st, state);

                json_decref(st);
                if (k == n)
                        return;
                if (waited > 30000) {
                        char *log = advfx_log_of(d);
                        fail_msg("%lld jobs %s, not %lld; log:\n%s", (long long)k, state,
                                 (long long)n, log);
                }
                usleep(50 * 1000);
        }
}

json_t *advfx_status_of(struct tu_daemon *d, int *ret_rc)
{
        char *out = NULL;
        int rc = tu_imgctl(d, &out, "status", "--json", NULL);
        json_t *st = json_loads(out ? out : "", 0, NULL);

        if (!st || (rc != 0 && rc != 1))
                fail_msg("imgctl status --json exited %d: %s", rc, out ? out : "");
        free(out);
        if (ret_rc)
                *ret_rc = rc;
        return st;
}

long long advfx_status_jobs(const json_t *st, const char *state)
{
        return json_integer_value(json_object_get(json_object_get(st, "jobs"), state));
}

void advfx_wait_jobs_until(struct tu_daemon *d, const char *state, long long want, int timeout_s)
{
        long long n = -1;

        for (int64_t until = tu_now_us() + (int64_t)timeout_s * 1000000; tu_now_us() < until;) {
                json_t *st = advfx_status_of(d, NULL);

                n = advfx_status_jobs(st, state);
                json_decref(st);
                if (n == want)
                        return;
                usleep(100 * 1000);
        }
        {
                char *log = advfx_log_of(d);
                fail_msg("%lld %s job(s) after %d s, expected %lld; log:\n%s", n, state, timeout_s,
                         want, log);
        }
}
