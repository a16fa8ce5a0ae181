/* SPDX-License-Identifier: MIT */
/*
 * test-similarity.c - the perceptual metric of the worker (similarity.c): identical images
 * score 0, the value agrees with the independent reference tests/tools/ssim-reference.py on a
 * known pair, a prepared reference scores as the one-off computation, the score grows with the
 * distortion, and images of different sizes or too small are refused.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>

#include <vips/vips.h>

#include "worker/similarity.h"

#include "render-fixture.h"

/*
 * The synthetic pair of ssim-reference.py (its pair()): the same formulas, the same LCG. A
 * w x h sRGB image; with `noise`, every sample gets the LCG's next value in [-12, 12].
 */
static VipsImage *reference_image(int w, int h, bool noise)
{
        uint8_t *px = malloc((size_t)w * h * 3);
        uint64_t state = 1;
        VipsImage *im, *tagged = NULL;

        assert_non_null(px);
        for (int y = 0; y < h; y++)
                for (int x = 0; x < w; x++) {
                        int c[3] = { (x * 2 + y) % 256, (x * y / 7) % 256, (x ^ y) & 255 };

                        for (int k = 0; k < 3; k++) {
                                state = (state * 1103515245 + 12345) % (1ull << 31);
                                int n = noise ? (int)((state >> 16) % 25) - 12 : 0;
                                int v = c[k] + n;

                                px[((size_t)y * w + x) * 3 + k] = (uint8_t)(v < 0     ? 0
                                                                            : v > 255 ? 255
                                                                                      : v);
                        }
                }
        im = vips_image_new_from_memory_copy(px, (size_t)w * h * 3, w, h, 3, VIPS_FORMAT_UCHAR);
        free(px);
        assert_non_null(im);
        VIPS_OK(vips_copy(im, &tagged, "interpretation", VIPS_INTERPRETATION_sRGB, NULL));
        g_object_unref(im);
        return tagged;
}

static void test_identical_is_zero(void **state)
{
        _cleanup_image_ VipsImage *a = renderfx_make_noise(300, 200, 7),
                                  *b = renderfx_make_noise(300, 200, 7);
        double d = -1, m = -1;

        assert_int_equal(similarity_dssim(a, b, &d), 0);
        assert_true(fabs(d) < 1e-6);
        assert_int_equal(similarity_msssim(a, a, &m), 0);
        assert_true(fabs(m - 1) < 1e-6);
}

/*
 * Expected: `python3 tests/tools/ssim-reference.py` printed
 * "msssim 0.997564957 dssim 0.002440987" for this pair (200 x 190: five scales, the odd rows
 * of 95 and 47 dropped). The reference sums a 2-D window in double; the C code filters in
 * float, hence the tolerance.
 */
static void test_reference_pair(void **state)
{
        _cleanup_image_ VipsImage *a = reference_image(200, 190, false),
                                  *b = reference_image(200, 190, true);
        double m = 0, d = 0;

        assert_int_equal(similarity_msssim(a, b, &m), 0);
        assert_int_equal(similarity_dssim(a, b, &d), 0);
        print_message("msssim %.9f dssim %.9f\n", m, d);
        assert_true(fabs(m - 0.997564957) < 5e-7);
        assert_true(fabs(d - 0.002440987) < 5e-7);
}

/* JPEG at falling qualities: each step down scores worse. */
static void test_monotone_in_distortion(void **state)
{
        _cleanup_image_ VipsImage *a = renderfx_make_gradient(320, 240, false), *noise = NULL,
                                  *mixed = NULL, *src = NULL;
        double last = -1;
        const int qualities[] = { 95, 80, 60, 40, 20, 5 };

        /* A gradient with some texture, so that every quality loses something. */
        noise = renderfx_make_noise(320, 240, 3);
        VIPS_OK(vips_linear1(noise, &mixed, 0.25, 0, NULL));
        {
                _cleanup_image_ VipsImage *sum = NULL;

                VIPS_OK(vips_add(a, mixed, &sum, NULL));
                VIPS_OK(vips_cast(sum, &src, VIPS_FORMAT_UCHAR, "shift", FALSE, NULL));
        }
        for (size_t i = 0; i < sizeof qualities / sizeof *qualities; i++) {
                char suffix[32];
                size_t len;
                double d;

                snprintf(suffix, sizeof suffix, ".jpg[Q=%d]", qualities[i]);
                _cleanup_gfree_ void *buf = renderfx_encode(src, suffix, &len);
                _cleanup_image_ VipsImage *back = renderfx_decode(buf, len);

                assert_int_equal(similarity_dssim(src, back, &d), 0);
                print_message("q%d: dssim %.6f\n", qualities[i], d);
                assert_true(d > last);
                last = d;
        }
}

/*
 * A prepared reference scores as the one-off computation does, to the last bit, whatever the
 * image is scored against and however many times (sizes with 5, 3 and 1 scales, odd sides).
 */
static void test_reference_reused(void **state)
{
        const int sizes[][2] = { { 200, 190 }, { 61, 97 }, { 21, 11 } };

        for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
                const int w = sizes[i][0], h = sizes[i][1];
                _cleanup_image_ VipsImage *a = reference_image(w, h, false),
                                          *b = reference_image(w, h, true),
                                          *c = renderfx_make_noise(w, h, 2);
                similarity_ref *r = NULL;
                double once, again, other, d;

                assert_int_equal(similarity_ref_new(a, &r), 0);
                assert_int_equal(similarity_msssim(a, b, &once), 0);
                assert_int_equal(similarity_msssim_ref(r, b, &again), 0);
                print_message("%dx%d: %.12f %.12f\n", w, h, once, again);
                assert_true(once == again);
                assert_int_equal(similarity_msssim(a, c, &once), 0);
                assert_int_equal(similarity_msssim_ref(r, c, &other), 0);
                assert_true(once == other);
                assert_int_equal(similarity_msssim_ref(r, b, &d), 0);
                assert_true(d == again);
                assert_int_equal(similarity_dssim_ref(r, a, &d), 0);
                assert_true(d == 0);
                /* Another size is refused. */
                {
                        _cleanup_image_ VipsImage *big = reference_image(w + 1, h, false);

                        assert_int_equal(similarity_msssim_ref(r, big, &d), -1);
                        vips_error_clear();
                }
                r = similarity_ref_free(r);
        }
}

static void test_refused(void **state)
{
        _cleanup_image_ VipsImage *a = renderfx_make_noise(64, 64, 1),
                                  *b = renderfx_make_noise(64, 60, 1),
                                  *tiny = renderfx_make_noise(10, 64, 1);
        double d = 42;

        assert_int_equal(similarity_dssim(a, b, &d), -1);
        assert_true(strstr(vips_error_buffer(), "differ in size") != NULL);
        vips_error_clear();
        assert_int_equal(similarity_dssim(tiny, tiny, &d), -1);
        assert_true(strstr(vips_error_buffer(), "smaller than") != NULL);
        vips_error_clear();
        assert_true(d == 42);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_identical_is_zero),
                cmocka_unit_test(test_reference_pair),
                cmocka_unit_test(test_reference_reused),
                cmocka_unit_test(test_monotone_in_distortion),
                cmocka_unit_test(test_refused),
        };
        int r = cmocka_run_group_tests(tests, renderfx_setup, NULL);

        render_shutdown();
        return r;
}
