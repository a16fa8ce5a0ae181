/* SPDX-License-Identifier: MIT */
/*
 * scheduler-retract.c - retract, drop and move jobs (ledger.h, enum job_kind): carried out at
 * once by the supervisor (retract.h), without a worker, then told to subscribers and to the
 * watch's on_retract hook:
 *
 *   "retracted"  a source's outputs removed (kind "retract": the source is gone; "drop": the
 *                variants listed); "removed" lists the files removed, "kept" the ones left in
 *                place because their content was no longer what imgd published, "outputs"
 *                what stays published (a drop's other variants). The hook's outputs are the
 *                files removed.
 *   "moved"      a source renamed within its tree: "from" is its old path, "outputs" the
 *                outputs at their new names, "removed" their old names (the hook's outputs).
 */
#include <inttypes.h>
#include <stdlib.h>

#include "daemon/retract.h"
#include "daemon/scheduler-private.h"
#include "shared/log.h"
#include "shared/macro.h"
#include "shared/proto.h"

static json_t *paths_json(char *const *v, size_t n)
{
        json_t *list = json_array();

        for (size_t i = 0; list && i < n; i++)
                json_array_append_new(list, proto_string_lossy(v[i]));
        return list;
}

void scheduler_retract(scheduler *s, struct job *job_in)
{
        _cleanup_(job_freep) struct job *job = job_in;
        _cleanup_free_ char *error = NULL, *owner = NULL;
        struct retract_result res = {};
        json_t *outputs;
        char why[512];
        int r;

        if (job->kind == JOB_MOVE &&
            ledger_output_owner(s->ledger, job->output_key, job->source_path, &owner) > 0) {
                snprintf(why, sizeof why,
                         "its outputs %s_* would overwrite those of %s; rename one of the two",
                         job->output_key, owner);
                scheduler_job_failed(s, job, why, true);
                return;
        }
        r = retract_run(s->ledger, job, wall_usec(), &res, &error);
        if (r < 0) {
                scheduler_job_failure(s, job, error ?: "out of memory", r, false);
                return;
        }
        s->last_progress_usec = mono_usec();
        if (res.rendered) {
                log_info("job %" PRId64 " %s: the outputs of its old name cannot be moved "
                         "(missing or altered); rendering it instead",
                         job->id, job->source_path);
                retract_result_clear(&res);
                return;
        }
        for (size_t i = 0; i < res.n_kept; i++)
                log_warning("job %" PRId64 " %s: %s left in place: its content is no longer "
                            "what imgd published",
                            job->id, job->source_path, res.kept[i]);
        if (job->kind == JOB_MOVE)
                log_job(LOG_INFO, LOG_JOB_DONE, job->id, job->source_path, job->pipeline,
                        "job %" PRId64 " %s: moved %zu outputs from %s", job->id, job->source_path,
                        res.n_outputs, res.from);
        else
                log_job(LOG_INFO, LOG_JOB_DONE, job->id, job->source_path, job->pipeline,
                        "job %" PRId64 " %s: retracted %zu outputs%s", job->id, job->source_path,
                        res.n_removed,
                        job->kind == JOB_DROP ? " of variants no longer configured"
                                              : " (source gone)");
        scheduler_note_finished(s);
        outputs = json_array();
        for (size_t i = 0; outputs && i < res.n_outputs; i++)
                json_array_append_new(outputs, scheduler_output_json(&res.outputs[i]));
        if (job->kind == JOB_MOVE)
                scheduler_emit_files(s, "moved", job,
                                     json_pack("{s:o, s:o, s:o}", "from",
                                               proto_string_lossy(res.from), "outputs", outputs,
                                               "removed", paths_json(res.removed, res.n_removed)),
                                     (const char *const *)res.removed, res.n_removed);
        else
                scheduler_emit_files(
                        s, "retracted", job,
                        json_pack("{s:s, s:o, s:o, s:o}", "kind", job_kind_name(job->kind),
                                  "removed", paths_json(res.removed, res.n_removed), "kept",
                                  paths_json(res.kept, res.n_kept), "outputs", outputs),
                        (const char *const *)res.removed, res.n_removed);
        retract_result_clear(&res);
}
