/* SPDX-License-Identifier: MIT */
/*
 * badinput-fixture.c - helpers of the test-badinput-* programs (issue 4's untrusted-input tests
 * against the real daemon): checks collected and reported together (CHECK), the daemon under test,
 * its status and liveness, worker memory sampled, the ledger's jobs and attempts read directly,
 * and the daemon's log searched.
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

unsigned badfx_problems;

_printf_(1, 2) void badfx_problem(const char *fmt, ...)
{
        va_list ap;

        fputs("CHECK FAILED: ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
        badfx_problems++;
}

void badfx_end_checks(const char *test)
{
        unsigned n = badfx_problems;

        badfx_problems = 0;
        if (n > 0)
                fail_msg("%s: %u check(s) failed (listed above)", test, n);
}

struct tu_daemon *badfx_current;

struct tu_daemon *badfx_daemon_new(void)
{
        static struct tu_daemon d;

        badfx_current = &d;
        return &d;
}

int badfx_teardown(void **state)
{
        (void)state;
        if (badfx_current && badfx_current->root)
                tu_daemon_cleanup(badfx_current);
        badfx_current = NULL;
        unsetenv("IMGD_TEST_CRASH_SHA");
        return 0;
}

uint32_t badfx_crc32_png(const unsigned char *p, size_t n)
{
        static uint32_t table[256];
        uint32_t c = 0xffffffffU;

        if (!table[1])
                for (uint32_t i = 0; i < 256; i++) {
                        uint32_t k = i;
                        for (int b = 0; b < 8; b++)
                                k = k & 1 ? 0xedb88320U ^ (k >> 1) : k >> 1;
                        table[i] = k;
                }
        for (size_t i = 0; i < n; i++)
                c = table[(c ^ p[i]) & 0xff] ^ (c >> 8);
        return c ^ 0xffffffffU;
}

void badfx_put_be32(unsigned char *p, uint32_t v)
{
        p[0] = (unsigned char)(v >> 24);
        p[1] = (unsigned char)(v >> 16);
        p[2] = (unsigned char)(v >> 8);
        p[3] = (unsigned char)v;
}

bool badfx_png_patch_ihdr(unsigned char *p, size_t n, uint32_t w, uint32_t h)
{
        if (n < 33 || memcmp(p, "\x89PNG\r\n\x1a\n", 8) != 0 || memcmp(p + 12, "IHDR", 4) != 0)
                return false;
        badfx_put_be32(p + 16, w);
        badfx_put_be32(p + 20, h);
        badfx_put_be32(p + 29, badfx_crc32_png(p + 12, 17));
        return true;
}

bool badfx_jpeg_patch_sof(unsigned char *p, size_t n, unsigned w, unsigned h)
{
        size_t i = 2;

        if (n < 4 || p[0] != 0xff || p[1] != 0xd8)
                return false;
        while (i + 4 <= n) {
                unsigned m;
                size_t len;

                if (p[i] != 0xff)
                        return false;
                m = p[i + 1];
                if (m == 0xff) {
                        i++;
                        continue;
                }
                if (m == 0x01 || (m >= 0xd0 && m <= 0xd7)) {
                        i += 2;
                        continue;
                }
                if (m == 0xd9 || m == 0xda)
                        return false;
                len = (size_t)p[i + 2] << 8 | p[i + 3];
                if (m >= 0xc0 && m <= 0xcf && m != 0xc4 && m != 0xc8 && m != 0xcc) {
                        if (i + 9 > n)
                                return false;
                        p[i + 5] = (unsigned char)(h >> 8);
                        p[i + 6] = (unsigned char)h;
                        p[i + 7] = (unsigned char)(w >> 8);
                        p[i + 8] = (unsigned char)w;
                        return true;
                }
                i += 2 + len;
        }
        return false;
}

bool badfx_webp_patch_size(unsigned char *p, size_t n, unsigned w, unsigned h)
{
        bool frame = false;

        if (n < 20 || memcmp(p, "RIFF", 4) != 0 || memcmp(p + 8, "WEBP", 4) != 0)
                return false;
        for (size_t i = 12; i + 8 <= n;) {
                size_t len = (size_t)p[i + 4] | (size_t)p[i + 5] << 8 | (size_t)p[i + 6] << 16 |
                             (size_t)p[i + 7] << 24;
                unsigned char *c = p + i + 8;

                if (memcmp(p + i, "VP8X", 4) == 0 && len >= 10 && i + 18 <= n) {
                        c[4] = (unsigned char)(w - 1), c[5] = (unsigned char)((w - 1) >> 8);
                        c[6] = (unsigned char)((w - 1) >> 16);
                        c[7] = (unsigned char)(h - 1), c[8] = (unsigned char)((h - 1) >> 8);
                        c[9] = (unsigned char)((h - 1) >> 16);
                } else if (memcmp(p + i, "VP8 ", 4) == 0 && len >= 10 && i + 18 <= n) {
                        if (memcmp(c + 3, "\x9d\x01\x2a", 3) != 0)
                                return false;
                        c[6] = (unsigned char)w, c[7] = (unsigned char)((w >> 8) & 0x3f);
                        c[8] = (unsigned char)h, c[9] = (unsigned char)((h >> 8) & 0x3f);
                        frame = true;
                }
                i += 8 + len + (len & 1);
        }
        return frame;
}

bool badfx_daemon_alive(struct tu_daemon *d, int *ret_status)
{
        int status = 0;

        if (d->pid <= 0)
                return false;
        if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
                d->pid = 0;
                if (ret_status)
                        *ret_status = status;
                return false;
        }
        return true;
}

void badfx_print_log_tail(struct tu_daemon *d, size_t bytes)
{
        size_t len = 0;
        char *log = tu_read_file(d->log, &len);

        if (log)
                fprintf(stderr, "--- daemon log (last %zu bytes) ---\n%s\n---\n",
                        len > bytes ? bytes : len, len > bytes ? log + len - bytes : log);
        free(log);
}

void badfx_assert_daemon_alive(struct tu_daemon *d, const char *when)
{
        int status = 0;

        if (badfx_daemon_alive(d, &status))
                return;
        badfx_print_log_tail(d, 8000);
        fail_msg("imgd is gone %s: %s %d", when,
                 WIFSIGNALED(status) ? "killed by signal" : "exit status",
                 WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
}

json_t *badfx_status_json(struct tu_daemon *d, int64_t *ret_us)
{
        int64_t t0 = tu_now_us();
        char *out = NULL;
        json_error_t err;
        json_t *j;
        int r;

        r = tu_imgctl(d, &out, "status", "--json", NULL);
        if (ret_us)
                *ret_us = tu_now_us() - t0;
        if (r != 0) {
                badfx_print_log_tail(d, 4000);
                fail_msg("imgctl status failed (%d): %s", r, out ? out : "");
        }
        j = json_loads(out, 0, &err);
        if (!j)
                fail_msg("imgctl status --json printed no JSON (%s): %s", err.text, out);
        free(out);
        return j;
}

uint64_t badfx_vmhwm_of(pid_t pid)
{
        char *path = tu_path("/proc/%d/status", (int)pid);
        char *text = tu_read_file(path, NULL), *line;
        unsigned long long kb = 0;

        free(path);
        if (text && (line = strstr(text, "\nVmHWM:")))
                (void)sscanf(line + 7, "%llu", &kb);
        free(text);
        return (uint64_t)kb * 1024;
}

void badfx_sample_memory(struct tu_daemon *d, json_t *status, struct memory *m)
{
        pid_t pids[64];
        unsigned n = tu_daemon_children(d, pids, 64);
        json_t *w;
        size_t i;

        for (unsigned k = 0; k < n; k++) {
                uint64_t h = badfx_vmhwm_of(pids[k]);
                if (h > m->hwm)
                        m->hwm = h;
        }
        if (!status)
                return;
        json_array_foreach(json_object_get(json_object_get(status, "workers"), "list"), i, w)
        {
                json_t *p = json_object_get(w, "peak_rss");
                if (json_is_integer(p) && (uint64_t)json_integer_value(p) > m->status_peak)
                        m->status_peak = (uint64_t)json_integer_value(p);
        }
}

sqlite3 *badfx_ledger_open(struct tu_daemon *d)
{
        char *path = tu_path("%s/imgd.db", d->state);
        sqlite3 *db = NULL;

        if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK)
                fail_msg("open %s: %s", path, db ? sqlite3_errmsg(db) : "?");
        sqlite3_busy_timeout(db, 5000);
        free(path);
        return db;
}

sqlite3_stmt *badfx_prepare(sqlite3 *db, const char *sql)
{
        sqlite3_stmt *st = NULL;

        if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
                fail_msg("prepare %s: %s", sql, sqlite3_errmsg(db));
        return st;
}

int64_t badfx_query_int(sqlite3 *db, const char *sql)
{
        sqlite3_stmt *st = badfx_prepare(db, sql);
        int64_t v = -1;

        if (sqlite3_step(st) == SQLITE_ROW)
                v = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        return v;
}

void badfx_job_row_clear(struct job_row *j)
{
        free(j->error);
        free(j->sha);
        free(j->errors);
        free(j->output);
        *j = (struct job_row){};
}

char *badfx_dup_col(sqlite3_stmt *st, int col)
{
        const unsigned char *t = sqlite3_column_text(st, col);

        return t ? strdup((const char *)t) : NULL;
}

bool badfx_job_of(sqlite3 *db, const char *path, struct job_row *j)
{
        sqlite3_stmt *st;
        bool found = false;

        *j = (struct job_row){};
        st = badfx_prepare(db,
                           "SELECT id, state, attempts, last_error, source_sha256, created_us, "
                           "updated_us, coalesce(finished_us, 0) FROM jobs WHERE source_path = ?1 "
                           "ORDER BY id DESC LIMIT 1");
        sqlite3_bind_text(st, 1, path, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW) {
                found = true;
                j->id = sqlite3_column_int64(st, 0);
                snprintf(j->state, sizeof j->state, "%s", sqlite3_column_text(st, 1));
                j->attempts = sqlite3_column_int(st, 2);
                j->error = badfx_dup_col(st, 3);
                j->sha = badfx_dup_col(st, 4);
                j->created_us = sqlite3_column_int64(st, 5);
                j->updated_us = sqlite3_column_int64(st, 6);
                j->finished_us = sqlite3_column_int64(st, 7);
        }
        sqlite3_finalize(st);
        if (!found)
                return false;

        st = badfx_prepare(db, "SELECT message FROM job_errors WHERE job_id = ?1 ORDER BY attempt");
        sqlite3_bind_int64(st, 1, j->id);
        while (sqlite3_step(st) == SQLITE_ROW) {
                const char *m = (const char *)sqlite3_column_text(st, 0);
                char *joined = tu_path("%s%s%s", j->errors ? j->errors : "", j->errors ? " | " : "",
                                       m ? m : "");
                free(j->errors);
                j->errors = joined;
                j->n_errors++;
        }
        sqlite3_finalize(st);

        st = badfx_prepare(db, "SELECT path FROM outputs WHERE job_id = ?1");
        sqlite3_bind_int64(st, 1, j->id);
        while (sqlite3_step(st) == SQLITE_ROW) {
                if (!j->output)
                        j->output = badfx_dup_col(st, 0);
                j->n_outputs++;
        }
        sqlite3_finalize(st);
        return true;
}

unsigned badfx_log_count(struct tu_daemon *d, const char *text)
{
        char *log = tu_read_file(d->log, NULL), *p;
        unsigned n = 0;

        for (p = log; p && (p = strstr(p, text)); p += strlen(text))
                n++;
        free(log);
        return n;
}

void badfx_rename_or_fail(const char *from, const char *to)
{
        if (rename(from, to) != 0)
                fail_msg("rename %s -> %s: %m", from, to);
}

int64_t badfx_wait_final(struct tu_daemon *d, sqlite3 *db, const char *path, int64_t t0_us,
                         int timeout_ms, struct memory *m, struct job_row *ret)
{
        for (;;) {
                struct job_row j;
                bool found;
                int64_t ms;

                if (m)
                        badfx_sample_memory(d, NULL, m);
                found = badfx_job_of(db, path, &j);
                ms = (tu_now_us() - t0_us) / 1000;
                if (found && (strcmp(j.state, "done") == 0 || strcmp(j.state, "dead") == 0)) {
                        *ret = j;
                        return ms;
                }
                badfx_job_row_clear(&j);
                if (ms > timeout_ms) {
                        (void)badfx_job_of(db, path, ret);
                        return -1;
                }
                badfx_assert_daemon_alive(d, "while a job ran");
                usleep(20 * 1000);
        }
}

void *badfx_read_or_fail(const char *path, size_t *ret_len)
{
        void *p = tu_read_file(path, ret_len);

        if (!p)
                fail_msg("read %s: %m", path);
        return p;
}
