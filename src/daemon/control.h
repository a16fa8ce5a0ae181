/* SPDX-License-Identifier: MIT */
/*
 * control.h - the daemon's control socket. Listens on a Unix stream socket (mode 0660),
 * reads newline-delimited requests (see proto.h) from at most CONTROL_MAX_CLIENTS clients,
 * each bounded to PROTO_MAX_LINE bytes and CONTROL_CLIENT_TIMEOUT_USEC of silence,
 * passes each request to the handler, and writes its answer. A client that breaks the rules
 * is answered with an error and disconnected; none can stall the daemon.
 *
 * Room for one more: when all CONTROL_MAX_CLIENTS slots are taken, a new connection is
 * served, and the ordinary client (not a subscriber) that has been quiet longest (nothing
 * read from it or written to it) gets the error line "too many clients: ..." and is closed.
 * So connections that hold a slot and do nothing cannot lock an operator out; a new
 * connection is the last one to go.
 *
 * Authorization: each connection is checked once, when it is accepted, by the peer's
 * credentials as the kernel recorded them at connect time (SO_PEERCRED, SO_PEERGROUPS). Root,
 * the daemon's own (effective) user and members of the group set with control_set_group()
 * (primary or supplementary) are served in the operator's role, members of the group set with
 * control_set_read_group() in the read-only role; anyone else gets one error line ("permission
 * denied: uid N is not root, imgd's user or in group G") and is disconnected. A client in the
 * read-only role may send "events" and the commands its predicate accepts; any other is answered
 * "permission denied: 'CMD' needs the operator role (group 'G'); you are in the read-only role
 * (group 'R')", and the connection stays. The socket file is mode 0660 while the groups served
 * are its own group, 0666 when another one is (its members could not connect otherwise).
 *
 * Subscriptions: the request {"cmd":"events"} is answered here, not by the handler: the
 * connection becomes a subscriber ({"subscribed":true}), is no longer timed out for silence,
 * and receives every line passed to control_broadcast(). At most CONTROL_MAX_SUBSCRIBERS
 * clients are subscribers at a time; a further {"cmd":"events"} is answered with the error
 * "too many event subscribers (at most N); try again later" and the client stays an ordinary
 * one. A subscriber with more than CONTROL_MAX_SUBSCRIBER_OUTPUT bytes of unsent events is
 * disconnected (and that is logged), so a client that stops reading never holds the daemon
 * up.
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <systemd/sd-event.h>
#include "shared/time-util.h"

/* With RLIMIT_NOFILE below 4 * CONTROL_MAX_CLIENTS, a quarter of it is the client limit (at
 * least CONTROL_MIN_CLIENTS), and a quarter of that the subscriber limit: under `ulimit -n
 * 64`, 16 clients and 4 subscribers, so that silent connections cannot take the descriptors
 * intake and the workers need. */
#define CONTROL_MAX_CLIENTS 64
#define CONTROL_MIN_CLIENTS 8
#define CONTROL_MAX_SUBSCRIBERS 16 /* fewer than CONTROL_MAX_CLIENTS: room for the others */
#define CONTROL_CLIENT_TIMEOUT_USEC (30 * USEC_PER_SEC)
#define CONTROL_MAX_SUBSCRIBER_OUTPUT (1024u * 1024)

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
 * CONTROL_CLIENT_TIMEOUT_USEC; 0 restores the default). Applies from each client's next request
 * or connection. For tests. */
void control_set_client_timeout(control *c, uint64_t usec);

/*
 * Also serves members of group `gid` (besides root and the daemon's user); (gid_t)-1 serves
 * no group. Applies to connections accepted from now on. The group's name, for messages, is
 * looked up here (once), so this may block on NSS: call it at start-up or reload, not per
 * request.
 */
void control_set_group(control *c, gid_t gid);

/* Whether the read-only role may send command cmd (besides "events"). */
typedef bool (*control_read_only_fn)(const char *cmd);

/*
 * Serves members of group `gid` in the read-only role: the commands read_only() accepts, and
 * "events"; (gid_t)-1 serves no such group. Root, the daemon's user and members of the group of
 * control_set_group() keep the operator's role. Applies to connections accepted from now on;
 * may block on NSS, as control_set_group().
 */
void control_set_read_group(control *c, gid_t gid, control_read_only_fn read_only);

/*
 * Sends `line` (one protocol line; a missing final newline is added) to every subscriber.
 * Never blocks: what a subscriber's socket does not take at once is queued, and a subscriber
 * whose queue would exceed CONTROL_MAX_SUBSCRIBER_OUTPUT is disconnected (logged once per
 * subscriber). Returns the number of subscribers the line was queued for, or -ENOMEM. Safe to
 * call with c == NULL (returns 0).
 */
int control_broadcast(control *c, const char *line);

/* Number of connected subscribers (for status and tests). */
unsigned control_subscribers(const control *c);
