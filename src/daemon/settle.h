/* SPDX-License-Identifier: MIT */
/*
 * settle.h - files found by a walk (the start-up scan, a rescan, the walk of a new folder)
 * that may still be being written.
 *
 * inotify says when a file is complete (IN_CLOSE_WRITE, IN_MOVED_TO); a walk does not. A
 * folder made and filled at once is walked as soon as its watch exists, and the walk can meet
 * a file whose writer has not closed it yet; the start-up scan and the rescans can too. A
 * regular file a walk finds changed within SETTLE_USEC is therefore not reported at once but
 * kept and looked at again after SETTLE_USEC: unchanged since, it is reported; changed, it
 * waits again. Its event, if the writer closes it meanwhile, reports it at once and
 * settle_forget() drops it. Anything else (an old file, a symlink, a FIFO: intake says why it
 * refuses those) is reported at once, and so is every file past SETTLE_MAX waiting.
 */
#pragma once

#include <stddef.h>
#include <systemd/sd-event.h>

#include "shared/time-util.h"
#include "daemon/watch.h"

/* A file a walk finds changed within this long waits until it has not changed for as long. */
#define SETTLE_USEC (2 * (int64_t)USEC_PER_SEC)
/* At most this many files wait; past it a file is reported at once. */
#define SETTLE_MAX 10000

typedef struct settle settle;

/* Files are reported to fn(wc, path, userdata), as watch.h's watch_file_fn. Returns 0 and
 * *ret, or a negative errno. */
int settle_new(sd_event *e, watch_file_fn fn, void *userdata, settle **ret);
settle *settle_free(settle *s);

/* The files due at one time are reported in turns of at most SETTLE_TURN_USEC, each turn
 * between fn(true, userdata) and fn(false, userdata) (as watch.h's watch_batch_fn; NULL:
 * none), so that thousands found at once share batches and leave the loop its turns. */
#define SETTLE_TURN_USEC (10 * USEC_PER_MSEC)
void settle_set_batch_fn(settle *s, watch_batch_fn fn);

/* A file found by a walk of watch wc: reported now, or once it has stopped changing. */
void settle_found(settle *s, const struct watch_config *wc, const char *path);

/* path was reported by its event: it waits no longer (nothing if it was not waiting). */
void settle_forget(settle *s, const char *path);

/* Files waiting; 0 for NULL. */
size_t settle_pending(const settle *s);
