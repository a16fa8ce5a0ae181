/* SPDX-License-Identifier: MIT */
/*
 * test-badinput-battery.c - issue 4's bad-input battery, against the real daemon (real imgd-worker
 * processes, real inotify, real signals, imgctl over the real socket): a few hundred malformed
 * files made here from real JPEG, PNG, WebP and GIF images (truncations at many lengths, seeded
 * random byte flips, wrong extensions, zero bytes, headers claiming huge dimensions, a text file
 * named .jpg, a MATLAB file, an SVG and a PDF named .png), renamed into the watched tree in
 * batches: the daemon stays up and answers, every file ends done or dead with its errors recorded,
 * no attempt runs past the job timeout, worker memory stays under its limit, and a good image
 * dropped after the flood is still done within seconds; the counts are printed. IMGD_BADINPUT=full
 * runs about 1000 files instead of 200 (IMGD_BADINPUT_SEED changes the seed).
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

/* Like badfx_problem(), but only the first 10 of a kind are printed; *n counts them all. */
#define PROBLEM_CAPPED(n, ...)                                                                     \
        do {                                                                                       \
                if ((*(n))++ < 10)                                                                 \
                        badfx_problem(__VA_ARGS__);                                                \
                else                                                                               \
                        badfx_problems++;                                                          \
        } while (0)

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

static void poll_running(sqlite3 *db, struct attempts *a)
{
        sqlite3_stmt *st = badfx_prepare(db, "SELECT id, attempts, updated_us FROM jobs "
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
                sqlite3_stmt *st = badfx_prepare(
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
                src[i].data = badfx_read_or_fail(p, &src[i].len);
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
                ok = i == 0   ? badfx_jpeg_patch_sof(p, src[i].len, 65000, 65000)
                     : i == 1 ? badfx_png_patch_ihdr(p, src[i].len, 60000, 60000)
                     : i == 2 ? badfx_webp_patch_size(p, src[i].len, 16383, 16383)
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
        struct tu_daemon *const d = badfx_daemon_new();
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
        db = badfx_ledger_open(d);

        /* Drop in batches of 20 renames, watching the daemon between batches and after. */
        t0 = tu_now_us();
        for (size_t next = 0;;) {
                json_t *st;
                int64_t lat, jobs, pending;

                for (unsigned k = 0; k < 20 && next < b.n; k++, next++)
                        badfx_rename_or_fail(b.files[next].staged, b.files[next].dest);

                badfx_assert_daemon_alive(d, "during the battery");
                st = badfx_status_json(d, &lat);
                if (lat > worst_status_us)
                        worst_status_us = lat;
                badfx_sample_memory(d, st, &mem);
                json_decref(st);
                poll_running(db, &att);
                polls++;

                jobs = badfx_query_int(db, "SELECT count(*) FROM jobs");
                pending = badfx_query_int(db, "SELECT count(*) FROM jobs WHERE state IN ('queued', "
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

                        badfx_problem(
                                "the battery was not finished %lld s after the first drop "
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
        badfx_assert_daemon_alive(d, "after the battery");
        {
                char *out = NULL;
                int r = tu_imgctl(d, &out, "wait", "--timeout", "5", NULL);
                CHECK(r == 0, "imgctl wait after the battery: %d %s", r, out ? out : "");
                free(out);
        }
        badfx_sample_memory(d, NULL, &mem);

        /* Every file: one job, done or dead, with its errors; outputs only for done ones. */
        for (size_t i = 0; i < b.n; i++) {
                const struct bad_file *f = &b.files[i];
                const char *name = strrchr(f->dest, '/') + 1;
                size_t kind = 0;
                struct job_row j;

                while (strcmp(KINDS[kind], f->kind) != 0)
                        kind++;
                if (!badfx_job_of(db, f->dest, &j)) {
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
                badfx_job_row_clear(&j);
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
                b.n, (long long)badfx_query_int(db, "SELECT count(*) FROM jobs"), done, dead,
                unfinished, missing);
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
                badfx_log_count(d, "timed out after"), badfx_log_count(d, "worker killed by"),
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
                badfx_assert_daemon_alive(d, "after the battery");
                t = tu_now_us();
                badfx_rename_or_fail(s, p);
                ms = badfx_wait_final(d, db, p, t, 15000, &mem, &j);
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
                badfx_job_row_clear(&j);
                free(level);
                free(s);
                free(p);
        }

        sqlite3_close(db);
        badfx_assert_daemon_alive(d, "at the end of the battery");
        for (size_t i = 0; i < b.n; i++) {
                free(b.files[i].staged);
                free(b.files[i].dest);
        }
        free(b.files);
        free(att.v);
        if (badfx_problems)
                badfx_print_log_tail(d, 6000);
        tu_daemon_cleanup(d);
        badfx_end_checks("bad-input battery");
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_teardown(test_battery, badfx_teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
