/* SPDX-License-Identifier: MIT */
/*
 * source.h - the one safe open of a source file, shared by intake (hashing a new upload)
 * and the scheduler (handing a job's source to a worker, checking a source before its
 * quarantine): read-only, without following a symlink (one swapped in fails with ELOOP),
 * without blocking (a FIFO swapped in opens without waiting for a writer), close-on-exec,
 * never a controlling terminal; then fstat() on the descriptor, which must be a regular file.
 */
#pragma once

#include <stdint.h>
#include <sys/stat.h>

/*
 * Opens `path` as above. Returns the descriptor (caller closes) and its fstat() in *ret_st;
 * or a negative errno: -ENOENT (gone), -ELOOP (a symlink), another of open() or fstat(), or
 * -EINVAL when it is not a regular file (closed again; *ret_st then holds what it is, for
 * the refusal's wording: the one case *ret_st is written on failure).
 */
int source_open(const char *path, struct stat *ret_st);

/* The modification time of st in nanoseconds since the epoch, as the ledger records it. */
int64_t source_mtime_ns(const struct stat *st);
