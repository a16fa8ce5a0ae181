/* SPDX-License-Identifier: MIT */
/*
 * recover.c - start-up recovery; see recover.h. Runs before the event loop and the workers,
 * so nothing else touches the ledger or the output trees meanwhile.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <string.h>
#include <sys/stat.h>

#include "shared/log.h"
#include "daemon/publish.h"
#include "daemon/recover.h"

static void unlink_staged(const struct job_detail *d)
{
        for (size_t i = 0; i < d->n_outputs; i++)
                if (d->outputs[i].tmp_path)
                        (void)unlink(d->outputs[i].tmp_path);
}

/* Writes the manifest of staged job d: its outputs, and those a reconciliation job carries
 * over from the done job before it. */
static int recover_manifest(ledger *l, const struct job_detail *d)
{
        struct job_output *carried = NULL, *all = NULL;
        size_t n_carried = 0, n = 0;
        int r;

        if (!d->job.redo)
                return publish_manifest(&d->job, d->outputs, d->n_outputs, NULL);
        r = ledger_carried_outputs(l, d->job.id, &carried, &n_carried);
        if (r < 0)
                return r;
        all = calloc(d->n_outputs + n_carried + 1, sizeof *all);
        if (!all) {
                job_outputs_free(carried, n_carried);
                return -ENOMEM;
        }
        for (size_t i = 0; i < d->n_outputs; i++)
                all[n++] = d->outputs[i]; /* borrowed */
        for (size_t i = 0; i < n_carried; i++) {
                bool rendered = false;

                for (size_t k = 0; k < d->n_outputs; k++)
                        rendered |= strcmp(d->outputs[k].variant, carried[i].variant) == 0;
                if (!rendered)
                        all[n++] = carried[i];
        }
        r = publish_manifest(&d->job, all, n, NULL);
        free(all);
        job_outputs_free(carried, n_carried);
        return r;
}

/* A reconciliation job published: the files of its variants under their former names (a
 * format changed) are unlinked, as the scheduler does after publishing it. */
static int recover_replaced(ledger *l, const struct job_detail *d)
{
        struct job_output *carried = NULL;
        struct publish_dirs dirs = {};
        const char *failed = NULL;
        size_t n_carried = 0;
        int r;

        if (!d->job.redo)
                return 0;
        r = ledger_carried_outputs(l, d->job.id, &carried, &n_carried);
        if (r >= 0)
                r = publish_unlink_replaced(carried, n_carried, d->outputs, d->n_outputs, &dirs);
        if (r >= 0)
                r = publish_dirs_sync(&dirs, &failed);
        job_outputs_free(carried, n_carried);
        publish_dirs_clear(&dirs);
        return r;
}

/* A transition of job id refused for its claim (-ESTALE): the job was rescued by another node
 * while this one was down, and is that node's now. Returns 2 (lost), else r. */
static int claim_lost(ledger *l, int64_t id, int r)
{
        if (r != -ESTALE)
                return r;
        log_warning("job %" PRId64 ": its claim was lost while this node was down (%s); left to "
                    "the node that has it now",
                    id, ledger_errmsg(l));
        return 2;
}

/* Publishes one verified job (lease_usec > 0: a shared ledger, its lease renewed first).
 * Returns 1 if completed, 0 if handed back, 2 if lost to another node, <0 on ledger error. */
static int recover_staged_job(ledger *l, int64_t id, int64_t lease_usec, int64_t now_usec)
{
        _cleanup_(job_detail_freep) struct job_detail *d = NULL;
        struct publish_tmp *tmps = NULL;
        uint64_t *sizes = NULL;
        size_t n_tmps = 0;
        const char *failed = NULL;
        int r;

        r = ledger_get(l, id, &d);
        if (r <= 0)
                return r;

        r = ledger_superseded(l, id);
        if (r < 0)
                return r;
        if (r > 0) {
                unlink_staged(d);
                log_job(LOG_INFO, LOG_JOB_CANCELLED, id, d->job.source_path, d->job.pipeline,
                        "job %" PRId64 " %s: superseded while staged; cancelled", id,
                        d->job.source_path);
                return claim_lost(l, id,
                                  ledger_cancel_claim(l, id, d->job.fence,
                                                      "superseded by newer content", now_usec));
        }
        if (lease_usec > 0) {
                /* The fence check: nothing is renamed for a claim that is not ours any more. */
                struct ledger_renewal rn = { .id = id, .fence = d->job.fence };

                r = ledger_renew(l, &rn, 1, lease_usec, now_usec);
                if (r < 0)
                        return r;
                if (rn.result < 0) {
                        log_warning("job %" PRId64 ": its claim (fencing token %" PRId64
                                    ") was lost while this node was down: it is %s under "
                                    "fencing token %" PRId64 "%s%s; left to the node that has "
                                    "it now",
                                    id, d->job.fence, job_state_name(rn.state), rn.now_fence,
                                    rn.owner[0] ? ", lease of " : "", rn.owner);
                        return 2;
                }
        }

        tmps = calloc(d->n_outputs ? d->n_outputs : 1, sizeof *tmps);
        sizes = calloc(d->n_outputs ? d->n_outputs : 1, sizeof *sizes);
        if (!tmps || !sizes) {
                r = -ENOMEM;
                goto out;
        }
        for (size_t i = 0; i < d->n_outputs; i++) {
                const struct job_output *o = &d->outputs[i];

                if (o->tmp_path && publish_file_has(o->tmp_path, o->sha256)) {
                        int fd = open(o->tmp_path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
                        if (fd < 0)
                                goto redo;
                        tmps[n_tmps] = (struct publish_tmp){
                                .final_path = o->path,
                                .tmp_path = strdup(o->tmp_path),
                                .fd = fd,
                        };
                        sizes[n_tmps++] = o->bytes;
                        if (!tmps[n_tmps - 1].tmp_path) {
                                r = -ENOMEM;
                                goto out;
                        }
                        continue;
                }
                if (publish_file_has(o->path, o->sha256))
                        continue; /* renamed before the crash: already published */
                log_warning("job %" PRId64 ": staged output %s is missing or altered; "
                            "rendering again",
                            id, o->tmp_path ? o->tmp_path : o->path);
                goto redo;
        }

        r = publish_commit(tmps, sizes, n_tmps, &failed);
        if (r >= 0)
                r = recover_manifest(l, d);
        if (r >= 0) {
                int k = recover_replaced(l, d);

                if (k < 0)
                        log_warning_errno(k,
                                          "job %" PRId64 ": remove the outputs it replaced under "
                                          "other names: %m",
                                          id);
        }
        if (r < 0) {
                log_warning_errno(r, "job %" PRId64 ": publish %s: %m; rendering again", id,
                                  failed ? failed : "manifest");
                goto redo;
        }
        r = claim_lost(l, id, ledger_complete(l, id, d->job.fence, NULL, 0, now_usec));
        if (r == 0) {
                log_job(LOG_INFO, LOG_JOB_DONE, id, d->job.source_path, d->job.pipeline,
                        "job %" PRId64 " %s: published from staging after restart", id,
                        d->job.source_path);
                r = 1;
        }
        goto out;

redo:
        unlink_staged(d);
        r = claim_lost(l, id, ledger_release(l, id, d->job.fence, now_usec, now_usec));
out:
        for (size_t i = 0; i < n_tmps; i++) {
                tmps[i].final_path = NULL; /* borrowed from d */
                publish_tmp_discard(&tmps[i]);
        }
        free(tmps);
        free(sizes);
        return r;
}

/* Keeps the temporary files of jobs running in the ledger (this node's are not, any more:
 * other nodes' jobs), and every file when the ledger cannot say. */
static bool keep_running(int64_t job_id, void *userdata)
{
        _cleanup_(job_detail_freep) struct job_detail *d = NULL;
        int r;

        if (job_id <= 0)
                return false;
        r = ledger_get(userdata, job_id, &d);
        return r < 0 || (r > 0 && d->job.state == JOB_RUNNING);
}

int recover_run(ledger *l, const struct config *cfg, int64_t now_usec, struct recover_stats *ret)
{
        _cleanup_free_ int64_t *ids = NULL;
        struct recover_stats st = {};
        bool shared = cfg->ledger.engine == CONFIG_LEDGER_POSTGRESQL;
        char node_buf[64];
        const char *node = shared ? config_ledger_node(cfg, node_buf, sizeof node_buf) : NULL;
        size_t n = 0;
        int r;

        r = ledger_list_staged_node(l, node, &ids, &n);
        if (r < 0)
                return log_error_errno(r, "ledger: list staged jobs: %s", ledger_errmsg(l));
        for (size_t i = 0; i < n; i++) {
                r = recover_staged_job(l, ids[i], shared ? (int64_t)cfg->ledger.lease_usec : 0,
                                       now_usec);
                if (r < 0)
                        return log_error_errno(r, "ledger: recover job %" PRId64 ": %s", ids[i],
                                               ledger_errmsg(l));
                if (r == 2)
                        st.lost++;
                else if (r == 1)
                        st.published++;
                else
                        st.redone++;
        }

        r = ledger_recover_node(l, node, now_usec);
        if (r < 0)
                return log_error_errno(r, "ledger: recover running jobs: %s", ledger_errmsg(l));
        st.requeued = (unsigned)r;

        for (size_t i = 0; i < cfg->n_watches; i++) {
                r = shared ? publish_sweep_keep(cfg->watches[i].output, keep_running, l)
                           : publish_sweep(cfg->watches[i].output);
                if (r < 0)
                        log_warning_errno(r, "sweep %s: %m", cfg->watches[i].output);
                else
                        st.swept += (unsigned)r;
        }
        *ret = st;
        return 0;
}
