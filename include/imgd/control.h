/* SPDX-License-Identifier: MIT */
/*
 * control.h - the daemon's control socket. Listens on a Unix stream socket (mode 0660),
 * reads newline-delimited requests (see proto.h) from at most CONTROL_MAX_CLIENTS clients,
 * each bounded to PROTO_MAX_LINE bytes and CONTROL_CLIENT_TIMEOUT_S seconds of silence,
 * passes each request to the handler, and writes its answer. A client that breaks the rules
 * is answered with an error and disconnected; none can stall the daemon.
 */
#pragma once

#include <jansson.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#define CONTROL_MAX_CLIENTS 64
#define CONTROL_CLIENT_TIMEOUT_S 30

typedef struct control control;

/*
 * Handles one request. Returns 0 with a result object in *ret_result (ownership passes to
 * the caller), or a negative errno with a message in *ret_error (owned by the caller).
 */
typedef int (*control_handler_fn)(const char *cmd, const json_t *request, void *userdata,
                                  json_t **ret_result, char **ret_error);

/* Binds `path` (replacing a stale socket, refusing one a live daemon answers on). Returns 0
 * and *ret, or a negative errno (logged with the path). */
int control_new(sd_event *e, const char *path, control_handler_fn fn, void *userdata,
                control **ret);

/* Closes all clients and the socket, and unlinks its path. Accepts NULL. */
control *control_free(control *c);

/* Sets how long a client may stay silent before it is disconnected (default
 * CONTROL_CLIENT_TIMEOUT_S; 0 restores the default). Applies from each client's next request
 * or connection. For tests. */
void control_set_client_timeout(control *c, uint64_t usec);
