/* SPDX-License-Identifier: MIT */
/*
 * control-client.c - one connection of the control socket (control-private.h): its lifetime,
 * its output queue and the limits on it, its idle timer, its subscription to events, and the
 * eviction of the quietest client when all slots are taken.
 *
 * Limits: at most CONTROL_MAX_OUTPUT bytes of unsent answers per client, and
 * CONTROL_MAX_SUBSCRIBER_OUTPUT for a subscriber (answers and events), beyond which it is
 * disconnected; a client that sends no complete request for the idle timeout (reset by each
 * request) is disconnected, except a subscriber, which is expected to be silent; at most the
 * control's max_subscribers clients are subscribers; when all max_clients slots are taken,
 * control_evict() closes the ordinary client quiet longest (after one error line) to make room.
 *
 * Client states and the function that performs each transition:
 *
 *   control_client_new() --- peer not authorized: one error line -------------> closed
 *       |
 *       |                 client_on_io(): EOF, or client_handle_input() (control-framing.c):
 *       v                                      line too long (error answer queued)
 *     OPEN (reading; answers written as the socket  +---> DRAINING (no more reading)
 *       |   accepts them, EPOLLOUT while blocked)   |                 |
 *       |                                           |                 | queue written
 *       | {"cmd":"events"}: control_client_subscribe()                v
 *       v                                           |   closed: control_client_free()
 *     SUBSCRIBED (as OPEN, plus every line of  -----+                 ^
 *       |   control_broadcast(); no idle timeout)                     |
 *       +--- I/O error, idle timeout (client_on_timer), output over the limit
 *            (control_client_queue(), control_broadcast()) -----------+
 *
 * control_broadcast() may run while a request of the same client is being handled (the
 * handler retries a job, the scheduler emits "queued"); it then only marks that client
 * `broken`, and client_on_io() frees it once the handler has returned.
 */
#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "daemon/control-private.h"
#include "shared/alloc.h"
#include "shared/log.h"
#include "shared/macro.h"
#include "shared/proto.h"
#include "shared/time-util.h"

void control_client_free(struct client *cl)
{
        control *c;

        if (!cl)
                return;
        c = cl->control;

        if (cl->prev)
                cl->prev->next = cl->next;
        else
                c->clients = cl->next;
        if (cl->next)
                cl->next->prev = cl->prev;
        assert(c->n_clients > 0);
        c->n_clients--;
        if (cl->subscriber) {
                assert(c->n_subscribers > 0);
                c->n_subscribers--;
                c->warned_subscribers = false;
        }
        c->warned_full = false;
        assert(c->serving != cl);

        sd_event_source_disable_unref(cl->io);
        sd_event_source_disable_unref(cl->timer);
        if (cl->fd >= 0)
                close(cl->fd);
        free(cl->in);
        free(cl->out);
        free(cl);
}

static size_t client_pending(const struct client *cl)
{
        return cl->out_end - cl->out_start;
}

static size_t client_max_output(const struct client *cl)
{
        return cl->subscriber ? CONTROL_MAX_SUBSCRIBER_OUTPUT : CONTROL_MAX_OUTPUT;
}

/* Appends n bytes to the output queue. -ENOBUFS beyond client_max_output(); unchanged on
 * failure. */
int control_client_queue(struct client *cl, const char *data, size_t n)
{
        size_t pending = client_pending(cl);

        if (pending > client_max_output(cl) || n > client_max_output(cl) - pending)
                return -ENOBUFS;

        if (cl->out_start > 0 && cl->out_end + n > cl->out_alloc) {
                memmove(cl->out, cl->out + cl->out_start, pending);
                cl->out_start = 0;
                cl->out_end = pending;
        }
        if (GROW_ARRAY(cl->out, cl->out_alloc, cl->out_end + n) < 0)
                return -ENOMEM;
        memcpy(cl->out + cl->out_end, data, n);
        cl->out_end += n;
        return 0;
}

/* Writes as much of the output queue as the socket takes. Returns 0 (the rest, if any,
 * waits for EPOLLOUT) or a negative errno when the connection is broken. */
int control_client_flush(struct client *cl)
{
        ssize_t n;

        while (client_pending(cl) > 0) {
                n = send(cl->fd, cl->out + cl->out_start, client_pending(cl),
                         MSG_NOSIGNAL | MSG_DONTWAIT);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN || errno == EWOULDBLOCK)
                                return 0;
                        return negative_errno();
                }
                cl->out_start += (size_t)n;
                cl->active_usec = mono_usec();
        }
        cl->out_start = cl->out_end = 0;
        return 0;
}

/* Queues an error answer; -ENOMEM/-ENOBUFS if it cannot. */
int control_client_queue_error(struct client *cl, const char *message)
{
        _cleanup_free_ char *line = proto_format_error(message);

        if (!line)
                return -ENOMEM;
        return control_client_queue(cl, line, strlen(line));
}

/* Restarts the idle timeout; a subscriber has none. */
int control_client_arm_timer(struct client *cl)
{
        int r;

        if (cl->subscriber)
                return sd_event_source_set_enabled(cl->timer, SD_EVENT_OFF);
        r = sd_event_source_set_time_relative(cl->timer, cl->control->client_timeout_usec);
        if (r < 0)
                return r;
        return sd_event_source_set_enabled(cl->timer, SD_EVENT_ONESHOT);
}

/*
 * {"cmd":"events"}: the client becomes a subscriber. Returns 0 and the answer's result, or
 * -EUSERS with the message in *ret_error (owned by the caller) when CONTROL_MAX_SUBSCRIBERS
 * others are subscribed already: the client stays an ordinary one.
 */
int control_client_subscribe(struct client *cl, json_t **ret_result, char **ret_error)
{
        control *c = cl->control;
        json_t *result;

        if (!cl->subscriber && c->n_subscribers >= c->max_subscribers) {
                if (!c->warned_subscribers) {
                        log_warning("control socket %s: refusing event subscribers beyond %u",
                                    c->path, c->max_subscribers);
                        c->warned_subscribers = true;
                }
                if (asprintf(ret_error, "too many event subscribers (at most %u); try again later",
                             c->max_subscribers) < 0)
                        return -ENOMEM;
                return -EUSERS;
        }
        result = json_pack("{s:b}", "subscribed", 1);
        if (!result)
                return -ENOMEM;
        if (!cl->subscriber) {
                cl->subscriber = true;
                cl->control->n_subscribers++;
                log_debug("control client pid %d: subscribed to events", (int)cl->cred.pid);
        }
        *ret_result = result;
        return control_client_arm_timer(cl);
}

/* Waits for what the client needs next: input (unless draining), output room (while
 * something is queued). -ECONNRESET when it needs nothing more (drained): close it. */
int control_client_arm(struct client *cl)
{
        uint32_t events;

        if (cl->broken)
                return -ECONNRESET;
        events = (cl->draining ? 0 : EPOLLIN) | (client_pending(cl) > 0 ? EPOLLOUT : 0);
        if (events == 0)
                return -ECONNRESET; /* draining and everything written */
        return sd_event_source_set_io_events(cl->io, events);
}

static int client_on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
        struct client *cl = userdata;
        int r = 0;

        (void)s;
        (void)fd;

        if ((revents & (EPOLLIN | EPOLLHUP | EPOLLERR)) && !cl->draining)
                r = control_client_read(cl);
        if (r >= 0)
                r = control_client_flush(cl);
        if (r < 0) {
                log_debug_errno(r, "control client pid %d: disconnecting: %m", (int)cl->cred.pid);
                goto disconnect;
        }

        if (control_client_arm(cl) < 0)
                goto disconnect;
        return 0;

disconnect:
        control_client_free(cl);
        return 0;
}

static int client_on_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
        struct client *cl = userdata;

        (void)s;
        (void)usec;
        log_debug("control client pid %d: silent for %llu ms, disconnecting", (int)cl->cred.pid,
                  (unsigned long long)(cl->control->client_timeout_usec / USEC_PER_MSEC));
        control_client_free(cl);
        return 0;
}

/* Sends one error line on a fresh connection, without waiting: its send buffer is empty, so
 * a short line fits, or the peer is gone already. */
static void send_error_now(int fd, const char *message)
{
        _cleanup_free_ char *line = proto_format_error(message);

        if (line)
                (void)send(fd, line, strlen(line), MSG_NOSIGNAL | MSG_DONTWAIT);
}

/* Answers a connection beyond the limit with one error line and closes it. */
static void control_reject(control *c, int fd)
{
        _cleanup_close_ int cfd = fd;

        if (!c->warned_full) {
                log_warning("control socket %s: refusing clients beyond %u", c->path,
                            c->max_clients);
                c->warned_full = true;
        }
        send_error_now(cfd, "too many clients");
}

/*
 * Makes room for one more client: closes the ordinary client (not a subscriber) that has been
 * quiet longest, after one error line. Returns true, or false when every client is a
 * subscriber or being served. Evictions are logged at most once per CONTROL_REFUSAL_LOG_USEC.
 */
bool control_evict(control *c)
{
        struct client *victim = NULL;
        uint64_t now = mono_usec();

        for (struct client *cl = c->clients; cl; cl = cl->next)
                if (!cl->subscriber && cl != c->serving &&
                    (!victim || cl->active_usec < victim->active_usec))
                        victim = cl;
        if (!victim)
                return false;

        if (c->evict_logged_usec == 0 || now - c->evict_logged_usec >= CONTROL_REFUSAL_LOG_USEC) {
                log_warning("control socket %s: %u clients connected, the limit; closing the one "
                            "quiet longest (pid %d, %llu ms) to make room (%u more since the "
                            "last such message)",
                            c->path, c->n_clients, (int)victim->cred.pid,
                            (unsigned long long)((now - victim->active_usec) / USEC_PER_MSEC),
                            c->evictions_unlogged);
                c->evict_logged_usec = now;
                c->evictions_unlogged = 0;
        } else
                c->evictions_unlogged++;
        send_error_now(victim->fd, "too many clients: closing this connection, the one quiet "
                                   "longest, to make room for a new one");
        control_client_free(victim);
        return true;
}

/* Takes over fd (closed on failure too). Returns 0 (also when the peer was refused and the
 * connection closed) or a negative errno. */
int control_client_new(control *c, int fd)
{
        _cleanup_close_ int cfd = fd;
        _cleanup_free_ char *refusal = NULL;
        struct client *cl;
        socklen_t len = sizeof cl->cred;
        int r;

        cl = calloc(1, sizeof *cl);
        if (!cl)
                return -ENOMEM;
        cl->control = c;
        cl->fd = -1;
        if (getsockopt(cfd, SOL_SOCKET, SO_PEERCRED, &cl->cred, &len) < 0) {
                r = negative_errno();
                goto free_client;
        }
        r = control_authorize(c, cfd, &cl->cred, &refusal);
        if (r < 0)
                goto free_client;
        if (r == 0) {
                control_log_refusal(c, &cl->cred, refusal);
                send_error_now(cfd, refusal);
                free(cl);
                return 0;
        }
        cl->read_only = r == 1;
        if (c->n_clients >= c->max_clients && !control_evict(c)) {
                control_reject(c, TAKE_FD(cfd));
                free(cl);
                return 0;
        }
        cl->in = malloc(CONTROL_INPUT_SIZE);
        if (!cl->in) {
                r = -ENOMEM;
                goto free_client;
        }
        r = sd_event_add_io(c->event, &cl->io, cfd, EPOLLIN, client_on_io, cl);
        if (r < 0)
                goto free_client;
        r = sd_event_add_time_relative(c->event, &cl->timer, CLOCK_MONOTONIC,
                                       c->client_timeout_usec, 0, client_on_timer, cl);
        if (r < 0)
                goto free_client;

        cl->fd = TAKE_FD(cfd);
        cl->active_usec = mono_usec();
        cl->next = c->clients;
        if (c->clients)
                c->clients->prev = cl;
        c->clients = cl;
        c->n_clients++;
        log_debug("control client connected: pid %d uid %u gid %u", (int)cl->cred.pid,
                  (unsigned)cl->cred.uid, (unsigned)cl->cred.gid);
        return 0;

free_client:
        sd_event_source_disable_unref(cl->io);
        sd_event_source_disable_unref(cl->timer);
        free(cl->in);
        free(cl);
        return r;
}
