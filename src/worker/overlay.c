/* SPDX-License-Identifier: MIT */
/*
 * overlay.c - what is drawn over a resized frame: the watermark (an image file or a text)
 * and the circle mask; and the render_cache of decoded watermark images (render.h), so a
 * watermark file is decoded once per process, not once per job. See render-private.h.
 *
 * A cache entry is keyed by path and checked against the file's device, inode, size and
 * mtime on every use: a file that changed is decoded again into the same entry; when the
 * cache is full (RENDER_CACHE_MAX), the least recently used entry makes room. A watermark
 * image is decoded as a source is (sniffed, allowlisted, pixel limit from the header), but
 * its failures are transient: the configuration's file, not the job's source, is at fault.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <vips/vips.h>

#include "shared/macro.h"
#include "worker/render-private.h"
#include "worker/render.h"

struct render_cache_entry {
        char path[VARIANT_PATH_MAX];
        dev_t dev;
        ino_t ino;
        off_t size;
        struct timespec mtime;
        VipsImage *image; /* 8-bit sRGB with alpha, in memory */
        uint64_t used;    /* when last used, for eviction */
};

struct render_cache {
        struct render_cache_entry entries[RENDER_CACHE_MAX];
        size_t n;
        uint64_t clock;
        unsigned loads;
};

render_cache *render_cache_new(void)
{
        return g_try_new0(render_cache, 1);
}

render_cache *render_cache_free(render_cache *c)
{
        if (!c)
                return NULL;
        for (size_t i = 0; i < c->n; i++)
                g_object_unref(c->entries[i].image);
        g_free(c);
        return NULL;
}

unsigned render_cache_loads(const render_cache *c)
{
        return c ? c->loads : 0;
}

static bool render_same_file(const struct render_cache_entry *e, const struct stat *st)
{
        return e->dev == st->st_dev && e->ino == st->st_ino && e->size == st->st_size &&
               e->mtime.tv_sec == st->st_mtim.tv_sec && e->mtime.tv_nsec == st->st_mtim.tv_nsec;
}

/* Prefixes err's message with "watermark image PATH: ", marked transient; returns r. */
static int render_fail_watermark(struct render_error *err, int r, const char *path)
{
        char msg[sizeof(err->message)];

        memcpy(msg, err->message, sizeof(msg));
        return render_fail(err, r, false, "watermark image %s: %s", path, msg);
}

/*
 * Decodes the watermark image file at fd (path for messages) into 8-bit sRGB with alpha in
 * memory: read whole (at most VARIANT_WATERMARK_FILE_MAX bytes), format sniffed and
 * allowlisted, pixels checked against max_pixels from the header, oriented, converted, an
 * opaque alpha added where there is none. Returns 0 and *ret, or a negative errno with err
 * filled in (transient: the configuration's file, not the job's source, is at fault).
 */
static int render_watermark_load(int fd, const struct stat *st, const char *path,
                                 uint64_t max_pixels, VipsImage **ret, struct render_error *err)
{
        _cleanup_image_ VipsImage *im = NULL, *mem = NULL, *rot = NULL, *srgb = NULL, *alpha = NULL,
                                  *copy = NULL;
        _cleanup_gfree_ uint8_t *data = NULL;
        size_t len = 0;
        enum image_format f;
        uint64_t pixels;
        VipsImage *out;

        if (!S_ISREG(st->st_mode))
                return render_fail(err, -EINVAL, false, "watermark image %s: not a regular file",
                                   path);
        if (st->st_size > VARIANT_WATERMARK_FILE_MAX)
                return render_fail(err, -EFBIG, false,
                                   "watermark image %s: over the limit of %d bytes", path,
                                   VARIANT_WATERMARK_FILE_MAX);
        data = g_try_malloc((size_t)st->st_size + 1);
        if (!data)
                return render_fail(err, -ENOMEM, false, "out of memory");
        while (len <= (size_t)st->st_size) {
                ssize_t k = pread(fd, data + len, (size_t)st->st_size + 1 - len, (off_t)len);

                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        return render_fail(err, negative_errno(), false,
                                           "watermark image %s: read: %s", path, strerror(errno));
                if (k == 0)
                        break;
                len += (size_t)k;
        }
        if (len != (size_t)st->st_size)
                return render_fail(err, -EIO, false,
                                   "watermark image %s: changed while it was read", path);

        f = image_format_sniff(data, len);
        if (!render_format_allowed(f))
                return render_fail(err, -EMEDIUMTYPE, false,
                                   "watermark image %s: not a supported image", path);
        if (render_open(data, len, f, 1, 1.0, 1, &im) < 0)
                goto fail_decode;
        pixels = (uint64_t)im->Xsize * (uint64_t)im->Ysize;
        if (pixels > (uint64_t)VARIANT_DIMENSION_MAX * VARIANT_DIMENSION_MAX ||
            (max_pixels > 0 && pixels > max_pixels))
                return render_fail(err, -E2BIG, false,
                                   "watermark image %s: %dx%d is over the pixel limit", path,
                                   im->Xsize, im->Ysize);
        mem = vips_image_copy_memory(im);
        if (!mem || vips_autorot(mem, &rot, NULL) < 0 || render_to_srgb8(rot, &srgb) < 0 ||
            (!vips_image_hasalpha(srgb) && vips_bandjoin_const1(srgb, &alpha, 255.0, NULL) < 0) ||
            vips_copy(alpha ? alpha : srgb, &copy, "interpretation", VIPS_INTERPRETATION_sRGB,
                      NULL) < 0)
                goto fail_decode;
        render_remove_metadata(copy);
        out = vips_image_copy_memory(copy);
        if (!out)
                goto fail_decode;
        *ret = out;
        return 0;

fail_decode:
        return render_fail_watermark(err, render_fail_vips(err, -EBADMSG, "decode"), path);
}

/*
 * The decoded watermark image at path: from the cache when the file (device, inode, size,
 * mtime) is the one decoded before, else decoded now and cached (the least recently used
 * entry makes room). Returns 0 and a new reference in *ret, or a negative errno with err
 * filled in.
 */
static int render_cache_get(render_cache *c, const char *path, uint64_t max_pixels, VipsImage **ret,
                            struct render_error *err)
{
        _cleanup_close_ int fd = -1;
        struct render_cache_entry *slot = NULL;
        struct stat st;
        VipsImage *im = NULL;
        int r;

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0 || fstat(fd, &st) < 0)
                return render_fail(err, negative_errno(), false, "watermark image %s: %s", path,
                                   strerror(errno));
        for (size_t i = 0; i < c->n; i++) {
                struct render_cache_entry *e = &c->entries[i];

                if (strcmp(e->path, path) != 0)
                        continue;
                if (render_same_file(e, &st)) {
                        e->used = ++c->clock;
                        *ret = g_object_ref(e->image);
                        return 0;
                }
                slot = e; /* the file changed: replace its entry */
                break;
        }

        r = render_watermark_load(fd, &st, path, max_pixels, &im, err);
        if (r < 0)
                return r;
        c->loads++;
        if (!slot && c->n < RENDER_CACHE_MAX)
                slot = &c->entries[c->n++];
        else if (!slot) {
                slot = &c->entries[0];
                for (size_t i = 1; i < c->n; i++)
                        if (c->entries[i].used < slot->used)
                                slot = &c->entries[i];
        }
        if (slot->image)
                g_object_unref(slot->image);
        *slot = (struct render_cache_entry){
                .dev = st.st_dev,
                .ino = st.st_ino,
                .size = st.st_size,
                .mtime = st.st_mtim,
                .image = im,
                .used = ++c->clock,
        };
        snprintf(slot->path, sizeof slot->path, "%s", path);
        *ret = g_object_ref(im);
        return 0;
}

/* Multiplies the alpha (last band) of an 8-bit image by opacity. */
static int render_fade(VipsImage *in, double opacity, VipsImage **ret)
{
        _cleanup_image_ VipsImage *rgb = NULL, *alpha = NULL, *faded = NULL, *faded8 = NULL,
                                  *joined = NULL;

        if (opacity >= 1.0)
                return vips_copy(in, ret, NULL);
        if (vips_extract_band(in, &rgb, 0, "n", in->Bands - 1, NULL) < 0 ||
            vips_extract_band(in, &alpha, in->Bands - 1, NULL) < 0 ||
            vips_linear1(alpha, &faded, opacity, 0.5, NULL) < 0 ||
            vips_cast(faded, &faded8, VIPS_FORMAT_UCHAR, NULL) < 0 ||
            vips_bandjoin2(rgb, faded8, &joined, NULL) < 0)
                return -1;
        return vips_copy(joined, ret, "interpretation", VIPS_INTERPRETATION_sRGB, NULL);
}

/*
 * The text watermark as 8-bit sRGB with alpha: the text in its font and colour, the
 * coverage times opacity as alpha. Sized to `width` of out_w when that is set, else at the
 * font's size (at 72 dpi); in both cases no larger than max_w x max_h. Returns 0 and *ret, or
 * -1 with libvips' error set.
 */
static int render_text_overlay(const struct variant_watermark *w, int out_w, int max_w, int max_h,
                               VipsImage **ret)
{
        _cleanup_image_ VipsImage *t = NULL, *t2 = NULL, *blk = NULL, *col = NULL, *col8 = NULL,
                                  *alpha = NULL, *alpha8 = NULL, *joined = NULL;
        _cleanup_gfree_ char *markup = g_markup_escape_text(w->text, -1);
        double scale = 1.0, want;
        int dpi = 72;
        VipsImage *cur;

        if (vips_text(&t, markup, "font", w->font, "dpi", dpi, NULL) < 0)
                return -1;
        if (t->Xsize < 1 || t->Ysize < 1) {
                vips_error("render", "watermark text renders as an empty image");
                return -1;
        }
        if (w->width > 0.0) {
                want = MAX(1.0, w->width * out_w);
                scale = want / t->Xsize;
        }
        scale = MIN(scale, MIN((double)max_w / t->Xsize, (double)max_h / t->Ysize));
        cur = t;
        if (scale != 1.0) {
                /* Text scales with the resolution: render again at the size wanted. */
                dpi = MAX(1, (int)(72.0 * scale));
                if (vips_text(&t2, markup, "font", w->font, "dpi", dpi, NULL) < 0)
                        return -1;
                cur = t2;
                if (cur->Xsize > max_w || cur->Ysize > max_h) {
                        _cleanup_image_ VipsImage *fit = NULL;

                        if (vips_thumbnail_image(cur, &fit, max_w, "height", max_h, "size",
                                                 VIPS_SIZE_DOWN, NULL) < 0)
                                return -1;
                        g_object_unref(t2);
                        t2 = TAKE_PTR(fit);
                        cur = t2;
                }
        }

        if (vips_black(&blk, cur->Xsize, cur->Ysize, "bands", 3, NULL) < 0 ||
            vips_linear(blk, &col, (double[]){ 1, 1, 1 },
                        (double[]){ w->color[0], w->color[1], w->color[2] }, 3, NULL) < 0 ||
            vips_cast(col, &col8, VIPS_FORMAT_UCHAR, NULL) < 0 ||
            vips_linear1(cur, &alpha, w->opacity, 0.5, NULL) < 0 ||
            vips_cast(alpha, &alpha8, VIPS_FORMAT_UCHAR, NULL) < 0 ||
            vips_bandjoin2(col8, alpha8, &joined, NULL) < 0)
                return -1;
        return vips_copy(joined, ret, "interpretation", VIPS_INTERPRETATION_sRGB, NULL);
}

int render_watermark_overlay(render_cache *cache, const struct variant *v, uint64_t max_pixels,
                             int out_w, int out_h, VipsImage **ret, int *ret_x, int *ret_y,
                             struct render_error *err)
{
        const struct variant_watermark *w = &v->watermark;
        _cleanup_image_ VipsImage *src = NULL, *sized = NULL, *overlay = NULL;
        int m = (int)w->margin, box_w, box_h, gx, gy, r;

        if (2 * m >= out_w || 2 * m >= out_h)
                m = 0;
        box_w = out_w - 2 * m;
        box_h = out_h - 2 * m;

        if (w->kind == VARIANT_WATERMARK_IMAGE) {
                double tw, th, s;

                r = render_cache_get(cache, w->image, max_pixels, &src, err);
                if (r < 0)
                        return r;
                tw = MAX(1.0, render_floor(w->width * out_w + 0.5));
                th = MAX(1.0, render_floor(src->Ysize * tw / src->Xsize + 0.5));
                if (tw > box_w || th > box_h) {
                        s = MIN(box_w / tw, box_h / th);
                        tw = MAX(1.0, render_floor(tw * s));
                        th = MAX(1.0, render_floor(th * s));
                }
                if (vips_thumbnail_image(src, &sized, (int)tw, "height", (int)th, "size",
                                         VIPS_SIZE_FORCE, NULL) < 0 ||
                    render_fade(sized, w->opacity, &overlay) < 0)
                        return render_fail_vips(err, -EBADMSG, "watermark");
        } else {
                if (render_text_overlay(w, out_w, box_w, box_h, &overlay) < 0)
                        return render_fail_vips(err, -EBADMSG, "watermark text");
        }

        render_compass(w->position, &gx, &gy);
        *ret_x = gx == 0 ? m : gx == 2 ? out_w - m - overlay->Xsize : (out_w - overlay->Xsize) / 2;
        *ret_y = gy == 0 ? m : gy == 2 ? out_h - m - overlay->Ysize : (out_h - overlay->Ysize) / 2;
        *ret = TAKE_PTR(overlay);
        return 0;
}

int render_composite(VipsImage *in, VipsImage *overlay, int x, int y, VipsImage **ret)
{
        _cleanup_image_ VipsImage *area = NULL, *blended = NULL, *bands = NULL, *rounded = NULL,
                                  *area8 = NULL;
        VipsImage *cur;

        if (vips_extract_area(in, &area, x, y, overlay->Xsize, overlay->Ysize, NULL) < 0 ||
            vips_composite2(area, overlay, &blended, VIPS_BLEND_MODE_OVER, NULL) < 0)
                return -1;
        cur = blended;
        if (cur->Bands > in->Bands) {
                if (vips_extract_band(cur, &bands, 0, "n", in->Bands, NULL) < 0)
                        return -1;
                cur = bands;
        }
        if (vips_linear1(cur, &rounded, 1.0, 0.5, NULL) < 0 ||
            vips_cast(rounded, &area8, VIPS_FORMAT_UCHAR, NULL) < 0)
                return -1;
        return vips_insert(in, area8, ret, x, y, NULL);
}

int render_circle_mask(VipsImage *in, VipsImage **ret)
{
        _cleanup_image_ VipsImage *xy = NULL, *centred = NULL, *sq = NULL, *sum = NULL,
                                  *dist = NULL, *ramp = NULL, *mask = NULL, *rgb = NULL,
                                  *alpha = NULL, *prod = NULL, *scaled = NULL, *newalpha = NULL;
        double w = in->Xsize, h = in->Ysize;
        double r = MIN(w, h) / 2.0;
        double a2[2] = { 1.0, 1.0 }, b2[2] = { 0.5 - w / 2.0, 0.5 - h / 2.0 };
        bool has_alpha = vips_image_hasalpha(in);

        if (vips_xyz(&xy, in->Xsize, in->Ysize, NULL) < 0 ||
            vips_linear(xy, &centred, a2, b2, 2, NULL) < 0 ||
            vips_multiply(centred, centred, &sq, NULL) < 0)
                return -1;

        /* dx^2 + dy^2: the sum of the two bands. */
        {
                _cleanup_image_ VipsImage *dx2 = NULL, *dy2 = NULL;

                if (vips_extract_band(sq, &dx2, 0, NULL) < 0 ||
                    vips_extract_band(sq, &dy2, 1, NULL) < 0 || vips_add(dx2, dy2, &sum, NULL) < 0)
                        return -1;
        }
        if (vips_pow_const1(sum, &dist, 0.5, NULL) < 0 ||
            vips_linear1(dist, &ramp, -255.0, (r + 0.5) * 255.0, NULL) < 0 ||
            vips_cast(ramp, &mask, VIPS_FORMAT_UCHAR, NULL) < 0) /* clips to 0..255 */
                return -1;

        if (!has_alpha) {
                if (vips_bandjoin2(in, mask, ret, NULL) < 0)
                        return -1;
                return 0;
        }

        if (vips_extract_band(in, &rgb, 0, "n", in->Bands - 1, NULL) < 0 ||
            vips_extract_band(in, &alpha, in->Bands - 1, NULL) < 0 ||
            vips_multiply(alpha, mask, &prod, NULL) < 0 ||
            vips_linear1(prod, &scaled, 1.0 / 255.0, 0.5, NULL) < 0 ||
            vips_cast(scaled, &newalpha, VIPS_FORMAT_UCHAR, NULL) < 0 ||
            vips_bandjoin2(rgb, newalpha, ret, NULL) < 0)
                return -1;
        return 0;
}
