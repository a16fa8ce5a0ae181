/* SPDX-License-Identifier: MIT */
/*
 * config-parse.c - the libconfig toolkit of config_load(); see config-private.h.
 *
 * The first problem found stops the load and is recorded in struct parser as "FILE:LINE:
 * problem", LINE being where the offending setting (or, for a missing one, the enclosing
 * group) was written; later calls of config_fail() keep that first message. The getters
 * read one setting of a group by type; config_parse_table() reads a whole table of settings
 * (config-schema.c) with them, in the table's passes and order, so the first error reported
 * is the same whatever else is wrong.
 */
#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shared/config-private.h"
#include "shared/macro.h"

#define AT(base, offset, type) ((type *)(void *)((char *)(base) + (offset)))

/*
 * Records "FILE:LINE: message" (or "FILE: message" when s is NULL or has no line) unless an
 * error was already recorded, and returns err. On allocation failure the message is lost and
 * -ENOMEM returned instead.
 */
_printf_(4, 5) int config_fail(struct parser *p, const config_setting_t *s, int err,
                               const char *fmt, ...)
{
        _cleanup_free_ char *msg = NULL;
        const char *file = p->file;
        unsigned line = 0;
        va_list ap;
        int r;

        if (p->error)
                return err;

        va_start(ap, fmt);
        r = vasprintf(&msg, fmt, ap);
        va_end(ap);
        if (r < 0) {
                msg = NULL;
                return -ENOMEM;
        }

        if (s) {
                line = config_setting_source_line(s);
                if (config_setting_source_file(s))
                        file = config_setting_source_file(s);
        }
        if (line > 0)
                r = asprintf(&p->error, "%s:%u: %s", file, line, msg);
        else
                r = asprintf(&p->error, "%s: %s", file, msg);
        if (r < 0) {
                p->error = NULL;
                return -ENOMEM;
        }
        return err;
}

/* A new string, or NULL on allocation failure. */
_printf_(1, 2) char *config_strdup_printf(const char *fmt, ...)
{
        va_list ap;
        char *s;
        int r;

        va_start(ap, fmt);
        r = vasprintf(&s, fmt, ap);
        va_end(ap);
        return r < 0 ? NULL : s;
}

int config_oom(struct parser *p)
{
        return config_fail(p, NULL, -ENOMEM, "out of memory");
}

int config_check_keys(struct parser *p, const config_setting_t *group,
                      const struct config_setting *table, const char *prefix, const char *where)
{
        int n = config_setting_length(group);

        for (int i = 0; i < n; i++) {
                const config_setting_t *s = config_setting_get_elem(group, i);
                const char *name = config_setting_name(s);
                bool known = false;

                for (const struct config_setting *e = table; e->name; e++)
                        if (name && strcmp(name, e->name) == 0) {
                                known = true;
                                break;
                        }
                if (!known)
                        return config_fail(p, s, -EINVAL, "%sunknown setting '%s'%s", prefix,
                                           name ? name : "?", where);
        }
        return 0;
}

/*
 * Typed lookups of `key` in `group`. Each returns 1 and sets *ret when the setting is present
 * and of the right type, 0 when it is absent (*ret unchanged), or -EINVAL for a wrong type.
 * `prefix` ("pipeline 'x': variant 'y': " or "") starts the message.
 */
int config_get_string(struct parser *p, const config_setting_t *group, const char *key,
                      const char *prefix, const config_setting_t **ret_setting, const char **ret)
{
        const config_setting_t *s = config_setting_get_member(group, key);

        if (!s)
                return 0;
        if (config_setting_type(s) != CONFIG_TYPE_STRING)
                return config_fail(p, s, -EINVAL, "%s'%s' must be a string", prefix, key);
        if (ret_setting)
                *ret_setting = s;
        *ret = config_setting_get_string(s);
        return 1;
}

int config_get_int(struct parser *p, const config_setting_t *group, const char *key,
                   const char *prefix, const config_setting_t **ret_setting, long long *ret)
{
        const config_setting_t *s = config_setting_get_member(group, key);

        if (!s)
                return 0;
        if (config_setting_type(s) != CONFIG_TYPE_INT &&
            config_setting_type(s) != CONFIG_TYPE_INT64)
                return config_fail(p, s, -EINVAL, "%s'%s' must be an integer", prefix, key);
        if (ret_setting)
                *ret_setting = s;
        *ret = config_setting_get_int64(s);
        return 1;
}

/* Like config_get_int(), and checks min <= value <= max. */
int config_get_int_range(struct parser *p, const config_setting_t *group, const char *key,
                         const char *prefix, long long min, long long max, long long *ret)
{
        const config_setting_t *s = NULL;
        long long v = 0;
        int r;

        r = config_get_int(p, group, key, prefix, &s, &v);
        if (r <= 0)
                return r;
        if (v < min || v > max) {
                if (max == LLONG_MAX)
                        return config_fail(p, s, -EINVAL, "%s'%s' must be at least %lld, not %lld",
                                           prefix, key, min, v);
                return config_fail(p, s, -EINVAL, "%s'%s' must be between %lld and %lld, not %lld",
                                   prefix, key, min, max, v);
        }
        *ret = v;
        return 1;
}

int config_get_bool(struct parser *p, const config_setting_t *group, const char *key,
                    const char *prefix, bool *ret)
{
        const config_setting_t *s = config_setting_get_member(group, key);

        if (!s)
                return 0;
        if (config_setting_type(s) != CONFIG_TYPE_BOOL)
                return config_fail(p, s, -EINVAL, "%s'%s' must be true or false", prefix, key);
        *ret = config_setting_get_bool(s);
        return 1;
}

/* A number: float, or an integer written without a decimal point. */
int config_get_number(struct parser *p, const config_setting_t *group, const char *key,
                      const char *prefix, const config_setting_t **ret_setting, double *ret)
{
        const config_setting_t *s = config_setting_get_member(group, key);

        if (!s)
                return 0;
        switch (config_setting_type(s)) {
        case CONFIG_TYPE_FLOAT:
                *ret = config_setting_get_float(s);
                break;
        case CONFIG_TYPE_INT:
        case CONFIG_TYPE_INT64:
                *ret = (double)config_setting_get_int64(s);
                break;
        default:
                return config_fail(p, s, -EINVAL, "%s'%s' must be a number", prefix, key);
        }
        if (ret_setting)
                *ret_setting = s;
        return 1;
}

/*
 * Normalises an absolute directory path: collapses repeated slashes and strips trailing
 * ones. Returns 0 and a new string, -EINVAL if it is relative, is "/", or has a "." or ".."
 * component, -ENOMEM.
 */
static int normalize_dir(const char *path, char **ret)
{
        _cleanup_free_ char *out = NULL;
        const char *c = path;
        size_t n = 0;

        if (path[0] != '/')
                return -EINVAL;
        out = malloc(strlen(path) + 1);
        if (!out)
                return -ENOMEM;

        while (*c) {
                size_t len;

                while (*c == '/')
                        c++;
                if (!*c)
                        break;
                len = strcspn(c, "/");
                if ((len == 1 && c[0] == '.') || (len == 2 && c[0] == '.' && c[1] == '.'))
                        return -EINVAL;
                out[n++] = '/';
                memcpy(out + n, c, len);
                n += len;
                c += len;
        }
        if (n == 0)
                return -EINVAL;
        out[n] = '\0';
        *ret = TAKE_PTR(out);
        return 0;
}

/* True if `path` is `dir` or below it, comparing whole components. Both normalised. */
bool config_path_is_below_or_equal(const char *path, const char *dir)
{
        size_t n = strlen(dir);

        return strncmp(path, dir, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

/* Reads a normalised absolute directory path setting; 0 if absent. */
int config_get_dir(struct parser *p, const config_setting_t *group, const char *key,
                   const char *prefix, char **ret)
{
        const config_setting_t *s = NULL;
        const char *v = NULL;
        int r;

        r = config_get_string(p, group, key, prefix, &s, &v);
        if (r <= 0)
                return r;
        if (v[0] != '/')
                return config_fail(p, s, -EINVAL, "%s'%s' must be an absolute path, not \"%s\"",
                                   prefix, key, v);
        if (strspn(v, "/") == strlen(v))
                return config_fail(p, s, -EINVAL, "%s'%s' must not be the root directory", prefix,
                                   key);
        r = normalize_dir(v, ret);
        if (r == -ENOMEM)
                return config_oom(p);
        if (r < 0)
                return config_fail(p, s, -EINVAL,
                                   "%s'%s' must not contain \".\" or \"..\" components: \"%s\"",
                                   prefix, key, v);
        return 1;
}

/* Parses "#rrggbb" or "#rgb". */
static int parse_colour(const char *s, uint8_t ret[3])
{
        size_t n = strlen(s);
        uint8_t c[3];

        if (s[0] != '#' || (n != 7 && n != 4))
                return -EINVAL;
        for (size_t i = 1; i < n; i++)
                if (unhexchar(s[i]) < 0)
                        return -EINVAL;
        for (int i = 0; i < 3; i++) {
                if (n == 7)
                        c[i] = (uint8_t)(unhexchar(s[1 + 2 * i]) << 4 | unhexchar(s[2 + 2 * i]));
                else
                        c[i] = (uint8_t)(unhexchar(s[1 + i]) * 17);
        }
        memcpy(ret, c, sizeof c);
        return 0;
}

/* Reads the colour setting `key` ("#rrggbb" or "#rgb"); 0 if absent. */
int config_get_colour(struct parser *p, const config_setting_t *group, const char *key,
                      const char *prefix, uint8_t ret[3])
{
        const config_setting_t *s = NULL;
        const char *v = NULL;
        int r;

        r = config_get_string(p, group, key, prefix, &s, &v);
        if (r <= 0)
                return r;
        if (parse_colour(v, ret) < 0)
                return config_fail(p, s, -EINVAL,
                                   "%s'%s' must be a colour \"#rrggbb\" or \"#rgb\", not \"%s\"",
                                   prefix, key, v);
        return 1;
}
/* Sets *ret_error (when not NULL) to a formatted message, or NULL if that fails. */
_printf_(2, 3) void config_set_error(char **ret_error, const char *fmt, ...)
{
        va_list ap;

        if (!ret_error)
                return;
        va_start(ap, fmt);
        if (vasprintf(ret_error, fmt, ap) < 0)
                *ret_error = NULL;
        va_end(ap);
}

/* Reads the setting e of `group` by its kind (see struct config_setting). */
static int parse_by_kind(struct parser *p, const config_setting_t *group,
                         const struct config_setting *e, const char *prefix, const char *path,
                         void *base)
{
        _cleanup_free_ char *child_prefix = NULL, *child_path = NULL, *in = NULL;
        const config_setting_t *s = NULL;
        uint64_t scale = e->scale ? e->scale : 1;
        long long v = 0;
        double d = 0;
        int r;

        switch (e->kind) {
        case CONFIG_UINT:
        case CONFIG_U64:
                r = config_get_int_range(p, group, e->name, prefix, e->min, e->max, &v);
                if (r <= 0)
                        return r;
                if (e->kind == CONFIG_UINT)
                        *AT(base, e->offset, unsigned) = (unsigned)((uint64_t)v * scale);
                else
                        *AT(base, e->offset, uint64_t) = (uint64_t)v * scale;
                return 0;
        case CONFIG_DOUBLE:
                r = config_get_number(p, group, e->name, prefix, &s, &d);
                if (r <= 0)
                        return r;
                if (!((e->zero_ok ? d >= 0.0 : d > 0.0) && d <= e->max_double))
                        return config_fail(p, s, -EINVAL, "%s'%s' must be %s, not %g", prefix,
                                           e->name, e->range, d);
                *AT(base, e->offset, double) = d;
                return 0;
        case CONFIG_BOOL:
                r = config_get_bool(p, group, e->name, prefix, AT(base, e->offset, bool));
                return r < 0 ? r : 0;
        case CONFIG_COLOUR:
                r = config_get_colour(p, group, e->name, prefix, AT(base, e->offset, uint8_t));
                return r < 0 ? r : 0;
        case CONFIG_GROUP:
                s = config_setting_get_member(group, e->name);
                if (!s)
                        return 0;
                if (!config_setting_is_group(s))
                        return config_fail(p, s, -EINVAL, "%s%s", prefix, e->not_group);
                child_prefix = config_strdup_printf("%s%s: ", prefix, e->name);
                child_path = config_strdup_printf("%s%s%s", path, *path ? "." : "", e->name);
                in = config_strdup_printf(" in %s", child_path ?: "");
                if (!child_prefix || !child_path || !in)
                        return config_oom(p);
                r = config_check_keys(p, s, e->members, "", in);
                if (r < 0)
                        return r;
                return config_parse_table(p, s, e->members, child_prefix, child_path,
                                          AT(base, e->offset, char));
        default:
                /* A kind without a reader of its own needs a .parse. */
                assert(!"a setting of this kind needs a .parse");
                return -EINVAL;
        }
}

int config_parse_table(struct parser *p, const config_setting_t *group,
                       const struct config_setting *table, const char *prefix, const char *path,
                       void *base)
{
        unsigned passes = 1;
        int r;

        for (const struct config_setting *e = table; e->name; e++)
                if (e->pass >= passes)
                        passes = e->pass + 1;
        for (unsigned pass = 0; pass < passes; pass++)
                for (const struct config_setting *e = table; e->name; e++) {
                        if (e->pass != pass)
                                continue;
                        if (e->parse)
                                r = e->parse(p, group, e, prefix, base);
                        else
                                r = parse_by_kind(p, group, e, prefix, path, base);
                        if (r < 0)
                                return r;
                        if (e->check) {
                                r = e->check(p, group, base);
                                if (r < 0)
                                        return r;
                        }
                }
        return 0;
}

void config_schema_defaults(const struct config_setting *table, void *base)
{
        for (const struct config_setting *e = table; e->name; e++) {
                switch (e->kind) {
                case CONFIG_UINT:
                case CONFIG_ALERTS:
                        if (e->def)
                                *AT(base, e->offset, unsigned) = (unsigned)e->def;
                        break;
                case CONFIG_U64:
                        if (e->def)
                                *AT(base, e->offset, uint64_t) = e->def;
                        break;
                case CONFIG_DOUBLE:
                        if (e->def_double != 0.0)
                                *AT(base, e->offset, double) = e->def_double;
                        break;
                case CONFIG_BOOL:
                        if (e->def)
                                *AT(base, e->offset, bool) = true;
                        break;
                case CONFIG_COLOUR:
                        if (e->def_colour)
                                memcpy(AT(base, e->offset, uint8_t), e->def_colour, 3);
                        break;
                case CONFIG_GROUP:
                        if (e->init)
                                e->init(AT(base, e->offset, char));
                        config_schema_defaults(e->members, AT(base, e->offset, char));
                        break;
                default:
                        break;
                }
        }
}

const struct config_setting *config_schema_find(const struct config_setting *table,
                                                const char *name)
{
        for (const struct config_setting *e = table; e->name; e++)
                if (strcmp(e->name, name) == 0)
                        return e;
        return NULL;
}
