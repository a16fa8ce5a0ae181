/* SPDX-License-Identifier: MIT */
/*
 * verify.c - output verification (render_verify, render_verify_pages of render.h): an
 * output must be the format and size it claims and decode in full. A still WebP is checked
 * with libwebp and a JPEG with libjpeg (the decoders browsers use, and much cheaper than
 * libvips for small outputs); every other format, and animations, through libvips' own
 * loader for the format, every pixel computed.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <vips/vips.h>
#include <webp/decode.h>

#include "shared/macro.h"
#include "worker/render-private.h"
#include "worker/render.h"

/* A substring of the libvips loader's name that format f must be loaded by. */
static const char *render_loader_stem(enum image_format f)
{
        switch (f) {
        case IMAGE_FORMAT_JPEG:
                return "jpeg";
        case IMAGE_FORMAT_PNG:
                return "png";
        case IMAGE_FORMAT_WEBP:
                return "webp";
        case IMAGE_FORMAT_GIF:
                return "gif";
        case IMAGE_FORMAT_TIFF:
                return "tiff";
        case IMAGE_FORMAT_HEIF:
        case IMAGE_FORMAT_AVIF:
                return "heif";
        case IMAGE_FORMAT_JXL:
                return "jxl";
        default:
                return NULL;
        }
}

static const char *webp_status_name(VP8StatusCode st)
{
        switch (st) {
        case VP8_STATUS_OUT_OF_MEMORY:
                return "out of memory";
        case VP8_STATUS_INVALID_PARAM:
                return "invalid parameter";
        case VP8_STATUS_BITSTREAM_ERROR:
                return "bitstream error";
        case VP8_STATUS_UNSUPPORTED_FEATURE:
                return "unsupported feature";
        case VP8_STATUS_SUSPENDED:
                return "suspended";
        case VP8_STATUS_NOT_ENOUGH_DATA:
                return "truncated";
        default:
                return "error";
        }
}

/*
 * Fills err for libwebp's status st in step `what`: -ENOMEM and transient when memory ran
 * out, else -EBADMSG and permanent. Returns that errno.
 */
static int verify_fail_webp(struct render_error *err, VP8StatusCode st, const char *what)
{
        return render_fail(err, st == VP8_STATUS_OUT_OF_MEMORY ? -ENOMEM : -EBADMSG,
                           st != VP8_STATUS_OUT_OF_MEMORY, "verify: WebP %s: %s", what,
                           webp_status_name(st));
}

/*
 * Verifies a still WebP with libwebp itself, the decoder browsers use: the header's size,
 * then every pixel, alpha included. Through libvips the same check cost five times as much
 * for an avatar's small outputs (its per-image set-up outweighs their decoding).
 */
static int render_verify_webp(const void *buf, size_t size, unsigned width, unsigned height,
                              struct render_error *err)
{
        WebPDecoderConfig config;
        VP8StatusCode st;

        if (!WebPInitDecoderConfig(&config))
                return render_fail(err, -EBADMSG, true, "verify: libwebp version mismatch");
        st = WebPGetFeatures(buf, size, &config.input);
        if (st != VP8_STATUS_OK)
                return verify_fail_webp(err, st, "header");
        if (config.input.has_animation)
                return render_fail(err, -EBADMSG, true,
                                   "verify: expected a still WebP, found an animation");
        if ((unsigned)config.input.width != width || (unsigned)config.input.height != height)
                return render_fail(err, -EBADMSG, true, "verify: expected %ux%u, found %dx%d",
                                   width, height, config.input.width, config.input.height);
        config.output.colorspace = MODE_RGBA;
        st = WebPDecode(buf, size, &config);
        WebPFreeDecBuffer(&config.output);
        if (st != VP8_STATUS_OK)
                return verify_fail_webp(err, st, "decode");
        return 0;
}

/* libjpeg's error manager for render_verify_jpeg(): errors jump back, warnings are kept. */
struct verify_jpeg_errors {
        struct jpeg_error_mgr mgr;
        jmp_buf fail;
        char message[JMSG_LENGTH_MAX]; /* the first error or warning, "" while none */
};

static void verify_jpeg_error_exit(j_common_ptr cinfo)
{
        struct verify_jpeg_errors *e = (struct verify_jpeg_errors *)cinfo->err;

        if (!e->message[0])
                e->mgr.format_message(cinfo, e->message);
        longjmp(e->fail, 1);
}

static void verify_jpeg_emit_message(j_common_ptr cinfo, int level)
{
        struct verify_jpeg_errors *e = (struct verify_jpeg_errors *)cinfo->err;

        /* Level -1 is a warning: corrupt data, a premature end. Trace messages are not. */
        if (level < 0 && !e->message[0])
                e->mgr.format_message(cinfo, e->message);
}

/*
 * Verifies a JPEG with libjpeg itself: the header's size, then every scanline, with any
 * warning a failure (libjpeg only warns about a truncated or corrupt body, and fills in
 * grey). Decoded at 1/8 scale (the IDCT of the DC coefficient only, no upsampling): every
 * coefficient of every scan is still entropy-decoded, which is where damage shows. For a
 * 1600x1000 output: 1.6 ms, against 3.2 ms for a full decode here and 8.4 ms through libvips
 * (whose 1/8 decode also let a truncated file pass: there, a premature end only warns).
 */
static int render_verify_jpeg(const void *buf, size_t size, unsigned width, unsigned height,
                              struct render_error *err)
{
        struct jpeg_decompress_struct cinfo;
        struct verify_jpeg_errors e = {};
        JSAMPLE *volatile row = NULL;
        volatile int r = 0;

        cinfo.err = jpeg_std_error(&e.mgr);
        e.mgr.error_exit = verify_jpeg_error_exit;
        e.mgr.emit_message = verify_jpeg_emit_message;
        jpeg_create_decompress(&cinfo);
        if (setjmp(e.fail)) {
                r = render_fail(err, -EBADMSG, true, "verify: JPEG: %s", e.message);
                goto out;
        }
        jpeg_mem_src(&cinfo, buf, size);
        (void)jpeg_read_header(&cinfo, TRUE);
        if (cinfo.image_width != width || cinfo.image_height != height) {
                r = render_fail(err, -EBADMSG, true, "verify: expected %ux%u, found %ux%u", width,
                                height, cinfo.image_width, cinfo.image_height);
                goto out;
        }
        cinfo.scale_num = 1;
        cinfo.scale_denom = 8;
        cinfo.dct_method = JDCT_IFAST;
        cinfo.do_fancy_upsampling = FALSE;
        (void)jpeg_start_decompress(&cinfo);
        row = malloc((size_t)cinfo.output_width * (size_t)cinfo.output_components);
        if (!row) {
                r = render_fail(err, -ENOMEM, false, "verify: out of memory");
                goto out;
        }
        while (cinfo.output_scanline < cinfo.output_height && !e.message[0]) {
                JSAMPROW rows[1] = { row };

                (void)jpeg_read_scanlines(&cinfo, rows, 1);
        }
        if (!e.message[0])
                (void)jpeg_finish_decompress(&cinfo);
        if (e.message[0])
                r = render_fail(err, -EBADMSG, true, "verify: JPEG: %s", e.message);
out:
        free(row);
        jpeg_destroy_decompress(&cinfo);
        return r;
}

int render_verify_pages(const void *buf, size_t size, enum image_format f, unsigned width,
                        unsigned height, unsigned pages, struct render_error *err)
{
        _cleanup_image_ VipsImage *im = NULL;
        const char *stem = render_loader_stem(f), *loader;
        enum image_format sniffed;
        unsigned got_pages = 1, page_height;
        double avg;

        vips_error_clear();
        sniffed = image_format_sniff(buf, size);
        if (!stem || sniffed != f)
                return render_fail(err, -EBADMSG, true, "verify: expected %s, found %s",
                                   image_format_name(f), image_format_name(sniffed));
        if (pages > 1 && !variant_format_animated(f))
                return render_fail(err, -EBADMSG, true, "verify: %s has no frames",
                                   image_format_name(f));

        if (f == IMAGE_FORMAT_WEBP && pages == 1)
                return render_verify_webp(buf, size, width, height, err);
        if (f == IMAGE_FORMAT_JPEG)
                return render_verify_jpeg(buf, size, width, height, err);

        loader = vips_foreign_find_load_buffer(buf, size);
        if (!loader)
                goto fail_vips;
        if (!strcasestr(loader, stem))
                return render_fail(err, -EBADMSG, true, "verify: expected %s, libvips picks %s",
                                   image_format_name(f), loader);

        if (render_open(buf, size, f, 1, 1.0, pages > 1 ? -1 : 1, &im) < 0)
                goto fail_vips;
        if (pages > 1) {
                got_pages = (unsigned)MAX(vips_image_get_n_pages(im), 1);
                page_height = (unsigned)vips_image_get_page_height(im);
        } else {
                page_height = (unsigned)im->Ysize;
        }
        if (pages == 1 && ((unsigned)im->Xsize != width || (unsigned)im->Ysize != height))
                return render_fail(err, -EBADMSG, true, "verify: expected %ux%u, found %dx%d",
                                   width, height, im->Xsize, im->Ysize);
        if ((unsigned)im->Xsize != width || page_height != height || got_pages != pages ||
            (unsigned)im->Ysize != height * pages)
                return render_fail(err, -EBADMSG, true,
                                   "verify: expected %u frame%s of %ux%u, found %u of %dx%u", pages,
                                   pages == 1 ? "" : "s", width, height, got_pages, im->Xsize,
                                   page_height);

        /* Decode every pixel: a truncated or corrupt body fails here (fail_on error). */
        if (vips_avg(im, &avg, NULL) < 0)
                goto fail_vips;
        return 0;

fail_vips:
        /* The header promises -EBADMSG; whether it was transient is in err. */
        render_fail_vips(err, -EBADMSG, "verify");
        return -EBADMSG;
}

int render_verify(const void *buf, size_t size, enum image_format f, unsigned width,
                  unsigned height, struct render_error *err)
{
        return render_verify_pages(buf, size, f, width, height, 1, err);
}
