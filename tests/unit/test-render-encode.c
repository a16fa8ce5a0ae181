/* SPDX-License-Identifier: MIT */
/*
 * test-render-encode.c - the worker's encoding (encode.c and metadata.c, through render.h) against
 * real images made here with libvips: alpha flattening for JPEG, each output format, metadata
 * stripped or kept, encoder options, the max_bytes limit, and animated sources.
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

static void test_alpha_flattened_for_jpeg(void **state)
{
        _cleanup_image_ VipsImage *colour = renderfx_make_halves(64, 64, renderfx_BLUE,
                                                                 renderfx_GREEN),
                                  *xy = NULL, *x = NULL, *alpha = NULL, *rgba = NULL,
                                  *tagged = NULL, *out = NULL, *out_png = NULL;
        _cleanup_gfree_ void *png = NULL;
        size_t len;
        struct variant v = renderfx_make_variant(0, 0, VARIANT_FIT_NONE, IMAGE_FORMAT_JPEG);
        struct variant keep = renderfx_make_variant(0, 0, VARIANT_FIT_NONE, IMAGE_FORMAT_PNG);
        _cleanup_base_ render_base *b = NULL;

        /* Left half fully transparent (blue underneath), right half opaque green. */
        VIPS_OK(vips_xyz(&xy, 64, 64, NULL));
        VIPS_OK(vips_extract_band(xy, &x, 0, NULL));
        VIPS_OK(vips_moreeq_const1(x, &alpha, 32, NULL)); /* 255 where x >= 32, else 0 */
        VIPS_OK(vips_bandjoin2(colour, alpha, &rgba, NULL));
        VIPS_OK(vips_copy(rgba, &tagged, "interpretation", VIPS_INTERPRETATION_sRGB, NULL));
        png = renderfx_encode(tagged, ".png", &len);

        v.background[0] = 255;
        v.background[1] = 0;
        v.background[2] = 0;
        b = renderfx_base_ok(png, len, (struct variant[]){ v, keep }, 2);

        out = renderfx_render_check(b, &v, 64, 64);
        assert_int_equal(out->Bands, 3);
        /* Transparent pixels become the background colour, not the colour under them. */
        renderfx_assert_near(renderfx_pixel(out, 5, 32, 0), 255, 12);
        renderfx_assert_near(renderfx_pixel(out, 5, 32, 1), 0, 12);
        renderfx_assert_near(renderfx_pixel(out, 5, 32, 2), 0, 12);
        renderfx_assert_near(renderfx_pixel(out, 58, 32, 0), 0, 12);
        renderfx_assert_near(renderfx_pixel(out, 58, 32, 1), 255, 12);
        renderfx_assert_near(renderfx_pixel(out, 58, 32, 2), 0, 12);

        /* PNG keeps the alpha as it was. */
        out_png = renderfx_render_check(b, &keep, 64, 64);
        assert_int_equal(out_png->Bands, 4);
        assert_int_equal((int)renderfx_pixel(out_png, 5, 32, 3), 0);
        assert_int_equal((int)renderfx_pixel(out_png, 58, 32, 3), 255);
}

static void test_output_formats(void **state)
{
        _cleanup_image_ VipsImage *src = renderfx_make_gradient(320, 240, false);
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

        png = renderfx_encode(src, ".png", &len);
        for (size_t i = 0; i < ELEMENTSOF(cases); i++)
                vs[i] = renderfx_make_variant(64, 48, VARIANT_FIT_COVER, cases[i].format);
        b = renderfx_base_ok(png, len, vs, ELEMENTSOF(vs));

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_gfree_ void *buf = NULL;
                _cleanup_image_ VipsImage *out = NULL;
                struct render_error err = {};
                unsigned w = 0, h = 0;
                size_t n = 0;
                int r;

                r = render_variant(b, &vs[i], &buf, &n, &w, &h, &err);
                if (cases[i].format == IMAGE_FORMAT_AVIF && !renderfx_have_avif_encoder()) {
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
                out = renderfx_decode(buf, n);
                assert_int_equal(out->Xsize, 64);
                assert_int_equal(out->Ysize, 48);
                /* Metadata is stripped: no EXIF, no ICC profile. */
                assert_false(vips_image_get_typeof(out, VIPS_META_EXIF_NAME));
                assert_false(vips_image_get_typeof(out, VIPS_META_ICC_NAME));
                /* The centre keeps its colour in every format. */
                renderfx_assert_near(renderfx_pixel(out, 32, 24, 0), 127, 12);
                renderfx_assert_near(renderfx_pixel(out, 32, 24, 1), 127, 12);
                renderfx_assert_near(renderfx_pixel(out, 32, 24, 2), 128, 12);
        }

        /* Formats imgd cannot write are refused, and "same" must be resolved before. */
        {
                struct variant tiff =
                        renderfx_make_variant(64, 48, VARIANT_FIT_COVER, IMAGE_FORMAT_TIFF);
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
        _cleanup_image_ VipsImage *src = renderfx_make_gradient(120, 90, false), *tagged = NULL;
        _cleanup_gfree_ void *jpg = NULL;
        size_t len = 0;
        struct variant vs[4] = {
                renderfx_make_variant(60, 45, VARIANT_FIT_COVER, IMAGE_FORMAT_JPEG),
                renderfx_make_variant(60, 45, VARIANT_FIT_COVER, IMAGE_FORMAT_PNG),
                renderfx_make_variant(60, 45, VARIANT_FIT_COVER, IMAGE_FORMAT_WEBP),
                renderfx_make_variant(60, 45, VARIANT_FIT_COVER, IMAGE_FORMAT_AVIF),
        };
        _cleanup_base_ render_base *b = NULL;

        /* A source carrying EXIF and XMP with something private in them. */
        VIPS_OK(vips_copy(src, &tagged, NULL));
        vips_image_set_string(tagged, "exif-ifd0-Artist", "SECRET-ARTIST");
        vips_image_set_blob_copy(tagged, VIPS_META_XMP_NAME, xmp, sizeof(xmp) - 1);
        VIPS_OK(vips_jpegsave_buffer(tagged, &jpg, &len, "strip", FALSE, NULL));
        assert_non_null(memmem(jpg, len, "SECRET-ARTIST", 13));
        assert_non_null(memmem(jpg, len, "SECRET-XMP", 10));

        b = renderfx_base_ok(jpg, len, vs, ELEMENTSOF(vs));
        for (size_t i = 0; i < ELEMENTSOF(vs); i++) {
                _cleanup_gfree_ void *buf = NULL;
                _cleanup_image_ VipsImage *out = NULL;
                struct render_error err = {};
                unsigned w = 0, h = 0;
                size_t n = 0;

                if (vs[i].format == IMAGE_FORMAT_AVIF && !renderfx_have_avif_encoder())
                        continue;
                if (render_variant(b, &vs[i], &buf, &n, &w, &h, &err) < 0)
                        fail_msg("%s: %s", image_format_name(vs[i].format), err.message);
                /* Nothing of it in the bytes, nor any EXIF/XMP block at all. */
                assert_null(memmem(buf, n, "SECRET", 6));
                assert_null(memmem(buf, n, "Exif", 4));
                assert_null(memmem(buf, n, "EXIF", 4));
                assert_null(memmem(buf, n, "xmpmeta", 7));
                out = renderfx_decode(buf, n);
                assert_false(vips_image_get_typeof(out, VIPS_META_EXIF_NAME));
                assert_false(vips_image_get_typeof(out, VIPS_META_XMP_NAME));
                assert_int_equal(render_verify(buf, n, vs[i].format, 60, 45, &err), 0);
        }
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
        _cleanup_image_ VipsImage *src = renderfx_make_noise(256, 192, 3);
        _cleanup_gfree_ void *png = NULL;
        _cleanup_base_ render_base *b = NULL;
        size_t len;

        png = renderfx_encode(src, ".png", &len);
        b = renderfx_base_ok(png, len, NULL, 0);

        /* jpeg: progressive (multiscan), chroma, quality. */
        {
                struct variant v = renderfx_make_variant(0, 0, VARIANT_FIT_NONE, IMAGE_FORMAT_JPEG);
                struct render_output base_o, prog_o, o444, o420, lowq;
                _cleanup_image_ VipsImage *h1 = NULL, *h2 = NULL, *h3 = NULL, *h4 = NULL;
                const char *sub = NULL;
                int multiscan = -1;

                v.quality = 80;
                base_o = renderfx_render_ok(b, &v, NULL);
                h1 = header_of(&base_o);
                VIPS_OK(vips_image_get_int(h1, "jpeg-multiscan", &multiscan));
                assert_int_equal(multiscan, 0);
                assert_int_equal(base_o.quality, 80);
                v.progressive = true;
                prog_o = renderfx_render_ok(b, &v, NULL);
                h2 = header_of(&prog_o);
                VIPS_OK(vips_image_get_int(h2, "jpeg-multiscan", &multiscan));
                assert_int_equal(multiscan, 1);
                v.progressive = false;
                v.chroma = VARIANT_CHROMA_444;
                o444 = renderfx_render_ok(b, &v, NULL);
                h3 = header_of(&o444);
                VIPS_OK(vips_image_get_string(h3, "jpeg-chroma-subsample", &sub));
                assert_string_equal(sub, "4:4:4");
                v.chroma = VARIANT_CHROMA_420;
                v.quality = 95; /* where libvips would pick 4:4:4 by itself */
                o420 = renderfx_render_ok(b, &v, NULL);
                h4 = header_of(&o420);
                VIPS_OK(vips_image_get_string(h4, "jpeg-chroma-subsample", &sub));
                assert_string_equal(sub, "4:2:0");
                v.chroma = VARIANT_CHROMA_AUTO;
                v.quality = 20;
                lowq = renderfx_render_ok(b, &v, NULL);
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
                struct variant v = renderfx_make_variant(0, 0, VARIANT_FIT_NONE, IMAGE_FORMAT_PNG);
                struct render_output o1, o2;
                _cleanup_image_ VipsImage *h1 = NULL, *h2 = NULL;
                int interlaced = -1;

                o1 = renderfx_render_ok(b, &v, NULL);
                v.progressive = true;
                o2 = renderfx_render_ok(b, &v, NULL);
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
                struct variant v = renderfx_make_variant(0, 0, VARIANT_FIT_NONE, IMAGE_FORMAT_WEBP);
                struct render_output lossy, lossless, e0, e6;
                _cleanup_image_ VipsImage *dl = NULL, *dy = NULL;
                int x0, y0, x1, y1;

                lossy = renderfx_render_ok(b, &v, NULL);
                v.lossless = true;
                lossless = renderfx_render_ok(b, &v, NULL);
                assert_int_equal(lossless.quality, -1);
                dl = renderfx_decode(lossless.buf, lossless.size);
                assert_int_equal(renderfx_diff_box(dl, src, &x0, &y0, &x1, &y1), 0);
                dy = renderfx_decode(lossy.buf, lossy.size);
                assert_true(renderfx_diff_box(dy, src, &x0, &y0, &x1, &y1) > 1000);
                v.lossless = false;
                v.effort = 0;
                e0 = renderfx_render_ok(b, &v, NULL);
                v.effort = 6;
                e6 = renderfx_render_ok(b, &v, NULL);
                assert_int_not_equal(e0.size, e6.size);
                g_free(lossy.buf);
                g_free(lossless.buf);
                g_free(e0.buf);
                g_free(e6.buf);
        }

        /* avif: effort and chroma are accepted by the encoder. */
        if (renderfx_have_avif_encoder()) {
                struct variant v =
                        renderfx_make_variant(64, 48, VARIANT_FIT_COVER, IMAGE_FORMAT_AVIF);
                struct render_output o;

                v.effort = 0;
                v.chroma = VARIANT_CHROMA_444;
                o = renderfx_render_ok(b, &v, NULL);
                assert_int_equal(o.quality, (int)v.quality);
                g_free(o.buf);
        }

        /* gif: interlaced, encoded without a quality. */
        {
                struct variant v =
                        renderfx_make_variant(64, 48, VARIANT_FIT_COVER, IMAGE_FORMAT_GIF);
                struct render_output o;

                v.progressive = true;
                o = renderfx_render_ok(b, &v, NULL);
                assert_int_equal(o.quality, -1);
                assert_int_equal(image_format_sniff(o.buf, o.size), IMAGE_FORMAT_GIF);
                g_free(o.buf);
        }
}

static void test_keep_metadata(void **state)
{
        _cleanup_image_ VipsImage *src = renderfx_make_gradient(120, 90, false), *tagged = NULL;
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
        plain_jpg = renderfx_encode(src, ".jpg", &plain_len);
        b = renderfx_base_ok(jpg, len, NULL, 0);
        bare = renderfx_base_ok(plain_jpg, plain_len, NULL, 0);

        for (size_t i = 0; i < ELEMENTSOF(formats); i++) {
                static const unsigned keeps[] = { 0, VARIANT_KEEP_ICC, VARIANT_KEEP_COPYRIGHT,
                                                  VARIANT_KEEP_ICC | VARIANT_KEEP_COPYRIGHT };

                if (formats[i] == IMAGE_FORMAT_AVIF && !renderfx_have_avif_encoder())
                        continue;
                for (size_t k = 0; k < ELEMENTSOF(keeps); k++) {
                        struct variant v =
                                renderfx_make_variant(60, 45, VARIANT_FIT_COVER, formats[i]);
                        _cleanup_image_ VipsImage *h = NULL;
                        struct render_output o;
                        const char *cr = NULL;

                        v.keep = keeps[k];
                        o = renderfx_render_ok(b, &v, NULL);
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
                struct variant v =
                        renderfx_make_variant(60, 45, VARIANT_FIT_COVER, IMAGE_FORMAT_JPEG);
                struct render_output o;
                _cleanup_image_ VipsImage *h = NULL;

                v.keep = VARIANT_KEEP_ICC | VARIANT_KEEP_COPYRIGHT;
                o = renderfx_render_ok(bare, &v, NULL);
                h = header_of(&o);
                assert_false(vips_image_get_typeof(h, VIPS_META_ICC_NAME));
                assert_null(memmem(o.buf, o.size, "Exif", 4));
                g_free(o.buf);
        }
}

static void test_max_bytes(void **state)
{
        _cleanup_image_ VipsImage *src = renderfx_make_noise(400, 300, 11);
        _cleanup_gfree_ void *png = NULL;
        _cleanup_base_ render_base *b = NULL;
        struct variant v = renderfx_make_variant(0, 0, VARIANT_FIT_NONE, IMAGE_FORMAT_JPEG);
        struct render_output full, fit, next;
        size_t len;

        png = renderfx_encode(src, ".png", &len);
        b = renderfx_base_ok(png, len, NULL, 0);
        v.quality = 95;
        full = renderfx_render_ok(b, &v, NULL);
        assert_int_equal(full.quality, 95);

        /* Half the size: the highest quality that fits, no warning. */
        v.max_bytes = full.size / 2;
        fit = renderfx_render_ok(b, &v, NULL);
        assert_true(fit.size <= v.max_bytes);
        assert_true(fit.quality >= VARIANT_MAX_BYTES_QUALITY_MIN && fit.quality < 95);
        assert_string_equal(fit.warning, "");
        {
                struct variant one_more = v;

                one_more.max_bytes = 0;
                one_more.quality = (unsigned)fit.quality + 1;
                next = renderfx_render_ok(b, &one_more, NULL);
                assert_true(next.size > v.max_bytes);
                g_free(next.buf);
        }
        g_free(fit.buf);

        /* Already small enough: untouched. */
        v.max_bytes = full.size;
        fit = renderfx_render_ok(b, &v, NULL);
        assert_int_equal(fit.quality, 95);
        assert_int_equal(fit.size, full.size);
        g_free(fit.buf);

        /* Unreachable: published at the lowest quality, with a warning... */
        v.max_bytes = 1024;
        fit = renderfx_render_ok(b, &v, NULL);
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
                if (v.format == IMAGE_FORMAT_AVIF && !renderfx_have_avif_encoder())
                        continue;
                next = renderfx_render_ok(b, &v, NULL);
                v.max_bytes = next.size * 2 / 3;
                fit = renderfx_render_ok(b, &v, NULL);
                assert_true(fit.size <= v.max_bytes);
                assert_true(fit.quality < 95 && fit.quality >= VARIANT_MAX_BYTES_QUALITY_MIN);
                g_free(fit.buf);
                g_free(next.buf);
        }
        g_free(full.buf);
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
                        renderfx_assert_near(renderfx_pixel(im, w / 2, i * h + h / 2, k),
                                             renderfx_COLOURS[i % 4][k], 24);
}

static void test_animated(void **state)
{
        static const char *const suffixes[] = { ".gif", ".webp" };

        for (size_t s = 0; s < ELEMENTSOF(suffixes); s++) {
                _cleanup_gfree_ void *src = NULL;
                _cleanup_base_ render_base *b = NULL;
                struct variant vs[4] = {
                        renderfx_make_variant(30, 20, VARIANT_FIT_COVER, IMAGE_FORMAT_WEBP),
                        renderfx_make_variant(0, 0, VARIANT_FIT_NONE, IMAGE_FORMAT_GIF),
                        renderfx_make_variant(30, 20, VARIANT_FIT_COVER,
                                              IMAGE_FORMAT_WEBP), /* not animated */
                        renderfx_make_variant(30, 30, VARIANT_FIT_COVER, IMAGE_FORMAT_PNG),
                };
                size_t len;

                vs[0].animated = vs[1].animated = true;
                vs[3].animated = true; /* "same" may resolve to a static format: first frame */
                src = renderfx_make_animation(60, 40, 5, suffixes[s], &len);
                b = renderfx_base_ok(src, len, vs, ELEMENTSOF(vs));
                assert_int_equal(render_base_info(b)->pages, 5);
                assert_int_equal(render_base_info(b)->height, 40);

                for (size_t i = 0; i < ELEMENTSOF(vs); i++) {
                        struct render_output o = renderfx_render_ok(b, &vs[i], NULL);
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
                struct variant v =
                        renderfx_make_variant(30, 20, VARIANT_FIT_COVER, IMAGE_FORMAT_WEBP);
                struct render_limits limits = { .max_pixels = 60 * 40 * 4 };
                struct render_error err = {};
                render_base *b = NULL;
                size_t len;

                src = renderfx_make_animation(60, 40, 5, ".gif", &len);
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
                struct variant v = renderfx_make_variant(2, 2, VARIANT_FIT_COVER, IMAGE_FORMAT_GIF);
                struct render_limits limits = {};
                struct render_error err = {};
                render_base *b = NULL;
                size_t len;

                v.animated = true;
                src = renderfx_make_animation(2, 2, RENDER_FRAMES_MAX + 1, ".gif", &len);
                assert_int_equal(render_base_new(src, len, &v, 1, &limits, &b, &err), -E2BIG);
                assert_non_null(strstr(err.message, "animation has 1001 frames, over the limit "
                                                    "of 1000"));
        }
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_alpha_flattened_for_jpeg),
                cmocka_unit_test(test_output_formats),
                cmocka_unit_test(test_metadata_stripped),
                cmocka_unit_test(test_encoder_options),
                cmocka_unit_test(test_keep_metadata),
                cmocka_unit_test(test_max_bytes),
                cmocka_unit_test(test_animated),
        };

        int r = cmocka_run_group_tests(tests, renderfx_setup, NULL);
        render_shutdown();
        return r;
}
