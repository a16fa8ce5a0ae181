/* SPDX-License-Identifier: MIT */
/*
 * scheduler.h - moves jobs from the ledger through the workers into the output tree:
 * claims a job whenever a worker is idle, opens its source safely, creates its temporary
 * outputs, dispatches it, and on the result publishes the outputs and completes the job, or
 * records the failure and schedules a retry with exponential backoff and jitter, or marks
 * the job dead. Wakes itself with a timer for the next retry that falls due.
 */
#pragma once

#include <stdint.h>
#include <systemd/sd-event.h>

#include "config.h"
#include "ledger.h"
#include "worker.h"

typedef struct scheduler scheduler;

/* Starts the worker pool. The scheduler borrows e, cfg and l, which must outlive it. */
int scheduler_new(sd_event *e, const struct config *cfg, ledger *l, const char *worker_path,
                  scheduler **ret);
scheduler *scheduler_free(scheduler *s);

/* Asks the scheduler to look for claimable work soon (coalesced; safe to call often). */
void scheduler_kick(scheduler *s);

const worker_pool *scheduler_pool(const scheduler *s);

/* Jobs dispatched and not yet finished. */
unsigned scheduler_running(const scheduler *s);

/*
 * The delay before attempt `attempt + 1` after `attempt` failures: base * 2^(attempt-1),
 * capped at max, then spread by +-jitter using `random01` (a number in [0, 1)). Pure.
 */
int64_t scheduler_backoff_ms(const struct config_retry *r, unsigned attempt, double random01);
