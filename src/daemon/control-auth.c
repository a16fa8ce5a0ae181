/* SPDX-License-Identifier: MIT */
/*
 * control-auth.c - who may use the control socket, and in which role (control-private.h).
 *
 * Authorization happens once per connection, in control_client_new(), by control_authorize():
 * the kernel's record of the peer (SO_PEERCRED: uid, gid, pid; SO_PEERGROUPS: its
 * supplementary groups, both as of connect()) must be root, the daemon's effective uid, or a
 * member of the group set with control_set_group(). Where the kernel lacks SO_PEERGROUPS
 * (before Linux 4.13), the "Groups:" line of /proc/<pid>/status is read instead; that is racy
 * (the peer may exit and its pid be reused), which is why it is only the fallback. A refused
 * peer gets one error line and is closed; refusals are logged at most once per
 * CONTROL_REFUSAL_LOG_USEC (control_log_refusal()). A member of the group of
 * control_set_read_group() (and of no operator's group) is served in the read-only role:
 * control_client_check_role() answers each command the read-only predicate does not accept
 * with an error, and the connection stays.
 *
 * The socket file's mode follows the groups served (control_update_mode()): 0660 while they
 * are its own group, 0666 when another one is, since the check of each connection's
 * credentials is what keeps everyone else out.
 */
#include <assert.h>
#include <errno.h>
#include <grp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "daemon/control-private.h"
#include "shared/log.h"
#include "shared/macro.h"
#include "shared/time-util.h"

/* Supplementary groups of a peer we look at; Linux allows 65536 (NGROUPS_MAX). */
#define CONTROL_MAX_PEER_GROUPS 65536u

#ifndef SO_PEERGROUPS
#define SO_PEERGROUPS 59 /* Linux 4.13 */
#endif

/*
 * Whether a client in the read-only role may send cmd. Returns 0, or -EACCES with the refusal
 * in *ret_error (owned by the caller).
 */
int control_client_check_role(struct client *cl, const char *cmd, char **ret_error)
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
int control_authorize(control *c, int fd, const struct ucred *cred, char **ret_message)
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
void control_log_refusal(control *c, const struct ucred *cred, const char *message)
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
