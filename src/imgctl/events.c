/* SPDX-License-Identifier: MIT */
/*
 * events.c - imgctl events (imgctl.h): subscribes to imgd's job transitions and prints each
 * as it arrives, one line for people or the event's JSON as imgd sent it. Without --follow it
 * stops once nothing is queued, running or waiting for a retry, asked over a second
 * connection every EVENTS_POLL_USEC (the subscribed one only carries events), after reading
 * what has already arrived. Exit status 1 when imgd ends the subscription.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "shared/proto.h"
#include "shared/time-util.h"
#include "imgctl/imgctl.h"

#define EVENTS_POLL_USEC (500 * USEC_PER_MSEC)

/* One event as a line for people: "done      #12 /srv/uploads/a.jpg  3 outputs". */
static void print_event(const json_t *ev)
{
        const json_t *job = json_object_get(ev, "job");
        const char *name = client_get_str(ev, "event", "?");
        _cleanup_free_ char *event = output_clean(name, 16);
        _cleanup_free_ char *source = output_clean(client_get_str(job, "source", "-"), 0);
        _cleanup_free_ char *error = NULL;

        const json_t *rc = json_object_get(ev, "reconcile");

        if (rc) {
                /* The reconciliation's: a pass looked at everything, or its jobs are done. */
                if (strcmp(name, "reconcile-pass") == 0)
                        printf("%s  %" PRId64 " source(s) looked at, %" PRId64
                               " job(s) queued, %" PRId64 " gone retracted, %" PRId64
                               " dropping removed variants\n",
                               event, client_get_int(rc, "scanned"), client_get_int(rc, "queued"),
                               client_get_int(rc, "retracted"), client_get_int(rc, "dropped"));
                else
                        printf("%s  %" PRId64 " job(s) done\n", event, client_get_int(rc, "done"));
                return;
        }
        printf("%-9s #%-5" PRId64 " %s", event, client_get_int(job, "id"), source);
        if (strcmp(name, "done") == 0 || strcmp(name, "moved") == 0) {
                size_t n = json_array_size(json_object_get(job, "outputs"));

                printf("  %zu output%s", n, n == 1 ? "" : "s");
                if (json_is_string(json_object_get(job, "from"))) {
                        _cleanup_free_ char *from =
                                output_clean(client_get_str(job, "from", ""), 0);
                        printf(" (from %s)", from);
                }
        } else if (strcmp(name, "retracted") == 0) {
                size_t n = json_array_size(json_object_get(job, "removed"));

                printf("  %zu file%s removed", n, n == 1 ? "" : "s");
        } else if (json_is_string(json_object_get(job, "error"))) {
                error = output_clean(client_get_str(job, "error", ""), 0);
                printf("  %s", error);
                if (strcmp(name, "retry") == 0 && client_get_int(job, "next_at_us") > 0) {
                        char at[32];

                        output_time(client_get_int(job, "next_at_us"), at, sizeof at);
                        printf(" (next try %s)", at);
                }
        }
        fputc('\n', stdout);
}

/* True when status says no job is queued, running or waiting for a retry. */
static int events_idle(struct client *status_ctl, bool *ret_idle)
{
        _cleanup_(json_decrefp) json_t *status = NULL;
        int r;

        r = client_request(status_ctl, proto_request_new("status"), &status);
        if (r != EXIT_OK)
                return r;
        *ret_idle = client_status_idle(status);
        return EXIT_OK;
}

int events_run(struct client *ctl, const struct verb_args *a)
{
        _cleanup_(json_decrefp) json_t *result = NULL;
        /* A second connection asks for the status (without --connect-timeout's patience). */
        struct client status_ctl = CLIENT_INIT(ctl->socket);
        bool idle = false;
        int64_t next_check = 0;
        int r;

        r = client_request(ctl, proto_request_new("events"), &result);
        if (r != EXIT_OK)
                return r;
        if (!json_is_true(json_object_get(result, "subscribed"))) {
                imgctl_error("imgd did not subscribe this client to events");
                return EXIT_FAILED;
        }

        for (;;) {
                _cleanup_(json_decrefp) json_t *ev = NULL;
                _cleanup_free_ char *error = NULL;
                int64_t now = (int64_t)mono_usec(), deadline;
                char *line = NULL;
                size_t n = 0;

                if (!a->follow && now >= next_check) {
                        /* Before reading on: is there anything left to report? Events already
                         * sent are read first (below, with a zero wait) once it is idle. */
                        r = events_idle(&status_ctl, &idle);
                        if (r != EXIT_OK)
                                goto out;
                        next_check = (int64_t)mono_usec() + (int64_t)EVENTS_POLL_USEC;
                }
                if (idle)
                        deadline = (int64_t)mono_usec() +
                                   (int64_t)USEC_PER_MSEC; /* only what has arrived */
                else if (a->follow)
                        deadline = now + 3600 * (int64_t)USEC_PER_SEC;
                else
                        deadline = next_check;
                r = client_read_line(ctl, deadline, &line, &n);
                if (r == -ETIMEDOUT) {
                        if (idle) {
                                r = EXIT_OK;
                                goto out;
                        }
                        continue;
                }
                if (r < 0) {
                        if (r == -ECONNRESET)
                                imgctl_error(
                                        "imgd on %s ended the subscription (events not read fast "
                                        "enough, or imgd stopped)",
                                        ctl->socket);
                        else
                                imgctl_error("%s: %s", ctl->socket, strerror(-r));
                        r = EXIT_FAILED;
                        goto out;
                }
                r = proto_parse_event(line, n, &ev, &error);
                if (r == -ENOMEM)
                        imgctl_oom();
                if (r < 0)
                        continue; /* an answer, or something newer than this imgctl knows */
                if (a->json) {
                        _cleanup_free_ char *s = json_dumps(ev, JSON_COMPACT);

                        if (!s)
                                imgctl_oom();
                        puts(s);
                } else
                        print_event(ev);
                fflush(stdout);
        }
out:
        client_close(&status_ctl);
        return r;
}
