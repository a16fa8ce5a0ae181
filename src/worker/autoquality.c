/* SPDX-License-Identifier: MIT */
/*
 * autoquality.c - quality = "auto": the search policy (pure, see autoquality.h) and its driver
 * render_auto_quality() with the scoring of an encoded output, render_score() (see
 * render-private.h).
 *
 * The driver searches on a sample: an image of more than AUTO_SAMPLE_MIN_PIXELS is
 * represented by AUTO_TILES tiles of AUTO_TILE x AUTO_TILE pixels, spread over it on a
 * grid aligned to 16 pixels (a JPEG MCU at 4:2:0, and a multiple of the other encoders'
 * blocks, so each tile is cut up as the whole image is), joined into one mosaic. Each trial
 * encodes and scores the mosaic only, against the mosaic prepared once as the metric's
 * reference (similarity_ref); the caller encodes the whole image once, at the quality found,
 * and scores that. A small image is its own sample: the trial at the quality found is then
 * handed to the caller as the output, already scored.
 */
#include <errno.h>
#include <math.h>

#include <vips/vips.h>

#include "shared/macro.h"
#include "worker/autoquality.h"
#include "worker/render-private.h"
#include "worker/similarity.h"

#define AUTO_TILE 256
#define AUTO_TILES 6
#define AUTO_SAMPLE_MIN_PIXELS (3 * AUTO_TILES * AUTO_TILE * AUTO_TILE)
/* A sample scores within about 10% of the whole image, either way: the search on one aims
 * 5% below the target, and the whole image, scored as published, is encoded once more at a
 * higher quality when it still misses (render_encode_fit()). */
#define AUTO_SAMPLE_MARGIN 0.95

void autoquality_start(struct autoquality_search *s, double target, int min_q, int max_q,
                       unsigned budget)
{
        *s = (struct autoquality_search){
                .target = target,
                .min_q = min_q,
                .max_q = max_q,
                .miss_q = min_q - 1,
                .meet_q = max_q + 1,
                .budget = budget,
        };
}

/*
 * The fall of ln(DSSIM) per quality step around quality q, while only one side of the target
 * is known: steeper at higher qualities, about 0.039 at 70, doubling every 15 steps (fitted
 * on the steps of the searches of bench-quality --quick, JPEG, WebP and JPEG XL together).
 * From one point the next trial aims at the target by the slope there, which is steeper than
 * below it and shallower than above it: the step falls short rather than overshoots.
 */
static double typical_slope(int q)
{
        return AUTOQUALITY_SLOPE_70 * exp2((q - 70) / AUTOQUALITY_SLOPE_DOUBLING);
}

/* The fall of ln(DSSIM) per quality step from (q0, s0) to (q1, s1), as measured (negative
 * when the score rose; not finite when a score is 0 or q0 == q1). */
static double slope_between(int q0, double s0, int q1, double s1)
{
        return (log(s0) - log(s1)) / (q1 - q0);
}

/* While one side is known: the slope between its two nearest trials to the target (q, score
 * and the one before), when there are two, else the typical one at q. */
static double one_side_slope(const struct autoquality_search *s, int q, double score)
{
        double slope;

        if (s->prev_q == 0)
                return typical_slope(q);
        slope = fabs(slope_between(s->prev_q, s->prev_score, q, score));
        return isfinite(slope) ? CLAMP(slope, AUTOQUALITY_SLOPE_MIN, AUTOQUALITY_SLOPE_MAX)
                               : typical_slope(q);
}

int autoquality_next(const struct autoquality_search *s, int guess)
{
        bool miss = s->miss_q >= s->min_q, meet = s->meet_q <= s->max_q;
        double aim = log(s->target);
        double q;

        if (s->tried >= s->budget || s->meet_q - s->miss_q <= 1)
                return 0;
        if (meet && miss && s->meet_q - s->miss_q <= AUTOQUALITY_RESOLUTION)
                return 0;
        /* Close enough: the lowest quality that meets it is within about two steps. */
        if (meet && s->meet_score >= s->target * AUTOQUALITY_CLOSE)
                return 0;
        if (!miss && !meet)
                q = guess;
        else if (miss && meet)
                q = s->miss_q + (s->meet_q - s->miss_q) * (log(s->miss_score) - aim) /
                                        (log(s->miss_score) - log(s->meet_score));
        else if (miss)
                q = s->miss_q +
                    CLAMP((log(s->miss_score) - aim) / one_side_slope(s, s->miss_q, s->miss_score),
                          3.0, AUTOQUALITY_STEP_MAX);
        else
                q = s->meet_q -
                    MAX((aim - log(s->meet_score)) / one_side_slope(s, s->meet_q, s->meet_score),
                        3.0);
        /* Two trials in a row on one side: the line is off, halve the bracket instead. */
        if (!isfinite(q) || (miss && meet && s->same_side >= 2))
                q = (s->miss_q + s->meet_q) / 2.0;
        /* Strictly inside the bracket, and inside the range. */
        q = MAX(q, (double)(s->miss_q + 1));
        q = MIN(q, (double)(s->meet_q - 1));
        q = MAX(q, (double)s->min_q);
        q = MIN(q, (double)s->max_q);
        return (int)lround(q);
}

void autoquality_record(struct autoquality_search *s, int q, double score)
{
        bool meets = score <= s->target;

        s->same_side = s->tried > 0 && meets == s->last_met ? s->same_side + 1 : 1;
        s->last_met = meets;
        s->tried++;
        if (meets) {
                if (q < s->meet_q) {
                        if (s->meet_q <= s->max_q) {
                                s->prev_q = s->meet_q;
                                s->prev_score = s->meet_score;
                        }
                        s->meet_q = q;
                        s->meet_score = MAX(score, 1e-9);
                }
        } else if (q > s->miss_q) {
                if (s->miss_q >= s->min_q) {
                        s->prev_q = s->miss_q;
                        s->prev_score = s->miss_score;
                }
                s->miss_q = q;
                s->miss_score = MAX(score, 1e-9);
        }
}

int autoquality_result(const struct autoquality_search *s)
{
        double q;

        if (s->meet_q > s->max_q)
                return -1;
        if (s->miss_q < s->min_q || s->meet_q - s->miss_q <= AUTOQUALITY_BRACKET_MAX)
                return s->meet_q;
        /* Out of trials with a wide bracket: where the line crosses the target, rounded up. */
        q = s->miss_q + (s->meet_q - s->miss_q) * (log(s->miss_score) - log(s->target)) /
                                (log(s->miss_score) - log(s->meet_score));
        if (!isfinite(q))
                return s->meet_q;
        return (int)CLAMP(ceil(q), s->miss_q + 1.0, (double)s->meet_q);
}

int autoquality_guess(enum image_format f, double target)
{
        /* Median qualities at the "good" target (0.005) on the benchmark's photos at 1600 px;
         * a target twice as strict is about 30 steps higher (0.005 -> 0.008: JPEG 71 -> 50,
         * WebP 87 -> 66, AVIF 72 -> 42). */
        int q;

        switch (f) {
        case IMAGE_FORMAT_WEBP:
        case IMAGE_FORMAT_JXL:
                q = 85;
                break;
        default:
                q = 70;
                break;
        }
        if (target > 0)
                q += (int)lround(log(0.005 / target) / log(2) * 30);
        return MIN(MAX(q, VARIANT_AUTO_QUALITY_MIN), 100);
}

/* ---- the driver ----------------------------------------------------------------------- */

/* in flattened onto bg when it has alpha (8-bit), else a reference to in. */
static int flat_ref(VipsImage *in, const uint8_t bg[3], VipsImage **ret)
{
        _cleanup_image_ VipsImage *flat = NULL;

        if (!vips_image_hasalpha(in)) {
                *ret = g_object_ref(in);
                return 0;
        }
        if (render_flatten(in, bg, &flat) < 0)
                return -1;
        return vips_cast(flat, ret, VIPS_FORMAT_UCHAR, NULL);
}

/* buf decoded as format f, flattened onto bg when it has alpha, in memory. */
static int decode_flat(const void *buf, size_t len, enum image_format f, const uint8_t bg[3],
                       VipsImage **ret, struct render_error *err)
{
        _cleanup_image_ VipsImage *dec = NULL, *mem = NULL;

        if (render_open(buf, len, f, 1, 1.0, 1, &dec) < 0 || !(mem = vips_image_copy_memory(dec)))
                return render_fail_vips(err, -EBADMSG, "auto quality: decode");
        if (flat_ref(mem, bg, ret) < 0)
                return render_fail_vips(err, -EBADMSG, "auto quality: flatten");
        return 0;
}

int render_score(VipsImage *ref, const void *buf, size_t len, enum image_format f,
                 const uint8_t bg[3], double *ret, struct render_error *err)
{
        _cleanup_image_ VipsImage *a = NULL, *b = NULL;
        double d;
        int r;

        r = decode_flat(buf, len, f, bg, &b, err);
        if (r < 0)
                return r;
        if (flat_ref(ref, bg, &a) < 0)
                return render_fail_vips(err, -EBADMSG, "auto quality: flatten");
        if (similarity_dssim(a, b, &d) < 0)
                return render_fail_vips(err, -EBADMSG, "auto quality: score");
        *ret = d;
        return 0;
}

/* render_score() against a prepared reference. */
static int score_ref(const similarity_ref *ref, const void *buf, size_t len, enum image_format f,
                     const uint8_t bg[3], double *ret, struct render_error *err)
{
        _cleanup_image_ VipsImage *b = NULL;
        double d;
        int r;

        r = decode_flat(buf, len, f, bg, &b, err);
        if (r < 0)
                return r;
        if (similarity_dssim_ref(ref, b, &d) < 0)
                return render_fail_vips(err, -EBADMSG, "auto quality: score");
        *ret = d;
        return 0;
}

static void similarity_ref_freep(similarity_ref **r)
{
        *r = similarity_ref_free(*r);
}

/*
 * The sample the search encodes: in itself when small, else AUTO_TILES tiles spread over a
 * grid of AUTO_TILE cells aligned to 16 pixels, joined in one row per 3 tiles, in memory.
 */
static int make_sample(VipsImage *in, VipsImage **ret)
{
        VipsImage *tiles[AUTO_TILES] = {};
        int cols, rows, cells, r = 0;

        cols = in->Xsize / AUTO_TILE;
        rows = in->Ysize / AUTO_TILE;
        cells = cols * rows;
        if ((double)in->Xsize * in->Ysize < AUTO_SAMPLE_MIN_PIXELS || cells < AUTO_TILES) {
                *ret = g_object_ref(in);
                return 0;
        }
        /* The grid is centred, on 16-pixel steps; tiles at evenly spaced cells, row-major. */
        int x0 = (in->Xsize - cols * AUTO_TILE) / 2 / 16 * 16;
        int y0 = (in->Ysize - rows * AUTO_TILE) / 2 / 16 * 16;

        for (int i = 0; i < AUTO_TILES && r == 0; i++) {
                int cell = (int)(((long)i * 2 + 1) * cells / (2 * AUTO_TILES));

                r = vips_extract_area(in, &tiles[i], x0 + cell % cols * AUTO_TILE,
                                      y0 + cell / cols * AUTO_TILE, AUTO_TILE, AUTO_TILE, NULL);
        }
        if (r == 0) {
                _cleanup_image_ VipsImage *joined = NULL;

                r = vips_arrayjoin(tiles, &joined, AUTO_TILES, "across", 3, NULL);
                if (r == 0 && !(*ret = vips_image_copy_memory(joined)))
                        r = -1;
        }
        for (int i = 0; i < AUTO_TILES; i++)
                if (tiles[i])
                        g_object_unref(tiles[i]);
        return r;
}

double autoquality_slope(const struct autoquality_search *s)
{
        double slope;

        if (s->miss_q < s->min_q || s->meet_q > s->max_q || s->meet_score <= 0)
                return AUTOQUALITY_SLOPE;
        slope = slope_between(s->miss_q, s->miss_score, s->meet_q, s->meet_score);
        return isfinite(slope) ? CLAMP(slope, AUTOQUALITY_SLOPE_MIN, AUTOQUALITY_SLOPE_MAX)
                               : AUTOQUALITY_SLOPE;
}

void autoquality_fix_start(struct autoquality_fix *f, double target, double sample_slope, int q,
                           double score)
{
        *f = (struct autoquality_fix){ .target = target,
                                       .slope = sample_slope,
                                       .max_step = AUTOQUALITY_FIX_MAX,
                                       .last_q = q,
                                       .last_score = score };
}

int autoquality_fix_next(const struct autoquality_fix *f, double best_score)
{
        double up = ceil((log(best_score) - log(f->target * 0.9)) / f->slope);

        return MIN(f->last_q + (int)CLAMP(isfinite(up) ? up : 1.0, 1.0, f->max_step), 100);
}

void autoquality_fix_record(struct autoquality_fix *f, int q, double score)
{
        if (score < f->last_score && q > f->last_q) {
                double m = slope_between(f->last_q, f->last_score, q, score);

                if (isfinite(m) && m >= AUTOQUALITY_FIX_SLOPE_SEEN) {
                        f->slope = CLAMP(m, AUTOQUALITY_SLOPE_MIN, AUTOQUALITY_SLOPE_MAX);
                        f->max_step = AUTOQUALITY_FIX_MAX_MEASURED;
                }
        }
        f->last_q = q;
        f->last_score = score;
}

int render_auto_quality(VipsImage *in, const struct variant *v, bool strip, uint64_t deadline_usec,
                        struct render_auto *ret, struct render_error *err)
{
        _cleanup_image_ VipsImage *sample = NULL, *flat = NULL;
        _cleanup_(similarity_ref_freep) similarity_ref *ref = NULL;
        _cleanup_gfree_ void *kept = NULL;
        size_t kept_len = 0;
        double kept_score = -1;
        struct autoquality_search s;
        const int guess = autoquality_guess(v->format, v->target);
        bool cut = false, own;
        int q, r;

        /* One encode in all: the guess, and no search (degraded, or asked so). */
        if (v->auto_encodes <= 1) {
                *ret = (struct render_auto){ .quality = MIN((int)v->quality, guess),
                                             .slope = AUTOQUALITY_SLOPE,
                                             .score = -1 };
                return 0;
        }
        if (make_sample(in, &sample) < 0)
                return render_fail_vips(err, -EBADMSG, "auto quality: sample");
        own = sample == in;
        if (flat_ref(sample, v->background, &flat) < 0 || similarity_ref_new(flat, &ref) < 0)
                return render_fail_vips(err, -EBADMSG, "auto quality: sample");
        /* On a sample, one encode is kept for a correction of the whole image. */
        autoquality_start(&s, own ? v->target : v->target * AUTO_SAMPLE_MARGIN,
                          VARIANT_AUTO_QUALITY_MIN, 100,
                          own || v->auto_encodes < 3 ? v->auto_encodes - 1 : v->auto_encodes - 2);
        while ((q = autoquality_next(&s, guess)) > 0) {
                _cleanup_gfree_ void *buf = NULL;
                size_t len = 0;
                double d = 0;

                if (deadline_usec != 0 && (uint64_t)g_get_monotonic_time() >= deadline_usec) {
                        cut = true;
                        break;
                }
                /* The whole image as it would be published; a sample needs no metadata. */
                r = render_encode(sample, v, q, own ? strip : true, &buf, &len, err);
                if (r < 0)
                        return r;
                r = score_ref(ref, buf, len, v->format, v->background, &d, err);
                if (r < 0)
                        return r;
                autoquality_record(&s, q, d);
                /* The lowest quality that meets the target so far: the output, if it stays. */
                if (own && s.meet_q == q) {
                        g_free(kept);
                        kept = TAKE_PTR(buf);
                        kept_len = len;
                        kept_score = d;
                }
        }
        /* A small image is its own sample: no correction follows, so only a quality known
         * to meet the target will do. */
        q = own ? (s.meet_q <= s.max_q ? s.meet_q : -1) : autoquality_result(&s);
        /* Cut short before any met it: the quality the search would have tried next (the
         * guess when none was tried). */
        if (q <= 0 && cut)
                q = autoquality_next(&s, guess);
        /* None met it: the highest quality not known to miss (the range's top at worst). */
        *ret = (struct render_auto){
                .quality = q > 0 ? q : MIN(s.miss_q + AUTOQUALITY_RESOLUTION, 100),
                .trials = s.tried,
                .slope = autoquality_slope(&s),
                .cut = cut,
                .score = -1,
        };
        if (kept && ret->quality == s.meet_q) {
                ret->buf = TAKE_PTR(kept);
                ret->size = kept_len;
                ret->score = kept_score;
        }
        return 0;
}
