/* SPDX-License-Identifier: MIT */
/*
 * test-render-decode.c - the worker's decoding (decode.c, through render.h) against real images
 * made here with libvips: EXIF orientation, 16-bit and CMYK sources, shrink-on-load, the pixel
 * limit read from a (forged) header, truncated and non-image input with their reasons, the memory
 * of a progressive JPEG, and the other source formats.
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

static void test_exif_orientation(void **state)
{
        _cleanup_image_ VipsImage *src = renderfx_make_halves(300, 200, renderfx_RED,
                                                              renderfx_BLUE),
                                  *tagged = NULL, *out = NULL;
        _cleanup_gfree_ void *jpg = NULL;
        size_t len = 0;
        struct variant v = renderfx_make_variant(0, 0, VARIANT_FIT_NONE, IMAGE_FORMAT_PNG);
        struct variant cover = renderfx_make_variant(100, 100, VARIANT_FIT_COVER, IMAGE_FORMAT_PNG);
        _cleanup_base_ render_base *b = NULL;

        /* Stored 300x200, red left and blue right, with "rotate 90 clockwise to display". */
        VIPS_OK(vips_copy(src, &tagged, NULL));
        vips_image_set_int(tagged, VIPS_META_ORIENTATION, 6);
        VIPS_OK(vips_jpegsave_buffer(tagged, &jpg, &len, "Q", 95, "strip", FALSE, NULL));

        b = renderfx_base_ok(jpg, len, (struct variant[]){ v, cover }, 2);
        assert_int_equal(render_base_info(b)->width, 200);
        assert_int_equal(render_base_info(b)->height, 300);

        out = renderfx_render_check(b, &v, 200, 300);
        /* Turned clockwise, the left (red) half is now on top, the blue half at the bottom. */
        assert_true(renderfx_pixel(out, 100, 20, 0) > 200);
        assert_true(renderfx_pixel(out, 100, 20, 2) < 60);
        assert_true(renderfx_pixel(out, 100, 280, 2) > 200);
        assert_true(renderfx_pixel(out, 100, 280, 0) < 60);

        /* And it is not rotated a second time by the resize. */
        {
                _cleanup_image_ VipsImage *c = renderfx_render_check(b, &cover, 100, 100);

                assert_true(renderfx_pixel(c, 50, 5, 0) > 200);
                assert_true(renderfx_pixel(c, 50, 95, 2) > 200);
        }
}

static void test_16bit_png(void **state)
{
        _cleanup_image_ VipsImage *src = renderfx_make_gradient(64, 32, false), *wide = NULL,
                                  *u16 = NULL, *rgb16 = NULL, *check = NULL, *out = NULL;
        _cleanup_gfree_ void *png = NULL;
        size_t len;
        struct variant v = renderfx_make_variant(0, 0, VARIANT_FIT_NONE, IMAGE_FORMAT_PNG);
        _cleanup_base_ render_base *b = NULL;

        VIPS_OK(vips_linear1(src, &wide, 257.0, 0.0, NULL));
        VIPS_OK(vips_cast(wide, &u16, VIPS_FORMAT_USHORT, NULL));
        VIPS_OK(vips_copy(u16, &rgb16, "interpretation", VIPS_INTERPRETATION_RGB16, NULL));
        png = renderfx_encode(rgb16, ".png", &len);
        /* The test input really is 16-bit. */
        check = renderfx_decode(png, len);
        assert_int_equal(check->BandFmt, VIPS_FORMAT_USHORT);

        b = renderfx_base_ok(png, len, &v, 1);
        out = renderfx_render_check(b, &v, 64, 32);
        assert_int_equal(out->BandFmt, VIPS_FORMAT_UCHAR);
        assert_int_equal(out->Bands, 3);
        for (int x = 0; x < 64; x += 21) {
                renderfx_assert_near(renderfx_pixel(out, x, 16, 0), renderfx_pixel(src, x, 16, 0),
                                     1);
                renderfx_assert_near(renderfx_pixel(out, x, 16, 1), renderfx_pixel(src, x, 16, 1),
                                     1);
                renderfx_assert_near(renderfx_pixel(out, x, 16, 2), 128, 1);
        }
}

/*
 * A PNG (no shrink-on-load) far larger than its variants need is shrunk once after the decode:
 * every output keeps the size the full decode gives (the rounding of "inside" and "contain"
 * included) and shows the same picture; an alpha that is opaque everywhere is dropped, a real
 * one is kept.
 */
static void test_png_shrunk_once(void **state)
{
        static const struct {
                unsigned w, h;
                enum variant_fit fit;
        } cases[] = {
                { 800, 800, VARIANT_FIT_INSIDE }, { 333, 333, VARIANT_FIT_INSIDE },
                { 251, 97, VARIANT_FIT_CONTAIN }, { 100, 100, VARIANT_FIT_COVER },
                { 64, 40, VARIANT_FIT_FILL },
        };
        /* Sizes whose outputs come out a pixel off when resized from the shrunk image. */
        static const int sizes[][2] = { { 1501, 1170 }, { 1170, 1501 } };

        for (size_t k = 0; k < ELEMENTSOF(sizes); k++) {
                int W = sizes[k][0], H = sizes[k][1];
                _cleanup_image_ VipsImage *src = renderfx_make_gradient(W, H, true), *hole = NULL,
                                          *holed = NULL;
                _cleanup_gfree_ void *png = NULL, *png_hole = NULL;
                struct variant vs[ELEMENTSOF(cases)];
                _cleanup_base_ render_base *b = NULL, *bh = NULL;
                size_t len, len_hole;

                png = renderfx_encode(src, ".png[compression=1]", &len);
                /* The same with a transparent 8 x 8 square in the top left corner. */
                VIPS_OK(vips_black(&hole, 8, 8, "bands", 4, NULL));
                VIPS_OK(vips_insert(src, hole, &holed, 0, 0, NULL));
                png_hole = renderfx_encode(holed, ".png[compression=1]", &len_hole);

                for (size_t i = 0; i < ELEMENTSOF(cases); i++)
                        vs[i] = renderfx_make_variant(cases[i].w, cases[i].h, cases[i].fit,
                                                      IMAGE_FORMAT_PNG);
                b = renderfx_base_ok(png, len, vs, ELEMENTSOF(vs));
                bh = renderfx_base_ok(png_hole, len_hole, vs, ELEMENTSOF(vs));
                assert_int_equal(render_base_info(b)->width, W);
                assert_int_equal(render_base_info(b)->height, H);

                for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                        _cleanup_image_ VipsImage *want = NULL, *out = NULL, *out_hole = NULL;
                        int cx, cy;

                        /* What the variant's resize makes of the full decode. */
                        if (cases[i].fit == VARIANT_FIT_COVER)
                                VIPS_OK(vips_thumbnail_image(src, &want, cases[i].w, "height",
                                                             cases[i].h, "crop",
                                                             VIPS_INTERESTING_CENTRE, NULL));
                        else
                                VIPS_OK(vips_thumbnail_image(
                                        src, &want, cases[i].w, "height", cases[i].h, "size",
                                        cases[i].fit == VARIANT_FIT_INSIDE ? VIPS_SIZE_DOWN
                                        : cases[i].fit == VARIANT_FIT_FILL ? VIPS_SIZE_FORCE
                                                                           : VIPS_SIZE_BOTH,
                                        NULL));
                        out = renderfx_render_check(b, &vs[i], (unsigned)want->Xsize,
                                                    (unsigned)want->Ysize);
                        /* Opaque alpha: gone. */
                        assert_int_equal(out->Bands, 3);
                        /* The same picture: the gradient at the centre and near a corner. */
                        cx = want->Xsize / 2;
                        cy = want->Ysize / 2;
                        for (int band = 0; band < 3; band++) {
                                renderfx_assert_near(renderfx_pixel(out, cx, cy, band),
                                                     renderfx_pixel(want, cx, cy, band), 3);
                                renderfx_assert_near(
                                        renderfx_pixel(out, want->Xsize - 3, want->Ysize - 3, band),
                                        renderfx_pixel(want, want->Xsize - 3, want->Ysize - 3,
                                                       band),
                                        4);
                        }

                        out_hole = renderfx_render_check(bh, &vs[i], (unsigned)want->Xsize,
                                                         (unsigned)want->Ysize);
                        assert_int_equal(out_hole->Bands, 4);
                        renderfx_assert_near(renderfx_pixel(out_hole, cx, cy, 3), 255, 0);
                }
        }
}

static void check_cmyk_source(bool keep_profile)
{
        _cleanup_image_ VipsImage *src = renderfx_make_halves(64, 32, renderfx_RED, renderfx_BLUE),
                                  *cmyk = NULL, *bare = NULL, *out = NULL;
        _cleanup_gfree_ void *jpg = NULL;
        size_t len = 0;
        struct variant v = renderfx_make_variant(0, 0, VARIANT_FIT_NONE, IMAGE_FORMAT_PNG);
        _cleanup_base_ render_base *b = NULL;

        VIPS_OK(vips_colourspace(src, &cmyk, VIPS_INTERPRETATION_CMYK, NULL));
        assert_int_equal(cmyk->Bands, 4);
        assert_int_equal(cmyk->Type, VIPS_INTERPRETATION_CMYK);
        VIPS_OK(vips_copy(cmyk, &bare, NULL));
        if (!keep_profile)
                vips_image_remove(bare, VIPS_META_ICC_NAME);
        VIPS_OK(vips_jpegsave_buffer(bare, &jpg, &len, "Q", 95, "strip", FALSE, NULL));

        b = renderfx_base_ok(jpg, len, &v, 1);
        out = renderfx_render_check(b, &v, 64, 32);
        assert_int_equal(out->Bands, 3);
        assert_int_equal(out->Type, VIPS_INTERPRETATION_sRGB);
        /* CMYK's gamut is smaller than sRGB's; the hues must survive the round trip. */
        assert_true(renderfx_pixel(out, 8, 16, 0) > 180);
        assert_true(renderfx_pixel(out, 8, 16, 0) > renderfx_pixel(out, 8, 16, 1) + 100);
        assert_true(renderfx_pixel(out, 8, 16, 0) > renderfx_pixel(out, 8, 16, 2) + 100);
        assert_true(renderfx_pixel(out, 56, 16, 2) > 120);
        assert_true(renderfx_pixel(out, 56, 16, 2) > renderfx_pixel(out, 56, 16, 0) + 50);
}

static void test_cmyk_jpeg(void **state)
{
        check_cmyk_source(false); /* converted with libvips' own CMYK profile */
        check_cmyk_source(true);  /* converted with the profile embedded in the file */
}

static void test_big_jpeg_shrink_on_load(void **state)
{
        _cleanup_image_ VipsImage *src = renderfx_make_gradient(4000, 3000, false);
        _cleanup_gfree_ void *jpg = NULL;
        size_t len;
        struct variant vs[2] = {
                renderfx_make_variant(100, 100, VARIANT_FIT_COVER, IMAGE_FORMAT_WEBP),
                renderfx_make_variant(100, 100, VARIANT_FIT_CONTAIN, IMAGE_FORMAT_JPEG),
        };
        _cleanup_base_ render_base *b = NULL;

        jpg = renderfx_encode(src, ".jpg[Q=85]", &len);
        b = renderfx_base_ok(jpg, len, vs, ELEMENTSOF(vs));
        /* The info is the source's, whatever the decoder shrank it to. */
        assert_int_equal(render_base_info(b)->width, 4000);
        assert_int_equal(render_base_info(b)->height, 3000);
        {
                _cleanup_image_ VipsImage *out = renderfx_render_check(b, &vs[0], 100, 100);

                renderfx_assert_near(renderfx_pixel(out, 50, 50, 0), 127, 8);
                renderfx_assert_near(renderfx_pixel(out, 50, 50, 1), 127, 8);
                renderfx_assert_near(renderfx_pixel(out, 50, 50, 2), 128, 8);
                /* Cover keeps the full height: the top row is y ~ 0. */
                renderfx_assert_near(renderfx_pixel(out, 50, 0, 1), 0, 8);
        }
        {
                _cleanup_image_ VipsImage *out = renderfx_render_check(b, &vs[1], 100, 75);

                renderfx_assert_near(renderfx_pixel(out, 99, 37, 0), 252, 10);
                renderfx_assert_near(renderfx_pixel(out, 0, 37, 0), 0, 10);
        }
}

static void test_big_webp_scale_on_load(void **state)
{
        _cleanup_image_ VipsImage *src = renderfx_make_gradient(1601, 1203, false);
        _cleanup_gfree_ void *webp = NULL;
        size_t len;
        struct variant vs[2] = {
                renderfx_make_variant(97, 61, VARIANT_FIT_COVER, IMAGE_FORMAT_PNG),
                renderfx_make_variant(150, 150, VARIANT_FIT_INSIDE, IMAGE_FORMAT_PNG),
        };
        _cleanup_base_ render_base *b = NULL;

        webp = renderfx_encode(src, ".webp[Q=90]", &len);
        b = renderfx_base_ok(webp, len, vs, ELEMENTSOF(vs));
        assert_int_equal(render_base_info(b)->format, IMAGE_FORMAT_WEBP);
        assert_int_equal(render_base_info(b)->width, 1601);
        {
                _cleanup_image_ VipsImage *out = renderfx_render_check(b, &vs[0], 97, 61);

                renderfx_assert_near(renderfx_pixel(out, 48, 30, 0), 127, 8);
        }
        {
                /* 1601x1203 inside 150x150 is 150 wide and 150 * 1203 / 1601 high. */
                _cleanup_image_ VipsImage *out = renderfx_render_check(b, &vs[1], 150, 113);

                renderfx_assert_near(renderfx_pixel(out, 75, 56, 1), 127, 8);
        }
}

static uint32_t crc32_png(const unsigned char *p, size_t n)
{
        /* The CRC-32 of PNG chunks (ISO 3309), bit by bit; zlib is not linked into tests. */
        uint32_t c = 0xffffffffu;

        for (size_t i = 0; i < n; i++) {
                c ^= p[i];
                for (int k = 0; k < 8; k++)
                        c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
        }
        return c ^ 0xffffffffu;
}

static void put_be32(unsigned char *p, uint32_t v)
{
        p[0] = v >> 24;
        p[1] = v >> 16;
        p[2] = v >> 8;
        p[3] = v;
}

static void test_max_pixels_from_header(void **state)
{
        _cleanup_image_ VipsImage *src = renderfx_make_gradient(64, 48, false);
        _cleanup_gfree_ unsigned char *png = NULL;
        struct variant v = renderfx_make_variant(100, 100, VARIANT_FIT_COVER, IMAGE_FORMAT_PNG);
        struct render_limits limits = { .max_pixels = 100000000 };
        struct render_error err = {};
        render_base *b = NULL;
        size_t len;
        int r;

        png = renderfx_encode(src, ".png", &len);
        /* Signature (8), IHDR length (4), "IHDR" at 12, width at 16, height at 20, CRC at 29. */
        assert_memory_equal(png + 12, "IHDR", 4);
        assert_int_equal(crc32_png(png + 12, 17), (uint32_t)png[29] << 24 |
                                                          (uint32_t)png[30] << 16 |
                                                          (uint32_t)png[31] << 8 | png[32]);
        put_be32(png + 16, 60000);
        put_be32(png + 20, 60000);
        put_be32(png + 29, crc32_png(png + 12, 17));

        r = render_base_new(png, len, &v, 1, &limits, &b, &err);
        assert_true(r < 0);
        assert_null(b);
        assert_true(err.permanent);
        /* Refused on the header's numbers: the pixel data (64x48 worth) was never decoded. */
        assert_non_null(strstr(err.message, "60000x60000"));
        assert_non_null(strstr(err.message, "3600000000 pixels"));
        assert_non_null(strstr(err.message, "over the limit of 100000000"));
}

static void test_max_pixels_boundary(void **state)
{
        _cleanup_image_ VipsImage *src = renderfx_make_gradient(400, 300, false);
        _cleanup_gfree_ void *jpg = NULL;
        struct variant v = renderfx_make_variant(10, 10, VARIANT_FIT_COVER, IMAGE_FORMAT_PNG);
        struct render_limits at = { .max_pixels = 120000 }, below = { .max_pixels = 119999 };
        struct render_error err = {};
        render_base *b = NULL;
        size_t len;

        jpg = renderfx_encode(src, ".jpg", &len);
        assert_int_equal(render_base_new(jpg, len, &v, 1, &at, &b, &err), 0);
        assert_non_null(b);
        b = render_base_free(b);
        assert_null(b);

        assert_true(render_base_new(jpg, len, &v, 1, &below, &b, &err) < 0);
        assert_null(b);
        assert_true(err.permanent);
        assert_string_equal(err.message,
                            "image is 400x300 (120000 pixels), over the limit of 119999");
}

static void test_truncated_jpeg(void **state)
{
        _cleanup_image_ VipsImage *src = renderfx_make_gradient(400, 300, false);
        _cleanup_gfree_ void *jpg = NULL;
        struct variant v = renderfx_make_variant(100, 100, VARIANT_FIT_COVER, IMAGE_FORMAT_PNG);
        struct render_limits limits = {};
        struct render_error err = {};
        render_base *b = NULL;
        size_t len;
        int r;

        jpg = renderfx_encode(src, ".jpg", &len);
        r = render_base_new(jpg, len / 2, &v, 1, &limits, &b, &err);
        assert_true(r < 0);
        assert_null(b);
        assert_true(err.permanent);
        assert_non_null(strstr(err.message, "VipsJpeg: Premature end of"));
        /* The message was taken from libvips, and its buffer cleared. */
        assert_string_equal(vips_error_buffer(), "");
}

static void test_truncated_png(void **state)
{
        _cleanup_image_ VipsImage *src = renderfx_make_gradient(400, 300, false);
        _cleanup_gfree_ void *png = NULL;
        struct variant v = renderfx_make_variant(100, 100, VARIANT_FIT_COVER, IMAGE_FORMAT_PNG);
        struct render_limits limits = {};
        struct render_error err = {};
        render_base *b = NULL;
        size_t len;

        png = renderfx_encode(src, ".png", &len);
        assert_true(render_base_new(png, len / 2, &v, 1, &limits, &b, &err) < 0);
        assert_null(b);
        assert_true(err.permanent);
        assert_true(strlen(err.message) > 10);
        assert_string_equal(vips_error_buffer(), "");
}

/* The PNG chunk CRC (ISO 3309, as zlib's crc32) of n bytes. */
static uint32_t png_crc(const unsigned char *p, size_t n)
{
        uint32_t c = 0xffffffffu;

        for (size_t i = 0; i < n; i++) {
                c ^= p[i];
                for (int k = 0; k < 8; k++)
                        c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
        }
        return c ^ 0xffffffffu;
}

/*
 * A PNG whose IHDR is well-formed but invalid (bit depth 3, with a correct CRC): libpng says
 * why only through a warning ("IHDR: invalid"), leaving libvips' error buffer empty. The
 * job's error still says it, not "unknown libvips error".
 */
static void test_png_reason_from_warning(void **state)
{
        _cleanup_image_ VipsImage *src = renderfx_make_gradient(64, 48, false);
        _cleanup_gfree_ unsigned char *png = NULL;
        struct variant v = renderfx_make_variant(32, 32, VARIANT_FIT_COVER, IMAGE_FORMAT_PNG);
        struct render_limits limits = {};
        struct render_error err = {};
        render_base *b = NULL;
        uint32_t crc;
        size_t len;

        (void)state;
        png = renderfx_encode(src, ".png", &len);
        assert_true(len > 33);
        assert_memory_equal(png + 12, "IHDR", 4);
        png[24] = 3; /* bit depth: 1, 2, 4, 8 or 16 */
        crc = png_crc(png + 12, 17);
        png[29] = (unsigned char)(crc >> 24), png[30] = (unsigned char)(crc >> 16);
        png[31] = (unsigned char)(crc >> 8), png[32] = (unsigned char)crc;
        assert_true(render_base_new(png, len, &v, 1, &limits, &b, &err) < 0);
        assert_null(b);
        assert_true(err.permanent);
        if (!strstr(err.message, "IHDR") || strstr(err.message, "unknown libvips error"))
                fail_msg("unexpected error: %s", err.message);
}

/* render_base_new() that must succeed with these limits. */
static render_base *base_ok_limits(const void *buf, size_t len, const struct variant *v,
                                   const struct render_limits *limits)
{
        struct render_error err = {};
        render_base *b = NULL;

        if (render_base_new(buf, len, v, 1, limits, &b, &err) < 0)
                fail_msg("render_base_new: %s", err.message);
        assert_non_null(b);
        return b;
}

/* A JPEG of im: progressive or not, with 4:4:4 or 4:2:0 chroma. */
static void *jpeg_of(VipsImage *im, bool progressive, bool subsample, size_t *ret_len)
{
        void *buf = NULL;

        VIPS_OK(vips_jpegsave_buffer(
                im, &buf, ret_len, "Q", 85, "interlace", progressive, "subsample_mode",
                subsample ? VIPS_FOREIGN_SUBSAMPLE_ON : VIPS_FOREIGN_SUBSAMPLE_OFF, NULL));
        return buf;
}

/*
 * A progressive JPEG makes libjpeg keep every coefficient (2000x1500 at 4:4:4: 250x188
 * blocks x 3 components x 128 bytes = 18.0 MB; at 4:2:0: 9.0 MB): one over max_decode_bytes
 * is refused from its header, for its size, at once; a baseline one of the same size, or a
 * progressive one within the limit, is rendered.
 */
static void test_progressive_jpeg_memory(void **state)
{
        _cleanup_image_ VipsImage *src = renderfx_make_gradient(2000, 1500, false);
        struct variant v = renderfx_make_variant(100, 100, VARIANT_FIT_COVER, IMAGE_FORMAT_WEBP);
        struct render_limits limits = { .max_decode_bytes = 16 << 20 };
        struct render_error err = {};
        render_base *b = NULL;
        void *p444, *base, *p420;
        size_t n444, nbase, n420;

        (void)state;
        p444 = jpeg_of(src, true, false, &n444);
        base = jpeg_of(src, false, false, &nbase);
        p420 = jpeg_of(src, true, true, &n420);

        assert_int_equal(render_base_new(p444, n444, &v, 1, &limits, &b, &err), -E2BIG);
        assert_null(b);
        assert_true(err.permanent);
        if (!strstr(err.message, "progressive JPEG needs 18 MiB to decode, over the limit of "
                                 "16 MiB"))
                fail_msg("unexpected error: %s", err.message);

        b = base_ok_limits(base, nbase, &v, &limits);
        b = render_base_free(b);
        b = base_ok_limits(p420, n420, &v, &limits);
        b = render_base_free(b);
        limits.max_decode_bytes = 32 << 20;
        b = base_ok_limits(p444, n444, &v, &limits);
        b = render_base_free(b);
        limits.max_decode_bytes = 0; /* no limit */
        b = base_ok_limits(p444, n444, &v, &limits);
        b = render_base_free(b);
        g_free(p444);
        g_free(base);
        g_free(p420);
}

static void test_not_an_image(void **state)
{
        static const char text[] = "just some text, certainly not a picture\n";
        struct variant v = renderfx_make_variant(100, 100, VARIANT_FIT_COVER, IMAGE_FORMAT_PNG);
        struct render_limits limits = {};
        struct render_error err = {};
        render_base *b = NULL;

        assert_true(render_base_new(text, sizeof(text) - 1, &v, 1, &limits, &b, &err) < 0);
        assert_null(b);
        assert_true(err.permanent);
        assert_string_equal(err.message,
                            "not a supported image: VipsForeignLoad: buffer is not in a known "
                            "format");
        assert_string_equal(vips_error_buffer(), "");

        /* Nothing at all. */
        memset(&err, 0, sizeof(err));
        assert_true(render_base_new("", 0, &v, 1, &limits, &b, &err) < 0);
        assert_null(b);
        assert_true(err.permanent);
        assert_non_null(strstr(err.message, "not a supported image: "));
}

static void test_other_sources(void **state)
{
        _cleanup_image_ VipsImage *src = renderfx_make_gradient(80, 60, false);
        static const char *const savers[] = { ".gif", ".tif", ".avif", ".webp" };
        static const enum image_format formats[] = { IMAGE_FORMAT_GIF, IMAGE_FORMAT_TIFF,
                                                     IMAGE_FORMAT_AVIF, IMAGE_FORMAT_WEBP };
        struct variant v = renderfx_make_variant(40, 40, VARIANT_FIT_COVER, IMAGE_FORMAT_PNG);

        for (size_t i = 0; i < ELEMENTSOF(savers); i++) {
                _cleanup_gfree_ void *buf = NULL;
                _cleanup_base_ render_base *b = NULL;
                _cleanup_image_ VipsImage *out = NULL;
                size_t len;

                if (formats[i] == IMAGE_FORMAT_AVIF && !renderfx_have_avif_encoder())
                        continue;
                buf = renderfx_encode(src, savers[i], &len);
                b = renderfx_base_ok(buf, len, &v, 1);
                assert_int_equal(render_base_info(b)->format, formats[i]);
                assert_int_equal(render_base_info(b)->width, 80);
                assert_int_equal(render_base_info(b)->height, 60);
                out = renderfx_render_check(b, &v, 40, 40);
                renderfx_assert_near(renderfx_pixel(out, 20, 20, 2), 128, 16);
        }

        /* A format libvips reads but imgd does not allow: refused, naming libvips' loader. */
        {
                _cleanup_gfree_ void *jp2 = NULL;
                struct render_limits limits = {};
                struct render_error err = {};
                render_base *b = NULL;
                size_t len;

                jp2 = renderfx_encode(src, ".jp2", &len);
                assert_true(render_base_new(jp2, len, &v, 1, &limits, &b, &err) < 0);
                assert_null(b);
                assert_true(err.permanent);
                assert_string_equal(err.message, "not a supported image: format not allowed "
                                                 "(libvips: VipsForeignLoadJp2kBuffer)");
        }
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_exif_orientation),
                cmocka_unit_test(test_16bit_png),
                cmocka_unit_test(test_png_shrunk_once),
                cmocka_unit_test(test_cmyk_jpeg),
                cmocka_unit_test(test_big_jpeg_shrink_on_load),
                cmocka_unit_test(test_big_webp_scale_on_load),
                cmocka_unit_test(test_max_pixels_from_header),
                cmocka_unit_test(test_max_pixels_boundary),
                cmocka_unit_test(test_truncated_jpeg),
                cmocka_unit_test(test_truncated_png),
                cmocka_unit_test(test_png_reason_from_warning),
                cmocka_unit_test(test_progressive_jpeg_memory),
                cmocka_unit_test(test_not_an_image),
                cmocka_unit_test(test_other_sources),
        };

        int r = cmocka_run_group_tests(tests, renderfx_setup, NULL);
        render_shutdown();
        return r;
}
