/* SPDX-License-Identifier: MIT */
/*
 * confdump.c - imgd --dump-config: a loaded configuration written back as libconfig text;
 * see confdump.h.
 *
 * Each struct of the configuration has a table of its settings: the name in the file, the
 * kind of value, its offset in the struct, and the factor between the stored value and the
 * file's unit (microseconds stored, seconds written: 1000000). A group's entry points to the
 * table of its members; a list's entry also names where its element count is and how large
 * one element is. dump_settings() walks a table; nothing here knows a setting by name.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "shared/confdump.h"
#include "shared/health.h"
#include "shared/imgformat.h"
#include "shared/macro.h"
#include "shared/variant.h"

enum setting_kind {
        SETTING_STRING, /* char *; NULL: not set */
        SETTING_CHARS,  /* char[] inside the struct; "": not set */
        SETTING_UINT,   /* unsigned */
        SETTING_U64,    /* uint64_t */
        SETTING_DOUBLE, /* double */
        SETTING_BOOL,   /* bool */
        SETTING_COLOUR, /* uint8_t[3], written "#rrggbb" */
        SETTING_ENUM,   /* an enum, written by its name (.enum_name) */
        SETTING_FORMAT, /* enum image_format or VARIANT_FORMAT_SAME */
        SETTING_KEEP,   /* unsigned VARIANT_KEEP_* bits, written [ "icc", ... ] */
        SETTING_ALERTS, /* unsigned bits (1 << enum health_alert) and CONFIG_HTTP_PAUSED */
        SETTING_GROUP,  /* name = { .members }; a struct at .offset (the degradation group: 0) */
        SETTING_LIST,   /* name = ( { .members }, ... ); an array of elements */
        SETTING_NAMED,  /* name = { NAME = { .members }; ... }; NAME at .name_offset */
};

struct setting {
        const char *name; /* NULL ends a table */
        enum setting_kind kind;
        size_t offset;
        uint64_t scale;  /* stored value = written value * scale; 0 means 1 */
        bool zero_unset; /* a 0 (or "") stored value means not set: written as a comment */
        const char *(*enum_name)(int);     /* SETTING_ENUM */
        bool (*applies)(const void *base); /* given the table's struct; NULL: always; false:
                                              the setting is left out */
        bool (*unset)(const void *base);   /* given the table's struct; true: not set, written
                                              as a comment; NULL: as zero_unset says */
        const struct setting *members;     /* SETTING_GROUP, SETTING_LIST, SETTING_NAMED */
        size_t count_offset;               /* SETTING_LIST, SETTING_NAMED: a size_t */
        size_t elem_size;                  /* SETTING_LIST, SETTING_NAMED */
        size_t name_offset;                /* SETTING_NAMED: the element's char * name */
};

static const char *fit_name(int i)
{
        return variant_fit_name((enum variant_fit)i);
}

static const char *gravity_name(int i)
{
        return variant_gravity_name((enum variant_gravity)i);
}

static const char *mask_name(int i)
{
        return variant_mask_name((enum variant_mask)i);
}

static const char *chroma_name(int i)
{
        return variant_chroma_name((enum variant_chroma)i);
}

/* The conditions under which config.c accepts a variant's or a watermark's setting. */
static bool variant_gravity_applies(const void *base)
{
        return ((const struct variant *)base)->fit == VARIANT_FIT_COVER;
}

static bool variant_effort_applies(const void *base)
{
        const struct variant *v = base;

        return v->format != VARIANT_FORMAT_SAME && variant_format_effort_max(v->format) > 0;
}

static bool variant_chroma_applies(const void *base)
{
        const struct variant *v = base;

        return v->format != VARIANT_FORMAT_SAME && variant_format_chroma(v->format);
}

static bool watermark_unset(const void *base)
{
        return ((const struct variant *)base)->watermark.kind == VARIANT_WATERMARK_NONE;
}

static bool watermark_image_applies(const void *base)
{
        return ((const struct variant_watermark *)base)->kind == VARIANT_WATERMARK_IMAGE;
}

static bool watermark_text_applies(const void *base)
{
        return ((const struct variant_watermark *)base)->kind == VARIANT_WATERMARK_TEXT;
}

#define S(type, field) offsetof(type, field)
#define WM(field) offsetof(struct variant_watermark, field)

static const struct setting watermark_settings[] = {
        { .name = "image",
          .kind = SETTING_CHARS,
          .offset = WM(image),
          .applies = watermark_image_applies },
        { .name = "text",
          .kind = SETTING_CHARS,
          .offset = WM(text),
          .applies = watermark_text_applies },
        { .name = "font",
          .kind = SETTING_CHARS,
          .offset = WM(font),
          .applies = watermark_text_applies },
        { .name = "color",
          .kind = SETTING_COLOUR,
          .offset = WM(color),
          .applies = watermark_text_applies },
        { .name = "position",
          .kind = SETTING_ENUM,
          .offset = WM(position),
          .enum_name = gravity_name },
        { .name = "margin", .kind = SETTING_UINT, .offset = WM(margin) },
        { .name = "opacity", .kind = SETTING_DOUBLE, .offset = WM(opacity) },
        { .name = "width", .kind = SETTING_DOUBLE, .offset = WM(width), .zero_unset = true },
        {},
};

static const struct setting variant_settings[] = {
        { .name = "name", .kind = SETTING_CHARS, .offset = S(struct variant, name) },
        { .name = "width", .kind = SETTING_UINT, .offset = S(struct variant, width) },
        { .name = "height", .kind = SETTING_UINT, .offset = S(struct variant, height) },
        { .name = "fit",
          .kind = SETTING_ENUM,
          .offset = S(struct variant, fit),
          .enum_name = fit_name },
        { .name = "gravity",
          .kind = SETTING_ENUM,
          .offset = S(struct variant, gravity),
          .enum_name = gravity_name,
          .applies = variant_gravity_applies },
        { .name = "format", .kind = SETTING_FORMAT, .offset = S(struct variant, format) },
        { .name = "quality", .kind = SETTING_UINT, .offset = S(struct variant, quality) },
        { .name = "effort",
          .kind = SETTING_UINT,
          .offset = S(struct variant, effort),
          .applies = variant_effort_applies },
        { .name = "progressive", .kind = SETTING_BOOL, .offset = S(struct variant, progressive) },
        { .name = "lossless", .kind = SETTING_BOOL, .offset = S(struct variant, lossless) },
        { .name = "chroma",
          .kind = SETTING_ENUM,
          .offset = S(struct variant, chroma),
          .enum_name = chroma_name,
          .applies = variant_chroma_applies },
        { .name = "keep", .kind = SETTING_KEEP, .offset = S(struct variant, keep) },
        { .name = "max_bytes",
          .kind = SETTING_U64,
          .offset = S(struct variant, max_bytes),
          .zero_unset = true },
        { .name = "max_bytes_strict",
          .kind = SETTING_BOOL,
          .offset = S(struct variant, max_bytes_strict) },
        { .name = "animated", .kind = SETTING_BOOL, .offset = S(struct variant, animated) },
        { .name = "mask",
          .kind = SETTING_ENUM,
          .offset = S(struct variant, mask),
          .enum_name = mask_name },
        { .name = "background", .kind = SETTING_COLOUR, .offset = S(struct variant, background) },
        { .name = "essential", .kind = SETTING_BOOL, .offset = S(struct variant, essential) },
        { .name = "watermark",
          .kind = SETTING_GROUP,
          .offset = S(struct variant, watermark),
          .unset = watermark_unset,
          .members = watermark_settings },
        {},
};

static const struct setting pipeline_settings[] = {
        { .name = "placeholder", .kind = SETTING_BOOL, .offset = S(struct pipeline, placeholder) },
        { .name = "variants",
          .kind = SETTING_LIST,
          .offset = S(struct pipeline, variants),
          .count_offset = S(struct pipeline, n_variants),
          .elem_size = sizeof(struct variant),
          .members = variant_settings },
        {},
};

static const struct setting watch_settings[] = {
        { .name = "path", .kind = SETTING_STRING, .offset = S(struct watch_config, path) },
        { .name = "output", .kind = SETTING_STRING, .offset = S(struct watch_config, output) },
        { .name = "pipeline",
          .kind = SETTING_STRING,
          .offset = S(struct watch_config, pipeline_name) },
        { .name = "recursive", .kind = SETTING_BOOL, .offset = S(struct watch_config, recursive) },
        { .name = "quarantine",
          .kind = SETTING_STRING,
          .offset = S(struct watch_config, quarantine) },
        { .name = "on_done", .kind = SETTING_STRING, .offset = S(struct watch_config, on_done) },
        { .name = "on_dead", .kind = SETTING_STRING, .offset = S(struct watch_config, on_dead) },
        { .name = "hook_timeout",
          .kind = SETTING_UINT,
          .offset = S(struct watch_config, hook_timeout_s) },
        {},
};

#define L(field) offsetof(struct config_limits, field)
static const struct setting limits_settings[] = {
        { .name = "max_file_bytes", .kind = SETTING_U64, .offset = L(max_file_bytes) },
        { .name = "max_pixels", .kind = SETTING_U64, .offset = L(max_pixels) },
        { .name = "job_timeout", .kind = SETTING_UINT, .offset = L(job_timeout_s) },
        { .name = "worker_memory",
          .kind = SETTING_U64,
          .offset = L(worker_memory),
          .scale = 1024 * 1024 },
        { .name = "worker_max_jobs", .kind = SETTING_UINT, .offset = L(worker_max_jobs) },
        { .name = "allow_hardlinks", .kind = SETTING_BOOL, .offset = L(allow_hardlinks) },
        { .name = "allow_heif", .kind = SETTING_BOOL, .offset = L(allow_heif) },
        {},
};

#define R(field) offsetof(struct config_retry, field)
static const struct setting retry_settings[] = {
        { .name = "max_attempts", .kind = SETTING_UINT, .offset = R(max_attempts) },
        { .name = "base_delay_ms", .kind = SETTING_UINT, .offset = R(base_delay_ms) },
        { .name = "max_delay_ms", .kind = SETTING_UINT, .offset = R(max_delay_ms) },
        { .name = "jitter", .kind = SETTING_DOUBLE, .offset = R(jitter) },
        {},
};

#define B(field) offsetof(struct config_breaker, field)
static const struct setting breaker_settings[] = {
        { .name = "output_failures", .kind = SETTING_UINT, .offset = B(output_failures) },
        { .name = "worker_failure_rate", .kind = SETTING_DOUBLE, .offset = B(worker_failure_rate) },
        { .name = "worker_min_samples", .kind = SETTING_UINT, .offset = B(worker_min_samples) },
        { .name = "window_ms", .kind = SETTING_UINT, .offset = B(window_ms) },
        { .name = "cooldown_ms", .kind = SETTING_UINT, .offset = B(cooldown_ms) },
        { .name = "max_cooldown_ms", .kind = SETTING_UINT, .offset = B(max_cooldown_ms) },
        {},
};

/* One degradation level; offsets from its struct health_thresholds. */
static const struct setting level_settings[] = {
        { .name = "queued", .kind = SETTING_U64, .offset = S(struct health_thresholds, queued) },
        { .name = "oldest_s",
          .kind = SETTING_U64,
          .offset = S(struct health_thresholds, oldest_age_us),
          .scale = 1000000 },
        { .name = "memory",
          .kind = SETTING_DOUBLE,
          .offset = S(struct health_thresholds, memory_pressure) },
        { .name = "error_rate",
          .kind = SETTING_DOUBLE,
          .offset = S(struct health_thresholds, error_rate) },
        {},
};

#define H(field) (offsetof(struct config, health) + offsetof(struct health_config, field))
static const struct setting degradation_settings[] = {
        { .name = "enabled", .kind = SETTING_BOOL, .offset = S(struct config, degradation) },
        { .name = "recover_ms", .kind = SETTING_U64, .offset = H(recover_us), .scale = 1000 },
        { .name = "reduced",
          .kind = SETTING_GROUP,
          .offset = H(reduced),
          .members = level_settings },
        { .name = "essential",
          .kind = SETTING_GROUP,
          .offset = H(essential),
          .members = level_settings },
        { .name = "paused", .kind = SETTING_GROUP, .offset = H(paused), .members = level_settings },
        {},
};

#define A(field) offsetof(struct health_alerts_config, field)
static const struct setting alerts_settings[] = {
        { .name = "error_rate", .kind = SETTING_DOUBLE, .offset = A(error_rate) },
        { .name = "queued", .kind = SETTING_U64, .offset = A(queued) },
        { .name = "oldest_s", .kind = SETTING_U64, .offset = A(oldest_us), .scale = 1000000 },
        { .name = "drain_s", .kind = SETTING_U64, .offset = A(drain_us), .scale = 1000000 },
        { .name = "breaker", .kind = SETTING_BOOL, .offset = A(breaker) },
        { .name = "degraded", .kind = SETTING_BOOL, .offset = A(degraded) },
        {},
};

#define HT(field) offsetof(struct config_http, field)
static const struct setting http_settings[] = {
        { .name = "listen", .kind = SETTING_STRING, .offset = HT(listen) },
        { .name = "health_alerts", .kind = SETTING_ALERTS, .offset = HT(health_alerts) },
        {},
};

/* The top level, in the order of etc/imgd.conf. */
static const struct setting config_settings[] = {
        { .name = "state_dir", .kind = SETTING_STRING, .offset = S(struct config, state_dir) },
        { .name = "socket", .kind = SETTING_STRING, .offset = S(struct config, socket) },
        { .name = "workers", .kind = SETTING_UINT, .offset = S(struct config, workers) },
        { .name = "background", .kind = SETTING_COLOUR, .offset = S(struct config, background) },
        { .name = "limits",
          .kind = SETTING_GROUP,
          .offset = S(struct config, limits),
          .members = limits_settings },
        { .name = "prune_after_days",
          .kind = SETTING_UINT,
          .offset = S(struct config, prune_after_days) },
        { .name = "unwatched_scan_interval",
          .kind = SETTING_UINT,
          .offset = S(struct config, unwatched_scan_interval_s) },
        { .name = "control_group",
          .kind = SETTING_STRING,
          .offset = S(struct config, control_group) },
        { .name = "read_group", .kind = SETTING_STRING, .offset = S(struct config, read_group) },
        { .name = "retry",
          .kind = SETTING_GROUP,
          .offset = S(struct config, retry),
          .members = retry_settings },
        { .name = "breaker",
          .kind = SETTING_GROUP,
          .offset = S(struct config, breaker),
          .members = breaker_settings },
        { .name = "degradation",
          .kind = SETTING_GROUP,
          .offset = 0,
          .members = degradation_settings },
        { .name = "alerts",
          .kind = SETTING_GROUP,
          .offset = S(struct config, alerts),
          .members = alerts_settings },
        { .name = "http",
          .kind = SETTING_GROUP,
          .offset = S(struct config, http),
          .members = http_settings },
        { .name = "watch",
          .kind = SETTING_LIST,
          .offset = S(struct config, watches),
          .count_offset = S(struct config, n_watches),
          .elem_size = sizeof(struct watch_config),
          .members = watch_settings },
        { .name = "pipelines",
          .kind = SETTING_NAMED,
          .offset = S(struct config, pipelines),
          .count_offset = S(struct config, n_pipelines),
          .elem_size = sizeof(struct pipeline),
          .name_offset = S(struct pipeline, name),
          .members = pipeline_settings },
        {},
};

#define AT(base, offset, type) ((const type *)(const void *)((const char *)(base) + (offset)))

/* A libconfig string literal: quotes, backslashes and control characters escaped. */
static void put_string(FILE *f, const char *s)
{
        fputc('"', f);
        for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
                if (*c == '"' || *c == '\\')
                        fprintf(f, "\\%c", *c);
                else if (*c == '\n')
                        fputs("\\n", f);
                else if (*c == '\t')
                        fputs("\\t", f);
                else if (*c < 0x20 || *c == 0x7f)
                        fprintf(f, "\\x%02x", *c);
                else
                        fputc(*c, f);
        }
        fputc('"', f);
}

/* An integer; 64-bit ones (past INT32_MAX) need libconfig's L suffix. */
static void put_uint(FILE *f, uint64_t v)
{
        fprintf(f, "%" PRIu64 "%s", v, v > INT32_MAX ? "L" : "");
}

/* The shortest decimal that reads back as v, with a decimal point so it stays a float. */
static void put_double(FILE *f, double v)
{
        char buf[64];

        for (int precision = 1; precision <= 17; precision++) {
                snprintf(buf, sizeof buf, "%.*g", precision, v);
                if (strtod(buf, NULL) == v)
                        break;
        }
        fputs(buf, f);
        if (!strpbrk(buf, ".eEn"))
                fputs(".0", f);
}

static void indent(FILE *f, unsigned depth)
{
        fprintf(f, "%*s", (int)(depth * 4), "");
}

static void dump_settings(FILE *f, const struct setting *table, const void *base, unsigned depth);

/* Writes the members of one element of a list, as a group, at `depth`. */
static void dump_group_body(FILE *f, const struct setting *members, const void *base,
                            unsigned depth)
{
        fputs("{\n", f);
        dump_settings(f, members, base, depth + 1);
        indent(f, depth);
        fputc('}', f);
}

/* Writes one setting of `base` at `depth`; nothing for one that does not apply. */
static void dump_setting(FILE *f, const struct setting *s, const void *base, unsigned depth)
{
        uint64_t scale = s->scale ? s->scale : 1;
        const void *elems;
        size_t n;

        if (s->applies && !s->applies(base))
                return;

        /* Not set, and "not set" has no value in the file's syntax. */
        if ((s->unset && s->unset(base)) ||
            (s->kind == SETTING_STRING && !*AT(base, s->offset, char *)) ||
            (s->zero_unset && s->kind == SETTING_CHARS && !*AT(base, s->offset, char)) ||
            (s->zero_unset && s->kind == SETTING_U64 && !*AT(base, s->offset, uint64_t)) ||
            (s->zero_unset && s->kind == SETTING_DOUBLE && *AT(base, s->offset, double) == 0.0)) {
                indent(f, depth);
                fprintf(f, "# %s: not set\n", s->name);
                return;
        }

        indent(f, depth);
        fprintf(f, "%s = ", s->name);
        switch (s->kind) {
        case SETTING_STRING:
                put_string(f, *AT(base, s->offset, char *));
                break;
        case SETTING_CHARS:
                put_string(f, AT(base, s->offset, char));
                break;
        case SETTING_UINT:
                put_uint(f, *AT(base, s->offset, unsigned) / scale);
                break;
        case SETTING_U64:
                put_uint(f, *AT(base, s->offset, uint64_t) / scale);
                break;
        case SETTING_DOUBLE:
                put_double(f, *AT(base, s->offset, double));
                break;
        case SETTING_BOOL:
                fputs(*AT(base, s->offset, bool) ? "true" : "false", f);
                break;
        case SETTING_COLOUR: {
                const uint8_t *c = AT(base, s->offset, uint8_t);

                fprintf(f, "\"#%02x%02x%02x\"", c[0], c[1], c[2]);
                break;
        }
        case SETTING_ENUM:
                put_string(f, s->enum_name(*AT(base, s->offset, int)));
                break;
        case SETTING_FORMAT: {
                enum image_format fmt = *AT(base, s->offset, enum image_format);

                put_string(f, fmt == VARIANT_FORMAT_SAME ? "same" : image_format_name(fmt));
                break;
        }
        case SETTING_KEEP: {
                unsigned keep = *AT(base, s->offset, unsigned);
                bool first = true;

                fputc('[', f);
                for (unsigned bit = 1; bit & _VARIANT_KEEP_ALL; bit <<= 1) {
                        if (!(keep & bit))
                                continue;
                        fputs(first ? " " : ", ", f);
                        put_string(f, variant_keep_name(bit));
                        first = false;
                }
                fputs(first ? "]" : " ]", f);
                break;
        }
        case SETTING_ALERTS: {
                unsigned bits = *AT(base, s->offset, unsigned);
                bool first = true;

                fputc('[', f);
                for (int a = 0; a <= _HEALTH_ALERT_MAX; a++) {
                        if (!(bits & (1u << a)))
                                continue;
                        fputs(first ? " " : ", ", f);
                        put_string(f, a < _HEALTH_ALERT_MAX ? health_alert_name(a) : "paused");
                        first = false;
                }
                fputs(first ? "]" : " ]", f);
                break;
        }
        case SETTING_GROUP:
                dump_group_body(f, s->members, AT(base, s->offset, char), depth);
                break;
        case SETTING_LIST:
        case SETTING_NAMED:
                elems = *AT(base, s->offset, void *);
                n = *AT(base, s->count_offset, size_t);
                fputs(s->kind == SETTING_LIST ? "(\n" : "{\n", f);
                for (size_t i = 0; i < n; i++) {
                        const void *e = AT(elems, i * s->elem_size, char);

                        indent(f, depth + 1);
                        if (s->kind == SETTING_NAMED)
                                fprintf(f, "%s = ", *AT(e, s->name_offset, char *));
                        dump_group_body(f, s->members, e, depth + 1);
                        fputs(s->kind == SETTING_NAMED ? ";\n" : i + 1 < n ? ",\n" : "\n", f);
                }
                indent(f, depth);
                fputc(s->kind == SETTING_LIST ? ')' : '}', f);
                break;
        }
        fputs(";\n", f);
}

static void dump_settings(FILE *f, const struct setting *table, const void *base, unsigned depth)
{
        for (const struct setting *s = table; s->name; s++)
                dump_setting(f, s, base, depth);
}

int config_dump(const struct config *c, FILE *f)
{
        fputs("# The effective configuration of imgd (imgd --dump-config): every setting, with\n"
              "# its default where the file leaves it out. imgd reads it back as it is.\n",
              f);
        dump_settings(f, config_settings, c, 0);
        if (fflush(f) != 0 || ferror(f))
                return -EIO;
        return 0;
}
