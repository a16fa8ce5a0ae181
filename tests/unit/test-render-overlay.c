/* SPDX-License-Identifier: MIT */
/*
 * test-render-overlay.c - the worker's overlays and placeholders (overlay.c and placeholder.c,
 * through render.h): image and text watermarks where they are asked for, and the placeholder
 * (BlurHash and dominant colour) of a render.
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

static void test_watermark_image(void **state)
{
        char *dir = renderfx_temp_dir();
        _cleanup_free_ char *logo = NULL;
        _cleanup_image_ VipsImage *src = renderfx_make_gradient(400, 300, false);
        _cleanup_gfree_ void *png = NULL;
        _cleanup_base_ render_base *b = NULL;
        render_cache *cache = render_cache_new();
        struct variant plain = renderfx_make_variant(400, 300, VARIANT_FIT_COVER, IMAGE_FORMAT_PNG);
        struct variant marked = plain;
        struct render_output o1, o2;
        _cleanup_image_ VipsImage *d1 = NULL, *d2 = NULL;
        int x0, y0, x1, y1;
        size_t len, n;

        assert_non_null(cache);
        assert_true(asprintf(&logo, "%s/logo.tif", dir) > 0);
        renderfx_write_mark(logo, 200, 100, renderfx_RED);
        png = renderfx_encode(src, ".png", &len);
        b = renderfx_base_ok(png, len, NULL, 0);

        marked.watermark = (struct variant_watermark){
                .kind = VARIANT_WATERMARK_IMAGE,
                .position = VARIANT_GRAVITY_SOUTH_EAST,
                .margin = 16,
                .opacity = 0.5,
                .width = 0.25,
        };
        snprintf(marked.watermark.image, sizeof(marked.watermark.image), "%s", logo);

        o1 = renderfx_render_ok(b, &plain, cache);
        o2 = renderfx_render_ok(b, &marked, cache);
        d1 = renderfx_decode(o1.buf, o1.size);
        d2 = renderfx_decode(o2.buf, o2.size);
        /* 400 x 0.25 = 100 wide, 50 high, 16 px from the bottom right corner; nothing else. */
        n = renderfx_diff_box(d1, d2, &x0, &y0, &x1, &y1);
        assert_int_equal(x0, 400 - 16 - 100);
        assert_int_equal(y0, 300 - 16 - 50);
        assert_int_equal(x1, 400 - 16);
        assert_int_equal(y1, 300 - 16);
        assert_true(n > 100 * 50 * 9 / 10);
        /* Half red over the gradient. */
        {
                double base_r = renderfx_pixel(d1, 330, 260, 0),
                       base_b = renderfx_pixel(d1, 330, 260, 2);

                renderfx_assert_near(renderfx_pixel(d2, 330, 260, 0), (base_r + 255) / 2, 3);
                renderfx_assert_near(renderfx_pixel(d2, 330, 260, 2), base_b / 2, 3);
        }
        assert_int_equal(d2->Bands, 3); /* no alpha added */
        assert_int_equal(render_cache_loads(cache), 1);
        g_free(o2.buf);

        /* Other positions and sizes; the file is decoded once for all of them. */
        marked.watermark.position = VARIANT_GRAVITY_NORTH_WEST;
        marked.watermark.margin = 0;
        marked.watermark.width = 0.5;
        marked.watermark.opacity = 1.0;
        o2 = renderfx_render_ok(b, &marked, cache);
        g_object_unref(d2);
        d2 = renderfx_decode(o2.buf, o2.size);
        n = renderfx_diff_box(d1, d2, &x0, &y0, &x1, &y1);
        assert_int_equal(x0, 0);
        assert_int_equal(y0, 0);
        assert_int_equal(x1, 200);
        assert_int_equal(y1, 100);
        renderfx_assert_near(renderfx_pixel(d2, 100, 50, 0), 255, 1);
        renderfx_assert_near(renderfx_pixel(d2, 100, 50, 1), 0, 1);
        assert_int_equal(render_cache_loads(cache), 1);
        g_free(o2.buf);

        /* A watermark too wide for the output is made smaller to fit inside the margins. */
        marked.watermark.position = VARIANT_GRAVITY_CENTRE;
        marked.watermark.margin = 100;
        marked.watermark.width = 1.0;
        o2 = renderfx_render_ok(b, &marked, cache);
        g_object_unref(d2);
        d2 = renderfx_decode(o2.buf, o2.size);
        n = renderfx_diff_box(d1, d2, &x0, &y0, &x1, &y1);
        assert_int_equal(x1 - x0, 200); /* box 200 x 100, the mark is 2:1 */
        assert_int_equal(y1 - y0, 100);
        assert_int_equal(x0, 100);
        assert_int_equal(y0, 100);
        g_free(o2.buf);

        /* A changed file (new mtime) is decoded again; an unchanged one is not. */
        renderfx_write_mark(logo, 200, 100, renderfx_BLUE);
        {
                struct timespec ts[2] = { { .tv_sec = 1000000000 }, { .tv_sec = 1000000000 } };

                assert_int_equal(utimensat(AT_FDCWD, logo, ts, 0), 0);
        }
        o2 = renderfx_render_ok(b, &marked, cache);
        assert_int_equal(render_cache_loads(cache), 2);
        g_object_unref(d2);
        d2 = renderfx_decode(o2.buf, o2.size);
        renderfx_assert_near(renderfx_pixel(d2, 200, 150, 2), 255, 1);
        g_free(o2.buf);
        o2 = renderfx_render_ok(b, &marked, cache);
        assert_int_equal(render_cache_loads(cache), 2);
        g_free(o2.buf);

        /* A watermark on an output with alpha keeps the alpha of the image under it. */
        {
                _cleanup_image_ VipsImage *rgba = renderfx_make_gradient(100, 100, true),
                                          *out = NULL;
                _cleanup_gfree_ void *apng = NULL;
                _cleanup_base_ render_base *ba = NULL;
                struct variant v =
                        renderfx_make_variant(100, 100, VARIANT_FIT_COVER, IMAGE_FORMAT_WEBP);
                struct render_output o;

                v.mask = VARIANT_MASK_CIRCLE;
                v.watermark = marked.watermark;
                v.watermark.margin = 0;
                v.watermark.position = VARIANT_GRAVITY_NORTH;
                v.watermark.width = 0.5;
                apng = renderfx_encode(rgba, ".png", &len);
                ba = renderfx_base_ok(apng, len, NULL, 0);
                o = renderfx_render_ok(ba, &v, cache);
                out = renderfx_decode(o.buf, o.size);
                assert_int_equal(out->Bands, 4);
                renderfx_assert_near(renderfx_pixel(out, 0, 0, 3), 0, 1); /* masked corner */
                renderfx_assert_near(renderfx_pixel(out, 50, 10, 2), 255,
                                     8); /* blue mark at the top */
                renderfx_assert_near(renderfx_pixel(out, 50, 10, 3), 255, 1);
                g_free(o.buf);
        }

        /* A missing file fails the variant, naming it, as transient. */
        {
                struct render_output o = { .size = 12345 };
                struct render_error err = {};

                assert_int_equal(unlink(logo), 0);
                assert_int_equal(render_variant_full(b, &marked, cache, &o, &err), -ENOENT);
                assert_int_equal(o.size, 12345);
                assert_false(err.permanent);
                assert_non_null(strstr(err.message, logo));
                assert_non_null(strstr(err.message, "No such file or directory"));
                /* And a file that is not an image. */
                {
                        FILE *f = fopen(logo, "we");

                        assert_non_null(f);
                        fputs("not an image\n", f);
                        assert_int_equal(fclose(f), 0);
                }
                assert_true(render_variant_full(b, &marked, cache, &o, &err) < 0);
                assert_non_null(strstr(err.message, logo));
                assert_non_null(strstr(err.message, "not a supported image"));
        }

        g_free(o1.buf);
        render_cache_free(cache);
        renderfx_rm_tree(dir);
}

static void test_watermark_text(void **state)
{
        static const double DARK[3] = { 20, 30, 40 };
        _cleanup_image_ VipsImage *src = renderfx_make_solid(400, 200, DARK), *d1 = NULL,
                                  *d2 = NULL;
        _cleanup_gfree_ void *png = NULL;
        _cleanup_base_ render_base *b = NULL;
        struct variant plain = renderfx_make_variant(0, 0, VARIANT_FIT_NONE, IMAGE_FORMAT_PNG);
        struct variant marked = plain;
        struct render_output o1, o2;
        int x0, y0, x1, y1;
        size_t len, n;

        png = renderfx_encode(src, ".png", &len);
        b = renderfx_base_ok(png, len, NULL, 0);
        marked.watermark = (struct variant_watermark){
                .kind = VARIANT_WATERMARK_TEXT,
                .text = "\xc2\xa9 Example & <Co>",
                .font = "sans 24",
                .color = { 255, 255, 0 },
                .position = VARIANT_GRAVITY_SOUTH_EAST,
                .margin = 10,
                .opacity = 1.0,
        };
        o1 = renderfx_render_ok(b, &plain, NULL);
        o2 = renderfx_render_ok(b, &marked, NULL);
        d1 = renderfx_decode(o1.buf, o1.size);
        d2 = renderfx_decode(o2.buf, o2.size);
        n = renderfx_diff_box(d1, d2, &x0, &y0, &x1, &y1);
        /* Some text at the font's size (about 24 px high) in the bottom right corner. */
        assert_true(n > 100);
        assert_true(x1 <= 400 - 10 && x1 > 400 - 10 - 8);
        assert_true(y1 <= 200 - 10 && y1 > 200 - 10 - 12);
        assert_true(y1 - y0 >= 12 && y1 - y0 <= 40);
        assert_true(x1 - x0 > 100 && x1 - x0 < 350);
        /* Yellow strokes: some pixel in the box is (nearly) pure yellow. */
        {
                double maxv[3] = { 0 };
                _cleanup_image_ VipsImage *area = NULL, *r = NULL, *bl = NULL;

                VIPS_OK(vips_extract_area(d2, &area, x0, y0, x1 - x0, y1 - y0, NULL));
                VIPS_OK(vips_extract_band(area, &r, 0, NULL));
                VIPS_OK(vips_extract_band(area, &bl, 2, NULL));
                VIPS_OK(vips_max(r, &maxv[0], NULL));
                VIPS_OK(vips_min(bl, &maxv[2], NULL));
                assert_true(maxv[0] > 240);
                assert_true(maxv[2] < 50);
        }
        g_free(o2.buf);

        /* width = 0.5: the text is scaled to half the output's width, opacity applied. */
        marked.watermark.width = 0.5;
        marked.watermark.opacity = 0.5;
        marked.watermark.position = VARIANT_GRAVITY_NORTH_WEST;
        o2 = renderfx_render_ok(b, &marked, NULL);
        g_object_unref(d2);
        d2 = renderfx_decode(o2.buf, o2.size);
        n = renderfx_diff_box(d1, d2, &x0, &y0, &x1, &y1);
        assert_true(n > 100);
        assert_true(x0 >= 10 && x0 < 20);
        assert_true(y0 >= 10 && y0 < 30);
        assert_true(x1 - x0 > 160 && x1 - x0 <= 200);
        {
                _cleanup_image_ VipsImage *area = NULL, *r = NULL;
                double maxr = 0;

                VIPS_OK(vips_extract_area(d2, &area, x0, y0, x1 - x0, y1 - y0, NULL));
                VIPS_OK(vips_extract_band(area, &r, 0, NULL));
                VIPS_OK(vips_max(r, &maxr, NULL));
                renderfx_assert_near(maxr, (20 + 255) / 2.0, 6); /* half yellow over dark */
        }
        g_free(o1.buf);
        g_free(o2.buf);
}

/* The DC component of a hash: its average colour. */
static void hash_dc(const char *hash, uint8_t rgb[3])
{
        long v = blurhash_decode83(hash + 2, 4);

        assert_true(v >= 0);
        rgb[0] = (uint8_t)(v >> 16);
        rgb[1] = (uint8_t)(v >> 8);
        rgb[2] = (uint8_t)v;
}

static void test_placeholder(void **state)
{
        static const double COL[3] = { 0x33, 0x66, 0xcc };
        static const uint8_t white[3] = { 255, 255, 255 };
        _cleanup_image_ VipsImage *solid = renderfx_make_solid(200, 100, COL);
        _cleanup_gfree_ void *png = NULL;
        _cleanup_base_ render_base *b = NULL;
        struct render_placeholder p = {};
        struct render_error err = {};
        uint8_t dc[3];
        size_t len;

        png = renderfx_encode(solid, ".png", &len);
        b = renderfx_base_ok(png, len, NULL, 0);
        assert_int_equal(render_placeholder(b, white, &p, &err), 0);
        assert_int_equal(strlen(p.blurhash), 28);
        assert_int_equal(p.blurhash[0], 'L'); /* 4 x 3 components: (4 - 1) + (3 - 1) 9 = 21 */
        hash_dc(p.blurhash, dc);
        renderfx_assert_near(dc[0], 0x33, 1);
        renderfx_assert_near(dc[1], 0x66, 1);
        renderfx_assert_near(dc[2], 0xcc, 1);
        assert_int_equal(p.dominant[0], 0x33);
        assert_int_equal(p.dominant[1], 0x66);
        assert_int_equal(p.dominant[2], 0xcc);
        assert_non_null(p.data_uri);
        assert_true(strncmp(p.data_uri, "data:image/webp;base64,", 23) == 0);
        {
                gsize n = 0;
                _cleanup_gfree_ guchar *webp = g_base64_decode(p.data_uri + 23, &n);
                _cleanup_image_ VipsImage *tiny = renderfx_decode(webp, n);

                assert_int_equal(image_format_sniff(webp, n), IMAGE_FORMAT_WEBP);
                assert_int_equal(tiny->Xsize, 32);
                assert_int_equal(tiny->Ysize, 16);
                renderfx_assert_near(renderfx_pixel(tiny, 16, 8, 2), 0xcc, 8);
                assert_null(memmem(webp, n, "EXIF", 4));
        }
        render_placeholder_clear(&p);
        assert_null(p.data_uri);

        /*
         * Portrait, with alpha: mostly transparent green, an opaque red band. The dominant
         * colour counts opaque pixels only (red); the hash sees the image flattened onto the
         * background (white, mostly) and has 3 x 4 components.
         */
        {
                _cleanup_image_ VipsImage *green = renderfx_make_solid(60, 120, renderfx_GREEN),
                                          *ga = NULL,
                                          *red = renderfx_make_solid(60, 20, renderfx_RED),
                                          *ra = NULL, *src = NULL;
                _cleanup_gfree_ void *apng = NULL;
                _cleanup_base_ render_base *ba = NULL;
                static const uint8_t grey[3] = { 100, 100, 100 };

                VIPS_OK(vips_bandjoin_const1(green, &ga, 0.0, NULL));
                VIPS_OK(vips_bandjoin_const1(red, &ra, 255.0, NULL));
                VIPS_OK(vips_insert(ga, ra, &src, 0, 50, NULL));
                apng = renderfx_encode(src, ".png", &len);
                ba = renderfx_base_ok(apng, len, NULL, 0);
                assert_int_equal(render_placeholder(ba, grey, &p, &err), 0);
                assert_int_equal(p.dominant[0], 255);
                assert_int_equal(p.dominant[1], 0);
                assert_int_equal(p.dominant[2], 0);
                assert_int_equal(strlen(p.blurhash), 28);
                assert_int_equal(p.blurhash[0], 'T'); /* (3 - 1) + (4 - 1) 9 = 29 */
                hash_dc(p.blurhash, dc);
                /* 1/6 red, 5/6 grey, averaged in linear light. */
                {
                        double lr = (1.0 / 6) * 1.0 + (5.0 / 6) * blurhash_srgb_to_linear(100);
                        double lg = (5.0 / 6) * blurhash_srgb_to_linear(100);

                        renderfx_assert_near(dc[0], blurhash_linear_to_srgb(lr), 3);
                        renderfx_assert_near(dc[1], blurhash_linear_to_srgb(lg), 3);
                        renderfx_assert_near(dc[2], blurhash_linear_to_srgb(lg), 3);
                }
                {
                        gsize n = 0;
                        _cleanup_gfree_ guchar *webp = g_base64_decode(p.data_uri + 23, &n);
                        _cleanup_image_ VipsImage *tiny = renderfx_decode(webp, n);

                        assert_int_equal(tiny->Xsize, 16);
                        assert_int_equal(tiny->Ysize, 32);
                        assert_int_equal(tiny->Bands, 4); /* alpha kept */
                }
                render_placeholder_clear(&p);
        }
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_watermark_image),
                cmocka_unit_test(test_watermark_text),
                cmocka_unit_test(test_placeholder),
        };

        int r = cmocka_run_group_tests(tests, renderfx_setup, NULL);
        render_shutdown();
        return r;
}
