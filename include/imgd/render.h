/* SPDX-License-Identifier: MIT */
/*
 * render.h - the image work, done with libvips inside a worker process (and by the bare
 * benchmark), never inside the daemon.
 *
 * A source is decoded once (render_base_new): its format is identified by magic bytes and
 * must be on the allowlist; the header is read first and images over max_pixels are refused
 * before any pixel is decoded; JPEG and WebP are shrunk on load as far as the largest
 * variant allows; the result is auto-rotated by its EXIF orientation, converted to 8-bit
 * sRGB (embedded ICC profiles and CMYK included) and held in memory. Every variant is then
 * made from that one decode (render_variant): resized and cropped per its fit, masked,
 * flattened where the output format has no alpha, and encoded with metadata stripped.
 *
 * Errors carry libvips' message (its error buffer is copied and cleared right away) and
 * whether the failure is permanent (the input will never work) or may succeed later.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "imgformat.h"
#include "variant.h"

typedef struct render_base render_base;

struct render_error {
        char message[1024];
        bool permanent;
};

struct render_limits {
        uint64_t max_pixels; /* 0: no limit */
};

struct render_info {
        enum image_format format;
        unsigned width; /* of the source, after EXIF orientation */
        unsigned height;
};

/*
 * Starts libvips for this process (argv0 for its messages), with `threads` libvips worker
 * threads (0: libvips' default), the operation cache off and untrusted loaders blocked.
 * Returns 0 or -EIO.
 */
int render_init(const char *argv0, unsigned threads);
void render_shutdown(void);

/*
 * Decodes data[0..size) once for the given variants. data must stay valid until the base is
 * freed. Returns 0 and *ret, or a negative errno with err filled in.
 */
int render_base_new(const void *data, size_t size, const struct variant *variants,
                    size_t n_variants, const struct render_limits *limits, render_base **ret,
                    struct render_error *err);
render_base *render_base_free(render_base *b);

/* The source's format and oriented dimensions. */
const struct render_info *render_base_info(const render_base *b);

/*
 * Renders variant v (its format must not be VARIANT_FORMAT_SAME) from b into a new buffer:
 * *ret_buf (caller frees with g_free()), *ret_size, and the output's dimensions. Returns 0
 * or a negative errno with err filled in; outputs are written only on success.
 */
int render_variant(render_base *b, const struct variant *v, void **ret_buf, size_t *ret_size,
                   unsigned *ret_width, unsigned *ret_height, struct render_error *err);

/*
 * Checks that buf[0..size) fully decodes as format `f` with dimensions width x height.
 * Returns 0, or -EBADMSG with err filled in.
 */
int render_verify(const void *buf, size_t size, enum image_format f, unsigned width,
                  unsigned height, struct render_error *err);
