/* SPDX-License-Identifier: MIT */
/*
 * render-private.h - what the files of the render component share and nothing outside
 * src/worker/render*.c and its siblings may include (as libvips' pforeign.h): the
 * render_base, cleanup helpers for libvips objects, the error helpers and one operation per
 * file. render.h stays the public contract.
 *
 *   render.c       libvips start-up, errors, and the variant pipeline (render_variant_full)
 *   decode.c       sniff, header checks, shrink-on-load and the one decode (render_base_new)
 *   resize.c       sizes a variant needs, the pre-shrink of a base, fit and gravity
 *   overlay.c      the watermark cache, watermark overlays and the circle mask
 *   metadata.c     metadata removed from a base, kept for a variant, stripped from a WebP
 *   encode.c       flattening and encoding, with the max_bytes quality search
 *   autoquality.c  quality = "auto": the search on a sample, and an output's score
 *   similarity.c   the metric (MS-SSIM, DSSIM) of the scores (its own header)
 *   verify.c       output verification (libjpeg, libwebp, libvips)
 *   placeholder.c  BlurHash, dominant colour and the tiny WebP of a placeholder
 *
 * The libvips operations below return 0 or -1 with libvips' error buffer set, as libvips
 * does; the caller turns that into a render_error with render_fail_vips(). Functions that
 * take a render_error return 0 or a negative errno with it filled in.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <vips/vips.h>

#include "shared/macro.h"
#include "worker/render.h"

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

/* ---- errors (render.c) ----------------------------------------------------------------- */

/* Fills err with a printf-style message; returns r. */
_printf_(4, 5) int render_fail(struct render_error *err, int r, bool permanent, const char *fmt,
                               ...);

/*
 * Takes (and clears) libvips' error buffer into err as "<what>: <text>", its lines joined
 * with "; " (or, when it is empty, the last libvips warning). An allocation failure becomes
 * -ENOMEM and transient; anything else returns r and is permanent (the same input fails the
 * same way).
 */
int render_fail_vips(struct render_error *err, int r, const char *what);

/* Clears libvips' error buffer and the last libvips warning kept for render_fail_vips(). */
void render_clear_errors(void);

/* ---- decode.c -------------------------------------------------------------------------- */

/* Whether f is on the allowlist of formats decoded (sources and watermark images alike). */
bool render_format_allowed(enum image_format f);

/*
 * Opens data with the loader for format f, lazily: only the header is read here, pixels are
 * decoded when the image is first computed. shrink (JPEG) and scale (WebP) ask the decoder
 * for a smaller image; n is the number of frames of a GIF or WebP (1, or -1 for all).
 * Returns 0 and *ret, or -1 with libvips' error buffer set.
 */
int render_open(const void *data, size_t size, enum image_format f, int shrink, double scale, int n,
                VipsImage **ret);

/*
 * Converts a decoded, oriented image to 8-bit sRGB with or without alpha: through its
 * embedded ICC profile when it has one, through libvips' CMYK profile for CMYK, else by
 * libvips' colour space conversion. Returns 0 and *ret, or -1 with libvips' error set.
 */
int render_to_srgb8(VipsImage *in, VipsImage **ret);

/* ---- resize.c -------------------------------------------------------------------------- */

/* x rounded down, for a non-negative size (at most VIPS_MAX_COORD). */
double render_floor(double x);

/*
 * The size that variant v needs from a W x H (oriented) source, never more than the source:
 * decoding at this size loses nothing the variant can show.
 */
void render_needed_size(const struct variant *v, double W, double H, double *need_w,
                        double *need_h);

/*
 * Whether a decoded (oriented) w x h base should be shrunk once to need_w x need_h before the
 * variants are made from it: for formats whose loader cannot shrink (JPEG and WebP did that
 * on load already), when the base has at least twice the pixels needed. Each variant then
 * resizes a small image instead of the full decode.
 */
bool render_wants_preshrink(enum image_format f, double w, double h, double need_w, double need_h);

/*
 * Shrinks in (oriented, as decoded: before the conversion to sRGB, so that an ICC transform
 * runs on the small image only) with lanczos3 (vips_resize) so that it still covers
 * need_w x need_h: one side exact, the other at least as long. Never below what a variant
 * needs, so what the variants show is unchanged. Returns 0 and *ret, or -1 with libvips'
 * error set.
 */
int render_preshrink(VipsImage *in, double need_w, double need_h, VipsImage **ret);

/* Where a compass gravity puts a crop (or a watermark): 0 left/top, 1 centre, 2 right/bottom. */
void render_compass(enum variant_gravity g, int *ret_x, int *ret_y);

/*
 * Resizes in per fit and gravity. ref_w x ref_h (0: in's own size) is the size in had before
 * it was shrunk: "contain" and "inside" give what they give for that size. Returns 0 and
 * *ret, or -1 with libvips' error set.
 */
int render_resize(VipsImage *in, int ref_w, int ref_h, const struct variant *v, VipsImage **ret);

/* Whether a w x h result is what fit promises for a src_w x src_h source. */
bool render_fit_holds(const struct variant *v, int src_w, int src_h, int w, int h);

/* ---- overlay.c ------------------------------------------------------------------------- */

/*
 * Multiplies an anti-aliased disc, the circle inscribed in the image, into in's alpha
 * (adding an alpha channel when there is none): alpha = clamp(r + 0.5 - d, 0, 1) * 255,
 * d being the distance of a pixel's centre from the image's centre. Returns 0 and *ret, or
 * -1 with libvips' error set.
 */
int render_circle_mask(VipsImage *in, VipsImage **ret);

/*
 * Makes the overlay of v's watermark for an out_w x out_h output and where it goes:
 * *ret (8-bit sRGB with alpha, opacity applied) at (*ret_x, *ret_y). The margin is dropped
 * where the output is too small for it, and the watermark is made smaller where it would
 * not fit. A watermark image comes from cache (decoded there when it is not yet, within
 * max_pixels). Returns 0, or a negative errno with err filled in.
 */
int render_watermark_overlay(render_cache *cache, const struct variant *v, uint64_t max_pixels,
                             int out_w, int out_h, VipsImage **ret, int *ret_x, int *ret_y,
                             struct render_error *err);

/*
 * Blends overlay onto in at (x, y). Only the area under the overlay is recomputed; every
 * other pixel is in's, unchanged. in keeps its bands (an alpha is not added). Returns 0 and
 * *ret, or -1 with libvips' error set.
 */
int render_composite(VipsImage *in, VipsImage *overlay, int x, int y, VipsImage **ret);

/* ---- metadata.c ------------------------------------------------------------------------ */

/*
 * Removes every metadata field from im (the built-in header fields stay), then marks it as
 * read top to bottom (VIPS_META_SEQUENTIAL, a hint no saver writes): libvips' vertical
 * shrink caches its lines only for such an input, and without the cache it computes them
 * again for every output line of the reduce after it. Measured: a 2560x1600 base to a
 * 320x320 cover took 270 ms without the hint, 60 ms with it.
 */
void render_remove_metadata(VipsImage *im);

/*
 * libvips 8.14's webpsave ignores "strip" (libvips issue #3340): it writes the EXIF and XMP
 * attached to the image, and an EXIF block it makes up from the resolution when there is
 * none. This drops the EXIF and XMP chunks from the RIFF container of that output, in place,
 * and clears their flags in the VP8X header. Returns the new length, or 0 when the buffer is
 * not a well-formed RIFF/WEBP (then it is left unchanged).
 */
size_t render_webp_strip(uint8_t *p, size_t len);

/*
 * Attaches to a copy of in what v keeps and the source had: an sRGB ICC profile (the pixels
 * are sRGB) and the EXIF copyright. Returns 0, *ret and *ret_any (whether anything was
 * attached), or -1 with libvips' error set.
 */
int render_attach_kept(render_base *b, VipsImage *in, const struct variant *v, VipsImage **ret,
                       bool *ret_any);

/* ---- encode.c -------------------------------------------------------------------------- */

/*
 * in flattened onto the sRGB colour background, its alpha band removed (vips_flatten). Returns
 * 0 and *ret (not always 8-bit: the caller casts where that matters), or -1 with libvips'
 * error set.
 */
int render_flatten(VipsImage *in, const uint8_t background[3], VipsImage **ret);

/*
 * Encodes in as v's format at quality q (1..100; else 80) with v's encoder settings.
 * `strip`: no metadata at all (else what is attached to in is written: only what the
 * variant keeps). Returns 0, *ret_buf (g_free()) and *ret_len, or a negative errno with err
 * filled in.
 */
int render_encode(VipsImage *in, const struct variant *v, int q, bool strip, void **ret_buf,
                  size_t *ret_len, struct render_error *err);

/*
 * When the encodes of one output may start (format "best": best_time_limit). No encode of a
 * search (a trial of the quality search, a correction of the whole image, a step of the
 * max_bytes bisection) starts at or after at_usec (g_get_monotonic_time()); the output is
 * then the best one made so far: the one that meets the target, else the most faithful,
 * scored as published. The whole image is still encoded once, at the best quality the search
 * knows, unless `optional` (the caller has another output): then nothing is made.
 */
struct render_deadline {
        uint64_t at_usec; /* 0: none */
        bool optional;
};

/*
 * Encodes in for v into *ret (buf, size, quality, score, warning). With quality = "auto",
 * the quality is the one render_auto_quality() finds, and the output is scored
 * (render_score()); a score over the target is published with a warning. Without max_bytes,
 * one encode at that quality (v's own without auto; none when the search's trial at that
 * quality is the output, already scored: render_auto). With it: v's quality if that fits; else the
 * lowest allowed quality (VARIANT_MAX_BYTES_QUALITY_MIN, or v's own if lower) and, when that fits,
 * a bisection for the highest quality that fits, VARIANT_MAX_BYTES_STEPS encodes in all at most. An
 * output that does not fit even at the lowest quality is returned with a warning, or fails with
 * -EFBIG (permanent) when max_bytes_strict (max_bytes starts from the quality auto found, so
 * the smaller of the two wins). `strip`: no metadata at all (else what is
 * attached to in is written: only what the variant keeps). dl: a deadline (above), or NULL.
 * Returns 0, -ETIMEDOUT when dl is optional and was reached before the whole image was
 * encoded (nothing made), or another negative errno with err filled in.
 */
int render_encode_fit(VipsImage *in, const struct variant *v, bool strip,
                      const struct render_deadline *dl, struct render_output *ret,
                      struct render_error *err);

/* ---- autoquality.c --------------------------------------------------------------------- */

/* What render_auto_quality() found. */
struct render_auto {
        int quality;     /* the quality to publish at */
        unsigned trials; /* encodes made */
        double slope;    /* the fall of ln(DSSIM) per quality step there (autoquality_slope()) */
        bool cut;        /* the deadline cut the search short */
        void *buf;       /* the output at that quality, already encoded and scored (an image that is
                          * its own sample), or NULL; g_free() */
        size_t size;
        double score; /* buf's DSSIM */
};

/*
 * The quality for v (quality_auto) of in: the lowest found by the bounded search
 * (autoquality.h) on a sample of in, with v->auto_encodes - 2 trial encodes of the sample
 * (the caller's encode of the whole image is one more, and one is kept for a correction
 * when the whole image misses the target: render_encode_fit(), which may make one more
 * after it, auto_encodes + 1 in all); of a small image, which is its own sample,
 * auto_encodes - 1, and the trial at the quality found is the output (ret->buf, encoded with
 * `strip`: the caller need not encode it again); with auto_encodes 1, the first guess
 * without a trial. The sample is prepared once as the reference of every trial's score
 * (similarity_ref). No trial starts at or after deadline_usec (g_get_monotonic_time(); 0:
 * none): the search is then cut short (ret->cut), and the quality is the lowest known to
 * meet the target, else the one the search would have tried next. Returns 0 and *ret, or a
 * negative errno with err filled in.
 */
int render_auto_quality(VipsImage *in, const struct variant *v, bool strip, uint64_t deadline_usec,
                        struct render_auto *ret, struct render_error *err);

/*
 * The DSSIM (similarity.h) of buf[0..len), an encoding of ref in format f, decoded, against
 * ref; images with alpha are compared flattened onto bg. Returns 0 and *ret, or a negative
 * errno with err filled in.
 */
int render_score(VipsImage *ref, const void *buf, size_t len, enum image_format f,
                 const uint8_t bg[3], double *ret, struct render_error *err);
