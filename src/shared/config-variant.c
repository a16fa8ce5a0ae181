/* SPDX-License-Identifier: MIT */
/*
 * config-variant.c - a pipeline's variants in imgd.conf: config_parse_variant(); see
 * config-private.h.
 *
 * A variant's settings depend on one another (width on fit, mask and the encoder settings on
 * the format), so they are read in that order, not the table's (config_schema_variant, which
 * gives the names a variant accepts). Whether a setting applies is a rule of variant.h
 * (variant_*_applies()), the one variant_check() also uses; here each refusal says why, in
 * the file's words, and names the formats a setting applies to. variant_check() runs last,
 * on what the workers will be given.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shared/config-private.h"
#include "shared/imgformat.h"
#include "shared/macro.h"
#include "shared/variant.h"

static bool variant_name_valid(const char *name)
{
        size_t n = strlen(name);

        if (n < 1 || n >= VARIANT_NAME_MAX)
                return false;
        return strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") ==
               n;
}

/* "a, b, c": the names of names[0..n), into buf. */
static const char *name_list(char *buf, size_t size, const char *(*name)(int), int first, int n)
{
        size_t len = 0;

        buf[0] = '\0';
        for (int i = first; i < n && len < size; i++)
                len += (size_t)snprintf(buf + len, size - len, "%s%s", i > first ? ", " : "",
                                        name(i));
        return buf;
}

/* "cover, contain, inside, fill, none" and the like, into buf. */
static const char *fit_list(char *buf, size_t size)
{
        return name_list(buf, size, config_fit_name, 0, _VARIANT_FIT_MAX);
}

static const char *mask_list(char *buf, size_t size)
{
        return name_list(buf, size, config_mask_name, 0, _VARIANT_MASK_MAX);
}

static bool format_alpha_writable(enum image_format f)
{
        return variant_format_writable(f) && image_format_has_alpha(f);
}

static bool format_effort(enum image_format f)
{
        return variant_format_effort_max(f) > 0;
}

static bool format_lossy(enum image_format f)
{
        struct variant v = { .format = f };

        return variant_uses_quality(&v);
}

/*
 * The output formats for which pred() holds, in the order the documentation lists them,
 * and "same" if `same`: "jpeg, webp, png, avif, gif, same".
 */
static const char *format_list(char *buf, size_t size, bool (*pred)(enum image_format), bool same)
{
        static const enum image_format order[] = { IMAGE_FORMAT_JPEG, IMAGE_FORMAT_WEBP,
                                                   IMAGE_FORMAT_PNG,  IMAGE_FORMAT_AVIF,
                                                   IMAGE_FORMAT_JXL,  IMAGE_FORMAT_GIF };
        size_t n = 0;

        buf[0] = '\0';
        for (size_t i = 0; i < ELEMENTSOF(order) && n < size; i++) {
                if (!pred(order[i]))
                        continue;
                n += (size_t)snprintf(buf + n, size - n, "%s%s", n ? ", " : "",
                                      image_format_name(order[i]));
        }
        if (same && n < size)
                snprintf(buf + n, size - n, "%ssame", n ? ", " : "");
        return buf;
}

static const char *format_name(enum image_format f)
{
        return variant_format_name(f);
}

/*
 * Fails unless the option `key` (set at s) applies to v's format (`applies`, a variant rule
 * of variant.h); the message lists the formats for which pred() holds.
 */
static int check_option_format(struct parser *p, const config_setting_t *s, const char *prefix,
                               const char *key, const struct variant *v, bool applies,
                               bool (*pred)(enum image_format))
{
        char list[128];

        if (applies)
                return 0;
        return config_fail(p, s, -EINVAL, "%s'%s' applies to %s only, not %s%s", prefix, key,
                           format_list(list, sizeof list, pred, false), format_name(v->format),
                           v->format == VARIANT_FORMAT_SAME ? " (name the output format)" : "");
}

/* A number in (0, 1] (or [0, 1] when zero_ok); 0 if absent. */
static int get_fraction(struct parser *p, const config_setting_t *group, const char *key,
                        const char *prefix, const char *what, double *ret)
{
        const config_setting_t *s = NULL;
        double v = 0;
        int r;

        r = config_get_number(p, group, key, prefix, &s, &v);
        if (r <= 0)
                return r;
        if (!(v > 0.0 && v <= 1.0))
                return config_fail(p, s, -EINVAL,
                                   "%s'%s' must be more than 0 and at most 1%s, not %g", prefix,
                                   key, what, v);
        *ret = v;
        return 1;
}

/* Reads watermark = { ... } of a variant into v->watermark; 0 if absent. */
static int parse_watermark(struct parser *p, const config_setting_t *variant, const char *prefix,
                           const char *where, struct variant *v)
{
        const config_setting_t *s = config_setting_get_member(variant, "watermark");
        const config_setting_t *image_s = NULL, *text_s = NULL, *font_s = NULL, *pos_s = NULL;
        _cleanup_free_ char *wprefix = NULL, *in = NULL;
        struct variant_watermark w = {
                .position = VARIANT_GRAVITY_SOUTH_EAST,
                .margin = 16,
                .opacity = 1.0,
        };
        const char *image = NULL, *text = NULL, *font = NULL, *position = NULL;
        long long margin = 0;
        char list[192];
        int r, has_image, has_text;

        if (!s)
                return 0;
        if (!config_setting_is_group(s))
                return config_fail(
                        p, s, -EINVAL,
                        "%s'watermark' must be a group: watermark = { image = \"...\"; } or "
                        "watermark = { text = \"...\"; }",
                        prefix);
        wprefix = config_strdup_printf("%swatermark: ", prefix);
        in = config_strdup_printf(" in the watermark of %s", where);
        if (!wprefix || !in)
                return config_oom(p);
        r = config_check_keys(p, s, config_schema_watermark, prefix, in);
        if (r < 0)
                return r;

        has_image = config_get_string(p, s, "image", wprefix, &image_s, &image);
        if (has_image < 0)
                return has_image;
        has_text = config_get_string(p, s, "text", wprefix, &text_s, &text);
        if (has_text < 0)
                return has_text;
        if (has_image && has_text)
                return config_fail(p, text_s, -EINVAL, "%s'image' and 'text' cannot both be set",
                                   wprefix);
        if (!has_image && !has_text)
                return config_fail(p, s, -EINVAL, "%s'image' or 'text' is required", wprefix);

        if (has_image) {
                w.kind = VARIANT_WATERMARK_IMAGE;
                w.width = 0.25;
                if (image[0] != '/')
                        return config_fail(p, image_s, -EINVAL,
                                           "%s'image' must be an absolute path, not \"%s\"",
                                           wprefix, image);
                if (strlen(image) >= sizeof w.image)
                        return config_fail(p, image_s, -EINVAL,
                                           "%s'image' path is too long (at most %d "
                                           "bytes)",
                                           wprefix, VARIANT_PATH_MAX - 1);
                strcpy(w.image, image);
                if (config_setting_get_member(s, "font"))
                        return config_fail(p, config_setting_get_member(s, "font"), -EINVAL,
                                           "%s'font' applies to text watermarks only", wprefix);
                if (config_setting_get_member(s, "color"))
                        return config_fail(p, config_setting_get_member(s, "color"), -EINVAL,
                                           "%s'color' applies to text watermarks only", wprefix);
        } else {
                w.kind = VARIANT_WATERMARK_TEXT;
                if (text[0] == '\0' || strlen(text) >= sizeof w.text)
                        return config_fail(p, text_s, -EINVAL,
                                           "%s'text' must be 1 to %d bytes long", wprefix,
                                           VARIANT_TEXT_MAX - 1);
                strcpy(w.text, text);
                r = config_get_string(p, s, "font", wprefix, &font_s, &font);
                if (r < 0)
                        return r;
                if (r == 0)
                        font = "sans 24";
                if (font[0] == '\0' || strlen(font) >= sizeof w.font)
                        return config_fail(
                                p, font_s, -EINVAL,
                                "%s'font' must be a font description such as \"sans bold "
                                "24\" (at most %d bytes)",
                                wprefix, VARIANT_FONT_MAX - 1);
                strcpy(w.font, font);
                memset(w.color, 255, sizeof w.color);
                r = config_get_colour(p, s, "color", wprefix, w.color);
                if (r < 0)
                        return r;
        }

        r = config_get_string(p, s, "position", wprefix, &pos_s, &position);
        if (r < 0)
                return r;
        if (r > 0) {
                r = variant_gravity_from_name(position);
                if (r < 0 || r >= _VARIANT_POSITION_MAX)
                        return config_fail(p, pos_s, -EINVAL,
                                           "%sposition must be one of %s, not \"%s\"", wprefix,
                                           name_list(list, sizeof list, config_gravity_name, 0,
                                                     _VARIANT_POSITION_MAX),
                                           position);
                w.position = r;
        }
        r = config_get_int_range(p, s, "margin", wprefix, 0, VARIANT_MARGIN_MAX, &margin);
        if (r < 0)
                return r;
        if (r > 0)
                w.margin = (unsigned)margin;
        r = get_fraction(p, s, "opacity", wprefix, "", &w.opacity);
        if (r < 0)
                return r;
        r = get_fraction(p, s, "width", wprefix, " (a fraction of the output's width)", &w.width);
        if (r < 0)
                return r;

        v->watermark = w;
        return 0;
}

/* Reads keep = [ "icc", "copyright" ] into v->keep. */
static int parse_keep(struct parser *p, const config_setting_t *variant, const char *prefix,
                      struct variant *v)
{
        const config_setting_t *s = config_setting_get_member(variant, "keep");
        int n;

        if (!s)
                return 0;
        if (!config_setting_is_array(s) && !config_setting_is_list(s))
                return config_fail(
                        p, s, -EINVAL,
                        "%s'keep' must be a list of names: keep = [ \"icc\", \"copyright\" ];",
                        prefix);
        n = config_setting_length(s);
        for (int i = 0; i < n; i++) {
                const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
                const char *name = config_setting_type(e) == CONFIG_TYPE_STRING
                                           ? config_setting_get_string(e)
                                           : NULL;
                int bit = variant_keep_from_name(name);

                if (bit < 0)
                        return config_fail(
                                p, e, -EINVAL,
                                "%s'keep' entries must be \"icc\" or \"copyright\", not %s%s%s",
                                prefix, name ? "\"" : "", name ? name : "a non-string",
                                name ? "\"" : "");
                if (v->keep & (unsigned)bit)
                        return config_fail(p, e, -EINVAL, "%s'keep' lists \"%s\" twice", prefix,
                                           name);
                v->keep |= (unsigned)bit;
        }
        if (v->keep)
                return check_option_format(p, s, prefix, "keep", v, variant_keep_applies(v),
                                           variant_format_keep);
        return 0;
}

/* "high" (0.0025), "good" (0.005), "low" (0.01), into buf. */
static const char *target_list(char *buf, size_t size)
{
        size_t n = 0;

        buf[0] = '\0';
        for (size_t i = 0; variant_target_levels[i].name && n < size; i++)
                n += (size_t)snprintf(buf + n, size - n, "%s\"%s\" (%g)", i ? ", " : "",
                                      variant_target_levels[i].name,
                                      variant_target_levels[i].target);
        return buf;
}

/*
 * quality = "auto" or 1..100 (format "best" implies "auto" and takes no number); with auto,
 * target (a DSSIM number or a level's name) and auto_encodes; with format "best",
 * candidates and best_time_limit_ms.
 */
static int parse_auto(struct parser *p, const config_setting_t *s, const char *prefix,
                      struct variant *v)
{
        static const enum image_format default_candidates[] = { IMAGE_FORMAT_AVIF,
                                                                IMAGE_FORMAT_WEBP,
                                                                IMAGE_FORMAT_JPEG };
        const config_setting_t *q = config_setting_get_member(s, "quality"), *set = NULL;
        long long quality = 80, n = 0;
        double target = 0;
        char list[128];
        int r;

        if (q && config_setting_type(q) == CONFIG_TYPE_STRING) {
                if (strcmp(config_setting_get_string(q), "auto") != 0)
                        return config_fail(p, q, -EINVAL,
                                           "%s'quality' must be 1 to 100 or \"auto\", not \"%s\"",
                                           prefix, config_setting_get_string(q));
                if (!variant_auto_applies(v))
                        return config_fail(
                                p, q, -EINVAL,
                                "%squality = \"auto\" needs a format encoded with a quality "
                                "(%s, best), not %s%s",
                                prefix, format_list(list, sizeof list, format_lossy, false),
                                v->lossless ? "lossless " : "", format_name(v->format));
                v->quality_auto = true;
        } else {
                r = config_get_int_range(p, s, "quality", prefix, 1, 100, &quality);
                if (r < 0)
                        return r;
                if (r > 0 && v->format == VARIANT_FORMAT_BEST)
                        return config_fail(p, q, -EINVAL,
                                           "%sformat = \"best\" searches the quality of each "
                                           "candidate: write quality = \"auto\" or leave it out",
                                           prefix);
                v->quality = (unsigned)quality;
                v->quality_auto = v->format == VARIANT_FORMAT_BEST;
        }

        set = config_setting_get_member(s, "target");
        if (set && config_setting_type(set) == CONFIG_TYPE_STRING) {
                target = variant_target_from_name(config_setting_get_string(set));
                if (target < 0)
                        return config_fail(p, set, -EINVAL,
                                           "%s'target' must be a DSSIM above 0 and at most %g, or "
                                           "one of %s, not \"%s\"",
                                           prefix, VARIANT_TARGET_MAX,
                                           target_list(list, sizeof list),
                                           config_setting_get_string(set));
        } else if (set) {
                r = config_get_number(p, s, "target", prefix, NULL, &target);
                if (r < 0)
                        return r;
                if (!(target > 0 && target <= VARIANT_TARGET_MAX))
                        return config_fail(p, set, -EINVAL,
                                           "%s'target' must be a DSSIM above 0 and at most %g, or "
                                           "one of %s, not %g",
                                           prefix, VARIANT_TARGET_MAX,
                                           target_list(list, sizeof list), target);
        }
        if (set && !v->quality_auto)
                return config_fail(p, set, -EINVAL, "%s'target' needs quality = \"auto\"", prefix);
        if (v->quality_auto)
                v->target = set ? target : variant_target_from_name(VARIANT_TARGET_DEFAULT_LEVEL);

        r = config_get_int(p, s, "auto_encodes", prefix, &set, &n);
        if (r < 0)
                return r;
        if (r > 0) {
                if (!v->quality_auto)
                        return config_fail(p, set, -EINVAL,
                                           "%s'auto_encodes' needs quality = \"auto\"", prefix);
                if (n < 1 || n > VARIANT_AUTO_ENCODES_MAX)
                        return config_fail(p, set, -EINVAL,
                                           "%s'auto_encodes' must be between 1 and %d, not %lld",
                                           prefix, VARIANT_AUTO_ENCODES_MAX, n);
                v->auto_encodes = (unsigned)n;
        }

        set = config_setting_get_member(s, "candidates");
        if (set && !variant_candidates_applies(v))
                return config_fail(p, set, -EINVAL, "%s'candidates' needs format = \"best\"",
                                   prefix);
        if (set) {
                if (!config_setting_is_array(set) && !config_setting_is_list(set))
                        return config_fail(p, set, -EINVAL,
                                           "%s'candidates' must be a list of formats: "
                                           "candidates = [ \"avif\", \"webp\", \"jpeg\" ];",
                                           prefix);
                n = config_setting_length(set);
                if (n < 1 || n > VARIANT_CANDIDATES_MAX)
                        return config_fail(p, set, -EINVAL,
                                           "%s'candidates' must list 1 to %d formats, not %lld",
                                           prefix, VARIANT_CANDIDATES_MAX, n);
                for (int i = 0; i < n; i++) {
                        const config_setting_t *e = config_setting_get_elem(set, (unsigned)i);
                        const char *name = config_setting_type(e) == CONFIG_TYPE_STRING
                                                   ? config_setting_get_string(e)
                                                   : NULL;
                        enum image_format f = image_format_from_name(name);

                        if (!variant_format_candidate(f))
                                return config_fail(p, e, -EINVAL,
                                                   "%s'candidates' entries must be formats "
                                                   "encoded with a quality (jpeg, webp, avif, "
                                                   "jxl), not %s%s%s",
                                                   prefix, name ? "\"" : "",
                                                   name ? name : "a non-string", name ? "\"" : "");
                        for (unsigned k = 0; k < v->n_candidates; k++)
                                if (v->candidates[k] == f)
                                        return config_fail(p, e, -EINVAL,
                                                           "%s'candidates' lists \"%s\" twice",
                                                           prefix, name);
                        v->candidates[v->n_candidates++] = f;
                }
        } else if (variant_candidates_applies(v)) {
                for (size_t i = 0; i < ELEMENTSOF(default_candidates); i++)
                        v->candidates[v->n_candidates++] = default_candidates[i];
        }

        r = config_get_int(p, s, "best_time_limit_ms", prefix, &set, &n);
        if (r < 0)
                return r;
        if (r > 0) {
                if (!variant_candidates_applies(v))
                        return config_fail(p, set, -EINVAL,
                                           "%s'best_time_limit_ms' needs format = \"best\"",
                                           prefix);
                if (n < 1 || (uint64_t)n > VARIANT_BEST_TIME_LIMIT_MAX_USEC / 1000)
                        return config_fail(p, set, -EINVAL,
                                           "%s'best_time_limit_ms' must be between 1 and %llu, "
                                           "not %lld",
                                           prefix, VARIANT_BEST_TIME_LIMIT_MAX_USEC / 1000, n);
                v->best_time_limit_usec = (uint64_t)n * 1000;
        } else if (variant_candidates_applies(v)) {
                v->best_time_limit_usec = VARIANT_BEST_TIME_LIMIT_DEFAULT_USEC;
        }
        return 0;
}

/* The encoder settings of a variant: effort, progressive, lossless, chroma, max_bytes. */
static int parse_encoder(struct parser *p, const config_setting_t *s, const char *prefix,
                         struct variant *v)
{
        const config_setting_t *set = NULL;
        const char *chroma = NULL;
        long long effort = 0, max_bytes = 0;
        char list[128];
        int r;

        r = config_get_int(p, s, "effort", prefix, &set, &effort);
        if (r < 0)
                return r;
        if (r > 0) {
                unsigned max =
                        v->format == VARIANT_FORMAT_SAME ? 0 : variant_format_effort_max(v->format);

                r = check_option_format(p, set, prefix, "effort", v, variant_effort_applies(v),
                                        format_effort);
                if (r < 0)
                        return r;
                if (effort < 0 || effort > max)
                        return config_fail(p, set, -EINVAL,
                                           "%s'effort' must be between 0 and %u for %s, not %lld",
                                           prefix, max, image_format_name(v->format), effort);
                v->effort = (unsigned)effort;
        }

        set = config_setting_get_member(s, "progressive");
        r = config_get_bool(p, s, "progressive", prefix, &v->progressive);
        if (r < 0)
                return r;
        if (r > 0 && v->progressive) {
                r = check_option_format(p, set, prefix, "progressive", v,
                                        variant_progressive_applies(v), variant_format_progressive);
                if (r < 0)
                        return r;
        }

        set = config_setting_get_member(s, "lossless");
        r = config_get_bool(p, s, "lossless", prefix, &v->lossless);
        if (r < 0)
                return r;
        if (r > 0 && v->lossless) {
                r = check_option_format(p, set, prefix, "lossless", v, variant_lossless_applies(v),
                                        variant_format_lossless);
                if (r < 0)
                        return r;
                if (v->quality_auto)
                        return config_fail(p, set, -EINVAL,
                                           "%s'lossless' has no quality to search: it does not go "
                                           "with quality = \"auto\"",
                                           prefix);
        }

        r = config_get_string(p, s, "chroma", prefix, &set, &chroma);
        if (r < 0)
                return r;
        if (r > 0) {
                r = variant_chroma_from_name(chroma);
                if (r < 0)
                        return config_fail(p, set, -EINVAL,
                                           "%schroma must be one of %s, not \"%s\"", prefix,
                                           name_list(list, sizeof list, config_chroma_name, 0,
                                                     _VARIANT_CHROMA_MAX),
                                           chroma);
                v->chroma = r;
                r = check_option_format(p, set, prefix, "chroma", v, variant_chroma_applies(v),
                                        variant_format_chroma);
                if (r < 0)
                        return r;
        }

        r = config_get_int(p, s, "max_bytes", prefix, &set, &max_bytes);
        if (r < 0)
                return r;
        if (r > 0) {
                if (max_bytes < VARIANT_MAX_BYTES_MIN)
                        return config_fail(p, set, -EINVAL,
                                           "%s'max_bytes' must be at least %d, not %lld", prefix,
                                           VARIANT_MAX_BYTES_MIN, max_bytes);
                if (!variant_max_bytes_applies(v))
                        return config_fail(
                                p, set, -EINVAL,
                                "%s'max_bytes' needs a format encoded with a quality (%s), "
                                "not %s%s",
                                prefix, format_list(list, sizeof list, format_lossy, false),
                                v->lossless ? "lossless " : "", format_name(v->format));
                v->max_bytes = (uint64_t)max_bytes;
        }
        set = config_setting_get_member(s, "max_bytes_strict");
        r = config_get_bool(p, s, "max_bytes_strict", prefix, &v->max_bytes_strict);
        if (r < 0)
                return r;
        if (v->max_bytes_strict && !variant_max_bytes_strict_applies(v))
                return config_fail(p, set, -EINVAL, "%s'max_bytes_strict' needs 'max_bytes'",
                                   prefix);
        return 0;
}

int config_parse_variant(struct parser *p, const char *pipeline, const config_setting_t *s,
                         int index, struct variant *ret)
{
        const config_setting_t *name_s = NULL, *fit_s = NULL, *format_s = NULL, *mask_s = NULL;
        const config_setting_t *w_s = NULL, *h_s = NULL, *gravity_s = NULL, *set = NULL;
        _cleanup_free_ char *prefix = NULL, *where = NULL, *pipeline_prefix = NULL, *in = NULL;
        _cleanup_free_ char *check_error = NULL;
        const char *name = NULL, *fit = NULL, *format = NULL, *mask = NULL, *gravity = NULL;
        long long width = 0, height = 0;
        struct variant v;
        char list[192];
        int r, has_w, has_h;

        variant_init(&v);
        if (!config_setting_is_group(s))
                return config_fail(p, s, -EINVAL,
                                   "pipeline '%s': variant #%d must be a group { name = ...; ... }",
                                   pipeline, index + 1);

        /* Name the variant in messages by its name where it has a usable one. */
        name_s = config_setting_get_member(s, "name");
        if (name_s && config_setting_type(name_s) == CONFIG_TYPE_STRING &&
            variant_name_valid(config_setting_get_string(name_s)))
                where = config_strdup_printf("variant '%s'", config_setting_get_string(name_s));
        else
                where = config_strdup_printf("variant #%d", index + 1);
        if (!where)
                return config_oom(p);
        pipeline_prefix = config_strdup_printf("pipeline '%s': ", pipeline);
        prefix = config_strdup_printf("pipeline '%s': %s: ", pipeline, where);
        in = config_strdup_printf(" in %s", where);
        if (!pipeline_prefix || !prefix || !in)
                return config_oom(p);

        r = config_check_keys(p, s, config_schema_variant, pipeline_prefix, in);
        if (r < 0)
                return r;

        r = config_get_string(p, s, "name", prefix, &name_s, &name);
        if (r < 0)
                return r;
        if (r == 0)
                return config_fail(p, s, -EINVAL, "%s'name' is required", prefix);
        if (!variant_name_valid(name))
                return config_fail(
                        p, name_s, -EINVAL,
                        "%s'name' must be 1 to %d characters of A-Z, a-z, 0-9, '_' and '-', "
                        "not \"%s\"",
                        prefix, VARIANT_NAME_MAX - 1, name);
        strcpy(v.name, name);

        r = config_get_string(p, s, "fit", prefix, &fit_s, &fit);
        if (r < 0)
                return r;
        if (r == 0)
                v.fit = VARIANT_FIT_COVER;
        else {
                r = variant_fit_from_name(fit);
                if (r < 0)
                        return config_fail(p, fit_s, -EINVAL, "%sfit must be one of %s, not \"%s\"",
                                           prefix, fit_list(list, sizeof list), fit);
                v.fit = r;
        }

        has_w = config_get_int(p, s, "width", prefix, &w_s, &width);
        if (has_w < 0)
                return has_w;
        has_h = config_get_int(p, s, "height", prefix, &h_s, &height);
        if (has_h < 0)
                return has_h;
        if (!variant_size_applies(&v)) {
                if (width != 0)
                        return config_fail(p, w_s, -EINVAL,
                                           "%s'width' must be absent or 0 with fit = \"none\"",
                                           prefix);
                if (height != 0)
                        return config_fail(p, h_s, -EINVAL,
                                           "%s'height' must be absent or 0 with fit = \"none\"",
                                           prefix);
        } else {
                if (!has_w)
                        return config_fail(p, s, -EINVAL, "%s'width' is required with fit = \"%s\"",
                                           prefix, variant_fit_name(v.fit));
                if (!has_h)
                        return config_fail(p, s, -EINVAL,
                                           "%s'height' is required with fit = \"%s\"", prefix,
                                           variant_fit_name(v.fit));
                if (width < 1 || width > VARIANT_DIMENSION_MAX)
                        return config_fail(p, w_s, -EINVAL,
                                           "%s'width' must be between 1 and %d, not %lld", prefix,
                                           VARIANT_DIMENSION_MAX, width);
                if (height < 1 || height > VARIANT_DIMENSION_MAX)
                        return config_fail(p, h_s, -EINVAL,
                                           "%s'height' must be between 1 and %d, not %lld", prefix,
                                           VARIANT_DIMENSION_MAX, height);
        }
        v.width = (unsigned)width;
        v.height = (unsigned)height;

        r = config_get_string(p, s, "gravity", prefix, &gravity_s, &gravity);
        if (r < 0)
                return r;
        if (r > 0) {
                r = variant_gravity_from_name(gravity);
                if (r < 0)
                        return config_fail(p, gravity_s, -EINVAL,
                                           "%sgravity must be one of %s, not \"%s\"", prefix,
                                           name_list(list, sizeof list, config_gravity_name, 0,
                                                     _VARIANT_GRAVITY_MAX),
                                           gravity);
                if (!variant_gravity_applies(&v))
                        return config_fail(
                                p, gravity_s, -EINVAL,
                                "%s'gravity' needs fit = \"cover\" (it says which part a "
                                "crop keeps), not fit = \"%s\"",
                                prefix, variant_fit_name(v.fit));
                v.gravity = r;
        }

        r = config_get_string(p, s, "format", prefix, &format_s, &format);
        if (r < 0)
                return r;
        if (r == 0)
                return config_fail(p, s, -EINVAL, "%s'format' is required (one of %s, best)",
                                   prefix,
                                   format_list(list, sizeof list, variant_format_writable, true));
        if (strcmp(format, "same") == 0)
                v.format = VARIANT_FORMAT_SAME;
        else if (strcmp(format, "best") == 0)
                v.format = VARIANT_FORMAT_BEST;
        else if (variant_format_writable(image_format_from_name(format)))
                v.format = image_format_from_name(format);
        else
                return config_fail(p, format_s, -EINVAL,
                                   "%sformat must be one of %s, best, not \"%s\"", prefix,
                                   format_list(list, sizeof list, variant_format_writable, true),
                                   format);

        /* lossless comes later: quality = "auto" with it is refused by variant_check(). */
        r = parse_auto(p, s, prefix, &v);
        if (r < 0)
                return r;

        r = config_get_bool(p, s, "essential", prefix, &v.essential);
        if (r < 0)
                return r;

        r = config_get_string(p, s, "mask", prefix, &mask_s, &mask);
        if (r < 0)
                return r;
        if (r == 0)
                v.mask = VARIANT_MASK_NONE;
        else {
                r = variant_mask_from_name(mask);
                if (r < 0)
                        return config_fail(p, mask_s, -EINVAL,
                                           "%smask must be one of %s, not \"%s\"", prefix,
                                           mask_list(list, sizeof list), mask);
                v.mask = r;
        }
        if (v.mask == VARIANT_MASK_CIRCLE && !variant_mask_applies(&v))
                return config_fail(p, mask_s, -EINVAL,
                                   "%smask = \"circle\" needs a format with alpha (%s), not %s",
                                   prefix,
                                   format_list(list, sizeof list, format_alpha_writable, false),
                                   format_name(v.format));

        memcpy(v.background, p->background, sizeof v.background);
        r = config_get_colour(p, s, "background", prefix, v.background);
        if (r < 0)
                return r;

        r = parse_encoder(p, s, prefix, &v);
        if (r < 0)
                return r;
        r = parse_keep(p, s, prefix, &v);
        if (r < 0)
                return r;

        set = config_setting_get_member(s, "animated");
        r = config_get_bool(p, s, "animated", prefix, &v.animated);
        if (r < 0)
                return r;
        if (v.animated && !variant_animated_applies(&v))
                return config_fail(p, set, -EINVAL,
                                   "%s'animated' needs a format that can hold an animation (%s) or "
                                   "same, not %s",
                                   prefix,
                                   format_list(list, sizeof list, variant_format_animated, false),
                                   image_format_name(v.format));

        r = parse_watermark(p, s, prefix, where, &v);
        if (r < 0)
                return r;

        /* What the workers will check; the settings above must already have said why. */
        r = variant_check(&v, &check_error);
        if (r < 0)
                return config_fail(p, s, r, "%s%s", prefix, check_error ? check_error : "invalid");

        *ret = v;
        return 0;
}
