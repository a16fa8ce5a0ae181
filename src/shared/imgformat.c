/* SPDX-License-Identifier: MIT */
/*
 * imgformat.c - format names, extensions, capabilities and magic-byte identification; see
 * imgformat.h. The magic numbers are those of the formats' specifications: JPEG SOI
 * (FF D8 FF), the PNG signature, RIFF....WEBP, GIF87a/GIF89a, TIFF II*\0 / MM\0*, and the
 * ISO-BMFF "ftyp" box whose major or compatible brands say AVIF (avif, avis) or HEIF
 * (heic, heix, hevc, hevx, mif1, msf1), and JPEG XL's bare codestream (FF 0A) or its
 * container's signature box (00 00 00 0C "JXL " 0D 0A 87 0A).
 */
#include <string.h>

#include "shared/imgformat.h"
#include "shared/macro.h"

static const struct {
        const char *name;
        const char *extension;
        bool writable;
        bool alpha;
} formats[_IMAGE_FORMAT_MAX] = {
        [IMAGE_FORMAT_UNKNOWN] = { "unknown", "bin", false, false },
        [IMAGE_FORMAT_JPEG] = { "jpeg", "jpg", true, false },
        [IMAGE_FORMAT_PNG] = { "png", "png", true, true },
        [IMAGE_FORMAT_WEBP] = { "webp", "webp", true, true },
        [IMAGE_FORMAT_GIF] = { "gif", "gif", false, true },
        [IMAGE_FORMAT_TIFF] = { "tiff", "tif", false, true },
        [IMAGE_FORMAT_HEIF] = { "heif", "heic", false, true },
        [IMAGE_FORMAT_AVIF] = { "avif", "avif", true, true },
        [IMAGE_FORMAT_JXL] = { "jxl", "jxl", true, true },
};

static bool valid(enum image_format f)
{
        return f >= 0 && f < _IMAGE_FORMAT_MAX;
}

const char *image_format_name(enum image_format f)
{
        return valid(f) ? formats[f].name : "unknown";
}

enum image_format image_format_from_name(const char *name)
{
        if (!name)
                return IMAGE_FORMAT_UNKNOWN;
        if (strcmp(name, "jpg") == 0)
                return IMAGE_FORMAT_JPEG;
        for (int f = IMAGE_FORMAT_JPEG; f < _IMAGE_FORMAT_MAX; f++)
                if (strcmp(name, formats[f].name) == 0)
                        return f;
        return IMAGE_FORMAT_UNKNOWN;
}

const char *image_format_extension(enum image_format f)
{
        return valid(f) ? formats[f].extension : "bin";
}

bool image_format_writable(enum image_format f)
{
        return valid(f) && formats[f].writable;
}

bool image_format_has_alpha(enum image_format f)
{
        return valid(f) && formats[f].alpha;
}

static enum image_format sniff_ftyp(const unsigned char *p, size_t n)
{
        static const char *const avif[] = { "avif", "avis" };
        static const char *const heif[] = { "heic", "heix", "hevc", "hevx", "mif1", "msf1" };
        enum image_format found = IMAGE_FORMAT_UNKNOWN;
        size_t box;

        if (n < 16 || memcmp(p + 4, "ftyp", 4) != 0)
                return IMAGE_FORMAT_UNKNOWN;
        box = (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
        if (box < 16)
                return IMAGE_FORMAT_UNKNOWN;
        if (box > n)
                box = n;
        /* Major brand at 8, minor version at 12, compatible brands from 16. */
        for (size_t off = 8; off + 4 <= box; off += off == 8 ? 8 : 4) {
                for (size_t i = 0; i < ELEMENTSOF(avif); i++)
                        if (memcmp(p + off, avif[i], 4) == 0)
                                return IMAGE_FORMAT_AVIF;
                for (size_t i = 0; i < ELEMENTSOF(heif); i++)
                        if (memcmp(p + off, heif[i], 4) == 0)
                                found = IMAGE_FORMAT_HEIF;
        }
        return found;
}

enum image_format image_format_sniff(const void *buf, size_t n)
{
        const unsigned char *p = buf;

        if (!p)
                return IMAGE_FORMAT_UNKNOWN;
        if (n >= 3 && p[0] == 0xFF && p[1] == 0xD8 && p[2] == 0xFF)
                return IMAGE_FORMAT_JPEG;
        if (n >= 8 && memcmp(p, "\x89PNG\r\n\x1a\n", 8) == 0)
                return IMAGE_FORMAT_PNG;
        if (n >= 12 && memcmp(p, "RIFF", 4) == 0 && memcmp(p + 8, "WEBP", 4) == 0)
                return IMAGE_FORMAT_WEBP;
        if (n >= 6 && (memcmp(p, "GIF87a", 6) == 0 || memcmp(p, "GIF89a", 6) == 0))
                return IMAGE_FORMAT_GIF;
        if (n >= 4 && (memcmp(p, "II*\0", 4) == 0 || memcmp(p, "MM\0*", 4) == 0))
                return IMAGE_FORMAT_TIFF;
        if ((n >= 2 && p[0] == 0xFF && p[1] == 0x0A) ||
            (n >= 12 && memcmp(p, "\0\0\0\x0cJXL \r\n\x87\n", 12) == 0))
                return IMAGE_FORMAT_JXL;
        return sniff_ftyp(p, n < IMAGE_FORMAT_SNIFF_BYTES ? n : IMAGE_FORMAT_SNIFF_BYTES);
}
