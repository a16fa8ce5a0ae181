/* SPDX-License-Identifier: MIT */
/*
 * metadata.c - metadata in and out: everything removed from a decoded base, what a variant
 * keeps (an sRGB ICC profile, the EXIF copyright) attached again before it is encoded, and
 * the EXIF and XMP chunks removed from libvips' WebP output; see render-private.h.
 *
 * Worked around here for libvips 8.14 (Debian 12): webpsave ignores "strip"
 * (render_webp_strip()), and pngsave writes an EXIF block only as it is, never one made from
 * fields (render_exif_block()).
 */
#include <stdint.h>
#include <string.h>

#include <vips/vips.h>

#include "shared/macro.h"
#include "worker/render-private.h"

void render_remove_metadata(VipsImage *im)
{
        gchar **fields = vips_image_get_fields(im);

        for (size_t i = 0; fields && fields[i]; i++)
                vips_image_remove(im, fields[i]);
        g_strfreev(fields);
        vips_image_set_int(im, VIPS_META_SEQUENTIAL, 1);
}

static uint32_t render_le32(const uint8_t *p)
{
        return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* The bytes of the RIFF chunk at p + at: its 8-byte header, its data and its padding byte. */
static size_t render_webp_chunk_size(const uint8_t *p, size_t at)
{
        size_t chunk = 8 + (size_t)render_le32(p + at + 4);

        return chunk + (chunk & 1);
}

size_t render_webp_strip(uint8_t *p, size_t len)
{
        size_t in = 12, out = 12;
        uint32_t riff;

        if (len < 12 || memcmp(p, "RIFF", 4) != 0 || memcmp(p + 8, "WEBP", 4) != 0)
                return 0;
        riff = render_le32(p + 4);
        if ((size_t)riff + 8 != len)
                return 0;
        /* Check the whole chain first, so a bad buffer is left as it was. */
        while (in + 8 <= len) {
                size_t chunk = render_webp_chunk_size(p, in);

                if (chunk > len - in)
                        return 0;
                in += chunk;
        }
        if (in != len)
                return 0;

        for (in = 12; in < len;) {
                size_t chunk = render_webp_chunk_size(p, in);

                if (memcmp(p + in, "EXIF", 4) == 0 || memcmp(p + in, "XMP ", 4) == 0) {
                        in += chunk;
                        continue;
                }
                if (memcmp(p + in, "VP8X", 4) == 0 && chunk > 8)
                        p[in + 8] &= (uint8_t) ~(0x08 | 0x04); /* EXIF and XMP flags */
                memmove(p + out, p + in, chunk);
                in += chunk;
                out += chunk;
        }
        p[4] = (uint8_t)(out - 8);
        p[5] = (uint8_t)((out - 8) >> 8);
        p[6] = (uint8_t)((out - 8) >> 16);
        p[7] = (uint8_t)((out - 8) >> 24);
        return out;
}

/*
 * Attaches to im an EXIF block ("exif-data") for a w x h image holding the copyright, as
 * libvips' own EXIF writer makes it (through a throw-away JPEG of a black w x h image).
 * Returns 0, or -1 with libvips' error set.
 */
static int render_exif_block(int w, int h, const char *copyright, VipsImage *im)
{
        _cleanup_image_ VipsImage *blk = NULL, *tagged = NULL, *back = NULL;
        _cleanup_gfree_ void *jpg = NULL;
        const void *exif = NULL;
        size_t len = 0, exif_len = 0;

        if (vips_black(&blk, w, h, NULL) < 0 ||
            vips_copy(blk, &tagged, "format", VIPS_FORMAT_UCHAR, "interpretation",
                      VIPS_INTERPRETATION_B_W, NULL) < 0)
                return -1;
        vips_image_set_string(tagged, "exif-ifd0-Copyright", copyright);
        if (vips_jpegsave_buffer(tagged, &jpg, &len, "Q", 10, "strip", FALSE, NULL) < 0 ||
            vips_jpegload_buffer(jpg, len, &back, NULL) < 0 ||
            vips_image_get_blob(back, VIPS_META_EXIF_NAME, &exif, &exif_len) < 0)
                return -1;
        vips_image_set_blob_copy(im, VIPS_META_EXIF_NAME, exif, exif_len);
        return 0;
}

int render_attach_kept(render_base *b, VipsImage *in, const struct variant *v, VipsImage **ret,
                       bool *ret_any)
{
        _cleanup_image_ VipsImage *copy = NULL;
        bool any = false;

        if (vips_copy(in, &copy, NULL) < 0)
                return -1;
        if ((v->keep & VARIANT_KEEP_ICC) && b->had_icc) {
                VipsBlob *profile = NULL;
                const void *data;
                size_t len = 0;

                if (vips_profile_load("srgb", &profile, NULL) < 0)
                        return -1;
                data = vips_area_get_data(VIPS_AREA(profile), &len, NULL, NULL, NULL);
                vips_image_set_blob_copy(copy, VIPS_META_ICC_NAME, data, len);
                vips_area_unref(VIPS_AREA(profile));
                any = true;
        }
        if ((v->keep & VARIANT_KEEP_COPYRIGHT) && b->copyright) {
                vips_image_set_string(copy, "exif-ifd0-Copyright", b->copyright);
                /* pngsave writes an EXIF block as it is, it does not make one from fields. */
                if (v->format == IMAGE_FORMAT_PNG &&
                    render_exif_block(copy->Xsize, copy->Ysize, b->copyright, copy) < 0)
                        return -1;
                any = true;
        }
        *ret = TAKE_PTR(copy);
        *ret_any = any;
        return 0;
}
