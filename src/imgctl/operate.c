/* SPDX-License-Identifier: MIT */
/*
 * operate.c - the verbs that steer imgd (imgctl.h), each one request (or a loop of them) that
 * imgd carries out and answers: retry (one job, or every dead job in batches), cancel, pause
 * and resume (one function, a table of their texts), drain (pause, then wait until nothing
 * runs), enqueue (a file imgd did not notice), reload (the configuration, with the outcome).
 * They need the operator role: imgd refuses them to the read-only one (exit status 4).
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shared/proto.h"
#include "shared/time-util.h"
#include "imgctl/imgctl.h"

int operate_retry(struct client *ctl, const struct verb_args *a)
{
        _cleanup_(json_decrefp) json_t *result = NULL;
        int64_t total = 0, remaining = 0, first = -1;
        int r;

        if (!a->dead) {
                r = client_request(ctl, client_request_with_id("retry", a->job), &result);
                if (r != EXIT_OK)
                        return r;
                if (a->json)
                        return output_json(result);
                printf("job %" PRId64 " queued again\n", a->job);
                return EXIT_OK;
        }

        /* imgd retries a batch per request and says how many remain. Jobs that die again
         * meanwhile are not retried twice: stop after as many as there were at first. */
        for (;;) {
                _cleanup_(json_decrefp) json_t *batch = NULL;
                json_t *req = proto_request_new("retry");
                int64_t retried;

                if (!req || json_object_set_new(req, "dead", json_true()) < 0)
                        imgctl_oom();
                r = client_request(ctl, req, &batch);
                if (r != EXIT_OK)
                        return r;
                retried = client_get_int(batch, "retried");
                remaining = client_get_int(batch, "remaining");
                if (first < 0)
                        first = retried + remaining;
                total += retried;
                if (remaining <= 0 || retried <= 0 || total >= first)
                        break;
        }
        if (a->json) {
                result = json_pack("{s:I, s:I}", "retried", (json_int_t)total, "remaining",
                                   (json_int_t)remaining);
                if (!result)
                        imgctl_oom();
                return output_json(result);
        }
        printf("%" PRId64 " dead job(s) queued again\n", total);
        if (remaining > 0)
                printf("%" PRId64 " job(s) dead again already or meanwhile\n", remaining);
        return EXIT_OK;
}

int operate_cancel(struct client *ctl, const struct verb_args *a)
{
        _cleanup_(json_decrefp) json_t *result = NULL;
        int r;

        r = client_request(ctl, client_request_with_id("cancel", a->job), &result);
        if (r != EXIT_OK)
                return r;
        if (a->json)
                return output_json(result);
        {
                _cleanup_free_ char *was = output_clean(client_get_str(result, "was", "?"), 0);

                printf("job %" PRId64 " cancelled (it was %s)\n", a->job, was);
        }
        return EXIT_OK;
}

/* pause and resume: the same request and answer, with their own words. */
static const struct intake_verb {
        const char *name;
        const char *done;    /* what is printed */
        bool counts_running; /* followed by how many jobs still run */
} intake_verbs[] = {
        { "pause", "intake paused: no new jobs are started", true },
        { "resume", "intake resumed", false },
};

int operate_intake(struct client *ctl, const struct verb_args *a)
{
        _cleanup_(json_decrefp) json_t *result = NULL;
        const struct intake_verb *v = NULL;
        int r;

        for (size_t i = 0; i < ELEMENTSOF(intake_verbs); i++)
                if (strcmp(intake_verbs[i].name, a->verb->name) == 0)
                        v = &intake_verbs[i];
        assert(v);
        r = client_request(ctl, proto_request_new(v->name), &result);
        if (r != EXIT_OK)
                return r;
        if (a->json)
                return output_json(result);
        fputs(v->done, stdout);
        if (v->counts_running)
                printf("; %" PRId64 " job(s) still running", client_get_int(result, "running"));
        fputc('\n', stdout);
        return EXIT_OK;
}

/* The number of dispatched jobs in a status answer ("running"; older daemons: the ledger's
 * count). */
static int64_t status_running(const json_t *status)
{
        const json_t *v = json_object_get(status, "running");

        if (json_is_integer(v))
                return (int64_t)json_integer_value(v);
        return client_get_int(json_object_get(status, "jobs"), "running");
}

int operate_drain(struct client *ctl, const struct verb_args *a)
{
        _cleanup_(json_decrefp) json_t *result = NULL;
        int64_t deadline = 0, running;
        int r;

        if (a->has_timeout)
                deadline = (int64_t)mono_usec() + (int64_t)(a->timeout_s * (double)USEC_PER_SEC);

        r = client_request(ctl, proto_request_new("drain"), &result);
        if (r != EXIT_OK)
                return r;
        running = client_get_int(result, "running");
        while (running > 0) {
                _cleanup_(json_decrefp) json_t *status = NULL;

                if (a->has_timeout && (int64_t)mono_usec() >= deadline) {
                        imgctl_error("timed out after %g s: %" PRId64
                                     " job(s) still running; intake "
                                     "stays paused ('%s resume' to continue)",
                                     a->timeout_s, running, IMGCTL_PROGRAM);
                        return EXIT_FAILED;
                }
                usleep(WAIT_POLL_USEC);
                r = client_request(ctl, proto_request_new("status"), &status);
                if (r != EXIT_OK)
                        return r;
                running = status_running(status);
        }
        if (a->json) {
                json_decref(result);
                result = json_pack("{s:b, s:i}", "paused", 1, "running", 0);
                if (!result)
                        imgctl_oom();
                return output_json(result);
        }
        printf("drained: intake paused and no job running ('%s resume' to continue)\n",
               IMGCTL_PROGRAM);
        return EXIT_OK;
}

int operate_enqueue(struct client *ctl, const struct verb_args *a)
{
        _cleanup_(json_decrefp) json_t *result = NULL;
        _cleanup_free_ char *real = NULL, *source = NULL, *state = NULL;
        json_t *req;
        int r;

        /* imgd resolves the path again itself; this makes a relative one absolute. */
        real = realpath(a->path, NULL);
        if (!real) {
                _cleanup_free_ char *clean = output_clean(a->path, 0);

                imgctl_error("%s: %s", clean, strerror(errno));
                return EXIT_FAILED;
        }
        req = proto_request_new("enqueue");
        if (!req || json_object_set_new(req, "path", proto_string_lossy(real)) < 0)
                imgctl_oom();
        r = client_request(ctl, req, &result);
        if (r != EXIT_OK)
                return r;
        if (a->json)
                return output_json(result);

        source = output_clean(client_get_str(result, "source", real), 0);
        state = output_clean(client_get_str(result, "state", "?"), 0);
        if (json_is_true(json_object_get(result, "created")))
                printf("job %" PRId64 " queued: %s\n", client_get_int(result, "id"), source);
        else if (client_get_int(result, "id") > 0)
                printf("job %" PRId64 " for %s exists already (%s)\n", client_get_int(result, "id"),
                       source, state);
        else
                printf("%s is known to imgd already; no job was created\n", source);
        return EXIT_OK;
}

int operate_reload(struct client *ctl, const struct verb_args *a)
{
        _cleanup_(json_decrefp) json_t *result = NULL;
        int r;

        r = client_request(ctl, proto_request_new("reload"), &result);
        if (r != EXIT_OK)
                return r;
        if (a->json)
                return output_json(result);
        {
                _cleanup_free_ char *file = output_clean(client_get_str(result, "config", "?"), 0);

                printf("reloaded %s: watching %" PRId64 " folder(s)\n", file,
                       client_get_int(result, "watches"));
        }
        return EXIT_OK;
}
/* The words of `imgctl reconcile`, the request each makes and what it prints. */
static const struct {
        const char *word, *request, *done;
} reconcile_words[] = {
        { "pause", "reconcile-pause",
          "reconciliation paused: no new reconciliation jobs are queued" },
        { "resume", "reconcile-resume",
          "reconciliation resumed: a new pass queues what is missing or stale" },
        { "retract-removed", "reconcile-retract-removed",
          "a new pass retracts the outputs of variants no longer configured" },
};

int operate_reconcile(struct client *ctl, const struct verb_args *a)
{
        _cleanup_(json_decrefp) json_t *result = NULL;
        size_t i = 0;
        int r;

        while (i < ELEMENTSOF(reconcile_words) && strcmp(a->word, reconcile_words[i].word) != 0)
                i++;
        if (i == ELEMENTSOF(reconcile_words)) {
                options_usage_error(a->verb->name,
                                    "'%s' is not one of pause, resume, retract-removed", a->word);
                return EXIT_USAGE;
        }
        r = client_request(ctl, proto_request_new(reconcile_words[i].request), &result);
        if (r != EXIT_OK)
                return r;
        if (a->json)
                return output_json(result);
        puts(reconcile_words[i].done);
        return EXIT_OK;
}
