/* SPDX-License-Identifier: MIT */
/*
 * control.c - the daemon's control socket (see control.h). One listening Unix stream socket
 * and up to CONTROL_MAX_CLIENTS connections, all driven by the daemon's sd_event loop; no
 * call here blocks. Each connection carries any number of request lines, answered in order.
 *
 * Authorization happens once per connection, in client_new(): the kernel's record of the
 * peer (SO_PEERCRED: uid, gid, pid; SO_PEERGROUPS: its supplementary groups, both as of
 * connect()) must be root, the daemon's effective uid, or a member of the group set with
 * control_set_group(). Where the kernel lacks SO_PEERGROUPS (before Linux 4.13), the
 * "Groups:" line of /proc/<pid>/status is read instead; that is racy (the peer may exit and
 * its pid be reused), which is why it is only the fallback. A refused peer gets one error
 * line and is closed; refusals are logged at most once per CONTROL_REFUSAL_LOG_USEC. A member
 * of the group of control_set_read_group() (and of no operator's group) is served in the
 * read-only role: client_check_role() answers each command the read-only predicate does not
 * accept with an error, and the connection stays.
 *
 * Limits, so that no client can stall or exhaust the daemon:
 *   - input: one buffer of PROTO_MAX_LINE + 1 bytes per client (a line and its newline);
 *     a longer line is answered "request too long" and the client is disconnected;
 *   - output: at most CONTROL_MAX_OUTPUT bytes of unsent answers per client, and
 *     CONTROL_MAX_SUBSCRIBER_OUTPUT for a subscriber (answers and events); a client that
 *     does not read is disconnected beyond that;
 *   - time: a client that sends no complete request for the idle timeout (reset by each
 *     request) is disconnected, except a subscriber, which is expected to be silent;
 *   - count: at most CONTROL_MAX_SUBSCRIBERS of the clients are subscribers (a further
 *     {"cmd":"events"} is answered with an error); when all CONTROL_MAX_CLIENTS slots are
 *     (both fewer when RLIMIT_NOFILE is low, control_limits(), and when accept() fails for
 *     want of descriptors the quiet client is evicted too)
 *     taken, a new (authorized) connection takes the slot of the ordinary client that has
 *     been quiet longest (control_evict(): nothing read from it or written to it), which gets
 *     one error line and is closed. Since subscribers can hold only some of the slots, there
 *     is always such a client: a crowd of silent or idle connections delays an operator's
 *     request by nothing, and a new connection is the last to be evicted. Only where no
 *     client can be evicted (not possible with these limits) is the newcomer refused.
 *
 * Client states and the function that performs each transition:
 *
 *   client_new() --- peer not authorized: one error line ---------------------> closed
 *       |
 *       |                        client_on_io(): EOF, or client_handle_input(): line too long
 *       v                                      (error answer queued)
 *     OPEN (reading; answers written as the socket  +---> DRAINING (no more reading)
 *       |   accepts them, EPOLLOUT while blocked)   |                 |
 *       |                                           |                 | queue written
 *       | {"cmd":"events"}: client_subscribe()      |                 v
 *       v                                           |         closed: client_free()
 *     SUBSCRIBED (as OPEN, plus every line of  -----+                 ^
 *       |   control_broadcast(); no idle timeout)                     |
 *       +--- I/O error, idle timeout (client_on_timer), output over the limit
 *            (client_queue(), control_broadcast()) -------------------+
 *
 * control_broadcast() may run while a request of the same client is being handled (the
 * handler retries a job, the scheduler emits "queued"); it then only marks that client
 * `broken`, and client_on_io() frees it once the handler has returned.
 */
#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <grp.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>

#include "daemon/control.h"
#include "shared/log.h"
#include "shared/macro.h"
#include "shared/proto.h"

#define USEC_PER_SEC UINT64_C(1000000)
#define CONTROL_MAX_OUTPUT (4u * 1024 * 1024)
#define CONTROL_INPUT_SIZE (PROTO_MAX_LINE + 1)
#define CONTROL_ACCEPT_BURST 32
#define CONTROL_ACCEPT_PAUSE_USEC (1 * USEC_PER_SEC)
#define CONTROL_REFUSAL_LOG_USEC (10 * USEC_PER_SEC)
_Static_assert(CONTROL_MAX_SUBSCRIBERS < CONTROL_MAX_CLIENTS,
               "subscribers must leave slots for ordinary clients");
/* Supplementary groups of a peer we look at; Linux allows 65536 (NGROUPS_MAX). */
#define CONTROL_MAX_PEER_GROUPS 65536u

#ifndef SO_PEERGROUPS
#define SO_PEERGROUPS 59 /* Linux 4.13 */
#endif

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

static void client_free(struct client *cl)
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
static int client_queue(struct client *cl, const char *data, size_t n)
{
        size_t pending = client_pending(cl), want;
        char *p;

        if (pending > client_max_output(cl) || n > client_max_output(cl) - pending)
                return -ENOBUFS;

        if (cl->out_start > 0 && cl->out_end + n > cl->out_alloc) {
                memmove(cl->out, cl->out + cl->out_start, pending);
                cl->out_start = 0;
                cl->out_end = pending;
        }
        if (cl->out_end + n > cl->out_alloc) {
                want = cl->out_alloc ? cl->out_alloc : 4096;
                while (want < cl->out_end + n)
                        want *= 2;
                p = realloc(cl->out, want);
                if (!p)
                        return -ENOMEM;
                cl->out = p;
                cl->out_alloc = want;
        }
        memcpy(cl->out + cl->out_end, data, n);
        cl->out_end += n;
        return 0;
}

/* Writes as much of the output queue as the socket takes. Returns 0 (the rest, if any,
 * waits for EPOLLOUT) or a negative errno when the connection is broken. */
static int client_flush(struct client *cl)
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
static int client_queue_error(struct client *cl, const char *message)
{
        _cleanup_free_ char *line = proto_format_error(message);

        if (!line)
                return -ENOMEM;
        return client_queue(cl, line, strlen(line));
}

/* Restarts the idle timeout; a subscriber has none. */
static int client_arm_timer(struct client *cl)
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
static int client_subscribe(struct client *cl, json_t **ret_result, char **ret_error)
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
        return client_arm_timer(cl);
}

/*
 * Whether a client in the read-only role may send cmd. Returns 0, or -EACCES with the refusal
 * in *ret_error (owned by the caller).
 */
static int client_check_role(struct client *cl, const char *cmd, char **ret_error)
{
        control *c = cl->control;
        int r;

        if (!cl->read_only || strcmp(cmd, "events") == 0 || (c->read_only && c->read_only(cmd)))
                return 0;
        if (c->has_group)
                r = asprintf(ret_error,
                             "permission denied: '%.64s' needs the operator role (group '%s'); "
                             "you are in the read-only role (group '%s')",
                             cmd, c->group_name, c->read_group_name);
        else
                r = asprintf(ret_error,
                             "permission denied: '%.64s' needs the operator role (root or imgd's "
                             "user); you are in the read-only role (group '%s')",
                             cmd, c->read_group_name);
        return r < 0 ? -ENOMEM : -EACCES;
}

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

        r = client_arm_timer(cl);
        if (r < 0)
                return r;

        r = proto_parse_request(line, n, &req, &cmd, &error);
        if (r >= 0)
                r = client_check_role(cl, cmd, &error);
        if (r >= 0 && strcmp(cmd, "events") == 0) {
                r = client_subscribe(cl, &result, &error);
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
                return client_queue_error(cl, too_big);
        }
        return client_queue(cl, answer, len);
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
                r = client_queue_error(cl, message);
                if (r < 0)
                        return r;
        }
        if (at_eof)
                cl->draining = true;
        return 0;
}

/* Reads what is available. Returns 0, or a negative errno when the connection is broken. */
static int client_read(struct client *cl)
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

/* Waits for what the client needs next: input (unless draining), output room (while
 * something is queued). -ECONNRESET when it needs nothing more (drained): close it. */
static int client_arm(struct client *cl)
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
                r = client_read(cl);
        if (r >= 0)
                r = client_flush(cl);
        if (r < 0) {
                log_debug_errno(r, "control client pid %d: disconnecting: %m", (int)cl->cred.pid);
                goto disconnect;
        }

        if (client_arm(cl) < 0)
                goto disconnect;
        return 0;

disconnect:
        client_free(cl);
        return 0;
}

static int client_on_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
        struct client *cl = userdata;

        (void)s;
        (void)usec;
        log_debug("control client pid %d: silent for %llu ms, disconnecting", (int)cl->cred.pid,
                  (unsigned long long)(cl->control->client_timeout_usec / 1000));
        client_free(cl);
        return 0;
}

/*
 * Whether process `pid` has supplementary group gid, from the "Groups:" line of
 * /proc/<pid>/status: 1 yes, 0 no, or a negative errno (no such process, unreadable).
 */
static int proc_has_group(pid_t pid, gid_t gid)
{
        _cleanup_free_ char *line = NULL;
        char path[64];
        size_t size = 0;
        ssize_t n;
        FILE *f;
        int r = 0;

        if (pid <= 0)
                return -ESRCH; /* in another pid namespace */
        snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
        f = fopen(path, "re");
        if (!f)
                return negative_errno();
        while ((n = getline(&line, &size, f)) > 0) {
                char *p, *end;

                if (strncmp(line, "Groups:", 7) != 0)
                        continue;
                for (p = line + 7;; p = end) {
                        unsigned long v;

                        while (*p == ' ' || *p == '\t')
                                p++;
                        if (*p < '0' || *p > '9')
                                break;
                        errno = 0;
                        v = strtoul(p, &end, 10);
                        if (errno != 0 || end == p)
                                break;
                        if ((gid_t)v == gid && v == (unsigned long)(gid_t)v) {
                                r = 1;
                                break;
                        }
                }
                break;
        }
        fclose(f);
        return r;
}

/*
 * Whether the peer of fd has supplementary group gid, as of its connect(): 1 yes, 0 no, or a
 * negative errno. Asks the kernel (SO_PEERGROUPS); falls back to proc_has_group().
 */
static int peer_has_group(int fd, pid_t pid, gid_t gid)
{
        gid_t small[64];
        _cleanup_free_ gid_t *big = NULL;
        gid_t *groups = small;
        socklen_t len = sizeof small;

        if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) < 0) {
                if (errno == ENOPROTOOPT)
                        return proc_has_group(pid, gid);
                if (errno != ERANGE || len > CONTROL_MAX_PEER_GROUPS * sizeof(gid_t))
                        return negative_errno();
                big = malloc(len);
                if (!big)
                        return -ENOMEM;
                groups = big;
                if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) < 0)
                        return negative_errno();
        }
        for (size_t i = 0; i < len / sizeof(gid_t); i++)
                if (groups[i] == gid)
                        return 1;
        return 0;
}

/* Whether the peer `cred` on fd is in group gid, primary or supplementary: 1 or 0. */
static int peer_in_group(int fd, const struct ucred *cred, gid_t gid)
{
        int r;

        if (cred->gid == gid)
                return 1;
        r = peer_has_group(fd, cred->pid, gid);
        if (r < 0 && r != -ESRCH && r != -ENOENT)
                log_debug_errno(r, "control client pid %d: cannot read its groups: %m",
                                (int)cred->pid);
        return r > 0;
}

/*
 * Whether the peer `cred` on fd may use the socket. Returns 2 (the operator's role: root,
 * imgd's user, the group of control_set_group()), 1 (the read-only role: the group of
 * control_set_read_group()), or 0 with the refusal in *ret_message (owned by the caller), or
 * -ENOMEM.
 */
static int control_authorize(control *c, int fd, const struct ucred *cred, char **ret_message)
{
        int r;

        if (cred->uid == 0 || cred->uid == c->uid)
                return 2;
        if (c->has_group && peer_in_group(fd, cred, c->group))
                return 2;
        if (c->has_read_group && peer_in_group(fd, cred, c->read_group))
                return 1;
        if (c->has_group && c->has_read_group)
                r = asprintf(ret_message,
                             "permission denied: uid %u is not root, imgd's user or in group %s "
                             "(operators) or %s (read-only)",
                             (unsigned)cred->uid, c->group_name, c->read_group_name);
        else if (c->has_group || c->has_read_group)
                r = asprintf(ret_message,
                             "permission denied: uid %u is not root, imgd's user or in group %s",
                             (unsigned)cred->uid,
                             c->has_group ? c->group_name : c->read_group_name);
        else
                r = asprintf(ret_message, "permission denied: uid %u is not root or imgd's user",
                             (unsigned)cred->uid);
        return r < 0 ? -ENOMEM : 0;
}

/* Logs a refusal, at most once per CONTROL_REFUSAL_LOG_USEC (a local user must not be able
 * to flood the journal by connecting in a loop). */
static void control_log_refusal(control *c, const struct ucred *cred, const char *message)
{
        uint64_t now = mono_usec();

        if (c->refusal_logged_usec != 0 &&
            now - c->refusal_logged_usec < CONTROL_REFUSAL_LOG_USEC) {
                c->refusals_unlogged++;
                return;
        }
        if (c->refusals_unlogged > 0)
                log_warning("control socket %s: refused pid %d: %s (and %u more connection(s) "
                            "refused before)",
                            c->path, (int)cred->pid, message, c->refusals_unlogged);
        else
                log_warning("control socket %s: refused pid %d: %s", c->path, (int)cred->pid,
                            message);
        c->refusal_logged_usec = now;
        c->refusals_unlogged = 0;
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
static bool control_evict(control *c)
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
                            (unsigned long long)((now - victim->active_usec) / 1000),
                            c->evictions_unlogged);
                c->evict_logged_usec = now;
                c->evictions_unlogged = 0;
        } else
                c->evictions_unlogged++;
        send_error_now(victim->fd, "too many clients: closing this connection, the one quiet "
                                   "longest, to make room for a new one");
        client_free(victim);
        return true;
}

/* Takes over fd (closed on failure too). Returns 0 (also when the peer was refused and the
 * connection closed) or a negative errno. */
static int client_new(control *c, int fd)
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

static int control_on_accept_pause(sd_event_source *s, uint64_t usec, void *userdata)
{
        control *c = userdata;

        (void)s;
        (void)usec;
        c->accept_pause = sd_event_source_disable_unref(c->accept_pause);
        (void)sd_event_source_set_enabled(c->io, SD_EVENT_ON);
        return 0;
}

/* Stops accepting for a moment: without it, a full descriptor table would wake the loop
 * again at once, forever. */
static void control_pause_accept(control *c)
{
        int r;

        if (c->accept_pause)
                return;
        r = sd_event_add_time_relative(c->event, &c->accept_pause, CLOCK_MONOTONIC,
                                       CONTROL_ACCEPT_PAUSE_USEC, 0, control_on_accept_pause, c);
        if (r >= 0)
                (void)sd_event_source_set_enabled(c->io, SD_EVENT_OFF);
}

static int control_on_accept(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
        control *c = userdata;
        int cfd, r;

        (void)s;
        (void)revents;

        for (unsigned i = 0; i < CONTROL_ACCEPT_BURST; i++) {
                cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (cfd < 0) {
                        if (errno == EAGAIN || errno == EWOULDBLOCK)
                                break;
                        if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
                                continue;
                        log_warning_errno(errno, "control socket %s: accept: %m", c->path);
                        /* Out of descriptors: a quiet client gives its own up for the new
                         * one, as when the slots are full; else wait a moment. */
                        if ((errno == EMFILE || errno == ENFILE) && c->n_clients > 0 &&
                            control_evict(c))
                                continue;
                        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
                            errno == ENOMEM)
                                control_pause_accept(c);
                        break;
                }
                r = client_new(c, cfd);
                if (r < 0)
                        log_warning_errno(r, "control socket %s: cannot take a client: %m",
                                          c->path);
        }
        /* Never fail: a failing handler would disable the listener for good. */
        return 0;
}

/*
 * Makes path free for our socket: nothing there, or a stale socket nobody answers on (which
 * is removed). -EADDRINUSE when a live socket answers, -EEXIST when path is something else.
 * Logs failures.
 */
static int control_take_path(const char *path, const struct sockaddr_un *addr, socklen_t alen)
{
        _cleanup_close_ int fd = -1;
        struct stat st;

        if (lstat(path, &st) < 0) {
                if (errno == ENOENT)
                        return 0;
                return log_error_errno(errno, "control socket %s: %m", path);
        }
        if (!S_ISSOCK(st.st_mode))
                return log_error_errno(-EEXIST,
                                       "control socket %s: exists and is not a socket; refusing "
                                       "to replace it",
                                       path);

        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return log_error_errno(errno, "control socket %s: socket: %m", path);
        /* A non-blocking connect to a live listener succeeds, or fails with EAGAIN when its
         * backlog is full; either way somebody is there. */
        if (connect(fd, (const struct sockaddr *)addr, alen) == 0 || errno == EAGAIN ||
            errno == EINPROGRESS)
                return log_error_errno(-EADDRINUSE, "another imgd is already listening on %s",
                                       path);
        if (errno == ENOENT)
                return 0; /* gone meanwhile */
        if (errno != ECONNREFUSED)
                return log_error_errno(
                        errno, "control socket %s: cannot tell whether it is in use: %m", path);

        if (unlink(path) < 0 && errno != ENOENT)
                return log_error_errno(errno, "control socket %s: cannot remove stale socket: %m",
                                       path);
        log_debug("control socket %s: removed stale socket", path);
        return 0;
}

static inline void control_freep(control **c)
{
        control_free(*c);
}

/*
 * Sets c's client and subscriber limits from the descriptors the process may have: a quarter
 * of RLIMIT_NOFILE at most for clients (but CONTROL_MIN_CLIENTS at least, CONTROL_MAX_CLIENTS at
 * most), a quarter of those for subscribers (CONTROL_MAX_SUBSCRIBERS at most). Under `ulimit -n
 * 64` a crowd of silent connections would otherwise take the descriptors that intake, the
 * ledger and the workers need, and then accept() itself would fail for the operator.
 */
static void control_limits(control *c)
{
        struct rlimit rl;
        rlim_t quarter = CONTROL_MAX_CLIENTS;

        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
                quarter = rl.rlim_cur / 4;
        c->max_clients = quarter < CONTROL_MIN_CLIENTS   ? CONTROL_MIN_CLIENTS
                         : quarter > CONTROL_MAX_CLIENTS ? CONTROL_MAX_CLIENTS
                                                         : (unsigned)quarter;
        c->max_subscribers = c->max_clients / 4 < CONTROL_MAX_SUBSCRIBERS ? c->max_clients / 4
                                                                          : CONTROL_MAX_SUBSCRIBERS;
        if (c->max_clients < CONTROL_MAX_CLIENTS)
                log_info("control socket %s: at most %u clients and %u event subscribers "
                         "(RLIMIT_NOFILE is %llu)",
                         c->path, c->max_clients, c->max_subscribers,
                         (unsigned long long)rl.rlim_cur);
}

int control_new(sd_event *e, const char *path, control_handler_fn fn, void *userdata, control **ret)
{
        _cleanup_(control_freep) control *c = NULL;
        struct sockaddr_un addr = { .sun_family = AF_UNIX };
        socklen_t alen;
        struct stat st;
        size_t len;
        mode_t old_umask;
        int r;

        assert(e);
        assert(path);
        assert(fn);
        assert(ret);

        len = strlen(path);
        if (len == 0)
                return log_error_errno(-EINVAL, "control socket: empty path");
        if (len >= sizeof addr.sun_path)
                return log_error_errno(-ENAMETOOLONG,
                                       "control socket %s: path too long (%zu bytes, at most %zu)",
                                       path, len, sizeof addr.sun_path - 1);
        memcpy(addr.sun_path, path, len + 1);
        alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1);

        c = calloc(1, sizeof *c);
        if (!c)
                return log_error_errno(-ENOMEM, "control socket %s: %m", path);
        c->fd = -1;
        c->event = sd_event_ref(e);
        c->fn = fn;
        c->userdata = userdata;
        c->client_timeout_usec = CONTROL_CLIENT_TIMEOUT_S * USEC_PER_SEC;
        c->uid = geteuid();
        c->path = strdup(path);
        if (!c->path)
                return log_error_errno(-ENOMEM, "control socket %s: %m", path);
        control_limits(c);

        c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (c->fd < 0)
                return log_error_errno(errno, "control socket %s: socket: %m", path);

        r = control_take_path(path, &addr, alen);
        if (r < 0)
                return r;

        /* Created owner-only, then opened to the group: never more open than 0660. */
        old_umask = umask(0177);
        r = bind(c->fd, (const struct sockaddr *)&addr, alen);
        umask(old_umask);
        if (r < 0)
                return log_error_errno(errno, "control socket %s: bind: %m", path);
        if (lstat(path, &st) < 0)
                return log_error_errno(errno, "control socket %s: %m", path);
        c->bound = true;
        c->dev = st.st_dev;
        c->ino = st.st_ino;
        c->socket_gid = st.st_gid;

        if (chmod(path, 0660) < 0)
                return log_error_errno(errno, "control socket %s: chmod: %m", path);
        c->mode = 0660;
        if (listen(c->fd, SOMAXCONN) < 0)
                return log_error_errno(errno, "control socket %s: listen: %m", path);

        r = sd_event_add_io(e, &c->io, c->fd, EPOLLIN, control_on_accept, c);
        if (r < 0)
                return log_error_errno(r, "control socket %s: cannot watch it: %m", path);

        *ret = TAKE_PTR(c);
        return 0;
}

control *control_free(control *c)
{
        struct stat st;

        if (!c)
                return NULL;

        while (c->clients)
                client_free(c->clients);
        c->io = sd_event_source_disable_unref(c->io);
        c->accept_pause = sd_event_source_disable_unref(c->accept_pause);
        if (c->fd >= 0)
                close(c->fd);
        /* Unlink only the socket we bound, not one another daemon put there since. */
        if (c->bound && lstat(c->path, &st) == 0 && st.st_dev == c->dev && st.st_ino == c->ino)
                (void)unlink(c->path);
        sd_event_unref(c->event);
        free(c->path);
        free(c->group_name);
        free(c->read_group_name);
        free(c);
        return NULL;
}

void control_set_client_timeout(control *c, uint64_t usec)
{
        assert(c);
        c->client_timeout_usec = usec > 0 ? usec : CONTROL_CLIENT_TIMEOUT_S * USEC_PER_SEC;
}

/* The name of group gid for messages (caller frees): its name, or its number; NULL when out
 * of memory. May block on NSS. */
static char *group_name_new(gid_t gid)
{
        struct group grp, *found = NULL;
        char buf[4096];
        char *name = NULL;

        if (getgrgid_r(gid, &grp, buf, sizeof buf, &found) == 0 && found && found->gr_name)
                name = strdup(found->gr_name);
        else if (asprintf(&name, "%u", (unsigned)gid) < 0)
                name = NULL;
        return name ? name : strdup("(unknown)");
}

/*
 * The socket's mode: 0660 while every group served is the socket file's own, 0666 when
 * another one is, so that its members can connect at all; the check of each connection's
 * credentials (control_authorize()) is what keeps everyone else out. A mode someone else gave
 * the socket since is left alone.
 */
static void control_update_mode(control *c)
{
        mode_t mode = 0660;
        struct stat st;

        if ((c->has_group && c->group != c->socket_gid) ||
            (c->has_read_group && c->read_group != c->socket_gid))
                mode = 0666;
        if (!c->bound || mode == c->mode || lstat(c->path, &st) < 0 || st.st_dev != c->dev ||
            st.st_ino != c->ino || (st.st_mode & 07777) != c->mode)
                return;
        if (chmod(c->path, mode) < 0)
                log_warning_errno(errno, "control socket %s: chmod %04o: %m", c->path,
                                  (unsigned)mode);
        else
                c->mode = mode;
}

void control_set_group(control *c, gid_t gid)
{
        assert(c);
        free(c->group_name);
        c->group_name = NULL;
        c->has_group = gid != (gid_t)-1;
        if (c->has_group) {
                c->group_name = group_name_new(gid);
                c->group = gid;
        }
        control_update_mode(c);
}

void control_set_read_group(control *c, gid_t gid, control_read_only_fn read_only)
{
        assert(c);
        free(c->read_group_name);
        c->read_group_name = NULL;
        c->read_only = read_only;
        c->has_read_group = gid != (gid_t)-1;
        if (c->has_read_group) {
                c->read_group_name = group_name_new(gid);
                c->read_group = gid;
        }
        control_update_mode(c);
}

int control_broadcast(control *c, const char *line)
{
        _cleanup_free_ char *terminated = NULL;
        struct client *cl, *next;
        size_t n;
        int sent = 0, r;

        if (!c)
                return 0;
        assert(line);
        n = strlen(line);
        if (n == 0 || line[n - 1] != '\n') {
                if (asprintf(&terminated, "%s\n", line) < 0)
                        return -ENOMEM;
                line = terminated;
                n++;
        }

        for (cl = c->clients; cl; cl = next) {
                next = cl->next;
                if (!cl->subscriber || cl->draining || cl->broken)
                        continue;
                r = client_queue(cl, line, n);
                if (r == -ENOBUFS) {
                        log_warning("control client pid %d: events subscriber dropped: more than "
                                    "%u KiB of events unread",
                                    (int)cl->cred.pid, CONTROL_MAX_SUBSCRIBER_OUTPUT / 1024);
                } else if (r < 0) {
                        return r; /* -ENOMEM: the other subscribers stay, without this line */
                } else {
                        r = client_flush(cl);
                        if (r >= 0)
                                r = client_arm(cl);
                        if (r >= 0) {
                                sent++;
                                continue;
                        }
                        log_debug_errno(r, "control client pid %d: disconnecting: %m",
                                        (int)cl->cred.pid);
                }
                if (cl == c->serving)
                        cl->broken = true; /* client_handle_line() returns, then it is freed */
                else
                        client_free(cl);
        }
        return sent;
}

unsigned control_subscribers(const control *c)
{
        return c ? c->n_subscribers : 0;
}
