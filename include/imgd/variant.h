/* SPDX-License-Identifier: MIT */
/*
 * variant.h - what one output of a pipeline is: size, fit, format, encoder settings, mask.
 * Parsed from the configuration by config.c, sent to workers as JSON in each job request
 * (so a reloaded configuration never disagrees with a running worker), and read back by the
 * worker. The JSON codec here is the only place that knows the wire names of the fields.
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "imgformat.h"

#define VARIANT_NAME_MAX 64
#define VARIANT_DIMENSION_MAX 16384

enum variant_fit {
        VARIANT_FIT_COVER,   /* fill the box, crop the overflow (centred) */
        VARIANT_FIT_CONTAIN, /* fit inside the box, no crop, may enlarge */
        VARIANT_FIT_INSIDE,  /* like contain, never enlarge */
        VARIANT_FIT_FILL,    /* stretch to exactly width x height */
        VARIANT_FIT_NONE,    /* keep the source's dimensions */
        _VARIANT_FIT_MAX,
};

enum variant_mask {
        VARIANT_MASK_NONE,
        VARIANT_MASK_CIRCLE,
        _VARIANT_MASK_MAX,
};

/* Output format of a variant: an image_format, or "same as the source". */
#define VARIANT_FORMAT_SAME ((enum image_format) - 1)

struct variant {
        char name[VARIANT_NAME_MAX];
        unsigned width;  /* 0 where fit = none */
        unsigned height; /* 0 where fit = none */
        enum variant_fit fit;
        enum image_format format; /* or VARIANT_FORMAT_SAME */
        unsigned quality;         /* 1..100 */
        enum variant_mask mask;
        uint8_t background[3]; /* sRGB colour that alpha is flattened onto */
};

const char *variant_fit_name(enum variant_fit f);
int variant_fit_from_name(const char *name); /* enum value, or -EINVAL */
const char *variant_mask_name(enum variant_mask m);
int variant_mask_from_name(const char *name); /* enum value, or -EINVAL */

/* New JSON object describing v; NULL on allocation failure. */
json_t *variant_to_json(const struct variant *v);

/*
 * Reads a variant from JSON made by variant_to_json(). Returns 0, or -EINVAL with a
 * message in ret_error (owned by the caller) and *ret unchanged.
 */
int variant_from_json(const json_t *j, struct variant *ret, char **ret_error);
