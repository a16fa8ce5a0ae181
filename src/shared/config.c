/* SPDX-License-Identifier: MIT */
/*
 * config.c - the entry points of the configuration: config_load(), config_free(),
 * config_find_pipeline(); see config.h (the whole contract) and config-private.h (the files
 * behind it).
 *
 * config_load() reads the file with libconfig, stores the defaults of the table of settings
 * (config-schema.c), then walks the tree once: every group is first checked for unknown
 * settings (so a typo is reported as such rather than as a missing value), then each value is
 * type- and range-checked and copied into a struct config that owns all of its memory.
 * Pipelines are read before watches so that each watch's `pipeline` can point into
 * config.pipelines, which is never reallocated afterwards. The first problem found stops the
 * load and is reported as "FILE:LINE: problem", LINE being where the offending setting (or,
 * for a missing one, the enclosing group) was written.
 *
 * Errors: -ENOENT (and other open errors) when the file cannot be read, -EBADMSG for a
 * libconfig syntax error, -EINVAL for everything the validation rejects, -ENOMEM (where the
 * message may be NULL). On success *ret_error is left alone.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <libconfig.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shared/config-private.h"
#include "shared/config.h"
#include "shared/macro.h"

static inline void config_destroyp(config_t **p)
{
        if (*p)
                config_destroy(*p);
}

static inline void config_freep(struct config **p)
{
        *p = config_free(*p);
}

/* The top level: its unknown settings first, then the table. */
static int parse_root(struct parser *p, const config_setting_t *root, struct config *c)
{
        int r;

        r = config_check_keys(p, root, config_schema, "", "");
        if (r < 0)
                return r;
        return config_parse_table(p, root, config_schema, "", "", c);
}

/* Checks that path can be opened for reading and is not a directory; sets the error. */
static int check_readable(const char *path, char **ret_error)
{
        _cleanup_close_ int fd = -1;
        struct stat st;

        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || fstat(fd, &st) < 0) {
                int r = negative_errno();

                config_set_error(ret_error, "%s: cannot read: %s", path, strerror(-r));
                return r;
        }
        if (S_ISDIR(st.st_mode)) {
                config_set_error(ret_error, "%s: cannot read: %s", path, strerror(EISDIR));
                return -EISDIR;
        }
        return 0;
}

int config_load(const char *path, struct config **ret, char **ret_error)
{
        _cleanup_(config_destroyp) config_t *cfg = NULL;
        _cleanup_free_ char *dir = NULL;
        _cleanup_(config_freep) struct config *c = NULL;
        config_t cfg_storage;
        struct parser p = { .file = path };
        char *slash;
        int r;

        assert(path);
        assert(ret);

        r = check_readable(path, ret_error);
        if (r < 0)
                return r;

        /* @include "x" is resolved next to the file, not in the current directory. */
        dir = strdup(path);
        if (!dir) {
                config_set_error(ret_error, "%s: out of memory", path);
                return -ENOMEM;
        }
        slash = strrchr(dir, '/');
        if (slash)
                *(slash == dir ? slash + 1 : slash) = '\0';

        config_init(&cfg_storage);
        cfg = &cfg_storage;
        if (slash)
                config_set_include_dir(cfg, dir);

        if (!config_read_file(cfg, path)) {
                if (config_error_type(cfg) == CONFIG_ERR_FILE_IO) {
                        config_set_error(ret_error, "%s: cannot read: %s",
                                         config_error_file(cfg) ? config_error_file(cfg) : path,
                                         config_error_text(cfg) ? config_error_text(cfg)
                                                                : "I/O error");
                        return -EIO;
                }
                config_set_error(ret_error, "%s:%d: syntax error: %s",
                                 config_error_file(cfg) ? config_error_file(cfg) : path,
                                 config_error_line(cfg),
                                 config_error_text(cfg) ? config_error_text(cfg) : "?");
                return -EBADMSG;
        }

        c = calloc(1, sizeof *c);
        if (!c) {
                config_set_error(ret_error, "%s: out of memory", path);
                return -ENOMEM;
        }
        config_schema_defaults(config_schema, c);
        p.background = c->background;

        c->file = strdup(path);
        if (!c->file)
                r = config_oom(&p);
        else
                r = parse_root(&p, config_root_setting(cfg), c);
        if (r < 0) {
                if (ret_error)
                        *ret_error = TAKE_PTR(p.error);
                free(p.error);
                return r;
        }

        assert(!p.error);
        *ret = TAKE_PTR(c);
        return 0;
}

struct config *config_free(struct config *c)
{
        if (!c)
                return NULL;

        for (size_t i = 0; i < c->n_watches; i++) {
                free(c->watches[i].path);
                free(c->watches[i].output);
                free(c->watches[i].pipeline_name);
                free(c->watches[i].quarantine);
                free(c->watches[i].on_done);
                free(c->watches[i].on_dead);
                free(c->watches[i].on_retract);
        }
        free(c->watches);
        free(c->control_group);
        free(c->read_group);
        free(c->http.listen);
        for (size_t i = 0; i < c->n_pipelines; i++) {
                free(c->pipelines[i].name);
                free(c->pipelines[i].variants);
        }
        free(c->pipelines);
        free(c->file);
        free(c->state_dir);
        free(c->ledger.conninfo);
        free(c->ledger.node);
        free(c->socket);
        free(c);
        return NULL;
}

const struct pipeline *config_find_pipeline(const struct config *c, const char *name)
{
        assert(c);

        if (!name)
                return NULL;
        for (size_t i = 0; i < c->n_pipelines; i++)
                if (strcmp(c->pipelines[i].name, name) == 0)
                        return &c->pipelines[i];
        return NULL;
}

const char *config_ledger_node(const struct config *c, char *buf, size_t size)
{
        char host[HOST_NAME_MAX + 1] = "";

        assert(buf && size > 0);
        if (c->ledger.node) {
                snprintf(buf, size, "%s", c->ledger.node);
                return buf;
        }
        if (gethostname(host, sizeof host) < 0 || !host[0])
                snprintf(host, sizeof host, "imgd");
        host[sizeof host - 1] = '\0';
        snprintf(buf, size, "%.50s", host);
        return buf;
}
