/* SPDX-License-Identifier: MIT */
/*
 * hooks.h - the per-watch on_done / on_dead programs. Each runs in its own process (fork +
 * exec, stdin from /dev/null, stdout and stderr to the daemon's stderr), with the job in its
 * environment (IMGD_EVENT, IMGD_JOB_ID, IMGD_SOURCE, IMGD_WATCH, IMGD_PIPELINE, IMGD_OUTPUTS
 * as newline-separated paths, IMGD_ERROR), killed after its timeout. A hook that fails,
 * hangs or cannot start is logged and never affects the job or the daemon. At most
 * HOOKS_MAX_RUNNING run at once; further ones are dropped with a log line.
 */
#pragma once

#include <jansson.h>
#include <systemd/sd-event.h>

#define HOOKS_MAX_RUNNING 16

typedef struct hooks hooks;

int hooks_new(sd_event *e, hooks **ret);
/* Kills running hooks and reaps them. Accepts NULL. */
hooks *hooks_free(hooks *h);

/* Starts `program` for `event` ("done" or "dead") of `job` (a scheduler event object). */
void hooks_run(hooks *h, const char *program, unsigned timeout_s, const char *event,
               const json_t *job);

/* Number of hooks running now. */
unsigned hooks_running(const hooks *h);
