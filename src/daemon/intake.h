/* SPDX-License-Identifier: MIT */
/*
 * intake.h - turning a file in an upload folder into a job. The file is opened without
 * following symlinks and without blocking (a FIFO never stalls the daemon), must be a
 * regular file within limits.max_file_bytes, is hashed (SHA-256) unless the ledger already
 * knows it by size, mtime and inode, and is enqueued in the ledger.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "shared/config.h"
#include "shared/time-util.h"
#include "daemon/ledger.h"

/*
 * Enqueues `path`, a file below watch `w`. Returns 1 and the new job's id in *ret_id (may be
 * NULL) when a job was created, 0 when the file needs no job (already known, ignored name,
 * not a regular file), or a negative errno with a message in *ret_error (owned by caller).
 */
int intake_file(ledger *l, const struct config *cfg, const struct watch_config *w, const char *path,
                int64_t now_usec, int64_t *ret_id, char **ret_error);

/*
 * `from`, a file below watch `w` with published outputs, was renamed to `to` in the same tree
 * (on_delete = "retract"): queues the move of its outputs (ledger_move()) when `to` is the
 * same file (its stat as recorded). Returns 1 and the move job's id in *ret_id; 0 when it is
 * not a move imgd can make (retract `from` and take `to` in); or a negative errno with a
 * message naming the files in *ret_error (owned by the caller).
 */
int intake_moved(ledger *l, const struct watch_config *w, const char *from, const char *to,
                 int64_t now_usec, int64_t *ret_id, char **ret_error);

/*
 * Whether an error of intake_file() is the machine's rather than the file's (the ledger's
 * disk is full or read-only, the process is out of descriptors or memory, an I/O error), so
 * that taking the file in again later can succeed. Refusals (a symlink, not a regular file,
 * hard-linked, too large, not below its folder) are not.
 */
bool intake_error_transient(int r);

/*
 * The uploads whose intake failed for a transient reason, taken in again with a backoff
 * (INTAKE_RETRY_MIN_USEC, doubling while any still fails, up to INTAKE_RETRY_MAX_USEC) until
 * they succeed or fail for good, so that none is lost once the fault clears. A round of
 * retries runs in slices between turns of the event loop. Memory is bounded: past
 * INTAKE_RETRY_MAX_FILES uploads the others are not kept, and once every kept one is taken in
 * the rescan function is called to find them.
 */
typedef struct intake_retry intake_retry;

#define INTAKE_RETRY_MIN_USEC USEC_PER_SEC
#define INTAKE_RETRY_MAX_USEC (30 * USEC_PER_SEC)
#define INTAKE_RETRY_MAX_FILES 100000

/* Takes `path` (below the watched folder `watch_path`) in again. Returns what intake_file()
 * does, with its message in *ret_error: the upload stays for another round while it is a
 * transient error. */
typedef int (*intake_retry_fn)(const char *watch_path, const char *path, char **ret_error,
                               void *userdata);
/* Called once the uploads not kept (past INTAKE_RETRY_MAX_FILES) are to be found again. */
typedef void (*intake_rescan_fn)(void *userdata);

/* Returns 0 and *ret, or -ENOMEM. */
int intake_retry_new(sd_event *e, intake_retry_fn fn, intake_rescan_fn rescan, void *userdata,
                     intake_retry **ret);
intake_retry *intake_retry_free(intake_retry *q);

/* Keeps `path` for a retry (nothing if it is kept already); `error` is why it failed (copied,
 * for status). Returns 0, or -ENOMEM / -ENOBUFS when it was not kept (then the rescan will
 * find it). */
int intake_retry_add(intake_retry *q, const char *watch_path, const char *path, const char *error);

/* Forgets every upload kept (after a reload, whose scan reports them again). */
void intake_retry_clear(intake_retry *q);

/* Uploads waiting for a retry (0 for NULL), and in *ret_error (may be NULL) why the last one
 * failed ("" when none). */
size_t intake_retry_pending(const intake_retry *q, const char **ret_error);
