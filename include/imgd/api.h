/* SPDX-License-Identifier: MIT */
/*
 * api.h - what the control commands do: status, jobs, show, ping. Reads the ledger and the
 * scheduler's view of the workers; never changes a job behind the scheduler's back.
 */
#pragma once

#include <jansson.h>

#include "config.h"
#include "ledger.h"
#include "scheduler.h"

struct api_context {
        const struct config *config;
        ledger *ledger;
        scheduler *scheduler;
        const char *state; /* "starting", "running", "stopping" */
        int64_t started_us; /* wall clock (CLOCK_REALTIME), microseconds since the epoch */
};

/* A control_handler_fn; userdata is a struct api_context. */
int api_handle(const char *cmd, const json_t *request, void *userdata, json_t **ret_result,
               char **ret_error);
