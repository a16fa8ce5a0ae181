/* SPDX-License-Identifier: MIT */
/*
 * adversarial-fixture.h - helpers of the adversarial battery (test-adversarial-*): the daemon's
 * log, `imgctl verify` clean, every upload done exactly once, images dropped into the uploads, and
 * waits on the log and on the job counts of status.
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "testutil.h"

#define PIPE "( { name = \"s\"; width = 48; height = 48; fit = \"inside\"; format = \"webp\"; } )"

/* The daemon's log, for a failure message; caller frees. */
char *advfx_log_of(struct tu_daemon *d);

/* `imgctl verify` finds every recorded output and nothing else wrong. */
void advfx_assert_verify_clean(struct tu_daemon *d);

/* Each of the n paths: one job, done at the first attempt, its output and manifest there. */
void advfx_assert_each_done_once(struct tu_daemon *d, unsigned n);

/* Moves n images made in root/staging into uploads (each complete at once: IN_MOVED_TO). */
void advfx_drop_images(struct tu_daemon *d, const char *prefix, unsigned n);

/* Waits until the daemon's log holds `text` (fails after timeout_ms). */
void advfx_wait_log(struct tu_daemon *d, const char *text, int timeout_ms);

/* Waits until status counts n jobs in `state` (fails after 30 s). */
void advfx_wait_jobs(struct tu_daemon *d, const char *state, json_int_t n);

/* `imgctl status --json`: the answer (caller frees) and, in *ret_rc, imgctl's exit status
 * (1 while an alert is active). */
json_t *advfx_status_of(struct tu_daemon *d, int *ret_rc);

long long advfx_status_jobs(const json_t *st, const char *state);

/* Waits until `imgctl status` counts `want` jobs in `state` (fails after timeout_s). */
void advfx_wait_jobs_until(struct tu_daemon *d, const char *state, long long want, int timeout_s);
