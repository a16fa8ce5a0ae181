/* SPDX-License-Identifier: MIT */
/*
 * similarity.h - how close an encoded image is to the image it was encoded from: MS-SSIM
 * (Wang, Simoncelli and Bovik, "Multi-scale structural similarity for image quality
 * assessment", 37th Asilomar Conference, 2003) of the luma of the two images, reported as
 * the dissimilarity DSSIM = 1 / MS-SSIM - 1 (0: identical; larger is worse), the form
 * kornelski's dssim and imgproxy use.
 *
 * The computation is the reference one: luma Y' = 0.299 R' + 0.587 G' + 0.114 B' of the
 * 8-bit sRGB values; at each scale an 11-tap Gaussian window (sigma 1.5, normalised), the
 * "valid" part of the filtered images only (no padding), C1 = (0.01 * 255)^2,
 * C2 = (0.03 * 255)^2; between scales a 2 x 2 box average (an odd last row or column
 * dropped); five scales with Wang's weights 0.0448, 0.2856, 0.3001, 0.2363, 0.1333. An image
 * too small for five (each scale needs at least 11 x 11 pixels) uses as many as it has, the
 * weights of those scaled to sum to 1. A negative contrast-structure mean counts as 0.
 * tests/tools/ssim-reference.py is an independent implementation of the same definition.
 */
#pragma once

#include <vips/vips.h>

/* The most scales, and the side a scale needs at least (the window's). */
#define SIMILARITY_SCALES 5
#define SIMILARITY_WINDOW 11

/*
 * MS-SSIM of b against a: both 8-bit sRGB (3 bands, or 1 band taken as luma; an alpha band
 * is ignored: flatten first) of the same size, at least SIMILARITY_WINDOW pixels each way.
 * Returns 0 and *ret in [0, 1], or -1 with libvips' error buffer set.
 */
int similarity_msssim(VipsImage *a, VipsImage *b, double *ret);

/* 1 / MS-SSIM - 1 of b against a (similarity_msssim()); 1e6 when MS-SSIM is 0. */
int similarity_dssim(VipsImage *a, VipsImage *b, double *ret);

/*
 * A reference image prepared for being scored against many times (the quality search's
 * sample): its luma and, at every scale, its own filtered planes, about 16 bytes a pixel.
 * similarity_msssim_ref(r, b) equals similarity_msssim(a, b) for the image a it was made
 * from, at about three fifths of the cost.
 */
typedef struct similarity_ref similarity_ref;

/* The reference of a (as similarity_msssim()'s a). Returns 0 and *ret (similarity_ref_free()),
 * or -1 with libvips' error buffer set. */
int similarity_ref_new(VipsImage *a, similarity_ref **ret);

/* Frees r (NULL is fine); returns NULL. */
similarity_ref *similarity_ref_free(similarity_ref *r);

/* similarity_msssim() and similarity_dssim() of b against the reference r. */
int similarity_msssim_ref(const similarity_ref *r, VipsImage *b, double *ret);
int similarity_dssim_ref(const similarity_ref *r, VipsImage *b, double *ret);
