/* SPDX-License-Identifier: MIT */
/*
 * test-badinput.c - issue 4's untrusted-input tests, against the real daemon (real
 * imgd-worker processes, real inotify, real signals, imgctl over the real socket):
 *
 *   bad-input battery  a few hundred malformed files made here from real JPEG, PNG, WebP and
 *                      GIF images (truncations at many lengths, seeded random byte flips,
 *                      wrong extensions, zero bytes, headers claiming huge dimensions, a text
 *                      file named .jpg, a MATLAB file, an SVG and a PDF named .png), renamed
 *                      into the watched tree in batches: the daemon stays up and answers,
 *                      every file ends done or dead with its errors recorded, no attempt runs
 *                      past the job timeout, worker memory stays under its limit, and a good
 *                      image dropped after the flood is still done within seconds; the counts
 *                      are printed. IMGD_BADINPUT=full runs about 1000 files instead of 200
 *                      (IMGD_BADINPUT_SEED changes the seed).
 *   poison file        a source the worker abort()s on (IMGD_TEST_CRASH_SHA, test builds
 *                      only) ends dead after exactly retry.max_attempts, good files flow on.
 *   special files      symlinks (to a file and to a folder outside the tree), hard links, FIFOs
 *                      and a device: refused with a reason in the log, never jobs, nothing
 *                      outside the tree read or published, no hang.
 *   bombs              a PNG, a JPEG and a WebP whose headers claim far more than max_pixels
 *                      die at once, with the limit in the error and little worker memory.
 *
 * Checks that are independent of each other are collected (CHECK) and reported together,
 * so one run shows every broken promise; the test then fails.
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

/* One cheap variant: the battery is about inputs, not rendering. */
#define PIPE_T "( { name = \"t\"; width = 64; height = 64; fit = \"cover\"; format = \"webp\"; } )"

#define MIB (1024ULL * 1024ULL)

/* ------------------------------------------------------------------ collected checks */

static unsigned problems;

_printf_(1, 2) static void problem(const char *fmt, ...)
{
        va_list ap;

        fputs("CHECK FAILED: ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
        problems++;
}

/* Like problem(), but only the first 10 of a kind are printed; *n counts them all. */
#define PROBLEM_CAPPED(n, ...)                                                                     \
        do {                                                                                       \
                if ((*(n))++ < 10)                                                                 \
                        problem(__VA_ARGS__);                                                      \
                else                                                                               \
                        problems++;                                                                \
        } while (0)

#define CHECK(cond, ...)                                                                           \
        do {                                                                                       \
                if (!(cond))                                                                       \
                        problem(__VA_ARGS__);                                                      \
        } while (0)

static void end_checks(const char *test)
{
        unsigned n = problems;

        problems = 0;
        if (n > 0)
                fail_msg("%s: %u check(s) failed (listed above)", test, n);
}

/* The daemon of the running test, stopped and removed by teardown() even when an assertion
 * ended the test early (so no daemon outlives a failed test). Static storage: the test's
 * stack is gone by then. */
static struct tu_daemon *current;

static struct tu_daemon *daemon_new(void)
{
        static struct tu_daemon d;

        current = &d;
        return &d;
}

static int teardown(void **state)
{
        (void)state;
        if (current && current->root)
                tu_daemon_cleanup(current);
        current = NULL;
        unsetenv("IMGD_TEST_CRASH_SHA");
        return 0;
}

/* ------------------------------------------------------------------ small helpers */

static uint64_t rng_state;

static void rng_seed(uint64_t seed)
{
        rng_state = seed ? seed : 0x9e3779b97f4a7c15ULL;
}

/* xorshift64*: a fixed sequence for a seed, on every machine. */
static uint32_t rng(void)
{
        rng_state ^= rng_state >> 12;
        rng_state ^= rng_state << 25;
        rng_state ^= rng_state >> 27;
        return (uint32_t)((rng_state * 0x2545f4914f6cdd1dULL) >> 32);
}

static unsigned rnd(unsigned n)
{
        return n ? rng() % n : 0;
}

/* CRC-32 of PNG chunks (ISO 3309, reflected polynomial 0xedb88320). */
static uint32_t crc32_png(const unsigned char *p, size_t n)
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

static void put_be32(unsigned char *p, uint32_t v)
{
        p[0] = (unsigned char)(v >> 24);
        p[1] = (unsigned char)(v >> 16);
        p[2] = (unsigned char)(v >> 8);
        p[3] = (unsigned char)v;
}

/* Sets a PNG's IHDR to w x h and recomputes the chunk's CRC, so the header is valid. */
static bool png_patch_ihdr(unsigned char *p, size_t n, uint32_t w, uint32_t h)
{
        if (n < 33 || memcmp(p, "\x89PNG\r\n\x1a\n", 8) != 0 || memcmp(p + 12, "IHDR", 4) != 0)
                return false;
        put_be32(p + 16, w);
        put_be32(p + 20, h);
        put_be32(p + 29, crc32_png(p + 12, 17));
        return true;
}

/* Sets the frame size in a JPEG's SOFn segment (baseline, progressive, ...). */
static bool jpeg_patch_sof(unsigned char *p, size_t n, unsigned w, unsigned h)
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

/* Sets a GIF's logical screen and its first image descriptor to w x h. */
static bool gif_patch_size(unsigned char *p, size_t n, unsigned w, unsigned h)
{
        size_t i = 13;

        if (n < 13 || (memcmp(p, "GIF87a", 6) != 0 && memcmp(p, "GIF89a", 6) != 0))
                return false;
        p[6] = (unsigned char)w, p[7] = (unsigned char)(w >> 8);
        p[8] = (unsigned char)h, p[9] = (unsigned char)(h >> 8);
        if (p[10] & 0x80)
                i += 3U << ((p[10] & 7) + 1);
        while (i < n) {
                if (p[i] == 0x2c) {
                        if (i + 9 > n)
                                return false;
                        p[i + 5] = (unsigned char)w, p[i + 6] = (unsigned char)(w >> 8);
                        p[i + 7] = (unsigned char)h, p[i + 8] = (unsigned char)(h >> 8);
                        return true;
                }
                if (p[i] != 0x21 || i + 2 >= n)
                        return false;
                i += 2; /* introducer and label, then sub-blocks up to a 0 */
                while (i < n && p[i] != 0)
                        i += 1 + p[i];
                i++;
        }
        return false;
}

/* Sets a lossy WebP's size to w x h (at most 16383 each): the VP8X canvas when there is
 * one, and the VP8 frame header (14 bits each). */
static bool webp_patch_size(unsigned char *p, size_t n, unsigned w, unsigned h)
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

/* A small but well-formed Level 5 MAT-file: a 2x2 double matrix "a". */
static size_t make_matlab(unsigned char *buf, size_t cap)
{
        unsigned char *p = buf;
        const double v[4] = { 1, 2, 3, 4 };
        uint32_t u;

        assert_true(cap >= 256);
        memset(p, ' ', 116);
        memcpy(p, "MATLAB 5.0 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024",
               77);
        memset(p + 116, 0, 8);        /* subsystem data offset */
        p[124] = 0x00, p[125] = 0x01; /* version 0x0100, little-endian */
        p[126] = 'I', p[127] = 'M';
        p += 128;
#define LE32(x) (u = (uint32_t)(x), memcpy(p, &u, 4), p += 4)
        LE32(14), LE32(16 + 16 + 16 + 40);  /* miMATRIX, size of what follows */
        LE32(6), LE32(8), LE32(6), LE32(0); /* array flags: mxDOUBLE_CLASS */
        LE32(5), LE32(8), LE32(2), LE32(2); /* dimensions 2x2 */
        LE32(1), LE32(1);                   /* name "a", padded to 8 */
        memcpy(p, "a\0\0\0\0\0\0\0", 8), p += 8;
        LE32(9), LE32(32); /* miDOUBLE, 4 values */
#undef LE32
        memcpy(p, v, sizeof v), p += sizeof v;
        return (size_t)(p - buf);
}

static bool daemon_alive(struct tu_daemon *d, int *ret_status)
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

static void print_log_tail(struct tu_daemon *d, size_t bytes)
{
        size_t len = 0;
        char *log = tu_read_file(d->log, &len);

        if (log)
                fprintf(stderr, "--- daemon log (last %zu bytes) ---\n%s\n---\n",
                        len > bytes ? bytes : len, len > bytes ? log + len - bytes : log);
        free(log);
}

static void assert_daemon_alive(struct tu_daemon *d, const char *when)
{
        int status = 0;

        if (daemon_alive(d, &status))
                return;
        print_log_tail(d, 8000);
        fail_msg("imgd is gone %s: %s %d", when,
                 WIFSIGNALED(status) ? "killed by signal" : "exit status",
                 WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
}

/* `imgctl status --json`, which must answer; its latency in *ret_us when not NULL. */
static json_t *status_json(struct tu_daemon *d, int64_t *ret_us)
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
                print_log_tail(d, 4000);
                fail_msg("imgctl status failed (%d): %s", r, out ? out : "");
        }
        j = json_loads(out, 0, &err);
        if (!j)
                fail_msg("imgctl status --json printed no JSON (%s): %s", err.text, out);
        free(out);
        return j;
}

static json_int_t status_jobs_total(json_t *st)
{
        json_t *jobs = json_object_get(st, "jobs"), *v;
        const char *k;
        json_int_t n = 0;

        json_object_foreach(jobs, k, v) n += json_integer_value(v);
        return n;
}

/* VmHWM (peak resident set) of a process in bytes, 0 if it cannot be read. */
static uint64_t vmhwm_of(pid_t pid)
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

/* The most any worker was seen to use: VmHWM from /proc (live workers) and the daemon's
 * own status (workers.list[].peak_rss, sampled by the daemon while jobs run). */
struct memory {
        uint64_t hwm;
        uint64_t status_peak;
};

static void sample_memory(struct tu_daemon *d, json_t *status, struct memory *m)
{
        pid_t pids[64];
        unsigned n = tu_daemon_children(d, pids, 64);
        json_t *w;
        size_t i;

        for (unsigned k = 0; k < n; k++) {
                uint64_t h = vmhwm_of(pids[k]);
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

static sqlite3 *ledger_open(struct tu_daemon *d)
{
        char *path = tu_path("%s/imgd.db", d->state);
        sqlite3 *db = NULL;

        if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK)
                fail_msg("open %s: %s", path, db ? sqlite3_errmsg(db) : "?");
        sqlite3_busy_timeout(db, 5000);
        free(path);
        return db;
}

static sqlite3_stmt *prepare(sqlite3 *db, const char *sql)
{
        sqlite3_stmt *st = NULL;

        if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
                fail_msg("prepare %s: %s", sql, sqlite3_errmsg(db));
        return st;
}

static int64_t query_int(sqlite3 *db, const char *sql)
{
        sqlite3_stmt *st = prepare(db, sql);
        int64_t v = -1;

        if (sqlite3_step(st) == SQLITE_ROW)
                v = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        return v;
}

/* The latest job of a source path. */
struct job_row {
        int64_t id;
        char state[16];
        int attempts;
        char *error; /* NULL when none */
        char *sha;
        int64_t created_us, updated_us, finished_us;
        int n_errors; /* rows in job_errors */
        char *errors; /* every attempt's error, joined with " | " */
        int n_outputs;
        char *output; /* the first output's path */
};

static void job_row_clear(struct job_row *j)
{
        free(j->error);
        free(j->sha);
        free(j->errors);
        free(j->output);
        *j = (struct job_row){};
}

static char *dup_col(sqlite3_stmt *st, int col)
{
        const unsigned char *t = sqlite3_column_text(st, col);

        return t ? strdup((const char *)t) : NULL;
}

/* Returns false when the path has no job. */
static bool job_of(sqlite3 *db, const char *path, struct job_row *j)
{
        sqlite3_stmt *st;
        bool found = false;

        *j = (struct job_row){};
        st = prepare(db, "SELECT id, state, attempts, last_error, source_sha256, created_us, "
                         "updated_us, coalesce(finished_us, 0) FROM jobs WHERE source_path = ?1 "
                         "ORDER BY id DESC LIMIT 1");
        sqlite3_bind_text(st, 1, path, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW) {
                found = true;
                j->id = sqlite3_column_int64(st, 0);
                snprintf(j->state, sizeof j->state, "%s", sqlite3_column_text(st, 1));
                j->attempts = sqlite3_column_int(st, 2);
                j->error = dup_col(st, 3);
                j->sha = dup_col(st, 4);
                j->created_us = sqlite3_column_int64(st, 5);
                j->updated_us = sqlite3_column_int64(st, 6);
                j->finished_us = sqlite3_column_int64(st, 7);
        }
        sqlite3_finalize(st);
        if (!found)
                return false;

        st = prepare(db, "SELECT message FROM job_errors WHERE job_id = ?1 ORDER BY attempt");
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

        st = prepare(db, "SELECT path FROM outputs WHERE job_id = ?1");
        sqlite3_bind_int64(st, 1, j->id);
        while (sqlite3_step(st) == SQLITE_ROW) {
                if (!j->output)
                        j->output = dup_col(st, 0);
                j->n_outputs++;
        }
        sqlite3_finalize(st);
        return true;
}

/* Attempts seen running: (job, attempt) -> the earliest updated_us seen (the claim). */
struct attempt {
        int64_t id;
        int attempt;
        int64_t start_us;
};

struct attempts {
        struct attempt *v;
        size_t n;
};

static void poll_running(sqlite3 *db, struct attempts *a)
{
        sqlite3_stmt *st = prepare(db, "SELECT id, attempts, updated_us FROM jobs "
                                       "WHERE state = 'running'");

        while (sqlite3_step(st) == SQLITE_ROW) {
                int64_t id = sqlite3_column_int64(st, 0), at = sqlite3_column_int64(st, 2);
                int n = sqlite3_column_int(st, 1);
                size_t i;

                for (i = 0; i < a->n; i++)
                        if (a->v[i].id == id && a->v[i].attempt == n)
                                break;
                if (i == a->n) {
                        a->v = realloc(a->v, (a->n + 1) * sizeof *a->v);
                        assert_non_null(a->v);
                        a->v[a->n++] = (struct attempt){ id, n, at };
                } else if (at < a->v[i].start_us) {
                        a->v[i].start_us = at;
                }
        }
        sqlite3_finalize(st);
}

/* The longest attempt seen running: its end is its job_errors row, or the job's finish. */
static int64_t worst_attempt_us(sqlite3 *db, const struct attempts *a, int64_t *ret_id)
{
        int64_t worst = 0;

        for (size_t i = 0; i < a->n; i++) {
                sqlite3_stmt *st = prepare(
                        db, "SELECT coalesce((SELECT max(at_us) FROM job_errors WHERE job_id = ?1 "
                            "AND attempt = ?2), CASE WHEN attempts = ?2 THEN finished_us END) "
                            "FROM jobs WHERE id = ?1");
                sqlite3_bind_int64(st, 1, a->v[i].id);
                sqlite3_bind_int(st, 2, a->v[i].attempt);
                if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL) {
                        int64_t t = sqlite3_column_int64(st, 0) - a->v[i].start_us;
                        if (t > worst) {
                                worst = t;
                                *ret_id = a->v[i].id;
                        }
                }
                sqlite3_finalize(st);
        }
        return worst;
}

/* The longest "job N ...: done, K outputs in T ms" of the daemon's log, in ms. */
static double worst_done_ms(struct tu_daemon *d)
{
        char *log = tu_read_file(d->log, NULL), *p;
        double worst = 0;

        for (p = log; p && (p = strstr(p, " outputs in ")); p++) {
                double ms;
                if (sscanf(p, " outputs in %lf ms", &ms) == 1 && ms > worst)
                        worst = ms;
        }
        free(log);
        return worst;
}

static unsigned log_count(struct tu_daemon *d, const char *text)
{
        char *log = tu_read_file(d->log, NULL), *p;
        unsigned n = 0;

        for (p = log; p && (p = strstr(p, text)); p += strlen(text))
                n++;
        free(log);
        return n;
}

/* The last line of the daemon's log containing text; a new string, or NULL. */
static char *log_last_line(struct tu_daemon *d, const char *text)
{
        char *log = tu_read_file(d->log, NULL), *line, *save = NULL, *found = NULL;

        for (line = log ? strtok_r(log, "\n", &save) : NULL; line;
             line = strtok_r(NULL, "\n", &save))
                if (strstr(line, text)) {
                        free(found);
                        found = strdup(line);
                }
        free(log);
        return found;
}

/*
 * The first line of the daemon's log naming `path` (as a whole name: the next character is
 * not part of a longer path) and containing one of the reasons (NULL-terminated); a new
 * string, or NULL. Lines naming the path without a reason go to *ret_other when not NULL.
 */
static char *log_line_for(struct tu_daemon *d, const char *path, const char *const *reasons,
                          char **ret_other)
{
        char *log = tu_read_file(d->log, NULL), *line, *save = NULL, *found = NULL;
        size_t plen = strlen(path);

        if (ret_other)
                *ret_other = NULL;
        for (line = log ? strtok_r(log, "\n", &save) : NULL; line && !found;
             line = strtok_r(NULL, "\n", &save)) {
                for (char *p = strstr(line, path); p; p = strstr(p + 1, path)) {
                        char next = p[plen];
                        if (next == '/' || isalnum((unsigned char)next) || next == '.' ||
                            next == '_' || next == '-')
                                continue;
                        for (size_t r = 0; reasons[r] && !found; r++)
                                if (strstr(line, reasons[r]))
                                        found = strdup(line);
                        if (!found && ret_other && !*ret_other)
                                *ret_other = strdup(line);
                        break;
                }
        }
        free(log);
        return found;
}

static void rename_or_fail(const char *from, const char *to)
{
        if (rename(from, to) != 0)
                fail_msg("rename %s -> %s: %m", from, to);
}

/* Waits until the job of `path` is done or dead (or timeout_ms); returns the ms it took
 * from t0_us, or -1. Samples worker memory meanwhile when m is not NULL. */
static int64_t wait_final(struct tu_daemon *d, sqlite3 *db, const char *path, int64_t t0_us,
                          int timeout_ms, struct memory *m, struct job_row *ret)
{
        for (;;) {
                struct job_row j;
                bool found;
                int64_t ms;

                if (m)
                        sample_memory(d, NULL, m);
                found = job_of(db, path, &j);
                ms = (tu_now_us() - t0_us) / 1000;
                if (found && (strcmp(j.state, "done") == 0 || strcmp(j.state, "dead") == 0)) {
                        *ret = j;
                        return ms;
                }
                job_row_clear(&j);
                if (ms > timeout_ms) {
                        (void)job_of(db, path, ret);
                        return -1;
                }
                assert_daemon_alive(d, "while a job ran");
                usleep(20 * 1000);
        }
}

static void *read_or_fail(const char *path, size_t *ret_len)
{
        void *p = tu_read_file(path, ret_len);

        if (!p)
                fail_msg("read %s: %m", path);
        return p;
}

/* ------------------------------------------------------------------ the bad-input battery */

enum expect {
        EXPECT_ANY,         /* done or dead: a damaged file may still decode */
        EXPECT_DONE,        /* a good image, whatever its name */
        EXPECT_DEAD,        /* refused, for whatever reason, in one attempt */
        EXPECT_UNSUPPORTED, /* refused as not a supported image, in one attempt */
        EXPECT_LIMIT,       /* refused for its size, in one attempt */
};

struct bad_file {
        char *staged; /* root/stage/<kind>/<name> */
        char *dest;   /* uploads/<kind>/<name> */
        const char *kind;
        enum expect expect;
};

struct battery {
        struct tu_daemon *d;
        struct bad_file *files;
        size_t n;
};

static void add_file(struct battery *b, const char *kind, const char *name, const void *data,
                     size_t len, enum expect e)
{
        struct bad_file *f;

        b->files = realloc(b->files, (b->n + 1) * sizeof *b->files);
        assert_non_null(b->files);
        f = &b->files[b->n++];
        f->staged = tu_path("%s/stage/%s/%s", b->d->root, kind, name);
        f->dest = tu_path("%s/%s/%s", b->d->uploads, kind, name);
        f->kind = kind;
        f->expect = e;
        tu_write_file(f->staged, data, len);
}

struct source {
        const char *fmt, *ext;
        unsigned char *data;
        size_t len;
};

/*
 * One ':'-separated part of an error, for its class: at most max_words words, numbers as N,
 * parenthesised details left out. Appends to out[n..], returns the new n; *pe moves to the
 * ':' or ';' that ends the part.
 */
static size_t class_part(const char **pe, unsigned max_words, char *out, size_t n, size_t cap)
{
        const char *e = *pe;
        size_t start = n;
        unsigned words = 0;
        int depth = 0;
        bool digits = false;

        for (; *e; e++) {
                char c = *e;

                if (c == '(' || c == ')') {
                        depth += c == '(' ? 1 : depth > 0 ? -1 : 0;
                        continue;
                }
                if (depth > 0)
                        continue;
                if (c == ':' || c == ';')
                        break;
                if (c == ' ') {
                        if (n == start || out[n - 1] == ' ')
                                continue;
                        if (++words == max_words)
                                break;
                }
                if (isdigit((unsigned char)c)) {
                        const char *end = e;

                        while (isdigit((unsigned char)*end))
                                end++;
                        /* Numbers become N; digits inside a word ("webp2vips") stay. */
                        if (!(e > *pe && isalpha((unsigned char)e[-1]) &&
                              isalpha((unsigned char)*end))) {
                                if (digits)
                                        continue;
                                digits = true;
                                c = 'N';
                        }
                } else {
                        digits = false;
                }
                if (c == ',' && n > start && out[n - 1] == ' ')
                        n--;
                if (n + 1 < cap)
                        out[n++] = c;
        }
        while (n > start && (out[n - 1] == ' ' || out[n - 1] == ','))
                n--;
        while (*e && *e != ':' && *e != ';')
                e++;
        *pe = e;
        return n;
}

/* "decode: VipsJpeg: Premature end of JPEG file" -> "decode: VipsJpeg"; "image is
 * 60000x60000 (3600000000 pixels), over the limit of 100000000" -> "image is NxN, over the
 * limit of N"; "gave up after 2 attempts: X" -> "gave up after N attempts: X". */
static void reason_class(const char *error, char *out, size_t out_len)
{
        const char *e = error ? error : "(no error)";
        size_t n = 0;

        if (strncmp(e, "gave up after ", 14) == 0) {
                n = class_part(&e, 10, out, n, out_len);
                if (*e == ':' && e[1] == ' ' && n + 2 < out_len) {
                        out[n++] = ':', out[n++] = ' ';
                        e += 2;
                }
        }
        n = class_part(&e, 10, out, n, out_len);
        if (*e == ':' && e[1] == ' ' && n + 2 < out_len) {
                size_t before = n;

                out[n++] = ':', out[n++] = ' ';
                e += 2;
                n = class_part(&e, 4, out, n, out_len);
                if (n == before + 2)
                        n = before;
        }
        out[n < out_len ? n : out_len - 1] = '\0';
}

struct reason {
        char text[96];
        unsigned count;
        char example[160];
};

static void count_reason(struct reason *r, size_t *n, size_t cap, const char *error,
                         const char *path)
{
        char c[96];

        reason_class(error, c, sizeof c);
        for (size_t i = 0; i < *n; i++)
                if (strcmp(r[i].text, c) == 0) {
                        r[i].count++;
                        return;
                }
        if (*n < cap) {
                snprintf(r[*n].text, sizeof r[*n].text, "%s", c);
                snprintf(r[*n].example, sizeof r[*n].example, "%s", strrchr(path, '/') + 1);
                r[(*n)++].count = 1;
        }
}

static int by_count(const void *a, const void *b)
{
        const struct reason *x = a, *y = b;

        return x->count == y->count ? strcmp(x->text, y->text) : (int)y->count - (int)x->count;
}

static const char *const KINDS[] = { "good", "wrongext", "trunc",  "flip", "zero",
                                     "text", "matlab",   "vector", "huge" };

static void make_battery(struct battery *b, bool full)
{
        struct source src[4] = {
                { .fmt = "jpeg", .ext = "jpg" },
                { .fmt = "png", .ext = "png" },
                { .fmt = "webp", .ext = "webp" },
                { .fmt = "gif", .ext = "gif" },
        };
        static const unsigned sizes[4][2] = {
                { 320, 240 }, { 240, 180 }, { 320, 240 }, { 160, 120 }
        };
        unsigned n_trunc = full ? 180 : 35, n_flip = full ? 260 : 40;
        char name[128];

        for (int i = 0; i < 4; i++) {
                char *p = tu_path("%s/src/source.%s", b->d->root, src[i].ext);
                tu_make_image(p, sizes[i][0], sizes[i][1], src[i].fmt, i == 1);
                src[i].data = read_or_fail(p, &src[i].len);
                free(p);
        }

        /* The real images, and each under the three other formats' extensions: both are
         * identified by their magic bytes and must render. */
        for (int i = 0; i < 4; i++) {
                snprintf(name, sizeof name, "good-%s.%s", src[i].fmt, src[i].ext);
                add_file(b, "good", name, src[i].data, src[i].len, EXPECT_DONE);
                for (int k = 0; k < 4; k++) {
                        if (k == i)
                                continue;
                        snprintf(name, sizeof name, "a-%s-as-%s.%s", src[i].fmt, src[k].fmt,
                                 src[k].ext);
                        add_file(b, "wrongext", name, src[i].data, src[i].len, EXPECT_DONE);
                }
        }

        /* Truncations: the first quarter of the lengths within the headers (1, 2, 4, ... up
         * to 512 bytes), the rest spread over the whole file up to one byte short. */
        for (int i = 0; i < 4; i++) {
                size_t len = src[i].len, head = len / 2 < 512 ? len / 2 : 512;
                unsigned n_head = n_trunc / 4;

                for (unsigned k = 0; k < n_trunc; k++) {
                        size_t cut;

                        if (k < n_head)
                                cut = n_head > 1 ? (size_t)(1 + (double)(head - 1) * k * k /
                                                                        ((double)(n_head - 1) *
                                                                         (n_head - 1)))
                                                 : 1;
                        else
                                cut = len / 8 +
                                      (len - 1 - len / 8) * (k - n_head) / (n_trunc - n_head - 1);
                        if (cut < 1)
                                cut = 1;
                        if (cut >= len)
                                cut = len - 1;
                        snprintf(name, sizeof name, "%s-%03u-%zu.%s", src[i].fmt, k, cut,
                                 src[i].ext);
                        add_file(b, "trunc", name, src[i].data, cut, EXPECT_ANY);
                }
        }

        /* Random byte flips, 1 to 50 per file, half of them within the first 512 bytes. */
        for (unsigned k = 0; k < n_flip; k++) {
                const struct source *s = &src[k % 4];
                unsigned char *p = malloc(s->len);
                unsigned flips = 1 + rnd(50);

                assert_non_null(p);
                memcpy(p, s->data, s->len);
                for (unsigned f = 0; f < flips; f++) {
                        size_t at = rnd(2) ? rnd((unsigned)(s->len < 512 ? s->len : 512))
                                           : rnd((unsigned)s->len);
                        p[at] ^= (unsigned char)(1 + rnd(255));
                }
                snprintf(name, sizeof name, "%s-%03u-x%u.%s", s->fmt, k, flips, s->ext);
                add_file(b, "flip", name, p, s->len, EXPECT_ANY);
                free(p);
        }

        /* Nothing at all. */
        add_file(b, "zero", "empty.jpg", "", 0, EXPECT_DEAD);
        add_file(b, "zero", "empty.png", "", 0, EXPECT_DEAD);
        add_file(b, "zero", "empty", "", 0, EXPECT_DEAD);

        /* Text named .jpg. */
        {
                char text[2048] = "";
                for (int k = 0; k < 30; k++)
                        strcat(text, "This is not an image, whatever its name says.\n");
                add_file(b, "text", "not-an-image.jpg", text, strlen(text), EXPECT_UNSUPPORTED);
        }

        /* A MATLAB file (libvips' matload must never see it), as .mat and as .jpg. */
        {
                unsigned char mat[512];
                size_t len = make_matlab(mat, sizeof mat);
                add_file(b, "matlab", "matrix.mat", mat, len, EXPECT_UNSUPPORTED);
                add_file(b, "matlab", "matrix-named.jpg", mat, len, EXPECT_UNSUPPORTED);
        }

        /* An SVG and a PDF named .png: formats libvips could render, not on the allowlist. */
        {
                static const char svg[] =
                        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"400\" height=\"300\">"
                        "<rect width=\"400\" height=\"300\" fill=\"#c03\"/>"
                        "<circle cx=\"200\" cy=\"150\" r=\"100\" fill=\"#fff\"/></svg>\n";
                static const char pdf[] =
                        "%PDF-1.4\n"
                        "1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
                        "2 0 obj << /Type /Pages /Kids [3 0 R] /Count 1 >> endobj\n"
                        "3 0 obj << /Type /Page /Parent 2 0 R /MediaBox [0 0 400 300] >> endobj\n"
                        "xref\n0 4\n0000000000 65535 f \n0000000009 00000 n \n"
                        "0000000058 00000 n \n0000000115 00000 n \n"
                        "trailer << /Size 4 /Root 1 0 R >>\nstartxref\n190\n%%EOF\n";
                add_file(b, "vector", "drawing-svg.png", svg, sizeof svg - 1, EXPECT_UNSUPPORTED);
                add_file(b, "vector", "document-pdf.png", pdf, sizeof pdf - 1, EXPECT_UNSUPPORTED);
        }

        /* Headers claiming huge dimensions over real image data: PNG 60000x60000 (with a
         * correct IHDR CRC), JPEG 65000x65000, GIF 65535x65535, WebP 16383x16383. */
        for (int i = 0; i < 4; i++) {
                unsigned char *p = malloc(src[i].len);
                bool ok;

                assert_non_null(p);
                memcpy(p, src[i].data, src[i].len);
                ok = i == 0   ? jpeg_patch_sof(p, src[i].len, 65000, 65000)
                     : i == 1 ? png_patch_ihdr(p, src[i].len, 60000, 60000)
                     : i == 2 ? webp_patch_size(p, src[i].len, 16383, 16383)
                              : gif_patch_size(p, src[i].len, 65535, 65535);
                if (!ok)
                        fail_msg("cannot patch the %s header", src[i].fmt);
                snprintf(name, sizeof name, "huge-%s.%s", src[i].fmt, src[i].ext);
                /* Each is refused for the pixel limit, from its header (the WebP's from its
                 * own: libvips' WebP header read already allocates the canvas). */
                add_file(b, "huge", name, p, src[i].len, EXPECT_LIMIT);
                free(p);
        }

        for (int i = 0; i < 4; i++)
                free(src[i].data);

        /* Mixed order: heavy and light, good and bad, interleaved. */
        for (size_t i = b->n; i > 1; i--) {
                size_t k = rnd((unsigned)i);
                struct bad_file t = b->files[i - 1];
                b->files[i - 1] = b->files[k];
                b->files[k] = t;
        }
}

static void test_battery(void **state)
{
        const char *mode = getenv("IMGD_BADINPUT");
        bool full = mode && strcmp(mode, "full") == 0;
        const char *seed_env = getenv("IMGD_BADINPUT_SEED");
        uint64_t seed = seed_env ? strtoull(seed_env, NULL, 0) : 0x1bad1deaULL;
        const unsigned timeout_s = 10, max_attempts = 2, memory_mib = 512;
        const int64_t bound_us = (full ? 300 : 120) * 1000000LL;
        struct tu_daemon *const d = daemon_new();
        struct battery b = { .d = d };
        struct attempts att = {};
        struct memory mem = {};
        struct reason reasons[64];
        size_t n_reasons = 0;
        unsigned done = 0, dead = 0, unfinished = 0, missing = 0, polls = 0;
        unsigned by_kind_done[ELEMENTSOF(KINDS)] = {}, by_kind_dead[ELEMENTSOF(KINDS)] = {};
        int64_t t0, t_idle = 0, worst_status_us = 0, worst_us = 0, worst_id = 0, stable_since = 0;
        double worst_log_ms;
        sqlite3 *db;
        char *extra;

        (void)state;
        rng_seed(seed);
        extra = tu_path("limits = { job_timeout = %u; worker_memory = %u; };\n"
                        "retry = { max_attempts = %u; base_delay_ms = 50; max_delay_ms = 200; };",
                        timeout_s, memory_mib, max_attempts);
        tu_daemon_setup(d, PIPE_T, 2, extra);
        free(extra);
        for (size_t k = 0; k < ELEMENTSOF(KINDS); k++) {
                char *p = tu_path("%s/%s", d->uploads, KINDS[k]);
                assert_int_equal(mkdir(p, 0755), 0);
                free(p);
        }
        make_battery(&b, full);
        fprintf(stderr, "bad-input battery (%s, seed %#llx): %zu files\n", full ? "full" : "ci",
                (unsigned long long)seed, b.n);

        tu_daemon_start(d);
        db = ledger_open(d);

        /* Drop in batches of 20 renames, watching the daemon between batches and after. */
        t0 = tu_now_us();
        for (size_t next = 0;;) {
                json_t *st;
                int64_t lat, jobs, pending;

                for (unsigned k = 0; k < 20 && next < b.n; k++, next++)
                        rename_or_fail(b.files[next].staged, b.files[next].dest);

                assert_daemon_alive(d, "during the battery");
                st = status_json(d, &lat);
                if (lat > worst_status_us)
                        worst_status_us = lat;
                sample_memory(d, st, &mem);
                json_decref(st);
                poll_running(db, &att);
                polls++;

                jobs = query_int(db, "SELECT count(*) FROM jobs");
                pending = query_int(db, "SELECT count(*) FROM jobs WHERE state IN ('queued', "
                                        "'running', 'retry')");
                if (next == b.n && pending == 0) {
                        if (jobs >= (int64_t)b.n)
                                break;
                        /* Idle with files missing: give stragglers 5 s, then judge. */
                        if (!stable_since)
                                stable_since = tu_now_us();
                        else if (tu_now_us() - stable_since > 5000000)
                                break;
                } else {
                        stable_since = 0;
                }
                if (tu_now_us() - t0 > bound_us + 60000000LL) {
                        char *level = log_last_line(d, "degradation level");
                        char *breaker = log_last_line(d, "circuit breaker");

                        problem("the battery was not finished %lld s after the first drop "
                                "(%lld jobs, %lld queued, running or retry); last degradation "
                                "change: %s; last breaker change: %s",
                                (long long)((tu_now_us() - t0) / 1000000), (long long)jobs,
                                (long long)pending, level ? level : "none",
                                breaker ? breaker : "none");
                        free(level);
                        free(breaker);
                        break;
                }
                usleep(next < b.n ? 100 * 1000 : 200 * 1000);
        }
        t_idle = tu_now_us();
        assert_daemon_alive(d, "after the battery");
        {
                char *out = NULL;
                int r = tu_imgctl(d, &out, "wait", "--timeout", "5", NULL);
                CHECK(r == 0, "imgctl wait after the battery: %d %s", r, out ? out : "");
                free(out);
        }
        sample_memory(d, NULL, &mem);

        /* Every file: one job, done or dead, with its errors; outputs only for done ones. */
        for (size_t i = 0; i < b.n; i++) {
                const struct bad_file *f = &b.files[i];
                const char *name = strrchr(f->dest, '/') + 1;
                size_t kind = 0;
                struct job_row j;

                while (strcmp(KINDS[kind], f->kind) != 0)
                        kind++;
                if (!job_of(db, f->dest, &j)) {
                        PROBLEM_CAPPED(&missing, "%s: no job (the file was never picked up)",
                                       f->dest);
                        continue;
                }
                if (strcmp(j.state, "done") == 0) {
                        done++;
                        by_kind_done[kind]++;
                        CHECK(j.n_outputs == 1, "%s: done with %d outputs", f->dest, j.n_outputs);
                        CHECK(j.output && tu_image_props(j.output, NULL, NULL, NULL, 0, NULL, NULL),
                              "%s: done, but its output %s does not decode", f->dest,
                              j.output ? j.output : "(none)");
                        CHECK(f->expect == EXPECT_ANY || f->expect == EXPECT_DONE,
                              "%s: done, but it must be refused", f->dest);
                } else if (strcmp(j.state, "dead") == 0) {
                        char *stem = strdup(name), *dot = strrchr(stem, '.'), *out;

                        dead++;
                        by_kind_dead[kind]++;
                        count_reason(reasons, &n_reasons, ELEMENTSOF(reasons), j.error, f->dest);
                        CHECK(j.error && *j.error, "%s: dead without an error", f->dest);
                        CHECK(j.n_errors >= 1 && j.n_errors == j.attempts,
                              "%s: dead after %d attempt(s) with %d error(s) recorded", f->dest,
                              j.attempts, j.n_errors);
                        CHECK(j.attempts >= 1 && j.attempts <= (int)max_attempts,
                              "%s: dead after %d attempts (max_attempts = %u)", f->dest, j.attempts,
                              max_attempts);
                        CHECK(j.n_outputs == 0, "%s: dead with %d outputs recorded", f->dest,
                              j.n_outputs);
                        if (dot)
                                *dot = '\0';
                        out = tu_path("%s/%s/%s_t.webp", d->media, f->kind, stem);
                        CHECK(access(out, F_OK) != 0, "%s: dead, yet %s exists", f->dest, out);
                        free(out);
                        free(stem);
                        CHECK(f->expect != EXPECT_DONE, "%s: a good image ended dead: %s", f->dest,
                              j.error ? j.error : "");
                        if (f->expect == EXPECT_UNSUPPORTED || f->expect == EXPECT_LIMIT ||
                            f->expect == EXPECT_DEAD)
                                CHECK(j.attempts == 1,
                                      "%s: a permanent failure took %d attempts: %s", f->dest,
                                      j.attempts, j.errors ? j.errors : "");
                        if (f->expect == EXPECT_UNSUPPORTED)
                                CHECK(j.error && strstr(j.error, "not a supported image"),
                                      "%s: expected \"not a supported image\", got: %s", f->dest,
                                      j.error ? j.error : "");
                        if (f->expect == EXPECT_LIMIT)
                                CHECK(j.error && strstr(j.error, "limit"),
                                      "%s: expected the pixel limit in the error, got: %s", f->dest,
                                      j.error ? j.error : "");
                } else {
                        PROBLEM_CAPPED(&unfinished, "%s: left %s (attempts %d, error %s)", f->dest,
                                       j.state, j.attempts, j.error ? j.error : "none");
                }
                job_row_clear(&j);
        }
        if (missing > 10 || unfinished > 10)
                fprintf(stderr,
                        "(%u files without a job and %u unfinished in all; the first 10 "
                        "of each are listed)\n",
                        missing, unfinished);
        /* (With jobs still running, their temporary files are expected.) */
        CHECK(unfinished > 0 || tu_count_files(d->media, ".imgd-*.tmp") == 0,
              "temporary files left in %s", d->media);

        worst_us = worst_attempt_us(db, &att, &worst_id);
        worst_log_ms = worst_done_ms(d);
        if (worst_log_ms * 1000 > (double)worst_us)
                worst_us = (int64_t)(worst_log_ms * 1000);

        qsort(reasons, n_reasons, sizeof *reasons, by_count);
        fprintf(stderr,
                "bad-input battery: files %zu, jobs %lld, done %u, dead %u, unfinished %u, "
                "never picked up %u\n",
                b.n, (long long)query_int(db, "SELECT count(*) FROM jobs"), done, dead, unfinished,
                missing);
        for (size_t k = 0; k < ELEMENTSOF(KINDS); k++)
                fprintf(stderr, "  %-9s done %4u  dead %4u\n", KINDS[k], by_kind_done[k],
                        by_kind_dead[k]);
        fprintf(stderr, "  dead by reason:\n");
        for (size_t r = 0; r < n_reasons; r++)
                fprintf(stderr, "    %4u  %-60s e.g. %s\n", reasons[r].count, reasons[r].text,
                        reasons[r].example);
        fprintf(stderr,
                "  worst job time %.0f ms (longest attempt seen running: job %lld; longest "
                "done job in the log: %.0f ms); timeouts %u; workers killed %u\n"
                "  worst worker peak RSS: VmHWM %.1f MiB, status peak_rss %.1f MiB (limit %u "
                "MiB)\n"
                "  battery wall time %.1f s (bound %lld s), %u status polls, worst status "
                "latency %.0f ms\n",
                (double)worst_us / 1000, (long long)worst_id, worst_log_ms,
                log_count(d, "timed out after"), log_count(d, "worker killed by"),
                (double)mem.hwm / MIB, (double)mem.status_peak / MIB, memory_mib,
                (double)(t_idle - t0) / 1e6, (long long)(bound_us / 1000000), polls,
                (double)worst_status_us / 1000);

        CHECK(done + dead == b.n, "%zu files, but only %u ended done or dead", b.n, done + dead);
        CHECK(worst_us <= (int64_t)timeout_s * 1000000 + 2000000,
              "an attempt took %.1f s, more than the %u s job timeout", (double)worst_us / 1e6,
              timeout_s);
        CHECK(t_idle - t0 <= bound_us, "the battery took %.1f s, over its bound of %lld s",
              (double)(t_idle - t0) / 1e6, (long long)(bound_us / 1000000));
        CHECK(mem.hwm > 0, "no worker's VmHWM could be read");
        CHECK(mem.hwm < (uint64_t)memory_mib * MIB && mem.status_peak < (uint64_t)memory_mib * MIB,
              "a worker used more than limits.worker_memory = %u MiB (VmHWM %.1f MiB, "
              "peak_rss %.1f MiB)",
              memory_mib, (double)mem.hwm / MIB, (double)mem.status_peak / MIB);
        CHECK(worst_status_us < 5000000, "imgctl status took %.1f s to answer",
              (double)worst_status_us / 1e6);

        /* The good work keeps flowing after the flood of bad input: a good image dropped
         * one health interval later (the daemon re-evaluates its degradation level at
         * least every 5 s) is done within seconds. */
        {
                char *s = tu_path("%s/stage/after-battery.jpg", d->root);
                char *p = tu_path("%s/good/after-battery.jpg", d->uploads);
                char *level;
                struct job_row j;
                int64_t t, ms;

                tu_make_image(s, 320, 240, "jpeg", false);
                usleep(6 * 1000 * 1000);
                assert_daemon_alive(d, "after the battery");
                t = tu_now_us();
                rename_or_fail(s, p);
                ms = wait_final(d, db, p, t, 15000, &mem, &j);
                level = log_last_line(d, "degradation level");
                fprintf(stderr,
                        "  a good image dropped 6 s after the battery: %s %s %lld ms; last "
                        "degradation change: %s\n",
                        j.state[0] ? j.state : "no job", ms >= 0 ? "after" : "still, after",
                        (long long)(ms >= 0 ? ms : (tu_now_us() - t) / 1000),
                        level ? level : "(none logged)");
                CHECK(ms >= 0 && strcmp(j.state, "done") == 0,
                      "a good image dropped after the battery is %s %.1f s later (%s)",
                      j.state[0] ? j.state : "not a job", (double)(tu_now_us() - t) / 1e6,
                      level ? level : "no degradation change logged");
                job_row_clear(&j);
                free(level);
                free(s);
                free(p);
        }

        sqlite3_close(db);
        assert_daemon_alive(d, "at the end of the battery");
        for (size_t i = 0; i < b.n; i++) {
                free(b.files[i].staged);
                free(b.files[i].dest);
        }
        free(b.files);
        free(att.v);
        if (problems)
                print_log_tail(d, 6000);
        tu_daemon_cleanup(d);
        end_checks("bad-input battery");
}

/* ------------------------------------------------------------------ poison file */

static void test_poison(void **state)
{
        static const char *const fmts[] = { "jpeg", "png", "webp", "gif", "jpeg", "png" };
        static const char *const exts[] = { "jpg", "png", "webp", "gif", "jpg", "png" };
        const unsigned max_attempts = 3, n_good = ELEMENTSOF(fmts);
        char sha[HASH_HEX_SIZE], prefix[17];
        char *staged, *poison;
        struct tu_daemon *const d = daemon_new();
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

        rename_or_fail(staged, poison);
        for (unsigned i = 0; i < n_good; i++) {
                char *s = tu_path("%s/stage/good%u.%s", d->root, i, exts[i]);
                char *p = tu_path("%s/good%u.%s", d->uploads, i, exts[i]);
                tu_make_image(s, 300 + 17 * i, 200 + 11 * i, fmts[i], i % 2 == 1);
                rename_or_fail(s, p);
                free(s);
                free(p);
        }
        tu_daemon_wait_idle(d, 60);
        assert_daemon_alive(d, "after the poison file");

        db = ledger_open(d);
        if (!job_of(db, poison, &j))
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
        job_row_clear(&j);

        for (unsigned i = 0; i < n_good; i++) {
                char *p = tu_path("%s/good%u.%s", d->uploads, i, exts[i]);
                char *o = tu_path("%s/good%u_t.webp", d->media, i);
                unsigned w = 0, h = 0;

                if (!job_of(db, p, &j)) {
                        problem("%s: no job", p);
                } else {
                        CHECK(strcmp(j.state, "done") == 0 && j.attempts == 1,
                              "%s: %s after %d attempt(s) (%s), while the poison file crashed "
                              "workers",
                              p, j.state, j.attempts, j.error ? j.error : "");
                        job_row_clear(&j);
                }
                CHECK(tu_image_props(o, &w, &h, NULL, 0, NULL, NULL) && w == 64 && h == 64,
                      "%s: missing or wrong (%ux%u)", o, w, h);
                free(p);
                free(o);
        }
        sqlite3_close(db);

        CHECK(log_count(d, "worker killed by SIGABRT") >= max_attempts,
              "the log names SIGABRT %u times, expected %u",
              log_count(d, "worker killed by SIGABRT"), max_attempts);
        {
                /* The killed workers were replaced. */
                pid_t pids[8];
                unsigned n = 0;
                for (int t = 0; t < 100 && (n = tu_daemon_children(d, pids, 8)) < 2; t++)
                        usleep(50 * 1000);
                CHECK(n == 2, "%u workers after the crashes, expected 2", n);
        }
        if (problems)
                print_log_tail(d, 6000);
        free(staged);
        free(poison);
        tu_daemon_cleanup(d);
        end_checks("poison file");
}

/* ------------------------------------------------------------------ special files */

struct refused {
        char *path;
        const char *what;
        const char *reasons[4];
};

static void test_special_files(void **state)
{
        struct tu_daemon *const d = daemon_new();
        struct refused r[16];
        size_t n = 0;
        char *outside, *secret, *odir, *inner, *tmp, *later, *later_out;
        char secret_sha[HASH_HEX_SIZE], inner_sha[HASH_HEX_SIZE];
        struct job_row j;
        int64_t lat, t0, ms;
        sqlite3 *db;
        json_t *st;
        int fd;

        (void)state;
#define REFUSE(p, w, ...) (r[n] = (struct refused){ (p), (w), { __VA_ARGS__, NULL } }, n++)
        tu_daemon_setup(d, PIPE_T, 2, "limits = { job_timeout = 10; };");

        /* Outside the tree: real images, which would render if they were ever read. */
        outside = tu_path("%s/outside", d->root);
        secret = tu_path("%s/secret.jpg", outside);
        odir = tu_path("%s/dir", outside);
        inner = tu_path("%s/inner.jpg", odir);
        tu_make_image(secret, 301, 201, "jpeg", false);
        tu_make_image(inner, 302, 202, "jpeg", false);
        fd = open(secret, O_RDONLY | O_CLOEXEC);
        assert_int_equal(hash_sha256_fd(fd, 0, secret_sha), 0);
        close(fd);
        fd = open(inner, O_RDONLY | O_CLOEXEC);
        assert_int_equal(hash_sha256_fd(fd, 0, inner_sha), 0);
        close(fd);

        /* Present at start (found by the start-up scan). */
        REFUSE(tu_path("%s/pre-link.jpg", d->uploads), "symlink to a file outside (at start)",
               "symlink", "symbolic link");
        assert_int_equal(symlink(secret, r[n - 1].path), 0);
        REFUSE(tu_path("%s/pre-linkdir", d->uploads), "symlinked folder outside (at start)",
               "symlink", "symbolic link");
        assert_int_equal(symlink(odir, r[n - 1].path), 0);
        REFUSE(tu_path("%s/pre-hl.jpg", d->uploads), "hard link to a file outside (at start)",
               "hard link");
        assert_int_equal(link(secret, r[n - 1].path), 0);

        tu_daemon_start(d);

        /* Made while running (inotify). */
        REFUSE(tu_path("%s/link.jpg", d->uploads), "symlink to a file outside", "symlink",
               "symbolic link");
        assert_int_equal(symlink(secret, r[n - 1].path), 0);
        REFUSE(tu_path("%s/linkdir", d->uploads), "symlinked folder outside", "symlink",
               "symbolic link");
        assert_int_equal(symlink(odir, r[n - 1].path), 0);

        /* A hard link inside the tree: the file is written under an ignored name, linked
         * to a second name with link(), then renamed to its own final name. */
        tmp = tu_path("%s/.hl.tmp", d->uploads);
        tu_make_image(tmp, 303, 203, "jpeg", false);
        REFUSE(tu_path("%s/hl-b.jpg", d->uploads), "hard link made with link() in the tree",
               "hard link");
        assert_int_equal(link(tmp, r[n - 1].path), 0);
        REFUSE(tu_path("%s/hl-a.jpg", d->uploads), "hard-linked file renamed into the tree",
               "hard link");
        rename_or_fail(tmp, r[n - 1].path);
        free(tmp);
        /* A hard link to a file outside the tree, made in place (ln outside/x uploads/y). */
        REFUSE(tu_path("%s/hl-out.jpg", d->uploads), "hard link to a file outside", "hard link");
        assert_int_equal(link(secret, r[n - 1].path), 0);

        /* FIFOs: made in place, and renamed in. Nothing writes to them: an open() that waits
         * for a writer would hang the daemon. */
        REFUSE(tu_path("%s/pipe.jpg", d->uploads), "FIFO made in place", "FIFO",
               "not a regular file");
        assert_int_equal(mkfifo(r[n - 1].path, 0644), 0);
        tmp = tu_path("%s/fifo.jpg", d->root);
        assert_int_equal(mkfifo(tmp, 0644), 0);
        REFUSE(tu_path("%s/pipe2.jpg", d->uploads), "FIFO renamed in", "FIFO",
               "not a regular file");
        rename_or_fail(tmp, r[n - 1].path);
        free(tmp);

        /* A character device like /dev/null (1:3); mknod needs root. */
        tmp = tu_path("%s/null.jpg", d->uploads);
        if (mknod(tmp, S_IFCHR | 0666, makedev(1, 3)) == 0) {
                REFUSE(tmp, "character device 1:3", "not a regular file", "device");
        } else {
                fprintf(stderr, "special files: mknod %s: %m; the device case is skipped\n", tmp);
                free(tmp);
        }

        /* An image renamed into the symlinked folder lands outside the tree. */
        tmp = tu_path("%s/stage/through.jpg", d->root);
        tu_make_image(tmp, 304, 204, "jpeg", false);
        {
                char *via = tu_path("%s/linkdir/through.jpg", d->uploads);
                rename_or_fail(tmp, via);
                free(via);
        }
        free(tmp);

        /* No hang: the daemon answers at once, and a good image dropped now is done within
         * seconds. */
        usleep(300 * 1000);
        assert_daemon_alive(d, "after the special files");
        st = status_json(d, &lat);
        json_decref(st);
        CHECK(lat < 2000000, "imgctl status took %.1f s after the FIFOs were made",
              (double)lat / 1e6);
        tmp = tu_path("%s/stage/later.jpg", d->root);
        later = tu_path("%s/later.jpg", d->uploads);
        later_out = tu_path("%s/later_t.webp", d->media);
        tu_make_image(tmp, 305, 205, "jpeg", false);
        db = ledger_open(d);
        t0 = tu_now_us();
        rename_or_fail(tmp, later);
        free(tmp);
        ms = wait_final(d, db, later, t0, 10000, NULL, &j);
        fprintf(stderr, "special files: a good image dropped after them ended %s in %lld ms\n",
                j.state[0] ? j.state : "(no job)", (long long)ms);
        CHECK(ms >= 0 && strcmp(j.state, "done") == 0,
              "the good image dropped after the special files is %s after %lld ms (%s)",
              j.state[0] ? j.state : "not a job", (long long)ms, j.error ? j.error : "");
        job_row_clear(&j);
        usleep(500 * 1000); /* anything that would still be picked up */
        tu_daemon_wait_idle(d, 30);
        assert_daemon_alive(d, "at the end");

        /* Nothing outside the tree was read or published: the only job and the only outputs
         * are later.jpg's. */
        CHECK(tu_count_files(d->media, "*") == 2 && access(later_out, F_OK) == 0,
              "the output tree holds %u files, expected later_t.webp and its manifest",
              tu_count_files(d->media, "*"));
        CHECK(query_int(db, "SELECT count(*) FROM jobs") == 1,
              "the ledger has %lld jobs, expected 1 (later.jpg)",
              (long long)query_int(db, "SELECT count(*) FROM jobs"));
        {
                sqlite3_stmt *q = prepare(db, "SELECT count(*) FROM jobs WHERE source_sha256 "
                                              "IN (?1, ?2)");
                sqlite3_bind_text(q, 1, secret_sha, -1, SQLITE_STATIC);
                sqlite3_bind_text(q, 2, inner_sha, -1, SQLITE_STATIC);
                assert_int_equal(sqlite3_step(q), SQLITE_ROW);
                CHECK(sqlite3_column_int(q, 0) == 0,
                      "a job holds the content of a file outside the tree");
                sqlite3_finalize(q);
        }
        st = status_json(d, NULL);
        CHECK(status_jobs_total(st) == 1, "status counts %lld jobs, expected 1",
              (long long)status_jobs_total(st));
        json_decref(st);

        for (size_t i = 0; i < n; i++) {
                char *other = NULL, *line = log_line_for(d, r[i].path, r[i].reasons, &other);
                bool has_job = job_of(db, r[i].path, &j);
                const char *name = strrchr(r[i].path, '/') + 1;
                char *stem = strdup(name), *dot = strrchr(stem, '.'), *out;

                if (dot)
                        *dot = '\0';
                out = tu_path("%s/%s_t.webp", d->media, stem);
                fprintf(stderr, "  %-44s %s\n", r[i].what,
                        line    ? line
                        : other ? other
                                : "(not in the log)");
                CHECK(!has_job, "%s (%s) became job %lld (%s)", r[i].path, r[i].what,
                      (long long)j.id, j.state);
                CHECK(access(out, F_OK) != 0, "%s (%s) was published as %s", r[i].path, r[i].what,
                      out);
                CHECK(line, "the log does not name %s (%s) with a reason (\"%s\")%s%s", r[i].path,
                      r[i].what, r[i].reasons[0], other ? "; it only says: " : "",
                      other ? other : "");
                job_row_clear(&j);
                free(line);
                free(other);
                free(stem);
                free(out);
        }
        {
                /* The folders behind the symlinks were never entered. */
                char *o1 = tu_path("%s/linkdir", d->media),
                     *o2 = tu_path("%s/pre-linkdir", d->media);
                CHECK(access(o1, F_OK) != 0 && access(o2, F_OK) != 0,
                      "outputs were made for a symlinked folder");
                free(o1);
                free(o2);
        }

        if (problems)
                print_log_tail(d, 6000);
        sqlite3_close(db);
        for (size_t i = 0; i < n; i++)
                free(r[i].path);
        free(outside);
        free(secret);
        free(odir);
        free(inner);
        free(later);
        free(later_out);
        tu_daemon_cleanup(d);
        end_checks("special files");
#undef REFUSE
}

/* ------------------------------------------------------------------ decompression bombs */

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
        struct tu_daemon *const d = daemon_new();
        sqlite3 *db;
        json_t *st;

        (void)state;
        /* The default limits.max_pixels (100 megapixels) applies. */
        tu_daemon_setup(d, PIPE_T, 1, NULL);
        tu_daemon_start(d);
        db = ledger_open(d);
        usleep(300 * 1000); /* the worker is up */
        sample_memory(d, NULL, &base);

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
                p = read_or_fail(real, &len);
                ok = i == 0   ? png_patch_ihdr(p, len, bombs[i].w, bombs[i].h)
                     : i == 1 ? jpeg_patch_sof(p, len, bombs[i].w, bombs[i].h)
                              : webp_patch_size(p, len, bombs[i].w, bombs[i].h);
                assert_true(ok);
                tu_write_file(staged, p, len);
                free(p);

                t0 = tu_now_us();
                rename_or_fail(staged, dest);
                ms = wait_final(d, db, dest, t0, 15000, &mem, &j);
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
                job_row_clear(&j);
                free(real);
                free(staged);
                free(dest);
                free(out);
        }
        assert_daemon_alive(d, "after the bombs");
        st = status_json(d, NULL);
        sample_memory(d, st, &mem);
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
        CHECK(log_count(d, "worker killed by") == 0, "a worker was killed on a bomb");

        if (problems)
                print_log_tail(d, 4000);
        sqlite3_close(db);
        tu_daemon_cleanup(d);
        end_checks("decompression bombs");
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_teardown(test_battery, teardown),
                cmocka_unit_test_teardown(test_poison, teardown),
                cmocka_unit_test_teardown(test_special_files, teardown),
                cmocka_unit_test_teardown(test_bombs, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
