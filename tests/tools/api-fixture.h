/* SPDX-License-Identifier: MIT */
/*
 * api-fixture.h - helpers of the test-api-* programs: imgctl's JSON answers (status counts, the
 * newest job, one job shown), images and text files dropped into the uploads, and a raw client of
 * the control socket (connect, send, read a line, call, subscribe).
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "testutil.h"

#define ONE_VARIANT                                                                                \
        "( { name = \"s\"; width = 64; height = 64; fit = \"cover\"; format = \"webp\"; } )"

#define TWO_VARIANTS                                                                               \
        "( { name = \"s\"; width = 64; height = 64; fit = \"cover\"; format = \"webp\"; },"        \
        "  { name = \"m\"; width = 128; height = 96; fit = \"inside\"; format = \"jpeg\"; } )"

json_int_t apifx_status_int(struct tu_daemon *d, const char *group, const char *key);

json_int_t apifx_count_state(struct tu_daemon *d, const char *state);

/* Waits up to timeout_ms for `state` to hold `want` jobs. */
void apifx_wait_count(struct tu_daemon *d, const char *state, json_int_t want, int timeout_ms);

/* An image made beside the watched tree, then renamed into it (one IN_MOVED_TO). */
void apifx_drop_image(struct tu_daemon *d, const char *name, unsigned w, unsigned h);

void apifx_drop_text(struct tu_daemon *d, const char *name);

void apifx_assert_contains(const char *haystack, const char *needle);

unsigned apifx_count_lines(const char *s);

/* A raw protocol client. */
struct raw {
        int fd;
        char buf[2 * PROTO_MAX_LINE];
        size_t len;
};

void apifx_raw_connect(struct raw *c, const char *path);

void apifx_raw_send(struct raw *c, const char *line);

/*
 * The next line (without its newline; caller frees), or NULL when none came within
 * timeout_ms or the connection ended (*ret_eof set, if given).
 */
char *apifx_raw_read_line(struct raw *c, int timeout_ms, bool *ret_eof);
