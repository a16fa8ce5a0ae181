/* SPDX-License-Identifier: MIT */
/*
 * encode.c - flattening and encoding: alpha flattened onto a background colour for formats
 * without one, each output format's saver called with the variant's encoder settings, and
 * with max_bytes the bounded search for the highest quality that fits; see
 * render-private.h.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>

#include <vips/vips.h>

#include "shared/macro.h"
#include "worker/autoquality.h"
#include "worker/render-private.h"

/* quality = "auto": encodes of the whole image at a higher quality when it misses the target
 * that its sample met: the search keeps one of auto_encodes for the first, the second may
 * go one over (the target is met rather than the count). */
#define AUTO_CORRECTIONS 2

int render_flatten(VipsImage *in, const uint8_t background[3], VipsImage **ret)
{
        VipsArrayDouble *bg = vips_array_double_newv(3, (double)background[0],
                                                     (double)background[1], (double)background[2]);
        int r;

        r = vips_flatten(in, ret, "background", bg, NULL);
        vips_area_unref(VIPS_AREA(bg));
        return r;
}

static VipsForeignSubsample render_subsample(enum variant_chroma c)
{
        switch (c) {
        case VARIANT_CHROMA_444:
                return VIPS_FOREIGN_SUBSAMPLE_OFF;
        case VARIANT_CHROMA_420:
                return VIPS_FOREIGN_SUBSAMPLE_ON;
        default:
                return VIPS_FOREIGN_SUBSAMPLE_AUTO;
        }
}

int render_encode(VipsImage *in, const struct variant *v, int q, bool strip, void **ret_buf,
                  size_t *ret_len, struct render_error *err)
{
        void *buf = NULL;
        size_t len = 0;
        int r;

        if (q < 1 || q > 100)
                q = 80;
        switch (v->format) {
        case IMAGE_FORMAT_JPEG:
                r = vips_jpegsave_buffer(in, &buf, &len, "Q", q, "optimize_coding", TRUE, "strip",
                                         strip, "interlace", v->progressive, "subsample_mode",
                                         render_subsample(v->chroma), NULL);
                break;
        case IMAGE_FORMAT_WEBP:
                r = vips_webpsave_buffer(in, &buf, &len, "Q", q, "effort", (int)v->effort,
                                         "lossless", v->lossless, "strip", TRUE, NULL);
                /* What is kept is the ICC profile (its own chunk) and the EXIF copyright. */
                if (r == 0 && !(!strip && (v->keep & VARIANT_KEEP_COPYRIGHT))) {
                        size_t stripped = render_webp_strip(buf, len);

                        if (stripped == 0) {
                                g_free(buf);
                                return render_fail(err, -EIO, true,
                                                   "encode webp: libvips wrote a malformed "
                                                   "RIFF container");
                        }
                        len = stripped;
                }
                break;
        case IMAGE_FORMAT_PNG:
                r = vips_pngsave_buffer(in, &buf, &len, "compression", 6, "strip", strip,
                                        "interlace", v->progressive, NULL);
                break;
        case IMAGE_FORMAT_GIF:
                r = vips_gifsave_buffer(in, &buf, &len, "strip", TRUE, "interlace", v->progressive,
                                        NULL);
                break;
        case IMAGE_FORMAT_AVIF:
                if (vips_type_find("VipsOperation", "heifsave_buffer") == 0)
                        return render_fail(err, -ENOTSUP, true,
                                           "encode avif: this libvips has no AVIF encoder "
                                           "(heifsave_buffer is missing)");
                r = vips_heifsave_buffer(in, &buf, &len, "compression",
                                         VIPS_FOREIGN_HEIF_COMPRESSION_AV1, "Q", q, "effort",
                                         (int)v->effort, "subsample_mode",
                                         render_subsample(v->chroma), "strip", strip, NULL);
                if (r != 0)
                        return render_fail_vips(err, -ENOTSUP, "encode avif (AV1 encoder)");
                break;
        case IMAGE_FORMAT_JXL:
                /* libjxl's effort runs 1..9: 0 is its fastest, 1. No metadata is kept. */
                r = vips_jxlsave_buffer(in, &buf, &len, "Q", q, "effort", MAX((int)v->effort, 1),
                                        "strip", TRUE, NULL);
                break;
        default:
                return render_fail(err, -EINVAL, true, "cannot write %s",
                                   image_format_name(v->format));
        }
        if (r != 0) {
                char what[64];

                snprintf(what, sizeof(what), "encode %s", image_format_name(v->format));
                return render_fail_vips(err, -EIO, what);
        }
        *ret_buf = buf;
        *ret_len = len;
        return 0;
}

static bool deadline_reached(const struct render_deadline *dl)
{
        return dl && dl->at_usec != 0 && (uint64_t)g_get_monotonic_time() >= dl->at_usec;
}

int render_encode_fit(VipsImage *in, const struct variant *v, bool strip,
                      const struct render_deadline *dl, struct render_output *ret,
                      struct render_error *err)
{
        _cleanup_gfree_ void *best = NULL;
        size_t best_len = 0;
        int q = (int)v->quality, lo, hi, steps = 0, r;
        struct render_auto au = { .score = -1 };
        /* The score of best when the search made it already, else -1. */
        double known = -1;
        bool cut = false;

        if (v->quality_auto) {
                r = render_auto_quality(in, v, strip, dl ? dl->at_usec : 0, &au, err);
                if (r < 0)
                        return r;
                q = au.quality;
                cut = au.cut;
                if (cut && dl->optional) {
                        g_free(au.buf);
                        return render_fail(err, -ETIMEDOUT, true,
                                           "best_time_limit reached during the search");
                }
        } else if (deadline_reached(dl) && dl->optional) {
                return render_fail(err, -ETIMEDOUT, true, "best_time_limit reached");
        }
        if (au.buf) {
                best = TAKE_PTR(au.buf);
                best_len = au.size;
                known = au.score;
        } else {
                r = render_encode(in, v, q, strip, &best, &best_len, err);
                if (r < 0)
                        return r;
                steps++;
        }
        if (v->max_bytes > 0 && variant_uses_quality(v) && best_len > v->max_bytes) {
                lo = MIN(q, VARIANT_MAX_BYTES_QUALITY_MIN);
                hi = q; /* does not fit */
                if (lo < hi) {
                        _cleanup_gfree_ void *buf = NULL;
                        size_t len = 0;

                        r = render_encode(in, v, lo, strip, &buf, &len, err);
                        if (r < 0)
                                return r;
                        steps++;
                        g_free(best);
                        best = TAKE_PTR(buf);
                        best_len = len;
                        known = -1;
                        q = lo;
                }
                if (best_len > v->max_bytes) {
                        if (v->max_bytes_strict)
                                return render_fail(err, -EFBIG, true,
                                                   "max_bytes %" PRIu64 " not reached at the "
                                                   "lowest quality %d (%zu bytes)",
                                                   v->max_bytes, q, best_len);
                        snprintf(ret->warning, sizeof(ret->warning),
                                 "max_bytes %" PRIu64 " not reached at the lowest quality %d; "
                                 "published at %zu bytes",
                                 v->max_bytes, q, best_len);
                } else {
                        /* lo fits, hi does not: bisect while steps and time remain. */
                        while (hi - lo > 1 && steps < VARIANT_MAX_BYTES_STEPS) {
                                _cleanup_gfree_ void *buf = NULL;
                                size_t len = 0;
                                int mid = lo + (hi - lo) / 2;

                                if (deadline_reached(dl)) {
                                        cut = true;
                                        break;
                                }
                                r = render_encode(in, v, mid, strip, &buf, &len, err);
                                if (r < 0)
                                        return r;
                                steps++;
                                if (len <= v->max_bytes) {
                                        g_free(best);
                                        best = TAKE_PTR(buf);
                                        best_len = len;
                                        known = -1;
                                        lo = mid;
                                } else {
                                        hi = mid;
                                }
                        }
                        q = lo;
                }
        }
        ret->score = -1;
        if (v->quality_auto) {
                ret->score = known;
                r = known >= 0 ? 0
                               : render_score(in, best, best_len, v->format, v->background,
                                              &ret->score, err);
                if (r < 0)
                        return r;
                /*
                 * The whole image misses the target its sample met: up as
                 * autoquality_fix_next() says (a correction that lands just short is an
                 * encode wasted; near quality 100 the score falls steeply), at most
                 * AUTO_CORRECTIONS times, not against max_bytes, and not past the deadline. A
                 * correction that still misses is kept only when it comes closer.
                 */
                struct autoquality_fix fix;

                autoquality_fix_start(&fix, v->target, au.slope, q, ret->score);
                for (int c = 0;
                     c < AUTO_CORRECTIONS && ret->score > v->target && fix.last_q < 100 &&
                     v->max_bytes == 0 && v->auto_encodes > 1 &&
                     (unsigned)steps + au.trials < v->auto_encodes + AUTO_CORRECTIONS - 1;
                     c++) {
                        _cleanup_gfree_ void *buf = NULL;
                        size_t len = 0;
                        double d;
                        int at;

                        if (deadline_reached(dl)) {
                                cut = true;
                                break;
                        }
                        at = autoquality_fix_next(&fix, ret->score);
                        r = render_encode(in, v, at, strip, &buf, &len, err);
                        if (r < 0)
                                return r;
                        steps++;
                        r = render_score(in, buf, len, v->format, v->background, &d, err);
                        if (r < 0)
                                return r;
                        autoquality_fix_record(&fix, at, d);
                        if (d < ret->score) {
                                g_free(best);
                                best = TAKE_PTR(buf);
                                best_len = len;
                                ret->score = d;
                                q = at;
                        }
                }
                if (ret->score > v->target && !ret->warning[0])
                        snprintf(ret->warning, sizeof(ret->warning),
                                 "target %g not met: DSSIM %.5f at quality %d%s", v->target,
                                 ret->score, q, cut ? " (best_time_limit reached)" : "");
        }
        ret->buf = TAKE_PTR(best);
        ret->size = best_len;
        ret->format = v->format;
        ret->quality = variant_uses_quality(v) ? q : -1;
        ret->encodes = (unsigned)steps + au.trials;
        return 0;
}
