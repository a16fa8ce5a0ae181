/* SPDX-License-Identifier: MIT */
/*
 * macro.h - small helpers shared by every module: cleanup attributes that give each
 * resource one owner and one cleanup path, ownership hand-over (TAKE_PTR, TAKE_FD), and
 * array sizing. Header-only; no state.
 */
#pragma once

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

/* mono_usec() and wall_usec() moved to time-util.h; included here so that callers that took
 * them from macro.h keep building. New code includes shared/time-util.h. */
#include "shared/time-util.h"

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _unused_ __attribute__((unused))
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define _pure_ __attribute__((pure))

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))

static inline void freep(void *p)
{
        free(*(void **)p);
}
#define _cleanup_free_ _cleanup_(freep)

/* Closes *fd if it is open, keeping errno unchanged. */
static inline void closep(int *fd)
{
        if (*fd >= 0) {
                int saved = errno;
                close(*fd);
                errno = saved;
        }
}
#define _cleanup_close_ _cleanup_(closep)

/* Returns p and sets the variable to NULL: ownership moves to the caller. */
#define TAKE_PTR(p)                                                                                \
        ({                                                                                         \
                __typeof__(p) _ptr_ = (p);                                                         \
                (p) = NULL;                                                                        \
                _ptr_;                                                                             \
        })

/* Returns fd and sets the variable to -1: ownership moves to the caller. */
#define TAKE_FD(fd)                                                                                \
        ({                                                                                         \
                int _fd_ = (fd);                                                                   \
                (fd) = -1;                                                                         \
                _fd_;                                                                              \
        })

/* Declares `static inline void fnp(type *p)` calling fn(*p) when *p is set. */
#define DEFINE_TRIVIAL_CLEANUP_FUNC(type, fn)                                                      \
        static inline void fn##p(type *p)                                                          \
        {                                                                                          \
                if (*p)                                                                            \
                        fn(*p);                                                                    \
        }

/* Negative errno from a libc call that returned -1; never 0. */
static inline int negative_errno(void)
{
        return errno > 0 ? -errno : -EIO;
}

/* The value of hex digit c (either case), or -1. */
static inline int unhexchar(char c)
{
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}
