/* SPDX-License-Identifier: MIT */
/*
 * variant.c - names of fits, masks, gravities, chroma modes and kept metadata; what each
 * output format can do; the one check of a variant's combinations (variant_check); and the
 * JSON codec for variants sent to workers; see variant.h. variant_from_json() validates what
 * it reads as strictly as config-variant.c does, since a worker must not trust a malformed request
 * either: both end in variant_check().
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "shared/macro.h"
#include "shared/string-table.h"
#include "shared/variant.h"

static const char *const variant_fit_table[_VARIANT_FIT_MAX] = {
        [VARIANT_FIT_COVER] = "cover",   [VARIANT_FIT_CONTAIN] = "contain",
        [VARIANT_FIT_INSIDE] = "inside", [VARIANT_FIT_FILL] = "fill",
        [VARIANT_FIT_NONE] = "none",
};

static const char *const variant_mask_table[_VARIANT_MASK_MAX] = {
        [VARIANT_MASK_NONE] = "none",
        [VARIANT_MASK_CIRCLE] = "circle",
};

static const char *const variant_gravity_table[_VARIANT_GRAVITY_MAX] = {
        [VARIANT_GRAVITY_CENTRE] = "centre",
        [VARIANT_GRAVITY_NORTH] = "north",
        [VARIANT_GRAVITY_SOUTH] = "south",
        [VARIANT_GRAVITY_EAST] = "east",
        [VARIANT_GRAVITY_WEST] = "west",
        [VARIANT_GRAVITY_NORTH_EAST] = "north-east",
        [VARIANT_GRAVITY_NORTH_WEST] = "north-west",
        [VARIANT_GRAVITY_SOUTH_EAST] = "south-east",
        [VARIANT_GRAVITY_SOUTH_WEST] = "south-west",
        [VARIANT_GRAVITY_ATTENTION] = "attention",
        [VARIANT_GRAVITY_ENTROPY] = "entropy",
};

static const char *const variant_chroma_table[_VARIANT_CHROMA_MAX] = {
        [VARIANT_CHROMA_AUTO] = "auto",
        [VARIANT_CHROMA_444] = "4:4:4",
        [VARIANT_CHROMA_420] = "4:2:0",
};

static const struct {
        unsigned bit;
        const char *name;
} keep_names[] = {
        { VARIANT_KEEP_ICC, "icc" },
        { VARIANT_KEEP_COPYRIGHT, "copyright" },
};

/*
 * The named targets, DSSIM = 1 / MS-SSIM - 1 of the luma (similarity.h). Calibrated on the
 * benchmark's photos at 1600 px (scripts/bench-quality.sh; README "Quality per byte"): the
 * median JPEG quality chosen is about 66 at "good", 58 at 0.006 and 51 at 0.007; "high" and
 * "low" sit about 12 and 15 steps either side.
 */
const struct variant_target_level variant_target_levels[] = {
        { "high", 0.0035 },
        { "good", 0.005 },
        { "low", 0.0075 },
        {},
};

double variant_target_from_name(const char *name)
{
        for (size_t i = 0; name && variant_target_levels[i].name; i++)
                if (strcmp(variant_target_levels[i].name, name) == 0)
                        return variant_target_levels[i].target;
        return -1;
}

const char *variant_target_name(double t)
{
        for (size_t i = 0; variant_target_levels[i].name; i++)
                if (variant_target_levels[i].target == t)
                        return variant_target_levels[i].name;
        return NULL;
}

const char *variant_format_name(enum image_format f)
{
        if (f == VARIANT_FORMAT_SAME)
                return "same";
        if (f == VARIANT_FORMAT_BEST)
                return "best";
        return image_format_name(f);
}

bool variant_format_candidate(enum image_format f)
{
        return f == IMAGE_FORMAT_JPEG || f == IMAGE_FORMAT_WEBP || f == IMAGE_FORMAT_AVIF ||
               f == IMAGE_FORMAT_JXL;
}

void variant_init(struct variant *v)
{
        *v = (struct variant){
                .fit = VARIANT_FIT_COVER,
                .quality = 80,
                .mask = VARIANT_MASK_NONE,
                .background = { 255, 255, 255 },
                .gravity = VARIANT_GRAVITY_CENTRE,
                .effort = VARIANT_EFFORT_DEFAULT,
                .chroma = VARIANT_CHROMA_AUTO,
                .auto_encodes = VARIANT_AUTO_ENCODES_DEFAULT,
        };
}

DEFINE_STRING_TABLE_LOOKUP(variant_fit, enum variant_fit, "invalid")

DEFINE_STRING_TABLE_LOOKUP(variant_mask, enum variant_mask, "invalid")

DEFINE_STRING_TABLE_LOOKUP(variant_gravity, enum variant_gravity, "invalid")

DEFINE_STRING_TABLE_LOOKUP(variant_chroma, enum variant_chroma, "invalid")

const char *variant_keep_name(unsigned bit)
{
        for (size_t i = 0; i < ELEMENTSOF(keep_names); i++)
                if (keep_names[i].bit == bit)
                        return keep_names[i].name;
        return NULL;
}

int variant_keep_from_name(const char *name)
{
        for (size_t i = 0; name && i < ELEMENTSOF(keep_names); i++)
                if (strcmp(keep_names[i].name, name) == 0)
                        return (int)keep_names[i].bit;
        return -EINVAL;
}

bool variant_format_writable(enum image_format f)
{
        return image_format_writable(f) || f == IMAGE_FORMAT_GIF;
}

unsigned variant_format_effort_max(enum image_format f)
{
        switch (f) {
        case IMAGE_FORMAT_WEBP:
                return 6;
        case IMAGE_FORMAT_AVIF:
        case IMAGE_FORMAT_JXL:
                return 9;
        default:
                return 0;
        }
}

bool variant_format_progressive(enum image_format f)
{
        return f == IMAGE_FORMAT_JPEG || f == IMAGE_FORMAT_PNG || f == IMAGE_FORMAT_GIF;
}

bool variant_format_lossless(enum image_format f)
{
        return f == IMAGE_FORMAT_WEBP;
}

bool variant_format_chroma(enum image_format f)
{
        return f == IMAGE_FORMAT_JPEG || f == IMAGE_FORMAT_AVIF;
}

bool variant_format_keep(enum image_format f)
{
        return f == IMAGE_FORMAT_JPEG || f == IMAGE_FORMAT_PNG || f == IMAGE_FORMAT_WEBP ||
               f == IMAGE_FORMAT_AVIF;
}

bool variant_format_animated(enum image_format f)
{
        return f == IMAGE_FORMAT_WEBP || f == IMAGE_FORMAT_GIF;
}

bool variant_uses_quality(const struct variant *v)
{
        if (v->format == VARIANT_FORMAT_BEST) /* every candidate is */
                return true;
        switch (v->format) {
        case IMAGE_FORMAT_JPEG:
        case IMAGE_FORMAT_AVIF:
        case IMAGE_FORMAT_JXL:
                return true;
        case IMAGE_FORMAT_WEBP:
                return !v->lossless;
        default:
                return false;
        }
}

bool variant_size_applies(const struct variant *v)
{
        return v->fit != VARIANT_FIT_NONE;
}

bool variant_gravity_applies(const struct variant *v)
{
        return v->fit == VARIANT_FIT_COVER;
}

bool variant_mask_applies(const struct variant *v)
{
        return v->format != VARIANT_FORMAT_SAME && image_format_has_alpha(v->format);
}

bool variant_effort_applies(const struct variant *v)
{
        return v->format != VARIANT_FORMAT_SAME && variant_format_effort_max(v->format) > 0;
}

bool variant_progressive_applies(const struct variant *v)
{
        return v->format != VARIANT_FORMAT_SAME && variant_format_progressive(v->format);
}

bool variant_lossless_applies(const struct variant *v)
{
        return v->format != VARIANT_FORMAT_SAME && variant_format_lossless(v->format);
}

bool variant_chroma_applies(const struct variant *v)
{
        return v->format != VARIANT_FORMAT_SAME && variant_format_chroma(v->format);
}

/* "same" is fine: every format it can become keeps both. */
bool variant_keep_applies(const struct variant *v)
{
        return v->format == VARIANT_FORMAT_SAME || variant_format_keep(v->format);
}

bool variant_max_bytes_applies(const struct variant *v)
{
        return v->format != VARIANT_FORMAT_SAME && variant_uses_quality(v);
}

bool variant_max_bytes_strict_applies(const struct variant *v)
{
        return v->max_bytes != 0;
}

/* "same" is fine: a still source stays still, an animated one keeps its frames. */
bool variant_animated_applies(const struct variant *v)
{
        return v->format == VARIANT_FORMAT_SAME || variant_format_animated(v->format);
}

bool variant_auto_applies(const struct variant *v)
{
        return v->format != VARIANT_FORMAT_SAME && variant_uses_quality(v);
}

bool variant_candidates_applies(const struct variant *v)
{
        return v->format == VARIANT_FORMAT_BEST;
}

static json_t *watermark_to_json(const struct variant_watermark *w)
{
        json_t *j = json_pack("{s:s, s:I, s:f, s:f}", "position", variant_gravity_name(w->position),
                              "margin", (json_int_t)w->margin, "opacity", w->opacity, "width",
                              w->width);
        int r = 0;

        if (!j)
                return NULL;
        if (w->kind == VARIANT_WATERMARK_IMAGE)
                r = json_object_set_new(j, "image", json_string(w->image));
        else
                r = json_object_set_new(j, "text", json_string(w->text)) |
                    json_object_set_new(j, "font", json_string(w->font)) |
                    json_object_set_new(j, "color",
                                        json_pack("[I,I,I]", (json_int_t)w->color[0],
                                                  (json_int_t)w->color[1],
                                                  (json_int_t)w->color[2]));
        if (r < 0) {
                json_decref(j);
                return NULL;
        }
        return j;
}

json_t *variant_to_json(const struct variant *v)
{
        const char *format = variant_format_name(v->format);
        json_t *j, *keep, *candidates;

        keep = json_array();
        if (!keep)
                return NULL;
        for (size_t i = 0; i < ELEMENTSOF(keep_names); i++)
                if ((v->keep & keep_names[i].bit) &&
                    json_array_append_new(keep, json_string(keep_names[i].name)) < 0) {
                        json_decref(keep);
                        return NULL;
                }
        candidates = json_array();
        for (unsigned i = 0; candidates && i < v->n_candidates; i++)
                if (json_array_append_new(candidates,
                                          json_string(image_format_name(v->candidates[i]))) < 0) {
                        json_decref(candidates);
                        candidates = NULL;
                }
        if (!candidates) {
                json_decref(keep);
                return NULL;
        }

        j = json_pack("{s:s, s:I, s:I, s:s, s:s, s:I, s:s, s:[I,I,I], s:s, s:I, s:b, s:b, s:s, "
                      "s:o, s:I, s:b, s:b, s:b, s:f, s:I, s:o, s:I}",
                      "name", v->name, "width", (json_int_t)v->width, "height",
                      (json_int_t)v->height, "fit", variant_fit_name(v->fit), "format", format,
                      "quality", (json_int_t)v->quality, "mask", variant_mask_name(v->mask),
                      "background", (json_int_t)v->background[0], (json_int_t)v->background[1],
                      (json_int_t)v->background[2], "gravity", variant_gravity_name(v->gravity),
                      "effort", (json_int_t)v->effort, "progressive", (int)v->progressive,
                      "lossless", (int)v->lossless, "chroma", variant_chroma_name(v->chroma),
                      "keep", keep, "max_bytes", (json_int_t)v->max_bytes, "max_bytes_strict",
                      (int)v->max_bytes_strict, "animated", (int)v->animated, "quality_auto",
                      (int)v->quality_auto, "target", v->target, "auto_encodes",
                      (json_int_t)v->auto_encodes, "candidates", candidates, "best_time_limit_us",
                      (json_int_t)v->best_time_limit_usec);
        if (!j)
                return NULL;
        if (v->watermark.kind != VARIANT_WATERMARK_NONE) {
                json_t *w = watermark_to_json(&v->watermark);

                if (!w || json_object_set_new(j, "watermark", w) < 0) {
                        json_decref(j);
                        return NULL;
                }
        }
        return j;
}

_printf_(2, 3) static int fail(char **ret_error, const char *fmt, ...)
{
        va_list ap;

        if (!ret_error)
                return -EINVAL;
        va_start(ap, fmt);
        if (vasprintf(ret_error, fmt, ap) < 0)
                *ret_error = NULL;
        va_end(ap);
        return -EINVAL;
}

static const char *format_name(enum image_format f)
{
        return variant_format_name(f);
}

/* The rules of quality = "auto" and format = "best". */
static int auto_check(const struct variant *v, char **ret_error)
{
        const char *n = v->name;

        if (v->quality_auto) {
                if (!variant_auto_applies(v))
                        return fail(ret_error, "variant '%s': quality auto does not apply to %s%s",
                                    n, v->lossless ? "lossless " : "", format_name(v->format));
                if (!(v->target > 0 && v->target <= VARIANT_TARGET_MAX))
                        return fail(ret_error, "variant '%s': target out of range", n);
                if (v->auto_encodes < 1 || v->auto_encodes > VARIANT_AUTO_ENCODES_MAX)
                        return fail(ret_error, "variant '%s': auto_encodes out of range", n);
        } else if (v->target != 0 || v->auto_encodes != VARIANT_AUTO_ENCODES_DEFAULT) {
                return fail(ret_error, "variant '%s': target and auto_encodes need quality auto",
                            n);
        }
        if (!variant_candidates_applies(v)) {
                if (v->n_candidates != 0 || v->best_time_limit_usec != 0)
                        return fail(ret_error,
                                    "variant '%s': candidates and best_time_limit need format "
                                    "best",
                                    n);
                return 0;
        }
        if (!v->quality_auto)
                return fail(ret_error, "variant '%s': format best needs quality auto", n);
        if (v->n_candidates < 1 || v->n_candidates > VARIANT_CANDIDATES_MAX)
                return fail(ret_error, "variant '%s': format best needs 1 to %d candidates", n,
                            VARIANT_CANDIDATES_MAX);
        for (unsigned i = 0; i < v->n_candidates; i++) {
                if (!variant_format_candidate(v->candidates[i]))
                        return fail(ret_error, "variant '%s': %s cannot be a candidate", n,
                                    image_format_name(v->candidates[i]));
                for (unsigned k = 0; k < i; k++)
                        if (v->candidates[k] == v->candidates[i])
                                return fail(ret_error, "variant '%s': candidate %s given twice", n,
                                            image_format_name(v->candidates[i]));
        }
        if (v->best_time_limit_usec == 0 ||
            v->best_time_limit_usec > VARIANT_BEST_TIME_LIMIT_MAX_USEC)
                return fail(ret_error, "variant '%s': best_time_limit out of range", n);
        return 0;
}

/* Whether the bytes of s form valid UTF-8 (no overlong forms, surrogates or > U+10FFFF). */
static bool utf8_valid(const char *s)
{
        const unsigned char *p = (const unsigned char *)s;

        while (*p) {
                unsigned c = *p, n, cp;

                if (c < 0x80) {
                        p++;
                        continue;
                }
                if (c >= 0xC2 && c <= 0xDF)
                        n = 1, cp = c & 0x1F;
                else if (c >= 0xE0 && c <= 0xEF)
                        n = 2, cp = c & 0x0F;
                else if (c >= 0xF0 && c <= 0xF4)
                        n = 3, cp = c & 0x07;
                else
                        return false;
                for (unsigned i = 1; i <= n; i++) {
                        if ((p[i] & 0xC0) != 0x80)
                                return false;
                        cp = cp << 6 | (p[i] & 0x3F);
                }
                if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10FFFF ||
                    (cp >= 0xD800 && cp <= 0xDFFF))
                        return false;
                p += n + 1;
        }
        return true;
}

static int watermark_check(const struct variant *v, char **ret_error)
{
        const struct variant_watermark *w = &v->watermark;
        const char *n = v->name;

        switch (w->kind) {
        case VARIANT_WATERMARK_NONE:
                return 0;
        case VARIANT_WATERMARK_IMAGE:
                if (w->image[0] != '/' || strnlen(w->image, sizeof w->image) >= sizeof w->image)
                        return fail(ret_error,
                                    "variant '%s': watermark image must be an "
                                    "absolute path",
                                    n);
                if (w->text[0] || w->font[0])
                        return fail(ret_error,
                                    "variant '%s': watermark has both an image and "
                                    "text",
                                    n);
                if (!(w->width > 0.0 && w->width <= 1.0))
                        return fail(ret_error, "variant '%s': watermark width out of range", n);
                break;
        case VARIANT_WATERMARK_TEXT:
                if (w->image[0])
                        return fail(ret_error,
                                    "variant '%s': watermark has both an image and "
                                    "text",
                                    n);
                if (!w->text[0] || strnlen(w->text, sizeof w->text) >= sizeof w->text ||
                    !utf8_valid(w->text))
                        return fail(ret_error,
                                    "variant '%s': watermark text must be 1 to %d "
                                    "bytes of UTF-8",
                                    n, VARIANT_TEXT_MAX - 1);
                if (!w->font[0] || strnlen(w->font, sizeof w->font) >= sizeof w->font ||
                    !utf8_valid(w->font))
                        return fail(ret_error, "variant '%s': invalid watermark font", n);
                if (!(w->width >= 0.0 && w->width <= 1.0))
                        return fail(ret_error, "variant '%s': watermark width out of range", n);
                break;
        default:
                return fail(ret_error, "variant '%s': unknown watermark kind", n);
        }
        if (w->position < 0 || w->position >= _VARIANT_POSITION_MAX)
                return fail(ret_error, "variant '%s': invalid watermark position", n);
        if (w->margin > VARIANT_MARGIN_MAX)
                return fail(ret_error, "variant '%s': watermark margin out of range", n);
        if (!(w->opacity > 0.0 && w->opacity <= 1.0))
                return fail(ret_error, "variant '%s': watermark opacity out of range", n);
        return 0;
}

int variant_check(const struct variant *v, char **ret_error)
{
        enum image_format f = v->format;
        bool same = f == VARIANT_FORMAT_SAME || f == VARIANT_FORMAT_BEST;
        const char *n = v->name;
        size_t len = strnlen(v->name, sizeof v->name);
        int r;

        if (len == 0 || len >= sizeof v->name)
                return fail(ret_error, "invalid variant name");
        if (v->fit < 0 || v->fit >= _VARIANT_FIT_MAX)
                return fail(ret_error, "variant '%s': unknown fit", n);
        if (v->width > VARIANT_DIMENSION_MAX || v->height > VARIANT_DIMENSION_MAX)
                return fail(ret_error, "variant '%s': dimensions out of range", n);
        if (variant_size_applies(v) && (v->width == 0 || v->height == 0))
                return fail(ret_error, "variant '%s': width and height are required", n);
        if (!variant_size_applies(v) && (v->width != 0 || v->height != 0))
                return fail(ret_error, "variant '%s': fit none takes no width or height", n);
        if (!same && !variant_format_writable(f))
                return fail(ret_error, "variant '%s': cannot write format %s", n,
                            image_format_name(f));
        if (v->quality < 1 || v->quality > 100)
                return fail(ret_error, "variant '%s': quality out of range", n);
        if (v->mask < 0 || v->mask >= _VARIANT_MASK_MAX)
                return fail(ret_error, "variant '%s': unknown mask", n);
        if (v->mask != VARIANT_MASK_NONE && !variant_mask_applies(v))
                return fail(ret_error, "variant '%s': mask needs a format with alpha, not %s", n,
                            format_name(f));
        if (v->gravity < 0 || v->gravity >= _VARIANT_GRAVITY_MAX)
                return fail(ret_error, "variant '%s': unknown gravity", n);
        if (v->gravity != VARIANT_GRAVITY_CENTRE && !variant_gravity_applies(v))
                return fail(ret_error, "variant '%s': gravity needs fit cover, not %s", n,
                            variant_fit_name(v->fit));
        if (variant_effort_applies(v) ? v->effort > variant_format_effort_max(f)
                                      : v->effort != VARIANT_EFFORT_DEFAULT)
                return fail(ret_error, "variant '%s': effort %u does not apply to %s", n, v->effort,
                            format_name(f));
        if (v->progressive && !variant_progressive_applies(v))
                return fail(ret_error, "variant '%s': progressive does not apply to %s", n,
                            format_name(f));
        if (v->lossless && !variant_lossless_applies(v))
                return fail(ret_error, "variant '%s': lossless does not apply to %s", n,
                            format_name(f));
        if (v->chroma < 0 || v->chroma >= _VARIANT_CHROMA_MAX)
                return fail(ret_error, "variant '%s': unknown chroma", n);
        if (v->chroma != VARIANT_CHROMA_AUTO && !variant_chroma_applies(v))
                return fail(ret_error, "variant '%s': chroma does not apply to %s", n,
                            format_name(f));
        if (v->keep & ~(unsigned)_VARIANT_KEEP_ALL)
                return fail(ret_error, "variant '%s': unknown metadata to keep", n);
        if (v->keep && !variant_keep_applies(v))
                return fail(ret_error, "variant '%s': keep does not apply to %s", n,
                            format_name(f));
        if (v->max_bytes != 0) {
                if (v->max_bytes < VARIANT_MAX_BYTES_MIN)
                        return fail(ret_error, "variant '%s': max_bytes below %d", n,
                                    VARIANT_MAX_BYTES_MIN);
                if (!variant_max_bytes_applies(v))
                        return fail(ret_error, "variant '%s': max_bytes does not apply to %s%s", n,
                                    v->lossless ? "lossless " : "", format_name(f));
        }
        if (v->max_bytes_strict && !variant_max_bytes_strict_applies(v))
                return fail(ret_error, "variant '%s': max_bytes_strict without max_bytes", n);
        r = auto_check(v, ret_error);
        if (r < 0)
                return r;
        /*
         * animated is not checked against the format: "same" resolves to a format without
         * frames for still sources (a JPEG stays a JPEG), and there it means the first frame.
         * The configuration refuses it with an explicit format that cannot animate.
         */
        return watermark_check(v, ret_error);
}

/* Copies a string member into a fixed buffer; false if it does not fit. */
static bool copy_string(char *dst, size_t size, const char *src)
{
        size_t n = strlen(src);

        if (n >= size)
                return false;
        memcpy(dst, src, n + 1);
        return true;
}

static int watermark_from_json(const json_t *j, const char *name, struct variant_watermark *w,
                               char **ret_error)
{
        const char *image = NULL, *text = NULL, *font = NULL, *position;
        json_int_t margin, c[3] = { -1, -1, -1 };
        json_t *color = NULL;
        json_error_t jerr;
        int r;

        if (json_unpack_ex((json_t *)j, &jerr, JSON_STRICT,
                           "{s?s, s?s, s?s, s?o, s:s, s:I, s:F, s:F}", "image", &image, "text",
                           &text, "font", &font, "color", &color, "position", &position, "margin",
                           &margin, "opacity", &w->opacity, "width", &w->width) < 0)
                return fail(ret_error, "variant '%s': malformed watermark: %s", name, jerr.text);
        if (image && !text && !font && !color) {
                w->kind = VARIANT_WATERMARK_IMAGE;
                if (!copy_string(w->image, sizeof w->image, image))
                        return fail(ret_error, "variant '%s': watermark image path too long", name);
        } else if (!image && text && font && color) {
                w->kind = VARIANT_WATERMARK_TEXT;
                if (!copy_string(w->text, sizeof w->text, text) ||
                    !copy_string(w->font, sizeof w->font, font))
                        return fail(ret_error, "variant '%s': watermark text or font too long",
                                    name);
                if (json_unpack_ex(color, &jerr, JSON_STRICT, "[III]", &c[0], &c[1], &c[2]) < 0)
                        return fail(ret_error, "variant '%s': malformed watermark color: %s", name,
                                    jerr.text);
                for (int i = 0; i < 3; i++) {
                        if (c[i] < 0 || c[i] > 255)
                                return fail(ret_error, "variant '%s': watermark color out of range",
                                            name);
                        w->color[i] = (uint8_t)c[i];
                }
        } else {
                return fail(ret_error,
                            "variant '%s': a watermark has either an image or text, font and "
                            "color",
                            name);
        }
        r = variant_gravity_from_name(position);
        if (r < 0 || r >= _VARIANT_POSITION_MAX)
                return fail(ret_error, "variant '%s': unknown watermark position '%s'", name,
                            position);
        w->position = r;
        if (margin < 0 || margin > VARIANT_MARGIN_MAX)
                return fail(ret_error, "variant '%s': watermark margin out of range", name);
        w->margin = (unsigned)margin;
        return 0;
}

int variant_from_json(const json_t *j, struct variant *ret, char **ret_error)
{
        const char *name, *fit, *format, *mask, *gravity, *chroma;
        json_int_t w, h, q, bg[3], effort, max_bytes, auto_encodes, best_time;
        int progressive, lossless, strict, animated, quality_auto;
        json_t *keep, *watermark = NULL, *candidates;
        double target;
        json_error_t jerr;
        struct variant v;
        size_t i;
        json_t *k;
        int r;

        variant_init(&v);
        if (json_unpack_ex((json_t *)j, &jerr, JSON_STRICT,
                           "{s:s, s:I, s:I, s:s, s:s, s:I, s:s, s:[III], s:s, s:I, s:b, s:b, s:s, "
                           "s:o, s:I, s:b, s:b, s:b, s:F, s:I, s:o, s:I, s?o}",
                           "name", &name, "width", &w, "height", &h, "fit", &fit, "format", &format,
                           "quality", &q, "mask", &mask, "background", &bg[0], &bg[1], &bg[2],
                           "gravity", &gravity, "effort", &effort, "progressive", &progressive,
                           "lossless", &lossless, "chroma", &chroma, "keep", &keep, "max_bytes",
                           &max_bytes, "max_bytes_strict", &strict, "animated", &animated,
                           "quality_auto", &quality_auto, "target", &target, "auto_encodes",
                           &auto_encodes, "candidates", &candidates, "best_time_limit_us",
                           &best_time, "watermark", &watermark) < 0)
                return fail(ret_error, "malformed variant: %s", jerr.text);

        if (!copy_string(v.name, sizeof v.name, name) || v.name[0] == '\0')
                return fail(ret_error, "invalid variant name '%s'", name);
        if (w < 0 || h < 0 || w > VARIANT_DIMENSION_MAX || h > VARIANT_DIMENSION_MAX)
                return fail(ret_error, "variant '%s': dimensions out of range", name);
        v.width = (unsigned)w;
        v.height = (unsigned)h;
        r = variant_fit_from_name(fit);
        if (r < 0)
                return fail(ret_error, "unknown fit '%s'", fit);
        v.fit = r;
        if (strcmp(format, "same") == 0)
                v.format = VARIANT_FORMAT_SAME;
        else if (strcmp(format, "best") == 0)
                v.format = VARIANT_FORMAT_BEST;
        else if (variant_format_writable(image_format_from_name(format)))
                v.format = image_format_from_name(format);
        else
                return fail(ret_error, "unknown output format '%s'", format);
        if (q < 1 || q > 100)
                return fail(ret_error, "variant '%s': quality out of range", name);
        v.quality = (unsigned)q;
        r = variant_mask_from_name(mask);
        if (r < 0)
                return fail(ret_error, "unknown mask '%s'", mask);
        v.mask = r;
        for (i = 0; i < 3; i++) {
                if (bg[i] < 0 || bg[i] > 255)
                        return fail(ret_error, "variant '%s': background out of range", name);
                v.background[i] = (uint8_t)bg[i];
        }
        r = variant_gravity_from_name(gravity);
        if (r < 0)
                return fail(ret_error, "unknown gravity '%s'", gravity);
        v.gravity = r;
        if (effort < 0 || effort > 100)
                return fail(ret_error, "variant '%s': effort out of range", name);
        v.effort = (unsigned)effort;
        v.progressive = progressive;
        v.lossless = lossless;
        r = variant_chroma_from_name(chroma);
        if (r < 0)
                return fail(ret_error, "unknown chroma '%s'", chroma);
        v.chroma = r;
        if (!json_is_array(keep))
                return fail(ret_error, "variant '%s': keep must be an array", name);
        json_array_foreach(keep, i, k)
        {
                r = variant_keep_from_name(json_string_value(k));
                if (r < 0 || (v.keep & (unsigned)r))
                        return fail(ret_error, "variant '%s': invalid keep entry", name);
                v.keep |= (unsigned)r;
        }
        if (max_bytes < 0)
                return fail(ret_error, "variant '%s': max_bytes out of range", name);
        v.max_bytes = (uint64_t)max_bytes;
        v.max_bytes_strict = strict;
        v.animated = animated;
        v.quality_auto = quality_auto;
        v.target = target;
        if (auto_encodes < 0 || auto_encodes > VARIANT_AUTO_ENCODES_MAX)
                return fail(ret_error, "variant '%s': auto_encodes out of range", name);
        v.auto_encodes = (unsigned)auto_encodes;
        if (!json_is_array(candidates) || json_array_size(candidates) > VARIANT_CANDIDATES_MAX)
                return fail(ret_error, "variant '%s': candidates must be an array of at most %d",
                            name, VARIANT_CANDIDATES_MAX);
        json_array_foreach(candidates, i, k)
        {
                enum image_format c = image_format_from_name(json_string_value(k));

                if (!variant_format_candidate(c))
                        return fail(ret_error, "variant '%s': invalid candidate", name);
                v.candidates[v.n_candidates++] = c;
        }
        if (best_time < 0 || (uint64_t)best_time > VARIANT_BEST_TIME_LIMIT_MAX_USEC)
                return fail(ret_error, "variant '%s': best_time_limit out of range", name);
        v.best_time_limit_usec = (uint64_t)best_time;
        if (watermark) {
                r = watermark_from_json(watermark, v.name, &v.watermark, ret_error);
                if (r < 0)
                        return r;
        }

        r = variant_check(&v, ret_error);
        if (r < 0)
                return r;
        *ret = v;
        return 0;
}
