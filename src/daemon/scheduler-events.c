/* SPDX-License-Identifier: MIT */
/*
 * scheduler-events.c - a job's transitions told to the subscribers (imgctl events, through
 * the handler main.c registers) and to the hooks of its watch (on_done, on_dead, on_retract); see
 * scheduler_set_event_handler() in scheduler.h for the JSON each event carries.
 */
#include <stdlib.h>
#include <string.h>

#include "daemon/quarantine.h"
#include "daemon/scheduler-private.h"
#include "shared/macro.h"
#include "shared/proto.h"

static void emit(scheduler *s, const char *event, const struct job *job, json_t *extra,
                 const char *const *files, size_t n_files)
{
        _cleanup_(json_decrefp) json_t *j = NULL;
        const struct watch_config *wc = scheduler_find_watch(s->cfg, job->watch);
        const char *hook = !wc                               ? NULL
                           : strcmp(event, "done") == 0      ? wc->on_done
                           : strcmp(event, "dead") == 0      ? wc->on_dead
                           : strcmp(event, "retracted") == 0 ? wc->on_retract
                           : strcmp(event, "moved") == 0     ? wc->on_retract
                                                             : NULL;

        if (!s->event_fn && !hook) {
                json_decref(extra);
                return;
        }
        /* File names need not be UTF-8; JSON strings must be (proto_string_lossy). */
        j = json_pack("{s:I, s:o, s:o, s:s, s:I}", "id", (json_int_t)job->id, "source",
                      proto_string_lossy(job->source_path), "watch", proto_string_lossy(job->watch),
                      "pipeline", job->pipeline, "attempts", (json_int_t)job->attempts);
        if (j && extra)
                json_object_update(j, extra);
        json_decref(extra);
        if (j && s->event_fn)
                s->event_fn(event, j, s->event_userdata);
        if (j && hook) {
                /* The hook gets the names as bytes, to open them: the published outputs from
                 * the ledger, the quarantine path as quarantine_move() makes it (if it is the
                 * one reported). */
                _cleanup_(job_detail_freep) struct job_detail *d = NULL;
                _cleanup_free_ char *moved = NULL;
                _cleanup_free_ const char **outputs = NULL;
                const char *reported = json_string_value(json_object_get(j, "quarantined"));
                const json_t *list = json_object_get(j, "outputs");
                struct hook_names names = { .source = job->source_path, .watch = job->watch };

                if (reported) {
                        _cleanup_(json_decrefp) json_t *lossy = NULL;

                        moved = quarantine_path(wc, job->source_path);
                        lossy = moved ? proto_string_lossy(moved) : NULL;
                        if (lossy && strcmp(json_string_value(lossy), reported) == 0)
                                names.quarantined = moved;
                }
                if (files) {
                        names.outputs = files;
                        names.n_outputs = n_files;
                } else if (json_array_size(list) > 0 && ledger_get(s->ledger, job->id, &d) > 0 &&
                           d->n_outputs == json_array_size(list) &&
                           (outputs = calloc(d->n_outputs, sizeof *outputs))) {
                        for (size_t i = 0; i < d->n_outputs; i++)
                                outputs[i] = d->outputs[i].path;
                        names.outputs = outputs;
                        names.n_outputs = d->n_outputs;
                }
                hooks_run(s->hooks, hook, wc->hook_timeout_usec, event, j, &names);
        }
}

void scheduler_emit(scheduler *s, const char *event, const struct job *job, json_t *extra)
{
        emit(s, event, job, extra, NULL, 0);
}

void scheduler_emit_files(scheduler *s, const char *event, const struct job *job, json_t *extra,
                          const char *const *files, size_t n_files)
{
        emit(s, event, job, extra, files ?: (const char *const[]){ NULL }, n_files);
}

void scheduler_set_event_handler(scheduler *s, scheduler_event_fn fn, void *userdata)
{
        s->event_fn = fn;
        s->event_userdata = userdata;
}
