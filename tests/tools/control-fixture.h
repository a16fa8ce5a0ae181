/* SPDX-License-Identifier: MIT */
/*
 * control-fixture.h - the harness of the test-control-* programs: the control socket on a real
 * Unix socket in a temporary directory, with a real sd_event loop that the test drives itself
 * (sd_event_run with short timeouts) while it plays the client, a fake handler that answers "ping"
 * and refuses everything else, and client connections that send requests and read answers.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "daemon/control.h"

#include "testutil.h"

#define PUMP_SLICE_US 10000

#define WAIT_US (5 * 1000000)

struct fixture {
        char *dir;
        char *path;
        sd_event *event;
        control *control;
        unsigned calls;
        int broadcast_result; /* of the last "flood" */
};

/* A client connection with its own read buffer. */
struct conn {
        int fd;
        char buf[PROTO_MAX_LINE + 2];
        size_t len;
};

char *ctlfx_make_temp_dir(void);

int ctlfx_rm_one(const char *path, const struct stat *st, int type, struct FTW *ftw);

void ctlfx_remove_tree(const char *dir);

int ctlfx_fake_handler(const char *cmd, const json_t *request, void *userdata, json_t **ret_result,
                       char **ret_error);

int ctlfx_setup(void **state);

int ctlfx_teardown(void **state);

void ctlfx_start(struct fixture *f);

void ctlfx_pump(struct fixture *f);

struct conn *ctlfx_conn_open(const char *path);

void ctlfx_conn_close(struct conn *c);

/* Sends everything, running the loop whenever the socket is full. */
void ctlfx_conn_send(struct fixture *f, struct conn *c, const char *data, size_t n);

void ctlfx_conn_send_str(struct fixture *f, struct conn *c, const char *s);

/*
 * Runs the loop until a whole line arrived (returns 1, the line without "\n" in *ret_line,
 * owned by the caller), the daemon closed the connection (0; ECONNRESET counts as closed),
 * or WAIT_US passed (-ETIMEDOUT).
 */
int ctlfx_conn_read_line(struct fixture *f, struct conn *c, char **ret_line);

/* Reads one answer: returns 0 with the result (caller decrefs), or -EREMOTEIO with the
 * error message in *ret_error. Fails the test on anything else. */
int ctlfx_conn_answer(struct fixture *f, struct conn *c, json_t **ret_result, char **ret_error);

void ctlfx_assert_pong(struct fixture *f, struct conn *c);

void ctlfx_assert_error_contains(struct fixture *f, struct conn *c, const char *what);

/* Runs the loop until the daemon closes c; fails the test if it does not within WAIT_US. */
void ctlfx_assert_closed(struct fixture *f, struct conn *c);

extern const char ctlfx_ping[];

extern const char ctlfx_events[];
