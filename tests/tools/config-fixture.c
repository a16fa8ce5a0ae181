/* SPDX-License-Identifier: MIT */
/*
 * config-fixture.c - helpers of the test-config-* programs: the group's temporary directory
 * (made by cfgfx_setup(), removed with its contents by cfgfx_teardown()), paths formatted into
 * new strings, files written, the line of a marker in a text, and a configuration text loaded
 * that must be valid.
 */
#include <errno.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "shared/config.h"
#include "shared/macro.h"

#include "config-fixture.h"

char *cfgfx_tmp;

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
        return remove(path) < 0 ? -1 : 0;
}

static void rm_rf(const char *path)
{
        if (path)
                nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

char *cfgfx_path_join(const char *fmt, ...)
{
        va_list ap;
        char *s;

        va_start(ap, fmt);
        assert_true(vasprintf(&s, fmt, ap) >= 0);
        va_end(ap);
        return s;
}

void cfgfx_write_text(const char *path, const char *text)
{
        FILE *f = fopen(path, "we");

        assert_non_null(f);
        assert_int_equal(fputs(text, f) >= 0, 1);
        assert_int_equal(fclose(f), 0);
}

int cfgfx_setup(void **state)
{
        char tmpl[] = "/tmp/test-config-XXXXXX";

        if (!mkdtemp(tmpl))
                return -1;
        cfgfx_tmp = strdup(tmpl);
        return cfgfx_tmp ? 0 : -1;
}

int cfgfx_teardown(void **state)
{
        rm_rf(cfgfx_tmp);
        free(cfgfx_tmp);
        cfgfx_tmp = NULL;
        return 0;
}

/* Writes text to <tmp>/<name> and returns the path; caller frees. */
char *cfgfx_write_conf(const char *name, const char *text)
{
        char *path = cfgfx_path_join("%s/%s", cfgfx_tmp, name);

        cfgfx_write_text(path, text);
        return path;
}

/* Line (1-based) of the first line of text containing marker; fails if none. */
unsigned cfgfx_line_of(const char *text, const char *marker)
{
        const char *at = strstr(text, marker);
        unsigned line = 1;

        assert_non_null(at);
        for (const char *c = text; c < at; c++)
                if (*c == '\n')
                        line++;
        return line;
}

/* Loads text and expects success; caller frees the config. */
struct config *cfgfx_expect_ok(const char *text)
{
        _cleanup_free_ char *path = cfgfx_write_conf("good.conf", text);
        _cleanup_free_ char *error = NULL;
        struct config *c = NULL;
        int r;

        r = config_load(path, &c, &error);
        if (r < 0)
                print_error("unexpected error %d: %s\nfor:\n%s\n", r, error ? error : "(none)",
                            text);
        assert_int_equal(r, 0);
        assert_non_null(c);
        assert_null(error);
        return c;
}
