/* SPDX-License-Identifier: MIT */
/*
 * imgd-bench-ledger-ops - the ledger's hot path, alone: N uploads enqueued, each claimed,
 * staged with three outputs and completed, one transaction per transition as the scheduler
 * makes them (claims not flushed, the rest flushed), then N lookups of ledger_known_stat().
 * It prints the time per call of each kind, so that an engine change can be compared with
 * the one before it (scripts/bench-ledger.sh measures a million-job ledger, not this path).
 * With -b K the jobs go through as imgd's supervisor takes them under load (issue 16): in
 * groups of K, the K uploads enqueued in one group commit, claimed (the claims riding on the
 * next commit), staged in one group commit and completed in another; it prints the CPU time
 * (user and system, from getrusage) and the wall time per job: what the ledger alone costs
 * the supervisor per job, the floor under its CPU per job. Not installed.
 *
 *   imgd-bench-ledger-ops [-n N] [-b K [-o OUTPUTS]] FILE
 *   imgd-bench-ledger-ops [-n N] [-b K [-o OUTPUTS]] -p CONNINFO
 *
 * OUTPUTS is the outputs per job with -b, 1 to 3 (default 3; the small pipeline of
 * scripts/bench.sh has 1).
 *
 * FILE is a new SQLite ledger (it must not exist); CONNINFO names an empty PostgreSQL
 * database or schema (libpq's connection string) for the PostgreSQL engine.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "daemon/ledger.h"
#include "shared/time-util.h"

static void die(ledger *l, const char *what, int r)
{
        fprintf(stderr, "imgd-bench-ledger-ops: %s: %s (%s)\n", what, strerror(-r),
                ledger_errmsg(l));
        exit(1);
}

static void report(const char *what, unsigned n, usec_t t0)
{
        double us = (double)(mono_usec() - t0);

        printf("%-14s %8u calls  %9.1f us/call\n", what, n, us / n);
}

/* Job i's source and its outputs, as imgd would record them. */
struct bench_job {
        char path[64], key[64];
        struct source_info s;
        struct job_output outs[3];
        char paths[3][64], tmps[3][72];
};

static void bench_source(struct bench_job *b, unsigned i)
{
        snprintf(b->path, sizeof b->path, "/up/%u.jpg", i);
        snprintf(b->key, sizeof b->key, "/out/%u", i);
        b->s = (struct source_info){ .watch = "/up",
                                     .path = b->path,
                                     .output_key = b->key,
                                     .pipeline = "avatar",
                                     .size = i,
                                     .mtime_ns = i,
                                     .ino = i };
        snprintf(b->s.sha256, sizeof b->s.sha256, "%064x", i);
}

static void bench_outputs(struct bench_job *b, const char *output_key)
{
        static const char *const names[] = { "small", "medium", "large" };

        for (int k = 0; k < 3; k++) {
                snprintf(b->paths[k], sizeof b->paths[k], "%s_%s.webp", output_key, names[k]);
                snprintf(b->tmps[k], sizeof b->tmps[k], "%s.tmp", b->paths[k]);
                b->outs[k] = (struct job_output){ .variant = (char *)names[k],
                                                  .path = b->paths[k],
                                                  .format = "webp",
                                                  .width = 100,
                                                  .height = 100,
                                                  .bytes = 3000,
                                                  .tmp_path = b->tmps[k] };
                snprintf(b->outs[k].sha256, sizeof b->outs[k].sha256, "%064x", k);
        }
}

static usec_t cpu_usec(usec_t *ret_sys)
{
        struct rusage ru;

        getrusage(RUSAGE_SELF, &ru);
        *ret_sys = (usec_t)ru.ru_stime.tv_sec * USEC_PER_SEC + (usec_t)ru.ru_stime.tv_usec;
        return (usec_t)ru.ru_utime.tv_sec * USEC_PER_SEC + (usec_t)ru.ru_utime.tv_usec + *ret_sys;
}

/* -b K: n jobs in groups of K, each group's transitions in group commits (see the top). */
static void run_grouped(ledger *l, unsigned n, unsigned k, unsigned n_outs)
{
        struct bench_job *b = calloc(k, sizeof *b);
        struct job **jobs = calloc(k, sizeof *jobs);
        usec_t t0 = mono_usec(), sys0, cpu0 = cpu_usec(&sys0), sys1, cpu1;
        int r;

        if (!b || !jobs)
                die(l, "memory", -ENOMEM);
        for (unsigned first = 0; first < n; first += k) {
                unsigned m = n - first < k ? n - first : k;

                r = ledger_batch_begin(l);
                for (unsigned i = 0; i < m && r >= 0; i++) {
                        int64_t id;

                        bench_source(&b[i], first + i);
                        r = ledger_enqueue(l, &b[i].s, 1000 + first + i, &id);
                }
                if (r >= 0)
                        r = ledger_batch_commit(l);
                if (r < 0)
                        die(l, "enqueue", r);
                for (unsigned i = 0; i < m; i++) {
                        r = ledger_claim(l, "bench", 10000000, 60000000, JOB_PRIORITY_LIVE,
                                         &jobs[i]);
                        if (r <= 0)
                                die(l, "claim", r < 0 ? r : -ENOENT);
                        bench_outputs(&b[i], jobs[i]->output_key);
                }
                r = ledger_batch_begin(l);
                for (unsigned i = 0; i < m && r >= 0; i++)
                        r = ledger_stage(l, jobs[i]->id, jobs[i]->fence, b[i].outs, n_outs, false,
                                         NULL, 10000001);
                if (r >= 0)
                        r = ledger_batch_commit(l);
                if (r < 0)
                        die(l, "stage", r);
                r = ledger_batch_begin(l);
                for (unsigned i = 0; i < m && r >= 0; i++)
                        r = ledger_complete(l, jobs[i]->id, jobs[i]->fence, NULL, 0, 10000002);
                if (r >= 0)
                        r = ledger_batch_commit(l);
                if (r < 0)
                        die(l, "complete", r);
                for (unsigned i = 0; i < m; i++)
                        jobs[i] = job_free(jobs[i]);
        }
        cpu1 = cpu_usec(&sys1);
        printf("groups of %u: %u jobs of %u output(s), per job: CPU %.1f us (system %.1f us), "
               "wall %.1f us\n",
               k, n, n_outs, (double)(cpu1 - cpu0) / n, (double)(sys1 - sys0) / n,
               (double)(mono_usec() - t0) / n);
        free(jobs);
        free(b);
}

int main(int argc, char **argv)
{
        unsigned n = 5000, group = 0, n_outs = 3;
        struct ledger_params p = { .engine = LEDGER_ENGINE_SQLITE };
        ledger *l = NULL;
        char *err = NULL;
        usec_t t0;
        int opt, r;

        while ((opt = getopt(argc, argv, "n:b:o:p:")) != -1) {
                if (opt == 'n')
                        n = (unsigned)strtoul(optarg, NULL, 10);
                else if (opt == 'b')
                        group = (unsigned)strtoul(optarg, NULL, 10);
                else if (opt == 'o')
                        n_outs = (unsigned)strtoul(optarg, NULL, 10);
                else if (opt == 'p') {
                        p.engine = LEDGER_ENGINE_POSTGRESQL;
                        p.conninfo = optarg;
                } else
                        return 2;
        }
        if (optind != argc - (p.conninfo ? 0 : 1) || n == 0 || n_outs < 1 || n_outs > 3) {
                fprintf(stderr, "usage: imgd-bench-ledger-ops [-n N] [-b K [-o 1..3]] FILE | -p "
                                "CONNINFO\n");
                return 2;
        }
        p.path = p.conninfo ? NULL : argv[optind];
        r = ledger_open_params(&p, &l, &err);
        if (r < 0) {
                fprintf(stderr, "imgd-bench-ledger-ops: %s\n", err ? err : strerror(-r));
                return 1;
        }

        if (group > 0) {
                run_grouped(l, n, group, n_outs);
                goto out;
        }

        t0 = mono_usec();
        for (unsigned i = 0; i < n; i++) {
                struct bench_job b;
                int64_t id;

                bench_source(&b, i);
                r = ledger_enqueue(l, &b.s, 1000 + i, &id);
                if (r < 0)
                        die(l, "enqueue", r);
        }
        report("enqueue", n, t0);

        usec_t claim = 0, stage = 0, complete = 0;
        for (unsigned i = 0; i < n; i++) {
                struct job *j = NULL;
                struct bench_job b;
                usec_t a;

                a = mono_usec();
                r = ledger_claim(l, "bench", 10000000, 60000000, JOB_PRIORITY_BACKGROUND, &j);
                if (r <= 0)
                        die(l, "claim", r < 0 ? r : -ENOENT);
                claim += mono_usec() - a;
                bench_outputs(&b, j->output_key);
                a = mono_usec();
                r = ledger_stage(l, j->id, j->fence, b.outs, 3, false, NULL, 10000001);
                if (r < 0)
                        die(l, "stage", r);
                stage += mono_usec() - a;
                a = mono_usec();
                r = ledger_complete(l, j->id, j->fence, NULL, 0, 10000002);
                if (r < 0)
                        die(l, "complete", r);
                complete += mono_usec() - a;
                job_free(j);
        }
        printf("%-14s %8u calls  %9.1f us/call\n", "claim", n, (double)claim / n);
        printf("%-14s %8u calls  %9.1f us/call\n", "stage", n, (double)stage / n);
        printf("%-14s %8u calls  %9.1f us/call\n", "complete", n, (double)complete / n);

        t0 = mono_usec();
        for (unsigned i = 0; i < n; i++) {
                char path[64];

                snprintf(path, sizeof path, "/up/%u.jpg", i);
                r = ledger_known_stat(l, path, i, i, i);
                if (r != 1)
                        die(l, "known_stat", r < 0 ? r : -ENOENT);
        }
        report("known_stat", n, t0);

out:
        r = ledger_close(l, &err);
        if (r < 0)
                fprintf(stderr, "imgd-bench-ledger-ops: close: %s\n", err ? err : strerror(-r));
        free(err);
        return 0;
}
