/* SPDX-License-Identifier: MIT */
/*
 * render-fixture.h - helpers of the test-render-* programs: cleanup attributes for libvips images,
 * g_free'd memory and render bases, real images made with libvips (gradients, halves, solid
 * colours, noise), encoded and decoded in memory, pixels read back, variants made, and a render
 * checked.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <vips/vips.h>

#include "shared/macro.h"
#include "shared/variant.h"
#include "worker/render.h"

#include "testutil.h"

static inline void image_unrefp(VipsImage **p)
{
        if (*p)
                g_object_unref(*p);
}

#define _cleanup_image_ _cleanup_(image_unrefp)

static inline void gfreep(void *p)
{
        g_free(*(void **)p);
}

#define _cleanup_gfree_ _cleanup_(gfreep)

static inline void render_base_freep(render_base **p)
{
        render_base_free(*p);
}

#define _cleanup_base_ _cleanup_(render_base_freep)

/* Asserts that a libvips call succeeded, showing its error otherwise. */
#define VIPS_OK(call)                                                                              \
        do {                                                                                       \
                if ((call) != 0) {                                                                 \
                        fail_msg("%s: %s", #call, vips_error_buffer());                            \
                }                                                                                  \
        } while (0)

/* A w x h sRGB gradient: R = 255 x / w, G = 255 y / h, B = 128; alpha 255 when asked. */
VipsImage *renderfx_make_gradient(int w, int h, bool alpha);

/* A w x h sRGB image, pure `left` colour where x < w/2 and pure `right` colour elsewhere. */
VipsImage *renderfx_make_halves(int w, int h, const double left[3], const double right[3]);

/* Encodes with libvips' saver for `suffix` (".jpg[Q=90]", ".png", ...); g_free the result. */
void *renderfx_encode(VipsImage *im, const char *suffix, size_t *ret_len);

/* Decodes a buffer fully into memory with libvips. */
VipsImage *renderfx_decode(const void *buf, size_t len);

/* Band `band` of pixel (x, y). */
double renderfx_pixel(VipsImage *im, int x, int y, int band);

void renderfx_assert_near(double got, double want, double tolerance);

struct variant renderfx_make_variant(unsigned w, unsigned h, enum variant_fit fit,
                                     enum image_format format);

render_base *renderfx_base_ok(const void *buf, size_t len, const struct variant *v, size_t n);

/*
 * Renders v from b, checks the reported size against want_w x want_h, that it verifies,
 * and that libvips decodes it at that size; returns the decoded output.
 */
VipsImage *renderfx_render_check(render_base *b, const struct variant *v, unsigned want_w,
                                 unsigned want_h);

extern const double renderfx_RED[3], renderfx_BLUE[3], renderfx_GREEN[3];

bool renderfx_have_avif_encoder(void);

/* A w x h sRGB image of one colour. */
VipsImage *renderfx_make_solid(int w, int h, const double rgb[3]);

/* A w x h sRGB image of random noise (hard to compress), the same for the same seed. */
VipsImage *renderfx_make_noise(int w, int h, int seed);

/* Renders v from b with cache (may be NULL); asserts success, verifies; returns the output. */
struct render_output renderfx_render_ok(render_base *b, const struct variant *v,
                                        render_cache *cache);

/* The pixels of an 8-bit image as bytes; g_free(). */
uint8_t *renderfx_pixels_of(VipsImage *im, size_t *ret_len);

/*
 * Counts the pixels where a and b (same size and bands) differ, and their bounding box
 * [x0, x1) x [y0, y1).
 */
size_t renderfx_diff_box(VipsImage *a, VipsImage *b, int *x0, int *y0, int *x1, int *y1);

/* A temporary directory for files; renderfx_rm_tree() removes it. */
char *renderfx_temp_dir(void);

void renderfx_rm_tree(char *dir);

/* A w x h watermark file of one colour (TIFF, uncompressed: the size depends on w and h only). */
void renderfx_write_mark(const char *path, int w, int h, const double rgb[3]);

/* An animated GIF of `n` w x h frames, frame i a solid colour COLOURS[i % 4]. */
extern const double renderfx_COLOURS[4][3];

void *renderfx_make_animation(int w, int h, int n, const char *suffix, size_t *ret_len);

int renderfx_setup(void **state);
