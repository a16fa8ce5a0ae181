/* SPDX-License-Identifier: MIT */
/*
 * resize.c - sizes and resizing: what a variant needs from a source (the decode's
 * shrink-on-load and pre-shrink aim at it), the pre-shrink of a base, and the resize of a
 * frame per its variant's fit and gravity, with the check that the result is what the fit
 * promises; see render-private.h.
 *
 * A base that was pre-shrunk keeps the size it was decoded at (ref_width x ref_height), and
 * "contain" and "inside" are worked out for that size, so every output has the size the
 * full decode would give it.
 */
#include <stdint.h>

#include <vips/vips.h>

#include "shared/macro.h"
#include "worker/render-private.h"

/*
 * Rounding for the non-negative sizes below: sizes are at most VIPS_MAX_COORD, far inside
 * what uint64_t holds exactly.
 */
double render_floor(double x)
{
        return (double)(uint64_t)x;
}

static double render_ceil(double x)
{
        double t = render_floor(x);

        return t < x ? t + 1.0 : t;
}

void render_needed_size(const struct variant *v, double W, double H, double *need_w, double *need_h)
{
        double sx = 1.0, sy = 1.0;

        if (v->fit != VARIANT_FIT_NONE && v->width > 0 && v->height > 0) {
                sx = v->width / W;
                sy = v->height / H;
                switch (v->fit) {
                case VARIANT_FIT_COVER:
                        sx = sy = MAX(sx, sy);
                        break;
                case VARIANT_FIT_CONTAIN:
                case VARIANT_FIT_INSIDE:
                        sx = sy = MIN(sx, sy);
                        break;
                default: /* fill: each axis on its own */
                        break;
                }
        }
        *need_w = render_ceil(W * MIN(sx, 1.0));
        *need_h = render_ceil(H * MIN(sy, 1.0));
}

bool render_wants_preshrink(enum image_format f, double w, double h, double need_w, double need_h)
{
        if (f == IMAGE_FORMAT_JPEG || f == IMAGE_FORMAT_WEBP)
                return false;
        return need_w >= 1 && need_h >= 1 && w * h >= 2.0 * need_w * need_h;
}

/*
 * Without alpha, lanczos3 over the whole factor (no box shrink first: libvips 8.14's
 * vectorised reduce is faster than its box shrink on 8-bit pixels, 35 against 84 ms for
 * 3840x2160 to 710x400, and sharper). A real alpha is premultiplied around it, in float,
 * where the box shrink first is the cheaper (measured: 1.5x the time without it).
 */
int render_preshrink(VipsImage *in, double need_w, double need_h, VipsImage **ret)
{
        _cleanup_image_ VipsImage *pre = NULL, *t = NULL, *un = NULL, *cast = NULL;
        double scale = MAX(need_w / in->Xsize, need_h / in->Ysize);
        bool alpha = vips_image_hasalpha(in);

        if (alpha && vips_premultiply(in, &pre, NULL) < 0)
                return -1;
        if (vips_resize(alpha ? pre : in, &t, scale, "gap", alpha ? 2.0 : 0.0, NULL) < 0)
                return -1;
        if (t->Xsize < need_w || t->Ysize < need_h) {
                vips_error("render", "shrink %dx%d by %g gave %dx%d, short of %gx%g", in->Xsize,
                           in->Ysize, scale, t->Xsize, t->Ysize, need_w, need_h);
                return -1;
        }
        if (alpha) {
                if (vips_unpremultiply(t, &un, NULL) < 0 ||
                    vips_cast(un, &cast, in->BandFmt, NULL) < 0)
                        return -1;
                *ret = TAKE_PTR(cast);
                return 0;
        }
        *ret = TAKE_PTR(t);
        return 0;
}

/*
 * The size fit "contain" or "inside" of v gives a ref_w x ref_h image: what
 * vips_thumbnail_image makes of one, worked out on a black image of that size that is never
 * computed. For a shrunk base, so that its outputs have the sizes the full decode gives.
 * Returns 0, *ret_w and *ret_h, or -1 with libvips' error set.
 */
static int render_fit_size(int ref_w, int ref_h, const struct variant *v, int *ret_w, int *ret_h)
{
        _cleanup_image_ VipsImage *blank = NULL, *t = NULL;

        if (vips_black(&blank, ref_w, ref_h, "bands", 3, NULL) < 0 ||
            vips_thumbnail_image(blank, &t, (int)v->width, "height", (int)v->height, "size",
                                 v->fit == VARIANT_FIT_INSIDE ? VIPS_SIZE_DOWN : VIPS_SIZE_BOTH,
                                 NULL) < 0)
                return -1;
        *ret_w = t->Xsize;
        *ret_h = t->Ysize;
        return 0;
}

void render_compass(enum variant_gravity g, int *ret_x, int *ret_y)
{
        static const signed char xy[_VARIANT_POSITION_MAX][2] = {
                [VARIANT_GRAVITY_CENTRE] = { 1, 1 },     [VARIANT_GRAVITY_NORTH] = { 1, 0 },
                [VARIANT_GRAVITY_SOUTH] = { 1, 2 },      [VARIANT_GRAVITY_EAST] = { 2, 1 },
                [VARIANT_GRAVITY_WEST] = { 0, 1 },       [VARIANT_GRAVITY_NORTH_EAST] = { 2, 0 },
                [VARIANT_GRAVITY_NORTH_WEST] = { 0, 0 }, [VARIANT_GRAVITY_SOUTH_EAST] = { 2, 2 },
                [VARIANT_GRAVITY_SOUTH_WEST] = { 0, 2 },
        };
        int i = g >= 0 && g < _VARIANT_POSITION_MAX ? (int)g : 0;

        *ret_x = xy[i][0];
        *ret_y = xy[i][1];
}

/*
 * fit = cover with a compass gravity: scales in so that it covers w x h (one side exact, the
 * other at least as long), then keeps the w x h part that the gravity names. Returns 0 and
 * *ret, or -1 with libvips' error set.
 */
static int render_cover_compass(VipsImage *in, int w, int h, enum variant_gravity g,
                                VipsImage **ret)
{
        _cleanup_image_ VipsImage *scaled = NULL;
        int gx, gy, r;

        /* Wider than the box (w/h): match the height; else match the width. */
        if ((double)in->Xsize * h > (double)in->Ysize * w)
                r = vips_thumbnail_image(in, &scaled, VIPS_MAX_COORD, "height", h, "size",
                                         VIPS_SIZE_BOTH, NULL);
        else
                r = vips_thumbnail_image(in, &scaled, w, "height", VIPS_MAX_COORD, "size",
                                         VIPS_SIZE_BOTH, NULL);
        if (r < 0)
                return -1;
        if (scaled->Xsize < w || scaled->Ysize < h) {
                vips_error("render", "cover scaled %dx%d to %dx%d, short of %dx%d", in->Xsize,
                           in->Ysize, scaled->Xsize, scaled->Ysize, w, h);
                return -1;
        }
        render_compass(g, &gx, &gy);
        return vips_extract_area(scaled, ret, (scaled->Xsize - w) * gx / 2,
                                 (scaled->Ysize - h) * gy / 2, w, h, NULL);
}

int render_resize(VipsImage *in, int ref_w, int ref_h, const struct variant *v, VipsImage **ret)
{
        int w = (int)v->width, h = (int)v->height;

        if (ref_w > 0 && ref_h > 0 &&
            (v->fit == VARIANT_FIT_CONTAIN || v->fit == VARIANT_FIT_INSIDE)) {
                if (render_fit_size(ref_w, ref_h, v, &w, &h) < 0)
                        return -1;
                return vips_thumbnail_image(in, ret, w, "height", h, "size", VIPS_SIZE_FORCE, NULL);
        }
        switch (v->fit) {
        case VARIANT_FIT_COVER:
                switch (v->gravity) {
                case VARIANT_GRAVITY_CENTRE:
                        return vips_thumbnail_image(in, ret, w, "height", h, "crop",
                                                    VIPS_INTERESTING_CENTRE, "size", VIPS_SIZE_BOTH,
                                                    NULL);
                case VARIANT_GRAVITY_ATTENTION:
                case VARIANT_GRAVITY_ENTROPY:
                        return vips_thumbnail_image(in, ret, w, "height", h, "crop",
                                                    v->gravity == VARIANT_GRAVITY_ATTENTION
                                                            ? VIPS_INTERESTING_ATTENTION
                                                            : VIPS_INTERESTING_ENTROPY,
                                                    "size", VIPS_SIZE_BOTH, NULL);
                default:
                        return render_cover_compass(in, w, h, v->gravity, ret);
                }
        case VARIANT_FIT_CONTAIN:
                return vips_thumbnail_image(in, ret, w, "height", h, "size", VIPS_SIZE_BOTH, NULL);
        case VARIANT_FIT_INSIDE:
                return vips_thumbnail_image(in, ret, w, "height", h, "size", VIPS_SIZE_DOWN, NULL);
        case VARIANT_FIT_FILL:
                return vips_thumbnail_image(in, ret, w, "height", h, "size", VIPS_SIZE_FORCE, NULL);
        case VARIANT_FIT_NONE:
                return vips_copy(in, ret, NULL);
        default:
                vips_error("render", "unknown fit %d", (int)v->fit);
                return -1;
        }
}

bool render_fit_holds(const struct variant *v, int src_w, int src_h, int w, int h)
{
        int bw = (int)v->width, bh = (int)v->height;

        switch (v->fit) {
        case VARIANT_FIT_COVER:
        case VARIANT_FIT_FILL:
                return w == bw && h == bh;
        case VARIANT_FIT_CONTAIN:
                return w <= bw && h <= bh && (w == bw || h == bh);
        case VARIANT_FIT_INSIDE:
                return w <= bw && h <= bh && (w == bw || h == bh || (w == src_w && h == src_h));
        case VARIANT_FIT_NONE:
                return w == src_w && h == src_h;
        default:
                return false;
        }
}
