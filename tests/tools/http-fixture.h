/* SPDX-License-Identifier: MIT */
/*
 * http-fixture.h - the HTTP client of the test-http-* programs: one request over TCP on the
 * loopback or a Unix socket with its reply (status line, headers, body), the port the daemon
 * logged, and an image dropped into the uploads.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "testutil.h"

#define PIPE                                                                                       \
        "( { name = \"small\"; width = 64; height = 64; fit = \"cover\"; format = \"webp\"; } )"

struct reply {
        int status;    /* 0: no answer */
        char *headers; /* the status line and headers, as received */
        char *body;
        size_t body_len;
};

void httpfx_reply_done(struct reply *r);

/* The value of header `name` in r (a new string), or NULL. */
char *httpfx_header(const struct reply *r, const char *name);

/* A connected stream socket to `where` ("PORT" on 127.0.0.1, or a Unix socket path), or -1. */
int httpfx_connect_to(const char *where);

/*
 * One request, "Connection: close", read to the end within timeout_ms. Returns 0 and *ret
 * (status 0 when the answer was not HTTP), or -errno (-ETIMEDOUT, a refused connection...).
 */
int httpfx_request(const char *where, const char *method, const char *path, int timeout_ms,
                   struct reply *ret);

/* httpfx_request() that must be answered: fails the test otherwise. */
void httpfx_must_request(const char *where, const char *method, const char *path,
                         struct reply *ret);

/* The port imgd logged ("http: serving /metrics and /health on 127.0.0.1:PORT"). */
char *httpfx_logged_port(struct tu_daemon *d);

void httpfx_drop_image(struct tu_daemon *d, const char *name);
