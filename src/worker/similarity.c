/* SPDX-License-Identifier: MIT */
/*
 * similarity.c - MS-SSIM and DSSIM of two images; see similarity.h for the definition.
 *
 * libvips extracts the luma of each image (vips_recomb, float); the rest is plain C over
 * float rows: the Gaussian window is separable and symmetric, so each scale is one
 * horizontal pass per row into a ring of SIMILARITY_WINDOW rows, and one vertical pass per
 * output row that sums the SSIM terms at once. Nothing but the two luma planes of a scale and
 * the ring is held: about 8 bytes a pixel and 11 rows.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "shared/macro.h"
#include "worker/similarity.h"

static inline void gfreep(void *p)
{
        g_free(*(void **)p);
}

#define HALF (SIMILARITY_WINDOW / 2)
#define C1 ((0.01 * 255) * (0.01 * 255))
#define C2 ((0.03 * 255) * (0.03 * 255))
/*
 * The luma planes hold Y' - SHIFT: variances computed as E[x^2] - E[x]^2 in float lose less
 * to cancellation around 0 than around 128 (a flat area must not score above 1); the means
 * get SHIFT back for the luminance term, which is not shift-invariant.
 */
#define SHIFT 128.0f

static const double weights[SIMILARITY_SCALES] = { 0.0448, 0.2856, 0.3001, 0.2363, 0.1333 };

/* The normalised 11-tap Gaussian of sigma 1.5, centre first: g[0] .. g[HALF]. */
static void gaussian(float g[HALF + 1])
{
        double w[HALF + 1], sum = 0;

        for (int k = 0; k <= HALF; k++) {
                w[k] = exp(-(double)(k * k) / (2 * 1.5 * 1.5));
                sum += k == 0 ? w[k] : 2 * w[k];
        }
        for (int k = 0; k <= HALF; k++)
                g[k] = (float)(w[k] / sum);
}

/* The luma of in (8-bit) as a new float plane of in's size (caller frees), or NULL with
 * libvips' error set. */
static float *luma(VipsImage *in)
{
        VipsImage *mem;
        float *out;
        const int w = in->Xsize, h = in->Ysize, bands = in->Bands;

        if (in->BandFmt != VIPS_FORMAT_UCHAR) {
                vips_error("similarity", "not an 8-bit image");
                return NULL;
        }
        /* A reference when in is in memory already (as the callers' images are). */
        mem = vips_image_copy_memory(in);
        if (!mem)
                return NULL;
        out = g_try_malloc(sizeof(float) * (size_t)w * (size_t)h);
        if (!out) {
                g_object_unref(mem);
                vips_error("similarity", "out of memory");
                return NULL;
        }
        for (int y = 0; y < h; y++) {
                const uint8_t *p = VIPS_IMAGE_ADDR(mem, 0, y);
                float *o = out + (size_t)y * w;

                if (bands >= 3)
                        for (int x = 0; x < w; x++)
                                o[x] = 0.299f * p[x * bands] + 0.587f * p[x * bands + 1] +
                                       0.114f * p[x * bands + 2] - SHIFT;
                else
                        for (int x = 0; x < w; x++)
                                o[x] = p[x * bands] - SHIFT;
        }
        g_object_unref(mem);
        return out;
}

/* src[0..w) filtered horizontally: the valid part, w - 2 * HALF values, into dst. */
static void filter_h(const float *src, int w, const float g[HALF + 1], float *dst)
{
        const int n = w - 2 * HALF;
        const float *c = src + HALF;

        /* Tap by tap, each a plain loop along the row. */
        for (int i = 0; i < n; i++)
                dst[i] = g[0] * c[i];
        for (int k = 1; k <= HALF; k++) {
                const float *left = c - k, *right = c + k;
                const float gk = g[k];

                for (int i = 0; i < n; i++)
                        dst[i] += gk * (left[i] + right[i]);
        }
}

/* Row y of the five planes x, y, x^2, y^2, xy filtered horizontally into dst[0..5);
 * scratch holds 3 * w floats. */
static void filter_row(const float *a, const float *b, int w, const float g[HALF + 1],
                       float *scratch, float *dst[5])
{
        float *aa = scratch, *bb = scratch + w, *ab = scratch + 2 * w;

        for (int x = 0; x < w; x++) {
                aa[x] = a[x] * a[x];
                bb[x] = b[x] * b[x];
                ab[x] = a[x] * b[x];
        }
        filter_h(a, w, g, dst[0]);
        filter_h(b, w, g, dst[1]);
        filter_h(aa, w, g, dst[2]);
        filter_h(bb, w, g, dst[3]);
        filter_h(ab, w, g, dst[4]);
}

/*
 * The means over the valid window positions of one scale of the contrast-structure term
 * (*ret_cs) and the luminance term (*ret_l). Returns 0, or -1 when out of memory.
 */
static int scale_terms(const float *a, const float *b, int w, int h, double *ret_cs, double *ret_l)
{
        const int n = w - 2 * HALF, rows = h - 2 * HALF;
        _cleanup_free_ float *ring = malloc(sizeof(float) * (size_t)n * 5 * SIMILARITY_WINDOW);
        _cleanup_free_ float *m = malloc(sizeof(float) * (size_t)n * 5);
        _cleanup_free_ float *scratch = malloc(sizeof(float) * (size_t)w * 3);
        float g[HALF + 1];
        double cs_sum = 0, l_sum = 0;

        if (!ring || !m || !scratch)
                return -1;
        gaussian(g);
        for (int y = 0; y < h; y++) {
                float *dst[5];

                for (int c = 0; c < 5; c++)
                        dst[c] = ring + ((size_t)(y % SIMILARITY_WINDOW) * 5 + c) * n;
                filter_row(a + (size_t)y * w, b + (size_t)y * w, w, g, scratch, dst);
                if (y < 2 * HALF)
                        continue;
                /* Output row y - HALF: its window is rows y - 2 * HALF .. y of the ring. */
                const float *row[SIMILARITY_WINDOW];
                double cs_row = 0, l_row = 0;

                for (int k = 0; k < SIMILARITY_WINDOW; k++)
                        row[k] = ring + (size_t)((y - 2 * HALF + k) % SIMILARITY_WINDOW) * 5 * n;
                /* Row by row, so that the compiler vectorises along it. */
                for (int j = 0; j < 5 * n; j++)
                        m[j] = g[0] * row[HALF][j];
                for (int k = 1; k <= HALF; k++) {
                        const float *up = row[HALF - k], *down = row[HALF + k];
                        const float gk = g[k];

                        for (int j = 0; j < 5 * n; j++)
                                m[j] += gk * (up[j] + down[j]);
                }
                float cs_f = 0, l_f = 0;

                for (int i = 0; i < n; i++) {
                        float mx = m[i], my = m[n + i];
                        float vx = m[2 * n + i] - mx * mx, vy = m[3 * n + i] - my * my;
                        float cov = m[4 * n + i] - mx * my;
                        float ux = mx + SHIFT, uy = my + SHIFT;

                        cs_f += (2 * cov + (float)C2) / (vx + vy + (float)C2);
                        l_f += (2 * ux * uy + (float)C1) / (ux * ux + uy * uy + (float)C1);
                }
                cs_row = cs_f;
                l_row = l_f;
                cs_sum += cs_row;
                l_sum += l_row;
        }
        *ret_cs = cs_sum / ((double)n * rows);
        *ret_l = l_sum / ((double)n * rows);
        return 0;
}

/* p (w x h) averaged over 2 x 2 blocks, in place: (w / 2) x (h / 2). */
static void downsample(float *p, int w, int h)
{
        int nw = w / 2, nh = h / 2;

        for (int y = 0; y < nh; y++)
                for (int x = 0; x < nw; x++) {
                        const float *s = p + (size_t)(2 * y) * w + 2 * x;

                        p[(size_t)y * nw + x] = (s[0] + s[1] + s[w] + s[w + 1]) * 0.25f;
                }
}

int similarity_msssim(VipsImage *a, VipsImage *b, double *ret)
{
        _cleanup_(gfreep) float *pa = NULL, *pb = NULL;
        double cs[SIMILARITY_SCALES], l = 1, total = 0, result = 1;
        int w = a->Xsize, h = a->Ysize, scales = 0;

        if (a->Xsize != b->Xsize || a->Ysize != b->Ysize) {
                vips_error("similarity", "images differ in size (%dx%d and %dx%d)", a->Xsize,
                           a->Ysize, b->Xsize, b->Ysize);
                return -1;
        }
        if (w < SIMILARITY_WINDOW || h < SIMILARITY_WINDOW) {
                vips_error("similarity", "%dx%d is smaller than the %d-pixel window", w, h,
                           SIMILARITY_WINDOW);
                return -1;
        }
        pa = luma(a);
        pb = pa ? luma(b) : NULL;
        if (!pb)
                return -1;
        for (;;) {
                if (scale_terms(pa, pb, w, h, &cs[scales], &l) < 0) {
                        vips_error("similarity", "out of memory");
                        return -1;
                }
                cs[scales] = MAX(cs[scales], 0.0);
                total += weights[scales];
                scales++;
                if (scales == SIMILARITY_SCALES || w / 2 < SIMILARITY_WINDOW ||
                    h / 2 < SIMILARITY_WINDOW)
                        break;
                downsample(pa, w, h);
                downsample(pb, w, h);
                w /= 2;
                h /= 2;
        }
        /* The luminance term of the coarsest scale only; weights scaled to sum to 1. */
        l = MAX(l, 0.0);
        for (int s = 0; s < scales; s++)
                result *= pow(s == scales - 1 ? cs[s] * l : cs[s], weights[s] / total);
        /* Rounding may leave an identical or flat image a hair above 1. */
        *ret = MIN(result, 1.0);
        return 0;
}

int similarity_dssim(VipsImage *a, VipsImage *b, double *ret)
{
        double m;

        if (similarity_msssim(a, b, &m) < 0)
                return -1;
        *ret = m > 1e-6 ? 1 / m - 1 : 1e6;
        return 0;
}
