/* SPDX-License-Identifier: MIT */
/*
 * config-private.h - what the files of the configuration share (config.h is the contract):
 *
 *   config-parse.c    the libconfig toolkit: the parser's state, errors "FILE:LINE: problem",
 *                     typed getters, and the reader that walks a table of settings
 *   config-schema.c   the table of every setting: name, kind, offset, scale, range, default
 *   config-variant.c  a pipeline's variants and their rules
 *   config-watch.c    pipelines and watches, and the watches' overlaps by name
 *   config-paths.c    config_check_paths(): the file-system checks
 *   config.c          config_load(), config_free(), config_find_pipeline()
 *
 * confdump.c (imgd --dump-config) writes a configuration back from the same table.
 */
#pragma once

#include <libconfig.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shared/config.h"
#include "shared/macro.h"
#include "shared/variant.h"

#define CONFIG_WORKERS_MAX 256
#define CONFIG_PIPELINE_VARIANTS_MAX 32

/* State of one config_load(): the file's name, and the first error found. */
struct parser {
        const char *file;
        char *error;
        const uint8_t *background; /* the top-level `background`, default of the variants */
};

/* The kind of a setting's value: how it is read, stored and written back. */
enum config_kind {
        CONFIG_STRING,  /* char *; NULL: not set */
        CONFIG_CHARS,   /* char[] inside the struct; "": not set */
        CONFIG_UINT,    /* unsigned */
        CONFIG_U64,     /* uint64_t */
        CONFIG_DOUBLE,  /* double */
        CONFIG_BOOL,    /* bool */
        CONFIG_COLOUR,  /* uint8_t[3], written "#rrggbb" */
        CONFIG_ENUM,    /* an enum, written by its name (.enum_name) */
        CONFIG_FORMAT,  /* enum image_format, VARIANT_FORMAT_SAME or VARIANT_FORMAT_BEST */
        CONFIG_QUALITY, /* a struct variant's quality, at .offset: its number or "auto" */
        CONFIG_TARGET,  /* double: a DSSIM target, written by its level's name where it has one */
        CONFIG_FORMATS, /* the candidates of a struct variant, at .offset: [ "avif", ... ] */
        CONFIG_KEEP,    /* unsigned VARIANT_KEEP_* bits, written [ "icc", ... ] */
        CONFIG_ALERTS,  /* unsigned bits (1 << enum health_alert) and CONFIG_HTTP_PAUSED */
        CONFIG_GROUP,   /* name = { .members }; a struct at .offset (the degradation group: 0) */
        CONFIG_LIST,    /* name = ( { .members }, ... ); an array of elements */
        CONFIG_NAMED,   /* name = { NAME = { .members }; ... }; NAME at .name_offset */
};

struct config_setting;

/*
 * Reads the setting `e` of `group` into base (the struct of e's table). Returns 0 (also when
 * the setting is absent) or a negative errno, the error recorded in p.
 */
typedef int (*config_parse_fn)(struct parser *p, const config_setting_t *group,
                               const struct config_setting *e, const char *prefix, void *base);

/*
 * A rule between a setting and those read before it, run after it is read, also when it is
 * absent (only when its group is there). Returns 0 or a negative errno, the error in p.
 */
typedef int (*config_check_fn)(struct parser *p, const config_setting_t *group, void *base);

/*
 * One setting, declared once (config-schema.c). A table ends with an entry whose name is NULL.
 *
 * config_parse_table() reads a table: each entry by .parse if it has one, else by its kind
 * (UINT and U64 in [min, max], stored times .scale; DOUBLE in (0, max] or, with .zero_ok,
 * [0, max], its message "must be <.range>"; BOOL; COLOUR; GROUP: a group of .members), then
 * .check; entries with a lower .pass first. The settings of variants, watermarks, pipelines
 * and watches are read by config-variant.c and config-watch.c, which hold their rules; their
 * tables give the names a group accepts and what confdump.c writes.
 *
 * Defaults: config_schema_defaults() runs a group's .init, then stores the .def (.def_double,
 * .def_colour) of each UINT, U64, DOUBLE, BOOL, ALERTS and COLOUR entry that has one other
 * than 0, into a struct that starts zeroed; an entry whose default its group's .init sets
 * (the thresholds of health.h) leaves .def at 0.
 */
struct config_setting {
        const char *name;
        enum config_kind kind;
        size_t offset;
        uint64_t scale;                    /* stored value = written value * scale; 0 means 1 */
        long long min, max;                /* UINT, U64: the range, in the file's unit */
        double max_double;                 /* DOUBLE: the upper bound */
        bool zero_ok;                      /* DOUBLE: 0 is allowed */
        const char *range;                 /* DOUBLE: "above 0 and at most 1" (after "must be") */
        uint64_t def;                      /* UINT, U64, BOOL: the default, stored value */
        double def_double;                 /* DOUBLE: the default */
        const char *def_string;            /* STRING: the default (read by .parse) */
        const uint8_t *def_colour;         /* COLOUR: the default */
        unsigned pass;                     /* read in passes: 0 first */
        config_parse_fn parse;             /* NULL: read by kind */
        config_check_fn check;             /* NULL: none */
        const char *not_group;             /* GROUP: the message when it is not a group */
        void (*init)(void *base);          /* GROUP: sets the defaults of its struct */
        bool zero_unset;                   /* a 0 (or "") stored value means not set */
        const char *(*enum_name)(int);     /* ENUM */
        bool (*applies)(const void *base); /* written only where it applies; NULL: always */
        bool (*unset)(const void *base);   /* true: not set, written as a comment */
        const struct config_setting *members; /* GROUP, LIST, NAMED */
        size_t count_offset;                  /* LIST, NAMED: a size_t */
        size_t elem_size;                     /* LIST, NAMED */
        size_t name_offset;                   /* NAMED: the element's char * name */
};

/* The tables (config-schema.c). */
extern const struct config_setting config_schema[]; /* the top level */
extern const struct config_setting config_schema_watch[];
extern const struct config_setting config_schema_pipeline[];
extern const struct config_setting config_schema_variant[];
extern const struct config_setting config_schema_watermark[];

/* The entry of `table` named `name`; NULL if none. */
const struct config_setting *config_schema_find(const struct config_setting *table,
                                                const char *name);

/* The names of the variants' enums, as the table's .enum_name and the messages take them. */
static inline const char *config_fit_name(int i)
{
        return variant_fit_name((enum variant_fit)i);
}

static inline const char *config_mask_name(int i)
{
        return variant_mask_name((enum variant_mask)i);
}

static inline const char *config_on_delete_name(int i)
{
        return watch_on_delete_name((enum watch_on_delete)i);
}

static inline const char *config_gravity_name(int i)
{
        return variant_gravity_name((enum variant_gravity)i);
}

static inline const char *config_chroma_name(int i)
{
        return variant_chroma_name((enum variant_chroma)i);
}

/* config-parse.c: errors. */
_printf_(4, 5) int config_fail(struct parser *p, const config_setting_t *s, int err,
                               const char *fmt, ...);
int config_oom(struct parser *p);
_printf_(1, 2) char *config_strdup_printf(const char *fmt, ...);
/* Sets *ret_error (when not NULL) to a formatted message, or NULL if that fails. */
_printf_(2, 3) void config_set_error(char **ret_error, const char *fmt, ...);

/*
 * Checks that every child of `group` is named in `table`. `where` is appended to the
 * message, e.g. " in variant 'small'"; "" at the top level.
 */
int config_check_keys(struct parser *p, const config_setting_t *group,
                      const struct config_setting *table, const char *prefix, const char *where);

/*
 * Typed lookups of `key` in `group`. Each returns 1 and sets *ret when the setting is present
 * and of the right type, 0 when it is absent (*ret unchanged), or -EINVAL for a wrong type.
 * `prefix` ("pipeline 'x': variant 'y': " or "") starts the message.
 */
int config_get_string(struct parser *p, const config_setting_t *group, const char *key,
                      const char *prefix, const config_setting_t **ret_setting, const char **ret);
int config_get_int(struct parser *p, const config_setting_t *group, const char *key,
                   const char *prefix, const config_setting_t **ret_setting, long long *ret);
/* Like config_get_int(), and checks min <= value <= max. */
int config_get_int_range(struct parser *p, const config_setting_t *group, const char *key,
                         const char *prefix, long long min, long long max, long long *ret);
int config_get_bool(struct parser *p, const config_setting_t *group, const char *key,
                    const char *prefix, bool *ret);
/* A number: float, or an integer written without a decimal point. */
int config_get_number(struct parser *p, const config_setting_t *group, const char *key,
                      const char *prefix, const config_setting_t **ret_setting, double *ret);
/* Reads a normalised absolute directory path setting; 0 if absent. */
int config_get_dir(struct parser *p, const config_setting_t *group, const char *key,
                   const char *prefix, char **ret);
/* Reads the colour setting `key` ("#rrggbb" or "#rgb"); 0 if absent. */
int config_get_colour(struct parser *p, const config_setting_t *group, const char *key,
                      const char *prefix, uint8_t ret[3]);

/* True if `path` is `dir` or below it, comparing whole components. Both normalised. */
bool config_path_is_below_or_equal(const char *path, const char *dir);

/*
 * Reads the settings of `table` from `group` into base (see struct config_setting). `prefix`
 * starts the messages ("limits: "), `path` names the group in them ("degradation.reduced";
 * "" at the top level). Returns 0 or a negative errno, the error recorded in p.
 */
int config_parse_table(struct parser *p, const config_setting_t *group,
                       const struct config_setting *table, const char *prefix, const char *path,
                       void *base);

/* Stores the defaults of `table` into base (see struct config_setting). */
void config_schema_defaults(const struct config_setting *table, void *base);

/* config-variant.c: the variant #index (from 0) of pipeline `pipeline`, from the group s. */
int config_parse_variant(struct parser *p, const char *pipeline, const config_setting_t *s,
                         int index, struct variant *ret);

/* config-watch.c: the .parse of `pipelines` and of `watch` (config-schema.c). */
int config_parse_pipelines(struct parser *p, const config_setting_t *root,
                           const struct config_setting *e, const char *prefix, void *base);
int config_parse_watches(struct parser *p, const config_setting_t *root,
                         const struct config_setting *e, const char *prefix, void *base);
