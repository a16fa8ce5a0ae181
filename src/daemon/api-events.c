/* SPDX-License-Identifier: MIT */
/*
 * api-events.c - the scheduler's job transitions, and the ones the commands make themselves
 * ("cancelled"), as event lines for the control socket's subscribers (api_on_event(), a
 * scheduler_event_fn); and the reconciliation's (api_on_reconcile_event(), a
 * reconciler_event_fn). An event never fails and never blocks its caller: a line that cannot
 * be made or sent is logged and dropped. On a shared ledger (issue 18) each event names its node
 * and goes to the other nodes too (cluster.h), whose events come back through
 * api_on_node_event().
 */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/api-private.h"
#include "shared/log.h"
#include "shared/macro.h"
#include "shared/proto.h"
#include "shared/time-util.h"

/* The fields of a job in the events api-operate.c emits itself (see api-private.h). */
json_t *api_job_event_json(const struct job *j)
{
        return json_pack("{s:I, s:o, s:o, s:o, s:I}", "id", (json_int_t)j->id, "source",
                         api_text_or_null(j->source_path), "watch", api_text_or_null(j->watch),
                         "pipeline", api_text_or_null(j->pipeline), "attempts",
                         (json_int_t)j->attempts);
}

static void send_event(struct api_context *ctx, const char *event, const char *member,
                       const json_t *job)
{
        _cleanup_free_ char *line = NULL;
        int r;

        assert(event);
        assert(job);
        if (!ctx || !ctx->control || control_subscribers(ctx->control) == 0)
                return;

        line = proto_format_event_of(event, wall_usec(), member, job);
        if (line && strlen(line) > PROTO_MAX_LINE + 1) {
                /* Hundreds of outputs: tell the event, subscribers can "show" the job. */
                _cleanup_(json_decrefp) json_t *small = json_copy((json_t *)job);

                free(line);
                line = NULL;
                if (small && json_object_del(small, "outputs") == 0 &&
                    json_object_set_new(small, "outputs_omitted", json_true()) == 0)
                        line = proto_format_event_of(event, wall_usec(), member, small);
                if (line && strlen(line) > PROTO_MAX_LINE + 1) {
                        log_warning("event %s: too large to send", event);
                        return;
                }
        }
        if (!line) {
                log_warning("event %s: out of memory; subscribers miss it", event);
                return;
        }
        r = control_broadcast(ctx->control, line);
        if (r < 0)
                log_warning_errno(r, "event %s: cannot send it to subscribers: %m", event);
}

void api_on_event(const char *event, const json_t *job, void *userdata)
{
        struct api_context *ctx = userdata;
        _cleanup_(json_decrefp) json_t *copy = NULL;

        if (!ctx || !ctx->node) {
                send_event(ctx, event, "job", job);
                return;
        }
        /* A node among others: its name in the event, which the other nodes tell too. */
        copy = json_copy((json_t *)job);
        if (!copy || json_object_set_new(copy, "node", json_string(ctx->node)) < 0) {
                log_warning("event %s: out of memory; subscribers miss it", event);
                return;
        }
        send_event(ctx, event, "job", copy);
        cluster_publish(ctx->cluster, event, copy);
}

void api_on_node_event(const char *event, const json_t *job, void *userdata)
{
        send_event(userdata, event, "job", job);
}

void api_on_reconcile_event(const char *event, const json_t *data, void *userdata)
{
        send_event(userdata, event, "reconcile", data);
}
