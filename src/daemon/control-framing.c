/* SPDX-License-Identifier: MIT */
/*
 * control-framing.c - the control protocol's framing on one connection (control-private.h):
 * requests are lines ended by "\n" (a "\r" before it is dropped), read into one buffer of
 * CONTROL_INPUT_SIZE bytes (PROTO_MAX_LINE and its newline), any number per connection,
 * answered in order with one line each. A line longer than PROTO_MAX_LINE is answered
 * "request too long" and the client drains (it is read no more, and closed once its answers
 * are written); so is the end of input, after an unterminated last line is answered. An answer
 * longer than PROTO_MAX_LINE is replaced by the error "response too large".
 *
 * Each request goes, in turn, through proto_parse_request(), the role check
 * (control_client_check_role()), then either the subscription ("events",
 * control_client_subscribe()) or the control's handler.
 */
#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/control-private.h"
#include "shared/log.h"
#include "shared/macro.h"
#include "shared/proto.h"
#include "shared/time-util.h"

/* Answers one request line (without its newline). Returns 0, or a negative errno when the
 * answer cannot be queued (the client is then disconnected). */
static int client_handle_line(struct client *cl, const char *line, size_t n)
{
        control *c = cl->control;
        _cleanup_(json_decrefp) json_t *req = NULL;
        _cleanup_(json_decrefp) json_t *result = NULL;
        _cleanup_free_ char *error = NULL, *answer = NULL, *too_big = NULL;
        const char *cmd = NULL;
        size_t len;
        int r;

        r = control_client_arm_timer(cl);
        if (r < 0)
                return r;

        r = proto_parse_request(line, n, &req, &cmd, &error);
        if (r >= 0)
                r = control_client_check_role(cl, cmd, &error);
        if (r >= 0 && strcmp(cmd, "events") == 0) {
                r = control_client_subscribe(cl, &result, &error);
                if (r >= 0)
                        answer = proto_format_ok(result);
        } else if (r >= 0) {
                c->serving = cl;
                r = c->fn(cmd, req, c->userdata, &result, &error);
                c->serving = NULL;
                if (cl->broken)
                        return -ECONNRESET; /* dropped by control_broadcast() meanwhile */
                if (r >= 0)
                        answer = proto_format_ok(result);
        }
        if (r < 0) {
                log_debug("control client pid %d: %s: %s", (int)cl->cred.pid,
                          cmd ? cmd : "(bad request)", error ? error : strerror(-r));
                answer = proto_format_error(error ? error : strerror(-r));
        }
        if (!answer)
                return -ENOMEM;

        len = strlen(answer);
        if (len - 1 > PROTO_MAX_LINE) {
                if (asprintf(&too_big, "response too large (%zu bytes, at most %d); ask for less",
                             len - 1, PROTO_MAX_LINE) < 0)
                        return -ENOMEM;
                return control_client_queue_error(cl, too_big);
        }
        return control_client_queue(cl, answer, len);
}

/* Answers every complete line in the input buffer and keeps the incomplete rest. With
 * at_eof, an unterminated last line is answered too. Returns 0 or a negative errno. */
static int client_handle_input(struct client *cl, bool at_eof)
{
        size_t start = 0, n;
        char *nl;
        int r;

        while (!cl->draining && start < cl->in_len) {
                nl = memchr(cl->in + start, '\n', cl->in_len - start);
                if (!nl) {
                        if (!at_eof)
                                break;
                        nl = cl->in + cl->in_len; /* the unterminated last line */
                }
                n = (size_t)(nl - (cl->in + start));
                if (n > 0 && cl->in[start + n - 1] == '\r')
                        n--;
                r = client_handle_line(cl, cl->in + start, n);
                if (r < 0)
                        return r;
                start = (size_t)(nl - cl->in) + (nl < cl->in + cl->in_len ? 1 : 0);
        }

        if (start > 0) {
                memmove(cl->in, cl->in + start, cl->in_len - start);
                cl->in_len -= start;
        }

        if (cl->in_len >= CONTROL_INPUT_SIZE) {
                /* A full buffer without a newline: the line is longer than allowed. */
                char message[64];

                log_debug("control client pid %d: request longer than %d bytes", (int)cl->cred.pid,
                          PROTO_MAX_LINE);
                snprintf(message, sizeof message, "request too long (more than %d bytes)",
                         PROTO_MAX_LINE);
                cl->in_len = 0;
                cl->draining = true;
                r = control_client_queue_error(cl, message);
                if (r < 0)
                        return r;
        }
        if (at_eof)
                cl->draining = true;
        return 0;
}

/* Reads what is available. Returns 0, or a negative errno when the connection is broken. */
int control_client_read(struct client *cl)
{
        ssize_t n;

        assert(cl->in_len < CONTROL_INPUT_SIZE);

        n = read(cl->fd, cl->in + cl->in_len, CONTROL_INPUT_SIZE - cl->in_len);
        if (n < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                        return 0;
                return negative_errno();
        }
        cl->in_len += (size_t)n;
        if (n > 0)
                cl->active_usec = mono_usec();
        return client_handle_input(cl, n == 0);
}
