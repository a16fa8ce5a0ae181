/* SPDX-License-Identifier: MIT */
/*
 * blurhash.h - the BlurHash encoder (https://blurha.sh, the public algorithm of Wolt's
 * reference implementation): a short base-83 string describing an image as a few cosine
 * (DCT) components in linear light, which a web page decodes into a blurred placeholder.
 * Pure C, no libvips: it reads 8-bit sRGB pixels from memory and keeps no state.
 *
 * Layout of a hash with X x Y components (1..9 each): one character for the component
 * counts, one for the quantised maximum AC value, four for the DC component (the average
 * colour, sRGB 8-bit per channel), then two per AC component: 1 + 1 + 4 + 2 (X Y - 1)
 * characters, 28 for 4 x 3.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define BLURHASH_COMPONENTS_MAX 9
/* Longest hash, with its NUL: 9 x 9 components. */
#define BLURHASH_MAX (1 + 1 + 4 + 2 * (BLURHASH_COMPONENTS_MAX * BLURHASH_COMPONENTS_MAX - 1) + 1)

/* Length of the hash for x_components x y_components. */
size_t blurhash_length(unsigned x_components, unsigned y_components);

/*
 * Encodes the width x height image at pixels (rows `stride` bytes apart, `channels` bytes
 * per pixel, 3 or 4, the first three being 8-bit sRGB red, green and blue; a fourth is
 * ignored) with x_components x y_components components into ret, NUL-terminated. Returns
 * the hash's length, or -EINVAL (ret unchanged) for out-of-range arguments.
 */
int blurhash_encode(const uint8_t *pixels, unsigned width, unsigned height, size_t stride,
                    unsigned channels, unsigned x_components, unsigned y_components,
                    char ret[static BLURHASH_MAX]);

/* sRGB 0..255 to linear 0..1, and back (rounded, clamped): the transfer the hash uses. */
double blurhash_srgb_to_linear(uint8_t v);
uint8_t blurhash_linear_to_srgb(double v);

/* The value of the base-83 digits s[0..n), or -1 for a character outside the alphabet. */
long blurhash_decode83(const char *s, size_t n);
