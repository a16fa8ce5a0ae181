/* SPDX-License-Identifier: MIT */
/*
 * ledger-retract.c - what retraction (issue 17) asks of the ledger: retract, drop and move
 * jobs queued (each one transaction with the cancellation of the work it makes pointless),
 * the job each works from (ledger_origin()), and their completion (a move's together with its old
 * path's retraction). See ledger.h, enum job_kind.
 */
#include <errno.h>
#include <stdbool.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/ledger-private.h"
#include "shared/alloc.h"

/* The newest done job of `path` into *ret_id: 1, or 0 when there is none or it is a
 * retraction. */
static int published_of_path_locked(ledger *l, const char *path, int64_t *ret_id)
{
        _cleanup_cursor_ struct ledger_cursor st = ledger_stmt_get(l, STMT_PUBLISHED_OF_PATH);
        int r = ledger_bind_step(l, &st, "t", path);

        if (r <= 0)
                return r;
        if (ledger_column_int64(&st, 1))
                return 0;
        *ret_id = ledger_column_int64(&st, 0);
        return 1;
}

/* The newest job of `path` into *ret_id, and whether it is a retraction and running: 1, or 0
 * when the path has no job. */
static int newest_of_path_locked(ledger *l, const char *path, int64_t *ret_id, bool *ret_retract,
                                 bool *ret_running)
{
        _cleanup_cursor_ struct ledger_cursor st = ledger_stmt_get(l, STMT_NEWEST_OF_PATH);
        int r = ledger_bind_step(l, &st, "t", path);

        if (r <= 0)
                return r;
        *ret_id = ledger_column_int64(&st, 0);
        if (ret_retract)
                *ret_retract = ledger_column_int64(&st, 1) != 0;
        if (ret_running)
                *ret_running = ledger_column_int64(&st, 2) != 0;
        return 1;
}

/* Cancels the queued and retried jobs of `path` older than job id. */
static int supersede_locked(ledger *l, const char *path, int64_t id, int64_t now_usec)
{
        char reason[64];

        snprintf(reason, sizeof reason, "superseded by job %" PRId64, id);
        return ledger_stmt_exec(l, STMT_SUPERSEDE, "titi", path, id, reason, now_usec);
}

/* Queues a job of `kind` (retract, drop) from job `origin` of the path (its row copied); its id
 * in *ret_id. */
static int insert_retract_locked(ledger *l, int64_t origin, const char *kind, const char *redo,
                                 enum job_priority priority, int64_t now_usec, int64_t *ret_id)
{
        int r = ledger_stmt_insert(l, STMT_INSERT_RETRACT, ret_id, "itiit", origin, kind, now_usec,
                                   (int64_t)priority, redo);

        if (r < 0)
                return r;
        if (r == 0)
                return ledger_error(l, -ENOENT, "job %" PRId64 " is gone", origin);
        ledger_wake_locked(l);
        return 0;
}

static int retract_locked(ledger *l, const char *path, int64_t now_usec, int64_t *ret_id)
{
        int64_t newest = 0, origin = 0, id = 0;
        bool retract = false, running = false;
        int r;

        /* Nodes that saw the same removal take turns: the second finds the retraction. */
        r = ledger_lock_source_locked(l, path);
        if (r < 0)
                return r;

        r = newest_of_path_locked(l, path, &newest, &retract, &running);
        if (r <= 0)
                return r;
        if (retract)
                return 0; /* retracted, or a retraction waits already */
        r = published_of_path_locked(l, path, &origin);
        if (r < 0)
                return r;
        if (r == 0 && !running) {
                /* Nothing published, nothing rendering: what waits for the file is pointless. */
                r = ledger_stmt_exec(l, STMT_SUPERSEDE, "titi", path, INT64_MAX,
                                     "source removed before processing", now_usec);
                return r < 0 ? r : 0;
        }
        /* A render running for the path is superseded by the retraction: it will not publish,
         * and what is published is removed. The row is copied from the newest job. */
        r = insert_retract_locked(l, newest, "retract", NULL, JOB_PRIORITY_LIVE, now_usec, &id);
        if (r < 0)
                return r;
        r = supersede_locked(l, path, id, now_usec);
        if (r < 0)
                return r;
        if (ret_id)
                *ret_id = id;
        return 1;
}

int ledger_retract(ledger *l, const char *path, int64_t now_usec, int64_t *ret_id)
{
        assert(l);
        assert(path);

        return LEDGER_WRITE(l, retract_locked(l, path, now_usec, ret_id));
}

static int drop_locked(ledger *l, int64_t id, const char *variants, int64_t now_usec,
                       int64_t *ret_id)
{
        _cleanup_cursor_ struct ledger_cursor st = ledger_stmt_get(l, STMT_IS_CURRENT_DONE);
        int64_t new_id = 0;
        int r;

        /* Nodes dropping from the same source take turns (as ledger_reconcile()); then only
         * from the source's current done job: nothing else may be waiting. */
        r = ledger_lock_source_of_locked(l, id);
        if (r < 0)
                return r;
        r = ledger_bind_step(l, &st, "i", id);
        if (r <= 0)
                return r;
        r = insert_retract_locked(l, id, "drop", variants, JOB_PRIORITY_BACKGROUND, now_usec,
                                  &new_id);
        if (r < 0)
                return r;
        if (ret_id)
                *ret_id = new_id;
        return 1;
}

int ledger_drop(ledger *l, int64_t id, const char *variants, int64_t now_usec, int64_t *ret_id)
{
        assert(l);
        assert(variants);

        return LEDGER_WRITE(l, drop_locked(l, id, variants, now_usec, ret_id));
}

static int move_locked(ledger *l, const char *old_path, const struct source_info *src,
                       int64_t now_usec, int64_t *ret_id)
{
        char sha256[HASH_HEX_SIZE];
        int64_t origin = 0, newest = 0, id;
        int r;

        /* Both paths, in one order whichever node takes them. */
        r = ledger_lock_source_locked(l, strcmp(old_path, src->path) < 0 ? old_path : src->path);
        if (r >= 0)
                r = ledger_lock_source_locked(l, strcmp(old_path, src->path) < 0 ? src->path
                                                                                 : old_path);
        if (r < 0)
                return r;

        r = published_of_path_locked(l, old_path, &origin);
        if (r <= 0)
                return r;
        /* The old path's newest job: else a newer file came there, and this one is an
         * upload. */
        r = newest_of_path_locked(l, old_path, &newest, NULL, NULL);
        if (r <= 0 || newest != origin)
                return r < 0 ? r : 0;
        {
                /* The same file: a rename keeps its inode, size and mtime. */
                _cleanup_cursor_ struct ledger_cursor st = ledger_stmt_get(l, STMT_GET_JOB);

                r = ledger_bind_step(l, &st, "i", origin);
                if (r <= 0)
                        return r;
                if ((uint64_t)ledger_column_int64(&st, 6) != src->size ||
                    ledger_column_int64(&st, 7) != src->mtime_ns ||
                    (uint64_t)ledger_column_int64(&st, 8) != src->ino)
                        return 0;
                r = ledger_column_sha256(l, &st, 5, sha256);
                if (r < 0)
                        return r;
        }
        r = ledger_stmt_insert(l, STMT_INSERT_MOVE, &id, "tttiiittii", src->watch, src->path,
                               sha256, (int64_t)src->size, src->mtime_ns, (int64_t)src->ino,
                               src->output_key, src->pipeline, now_usec, origin);
        if (r < 0)
                return r;
        if (r == 0)
                return ledger_error(l, -EIO, "the move job was not recorded");
        ledger_wake_locked(l);
        r = supersede_locked(l, src->path, id, now_usec);
        if (r < 0)
                return r;
        if (ret_id)
                *ret_id = id;
        return 1;
}

int ledger_move(ledger *l, const char *old_path, const struct source_info *src, int64_t now_usec,
                int64_t *ret_id)
{
        assert(l);
        assert(old_path);
        assert(src);

        if (!src->watch || !src->path || !src->output_key || !src->pipeline)
                return ledger_error(l, -EINVAL, "incomplete source description");
        return LEDGER_WRITE(l, move_locked(l, old_path, src, now_usec, ret_id));
}

int ledger_paths_below(ledger *l, const char *dir, char ***ret, size_t *ret_n)
{
        _cleanup_cursor_ struct ledger_cursor st = ledger_stmt_get(l, STMT_PATHS_BELOW);
        _cleanup_free_ char *from = NULL, *to = NULL;
        char **v = NULL;
        size_t n = 0, allocated = 0;
        int r;

        assert(l);
        assert(dir);
        assert(ret);
        assert(ret_n);

        /* [dir/, dir0): every path that begins with "dir/" ('0' follows '/'). */
        if (asprintf(&from, "%s/", dir) < 0 || asprintf(&to, "%s0", dir) < 0)
                return ledger_error(l, -ENOMEM, "out of memory");
        r = ledger_stmt_bind(l, &st, "tt", from, to);
        while (r >= 0 && (r = ledger_stmt_step(l, &st)) > 0) {
                if (GROW_ARRAY(v, allocated, n + 1) < 0) {
                        r = ledger_error(l, -ENOMEM, "out of memory");
                        break;
                }
                r = ledger_column_strdup(l, &st, 0, &v[n]);
                if (r < 0)
                        break;
                n++;
        }
        if (r < 0) {
                for (size_t i = 0; i < n; i++)
                        free(v[i]);
                free(v);
                return r;
        }
        *ret = v;
        *ret_n = n;
        return 0;
}

/* The job retract, drop or move job id works from (STMT_ORIGIN) into *ret_origin: 1, or 0
 * when nothing is published (no done job, or a retraction). */
static int origin_locked(ledger *l, int64_t id, int64_t *ret_origin)
{
        _cleanup_cursor_ struct ledger_cursor st = ledger_stmt_get(l, STMT_ORIGIN);
        int r = ledger_bind_step(l, &st, "i", id);

        if (r <= 0)
                return r;
        if (ledger_column_int64(&st, 1))
                return 0;
        *ret_origin = ledger_column_int64(&st, 0);
        return 1;
}

/* The source path of job id into *ret (owned by the caller): 1, or 0 when there is no such
 * job. */
static int source_path_locked(ledger *l, int64_t id, char **ret)
{
        _cleanup_cursor_ struct ledger_cursor st = ledger_stmt_get(l, STMT_GET_JOB);
        int r = ledger_bind_step(l, &st, "i", id);

        if (r <= 0)
                return r;
        r = ledger_column_strdup(l, &st, 2, ret);
        return r < 0 ? r : 1;
}

int ledger_origin(ledger *l, int64_t id, struct job_detail **ret)
{
        int64_t origin = 0;
        int r;

        assert(l);
        assert(ret);

        r = origin_locked(l, id, &origin);
        if (r <= 0)
                return r;
        return ledger_get(l, origin, ret);
}

static int complete_retract_locked(ledger *l, int64_t id, int64_t fence,
                                   const struct job_output *outs, size_t n_outs, int64_t now_usec)
{
        _cleanup_free_ char *old_path = NULL;
        int64_t origin = 0, newest = 0, marker;
        enum job_kind kind;
        int r;

        {
                _cleanup_cursor_ struct ledger_cursor st = ledger_stmt_get(l, STMT_GET_JOB);

                r = ledger_bind_step(l, &st, "i", id);
                if (r < 0)
                        return r;
                if (r == 0)
                        return ledger_error(l, -ESTALE, "job %" PRId64 " is gone", id);
                r = ledger_column_null(&st, 20) ? JOB_RENDER
                                                : job_kind_from_name(ledger_column_text(&st, 20));
                if (r <= 0)
                        return ledger_error(l, -ESTALE, "job %" PRId64 " is not a retraction", id);
                kind = (enum job_kind)r;
        }
        r = origin_locked(l, id, &origin);
        if (r < 0)
                return r;
        r = ledger_complete_locked(l, id, fence, outs, n_outs, now_usec);
        if (r < 0 || origin == 0 || kind == JOB_RETRACT)
                return r;
        r = ledger_stmt_exec(l, STMT_COPY_RENDER_INFO, "ii", id, origin);
        if (r < 0 || kind != JOB_MOVE)
                return r;
        r = source_path_locked(l, origin, &old_path);
        if (r <= 0)
                return r;
        r = newest_of_path_locked(l, old_path, &newest, NULL, NULL);
        if (r <= 0)
                return r;
        /* A newer job of the old path (a new file there) replaces its outputs itself. */
        if (newest != origin)
                return 0;
        r = insert_retract_locked(l, origin, "retract", NULL, JOB_PRIORITY_LIVE, now_usec, &marker);
        if (r < 0)
                return r;
        return ledger_stmt_exec(l, STMT_SET_DONE, "ii", marker, now_usec);
}

int ledger_complete_retract(ledger *l, int64_t id, int64_t fence, const struct job_output *outs,
                            size_t n_outs, int64_t now_usec)
{
        assert(l);
        assert(outs || n_outs == 0);

        return LEDGER_WRITE(l, complete_retract_locked(l, id, fence, outs, n_outs, now_usec));
}

static int move_to_render_locked(ledger *l, int64_t id, int64_t fence, int64_t now_usec)
{
        _cleanup_free_ char *old_path = NULL;
        int64_t origin = 0, ignored;
        int r;

        r = origin_locked(l, id, &origin);
        if (r < 0)
                return r;
        r = ledger_stmt_changes(l, STMT_MOVE_TO_RENDER, "i", id);
        if (r < 0)
                return r;
        if (r == 0)
                return ledger_error(l, -ESTALE, "job %" PRId64 " is not a move", id);
        r = ledger_release_locked(l, id, fence, now_usec, now_usec);
        if (r < 0 || origin == 0)
                return r;
        r = source_path_locked(l, origin, &old_path);
        if (r <= 0)
                return r;
        r = retract_locked(l, old_path, now_usec, &ignored);
        return r < 0 ? r : 0;
}

int ledger_move_to_render(ledger *l, int64_t id, int64_t fence, int64_t now_usec)
{
        assert(l);

        return LEDGER_WRITE(l, move_to_render_locked(l, id, fence, now_usec));
}
