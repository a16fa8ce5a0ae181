/* SPDX-License-Identifier: MIT */
/*
 * watch.h - noticing uploads. inotify watches every configured folder (and, with
 * `recursive`, every subdirectory, including ones created or moved in later; symlinked
 * directories are not followed). A file is reported once it is complete: IN_CLOSE_WRITE
 * after a write, or IN_MOVED_TO after a rename into the folder. Files deleted, moved out and
 * renamed within a tree are reported too (IN_DELETE, IN_MOVED_FROM paired with IN_MOVED_TO
 * by its cookie). Ignored names (see
 * pathmap_is_ignored()) are not reported. watch_scan() walks the trees and reports every
 * file, for start-up. Walks that can be large once the daemon runs (the rescan after
 * IN_Q_OVERFLOW, a tree moved into a recursive watch) run in the background, in slices of a
 * few milliseconds between turns of the event loop, so that the control socket and the
 * workers are served meanwhile.
 *
 * A folder that cannot be watched for want of inotify watches (fs.inotify.max_user_watches)
 * or kernel memory, or cannot be read for want of file descriptors (EMFILE, ENFILE), is
 * scanned instead, every `unwatched_scan_interval` seconds, and each scan tries to watch it
 * again; watch_unwatched() counts such folders for status and alerts.
 */
#pragma once

#include <stdbool.h>
#include <systemd/sd-event.h>

#include "shared/config.h"

typedef struct watch watch;

/* Called for each complete file; w is the watch it belongs to. */
typedef void (*watch_file_fn)(const struct watch_config *w, const char *path, void *userdata);
/* Called when a file (is_dir false) or a directory with everything below it (is_dir true) left
 * watch w's tree: deleted (files only: a directory's files are reported one by one before
 * it), moved out of it, or renamed to a name imgd ignores. */
typedef void (*watch_gone_fn)(const struct watch_config *w, const char *path, bool is_dir,
                              void *userdata);
/* Called when a complete file, or a directory, was renamed from `from` to `to` within watch
 * w's tree (IN_MOVED_FROM and IN_MOVED_TO of one rename); a directory's new tree is walked as
 * well, as one moved in. Without it, a renamed file is reported to the watch_file_fn and its
 * old name to the watch_gone_fn. */
typedef void (*watch_moved_fn)(const struct watch_config *w, const char *from, const char *to,
                               bool is_dir, void *userdata);
/* Called with begin = true before a turn of inotify events or a slice of the background walk
 * reports files, and with begin = false after it, before the module returns to the event loop
 * (for a batch of the ledger). */
typedef void (*watch_batch_fn)(bool begin, void *userdata);

/* Sets up the inotify watches. Returns 0 and *ret, or a negative errno (logged, naming the
 * path). The module borrows cfg, which must outlive it. */
int watch_new(sd_event *e, const struct config *cfg, watch_file_fn fn, void *userdata, watch **ret);
watch *watch_free(watch *w);

/* Sets the function called around the turns of events and the slices of the background walk
 * (NULL: none); it gets the userdata of watch_new(). */
void watch_set_batch_fn(watch *w, watch_batch_fn fn);

/* Sets the functions told of files gone and renamed (NULL: none); they get the userdata of
 * watch_new(). */
void watch_set_removal_fns(watch *w, watch_gone_fn gone, watch_moved_fn moved);

/* Reports every file below every watched folder, now. Returns the number of files reported. */
int watch_scan(watch *w);

/* Starts a background walk of every watched tree that adds watches (for folders made since)
 * and reports every file; a walk under way is started again. */
void watch_rescan(watch *w);

/* Number of directories being watched. */
unsigned watch_count(const watch *w);

/* Number of folders that could not be watched (scanned every unwatched_scan_interval
 * instead), and in *ret_error (may be NULL) the negative errno of the last such failure
 * (-ENOSPC: the inotify watch limit). 0 for NULL. */
unsigned watch_unwatched(const watch *w, int *ret_error);

/* The first of those folders by path (owned by w, valid until it next runs), or NULL. */
const char *watch_unwatched_first(const watch *w);

/*
 * Whether the kernel has reported changes that w has not read yet: files a moment away from
 * becoming jobs (intake runs below the workers' results and the control socket, so a burst
 * of uploads can wait a few event-loop turns), or a background walk is under way. False for
 * NULL.
 */
bool watch_intake_pending(const watch *w);
