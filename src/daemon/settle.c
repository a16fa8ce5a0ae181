/* SPDX-License-Identifier: MIT */
/*
 * settle.c - files found by a walk wait until they are complete; see settle.h.
 *
 * `settling` holds the waiting files in no order, each with its size and mtime as last seen
 * and when to look again; one timer is armed for the earliest.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "shared/alloc.h"
#include "shared/macro.h"
#include "shared/time-util.h"
#include "daemon/settle.h"
#include "daemon/source.h"

/* A file waiting until it stops changing. */
struct settling {
        const struct watch_config *wc;
        char *path;
        int64_t size, mtime_ns; /* as last seen */
        uint64_t due_usec;      /* CLOCK_MONOTONIC: when to look again */
};

struct settle {
        sd_event_source *timer;
        watch_file_fn fn;
        watch_batch_fn batch_fn;
        void *userdata;
        struct settling *settling;
        size_t n_settling, a_settling;
};

/* Whether st was modified within SETTLE_USEC (a time in the future does not count: it
 * was set, not written). */
static bool changed_lately(const struct stat *st)
{
        int64_t age_usec = wall_usec() - source_mtime_ns(st) / (int64_t)NSEC_PER_USEC;

        return age_usec >= -(int64_t)USEC_PER_SEC && age_usec < SETTLE_USEC;
}

static void settle_arm(settle *set)
{
        uint64_t due = UINT64_MAX;
        for (size_t i = 0; i < set->n_settling; i++)
                if (set->settling[i].due_usec < due)
                        due = set->settling[i].due_usec;
        if (due == UINT64_MAX) {
                sd_event_source_set_enabled(set->timer, SD_EVENT_OFF);
                return;
        }
        sd_event_source_set_time(set->timer, due);
        sd_event_source_set_enabled(set->timer, SD_EVENT_ONESHOT);
}

/* Keeps path to be looked at again; returns 0, or a negative errno (it was not kept: more than
 * SETTLE_MAX wait, or no memory). */
static int settle_add(settle *set, const struct watch_config *wc, const char *path,
                      const struct stat *st)
{
        char *copy;

        if (set->n_settling >= SETTLE_MAX || !set->timer)
                return -ENOBUFS;
        if (GROW_ARRAY(set->settling, set->a_settling, set->n_settling + 1) < 0)
                return -ENOMEM;
        copy = strdup(path);
        if (!copy)
                return -ENOMEM;
        set->settling[set->n_settling++] = (struct settling){
                .wc = wc,
                .path = copy,
                .size = (int64_t)st->st_size,
                .mtime_ns = source_mtime_ns(st),
                .due_usec = mono_usec() + SETTLE_USEC,
        };
        if (set->n_settling == 1)
                settle_arm(set);
        return 0;
}

void settle_found(settle *set, const struct watch_config *wc, const char *path)
{
        struct stat st;

        if (lstat(path, &st) == 0 && S_ISREG(st.st_mode) && changed_lately(&st) &&
            settle_add(set, wc, path, &st) == 0)
                return;
        set->fn(wc, path, set->userdata);
}

void settle_forget(settle *set, const char *path)
{
        if (!set)
                return;
        for (size_t i = 0; i < set->n_settling; i++)
                if (strcmp(set->settling[i].path, path) == 0) {
                        free(set->settling[i].path);
                        set->settling[i] = set->settling[--set->n_settling];
                        return;
                }
}

/* Looks again at the files due: reports the ones unchanged since, keeps the others. */
static int on_settle_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
        settle *set = userdata;
        uint64_t now = mono_usec();
        size_t kept = 0;

        (void)s, (void)usec;
        if (set->batch_fn)
                set->batch_fn(true, set->userdata);
        for (size_t i = 0; i < set->n_settling; i++) {
                struct settling *f = &set->settling[i];
                struct stat st;

                /* Past the turn, the rest waits for the next one (the timer fires again at
                 * once, after the loop's other work). */
                if (f->due_usec > now || mono_usec() - now >= SETTLE_TURN_USEC) {
                        set->settling[kept++] = *f;
                        continue;
                }
                if (lstat(f->path, &st) == 0 && S_ISREG(st.st_mode) &&
                    ((int64_t)st.st_size != f->size || source_mtime_ns(&st) != f->mtime_ns)) {
                        f->size = (int64_t)st.st_size;
                        f->mtime_ns = source_mtime_ns(&st);
                        f->due_usec = now + SETTLE_USEC;
                        set->settling[kept++] = *f;
                        continue;
                }
                /* Unchanged, or no longer a regular file (intake says why), or gone (intake
                 * finds nothing to do). */
                set->fn(f->wc, f->path, set->userdata);
                free(f->path);
        }
        set->n_settling = kept;
        if (set->batch_fn)
                set->batch_fn(false, set->userdata);
        settle_arm(set);
        return 0;
}

void settle_set_batch_fn(settle *set, watch_batch_fn fn)
{
        set->batch_fn = fn;
}

int settle_new(sd_event *e, watch_file_fn fn, void *userdata, settle **ret)
{
        settle *set = calloc(1, sizeof *set);
        int r;

        if (!set)
                return -ENOMEM;
        *set = (settle){ .fn = fn, .userdata = userdata };
        r = sd_event_add_time(e, &set->timer, CLOCK_MONOTONIC, 0, 0, on_settle_timer, set);
        if (r >= 0)
                r = sd_event_source_set_enabled(set->timer, SD_EVENT_OFF);
        if (r < 0) {
                settle_free(set);
                return r;
        }
        *ret = set;
        return 0;
}

settle *settle_free(settle *set)
{
        if (!set)
                return NULL;
        sd_event_source_disable_unref(set->timer);
        for (size_t i = 0; i < set->n_settling; i++)
                free(set->settling[i].path);
        free(set->settling);
        free(set);
        return NULL;
}

size_t settle_pending(const settle *set)
{
        return set ? set->n_settling : 0;
}
