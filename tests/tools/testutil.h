/* SPDX-License-Identifier: MIT */
/*
 * testutil.h - helpers shared by the cmocka tests: temporary directories, files, real
 * images made with libvips, and (for integration tests) a real imgd daemon on a temporary
 * tree driven through imgctl. Helpers abort the test (cmocka fail) on setup errors.
 */
#pragma once

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <cmocka.h>
#include <jansson.h>

#include "shared/macro.h"

/* A new empty directory under $TMPDIR (or /tmp); caller frees the string. */
char *tu_mkdtemp(void);

/* rm -rf path; accepts NULL. */
void tu_rm_rf(const char *path);

/* Writes `len` bytes (or strlen(text) if len is (size_t)-1) to path; creates parents. */
void tu_write_file(const char *path, const void *data, size_t len);

/* Joins a printf-style path; caller frees. */
char *tu_path(const char *fmt, ...) _printf_(1, 2);

/* Reads a whole file; returns NULL if it cannot; *ret_len set when not NULL. */
void *tu_read_file(const char *path, size_t *ret_len);

/*
 * Writes a real image made with libvips: a colourful gradient of width x height in `format`
 * ("jpeg", "png", "webp", "gif", "tiff"), with an alpha channel when `alpha`. Parents are
 * created. Calls render_init() on first use.
 */
void tu_make_image(const char *path, unsigned width, unsigned height, const char *format,
                   bool alpha);

/* Loads an image file with libvips and reports its properties; returns false if it does not
 * decode. Any out pointer may be NULL. alpha_at_00: the alpha value of pixel (0,0), or 255
 * where the image has no alpha. */
bool tu_image_props(const char *path, unsigned *ret_w, unsigned *ret_h, char *ret_loader,
                    size_t loader_len, bool *ret_has_alpha, int *ret_alpha_at_00);

/* Number of regular files below dir (recursively) whose name matches the shell pattern. */
unsigned tu_count_files(const char *dir, const char *pattern);

/* Microseconds of CLOCK_MONOTONIC. */
int64_t tu_now_us(void);

/* A daemon under test. */
struct tu_daemon {
        char *root; /* temporary tree: root/uploads, root/media, root/state */
        char *uploads;
        char *media;
        char *state;
        char *config; /* root/imgd.conf */
        char *socket; /* root/imgd.sock */
        char *log;    /* root/imgd.log: the daemon's stderr */
        pid_t pid;    /* 0 when not running */
};

/*
 * Makes a temporary tree and writes a configuration: one recursive watch of uploads into
 * media with the pipeline `pipeline_body` (libconfig text for the list of variants, e.g.
 * "( { name = \"small\"; width = 100; height = 100; fit = \"cover\"; format = \"webp\"; } )"),
 * `workers` workers, and `extra` appended to the file (may be NULL).
 */
void tu_daemon_setup(struct tu_daemon *d, const char *pipeline_body, unsigned workers,
                     const char *extra);

/* Starts build/imgd -c config and waits until its socket answers (fails after 20 s). */
void tu_daemon_start(struct tu_daemon *d);

/* The same, with in_child(d) called in the child just before the exec (to change its user,
 * say; it _exit()s if it cannot). */
void tu_daemon_start_with(struct tu_daemon *d, void (*in_child)(struct tu_daemon *d));

/*
 * The path of program `name` (caller frees), looked up in PATH and the usual bin and sbin
 * folders; fails the test, naming the Debian package that has it, when it is not installed.
 */
char *tu_find_program(const char *name, const char *package);

/* Sends sig and waits for the daemon to exit; returns its wait status. */
int tu_daemon_stop(struct tu_daemon *d, int sig);

/* Waits up to timeout_ms for the daemon to exit by itself; returns its wait status, or -1
 * (and the daemon is still running) on timeout. */
int tu_daemon_wait_exit(struct tu_daemon *d, int timeout_ms);

/* Pids of the daemon's child processes (its workers); returns how many, at most max. */
unsigned tu_daemon_children(struct tu_daemon *d, pid_t *pids, unsigned max);

/* True if the daemon's log (stderr) contains `text`. */
bool tu_log_contains(struct tu_daemon *d, const char *text);

/* Stops the daemon if running and removes the tree. */
void tu_daemon_cleanup(struct tu_daemon *d);

/*
 * Runs build/imgctl -s <socket> with the given arguments (NULL-terminated), captures
 * stdout into *ret_out (caller frees; may be NULL) and returns the exit status.
 */
int tu_imgctl(struct tu_daemon *d, char **ret_out, ...);

/* Runs `imgctl wait --timeout S` and asserts it succeeded. */
void tu_daemon_wait_idle(struct tu_daemon *d, unsigned timeout_s);

/* Runs a program (NULL-terminated argv), captures stdout/stderr into *ret_out (may be NULL);
 * returns the exit status (or 128+signal). */
int tu_run(char **ret_out, const char *prog, ...);

/*
 * Runs `imgctl <cmd> [arg1 [arg2]] --json` and returns its parsed answer (caller decrefs);
 * fails the test when imgctl exits non-zero or prints no JSON.
 */
json_t *tu_imgctl_json(struct tu_daemon *d, const char *cmd, const char *arg1, const char *arg2);

/*
 * Runs `imgctl status --json` and returns its parsed answer (caller decrefs). Exit status 1
 * (an alert is active) is accepted; anything else fails the test. *ret_us, when not NULL,
 * is how long imgctl took, in microseconds.
 */
json_t *tu_status_json(struct tu_daemon *d, int64_t *ret_us);

/* The count of jobs in `state` ("queued", "done", ...) in a status answer; 0 if absent. */
json_int_t tu_jobs_in(const json_t *status, const char *state);

/* The message of the alert named `name` in a status answer, or NULL. */
const char *tu_alert_message(const json_t *status, const char *name);

/*
 * One integer from the ledger (state/imgd.db, opened read-only beside the daemon, waiting
 * up to 5 s for a lock): the first column of the first row of `sql`, or -1 when there is no
 * row or it is NULL. Fails the test when the ledger cannot be opened or `sql` not prepared.
 */
int64_t tu_ledger_int(struct tu_daemon *d, const char *sql);

/* A stream socket connected to the Unix socket at `path` (the daemon's control socket, say);
 * fails the test if it cannot connect. Caller closes. */
int tu_connect_raw(const char *path);

/* A subscriber of a daemon's events: connected to its control socket, subscribed ("events"). */
struct tu_sub {
        int fd;
        char buf[1 << 17];
        size_t len;
};

/* Connects s to d's socket and subscribes (asserted); the first line is {"subscribed":true}. */
void tu_sub_open(struct tu_sub *s, struct tu_daemon *d);

/* The next line of s's events (caller frees), or NULL after timeout_ms. */
char *tu_sub_line(struct tu_sub *s, int timeout_ms);
