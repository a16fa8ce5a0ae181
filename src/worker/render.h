/* SPDX-License-Identifier: MIT */
/*
 * render.h - the image work, done with libvips inside a worker process (and by the bare
 * benchmark), never inside the daemon.
 *
 * A source is decoded once (render_base_new): its format is identified by magic bytes and
 * must be on the allowlist; the header is read first and images over max_pixels are refused
 * before any pixel is decoded; JPEG and WebP are shrunk on load as far as the largest
 * variant allows; the result is auto-rotated by its EXIF orientation, converted to 8-bit
 * sRGB (embedded ICC profiles and CMYK included) and held in memory. When a variant asks for
 * animation (animated = true) and the source is an animated GIF or WebP, every frame is
 * decoded too (a second decode, of all frames, refused when the frames together are over
 * max_pixels or there are more than RENDER_FRAMES_MAX). Every variant is then made from
 * that decode (render_variant_full): resized and cropped per its fit and gravity, frame by
 * frame for an animated output, watermarked, masked, flattened where the output format has
 * no alpha, and encoded with the variant's encoder settings and with metadata stripped
 * except what it keeps; with max_bytes, re-encoded at lower qualities (a bounded search)
 * until it fits.
 *
 * Watermark images are decoded through a render_cache: once per process for each file
 * (path, device, inode, size and mtime), not once per job.
 *
 * render_placeholder() makes what a web page shows while a variant loads: a BlurHash, the
 * dominant colour and a tiny WebP as a data: URI.
 *
 * Errors carry libvips' message (its error buffer is copied and cleared right away) and
 * whether the failure is permanent (the input will never work) or may succeed later.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "worker/blurhash.h"
#include "shared/imgformat.h"
#include "shared/variant.h"

/* The most frames an animated source may have for its animation to be kept. */
#define RENDER_FRAMES_MAX 1000
/* Watermark images a render_cache holds at most (the least recently used one goes). */
#define RENDER_CACHE_MAX 32
/* The tiny image of a placeholder fits in this many pixels either way. */
#define RENDER_PLACEHOLDER_SIZE 32

typedef struct render_base render_base;
typedef struct render_cache render_cache;

struct render_error {
        char message[1024];
        bool permanent;
};

struct render_limits {
        uint64_t max_pixels; /* 0: no limit */
        /*
         * Memory the decoder may need beyond the image itself, 0: no limit. A progressive
         * JPEG makes libjpeg keep every DCT coefficient of the whole image (2 bytes a sample,
         * whatever the shrink); one that would need more is refused before decoding.
         */
        uint64_t max_decode_bytes;
};

struct render_info {
        enum image_format format;
        unsigned width; /* of the source, after EXIF orientation */
        unsigned height;
        unsigned pages; /* frames of an animated source, else 1 */
};

/* One rendered output. */
struct render_output {
        void *buf; /* g_free() */
        size_t size;
        unsigned width; /* of a frame */
        unsigned height;
        unsigned pages;           /* frames: more than 1 for an animated output */
        enum image_format format; /* the format written (format "best": the one chosen) */
        int quality;       /* the encoder quality used (max_bytes may have lowered it); -1: none */
        double score;      /* quality = "auto": the output's DSSIM (similarity.h); else -1 */
        unsigned encodes;  /* encodes made, trials of a quality search included */
        char warning[256]; /* "" or why the output is not quite what was asked */
};

/* What a web page shows while a variant loads. */
struct render_placeholder {
        char blurhash[BLURHASH_MAX]; /* 4 x 3 components (3 x 4 for portrait images) */
        uint8_t dominant[3];         /* sRGB */
        char *data_uri;              /* "data:image/webp;base64,..."; g_free() */
};

/*
 * Starts libvips for this process (argv0 for its messages), with `threads` libvips worker
 * threads (0: libvips' default), the operation cache off and untrusted loaders blocked;
 * libvips' warnings go to the debug log, and the last one of an image becomes its error when
 * libvips gives no other. Returns 0 or -EIO.
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
 * A cache of decoded watermark images for one process; render_cache_free() accepts NULL and
 * returns NULL. render_cache_loads() counts the files it decoded (for tests and logs).
 */
render_cache *render_cache_new(void);
render_cache *render_cache_free(render_cache *c);
unsigned render_cache_loads(const render_cache *c);

/*
 * Renders variant v (its format must not be VARIANT_FORMAT_SAME) from b into *ret, using
 * cache for its watermark image (NULL: decode it for this call only). Returns 0 and *ret
 * (the caller frees ret->buf with g_free()), or a negative errno with err filled in and *ret
 * unchanged. A watermark image that cannot be read or decoded fails with a message naming
 * the file, as transient (the file may be fixed); max_bytes_strict not met fails as
 * permanent.
 */
int render_variant_full(render_base *b, const struct variant *v, render_cache *cache,
                        struct render_output *ret, struct render_error *err);

/*
 * render_variant_full() without a cache, for a single-frame result: *ret_buf (caller frees
 * with g_free()), *ret_size, and the output's dimensions. Returns 0 or a negative errno with
 * err filled in; outputs are written only on success.
 */
int render_variant(render_base *b, const struct variant *v, void **ret_buf, size_t *ret_size,
                   unsigned *ret_width, unsigned *ret_height, struct render_error *err);

/*
 * Checks that buf[0..size) fully decodes as format `f` with dimensions width x height: every
 * pixel is decoded, and a decoder's warning (a truncated or corrupt JPEG) fails it too.
 * Returns 0, or -EBADMSG (-ENOMEM when memory ran out) with err filled in.
 */
int render_verify(const void *buf, size_t size, enum image_format f, unsigned width,
                  unsigned height, struct render_error *err);

/* Like render_verify(), for `pages` frames of width x height each (every frame decoded). */
int render_verify_pages(const void *buf, size_t size, enum image_format f, unsigned width,
                        unsigned height, unsigned pages, struct render_error *err);

/*
 * Computes the placeholder of b's (first) frame: a BlurHash and the dominant colour of the
 * image flattened onto `background` (the dominant colour counts opaque pixels only), and a
 * WebP of at most RENDER_PLACEHOLDER_SIZE pixels either way (never enlarged; alpha kept) as
 * a data: URI. Returns 0 and *ret (release with render_placeholder_clear()), or a negative
 * errno with err filled in and *ret unchanged.
 */
int render_placeholder(render_base *b, const uint8_t background[3], struct render_placeholder *ret,
                       struct render_error *err);
void render_placeholder_clear(struct render_placeholder *p);
