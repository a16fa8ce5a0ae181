/* SPDX-License-Identifier: MIT */
/*
 * query.c - the verbs that only ask imgd (imgctl.h): status (a monitoring check: exit status
 * 1 while an alert is active), jobs (a table of jobs, or --json), show (one job, its outputs
 * and errors), wait (until nothing is queued, running or waiting for a retry), metrics (the
 * Prometheus text). Each sends its request over the client, and prints the answer for people
 * (text from imgd cleaned by output.c) or as imgd sent it (--json).
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "shared/proto.h"
#include "shared/time-util.h"
#include "imgctl/imgctl.h"

/* The widest error text of the jobs table. */
#define ERROR_COLUMN_CHARS 48

/* A cluster's nodes (status' "cluster", on a ledger several nodes share), after the jobs. */
static void print_cluster(const json_t *result)
{
        const json_t *cluster = json_object_get(result, "cluster"), *nodes;
        struct output_table t;

        if (!json_is_object(cluster))
                return;
        if (json_object_get(cluster, "error")) {
                _cleanup_free_ char *why = output_clean(client_get_str(cluster, "error", "?"), 0);

                printf("cluster  unknown: %s\n\n", why);
                return;
        }
        nodes = json_object_get(cluster, "nodes");
        printf("cluster  %" PRId64 " node%s alive, %" PRId64 " lapsed (lease %.0f s)\n",
               client_get_int(cluster, "alive"), client_get_int(cluster, "alive") == 1 ? "" : "s",
               client_get_int(cluster, "lapsed"),
               json_number_value(json_object_get(cluster, "lease_s")));
        output_table_init(&t, 7);
        output_table_add(&t, "NODE", "STATE", "HEARTBEAT", "WORKERS", "RUNNING", "VERSION", "PID");
        for (size_t i = 0; i < json_array_size(nodes); i++) {
                const json_t *n = json_array_get(nodes, i);
                char name[80], beat[48], workers[16], running[16], pid[24];
                char age[32];

                snprintf(name, sizeof name, "%s%s", client_get_str(n, "node", "?"),
                         json_is_true(json_object_get(n, "self")) ? " (this)" : "");
                output_uptime((int64_t)json_number_value(json_object_get(n, "heartbeat_age_s")),
                              age, sizeof age);
                snprintf(beat, sizeof beat, "%s ago", age);
                snprintf(workers, sizeof workers, "%" PRId64, client_get_int(n, "workers"));
                snprintf(running, sizeof running, "%" PRId64, client_get_int(n, "running"));
                snprintf(pid, sizeof pid, "%" PRId64, client_get_int(n, "pid"));
                output_table_add(&t, name,
                                 json_is_true(json_object_get(n, "alive")) ? "alive" : "LAPSED",
                                 beat, workers, running, client_get_str(n, "version", NULL), pid);
        }
        output_table_print(&t, "  ");
        output_table_clear(&t);
        printf("\n");
}

int query_status(struct client *ctl, const struct verb_args *a)
{
        _cleanup_(json_decrefp) json_t *result = NULL;
        const json_t *watches, *workers, *jobs, *alerts, *v;
        const char *key;
        char uptime[32];
        struct output_table t;
        bool first;
        int r, status;

        r = client_request(ctl, proto_request_new("status"), &result);
        if (r != EXIT_OK)
                return r;
        alerts = json_object_get(result, "alerts");
        status = json_array_size(alerts) > 0 ? EXIT_FAILED : EXIT_OK;
        if (a->json) {
                r = output_json(result);
                return r != EXIT_OK ? r : status;
        }

        output_uptime(client_get_int(result, "uptime_s"), uptime, sizeof uptime);
        {
                _cleanup_free_ char *state = output_clean(client_get_str(result, "state", "?"), 0);
                _cleanup_free_ char *version =
                        output_clean(client_get_str(result, "version", "?"), 0);
                _cleanup_free_ char *config =
                        output_clean(client_get_str(result, "config", "-"), 0);

                printf("imgd %s %s, pid %" PRId64 ", up %s\n", version, state,
                       client_get_int(result, "pid"), uptime);
                printf("config   %s\n", config);
        }

        v = json_object_get(result, "ledger");
        if (json_is_object(v) && json_is_false(json_object_get(v, "reachable"))) {
                _cleanup_free_ char *why = output_clean(client_get_str(v, "error", "?"), 0);
                char age[32];

                output_uptime(client_get_int(v, "unreachable_s"), age, sizeof age);
                printf("ledger   UNREACHABLE for %s: %s\n", age, why);
        }
        workers = json_object_get(result, "workers");
        printf("workers  %" PRId64 " (%" PRId64 " busy)\n", client_get_int(workers, "total"),
               client_get_int(workers, "busy"));
        if (json_is_true(json_object_get(result, "paused")))
                printf("intake   paused: no new jobs are started ('%s resume')\n", IMGCTL_PROGRAM);
        v = json_object_get(result, "breaker");
        if (json_is_object(v)) {
                _cleanup_free_ char *bstate = output_clean(client_get_str(v, "state", "?"), 16);
                _cleanup_free_ char *why = output_clean(client_get_str(v, "reason", ""), 0);

                printf("breaker  %s%s%s\n", bstate, *why ? ": " : "", why);
        }
        v = json_object_get(result, "health");
        if (json_is_object(v)) {
                _cleanup_free_ char *level = output_clean(client_get_str(v, "level", "?"), 16);
                _cleanup_free_ char *why = output_clean(client_get_str(v, "reason", ""), 0);

                int64_t backlog = client_get_int(v, "backlog");
                char eta[32];

                printf("health   %.0f/100, level %s%s%s\n",
                       json_number_value(json_object_get(v, "score")), level, *why ? ": " : "",
                       why);
                if (backlog == 0)
                        printf("backlog  none");
                else if (output_drain(v, eta, sizeof eta))
                        printf("backlog  %" PRId64 " job%s, drained in about %s", backlog,
                               backlog == 1 ? "" : "s", eta);
                else
                        printf("backlog  %" PRId64 " job%s, not draining (none finished recently)",
                               backlog, backlog == 1 ? "" : "s");
                printf("; %.2f jobs/s finished, error rate %.0f%%\n",
                       json_number_value(json_object_get(v, "finished_per_s")),
                       100 * json_number_value(json_object_get(v, "error_rate")));
        }
        v = json_object_get(result, "reconcile");
        if (json_is_object(v) &&
            (client_get_int(v, "remaining") > 0 || json_is_true(json_object_get(v, "scanning")))) {
                const json_t *eta = json_object_get(v, "eta_s");

                printf("reconcile %s%" PRId64 " job(s) remaining, %" PRId64 " done (%.1f/s)",
                       json_is_true(json_object_get(v, "scanning")) ? "scanning; " : "",
                       client_get_int(v, "remaining"), client_get_int(v, "done"),
                       json_number_value(json_object_get(v, "per_s")));
                if (json_is_integer(eta))
                        printf(", about %" PRId64 " s left", (int64_t)json_integer_value(eta));
                printf("%s\n", json_is_true(json_object_get(v, "paused")) ? " (paused)" : "");
        }
        for (size_t i = 0; i < json_array_size(alerts); i++) {
                _cleanup_free_ char *msg =
                        output_clean(client_get_str(json_array_get(alerts, i), "message", "?"), 0);

                printf("ALERT    %s\n", msg);
        }

        /* Every state the daemon reports, in its order: queued 0  running 1  retry 0 ... */
        jobs = json_object_get(result, "jobs");
        v = json_object_get(result, "node");
        if (json_is_string(v)) {
                _cleanup_free_ char *node = output_clean(json_string_value(v), 0);

                printf("node     %s: %" PRId64 " job(s) running here\n", node,
                       client_get_int(json_object_get(result, "node_jobs"), "running"));
                printf("jobs     (cluster) ");
        } else
                printf("jobs     ");
        first = true;
        if (!json_is_object(jobs))
                printf("unknown: the ledger cannot be read");
        json_object_foreach((json_t *)jobs, key, v)
        {
                _cleanup_free_ char *name = output_clean(key, 0);

                printf("%s%s %" PRId64, first ? "" : "  ", name, (int64_t)json_integer_value(v));
                first = false;
        }
        printf("\n\n");
        print_cluster(result);

        watches = json_object_get(result, "watches");
        if (json_array_size(watches) == 0) {
                printf("no watched folders\n");
                return status;
        }
        output_table_init(&t, 4);
        output_table_add(&t, "WATCH", "OUTPUT", "PIPELINE", "RECURSIVE");
        for (size_t i = 0; i < json_array_size(watches); i++) {
                const json_t *w = json_array_get(watches, i);

                output_table_add(&t, client_get_str(w, "path", NULL),
                                 client_get_str(w, "output", NULL),
                                 client_get_str(w, "pipeline", NULL),
                                 json_is_true(json_object_get(w, "recursive")) ? "yes" : "no");
        }
        output_table_print(&t, "");
        output_table_clear(&t);
        return status;
}

int query_jobs(struct client *ctl, const struct verb_args *a)
{
        _cleanup_(json_decrefp) json_t *result = NULL;
        const json_t *jobs;
        json_t *req;
        struct output_table t;
        int r;

        req = proto_request_new("jobs");
        if (!req)
                imgctl_oom();
        if ((a->state && json_object_set_new(req, "state", proto_string_lossy(a->state)) < 0) ||
            (a->watch && json_object_set_new(req, "watch", proto_string_lossy(a->watch)) < 0) ||
            (a->since_usec > 0 &&
             json_object_set_new(req, "since", json_integer(a->since_usec)) < 0) ||
            (a->limit > 0 && json_object_set_new(req, "limit", json_integer(a->limit)) < 0))
                imgctl_oom();
        r = client_request(ctl, req, &result);
        if (r != EXIT_OK)
                return r;
        if (a->json)
                return output_json(result);

        jobs = json_object_get(result, "jobs");
        if (json_array_size(jobs) == 0) {
                printf("no jobs\n");
                return EXIT_OK;
        }
        output_table_init(&t, 6);
        output_table_add(&t, "ID", "STATE", "ATTEMPTS", "UPDATED", "SOURCE", "ERROR");
        for (size_t i = 0; i < json_array_size(jobs); i++) {
                const json_t *j = json_array_get(jobs, i);
                _cleanup_free_ char *error = NULL;
                char id[24], attempts[24], updated[32];

                snprintf(id, sizeof id, "%" PRId64, client_get_int(j, "id"));
                snprintf(attempts, sizeof attempts, "%" PRId64, client_get_int(j, "attempts"));
                output_time(client_get_int(j, "updated_us"), updated, sizeof updated);
                error = output_clean(client_get_str(j, "error", ""), ERROR_COLUMN_CHARS);
                output_table_add(&t, id, client_get_str(j, "state", NULL), attempts, updated,
                                 client_get_str(j, "source", NULL), error);
        }
        output_table_print(&t, "");
        output_table_clear(&t);
        if (json_is_true(json_object_get(result, "truncated")))
                fprintf(stderr,
                        "%s: only the newest %zu jobs fit in one answer; narrow the list with "
                        "--state, --watch, --since or --limit\n",
                        IMGCTL_PROGRAM, json_array_size(jobs));
        return EXIT_OK;
}

static void print_job(const json_t *job)
{
        const json_t *outputs = json_object_get(job, "outputs");
        const json_t *errors = json_object_get(job, "errors");
        const json_t *placeholder = json_object_get(job, "placeholder");
        const char *state = client_get_str(job, "state", "?");
        char buf[64];
        struct output_table t;

        snprintf(buf, sizeof buf, "%" PRId64, client_get_int(job, "id"));
        output_field("id:", buf);
        output_field("state:", state);
        if (strcmp(client_get_str(job, "kind", "render"), "render") != 0) {
                /* A retraction, drop or move: what it works from. */
                snprintf(buf, sizeof buf, "%s (from job %" PRId64 ")",
                         client_get_str(job, "kind", "?"), client_get_int(job, "origin"));
                output_field("kind:", buf);
        }
        if (json_is_array(json_object_get(job, "redo"))) {
                _cleanup_free_ char *list = json_dumps(json_object_get(job, "redo"), JSON_COMPACT);
                output_field(strcmp(client_get_str(job, "kind", "render"), "drop") == 0
                                     ? "drops:"
                                     : "renders:",
                             list ?: "?");
        }
        output_field("source:", client_get_str(job, "source", "-"));
        output_field("watch:", client_get_str(job, "watch", "-"));
        output_field("pipeline:", client_get_str(job, "pipeline", "-"));
        output_field("output key:", client_get_str(job, "output_key", "-"));
        if (json_is_string(json_object_get(job, "manifest")))
                output_field("manifest:", client_get_str(job, "manifest", "-"));
        output_field("sha256:", client_get_str(job, "sha256", "-"));
        snprintf(buf, sizeof buf, "%" PRId64, client_get_int(job, "attempts"));
        output_field("attempts:", buf);
        output_time(client_get_int(job, "created_us"), buf, sizeof buf);
        output_field("created:", buf);
        output_time(client_get_int(job, "updated_us"), buf, sizeof buf);
        output_field("updated:", buf);
        if (strcmp(state, "queued") == 0 || strcmp(state, "retry") == 0) {
                output_time(client_get_int(job, "next_at_us"), buf, sizeof buf);
                output_field("next try:", buf);
        }
        if (json_is_string(json_object_get(job, "error")))
                output_field("error:", client_get_str(job, "error", ""));
        if (json_is_object(placeholder)) {
                output_field("blurhash:", client_get_str(placeholder, "blurhash", "-"));
                output_field("dominant:", client_get_str(placeholder, "dominant", "-"));
                output_field("data URI:", client_get_str(placeholder, "data_uri", "-"));
        }

        printf("\noutputs:\n");
        if (json_array_size(outputs) == 0) {
                printf("  none\n");
        } else {
                output_table_init(&t, 8);
                output_table_add(&t, "VARIANT", "FORMAT", "SIZE", "BYTES", "QUALITY", "DSSIM",
                                 "RECIPE", "PATH");
                for (size_t i = 0; i < json_array_size(outputs); i++) {
                        const json_t *o = json_array_get(outputs, i);
                        const json_t *q = json_object_get(o, "quality");
                        const json_t *d = json_object_get(o, "dssim");
                        char size[48], bytes[32], quality[24] = "-", dssim[32] = "-";

                        snprintf(size, sizeof size, "%" PRId64 "x%" PRId64,
                                 client_get_int(o, "width"), client_get_int(o, "height"));
                        output_bytes((uint64_t)client_get_int(o, "bytes"), bytes, sizeof bytes);
                        if (json_is_integer(q))
                                snprintf(quality, sizeof quality, "%" JSON_INTEGER_FORMAT,
                                         json_integer_value(q));
                        if (json_is_number(d))
                                snprintf(dssim, sizeof dssim, "%.5f", json_number_value(d));
                        output_table_add(&t, client_get_str(o, "variant", NULL),
                                         client_get_str(o, "format", NULL), size, bytes, quality,
                                         dssim, client_get_str(o, "recipe", "-"),
                                         client_get_str(o, "path", NULL));
                }
                output_table_print(&t, "  ");
                output_table_clear(&t);
        }

        printf("\nerrors:\n");
        if (json_array_size(errors) == 0) {
                printf("  none\n");
                return;
        }
        output_table_init(&t, 3);
        output_table_add(&t, "ATTEMPT", "AT", "MESSAGE");
        for (size_t i = 0; i < json_array_size(errors); i++) {
                const json_t *e = json_array_get(errors, i);
                char attempt[24], at[32];

                snprintf(attempt, sizeof attempt, "%" PRId64, client_get_int(e, "attempt"));
                output_time(client_get_int(e, "at_us"), at, sizeof at);
                output_table_add(&t, attempt, at, client_get_str(e, "message", NULL));
        }
        output_table_print(&t, "  ");
        output_table_clear(&t);
}

int query_show(struct client *ctl, const struct verb_args *a)
{
        _cleanup_(json_decrefp) json_t *result = NULL;
        int r;

        r = client_request(ctl, client_request_with_id("show", a->job), &result);
        if (r != EXIT_OK)
                return r;
        if (a->json)
                return output_json(result);
        print_job(json_object_get(result, "job"));
        return EXIT_OK;
}

int query_wait(struct client *ctl, const struct verb_args *a)
{
        int64_t deadline = 0;
        int r;

        if (a->has_timeout)
                deadline = (int64_t)mono_usec() + (int64_t)(a->timeout_s * (double)USEC_PER_SEC);

        for (;;) {
                _cleanup_(json_decrefp) json_t *result = NULL;
                const json_t *jobs;
                int64_t queued, running, retry, left;

                r = client_request(ctl, proto_request_new("status"), &result);
                if (r != EXIT_OK)
                        return r;
                if (client_status_idle(result))
                        return EXIT_OK;
                jobs = json_object_get(result, "jobs");
                queued = client_get_int(jobs, "queued");
                running = client_get_int(jobs, "running");
                retry = client_get_int(jobs, "retry");

                if (a->has_timeout) {
                        left = deadline - (int64_t)mono_usec();
                        if (left <= 0) {
                                imgctl_error("timed out after %g s: %" PRId64 " queued, %" PRId64
                                             " running, %" PRId64 " retry",
                                             a->timeout_s, queued, running, retry);
                                return EXIT_FAILED;
                        }
                        if (left < (int64_t)WAIT_POLL_USEC) {
                                usleep((useconds_t)left);
                                continue;
                        }
                }
                usleep(WAIT_POLL_USEC);
        }
}

int query_metrics(struct client *ctl, const struct verb_args *a)
{
        _cleanup_(json_decrefp) json_t *result = NULL;
        const char *text;
        int r;

        r = client_request(ctl, proto_request_new("metrics"), &result);
        if (r != EXIT_OK)
                return r;
        if (a->json)
                return output_json(result);
        /* The exposition as it is, except for control characters other than newlines. */
        for (text = client_get_str(result, "text", ""); *text; text++) {
                unsigned char ch = (unsigned char)*text;

                fputc(ch == '\n' || (ch >= 0x20 && ch != 0x7f) ? ch : '?', stdout);
        }
        return EXIT_OK;
}

int query_plan(struct client *ctl, const struct verb_args *a)
{
        _cleanup_(json_decrefp) json_t *result = NULL;
        const json_t *watches;
        struct output_table t;
        int r;

        r = client_request(ctl, proto_request_new("plan"), &result);
        if (r != EXIT_OK)
                return r;
        if (a->json)
                return output_json(result);
        printf("reconciliation: %s%s, %" PRId64 " done source(s) looked at, %" PRId64
               " job(s) queued, %" PRId64 " recipe(s) adopted; %" PRId64
               " background job(s) remaining\n"
               "(the counts below are the pass's, before the jobs it queued ran)\n\n",
               json_is_true(json_object_get(result, "scanning")) ? "scanning" : "pass complete",
               json_is_true(json_object_get(result, "paused")) ? " (paused)" : "",
               client_get_int(result, "scanned"), client_get_int(result, "queued"),
               client_get_int(result, "adopted"), client_get_int(result, "remaining"));
        watches = json_object_get(result, "watches");
        output_table_init(&t, 8);
        output_table_add(&t, "WATCH", "PIPELINE", "VARIANT", "RECIPE", "CURRENT", "MISSING",
                         "STALE", "REMOVED");
        for (size_t i = 0; i < json_array_size(watches); i++) {
                const json_t *w = json_array_get(watches, i);
                const json_t *vs = json_object_get(w, "variants");

                for (size_t k = 0; k < json_array_size(vs); k++) {
                        const json_t *v = json_array_get(vs, k);
                        char n[4][24];

                        snprintf(n[0], sizeof n[0], "%" PRId64, client_get_int(v, "current"));
                        snprintf(n[1], sizeof n[1], "%" PRId64, client_get_int(v, "missing"));
                        snprintf(n[2], sizeof n[2], "%" PRId64, client_get_int(v, "stale"));
                        snprintf(n[3], sizeof n[3], "%" PRId64, client_get_int(v, "removed"));
                        output_table_add(&t, client_get_str(w, "watch", NULL),
                                         client_get_str(w, "pipeline", NULL),
                                         client_get_str(v, "variant", NULL),
                                         client_get_str(v, "recipe", "(removed)"), n[0], n[1], n[2],
                                         n[3]);
                }
        }
        output_table_print(&t, "");
        output_table_clear(&t);
        return EXIT_OK;
}
