/* SPDX-License-Identifier: MIT */
/*
 * output.c - what imgctl writes (imgctl.h): its messages to stderr, text made safe for a
 * terminal, tables whose columns are as wide as their widest cell, times, durations and
 * sizes for people, and the daemon's answers as indented JSON.
 *
 * Everything printed that came from the daemon (file names, error texts) goes through
 * output_clean() first, so a file name cannot play tricks on a terminal. Table columns are
 * display columns of UTF-8 text (wcwidth() under the UTF-8 locale main() sets).
 */
#include <assert.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <wchar.h>

#include "shared/alloc.h"
#include "shared/time-util.h"
#include "imgctl/imgctl.h"

/* ---- messages and memory --------------------------------------------------------------- */

void imgctl_error(const char *fmt, ...)
{
        va_list ap;

        fprintf(stderr, "%s: ", IMGCTL_PROGRAM);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
}

/* A CLI has nothing better to do when memory runs out than to say so and stop. */
_Noreturn void imgctl_oom(void)
{
        imgctl_error("out of memory");
        exit(EXIT_FAILED);
}

char *imgctl_strdup(const char *s)
{
        char *p = strdup(s);

        if (!p)
                imgctl_oom();
        return p;
}

char *imgctl_asprintf(const char *fmt, ...)
{
        va_list ap;
        char *s;
        int r;

        va_start(ap, fmt);
        r = vasprintf(&s, fmt, ap);
        va_end(ap);
        if (r < 0)
                imgctl_oom();
        return s;
}

/*
 * The character at s (not at its end) as a terminal shows it: returns its length in bytes and
 * puts in shown (NUL-terminated) what to print and in *ret_cols its display columns
 * (wcwidth() under the UTF-8 locale main() sets): the character itself; "?" (1 column) for a
 * control character (C0, DEL, C1); "\xNN" (4 columns) for a byte that does not begin a valid
 * character.
 */
static size_t text_char(const char *s, char shown[static MB_LEN_MAX + 1], size_t *ret_cols)
{
        mbstate_t st = { 0 };
        wchar_t wc;
        size_t k = mbrtowc(&wc, s, strnlen(s, MB_LEN_MAX), &st);
        int w;

        if (k == (size_t)-1 || k == (size_t)-2 || k == 0) {
                snprintf(shown, MB_LEN_MAX + 1, "\\x%02x", (unsigned char)*s);
                *ret_cols = 4;
                return 1;
        }
        if (wc < 0x20 || wc == 0x7f || (wc >= 0x80 && wc <= 0x9f)) {
                strcpy(shown, "?");
                *ret_cols = 1;
                return k;
        }
        memcpy(shown, s, k);
        shown[k] = '\0';
        w = wcwidth(wc);
        *ret_cols = w < 0 ? 1 : (size_t)w;
        return k;
}

/* Display columns of s as output_clean() prints it, for column widths. */
size_t output_width(const char *s)
{
        char shown[MB_LEN_MAX + 1];
        size_t n = 0, cols;

        while (*s) {
                s += text_char(s, shown, &cols);
                n += cols;
        }
        return n;
}

/*
 * A copy of s fit for a terminal (text_char()): control characters become '?', bytes that
 * are not UTF-8 "\xNN". With max_cols > 0, a text wider than max_cols display columns is cut
 * to at most max_cols, the last three of them "...".
 */
char *output_clean(const char *s, size_t max_cols)
{
        const char *p = s ? s : "";
        size_t keep = SIZE_MAX, used = 0, len = strlen(p);
        char shown[MB_LEN_MAX + 1];
        char *out, *q;

        if (max_cols > 3 && output_width(p) > max_cols)
                keep = max_cols - 3;
        /* At worst every byte becomes "\xNN". */
        out = q = malloc(4 * len + 4);
        if (!out)
                imgctl_oom();
        while (*p) {
                size_t cols, k = text_char(p, shown, &cols);

                if (used + cols > keep)
                        break;
                q = stpcpy(q, shown);
                used += cols;
                p += k;
        }
        if (*p)
                q = stpcpy(q, "...");
        *q = '\0';
        return out;
}

/* "2026-11-23 10:04:12" in local time, or "-" for 0. */
void output_time(int64_t usec, char *buf, size_t size)
{
        time_t t = (time_t)(usec / (int64_t)USEC_PER_SEC);
        struct tm tm;

        if (usec <= 0 || !localtime_r(&t, &tm) ||
            strftime(buf, size, "%Y-%m-%d %H:%M:%S", &tm) == 0)
                snprintf(buf, size, "-");
}

/* "42s", "3m", "2h 5m", "3d 4h". */
void output_uptime(int64_t s, char *buf, size_t size)
{
        if (s < 0)
                s = 0;
        if (s < 60)
                snprintf(buf, size, "%" PRId64 "s", s);
        else if (s < 3600)
                snprintf(buf, size, "%" PRId64 "m", s / 60);
        else if (s < 86400)
                snprintf(buf, size, "%" PRId64 "h %" PRId64 "m", s / 3600, s / 60 % 60);
        else
                snprintf(buf, size, "%" PRId64 "d %" PRId64 "h", s / 86400, s / 3600 % 24);
}

/*
 * The predicted time to drain the backlog, from the "health" object of status ("2m", "0s"),
 * or "never" when it is not draining (drain_s is null, or missing); returns false then.
 */
bool output_drain(const json_t *health_obj, char *buf, size_t size)
{
        const json_t *drain = json_object_get(health_obj, "drain_s");

        if (!json_is_number(drain)) {
                snprintf(buf, size, "never");
                return false;
        }
        output_uptime((int64_t)ceil(json_number_value(drain)), buf, size);
        return true;
}

/* "512 B", "12.1 KiB", "3.4 MiB". */
void output_bytes(uint64_t n, char *buf, size_t size)
{
        static const char *const units[] = { "KiB", "MiB", "GiB", "TiB" };
        double v = (double)n;
        size_t u = 0;

        if (n < 1024) {
                snprintf(buf, size, "%" PRIu64 " B", n);
                return;
        }
        v /= 1024;
        while (v >= 1024 && u + 1 < ELEMENTSOF(units)) {
                v /= 1024;
                u++;
        }
        snprintf(buf, size, "%.1f %s", v, units[u]);
}

/* ---- tables --------------------------------------------------------------------------- */

void output_table_init(struct output_table *t, size_t n_cols)
{
        *t = (struct output_table){ .n_cols = n_cols };
}

void output_table_add(struct output_table *t, ...)
{
        va_list ap;

        if (GROW_ARRAY(t->cells, t->alloc, (t->n_rows + 1) * t->n_cols) < 0)
                imgctl_oom();
        va_start(ap, t);
        for (size_t i = 0; i < t->n_cols; i++) {
                const char *s = va_arg(ap, const char *);

                t->cells[t->n_rows * t->n_cols + i] = output_clean(s ? s : "-", 0);
        }
        va_end(ap);
        t->n_rows++;
}

void output_table_print(const struct output_table *t, const char *indent)
{
        size_t width[16] = { 0 };

        assert(t->n_cols <= ELEMENTSOF(width));
        for (size_t r = 0; r < t->n_rows; r++)
                for (size_t c = 0; c < t->n_cols; c++) {
                        size_t w = output_width(t->cells[r * t->n_cols + c]);

                        if (w > width[c])
                                width[c] = w;
                }
        for (size_t r = 0; r < t->n_rows; r++) {
                size_t last = t->n_cols - 1;

                /* No padding after the last cell that has text. */
                while (last > 0 && !t->cells[r * t->n_cols + last][0])
                        last--;
                fputs(indent, stdout);
                for (size_t c = 0; c <= last; c++) {
                        const char *s = t->cells[r * t->n_cols + c];

                        fputs(s, stdout);
                        if (c == last)
                                break;
                        for (size_t k = output_width(s); k < width[c] + 2; k++)
                                fputc(' ', stdout);
                }
                fputc('\n', stdout);
        }
}

void output_table_clear(struct output_table *t)
{
        for (size_t i = 0; i < t->n_rows * t->n_cols; i++)
                free(t->cells[i]);
        free(t->cells);
        *t = (struct output_table){ 0 };
}

int output_json(const json_t *result)
{
        if (json_dumpf(result, stdout, JSON_INDENT(2)) < 0)
                return EXIT_FAILED;
        fputc('\n', stdout);
        return EXIT_OK;
}

void output_field(const char *key, const char *value)
{
        _cleanup_free_ char *clean = output_clean(value, 0);

        printf("%-11s %s\n", key, clean);
}
