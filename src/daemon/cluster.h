/* SPDX-License-Identifier: MIT */
/*
 * cluster.h - a node hears the others on a shared ledger (PostgreSQL, issue 18): the ledger
 * connection's socket watched in the event loop for LISTEN/NOTIFY, so that
 *   - a job another node made claimable (ledger.h: LEDGER_CHANNEL_JOBS) wakes this node's
 *     scheduler at once (the wake function), instead of at its next poll;
 *   - the job events of the other nodes (LEDGER_CHANNEL_EVENTS) are told to this node's
 *     subscribers (the relay function), each once; this node's own are sent to them with
 *     cluster_publish() and never relayed back to it.
 * After the connection broke and was made again (by the ledger, at its next transaction) the
 * new socket is watched and the scheduler woken once: what was notified meanwhile is lost.
 * Nothing here is needed for correctness: the scheduler's poll is the backstop.
 */
#pragma once

#include <jansson.h>
#include <systemd/sd-event.h>

#include "daemon/ledger.h"
#include "shared/macro.h"

typedef struct cluster cluster;

/* Wakes the scheduler (scheduler_kick()). */
typedef void (*cluster_wake_fn)(void *userdata);
/* An event of another node: its name and the job as it told it, with its "node" (borrowed
 * for the call). */
typedef void (*cluster_event_fn)(const char *event, const json_t *job, void *userdata);

/*
 * Listens on l's channels and watches its connection in e. node is this node's name, owner
 * its lease owner ("node:pid"), which tells its own events apart. Returns 0 and *ret, or a
 * negative errno (-EOPNOTSUPP: l is not shared, SQLite). The cluster borrows e and l.
 */
int cluster_new(sd_event *e, ledger *l, const char *node, const char *owner, cluster_wake_fn wake,
                cluster_event_fn relay, void *userdata, cluster **ret);
cluster *cluster_free(cluster *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(cluster *, cluster_free)

/*
 * Sends job event `event` of this node to the others: queued, and sent with the others of
 * the same turn of the loop in one round trip. A job too large for a notification (8000
 * bytes) goes as its id, node and event, and the others read the rest from the ledger
 * (without its outputs: "outputs_omitted"). Never fails: an event that cannot be sent is
 * logged at debug level and dropped.
 */
void cluster_publish(cluster *c, const char *event, const json_t *job);
