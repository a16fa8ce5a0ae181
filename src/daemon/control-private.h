/* SPDX-License-Identifier: MIT */
/*
 * control-private.h - what the files of the control socket share (private to
 * src/daemon/control*.c): the socket's and each client's state, the limits, and the entry
 * points one file offers the others.
 *
 *   control.c          the listening socket: bind, accept, the client limits, broadcast
 *   control-auth.c     peer credentials, the operator's and the read-only role, the groups
 *   control-client.c   a client's lifetime, output queue and limits, its events, eviction
 *   control-framing.c  reading newline-delimited requests within the size limit, answering
 *
 * All run in the daemon's sd_event loop; none blocks (but control_set_group() and
 * control_set_read_group(), which may wait for NSS, see control.h).
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

#include "daemon/control.h"
#include "shared/proto.h"
#include "shared/time-util.h"

#define CONTROL_MAX_OUTPUT (4u * 1024 * 1024)
#define CONTROL_INPUT_SIZE (PROTO_MAX_LINE + 1)
#define CONTROL_REFUSAL_LOG_USEC (10 * USEC_PER_SEC)
_Static_assert(CONTROL_MAX_SUBSCRIBERS < CONTROL_MAX_CLIENTS,
               "subscribers must leave slots for ordinary clients");

struct client {
        control *control;
        struct client *prev, *next;
        int fd;
        sd_event_source *io;
        sd_event_source *timer;
        struct ucred cred;    /* the peer at connect time (SO_PEERCRED), for authorization */
        bool read_only;       /* in the read-only role: control_set_read_group() */
        uint64_t active_usec; /* CLOCK_MONOTONIC of connect or the last byte read or written */

        char *in; /* CONTROL_INPUT_SIZE bytes */
        size_t in_len;

        char *out; /* unsent answers are out[out_start..out_end) */
        size_t out_start, out_end, out_alloc;

        bool draining;   /* reads no more; closed once the output is written */
        bool subscriber; /* receives control_broadcast() lines */
        bool broken;     /* to be closed as soon as its request has been handled */
};

struct control {
        sd_event *event;
        char *path;
        int fd;
        sd_event_source *io;
        sd_event_source *accept_pause; /* re-enables accepting after EMFILE and friends */

        bool bound; /* path is our socket: dev/ino identify it, so we unlink only ours */
        dev_t dev;
        ino_t ino;

        control_handler_fn fn;
        void *userdata;

        struct client *clients;
        unsigned n_clients;
        unsigned n_subscribers;
        unsigned max_clients;     /* control_limits(): CONTROL_MAX_CLIENTS, fewer with few fds */
        unsigned max_subscribers; /* the same for CONTROL_MAX_SUBSCRIBERS */
        bool warned_full;         /* logged "too many clients" since the last client left */
        bool warned_subscribers;  /* logged "too many subscribers" since the last one left */
        uint64_t client_timeout_usec;
        struct client *serving; /* whose request the handler is answering now, or NULL */

        uid_t uid;      /* the daemon's effective uid: always served */
        bool has_group; /* members of `group` are served too */
        gid_t group;
        char *group_name;    /* for messages: the name, or the number */
        bool has_read_group; /* members of `read_group` are served read-only commands */
        gid_t read_group;
        char *read_group_name;
        control_read_only_fn read_only; /* which commands the read-only role may send */
        gid_t socket_gid;               /* the socket file's group, which mode 0660 lets in */
        mode_t mode;                  /* the mode control_new() or control_update_mode() gave it */
        uint64_t refusal_logged_usec; /* CLOCK_MONOTONIC of the last logged refusal */
        unsigned refusals_unlogged;   /* refusals since then, not logged */
        uint64_t evict_logged_usec;   /* the same for control_evict() */
        unsigned evictions_unlogged;
};

/* control-auth.c */

/*
 * Whether the peer `cred` on fd may use the socket. Returns 2 (the operator's role: root,
 * imgd's user, the group of control_set_group()), 1 (the read-only role: the group of
 * control_set_read_group()), or 0 with the refusal in *ret_message (owned by the caller), or
 * -ENOMEM.
 */
int control_authorize(control *c, int fd, const struct ucred *cred, char **ret_message);

/* Logs a refusal, at most once per CONTROL_REFUSAL_LOG_USEC. */
void control_log_refusal(control *c, const struct ucred *cred, const char *message);

/* Whether a client in the read-only role may send cmd. Returns 0, or -EACCES with the refusal
 * in *ret_error (owned by the caller). */
int control_client_check_role(struct client *cl, const char *cmd, char **ret_error);

/* control-client.c */

/* Takes over fd (closed on failure too): authorizes the peer and makes it a client, evicting
 * the quietest one when the slots are full. Returns 0 (also when the peer was refused and the
 * connection closed) or a negative errno. */
int control_client_new(control *c, int fd);

/* Unlinks cl from its control and closes it. Accepts NULL. Never while it is being served. */
void control_client_free(struct client *cl);

/* Appends n bytes to the output queue. -ENOBUFS beyond the client's output limit
 * (CONTROL_MAX_OUTPUT, CONTROL_MAX_SUBSCRIBER_OUTPUT for a subscriber), -ENOMEM; unchanged on
 * failure. */
int control_client_queue(struct client *cl, const char *data, size_t n);

/* Queues an error answer; -ENOMEM/-ENOBUFS if it cannot. */
int control_client_queue_error(struct client *cl, const char *message);

/* Writes as much of the output queue as the socket takes. Returns 0 (the rest, if any,
 * waits for EPOLLOUT) or a negative errno when the connection is broken. */
int control_client_flush(struct client *cl);

/* Waits for what the client needs next: input (unless draining), output room (while
 * something is queued). -ECONNRESET when it needs nothing more (drained): close it. */
int control_client_arm(struct client *cl);

/* Restarts the idle timeout; a subscriber has none. */
int control_client_arm_timer(struct client *cl);

/* {"cmd":"events"}: the client becomes a subscriber. Returns 0 and the answer's result, or
 * -EUSERS with the message in *ret_error (owned by the caller) when the other subscribers
 * take all the places already: the client stays an ordinary one. */
int control_client_subscribe(struct client *cl, json_t **ret_result, char **ret_error);

/* Makes room for one more client: closes the ordinary client that has been quiet longest,
 * after one error line. Returns true, or false when none can be closed. */
bool control_evict(control *c);

/* control-framing.c */

/* Reads what is available and answers every complete request in it. Returns 0, or a negative
 * errno when the connection is broken. */
int control_client_read(struct client *cl);
