/* SPDX-License-Identifier: MIT */
/*
 * render-fixture.c - helpers of the test-render-* programs: cleanup attributes for libvips images,
 * g_free'd memory and render bases, real images made with libvips (gradients, halves, solid
 * colours, noise), encoded and decoded in memory, pixels read back, variants made, and a render
 * checked.
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

VipsImage *renderfx_make_gradient(int w, int h, bool alpha)
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

VipsImage *renderfx_make_halves(int w, int h, const double left[3], const double right[3])
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

void *renderfx_encode(VipsImage *im, const char *suffix, size_t *ret_len)
{
        void *buf = NULL;
        size_t len = 0;

        VIPS_OK(vips_image_write_to_buffer(im, suffix, &buf, &len, NULL));
        assert_non_null(buf);
        *ret_len = len;
        return buf;
}

VipsImage *renderfx_decode(const void *buf, size_t len)
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

double renderfx_pixel(VipsImage *im, int x, int y, int band)
{
        _cleanup_gfree_ double *v = NULL;
        int n = 0;

        VIPS_OK(vips_getpoint(im, &v, &n, x, y, NULL));
        assert_true(band < n);
        return v[band];
}

void renderfx_assert_near(double got, double want, double tolerance)
{
        if (got < want - tolerance || got > want + tolerance)
                fail_msg("got %.1f, want %.1f +- %.1f", got, want, tolerance);
}

struct variant renderfx_make_variant(unsigned w, unsigned h, enum variant_fit fit,
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

render_base *renderfx_base_ok(const void *buf, size_t len, const struct variant *v, size_t n)
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

VipsImage *renderfx_render_check(render_base *b, const struct variant *v, unsigned want_w,
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
        out = renderfx_decode(buf, len);
        assert_int_equal(out->Xsize, (int)want_w);
        assert_int_equal(out->Ysize, (int)want_h);
        return out;
}

const double renderfx_RED[3] = { 255, 0, 0 }, renderfx_BLUE[3] = { 0, 0, 255 },
             renderfx_GREEN[3] = { 0, 255, 0 };

bool renderfx_have_avif_encoder(void)
{
        return vips_type_find("VipsOperation", "heifsave_buffer") != 0;
}

VipsImage *renderfx_make_solid(int w, int h, const double rgb[3])
{
        _cleanup_image_ VipsImage *blk = NULL, *lin = NULL, *u8 = NULL;
        VipsImage *out = NULL;

        VIPS_OK(vips_black(&blk, w, h, "bands", 3, NULL));
        VIPS_OK(vips_linear(blk, &lin, (double[]){ 1, 1, 1 }, (double *)rgb, 3, NULL));
        VIPS_OK(vips_cast(lin, &u8, VIPS_FORMAT_UCHAR, NULL));
        VIPS_OK(vips_copy(u8, &out, "interpretation", VIPS_INTERPRETATION_sRGB, NULL));
        return out;
}

VipsImage *renderfx_make_noise(int w, int h, int seed)
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

struct render_output renderfx_render_ok(render_base *b, const struct variant *v,
                                        render_cache *cache)
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

uint8_t *renderfx_pixels_of(VipsImage *im, size_t *ret_len)
{
        _cleanup_image_ VipsImage *u8 = NULL;
        uint8_t *p;

        VIPS_OK(vips_cast(im, &u8, VIPS_FORMAT_UCHAR, NULL));
        p = vips_image_write_to_memory(u8, ret_len);
        assert_non_null(p);
        return p;
}

size_t renderfx_diff_box(VipsImage *a, VipsImage *b, int *x0, int *y0, int *x1, int *y1)
{
        _cleanup_gfree_ uint8_t *pa = NULL, *pb = NULL;
        size_t la = 0, lb = 0, n = 0;
        int bands = a->Bands;

        assert_int_equal(a->Xsize, b->Xsize);
        assert_int_equal(a->Ysize, b->Ysize);
        assert_int_equal(a->Bands, b->Bands);
        pa = renderfx_pixels_of(a, &la);
        pb = renderfx_pixels_of(b, &lb);
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

char *renderfx_temp_dir(void)
{
        char *dir = strdup("/tmp/test-render-XXXXXX");

        assert_non_null(dir);
        assert_non_null(mkdtemp(dir));
        return dir;
}

void renderfx_rm_tree(char *dir)
{
        char cmd[4200];

        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        assert_int_equal(system(cmd), 0);
        free(dir);
}

void renderfx_write_mark(const char *path, int w, int h, const double rgb[3])
{
        _cleanup_image_ VipsImage *im = renderfx_make_solid(w, h, rgb);

        VIPS_OK(vips_tiffsave(im, path, "compression", VIPS_FOREIGN_TIFF_COMPRESSION_NONE, NULL));
}

const double renderfx_COLOURS[4][3] = {
        { 255, 0, 0 }, { 0, 255, 0 }, { 0, 0, 255 }, { 255, 255, 0 }
};

void *renderfx_make_animation(int w, int h, int n, const char *suffix, size_t *ret_len)
{
        _cleanup_free_ VipsImage **frames = calloc((size_t)n, sizeof(VipsImage *));
        _cleanup_image_ VipsImage *roll = NULL, *tagged = NULL;
        _cleanup_free_ int *delays = calloc((size_t)n, sizeof(int));
        void *buf = NULL;

        assert_non_null(frames);
        for (int i = 0; i < n; i++) {
                frames[i] = renderfx_make_solid(w, h, renderfx_COLOURS[i % 4]);
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

int renderfx_setup(void **state)
{
        return render_init("test-render", 0) < 0 ? -1 : 0;
}
