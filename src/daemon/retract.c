/* SPDX-License-Identifier: MIT */
/*
 * retract.c - retract, drop and move jobs carried out; see retract.h.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/publish.h"
#include "daemon/retract.h"
#include "daemon/source.h"
#include "shared/alloc.h"
#include "shared/fault.h"
#include "shared/log.h"
#include "shared/manifest.h"

void retract_result_clear(struct retract_result *r)
{
        for (size_t i = 0; i < r->n_removed; i++)
                free(r->removed[i]);
        free(r->removed);
        for (size_t i = 0; i < r->n_kept; i++)
                free(r->kept[i]);
        free(r->kept);
        job_outputs_free(r->outputs, r->n_outputs);
        free(r->from);
        *r = (struct retract_result){};
}

static int strv_add(char ***v, size_t *n, const char *s)
{
        char **grown = realloc(*v, (*n + 1) * sizeof **v);

        if (!grown)
                return -ENOMEM;
        *v = grown;
        if (!(grown[*n] = strdup(s)))
                return -ENOMEM;
        (*n)++;
        return 0;
}

/* A copy of output o, at `path` instead of its own (NULL: its own). */
static int output_copy(const struct job_output *o, const char *path, struct job_output *ret)
{
        *ret = (struct job_output){
                .width = o->width,
                .height = o->height,
                .bytes = o->bytes,
        };
        memcpy(ret->sha256, o->sha256, sizeof ret->sha256);
        memcpy(ret->recipe, o->recipe, sizeof ret->recipe);
        ret->variant = strdup(o->variant);
        ret->path = strdup(path ?: o->path);
        ret->format = strdup(o->format);
        if (!ret->variant || !ret->path || !ret->format) {
                job_output_clear(ret);
                return -ENOMEM;
        }
        return 0;
}

static int result_add_output(struct retract_result *res, const struct job_output *o,
                             const char *path)
{
        struct job_output *grown = realloc(res->outputs, (res->n_outputs + 1) * sizeof *grown);
        int r;

        if (!grown)
                return -ENOMEM;
        res->outputs = grown;
        r = output_copy(o, path, &grown[res->n_outputs]);
        if (r < 0)
                return r;
        res->n_outputs++;
        return 0;
}

static int fail(char **ret_error, int r, const char *fmt, ...) _printf_(3, 4);
static int fail(char **ret_error, int r, const char *fmt, ...)
{
        va_list ap;
        char *msg = NULL;

        va_start(ap, fmt);
        if (vasprintf(&msg, fmt, ap) < 0)
                msg = NULL;
        va_end(ap);
        free(*ret_error);
        *ret_error = msg;
        return r;
}

/* Unlinks output o if its file still has the content imgd recorded (publish_unlink_own()). */
static int remove_output(const struct job_output *o, struct publish_dirs *dirs)
{
        int r = publish_unlink_own(o->path, o->sha256, dirs);

        if (r > 0)
                fault_point("retract.after_unlink");
        return r;
}

/* The manifest at output_key: unlinked if job `writer` wrote it; left alone otherwise (another
 * source's, or one written after). 0 or a negative errno. */
static int remove_manifest(const char *output_key, int64_t writer, struct publish_dirs *dirs)
{
        _cleanup_free_ char *path = NULL, *text = NULL, *error = NULL;
        _cleanup_(manifest_freep) struct manifest *m = NULL;
        _cleanup_close_ int fd = -1;
        size_t n = 0;
        int r;

        r = manifest_path(output_key, &path);
        if (r < 0)
                return r;
        fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0)
                return errno == ENOENT ? 0 : -errno;
        text = malloc(MANIFEST_MAX_BYTES + 1);
        if (!text)
                return -ENOMEM;
        while (n <= MANIFEST_MAX_BYTES) {
                ssize_t k = read(fd, text + n, MANIFEST_MAX_BYTES + 1 - n);

                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        return -errno;
                if (k == 0)
                        break;
                n += (size_t)k;
        }
        /* Not a manifest imgd wrote for this source: not imgd's to remove. */
        if (n > MANIFEST_MAX_BYTES || manifest_parse(text, n, &m, &error) < 0 || m->job != writer)
                return 0;
        if (unlink(path) < 0)
                return errno == ENOENT ? 0 : -errno;
        return publish_dirs_add(dirs, path) < 0 ? -ENOMEM : 0;
}

/* The origin's `info` (what its render reported), without the variants in `dropped` (a JSON
 * list; may be NULL): the extra members of the manifest. NULL when it has none. */
static json_t *origin_extra(const struct job *origin, const json_t *dropped)
{
        json_t *info = origin->info ? json_loads(origin->info, 0, NULL) : NULL;
        json_t *variants = info ? json_object_get(info, "variants") : NULL;
        size_t i;
        json_t *name;

        if (json_is_object(variants) && dropped)
                json_array_foreach(dropped, i, name) if (json_is_string(name))
                        json_object_del(variants, json_string_value(name));
        return info;
}

static bool listed(const json_t *list, const char *name)
{
        size_t i;
        json_t *v;

        json_array_foreach(list, i, v) if (json_is_string(v) &&
                                           strcmp(json_string_value(v), name) == 0) return true;
        return false;
}

static int retract_or_drop(const struct job *job, const struct job_detail *d,
                           struct publish_dirs *dirs, struct retract_result *res, char **ret_error)
{
        _cleanup_(json_decrefp) json_t *dropped = NULL, *extra = NULL;
        int r;

        if (job->kind == JOB_DROP) {
                dropped = job->redo ? json_loads(job->redo, 0, NULL) : NULL;
                if (!json_is_array(dropped))
                        return fail(ret_error, -EBADMSG,
                                    "job %" PRId64 ": its list of variants to drop is not a "
                                    "JSON list",
                                    job->id);
        }
        for (size_t i = 0; i < d->n_outputs; i++) {
                const struct job_output *o = &d->outputs[i];

                if (dropped && !listed(dropped, o->variant)) {
                        if (result_add_output(res, o, NULL) < 0)
                                return fail(ret_error, -ENOMEM, "out of memory");
                        continue;
                }
                r = remove_output(o, dirs);
                if (r == -EEXIST) {
                        if (strv_add(&res->kept, &res->n_kept, o->path) < 0)
                                return fail(ret_error, -ENOMEM, "out of memory");
                        continue;
                }
                if (r < 0)
                        return fail(ret_error, r, "remove %s: %s", o->path, strerror(-r));
                if (r > 0 && strv_add(&res->removed, &res->n_removed, o->path) < 0)
                        return fail(ret_error, -ENOMEM, "out of memory");
        }
        if (job->kind == JOB_DROP && res->n_outputs > 0) {
                /* The manifest lists what is left, under the drop job's id. */
                extra = origin_extra(&d->job, dropped);
                r = publish_manifest(job, res->outputs, res->n_outputs, extra);
                if (r < 0)
                        return fail(ret_error, r, "write the manifest of %s: %s", job->output_key,
                                    strerror(-r));
                return 0;
        }
        r = remove_manifest(d->job.output_key, d->job.id, dirs);
        if (r < 0)
                return fail(ret_error, r, "remove the manifest of %s: %s", d->job.output_key,
                            strerror(-r));
        return 0;
}

/* 1 when moved (or every output is at its new name already); 0 when an output is found at
 * neither name (the job becomes a render). */
static int move(const struct job *job, const struct job_detail *d, struct publish_dirs *dirs,
                struct retract_result *res, char **ret_error)
{
        _cleanup_(json_decrefp) json_t *extra = NULL;
        size_t key_len = strlen(d->job.output_key);
        int r;

        res->from = strdup(d->job.source_path);
        if (!res->from)
                return fail(ret_error, -ENOMEM, "out of memory");
        for (size_t i = 0; i < d->n_outputs; i++) {
                const struct job_output *o = &d->outputs[i];
                _cleanup_free_ char *to = NULL;

                if (strncmp(o->path, d->job.output_key, key_len) != 0)
                        return 0; /* not named after its source: render it again */
                if (asprintf(&to, "%s%s", job->output_key, o->path + key_len) < 0)
                        return fail(ret_error, -ENOMEM, "out of memory");
                if (!publish_file_has(to, o->sha256)) {
                        _cleanup_free_ char *dir = strdup(to);
                        char *slash = dir ? strrchr(dir, '/') : NULL;

                        if (!publish_file_has(o->path, o->sha256))
                                return 0;
                        if (!slash)
                                return fail(ret_error, -ENOMEM, "out of memory");
                        *slash = '\0';
                        r = publish_mkdir_parents(dir, 0755);
                        if (r < 0)
                                return fail(ret_error, r, "create %s: %s", dir, strerror(-r));
                        if (rename(o->path, to) < 0)
                                return fail(ret_error, -errno, "rename %s to %s: %m", o->path, to);
                        fault_point("retract.after_rename");
                }
                if (publish_dirs_add(dirs, o->path) < 0 || publish_dirs_add(dirs, to) < 0 ||
                    strv_add(&res->removed, &res->n_removed, o->path) < 0 ||
                    result_add_output(res, o, to) < 0)
                        return fail(ret_error, -ENOMEM, "out of memory");
        }
        extra = origin_extra(&d->job, NULL);
        r = publish_manifest(job, res->outputs, res->n_outputs, extra);
        if (r < 0)
                return fail(ret_error, r, "write the manifest of %s: %s", job->output_key,
                            strerror(-r));
        r = remove_manifest(d->job.output_key, d->job.id, dirs);
        if (r < 0)
                return fail(ret_error, r, "remove the manifest of %s: %s", d->job.output_key,
                            strerror(-r));
        return 1;
}

/* Unlinks the outputs of `d` at the names of move job `job` that still have d's content (moved
 * there by an earlier attempt, or by this one before it found an output missing). */
static int unmove(const struct job *job, const struct job_detail *d, struct publish_dirs *dirs)
{
        size_t key_len = strlen(d->job.output_key);

        for (size_t i = 0; i < d->n_outputs; i++) {
                const struct job_output *o = &d->outputs[i];
                _cleanup_free_ char *to = NULL;
                int r;

                if (strncmp(o->path, d->job.output_key, key_len) != 0)
                        continue;
                if (asprintf(&to, "%s%s", job->output_key, o->path + key_len) < 0)
                        return -ENOMEM;
                r = publish_unlink_own(to, o->sha256, dirs);
                if (r < 0 && r != -EEXIST)
                        return r;
        }
        return 0;
}

/* Whether the file at a move job's path is still the one renamed there (its stat as the job
 * recorded it). */
static bool same_file(const struct job *job)
{
        struct stat st;

        return lstat(job->source_path, &st) == 0 && S_ISREG(st.st_mode) &&
               (uint64_t)st.st_size == job->size && (uint64_t)st.st_ino == job->ino &&
               source_mtime_ns(&st) == job->mtime_ns;
}

int retract_run(ledger *l, const struct job *job, int64_t now_usec, struct retract_result *ret,
                char **ret_error)
{
        _cleanup_(job_detail_freep) struct job_detail *d = NULL;
        struct retract_result res = {};
        struct publish_dirs dirs = {};
        const char *failed_dir = NULL;
        int r;

        assert(l);
        assert(job);
        assert(job->kind != JOB_RENDER);
        assert(ret);
        assert(ret_error);

        *ret_error = NULL;
        r = ledger_origin(l, job->id, &d);
        if (r < 0) {
                r = fail(ret_error, r, "ledger: the outputs of job %" PRId64 ": %s", job->id,
                         ledger_errmsg(l));
                goto out;
        }
        if (job->kind == JOB_MOVE) {
                /* Nothing of the old path published (any more), or the file gone or replaced
                 * since the rename (while imgd was not running, say), or an output found at
                 * neither name: the old names are retracted, and the file, if any, rendered
                 * as an upload. */
                if (r == 0 && job->origin > 0 && ledger_get(l, job->origin, &d) < 0)
                        d = NULL; /* retracted meanwhile: what it had, for unmove() */
                if (r == 0 || !same_file(job))
                        goto render;
                r = move(job, d, &dirs, &res, ret_error);
                if (r == 0)
                        goto render;
        } else if (r > 0)
                r = retract_or_drop(job, d, &dirs, &res, ret_error);
        if (r < 0)
                goto out;
        r = publish_dirs_sync(&dirs, &failed_dir);
        if (r < 0) {
                r = fail(ret_error, r, "fsync %s: %s", failed_dir, strerror(-r));
                goto out;
        }
        fault_point("retract.before_complete");
        r = ledger_complete_retract(l, job->id, job->fence, res.outputs, res.n_outputs, now_usec);
        if (r < 0) {
                r = fail(ret_error, r, "ledger: complete job %" PRId64 ": %s", job->id,
                         ledger_errmsg(l));
                goto out;
        }
        goto done;

render:
        /* What an attempt of it moved to the new names goes too (the render makes its own). */
        r = d ? unmove(job, d, &dirs) : 0;
        if (r < 0) {
                r = fail(ret_error, r, "remove the outputs moved for %s: %s", job->source_path,
                         strerror(-r));
                goto out;
        }
        r = publish_dirs_sync(&dirs, &failed_dir);
        if (r < 0) {
                r = fail(ret_error, r, "fsync %s: %s", failed_dir, strerror(-r));
                goto out;
        }
        r = ledger_move_to_render(l, job->id, job->fence, now_usec);
        if (r < 0) {
                r = fail(ret_error, r, "ledger: job %" PRId64 ": render instead of moving: %s",
                         job->id, ledger_errmsg(l));
                goto out;
        }
        retract_result_clear(&res);
        res.rendered = true;
done:
        *ret = res;
        res = (struct retract_result){};
        r = 0;
out:
        retract_result_clear(&res);
        publish_dirs_clear(&dirs);
        return r;
}
