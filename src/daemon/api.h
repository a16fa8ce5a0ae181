/* SPDX-License-Identifier: MIT */
/*
 * api.h - what the control commands do: status, jobs, show, ping (read-only), retry, cancel,
 * pause, resume, drain, enqueue, reload (operator actions, each through the ledger's own
 * transitions and the scheduler's entry points, never behind the scheduler's back: a running job is
 * not cancelled under its worker), and metrics. Also turns the scheduler's job transitions into
 * event lines for the control socket's subscribers (api_on_event()). See README.md, "The
 * control protocol", for every command's arguments and answer.
 */
#pragma once

#include <jansson.h>

#include "shared/config.h"
#include "daemon/cluster.h"
#include "daemon/control.h"
#include "daemon/intake.h"
#include "daemon/ledger.h"
#include "daemon/reconcile.h"
#include "daemon/scheduler.h"
#include "daemon/watch.h"

struct api_context {
        const struct config *config;
        ledger *ledger;
        scheduler *scheduler;
        reconciler *reconciler; /* for plan and reconcile-pause/resume; NULL: none */
        control *control;       /* for api_on_event(); NULL: events go nowhere */
        /* A node of a shared ledger (issue 18): its name, added to every job event as "node"
         * (NULL: a ledger of one node), and where its events go to the other nodes (NULL:
         * nowhere). */
        const char *node;
        cluster *cluster;
        watch *watch;         /* for status' "intake_pending"; NULL: none (stopping) */
        intake_retry *retry;  /* for status' "intake_retry"; NULL: none */
        const char *state;    /* "starting", "running", "stopping" */
        int64_t started_usec; /* wall clock (CLOCK_REALTIME), microseconds since the epoch */
        /* "reload": loads the configuration again (main.c); returns 0, or a negative errno
         * and the reason in *ret_error (caller frees) when the new one is rejected and the
         * running one stays in force. May replace config and watch. NULL: not offered. */
        int (*reload)(void *userdata, char **ret_error);
        void *reload_userdata;
};

/*
 * A control_read_only_fn: whether cmd only reads (ping, status, jobs, show, metrics), so the
 * control socket's read-only role may send it. An unknown command is let through too: it is
 * answered "unknown command".
 */
bool api_command_read_only(const char *cmd);

/* A control_handler_fn; userdata is a struct api_context. */
int api_handle(const char *cmd, const json_t *request, void *userdata, json_t **ret_result,
               char **ret_error);

/*
 * The Prometheus text exposition (metrics.h) that the command "metrics" answers with, also
 * served over HTTP (http.h). Returns 0 and the text in *ret_text (caller frees), or a
 * negative errno with a message in *ret_error (caller frees; may be left NULL on -ENOMEM).
 */
int api_metrics_text(struct api_context *ctx, char **ret_text, char **ret_error);

/*
 * A scheduler_event_fn; userdata is a struct api_context. Sends
 * {"v":1,"event":EVENT,"at_us":NOW,"job":JOB} to every subscriber of ctx->control (nothing
 * when it is NULL or has none). An event that would not fit in one protocol line is sent
 * without its "outputs" (and with "outputs_omitted": true). Never fails, never blocks.
 */
void api_on_event(const char *event, const json_t *job, void *userdata);
/* An event of another node (a cluster_event_fn, cluster.h): sent to the subscribers as
 * api_on_event() does, as it came (with its "node"), and not sent on to the other nodes. */
void api_on_node_event(const char *event, const json_t *job, void *userdata);
/* The same for the reconciliation's events (a reconciler_event_fn): the line carries `data`
 * as "reconcile" instead of "job". */
void api_on_reconcile_event(const char *event, const json_t *data, void *userdata);
