/* SPDX-License-Identifier: MIT */
/*
 * imgctl.h - what the files of imgctl share (a private header: nothing outside src/imgctl/
 * includes it). imgctl is a verb table (main.c) dispatching to one file per group of verbs,
 * after one option parser (options.c) has read the verb's options by its table:
 *
 *   main.c     the verb table, the help texts, dispatch
 *   options.c  the one option parser, the parsers of option values, usage errors
 *   client.c   the connection to imgd's control socket: request -> answer (shared/proto.h)
 *   output.c   messages, text made safe for a terminal, tables, JSON, times and sizes
 *   query.c    status, jobs, show, wait, metrics
 *   operate.c  retry, cancel, pause, resume, drain, enqueue, reload
 *   events.c   events;  top.c  top;  verify.c  verify (the manifest reader: shared/manifest.h)
 *
 * A verb's function gets the connection (not connected yet: the first request connects) and
 * its parsed options, and returns the exit status. Out of memory, imgctl says so and exits
 * (imgctl_oom()): imgctl_strdup(), imgctl_asprintf() and output.c never return NULL.
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shared/macro.h"
#include "shared/time-util.h"

enum {
        EXIT_OK = 0,
        EXIT_FAILED = 1,
        EXIT_USAGE = 2,
        EXIT_UNREACHABLE = 3,
        EXIT_FORBIDDEN = 4, /* the command needs the operator role; this user has read-only */
};

#define IMGCTL_PROGRAM "imgctl"
#define IO_TIMEOUT_USEC (10 * USEC_PER_SEC)
#define WAIT_POLL_USEC (100 * USEC_PER_MSEC)
#define LIST_MAX 10000

/* ---- main.c: the verb table ------------------------------------------------------------ */

struct client;
struct verb_args;

/* The positional arguments a verb takes (checked by options_parse()). */
enum verb_operands {
        OPERANDS_NONE,        /* none */
        OPERANDS_JOB,         /* JOB ("42" or "#42") */
        OPERANDS_JOB_OR_DEAD, /* JOB, or none with --dead */
        OPERANDS_FILE,        /* PATH */
        OPERANDS_PATH_OR_ALL, /* PATH or none, not PATH with --all */
        OPERANDS_WORD,        /* one word (reconcile pause|resume) */
        OPERANDS_UNPARSED,    /* help: the verb reads its argv itself */
};

/* The options a verb may be given; options.c has the table of their names and parsers. */
enum imgctl_option {
        OPTION_END = 0, /* ends a verb's list */
        OPTION_CONFIG,
        OPTION_SOCKET,
        OPTION_CONNECT_TIMEOUT,
        OPTION_HELP,
        OPTION_VERSION,
        OPTION_JSON,
        OPTION_STATE,
        OPTION_WATCH,
        OPTION_SINCE,
        OPTION_LIMIT,
        OPTION_TIMEOUT,
        OPTION_DEAD,
        OPTION_FOLLOW,
        OPTION_ITERATIONS,
        OPTION_ALL,
        _OPTION_MAX,
};

struct verb {
        const char *name; /* NULL: the global options before the verb */
        int (*run)(struct client *ctl, const struct verb_args *a);
        const enum imgctl_option *options; /* in getopt's order, ending with OPTION_END */
        enum verb_operands operands;
        const char *synopsis;
        const char *help;
};

/* The verb called name, or NULL. */
const struct verb *verb_find(const char *name);
/* imgctl --help, and imgctl VERB --help. */
void verb_print_help(void);
void verb_print_verb_help(const struct verb *v);

/* ---- options.c: the one option parser ---------------------------------------------------- */

/* What the options and operands of a verb (or the global options) say. */
struct verb_args {
        const struct verb *verb;
        /* global options */
        const char *config, *socket;
        int64_t connect_wait_usec;
        int next; /* global options: the index of the verb in argv */
        /* verb options */
        bool json, dead, follow, all;
        const char *state;
        char *watch;        /* --watch, made absolute; owned */
        int64_t since_usec; /* --since as a time since the epoch; 0 when not given */
        int64_t limit;      /* 0 when not given */
        bool has_timeout;
        double timeout_s;
        int64_t iterations; /* 0 when not given */
        /* operands */
        int64_t job;      /* OPERANDS_JOB*, 0 with --dead */
        const char *path; /* OPERANDS_FILE, OPERANDS_PATH_OR_ALL; NULL when none */
        const char *word; /* OPERANDS_WORD */
};

enum {
        OPTIONS_RUN = 0,     /* go on with the verb */
        OPTIONS_HELP = 1,    /* --help given: print the help */
        OPTIONS_VERSION = 2, /* --version given */
};

/*
 * Parses argv by v's option table with getopt_long (argv[0] is the verb's name, or the
 * program's for the global options, which stop at the first operand: the verb). Returns
 * OPTIONS_RUN with *ret filled in (free with verb_args_clear()), OPTIONS_HELP or
 * OPTIONS_VERSION, or -EINVAL after printing the usage error (exit status EXIT_USAGE).
 */
int options_parse(const struct verb *v, int argc, char **argv, struct verb_args *ret);
void verb_args_clear(struct verb_args *a);

/* Prints "imgctl: [VERB: ]MESSAGE" and the hint to try help to stderr; returns EXIT_USAGE. */
int options_usage_error(const char *verb, const char *fmt, ...) _printf_(2, 3);

/* ---- client.c: talking to imgd ----------------------------------------------------------- */

struct client {
        const char *socket;
        int64_t connect_wait_usec; /* --connect-timeout: how long to retry an absent socket */
        int fd;                    /* -1 until the first request */
        char *buf;                 /* PROTO_MAX_LINE + 1 bytes: one answer and its newline */
        size_t len;                /* bytes in buf */
        size_t used;               /* of which the line returned last, with its newline */
};

#define CLIENT_INIT(path) ((struct client){ .socket = (path), .fd = -1 })

/*
 * The socket to use, per -s, -c, $IMGD_SOCKET, default. Returns EXIT_OK with *ret (owned by
 * the caller), or EXIT_UNREACHABLE after saying why the configuration cannot be read.
 */
int client_find_socket(const char *socket_arg, const char *config_arg, char **ret);

/*
 * Sends one request and reads its answer. Returns 0 with the result in *ret_result (owned by
 * the caller); -EREMOTEIO when imgd answered with an error; another negative errno when imgd
 * could not be reached or not understood. On failure the message is in *ret_error.
 */
int client_call(struct client *ctl, const json_t *req, json_t **ret_result, char **ret_error);

/*
 * Reads one line (an event). Returns 0 with the line (NUL-terminated in place, without its
 * newline, valid until the next call) and its length, -ECONNRESET when imgd closed the
 * connection, -EMSGSIZE for an over-long line, -ETIMEDOUT, or another negative errno.
 */
int client_read_line(struct client *ctl, int64_t deadline, char **ret_line, size_t *ret_n);

/* Closes the connection; the client may connect again. */
void client_close(struct client *ctl);

/* Prints a failed call's message and returns the exit status for it. */
int client_failed(int r, const char *error);

/* Sends req (taken over) and stores the result; returns EXIT_OK or the failure's exit status. */
int client_request(struct client *ctl, json_t *req, json_t **ret_result);

/* A new request {"cmd": cmd, "id": id}. */
json_t *client_request_with_id(const char *cmd, int64_t id);

/* The integer at key (0 when missing), the string at key (fallback when missing). */
int64_t client_get_int(const json_t *o, const char *key);
const char *client_get_str(const json_t *o, const char *key, const char *fallback);

/* Whether a status answer says imgd has nothing left to do (wait, events). */
bool client_status_idle(const json_t *status);

/* ---- output.c: what imgctl writes ------------------------------------------------------- */

/* "imgctl: MESSAGE" to stderr. */
void imgctl_error(const char *fmt, ...) _printf_(1, 2);
_Noreturn void imgctl_oom(void);
char *imgctl_strdup(const char *s);
char *imgctl_asprintf(const char *fmt, ...) _printf_(1, 2);

/*
 * A copy of s (NULL as "") fit for a terminal: control characters become '?', bytes that are
 * not UTF-8 "\xNN". With max_cols > 0, a text wider than max_cols display columns is cut to
 * at most max_cols, the last three of them "...". Caller frees.
 */
char *output_clean(const char *s, size_t max_cols);
/* Display columns of s as output_clean() prints it. */
size_t output_width(const char *s);

/* "2026-11-23 10:04:12" in local time, or "-" for 0. */
void output_time(int64_t usec, char *buf, size_t size);
/* "42s", "3m", "2h 5m", "3d 4h". */
void output_uptime(int64_t s, char *buf, size_t size);
/* The predicted time to drain the backlog of status' "health" ("2m"), or "never" (false). */
bool output_drain(const json_t *health, char *buf, size_t size);
/* "512 B", "12.1 KiB", "3.4 MiB". */
void output_bytes(uint64_t n, char *buf, size_t size);
/* "%-11s %s\n" of key and the cleaned value. */
void output_field(const char *key, const char *value);
/* result as indented JSON; returns EXIT_OK or EXIT_FAILED. */
int output_json(const json_t *result);

/* A table of cleaned cells whose columns are as wide as their widest cell. */
struct output_table {
        size_t n_cols, n_rows, alloc; /* alloc: cells allocated */
        char **cells;                 /* row-major, cleaned copies */
};

void output_table_init(struct output_table *t, size_t n_cols);
/* Adds a row of n_cols strings (NULL prints as "-"). The first row is the header. */
void output_table_add(struct output_table *t, ...);
void output_table_print(const struct output_table *t, const char *indent);
void output_table_clear(struct output_table *t);

/* ---- the verbs ---------------------------------------------------------------------------- */

int query_status(struct client *ctl, const struct verb_args *a);
int query_jobs(struct client *ctl, const struct verb_args *a);
int query_show(struct client *ctl, const struct verb_args *a);
int query_wait(struct client *ctl, const struct verb_args *a);
int query_metrics(struct client *ctl, const struct verb_args *a);
int query_plan(struct client *ctl, const struct verb_args *a);

int operate_retry(struct client *ctl, const struct verb_args *a);
int operate_cancel(struct client *ctl, const struct verb_args *a);
int operate_intake(struct client *ctl, const struct verb_args *a); /* pause, resume */
int operate_reconcile(struct client *ctl, const struct verb_args *a);
int operate_drain(struct client *ctl, const struct verb_args *a);
int operate_enqueue(struct client *ctl, const struct verb_args *a);
int operate_reload(struct client *ctl, const struct verb_args *a);

int events_run(struct client *ctl, const struct verb_args *a);
int top_run(struct client *ctl, const struct verb_args *a);
int verify_run(struct client *ctl, const struct verb_args *a);
