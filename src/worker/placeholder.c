/* SPDX-License-Identifier: MIT */
/*
 * placeholder.c - what a web page shows while a variant loads (render_placeholder of
 * render.h): a BlurHash (blurhash.c) and the dominant colour, both from at most 64 x 64
 * pixels of the base, and a tiny WebP (LQIP) as a data: URI.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <vips/vips.h>

#include "shared/macro.h"
#include "worker/blurhash.h"
#include "worker/render-private.h"
#include "worker/render.h"

/*
 * The dominant colour of `pixels` (n pixels of `bands` 8-bit bands, sRGB first, alpha
 * fourth): the pixels are counted in 16 x 16 x 16 colour cells, transparent ones (alpha
 * below 128) not at all, and the mean of the fullest cell (the first of equals) wins.
 * Returns false when no pixel counted.
 */
static bool render_dominant(const uint8_t *pixels, size_t n, int bands, uint8_t ret[3])
{
        _cleanup_free_ uint32_t *cells = calloc(4096 * 4, sizeof(uint32_t));
        size_t best = 0;

        if (!cells)
                return false;
        for (size_t i = 0; i < n; i++) {
                const uint8_t *p = pixels + i * (size_t)bands;
                size_t c;

                if (bands == 4 && p[3] < 128)
                        continue;
                c = ((size_t)(p[0] >> 4) << 8 | (size_t)(p[1] >> 4) << 4 | (size_t)(p[2] >> 4)) * 4;
                cells[c]++;
                cells[c + 1] += p[0];
                cells[c + 2] += p[1];
                cells[c + 3] += p[2];
        }
        for (size_t c = 0; c < 4096; c++)
                if (cells[c * 4] > cells[best * 4])
                        best = c;
        if (cells[best * 4] == 0)
                return false;
        for (int k = 0; k < 3; k++)
                ret[k] = (uint8_t)((cells[best * 4 + 1 + k] + cells[best * 4] / 2) /
                                   cells[best * 4]);
        return true;
}

int render_placeholder(render_base *b, const uint8_t background[3], struct render_placeholder *ret,
                       struct render_error *err)
{
        _cleanup_image_ VipsImage *tiny = NULL, *small = NULL, *flat = NULL;
        _cleanup_gfree_ void *webp = NULL;
        _cleanup_gfree_ uint8_t *px = NULL, *flat_px = NULL;
        _cleanup_gfree_ char *b64 = NULL;
        struct render_placeholder p = {};
        size_t len = 0, n = 0, flat_n = 0;
        int r;

        vips_error_clear();
        /* The data URI: a WebP of at most 32 x 32, never enlarged, alpha kept. */
        if (vips_thumbnail_image(b->image, &tiny, RENDER_PLACEHOLDER_SIZE, "height",
                                 RENDER_PLACEHOLDER_SIZE, "size", VIPS_SIZE_DOWN, NULL) < 0)
                return render_fail_vips(err, -EBADMSG, "placeholder");
        if (vips_webpsave_buffer(tiny, &webp, &len, "Q", 50, "effort", 4, "strip", TRUE, NULL) < 0)
                return render_fail_vips(err, -EIO, "placeholder: encode webp");
        len = render_webp_strip(webp, len);
        if (len == 0)
                return render_fail(err, -EIO, true,
                                   "placeholder: libvips wrote a malformed RIFF container");
        b64 = g_base64_encode(webp, len);
        p.data_uri = g_strconcat("data:image/webp;base64,", b64, NULL);

        /* BlurHash and dominant colour, from at most 64 x 64 pixels. */
        if (vips_thumbnail_image(b->image, &small, 64, "height", 64, "size", VIPS_SIZE_DOWN, NULL) <
            0)
                goto fail_vips;
        px = vips_image_write_to_memory(small, &n);
        if (!px)
                goto fail_vips;
        if (!render_dominant(px, n / (size_t)small->Bands, small->Bands, p.dominant))
                memcpy(p.dominant, background, 3);

        r = vips_image_hasalpha(small) ? render_flatten(small, background, &flat)
                                       : vips_copy(small, &flat, NULL);
        if (r < 0)
                goto fail_vips;
        {
                _cleanup_image_ VipsImage *flat8 = NULL;

                if (vips_cast(flat, &flat8, VIPS_FORMAT_UCHAR, NULL) < 0)
                        goto fail_vips;
                flat_px = vips_image_write_to_memory(flat8, &flat_n);
                if (!flat_px || flat8->Bands != 3)
                        goto fail_vips;
                r = blurhash_encode(flat_px, (unsigned)flat8->Xsize, (unsigned)flat8->Ysize,
                                    (size_t)flat8->Xsize * 3, 3,
                                    flat8->Xsize >= flat8->Ysize ? 4 : 3,
                                    flat8->Xsize >= flat8->Ysize ? 3 : 4, p.blurhash);
        }
        if (r < 0) {
                g_free(p.data_uri);
                return render_fail(err, r, true, "placeholder: blurhash: %s", strerror(-r));
        }
        *ret = p;
        return 0;

fail_vips:
        g_free(p.data_uri);
        return render_fail_vips(err, -EBADMSG, "placeholder");
}

void render_placeholder_clear(struct render_placeholder *p)
{
        if (!p)
                return;
        g_free(p->data_uri);
        *p = (struct render_placeholder){};
}
