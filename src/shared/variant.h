/* SPDX-License-Identifier: MIT */
/*
 * variant.h - what one output of a pipeline is: size, fit and crop gravity, format, encoder
 * settings (quality, effort, progressive, lossless, chroma), the metadata it keeps, a size
 * limit (max_bytes), animation, mask and watermark. Parsed from the configuration by
 * config.c, sent to workers as JSON in each job request (so a reloaded configuration never
 * disagrees with a running worker), and read back by the worker. The JSON codec here is the
 * only place that knows the wire names of the fields; variant_check() is the one statement
 * of which combinations are valid, applied to both.
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "shared/imgformat.h"

#define VARIANT_NAME_MAX 64
#define VARIANT_DIMENSION_MAX 16384
#define VARIANT_PATH_MAX 1024  /* watermark image path, with its NUL */
#define VARIANT_TEXT_MAX 256   /* watermark text (UTF-8), with its NUL */
#define VARIANT_FONT_MAX 128   /* watermark font (a Pango description), with its NUL */
#define VARIANT_RECIPE_SIZE 17 /* a recipe's 16 hex digits, with the NUL (daemon/recipe.h) */
#define VARIANT_MARGIN_MAX 4096
#define VARIANT_WATERMARK_FILE_MAX (32 * 1024 * 1024) /* bytes of a watermark image file */
#define VARIANT_EFFORT_DEFAULT 4
#define VARIANT_MAX_BYTES_MIN 1024       /* the smallest max_bytes accepted */
#define VARIANT_MAX_BYTES_QUALITY_MIN 30 /* max_bytes lowers quality down to this, no lower */
#define VARIANT_MAX_BYTES_STEPS 9 /* encodes at most for max_bytes (enough to bisect 30..100) */
/* quality = "auto": the lowest quality whose DSSIM (similarity.h) is at most target. */
#define VARIANT_AUTO_ENCODES_DEFAULT 6 /* encodes of the search at most, by default */
#define VARIANT_AUTO_ENCODES_MAX 16
#define VARIANT_AUTO_QUALITY_MIN 20 /* the search goes no lower */
#define VARIANT_TARGET_MAX 1.0      /* targets are in (0, VARIANT_TARGET_MAX] */
/* format = "best": the candidate formats tried, and the time they may take together. */
#define VARIANT_CANDIDATES_MAX 4
#define VARIANT_BEST_TIME_LIMIT_DEFAULT_USEC (10 * 1000 * 1000ull)
#define VARIANT_BEST_TIME_LIMIT_MAX_USEC (600 * 1000 * 1000ull)

enum variant_fit {
        VARIANT_FIT_COVER,   /* fill the box, crop the overflow (where gravity says) */
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

/*
 * Which part of the image a cover crop keeps, and where a watermark goes. The compass
 * values come first; attention and entropy (libvips' smart crop) are for gravity only.
 */
enum variant_gravity {
        VARIANT_GRAVITY_CENTRE,
        VARIANT_GRAVITY_NORTH,
        VARIANT_GRAVITY_SOUTH,
        VARIANT_GRAVITY_EAST,
        VARIANT_GRAVITY_WEST,
        VARIANT_GRAVITY_NORTH_EAST,
        VARIANT_GRAVITY_NORTH_WEST,
        VARIANT_GRAVITY_SOUTH_EAST,
        VARIANT_GRAVITY_SOUTH_WEST,
        VARIANT_GRAVITY_ATTENTION, /* the most "interesting" part: skin, saturation, edges */
        VARIANT_GRAVITY_ENTROPY,   /* the part with the most entropy */
        _VARIANT_GRAVITY_MAX,
};
#define _VARIANT_POSITION_MAX VARIANT_GRAVITY_ATTENTION /* watermark positions: compass only */

/* Chroma subsampling of jpeg and avif outputs. */
enum variant_chroma {
        VARIANT_CHROMA_AUTO, /* the encoder's choice (jpeg: 4:2:0 below quality 90) */
        VARIANT_CHROMA_444,
        VARIANT_CHROMA_420,
        _VARIANT_CHROMA_MAX,
};

/* Metadata a variant keeps (struct variant.keep); everything else is always stripped. */
enum {
        VARIANT_KEEP_ICC = 1u << 0,       /* an ICC profile (sRGB: what the pixels now are) */
        VARIANT_KEEP_COPYRIGHT = 1u << 1, /* the EXIF Copyright tag */
        _VARIANT_KEEP_ALL = (1u << 2) - 1,
};

enum variant_watermark_kind {
        VARIANT_WATERMARK_NONE,
        VARIANT_WATERMARK_IMAGE,
        VARIANT_WATERMARK_TEXT,
        _VARIANT_WATERMARK_MAX,
};

struct variant_watermark {
        enum variant_watermark_kind kind;
        char image[VARIANT_PATH_MAX];  /* absolute path (kind IMAGE), else "" */
        char text[VARIANT_TEXT_MAX];   /* UTF-8 (kind TEXT), else "" */
        char font[VARIANT_FONT_MAX];   /* Pango font description (kind TEXT), else "" */
        uint8_t color[3];              /* text colour, sRGB */
        enum variant_gravity position; /* a compass value */
        unsigned margin;               /* pixels between the watermark and the edges */
        double opacity;                /* (0, 1] */
        double width; /* fraction of the output's width, (0, 1]; 0: text at its font size */
};

/* Output format of a variant: an image_format, "same as the source", or "the smallest of
 * the candidates that meets the target" (chosen by the worker, per source). */
#define VARIANT_FORMAT_SAME ((enum image_format) - 1)
#define VARIANT_FORMAT_BEST ((enum image_format) - 2)

/* The named targets of quality = "auto" (target = "good"), DSSIM values. */
struct variant_target_level {
        const char *name;
        double target;
};
extern const struct variant_target_level variant_target_levels[];
#define VARIANT_TARGET_DEFAULT_LEVEL "good"

/*
 * A plain value (no pointers): it is copied freely, e.g. from the configuration into a
 * running job. Fields that do not apply to the format keep their defaults (checked by
 * config-variant.c and variant_from_json()).
 */
struct variant {
        char name[VARIANT_NAME_MAX];
        unsigned width;  /* 0 where fit = none */
        unsigned height; /* 0 where fit = none */
        enum variant_fit fit;
        enum image_format format; /* or VARIANT_FORMAT_SAME, VARIANT_FORMAT_BEST */
        unsigned quality;         /* 1..100; with quality_auto the search's first guess */
        bool quality_auto;        /* quality = "auto": searched for the target */
        double target;            /* DSSIM the output may have at most (quality_auto), else 0 */
        unsigned auto_encodes;    /* encodes of the search at most (quality_auto) */
        /* format "best": the formats tried, in order (jpeg, webp, avif, jxl), else none */
        enum image_format candidates[VARIANT_CANDIDATES_MAX];
        unsigned n_candidates;
        uint64_t best_time_limit_usec; /* format "best": the candidates' time together */
        enum variant_mask mask;
        uint8_t background[3];        /* sRGB colour that alpha is flattened onto */
        enum variant_gravity gravity; /* only other than centre with fit = cover */
        unsigned effort;              /* webp 0..6, avif 0..9, jxl 1..9; default 4 */
        bool progressive;             /* jpeg, png, gif: interlaced */
        bool lossless;                /* webp */
        enum variant_chroma chroma;   /* jpeg, avif */
        unsigned keep;                /* VARIANT_KEEP_* */
        uint64_t max_bytes;           /* 0: no limit; else >= VARIANT_MAX_BYTES_MIN */
        bool max_bytes_strict;        /* fail rather than publish over max_bytes */
        bool animated;                /* keep the animation of animated sources (webp, gif) */
        bool essential;               /* still rendered at the "essential" degradation level
                                         (daemon-side only: not sent to workers) */
        struct variant_watermark watermark;
        char recipe[VARIANT_RECIPE_SIZE]; /* daemon-side, like essential: its recipe
                                           * (daemon/recipe.h), "" when not computed */
};

/* The values of a variant that sets nothing but its name, size, fit and format. */
void variant_init(struct variant *v);

const char *variant_fit_name(enum variant_fit f);
int variant_fit_from_name(const char *name); /* enum value, or -EINVAL */
const char *variant_mask_name(enum variant_mask m);
int variant_mask_from_name(const char *name); /* enum value, or -EINVAL */
const char *variant_gravity_name(enum variant_gravity g);
int variant_gravity_from_name(const char *name);        /* enum value, or -EINVAL */
const char *variant_chroma_name(enum variant_chroma c); /* "auto", "4:4:4", "4:2:0" */
int variant_chroma_from_name(const char *name);         /* enum value, or -EINVAL */
const char *variant_keep_name(unsigned bit);            /* "icc", "copyright"; NULL if none */
int variant_keep_from_name(const char *name);           /* the VARIANT_KEEP_* bit, or -EINVAL */

/*
 * What each output format can do, for the configuration's checks and the renderer. A
 * format is writable as a variant output if image_format_writable() says so, or it is GIF
 * (written only as an explicit output format: "same" still turns GIF sources into WebP).
 */
bool variant_format_writable(enum image_format f);
unsigned variant_format_effort_max(enum image_format f); /* 0 where effort does not apply */
bool variant_format_progressive(enum image_format f);    /* jpeg, png, gif */
bool variant_format_lossless(enum image_format f);       /* webp */
bool variant_format_chroma(enum image_format f);         /* jpeg, avif */
bool variant_format_keep(enum image_format f);           /* jpeg, png, webp, avif */
bool variant_format_animated(enum image_format f);       /* webp, gif */
/* Whether v's output is encoded with a quality (jpeg, avif, webp unless lossless). */
bool variant_uses_quality(const struct variant *v);

/*
 * The variant rules, each stated once: whether a setting applies to v, given the settings it
 * depends on (its fit, its format, lossless, max_bytes). The configuration (config-variant.c)
 * refuses a setting written where it does not apply, variant_check() a value other than the
 * default there, and --dump-config leaves out gravity, effort and chroma where they do not.
 * "same" (VARIANT_FORMAT_SAME) is no format with the ability: only keep and animated apply
 * to it.
 */
bool variant_size_applies(const struct variant *v);        /* width, height: fit other than none */
bool variant_gravity_applies(const struct variant *v);     /* fit cover */
bool variant_mask_applies(const struct variant *v);        /* a format with alpha */
bool variant_effort_applies(const struct variant *v);      /* webp, avif, jxl */
bool variant_progressive_applies(const struct variant *v); /* jpeg, png, gif */
bool variant_lossless_applies(const struct variant *v);    /* webp */
bool variant_chroma_applies(const struct variant *v);      /* jpeg, avif */
bool variant_keep_applies(const struct variant *v);        /* same, jpeg, png, webp, avif */
bool variant_max_bytes_applies(const struct variant *v);   /* encoded with a quality */
bool variant_max_bytes_strict_applies(const struct variant *v); /* max_bytes set */
bool variant_animated_applies(const struct variant *v);         /* same, webp, gif */
bool variant_auto_applies(const struct variant *v);       /* quality = "auto": a lossy format */
bool variant_candidates_applies(const struct variant *v); /* candidates: format best */

/* The name of format f as the configuration writes it: "same", "best" or image_format_name(). */
const char *variant_format_name(enum image_format f);
/* Whether f can be a candidate of format "best": a format encoded with a quality. */
bool variant_format_candidate(enum image_format f);
/* The target of the named level, or -1 when there is none of that name. */
double variant_target_from_name(const char *name);
/* The name of the level whose target is t, or NULL. */
const char *variant_target_name(double t);

/* New JSON object describing v; NULL on allocation failure. */
json_t *variant_to_json(const struct variant *v);

/*
 * Checks the combinations of v's fields (ranges, and options that need a particular fit or
 * format). Returns 0, or -EINVAL with a message in ret_error (owned by the caller).
 */
int variant_check(const struct variant *v, char **ret_error);

/*
 * Reads a variant from JSON made by variant_to_json(): every member it writes is required
 * (the watermark only when there is one), no other is accepted, and the result must pass
 * variant_check(). Returns 0, or -EINVAL
 * with a message in ret_error (owned by the caller) and *ret unchanged.
 */
int variant_from_json(const json_t *j, struct variant *ret, char **ret_error);
