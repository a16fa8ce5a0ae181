/* SPDX-License-Identifier: MIT */
/*
 * test-autoquality.c - quality = "auto" (autoquality.c) and format = "best": the search policy
 * is bounded and lands on the lowest quality that meets the target on a monotone score; a
 * flat image ends at a low quality and a noisy one at a high one, every format scoring its
 * output as published; a whole image that misses what its sample met is corrected by its own
 * measured slope; max_bytes still wins when smaller; one encode when asked so; format
 * best picks a candidate and says which, and its time limit cuts a candidate's search short; JPEG
 * XL outputs verify, a damaged one does not.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <vips/vips.h>

#include "worker/autoquality.h"
#include "worker/similarity.h"

#include "render-fixture.h"

/* A score that falls as the quality rises: exp(-0.06 q), 0.0498 at 50. */
static double model(int q)
{
        return exp(-0.06 * q);
}

static void test_search_policy(void **state)
{
        const double targets[] = { 0.2, 0.05, 0.01, 0.004, 0.0026 };

        for (size_t t = 0; t < sizeof targets / sizeof *targets; t++) {
                /* The lowest quality whose score meets the target. */
                int want = 1, q;
                struct autoquality_search s;
                unsigned trials = 0;

                while (model(want) > targets[t])
                        want++;
                for (int guess = 20; guess <= 100; guess += 40) {
                        autoquality_start(&s, targets[t], 20, 100, 6);
                        trials = 0;
                        while ((q = autoquality_next(&s, guess)) > 0) {
                                assert_in_range(q, 20, 100);
                                autoquality_record(&s, q, model(q));
                                trials++;
                        }
                        q = autoquality_result(&s);
                        print_message("target %g guess %d: q %d (lowest meeting %d), %u trials\n",
                                      targets[t], guess, q, want, trials);
                        assert_true(trials <= 6);
                        if (want <= 20) {
                                assert_int_equal(q, 20); /* the floor meets it: stop there */
                        } else {
                                assert_true(q >= want); /* never a quality that misses */
                                assert_true(q - want <= AUTOQUALITY_RESOLUTION);
                        }
                }
        }

        /* Nothing meets it: no result, and the search stops at the top. */
        {
                struct autoquality_search s;
                int q, last = 0;

                autoquality_start(&s, 1e-9, 20, 100, 16);
                while ((q = autoquality_next(&s, 70)) > 0) {
                        assert_true(q > last);
                        last = q;
                        autoquality_record(&s, q, model(q));
                }
                assert_int_equal(last, 100);
                assert_int_equal(autoquality_result(&s), -1);
        }
        /* A trial that meets the target by a hair ends the search; one well below does not. */
        {
                struct autoquality_search s;

                autoquality_start(&s, 0.01, 20, 100, 6);
                assert_int_equal(autoquality_next(&s, 64), 64);
                autoquality_record(&s, 64, 0.0097);
                assert_int_equal(autoquality_next(&s, 64), 0);
                assert_int_equal(autoquality_result(&s), 64);
                autoquality_start(&s, 0.01, 20, 100, 6);
                autoquality_record(&s, 64, 0.008);
                assert_in_range(autoquality_next(&s, 64), 20, 61);
        }
        /* A budget of 1: the guess only. */
        {
                struct autoquality_search s;

                autoquality_start(&s, 0.01, 20, 100, 1);
                assert_int_equal(autoquality_next(&s, 64), 64);
                autoquality_record(&s, 64, model(64));
                assert_int_equal(autoquality_next(&s, 64), 0);
        }
}

/* A 640 x 480 image: two flat colours, or a gradient with strong noise. */
static void *make_source(bool noisy, size_t *ret_len)
{
        static const double blue[3] = { 40, 60, 200 }, sand[3] = { 220, 200, 150 };
        _cleanup_image_ VipsImage *g = renderfx_make_gradient(640, 480, false), *n = NULL,
                                  *mix = NULL, *u8 = NULL, *flat = NULL;

        if (!noisy) {
                flat = renderfx_make_halves(640, 480, blue, sand);
                return renderfx_encode(flat, ".png", ret_len);
        }
        n = renderfx_make_noise(640, 480, 5);
        VIPS_OK(vips_add(g, n, &mix, NULL));
        VIPS_OK(vips_linear1(mix, &u8, 0.5, 0, "uchar", TRUE, NULL));
        return renderfx_encode(u8, ".png", ret_len);
}

static struct variant auto_variant(enum image_format f, double target)
{
        struct variant v = renderfx_make_variant(0, 0, VARIANT_FIT_NONE, f);

        v.quality_auto = true;
        v.target = target;
        return v;
}

static void test_flat_low_noisy_high(void **state)
{
        const enum image_format formats[] = { IMAGE_FORMAT_JPEG, IMAGE_FORMAT_WEBP,
                                              IMAGE_FORMAT_AVIF, IMAGE_FORMAT_JXL };
        size_t flat_len, noisy_len;
        _cleanup_gfree_ void *flat = make_source(false, &flat_len);
        _cleanup_gfree_ void *noisy = make_source(true, &noisy_len);

        for (size_t i = 0; i < sizeof formats / sizeof *formats; i++) {
                struct variant v = auto_variant(formats[i], 0.005);
                _cleanup_base_ render_base *bf = renderfx_base_ok(flat, flat_len, &v, 1);
                _cleanup_base_ render_base *bn = renderfx_base_ok(noisy, noisy_len, &v, 1);
                struct render_output of = {}, on = {};
                struct render_error err = {};

                assert_int_equal(render_variant_full(bf, &v, NULL, &of, &err), 0);
                assert_int_equal(render_variant_full(bn, &v, NULL, &on, &err), 0);
                print_message("%s: flat q %d DSSIM %.5f (%u encodes), noisy q %d DSSIM %.5f "
                              "(%u encodes)\n",
                              image_format_name(formats[i]), of.quality, of.score, of.encodes,
                              on.quality, on.score, on.encodes);
                assert_int_equal(of.format, formats[i]);
                assert_true(of.quality <= 30);
                assert_true(on.quality >= 60 && on.quality >= of.quality + 30);
                /* Their own sample (under 1.2 megapixels): no correction, auto_encodes at most. */
                assert_true(of.encodes <= v.auto_encodes && on.encodes <= v.auto_encodes);
                /* The score is of the output as published, and meets the target. */
                assert_true(of.score >= 0 && of.score <= v.target);
                assert_true(on.score >= 0 && on.score <= v.target);
                {
                        _cleanup_image_ VipsImage *back = renderfx_decode(on.buf, on.size),
                                                  *src = renderfx_decode(noisy, noisy_len);
                        double d;

                        assert_int_equal(similarity_dssim(src, back, &d), 0);
                        assert_true(fabs(d - on.score) < 1e-6);
                }
                assert_int_equal(render_verify(of.buf, of.size, formats[i], 640, 480, &err), 0);
                g_free(of.buf);
                g_free(on.buf);
        }
}

/* A whole image whose score falls far slower than its sample's did: ln(DSSIM) 0.0098 a step
 * (as a JPEG XL photograph's between qualities 20 and 55), 0.016 at 20. */
static double flat_image(int q)
{
        return 0.016 * exp(-0.0098 * (q - 20));
}

/*
 * The correction of a whole image that missed the target its sample met at quality 20 (the
 * search's slope, 0.023, steeper than the image's): the first step goes by the sample's slope
 * and misses, the second by the slope through the image's own two encodes, and meets it
 * within the two corrections the encoder allows (by the sample's slope, 10 steps at a time,
 * it would still miss at 40). A step never goes past 100, nor down.
 */
static void test_correction_measured_slope(void **state)
{
        const double target = 0.0125;
        struct autoquality_fix f;
        double best = flat_image(20);
        int q = 20;

        autoquality_fix_start(&f, target, AUTOQUALITY_SLOPE, q, best);
        for (int c = 0; c < 2 && best > target; c++) {
                int at = autoquality_fix_next(&f, best);

                assert_true(at > f.last_q);
                assert_true(at <= 100);
                autoquality_fix_record(&f, at, flat_image(at));
                print_message("correction %d: q %d DSSIM %.5f\n", c + 1, at, flat_image(at));
                if (flat_image(at) < best) {
                        best = flat_image(at);
                        q = at;
                }
        }
        assert_true(best <= target);
        assert_in_range(q, 41, 70);

        /* Near the top: no step past 100. */
        autoquality_fix_start(&f, 0.001, 0.01, 95, 0.01);
        assert_int_equal(autoquality_fix_next(&f, 0.01), 100);
        /* A score that did not fall teaches no slope: the next step is still the sample's. */
        autoquality_fix_start(&f, target, AUTOQUALITY_SLOPE, 20, 0.016);
        autoquality_fix_record(&f, 30, 0.017);
        assert_int_equal(autoquality_fix_next(&f, 0.016), 30 + (int)AUTOQUALITY_FIX_MAX);
        /* Nor does one that barely moved over two qualities (the score's noise: a WebP output
         * at 87 and 89, 0.00519 and 0.00517, met 0.005 at 91 by the sample's slope, 0.076;
         * by the noise's it would have gone to 100 at three times the bytes)... */
        autoquality_fix_start(&f, 0.005, 0.076, 87, 0.00519);
        autoquality_fix_record(&f, 89, 0.00517);
        assert_int_equal(autoquality_fix_next(&f, 0.00517), 91);
        /* ...or over ten (a plateau says nothing of the fall beyond it: the sample's slope
         * and step stay, not a jump to 100)... */
        autoquality_fix_start(&f, 0.005, 0.076, 80, 0.00525);
        autoquality_fix_record(&f, 90, 0.00523);
        assert_int_equal(autoquality_fix_next(&f, 0.00523), 92);
        /* ...while a plausible slope over two qualities is the image's (a JPEG XL output at 63
         * and 65, 0.01099 and 0.01048 against 0.01: on to 72, not 66 by the sample's 0.18). */
        autoquality_fix_start(&f, 0.01, 0.184, 63, 0.01099);
        autoquality_fix_record(&f, 65, 0.01048);
        assert_in_range(autoquality_fix_next(&f, 0.01048), 70, 75);
}

/*
 * An image over 1.2 megapixels is searched on a sample of tiles: the published output still
 * meets the target (corrected on the whole image when the sample misled), in auto_encodes
 * and one more at most.
 */
static void test_sampled(void **state)
{
        _cleanup_image_ VipsImage *g = renderfx_make_gradient(1600, 1000, false), *n = NULL,
                                  *n2 = NULL, *mix = NULL, *u8 = NULL;
        _cleanup_gfree_ void *png = NULL;
        size_t len;
        const enum image_format formats[] = { IMAGE_FORMAT_JPEG, IMAGE_FORMAT_WEBP };

        /* Noise on the left half only: tiles differ, as the parts of a photograph do. */
        n = renderfx_make_noise(800, 1000, 9);
        VIPS_OK(vips_embed(n, &n2, 0, 0, 1600, 1000, NULL));
        VIPS_OK(vips_linear1(n2, &mix, 0.15, 0, NULL));
        {
                _cleanup_image_ VipsImage *sum = NULL;

                VIPS_OK(vips_add(g, mix, &sum, NULL));
                VIPS_OK(vips_cast(sum, &u8, VIPS_FORMAT_UCHAR, NULL));
        }
        png = renderfx_encode(u8, ".png", &len);
        for (size_t i = 0; i < sizeof formats / sizeof *formats; i++) {
                struct variant v = auto_variant(formats[i], 0.005);
                _cleanup_base_ render_base *b = renderfx_base_ok(png, len, &v, 1);
                struct render_output o = {};
                struct render_error err = {};

                assert_int_equal(render_variant_full(b, &v, NULL, &o, &err), 0);
                print_message("%s 1600x1000: q %d DSSIM %.5f, %u encodes\n",
                              image_format_name(formats[i]), o.quality, o.score, o.encodes);
                assert_true(o.score >= 0 && o.score <= v.target);
                assert_true(o.encodes >= 2 && o.encodes <= v.auto_encodes + 1);
                assert_in_range(o.quality, VARIANT_AUTO_QUALITY_MIN, 100);
                g_free(o.buf);
        }
}

/*
 * best_time_limit is checked before every encode of a candidate's search, not only between
 * candidates: reached before the first trial (a limit of 1 us, spent on cutting the sample of
 * a 1600 x 1000 image), the first candidate is encoded once at its first guess, with no trial
 * and no correction, and scored as published; no other candidate is started.
 */
static void test_best_time_limit_in_search(void **state)
{
        _cleanup_image_ VipsImage *g = renderfx_make_gradient(1600, 1000, false), *n = NULL,
                                  *mix = NULL, *u8 = NULL, *src = NULL, *back = NULL;
        _cleanup_gfree_ void *png = NULL;
        size_t len;
        struct variant v = auto_variant(VARIANT_FORMAT_BEST, 0.005);
        _cleanup_base_ render_base *b = NULL;
        struct render_output o = {};
        struct render_error err = {};
        double d;

        n = renderfx_make_noise(1600, 1000, 4);
        VIPS_OK(vips_linear1(n, &mix, 0.1, 0, NULL));
        {
                _cleanup_image_ VipsImage *sum = NULL;

                VIPS_OK(vips_add(g, mix, &sum, NULL));
                VIPS_OK(vips_cast(sum, &u8, VIPS_FORMAT_UCHAR, NULL));
        }
        png = renderfx_encode(u8, ".png", &len);
        v.n_candidates = 3;
        v.candidates[0] = IMAGE_FORMAT_JPEG;
        v.candidates[1] = IMAGE_FORMAT_WEBP;
        v.candidates[2] = IMAGE_FORMAT_JXL;
        v.best_time_limit_usec = 1;
        b = renderfx_base_ok(png, len, &v, 1);
        assert_int_equal(render_variant_full(b, &v, NULL, &o, &err), 0);
        print_message("best, 1 us: %s q %d DSSIM %.5f, %u encodes, \"%s\"\n",
                      image_format_name(o.format), o.quality, o.score, o.encodes, o.warning);
        assert_int_equal(o.format, IMAGE_FORMAT_JPEG);
        assert_int_equal(o.encodes, 1);
        assert_int_equal(o.quality, autoquality_guess(IMAGE_FORMAT_JPEG, 0.005));
        assert_non_null(strstr(o.warning, "best_time_limit"));
        /* The score reported is the published output's, met or not. */
        src = renderfx_decode(png, len);
        back = renderfx_decode(o.buf, o.size);
        assert_int_equal(similarity_dssim(src, back, &d), 0);
        assert_true(fabs(d - o.score) < 1e-6);
        g_free(o.buf);
}

/* max_bytes below what auto finds: the smaller wins; auto_encodes 1: the guess, no search. */
static void test_max_bytes_and_one_encode(void **state)
{
        size_t len, first_len;
        _cleanup_gfree_ void *noisy = make_source(true, &len);
        struct variant v = auto_variant(IMAGE_FORMAT_JPEG, 0.005);
        _cleanup_base_ render_base *b = renderfx_base_ok(noisy, len, &v, 1);
        struct render_output o = {};
        struct render_error err = {};

        assert_int_equal(render_variant_full(b, &v, NULL, &o, &err), 0);
        first_len = o.size;
        g_free(o.buf);

        v.max_bytes = first_len / 2;
        assert_int_equal(render_variant_full(b, &v, NULL, &o, &err), 0);
        assert_true(o.size <= v.max_bytes || o.quality == VARIANT_MAX_BYTES_QUALITY_MIN);
        assert_true(o.size < first_len);
        assert_true(o.score >= 0); /* reported, whether it meets the target or not */
        g_free(o.buf);

        v.max_bytes = 0;
        v.auto_encodes = 1;
        assert_int_equal(render_variant_full(b, &v, NULL, &o, &err), 0);
        assert_int_equal(o.encodes, 1);
        assert_int_equal(o.quality, autoquality_guess(IMAGE_FORMAT_JPEG, 0.005));
        assert_true(o.score >= 0);
        g_free(o.buf);
}

static void test_best(void **state)
{
        size_t len;
        _cleanup_gfree_ void *flat = make_source(false, &len);
        struct variant v = auto_variant(VARIANT_FORMAT_BEST, 0.005);
        _cleanup_base_ render_base *b = NULL;
        struct render_output o = {};
        struct render_error err = {};

        v.n_candidates = 3;
        v.candidates[0] = IMAGE_FORMAT_JPEG;
        v.candidates[1] = IMAGE_FORMAT_WEBP;
        v.candidates[2] = IMAGE_FORMAT_JXL;
        v.best_time_limit_usec = VARIANT_BEST_TIME_LIMIT_DEFAULT_USEC;
        b = renderfx_base_ok(flat, len, &v, 1);
        assert_int_equal(render_variant_full(b, &v, NULL, &o, &err), 0);
        print_message("best: %s, %zu bytes, q %d, DSSIM %.5f, %u encodes\n",
                      image_format_name(o.format), o.size, o.quality, o.score, o.encodes);
        assert_true(o.format == IMAGE_FORMAT_JPEG || o.format == IMAGE_FORMAT_WEBP ||
                    o.format == IMAGE_FORMAT_JXL);
        assert_true(o.score <= v.target);
        assert_int_equal(render_verify(o.buf, o.size, o.format, 640, 480, &err), 0);
        g_free(o.buf);

        /* The time limit: reached at once, only the first candidate is tried. */
        v.best_time_limit_usec = 1;
        assert_int_equal(render_variant_full(b, &v, NULL, &o, &err), 0);
        assert_int_equal(o.format, IMAGE_FORMAT_JPEG);
        assert_non_null(strstr(o.warning, "1 of 3 candidates"));
        g_free(o.buf);
}

static void test_jxl_verified(void **state)
{
        size_t len;
        _cleanup_gfree_ void *src = make_source(true, &len);
        struct variant v = renderfx_make_variant(200, 150, VARIANT_FIT_COVER, IMAGE_FORMAT_JXL);
        _cleanup_base_ render_base *b = renderfx_base_ok(src, len, &v, 1);
        struct render_output o = {};
        struct render_error err = {};

        v.quality = 70;
        v.effort = 3;
        assert_int_equal(render_variant_full(b, &v, NULL, &o, &err), 0);
        assert_int_equal(o.format, IMAGE_FORMAT_JXL);
        assert_int_equal(image_format_sniff(o.buf, o.size), IMAGE_FORMAT_JXL);
        assert_int_equal(render_verify(o.buf, o.size, IMAGE_FORMAT_JXL, 200, 150, &err), 0);
        /* Wrong size, and a damaged body, fail. */
        assert_int_equal(render_verify(o.buf, o.size, IMAGE_FORMAT_JXL, 201, 150, &err), -EBADMSG);
        assert_int_equal(render_verify(o.buf, o.size / 2, IMAGE_FORMAT_JXL, 200, 150, &err),
                         -EBADMSG);
        print_message("truncated: %s\n", err.message);
        /* As a source it is refused: JPEG XL is on no loader allowlist. */
        {
                render_base *jb = NULL;
                struct render_limits limits = {};

                assert_true(render_base_new(o.buf, o.size, &v, 1, &limits, &jb, &err) < 0);
                assert_null(jb);
                assert_non_null(strstr(err.message, "not a supported image"));
        }
        g_free(o.buf);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_search_policy),
                cmocka_unit_test(test_flat_low_noisy_high),
                cmocka_unit_test(test_correction_measured_slope),
                cmocka_unit_test(test_sampled),
                cmocka_unit_test(test_max_bytes_and_one_encode),
                cmocka_unit_test(test_best),
                cmocka_unit_test(test_best_time_limit_in_search),
                cmocka_unit_test(test_jxl_verified),
        };
        int r = cmocka_run_group_tests(tests, renderfx_setup, NULL);

        render_shutdown();
        return r;
}
