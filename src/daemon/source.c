/* SPDX-License-Identifier: MIT */
/*
 * source.c - the safe open of a source file; see source.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "daemon/source.h"
#include "shared/macro.h"
#include "shared/time-util.h"

int source_open(const char *path, struct stat *ret_st)
{
        _cleanup_close_ int fd =
                open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
        struct stat st;

        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        *ret_st = st;
        if (!S_ISREG(st.st_mode))
                return -EINVAL;
        return TAKE_FD(fd);
}

int64_t source_mtime_ns(const struct stat *st)
{
        return (int64_t)st->st_mtim.tv_sec * (int64_t)NSEC_PER_SEC + st->st_mtim.tv_nsec;
}
