/* SPDX-License-Identifier: MIT */
/*
 * hooks.h - the per-watch on_done / on_dead programs. Each runs in its own process (fork +
 * exec of the program alone: no shell, no arguments, so no file name ever reaches a command
 * line), stdout and stderr to the daemon's stderr, with the job in its environment:
 * IMGD_EVENT, IMGD_JOB_ID, IMGD_SOURCE, IMGD_WATCH, IMGD_QUARANTINED (the exact bytes of
 * those paths, whatever their encoding), IMGD_PIPELINE, IMGD_ERROR, IMGD_OUTPUTS (the output
 * paths separated by newlines: exact only for names without one) and IMGD_OUTPUTS_COUNT; its
 * standard input holds the output paths exactly, each followed by a NUL byte (xargs -0). It
 * is killed after its timeout. A hook that fails, hangs or cannot start is logged and never
 * affects the job or the daemon. At most HOOKS_MAX_RUNNING run at once; further ones are
 * dropped with a log line.
 */
#pragma once

#include <jansson.h>
#include <stddef.h>
#include <systemd/sd-event.h>

#include "shared/time-util.h"

#define HOOKS_MAX_RUNNING 16

typedef struct hooks hooks;

int hooks_new(sd_event *e, hooks **ret);
/* Kills running hooks and reaps them. Accepts NULL. */
hooks *hooks_free(hooks *h);

/*
 * The paths of a job as bytes: the event object carries them as JSON strings, in which a name
 * that is not UTF-8 has U+FFFD in place of its bad bytes. NULL members: take the event's.
 */
struct hook_names {
        const char *source, *watch, *quarantined;
        const char *const *outputs;
        size_t n_outputs;
};

/* Starts `program` for `event` ("done" or "dead") of `job` (a scheduler event object), with
 * the exact paths of `names` (may be NULL). Borrows everything. */
void hooks_run(hooks *h, const char *program, usec_t timeout_usec, const char *event,
               const json_t *job, const struct hook_names *names);

/* Number of hooks running now. */
unsigned hooks_running(const hooks *h);
