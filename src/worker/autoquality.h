/* SPDX-License-Identifier: MIT */
/*
 * autoquality.h - quality = "auto": the bounded search for the lowest encoder quality whose
 * output still scores at most a DSSIM target (similarity.h) against the image it was
 * encoded from.
 *
 * The search itself is a pure policy (autoquality_search): given the qualities tried so far
 * and their scores, the next quality to try, or none. It keeps the highest quality known to
 * miss the target and the lowest known to meet it, and aims between them by interpolating
 * log(DSSIM) linearly in the quality (a line through the two; while one side only is known,
 * a line through its two nearest trials, or one point and the typical slope at its quality; the
 * bracket halved instead after two trials in a row on one side of the target), so that a good first
 * guess converges in two or three encodes; it stops when the two are within AUTOQUALITY_RESOLUTION
 * of each other, when a quality meets the target with a score close to it (AUTOQUALITY_CLOSE), at
 * the bounds, or when its encodes are spent. The result is the lowest quality known to meet the
 * target, or, when the trials ran out with the two far apart, the interpolated crossing between
 * them.
 *
 * render_encode_auto (render-private.h) runs it: the search encodes a sample of the image
 * (a mosaic of tiles taken on the encoders' block grid; the whole image when it is small),
 * decodes and scores each trial, then the whole image is encoded once at the quality found
 * and scored as published.
 */
#pragma once

#include <stdbool.h>

#include "shared/imgformat.h"

/* The search stops when the bracket [miss, meet] is this narrow. */
#define AUTOQUALITY_RESOLUTION 2
/* A quality that meets the target with a score at least this fraction of it ends the search:
 * at the slopes measured (ln(DSSIM) falls 0.02 to 0.06 a step) the lowest that meets it is at
 * most about two steps lower, as with AUTOQUALITY_RESOLUTION. */
#define AUTOQUALITY_CLOSE 0.95
/* The fall of ln(DSSIM) per quality step that a slope measured between two trials is held
 * to (autoquality.c, slope_between()). */
#define AUTOQUALITY_SLOPE_MIN 0.01
#define AUTOQUALITY_SLOPE_MAX 0.5
/* The assumed fall of ln(DSSIM) per quality step where the search measured none. */
#define AUTOQUALITY_SLOPE 0.023 /* DSSIM doubles about every 30 steps down */
/* While only one side is known: the fall at quality 70, and the steps in which it doubles. */
#define AUTOQUALITY_SLOPE_70 0.039
#define AUTOQUALITY_SLOPE_DOUBLING 15.0
/* A step up from a miss goes at most this far: the fall of DSSIM steepens near 100. */
#define AUTOQUALITY_STEP_MAX 20.0
/* Out of trials, a bracket wider than this gives where the line through its ends crosses the
 * target (not known to meet it: the caller scores what it encodes) instead of its top. */
#define AUTOQUALITY_BRACKET_MAX 4

struct autoquality_search {
        double target;
        int min_q, max_q;  /* the qualities that may be tried */
        int miss_q;        /* highest quality known to miss the target; min_q - 1: none */
        double miss_score; /* its score */
        int meet_q;        /* lowest quality known to meet it; max_q + 1: none */
        double meet_score; /* its score */
        int prev_q;        /* the one before meet_q or miss_q, on its side; 0: none */
        double prev_score; /* its score */
        unsigned tried, budget;
        bool last_met;      /* the last trial met the target */
        unsigned same_side; /* trials in a row on that side */
};

/* A search for target over [min_q, max_q] with at most `budget` trials. */
void autoquality_start(struct autoquality_search *s, double target, int min_q, int max_q,
                       unsigned budget);

/* The quality to try next (`guess` first, clamped to the range), or 0 when the search is done. */
int autoquality_next(const struct autoquality_search *s, int guess);

/* Records the score of quality q. */
void autoquality_record(struct autoquality_search *s, int q, double score);

/* The lowest quality known to meet the target (or the crossing of a bracket wider than
 * AUTOQUALITY_BRACKET_MAX), or -1 when none was found. */
int autoquality_result(const struct autoquality_search *s);

/*
 * The fall of ln(DSSIM) per quality step where the search ended: measured between the ends of
 * its bracket when it has both (between AUTOQUALITY_SLOPE_MIN and _MAX), else AUTOQUALITY_SLOPE.
 */
double autoquality_slope(const struct autoquality_search *s);

/*
 * The correction of a whole image that misses the target its sample met (render_encode_fit()):
 * each step up goes by the qualities the score's distance to 90% of the target asks for at
 * `slope`, 1 to `max_step` of them. The first uses the slope the search measured on the
 * sample (at most AUTOQUALITY_FIX_MAX); once two encodes of the whole image are known and the
 * higher scored better, the next uses the slope through them (at least
 * AUTOQUALITY_SLOPE_MIN; at most AUTOQUALITY_FIX_MAX_MEASURED steps): the sample's can be
 * far from the image's (JPEG XL's score of a whole image fell 0.0098 a step from quality 20
 * to 30 where its sample's fell 0.023, another's 0.0038). A slope under
 * AUTOQUALITY_FIX_SLOPE_SEEN is a plateau or the score's noise, not where the score goes
 * next, and is not used (a WebP output's moved 0.4% from quality 87 to 89, then fell by a
 * fifth at 91 and three quarters at 100).
 */
#define AUTOQUALITY_FIX_MAX 10.0
#define AUTOQUALITY_FIX_MAX_MEASURED 25.0
#define AUTOQUALITY_FIX_SLOPE_SEEN 0.003

struct autoquality_fix {
        double target;
        double slope, max_step;
        int last_q;        /* the last quality encoded */
        double last_score; /* its score */
};

/* A correction from quality q of score `score`, at the sample's slope. */
void autoquality_fix_start(struct autoquality_fix *f, double target, double sample_slope, int q,
                           double score);
/* The next quality to encode, given the best score so far (at most 100). */
int autoquality_fix_next(const struct autoquality_fix *f, double best_score);
/* Records the score of quality q. */
void autoquality_fix_record(struct autoquality_fix *f, int q, double score);

/*
 * The first guess for format f at target t: the median quality the benchmark's photos ended
 * at, for the level nearest t (README, "Quality per byte").
 */
int autoquality_guess(enum image_format f, double target);
