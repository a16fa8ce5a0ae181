/* SPDX-License-Identifier: MIT */
/*
 * test-render.c - render.c against real images made here with libvips: every fit, the
 * circle mask, EXIF orientation, 16-bit and CMYK sources, alpha flattening, shrink-on-load,
 * the pixel limit read from a (forged) header, truncated and non-image input, verification,
 * each output format; and the real imgd-worker binary driven over its socket end to end.
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

static inline void image_unrefp(VipsImage **p)
{
        if (*p)
                g_object_unref(*p);
}
#define _cleanup_image_ _cleanup_(image_unrefp)

static inline void gfreep(void *p)
{
        g_free(*(void **)p);
}
#define _cleanup_gfree_ _cleanup_(gfreep)

static inline void render_base_freep(render_base **p)
{
        render_base_free(*p);
}
#define _cleanup_base_ _cleanup_(render_base_freep)

/* ---- images made with libvips ---------------------------------------------------------- */

/* Asserts that a libvips call succeeded, showing its error otherwise. */
#define VIPS_OK(call)                                                                              \
        do {                                                                                       \
                if ((call) != 0) {                                                                 \
                        fail_msg("%s: %s", #call, vips_error_buffer());                            \
                }                                                                                  \
        } while (0)

/* A w x h sRGB gradient: R = 255 x / w, G = 255 y / h, B = 128; alpha 255 when asked. */
static VipsImage *make_gradient(int w, int h, bool alpha)
{
        _cleanup_image_ VipsImage *xy = NULL, *lin = NULL, *rgbf = NULL, *rgb = NULL, *rgba = NULL;
        double a[2] = { 255.0 / w, 255.0 / h }, b[2] = { 0, 0 };
        VipsImage *out = NULL;

        VIPS_OK(vips_xyz(&xy, w, h, NULL));
        VIPS_OK(vips_linear(xy, &lin, a, b, 2, NULL));
        VIPS_OK(vips_bandjoin_const1(lin, &rgbf, 128.0, NULL));
        VIPS_OK(vips_cast(rgbf, &rgb, VIPS_FORMAT_UCHAR, NULL));
        if (alpha)
                VIPS_OK(vips_bandjoin_const1(rgb, &rgba, 255.0, NULL));
        VIPS_OK(vips_copy(alpha ? rgba : rgb, &out, "interpretation", VIPS_INTERPRETATION_sRGB,
                          NULL));
        return out;
}

/* A w x h sRGB image, pure `left` colour where x < w/2 and pure `right` colour elsewhere. */
static VipsImage *make_halves(int w, int h, const double left[3], const double right[3])
{
        _cleanup_image_ VipsImage *xy = NULL, *x = NULL, *cond = NULL, *l = NULL, *r = NULL,
                                  *blk = NULL, *pick = NULL;
        VipsImage *out = NULL;

        VIPS_OK(vips_xyz(&xy, w, h, NULL));
        VIPS_OK(vips_extract_band(xy, &x, 0, NULL));
        VIPS_OK(vips_less_const1(x, &cond, w / 2, NULL));
        VIPS_OK(vips_black(&blk, w, h, "bands", 3, NULL));
        VIPS_OK(vips_linear(blk, &l, (double[]){ 1, 1, 1 }, (double *)left, 3, NULL));
        VIPS_OK(vips_linear(blk, &r, (double[]){ 1, 1, 1 }, (double *)right, 3, NULL));
        VIPS_OK(vips_ifthenelse(cond, l, r, &pick, NULL));
        {
                _cleanup_image_ VipsImage *u8 = NULL;

                VIPS_OK(vips_cast(pick, &u8, VIPS_FORMAT_UCHAR, NULL));
                VIPS_OK(vips_copy(u8, &out, "interpretation", VIPS_INTERPRETATION_sRGB, NULL));
        }
        return out;
}

/* Encodes with libvips' saver for `suffix` (".jpg[Q=90]", ".png", ...); g_free the result. */
static void *encode(VipsImage *im, const char *suffix, size_t *ret_len)
{
        void *buf = NULL;
        size_t len = 0;

        VIPS_OK(vips_image_write_to_buffer(im, suffix, &buf, &len, NULL));
        assert_non_null(buf);
        *ret_len = len;
        return buf;
}

/* Decodes a buffer fully into memory with libvips. */
static VipsImage *decode(const void *buf, size_t len)
{
        _cleanup_image_ VipsImage *lazy = vips_image_new_from_buffer(buf, len, "", NULL);
        VipsImage *mem;

        if (!lazy)
                fail_msg("decode: %s", vips_error_buffer());
        mem = vips_image_copy_memory(lazy);
        if (!mem)
                fail_msg("decode: %s", vips_error_buffer());
        return mem;
}

/* Band `band` of pixel (x, y). */
static double pixel(VipsImage *im, int x, int y, int band)
{
        _cleanup_gfree_ double *v = NULL;
        int n = 0;

        VIPS_OK(vips_getpoint(im, &v, &n, x, y, NULL));
        assert_true(band < n);
        return v[band];
}

static void assert_near(double got, double want, double tolerance)
{
        if (got < want - tolerance || got > want + tolerance)
                fail_msg("got %.1f, want %.1f +- %.1f", got, want, tolerance);
}

static struct variant make_variant(unsigned w, unsigned h, enum variant_fit fit,
                                   enum image_format format)
{
        struct variant v;

        variant_init(&v);
        v.width = w;
        v.height = h;
        v.fit = fit;
        v.format = format;
        v.quality = 90;
        snprintf(v.name, sizeof(v.name), "%s-%ux%u", variant_fit_name(fit), w, h);
        return v;
}

static render_base *base_ok(const void *buf, size_t len, const struct variant *v, size_t n)
{
        struct render_limits limits = { .max_pixels = 100000000 };
        struct render_error err = {};
        render_base *b = NULL;
        int r = render_base_new(buf, len, v, n, &limits, &b, &err);

        if (r < 0)
                fail_msg("render_base_new: %d %s", r, err.message);
        assert_non_null(b);
        return b;
}

/*
 * Renders v from b, checks the reported size against want_w x want_h, that it verifies,
 * and that libvips decodes it at that size; returns the decoded output.
 */
static VipsImage *render_check(render_base *b, const struct variant *v, unsigned want_w,
                               unsigned want_h)
{
        _cleanup_gfree_ void *buf = NULL;
        struct render_error err = {};
        size_t len = 0;
        unsigned w = 0, h = 0;
        VipsImage *out;
        int r;

        r = render_variant(b, v, &buf, &len, &w, &h, &err);
        if (r < 0)
                fail_msg("render_variant %s: %d %s", v->name, r, err.message);
        assert_true(len > 0);
        if (w != want_w || h != want_h)
                fail_msg("%s: got %ux%u, want %ux%u", v->name, w, h, want_w, want_h);
        r = render_verify(buf, len, v->format, w, h, &err);
        if (r < 0)
                fail_msg("render_verify %s: %s", v->name, err.message);
        assert_int_equal(image_format_sniff(buf, len), v->format);
        out = decode(buf, len);
        assert_int_equal(out->Xsize, (int)want_w);
        assert_int_equal(out->Ysize, (int)want_h);
        return out;
}

/* ---- fits -------------------------------------------------------------------------------- */

static void test_fits_large_source(void **state)
{
        _cleanup_image_ VipsImage *src = make_gradient(400, 300, false);
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

        jpg = encode(src, ".jpg[Q=95]", &len);
        for (size_t i = 0; i < ELEMENTSOF(cases); i++)
                vs[i] = make_variant(cases[i].w, cases[i].h, cases[i].fit, IMAGE_FORMAT_PNG);
        b = base_ok(jpg, len, vs, ELEMENTSOF(vs));
        assert_int_equal(render_base_info(b)->format, IMAGE_FORMAT_JPEG);
        assert_int_equal(render_base_info(b)->width, 400);
        assert_int_equal(render_base_info(b)->height, 300);

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_image_ VipsImage *out =
                        render_check(b, &vs[i], cases[i].want_w, cases[i].want_h);

                /* Output is 8-bit sRGB without alpha, as the source. */
                assert_int_equal(out->Bands, 3);
                assert_int_equal(out->BandFmt, VIPS_FORMAT_UCHAR);
        }

        /* Cover crops the centre: the middle of a 100x100 cover is the middle of the source. */
        {
                _cleanup_image_ VipsImage *out = render_check(b, &vs[0], 100, 100);

                assert_near(pixel(out, 50, 50, 0), 255.0 * 200 / 400, 6);
                assert_near(pixel(out, 50, 50, 1), 255.0 * 150 / 300, 6);
                /* The crop keeps the full height, so the left edge is x = 50 of the source. */
                assert_near(pixel(out, 0, 50, 0), 255.0 * 50 / 400, 8);
                assert_near(pixel(out, 50, 0, 1), 0, 6);
        }
}

static void test_fits_small_source(void **state)
{
        _cleanup_image_ VipsImage *src = make_gradient(50, 40, false);
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

        png = encode(src, ".png", &len);
        for (size_t i = 0; i < ELEMENTSOF(cases); i++)
                vs[i] = make_variant(cases[i].w, cases[i].h, cases[i].fit, IMAGE_FORMAT_WEBP);
        b = base_ok(png, len, vs, ELEMENTSOF(vs));
        assert_int_equal(render_base_info(b)->format, IMAGE_FORMAT_PNG);

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_image_ VipsImage *out =
                        render_check(b, &vs[i], cases[i].want_w, cases[i].want_h);

                assert_int_equal(out->Bands, 3);
        }
}

/* ---- circle mask ------------------------------------------------------------------------- */

static void check_circle(VipsImage *out)
{
        int w = out->Xsize, h = out->Ysize;

        assert_int_equal(out->Bands, 4);
        assert_int_equal(out->BandFmt, VIPS_FORMAT_UCHAR);
        assert_int_equal((int)pixel(out, 0, 0, 3), 0);
        assert_int_equal((int)pixel(out, w - 1, 0, 3), 0);
        assert_int_equal((int)pixel(out, 0, h - 1, 3), 0);
        assert_int_equal((int)pixel(out, w - 1, h - 1, 3), 0);
        assert_int_equal((int)pixel(out, w / 2, h / 2, 3), 255);
}

static void test_circle_mask(void **state)
{
        _cleanup_image_ VipsImage *src = make_gradient(200, 100, false);
        _cleanup_gfree_ void *png = NULL;
        size_t len;
        struct variant vs[3] = {
                make_variant(64, 64, VARIANT_FIT_COVER, IMAGE_FORMAT_PNG),
                make_variant(64, 64, VARIANT_FIT_COVER, IMAGE_FORMAT_WEBP),
                make_variant(80, 40, VARIANT_FIT_FILL, IMAGE_FORMAT_PNG),
        };
        _cleanup_base_ render_base *b = NULL;

        for (size_t i = 0; i < ELEMENTSOF(vs); i++)
                vs[i].mask = VARIANT_MASK_CIRCLE;
        png = encode(src, ".png", &len);
        b = base_ok(png, len, vs, ELEMENTSOF(vs));

        {
                _cleanup_image_ VipsImage *out = render_check(b, &vs[0], 64, 64);

                check_circle(out);
                /* Just inside the rim (distance 30.5 of radius 32) and outside it. */
                assert_int_equal((int)pixel(out, 32, 2, 3), 255);
                assert_int_equal((int)pixel(out, 6, 6, 3), 0);
                /* Colour is untouched where opaque. */
                assert_near(pixel(out, 32, 32, 2), 128, 3);
        }
        {
                /* WebP keeps alpha losslessly by default. */
                _cleanup_image_ VipsImage *out = render_check(b, &vs[1], 64, 64);

                check_circle(out);
        }
        {
                /* Not square: the circle of radius 20 is inscribed in the 80x40 box. */
                _cleanup_image_ VipsImage *out = render_check(b, &vs[2], 80, 40);

                check_circle(out);
                assert_int_equal((int)pixel(out, 40, 1, 3), 255);
                assert_int_equal((int)pixel(out, 5, 20, 3), 0);
                assert_int_equal((int)pixel(out, 75, 20, 3), 0);
                /* The rim is anti-aliased: a pixel straddling it is partly transparent. */
                {
                        double edge = pixel(out, 20, 20, 3); /* distance 19.5 + 0.5 */

                        assert_true(edge > 0 && edge <= 255);
                }
        }
}

static void test_circle_mask_with_alpha_and_jpeg(void **state)
{
        _cleanup_image_ VipsImage *src = make_gradient(100, 100, false), *half = NULL, *rgba = NULL;
        _cleanup_gfree_ void *png = NULL;
        size_t len;
        struct variant vs[2] = {
                make_variant(50, 50, VARIANT_FIT_COVER, IMAGE_FORMAT_PNG),
                make_variant(50, 50, VARIANT_FIT_COVER, IMAGE_FORMAT_JPEG),
        };
        _cleanup_base_ render_base *b = NULL;

        /* A source with alpha 128 everywhere: the mask multiplies into it. */
        VIPS_OK(vips_bandjoin_const1(src, &half, 128.0, NULL));
        VIPS_OK(vips_copy(half, &rgba, "interpretation", VIPS_INTERPRETATION_sRGB, NULL));
        png = encode(rgba, ".png", &len);
        vs[0].mask = vs[1].mask = VARIANT_MASK_CIRCLE;
        vs[1].background[0] = 0;
        vs[1].background[1] = 0;
        vs[1].background[2] = 255;
        b = base_ok(png, len, vs, ELEMENTSOF(vs));

        {
                _cleanup_image_ VipsImage *out = render_check(b, &vs[0], 50, 50);

                assert_int_equal(out->Bands, 4);
                assert_int_equal((int)pixel(out, 0, 0, 3), 0);
                assert_near(pixel(out, 25, 25, 3), 128, 1);
        }
        {
                /* JPEG has no alpha: the masked corners are flattened onto blue. */
                _cleanup_image_ VipsImage *out = render_check(b, &vs[1], 50, 50);

                assert_int_equal(out->Bands, 3);
                assert_near(pixel(out, 0, 0, 0), 0, 12);
                assert_near(pixel(out, 0, 0, 1), 0, 12);
                assert_near(pixel(out, 0, 0, 2), 255, 12);
                /* The centre is half source (128, 128, 128), half blue. */
                assert_near(pixel(out, 25, 25, 0), 64, 12);
                assert_near(pixel(out, 25, 25, 2), 191, 12);
        }
}

/* ---- source colour and geometry ---------------------------------------------------------- */

static const double RED[3] = { 255, 0, 0 }, BLUE[3] = { 0, 0, 255 }, GREEN[3] = { 0, 255, 0 };

static void test_exif_orientation(void **state)
{
        _cleanup_image_ VipsImage *src = make_halves(300, 200, RED, BLUE), *tagged = NULL,
                                  *out = NULL;
        _cleanup_gfree_ void *jpg = NULL;
        size_t len = 0;
        struct variant v = make_variant(0, 0, VARIANT_FIT_NONE, IMAGE_FORMAT_PNG);
        struct variant cover = make_variant(100, 100, VARIANT_FIT_COVER, IMAGE_FORMAT_PNG);
        _cleanup_base_ render_base *b = NULL;

        /* Stored 300x200, red left and blue right, with "rotate 90 clockwise to display". */
        VIPS_OK(vips_copy(src, &tagged, NULL));
        vips_image_set_int(tagged, VIPS_META_ORIENTATION, 6);
        VIPS_OK(vips_jpegsave_buffer(tagged, &jpg, &len, "Q", 95, "strip", FALSE, NULL));

        b = base_ok(jpg, len, (struct variant[]){ v, cover }, 2);
        assert_int_equal(render_base_info(b)->width, 200);
        assert_int_equal(render_base_info(b)->height, 300);

        out = render_check(b, &v, 200, 300);
        /* Turned clockwise, the left (red) half is now on top, the blue half at the bottom. */
        assert_true(pixel(out, 100, 20, 0) > 200);
        assert_true(pixel(out, 100, 20, 2) < 60);
        assert_true(pixel(out, 100, 280, 2) > 200);
        assert_true(pixel(out, 100, 280, 0) < 60);

        /* And it is not rotated a second time by the resize. */
        {
                _cleanup_image_ VipsImage *c = render_check(b, &cover, 100, 100);

                assert_true(pixel(c, 50, 5, 0) > 200);
                assert_true(pixel(c, 50, 95, 2) > 200);
        }
}

static void test_16bit_png(void **state)
{
        _cleanup_image_ VipsImage *src = make_gradient(64, 32, false), *wide = NULL, *u16 = NULL,
                                  *rgb16 = NULL, *check = NULL, *out = NULL;
        _cleanup_gfree_ void *png = NULL;
        size_t len;
        struct variant v = make_variant(0, 0, VARIANT_FIT_NONE, IMAGE_FORMAT_PNG);
        _cleanup_base_ render_base *b = NULL;

        VIPS_OK(vips_linear1(src, &wide, 257.0, 0.0, NULL));
        VIPS_OK(vips_cast(wide, &u16, VIPS_FORMAT_USHORT, NULL));
        VIPS_OK(vips_copy(u16, &rgb16, "interpretation", VIPS_INTERPRETATION_RGB16, NULL));
        png = encode(rgb16, ".png", &len);
        /* The test input really is 16-bit. */
        check = decode(png, len);
        assert_int_equal(check->BandFmt, VIPS_FORMAT_USHORT);

        b = base_ok(png, len, &v, 1);
        out = render_check(b, &v, 64, 32);
        assert_int_equal(out->BandFmt, VIPS_FORMAT_UCHAR);
        assert_int_equal(out->Bands, 3);
        for (int x = 0; x < 64; x += 21) {
                assert_near(pixel(out, x, 16, 0), pixel(src, x, 16, 0), 1);
                assert_near(pixel(out, x, 16, 1), pixel(src, x, 16, 1), 1);
                assert_near(pixel(out, x, 16, 2), 128, 1);
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
                _cleanup_image_ VipsImage *src = make_gradient(W, H, true), *hole = NULL,
                                          *holed = NULL;
                _cleanup_gfree_ void *png = NULL, *png_hole = NULL;
                struct variant vs[ELEMENTSOF(cases)];
                _cleanup_base_ render_base *b = NULL, *bh = NULL;
                size_t len, len_hole;

                png = encode(src, ".png[compression=1]", &len);
                /* The same with a transparent 8 x 8 square in the top left corner. */
                VIPS_OK(vips_black(&hole, 8, 8, "bands", 4, NULL));
                VIPS_OK(vips_insert(src, hole, &holed, 0, 0, NULL));
                png_hole = encode(holed, ".png[compression=1]", &len_hole);

                for (size_t i = 0; i < ELEMENTSOF(cases); i++)
                        vs[i] = make_variant(cases[i].w, cases[i].h, cases[i].fit,
                                             IMAGE_FORMAT_PNG);
                b = base_ok(png, len, vs, ELEMENTSOF(vs));
                bh = base_ok(png_hole, len_hole, vs, ELEMENTSOF(vs));
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
                        out = render_check(b, &vs[i], (unsigned)want->Xsize, (unsigned)want->Ysize);
                        /* Opaque alpha: gone. */
                        assert_int_equal(out->Bands, 3);
                        /* The same picture: the gradient at the centre and near a corner. */
                        cx = want->Xsize / 2;
                        cy = want->Ysize / 2;
                        for (int band = 0; band < 3; band++) {
                                assert_near(pixel(out, cx, cy, band), pixel(want, cx, cy, band), 3);
                                assert_near(pixel(out, want->Xsize - 3, want->Ysize - 3, band),
                                            pixel(want, want->Xsize - 3, want->Ysize - 3, band), 4);
                        }

                        out_hole = render_check(bh, &vs[i], (unsigned)want->Xsize,
                                                (unsigned)want->Ysize);
                        assert_int_equal(out_hole->Bands, 4);
                        assert_near(pixel(out_hole, cx, cy, 3), 255, 0);
                }
        }
}

static void check_cmyk_source(bool keep_profile)
{
        _cleanup_image_ VipsImage *src = make_halves(64, 32, RED, BLUE), *cmyk = NULL, *bare = NULL,
                                  *out = NULL;
        _cleanup_gfree_ void *jpg = NULL;
        size_t len = 0;
        struct variant v = make_variant(0, 0, VARIANT_FIT_NONE, IMAGE_FORMAT_PNG);
        _cleanup_base_ render_base *b = NULL;

        VIPS_OK(vips_colourspace(src, &cmyk, VIPS_INTERPRETATION_CMYK, NULL));
        assert_int_equal(cmyk->Bands, 4);
        assert_int_equal(cmyk->Type, VIPS_INTERPRETATION_CMYK);
        VIPS_OK(vips_copy(cmyk, &bare, NULL));
        if (!keep_profile)
                vips_image_remove(bare, VIPS_META_ICC_NAME);
        VIPS_OK(vips_jpegsave_buffer(bare, &jpg, &len, "Q", 95, "strip", FALSE, NULL));

        b = base_ok(jpg, len, &v, 1);
        out = render_check(b, &v, 64, 32);
        assert_int_equal(out->Bands, 3);
        assert_int_equal(out->Type, VIPS_INTERPRETATION_sRGB);
        /* CMYK's gamut is smaller than sRGB's; the hues must survive the round trip. */
        assert_true(pixel(out, 8, 16, 0) > 180);
        assert_true(pixel(out, 8, 16, 0) > pixel(out, 8, 16, 1) + 100);
        assert_true(pixel(out, 8, 16, 0) > pixel(out, 8, 16, 2) + 100);
        assert_true(pixel(out, 56, 16, 2) > 120);
        assert_true(pixel(out, 56, 16, 2) > pixel(out, 56, 16, 0) + 50);
}

static void test_cmyk_jpeg(void **state)
{
        check_cmyk_source(false); /* converted with libvips' own CMYK profile */
        check_cmyk_source(true);  /* converted with the profile embedded in the file */
}

static void test_alpha_flattened_for_jpeg(void **state)
{
        _cleanup_image_ VipsImage *colour = make_halves(64, 64, BLUE, GREEN), *xy = NULL, *x = NULL,
                                  *alpha = NULL, *rgba = NULL, *tagged = NULL, *out = NULL,
                                  *out_png = NULL;
        _cleanup_gfree_ void *png = NULL;
        size_t len;
        struct variant v = make_variant(0, 0, VARIANT_FIT_NONE, IMAGE_FORMAT_JPEG);
        struct variant keep = make_variant(0, 0, VARIANT_FIT_NONE, IMAGE_FORMAT_PNG);
        _cleanup_base_ render_base *b = NULL;

        /* Left half fully transparent (blue underneath), right half opaque green. */
        VIPS_OK(vips_xyz(&xy, 64, 64, NULL));
        VIPS_OK(vips_extract_band(xy, &x, 0, NULL));
        VIPS_OK(vips_moreeq_const1(x, &alpha, 32, NULL)); /* 255 where x >= 32, else 0 */
        VIPS_OK(vips_bandjoin2(colour, alpha, &rgba, NULL));
        VIPS_OK(vips_copy(rgba, &tagged, "interpretation", VIPS_INTERPRETATION_sRGB, NULL));
        png = encode(tagged, ".png", &len);

        v.background[0] = 255;
        v.background[1] = 0;
        v.background[2] = 0;
        b = base_ok(png, len, (struct variant[]){ v, keep }, 2);

        out = render_check(b, &v, 64, 64);
        assert_int_equal(out->Bands, 3);
        /* Transparent pixels become the background colour, not the colour under them. */
        assert_near(pixel(out, 5, 32, 0), 255, 12);
        assert_near(pixel(out, 5, 32, 1), 0, 12);
        assert_near(pixel(out, 5, 32, 2), 0, 12);
        assert_near(pixel(out, 58, 32, 0), 0, 12);
        assert_near(pixel(out, 58, 32, 1), 255, 12);
        assert_near(pixel(out, 58, 32, 2), 0, 12);

        /* PNG keeps the alpha as it was. */
        out_png = render_check(b, &keep, 64, 64);
        assert_int_equal(out_png->Bands, 4);
        assert_int_equal((int)pixel(out_png, 5, 32, 3), 0);
        assert_int_equal((int)pixel(out_png, 58, 32, 3), 255);
}

static void test_big_jpeg_shrink_on_load(void **state)
{
        _cleanup_image_ VipsImage *src = make_gradient(4000, 3000, false);
        _cleanup_gfree_ void *jpg = NULL;
        size_t len;
        struct variant vs[2] = {
                make_variant(100, 100, VARIANT_FIT_COVER, IMAGE_FORMAT_WEBP),
                make_variant(100, 100, VARIANT_FIT_CONTAIN, IMAGE_FORMAT_JPEG),
        };
        _cleanup_base_ render_base *b = NULL;

        jpg = encode(src, ".jpg[Q=85]", &len);
        b = base_ok(jpg, len, vs, ELEMENTSOF(vs));
        /* The info is the source's, whatever the decoder shrank it to. */
        assert_int_equal(render_base_info(b)->width, 4000);
        assert_int_equal(render_base_info(b)->height, 3000);
        {
                _cleanup_image_ VipsImage *out = render_check(b, &vs[0], 100, 100);

                assert_near(pixel(out, 50, 50, 0), 127, 8);
                assert_near(pixel(out, 50, 50, 1), 127, 8);
                assert_near(pixel(out, 50, 50, 2), 128, 8);
                /* Cover keeps the full height: the top row is y ~ 0. */
                assert_near(pixel(out, 50, 0, 1), 0, 8);
        }
        {
                _cleanup_image_ VipsImage *out = render_check(b, &vs[1], 100, 75);

                assert_near(pixel(out, 99, 37, 0), 252, 10);
                assert_near(pixel(out, 0, 37, 0), 0, 10);
        }
}

static void test_big_webp_scale_on_load(void **state)
{
        _cleanup_image_ VipsImage *src = make_gradient(1601, 1203, false);
        _cleanup_gfree_ void *webp = NULL;
        size_t len;
        struct variant vs[2] = {
                make_variant(97, 61, VARIANT_FIT_COVER, IMAGE_FORMAT_PNG),
                make_variant(150, 150, VARIANT_FIT_INSIDE, IMAGE_FORMAT_PNG),
        };
        _cleanup_base_ render_base *b = NULL;

        webp = encode(src, ".webp[Q=90]", &len);
        b = base_ok(webp, len, vs, ELEMENTSOF(vs));
        assert_int_equal(render_base_info(b)->format, IMAGE_FORMAT_WEBP);
        assert_int_equal(render_base_info(b)->width, 1601);
        {
                _cleanup_image_ VipsImage *out = render_check(b, &vs[0], 97, 61);

                assert_near(pixel(out, 48, 30, 0), 127, 8);
        }
        {
                /* 1601x1203 inside 150x150 is 150 wide and 150 * 1203 / 1601 high. */
                _cleanup_image_ VipsImage *out = render_check(b, &vs[1], 150, 113);

                assert_near(pixel(out, 75, 56, 1), 127, 8);
        }
}

/* ---- refusals ---------------------------------------------------------------------------- */

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
        _cleanup_image_ VipsImage *src = make_gradient(64, 48, false);
        _cleanup_gfree_ unsigned char *png = NULL;
        struct variant v = make_variant(100, 100, VARIANT_FIT_COVER, IMAGE_FORMAT_PNG);
        struct render_limits limits = { .max_pixels = 100000000 };
        struct render_error err = {};
        render_base *b = NULL;
        size_t len;
        int r;

        png = encode(src, ".png", &len);
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
        _cleanup_image_ VipsImage *src = make_gradient(400, 300, false);
        _cleanup_gfree_ void *jpg = NULL;
        struct variant v = make_variant(10, 10, VARIANT_FIT_COVER, IMAGE_FORMAT_PNG);
        struct render_limits at = { .max_pixels = 120000 }, below = { .max_pixels = 119999 };
        struct render_error err = {};
        render_base *b = NULL;
        size_t len;

        jpg = encode(src, ".jpg", &len);
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
        _cleanup_image_ VipsImage *src = make_gradient(400, 300, false);
        _cleanup_gfree_ void *jpg = NULL;
        struct variant v = make_variant(100, 100, VARIANT_FIT_COVER, IMAGE_FORMAT_PNG);
        struct render_limits limits = {};
        struct render_error err = {};
        render_base *b = NULL;
        size_t len;
        int r;

        jpg = encode(src, ".jpg", &len);
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
        _cleanup_image_ VipsImage *src = make_gradient(400, 300, false);
        _cleanup_gfree_ void *png = NULL;
        struct variant v = make_variant(100, 100, VARIANT_FIT_COVER, IMAGE_FORMAT_PNG);
        struct render_limits limits = {};
        struct render_error err = {};
        render_base *b = NULL;
        size_t len;

        png = encode(src, ".png", &len);
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
        _cleanup_image_ VipsImage *src = make_gradient(64, 48, false);
        _cleanup_gfree_ unsigned char *png = NULL;
        struct variant v = make_variant(32, 32, VARIANT_FIT_COVER, IMAGE_FORMAT_PNG);
        struct render_limits limits = {};
        struct render_error err = {};
        render_base *b = NULL;
        uint32_t crc;
        size_t len;

        (void)state;
        png = encode(src, ".png", &len);
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
        _cleanup_image_ VipsImage *src = make_gradient(2000, 1500, false);
        struct variant v = make_variant(100, 100, VARIANT_FIT_COVER, IMAGE_FORMAT_WEBP);
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
        struct variant v = make_variant(100, 100, VARIANT_FIT_COVER, IMAGE_FORMAT_PNG);
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

/* Garbage after the first 16 bytes (the signature) of a real file fails verification. */
static void assert_junk_fails_verify(const void *real, enum image_format f, unsigned w, unsigned h)
{
        struct render_error err = {};
        unsigned char junk[512];

        memcpy(junk, real, 16);
        for (size_t i = 16; i < sizeof(junk); i++)
                junk[i] = (unsigned char)(i * 37);
        assert_int_equal(render_verify(junk, sizeof(junk), f, w, h, &err), -EBADMSG);
}

static void test_verify(void **state)
{
        _cleanup_image_ VipsImage *src = make_gradient(200, 150, false);
        _cleanup_gfree_ void *jpg = NULL, *png = NULL, *outjpg = NULL;
        struct variant vp = make_variant(100, 100, VARIANT_FIT_CONTAIN, IMAGE_FORMAT_PNG);
        struct variant vj = make_variant(100, 100, VARIANT_FIT_CONTAIN, IMAGE_FORMAT_JPEG);
        _cleanup_base_ render_base *b = NULL;
        struct render_error err = {};
        size_t len, plen = 0, jlen = 0;
        unsigned w = 0, h = 0;

        jpg = encode(src, ".jpg", &len);
        b = base_ok(jpg, len, (struct variant[]){ vp, vj }, 2);
        assert_int_equal(render_variant(b, &vp, &png, &plen, &w, &h, &err), 0);
        assert_int_equal(w, 100);
        assert_int_equal(h, 75);
        assert_int_equal(render_verify(png, plen, IMAGE_FORMAT_PNG, 100, 75, &err), 0);

        /* Wrong dimensions. */
        assert_int_equal(render_verify(png, plen, IMAGE_FORMAT_PNG, 100, 76, &err), -EBADMSG);
        assert_string_equal(err.message, "verify: expected 100x76, found 100x75");
        assert_int_equal(render_verify(png, plen, IMAGE_FORMAT_PNG, 75, 100, &err), -EBADMSG);

        /* Wrong format. */
        assert_int_equal(render_verify(png, plen, IMAGE_FORMAT_JPEG, 100, 75, &err), -EBADMSG);
        assert_non_null(strstr(err.message, "expected jpeg"));

        /* Truncated: the header is intact, the pixels are not. */
        assert_int_equal(render_verify(png, plen / 2, IMAGE_FORMAT_PNG, 100, 75, &err), -EBADMSG);
        assert_true(strlen(err.message) > 8);
        assert_string_equal(vips_error_buffer(), "");

        assert_int_equal(render_variant(b, &vj, &outjpg, &jlen, &w, &h, &err), 0);
        assert_int_equal(render_verify(outjpg, jlen, IMAGE_FORMAT_JPEG, 100, 75, &err), 0);
        assert_int_equal(render_verify(outjpg, jlen * 2 / 3, IMAGE_FORMAT_JPEG, 100, 75, &err),
                         -EBADMSG);
        assert_string_equal(err.message, "verify: JPEG: Premature end of JPEG file");

        assert_junk_fails_verify(png, IMAGE_FORMAT_PNG, 100, 75);
}

/*
 * Every damage to a 400x300 JPEG fails its verification: a cut anywhere after the signature,
 * garbage after it, a marker put in the middle of the entropy-coded data (libjpeg only warns
 * about those, and decodes the rest as grey).
 */
static void assert_jpeg_damage_fails(const unsigned char *out, size_t jlen)
{
        _cleanup_free_ unsigned char *damaged = malloc(jlen);
        struct render_error err = {};
        int tries = 0, failed = 0;

        assert_non_null(damaged);
        for (size_t cut = 4; cut < jlen - 2; cut += 1 + jlen / 60) {
                assert_int_equal(render_verify(out, cut, IMAGE_FORMAT_JPEG, 400, 300, &err),
                                 -EBADMSG);
                assert_non_null(strstr(err.message, "verify: "));
        }
        assert_junk_fails_verify(out, IMAGE_FORMAT_JPEG, 400, 300);
        for (size_t at = jlen / 3; at < jlen - 4; at += jlen / 7) {
                memcpy(damaged, out, jlen);
                damaged[at] = 0xff;
                damaged[at + 1] = 0xd0 + (unsigned char)(at % 8); /* a restart marker */
                tries++;
                failed +=
                        render_verify(damaged, jlen, IMAGE_FORMAT_JPEG, 400, 300, &err) == -EBADMSG;
        }
        assert_true(tries >= 4);
        assert_int_equal(failed, tries);
}

/* A JPEG, baseline or progressive, is verified by libjpeg itself, its warnings failures. */
static void test_verify_jpeg(void **state)
{
        _cleanup_image_ VipsImage *src = make_gradient(640, 480, false);
        _cleanup_gfree_ unsigned char *png = NULL;
        struct variant vj = make_variant(400, 300, VARIANT_FIT_CONTAIN, IMAGE_FORMAT_JPEG);
        _cleanup_base_ render_base *b = NULL;
        struct render_error err = {};
        size_t len;

        png = encode(src, ".png", &len);
        b = base_ok(png, len, &vj, 1);
        for (int progressive = 0; progressive <= 1; progressive++) {
                _cleanup_gfree_ void *out = NULL;
                size_t jlen = 0;
                unsigned w = 0, h = 0;

                vj.progressive = progressive;
                assert_int_equal(render_variant(b, &vj, &out, &jlen, &w, &h, &err), 0);
                assert_int_equal(render_verify(out, jlen, IMAGE_FORMAT_JPEG, 400, 300, &err), 0);
                assert_int_equal(render_verify(out, jlen, IMAGE_FORMAT_JPEG, 300, 400, &err),
                                 -EBADMSG);
                assert_string_equal(err.message, "verify: expected 300x400, found 400x300");
                assert_true(err.permanent);
                assert_jpeg_damage_fails(out, jlen);
        }
        assert_string_equal(vips_error_buffer(), "");
}

static void *make_animation(int w, int h, int n, const char *suffix, size_t *ret_len);

/* A still WebP is verified by libwebp itself: every failure the libvips path catches. */
static void test_verify_webp(void **state)
{
        _cleanup_image_ VipsImage *src = make_gradient(200, 150, true);
        _cleanup_gfree_ void *jpg = NULL, *webp = NULL, *anim = NULL;
        struct variant vw = make_variant(100, 100, VARIANT_FIT_COVER, IMAGE_FORMAT_WEBP);
        _cleanup_base_ render_base *b = NULL;
        struct render_error err = {};
        size_t len, wlen = 0, alen = 0;
        unsigned w = 0, h = 0;

        vw.mask = VARIANT_MASK_CIRCLE; /* an alpha channel, decoded too */
        jpg = encode(src, ".png", &len);
        b = base_ok(jpg, len, &vw, 1);
        assert_int_equal(render_variant(b, &vw, &webp, &wlen, &w, &h, &err), 0);
        assert_int_equal(render_verify(webp, wlen, IMAGE_FORMAT_WEBP, 100, 100, &err), 0);

        assert_int_equal(render_verify(webp, wlen, IMAGE_FORMAT_WEBP, 100, 99, &err), -EBADMSG);
        assert_string_equal(err.message, "verify: expected 100x99, found 100x100");
        assert_true(err.permanent);
        assert_int_equal(render_verify(webp, wlen, IMAGE_FORMAT_PNG, 100, 100, &err), -EBADMSG);
        assert_non_null(strstr(err.message, "expected png"));

        /* Cut anywhere after the header: every cut fails, none crashes. */
        for (size_t cut = 30; cut < wlen; cut += 1 + wlen / 40) {
                assert_int_equal(render_verify(webp, cut, IMAGE_FORMAT_WEBP, 100, 100, &err),
                                 -EBADMSG);
                assert_non_null(strstr(err.message, "verify: WebP "));
        }
        assert_junk_fails_verify(webp, IMAGE_FORMAT_WEBP, 100, 100);

        /* An animation where a still image was written. */
        anim = make_animation(60, 40, 3, ".webp", &alen);
        assert_int_equal(render_verify(anim, alen, IMAGE_FORMAT_WEBP, 60, 40, &err), -EBADMSG);
        assert_string_equal(err.message, "verify: expected a still WebP, found an animation");
        assert_int_equal(render_verify_pages(anim, alen, IMAGE_FORMAT_WEBP, 60, 40, 3, &err), 0);
        assert_string_equal(vips_error_buffer(), "");
}

/* ---- output formats ---------------------------------------------------------------------- */

static bool have_avif_encoder(void)
{
        return vips_type_find("VipsOperation", "heifsave_buffer") != 0;
}

static void test_output_formats(void **state)
{
        _cleanup_image_ VipsImage *src = make_gradient(320, 240, false);
        _cleanup_gfree_ void *png = NULL;
        size_t len;
        static const struct {
                enum image_format format;
                const char *loader;
        } cases[] = {
                { IMAGE_FORMAT_JPEG, "VipsForeignLoadJpegBuffer" },
                { IMAGE_FORMAT_PNG, "VipsForeignLoadPngBuffer" },
                { IMAGE_FORMAT_WEBP, "VipsForeignLoadWebpBuffer" },
                { IMAGE_FORMAT_AVIF, "VipsForeignLoadHeifBuffer" },
                { IMAGE_FORMAT_GIF, "VipsForeignLoadNsgifBuffer" },
        };
        _cleanup_base_ render_base *b = NULL;
        struct variant vs[ELEMENTSOF(cases)];

        png = encode(src, ".png", &len);
        for (size_t i = 0; i < ELEMENTSOF(cases); i++)
                vs[i] = make_variant(64, 48, VARIANT_FIT_COVER, cases[i].format);
        b = base_ok(png, len, vs, ELEMENTSOF(vs));

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_gfree_ void *buf = NULL;
                _cleanup_image_ VipsImage *out = NULL;
                struct render_error err = {};
                unsigned w = 0, h = 0;
                size_t n = 0;
                int r;

                r = render_variant(b, &vs[i], &buf, &n, &w, &h, &err);
                if (cases[i].format == IMAGE_FORMAT_AVIF && !have_avif_encoder()) {
                        assert_int_equal(r, -ENOTSUP);
                        assert_true(err.permanent);
                        assert_non_null(strstr(err.message, "AVIF encoder"));
                        continue;
                }
                if (r < 0)
                        fail_msg("%s: %s", image_format_name(cases[i].format), err.message);
                assert_int_equal(image_format_sniff(buf, n), cases[i].format);
                assert_string_equal(vips_foreign_find_load_buffer(buf, n), cases[i].loader);
                assert_int_equal(render_verify(buf, n, cases[i].format, 64, 48, &err), 0);
                out = decode(buf, n);
                assert_int_equal(out->Xsize, 64);
                assert_int_equal(out->Ysize, 48);
                /* Metadata is stripped: no EXIF, no ICC profile. */
                assert_false(vips_image_get_typeof(out, VIPS_META_EXIF_NAME));
                assert_false(vips_image_get_typeof(out, VIPS_META_ICC_NAME));
                /* The centre keeps its colour in every format. */
                assert_near(pixel(out, 32, 24, 0), 127, 12);
                assert_near(pixel(out, 32, 24, 1), 127, 12);
                assert_near(pixel(out, 32, 24, 2), 128, 12);
        }

        /* Formats imgd cannot write are refused, and "same" must be resolved before. */
        {
                struct variant tiff = make_variant(64, 48, VARIANT_FIT_COVER, IMAGE_FORMAT_TIFF);
                struct render_error err = {};
                void *buf = NULL;
                size_t n = 0;
                unsigned w = 0, h = 0;

                assert_int_equal(render_variant(b, &tiff, &buf, &n, &w, &h, &err), -EINVAL);
                assert_null(buf);
                assert_int_equal(w, 0);
                assert_true(err.permanent);
        }
}

static void test_metadata_stripped(void **state)
{
        static const char xmp[] = "<x:xmpmeta xmlns:x=\"adobe:ns:meta/\">SECRET-XMP</x:xmpmeta>";
        _cleanup_image_ VipsImage *src = make_gradient(120, 90, false), *tagged = NULL;
        _cleanup_gfree_ void *jpg = NULL;
        size_t len = 0;
        struct variant vs[4] = {
                make_variant(60, 45, VARIANT_FIT_COVER, IMAGE_FORMAT_JPEG),
                make_variant(60, 45, VARIANT_FIT_COVER, IMAGE_FORMAT_PNG),
                make_variant(60, 45, VARIANT_FIT_COVER, IMAGE_FORMAT_WEBP),
                make_variant(60, 45, VARIANT_FIT_COVER, IMAGE_FORMAT_AVIF),
        };
        _cleanup_base_ render_base *b = NULL;

        /* A source carrying EXIF and XMP with something private in them. */
        VIPS_OK(vips_copy(src, &tagged, NULL));
        vips_image_set_string(tagged, "exif-ifd0-Artist", "SECRET-ARTIST");
        vips_image_set_blob_copy(tagged, VIPS_META_XMP_NAME, xmp, sizeof(xmp) - 1);
        VIPS_OK(vips_jpegsave_buffer(tagged, &jpg, &len, "strip", FALSE, NULL));
        assert_non_null(memmem(jpg, len, "SECRET-ARTIST", 13));
        assert_non_null(memmem(jpg, len, "SECRET-XMP", 10));

        b = base_ok(jpg, len, vs, ELEMENTSOF(vs));
        for (size_t i = 0; i < ELEMENTSOF(vs); i++) {
                _cleanup_gfree_ void *buf = NULL;
                _cleanup_image_ VipsImage *out = NULL;
                struct render_error err = {};
                unsigned w = 0, h = 0;
                size_t n = 0;

                if (vs[i].format == IMAGE_FORMAT_AVIF && !have_avif_encoder())
                        continue;
                if (render_variant(b, &vs[i], &buf, &n, &w, &h, &err) < 0)
                        fail_msg("%s: %s", image_format_name(vs[i].format), err.message);
                /* Nothing of it in the bytes, nor any EXIF/XMP block at all. */
                assert_null(memmem(buf, n, "SECRET", 6));
                assert_null(memmem(buf, n, "Exif", 4));
                assert_null(memmem(buf, n, "EXIF", 4));
                assert_null(memmem(buf, n, "xmpmeta", 7));
                out = decode(buf, n);
                assert_false(vips_image_get_typeof(out, VIPS_META_EXIF_NAME));
                assert_false(vips_image_get_typeof(out, VIPS_META_XMP_NAME));
                assert_int_equal(render_verify(buf, n, vs[i].format, 60, 45, &err), 0);
        }
}

static void test_other_sources(void **state)
{
        _cleanup_image_ VipsImage *src = make_gradient(80, 60, false);
        static const char *const savers[] = { ".gif", ".tif", ".avif", ".webp" };
        static const enum image_format formats[] = { IMAGE_FORMAT_GIF, IMAGE_FORMAT_TIFF,
                                                     IMAGE_FORMAT_AVIF, IMAGE_FORMAT_WEBP };
        struct variant v = make_variant(40, 40, VARIANT_FIT_COVER, IMAGE_FORMAT_PNG);

        for (size_t i = 0; i < ELEMENTSOF(savers); i++) {
                _cleanup_gfree_ void *buf = NULL;
                _cleanup_base_ render_base *b = NULL;
                _cleanup_image_ VipsImage *out = NULL;
                size_t len;

                if (formats[i] == IMAGE_FORMAT_AVIF && !have_avif_encoder())
                        continue;
                buf = encode(src, savers[i], &len);
                b = base_ok(buf, len, &v, 1);
                assert_int_equal(render_base_info(b)->format, formats[i]);
                assert_int_equal(render_base_info(b)->width, 80);
                assert_int_equal(render_base_info(b)->height, 60);
                out = render_check(b, &v, 40, 40);
                assert_near(pixel(out, 20, 20, 2), 128, 16);
        }

        /* A format libvips reads but imgd does not allow: refused, naming libvips' loader. */
        {
                _cleanup_gfree_ void *jp2 = NULL;
                struct render_limits limits = {};
                struct render_error err = {};
                render_base *b = NULL;
                size_t len;

                jp2 = encode(src, ".jp2", &len);
                assert_true(render_base_new(jp2, len, &v, 1, &limits, &b, &err) < 0);
                assert_null(b);
                assert_true(err.permanent);
                assert_string_equal(err.message, "not a supported image: format not allowed "
                                                 "(libvips: VipsForeignLoadJp2kBuffer)");
        }
}

/* ---- image options: gravity, watermarks, encoder settings, keep, max_bytes, animation,
 * placeholders ------------------------------------------------------------------------------ */

/* A w x h sRGB image of one colour. */
static VipsImage *make_solid(int w, int h, const double rgb[3])
{
        _cleanup_image_ VipsImage *blk = NULL, *lin = NULL, *u8 = NULL;
        VipsImage *out = NULL;

        VIPS_OK(vips_black(&blk, w, h, "bands", 3, NULL));
        VIPS_OK(vips_linear(blk, &lin, (double[]){ 1, 1, 1 }, (double *)rgb, 3, NULL));
        VIPS_OK(vips_cast(lin, &u8, VIPS_FORMAT_UCHAR, NULL));
        VIPS_OK(vips_copy(u8, &out, "interpretation", VIPS_INTERPRETATION_sRGB, NULL));
        return out;
}

/* A w x h sRGB image of random noise (hard to compress), the same for the same seed. */
static VipsImage *make_noise(int w, int h, int seed)
{
        _cleanup_image_ VipsImage *r = NULL, *g = NULL, *b = NULL, *rgb = NULL, *u8 = NULL;
        VipsImage *out = NULL;

        VIPS_OK(vips_gaussnoise(&r, w, h, "mean", 128.0, "sigma", 60.0, "seed", seed, NULL));
        VIPS_OK(vips_gaussnoise(&g, w, h, "mean", 128.0, "sigma", 60.0, "seed", seed + 1, NULL));
        VIPS_OK(vips_gaussnoise(&b, w, h, "mean", 128.0, "sigma", 60.0, "seed", seed + 2, NULL));
        VIPS_OK(vips_bandjoin((VipsImage *[]){ r, g, b }, &rgb, 3, NULL));
        VIPS_OK(vips_cast(rgb, &u8, VIPS_FORMAT_UCHAR, NULL));
        VIPS_OK(vips_copy(u8, &out, "interpretation", VIPS_INTERPRETATION_sRGB, NULL));
        return out;
}

/* Pastes `patch` onto `in` at (x, y); a new image. */
static VipsImage *paste(VipsImage *in, VipsImage *patch, int x, int y)
{
        VipsImage *out = NULL;

        VIPS_OK(vips_insert(in, patch, &out, x, y, NULL));
        return out;
}

/* Renders v from b with cache (may be NULL); asserts success, verifies; returns the output. */
static struct render_output render_ok(render_base *b, const struct variant *v, render_cache *cache)
{
        struct render_output out;
        struct render_error err = {};
        int r = render_variant_full(b, v, cache, &out, &err);

        if (r < 0)
                fail_msg("render_variant_full %s: %d %s", v->name, r, err.message);
        if (render_verify_pages(out.buf, out.size, v->format, out.width, out.height, out.pages,
                                &err) < 0)
                fail_msg("render_verify_pages %s: %s", v->name, err.message);
        return out;
}

/* The pixels of an 8-bit image as bytes; g_free(). */
static uint8_t *pixels_of(VipsImage *im, size_t *ret_len)
{
        _cleanup_image_ VipsImage *u8 = NULL;
        uint8_t *p;

        VIPS_OK(vips_cast(im, &u8, VIPS_FORMAT_UCHAR, NULL));
        p = vips_image_write_to_memory(u8, ret_len);
        assert_non_null(p);
        return p;
}

/*
 * Counts the pixels where a and b (same size and bands) differ, and their bounding box
 * [x0, x1) x [y0, y1).
 */
static size_t diff_box(VipsImage *a, VipsImage *b, int *x0, int *y0, int *x1, int *y1)
{
        _cleanup_gfree_ uint8_t *pa = NULL, *pb = NULL;
        size_t la = 0, lb = 0, n = 0;
        int bands = a->Bands;

        assert_int_equal(a->Xsize, b->Xsize);
        assert_int_equal(a->Ysize, b->Ysize);
        assert_int_equal(a->Bands, b->Bands);
        pa = pixels_of(a, &la);
        pb = pixels_of(b, &lb);
        assert_int_equal(la, lb);
        *x0 = *y0 = INT32_MAX;
        *x1 = *y1 = -1;
        for (int y = 0; y < a->Ysize; y++)
                for (int x = 0; x < a->Xsize; x++) {
                        size_t o = ((size_t)y * a->Xsize + x) * bands;

                        if (memcmp(pa + o, pb + o, bands) == 0)
                                continue;
                        n++;
                        *x0 = MIN(*x0, x);
                        *y0 = MIN(*y0, y);
                        *x1 = MAX(*x1, x + 1);
                        *y1 = MAX(*y1, y + 1);
                }
        return n;
}

/* A temporary directory for files; rm_tree() removes it. */
static char *temp_dir(void)
{
        char *dir = strdup("/tmp/test-render-XXXXXX");

        assert_non_null(dir);
        assert_non_null(mkdtemp(dir));
        return dir;
}

static void rm_tree(char *dir)
{
        char cmd[4200];

        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        assert_int_equal(system(cmd), 0);
        free(dir);
}

static void test_gravity(void **state)
{
        /* Wide: red left, blue right. Tall: green top, blue bottom. */
        _cleanup_image_ VipsImage *wide = make_halves(300, 100, RED, BLUE), *tall = NULL;
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
                _cleanup_image_ VipsImage *top = make_solid(100, 150, GREEN),
                                          *bottom = make_solid(100, 150, BLUE);

                VIPS_OK(vips_join(top, bottom, &tall, VIPS_DIRECTION_VERTICAL, NULL));
        }
        wide_png = encode(wide, ".png", &wl);
        tall_png = encode(tall, ".png", &tl);
        bw = base_ok(wide_png, wl, NULL, 0);
        bt = base_ok(tall_png, tl, NULL, 0);

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                struct variant v = make_variant(50, 50, VARIANT_FIT_COVER, IMAGE_FORMAT_PNG);
                _cleanup_image_ VipsImage *out = NULL;

                v.gravity = cases[i].g;
                out = render_check(cases[i].wide ? bw : bt, &v, 50, 50);
                for (int k = 0; k < 3; k++) {
                        assert_near(pixel(out, 0, 0, k), cases[i].want[k], 2);
                        assert_near(pixel(out, 49, 49, k), cases[i].want[k], 2);
                        assert_near(pixel(out, 25, 25, k), cases[i].want[k], 2);
                }
        }

        /* Centre (the default) keeps the middle: both colours. */
        {
                struct variant v = make_variant(50, 50, VARIANT_FIT_COVER, IMAGE_FORMAT_PNG);
                _cleanup_image_ VipsImage *out = render_check(bw, &v, 50, 50);

                assert_near(pixel(out, 5, 25, 0), 255, 2);
                assert_near(pixel(out, 45, 25, 2), 255, 2);
        }
}

static void test_gravity_smart(void **state)
{
        /* Flat grey, and at the right a small saturated, busy patch: both smart crops go there. */
        static const double GREY[3] = { 128, 128, 128 };
        _cleanup_image_ VipsImage *grey = make_solid(400, 100, GREY),
                                  *noise = make_noise(60, 60, 7), *src = NULL;
        _cleanup_gfree_ void *png = NULL;
        _cleanup_base_ render_base *b = NULL;
        size_t len;
        static const enum variant_gravity gs[] = { VARIANT_GRAVITY_ATTENTION,
                                                   VARIANT_GRAVITY_ENTROPY };

        src = paste(grey, noise, 320, 20);
        png = encode(src, ".png", &len);
        b = base_ok(png, len, NULL, 0);
        for (size_t i = 0; i < ELEMENTSOF(gs); i++) {
                struct variant v = make_variant(100, 100, VARIANT_FIT_COVER, IMAGE_FORMAT_PNG);
                _cleanup_image_ VipsImage *out = NULL;
                double sd = 0;

                v.gravity = gs[i];
                out = render_check(b, &v, 100, 100);
                /* The busy patch is in it: far from flat grey. */
                VIPS_OK(vips_deviate(out, &sd, NULL));
                if (sd < 20)
                        fail_msg("%s crop missed the patch (deviation %.1f)",
                                 variant_gravity_name(gs[i]), sd);
        }
        /* Centre does not: it is all grey. */
        {
                struct variant v = make_variant(100, 100, VARIANT_FIT_COVER, IMAGE_FORMAT_PNG);
                _cleanup_image_ VipsImage *out = render_check(b, &v, 100, 100);
                double sd = 0;

                VIPS_OK(vips_deviate(out, &sd, NULL));
                assert_true(sd < 1);
        }
}

/* A w x h watermark file of one colour (TIFF, uncompressed: the size depends on w and h only). */
static void write_mark(const char *path, int w, int h, const double rgb[3])
{
        _cleanup_image_ VipsImage *im = make_solid(w, h, rgb);

        VIPS_OK(vips_tiffsave(im, path, "compression", VIPS_FOREIGN_TIFF_COMPRESSION_NONE, NULL));
}

static void test_watermark_image(void **state)
{
        char *dir = temp_dir();
        _cleanup_free_ char *logo = NULL;
        _cleanup_image_ VipsImage *src = make_gradient(400, 300, false);
        _cleanup_gfree_ void *png = NULL;
        _cleanup_base_ render_base *b = NULL;
        render_cache *cache = render_cache_new();
        struct variant plain = make_variant(400, 300, VARIANT_FIT_COVER, IMAGE_FORMAT_PNG);
        struct variant marked = plain;
        struct render_output o1, o2;
        _cleanup_image_ VipsImage *d1 = NULL, *d2 = NULL;
        int x0, y0, x1, y1;
        size_t len, n;

        assert_non_null(cache);
        assert_true(asprintf(&logo, "%s/logo.tif", dir) > 0);
        write_mark(logo, 200, 100, RED);
        png = encode(src, ".png", &len);
        b = base_ok(png, len, NULL, 0);

        marked.watermark = (struct variant_watermark){
                .kind = VARIANT_WATERMARK_IMAGE,
                .position = VARIANT_GRAVITY_SOUTH_EAST,
                .margin = 16,
                .opacity = 0.5,
                .width = 0.25,
        };
        snprintf(marked.watermark.image, sizeof(marked.watermark.image), "%s", logo);

        o1 = render_ok(b, &plain, cache);
        o2 = render_ok(b, &marked, cache);
        d1 = decode(o1.buf, o1.size);
        d2 = decode(o2.buf, o2.size);
        /* 400 x 0.25 = 100 wide, 50 high, 16 px from the bottom right corner; nothing else. */
        n = diff_box(d1, d2, &x0, &y0, &x1, &y1);
        assert_int_equal(x0, 400 - 16 - 100);
        assert_int_equal(y0, 300 - 16 - 50);
        assert_int_equal(x1, 400 - 16);
        assert_int_equal(y1, 300 - 16);
        assert_true(n > 100 * 50 * 9 / 10);
        /* Half red over the gradient. */
        {
                double base_r = pixel(d1, 330, 260, 0), base_b = pixel(d1, 330, 260, 2);

                assert_near(pixel(d2, 330, 260, 0), (base_r + 255) / 2, 3);
                assert_near(pixel(d2, 330, 260, 2), base_b / 2, 3);
        }
        assert_int_equal(d2->Bands, 3); /* no alpha added */
        assert_int_equal(render_cache_loads(cache), 1);
        g_free(o2.buf);

        /* Other positions and sizes; the file is decoded once for all of them. */
        marked.watermark.position = VARIANT_GRAVITY_NORTH_WEST;
        marked.watermark.margin = 0;
        marked.watermark.width = 0.5;
        marked.watermark.opacity = 1.0;
        o2 = render_ok(b, &marked, cache);
        g_object_unref(d2);
        d2 = decode(o2.buf, o2.size);
        n = diff_box(d1, d2, &x0, &y0, &x1, &y1);
        assert_int_equal(x0, 0);
        assert_int_equal(y0, 0);
        assert_int_equal(x1, 200);
        assert_int_equal(y1, 100);
        assert_near(pixel(d2, 100, 50, 0), 255, 1);
        assert_near(pixel(d2, 100, 50, 1), 0, 1);
        assert_int_equal(render_cache_loads(cache), 1);
        g_free(o2.buf);

        /* A watermark too wide for the output is made smaller to fit inside the margins. */
        marked.watermark.position = VARIANT_GRAVITY_CENTRE;
        marked.watermark.margin = 100;
        marked.watermark.width = 1.0;
        o2 = render_ok(b, &marked, cache);
        g_object_unref(d2);
        d2 = decode(o2.buf, o2.size);
        n = diff_box(d1, d2, &x0, &y0, &x1, &y1);
        assert_int_equal(x1 - x0, 200); /* box 200 x 100, the mark is 2:1 */
        assert_int_equal(y1 - y0, 100);
        assert_int_equal(x0, 100);
        assert_int_equal(y0, 100);
        g_free(o2.buf);

        /* A changed file (new mtime) is decoded again; an unchanged one is not. */
        write_mark(logo, 200, 100, BLUE);
        {
                struct timespec ts[2] = { { .tv_sec = 1000000000 }, { .tv_sec = 1000000000 } };

                assert_int_equal(utimensat(AT_FDCWD, logo, ts, 0), 0);
        }
        o2 = render_ok(b, &marked, cache);
        assert_int_equal(render_cache_loads(cache), 2);
        g_object_unref(d2);
        d2 = decode(o2.buf, o2.size);
        assert_near(pixel(d2, 200, 150, 2), 255, 1);
        g_free(o2.buf);
        o2 = render_ok(b, &marked, cache);
        assert_int_equal(render_cache_loads(cache), 2);
        g_free(o2.buf);

        /* A watermark on an output with alpha keeps the alpha of the image under it. */
        {
                _cleanup_image_ VipsImage *rgba = make_gradient(100, 100, true), *out = NULL;
                _cleanup_gfree_ void *apng = NULL;
                _cleanup_base_ render_base *ba = NULL;
                struct variant v = make_variant(100, 100, VARIANT_FIT_COVER, IMAGE_FORMAT_WEBP);
                struct render_output o;

                v.mask = VARIANT_MASK_CIRCLE;
                v.watermark = marked.watermark;
                v.watermark.margin = 0;
                v.watermark.position = VARIANT_GRAVITY_NORTH;
                v.watermark.width = 0.5;
                apng = encode(rgba, ".png", &len);
                ba = base_ok(apng, len, NULL, 0);
                o = render_ok(ba, &v, cache);
                out = decode(o.buf, o.size);
                assert_int_equal(out->Bands, 4);
                assert_near(pixel(out, 0, 0, 3), 0, 1);     /* masked corner */
                assert_near(pixel(out, 50, 10, 2), 255, 8); /* blue mark at the top */
                assert_near(pixel(out, 50, 10, 3), 255, 1);
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
        rm_tree(dir);
}

static void test_watermark_text(void **state)
{
        static const double DARK[3] = { 20, 30, 40 };
        _cleanup_image_ VipsImage *src = make_solid(400, 200, DARK), *d1 = NULL, *d2 = NULL;
        _cleanup_gfree_ void *png = NULL;
        _cleanup_base_ render_base *b = NULL;
        struct variant plain = make_variant(0, 0, VARIANT_FIT_NONE, IMAGE_FORMAT_PNG);
        struct variant marked = plain;
        struct render_output o1, o2;
        int x0, y0, x1, y1;
        size_t len, n;

        png = encode(src, ".png", &len);
        b = base_ok(png, len, NULL, 0);
        marked.watermark = (struct variant_watermark){
                .kind = VARIANT_WATERMARK_TEXT,
                .text = "\xc2\xa9 Example & <Co>",
                .font = "sans 24",
                .color = { 255, 255, 0 },
                .position = VARIANT_GRAVITY_SOUTH_EAST,
                .margin = 10,
                .opacity = 1.0,
        };
        o1 = render_ok(b, &plain, NULL);
        o2 = render_ok(b, &marked, NULL);
        d1 = decode(o1.buf, o1.size);
        d2 = decode(o2.buf, o2.size);
        n = diff_box(d1, d2, &x0, &y0, &x1, &y1);
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
        o2 = render_ok(b, &marked, NULL);
        g_object_unref(d2);
        d2 = decode(o2.buf, o2.size);
        n = diff_box(d1, d2, &x0, &y0, &x1, &y1);
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
                assert_near(maxr, (20 + 255) / 2.0, 6); /* half yellow over dark */
        }
        g_free(o1.buf);
        g_free(o2.buf);
}

/* libvips' metadata of the encoded output buf (decoded header). */
static VipsImage *header_of(const struct render_output *o)
{
        VipsImage *im = vips_image_new_from_buffer(o->buf, o->size, "", NULL);

        if (!im)
                fail_msg("header: %s", vips_error_buffer());
        return im;
}

static void test_encoder_options(void **state)
{
        _cleanup_image_ VipsImage *src = make_noise(256, 192, 3);
        _cleanup_gfree_ void *png = NULL;
        _cleanup_base_ render_base *b = NULL;
        size_t len;

        png = encode(src, ".png", &len);
        b = base_ok(png, len, NULL, 0);

        /* jpeg: progressive (multiscan), chroma, quality. */
        {
                struct variant v = make_variant(0, 0, VARIANT_FIT_NONE, IMAGE_FORMAT_JPEG);
                struct render_output base_o, prog_o, o444, o420, lowq;
                _cleanup_image_ VipsImage *h1 = NULL, *h2 = NULL, *h3 = NULL, *h4 = NULL;
                const char *sub = NULL;
                int multiscan = -1;

                v.quality = 80;
                base_o = render_ok(b, &v, NULL);
                h1 = header_of(&base_o);
                VIPS_OK(vips_image_get_int(h1, "jpeg-multiscan", &multiscan));
                assert_int_equal(multiscan, 0);
                assert_int_equal(base_o.quality, 80);
                v.progressive = true;
                prog_o = render_ok(b, &v, NULL);
                h2 = header_of(&prog_o);
                VIPS_OK(vips_image_get_int(h2, "jpeg-multiscan", &multiscan));
                assert_int_equal(multiscan, 1);
                v.progressive = false;
                v.chroma = VARIANT_CHROMA_444;
                o444 = render_ok(b, &v, NULL);
                h3 = header_of(&o444);
                VIPS_OK(vips_image_get_string(h3, "jpeg-chroma-subsample", &sub));
                assert_string_equal(sub, "4:4:4");
                v.chroma = VARIANT_CHROMA_420;
                v.quality = 95; /* where libvips would pick 4:4:4 by itself */
                o420 = render_ok(b, &v, NULL);
                h4 = header_of(&o420);
                VIPS_OK(vips_image_get_string(h4, "jpeg-chroma-subsample", &sub));
                assert_string_equal(sub, "4:2:0");
                v.chroma = VARIANT_CHROMA_AUTO;
                v.quality = 20;
                lowq = render_ok(b, &v, NULL);
                assert_true(lowq.size < base_o.size);
                assert_int_equal(lowq.quality, 20);
                g_free(base_o.buf);
                g_free(prog_o.buf);
                g_free(o444.buf);
                g_free(o420.buf);
                g_free(lowq.buf);
        }

        /* png: interlaced; no quality. */
        {
                struct variant v = make_variant(0, 0, VARIANT_FIT_NONE, IMAGE_FORMAT_PNG);
                struct render_output o1, o2;
                _cleanup_image_ VipsImage *h1 = NULL, *h2 = NULL;
                int interlaced = -1;

                o1 = render_ok(b, &v, NULL);
                v.progressive = true;
                o2 = render_ok(b, &v, NULL);
                h1 = header_of(&o1);
                h2 = header_of(&o2);
                assert_false(vips_image_get_typeof(h1, "interlaced") &&
                             vips_image_get_int(h1, "interlaced", &interlaced) == 0 && interlaced);
                VIPS_OK(vips_image_get_int(h2, "interlaced", &interlaced));
                assert_int_equal(interlaced, 1);
                assert_int_equal(o1.quality, -1);
                assert_int_not_equal(o1.size, o2.size);
                g_free(o1.buf);
                g_free(o2.buf);
        }

        /* webp: lossless is pixel for pixel; effort changes the encoding, not the image. */
        {
                struct variant v = make_variant(0, 0, VARIANT_FIT_NONE, IMAGE_FORMAT_WEBP);
                struct render_output lossy, lossless, e0, e6;
                _cleanup_image_ VipsImage *dl = NULL, *dy = NULL;
                int x0, y0, x1, y1;

                lossy = render_ok(b, &v, NULL);
                v.lossless = true;
                lossless = render_ok(b, &v, NULL);
                assert_int_equal(lossless.quality, -1);
                dl = decode(lossless.buf, lossless.size);
                assert_int_equal(diff_box(dl, src, &x0, &y0, &x1, &y1), 0);
                dy = decode(lossy.buf, lossy.size);
                assert_true(diff_box(dy, src, &x0, &y0, &x1, &y1) > 1000);
                v.lossless = false;
                v.effort = 0;
                e0 = render_ok(b, &v, NULL);
                v.effort = 6;
                e6 = render_ok(b, &v, NULL);
                assert_int_not_equal(e0.size, e6.size);
                g_free(lossy.buf);
                g_free(lossless.buf);
                g_free(e0.buf);
                g_free(e6.buf);
        }

        /* avif: effort and chroma are accepted by the encoder. */
        if (have_avif_encoder()) {
                struct variant v = make_variant(64, 48, VARIANT_FIT_COVER, IMAGE_FORMAT_AVIF);
                struct render_output o;

                v.effort = 0;
                v.chroma = VARIANT_CHROMA_444;
                o = render_ok(b, &v, NULL);
                assert_int_equal(o.quality, (int)v.quality);
                g_free(o.buf);
        }

        /* gif: interlaced, encoded without a quality. */
        {
                struct variant v = make_variant(64, 48, VARIANT_FIT_COVER, IMAGE_FORMAT_GIF);
                struct render_output o;

                v.progressive = true;
                o = render_ok(b, &v, NULL);
                assert_int_equal(o.quality, -1);
                assert_int_equal(image_format_sniff(o.buf, o.size), IMAGE_FORMAT_GIF);
                g_free(o.buf);
        }
}

static void test_keep_metadata(void **state)
{
        _cleanup_image_ VipsImage *src = make_gradient(120, 90, false), *tagged = NULL;
        _cleanup_gfree_ void *jpg = NULL, *plain_jpg = NULL;
        _cleanup_base_ render_base *b = NULL, *bare = NULL;
        VipsBlob *p3 = NULL;
        const void *p3_data;
        size_t len = 0, plain_len = 0, p3_len = 0;
        static const enum image_format formats[] = { IMAGE_FORMAT_JPEG, IMAGE_FORMAT_PNG,
                                                     IMAGE_FORMAT_WEBP, IMAGE_FORMAT_AVIF };

        /* A source with a (Display P3) profile, a copyright and a private artist. */
        VIPS_OK(vips_profile_load("p3", &p3, NULL));
        p3_data = vips_area_get_data(VIPS_AREA(p3), &p3_len, NULL, NULL, NULL);
        VIPS_OK(vips_copy(src, &tagged, NULL));
        vips_image_set_blob_copy(tagged, VIPS_META_ICC_NAME, p3_data, p3_len);
        vips_image_set_string(tagged, "exif-ifd0-Copyright", "(c) Jane Doe 2024");
        vips_image_set_string(tagged, "exif-ifd0-Artist", "SECRET-ARTIST");
        VIPS_OK(vips_jpegsave_buffer(tagged, &jpg, &len, "strip", FALSE, NULL));
        vips_area_unref(VIPS_AREA(p3));
        plain_jpg = encode(src, ".jpg", &plain_len);
        b = base_ok(jpg, len, NULL, 0);
        bare = base_ok(plain_jpg, plain_len, NULL, 0);

        for (size_t i = 0; i < ELEMENTSOF(formats); i++) {
                static const unsigned keeps[] = { 0, VARIANT_KEEP_ICC, VARIANT_KEEP_COPYRIGHT,
                                                  VARIANT_KEEP_ICC | VARIANT_KEEP_COPYRIGHT };

                if (formats[i] == IMAGE_FORMAT_AVIF && !have_avif_encoder())
                        continue;
                for (size_t k = 0; k < ELEMENTSOF(keeps); k++) {
                        struct variant v = make_variant(60, 45, VARIANT_FIT_COVER, formats[i]);
                        _cleanup_image_ VipsImage *h = NULL;
                        struct render_output o;
                        const char *cr = NULL;

                        v.keep = keeps[k];
                        o = render_ok(b, &v, NULL);
                        h = header_of(&o);
                        if (!!vips_image_get_typeof(h, VIPS_META_ICC_NAME) !=
                            !!(keeps[k] & VARIANT_KEEP_ICC))
                                fail_msg("%s keep %u: ICC profile %s",
                                         image_format_name(formats[i]), keeps[k],
                                         (keeps[k] & VARIANT_KEEP_ICC) ? "missing" : "kept");
                        if (keeps[k] & VARIANT_KEEP_ICC) {
                                /* sRGB: what the pixels are now, not the source's P3. */
                                const void *icc;
                                size_t icc_len;

                                VIPS_OK(vips_image_get_blob(h, VIPS_META_ICC_NAME, &icc, &icc_len));
                                assert_non_null(memmem(icc, icc_len, "sRGB", 4));
                                assert_false(icc_len == p3_len &&
                                             memcmp(icc, p3_data, p3_len) == 0);
                        }
                        if (keeps[k] & VARIANT_KEEP_COPYRIGHT) {
                                if (vips_image_get_string(h, "exif-ifd0-Copyright", &cr) < 0)
                                        fail_msg("%s keep %u: no copyright",
                                                 image_format_name(formats[i]), keeps[k]);
                                assert_non_null(strstr(cr, "(c) Jane Doe 2024"));
                        } else {
                                assert_null(memmem(o.buf, o.size, "Jane Doe", 8));
                        }
                        /* Never anything else. */
                        assert_null(memmem(o.buf, o.size, "SECRET", 6));
                        vips_error_clear();
                        g_free(o.buf);
                }
        }

        /* Nothing to keep where the source had nothing: no profile, no EXIF made up. */
        {
                struct variant v = make_variant(60, 45, VARIANT_FIT_COVER, IMAGE_FORMAT_JPEG);
                struct render_output o;
                _cleanup_image_ VipsImage *h = NULL;

                v.keep = VARIANT_KEEP_ICC | VARIANT_KEEP_COPYRIGHT;
                o = render_ok(bare, &v, NULL);
                h = header_of(&o);
                assert_false(vips_image_get_typeof(h, VIPS_META_ICC_NAME));
                assert_null(memmem(o.buf, o.size, "Exif", 4));
                g_free(o.buf);
        }
}

static void test_max_bytes(void **state)
{
        _cleanup_image_ VipsImage *src = make_noise(400, 300, 11);
        _cleanup_gfree_ void *png = NULL;
        _cleanup_base_ render_base *b = NULL;
        struct variant v = make_variant(0, 0, VARIANT_FIT_NONE, IMAGE_FORMAT_JPEG);
        struct render_output full, fit, next;
        size_t len;

        png = encode(src, ".png", &len);
        b = base_ok(png, len, NULL, 0);
        v.quality = 95;
        full = render_ok(b, &v, NULL);
        assert_int_equal(full.quality, 95);

        /* Half the size: the highest quality that fits, no warning. */
        v.max_bytes = full.size / 2;
        fit = render_ok(b, &v, NULL);
        assert_true(fit.size <= v.max_bytes);
        assert_true(fit.quality >= VARIANT_MAX_BYTES_QUALITY_MIN && fit.quality < 95);
        assert_string_equal(fit.warning, "");
        {
                struct variant one_more = v;

                one_more.max_bytes = 0;
                one_more.quality = (unsigned)fit.quality + 1;
                next = render_ok(b, &one_more, NULL);
                assert_true(next.size > v.max_bytes);
                g_free(next.buf);
        }
        g_free(fit.buf);

        /* Already small enough: untouched. */
        v.max_bytes = full.size;
        fit = render_ok(b, &v, NULL);
        assert_int_equal(fit.quality, 95);
        assert_int_equal(fit.size, full.size);
        g_free(fit.buf);

        /* Unreachable: published at the lowest quality, with a warning... */
        v.max_bytes = 1024;
        fit = render_ok(b, &v, NULL);
        assert_int_equal(fit.quality, VARIANT_MAX_BYTES_QUALITY_MIN);
        assert_true(fit.size > 1024);
        {
                char want[256];

                snprintf(want, sizeof(want),
                         "max_bytes 1024 not reached at the lowest quality 30; published at %zu "
                         "bytes",
                         fit.size);
                assert_string_equal(fit.warning, want);
        }
        g_free(fit.buf);

        /* ...or, strict, refused for good. */
        v.max_bytes_strict = true;
        {
                struct render_output o = { .size = 7 };
                struct render_error err = {};

                assert_int_equal(render_variant_full(b, &v, NULL, &o, &err), -EFBIG);
                assert_int_equal(o.size, 7);
                assert_true(err.permanent);
                assert_non_null(strstr(err.message, "max_bytes 1024 not reached at the lowest "
                                                    "quality 30"));
        }

        /* webp and avif too. */
        v.max_bytes_strict = false;
        for (int i = 0; i < 2; i++) {
                v.format = i == 0 ? IMAGE_FORMAT_WEBP : IMAGE_FORMAT_AVIF;
                v.effort = i == 0 ? 4 : 0;
                v.max_bytes = 0;
                if (v.format == IMAGE_FORMAT_AVIF && !have_avif_encoder())
                        continue;
                next = render_ok(b, &v, NULL);
                v.max_bytes = next.size * 2 / 3;
                fit = render_ok(b, &v, NULL);
                assert_true(fit.size <= v.max_bytes);
                assert_true(fit.quality < 95 && fit.quality >= VARIANT_MAX_BYTES_QUALITY_MIN);
                g_free(fit.buf);
                g_free(next.buf);
        }
        g_free(full.buf);
}

/* An animated GIF of `n` w x h frames, frame i a solid colour COLOURS[i % 4]. */
static const double COLOURS[4][3] = {
        { 255, 0, 0 }, { 0, 255, 0 }, { 0, 0, 255 }, { 255, 255, 0 }
};

static void *make_animation(int w, int h, int n, const char *suffix, size_t *ret_len)
{
        _cleanup_free_ VipsImage **frames = calloc((size_t)n, sizeof(VipsImage *));
        _cleanup_image_ VipsImage *roll = NULL, *tagged = NULL;
        _cleanup_free_ int *delays = calloc((size_t)n, sizeof(int));
        void *buf = NULL;

        assert_non_null(frames);
        for (int i = 0; i < n; i++) {
                frames[i] = make_solid(w, h, COLOURS[i % 4]);
                delays[i] = 100 + 10 * i;
        }
        VIPS_OK(vips_arrayjoin(frames, &roll, n, "across", 1, NULL));
        for (int i = 0; i < n; i++)
                g_object_unref(frames[i]);
        VIPS_OK(vips_copy(roll, &tagged, NULL));
        vips_image_set_int(tagged, VIPS_META_PAGE_HEIGHT, h);
        vips_image_set_array_int(tagged, "delay", delays, n);
        vips_image_set_int(tagged, "loop", 0);
        VIPS_OK(vips_image_write_to_buffer(tagged, suffix, &buf, ret_len, NULL));
        return buf;
}

/* Decodes every frame of buf; asserts n frames of w x h, frame i of COLOURS[i % 4]. */
static void check_animation(const void *buf, size_t len, int w, int h, int n)
{
        _cleanup_image_ VipsImage *im =
                n > 1 ? vips_image_new_from_buffer(buf, len, "", "n", -1, NULL)
                      : vips_image_new_from_buffer(buf, len, "", NULL);

        assert_non_null(im);
        assert_int_equal(vips_image_get_n_pages(im), n);
        assert_int_equal(vips_image_get_page_height(im), h);
        assert_int_equal(im->Xsize, w);
        assert_int_equal(im->Ysize, h * n);
        for (int i = 0; i < n; i++)
                for (int k = 0; k < 3; k++)
                        assert_near(pixel(im, w / 2, i * h + h / 2, k), COLOURS[i % 4][k], 24);
}

static void test_animated(void **state)
{
        static const char *const suffixes[] = { ".gif", ".webp" };

        for (size_t s = 0; s < ELEMENTSOF(suffixes); s++) {
                _cleanup_gfree_ void *src = NULL;
                _cleanup_base_ render_base *b = NULL;
                struct variant vs[4] = {
                        make_variant(30, 20, VARIANT_FIT_COVER, IMAGE_FORMAT_WEBP),
                        make_variant(0, 0, VARIANT_FIT_NONE, IMAGE_FORMAT_GIF),
                        make_variant(30, 20, VARIANT_FIT_COVER,
                                     IMAGE_FORMAT_WEBP), /* not animated */
                        make_variant(30, 30, VARIANT_FIT_COVER, IMAGE_FORMAT_PNG),
                };
                size_t len;

                vs[0].animated = vs[1].animated = true;
                vs[3].animated = true; /* "same" may resolve to a static format: first frame */
                src = make_animation(60, 40, 5, suffixes[s], &len);
                b = base_ok(src, len, vs, ELEMENTSOF(vs));
                assert_int_equal(render_base_info(b)->pages, 5);
                assert_int_equal(render_base_info(b)->height, 40);

                for (size_t i = 0; i < ELEMENTSOF(vs); i++) {
                        struct render_output o = render_ok(b, &vs[i], NULL);
                        int w = vs[i].fit == VARIANT_FIT_NONE ? 60 : (int)vs[i].width;
                        int h = vs[i].fit == VARIANT_FIT_NONE ? 40 : (int)vs[i].height;
                        int n = vs[i].animated && variant_format_animated(vs[i].format) ? 5 : 1;

                        assert_int_equal(o.pages, n);
                        assert_int_equal(o.width, w);
                        assert_int_equal(o.height, h);
                        check_animation(o.buf, o.size, w, h, n);
                        if (n > 1) {
                                /* Delays kept. */
                                _cleanup_image_ VipsImage *im =
                                        vips_image_new_from_buffer(o.buf, o.size, "", NULL);
                                int *d = NULL, nd = 0;

                                VIPS_OK(vips_image_get_array_int(im, "delay", &d, &nd));
                                assert_int_equal(nd, 5);
                                assert_int_equal(d[4], 140);
                        }
                        g_free(o.buf);
                }
        }

        /* Limits count every frame: max_pixels over 5 frames... */
        {
                _cleanup_gfree_ void *src = NULL;
                struct variant v = make_variant(30, 20, VARIANT_FIT_COVER, IMAGE_FORMAT_WEBP);
                struct render_limits limits = { .max_pixels = 60 * 40 * 4 };
                struct render_error err = {};
                render_base *b = NULL;
                size_t len;

                src = make_animation(60, 40, 5, ".gif", &len);
                /* Without animation, one frame is within the limit. */
                assert_int_equal(render_base_new(src, len, &v, 1, &limits, &b, &err), 0);
                b = render_base_free(b);
                v.animated = true;
                assert_int_equal(render_base_new(src, len, &v, 1, &limits, &b, &err), -E2BIG);
                assert_null(b);
                assert_true(err.permanent);
                assert_non_null(strstr(err.message, "animation is 5 frames of 60x40 (12000 "
                                                    "pixels in all), over the limit of 9600"));
        }
        /* ...and the number of frames. */
        {
                _cleanup_gfree_ void *src = NULL;
                struct variant v = make_variant(2, 2, VARIANT_FIT_COVER, IMAGE_FORMAT_GIF);
                struct render_limits limits = {};
                struct render_error err = {};
                render_base *b = NULL;
                size_t len;

                v.animated = true;
                src = make_animation(2, 2, RENDER_FRAMES_MAX + 1, ".gif", &len);
                assert_int_equal(render_base_new(src, len, &v, 1, &limits, &b, &err), -E2BIG);
                assert_non_null(strstr(err.message, "animation has 1001 frames, over the limit "
                                                    "of 1000"));
        }
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
        _cleanup_image_ VipsImage *solid = make_solid(200, 100, COL);
        _cleanup_gfree_ void *png = NULL;
        _cleanup_base_ render_base *b = NULL;
        struct render_placeholder p = {};
        struct render_error err = {};
        uint8_t dc[3];
        size_t len;

        png = encode(solid, ".png", &len);
        b = base_ok(png, len, NULL, 0);
        assert_int_equal(render_placeholder(b, white, &p, &err), 0);
        assert_int_equal(strlen(p.blurhash), 28);
        assert_int_equal(p.blurhash[0], 'L'); /* 4 x 3 components: (4 - 1) + (3 - 1) 9 = 21 */
        hash_dc(p.blurhash, dc);
        assert_near(dc[0], 0x33, 1);
        assert_near(dc[1], 0x66, 1);
        assert_near(dc[2], 0xcc, 1);
        assert_int_equal(p.dominant[0], 0x33);
        assert_int_equal(p.dominant[1], 0x66);
        assert_int_equal(p.dominant[2], 0xcc);
        assert_non_null(p.data_uri);
        assert_true(strncmp(p.data_uri, "data:image/webp;base64,", 23) == 0);
        {
                gsize n = 0;
                _cleanup_gfree_ guchar *webp = g_base64_decode(p.data_uri + 23, &n);
                _cleanup_image_ VipsImage *tiny = decode(webp, n);

                assert_int_equal(image_format_sniff(webp, n), IMAGE_FORMAT_WEBP);
                assert_int_equal(tiny->Xsize, 32);
                assert_int_equal(tiny->Ysize, 16);
                assert_near(pixel(tiny, 16, 8, 2), 0xcc, 8);
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
                _cleanup_image_ VipsImage *green = make_solid(60, 120, GREEN), *ga = NULL,
                                          *red = make_solid(60, 20, RED), *ra = NULL, *src = NULL;
                _cleanup_gfree_ void *apng = NULL;
                _cleanup_base_ render_base *ba = NULL;
                static const uint8_t grey[3] = { 100, 100, 100 };

                VIPS_OK(vips_bandjoin_const1(green, &ga, 0.0, NULL));
                VIPS_OK(vips_bandjoin_const1(red, &ra, 255.0, NULL));
                VIPS_OK(vips_insert(ga, ra, &src, 0, 50, NULL));
                apng = encode(src, ".png", &len);
                ba = base_ok(apng, len, NULL, 0);
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

                        assert_near(dc[0], blurhash_linear_to_srgb(lr), 3);
                        assert_near(dc[1], blurhash_linear_to_srgb(lg), 3);
                        assert_near(dc[2], blurhash_linear_to_srgb(lg), 3);
                }
                {
                        gsize n = 0;
                        _cleanup_gfree_ guchar *webp = g_base64_decode(p.data_uri + 23, &n);
                        _cleanup_image_ VipsImage *tiny = decode(webp, n);

                        assert_int_equal(tiny->Xsize, 16);
                        assert_int_equal(tiny->Ysize, 32);
                        assert_int_equal(tiny->Bands, 4); /* alpha kept */
                }
                render_placeholder_clear(&p);
        }
}

/* ---- the real worker --------------------------------------------------------------------- */

struct worker {
        pid_t pid;
        int sock;
};

static void worker_start(struct worker *w)
{
        int sv[2];

        assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
        w->pid = fork();
        assert_true(w->pid >= 0);
        if (w->pid == 0) {
                if (sv[1] == 3)
                        fcntl(3, F_SETFD, 0);
                else if (dup2(sv[1], 3) < 0)
                        _exit(126);
                execl(IMGD_BUILD_DIR "/imgd-worker", "imgd-worker", "--threads", "2", (char *)NULL);
                _exit(127);
        }
        close(sv[1]);
        w->sock = sv[0];
        /* A hung worker fails the test instead of hanging it. */
        assert_int_equal(setsockopt(w->sock, SOL_SOCKET, SO_RCVTIMEO,
                                    &(struct timeval){ .tv_sec = 60 }, sizeof(struct timeval)),
                         0);
        /* The worker says it is ready (libvips is up) before it takes any job. */
        {
                json_t *ready = NULL;
                int rfds[WIRE_MAX_FDS];
                size_t n_rfds = 0;

                assert_int_equal(wire_recv(w->sock, &ready, rfds, &n_rfds), 0);
                assert_int_equal(n_rfds, 0);
                assert_string_equal(json_string_value(json_object_get(ready, "type")), "ready");
                assert_int_equal(json_integer_value(json_object_get(ready, "pid")), w->pid);
                json_decref(ready);
        }
}

/* Waits up to 30 s for the worker; returns its wait status. */
static int worker_wait(struct worker *w)
{
        int status = 0;

        for (int i = 0; i < 3000; i++) {
                pid_t p = waitpid(w->pid, &status, WNOHANG);

                assert_true(p >= 0);
                if (p == w->pid)
                        return status;
                usleep(10000);
        }
        kill(w->pid, SIGKILL);
        waitpid(w->pid, &status, 0);
        fail_msg("imgd-worker did not exit");
        return status;
}

static int open_tmp(const char *dir, const char *name, int flags)
{
        char path[4096];
        int fd;

        snprintf(path, sizeof(path), "%s/%s", dir, name);
        fd = open(path, flags | O_CLOEXEC, 0600);
        assert_true(fd >= 0);
        return fd;
}

static json_t *make_job(int id, const struct variant *vs, size_t n, json_int_t max_bytes)
{
        json_t *jv = json_array();

        for (size_t i = 0; i < n; i++)
                json_array_append_new(jv, variant_to_json(&vs[i]));
        return json_pack("{s:s, s:i, s:I, s:I, s:o}", "type", "job", "id", id, "max_pixels",
                         (json_int_t)100000000, "max_bytes", max_bytes, "variants", jv);
}

static json_t *worker_call(struct worker *w, json_t *job, const int *fds, size_t n_fds)
{
        json_t *reply = NULL;
        int rfds[WIRE_MAX_FDS];
        size_t n_rfds = 0;

        assert_int_equal(wire_send(w->sock, job, fds, n_fds), 0);
        assert_int_equal(wire_recv(w->sock, &reply, rfds, &n_rfds), 0);
        assert_int_equal(n_rfds, 0);
        assert_string_equal(json_string_value(json_object_get(reply, "type")), "result");
        return reply;
}

static void test_worker_end_to_end(void **state)
{
        char dir[] = "/tmp/test-render-XXXXXX";
        _cleanup_image_ VipsImage *src = make_gradient(640, 480, false);
        _cleanup_gfree_ void *jpg = NULL;
        struct variant vs[2] = {
                make_variant(120, 120, VARIANT_FIT_COVER, IMAGE_FORMAT_WEBP),
                make_variant(200, 200, VARIANT_FIT_CONTAIN, IMAGE_FORMAT_PNG),
        };
        static const unsigned want[2][2] = { { 120, 120 }, { 200, 150 } };
        char src_hex[HASH_HEX_SIZE];
        struct worker w;
        size_t len;
        int fds[3];
        json_t *job, *reply, *outputs;

        assert_non_null(mkdtemp(dir));
        jpg = encode(src, ".jpg", &len);
        hash_sha256_buf(jpg, len, src_hex);
        fds[0] = open_tmp(dir, "source.jpg", O_RDWR | O_CREAT | O_EXCL);
        assert_int_equal(write(fds[0], jpg, len), (ssize_t)len);
        fds[1] = open_tmp(dir, "out0.webp", O_RDWR | O_CREAT | O_EXCL);
        /* A stale, longer file: the worker must cut it to what it writes. */
        assert_int_equal(write(fds[1], src_hex, 64), 64);
        for (int i = 0; i < 200; i++)
                assert_int_equal(write(fds[1], jpg, 1024), 1024);
        fds[2] = open_tmp(dir, "out1.png", O_RDWR | O_CREAT | O_EXCL);

        worker_start(&w);

        job = make_job(7, vs, 2, 268435456);
        reply = worker_call(&w, job, fds, 3);
        json_decref(job);
        if (!json_is_true(json_object_get(reply, "ok")))
                fail_msg("job failed: %s", json_string_value(json_object_get(reply, "error")));
        assert_int_equal(json_integer_value(json_object_get(reply, "id")), 7);
        {
                json_t *s = json_object_get(reply, "source");

                assert_string_equal(json_string_value(json_object_get(s, "format")), "jpeg");
                assert_int_equal(json_integer_value(json_object_get(s, "width")), 640);
                assert_int_equal(json_integer_value(json_object_get(s, "height")), 480);
                assert_string_equal(json_string_value(json_object_get(s, "sha256")), src_hex);
        }
        outputs = json_object_get(reply, "outputs");
        assert_int_equal(json_array_size(outputs), 2);
        for (size_t i = 0; i < 2; i++) {
                json_t *o = json_array_get(outputs, i);
                char hex[HASH_HEX_SIZE];
                struct stat st;
                _cleanup_free_ void *data = NULL;
                _cleanup_image_ VipsImage *im = NULL;

                assert_int_equal(json_integer_value(json_object_get(o, "width")), want[i][0]);
                assert_int_equal(json_integer_value(json_object_get(o, "height")), want[i][1]);
                assert_int_equal(fstat(fds[1 + i], &st), 0);
                assert_int_equal(json_integer_value(json_object_get(o, "bytes")), st.st_size);
                assert_int_equal(hash_sha256_fd(fds[1 + i], 0, hex), 0);
                assert_string_equal(json_string_value(json_object_get(o, "sha256")), hex);

                data = malloc((size_t)st.st_size);
                assert_non_null(data);
                assert_int_equal(pread(fds[1 + i], data, (size_t)st.st_size, 0), st.st_size);
                assert_int_equal(image_format_sniff(data, (size_t)st.st_size), vs[i].format);
                im = decode(data, (size_t)st.st_size);
                assert_int_equal(im->Xsize, (int)want[i][0]);
                assert_int_equal(im->Ysize, (int)want[i][1]);
        }
        json_decref(reply);

        /* A text file: refused for good, with libvips' reason. */
        {
                int tfds[2];
                static const char text[] = "hello, this is not an image\n";

                tfds[0] = open_tmp(dir, "source.txt", O_RDWR | O_CREAT | O_EXCL);
                assert_int_equal(write(tfds[0], text, sizeof(text) - 1), (ssize_t)sizeof(text) - 1);
                tfds[1] = open_tmp(dir, "out2.png", O_RDWR | O_CREAT | O_EXCL);
                job = make_job(8, &vs[1], 1, 268435456);
                reply = worker_call(&w, job, tfds, 2);
                json_decref(job);
                assert_int_equal(json_integer_value(json_object_get(reply, "id")), 8);
                assert_true(json_is_false(json_object_get(reply, "ok")));
                assert_true(json_is_true(json_object_get(reply, "permanent")));
                assert_non_null(strstr(json_string_value(json_object_get(reply, "error")),
                                       "not a supported image"));
                json_decref(reply);
                close(tfds[0]);
                close(tfds[1]);
        }

        /* A source over max_bytes: refused for good, nothing written. */
        {
                int tfds[2];
                struct stat st;

                tfds[0] = open_tmp(dir, "source.jpg", O_RDONLY);
                tfds[1] = open_tmp(dir, "out3.png", O_RDWR | O_CREAT | O_EXCL);
                job = make_job(9, &vs[1], 1, (json_int_t)len - 1);
                reply = worker_call(&w, job, tfds, 2);
                json_decref(job);
                assert_true(json_is_false(json_object_get(reply, "ok")));
                assert_true(json_is_true(json_object_get(reply, "permanent")));
                assert_non_null(strstr(json_string_value(json_object_get(reply, "error")),
                                       "over the limit"));
                assert_int_equal(fstat(tfds[1], &st), 0);
                assert_int_equal(st.st_size, 0);
                json_decref(reply);
                close(tfds[0]);
                close(tfds[1]);
        }

        /* An output opened write-only is still read back (through /proc/self/fd). */
        {
                int tfds[2];
                char hex[HASH_HEX_SIZE];

                tfds[0] = open_tmp(dir, "source.jpg", O_RDONLY);
                tfds[1] = open_tmp(dir, "out4.png", O_WRONLY | O_CREAT | O_EXCL);
                job = make_job(10, &vs[1], 1, 268435456);
                reply = worker_call(&w, job, tfds, 2);
                json_decref(job);
                if (!json_is_true(json_object_get(reply, "ok")))
                        fail_msg("job failed: %s",
                                 json_string_value(json_object_get(reply, "error")));
                close(tfds[1]);
                tfds[1] = open_tmp(dir, "out4.png", O_RDONLY);
                assert_int_equal(hash_sha256_fd(tfds[1], 0, hex), 0);
                assert_string_equal(
                        json_string_value(json_object_get(
                                json_array_get(json_object_get(reply, "outputs"), 0), "sha256")),
                        hex);
                json_decref(reply);
                close(tfds[0]);
                close(tfds[1]);
        }

        /* The daemon goes away: the worker exits 0. */
        close(w.sock);
        {
                int status = worker_wait(&w);

                assert_true(WIFEXITED(status));
                assert_int_equal(WEXITSTATUS(status), 0);
        }

        for (size_t i = 0; i < ELEMENTSOF(fds); i++)
                close(fds[i]);
        {
                char cmd[4200];

                snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
                assert_int_equal(system(cmd), 0);
        }
}

/* Renders one job on worker w: source file src, one output per variant in dir. */
static json_t *worker_job(struct worker *w, const char *dir, const char *src, int id,
                          const struct variant *vs, size_t n, json_t *placeholder)
{
        json_t *job = make_job(id, vs, n, 268435456), *reply;
        int fds[1 + 8];

        assert_true(n <= 8);
        if (placeholder)
                json_object_set_new(job, "placeholder", placeholder);
        fds[0] = open_tmp(dir, src, O_RDONLY);
        for (size_t i = 0; i < n; i++) {
                char name[64];

                snprintf(name, sizeof(name), "out-%d-%zu", id, i);
                fds[1 + i] = open_tmp(dir, name, O_RDWR | O_CREAT | O_EXCL);
        }
        reply = worker_call(w, job, fds, 1 + n);
        json_decref(job);
        for (size_t i = 0; i < 1 + n; i++)
                close(fds[i]);
        return reply;
}

/* Output i of job id, decoded. */
static VipsImage *worker_output(const char *dir, int id, size_t i)
{
        char path[4200];
        _cleanup_free_ void *data = NULL;
        struct stat st;
        int fd;

        snprintf(path, sizeof(path), "%s/out-%d-%zu", dir, id, i);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        assert_true(fd >= 0);
        assert_int_equal(fstat(fd, &st), 0);
        data = malloc((size_t)st.st_size);
        assert_non_null(data);
        assert_int_equal(read(fd, data, (size_t)st.st_size), st.st_size);
        close(fd);
        return decode(data, (size_t)st.st_size);
}

static void assert_ok_reply(json_t *reply)
{
        if (!json_is_true(json_object_get(reply, "ok")))
                fail_msg("job failed: %s", json_string_value(json_object_get(reply, "error")));
}

/*
 * The worker's result carries the quality used and max_bytes warnings per output, and the
 * placeholder when the job asks for it; the worker decodes a watermark image once for as
 * long as the file stays the same (path, inode, size, mtime), not once per job.
 */
static void test_worker_image_options(void **state)
{
        char *dir = temp_dir();
        _cleanup_free_ char *logo = NULL, *srcpath = NULL;
        _cleanup_image_ VipsImage *noise = make_noise(300, 200, 5);
        struct variant vs[3] = {
                make_variant(0, 0, VARIANT_FIT_NONE, IMAGE_FORMAT_WEBP),
                make_variant(0, 0, VARIANT_FIT_NONE, IMAGE_FORMAT_JPEG),
                make_variant(300, 200, VARIANT_FIT_COVER, IMAGE_FORMAT_PNG),
        };
        struct timespec mtime;
        struct worker w;
        struct stat st;
        ino_t ino;
        off_t size;
        json_t *reply, *outs, *ph;

        assert_true(asprintf(&logo, "%s/logo.tif", dir) > 0);
        assert_true(asprintf(&srcpath, "%s/noise.png", dir) > 0);
        VIPS_OK(vips_image_write_to_file(noise, srcpath, NULL));
        write_mark(logo, 100, 50, RED);
        assert_int_equal(stat(logo, &st), 0);
        mtime = st.st_mtim;
        ino = st.st_ino;
        size = st.st_size;

        vs[0].quality = 70;
        vs[1].quality = 90;
        vs[1].max_bytes = 1024; /* noise: not even at quality 30 */
        vs[2].watermark = (struct variant_watermark){
                .kind = VARIANT_WATERMARK_IMAGE,
                .position = VARIANT_GRAVITY_NORTH_WEST,
                .opacity = 1.0,
                .width = 0.5,
        };
        snprintf(vs[2].watermark.image, sizeof(vs[2].watermark.image), "%s", logo);

        worker_start(&w);
        reply = worker_job(&w, dir, "noise.png", 1, vs, 3, json_true());
        assert_ok_reply(reply);
        outs = json_object_get(reply, "outputs");
        assert_int_equal(json_integer_value(json_object_get(json_array_get(outs, 0), "quality")),
                         70);
        assert_null(json_object_get(json_array_get(outs, 0), "warning"));
        assert_int_equal(json_integer_value(json_object_get(json_array_get(outs, 1), "quality")),
                         30);
        {
                char want[200];

                snprintf(want, sizeof(want),
                         "max_bytes 1024 not reached at the lowest quality 30; published at "
                         "%" JSON_INTEGER_FORMAT " bytes",
                         json_integer_value(json_object_get(json_array_get(outs, 1), "bytes")));
                assert_string_equal(
                        json_string_value(json_object_get(json_array_get(outs, 1), "warning")),
                        want);
        }
        assert_null(json_object_get(json_array_get(outs, 2), "quality")); /* png */
        ph = json_object_get(reply, "placeholder");
        assert_true(json_is_object(ph));
        assert_int_equal(json_object_size(ph), 3);
        assert_int_equal(strlen(json_string_value(json_object_get(ph, "blurhash"))), 28);
        assert_int_equal(strlen(json_string_value(json_object_get(ph, "dominant"))), 7);
        assert_int_equal(json_string_value(json_object_get(ph, "dominant"))[0], '#');
        assert_true(strncmp(json_string_value(json_object_get(ph, "data_uri")),
                            "data:image/webp;base64,", 23) == 0);
        {
                _cleanup_image_ VipsImage *o = worker_output(dir, 1, 2);

                assert_near(pixel(o, 10, 10, 0), 255, 1); /* the red mark */
                assert_near(pixel(o, 10, 10, 2), 0, 1);
        }
        json_decref(reply);

        /*
         * The file rewritten in place, blue, with its old size and mtime: the worker still
         * has it decoded and does not read it again; so the mark stays red.
         */
        write_mark(logo, 100, 50, BLUE);
        assert_int_equal(stat(logo, &st), 0);
        assert_int_equal(st.st_ino, ino);
        assert_int_equal(st.st_size, size);
        assert_int_equal(utimensat(AT_FDCWD, logo, (struct timespec[]){ mtime, mtime }, 0), 0);
        reply = worker_job(&w, dir, "noise.png", 2, &vs[2], 1, NULL);
        assert_ok_reply(reply);
        assert_null(json_object_get(reply, "placeholder")); /* not asked for */
        {
                _cleanup_image_ VipsImage *o = worker_output(dir, 2, 0);

                assert_near(pixel(o, 10, 10, 0), 255, 1);
        }
        json_decref(reply);

        /* A new mtime: decoded again, now blue. */
        mtime.tv_sec -= 100;
        assert_int_equal(utimensat(AT_FDCWD, logo, (struct timespec[]){ mtime, mtime }, 0), 0);
        reply = worker_job(&w, dir, "noise.png", 3, &vs[2], 1, json_false());
        assert_ok_reply(reply);
        assert_null(json_object_get(reply, "placeholder"));
        {
                _cleanup_image_ VipsImage *o = worker_output(dir, 3, 0);

                assert_near(pixel(o, 10, 10, 0), 0, 1);
                assert_near(pixel(o, 10, 10, 2), 255, 1);
        }
        json_decref(reply);

        /* A watermark file gone: the job fails, naming it, and may be retried. */
        assert_int_equal(unlink(logo), 0);
        reply = worker_job(&w, dir, "noise.png", 4, &vs[2], 1, NULL);
        assert_true(json_is_false(json_object_get(reply, "ok")));
        assert_true(json_is_false(json_object_get(reply, "permanent")));
        assert_non_null(strstr(json_string_value(json_object_get(reply, "error")), logo));
        json_decref(reply);

        /* A placeholder member that is not a boolean is a malformed job. */
        reply = worker_job(&w, dir, "noise.png", 5, vs, 1, json_string("yes"));
        assert_true(json_is_false(json_object_get(reply, "ok")));
        assert_non_null(strstr(json_string_value(json_object_get(reply, "error")),
                               "malformed job: bad placeholder"));
        json_decref(reply);

        close(w.sock);
        {
                int status = worker_wait(&w);

                assert_true(WIFEXITED(status));
                assert_int_equal(WEXITSTATUS(status), 0);
        }
        rm_tree(dir);
}

static void test_worker_unknown_message(void **state)
{
        struct worker w;
        json_t *msg = json_pack("{s:s}", "type", "bogus");
        int status;

        worker_start(&w);
        assert_int_equal(wire_send(w.sock, msg, NULL, 0), 0);
        json_decref(msg);
        status = worker_wait(&w);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 1);
        close(w.sock);
}

static int setup(void **state)
{
        return render_init("test-render", 0) < 0 ? -1 : 0;
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_fits_large_source),
                cmocka_unit_test(test_fits_small_source),
                cmocka_unit_test(test_circle_mask),
                cmocka_unit_test(test_circle_mask_with_alpha_and_jpeg),
                cmocka_unit_test(test_exif_orientation),
                cmocka_unit_test(test_16bit_png),
                cmocka_unit_test(test_png_shrunk_once),
                cmocka_unit_test(test_cmyk_jpeg),
                cmocka_unit_test(test_alpha_flattened_for_jpeg),
                cmocka_unit_test(test_big_jpeg_shrink_on_load),
                cmocka_unit_test(test_big_webp_scale_on_load),
                cmocka_unit_test(test_max_pixels_from_header),
                cmocka_unit_test(test_max_pixels_boundary),
                cmocka_unit_test(test_truncated_jpeg),
                cmocka_unit_test(test_truncated_png),
                cmocka_unit_test(test_png_reason_from_warning),
                cmocka_unit_test(test_progressive_jpeg_memory),
                cmocka_unit_test(test_not_an_image),
                cmocka_unit_test(test_verify),
                cmocka_unit_test(test_verify_webp),
                cmocka_unit_test(test_verify_jpeg),
                cmocka_unit_test(test_output_formats),
                cmocka_unit_test(test_metadata_stripped),
                cmocka_unit_test(test_other_sources),
                cmocka_unit_test(test_gravity),
                cmocka_unit_test(test_gravity_smart),
                cmocka_unit_test(test_watermark_image),
                cmocka_unit_test(test_watermark_text),
                cmocka_unit_test(test_encoder_options),
                cmocka_unit_test(test_keep_metadata),
                cmocka_unit_test(test_max_bytes),
                cmocka_unit_test(test_animated),
                cmocka_unit_test(test_placeholder),
                cmocka_unit_test(test_worker_end_to_end),
                cmocka_unit_test(test_worker_image_options),
                cmocka_unit_test(test_worker_unknown_message),
        };

        int r = cmocka_run_group_tests(tests, setup, NULL);
        render_shutdown();
        return r;
}
