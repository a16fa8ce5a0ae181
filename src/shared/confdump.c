/* SPDX-License-Identifier: MIT */
/*
 * confdump.c - imgd --dump-config: a loaded configuration written back as libconfig text;
 * see confdump.h.
 *
 * It writes from the table of settings the parser reads (config-schema.c, config-private.h):
 * each entry's name, the kind of its value, its offset in its struct, and the factor between
 * the stored value and the file's unit (microseconds stored, seconds written: USEC_PER_SEC). A
 * group's entry points to the table of its members; a list's entry also names where its
 * element count is and how large one element is. dump_settings() walks a table; nothing here
 * knows a setting by name.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "shared/confdump.h"
#include "shared/config-private.h"
#include "shared/health.h"
#include "shared/imgformat.h"
#include "shared/macro.h"
#include "shared/time-util.h"
#include "shared/variant.h"

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

static void dump_settings(FILE *f, const struct config_setting *table, const void *base,
                          unsigned depth);

/* Writes the members of one element of a list, as a group, at `depth`. */
static void dump_group_body(FILE *f, const struct config_setting *members, const void *base,
                            unsigned depth)
{
        fputs("{\n", f);
        dump_settings(f, members, base, depth + 1);
        indent(f, depth);
        fputc('}', f);
}

/* Writes one setting of `base` at `depth`; nothing for one that does not apply. */
static void dump_setting(FILE *f, const struct config_setting *s, const void *base, unsigned depth)
{
        uint64_t scale = s->scale ? s->scale : 1;
        const void *elems;
        size_t n;

        if (s->applies && !s->applies(base))
                return;

        /* Not set, and "not set" has no value in the file's syntax. */
        if ((s->unset && s->unset(base)) ||
            (s->kind == CONFIG_STRING && !*AT(base, s->offset, char *)) ||
            (s->zero_unset && s->kind == CONFIG_CHARS && !*AT(base, s->offset, char)) ||
            (s->zero_unset && s->kind == CONFIG_U64 && !*AT(base, s->offset, uint64_t)) ||
            (s->zero_unset && s->kind == CONFIG_DOUBLE && *AT(base, s->offset, double) == 0.0)) {
                indent(f, depth);
                fprintf(f, "# %s: not set\n", s->name);
                return;
        }

        indent(f, depth);
        fprintf(f, "%s = ", s->name);
        switch (s->kind) {
        case CONFIG_STRING:
                put_string(f, *AT(base, s->offset, char *));
                break;
        case CONFIG_CHARS:
                put_string(f, AT(base, s->offset, char));
                break;
        case CONFIG_UINT:
                put_uint(f, *AT(base, s->offset, unsigned) / scale);
                break;
        case CONFIG_U64:
                put_uint(f, *AT(base, s->offset, uint64_t) / scale);
                break;
        case CONFIG_DOUBLE:
                put_double(f, *AT(base, s->offset, double));
                break;
        case CONFIG_BOOL:
                fputs(*AT(base, s->offset, bool) ? "true" : "false", f);
                break;
        case CONFIG_COLOUR: {
                const uint8_t *c = AT(base, s->offset, uint8_t);

                fprintf(f, "\"#%02x%02x%02x\"", c[0], c[1], c[2]);
                break;
        }
        case CONFIG_ENUM:
                put_string(f, s->enum_name(*AT(base, s->offset, int)));
                break;
        case CONFIG_FORMAT: {
                enum image_format fmt = *AT(base, s->offset, enum image_format);

                put_string(f, variant_format_name(fmt));
                break;
        }
        case CONFIG_QUALITY: {
                const struct variant *v =
                        AT(base, s->offset - offsetof(struct variant, quality), struct variant);

                if (v->quality_auto)
                        put_string(f, "auto");
                else
                        put_uint(f, v->quality);
                break;
        }
        case CONFIG_TARGET: {
                double t = *AT(base, s->offset, double);

                if (variant_target_name(t))
                        put_string(f, variant_target_name(t));
                else
                        put_double(f, t);
                break;
        }
        case CONFIG_FORMATS: {
                const struct variant *v =
                        AT(base, s->offset - offsetof(struct variant, candidates), struct variant);

                fputc('[', f);
                for (unsigned i = 0; i < v->n_candidates; i++) {
                        fputs(i ? ", " : " ", f);
                        put_string(f, image_format_name(v->candidates[i]));
                }
                fputs(v->n_candidates ? " ]" : "]", f);
                break;
        }
        case CONFIG_KEEP: {
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
        case CONFIG_ALERTS: {
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
        case CONFIG_GROUP:
                dump_group_body(f, s->members, AT(base, s->offset, char), depth);
                break;
        case CONFIG_LIST:
        case CONFIG_NAMED:
                elems = *AT(base, s->offset, void *);
                n = *AT(base, s->count_offset, size_t);
                fputs(s->kind == CONFIG_LIST ? "(\n" : "{\n", f);
                for (size_t i = 0; i < n; i++) {
                        const void *e = AT(elems, i * s->elem_size, char);

                        indent(f, depth + 1);
                        if (s->kind == CONFIG_NAMED)
                                fprintf(f, "%s = ", *AT(e, s->name_offset, char *));
                        dump_group_body(f, s->members, e, depth + 1);
                        fputs(s->kind == CONFIG_NAMED ? ";\n" : i + 1 < n ? ",\n" : "\n", f);
                }
                indent(f, depth);
                fputc(s->kind == CONFIG_LIST ? ')' : '}', f);
                break;
        }
        fputs(";\n", f);
}

static void dump_settings(FILE *f, const struct config_setting *table, const void *base,
                          unsigned depth)
{
        for (const struct config_setting *s = table; s->name; s++)
                dump_setting(f, s, base, depth);
}

int config_dump(const struct config *c, FILE *f)
{
        fputs("# The effective configuration of imgd (imgd --dump-config): every setting, with\n"
              "# its default where the file leaves it out. imgd reads it back as it is.\n",
              f);
        dump_settings(f, config_schema, c, 0);
        if (fflush(f) != 0 || ferror(f))
                return -EIO;
        return 0;
}
