/* SPDX-License-Identifier: MIT */
/*
 * render.c - decoding, resizing, masking and encoding with libvips; see render.h.
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
 * A variant is made frame by frame (one frame unless animated): resize and crop (fit,
 * gravity) --> watermark --> mask; then the frames are joined, alpha is flattened where the
 * format has none, the metadata to keep is attached, and it is encoded; with max_bytes the
 * encode is repeated at lower qualities, at most VARIANT_MAX_BYTES_STEPS encodes in all.
 *
 * Pixels are only decoded after the header passed the limit. Loaders are picked from the
 * sniffed format, never by libvips' own search, so only allowlisted decoders ever run (for
 * watermark images too).
 *
 * libvips' error buffer is global: every failing call is followed right away by
 * vips_error_buffer_copy(), which takes the text and clears the buffer. Some successful
 * calls leave text behind too (heifload), so the buffer is also cleared when an entry point
 * starts and after every successful open.
 *
 * Worked around here for libvips 8.14 (Debian 12): webpsave ignores "strip" (see
 * render_webp_strip()); hence also no metadata on the base. thumbnail_image does not know
 * about pages (it would resize a toilet roll as one image), hence frame by frame.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <malloc.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jpeglib.h>
#include <vips/vips.h>
#include <webp/decode.h>
#include <webp/demux.h>

#include "shared/log.h"
#include "shared/macro.h"
#include "worker/render.h"

/* Freed memory a rendering process keeps for the next image; larger blocks are mapped. */
#define RENDER_HEAP_KEEP (256 << 20)

struct render_base {
        struct render_info info;
        VipsImage *image; /* in memory, oriented, 8-bit sRGB, 3 or 4 bands */
        /* When image was shrunk after the decode (render_preshrink()): the size it had, which
         * the sizes of the outputs are computed from; else 0. */
        int ref_width, ref_height;
        uint64_t max_pixels; /* the job's limit, also applied to watermark images; 0: none */
        bool had_icc;        /* the source had an ICC profile (keep = ["icc"]) */
        char *copyright;     /* libvips' exif-ifd0-Copyright of the source, or NULL */
        /* An animated source that a variant wants animated, else frames is NULL: */
        VipsImage *frames; /* every frame, stacked vertically, as image; in memory */
        int page_height;
        int *delays; /* ms per frame, n_delays of them (may be 0) */
        int n_delays;
        int loop; /* 0: forever */
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

static inline void render_base_freep(render_base **p)
{
        render_base_free(*p);
}

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
 * Some loaders report why they failed only as a GLib warning and leave libvips' error
 * buffer empty (libpng's "IHDR: invalid" through pngload): the last warning of the
 * current image is kept here, as the reason of last resort. Warnings may come from libvips'
 * worker threads, hence the lock.
 */
G_LOCK_DEFINE_STATIC(last_warning);
static char last_warning[256];

static void render_log_handler(const gchar *domain, GLogLevelFlags level, const gchar *message,
                               gpointer userdata)
{
        G_LOCK(last_warning);
        g_strlcpy(last_warning, message ? message : "", sizeof last_warning);
        G_UNLOCK(last_warning);
        log_debug("libvips: %s", message ? message : "");
}

static void render_clear_errors(void)
{
        vips_error_clear();
        G_LOCK(last_warning);
        last_warning[0] = '\0';
        G_UNLOCK(last_warning);
}

/*
 * Takes (and clears) libvips' error buffer into err as "<what>: <text>", its lines joined
 * with "; " (or, when it is empty, the last libvips warning). An allocation failure becomes
 * -ENOMEM and transient; anything else returns r and is permanent (the same input fails the
 * same way).
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
        if (n == 0) {
                G_LOCK(last_warning);
                if (last_warning[0])
                        snprintf(joined, sizeof(joined), "%s", last_warning);
                else
                        snprintf(joined, sizeof(joined), "unknown libvips error");
                G_UNLOCK(last_warning);
        }

        if (strstr(joined, "out of memory") || strstr(joined, "failed to allocate"))
                return render_fail(err, -ENOMEM, false, "%s: %s", what, joined);
        return render_fail(err, r, true, "%s: %s", what, joined);
}

int render_init(const char *argv0, unsigned threads)
{
        /*
         * A rendering process handles one large image after another: decoded images,
         * sources and their copies of tens of megabytes each. glibc would map each of those
         * afresh and unmap it when freed, so every image paid its page faults again (in a
         * virtual machine, a sixth of a worker's time). Kept in the heap instead, up to
         * RENDER_HEAP_KEEP, they are reused by the next image: 42% fewer page faults and
         * 17-27% less CPU for the avatar pipeline, for a higher resident size between jobs
         * (the daemon recycles a worker whose memory stays over half its limit).
         */
        (void)mallopt(M_MMAP_THRESHOLD, RENDER_HEAP_KEEP);
        (void)mallopt(M_TRIM_THRESHOLD, RENDER_HEAP_KEEP);
        if (VIPS_INIT(argv0) != 0) {
                vips_error_clear();
                return -EIO;
        }
        if (threads > 0)
                vips_concurrency_set((int)threads);
        /* One decode per job and no sharing between jobs: the cache would only hold memory. */
        vips_cache_set_max(0);
        vips_block_untrusted_set(TRUE);
        g_log_set_handler("VIPS", G_LOG_LEVEL_WARNING | G_LOG_LEVEL_MESSAGE | G_LOG_LEVEL_INFO,
                          render_log_handler, NULL);
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
 * for a smaller image; n is the number of frames of a GIF or WebP (1, or -1 for all).
 * Returns 0 and *ret, or -1 with libvips' error buffer set.
 */
static int render_open(const void *data, size_t size, enum image_format f, int shrink, double scale,
                       int n, VipsImage **ret)
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
 * Rounding for the non-negative sizes below: sizes are at most VIPS_MAX_COORD, far inside
 * what uint64_t holds exactly.
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
                static const int shrinks[] = { 8, 4, 2 };

                for (size_t i = 0; i < ELEMENTSOF(shrinks); i++) {
                        _cleanup_image_ VipsImage *t = NULL;
                        double w, h;

                        if (render_floor(W / shrinks[i]) < need_w ||
                            render_floor(H / shrinks[i]) < need_h)
                                continue;
                        if (render_open(data, size, f, shrinks[i], 1.0, 1, &t) < 0)
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
                        if (render_open(data, size, f, 1, scale, 1, &t) < 0)
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

/*
 * Removes every metadata field from im (the built-in header fields stay), then marks it as
 * read top to bottom (VIPS_META_SEQUENTIAL, a hint no saver writes): libvips' vertical
 * shrink caches its lines only for such an input, and without the cache it computes them
 * again for every output line of the reduce after it. Measured: a 2560x1600 base to a
 * 320x320 cover took 270 ms without the hint, 60 ms with it.
 */
static void render_remove_metadata(VipsImage *im)
{
        gchar **fields = vips_image_get_fields(im);

        for (size_t i = 0; fields && fields[i]; i++)
                vips_image_remove(im, fields[i]);
        g_strfreev(fields);
        vips_image_set_int(im, VIPS_META_SEQUENTIAL, 1);
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
 * Whether a decoded (oriented) w x h base should be shrunk once to need_w x need_h before the
 * variants are made from it: for formats whose loader cannot shrink (JPEG and WebP did that
 * on load already), when the base has at least twice the pixels needed. Each variant then
 * resizes a small image instead of the full decode.
 */
static bool render_wants_preshrink(enum image_format f, double w, double h, double need_w,
                                   double need_h)
{
        if (f == IMAGE_FORMAT_JPEG || f == IMAGE_FORMAT_WEBP)
                return false;
        return need_w >= 1 && need_h >= 1 && w * h >= 2.0 * need_w * need_h;
}

/*
 * Shrinks in (oriented, as decoded: before the conversion to sRGB, so that an ICC transform
 * runs on the small image only) with lanczos3 (vips_resize) so that it still covers
 * need_w x need_h: one side exact, the other at least as long. Never below what a variant
 * needs, so what the variants show is unchanged. Without alpha, lanczos3 over the whole
 * factor (no box shrink first: libvips 8.14's vectorised reduce is faster than its box shrink
 * on 8-bit pixels, 35 against 84 ms for 3840x2160 to 710x400, and sharper). A real alpha is
 * premultiplied around it, in float, where the box shrink first is the cheaper (measured: 1.5x
 * the time without it). Returns 0 and *ret, or -1 with libvips' error set.
 */
static int render_preshrink(VipsImage *in, double need_w, double need_h, VipsImage **ret)
{
        _cleanup_image_ VipsImage *pre = NULL, *t = NULL, *un = NULL, *cast = NULL;
        double scale = MAX(need_w / in->Xsize, need_h / in->Ysize);
        bool alpha = vips_image_hasalpha(in);

        if (alpha && vips_premultiply(in, &pre, NULL) < 0)
                return -1;
        if (vips_resize(alpha ? pre : in, &t, scale, "gap", alpha ? 2.0 : 0.0, NULL) < 0)
                return -1;
        if (t->Xsize < need_w || t->Ysize < need_h) {
                vips_error("render", "shrink %dx%d by %g gave %dx%d, short of %gx%g", in->Xsize,
                           in->Ysize, scale, t->Xsize, t->Ysize, need_w, need_h);
                return -1;
        }
        if (alpha) {
                if (vips_unpremultiply(t, &un, NULL) < 0 ||
                    vips_cast(un, &cast, in->BandFmt, NULL) < 0)
                        return -1;
                *ret = TAKE_PTR(cast);
                return 0;
        }
        *ret = TAKE_PTR(t);
        return 0;
}

/*
 * The size fit "contain" or "inside" of v gives a ref_w x ref_h image: what
 * vips_thumbnail_image makes of one, worked out on a black image of that size that is never
 * computed. For a shrunk base, so that its outputs have the sizes the full decode gives.
 * Returns 0, *ret_w and *ret_h, or -1 with libvips' error set.
 */
static int render_fit_size(int ref_w, int ref_h, const struct variant *v, int *ret_w, int *ret_h)
{
        _cleanup_image_ VipsImage *blank = NULL, *t = NULL;

        if (vips_black(&blank, ref_w, ref_h, "bands", 3, NULL) < 0 ||
            vips_thumbnail_image(blank, &t, (int)v->width, "height", (int)v->height, "size",
                                 v->fit == VARIANT_FIT_INSIDE ? VIPS_SIZE_DOWN : VIPS_SIZE_BOTH,
                                 NULL) < 0)
                return -1;
        *ret_w = t->Xsize;
        *ret_h = t->Ysize;
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
        _cleanup_image_ VipsImage *im = NULL, *mem = NULL, *srgb = NULL, *copy = NULL;
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
        if (render_to_srgb8(mem, &srgb) < 0 ||
            vips_copy(srgb, &copy, "interpretation", VIPS_INTERPRETATION_sRGB, NULL) < 0)
                return render_fail_vips(err, -EBADMSG, "convert animation to sRGB");
        render_remove_metadata(copy);
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
        _cleanup_image_ VipsImage *im = NULL, *mem = NULL, *solid = NULL, *rot = NULL, *srgb = NULL,
                                  *copy = NULL, *small = NULL;
        _cleanup_(render_base_freep) render_base *b = NULL;
        const char *copyright = NULL;
        enum image_format f;
        double W, H, need_w = 0, need_h = 0;
        bool want_animation = false;
        VipsImage *cur;
        uint64_t pixels;
        int pages = 1, r;

        render_clear_errors(); /* whatever is there is not about this image */
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
        if (render_to_srgb8(cur, &srgb) < 0)
                return render_fail_vips(err, -EBADMSG, "convert to sRGB");

        /*
         * A copy of our own, so removing metadata cannot touch an image libvips shares. All of
         * it goes (EXIF, XMP, IPTC, ICC, orientation, ...): the pixels are now plain sRGB, and
         * some savers write whatever metadata is attached even when told to strip.
         */
        if (vips_copy(srgb, &copy, "interpretation", VIPS_INTERPRETATION_sRGB, NULL) < 0)
                return render_fail_vips(err, -EBADMSG, "convert to sRGB");
        render_remove_metadata(copy);

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

/* Where a compass gravity puts a crop (or a watermark): 0 left/top, 1 centre, 2 right/bottom. */
static void render_compass(enum variant_gravity g, int *ret_x, int *ret_y)
{
        static const signed char xy[_VARIANT_POSITION_MAX][2] = {
                [VARIANT_GRAVITY_CENTRE] = { 1, 1 },     [VARIANT_GRAVITY_NORTH] = { 1, 0 },
                [VARIANT_GRAVITY_SOUTH] = { 1, 2 },      [VARIANT_GRAVITY_EAST] = { 2, 1 },
                [VARIANT_GRAVITY_WEST] = { 0, 1 },       [VARIANT_GRAVITY_NORTH_EAST] = { 2, 0 },
                [VARIANT_GRAVITY_NORTH_WEST] = { 0, 0 }, [VARIANT_GRAVITY_SOUTH_EAST] = { 2, 2 },
                [VARIANT_GRAVITY_SOUTH_WEST] = { 0, 2 },
        };
        int i = g >= 0 && g < _VARIANT_POSITION_MAX ? (int)g : 0;

        *ret_x = xy[i][0];
        *ret_y = xy[i][1];
}

/*
 * fit = cover with a compass gravity: scales in so that it covers w x h (one side exact, the
 * other at least as long), then keeps the w x h part that the gravity names. Returns 0 and
 * *ret, or -1 with libvips' error set.
 */
static int render_cover_compass(VipsImage *in, int w, int h, enum variant_gravity g,
                                VipsImage **ret)
{
        _cleanup_image_ VipsImage *scaled = NULL;
        int gx, gy, r;

        /* Wider than the box (w/h): match the height; else match the width. */
        if ((double)in->Xsize * h > (double)in->Ysize * w)
                r = vips_thumbnail_image(in, &scaled, VIPS_MAX_COORD, "height", h, "size",
                                         VIPS_SIZE_BOTH, NULL);
        else
                r = vips_thumbnail_image(in, &scaled, w, "height", VIPS_MAX_COORD, "size",
                                         VIPS_SIZE_BOTH, NULL);
        if (r < 0)
                return -1;
        if (scaled->Xsize < w || scaled->Ysize < h) {
                vips_error("render", "cover scaled %dx%d to %dx%d, short of %dx%d", in->Xsize,
                           in->Ysize, scaled->Xsize, scaled->Ysize, w, h);
                return -1;
        }
        render_compass(g, &gx, &gy);
        return vips_extract_area(scaled, ret, (scaled->Xsize - w) * gx / 2,
                                 (scaled->Ysize - h) * gy / 2, w, h, NULL);
}

/*
 * Resizes in per fit and gravity. ref_w x ref_h (0: in's own size) is the size in had before
 * it was shrunk: "contain" and "inside" give what they give for that size. Returns 0 and
 * *ret, or -1 with libvips' error set.
 */
static int render_resize(VipsImage *in, int ref_w, int ref_h, const struct variant *v,
                         VipsImage **ret)
{
        int w = (int)v->width, h = (int)v->height;

        if (ref_w > 0 && ref_h > 0 &&
            (v->fit == VARIANT_FIT_CONTAIN || v->fit == VARIANT_FIT_INSIDE)) {
                if (render_fit_size(ref_w, ref_h, v, &w, &h) < 0)
                        return -1;
                return vips_thumbnail_image(in, ret, w, "height", h, "size", VIPS_SIZE_FORCE, NULL);
        }
        switch (v->fit) {
        case VARIANT_FIT_COVER:
                switch (v->gravity) {
                case VARIANT_GRAVITY_CENTRE:
                        return vips_thumbnail_image(in, ret, w, "height", h, "crop",
                                                    VIPS_INTERESTING_CENTRE, "size", VIPS_SIZE_BOTH,
                                                    NULL);
                case VARIANT_GRAVITY_ATTENTION:
                case VARIANT_GRAVITY_ENTROPY:
                        return vips_thumbnail_image(in, ret, w, "height", h, "crop",
                                                    v->gravity == VARIANT_GRAVITY_ATTENTION
                                                            ? VIPS_INTERESTING_ATTENTION
                                                            : VIPS_INTERESTING_ENTROPY,
                                                    "size", VIPS_SIZE_BOTH, NULL);
                default:
                        return render_cover_compass(in, w, h, v->gravity, ret);
                }
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
        double a2[2] = { 1.0, 1.0 }, b2[2] = { 0.5 - w / 2.0, 0.5 - h / 2.0 };
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

/* ---- watermarks ------------------------------------------------------------------------ */

struct render_cache_entry {
        char path[VARIANT_PATH_MAX];
        dev_t dev;
        ino_t ino;
        off_t size;
        struct timespec mtime;
        VipsImage *image; /* 8-bit sRGB with alpha, in memory */
        uint64_t used;    /* when last used, for eviction */
};

struct render_cache {
        struct render_cache_entry entries[RENDER_CACHE_MAX];
        size_t n;
        uint64_t clock;
        unsigned loads;
};

render_cache *render_cache_new(void)
{
        return g_try_new0(render_cache, 1);
}

render_cache *render_cache_free(render_cache *c)
{
        if (!c)
                return NULL;
        for (size_t i = 0; i < c->n; i++)
                g_object_unref(c->entries[i].image);
        g_free(c);
        return NULL;
}

unsigned render_cache_loads(const render_cache *c)
{
        return c ? c->loads : 0;
}

static inline void render_cache_freep(render_cache **p)
{
        render_cache_free(*p);
}

static bool render_same_file(const struct render_cache_entry *e, const struct stat *st)
{
        return e->dev == st->st_dev && e->ino == st->st_ino && e->size == st->st_size &&
               e->mtime.tv_sec == st->st_mtim.tv_sec && e->mtime.tv_nsec == st->st_mtim.tv_nsec;
}

/* Prefixes err's message with "watermark image PATH: ", marked transient; returns r. */
static int render_fail_watermark(struct render_error *err, int r, const char *path)
{
        char msg[sizeof(err->message)];

        memcpy(msg, err->message, sizeof(msg));
        return render_fail(err, r, false, "watermark image %s: %s", path, msg);
}

/*
 * Decodes the watermark image file at fd (path for messages) into 8-bit sRGB with alpha in
 * memory: read whole (at most VARIANT_WATERMARK_FILE_MAX bytes), format sniffed and
 * allowlisted, pixels checked against max_pixels from the header, oriented, converted, an
 * opaque alpha added where there is none. Returns 0 and *ret, or a negative errno with err
 * filled in (transient: the configuration's file, not the job's source, is at fault).
 */
static int render_watermark_load(int fd, const struct stat *st, const char *path,
                                 uint64_t max_pixels, VipsImage **ret, struct render_error *err)
{
        _cleanup_image_ VipsImage *im = NULL, *mem = NULL, *rot = NULL, *srgb = NULL, *alpha = NULL,
                                  *copy = NULL;
        _cleanup_gfree_ uint8_t *data = NULL;
        size_t len = 0;
        enum image_format f;
        uint64_t pixels;
        VipsImage *out;

        if (!S_ISREG(st->st_mode))
                return render_fail(err, -EINVAL, false, "watermark image %s: not a regular file",
                                   path);
        if (st->st_size > VARIANT_WATERMARK_FILE_MAX)
                return render_fail(err, -EFBIG, false,
                                   "watermark image %s: over the limit of %d bytes", path,
                                   VARIANT_WATERMARK_FILE_MAX);
        data = g_try_malloc((size_t)st->st_size + 1);
        if (!data)
                return render_fail(err, -ENOMEM, false, "out of memory");
        while (len <= (size_t)st->st_size) {
                ssize_t k = pread(fd, data + len, (size_t)st->st_size + 1 - len, (off_t)len);

                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        return render_fail(err, negative_errno(), false,
                                           "watermark image %s: read: %s", path, strerror(errno));
                if (k == 0)
                        break;
                len += (size_t)k;
        }
        if (len != (size_t)st->st_size)
                return render_fail(err, -EIO, false,
                                   "watermark image %s: changed while it was read", path);

        f = image_format_sniff(data, MIN(len, (size_t)IMAGE_FORMAT_SNIFF_BYTES));
        if (!render_format_allowed(f))
                return render_fail(err, -EMEDIUMTYPE, false,
                                   "watermark image %s: not a supported image", path);
        if (render_open(data, len, f, 1, 1.0, 1, &im) < 0)
                return render_fail_watermark(err, render_fail_vips(err, -EBADMSG, "decode"), path);
        pixels = (uint64_t)im->Xsize * (uint64_t)im->Ysize;
        if (pixels > (uint64_t)VARIANT_DIMENSION_MAX * VARIANT_DIMENSION_MAX ||
            (max_pixels > 0 && pixels > max_pixels))
                return render_fail(err, -E2BIG, false,
                                   "watermark image %s: %dx%d is over the pixel limit", path,
                                   im->Xsize, im->Ysize);
        mem = vips_image_copy_memory(im);
        if (!mem || vips_autorot(mem, &rot, NULL) < 0 || render_to_srgb8(rot, &srgb) < 0 ||
            (!vips_image_hasalpha(srgb) && vips_bandjoin_const1(srgb, &alpha, 255.0, NULL) < 0) ||
            vips_copy(alpha ? alpha : srgb, &copy, "interpretation", VIPS_INTERPRETATION_sRGB,
                      NULL) < 0)
                return render_fail_watermark(err, render_fail_vips(err, -EBADMSG, "decode"), path);
        render_remove_metadata(copy);
        out = vips_image_copy_memory(copy);
        if (!out)
                return render_fail_watermark(err, render_fail_vips(err, -EBADMSG, "decode"), path);
        *ret = out;
        return 0;
}

/*
 * The decoded watermark image at path: from the cache when the file (device, inode, size,
 * mtime) is the one decoded before, else decoded now and cached (the least recently used
 * entry makes room). Returns 0 and a new reference in *ret, or a negative errno with err
 * filled in.
 */
static int render_cache_get(render_cache *c, const char *path, uint64_t max_pixels, VipsImage **ret,
                            struct render_error *err)
{
        _cleanup_close_ int fd = -1;
        struct render_cache_entry *slot = NULL;
        struct stat st;
        VipsImage *im = NULL;
        int r;

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0 || fstat(fd, &st) < 0)
                return render_fail(err, negative_errno(), false, "watermark image %s: %s", path,
                                   strerror(errno));
        for (size_t i = 0; i < c->n; i++) {
                struct render_cache_entry *e = &c->entries[i];

                if (strcmp(e->path, path) != 0)
                        continue;
                if (render_same_file(e, &st)) {
                        e->used = ++c->clock;
                        *ret = g_object_ref(e->image);
                        return 0;
                }
                slot = e; /* the file changed: replace its entry */
                break;
        }

        r = render_watermark_load(fd, &st, path, max_pixels, &im, err);
        if (r < 0)
                return r;
        c->loads++;
        if (!slot && c->n < RENDER_CACHE_MAX)
                slot = &c->entries[c->n++];
        else if (!slot) {
                slot = &c->entries[0];
                for (size_t i = 1; i < c->n; i++)
                        if (c->entries[i].used < slot->used)
                                slot = &c->entries[i];
        }
        if (slot->image)
                g_object_unref(slot->image);
        *slot = (struct render_cache_entry){
                .dev = st.st_dev,
                .ino = st.st_ino,
                .size = st.st_size,
                .mtime = st.st_mtim,
                .image = im,
                .used = ++c->clock,
        };
        snprintf(slot->path, sizeof slot->path, "%s", path);
        *ret = g_object_ref(im);
        return 0;
}

/* Multiplies the alpha (last band) of an 8-bit image by opacity. */
static int render_fade(VipsImage *in, double opacity, VipsImage **ret)
{
        _cleanup_image_ VipsImage *rgb = NULL, *alpha = NULL, *faded = NULL, *faded8 = NULL,
                                  *joined = NULL;

        if (opacity >= 1.0)
                return vips_copy(in, ret, NULL);
        if (vips_extract_band(in, &rgb, 0, "n", in->Bands - 1, NULL) < 0 ||
            vips_extract_band(in, &alpha, in->Bands - 1, NULL) < 0 ||
            vips_linear1(alpha, &faded, opacity, 0.5, NULL) < 0 ||
            vips_cast(faded, &faded8, VIPS_FORMAT_UCHAR, NULL) < 0 ||
            vips_bandjoin2(rgb, faded8, &joined, NULL) < 0)
                return -1;
        return vips_copy(joined, ret, "interpretation", VIPS_INTERPRETATION_sRGB, NULL);
}

/*
 * The text watermark as 8-bit sRGB with alpha: the text in its font and colour, the
 * coverage times opacity as alpha. Sized to `width` of out_w when that is set, else at the
 * font's size (at 72 dpi); in both cases no larger than max_w x max_h. Returns 0 and *ret, or
 * -1 with libvips' error set.
 */
static int render_text_overlay(const struct variant_watermark *w, int out_w, int max_w, int max_h,
                               VipsImage **ret)
{
        _cleanup_image_ VipsImage *t = NULL, *t2 = NULL, *blk = NULL, *col = NULL, *col8 = NULL,
                                  *alpha = NULL, *alpha8 = NULL, *joined = NULL;
        _cleanup_gfree_ char *markup = g_markup_escape_text(w->text, -1);
        double scale = 1.0, want;
        int dpi = 72;
        VipsImage *cur;

        if (vips_text(&t, markup, "font", w->font, "dpi", dpi, NULL) < 0)
                return -1;
        if (t->Xsize < 1 || t->Ysize < 1) {
                vips_error("render", "watermark text renders as an empty image");
                return -1;
        }
        if (w->width > 0.0) {
                want = MAX(1.0, w->width * out_w);
                scale = want / t->Xsize;
        }
        scale = MIN(scale, MIN((double)max_w / t->Xsize, (double)max_h / t->Ysize));
        cur = t;
        if (scale != 1.0) {
                /* Text scales with the resolution: render again at the size wanted. */
                dpi = MAX(1, (int)(72.0 * scale));
                if (vips_text(&t2, markup, "font", w->font, "dpi", dpi, NULL) < 0)
                        return -1;
                cur = t2;
                if (cur->Xsize > max_w || cur->Ysize > max_h) {
                        _cleanup_image_ VipsImage *fit = NULL;

                        if (vips_thumbnail_image(cur, &fit, max_w, "height", max_h, "size",
                                                 VIPS_SIZE_DOWN, NULL) < 0)
                                return -1;
                        g_object_unref(t2);
                        t2 = TAKE_PTR(fit);
                        cur = t2;
                }
        }

        if (vips_black(&blk, cur->Xsize, cur->Ysize, "bands", 3, NULL) < 0 ||
            vips_linear(blk, &col, (double[]){ 1, 1, 1 },
                        (double[]){ w->color[0], w->color[1], w->color[2] }, 3, NULL) < 0 ||
            vips_cast(col, &col8, VIPS_FORMAT_UCHAR, NULL) < 0 ||
            vips_linear1(cur, &alpha, w->opacity, 0.5, NULL) < 0 ||
            vips_cast(alpha, &alpha8, VIPS_FORMAT_UCHAR, NULL) < 0 ||
            vips_bandjoin2(col8, alpha8, &joined, NULL) < 0)
                return -1;
        return vips_copy(joined, ret, "interpretation", VIPS_INTERPRETATION_sRGB, NULL);
}

/*
 * Makes the overlay of v's watermark for an out_w x out_h output and where it goes:
 * *ret (8-bit sRGB with alpha, opacity applied) at (*ret_x, *ret_y). The margin is dropped
 * where the output is too small for it, and the watermark is made smaller where it would
 * not fit. Returns 0, or a negative errno with err filled in.
 */
static int render_watermark_overlay(render_cache *cache, const struct variant *v,
                                    uint64_t max_pixels, int out_w, int out_h, VipsImage **ret,
                                    int *ret_x, int *ret_y, struct render_error *err)
{
        const struct variant_watermark *w = &v->watermark;
        _cleanup_image_ VipsImage *src = NULL, *sized = NULL, *overlay = NULL;
        int m = (int)w->margin, box_w, box_h, gx, gy, r;

        if (2 * m >= out_w || 2 * m >= out_h)
                m = 0;
        box_w = out_w - 2 * m;
        box_h = out_h - 2 * m;

        if (w->kind == VARIANT_WATERMARK_IMAGE) {
                double tw, th, s;

                r = render_cache_get(cache, w->image, max_pixels, &src, err);
                if (r < 0)
                        return r;
                tw = MAX(1.0, render_floor(w->width * out_w + 0.5));
                th = MAX(1.0, render_floor(src->Ysize * tw / src->Xsize + 0.5));
                if (tw > box_w || th > box_h) {
                        s = MIN(box_w / tw, box_h / th);
                        tw = MAX(1.0, render_floor(tw * s));
                        th = MAX(1.0, render_floor(th * s));
                }
                if (vips_thumbnail_image(src, &sized, (int)tw, "height", (int)th, "size",
                                         VIPS_SIZE_FORCE, NULL) < 0 ||
                    render_fade(sized, w->opacity, &overlay) < 0)
                        return render_fail_vips(err, -EBADMSG, "watermark");
        } else {
                if (render_text_overlay(w, out_w, box_w, box_h, &overlay) < 0)
                        return render_fail_vips(err, -EBADMSG, "watermark text");
        }

        render_compass(w->position, &gx, &gy);
        *ret_x = gx == 0 ? m : gx == 2 ? out_w - m - overlay->Xsize : (out_w - overlay->Xsize) / 2;
        *ret_y = gy == 0 ? m : gy == 2 ? out_h - m - overlay->Ysize : (out_h - overlay->Ysize) / 2;
        *ret = TAKE_PTR(overlay);
        return 0;
}

/*
 * Blends overlay onto in at (x, y). Only the area under the overlay is recomputed; every
 * other pixel is in's, unchanged. in keeps its bands (an alpha is not added). Returns 0 and
 * *ret, or -1 with libvips' error set.
 */
static int render_composite(VipsImage *in, VipsImage *overlay, int x, int y, VipsImage **ret)
{
        _cleanup_image_ VipsImage *area = NULL, *blended = NULL, *bands = NULL, *rounded = NULL,
                                  *area8 = NULL;
        VipsImage *cur;

        if (vips_extract_area(in, &area, x, y, overlay->Xsize, overlay->Ysize, NULL) < 0 ||
            vips_composite2(area, overlay, &blended, VIPS_BLEND_MODE_OVER, NULL) < 0)
                return -1;
        cur = blended;
        if (cur->Bands > in->Bands) {
                if (vips_extract_band(cur, &bands, 0, "n", in->Bands, NULL) < 0)
                        return -1;
                cur = bands;
        }
        if (vips_linear1(cur, &rounded, 1.0, 0.5, NULL) < 0 ||
            vips_cast(rounded, &area8, VIPS_FORMAT_UCHAR, NULL) < 0)
                return -1;
        return vips_insert(in, area8, ret, x, y, NULL);
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

static VipsForeignSubsample render_subsample(enum variant_chroma c)
{
        switch (c) {
        case VARIANT_CHROMA_444:
                return VIPS_FOREIGN_SUBSAMPLE_OFF;
        case VARIANT_CHROMA_420:
                return VIPS_FOREIGN_SUBSAMPLE_ON;
        default:
                return VIPS_FOREIGN_SUBSAMPLE_AUTO;
        }
}

/*
 * Encodes in as v's format at quality q with v's encoder settings. `strip`: no metadata at
 * all (else what is attached to in is written: only what the variant keeps). Returns 0,
 * *ret_buf (g_free()) and *ret_len, or a negative errno with err filled in.
 */
static int render_encode(VipsImage *in, const struct variant *v, int q, bool strip, void **ret_buf,
                         size_t *ret_len, struct render_error *err)
{
        void *buf = NULL;
        size_t len = 0;
        int r;

        if (q < 1 || q > 100)
                q = 80;
        switch (v->format) {
        case IMAGE_FORMAT_JPEG:
                r = vips_jpegsave_buffer(in, &buf, &len, "Q", q, "optimize_coding", TRUE, "strip",
                                         strip, "interlace", v->progressive, "subsample_mode",
                                         render_subsample(v->chroma), NULL);
                break;
        case IMAGE_FORMAT_WEBP:
                r = vips_webpsave_buffer(in, &buf, &len, "Q", q, "effort", (int)v->effort,
                                         "lossless", v->lossless, "strip", TRUE, NULL);
                /* What is kept is the ICC profile (its own chunk) and the EXIF copyright. */
                if (r == 0 && !(!strip && (v->keep & VARIANT_KEEP_COPYRIGHT))) {
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
                r = vips_pngsave_buffer(in, &buf, &len, "compression", 6, "strip", strip,
                                        "interlace", v->progressive, NULL);
                break;
        case IMAGE_FORMAT_GIF:
                r = vips_gifsave_buffer(in, &buf, &len, "strip", TRUE, "interlace", v->progressive,
                                        NULL);
                break;
        case IMAGE_FORMAT_AVIF:
                if (vips_type_find("VipsOperation", "heifsave_buffer") == 0)
                        return render_fail(err, -ENOTSUP, true,
                                           "encode avif: this libvips has no AVIF encoder "
                                           "(heifsave_buffer is missing)");
                r = vips_heifsave_buffer(in, &buf, &len, "compression",
                                         VIPS_FOREIGN_HEIF_COMPRESSION_AV1, "Q", q, "effort",
                                         (int)v->effort, "subsample_mode",
                                         render_subsample(v->chroma), "strip", strip, NULL);
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

/*
 * Encodes in for v into *ret (buf, size, quality, warning). Without max_bytes, one encode at
 * v's quality. With it: v's quality if that fits; else the lowest allowed quality
 * (VARIANT_MAX_BYTES_QUALITY_MIN, or v's own if lower) and, when that fits, a bisection for
 * the highest quality that fits, VARIANT_MAX_BYTES_STEPS encodes in all at most. An output
 * that does not fit even at the lowest quality is returned with a warning, or fails with
 * -EFBIG (permanent) when max_bytes_strict. Returns 0 or a negative errno with err filled in.
 */
static int render_encode_fit(VipsImage *in, const struct variant *v, bool strip,
                             struct render_output *ret, struct render_error *err)
{
        _cleanup_gfree_ void *best = NULL;
        size_t best_len = 0;
        int q = (int)v->quality, lo, hi, steps = 0, r;

        r = render_encode(in, v, q, strip, &best, &best_len, err);
        if (r < 0)
                return r;
        steps++;
        if (v->max_bytes > 0 && variant_uses_quality(v) && best_len > v->max_bytes) {
                lo = MIN(q, VARIANT_MAX_BYTES_QUALITY_MIN);
                hi = q; /* does not fit */
                if (lo < hi) {
                        _cleanup_gfree_ void *buf = NULL;
                        size_t len = 0;

                        r = render_encode(in, v, lo, strip, &buf, &len, err);
                        if (r < 0)
                                return r;
                        steps++;
                        g_free(best);
                        best = TAKE_PTR(buf);
                        best_len = len;
                        q = lo;
                }
                if (best_len > v->max_bytes) {
                        if (v->max_bytes_strict)
                                return render_fail(err, -EFBIG, true,
                                                   "max_bytes %" PRIu64 " not reached at the "
                                                   "lowest quality %d (%zu bytes)",
                                                   v->max_bytes, q, best_len);
                        snprintf(ret->warning, sizeof(ret->warning),
                                 "max_bytes %" PRIu64 " not reached at the lowest quality %d; "
                                 "published at %zu bytes",
                                 v->max_bytes, q, best_len);
                } else {
                        /* lo fits, hi does not: bisect while steps remain. */
                        while (hi - lo > 1 && steps < VARIANT_MAX_BYTES_STEPS) {
                                _cleanup_gfree_ void *buf = NULL;
                                size_t len = 0;
                                int mid = lo + (hi - lo) / 2;

                                r = render_encode(in, v, mid, strip, &buf, &len, err);
                                if (r < 0)
                                        return r;
                                steps++;
                                if (len <= v->max_bytes) {
                                        g_free(best);
                                        best = TAKE_PTR(buf);
                                        best_len = len;
                                        lo = mid;
                                } else {
                                        hi = mid;
                                }
                        }
                        q = lo;
                }
        }
        ret->buf = TAKE_PTR(best);
        ret->size = best_len;
        ret->quality = variant_uses_quality(v) ? q : -1;
        return 0;
}

/*
 * One frame of variant v from in (a whole image, or one frame of an animation): resized
 * and cropped, its fit checked, watermarked (overlay, made for the first frame, is reused
 * for the others), masked. Returns 0 and *ret, or a negative errno with err filled in.
 */
static int render_frame(render_base *b, VipsImage *in, const struct variant *v, render_cache *cache,
                        VipsImage **overlay, int *ox, int *oy, VipsImage **ret,
                        struct render_error *err)
{
        _cleanup_image_ VipsImage *resized = NULL, *marked = NULL, *masked = NULL;
        /* The base image shrunk after its decode: sizes follow from the decoded size. */
        bool shrunk = in == b->image && b->ref_width > 0;
        int src_w = shrunk ? b->ref_width : in->Xsize, src_h = shrunk ? b->ref_height : in->Ysize;
        VipsImage *cur;
        int r;

        if (render_resize(in, shrunk ? src_w : 0, shrunk ? src_h : 0, v, &resized) < 0)
                return render_fail_vips(err, -EBADMSG, "resize");
        if (!render_fit_holds(v, src_w, src_h, resized->Xsize, resized->Ysize))
                return render_fail(err, -EIO, true, "resize: %s %ux%u of %dx%d gave %dx%d",
                                   variant_fit_name(v->fit), v->width, v->height, src_w, src_h,
                                   resized->Xsize, resized->Ysize);
        cur = resized;

        if (v->watermark.kind != VARIANT_WATERMARK_NONE) {
                if (!*overlay) {
                        r = render_watermark_overlay(cache, v, b->max_pixels, cur->Xsize,
                                                     cur->Ysize, overlay, ox, oy, err);
                        if (r < 0)
                                return r;
                }
                if (render_composite(cur, *overlay, *ox, *oy, &marked) < 0)
                        return render_fail_vips(err, -EBADMSG, "watermark");
                cur = marked;
        }

        if (v->mask == VARIANT_MASK_CIRCLE) {
                if (render_circle_mask(cur, &masked) < 0)
                        return render_fail_vips(err, -EBADMSG, "mask");
                cur = masked;
        }
        *ret = g_object_ref(cur);
        return 0;
}

/*
 * Attaches to im an EXIF block ("exif-data") for a w x h image holding the copyright, as
 * libvips' own EXIF writer makes it (through a throw-away JPEG of a black w x h image).
 * Returns 0, or -1 with libvips' error set.
 */
static int render_exif_block(int w, int h, const char *copyright, VipsImage *im)
{
        _cleanup_image_ VipsImage *blk = NULL, *tagged = NULL, *back = NULL;
        _cleanup_gfree_ void *jpg = NULL;
        const void *exif = NULL;
        size_t len = 0, exif_len = 0;

        if (vips_black(&blk, w, h, NULL) < 0 ||
            vips_copy(blk, &tagged, "format", VIPS_FORMAT_UCHAR, "interpretation",
                      VIPS_INTERPRETATION_B_W, NULL) < 0)
                return -1;
        vips_image_set_string(tagged, "exif-ifd0-Copyright", copyright);
        if (vips_jpegsave_buffer(tagged, &jpg, &len, "Q", 10, "strip", FALSE, NULL) < 0 ||
            vips_jpegload_buffer(jpg, len, &back, NULL) < 0 ||
            vips_image_get_blob(back, VIPS_META_EXIF_NAME, &exif, &exif_len) < 0)
                return -1;
        vips_image_set_blob_copy(im, VIPS_META_EXIF_NAME, exif, exif_len);
        return 0;
}

/*
 * Attaches to a copy of in what v keeps and the source had: an sRGB ICC profile (the pixels
 * are sRGB) and the EXIF copyright. Returns 0, *ret and *ret_any (whether anything was
 * attached), or -1 with libvips' error set.
 */
static int render_attach_kept(render_base *b, VipsImage *in, const struct variant *v,
                              VipsImage **ret, bool *ret_any)
{
        _cleanup_image_ VipsImage *copy = NULL;
        bool any = false;

        if (vips_copy(in, &copy, NULL) < 0)
                return -1;
        if ((v->keep & VARIANT_KEEP_ICC) && b->had_icc) {
                VipsBlob *profile = NULL;
                const void *data;
                size_t len = 0;

                if (vips_profile_load("srgb", &profile, NULL) < 0)
                        return -1;
                data = vips_area_get_data(VIPS_AREA(profile), &len, NULL, NULL, NULL);
                vips_image_set_blob_copy(copy, VIPS_META_ICC_NAME, data, len);
                vips_area_unref(VIPS_AREA(profile));
                any = true;
        }
        if ((v->keep & VARIANT_KEEP_COPYRIGHT) && b->copyright) {
                vips_image_set_string(copy, "exif-ifd0-Copyright", b->copyright);
                /* pngsave writes an EXIF block as it is, it does not make one from fields. */
                if (v->format == IMAGE_FORMAT_PNG &&
                    render_exif_block(copy->Xsize, copy->Ysize, b->copyright, copy) < 0)
                        return -1;
                any = true;
        }
        *ret = TAKE_PTR(copy);
        *ret_any = any;
        return 0;
}

int render_variant_full(render_base *b, const struct variant *v, render_cache *cache,
                        struct render_output *ret, struct render_error *err)
{
        _cleanup_(render_cache_freep) render_cache *own_cache = NULL;
        _cleanup_image_ VipsImage *overlay = NULL, *joined = NULL, *flat = NULL, *flat8 = NULL,
                                  *kept = NULL;
        _cleanup_free_ VipsImage **frames = NULL;
        struct render_output out = { .quality = -1 };
        bool animate, keep_any = false;
        int n = 1, ox = 0, oy = 0, r = 0;
        VipsImage *cur;

        if (!variant_format_writable(v->format))
                return render_fail(err, -EINVAL, true, "variant %s: cannot write format %s",
                                   v->name, image_format_name(v->format));
        if (v->fit != VARIANT_FIT_NONE &&
            (v->width == 0 || v->height == 0 || v->width > VARIANT_DIMENSION_MAX ||
             v->height > VARIANT_DIMENSION_MAX))
                return render_fail(err, -EINVAL, true, "variant %s: bad size %ux%u", v->name,
                                   v->width, v->height);
        if (v->watermark.kind != VARIANT_WATERMARK_NONE && !cache) {
                cache = own_cache = render_cache_new();
                if (!cache)
                        return render_fail(err, -ENOMEM, false, "out of memory");
        }

        vips_error_clear();
        animate = v->animated && b->frames && variant_format_animated(v->format);
        if (animate)
                n = b->frames->Ysize / b->page_height;
        frames = calloc((size_t)n, sizeof(*frames));
        if (!frames)
                return render_fail(err, -ENOMEM, false, "out of memory");
        for (int i = 0; i < n && r >= 0; i++) {
                _cleanup_image_ VipsImage *frame = NULL;

                if (!animate)
                        frame = g_object_ref(b->image);
                else if (vips_extract_area(b->frames, &frame, 0, i * b->page_height,
                                           b->frames->Xsize, b->page_height, NULL) < 0) {
                        r = render_fail_vips(err, -EBADMSG, "frame");
                        break;
                }
                r = render_frame(b, frame, v, cache, &overlay, &ox, &oy, &frames[i], err);
        }
        if (r >= 0 && n > 1) {
                if (vips_arrayjoin(frames, &joined, n, "across", 1, NULL) < 0) {
                        r = render_fail_vips(err, -EBADMSG, "join frames");
                } else {
                        vips_image_set_int(joined, VIPS_META_PAGE_HEIGHT, frames[0]->Ysize);
                        vips_image_set_int(joined, VIPS_META_N_PAGES, n);
                        vips_image_set_int(joined, "loop", b->loop);
                        if (b->n_delays > 0)
                                vips_image_set_array_int(joined, "delay", b->delays, b->n_delays);
                }
        }
        if (r < 0) {
                for (int i = 0; i < n; i++)
                        if (frames[i])
                                g_object_unref(frames[i]);
                return r;
        }
        cur = n > 1 ? joined : frames[0];
        out.width = (unsigned)frames[0]->Xsize;
        out.height = (unsigned)frames[0]->Ysize;
        out.pages = (unsigned)n;

        if (!image_format_has_alpha(v->format) && vips_image_hasalpha(cur)) {
                VipsArrayDouble *bg =
                        vips_array_double_newv(3, (double)v->background[0],
                                               (double)v->background[1], (double)v->background[2]);

                r = vips_flatten(cur, &flat, "background", bg, NULL);
                vips_area_unref(VIPS_AREA(bg));
                if (r < 0)
                        r = render_fail_vips(err, -EBADMSG, "flatten");
                else
                        cur = flat;
                if (r >= 0 && cur->BandFmt != VIPS_FORMAT_UCHAR) {
                        if (vips_cast(cur, &flat8, VIPS_FORMAT_UCHAR, NULL) < 0)
                                r = render_fail_vips(err, -EBADMSG, "flatten");
                        else
                                cur = flat8;
                }
        }
        if (r >= 0 && v->keep) {
                if (render_attach_kept(b, cur, v, &kept, &keep_any) < 0)
                        r = render_fail_vips(err, -EBADMSG, "metadata");
                else
                        cur = kept;
        }
        if (r >= 0)
                r = render_encode_fit(cur, v, !keep_any, &out, err);

        for (int i = 0; i < n; i++)
                g_object_unref(frames[i]);
        if (r < 0)
                return r;
        *ret = out;
        return 0;
}

int render_variant(render_base *b, const struct variant *v, void **ret_buf, size_t *ret_size,
                   unsigned *ret_width, unsigned *ret_height, struct render_error *err)
{
        struct render_output out;
        int r;

        r = render_variant_full(b, v, NULL, &out, err);
        if (r < 0)
                return r;
        *ret_buf = out.buf;
        *ret_size = out.size;
        *ret_width = out.width;
        *ret_height = out.height;
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
                return render_fail(err, st == VP8_STATUS_OUT_OF_MEMORY ? -ENOMEM : -EBADMSG,
                                   st != VP8_STATUS_OUT_OF_MEMORY, "verify: WebP header: %s",
                                   webp_status_name(st));
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
                return render_fail(err, st == VP8_STATUS_OUT_OF_MEMORY ? -ENOMEM : -EBADMSG,
                                   st != VP8_STATUS_OUT_OF_MEMORY, "verify: WebP decode: %s",
                                   webp_status_name(st));
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
        sniffed = image_format_sniff(
                buf, size < IMAGE_FORMAT_SNIFF_BYTES ? size : IMAGE_FORMAT_SNIFF_BYTES);
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
        if (!loader) {
                render_fail_vips(err, -EBADMSG, "verify");
                return -EBADMSG;
        }
        if (!strcasestr(loader, stem))
                return render_fail(err, -EBADMSG, true, "verify: expected %s, libvips picks %s",
                                   image_format_name(f), loader);

        if (render_open(buf, size, f, 1, 1.0, pages > 1 ? -1 : 1, &im) < 0) {
                render_fail_vips(err, -EBADMSG, "verify");
                return -EBADMSG;
        }
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
        if (vips_avg(im, &avg, NULL) < 0) {
                /* The header promises -EBADMSG; whether it was transient is in err. */
                render_fail_vips(err, -EBADMSG, "verify");
                return -EBADMSG;
        }
        return 0;
}

int render_verify(const void *buf, size_t size, enum image_format f, unsigned width,
                  unsigned height, struct render_error *err)
{
        return render_verify_pages(buf, size, f, width, height, 1, err);
}

/* ---- placeholders ---------------------------------------------------------------------- */

/*
 * The dominant colour of `pixels` (n pixels of `bands` 8-bit bands, sRGB first, alpha
 * fourth): the pixels are counted in 16 x 16 x 16 colour cells, transparent ones (alpha
 * below 128) not at all, and the mean of the fullest cell (the first of equals) wins.
 * Returns false when no pixel counted.
 */
static bool render_dominant(const uint8_t *pixels, size_t n, int bands, uint8_t ret[3])
{
        _cleanup_free_ uint32_t *cells = calloc(4096 * 4, sizeof(uint32_t));
        size_t best = 0;

        if (!cells)
                return false;
        for (size_t i = 0; i < n; i++) {
                const uint8_t *p = pixels + i * (size_t)bands;
                size_t c;

                if (bands == 4 && p[3] < 128)
                        continue;
                c = ((size_t)(p[0] >> 4) << 8 | (size_t)(p[1] >> 4) << 4 | (size_t)(p[2] >> 4)) * 4;
                cells[c]++;
                cells[c + 1] += p[0];
                cells[c + 2] += p[1];
                cells[c + 3] += p[2];
        }
        for (size_t c = 0; c < 4096; c++)
                if (cells[c * 4] > cells[best * 4])
                        best = c;
        if (cells[best * 4] == 0)
                return false;
        for (int k = 0; k < 3; k++)
                ret[k] = (uint8_t)((cells[best * 4 + 1 + k] + cells[best * 4] / 2) /
                                   cells[best * 4]);
        return true;
}

int render_placeholder(render_base *b, const uint8_t background[3], struct render_placeholder *ret,
                       struct render_error *err)
{
        _cleanup_image_ VipsImage *tiny = NULL, *small = NULL, *flat = NULL;
        _cleanup_gfree_ void *webp = NULL;
        _cleanup_gfree_ uint8_t *px = NULL, *flat_px = NULL;
        _cleanup_gfree_ char *b64 = NULL;
        struct render_placeholder p = {};
        VipsArrayDouble *bg;
        size_t len = 0, n = 0, flat_n = 0;
        int r;

        vips_error_clear();
        /* The data URI: a WebP of at most 32 x 32, never enlarged, alpha kept. */
        if (vips_thumbnail_image(b->image, &tiny, RENDER_PLACEHOLDER_SIZE, "height",
                                 RENDER_PLACEHOLDER_SIZE, "size", VIPS_SIZE_DOWN, NULL) < 0)
                return render_fail_vips(err, -EBADMSG, "placeholder");
        if (vips_webpsave_buffer(tiny, &webp, &len, "Q", 50, "effort", 4, "strip", TRUE, NULL) < 0)
                return render_fail_vips(err, -EIO, "placeholder: encode webp");
        len = render_webp_strip(webp, len);
        if (len == 0)
                return render_fail(err, -EIO, true,
                                   "placeholder: libvips wrote a malformed RIFF container");
        b64 = g_base64_encode(webp, len);
        p.data_uri = g_strconcat("data:image/webp;base64,", b64, NULL);

        /* BlurHash and dominant colour, from at most 64 x 64 pixels. */
        if (vips_thumbnail_image(b->image, &small, 64, "height", 64, "size", VIPS_SIZE_DOWN, NULL) <
            0)
                goto fail_vips;
        px = vips_image_write_to_memory(small, &n);
        if (!px)
                goto fail_vips;
        if (!render_dominant(px, n / (size_t)small->Bands, small->Bands, p.dominant))
                memcpy(p.dominant, background, 3);

        bg = vips_array_double_newv(3, (double)background[0], (double)background[1],
                                    (double)background[2]);
        r = vips_image_hasalpha(small) ? vips_flatten(small, &flat, "background", bg, NULL)
                                       : vips_copy(small, &flat, NULL);
        vips_area_unref(VIPS_AREA(bg));
        if (r < 0)
                goto fail_vips;
        {
                _cleanup_image_ VipsImage *flat8 = NULL;

                if (vips_cast(flat, &flat8, VIPS_FORMAT_UCHAR, NULL) < 0)
                        goto fail_vips;
                flat_px = vips_image_write_to_memory(flat8, &flat_n);
                if (!flat_px || flat8->Bands != 3)
                        goto fail_vips;
                r = blurhash_encode(flat_px, (unsigned)flat8->Xsize, (unsigned)flat8->Ysize,
                                    (size_t)flat8->Xsize * 3, 3,
                                    flat8->Xsize >= flat8->Ysize ? 4 : 3,
                                    flat8->Xsize >= flat8->Ysize ? 3 : 4, p.blurhash);
        }
        if (r < 0) {
                g_free(p.data_uri);
                return render_fail(err, r, true, "placeholder: blurhash: %s", strerror(-r));
        }
        *ret = p;
        return 0;

fail_vips:
        g_free(p.data_uri);
        return render_fail_vips(err, -EBADMSG, "placeholder");
}

void render_placeholder_clear(struct render_placeholder *p)
{
        if (!p)
                return;
        g_free(p->data_uri);
        *p = (struct render_placeholder){};
}
