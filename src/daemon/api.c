/* SPDX-License-Identifier: MIT */
/*
 * api.c - the control commands' one table and its dispatch (see api.h and README.md). Each
 * command is a row: its name, its handler, the role it needs (read-only or operator), what it
 * needs of the daemon (the ledger, the scheduler, a reload function) and the schema of its
 * arguments. api_handle() finds the row, checks the needs, then each argument in schema order,
 * and calls the handler with the values (struct api_args, api-private.h) only when all are
 * met; a failed check is answered with a message that says what was expected, and the first
 * failure is the one reported. The handlers live in api-query.c, api-status.c and
 * api-operate.c:
 *
 *   ping     {"pong":true}
 *   status   the daemon's state, pid, version, uptime and configuration file, whether intake
 *            is paused, how many jobs are dispatched, the circuit breaker and the health
 *            level, its watches, its workers, and the number of jobs in every state
 *   jobs     the newest jobs, filtered by "state", "watch", "since" (microseconds since the
 *            epoch) and "limit" (1..10000, default 50)
 *   show     one job ("id") with its outputs, its error history and, for a pipeline with
 *            placeholder = true, the placeholder its render reported
 *   retry    a dead or held job ("id") or dead jobs ("dead": true, at most API_RETRY_BATCH a
 *            request; the answer says how many remain) back to queued
 *   cancel   a queued, retry or dead job ("id"); a running one is refused
 *   pause    claim no new jobs (running ones finish); resume: claim again; drain: pause and
 *            say how many are still running (imgctl drain waits for 0)
 *   enqueue  a file ("path", absolute) below a watched folder becomes a job now, whether or
 *            not the watch saw it; a file already known answers its existing job
 *   metrics  the Prometheus text exposition (metrics.h) as {"text": "..."}
 *   reload   load the configuration file again, as SIGHUP does, and say whether it was
 *            taken: {"reloaded": true, "config": FILE, "watches": N}, or an error with the
 *            reason it was rejected (the running configuration stays in force)
 *
 * ping, status, jobs, show and metrics only read (the read-only role may send them): the
 * ledger, the configuration and the scheduler's view of the workers. The others change jobs
 * only through the ledger's own transitions (ledger_retry, ledger_cancel, intake_file) and
 * tell the scheduler (scheduler_enqueued, which also emits "queued").
 *
 * Arguments: a string or an integer that is null reads as absent; a boolean must be true or
 * false (null is refused). Unknown members of a request are ignored.
 * Strings from outside (paths, error texts) go into JSON through proto_string_lossy(), so a
 * file name that is not UTF-8 cannot make an answer unencodable.
 */
#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/api-private.h"
#include "shared/macro.h"
#include "shared/proto.h"

#define API_LIST_MAX 10000

int api_error(char **ret_error, int r, const char *fmt, ...)
{
        va_list ap;
        int k;

        va_start(ap, fmt);
        k = vasprintf(ret_error, fmt, ap);
        va_end(ap);
        if (k < 0)
                return -ENOMEM;
        return r;
}

int api_ledger_failure(struct api_context *ctx, int r, const char *what, char **ret_error)
{
        const char *m = ledger_errmsg(ctx->ledger);

        if (r == -ENOMEM)
                return -ENOMEM;
        return api_error(ret_error, r, "%s: %s", what, m && *m ? m : strerror(-r));
}

int api_require(const struct api_context *ctx, unsigned needs, char **ret_error)
{
        if ((needs & API_NEED_LEDGER) && !ctx->ledger)
                return api_error(ret_error, -ENODEV, "the job ledger is not open");
        if ((needs & API_NEED_SCHEDULER) && !ctx->scheduler)
                return api_error(ret_error, -ENODEV, "the scheduler is not running");
        if ((needs & API_NEED_RECONCILER) && !ctx->reconciler)
                return api_error(ret_error, -ENODEV, "reconciliation is not running");
        if ((needs & API_NEED_RELOAD) && !ctx->reload)
                return api_error(ret_error, -EOPNOTSUPP, "reload is not available");
        return 0;
}

const char *api_ellipsis(const char *s)
{
        return strnlen(s, API_ECHO_MAX + 1) > API_ECHO_MAX ? "..." : "";
}

json_t *api_text_or_null(const char *s)
{
        return s ? proto_string_lossy(s) : json_null();
}

/* "queued, running, ..." for messages; static storage. */
static const char *state_names_list(void)
{
        static char buf[128];

        if (!buf[0]) {
                size_t n = 0;

                for (int s = 0; s < _JOB_STATE_MAX; s++)
                        n += (size_t)snprintf(buf + n, sizeof buf - n, "%s%s", s ? ", " : "",
                                              job_state_name(s));
        }
        return buf;
}

enum api_arg_kind {
        API_ARG_STRING,        /* a string (const char *) */
        API_ARG_INTEGER,       /* an integer in [min, max] (int64_t) */
        API_ARG_BOOLEAN,       /* true or false (bool); null is refused */
        API_ARG_JOB_STATE,     /* the name of a job state (int, an enum job_state) */
        API_ARG_ABSOLUTE_PATH, /* an absolute path shorter than PATH_MAX (const char *) */
};

/* One argument of a command's schema. */
struct api_arg {
        const char *key;
        enum api_arg_kind kind;
        size_t offset;        /* of its value in struct api_args */
        int64_t min, max;     /* API_ARG_INTEGER: its range */
        const char *what;     /* API_ARG_INTEGER: the "must be WHAT" of its messages */
        const char *required; /* when absent: "CMD needs REQUIRED"; NULL: optional */
};

#define API_ARG_ID(req)                                                                            \
        {                                                                                          \
                .key = "id", .kind = API_ARG_INTEGER, .offset = offsetof(struct api_args, id),     \
                .min = 1, .max = INT64_MAX, .what = "a job id (a positive integer)",               \
                .required = (req),                                                                 \
        }

/* Checks argument a of request and stores its value in *args. Returns 0, or a negative errno
 * with the message in *ret_error; *args is left unchanged on failure. */
static int api_arg_parse(const struct api_arg *a, const char *cmd, const json_t *request,
                         struct api_args *args, char **ret_error)
{
        const json_t *v = json_object_get(request, a->key);
        void *p = (char *)args + a->offset;
        const char *s;
        int64_t x;
        int state;

        if (!v || (json_is_null(v) && a->kind != API_ARG_BOOLEAN)) {
                if (a->required)
                        return api_error(ret_error, -EINVAL, "%s needs %s", cmd, a->required);
                return 0;
        }

        switch (a->kind) {
        case API_ARG_BOOLEAN:
                if (!json_is_boolean(v))
                        return api_error(ret_error, -EINVAL, "\"%s\" must be true or false",
                                         a->key);
                *(bool *)p = json_is_true(v);
                return 0;

        case API_ARG_INTEGER:
                if (!json_is_integer(v))
                        return api_error(ret_error, -EINVAL, "\"%s\" must be %s", a->key, a->what);
                x = (int64_t)json_integer_value(v);
                if (x < a->min || x > a->max)
                        return api_error(ret_error, -ERANGE, "\"%s\" must be %s, not %lld", a->key,
                                         a->what, (long long)x);
                *(int64_t *)p = x;
                return 0;

        case API_ARG_STRING:
        case API_ARG_JOB_STATE:
        case API_ARG_ABSOLUTE_PATH:
                if (!json_is_string(v))
                        return api_error(ret_error, -EINVAL, "\"%s\" must be a string", a->key);
                s = json_string_value(v);
                break;

        default:
                assert(!"unknown argument kind");
                return -EINVAL;
        }

        if (a->kind == API_ARG_JOB_STATE) {
                state = job_state_from_name(s);
                if (state < 0)
                        return api_error(ret_error, -EINVAL,
                                         "unknown state '%.*s%s' (expected one of %s)",
                                         API_ECHO_MAX, s, api_ellipsis(s), state_names_list());
                *(int *)p = state;
                return 0;
        }
        if (a->kind == API_ARG_ABSOLUTE_PATH) {
                if (s[0] != '/')
                        return api_error(ret_error, -EINVAL,
                                         "\"%s\" must be absolute, not '%.*s%s'", a->key,
                                         API_ECHO_MAX, s, api_ellipsis(s));
                if (strlen(s) >= PATH_MAX)
                        return api_error(ret_error, -ENAMETOOLONG, "\"%s\" is too long", a->key);
        }
        *(const char **)p = s;
        return 0;
}

static const struct api_arg api_args_jobs[] = {
        { .key = "state", .kind = API_ARG_JOB_STATE, .offset = offsetof(struct api_args, state) },
        { .key = "watch", .kind = API_ARG_STRING, .offset = offsetof(struct api_args, watch) },
        { .key = "since",
          .kind = API_ARG_INTEGER,
          .offset = offsetof(struct api_args, since_usec),
          .min = 0,
          .max = INT64_MAX,
          .what = "an integer number of microseconds since the epoch" },
        { .key = "limit",
          .kind = API_ARG_INTEGER,
          .offset = offsetof(struct api_args, limit),
          .min = 1,
          .max = API_LIST_MAX,
          .what = "an integer from 1 to 10000" },
        {},
};

static const struct api_arg api_args_show[] = { API_ARG_ID("a job \"id\""), {} };

static const struct api_arg api_args_retry[] = {
        { .key = "dead", .kind = API_ARG_BOOLEAN, .offset = offsetof(struct api_args, dead) },
        API_ARG_ID(NULL), /* or "dead": true; the handler checks that one of them is given */
        {},
};

static const struct api_arg api_args_cancel[] = { API_ARG_ID("a job \"id\""), {} };

static const struct api_arg api_args_enqueue[] = {
        { .key = "path",
          .kind = API_ARG_ABSOLUTE_PATH,
          .offset = offsetof(struct api_args, path),
          .required = "a \"path\"" },
        {},
};

enum api_role {
        API_ROLE_READ_ONLY, /* changes nothing: the control socket's read-only role may send it */
        API_ROLE_OPERATOR,
};

static const struct api_command {
        const char *name;
        api_command_fn fn;
        enum api_role role;
        unsigned needs;             /* API_NEED_* */
        const struct api_arg *args; /* its schema, ending with {}; NULL: takes none */
} api_commands[] = {
        { "ping", api_ping, API_ROLE_READ_ONLY, 0, NULL },
        { "status", api_status, API_ROLE_READ_ONLY, API_NEED_LEDGER, NULL },
        { "jobs", api_jobs, API_ROLE_READ_ONLY, API_NEED_LEDGER, api_args_jobs },
        { "show", api_show, API_ROLE_READ_ONLY, API_NEED_LEDGER, api_args_show },
        { "retry", api_retry, API_ROLE_OPERATOR, API_NEED_LEDGER | API_NEED_SCHEDULER,
          api_args_retry },
        { "cancel", api_cancel, API_ROLE_OPERATOR, API_NEED_LEDGER | API_NEED_SCHEDULER,
          api_args_cancel },
        { "pause", api_pause, API_ROLE_OPERATOR, API_NEED_LEDGER | API_NEED_SCHEDULER, NULL },
        { "resume", api_resume, API_ROLE_OPERATOR, API_NEED_LEDGER | API_NEED_SCHEDULER, NULL },
        { "drain", api_drain, API_ROLE_OPERATOR, API_NEED_LEDGER | API_NEED_SCHEDULER, NULL },
        { "enqueue", api_enqueue, API_ROLE_OPERATOR, API_NEED_LEDGER | API_NEED_SCHEDULER,
          api_args_enqueue },
        { "metrics", api_metrics, API_ROLE_READ_ONLY, API_NEED_LEDGER | API_NEED_SCHEDULER, NULL },
        { "reload", api_reload, API_ROLE_OPERATOR, API_NEED_RELOAD, NULL },
        { "plan", api_plan, API_ROLE_READ_ONLY, API_NEED_RECONCILER, NULL },
        { "reconcile-pause", api_reconcile_pause, API_ROLE_OPERATOR, API_NEED_RECONCILER, NULL },
        { "reconcile-resume", api_reconcile_resume, API_ROLE_OPERATOR, API_NEED_RECONCILER, NULL },
        { "reconcile-retract-removed", api_reconcile_retract_removed, API_ROLE_OPERATOR,
          API_NEED_RECONCILER, NULL },
};

static const struct api_command *api_command_find(const char *cmd)
{
        for (size_t i = 0; i < ELEMENTSOF(api_commands); i++)
                if (strcmp(cmd, api_commands[i].name) == 0)
                        return &api_commands[i];
        return NULL;
}

bool api_command_read_only(const char *cmd)
{
        const struct api_command *c = api_command_find(cmd);

        return !c || c->role == API_ROLE_READ_ONLY;
}

int api_handle(const char *cmd, const json_t *request, void *userdata, json_t **ret_result,
               char **ret_error)
{
        struct api_context *ctx = userdata;
        const struct api_command *c;
        struct api_args args = { .state = -1 };
        json_t *result = NULL;
        char *error = NULL;
        int r;

        assert(cmd);
        assert(request);
        assert(ctx);
        assert(ret_result);
        assert(ret_error);

        c = api_command_find(cmd);
        if (!c) {
                r = api_error(&error, -EOPNOTSUPP, "unknown command '%.*s%s'", API_ECHO_MAX, cmd,
                              api_ellipsis(cmd));
                if (r == -EOPNOTSUPP)
                        *ret_error = error;
                return r;
        }

        r = api_require(ctx, c->needs, &error);
        for (const struct api_arg *a = c->args; r >= 0 && a && a->key; a++)
                r = api_arg_parse(a, c->name, request, &args, &error);
        if (r >= 0)
                r = c->fn(ctx, &args, &result, &error);
        if (r < 0) {
                if (!error && r == -ENOMEM)
                        error = strdup("out of memory");
                *ret_error = error;
                return r;
        }
        *ret_result = result;
        return 0;
}
