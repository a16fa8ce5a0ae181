/* SPDX-License-Identifier: MIT */
/*
 * variant.c - names of fits and masks, and the JSON codec for variants sent to workers;
 * see variant.h. variant_from_json() validates what it reads as strictly as config.c does,
 * since a worker must not trust a malformed request either.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "imgd/macro.h"
#include "imgd/variant.h"

static const char *const fit_names[_VARIANT_FIT_MAX] = {
        [VARIANT_FIT_COVER] = "cover", [VARIANT_FIT_CONTAIN] = "contain",
        [VARIANT_FIT_INSIDE] = "inside", [VARIANT_FIT_FILL] = "fill",
        [VARIANT_FIT_NONE] = "none",
};

static const char *const mask_names[_VARIANT_MASK_MAX] = {
        [VARIANT_MASK_NONE] = "none",
        [VARIANT_MASK_CIRCLE] = "circle",
};

static int lookup(const char *const *names, int n, const char *name)
{
        if (!name)
                return -EINVAL;
        for (int i = 0; i < n; i++)
                if (strcmp(names[i], name) == 0)
                        return i;
        return -EINVAL;
}

const char *variant_fit_name(enum variant_fit f)
{
        return f >= 0 && f < _VARIANT_FIT_MAX ? fit_names[f] : "invalid";
}

int variant_fit_from_name(const char *name)
{
        return lookup(fit_names, _VARIANT_FIT_MAX, name);
}

const char *variant_mask_name(enum variant_mask m)
{
        return m >= 0 && m < _VARIANT_MASK_MAX ? mask_names[m] : "invalid";
}

int variant_mask_from_name(const char *name)
{
        return lookup(mask_names, _VARIANT_MASK_MAX, name);
}

json_t *variant_to_json(const struct variant *v)
{
        const char *format =
                v->format == VARIANT_FORMAT_SAME ? "same" : image_format_name(v->format);

        return json_pack("{s:s, s:I, s:I, s:s, s:s, s:I, s:s, s:[I,I,I]}", "name", v->name,
                         "width", (json_int_t)v->width, "height", (json_int_t)v->height, "fit",
                         variant_fit_name(v->fit), "format", format, "quality",
                         (json_int_t)v->quality, "mask", variant_mask_name(v->mask),
                         "background", (json_int_t)v->background[0],
                         (json_int_t)v->background[1], (json_int_t)v->background[2]);
}

static int fail(char **ret_error, const char *fmt, const char *what)
{
        if (ret_error && asprintf(ret_error, fmt, what) < 0)
                *ret_error = NULL;
        return -EINVAL;
}

int variant_from_json(const json_t *j, struct variant *ret, char **ret_error)
{
        const char *name, *fit, *format, *mask;
        json_int_t w, h, q, bg[3];
        json_error_t jerr;
        struct variant v = {};
        int r;

        if (json_unpack_ex((json_t *)j, &jerr, JSON_STRICT,
                           "{s:s, s:I, s:I, s:s, s:s, s:I, s:s, s:[III]}", "name", &name,
                           "width", &w, "height", &h, "fit", &fit, "format", &format, "quality",
                           &q, "mask", &mask, "background", &bg[0], &bg[1], &bg[2]) < 0)
                return fail(ret_error, "malformed variant: %s", jerr.text);

        if (strlen(name) == 0 || strlen(name) >= sizeof v.name)
                return fail(ret_error, "invalid variant name '%s'", name);
        strcpy(v.name, name);
        if (w < 0 || h < 0 || w > VARIANT_DIMENSION_MAX || h > VARIANT_DIMENSION_MAX)
                return fail(ret_error, "variant '%s': dimensions out of range", name);
        v.width = (unsigned)w;
        v.height = (unsigned)h;
        r = variant_fit_from_name(fit);
        if (r < 0)
                return fail(ret_error, "unknown fit '%s'", fit);
        v.fit = r;
        if (v.fit != VARIANT_FIT_NONE && (v.width == 0 || v.height == 0))
                return fail(ret_error, "variant '%s': width and height are required", name);
        if (strcmp(format, "same") == 0)
                v.format = VARIANT_FORMAT_SAME;
        else if (image_format_writable(image_format_from_name(format)))
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
        for (int i = 0; i < 3; i++) {
                if (bg[i] < 0 || bg[i] > 255)
                        return fail(ret_error, "variant '%s': background out of range", name);
                v.background[i] = (uint8_t)bg[i];
        }
        *ret = v;
        return 0;
}
