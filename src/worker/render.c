/* SPDX-License-Identifier: MIT */
/*
 * render.c - the render component's hub: libvips' start-up, the errors every step reports
 * through, and the pipeline that makes a variant from a decoded base (decode.c) out of the
 * operations of its sibling files; see render.h for the contract and render-private.h for
 * the files.
 *
 * A variant is made frame by frame (one frame unless animated): resize and crop (fit,
 * gravity; resize.c) --> watermark --> mask (overlay.c); then the frames are joined, alpha
 * is flattened where the format has none, the metadata to keep is attached (metadata.c),
 * and it is encoded (encode.c); with max_bytes the encode is repeated at lower qualities, at
 * most VARIANT_MAX_BYTES_STEPS encodes in all.
 *
 * libvips' error buffer is global: every failing call is followed right away by
 * vips_error_buffer_copy(), which takes the text and clears the buffer. Some successful
 * calls leave text behind too (heifload), so the buffer is also cleared when an entry point
 * starts and after every successful open.
 *
 * Worked around here for libvips 8.14 (Debian 12): thumbnail_image does not know about pages
 * (it would resize a toilet roll as one image), hence frame by frame.
 */
#include <errno.h>
#include <malloc.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <vips/vips.h>

#include "shared/log.h"
#include "shared/macro.h"
#include "worker/render-private.h"
#include "worker/render.h"

/* Freed memory a rendering process keeps for the next image; larger blocks are mapped. */
#define RENDER_HEAP_KEEP (256 << 20)

int render_fail(struct render_error *err, int r, bool permanent, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(err->message, sizeof(err->message), fmt, ap);
        va_end(ap);
        err->permanent = permanent;
        return r;
}

/*
 * Some loaders report why they failed only as a GLib warning and leave libvips' error
 * buffer empty (libpng's "IHDR: invalid" through pngload): the last warning of the
 * current image is kept here, as the reason of last resort. Warnings may come from libvips'
 * worker threads, hence the lock.
 */
G_LOCK_DEFINE_STATIC(last_warning);
static char last_warning[256];

static void render_log_handler(const gchar *domain, GLogLevelFlags level, const gchar *message,
                               gpointer userdata)
{
        G_LOCK(last_warning);
        g_strlcpy(last_warning, message ? message : "", sizeof last_warning);
        G_UNLOCK(last_warning);
        log_debug("libvips: %s", message ? message : "");
}

void render_clear_errors(void)
{
        vips_error_clear();
        G_LOCK(last_warning);
        last_warning[0] = '\0';
        G_UNLOCK(last_warning);
}

int render_fail_vips(struct render_error *err, int r, const char *what)
{
        _cleanup_gfree_ char *text = vips_error_buffer_copy();
        char joined[sizeof(err->message)];
        size_t n = 0;

        for (const char *s = text ? text : ""; *s && n + 3 < sizeof(joined); s++) {
                if (*s != '\n') {
                        joined[n++] = *s;
                } else if (s[1] != '\0') {
                        joined[n++] = ';';
                        joined[n++] = ' ';
                }
        }
        joined[n] = '\0';
        if (n == 0) {
                G_LOCK(last_warning);
                if (last_warning[0])
                        snprintf(joined, sizeof(joined), "%s", last_warning);
                else
                        snprintf(joined, sizeof(joined), "unknown libvips error");
                G_UNLOCK(last_warning);
        }

        if (strstr(joined, "out of memory") || strstr(joined, "failed to allocate"))
                return render_fail(err, -ENOMEM, false, "%s: %s", what, joined);
        return render_fail(err, r, true, "%s: %s", what, joined);
}

int render_init(const char *argv0, unsigned threads)
{
        /*
         * A rendering process handles one large image after another: decoded images,
         * sources and their copies of tens of megabytes each. glibc would map each of those
         * afresh and unmap it when freed, so every image paid its page faults again (in a
         * virtual machine, a sixth of a worker's time). Kept in the heap instead, up to
         * RENDER_HEAP_KEEP, they are reused by the next image: 42% fewer page faults and
         * 17-27% less CPU for the avatar pipeline, for a higher resident size between jobs
         * (the daemon recycles a worker whose memory stays over half its limit).
         */
        (void)mallopt(M_MMAP_THRESHOLD, RENDER_HEAP_KEEP);
        (void)mallopt(M_TRIM_THRESHOLD, RENDER_HEAP_KEEP);
        if (VIPS_INIT(argv0) != 0) {
                vips_error_clear();
                return -EIO;
        }
        if (threads > 0)
                vips_concurrency_set((int)threads);
        /* One decode per job and no sharing between jobs: the cache would only hold memory. */
        vips_cache_set_max(0);
        vips_block_untrusted_set(TRUE);
        /*
         * libvips marks its JPEG XL saver and loader untrusted (libjxl is young). The saver
         * writes our own pixels, and the loader only ever reads back our own outputs (to
         * verify them, and to score them for quality = "auto"): sources are opened by magic
         * from an allowlist that has no JPEG XL (render_format_allowed()).
         */
        vips_operation_block_set("VipsForeignSaveJxlBuffer", FALSE);
        vips_operation_block_set("VipsForeignLoadJxlBuffer", FALSE);
        g_log_set_handler("VIPS", G_LOG_LEVEL_WARNING | G_LOG_LEVEL_MESSAGE | G_LOG_LEVEL_INFO,
                          render_log_handler, NULL);
        return 0;
}

void render_shutdown(void)
{
        vips_shutdown();
}

static inline void render_cache_freep(render_cache **p)
{
        render_cache_free(*p);
}

/*
 * One frame of variant v from in (a whole image, or one frame of an animation): resized
 * and cropped, its fit checked, watermarked (overlay, made for the first frame, is reused
 * for the others), masked. Returns 0 and *ret, or a negative errno with err filled in.
 */
static int render_frame(render_base *b, VipsImage *in, const struct variant *v, render_cache *cache,
                        VipsImage **overlay, int *ox, int *oy, VipsImage **ret,
                        struct render_error *err)
{
        _cleanup_image_ VipsImage *resized = NULL, *marked = NULL, *masked = NULL;
        /* The base image shrunk after its decode: sizes follow from the decoded size. */
        bool shrunk = in == b->image && b->ref_width > 0;
        int src_w = shrunk ? b->ref_width : in->Xsize, src_h = shrunk ? b->ref_height : in->Ysize;
        VipsImage *cur;
        int r;

        if (render_resize(in, shrunk ? src_w : 0, shrunk ? src_h : 0, v, &resized) < 0)
                return render_fail_vips(err, -EBADMSG, "resize");
        if (!render_fit_holds(v, src_w, src_h, resized->Xsize, resized->Ysize))
                return render_fail(err, -EIO, true, "resize: %s %ux%u of %dx%d gave %dx%d",
                                   variant_fit_name(v->fit), v->width, v->height, src_w, src_h,
                                   resized->Xsize, resized->Ysize);
        cur = resized;

        if (v->watermark.kind != VARIANT_WATERMARK_NONE) {
                if (!*overlay) {
                        r = render_watermark_overlay(cache, v, b->max_pixels, cur->Xsize,
                                                     cur->Ysize, overlay, ox, oy, err);
                        if (r < 0)
                                return r;
                }
                if (render_composite(cur, *overlay, *ox, *oy, &marked) < 0)
                        return render_fail_vips(err, -EBADMSG, "watermark");
                cur = marked;
        }

        if (v->mask == VARIANT_MASK_CIRCLE) {
                if (render_circle_mask(cur, &masked) < 0)
                        return render_fail_vips(err, -EBADMSG, "mask");
                cur = masked;
        }
        *ret = g_object_ref(cur);
        return 0;
}

/* Unrefs the images of a NULL-terminated array of frames and frees the array. */
static void render_frames_freep(VipsImage ***p)
{
        if (!*p)
                return;
        for (VipsImage **f = *p; *f; f++)
                g_object_unref(*f);
        free(*p);
}

/*
 * The end of a variant's pipeline for one output format (v->format): alpha flattened where the
 * format has none, the metadata to keep attached, encoded (render_encode_fit(), with the
 * deadline dl or NULL). Fills the encoder's members of *out. Returns 0, or a negative errno with
 * err filled in.
 */
static int render_finish(render_base *b, VipsImage *in, const struct variant *v,
                         const struct render_deadline *dl, struct render_output *out,
                         struct render_error *err)
{
        _cleanup_image_ VipsImage *flat = NULL, *flat8 = NULL, *kept = NULL;
        VipsImage *cur = in;
        bool keep_any = false;

        if (!image_format_has_alpha(v->format) && vips_image_hasalpha(cur)) {
                if (render_flatten(cur, v->background, &flat) < 0)
                        return render_fail_vips(err, -EBADMSG, "flatten");
                cur = flat;
                if (cur->BandFmt != VIPS_FORMAT_UCHAR) {
                        if (vips_cast(cur, &flat8, VIPS_FORMAT_UCHAR, NULL) < 0)
                                return render_fail_vips(err, -EBADMSG, "flatten");
                        cur = flat8;
                }
        }
        if (v->keep) {
                if (render_attach_kept(b, cur, v, &kept, &keep_any) < 0)
                        return render_fail_vips(err, -EBADMSG, "metadata");
                cur = kept;
        }
        return render_encode_fit(cur, v, !keep_any, dl, out, err);
}

/*
 * Format "best": each candidate in turn at its auto quality, until all are done or
 * best_time_limit has passed. The limit is checked before every encode of a candidate's
 * search too: the first candidate then publishes the best output its search has made (one
 * encode of the whole image at least), a later one gives up (render_encode_fit() returns
 * -ETIMEDOUT) and is not counted as tried. The smallest output that meets the target wins,
 * else the one that comes closest. Fills the encoder's members of
 * *out, with the winner's format. Returns 0, or a negative errno with err filled in.
 */
static int render_best(render_base *b, VipsImage *in, const struct variant *v,
                       struct render_output *out, struct render_error *err)
{
        const uint64_t start = (uint64_t)g_get_monotonic_time();
        struct render_output best = { .quality = -1, .score = -1 };
        unsigned encodes = 0, tried = 0;

        for (unsigned i = 0; i < v->n_candidates; i++) {
                struct render_output o = { .quality = -1, .score = -1 };
                struct render_deadline dl = { .at_usec = start + v->best_time_limit_usec };
                struct variant c = *v;
                bool better;
                int r;

                if (i > 0 && (uint64_t)g_get_monotonic_time() >= dl.at_usec)
                        break;
                /* At one encode in all (degraded), the first candidate only. */
                if (i > 0 && v->auto_encodes <= 1)
                        break;
                c.format = v->candidates[i];
                c.n_candidates = 0;
                c.best_time_limit_usec = 0;
                dl.optional = best.buf != NULL;
                r = render_finish(b, in, &c, &dl, &o, err);
                if (r == -ETIMEDOUT && dl.optional)
                        break;
                if (r < 0) {
                        g_free(best.buf);
                        return r;
                }
                encodes += o.encodes;
                tried++;
                if (!best.buf)
                        better = true;
                else if ((o.score <= v->target) != (best.score <= v->target))
                        better = o.score <= v->target;
                else if (o.score <= v->target)
                        better = o.size < best.size;
                else
                        better = o.score < best.score;
                if (better) {
                        g_free(best.buf);
                        best = o;
                } else {
                        g_free(o.buf);
                }
        }
        best.encodes = encodes;
        if (tried < v->n_candidates && !best.warning[0])
                snprintf(best.warning, sizeof best.warning,
                         "format best: %u of %u candidates tried (best_time_limit or degraded)",
                         tried, v->n_candidates);
        best.width = out->width;
        best.height = out->height;
        best.pages = out->pages;
        *out = best;
        return 0;
}

int render_variant_full(render_base *b, const struct variant *v, render_cache *cache,
                        struct render_output *ret, struct render_error *err)
{
        _cleanup_(render_cache_freep) render_cache *own_cache = NULL;
        _cleanup_image_ VipsImage *overlay = NULL, *joined = NULL;
        /* Filled in order, so the ones made so far are always followed by a NULL. */
        _cleanup_(render_frames_freep) VipsImage **frames = NULL;
        struct render_output out = { .quality = -1, .score = -1 };
        bool animate;
        int n = 1, ox = 0, oy = 0, r;
        VipsImage *cur;

        if (!variant_format_writable(v->format) &&
            !(v->format == VARIANT_FORMAT_BEST && v->n_candidates > 0))
                return render_fail(err, -EINVAL, true, "variant %s: cannot write format %s",
                                   v->name, image_format_name(v->format));
        if (v->fit != VARIANT_FIT_NONE &&
            (v->width == 0 || v->height == 0 || v->width > VARIANT_DIMENSION_MAX ||
             v->height > VARIANT_DIMENSION_MAX))
                return render_fail(err, -EINVAL, true, "variant %s: bad size %ux%u", v->name,
                                   v->width, v->height);
        if (v->watermark.kind != VARIANT_WATERMARK_NONE && !cache) {
                cache = own_cache = render_cache_new();
                if (!cache)
                        return render_fail(err, -ENOMEM, false, "out of memory");
        }

        vips_error_clear();
        animate = v->animated && b->frames && variant_format_animated(v->format);
        if (animate)
                n = b->frames->Ysize / b->page_height;
        frames = calloc((size_t)n + 1, sizeof(*frames));
        if (!frames)
                return render_fail(err, -ENOMEM, false, "out of memory");
        for (int i = 0; i < n; i++) {
                _cleanup_image_ VipsImage *frame = NULL;

                if (!animate)
                        frame = g_object_ref(b->image);
                else if (vips_extract_area(b->frames, &frame, 0, i * b->page_height,
                                           b->frames->Xsize, b->page_height, NULL) < 0)
                        return render_fail_vips(err, -EBADMSG, "frame");
                r = render_frame(b, frame, v, cache, &overlay, &ox, &oy, &frames[i], err);
                if (r < 0)
                        return r;
        }
        if (n > 1) {
                if (vips_arrayjoin(frames, &joined, n, "across", 1, NULL) < 0)
                        return render_fail_vips(err, -EBADMSG, "join frames");
                vips_image_set_int(joined, VIPS_META_PAGE_HEIGHT, frames[0]->Ysize);
                vips_image_set_int(joined, VIPS_META_N_PAGES, n);
                vips_image_set_int(joined, "loop", b->loop);
                if (b->n_delays > 0)
                        vips_image_set_array_int(joined, "delay", b->delays, b->n_delays);
        }
        cur = n > 1 ? joined : frames[0];
        out.width = (unsigned)frames[0]->Xsize;
        out.height = (unsigned)frames[0]->Ysize;
        out.pages = (unsigned)n;

        if (v->format == VARIANT_FORMAT_BEST)
                r = render_best(b, cur, v, &out, err);
        else
                r = render_finish(b, cur, v, NULL, &out, err);
        if (r < 0)
                return r;
        *ret = out;
        return 0;
}

int render_variant(render_base *b, const struct variant *v, void **ret_buf, size_t *ret_size,
                   unsigned *ret_width, unsigned *ret_height, struct render_error *err)
{
        struct render_output out;
        int r;

        r = render_variant_full(b, v, NULL, &out, err);
        if (r < 0)
                return r;
        *ret_buf = out.buf;
        *ret_size = out.size;
        *ret_width = out.width;
        *ret_height = out.height;
        return 0;
}
