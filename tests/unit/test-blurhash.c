/* SPDX-License-Identifier: MIT */
/*
 * test-blurhash.c - the BlurHash encoder against a decoder written here from the published
 * algorithm (Wolt's Algorithm.md): hash lengths and the component-count digit, the DC
 * component (the average colour, in linear light) of known images, their AC components
 * (which side is which colour after decoding), pixel layouts (stride, a fourth channel),
 * the example hash of the specification, and argument checks.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "worker/blurhash.h"
#include "shared/macro.h"

/* ---- a decoder, from the specification ------------------------------------------------ */

static double sign_pow(double x, double e)
{
        return copysign(pow(fabs(x), e), x);
}

/* Components of hash: *nx x *ny, colours[j * nx + i][3] in linear light. */
static void decode_components(const char *hash, unsigned *nx, unsigned *ny, double colours[][3])
{
        long size = blurhash_decode83(hash, 1), qmax, dc;
        double maximum;

        assert_true(size >= 0);
        *nx = (unsigned)(size % 9) + 1;
        *ny = (unsigned)(size / 9) + 1;
        assert_int_equal(strlen(hash), 4 + 2 * (*nx) * (*ny));
        qmax = blurhash_decode83(hash + 1, 1);
        assert_true(qmax >= 0);
        maximum = (qmax + 1) / 166.0;
        dc = blurhash_decode83(hash + 2, 4);
        assert_true(dc >= 0);
        colours[0][0] = blurhash_srgb_to_linear((uint8_t)(dc >> 16));
        colours[0][1] = blurhash_srgb_to_linear((uint8_t)(dc >> 8));
        colours[0][2] = blurhash_srgb_to_linear((uint8_t)dc);
        for (unsigned c = 1; c < (*nx) * (*ny); c++) {
                long v = blurhash_decode83(hash + 4 + 2 * c, 2);
                long q[3] = { v / (19 * 19), (v / 19) % 19, v % 19 };

                assert_true(v >= 0 && v < 19 * 19 * 19);
                for (int k = 0; k < 3; k++)
                        colours[c][k] = sign_pow((q[k] - 9) / 9.0, 2.0) * maximum;
        }
}

/* Decodes hash into a w x h sRGB image (3 bytes a pixel); caller frees. */
static uint8_t *decode(const char *hash, unsigned w, unsigned h)
{
        double colours[81][3];
        unsigned nx, ny;
        uint8_t *px = malloc((size_t)w * h * 3);

        assert_non_null(px);
        decode_components(hash, &nx, &ny, colours);
        for (unsigned y = 0; y < h; y++)
                for (unsigned x = 0; x < w; x++) {
                        double rgb[3] = { 0, 0, 0 };

                        for (unsigned j = 0; j < ny; j++)
                                for (unsigned i = 0; i < nx; i++) {
                                        double basis =
                                                cos(M_PI * x * i / w) * cos(M_PI * y * j / h);

                                        for (int k = 0; k < 3; k++)
                                                rgb[k] += colours[j * nx + i][k] * basis;
                                }
                        for (int k = 0; k < 3; k++)
                                px[((size_t)y * w + x) * 3 + k] = blurhash_linear_to_srgb(rgb[k]);
                }
        return px;
}

/* The DC component of hash as sRGB: the image's average colour. */
static void decode_dc(const char *hash, uint8_t rgb[3])
{
        long dc = blurhash_decode83(hash + 2, 4);

        assert_true(dc >= 0);
        rgb[0] = (uint8_t)(dc >> 16);
        rgb[1] = (uint8_t)(dc >> 8);
        rgb[2] = (uint8_t)dc;
}

static void assert_near(double got, double want, double tolerance)
{
        if (got < want - tolerance || got > want + tolerance)
                fail_msg("got %.2f, want %.2f +- %.2f", got, want, tolerance);
}

/* ---- images ------------------------------------------------------------------------------ */

/* w x h pixels of `channels` bytes, left half `left`, right half `right`. */
static uint8_t *halves(unsigned w, unsigned h, unsigned channels, const uint8_t left[3],
                       const uint8_t right[3])
{
        uint8_t *px = malloc((size_t)w * h * channels);

        assert_non_null(px);
        for (unsigned y = 0; y < h; y++)
                for (unsigned x = 0; x < w; x++) {
                        uint8_t *p = px + ((size_t)y * w + x) * channels;

                        memcpy(p, x < w / 2 ? left : right, 3);
                        if (channels == 4)
                                p[3] = 255;
                }
        return px;
}

/* ---- tests ------------------------------------------------------------------------------- */

static void test_lengths(void **state)
{
        static const uint8_t grey[3] = { 128, 128, 128 };
        _cleanup_free_ uint8_t *px = halves(16, 16, 3, grey, grey);
        char hash[BLURHASH_MAX];

        assert_int_equal(blurhash_length(4, 3), 28);
        assert_int_equal(blurhash_length(1, 1), 6);
        assert_int_equal(blurhash_length(9, 9), 166);
        assert_int_equal(BLURHASH_MAX, 167);

        assert_int_equal(blurhash_encode(px, 16, 16, 48, 3, 4, 3, hash), 28);
        assert_int_equal(strlen(hash), 28);
        assert_int_equal(hash[0], 'L'); /* (4 - 1) + (3 - 1) 9 = 21 */
        assert_int_equal(blurhash_encode(px, 16, 16, 48, 3, 3, 4, hash), 28);
        assert_int_equal(hash[0], 'T'); /* (3 - 1) + (4 - 1) 9 = 29 */
        assert_int_equal(blurhash_encode(px, 16, 16, 48, 3, 1, 1, hash), 6);
        assert_int_equal(hash[0], '0');
        assert_int_equal(hash[1], '0'); /* no AC components */
        assert_int_equal(blurhash_encode(px, 16, 16, 48, 3, 9, 9, hash), 166);
        assert_int_equal(strlen(hash), 166);
        assert_int_equal(hash[0], '|'); /* 8 + 8 9 = 80 */
}

/*
 * A solid colour: the DC is that colour. The AC components are small, not zero: the
 * algorithm samples cos(pi i x / w) at x = 0 .. w - 1, whose sum is 1 for odd i, so each
 * is at most 2 / w (or 2 / h) of the colour; decoded, the image is that colour give or take
 * what those add.
 */
static void test_solid(void **state)
{
        static const uint8_t col[3] = { 0x33, 0x66, 0xcc };
        _cleanup_free_ uint8_t *px = halves(200, 150, 3, col, col), *back = NULL;
        char hash[BLURHASH_MAX];
        uint8_t dc[3];

        assert_int_equal(blurhash_encode(px, 200, 150, 600, 3, 4, 3, hash), 28);
        decode_dc(hash, dc);
        assert_int_equal(dc[0], 0x33);
        assert_int_equal(dc[1], 0x66);
        assert_int_equal(dc[2], 0xcc);
        assert_true((blurhash_decode83(hash + 1, 1) + 1) / 166.0 <=
                    2.0 / 150 * blurhash_srgb_to_linear(0xcc) + 1 / 166.0);
        back = decode(hash, 20, 10);
        for (size_t i = 0; i < 20 * 10; i++) {
                assert_near(back[i * 3 + 0], 0x33, 6);
                assert_near(back[i * 3 + 1], 0x66, 6);
                assert_near(back[i * 3 + 2], 0xcc, 6);
        }
}

/*
 * Red and blue halves: the DC is their average in linear light (sRGB 188 for a half of
 * 255), not in sRGB (128); decoded, the left is red and the right blue.
 */
static void test_halves(void **state)
{
        static const uint8_t red[3] = { 255, 0, 0 }, blue[3] = { 0, 0, 255 };
        _cleanup_free_ uint8_t *px = halves(64, 32, 3, red, blue), *back = NULL;
        char hash[BLURHASH_MAX];
        uint8_t dc[3];
        uint8_t half = blurhash_linear_to_srgb(0.5);

        assert_int_equal(half, 188);
        assert_int_equal(blurhash_encode(px, 64, 32, 64 * 3, 3, 4, 3, hash), 28);
        decode_dc(hash, dc);
        assert_near(dc[0], half, 1);
        assert_near(dc[1], 0, 0);
        assert_near(dc[2], half, 1);

        back = decode(hash, 64, 32);
        /* Left: red above blue; right: the other way round; no green anywhere. */
        for (unsigned y = 4; y < 32; y += 8) {
                const uint8_t *l = back + (y * 64 + 8) * 3, *r = back + (y * 64 + 56) * 3;

                assert_true(l[0] > l[2] + 60);
                assert_true(r[2] > r[0] + 60);
                assert_true(l[0] > r[0] + 60);
                assert_true(r[2] > l[2] + 60);
                assert_true(l[1] < 20 && r[1] < 20);
        }
}

/* The average of the decoded image (in linear light) is the DC, for a gradient too. */
static void test_gradient_average(void **state)
{
        enum { W = 48, H = 36 };
        _cleanup_free_ uint8_t *px = malloc(W * H * 3), *back = NULL;
        double sum[3] = { 0, 0, 0 }, dsum[3] = { 0, 0, 0 };
        char hash[BLURHASH_MAX];
        uint8_t dc[3];

        assert_non_null(px);
        for (unsigned y = 0; y < H; y++)
                for (unsigned x = 0; x < W; x++) {
                        uint8_t *p = px + (y * W + x) * 3;

                        p[0] = (uint8_t)(255 * x / (W - 1));
                        p[1] = (uint8_t)(255 * y / (H - 1));
                        p[2] = 64;
                        for (int k = 0; k < 3; k++)
                                sum[k] += blurhash_srgb_to_linear(p[k]);
                }
        assert_int_equal(blurhash_encode(px, W, H, W * 3, 3, 4, 3, hash), 28);
        decode_dc(hash, dc);
        for (int k = 0; k < 3; k++)
                assert_near(dc[k], blurhash_linear_to_srgb(sum[k] / (W * H)), 1);

        back = decode(hash, W, H);
        for (size_t i = 0; i < W * H; i++)
                for (int k = 0; k < 3; k++)
                        dsum[k] += blurhash_srgb_to_linear(back[i * 3 + k]);
        for (int k = 0; k < 3; k++)
                assert_near(blurhash_linear_to_srgb(dsum[k] / (W * H)), dc[k], 3);
        /* The gradient survives: dark left, bright right; dark top, bright bottom. */
        assert_true(back[(H / 2 * W + 2) * 3 + 0] + 80 < back[(H / 2 * W + W - 3) * 3 + 0]);
        assert_true(back[(2 * W + W / 2) * 3 + 1] + 80 < back[((H - 3) * W + W / 2) * 3 + 1]);
}

/* Rows with padding and a fourth (ignored) channel give the same hash as packed RGB. */
static void test_layouts(void **state)
{
        static const uint8_t a[3] = { 10, 200, 30 }, b[3] = { 240, 20, 90 };
        _cleanup_free_ uint8_t *rgb = halves(30, 20, 3, a, b), *rgba = halves(30, 20, 4, a, b);
        _cleanup_free_ uint8_t *padded = calloc(20, 100);
        char h1[BLURHASH_MAX], h2[BLURHASH_MAX], h3[BLURHASH_MAX];

        assert_non_null(padded);
        for (unsigned y = 0; y < 20; y++) {
                memcpy(padded + y * 100, rgb + y * 90, 90);
                memset(padded + y * 100 + 90, 0xff, 10);
        }
        for (size_t i = 0; i < 30 * 20; i++)
                rgba[i * 4 + 3] = (uint8_t)i; /* alpha does not matter */
        assert_int_equal(blurhash_encode(rgb, 30, 20, 90, 3, 4, 3, h1), 28);
        assert_int_equal(blurhash_encode(rgba, 30, 20, 120, 4, 4, 3, h2), 28);
        assert_int_equal(blurhash_encode(padded, 30, 20, 100, 3, 4, 3, h3), 28);
        assert_string_equal(h1, h2);
        assert_string_equal(h1, h3);
}

/* The example of the specification decodes: 4 x 3 components, its DC, AC within range. */
static void test_specification_example(void **state)
{
        static const char example[] = "LlMF%n00%#MwS|WCWEM{R*bbWBbH";
        double colours[81][3];
        unsigned nx, ny;
        _cleanup_free_ uint8_t *px = NULL;

        decode_components(example, &nx, &ny, colours);
        assert_int_equal(nx, 4);
        assert_int_equal(ny, 3);
        assert_int_equal(blurhash_decode83("%n00", 4), 64L * 83 * 83 * 83 + 49L * 83 * 83);
        px = decode(example, 8, 6);
        assert_non_null(px);
        assert_int_equal(blurhash_decode83("0~", 2), 82);
        assert_int_equal(blurhash_decode83("0 ", 2), -1);
}

static void test_invalid(void **state)
{
        static const uint8_t c[3] = { 1, 2, 3 };
        _cleanup_free_ uint8_t *px = halves(4, 4, 3, c, c);
        char hash[BLURHASH_MAX] = "unchanged";

        assert_int_equal(blurhash_encode(px, 4, 4, 12, 3, 0, 3, hash), -EINVAL);
        assert_int_equal(blurhash_encode(px, 4, 4, 12, 3, 4, 10, hash), -EINVAL);
        assert_int_equal(blurhash_encode(px, 4, 4, 12, 2, 4, 3, hash), -EINVAL);
        assert_int_equal(blurhash_encode(px, 4, 4, 11, 3, 4, 3, hash), -EINVAL);
        assert_int_equal(blurhash_encode(px, 0, 4, 12, 3, 4, 3, hash), -EINVAL);
        assert_int_equal(blurhash_encode(NULL, 4, 4, 12, 3, 4, 3, hash), -EINVAL);
        assert_string_equal(hash, "unchanged");
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_lengths), cmocka_unit_test(test_solid),
                cmocka_unit_test(test_halves),  cmocka_unit_test(test_gradient_average),
                cmocka_unit_test(test_layouts), cmocka_unit_test(test_specification_example),
                cmocka_unit_test(test_invalid),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
