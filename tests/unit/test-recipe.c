/* SPDX-License-Identifier: MIT */
/*
 * test-recipe.c - recipes of variants (daemon/recipe.h, issue 17): equal for equal settings,
 * different when anything that changes an output's bytes changes (a setting, the render
 * version's input, the watermark image's content), the same when only what does not change
 * them changes (essential, the watermark file's path); set for every variant of a loaded
 * configuration, with an error naming the file when a watermark image cannot be read.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config-fixture.h"
#include "daemon/recipe.h"

static struct variant base_variant(void)
{
        struct variant v;

        variant_init(&v);
        strcpy(v.name, "small");
        v.width = v.height = 100;
        v.format = IMAGE_FORMAT_WEBP;
        v.quality = 80;
        return v;
}

static void recipe(const struct variant *v, const char *wm, char out[static RECIPE_SIZE])
{
        assert_int_equal(recipe_of(v, wm, out), 0);
        assert_int_equal(strlen(out), RECIPE_SIZE - 1);
        assert_int_equal(strspn(out, "0123456789abcdef"), RECIPE_SIZE - 1);
}

/* Each change of a setting that changes the bytes gives another recipe. */
static void test_settings(void **state)
{
        struct variant v = base_variant(), w;
        char a[RECIPE_SIZE], b[RECIPE_SIZE];

        (void)state;
        recipe(&v, NULL, a);
        recipe(&v, NULL, b);
        assert_string_equal(a, b);
        recipe(&v, "", b); /* no watermark either way */
        assert_string_equal(a, b);

#define DIFFERS(change)                                                                            \
        do {                                                                                       \
                w = v;                                                                             \
                change;                                                                            \
                recipe(&w, NULL, b);                                                               \
                if (strcmp(a, b) == 0)                                                             \
                        fail_msg("recipe unchanged by %s", #change);                               \
        } while (0)
        DIFFERS(w.quality = 81);
        DIFFERS(w.width = 101);
        DIFFERS(w.height = 99);
        DIFFERS(w.format = IMAGE_FORMAT_AVIF);
        DIFFERS(w.fit = VARIANT_FIT_INSIDE);
        DIFFERS(w.effort = 5);
        DIFFERS(w.mask = VARIANT_MASK_CIRCLE);
        DIFFERS(w.background[1] = 7);
        DIFFERS(strcpy(w.name, "medium"));
#undef DIFFERS

        /* essential only decides when it is rendered; the recipe field is not an input. */
        w = v;
        w.essential = !v.essential;
        strcpy(w.recipe, "ffffffffffffffff");
        recipe(&w, NULL, b);
        assert_string_equal(a, b);
}

/* The watermark's content is part of the recipe, its path is not. */
static void test_watermark(void **state)
{
        struct variant v = base_variant();
        char a[RECIPE_SIZE], b[RECIPE_SIZE], c[RECIPE_SIZE];

        (void)state;
        v.watermark.kind = VARIANT_WATERMARK_IMAGE;
        strcpy(v.watermark.image, "/etc/imgd/logo.png");
        recipe(&v, "aa", a);
        recipe(&v, "bb", b);
        assert_string_not_equal(a, b);
        strcpy(v.watermark.image, "/etc/imgd/other.png");
        recipe(&v, "aa", c);
        assert_string_equal(a, c); /* moved, same content: the same outputs */
        v.watermark.opacity = 0.25;
        recipe(&v, "aa", c);
        assert_string_not_equal(a, c);
}

/* recipe_config(): every variant gets its recipe; the watermark file is read for its content. */
static void test_config(void **state)
{
        _cleanup_free_ char *wm = cfgfx_path_join("%s/logo.png", cfgfx_tmp);
        _cleanup_free_ char *text = NULL, *missing_text = NULL, *err = NULL;
        struct config *c, *c2, *c3;
        char first[RECIPE_SIZE], second[RECIPE_SIZE];

        (void)state;
        cfgfx_write_text(wm, "one");
        text = cfgfx_path_join(WATCH
                               "pipelines = { p = (\n"
                               "  { name = \"a\"; width = 10; height = 10; format = \"webp\"; },\n"
                               "  { name = \"b\"; width = 20; height = 20; format = \"webp\";\n"
                               "    watermark = { image = \"%s\"; }; }\n"
                               "); };\n",
                               wm);
        c = cfgfx_expect_ok(text);
        assert_int_equal(recipe_config(c, &err), 0);
        assert_int_equal(strlen(c->pipelines[0].variants[0].recipe), RECIPE_SIZE - 1);
        assert_int_equal(strlen(c->pipelines[0].variants[1].recipe), RECIPE_SIZE - 1);
        assert_string_not_equal(c->pipelines[0].variants[0].recipe,
                                c->pipelines[0].variants[1].recipe);
        strcpy(first, c->pipelines[0].variants[1].recipe);

        /* The same configuration again: the same recipes. */
        c2 = cfgfx_expect_ok(text);
        assert_int_equal(recipe_config(c2, &err), 0);
        assert_string_equal(c2->pipelines[0].variants[0].recipe,
                            c->pipelines[0].variants[0].recipe);
        assert_string_equal(c2->pipelines[0].variants[1].recipe, first);

        /* The watermark's content changed: that variant's recipe changes, the other's not. */
        cfgfx_write_text(wm, "two");
        c3 = cfgfx_expect_ok(text);
        assert_int_equal(recipe_config(c3, &err), 0);
        strcpy(second, c3->pipelines[0].variants[1].recipe);
        assert_string_not_equal(first, second);
        assert_string_equal(c3->pipelines[0].variants[0].recipe,
                            c->pipelines[0].variants[0].recipe);
        config_free(c3);

        /* A watermark that cannot be read: an error naming the file and the variant. */
        assert_int_equal(unlink(wm), 0);
        c3 = cfgfx_expect_ok(text);
        assert_int_equal(recipe_config(c3, &err), -ENOENT);
        assert_non_null(err);
        assert_non_null(strstr(err, wm));
        assert_non_null(strstr(err, "'b'"));
        config_free(c3);
        config_free(c2);
        config_free(c);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_settings),
                cmocka_unit_test(test_watermark),
                cmocka_unit_test(test_config),
        };

        return cmocka_run_group_tests(tests, cfgfx_setup, cfgfx_teardown);
}
