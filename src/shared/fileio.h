/* SPDX-License-Identifier: MIT */
/*
 * fileio.h - reading a file at an offset to its end, the one loop: pread() retried on EINTR,
 * with a size limit (the daemon's hashing in hash.c, the worker's whole-file reads).
 */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/*
 * One step of reading the file open at fd sequentially: reads up to n bytes at *off into
 * buf, retrying when a signal interrupts, and advances *off by what was read (the
 * descriptor's own offset is left unchanged). Returns the byte count (0 at the end of the
 * file), -EFBIG once *off passes max_bytes (0: no limit), or a negative errno from pread().
 */
ssize_t read_at_step(int fd, void *buf, size_t n, uint64_t *off, uint64_t max_bytes);
