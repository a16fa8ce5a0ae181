/* SPDX-License-Identifier: MIT */
/*
 * test-pathmap.c - ignored upload names, imgd's own temporary names, output keys (nested
 * and root-level sources, sources not below the watched path, extensions) and output paths.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>

#include <cmocka.h>

#include "shared/macro.h"
#include "shared/pathmap.h"

static void test_ignored(void **state)
{
        static const struct {
                const char *name;
                bool ignored;
        } cases[] = {
                { "photo.jpg", false },
                { "photo", false },
                { "my photo (1).JPEG", false },
                { "a~b.png", false },
                { "tmp.png", false },
                { "part", false },
                { "photo.tmp.jpg", false },
                { ".hidden", true },
                { ".photo.jpg", true },
                { ".", true },
                { "..", true },
                { "", true },
                { "photo.jpg.tmp", true },
                { "photo.TMP", true },
                { "photo.jpg.part", true },
                { "photo.jpg.crdownload", true },
                { "photo.jpg~", true },
                { "~", true },
                { "photo.jpg.swp", true },
                { ".imgd-abc.tmp", true },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                if (pathmap_is_ignored(cases[i].name) != cases[i].ignored)
                        print_error("pathmap_is_ignored(\"%s\") != %d\n", cases[i].name,
                                    cases[i].ignored);
                assert_int_equal(pathmap_is_ignored(cases[i].name), cases[i].ignored);
        }
        assert_true(pathmap_is_ignored(NULL));
}

static void test_own_temp(void **state)
{
        assert_true(pathmap_is_own_temp(".imgd-abc123.tmp"));
        assert_true(pathmap_is_own_temp(".imgd-photo_small.webp.XXXXXX.tmp"));
        assert_true(pathmap_is_own_temp(".imgd-.tmp"));
        assert_false(pathmap_is_own_temp(".imgd-abc"));
        assert_false(pathmap_is_own_temp(".imgd-abc.webp"));
        assert_false(pathmap_is_own_temp("imgd-abc.tmp"));
        assert_false(pathmap_is_own_temp(".imgd.tmp"));
        assert_false(pathmap_is_own_temp(".imgd-tmp"));
        assert_false(pathmap_is_own_temp("photo.tmp"));
        assert_false(pathmap_is_own_temp(".imgd-probe-a1b2c3"));
        assert_false(pathmap_is_own_temp(""));
        assert_false(pathmap_is_own_temp(NULL));
}

static void expect_key(const char *watch, const char *output, const char *source,
                       const char *expected)
{
        _cleanup_free_ char *key = NULL;
        int r;

        r = pathmap_output_key(watch, output, source, &key);
        if (r < 0)
                print_error("pathmap_output_key(%s, %s, %s) = %d\n", watch, output, source, r);
        assert_int_equal(r, 0);
        assert_string_equal(key, expected);
}

static void expect_no_key(const char *watch, const char *output, const char *source)
{
        char *key = (char *)"unchanged";

        assert_int_equal(pathmap_output_key(watch, output, source, &key), -EINVAL);
        assert_string_equal(key, "unchanged");
}

static void test_output_key(void **state)
{
        /* Root-level and nested sources. */
        expect_key("/srv/up", "/srv/media", "/srv/up/photo.jpg", "/srv/media/photo");
        expect_key("/srv/up", "/srv/media", "/srv/up/a/b/c/photo.png", "/srv/media/a/b/c/photo");
        expect_key("/srv/up", "/srv/media", "/srv/up/users/42/me.webp", "/srv/media/users/42/me");

        /* Trailing slashes on the roots do not matter; repeated slashes are collapsed. */
        expect_key("/srv/up/", "/srv/media/", "/srv/up/photo.jpg", "/srv/media/photo");
        expect_key("/srv/up", "/srv/media", "/srv/up//a//photo.jpg", "/srv/media/a/photo");

        /* Only the last extension is removed; names without one stay whole. */
        expect_key("/w", "/o", "/w/a.tar.gz", "/o/a.tar");
        expect_key("/w", "/o", "/w/noext", "/o/noext");
        expect_key("/w", "/o", "/w/.hidden", "/o/.hidden");
        expect_key("/w", "/o", "/w/d.v2/noext", "/o/d.v2/noext");
        expect_key("/w", "/o", "/w/d.v2/x.JPG", "/o/d.v2/x");
        expect_key("/w", "/o", "/w/trailing.", "/o/trailing");
        expect_key("/w", "/o", "/w/my photo (1).jpeg", "/o/my photo (1)");

        /* A watched root directory. */
        expect_key("/", "/o", "/x.jpg", "/o/x");

        /* Not strictly below the watched path, compared by components. */
        expect_no_key("/a/b", "/o", "/a/bc/x.jpg");
        expect_no_key("/a/b", "/o", "/a/b");
        expect_no_key("/a/b", "/o", "/a/b/");
        expect_no_key("/a/b", "/o", "/a/x.jpg");
        expect_no_key("/a/b", "/o", "/other/x.jpg");
        expect_no_key("/a/b", "/o", "a/b/x.jpg");

        /* Nothing may climb out of the output tree. */
        expect_no_key("/a/b", "/o", "/a/b/../x.jpg");
        expect_no_key("/a/b", "/o", "/a/b/c/../../x.jpg");
        expect_no_key("/a/b", "/o", "/a/b/./x.jpg");
        expect_no_key("/a/b", "/o", "/a/b/..");
}

static void test_output_path(void **state)
{
        _cleanup_free_ char *path = NULL;

        assert_int_equal(pathmap_output_path("/srv/media/a/photo", "small", "webp", &path), 0);
        assert_string_equal(path, "/srv/media/a/photo_small.webp");
        free(path);
        path = NULL;
        assert_int_equal(pathmap_output_path("/o/a.tar", "1600", "jpg", &path), 0);
        assert_string_equal(path, "/o/a.tar_1600.jpg");
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_ignored),
                cmocka_unit_test(test_own_temp),
                cmocka_unit_test(test_output_key),
                cmocka_unit_test(test_output_path),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
