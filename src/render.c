/* SPDX-License-Identifier: MIT */
/*
 * render.c - decoding, resizing, masking and encoding with libvips; see render.h.
 *
 * A render_base holds one decoded source: an in-memory VipsImage, already auto-rotated and
 * converted to 8-bit sRGB (3 bands, or 4 with alpha), with no metadata at all attached (no
 * EXIF, XMP, ICC profile or orientation). Its life:
 *
 *   bytes --render_base_new()--> sniffed (allowlist) --> header read, pixel limit checked
 *         --> shrink-on-load chosen --> decoded to memory --> rotated, sRGB --> in memory
 *   render_variant() reads it any number of times; render_base_free() drops it.
 *
 * Pixels are only decoded after the header passed the limit. Loaders are picked from the
 * sniffed format, never by libvips' own search, so only allowlisted decoders ever run.
 *
 * libvips' error buffer is global: every failing call is followed right away by
 * vips_error_buffer_copy(), which takes the text and clears the buffer. Some successful
 * calls leave text behind too (heifload), so the buffer is also cleared when an entry point
 * starts and after every successful open.
 *
 * Worked around here for libvips 8.14 (Debian 12): webpsave ignores "strip" (see
 * render_webp_strip()); hence also no metadata on the base.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <vips/vips.h>

#include "imgd/macro.h"
#include "imgd/render.h"

struct render_base {
        struct render_info info;
        VipsImage *image; /* in memory, oriented, 8-bit sRGB, 3 or 4 bands */
};

static inline void render_image_unrefp(VipsImage **p)
{
        if (*p)
                g_object_unref(*p);
}
#define _cleanup_image_ _cleanup_(render_image_unrefp)

static inline void render_gfreep(void *p)
{
        g_free(*(void **)p);
}
#define _cleanup_gfree_ _cleanup_(render_gfreep)

/* Fills err with a printf-style message; returns r. */
_printf_(4, 5) static int render_fail(struct render_error *err, int r, bool permanent,
                                      const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(err->message, sizeof(err->message), fmt, ap);
        va_end(ap);
        err->permanent = permanent;
        return r;
}

/*
 * Takes (and clears) libvips' error buffer into err as "<what>: <text>", its lines joined
 * with "; ". An allocation failure becomes -ENOMEM and transient; anything else returns r
 * and is permanent (the same input fails the same way).
 */
static int render_fail_vips(struct render_error *err, int r, const char *what)
{
        _cleanup_gfree_ char *text = vips_error_buffer_copy();
        char joined[sizeof(err->message)];
        size_t n = 0;

        for (const char *s = text ? text : ""; *s && n + 3 < sizeof(joined); s++) {
                if (*s != '\n') {
                        joined[n++] = *s;
                } else if (s[1] != '\0') {
                        joined[n++] = ';';
                        joined[n++] = ' ';
                }
        }
        joined[n] = '\0';
        if (n == 0)
                snprintf(joined, sizeof(joined), "unknown libvips error");

        if (strstr(joined, "out of memory") || strstr(joined, "failed to allocate"))
                return render_fail(err, -ENOMEM, false, "%s: %s", what, joined);
        return render_fail(err, r, true, "%s: %s", what, joined);
}

int render_init(const char *argv0, unsigned threads)
{
        if (VIPS_INIT(argv0) != 0) {
                vips_error_clear();
                return -EIO;
        }
        if (threads > 0)
                vips_concurrency_set((int)threads);
        /* One decode per job and no sharing between jobs: the cache would only hold memory. */
        vips_cache_set_max(0);
        vips_block_untrusted_set(TRUE);
        return 0;
}

void render_shutdown(void)
{
        vips_shutdown();
}

static bool render_format_allowed(enum image_format f)
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

/*
 * Opens data with the loader for format f, lazily: only the header is read here, pixels are
 * decoded when the image is first computed. shrink (JPEG) and scale (WebP) ask the decoder
 * for a smaller image. Returns 0 and *ret, or -1 with libvips' error buffer set.
 */
static int render_open(const void *data, size_t size, enum image_format f, int shrink, double scale,
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
                                         "fail_on", VIPS_FAIL_ON_ERROR, "scale", scale, NULL);
                break;
        case IMAGE_FORMAT_GIF:
                r = vips_gifload_buffer(buf, size, &out, "access", VIPS_ACCESS_SEQUENTIAL,
                                        "fail_on", VIPS_FAIL_ON_ERROR, NULL);
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

/*
 * Rounding for the non-negative sizes below, without libm (imgd-render does not link it):
 * sizes are at most VIPS_MAX_COORD, far inside what uint64_t holds exactly.
 */
static double render_floor(double x)
{
        return (double)(uint64_t)x;
}

static double render_ceil(double x)
{
        double t = render_floor(x);

        return t < x ? t + 1.0 : t;
}

/* Oriented dimensions of a loaded (not yet rotated) image. */
static void render_oriented_size(VipsImage *im, double *ret_w, double *ret_h)
{
        bool swap = vips_image_get_orientation_swap(im);

        *ret_w = swap ? im->Ysize : im->Xsize;
        *ret_h = swap ? im->Xsize : im->Ysize;
}

/*
 * The size that variant v needs from a W x H (oriented) source, never more than the source:
 * decoding at this size loses nothing the variant can show.
 */
static void render_needed_size(const struct variant *v, double W, double H, double *need_w,
                               double *need_h)
{
        double sx = 1.0, sy = 1.0;

        if (v->fit != VARIANT_FIT_NONE && v->width > 0 && v->height > 0) {
                sx = v->width / W;
                sy = v->height / H;
                switch (v->fit) {
                case VARIANT_FIT_COVER:
                        sx = sy = MAX(sx, sy);
                        break;
                case VARIANT_FIT_CONTAIN:
                case VARIANT_FIT_INSIDE:
                        sx = sy = MIN(sx, sy);
                        break;
                default: /* fill: each axis on its own */
                        break;
                }
        }
        *need_w = render_ceil(W * MIN(sx, 1.0));
        *need_h = render_ceil(H * MIN(sy, 1.0));
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

        render_oriented_size(*im, &W, &H);

        if (f == IMAGE_FORMAT_JPEG) {
                static const int shrinks[] = {8, 4, 2};

                for (size_t i = 0; i < ELEMENTSOF(shrinks); i++) {
                        _cleanup_image_ VipsImage *t = NULL;
                        double w, h;

                        if (render_floor(W / shrinks[i]) < need_w ||
                            render_floor(H / shrinks[i]) < need_h)
                                continue;
                        if (render_open(data, size, f, shrinks[i], 1.0, &t) < 0)
                                return -1;
                        render_oriented_size(t, &w, &h);
                        if (w >= need_w && h >= need_h) {
                                g_object_unref(*im);
                                *im = TAKE_PTR(t);
                                return 0;
                        }
                }
        } else if (f == IMAGE_FORMAT_WEBP) {
                /* libwebp rounds the scaled size; try the exact scale, then one pixel more. */
                for (int extra = 0; extra <= 1; extra++) {
                        _cleanup_image_ VipsImage *t = NULL;
                        double scale = MAX((need_w + extra) / W, (need_h + extra) / H);
                        double w, h;

                        if (scale >= 1.0)
                                break;
                        if (render_open(data, size, f, 1, scale, &t) < 0)
                                return -1;
                        render_oriented_size(t, &w, &h);
                        if (w >= need_w && h >= need_h) {
                                g_object_unref(*im);
                                *im = TAKE_PTR(t);
                                return 0;
                        }
                }
        }
        return 0;
}

/*
 * Converts a decoded, oriented image to 8-bit sRGB with or without alpha: through its
 * embedded ICC profile when it has one, through libvips' CMYK profile for CMYK, else by
 * libvips' colour space conversion. Returns 0 and *ret, or -1 with libvips' error set.
 */
static int render_to_srgb8(VipsImage *in, VipsImage **ret)
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

/* Removes every metadata field from im (the built-in header fields stay). */
static void render_remove_metadata(VipsImage *im)
{
        gchar **fields = vips_image_get_fields(im);

        for (size_t i = 0; fields && fields[i]; i++)
                vips_image_remove(im, fields[i]);
        g_strfreev(fields);
}

int render_base_new(const void *data, size_t size, const struct variant *variants,
                    size_t n_variants, const struct render_limits *limits, render_base **ret,
                    struct render_error *err)
{
        _cleanup_image_ VipsImage *im = NULL, *mem = NULL, *rot = NULL, *srgb = NULL, *copy = NULL;
        enum image_format f;
        double W, H, need_w = 0, need_h = 0;
        uint64_t pixels;
        render_base *b;

        vips_error_clear(); /* whatever is there is not about this image */
        f = image_format_sniff(data,
                               size < IMAGE_FORMAT_SNIFF_BYTES ? size : IMAGE_FORMAT_SNIFF_BYTES);
        if (!render_format_allowed(f)) {
                const char *loader = vips_foreign_find_load_buffer(data, size);

                if (!loader)
                        return render_fail_vips(err, -EMEDIUMTYPE, "not a supported image");
                return render_fail(err, -EMEDIUMTYPE, true,
                                   "not a supported image: format not allowed (libvips: %s)",
                                   loader);
        }

        /* Header only: no pixel has been decoded yet. */
        if (render_open(data, size, f, 1, 1.0, &im) < 0)
                return render_fail_vips(err, -EBADMSG, "decode");

        render_oriented_size(im, &W, &H);
        pixels = (uint64_t)im->Xsize * (uint64_t)im->Ysize;
        if (limits && limits->max_pixels > 0 && pixels > limits->max_pixels)
                return render_fail(err, -E2BIG, true,
                                   "image is %dx%d (%" PRIu64
                                   " pixels), over the limit of %" PRIu64,
                                   im->Xsize, im->Ysize, pixels, limits->max_pixels);

        for (size_t i = 0; i < n_variants; i++) {
                double w, h;

                render_needed_size(&variants[i], W, H, &w, &h);
                need_w = MAX(need_w, w);
                need_h = MAX(need_h, h);
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

        if (vips_autorot(mem, &rot, NULL) < 0)
                return render_fail_vips(err, -EBADMSG, "rotate");
        if (render_to_srgb8(rot, &srgb) < 0)
                return render_fail_vips(err, -EBADMSG, "convert to sRGB");

        /*
         * A copy of our own, so removing metadata cannot touch an image libvips shares. All of
         * it goes (EXIF, XMP, IPTC, ICC, orientation, ...): the pixels are now plain sRGB, and
         * some savers write whatever metadata is attached even when told to strip.
         */
        if (vips_copy(srgb, &copy, "interpretation", VIPS_INTERPRETATION_sRGB, NULL) < 0)
                return render_fail_vips(err, -EBADMSG, "convert to sRGB");
        render_remove_metadata(copy);

        b = g_try_new0(render_base, 1);
        if (!b)
                return render_fail(err, -ENOMEM, false, "out of memory");
        b->image = vips_image_copy_memory(copy);
        if (!b->image) {
                g_free(b);
                return render_fail_vips(err, -EBADMSG, "convert to sRGB");
        }
        b->info.format = f;
        b->info.width = (unsigned)W;
        b->info.height = (unsigned)H;
        *ret = b;
        return 0;
}

render_base *render_base_free(render_base *b)
{
        if (!b)
                return NULL;
        if (b->image)
                g_object_unref(b->image);
        g_free(b);
        return NULL;
}

const struct render_info *render_base_info(const render_base *b)
{
        return &b->info;
}

/* Resizes in per fit. Returns 0 and *ret, or -1 with libvips' error set. */
static int render_resize(VipsImage *in, const struct variant *v, VipsImage **ret)
{
        int w = (int)v->width, h = (int)v->height;

        switch (v->fit) {
        case VARIANT_FIT_COVER:
                return vips_thumbnail_image(in, ret, w, "height", h, "crop",
                                            VIPS_INTERESTING_CENTRE, "size", VIPS_SIZE_BOTH, NULL);
        case VARIANT_FIT_CONTAIN:
                return vips_thumbnail_image(in, ret, w, "height", h, "size", VIPS_SIZE_BOTH, NULL);
        case VARIANT_FIT_INSIDE:
                return vips_thumbnail_image(in, ret, w, "height", h, "size", VIPS_SIZE_DOWN, NULL);
        case VARIANT_FIT_FILL:
                return vips_thumbnail_image(in, ret, w, "height", h, "size", VIPS_SIZE_FORCE, NULL);
        case VARIANT_FIT_NONE:
                return vips_copy(in, ret, NULL);
        default:
                vips_error("render", "unknown fit %d", (int)v->fit);
                return -1;
        }
}

/* Whether a w x h result is what fit promises for a src_w x src_h source. */
static bool render_fit_holds(const struct variant *v, int src_w, int src_h, int w, int h)
{
        int bw = (int)v->width, bh = (int)v->height;

        switch (v->fit) {
        case VARIANT_FIT_COVER:
        case VARIANT_FIT_FILL:
                return w == bw && h == bh;
        case VARIANT_FIT_CONTAIN:
                return w <= bw && h <= bh && (w == bw || h == bh);
        case VARIANT_FIT_INSIDE:
                return w <= bw && h <= bh && (w == bw || h == bh || (w == src_w && h == src_h));
        case VARIANT_FIT_NONE:
                return w == src_w && h == src_h;
        default:
                return false;
        }
}

/*
 * Multiplies an anti-aliased disc, the circle inscribed in the image, into in's alpha
 * (adding an alpha channel when there is none): alpha = clamp(r + 0.5 - d, 0, 1) * 255,
 * d being the distance of a pixel's centre from the image's centre. Returns 0 and *ret, or
 * -1 with libvips' error set.
 */
static int render_circle_mask(VipsImage *in, VipsImage **ret)
{
        _cleanup_image_ VipsImage *xy = NULL, *centred = NULL, *sq = NULL, *sum = NULL,
                                  *dist = NULL, *ramp = NULL, *mask = NULL, *rgb = NULL,
                                  *alpha = NULL, *prod = NULL, *scaled = NULL, *newalpha = NULL;
        double w = in->Xsize, h = in->Ysize;
        double r = MIN(w, h) / 2.0;
        double a2[2] = {1.0, 1.0}, b2[2] = {0.5 - w / 2.0, 0.5 - h / 2.0};
        bool has_alpha = vips_image_hasalpha(in);

        if (vips_xyz(&xy, in->Xsize, in->Ysize, NULL) < 0 ||
            vips_linear(xy, &centred, a2, b2, 2, NULL) < 0 ||
            vips_multiply(centred, centred, &sq, NULL) < 0)
                return -1;

        /* dx^2 + dy^2: the sum of the two bands. */
        {
                _cleanup_image_ VipsImage *dx2 = NULL, *dy2 = NULL;

                if (vips_extract_band(sq, &dx2, 0, NULL) < 0 ||
                    vips_extract_band(sq, &dy2, 1, NULL) < 0 || vips_add(dx2, dy2, &sum, NULL) < 0)
                        return -1;
        }
        if (vips_pow_const1(sum, &dist, 0.5, NULL) < 0 ||
            vips_linear1(dist, &ramp, -255.0, (r + 0.5) * 255.0, NULL) < 0 ||
            vips_cast(ramp, &mask, VIPS_FORMAT_UCHAR, NULL) < 0) /* clips to 0..255 */
                return -1;

        if (!has_alpha) {
                if (vips_bandjoin2(in, mask, ret, NULL) < 0)
                        return -1;
                return 0;
        }

        if (vips_extract_band(in, &rgb, 0, "n", in->Bands - 1, NULL) < 0 ||
            vips_extract_band(in, &alpha, in->Bands - 1, NULL) < 0 ||
            vips_multiply(alpha, mask, &prod, NULL) < 0 ||
            vips_linear1(prod, &scaled, 1.0 / 255.0, 0.5, NULL) < 0 ||
            vips_cast(scaled, &newalpha, VIPS_FORMAT_UCHAR, NULL) < 0 ||
            vips_bandjoin2(rgb, newalpha, ret, NULL) < 0)
                return -1;
        return 0;
}

static uint32_t render_le32(const uint8_t *p)
{
        return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/*
 * libvips 8.14's webpsave ignores "strip" (libvips issue #3340): it writes the EXIF and XMP
 * attached to the image, and an EXIF block it makes up from the resolution when there is
 * none. This drops the EXIF and XMP chunks from the RIFF container of that output, in place,
 * and clears their flags in the VP8X header. Returns the new length, or 0 when the buffer is
 * not a well-formed RIFF/WEBP (then it is left unchanged).
 */
static size_t render_webp_strip(uint8_t *p, size_t len)
{
        size_t in = 12, out = 12;
        uint32_t riff;

        if (len < 12 || memcmp(p, "RIFF", 4) != 0 || memcmp(p + 8, "WEBP", 4) != 0)
                return 0;
        riff = render_le32(p + 4);
        if ((size_t)riff + 8 != len)
                return 0;
        /* Check the whole chain first, so a bad buffer is left as it was. */
        while (in + 8 <= len) {
                size_t chunk = 8 + (size_t)render_le32(p + in + 4);

                chunk += chunk & 1;
                if (chunk > len - in)
                        return 0;
                in += chunk;
        }
        if (in != len)
                return 0;

        for (in = 12; in < len;) {
                size_t chunk = 8 + (size_t)render_le32(p + in + 4);

                chunk += chunk & 1;
                if (memcmp(p + in, "EXIF", 4) == 0 || memcmp(p + in, "XMP ", 4) == 0) {
                        in += chunk;
                        continue;
                }
                if (memcmp(p + in, "VP8X", 4) == 0 && chunk > 8)
                        p[in + 8] &= (uint8_t) ~(0x08 | 0x04); /* EXIF and XMP flags */
                memmove(p + out, p + in, chunk);
                in += chunk;
                out += chunk;
        }
        p[4] = (uint8_t)(out - 8);
        p[5] = (uint8_t)((out - 8) >> 8);
        p[6] = (uint8_t)((out - 8) >> 16);
        p[7] = (uint8_t)((out - 8) >> 24);
        return out;
}

static int render_encode(VipsImage *in, const struct variant *v, void **ret_buf, size_t *ret_len,
                         struct render_error *err)
{
        int q = v->quality >= 1 && v->quality <= 100 ? (int)v->quality : 80;
        void *buf = NULL;
        size_t len = 0;
        int r;

        switch (v->format) {
        case IMAGE_FORMAT_JPEG:
                r = vips_jpegsave_buffer(in, &buf, &len, "Q", q, "optimize_coding", TRUE, "strip",
                                         TRUE, NULL);
                break;
        case IMAGE_FORMAT_WEBP:
                r = vips_webpsave_buffer(in, &buf, &len, "Q", q, "effort", 4, "strip", TRUE, NULL);
                if (r == 0) {
                        size_t stripped = render_webp_strip(buf, len);

                        if (stripped == 0) {
                                g_free(buf);
                                return render_fail(err, -EIO, true,
                                                   "encode webp: libvips wrote a malformed "
                                                   "RIFF container");
                        }
                        len = stripped;
                }
                break;
        case IMAGE_FORMAT_PNG:
                r = vips_pngsave_buffer(in, &buf, &len, "compression", 6, "strip", TRUE, NULL);
                break;
        case IMAGE_FORMAT_AVIF:
                if (vips_type_find("VipsOperation", "heifsave_buffer") == 0)
                        return render_fail(err, -ENOTSUP, true,
                                           "encode avif: this libvips has no AVIF encoder "
                                           "(heifsave_buffer is missing)");
                r = vips_heifsave_buffer(in, &buf, &len, "compression",
                                         VIPS_FOREIGN_HEIF_COMPRESSION_AV1, "Q", q, "effort", 4,
                                         "strip", TRUE, NULL);
                if (r != 0)
                        return render_fail_vips(err, -ENOTSUP, "encode avif (AV1 encoder)");
                break;
        default:
                return render_fail(err, -EINVAL, true, "cannot write %s",
                                   image_format_name(v->format));
        }
        if (r != 0) {
                char what[64];

                snprintf(what, sizeof(what), "encode %s", image_format_name(v->format));
                return render_fail_vips(err, -EIO, what);
        }
        *ret_buf = buf;
        *ret_len = len;
        return 0;
}

int render_variant(render_base *b, const struct variant *v, void **ret_buf, size_t *ret_size,
                   unsigned *ret_width, unsigned *ret_height, struct render_error *err)
{
        _cleanup_image_ VipsImage *resized = NULL, *masked = NULL, *flat = NULL, *flat8 = NULL;
        VipsImage *cur;
        void *buf = NULL;
        size_t len = 0;
        int r;

        if (!image_format_writable(v->format))
                return render_fail(err, -EINVAL, true, "variant %s: cannot write format %s",
                                   v->name, image_format_name(v->format));
        if (v->fit != VARIANT_FIT_NONE &&
            (v->width == 0 || v->height == 0 || v->width > VARIANT_DIMENSION_MAX ||
             v->height > VARIANT_DIMENSION_MAX))
                return render_fail(err, -EINVAL, true, "variant %s: bad size %ux%u", v->name,
                                   v->width, v->height);

        vips_error_clear();
        if (render_resize(b->image, v, &resized) < 0)
                return render_fail_vips(err, -EBADMSG, "resize");
        if (!render_fit_holds(v, b->image->Xsize, b->image->Ysize, resized->Xsize, resized->Ysize))
                return render_fail(err, -EIO, true, "resize: %s %ux%u of %dx%d gave %dx%d",
                                   variant_fit_name(v->fit), v->width, v->height, b->image->Xsize,
                                   b->image->Ysize, resized->Xsize, resized->Ysize);
        cur = resized;

        if (v->mask == VARIANT_MASK_CIRCLE) {
                if (render_circle_mask(cur, &masked) < 0)
                        return render_fail_vips(err, -EBADMSG, "mask");
                cur = masked;
        }

        if (!image_format_has_alpha(v->format) && vips_image_hasalpha(cur)) {
                VipsArrayDouble *bg =
                    vips_array_double_newv(3, (double)v->background[0], (double)v->background[1],
                                           (double)v->background[2]);

                r = vips_flatten(cur, &flat, "background", bg, NULL);
                vips_area_unref(VIPS_AREA(bg));
                if (r < 0)
                        return render_fail_vips(err, -EBADMSG, "flatten");
                cur = flat;
                if (cur->BandFmt != VIPS_FORMAT_UCHAR) {
                        if (vips_cast(cur, &flat8, VIPS_FORMAT_UCHAR, NULL) < 0)
                                return render_fail_vips(err, -EBADMSG, "flatten");
                        cur = flat8;
                }
        }

        r = render_encode(cur, v, &buf, &len, err);
        if (r < 0)
                return r;

        *ret_width = (unsigned)cur->Xsize;
        *ret_height = (unsigned)cur->Ysize;
        *ret_buf = buf;
        *ret_size = len;
        return 0;
}

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
        default:
                return NULL;
        }
}

int render_verify(const void *buf, size_t size, enum image_format f, unsigned width,
                  unsigned height, struct render_error *err)
{
        _cleanup_image_ VipsImage *im = NULL;
        const char *stem = render_loader_stem(f), *loader;
        enum image_format sniffed;
        double avg;

        vips_error_clear();
        sniffed = image_format_sniff(
            buf, size < IMAGE_FORMAT_SNIFF_BYTES ? size : IMAGE_FORMAT_SNIFF_BYTES);
        if (!stem || sniffed != f)
                return render_fail(err, -EBADMSG, true, "verify: expected %s, found %s",
                                   image_format_name(f), image_format_name(sniffed));

        loader = vips_foreign_find_load_buffer(buf, size);
        if (!loader) {
                render_fail_vips(err, -EBADMSG, "verify");
                return -EBADMSG;
        }
        if (!strcasestr(loader, stem))
                return render_fail(err, -EBADMSG, true, "verify: expected %s, libvips picks %s",
                                   image_format_name(f), loader);

        if (render_open(buf, size, f, 1, 1.0, &im) < 0) {
                render_fail_vips(err, -EBADMSG, "verify");
                return -EBADMSG;
        }
        if ((unsigned)im->Xsize != width || (unsigned)im->Ysize != height)
                return render_fail(err, -EBADMSG, true, "verify: expected %ux%u, found %dx%d",
                                   width, height, im->Xsize, im->Ysize);

        /* Decode every pixel: a truncated or corrupt body fails here (fail_on error). */
        if (vips_avg(im, &avg, NULL) < 0) {
                /* The header promises -EBADMSG; whether it was transient is in err. */
                render_fail_vips(err, -EBADMSG, "verify");
                return -EBADMSG;
        }
        return 0;
}
