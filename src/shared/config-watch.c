/* SPDX-License-Identifier: MIT */
/*
 * config-watch.c - the pipelines and the watches of imgd.conf; see config-private.h.
 *
 * config_parse_pipelines() reads `pipelines`: each a list of variants, or a group of the
 * pipeline-wide settings and its variants (config-variant.c reads each variant), no two
 * variants of a pipeline with one name. config_parse_watches() reads `watch`, after the
 * pipelines: each watch names its pipeline and points into config.pipelines, which is never
 * reallocated afterwards. Then the watches are compared by name: duplicates, a watch inside a
 * recursive one, outputs and quarantines overlapping watched paths. config_check_paths()
 * (config-paths.c) compares them again as the file system resolves them.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "shared/config-private.h"
#include "shared/string-table.h"
#include "shared/macro.h"
#include "shared/time-util.h"

static int parse_variants(struct parser *p, const char *name, const config_setting_t *s,
                          struct pipeline *ret)
{
        _cleanup_free_ struct variant *variants = NULL;
        int n, r;

        n = config_setting_length(s);
        if (n < 1)
                return config_fail(p, s, -EINVAL, "pipeline '%s' has no variants", name);
        if (n > CONFIG_PIPELINE_VARIANTS_MAX)
                return config_fail(p, s, -EINVAL,
                                   "pipeline '%s' has %d variants, at most %d are allowed", name, n,
                                   CONFIG_PIPELINE_VARIANTS_MAX);

        variants = calloc((size_t)n, sizeof *variants);
        if (!variants)
                return config_oom(p);
        for (int i = 0; i < n; i++) {
                const config_setting_t *vs = config_setting_get_elem(s, i);

                r = config_parse_variant(p, name, vs, i, &variants[i]);
                if (r < 0)
                        return r;
                for (int j = 0; j < i; j++)
                        if (strcmp(variants[j].name, variants[i].name) == 0)
                                return config_fail(p, config_setting_get_member(vs, "name"),
                                                   -EINVAL,
                                                   "pipeline '%s': variant '%s' is defined twice",
                                                   name, variants[i].name);
        }
        ret->variants = TAKE_PTR(variants);
        ret->n_variants = (size_t)n;
        return 0;
}

/*
 * A pipeline is a list of variants, or a group { placeholder = true; variants = ( ... ); }
 * for the pipeline-wide settings.
 */
static int parse_pipeline(struct parser *p, const config_setting_t *s, struct pipeline *ret)
{
        _cleanup_free_ char *name = NULL, *prefix = NULL, *in = NULL;
        const config_setting_t *list = s;
        bool placeholder = false;
        int r;

        name = strdup(config_setting_name(s));
        if (!name)
                return config_oom(p);
        if (config_setting_is_group(s)) {
                prefix = config_strdup_printf("pipeline '%s': ", name);
                in = config_strdup_printf(" in pipeline '%s'", name);
                if (!prefix || !in)
                        return config_oom(p);
                r = config_check_keys(p, s, config_schema_pipeline, "", in);
                if (r < 0)
                        return r;
                r = config_get_bool(p, s, "placeholder", prefix, &placeholder);
                if (r < 0)
                        return r;
                list = config_setting_get_member(s, "variants");
                if (!list)
                        return config_fail(
                                p, s, -EINVAL,
                                "%s'variants' is required: variants = ( { name = ...; }, ... );",
                                prefix);
                if (!config_setting_is_list(list))
                        return config_fail(
                                p, list, -EINVAL,
                                "%s'variants' must be a list: variants = ( { name = ...; }, "
                                "... );",
                                prefix);
        } else if (!config_setting_is_list(s)) {
                return config_fail(
                        p, s, -EINVAL,
                        "pipeline '%s' must be a list of variants: %s = ( { name = ...; }, "
                        "... ); or a group: %s = { placeholder = true; variants = ( ... ); };",
                        name, name, name);
        }

        r = parse_variants(p, name, list, ret);
        if (r < 0)
                return r;
        ret->name = TAKE_PTR(name);
        ret->placeholder = placeholder;
        return 0;
}

int config_parse_pipelines(struct parser *p, const config_setting_t *root,
                           const struct config_setting *e, const char *prefix, void *base)
{
        const config_setting_t *s = config_setting_get_member(root, e->name);
        struct config *c = base;
        int n, r;

        (void)prefix;

        if (!s)
                return config_fail(p, NULL, -EINVAL, "no pipelines defined: pipelines = { ... };");
        if (!config_setting_is_group(s))
                return config_fail(
                        p, s, -EINVAL,
                        "'pipelines' must be a group of named lists: pipelines = { name = ( "
                        "... ); };");
        n = config_setting_length(s);
        if (n < 1)
                return config_fail(p, s, -EINVAL, "no pipelines defined in 'pipelines'");

        c->pipelines = calloc((size_t)n, sizeof *c->pipelines);
        if (!c->pipelines)
                return config_oom(p);
        for (int i = 0; i < n; i++) {
                r = parse_pipeline(p, config_setting_get_elem(s, i), &c->pipelines[i]);
                if (r < 0)
                        return r;
                c->n_pipelines++;
        }
        return 0;
}

static int parse_watch(struct parser *p, const struct config *c, const config_setting_t *s,
                       int index, struct watch_config *ret)
{
        _cleanup_free_ char *prefix = NULL, *where = NULL, *in = NULL, *path = NULL, *output = NULL,
                            *pipeline_name = NULL, *quarantine = NULL, *on_done = NULL,
                            *on_dead = NULL, *on_retract = NULL;
        const config_setting_t *hook_s = NULL;
        const char *hook = NULL;
        const struct config_setting *hook_timeout_e =
                config_schema_find(config_schema_watch, "hook_timeout");
        /* In the file's unit (seconds); stored as microseconds (.scale). */
        long long hook_timeout = (long long)(hook_timeout_e->def / hook_timeout_e->scale);
        const config_setting_t *pipeline_s = NULL, *path_s;
        const struct pipeline *pipeline;
        const char *pname = NULL;
        bool recursive = false, reconcile = true;
        const config_setting_t *on_delete_s = NULL;
        const char *on_delete_name = NULL;
        int on_delete = WATCH_ON_DELETE_KEEP;
        int r;

        if (!config_setting_is_group(s))
                return config_fail(p, s, -EINVAL, "watch #%d must be a group { path = ...; ... }",
                                   index + 1);

        path_s = config_setting_get_member(s, "path");
        if (path_s && config_setting_type(path_s) == CONFIG_TYPE_STRING)
                where = config_strdup_printf("watch '%s'", config_setting_get_string(path_s));
        else
                where = config_strdup_printf("watch #%d", index + 1);
        if (!where)
                return config_oom(p);
        prefix = config_strdup_printf("%s: ", where);
        in = config_strdup_printf(" in %s", where);
        if (!prefix || !in)
                return config_oom(p);

        r = config_check_keys(p, s, config_schema_watch, "", in);
        if (r < 0)
                return r;

        r = config_get_dir(p, s, "path", prefix, &path);
        if (r < 0)
                return r;
        if (r == 0)
                return config_fail(p, s, -EINVAL, "%s'path' is required", prefix);
        r = config_get_dir(p, s, "output", prefix, &output);
        if (r < 0)
                return r;
        if (r == 0)
                return config_fail(p, s, -EINVAL, "%s'output' is required", prefix);

        r = config_get_string(p, s, "pipeline", prefix, &pipeline_s, &pname);
        if (r < 0)
                return r;
        if (r == 0)
                return config_fail(p, s, -EINVAL, "%s'pipeline' is required", prefix);
        pipeline = config_find_pipeline(c, pname);
        if (!pipeline)
                return config_fail(p, pipeline_s, -EINVAL,
                                   "%spipeline '%s' is not defined in 'pipelines'", prefix, pname);
        pipeline_name = strdup(pname);
        if (!pipeline_name)
                return config_oom(p);

        r = config_get_bool(p, s, "recursive", prefix, &recursive);
        if (r < 0)
                return r;
        r = config_get_bool(p, s, "reconcile", prefix, &reconcile);
        if (r < 0)
                return r;

        r = config_get_string(p, s, "on_delete", prefix, &on_delete_s, &on_delete_name);
        if (r < 0)
                return r;
        if (r > 0) {
                on_delete = watch_on_delete_from_name(on_delete_name);
                if (on_delete < 0)
                        return config_fail(p, on_delete_s, -EINVAL,
                                           "%s'on_delete' must be \"keep\" or \"retract\", not "
                                           "\"%s\"",
                                           prefix, on_delete_name);
        }

        r = config_get_dir(p, s, "quarantine", prefix, &quarantine);
        if (r < 0)
                return r;
        if (quarantine && (config_path_is_below_or_equal(quarantine, path) ||
                           config_path_is_below_or_equal(quarantine, output)))
                return config_fail(
                        p, config_setting_get_member(s, "quarantine"), -EINVAL,
                        "%squarantine %s must be outside the watched path and the output", prefix,
                        quarantine);
        for (int k = 0; k < 3; k++) {
                static const char *const keys[] = { "on_done", "on_dead", "on_retract" };
                const char *key = keys[k];
                r = config_get_string(p, s, key, prefix, &hook_s, &hook);
                if (r < 0)
                        return r;
                if (r == 0)
                        continue;
                if (hook[0] != '/')
                        return config_fail(
                                p, hook_s, -EINVAL,
                                "%s'%s' must be an absolute path to a program, not \"%s\"", prefix,
                                key, hook);
                char *copy = strdup(hook);
                if (!copy)
                        return config_oom(p);
                if (k == 0)
                        on_done = copy;
                else if (k == 1)
                        on_dead = copy;
                else
                        on_retract = copy;
        }
        r = config_get_int_range(p, s, hook_timeout_e->name, prefix, hook_timeout_e->min,
                                 hook_timeout_e->max, &hook_timeout);
        if (r < 0)
                return r;

        ret->quarantine = TAKE_PTR(quarantine);
        ret->on_done = TAKE_PTR(on_done);
        ret->on_dead = TAKE_PTR(on_dead);
        ret->on_retract = TAKE_PTR(on_retract);
        ret->on_delete = (enum watch_on_delete)on_delete;
        ret->hook_timeout_usec = (usec_t)hook_timeout * hook_timeout_e->scale;
        ret->path = TAKE_PTR(path);
        ret->output = TAKE_PTR(output);
        ret->pipeline_name = TAKE_PTR(pipeline_name);
        ret->pipeline = pipeline;
        ret->recursive = recursive;
        ret->reconcile = reconcile;
        ret->line = config_setting_source_line(s);
        return 0;
}

/*
 * Rejects, by name: duplicate watched paths, a watched path inside a recursive watch (the
 * inner tree would belong to both), outputs and quarantine folders that overlap a watched
 * path, and quarantine folders inside an output. config_check_paths() does it again on the
 * resolved directories.
 */
static int check_watch_overlaps(struct parser *p, const config_setting_t *list,
                                const struct config *c)
{
        for (size_t i = 0; i < c->n_watches; i++) {
                const struct watch_config *w = &c->watches[i];
                const config_setting_t *s = config_setting_get_elem(list, (unsigned)i);

                for (size_t j = 0; j < c->n_watches; j++) {
                        const struct watch_config *o = &c->watches[j];

                        if (j < i && strcmp(w->path, o->path) == 0)
                                return config_fail(p, config_setting_get_member(s, "path"), -EINVAL,
                                                   "watch '%s': path is already watched (line %d)",
                                                   w->path, o->line);
                        if (j != i && o->recursive &&
                            config_path_is_below_or_equal(w->path, o->path) &&
                            strcmp(w->path, o->path) != 0)
                                return config_fail(
                                        p, config_setting_get_member(s, "path"), -EINVAL,
                                        "watch '%s': path is inside watch '%s' (line %d), "
                                        "which is recursive; files below it would belong to "
                                        "both watches",
                                        w->path, o->path, o->line);
                        if (config_path_is_below_or_equal(w->output, o->path))
                                return config_fail(
                                        p, config_setting_get_member(s, "output"), -EINVAL,
                                        "watch '%s': output %s is inside watched path %s "
                                        "(line %d); outputs would be picked up as uploads",
                                        w->path, w->output, o->path, o->line);
                        if (config_path_is_below_or_equal(w->path, o->output))
                                return config_fail(
                                        p, config_setting_get_member(s, "path"), -EINVAL,
                                        "watch '%s': watched path is inside output %s of "
                                        "watch '%s' (line %d); outputs would be picked up as "
                                        "uploads",
                                        w->path, o->output, o->path, o->line);
                        if (w->quarantine &&
                            (config_path_is_below_or_equal(w->quarantine, o->path) ||
                             config_path_is_below_or_equal(o->path, w->quarantine)))
                                return config_fail(
                                        p, config_setting_get_member(s, "quarantine"), -EINVAL,
                                        "watch '%s': quarantine %s overlaps watched path "
                                        "%s (line %d); quarantined files would be picked up "
                                        "as uploads",
                                        w->path, w->quarantine, o->path, o->line);
                        if (w->quarantine &&
                            config_path_is_below_or_equal(w->quarantine, o->output))
                                return config_fail(
                                        p, config_setting_get_member(s, "quarantine"), -EINVAL,
                                        "watch '%s': quarantine %s is inside output %s of "
                                        "watch '%s' (line %d)",
                                        w->path, w->quarantine, o->output, o->path, o->line);
                }
        }
        return 0;
}

int config_parse_watches(struct parser *p, const config_setting_t *root,
                         const struct config_setting *e, const char *prefix, void *base)
{
        const config_setting_t *s = config_setting_get_member(root, e->name);
        struct config *c = base;
        int n, r;

        (void)prefix;

        if (!s)
                return config_fail(
                        p, NULL, -EINVAL,
                        "no watch defined: watch = ( { path = ...; output = ...; pipeline = "
                        "...; } );");
        if (!config_setting_is_list(s))
                return config_fail(
                        p, s, -EINVAL,
                        "'watch' must be a list of groups: watch = ( { path = ...; } );");
        n = config_setting_length(s);
        if (n < 1)
                return config_fail(p, s, -EINVAL, "'watch' is empty: at least one watch is needed");

        c->watches = calloc((size_t)n, sizeof *c->watches);
        if (!c->watches)
                return config_oom(p);
        for (int i = 0; i < n; i++) {
                r = parse_watch(p, c, config_setting_get_elem(s, i), i, &c->watches[i]);
                if (r < 0)
                        return r;
                c->n_watches++;
        }
        return check_watch_overlaps(p, s, c);
}

static const char *const watch_on_delete_table[_WATCH_ON_DELETE_MAX] = {
        [WATCH_ON_DELETE_KEEP] = "keep",
        [WATCH_ON_DELETE_RETRACT] = "retract",
};
DEFINE_STRING_TABLE_LOOKUP(watch_on_delete, enum watch_on_delete, NULL)
