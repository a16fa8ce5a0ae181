/* SPDX-License-Identifier: MIT */
/*
 * similarity.c - MS-SSIM and DSSIM of two images; see similarity.h for the definition.
 *
 * The luma of each image is computed in plain C from its 8-bit pixels; the rest is plain C
 * over float rows: the Gaussian window is separable and symmetric, so at each scale every
 * row is filtered horizontally (filter_h(), all taps in one pass) into a ring of
 * SIMILARITY_WINDOW rows per plane, and every output row vertically (filter_v()), after which
 * its SSIM terms are summed (row_terms()). The planes are the two images, their squares and
 * their product.
 *
 * A one-off score (similarity_msssim()) holds only the two luma planes of a scale and the
 * rings: about 8 bytes a pixel and 11 rows. A reference (similarity_ref_new()) also keeps,
 * for every scale, its luma and its own two filtered planes (the local mean and mean of
 * squares, over the valid window positions): about 16 bytes a pixel, for an image scored
 * many times (the quality search's sample), so that each score filters three planes instead
 * of five. Both use the same functions in the same order, so they give the same numbers.
 */
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "shared/macro.h"
#include "worker/similarity.h"

#define HALF (SIMILARITY_WINDOW / 2)
#define C1 ((0.01 * 255) * (0.01 * 255))
#define C2 ((0.03 * 255) * (0.03 * 255))
/*
 * The luma planes hold Y' - SHIFT: variances computed as E[x^2] - E[x]^2 in float lose less
 * to cancellation around 0 than around 128 (a flat area must not score above 1); the means
 * get SHIFT back for the luminance term, which is not shift-invariant.
 */
#define SHIFT 128.0f

/*
 * The loops below are written to be vectorised (CMakeLists.txt builds this file at -O3); on
 * x86-64 each is also compiled for AVX2, eight floats at a time, picked at load time when the
 * CPU has it (GCC's function multi-versioning, which needs glibc's ifunc). AVX2 alone brings
 * no fused multiply-add, so every product is rounded as in the baseline build; the sums along
 * a row are ordered by the vector width, so the last bits of a score may differ between CPUs
 * (about 1e-8 on test-similarity's pair), never between two scores on one machine.
 */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__GLIBC__)
#define VECTORISED __attribute__((target_clones("avx2", "default")))
#else
#define VECTORISED
#endif

static const double weights[SIMILARITY_SCALES] = { 0.0448, 0.2856, 0.3001, 0.2363, 0.1333 };

/* The filtered planes: means of x, y, x^2, y^2 and xy over the window. */
enum { P_X, P_Y, P_XX, P_YY, P_XY, P_N };

struct similarity_ref {
        int w, h, scales;
        float *luma[SIMILARITY_SCALES]; /* of each scale: (w >> s) x (h >> s) */
        float *mx[SIMILARITY_SCALES];   /* its filtered x, valid positions only */
        float *mxx[SIMILARITY_SCALES];  /* its filtered x^2 */
};

static inline void gfreep(void *p)
{
        g_free(*(void **)p);
}

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

/* The scales an image of w x h has: each needs a SIMILARITY_WINDOW square, at most 5. */
static int count_scales(int w, int h)
{
        int n = 1;

        while (n < SIMILARITY_SCALES && w / 2 >= SIMILARITY_WINDOW && h / 2 >= SIMILARITY_WINDOW) {
                w /= 2;
                h /= 2;
                n++;
        }
        return n;
}

/* Row p of w pixels of `bands` 8-bit bands (3 or more: R', G', B' first) as luma - SHIFT into
 * o, through t (3 w floats): the samples widened first, then weighted, so that both loops
 * vectorise. */
VECTORISED static void luma_row(const uint8_t *restrict p, int w, int bands, float *restrict t,
                                float *restrict o)
{
        if (bands == 3) {
                for (int i = 0; i < 3 * w; i++)
                        t[i] = p[i];
        } else {
                for (int x = 0; x < w; x++)
                        for (int c = 0; c < 3; c++)
                                t[3 * x + c] = p[x * bands + c];
        }
        for (int x = 0; x < w; x++)
                o[x] = 0.299f * t[3 * x] + 0.587f * t[3 * x + 1] + 0.114f * t[3 * x + 2] - SHIFT;
}

/* The luma of in (8-bit), minus SHIFT, as a new float plane of in's size (caller frees), or
 * NULL with libvips' error set. */
static float *luma(VipsImage *in)
{
        VipsImage *mem;
        float *out, *t;
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
        t = g_try_malloc(sizeof(float) * (size_t)w * 3);
        if (!out || !t) {
                g_object_unref(mem);
                g_free(out);
                g_free(t);
                vips_error("similarity", "out of memory");
                return NULL;
        }
        for (int y = 0; y < h; y++) {
                const uint8_t *p = VIPS_IMAGE_ADDR(mem, 0, y);
                float *o = out + (size_t)y * w;

                if (bands >= 3)
                        luma_row(p, w, bands, t, o);
                else
                        for (int x = 0; x < w; x++)
                                o[x] = p[x * bands] - SHIFT;
        }
        g_free(t);
        g_object_unref(mem);
        return out;
}

/* src[0..n + 2 * HALF) filtered horizontally: the valid part, n values, into dst. */
VECTORISED static void filter_h(const float *restrict src, int n, const float g[HALF + 1],
                                float *restrict dst)
{
        const float *c = src + HALF;
        const float g0 = g[0], g1 = g[1], g2 = g[2], g3 = g[3], g4 = g[4], g5 = g[5];

        /* The taps summed centre first, then outwards, each pair added before it is weighted. */
        for (int i = 0; i < n; i++) {
                float s = g0 * c[i];

                s += g1 * (c[i - 1] + c[i + 1]);
                s += g2 * (c[i - 2] + c[i + 2]);
                s += g3 * (c[i - 3] + c[i + 3]);
                s += g4 * (c[i - 4] + c[i + 4]);
                s += g5 * (c[i - 5] + c[i + 5]);
                dst[i] = s;
        }
}

/* The rows r[0..SIMILARITY_WINDOW) (n values each) filtered vertically into dst, in the same
 * order as filter_h(). */
VECTORISED static void filter_v(const float *const r[SIMILARITY_WINDOW], int n,
                                const float g[HALF + 1], float *restrict dst)
{
        const float *restrict r0 = r[0], *restrict r1 = r[1], *restrict r2 = r[2],
                              *restrict r3 = r[3], *restrict r4 = r[4], *restrict r5 = r[5],
                              *restrict r6 = r[6], *restrict r7 = r[7], *restrict r8 = r[8],
                              *restrict r9 = r[9], *restrict r10 = r[10];
        const float g0 = g[0], g1 = g[1], g2 = g[2], g3 = g[3], g4 = g[4], g5 = g[5];

        for (int j = 0; j < n; j++) {
                float s = g0 * r5[j];

                s += g1 * (r4[j] + r6[j]);
                s += g2 * (r3[j] + r7[j]);
                s += g3 * (r2[j] + r8[j]);
                s += g4 * (r1[j] + r9[j]);
                s += g5 * (r0[j] + r10[j]);
                dst[j] = s;
        }
}

/* The sums over one output row (n positions) of the contrast-structure and luminance terms. */
VECTORISED static void row_terms(const float *restrict mx, const float *restrict my,
                                 const float *restrict mxx, const float *restrict myy,
                                 const float *restrict mxy, int n, double *cs_sum, double *l_sum)
{
        float cs_f = 0, l_f = 0;

        for (int i = 0; i < n; i++) {
                float x = mx[i], y = my[i];
                float vx = mxx[i] - x * x, vy = myy[i] - y * y;
                float cov = mxy[i] - x * y;
                float ux = x + SHIFT, uy = y + SHIFT;

                cs_f += (2 * cov + (float)C2) / (vx + vy + (float)C2);
                l_f += (2 * ux * uy + (float)C1) / (ux * ux + uy * uy + (float)C1);
        }
        *cs_sum += cs_f;
        *l_sum += l_f;
}

/* a^2 into aa (unless NULL); with b, b^2 and ab into bb and ab; w values each. */
VECTORISED static void products(const float *restrict a, float *restrict aa,
                                const float *restrict b, float *restrict bb, float *restrict ab,
                                int w)
{
        if (aa)
                for (int x = 0; x < w; x++)
                        aa[x] = a[x] * a[x];
        if (b)
                for (int x = 0; x < w; x++) {
                        bb[x] = b[x] * b[x];
                        ab[x] = a[x] * b[x];
                }
}

/*
 * One scale (w x h) of the reference a and the image b. Three uses:
 * - b NULL: the reference's own planes only, x and x^2 filtered into ref_mx and ref_mxx
 *   (each (w - 2 HALF) x (h - 2 HALF)); no terms;
 * - ref_mx and ref_mxx given: those are a's, only b's three planes are filtered;
 * - neither: all five.
 * With b, the means over the valid window positions of the contrast-structure term
 * (*ret_cs) and the luminance term (*ret_l). Returns 0, or -1 when out of memory.
 */
static int scale_terms(const float *a, const float *b, int w, int h, float *ref_mx, float *ref_mxx,
                       double *ret_cs, double *ret_l)
{
        const int n = w - 2 * HALF, rows = h - 2 * HALF;
        /* Which planes are filtered here. */
        const bool own[P_N] = {
                [P_X] = !b || !ref_mx, [P_XX] = !b || !ref_mx, [P_Y] = b != NULL,
                [P_YY] = b != NULL,    [P_XY] = b != NULL,
        };
        _cleanup_free_ float *ring = malloc(sizeof(float) * (size_t)n * P_N * SIMILARITY_WINDOW);
        _cleanup_free_ float *m = malloc(sizeof(float) * (size_t)n * P_N);
        _cleanup_free_ float *scratch = malloc(sizeof(float) * (size_t)w * 3);
        float g[HALF + 1];
        double cs_sum = 0, l_sum = 0;

        if (!ring || !m || !scratch)
                return -1;
        gaussian(g);
        for (int y = 0; y < h; y++) {
                const float *pa = a + (size_t)y * w, *pb = b ? b + (size_t)y * w : NULL;
                float *aa = scratch, *bb = scratch + w, *ab = scratch + 2 * w;
                const float *src[P_N] = { pa, pb, aa, bb, ab };

                products(pa, own[P_XX] ? aa : NULL, pb, bb, ab, w);
                for (int p = 0; p < P_N; p++)
                        if (own[p])
                                filter_h(src[p], n, g,
                                         ring + ((size_t)p * SIMILARITY_WINDOW +
                                                 (size_t)(y % SIMILARITY_WINDOW)) *
                                                         n);
                if (y < 2 * HALF)
                        continue;
                /* Output row oy: its window is input rows oy .. oy + 2 HALF, in the ring. */
                const int oy = y - 2 * HALF;
                const float *row[P_N];

                for (int p = 0; p < P_N; p++) {
                        const float *r[SIMILARITY_WINDOW];
                        float *dst = m + (size_t)p * n;

                        if (!own[p])
                                continue;
                        for (int k = 0; k < SIMILARITY_WINDOW; k++)
                                r[k] = ring + ((size_t)p * SIMILARITY_WINDOW +
                                               (size_t)((oy + k) % SIMILARITY_WINDOW)) *
                                                      n;
                        if (!b && p == P_X)
                                dst = ref_mx + (size_t)oy * n;
                        else if (!b && p == P_XX)
                                dst = ref_mxx + (size_t)oy * n;
                        filter_v(r, n, g, dst);
                        row[p] = dst;
                }
                if (!b)
                        continue;
                if (!own[P_X]) {
                        row[P_X] = ref_mx + (size_t)oy * n;
                        row[P_XX] = ref_mxx + (size_t)oy * n;
                }
                row_terms(row[P_X], row[P_Y], row[P_XX], row[P_YY], row[P_XY], n, &cs_sum, &l_sum);
        }
        if (b) {
                *ret_cs = cs_sum / ((double)n * rows);
                *ret_l = l_sum / ((double)n * rows);
        }
        return 0;
}

/* src (w x h) averaged over 2 x 2 blocks into dst ((w / 2) x (h / 2); may be src). */
VECTORISED static void downsample(const float *src, int w, int h, float *dst)
{
        int nw = w / 2, nh = h / 2;

        for (int y = 0; y < nh; y++)
                for (int x = 0; x < nw; x++) {
                        const float *s = src + (size_t)(2 * y) * w + 2 * x;

                        dst[(size_t)y * nw + x] = (s[0] + s[1] + s[w] + s[w + 1]) * 0.25f;
                }
}

/* MS-SSIM from the terms of each scale. */
static double combine(const double cs_in[], int scales, double l)
{
        double total = 0, result = 1;

        for (int s = 0; s < scales; s++)
                total += weights[s];
        /* The luminance term of the coarsest scale only; weights scaled to sum to 1. */
        l = MAX(l, 0.0);
        for (int s = 0; s < scales; s++) {
                double cs = MAX(cs_in[s], 0.0);

                result *= pow(s == scales - 1 ? cs * l : cs, weights[s] / total);
        }
        /* Rounding may leave an identical or flat image a hair above 1. */
        return MIN(result, 1.0);
}

static int check_size(int aw, int ah, int bw, int bh)
{
        if (aw != bw || ah != bh) {
                vips_error("similarity", "images differ in size (%dx%d and %dx%d)", aw, ah, bw, bh);
                return -1;
        }
        if (aw < SIMILARITY_WINDOW || ah < SIMILARITY_WINDOW) {
                vips_error("similarity", "%dx%d is smaller than the %d-pixel window", aw, ah,
                           SIMILARITY_WINDOW);
                return -1;
        }
        return 0;
}

int similarity_msssim(VipsImage *a, VipsImage *b, double *ret)
{
        _cleanup_(gfreep) float *pa = NULL, *pb = NULL;
        double cs[SIMILARITY_SCALES], l = 1;
        int w = a->Xsize, h = a->Ysize;
        const int scales = count_scales(w, h);

        if (check_size(a->Xsize, a->Ysize, b->Xsize, b->Ysize) < 0)
                return -1;
        pa = luma(a);
        pb = pa ? luma(b) : NULL;
        if (!pb)
                return -1;
        for (int s = 0; s < scales; s++) {
                if (s > 0) {
                        downsample(pa, w, h, pa);
                        downsample(pb, w, h, pb);
                        w /= 2;
                        h /= 2;
                }
                if (scale_terms(pa, pb, w, h, NULL, NULL, &cs[s], &l) < 0) {
                        vips_error("similarity", "out of memory");
                        return -1;
                }
        }
        *ret = combine(cs, scales, l);
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

similarity_ref *similarity_ref_free(similarity_ref *r)
{
        if (!r)
                return NULL;
        for (int s = 0; s < SIMILARITY_SCALES; s++) {
                g_free(r->luma[s]);
                g_free(r->mx[s]);
                g_free(r->mxx[s]);
        }
        g_free(r);
        return NULL;
}

int similarity_ref_new(VipsImage *a, similarity_ref **ret)
{
        similarity_ref *r;
        int w = a->Xsize, h = a->Ysize;

        if (check_size(w, h, w, h) < 0)
                return -1;
        r = g_new0(similarity_ref, 1);
        r->w = w;
        r->h = h;
        r->scales = count_scales(w, h);
        r->luma[0] = luma(a);
        if (!r->luma[0]) {
                similarity_ref_free(r);
                return -1;
        }
        for (int s = 0; s < r->scales; s++) {
                size_t valid;

                if (s > 0) {
                        r->luma[s] = g_try_malloc(sizeof(float) * (size_t)(w / 2) * (h / 2));
                        if (r->luma[s])
                                downsample(r->luma[s - 1], w, h, r->luma[s]);
                        w /= 2;
                        h /= 2;
                }
                valid = (size_t)(w - 2 * HALF) * (size_t)(h - 2 * HALF);
                r->mx[s] = g_try_malloc(sizeof(float) * valid);
                r->mxx[s] = g_try_malloc(sizeof(float) * valid);
                if (!r->luma[s] || !r->mx[s] || !r->mxx[s] ||
                    scale_terms(r->luma[s], NULL, w, h, r->mx[s], r->mxx[s], NULL, NULL) < 0) {
                        similarity_ref_free(r);
                        vips_error("similarity", "out of memory");
                        return -1;
                }
        }
        *ret = r;
        return 0;
}

int similarity_msssim_ref(const similarity_ref *r, VipsImage *b, double *ret)
{
        _cleanup_(gfreep) float *pb = NULL;
        double cs[SIMILARITY_SCALES], l = 1;
        int w = r->w, h = r->h;

        if (check_size(r->w, r->h, b->Xsize, b->Ysize) < 0)
                return -1;
        pb = luma(b);
        if (!pb)
                return -1;
        for (int s = 0; s < r->scales; s++) {
                if (s > 0) {
                        downsample(pb, w, h, pb);
                        w /= 2;
                        h /= 2;
                }
                if (scale_terms(r->luma[s], pb, w, h, r->mx[s], r->mxx[s], &cs[s], &l) < 0) {
                        vips_error("similarity", "out of memory");
                        return -1;
                }
        }
        *ret = combine(cs, r->scales, l);
        return 0;
}

int similarity_dssim_ref(const similarity_ref *r, VipsImage *b, double *ret)
{
        double m;

        if (similarity_msssim_ref(r, b, &m) < 0)
                return -1;
        *ret = m > 1e-6 ? 1 / m - 1 : 1e6;
        return 0;
}
