/* SPDX-License-Identifier: MIT */
/*
 * cluster.c - a node hears the others on a shared ledger; see cluster.h.
 *
 * Three event sources:
 *   io      the ledger connection's socket, readable: notifications read (on_io())
 *   post    after every other source of a turn of the loop: notifications that arrived with
 *           the answers of other statements (libpq keeps them; the socket no longer shows
 *           them) read, and a new connection noticed (on_post())
 *   flush   a defer source, on while this node's events wait: sent in one round trip
 *
 * A notification on imgd_jobs wakes the scheduler (once per turn, however many came). One on
 * imgd_events is {"event": NAME, "job": {... "node": N, "owner": "N:PID"}}, or, for a job too
 * large to send, {"event": NAME, "brief": true, "job": {"id", "node", "owner"}}: then the job
 * is read from the ledger. Events whose owner is this node's are its own: its subscribers
 * had them already.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/cluster.h"
#include "shared/log.h"
#include "shared/macro.h"
#include "shared/proto.h"

/* Events waiting to be sent at most; more in one turn of the loop are dropped (logged). */
#define CLUSTER_QUEUE_MAX 4096
/* Sent in one round trip at most. */
#define CLUSTER_FLUSH_MAX 256

struct cluster {
        sd_event *event;
        ledger *ledger;
        char *node, *owner;
        cluster_wake_fn wake;
        cluster_event_fn relay;
        void *userdata;
        sd_event_source *io, *post, *flush;
        uint64_t generation; /* of the connection io watches; 0: none */
        bool woken;          /* a wake is due at the end of the notifications read */
        char **queue;        /* payloads waiting for the flush */
        size_t n_queue;
};

static void relay_brief(cluster *c, const char *event, const json_t *job)
{
        _cleanup_(job_detail_freep) struct job_detail *d = NULL;
        _cleanup_(json_decrefp) json_t *j = NULL;
        json_int_t id = json_integer_value(json_object_get(job, "id"));

        if (id <= 0 || ledger_get(c->ledger, id, &d) <= 0) {
                log_debug("event %s of job %" PRId64 " from another node: job not found", event,
                          (int64_t)id);
                return;
        }
        j = json_pack("{s:I, s:o, s:o, s:s, s:I, s:O}", "id", (json_int_t)d->job.id, "source",
                      proto_string_lossy(d->job.source_path), "watch",
                      proto_string_lossy(d->job.watch), "pipeline", d->job.pipeline, "attempts",
                      (json_int_t)d->job.attempts, "node", json_object_get(job, "node"));
        if (!j)
                return;
        if (d->job.last_error && strcmp(event, "done") != 0)
                json_object_set_new(j, "error", proto_string_lossy(d->job.last_error));
        if (strcmp(event, "done") == 0 || strcmp(event, "moved") == 0)
                json_object_set_new(j, "outputs_omitted", json_true());
        c->relay(event, j, c->userdata);
}

static void on_notification(enum ledger_channel ch, const char *payload, bool own, void *userdata)
{
        _cleanup_(json_decrefp) json_t *n = NULL;
        cluster *c = userdata;
        const char *event, *owner;
        json_t *job;

        if (ch == LEDGER_CHANNEL_JOBS) {
                /* Our own commits kicked our scheduler already. */
                c->woken |= !own;
                return;
        }
        if (own || !c->relay)
                return;
        n = json_loads(payload, 0, NULL);
        event = json_string_value(json_object_get(n, "event"));
        job = json_object_get(n, "job");
        owner = json_string_value(json_object_get(job, "owner"));
        if (!event || !json_is_object(job)) {
                log_debug("a notification on %s that is no event: ignored",
                          ledger_channel_name(ch));
                return;
        }
        if (owner && strcmp(owner, c->owner) == 0)
                return;
        json_object_del(job, "owner");
        if (json_is_true(json_object_get(n, "brief")))
                relay_brief(c, event, job);
        else
                c->relay(event, job, c->userdata);
}

/* Reads the notifications that arrived; on a broken connection stops watching it. */
static void read_notifications(cluster *c)
{
        int r;

        if (c->generation == 0 || ledger_in_batch(c->ledger))
                return;
        r = ledger_notifications(c->ledger, on_notification, c);
        if (r == -ENOTCONN) {
                /* Watched again once the ledger connects again (on_post()). */
                log_debug("ledger: notifications: %s", ledger_errmsg(c->ledger));
                c->io = sd_event_source_disable_unref(c->io);
                c->generation = 0;
        } else if (r < 0)
                log_debug("ledger: notifications: %s", ledger_errmsg(c->ledger));
        if (c->woken) {
                c->woken = false;
                c->wake(c->userdata);
        }
}

static int on_io(sd_event_source *es, int fd, uint32_t revents, void *userdata)
{
        read_notifications(userdata);
        return 0;
}

/*
 * Watches the ledger's connection if it is a new one; returns whether it is. The watch is on a
 * descriptor of its own (a duplicate of libpq's, closed with the watch): libpq closes its
 * socket when it connects again, and an epoll registration lives as long as the socket does,
 * which a worker or hook forked at that moment keeps open until its exec; removing the watch
 * by libpq's number then failed or missed it, and epoll reported the socket with the freed
 * watch as its data (sd-event aborted in process_epoll() during a database outage under load).
 */
static bool watch_connection(cluster *c)
{
        uint64_t generation = 0;
        int fd = ledger_notify_fd(c->ledger, &generation), own;
        int r;

        if (fd < 0 || generation == c->generation)
                return false;
        c->io = sd_event_source_disable_unref(c->io);
        c->generation = 0;
        own = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        r = own < 0 ? -errno : sd_event_add_io(c->event, &c->io, own, EPOLLIN, on_io, c);
        if (r >= 0)
                r = sd_event_source_set_io_fd_own(c->io, true);
        if (r < 0) {
                /* The watch, if made, does not own the duplicate yet. */
                c->io = sd_event_source_disable_unref(c->io);
                if (own >= 0)
                        close(own);
                log_warning_errno(r, "ledger: watch its connection for notifications: %m; other "
                                     "nodes' work is found by polling");
                return false;
        }
        c->generation = generation;
        return true;
}

static int on_post(sd_event_source *es, void *userdata)
{
        cluster *c = userdata;

        if (watch_connection(c)) {
                /* A new connection: what was notified meanwhile is lost; look for work. */
                log_debug("ledger: listening on a new connection");
                c->wake(c->userdata);
        }
        read_notifications(c);
        return 0;
}

static void queue_clear(cluster *c, size_t n)
{
        for (size_t i = 0; i < n; i++)
                free(c->queue[i]);
        memmove(c->queue, c->queue + n, (c->n_queue - n) * sizeof *c->queue);
        c->n_queue -= n;
}

static int on_flush(sd_event_source *es, void *userdata)
{
        cluster *c = userdata;
        size_t n = c->n_queue < CLUSTER_FLUSH_MAX ? c->n_queue : CLUSTER_FLUSH_MAX;
        int r;

        if (ledger_in_batch(c->ledger))
                return 0; /* the next turn */
        r = ledger_notify(c->ledger, LEDGER_CHANNEL_EVENTS, (const char *const *)c->queue, n);
        if (r < 0)
                /* The database unreachable: the others' subscribers miss these events. */
                log_debug("ledger: send %zu event(s) to the other nodes: %s", n,
                          ledger_errmsg(c->ledger));
        queue_clear(c, n);
        if (c->n_queue == 0)
                sd_event_source_set_enabled(c->flush, SD_EVENT_OFF);
        return 0;
}

void cluster_publish(cluster *c, const char *event, const json_t *job)
{
        _cleanup_(json_decrefp) json_t *n = NULL, *copy = NULL;
        char *payload;

        if (!c)
                return;
        if (c->n_queue >= CLUSTER_QUEUE_MAX) {
                log_debug("event %s: %d events wait to be sent to the other nodes already; "
                          "dropped",
                          event, CLUSTER_QUEUE_MAX);
                return;
        }
        copy = json_copy((json_t *)job);
        if (!copy || json_object_set_new(copy, "owner", json_string(c->owner)) < 0)
                return;
        n = json_pack("{s:s, s:O}", "event", event, "job", copy);
        payload = n ? json_dumps(n, JSON_COMPACT) : NULL;
        if (payload && strlen(payload) > LEDGER_NOTIFY_PAYLOAD_MAX) {
                /* Hundreds of outputs, a long error: the others read it from the ledger. */
                free(payload);
                json_decref(n);
                n = json_pack("{s:s, s:b, s:{s:O, s:s, s:s}}", "event", event, "brief", true, "job",
                              "id", json_object_get(job, "id"), "node", c->node, "owner", c->owner);
                payload = n ? json_dumps(n, JSON_COMPACT) : NULL;
        }
        if (!payload)
                return;
        c->queue[c->n_queue++] = payload;
        sd_event_source_set_enabled(c->flush, SD_EVENT_ONESHOT);
}

int cluster_new(sd_event *e, ledger *l, const char *node, const char *owner, cluster_wake_fn wake,
                cluster_event_fn relay, void *userdata, cluster **ret)
{
        _cleanup_(cluster_freep) cluster *c = NULL;
        int r;

        assert(e);
        assert(l);
        assert(wake);
        c = calloc(1, sizeof *c);
        if (!c)
                return -ENOMEM;
        c->event = sd_event_ref(e);
        c->ledger = l;
        c->wake = wake;
        c->relay = relay;
        c->userdata = userdata;
        c->node = strdup(node);
        c->owner = strdup(owner);
        c->queue = calloc(CLUSTER_QUEUE_MAX, sizeof *c->queue);
        if (!c->node || !c->owner || !c->queue)
                return -ENOMEM;
        r = ledger_listen(l, LEDGER_CHANNEL_JOBS);
        if (r == -EOPNOTSUPP)
                return r;
        if (r >= 0 && relay)
                r = ledger_listen(l, LEDGER_CHANNEL_EVENTS);
        if (r < 0)
                /* Listened on with the next connection: the ledger remembers the channels. */
                log_warning("ledger: listen for other nodes' work: %s", ledger_errmsg(l));
        r = sd_event_add_post(e, &c->post, on_post, c);
        if (r < 0)
                return r;
        r = sd_event_add_defer(e, &c->flush, on_flush, c);
        if (r < 0)
                return r;
        sd_event_source_set_enabled(c->flush, SD_EVENT_OFF);
        /* After the turn's other work: the events of a batch go out together. */
        r = sd_event_source_set_priority(c->flush, SD_EVENT_PRIORITY_IDLE);
        if (r < 0)
                return r;
        (void)watch_connection(c);
        *ret = TAKE_PTR(c);
        return 0;
}

cluster *cluster_free(cluster *c)
{
        if (!c)
                return NULL;
        if (c->n_queue > 0 && !ledger_in_batch(c->ledger))
                (void)ledger_notify(c->ledger, LEDGER_CHANNEL_EVENTS, (const char *const *)c->queue,
                                    c->n_queue);
        if (c->queue)
                queue_clear(c, c->n_queue);
        free(c->queue);
        c->io = sd_event_source_disable_unref(c->io);
        c->post = sd_event_source_disable_unref(c->post);
        c->flush = sd_event_source_disable_unref(c->flush);
        sd_event_unref(c->event);
        free(c->node);
        free(c->owner);
        free(c);
        return NULL;
}
