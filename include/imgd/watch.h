/* SPDX-License-Identifier: MIT */
/*
 * watch.h - noticing uploads. inotify watches every configured folder (and, with
 * `recursive`, every subdirectory, including ones created or moved in later; symlinked
 * directories are not followed). A file is reported once it is complete: IN_CLOSE_WRITE
 * after a write, or IN_MOVED_TO after a rename into the folder. Ignored names (see
 * pathmap_is_ignored()) are not reported. watch_scan() walks the trees and reports every
 * file, for start-up; after IN_Q_OVERFLOW the module rescans by itself.
 */
#pragma once

#include <stdbool.h>
#include <systemd/sd-event.h>

#include "config.h"

typedef struct watch watch;

/* Called for each complete file; w is the watch it belongs to. */
typedef void (*watch_file_fn)(const struct watch_config *w, const char *path, void *userdata);

/* Sets up the inotify watches. Returns 0 and *ret, or a negative errno (logged, naming the
 * path). The module borrows cfg, which must outlive it. */
int watch_new(sd_event *e, const struct config *cfg, watch_file_fn fn, void *userdata,
              watch **ret);
watch *watch_free(watch *w);

/* Reports every file below every watched folder. Returns the number of files reported. */
int watch_scan(watch *w);

/* Number of directories being watched. */
unsigned watch_count(const watch *w);

/*
 * Whether the kernel has reported changes that w has not read yet: files a moment away from
 * becoming jobs (intake runs below the workers' results and the control socket, so a burst
 * of uploads can wait a few event-loop turns). False for NULL.
 */
bool watch_intake_pending(const watch *w);
