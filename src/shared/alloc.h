/* SPDX-License-Identifier: MIT */
/*
 * alloc.h - growing an array: the one doubling loop.
 *
 *   struct item *items = NULL;
 *   size_t n = 0, allocated = 0;
 *
 *   if (GROW_ARRAY(items, allocated, n + 1) < 0)
 *           return -ENOMEM;
 *   items[n++] = item;
 *
 * GROW_ARRAY(array, allocated, need) makes `array` hold at least `need` elements, doubling
 * its allocation (from 16 elements) so that n appends cost O(n). The new elements are not
 * initialised. It returns 0, or -ENOMEM with `array` and `allocated` unchanged (the caller
 * still owns and frees the old array).
 */
#pragma once

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

static inline int grow_array(void **array, size_t *allocated, size_t need, size_t size)
{
        size_t n = *allocated ? *allocated : 16;
        void *p;

        if (need <= *allocated)
                return 0;
        while (n < need) {
                if (n > SIZE_MAX / 2)
                        return -ENOMEM;
                n *= 2;
        }
        p = reallocarray(*array, n, size);
        if (!p)
                return -ENOMEM;
        *array = p;
        *allocated = n;
        return 0;
}

#define GROW_ARRAY(array, allocated, need)                                                         \
        grow_array((void **)&(array), &(allocated), (need), sizeof *(array))
