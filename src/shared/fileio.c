/* SPDX-License-Identifier: MIT */
/*
 * fileio.c - see fileio.h.
 */
#include <errno.h>
#include <unistd.h>

#include "shared/fileio.h"
#include "shared/macro.h"

ssize_t read_at_step(int fd, void *buf, size_t n, uint64_t *off, uint64_t max_bytes)
{
        ssize_t k;

        do
                k = pread(fd, buf, n, (off_t)*off);
        while (k < 0 && errno == EINTR);
        if (k < 0)
                return negative_errno();
        *off += (uint64_t)k;
        if (max_bytes > 0 && *off > max_bytes)
                return -EFBIG;
        return k;
}
