/* SPDX-License-Identifier: MIT */
/*
 * publish.h - putting outputs into the output tree so that a reader never sees a partial
 * file. An output is first a temporary file ".imgd-<job>-<n>-<random>.tmp" created in its
 * destination directory (O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC), written and fsynced by a
 * worker, then renamed over its final name; the directory is fsynced after the rename.
 * Temporary files left by a crash are removed by publish_sweep() at start.
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "daemon/ledger.h"

/* The `index` of a manifest's temporary file (publish_tmp_open()). */
#define PUBLISH_MANIFEST_INDEX 9999

struct publish_tmp {
        char *final_path; /* where it goes */
        char *tmp_path;   /* where it is being written */
        int fd;           /* open for writing, -1 once closed */
};

/*
 * Creates the destination directory of final_path (and its parents, mode 0755) and a new
 * temporary file beside final_path for job `job_id`, output `index`. Returns 0 and fills
 * *ret, or a negative errno (the directory may have been created).
 */
int publish_tmp_open(const char *final_path, int64_t job_id, unsigned index,
                     struct publish_tmp *ret);

/*
 * mkdir -p of `dir` (absolute) with `mode`. Each directory created is made durable in its
 * parent (the parent is fsynced), so that a file later renamed into it survives a power cut.
 * Returns 0, -ENOTDIR when something else is in the way, or the negative errno of mkdir/fsync.
 */
int publish_mkdir_parents(const char *dir, mode_t mode);

/*
 * The same name as publish_tmp_open() would give, without creating the file (fd -1): for a
 * worker that creates it, O_EXCL, in the directory publish_dir_open() opened (issue 16: the
 * creation costs the single-threaded supervisor an inode allocation per file). Returns 0 or
 * -ENOMEM.
 */
int publish_tmp_name(const char *final_path, int64_t job_id, unsigned index,
                     struct publish_tmp *ret);

/* Creates the directory of final_path as publish_tmp_open() does and opens it (O_PATH): the
 * descriptor a worker creates its files in. Returns it, or a negative errno. */
int publish_dir_open(const char *final_path);

/* Closes and unlinks the temporary file if it still exists, frees the members. */
void publish_tmp_discard(struct publish_tmp *t);

/*
 * The directories whose entries a publication changed, each once: fsynced together
 * (publish_dirs_sync()) after the renames of several jobs, before any of them is completed.
 */
struct publish_dirs {
        char **paths;
        size_t n, allocated;
};

/* Adds the directory holding file `path`, unless it is there already. 0 or -ENOMEM. */
int publish_dirs_add(struct publish_dirs *d, const char *path);

/* Fsyncs each directory. On failure returns a negative errno with the failing directory in
 * *ret_failed_dir (borrowed from d, valid until publish_dirs_clear()). */
int publish_dirs_sync(struct publish_dirs *d, const char **ret_failed_dir);

/* Frees the list; d is empty again. */
void publish_dirs_clear(struct publish_dirs *d);

/*
 * Renames tmps[0..n) over their final paths: checks each file has `sizes[i]` bytes (and, one
 * a worker created, fd -1, is a regular file), closes it (checking for a deferred write
 * error), renames it, and adds its directory to `dirs`, to be
 * fsynced before the job is completed. On failure returns a negative errno with the failing
 * path in *ret_failed_path (borrowed from tmps); files renamed before the failure stay
 * published. Frees nothing: call publish_tmp_discard() on each afterwards.
 */
int publish_rename(struct publish_tmp *tmps, const uint64_t *sizes, size_t n,
                   struct publish_dirs *dirs, const char **ret_failed_path);

/* publish_rename(), then the fsync of each distinct directory: the publication of one job. */
int publish_commit(struct publish_tmp *tmps, const uint64_t *sizes, size_t n,
                   const char **ret_failed_path);

/*
 * The manifest of a source's outputs: "<output key>.manifest.json", published after all of
 * its variants (written to a temporary file, fsynced, renamed, its directory fsynced), by the
 * recovery at start (a job in the scheduler has its worker write it: jobprep_manifest()). It
 * lists every variant's file, format, dimensions, bytes and SHA-256, with the source's path
 * and SHA-256, the job id and the pipeline; members of `extra` (may be NULL) are added (the
 * format: shared/manifest.h, which imgctl verify reads it with). A reader that needs all
 * variants of one content reads the manifest first: every file it lists has that content
 * until the next manifest of the source replaces it. Returns 0 or a negative errno.
 */
int publish_manifest(const struct job *job, const struct job_output *outs, size_t n,
                     const json_t *extra);

/* 1 if the file at `path` is a regular file (not followed if a symlink) whose SHA-256 is
 * `sha256` (hex), 0 if not, or missing, or unreadable. */
int publish_file_has(const char *path, const char *sha256);

/*
 * Unlinks the output at `path` if it still has the content imgd recorded (`sha256`) and adds
 * its directory to `dirs`, to be fsynced before the removal is recorded. Returns 1 if removed,
 * 0 if it was gone already, -EEXIST if its content changed since (it is not imgd's any more:
 * left in place), or a negative errno.
 */
int publish_unlink_own(const char *path, const char *sha256, struct publish_dirs *dirs);

/*
 * After a job rendered the variants of `now` again: unlinks (publish_unlink_own()) the files of
 * `prev`, the outputs of the source's previous done job, whose variant is in `now` under
 * another name (a format changed, or format "best" chose another), which no manifest lists
 * any more. Returns 0 or a negative errno (the first failure; the others are still tried);
 * files changed since stay.
 */
int publish_unlink_replaced(const struct job_output *prev, size_t n_prev,
                            const struct job_output *now, size_t n_now, struct publish_dirs *dirs);

/*
 * Removes imgd's temporary files (pathmap_is_own_temp()) below `root`, not following
 * symlinks. Returns the number removed, or a negative errno if root cannot be read.
 */
int publish_sweep(const char *root);

/* Whether the temporary files of job `job_id` (-1: a name without one) are to be kept. */
typedef bool (*publish_keep_fn)(int64_t job_id, void *userdata);

/* publish_sweep(), keeping the temporary files that keep() says to keep: those of jobs other
 * nodes of a shared ledger are working on. */
int publish_sweep_keep(const char *root, publish_keep_fn keep, void *userdata);

/*
 * Removes the temporary files of job `job_id` in directory `dir` (not below it): those of a
 * claim that was lost, removed by the node that rescued the job while it holds the job's row,
 * so that the stale claim cannot rename them over the outputs of the claim after it. Returns
 * the number removed, or a negative errno (the first failure; the others are still tried).
 */
int publish_unlink_job_temps(const char *dir, int64_t job_id);
