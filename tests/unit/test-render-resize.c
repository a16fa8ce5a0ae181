/* SPDX-License-Identifier: MIT */
/*
 * test-render-resize.c - the worker's resizing (resize.c, through render.h) against real images
 * made here with libvips: every fit, the circle mask (also with alpha and into JPEG), and gravity,
 * smart included.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <vips/vips.h>

#include "shared/hash.h"
#include "shared/macro.h"
#include "worker/render.h"
#include "shared/variant.h"
#include "shared/wire.h"

#ifndef IMGD_BUILD_DIR
#error "IMGD_BUILD_DIR must name the build directory holding imgd-worker"
#endif
#include "render-fixture.h"

static void test_fits_large_source(void **state)
{
        _cleanup_image_ VipsImage *src = renderfx_make_gradient(400, 300, false);
        _cleanup_gfree_ void *jpg = NULL;
        size_t len;
        static const struct {
                unsigned w, h;
                enum variant_fit fit;
                unsigned want_w, want_h;
        } cases[] = {
                { 100, 100, VARIANT_FIT_COVER, 100, 100 },
                { 37, 91, VARIANT_FIT_COVER, 37, 91 },
                { 100, 100, VARIANT_FIT_CONTAIN, 100, 75 },
                { 100, 100, VARIANT_FIT_INSIDE, 100, 75 },
                { 120, 40, VARIANT_FIT_FILL, 120, 40 },
                { 0, 0, VARIANT_FIT_NONE, 400, 300 },
        };
        struct variant vs[ELEMENTSOF(cases)];
        _cleanup_base_ render_base *b = NULL;

        jpg = renderfx_encode(src, ".jpg[Q=95]", &len);
        for (size_t i = 0; i < ELEMENTSOF(cases); i++)
                vs[i] = renderfx_make_variant(cases[i].w, cases[i].h, cases[i].fit,
                                              IMAGE_FORMAT_PNG);
        b = renderfx_base_ok(jpg, len, vs, ELEMENTSOF(vs));
        assert_int_equal(render_base_info(b)->format, IMAGE_FORMAT_JPEG);
        assert_int_equal(render_base_info(b)->width, 400);
        assert_int_equal(render_base_info(b)->height, 300);

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_image_ VipsImage *out =
                        renderfx_render_check(b, &vs[i], cases[i].want_w, cases[i].want_h);

                /* Output is 8-bit sRGB without alpha, as the source. */
                assert_int_equal(out->Bands, 3);
                assert_int_equal(out->BandFmt, VIPS_FORMAT_UCHAR);
        }

        /* Cover crops the centre: the middle of a 100x100 cover is the middle of the source. */
        {
                _cleanup_image_ VipsImage *out = renderfx_render_check(b, &vs[0], 100, 100);

                renderfx_assert_near(renderfx_pixel(out, 50, 50, 0), 255.0 * 200 / 400, 6);
                renderfx_assert_near(renderfx_pixel(out, 50, 50, 1), 255.0 * 150 / 300, 6);
                /* The crop keeps the full height, so the left edge is x = 50 of the source. */
                renderfx_assert_near(renderfx_pixel(out, 0, 50, 0), 255.0 * 50 / 400, 8);
                renderfx_assert_near(renderfx_pixel(out, 50, 0, 1), 0, 6);
        }
}

static void test_fits_small_source(void **state)
{
        _cleanup_image_ VipsImage *src = renderfx_make_gradient(50, 40, false);
        _cleanup_gfree_ void *png = NULL;
        size_t len;
        static const struct {
                unsigned w, h;
                enum variant_fit fit;
                unsigned want_w, want_h;
        } cases[] = {
                { 200, 100, VARIANT_FIT_COVER, 200, 100 },   /* enlarged to fill */
                { 200, 200, VARIANT_FIT_CONTAIN, 200, 160 }, /* enlarged to fit */
                { 200, 200, VARIANT_FIT_INSIDE, 50, 40 },    /* never enlarged */
                { 30, 20, VARIANT_FIT_INSIDE, 25, 20 },      /* but still reduced */
                { 10, 90, VARIANT_FIT_FILL, 10, 90 },        { 0, 0, VARIANT_FIT_NONE, 50, 40 },
        };
        struct variant vs[ELEMENTSOF(cases)];
        _cleanup_base_ render_base *b = NULL;

        png = renderfx_encode(src, ".png", &len);
        for (size_t i = 0; i < ELEMENTSOF(cases); i++)
                vs[i] = renderfx_make_variant(cases[i].w, cases[i].h, cases[i].fit,
                                              IMAGE_FORMAT_WEBP);
        b = renderfx_base_ok(png, len, vs, ELEMENTSOF(vs));
        assert_int_equal(render_base_info(b)->format, IMAGE_FORMAT_PNG);

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_image_ VipsImage *out =
                        renderfx_render_check(b, &vs[i], cases[i].want_w, cases[i].want_h);

                assert_int_equal(out->Bands, 3);
        }
}

static void check_circle(VipsImage *out)
{
        int w = out->Xsize, h = out->Ysize;

        assert_int_equal(out->Bands, 4);
        assert_int_equal(out->BandFmt, VIPS_FORMAT_UCHAR);
        assert_int_equal((int)renderfx_pixel(out, 0, 0, 3), 0);
        assert_int_equal((int)renderfx_pixel(out, w - 1, 0, 3), 0);
        assert_int_equal((int)renderfx_pixel(out, 0, h - 1, 3), 0);
        assert_int_equal((int)renderfx_pixel(out, w - 1, h - 1, 3), 0);
        assert_int_equal((int)renderfx_pixel(out, w / 2, h / 2, 3), 255);
}

static void test_circle_mask(void **state)
{
        _cleanup_image_ VipsImage *src = renderfx_make_gradient(200, 100, false);
        _cleanup_gfree_ void *png = NULL;
        size_t len;
        struct variant vs[3] = {
                renderfx_make_variant(64, 64, VARIANT_FIT_COVER, IMAGE_FORMAT_PNG),
                renderfx_make_variant(64, 64, VARIANT_FIT_COVER, IMAGE_FORMAT_WEBP),
                renderfx_make_variant(80, 40, VARIANT_FIT_FILL, IMAGE_FORMAT_PNG),
        };
        _cleanup_base_ render_base *b = NULL;

        for (size_t i = 0; i < ELEMENTSOF(vs); i++)
                vs[i].mask = VARIANT_MASK_CIRCLE;
        png = renderfx_encode(src, ".png", &len);
        b = renderfx_base_ok(png, len, vs, ELEMENTSOF(vs));

        {
                _cleanup_image_ VipsImage *out = renderfx_render_check(b, &vs[0], 64, 64);

                check_circle(out);
                /* Just inside the rim (distance 30.5 of radius 32) and outside it. */
                assert_int_equal((int)renderfx_pixel(out, 32, 2, 3), 255);
                assert_int_equal((int)renderfx_pixel(out, 6, 6, 3), 0);
                /* Colour is untouched where opaque. */
                renderfx_assert_near(renderfx_pixel(out, 32, 32, 2), 128, 3);
        }
        {
                /* WebP keeps alpha losslessly by default. */
                _cleanup_image_ VipsImage *out = renderfx_render_check(b, &vs[1], 64, 64);

                check_circle(out);
        }
        {
                /* Not square: the circle of radius 20 is inscribed in the 80x40 box. */
                _cleanup_image_ VipsImage *out = renderfx_render_check(b, &vs[2], 80, 40);

                check_circle(out);
                assert_int_equal((int)renderfx_pixel(out, 40, 1, 3), 255);
                assert_int_equal((int)renderfx_pixel(out, 5, 20, 3), 0);
                assert_int_equal((int)renderfx_pixel(out, 75, 20, 3), 0);
                /* The rim is anti-aliased: a pixel straddling it is partly transparent. */
                {
                        double edge = renderfx_pixel(out, 20, 20, 3); /* distance 19.5 + 0.5 */

                        assert_true(edge > 0 && edge <= 255);
                }
        }
}

static void test_circle_mask_with_alpha_and_jpeg(void **state)
{
        _cleanup_image_ VipsImage *src = renderfx_make_gradient(100, 100, false), *half = NULL,
                                  *rgba = NULL;
        _cleanup_gfree_ void *png = NULL;
        size_t len;
        struct variant vs[2] = {
                renderfx_make_variant(50, 50, VARIANT_FIT_COVER, IMAGE_FORMAT_PNG),
                renderfx_make_variant(50, 50, VARIANT_FIT_COVER, IMAGE_FORMAT_JPEG),
        };
        _cleanup_base_ render_base *b = NULL;

        /* A source with alpha 128 everywhere: the mask multiplies into it. */
        VIPS_OK(vips_bandjoin_const1(src, &half, 128.0, NULL));
        VIPS_OK(vips_copy(half, &rgba, "interpretation", VIPS_INTERPRETATION_sRGB, NULL));
        png = renderfx_encode(rgba, ".png", &len);
        vs[0].mask = vs[1].mask = VARIANT_MASK_CIRCLE;
        vs[1].background[0] = 0;
        vs[1].background[1] = 0;
        vs[1].background[2] = 255;
        b = renderfx_base_ok(png, len, vs, ELEMENTSOF(vs));

        {
                _cleanup_image_ VipsImage *out = renderfx_render_check(b, &vs[0], 50, 50);

                assert_int_equal(out->Bands, 4);
                assert_int_equal((int)renderfx_pixel(out, 0, 0, 3), 0);
                renderfx_assert_near(renderfx_pixel(out, 25, 25, 3), 128, 1);
        }
        {
                /* JPEG has no alpha: the masked corners are flattened onto blue. */
                _cleanup_image_ VipsImage *out = renderfx_render_check(b, &vs[1], 50, 50);

                assert_int_equal(out->Bands, 3);
                renderfx_assert_near(renderfx_pixel(out, 0, 0, 0), 0, 12);
                renderfx_assert_near(renderfx_pixel(out, 0, 0, 1), 0, 12);
                renderfx_assert_near(renderfx_pixel(out, 0, 0, 2), 255, 12);
                /* The centre is half source (128, 128, 128), half blue. */
                renderfx_assert_near(renderfx_pixel(out, 25, 25, 0), 64, 12);
                renderfx_assert_near(renderfx_pixel(out, 25, 25, 2), 191, 12);
        }
}

/* Pastes `patch` onto `in` at (x, y); a new image. */
static VipsImage *paste(VipsImage *in, VipsImage *patch, int x, int y)
{
        VipsImage *out = NULL;

        VIPS_OK(vips_insert(in, patch, &out, x, y, NULL));
        return out;
}

static void test_gravity(void **state)
{
        /* Wide: red left, blue right. Tall: green top, blue bottom. */
        _cleanup_image_ VipsImage *wide = renderfx_make_halves(300, 100, renderfx_RED,
                                                               renderfx_BLUE),
                                  *tall = NULL;
        _cleanup_gfree_ void *wide_png = NULL, *tall_png = NULL;
        _cleanup_base_ render_base *bw = NULL, *bt = NULL;
        size_t wl, tl;
        static const struct {
                enum variant_gravity g;
                bool wide;      /* which source */
                double want[3]; /* the colour of the whole 50x50 output */
        } cases[] = {
                { VARIANT_GRAVITY_WEST, true, { 255, 0, 0 } },
                { VARIANT_GRAVITY_EAST, true, { 0, 0, 255 } },
                { VARIANT_GRAVITY_NORTH_WEST, true, { 255, 0, 0 } },
                { VARIANT_GRAVITY_SOUTH_EAST, true, { 0, 0, 255 } },
                { VARIANT_GRAVITY_NORTH, false, { 0, 255, 0 } },
                { VARIANT_GRAVITY_SOUTH, false, { 0, 0, 255 } },
                { VARIANT_GRAVITY_NORTH_EAST, false, { 0, 255, 0 } },
                { VARIANT_GRAVITY_SOUTH_WEST, false, { 0, 0, 255 } },
        };

        {
                _cleanup_image_ VipsImage *top = renderfx_make_solid(100, 150, renderfx_GREEN),
                                          *bottom = renderfx_make_solid(100, 150, renderfx_BLUE);

                VIPS_OK(vips_join(top, bottom, &tall, VIPS_DIRECTION_VERTICAL, NULL));
        }
        wide_png = renderfx_encode(wide, ".png", &wl);
        tall_png = renderfx_encode(tall, ".png", &tl);
        bw = renderfx_base_ok(wide_png, wl, NULL, 0);
        bt = renderfx_base_ok(tall_png, tl, NULL, 0);

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                struct variant v =
                        renderfx_make_variant(50, 50, VARIANT_FIT_COVER, IMAGE_FORMAT_PNG);
                _cleanup_image_ VipsImage *out = NULL;

                v.gravity = cases[i].g;
                out = renderfx_render_check(cases[i].wide ? bw : bt, &v, 50, 50);
                for (int k = 0; k < 3; k++) {
                        renderfx_assert_near(renderfx_pixel(out, 0, 0, k), cases[i].want[k], 2);
                        renderfx_assert_near(renderfx_pixel(out, 49, 49, k), cases[i].want[k], 2);
                        renderfx_assert_near(renderfx_pixel(out, 25, 25, k), cases[i].want[k], 2);
                }
        }

        /* Centre (the default) keeps the middle: both colours. */
        {
                struct variant v =
                        renderfx_make_variant(50, 50, VARIANT_FIT_COVER, IMAGE_FORMAT_PNG);
                _cleanup_image_ VipsImage *out = renderfx_render_check(bw, &v, 50, 50);

                renderfx_assert_near(renderfx_pixel(out, 5, 25, 0), 255, 2);
                renderfx_assert_near(renderfx_pixel(out, 45, 25, 2), 255, 2);
        }
}

static void test_gravity_smart(void **state)
{
        /* Flat grey, and at the right a small saturated, busy patch: both smart crops go there. */
        static const double GREY[3] = { 128, 128, 128 };
        _cleanup_image_ VipsImage *grey = renderfx_make_solid(400, 100, GREY),
                                  *noise = renderfx_make_noise(60, 60, 7), *src = NULL;
        _cleanup_gfree_ void *png = NULL;
        _cleanup_base_ render_base *b = NULL;
        size_t len;
        static const enum variant_gravity gs[] = { VARIANT_GRAVITY_ATTENTION,
                                                   VARIANT_GRAVITY_ENTROPY };

        src = paste(grey, noise, 320, 20);
        png = renderfx_encode(src, ".png", &len);
        b = renderfx_base_ok(png, len, NULL, 0);
        for (size_t i = 0; i < ELEMENTSOF(gs); i++) {
                struct variant v =
                        renderfx_make_variant(100, 100, VARIANT_FIT_COVER, IMAGE_FORMAT_PNG);
                _cleanup_image_ VipsImage *out = NULL;
                double sd = 0;

                v.gravity = gs[i];
                out = renderfx_render_check(b, &v, 100, 100);
                /* The busy patch is in it: far from flat grey. */
                VIPS_OK(vips_deviate(out, &sd, NULL));
                if (sd < 20)
                        fail_msg("%s crop missed the patch (deviation %.1f)",
                                 variant_gravity_name(gs[i]), sd);
        }
        /* Centre does not: it is all grey. */
        {
                struct variant v =
                        renderfx_make_variant(100, 100, VARIANT_FIT_COVER, IMAGE_FORMAT_PNG);
                _cleanup_image_ VipsImage *out = renderfx_render_check(b, &v, 100, 100);
                double sd = 0;

                VIPS_OK(vips_deviate(out, &sd, NULL));
                assert_true(sd < 1);
        }
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_fits_large_source),
                cmocka_unit_test(test_fits_small_source),
                cmocka_unit_test(test_circle_mask),
                cmocka_unit_test(test_circle_mask_with_alpha_and_jpeg),
                cmocka_unit_test(test_gravity),
                cmocka_unit_test(test_gravity_smart),
        };

        int r = cmocka_run_group_tests(tests, renderfx_setup, NULL);
        render_shutdown();
        return r;
}
