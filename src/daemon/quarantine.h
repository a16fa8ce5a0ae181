/* SPDX-License-Identifier: MIT */
/*
 * quarantine.h - a dead job's source moved out of its upload folder into its watch's
 * quarantine folder (keeping its sub-path), and back when the job is retried. A file is
 * moved only while it is still the one the job failed on, and brought back only while
 * nothing has taken its place; each move is a rename() on one file system, its parent
 * directories created durably (mode 0750). Logs each move and why one did not happen.
 */
#pragma once

#include <stdint.h>

#include "shared/config.h"
#include "daemon/ledger.h"

/* Where a job's source `source_path` goes in watch wc's quarantine folder, or NULL when wc
 * (may be NULL) has none, the source is not below its folder, or out of memory. Caller
 * frees. */
char *quarantine_path(const struct watch_config *wc, const char *source_path);

/*
 * Moves the source of dead job `job` into wc's quarantine folder if the file at its path is
 * still the job's (the size, mtime and inode intake recorded, or failing that the same
 * SHA-256, read up to max_file_bytes). Returns where it went (caller frees), or NULL when it
 * stayed.
 */
char *quarantine_move(const struct watch_config *wc, const struct job *job,
                      uint64_t max_file_bytes);

/* A dead job retried: its source comes back from quarantine, if it went there and nothing
 * has taken its place meanwhile. */
void quarantine_restore(const struct watch_config *wc, const struct job *job);
