/* SPDX-License-Identifier: MIT */
/*
 * decode.c - the one decode of a source into a render_base; see render.h (render_base_new)
 * and render-private.h.
 *
 * A render_base holds one decoded source: an in-memory VipsImage, already auto-rotated and
 * converted to 8-bit sRGB (3 bands, or 4 with alpha), with no metadata at all attached (no
 * EXIF, XMP, ICC profile or orientation); beside it, what variants may keep (whether the
 * source had an ICC profile, its EXIF copyright) and, for an animated source that a variant
 * wants animated, all frames stacked vertically ("toilet roll") with their delays. Its life:
 *
 *   bytes --render_base_new()--> sniffed (allowlist) --> header read, pixel limit checked
 *         --> shrink-on-load chosen --> decoded to memory --> opaque alpha dropped
 *         --> rotated [--> no shrink-on-load (PNG, GIF, TIFF, HEIF): shrunk once to the
 *         largest size any variant needs] --> sRGB --> in memory
 *         [--> animated and wanted: frame and pixel limits over all frames checked -->
 *              every frame decoded, sRGB --> in memory]
 *   render_variant_full() reads it any number of times; render_base_free() drops it.
 *
 * Pixels are only decoded after the header passed the limit. Loaders are picked from the
 * sniffed format, never by libvips' own search, so only allowlisted decoders ever run (for
 * watermark images too: overlay.c opens them with render_open()).
 *
 * Worked around here for libvips 8.14 (Debian 12): webpsave ignores "strip" (see
 * render_webp_strip()), hence no metadata on the base; webpload allocates the whole canvas
 * while it reads the header, hence webp_check_header().
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include <vips/vips.h>
#include <webp/decode.h>
#include <webp/demux.h>

#include "shared/macro.h"
#include "worker/render-private.h"
#include "worker/render.h"

static inline void render_base_freep(render_base **p)
{
        render_base_free(*p);
}

bool render_format_allowed(enum image_format f)
{
        switch (f) {
        case IMAGE_FORMAT_JPEG:
        case IMAGE_FORMAT_PNG:
        case IMAGE_FORMAT_WEBP:
        case IMAGE_FORMAT_GIF:
        case IMAGE_FORMAT_TIFF:
        case IMAGE_FORMAT_HEIF:
        case IMAGE_FORMAT_AVIF:
                return true;
        default:
                return false;
        }
}

int render_open(const void *data, size_t size, enum image_format f, int shrink, double scale, int n,
                VipsImage **ret)
{
        void *buf = (void *)data; /* libvips' loaders take a non-const pointer; they only read */
        VipsImage *out = NULL;
        int r;

        switch (f) {
        case IMAGE_FORMAT_JPEG:
                r = vips_jpegload_buffer(buf, size, &out, "access", VIPS_ACCESS_SEQUENTIAL,
                                         "fail_on", VIPS_FAIL_ON_ERROR, "shrink", shrink, NULL);
                break;
        case IMAGE_FORMAT_PNG:
                r = vips_pngload_buffer(buf, size, &out, "access", VIPS_ACCESS_SEQUENTIAL,
                                        "fail_on", VIPS_FAIL_ON_ERROR, NULL);
                break;
        case IMAGE_FORMAT_WEBP:
                r = vips_webpload_buffer(buf, size, &out, "access", VIPS_ACCESS_SEQUENTIAL,
                                         "fail_on", VIPS_FAIL_ON_ERROR, "scale", scale, "n", n,
                                         NULL);
                break;
        case IMAGE_FORMAT_GIF:
                r = vips_gifload_buffer(buf, size, &out, "access", VIPS_ACCESS_SEQUENTIAL,
                                        "fail_on", VIPS_FAIL_ON_ERROR, "n", n, NULL);
                break;
        case IMAGE_FORMAT_TIFF:
                r = vips_tiffload_buffer(buf, size, &out, "access", VIPS_ACCESS_SEQUENTIAL,
                                         "fail_on", VIPS_FAIL_ON_ERROR, NULL);
                break;
        case IMAGE_FORMAT_HEIF:
        case IMAGE_FORMAT_AVIF:
                r = vips_heifload_buffer(buf, size, &out, "access", VIPS_ACCESS_SEQUENTIAL,
                                         "fail_on", VIPS_FAIL_ON_ERROR, NULL);
                break;
        case IMAGE_FORMAT_JXL:
                /* Only the worker's own outputs: JXL is on no source allowlist. */
                r = vips_jxlload_buffer(buf, size, &out, "access", VIPS_ACCESS_SEQUENTIAL,
                                        "fail_on", VIPS_FAIL_ON_ERROR, NULL);
                break;
        default:
                vips_error("render", "no loader for %s", image_format_name(f));
                return -1;
        }
        if (r != 0)
                return -1;
        /*
         * A successful open can leave text in the error buffer (heifload in 8.14 says "source:
         * bad seek to N" while probing); it must not show up in a later, real error.
         */
        vips_error_clear();
        *ret = out;
        return 0;
}

/* Oriented dimensions of a loaded (not yet rotated) image. */
static void render_oriented_size(VipsImage *im, double *ret_w, double *ret_h)
{
        bool swap = vips_image_get_orientation_swap(im);

        *ret_w = swap ? im->Ysize : im->Xsize;
        *ret_h = swap ? im->Xsize : im->Ysize;
}

/*
 * Opens data again with the decoder's shrink (JPEG) or scale (WebP) and, when that gives at
 * least need_w x need_h (oriented), replaces *im with it. Returns 1 when it did, 0 when the
 * image was too small (*im unchanged), or -1 with libvips' error set.
 */
static int render_try_shrunk(const void *data, size_t size, enum image_format f, int shrink,
                             double scale, double need_w, double need_h, VipsImage **im)
{
        _cleanup_image_ VipsImage *t = NULL;
        double w, h;

        if (render_open(data, size, f, shrink, scale, 1, &t) < 0)
                return -1;
        render_oriented_size(t, &w, &h);
        if (w < need_w || h < need_h)
                return 0;
        g_object_unref(*im);
        *im = TAKE_PTR(t);
        return 1;
}

/*
 * Re-opens a JPEG or WebP with the strongest shrink-on-load that still yields at least
 * need_w x need_h (oriented). *im is replaced only when a shrunk open succeeded and is big
 * enough; otherwise it is left as it is (full size). Returns 0, or -1 with libvips' error set.
 */
static int render_shrink_on_load(const void *data, size_t size, enum image_format f, double need_w,
                                 double need_h, VipsImage **im)
{
        double W, H;
        int r;

        render_oriented_size(*im, &W, &H);

        if (f == IMAGE_FORMAT_JPEG) {
                static const int shrinks[] = { 8, 4, 2 };

                for (size_t i = 0; i < ELEMENTSOF(shrinks); i++) {
                        if (render_floor(W / shrinks[i]) < need_w ||
                            render_floor(H / shrinks[i]) < need_h)
                                continue;
                        r = render_try_shrunk(data, size, f, shrinks[i], 1.0, need_w, need_h, im);
                        if (r != 0)
                                return r < 0 ? r : 0;
                }
        } else if (f == IMAGE_FORMAT_WEBP) {
                /* libwebp rounds the scaled size; try the exact scale, then one pixel more. */
                for (int extra = 0; extra <= 1; extra++) {
                        double scale = MAX((need_w + extra) / W, (need_h + extra) / H);

                        if (scale >= 1.0)
                                break;
                        r = render_try_shrunk(data, size, f, 1, scale, need_w, need_h, im);
                        if (r != 0)
                                return r < 0 ? r : 0;
                }
        }
        return 0;
}

int render_to_srgb8(VipsImage *in, VipsImage **ret)
{
        _cleanup_image_ VipsImage *col = NULL, *u8 = NULL, *bands = NULL;
        VipsImage *cur;

        if (vips_image_get_typeof(in, VIPS_META_ICC_NAME)) {
                if (vips_icc_transform(in, &col, "srgb", "embedded", TRUE, "depth", 8, NULL) < 0) {
                        /*
                         * A broken or mismatched embedded profile (an RGB profile on a grey
                         * image, say) should not lose the image: fall back to the plain
                         * conversion below, as browsers do.
                         */
                        vips_error_clear();
                        col = NULL;
                }
        } else if (in->Type == VIPS_INTERPRETATION_CMYK) {
                if (vips_icc_transform(in, &col, "srgb", "input_profile", "cmyk", "depth", 8,
                                       NULL) < 0)
                        return -1;
        }
        if (!col && vips_colourspace(in, &col, VIPS_INTERPRETATION_sRGB, NULL) < 0)
                return -1;
        cur = col;

        if (cur->BandFmt != VIPS_FORMAT_UCHAR) {
                /* "shift" maps 16-bit integers onto 8 bits instead of clipping them. */
                if (vips_cast(cur, &u8, VIPS_FORMAT_UCHAR, "shift",
                              !vips_band_format_isfloat(cur->BandFmt), NULL) < 0)
                        return -1;
                cur = u8;
        }

        if (cur->Bands > 4) {
                if (vips_extract_band(cur, &bands, 0, "n", 4, NULL) < 0)
                        return -1;
                cur = bands;
        } else if (cur->Bands < 3) {
                vips_error("render", "image has %d bands after conversion to sRGB", cur->Bands);
                return -1;
        }

        *ret = g_object_ref(cur);
        return 0;
}

/*
 * in (decoded and oriented) as 8-bit sRGB, in a copy of our own, so removing metadata cannot
 * touch an image libvips shares. All of it goes (EXIF, XMP, IPTC, ICC, orientation, ...): the
 * pixels are now plain sRGB, and some savers write whatever metadata is attached even when
 * told to strip. Returns 0 and *ret (not yet computed), or -1 with libvips' error set.
 */
static int render_plain_srgb(VipsImage *in, VipsImage **ret)
{
        _cleanup_image_ VipsImage *srgb = NULL, *copy = NULL;

        if (render_to_srgb8(in, &srgb) < 0 ||
            vips_copy(srgb, &copy, "interpretation", VIPS_INTERPRETATION_sRGB, NULL) < 0)
                return -1;
        render_remove_metadata(copy);
        *ret = TAKE_PTR(copy);
        return 0;
}

/*
 * The alpha band of in, when it has one that is opaque everywhere, is dropped: every later
 * step (premultiplied resizes above all) costs less on 3 bands, and flattening or encoding an
 * opaque alpha gives the same pixels. Checked on the decoded pixels of an 8- or 16-bit image
 * (one pass, no copy); other formats keep their alpha. Returns 0 and *ret (a new reference:
 * in itself, or in without its alpha), or -1 with libvips' error set.
 */
static int render_drop_opaque_alpha(VipsImage *in, VipsImage **ret)
{
        _cleanup_image_ VipsImage *alpha = NULL;
        double opaque, min;

        if (!vips_image_hasalpha(in) || in->Bands < 2)
                goto keep;
        if (in->BandFmt == VIPS_FORMAT_UCHAR)
                opaque = 255.0;
        else if (in->BandFmt == VIPS_FORMAT_USHORT)
                opaque = 65535.0;
        else
                goto keep;
        if (vips_extract_band(in, &alpha, in->Bands - 1, NULL) < 0 ||
            vips_min(alpha, &min, NULL) < 0)
                return -1;
        if (min < opaque)
                goto keep;
        return vips_extract_band(in, ret, 0, "n", in->Bands - 1, NULL);
keep:
        *ret = g_object_ref(in);
        return 0;
}

/*
 * Whether variant v wants the source's animation: it asks for it and its output format can
 * hold one ("same" resolves, for the GIF and WebP sources that animate, to WebP).
 */
static bool render_wants_animation(const struct variant *v)
{
        return v->animated &&
               (v->format == VARIANT_FORMAT_SAME || variant_format_animated(v->format));
}

/*
 * Decodes every frame of an animated GIF or WebP into b (frames, page height, delays, loop),
 * after checking the frame count and the pixels of all frames together against the limits.
 * Returns 0, or a negative errno with err filled in.
 */
static int render_base_animation(render_base *b, const void *data, size_t size, enum image_format f,
                                 int pages, const struct render_limits *limits,
                                 struct render_error *err)
{
        _cleanup_image_ VipsImage *im = NULL, *mem = NULL, *copy = NULL;
        uint64_t pixels;
        int *delays = NULL, n_delays = 0, page_height;

        if (pages > RENDER_FRAMES_MAX)
                return render_fail(err, -E2BIG, true,
                                   "animation has %d frames, over the limit of %d", pages,
                                   RENDER_FRAMES_MAX);
        if (render_open(data, size, f, 1, 1.0, -1, &im) < 0)
                return render_fail_vips(err, -EBADMSG, "decode animation");
        page_height = vips_image_get_page_height(im);
        if (page_height <= 0 || im->Ysize != page_height * pages)
                return render_fail(err, -EBADMSG, true,
                                   "decode animation: %d frames of %dx%d do not make %dx%d", pages,
                                   im->Xsize, page_height, im->Xsize, im->Ysize);
        pixels = (uint64_t)im->Xsize * (uint64_t)im->Ysize;
        if (limits && limits->max_pixels > 0 && pixels > limits->max_pixels)
                return render_fail(err, -E2BIG, true,
                                   "animation is %d frames of %dx%d (%" PRIu64
                                   " pixels in all), over the limit of %" PRIu64,
                                   pages, im->Xsize, page_height, pixels, limits->max_pixels);

        mem = vips_image_copy_memory(im);
        if (!mem)
                return render_fail_vips(err, -EBADMSG, "decode animation");
        if (vips_image_get_typeof(mem, "delay") &&
            vips_image_get_array_int(mem, "delay", &delays, &n_delays) < 0)
                return render_fail_vips(err, -EBADMSG, "decode animation");
        if (vips_image_get_typeof(mem, "loop") && vips_image_get_int(mem, "loop", &b->loop) < 0)
                return render_fail_vips(err, -EBADMSG, "decode animation");
        if (n_delays > 0) {
                b->delays = g_memdup2(delays, sizeof(int) * (size_t)n_delays);
                b->n_delays = n_delays;
        }
        if (render_plain_srgb(mem, &copy) < 0)
                return render_fail_vips(err, -EBADMSG, "convert animation to sRGB");
        b->frames = vips_image_copy_memory(copy);
        if (!b->frames)
                return render_fail_vips(err, -EBADMSG, "decode animation");
        b->page_height = page_height;
        return 0;
}

/*
 * A WebP's size, checked from its own headers before libvips sees it: libvips 8.14's
 * webpload allocates a buffer for the whole canvas while it reads the header, so a 4 KB
 * file claiming 16383x16383 costs a gigabyte before any limit could be applied to what it
 * reports. The canvas and each frame's own bitstream header (what libwebp allocates for,
 * which a crafted file can make disagree with the canvas) must be within the pixel limit; an
 * animation kept whole is counted over all its frames later, as GIFs are.
 */
static int webp_check_header(const void *data, size_t size, const struct render_limits *limits,
                             struct render_error *err)
{
        WebPData wd = { .bytes = data, .size = size };
        WebPDemuxer *demux;
        WebPIterator it;
        uint64_t w, h;
        int r = 0;

        if (!limits || limits->max_pixels == 0)
                return 0;
        demux = WebPDemux(&wd);
        if (!demux)
                return render_fail(err, -EBADMSG, true, "decode: not a valid WebP container");
        w = WebPDemuxGetI(demux, WEBP_FF_CANVAS_WIDTH);
        h = WebPDemuxGetI(demux, WEBP_FF_CANVAS_HEIGHT);
        if (w * h > limits->max_pixels) {
                WebPDemuxDelete(demux);
                return render_fail(err, -E2BIG, true,
                                   "image is %" PRIu64 "x%" PRIu64 " (%" PRIu64
                                   " pixels), over the limit of %" PRIu64,
                                   w, h, w * h, limits->max_pixels);
        }
        if (WebPDemuxGetFrame(demux, 1, &it)) {
                do {
                        WebPBitstreamFeatures feat;
                        uint64_t px;

                        if (WebPGetFeatures(it.fragment.bytes, it.fragment.size, &feat) !=
                            VP8_STATUS_OK) {
                                r = render_fail(err, -EBADMSG, true,
                                                "decode: WebP frame %d has a bad header",
                                                it.frame_num);
                                break;
                        }
                        px = (uint64_t)feat.width * (uint64_t)feat.height;
                        if (px > limits->max_pixels) {
                                r = render_fail(err, -E2BIG, true,
                                                "WebP frame %d is %dx%d (%" PRIu64
                                                " pixels), over the limit of %" PRIu64,
                                                it.frame_num, feat.width, feat.height, px,
                                                limits->max_pixels);
                                break;
                        }
                } while (WebPDemuxNextFrame(&it));
                WebPDemuxReleaseIterator(&it);
        }
        WebPDemuxDelete(demux);
        return r;
}

/*
 * The memory libjpeg needs for the coefficients of a progressive JPEG (it keeps every one of
 * the whole image, 64 of 2 bytes per 8x8 block of each component, whatever the shrink), read
 * from its SOF2 header: 0 for a baseline JPEG or one whose header cannot be read (the decoder
 * then says what is wrong).
 */
static uint64_t jpeg_progressive_bytes(const unsigned char *p, size_t n)
{
        size_t i = 2;

        while (i + 4 <= n) {
                unsigned marker, len;

                if (p[i] != 0xff)
                        return 0;
                marker = p[i + 1];
                if (marker == 0xff) { /* fill byte */
                        i++;
                        continue;
                }
                len = (unsigned)p[i + 2] << 8 | p[i + 3];
                if (marker == 0xd9 || marker == 0xda || len < 2)
                        return 0; /* end, or scan data before any frame header */
                if (marker == 0xc2 || marker == 0xc6 || marker == 0xca || marker == 0xce) {
                        const unsigned char *f = p + i + 4;
                        uint64_t w, h, total = 0;
                        unsigned nc, hmax = 1, vmax = 1;

                        if (i + 4 + 6 > n)
                                return 0;
                        h = (uint64_t)f[1] << 8 | f[2];
                        w = (uint64_t)f[3] << 8 | f[4];
                        nc = f[5];
                        if (nc == 0 || i + 4 + 6 + 3 * (size_t)nc > n)
                                return 0;
                        for (unsigned c = 0; c < nc; c++) {
                                hmax = MAX(hmax, (unsigned)(f[7 + 3 * c] >> 4));
                                vmax = MAX(vmax, (unsigned)(f[7 + 3 * c] & 0xf));
                        }
                        for (unsigned c = 0; c < nc; c++) {
                                unsigned hs = MAX(f[7 + 3 * c] >> 4, 1);
                                unsigned vs = MAX(f[7 + 3 * c] & 0xf, 1);
                                uint64_t bw = (w * hs + 8 * hmax - 1) / (8 * hmax);
                                uint64_t bh = (h * vs + 8 * vmax - 1) / (8 * vmax);

                                total += bw * bh * 64 * 2;
                        }
                        return total;
                }
                if (marker >= 0xc0 && marker <= 0xcf && marker != 0xc4 && marker != 0xc8 &&
                    marker != 0xcc)
                        return 0; /* a non-progressive frame */
                i += 2 + len;
        }
        return 0;
}

int render_base_new(const void *data, size_t size, const struct variant *variants,
                    size_t n_variants, const struct render_limits *limits, render_base **ret,
                    struct render_error *err)
{
        _cleanup_image_ VipsImage *im = NULL, *mem = NULL, *solid = NULL, *rot = NULL, *copy = NULL,
                                  *small = NULL;
        _cleanup_(render_base_freep) render_base *b = NULL;
        const char *copyright = NULL;
        enum image_format f;
        double W, H, need_w = 0, need_h = 0;
        bool want_animation = false;
        VipsImage *cur;
        uint64_t pixels;
        int pages = 1, r;

        render_clear_errors(); /* whatever is there is not about this image */
        f = image_format_sniff(data, size);
        if (!render_format_allowed(f)) {
                const char *loader = vips_foreign_find_load_buffer(data, size);

                if (!loader)
                        return render_fail_vips(err, -EMEDIUMTYPE, "not a supported image");
                return render_fail(err, -EMEDIUMTYPE, true,
                                   "not a supported image: format not allowed (libvips: %s)",
                                   loader);
        }

        if (f == IMAGE_FORMAT_WEBP) {
                r = webp_check_header(data, size, limits, err);
                if (r < 0)
                        return r;
        }
        if (f == IMAGE_FORMAT_JPEG && limits && limits->max_decode_bytes > 0) {
                uint64_t need = jpeg_progressive_bytes(data, size);

                if (need > limits->max_decode_bytes)
                        return render_fail(err, -E2BIG, true,
                                           "progressive JPEG needs %" PRIu64
                                           " MiB to decode, over the limit of %" PRIu64
                                           " MiB (limits.worker_memory)",
                                           (need + (1 << 20) - 1) >> 20,
                                           limits->max_decode_bytes >> 20);
        }

        /* Header only: no pixel has been decoded yet. */
        if (render_open(data, size, f, 1, 1.0, 1, &im) < 0)
                return render_fail_vips(err, -EBADMSG, "decode");

        render_oriented_size(im, &W, &H);
        pixels = (uint64_t)im->Xsize * (uint64_t)im->Ysize;
        if (limits && limits->max_pixels > 0 && pixels > limits->max_pixels)
                return render_fail(err, -E2BIG, true,
                                   "image is %dx%d (%" PRIu64
                                   " pixels), over the limit of %" PRIu64,
                                   im->Xsize, im->Ysize, pixels, limits->max_pixels);
        if (f == IMAGE_FORMAT_GIF || f == IMAGE_FORMAT_WEBP)
                pages = MAX(vips_image_get_n_pages(im), 1);

        for (size_t i = 0; i < n_variants; i++) {
                double w, h;

                render_needed_size(&variants[i], W, H, &w, &h);
                need_w = MAX(need_w, w);
                need_h = MAX(need_h, h);
                want_animation |= render_wants_animation(&variants[i]);
        }
        if (n_variants == 0) {
                need_w = W;
                need_h = H;
        }
        if (render_shrink_on_load(data, size, f, need_w, need_h, &im) < 0)
                return render_fail_vips(err, -EBADMSG, "decode");

        /* The one decode: every later step reads memory. */
        mem = vips_image_copy_memory(im);
        if (!mem)
                return render_fail_vips(err, -EBADMSG, "decode");
        g_clear_object(&im);

        b = g_try_new0(render_base, 1);
        if (!b)
                return render_fail(err, -ENOMEM, false, "out of memory");
        b->max_pixels = limits ? limits->max_pixels : 0;
        b->had_icc = vips_image_get_typeof(mem, VIPS_META_ICC_NAME) != 0;
        if (vips_image_get_typeof(mem, "exif-ifd0-Copyright") &&
            vips_image_get_string(mem, "exif-ifd0-Copyright", &copyright) == 0)
                b->copyright = g_strdup(copyright);
        vips_error_clear();

        if (render_drop_opaque_alpha(mem, &solid) < 0)
                return render_fail_vips(err, -EBADMSG, "decode");
        if (vips_autorot(solid, &rot, NULL) < 0)
                return render_fail_vips(err, -EBADMSG, "rotate");
        cur = rot;
        if (n_variants > 0 && render_wants_preshrink(f, rot->Xsize, rot->Ysize, need_w, need_h)) {
                if (render_preshrink(rot, need_w, need_h, &small) < 0)
                        return render_fail_vips(err, -EBADMSG, "shrink");
                b->ref_width = rot->Xsize;
                b->ref_height = rot->Ysize;
                cur = small;
        }
        if (render_plain_srgb(cur, &copy) < 0)
                return render_fail_vips(err, -EBADMSG, "convert to sRGB");

        b->image = vips_image_copy_memory(copy);
        if (!b->image)
                return render_fail_vips(err, -EBADMSG, "convert to sRGB");
        b->info.format = f;
        b->info.width = (unsigned)W;
        b->info.height = (unsigned)H;
        b->info.pages = (unsigned)pages;

        if (want_animation && pages > 1) {
                r = render_base_animation(b, data, size, f, pages, limits, err);
                if (r < 0)
                        return r;
        }
        *ret = TAKE_PTR(b);
        return 0;
}

render_base *render_base_free(render_base *b)
{
        if (!b)
                return NULL;
        if (b->image)
                g_object_unref(b->image);
        if (b->frames)
                g_object_unref(b->frames);
        g_free(b->delays);
        g_free(b->copyright);
        g_free(b);
        return NULL;
}

const struct render_info *render_base_info(const render_base *b)
{
        return &b->info;
}
