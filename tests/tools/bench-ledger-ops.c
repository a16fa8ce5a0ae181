/* SPDX-License-Identifier: MIT */
/*
 * imgd-bench-ledger-ops - the ledger's hot path, alone: N uploads enqueued, each claimed,
 * staged with three outputs and completed, one transaction per transition as the scheduler
 * makes them (claims not flushed, the rest flushed), then N lookups of ledger_known_stat().
 * It prints the time per call of each kind, so that an engine change can be compared with
 * the one before it (scripts/bench-ledger.sh measures a million-job ledger, not this path).
 * Not installed.
 *
 *   imgd-bench-ledger-ops [-n N] FILE
 *   imgd-bench-ledger-ops [-n N] -p CONNINFO
 *
 * FILE is a new SQLite ledger (it must not exist); CONNINFO names an empty PostgreSQL
 * database or schema (libpq's connection string) for the PostgreSQL engine.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

int main(int argc, char **argv)
{
        unsigned n = 5000;
        struct ledger_params p = { .engine = LEDGER_ENGINE_SQLITE };
        ledger *l = NULL;
        char *err = NULL;
        usec_t t0;
        int opt, r;

        while ((opt = getopt(argc, argv, "n:p:")) != -1) {
                if (opt == 'n')
                        n = (unsigned)strtoul(optarg, NULL, 10);
                else if (opt == 'p') {
                        p.engine = LEDGER_ENGINE_POSTGRESQL;
                        p.conninfo = optarg;
                } else
                        return 2;
        }
        if (optind != argc - (p.conninfo ? 0 : 1) || n == 0) {
                fprintf(stderr, "usage: imgd-bench-ledger-ops [-n N] FILE | -p CONNINFO\n");
                return 2;
        }
        p.path = p.conninfo ? NULL : argv[optind];
        r = ledger_open_params(&p, &l, &err);
        if (r < 0) {
                fprintf(stderr, "imgd-bench-ledger-ops: %s\n", err ? err : strerror(-r));
                return 1;
        }

        t0 = mono_usec();
        for (unsigned i = 0; i < n; i++) {
                char path[64], key[64];
                struct source_info s = { .watch = "/up",
                                         .path = path,
                                         .output_key = key,
                                         .pipeline = "avatar",
                                         .size = i,
                                         .mtime_ns = i,
                                         .ino = i };
                int64_t id;

                snprintf(path, sizeof path, "/up/%u.jpg", i);
                snprintf(key, sizeof key, "/out/%u", i);
                snprintf(s.sha256, sizeof s.sha256, "%064x", i);
                r = ledger_enqueue(l, &s, 1000 + i, &id);
                if (r < 0)
                        die(l, "enqueue", r);
        }
        report("enqueue", n, t0);

        usec_t claim = 0, stage = 0, complete = 0;
        for (unsigned i = 0; i < n; i++) {
                struct job *j = NULL;
                struct job_output outs[3];
                static const char *const names[] = { "small", "medium", "large" };
                char paths[3][64], tmps[3][72];
                usec_t a;

                a = mono_usec();
                r = ledger_claim(l, "bench", 10000000, 60000000, JOB_PRIORITY_BACKGROUND, &j);
                if (r <= 0)
                        die(l, "claim", r < 0 ? r : -ENOENT);
                claim += mono_usec() - a;
                for (int k = 0; k < 3; k++) {
                        snprintf(paths[k], sizeof paths[k], "%s_%s.webp", j->output_key, names[k]);
                        snprintf(tmps[k], sizeof tmps[k], "%s.tmp", paths[k]);
                        outs[k] = (struct job_output){ .variant = (char *)names[k],
                                                       .path = paths[k],
                                                       .format = "webp",
                                                       .width = 100,
                                                       .height = 100,
                                                       .bytes = 3000,
                                                       .tmp_path = tmps[k] };
                        snprintf(outs[k].sha256, sizeof outs[k].sha256, "%064x", k);
                }
                a = mono_usec();
                r = ledger_stage(l, j->id, j->fence, outs, 3, false, NULL, 10000001);
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

        r = ledger_close(l, &err);
        if (r < 0)
                fprintf(stderr, "imgd-bench-ledger-ops: close: %s\n", err ? err : strerror(-r));
        free(err);
        return 0;
}
