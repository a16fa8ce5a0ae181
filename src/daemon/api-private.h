/* SPDX-License-Identifier: MIT */
/*
 * api-private.h - what the files of the control commands share (private to src/daemon/api*.c):
 * the arguments the dispatch (api.c) has validated from a command's schema, the handlers of
 * the command table, and the helpers their answers and messages are made with.
 *
 *   api.c          the command table (name, handler, role, needs, argument schema) and the
 *                  dispatch that checks needs and arguments before a handler runs
 *   api-query.c    jobs, show: reading jobs
 *   api-status.c   ping, status (health, breaker, workers, counts) and metrics
 *   api-operate.c  retry, cancel, pause, resume, drain, enqueue, reload: changing things
 *   api-events.c   the scheduler's job transitions as event lines for subscribers
 *
 * A handler runs only once its command's needs are met (api_require()) and its arguments are
 * valid: it reads them from struct api_args and checks only what relates them to each other
 * or to the ledger. It returns 0 with a result object in *ret_result (owned by the caller), or
 * a negative errno with a message in *ret_error (owned by the caller; may be left NULL on
 * -ENOMEM, and the dispatch then says "out of memory").
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "daemon/api.h"
#include "daemon/ledger.h"
#include "shared/macro.h"

/* How much of a client's text (a command, a state name) is repeated in an error message. */
#define API_ECHO_MAX 64

/* What a command needs before it can run, checked in this order (api_require()). */
enum {
        API_NEED_LEDGER = 1u << 0,     /* "the job ledger is not open" */
        API_NEED_SCHEDULER = 1u << 1,  /* "the scheduler is not running" */
        API_NEED_RELOAD = 1u << 2,     /* "reload is not available" */
        API_NEED_RECONCILER = 1u << 3, /* "reconciliation is not running" */
};

/*
 * A command's arguments, as the dispatch validated them from its schema (api.c). An absent
 * argument keeps the value given here; a present one is within its schema's limits.
 */
struct api_args {
        int64_t id;         /* "id": a job id >= 1; 0 when absent */
        bool dead;          /* "dead": true or false; false when absent */
        int state;          /* "state": an enum job_state; -1 when absent */
        const char *watch;  /* "watch": NULL when absent; borrowed from the request */
        int64_t since_usec; /* "since": >= 0; 0 when absent */
        int64_t limit;      /* "limit": 1..10000; 0 when absent */
        const char *path;   /* "path": absolute, shorter than PATH_MAX; NULL when absent */
};

typedef int (*api_command_fn)(struct api_context *ctx, const struct api_args *args,
                              json_t **ret_result, char **ret_error);

/* Sets *ret_error to a formatted message and returns r, or -ENOMEM if it cannot. */
int api_error(char **ret_error, int r, const char *fmt, ...) _printf_(3, 4);

/* The ledger's failure r of `what` ("cannot list jobs: MESSAGE") in *ret_error; returns r. */
int api_ledger_failure(struct api_context *ctx, int r, const char *what, char **ret_error);

/* Whether ctx offers what `needs` (API_NEED_*) asks for: 0, or -ENODEV/-EOPNOTSUPP with the
 * message in *ret_error. */
int api_require(const struct api_context *ctx, unsigned needs, char **ret_error);

/* "..." when s is longer than what an error message repeats of it (API_ECHO_MAX). */
const char *api_ellipsis(const char *s);

/* A JSON string for text from outside, or null for NULL; NULL when out of memory. */
json_t *api_text_or_null(const char *s);

/* The fields the scheduler's events carry, for events the commands emit themselves
 * (api-events.c). A new object, or NULL when out of memory. */
json_t *api_job_event_json(const struct job *j);

/* api-query.c */
int api_jobs(struct api_context *ctx, const struct api_args *args, json_t **ret_result,
             char **ret_error);
int api_show(struct api_context *ctx, const struct api_args *args, json_t **ret_result,
             char **ret_error);

/* api-status.c */
int api_ping(struct api_context *ctx, const struct api_args *args, json_t **ret_result,
             char **ret_error);
int api_status(struct api_context *ctx, const struct api_args *args, json_t **ret_result,
               char **ret_error);
int api_metrics(struct api_context *ctx, const struct api_args *args, json_t **ret_result,
                char **ret_error);

/* api-operate.c */
int api_retry(struct api_context *ctx, const struct api_args *args, json_t **ret_result,
              char **ret_error);
int api_cancel(struct api_context *ctx, const struct api_args *args, json_t **ret_result,
               char **ret_error);
int api_pause(struct api_context *ctx, const struct api_args *args, json_t **ret_result,
              char **ret_error);
int api_resume(struct api_context *ctx, const struct api_args *args, json_t **ret_result,
               char **ret_error);
int api_drain(struct api_context *ctx, const struct api_args *args, json_t **ret_result,
              char **ret_error);
int api_enqueue(struct api_context *ctx, const struct api_args *args, json_t **ret_result,
                char **ret_error);
int api_plan(struct api_context *ctx, const struct api_args *args, json_t **ret_result,
             char **ret_error);
int api_reconcile_pause(struct api_context *ctx, const struct api_args *args, json_t **ret_result,
                        char **ret_error);
int api_reconcile_retract_removed(struct api_context *ctx, const struct api_args *args,
                                  json_t **ret_result, char **ret_error);
int api_reconcile_resume(struct api_context *ctx, const struct api_args *args, json_t **ret_result,
                         char **ret_error);
int api_reload(struct api_context *ctx, const struct api_args *args, json_t **ret_result,
               char **ret_error);
