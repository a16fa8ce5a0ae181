/* SPDX-License-Identifier: MIT */
/*
 * intake.h - turning a file in an upload folder into a job. The file is opened without
 * following symlinks and without blocking (a FIFO never stalls the daemon), must be a
 * regular file within limits.max_file_bytes, is hashed (SHA-256) unless the ledger already
 * knows it by size, mtime and inode, and is enqueued in the ledger.
 */
#pragma once

#include <stdint.h>

#include "config.h"
#include "ledger.h"

/*
 * Enqueues `path`, a file below watch `w`. Returns 1 and the new job's id in *ret_id (may be
 * NULL) when a job was created, 0 when the file needs no job (already known, ignored name,
 * not a regular file), or a negative errno with a message in *ret_error (owned by caller).
 */
int intake_file(ledger *l, const struct config *cfg, const struct watch_config *w,
                const char *path, int64_t now_us, int64_t *ret_id, char **ret_error);
