/* SPDX-License-Identifier: MIT */
/*
 * test-render-verify.c - the worker's verification of what it wrote (verify.c, through render.h):
 * good outputs pass, junk and damaged JPEG and WebP (animated included) fail.
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
        _cleanup_image_ VipsImage *src = renderfx_make_gradient(200, 150, false);
        _cleanup_gfree_ void *jpg = NULL, *png = NULL, *outjpg = NULL;
        struct variant vp = renderfx_make_variant(100, 100, VARIANT_FIT_CONTAIN, IMAGE_FORMAT_PNG);
        struct variant vj = renderfx_make_variant(100, 100, VARIANT_FIT_CONTAIN, IMAGE_FORMAT_JPEG);
        _cleanup_base_ render_base *b = NULL;
        struct render_error err = {};
        size_t len, plen = 0, jlen = 0;
        unsigned w = 0, h = 0;

        jpg = renderfx_encode(src, ".jpg", &len);
        b = renderfx_base_ok(jpg, len, (struct variant[]){ vp, vj }, 2);
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
        _cleanup_image_ VipsImage *src = renderfx_make_gradient(640, 480, false);
        _cleanup_gfree_ unsigned char *png = NULL;
        struct variant vj = renderfx_make_variant(400, 300, VARIANT_FIT_CONTAIN, IMAGE_FORMAT_JPEG);
        _cleanup_base_ render_base *b = NULL;
        struct render_error err = {};
        size_t len;

        png = renderfx_encode(src, ".png", &len);
        b = renderfx_base_ok(png, len, &vj, 1);
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

/* A still WebP is verified by libwebp itself: every failure the libvips path catches. */
static void test_verify_webp(void **state)
{
        _cleanup_image_ VipsImage *src = renderfx_make_gradient(200, 150, true);
        _cleanup_gfree_ void *jpg = NULL, *webp = NULL, *anim = NULL;
        struct variant vw = renderfx_make_variant(100, 100, VARIANT_FIT_COVER, IMAGE_FORMAT_WEBP);
        _cleanup_base_ render_base *b = NULL;
        struct render_error err = {};
        size_t len, wlen = 0, alen = 0;
        unsigned w = 0, h = 0;

        vw.mask = VARIANT_MASK_CIRCLE; /* an alpha channel, decoded too */
        jpg = renderfx_encode(src, ".png", &len);
        b = renderfx_base_ok(jpg, len, &vw, 1);
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
        anim = renderfx_make_animation(60, 40, 3, ".webp", &alen);
        assert_int_equal(render_verify(anim, alen, IMAGE_FORMAT_WEBP, 60, 40, &err), -EBADMSG);
        assert_string_equal(err.message, "verify: expected a still WebP, found an animation");
        assert_int_equal(render_verify_pages(anim, alen, IMAGE_FORMAT_WEBP, 60, 40, 3, &err), 0);
        assert_string_equal(vips_error_buffer(), "");
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_verify),
                cmocka_unit_test(test_verify_webp),
                cmocka_unit_test(test_verify_jpeg),
        };

        int r = cmocka_run_group_tests(tests, renderfx_setup, NULL);
        render_shutdown();
        return r;
}
