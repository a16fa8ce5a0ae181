/* SPDX-License-Identifier: MIT */
/*
 * test-variant.c - the variant rules of variant.h (variant_*_applies()), each stated once
 * and used by the configuration, variant_check() and --dump-config: for every output format
 * and "same", which settings apply; a fit's size and gravity; lossless turning max_bytes off;
 * max_bytes_strict needing max_bytes. And that variant_check() refuses a setting exactly
 * where its rule says it does not apply.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "shared/imgformat.h"
#include "shared/variant.h"

/* A variant of format f that variant_check() accepts: 10x10, cover, nothing else set. */
static struct variant plain(enum image_format f)
{
        struct variant v;

        variant_init(&v);
        strcpy(v.name, "v");
        v.width = 10;
        v.height = 10;
        v.format = f;
        return v;
}

/* The formats a variant can be written in, and "same". */
static const enum image_format formats[] = {
        IMAGE_FORMAT_JPEG, IMAGE_FORMAT_WEBP, IMAGE_FORMAT_PNG,
        IMAGE_FORMAT_AVIF, IMAGE_FORMAT_GIF,  VARIANT_FORMAT_SAME,
};

static void test_format_rules(void **state)
{
        /* jpeg, webp, png, avif, gif, same */
        static const bool mask[] = { false, true, true, true, true, false };
        static const bool effort[] = { false, true, false, true, false, false };
        static const bool progressive[] = { true, false, true, false, true, false };
        static const bool lossless[] = { false, true, false, false, false, false };
        static const bool chroma[] = { true, false, false, true, false, false };
        static const bool keep[] = { true, true, true, true, false, true };
        static const bool max_bytes[] = { true, true, false, true, false, false };
        static const bool animated[] = { false, true, false, false, true, true };

        (void)state;
        for (size_t i = 0; i < sizeof formats / sizeof formats[0]; i++) {
                struct variant v = plain(formats[i]);

                assert_int_equal(variant_mask_applies(&v), mask[i]);
                assert_int_equal(variant_effort_applies(&v), effort[i]);
                assert_int_equal(variant_progressive_applies(&v), progressive[i]);
                assert_int_equal(variant_lossless_applies(&v), lossless[i]);
                assert_int_equal(variant_chroma_applies(&v), chroma[i]);
                assert_int_equal(variant_keep_applies(&v), keep[i]);
                assert_int_equal(variant_max_bytes_applies(&v), max_bytes[i]);
                assert_int_equal(variant_animated_applies(&v), animated[i]);
        }
}

static void test_other_rules(void **state)
{
        struct variant v = plain(IMAGE_FORMAT_WEBP);

        (void)state;
        for (int fit = 0; fit < _VARIANT_FIT_MAX; fit++) {
                v.fit = fit;
                assert_int_equal(variant_size_applies(&v), fit != VARIANT_FIT_NONE);
                assert_int_equal(variant_gravity_applies(&v), fit == VARIANT_FIT_COVER);
        }
        v.fit = VARIANT_FIT_COVER;
        v.lossless = true; /* lossless WebP has no quality to search */
        assert_false(variant_max_bytes_applies(&v));
        v.lossless = false;
        assert_true(variant_max_bytes_applies(&v));
        assert_false(variant_max_bytes_strict_applies(&v));
        v.max_bytes = VARIANT_MAX_BYTES_MIN;
        assert_true(variant_max_bytes_strict_applies(&v));
}

/* variant_check() refuses a setting exactly where its rule says it does not apply. */
static void test_check_follows_rules(void **state)
{
        (void)state;
        for (size_t i = 0; i < sizeof formats / sizeof formats[0]; i++) {
                struct variant v;
                char *err = NULL;

                v = plain(formats[i]);
                v.mask = VARIANT_MASK_CIRCLE;
                assert_int_equal(variant_check(&v, &err) == 0, variant_mask_applies(&v));
                free(err), err = NULL;

                v = plain(formats[i]);
                v.progressive = true;
                assert_int_equal(variant_check(&v, &err) == 0, variant_progressive_applies(&v));
                free(err), err = NULL;

                v = plain(formats[i]);
                v.lossless = true;
                assert_int_equal(variant_check(&v, &err) == 0, variant_lossless_applies(&v));
                free(err), err = NULL;

                v = plain(formats[i]);
                v.chroma = VARIANT_CHROMA_444;
                assert_int_equal(variant_check(&v, &err) == 0, variant_chroma_applies(&v));
                free(err), err = NULL;

                v = plain(formats[i]);
                v.keep = VARIANT_KEEP_ICC;
                assert_int_equal(variant_check(&v, &err) == 0, variant_keep_applies(&v));
                free(err), err = NULL;

                v = plain(formats[i]);
                v.max_bytes = VARIANT_MAX_BYTES_MIN;
                assert_int_equal(variant_check(&v, &err) == 0, variant_max_bytes_applies(&v));
                free(err), err = NULL;

                v = plain(formats[i]);
                v.effort = 1;
                assert_int_equal(variant_check(&v, &err) == 0, variant_effort_applies(&v));
                free(err), err = NULL;
        }
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_format_rules),
                cmocka_unit_test(test_other_rules),
                cmocka_unit_test(test_check_follows_rules),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
