/* SPDX-License-Identifier: MIT */
/*
 * test-access.c - what imgd may write and who may drive it, with the real daemon (issue 14).
 *
 * Read-only mounts: a folder imgd must write (an output, a watch it moves dead sources out
 * of, a quarantine, the state directory) on a read-only bind mount, made in a private mount
 * namespace as systemd's ProtectSystem=strict makes every path outside ReadWritePaths=, is
 * refused by --check-config, at start (exit status 78) and by a reload, with the path, EROFS
 * and the drop-in that fixes it.
 *
 * The control socket's roles: real users (imgctl under setpriv with a real uid and groups
 * made for the test) in control_group are operators, in read_group may only ask (status,
 * jobs, metrics) and are told, with imgctl's exit status 4, that pause needs the operator
 * role; anyone else is refused. control_group defaults to "imgd"; a reload applies a changed
 * group; a group named in the file that does not exist is a configuration error.
 */
#include <errno.h>
#include <grp.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

#define PIPE_1 "( { name = \"s\"; width = 16; height = 16; fit = \"cover\"; format = \"webp\"; } )"
#define IMGD IMGD_BUILD_DIR "/imgd"

/* Writes d's configuration with the list body `watches` and state_dir `state`. */
static void write_config(struct tu_daemon *d, const char *state, const char *watches)
{
        char *conf = tu_path("state_dir = \"%s\";\nsocket = \"%s\";\nworkers = 1;\n"
                             "watch = ( %s );\npipelines = { p = %s; };\n",
                             state, d->socket, watches, PIPE_1);

        tu_write_file(d->config, conf, (size_t)-1);
        free(conf);
}

/* Fails unless text has every one of the NULL-terminated words. */
static void assert_has_all(const char *what, const char *text, ...)
{
        va_list ap;
        const char *w;

        va_start(ap, text);
        while ((w = va_arg(ap, const char *)))
                if (!text || !strstr(text, w))
                        fail_msg("%s: \"%s\" lacks \"%s\"", what, text ? text : "(null)", w);
        va_end(ap);
}

/*
 * Runs imgd --check-config, then imgd itself, on d's configuration, expecting both to refuse it
 * (1 and 78) with a message naming `what` 'path', EROFS and ReadWritePaths=path.
 */
static void assert_refused_read_only(struct tu_daemon *d, const char *what, const char *path)
{
        _cleanup_free_ char *named =
                tu_path("%s '%s' is on a read-only file system (EROFS)", what, path);
        _cleanup_free_ char *dropin = tu_path("`ReadWritePaths=%s`", path);
        _cleanup_free_ char *out = NULL, *out2 = NULL;

        assert_int_equal(tu_run(&out, IMGD, "--check-config", "-c", d->config, NULL), 1);
        assert_has_all("--check-config", out, named, dropin, "systemctl edit imgd", NULL);
        assert_int_equal(tu_run(&out2, IMGD, "-c", d->config, NULL), 78);
        assert_has_all("start", out2, named, dropin, NULL);
}

static void test_read_only_mount(void **state)
{
        struct tu_daemon d;
        _cleanup_free_ char *ro = NULL, *out_dir = NULL, *up = NULL, *quarantine = NULL;
        _cleanup_free_ char *state_dir = NULL, *w = NULL, *out = NULL;
        char *answer = NULL;

        (void)state;
        tu_daemon_setup(&d, PIPE_1, 1, NULL);
        /* This program's own mount namespace, private, for the daemons it starts too. */
        if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) {
                tu_daemon_cleanup(&d);
                skip();
        }
        ro = tu_path("%s/ro", d.root);
        out_dir = tu_path("%s/out", ro);
        up = tu_path("%s/up", ro);
        quarantine = tu_path("%s/quarantine", ro);
        state_dir = tu_path("%s/state", ro);
        assert_int_equal(mkdir(ro, 0755), 0);
        assert_int_equal(mkdir(out_dir, 0755), 0);
        assert_int_equal(mkdir(up, 0755), 0);
        assert_int_equal(mount(ro, ro, NULL, MS_BIND, NULL), 0);
        assert_int_equal(mount(NULL, ro, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY, NULL), 0);

        /* The output on it (before: "output ...: Read-only file system", nothing more). */
        w = tu_path("{ path = \"%s\"; output = \"%s\"; pipeline = \"p\"; }", d.uploads, out_dir);
        write_config(&d, d.state, w);
        assert_refused_read_only(&d, "output", out_dir);

        /* A watch with a quarantine: its dead sources are moved out (before: accepted). */
        free(w);
        w = tu_path("{ path = \"%s\"; output = \"%s\"; pipeline = \"p\"; quarantine = \"%s\"; }",
                    up, d.media, quarantine);
        write_config(&d, d.state, w);
        assert_refused_read_only(&d, "watch", up);

        /* The state directory. */
        free(w);
        w = tu_path("{ path = \"%s\"; output = \"%s\"; pipeline = \"p\"; }", d.uploads, d.media);
        write_config(&d, state_dir, w);
        assert_refused_read_only(&d, "state_dir", state_dir);

        /* A reload to the watch on the read-only mount is rejected with the same advice, and
         * the running configuration stays. */
        write_config(&d, d.state, w);
        tu_daemon_start(&d);
        free(w);
        w = tu_path("{ path = \"%s\"; output = \"%s\"; pipeline = \"p\"; quarantine = \"%s\"; }",
                    up, d.media, quarantine);
        write_config(&d, d.state, w);
        out = tu_path("watch '%s' is on a read-only file system (EROFS)", up);
        assert_int_equal(tu_imgctl(&d, &answer, "reload", NULL), 1);
        assert_has_all("reload", answer, out, "ReadWritePaths=", NULL);
        free(answer);
        assert_int_equal(tu_imgctl(&d, NULL, "jobs", NULL), 0);

        assert_true(WIFEXITED(tu_daemon_stop(&d, SIGTERM)));
        assert_int_equal(umount2(ro, MNT_DETACH), 0);
        tu_daemon_cleanup(&d);
}

/* ---- the control socket's roles ----------------------------------------------------- */

#define NOBODY "65534"

/* Groups made by the test, removed by groups_teardown() even when a check failed. */
static char *made_groups[4];

/* A group made for the test (groupadd), or NULL when that is not possible (not root). */
static const char *group_new(const char *name)
{
        size_t i = 0;

        while (made_groups[i])
                i++;
        assert_true(i < ELEMENTSOF(made_groups));
        if (geteuid() != 0 || tu_run(NULL, "/usr/sbin/groupadd", name, NULL) != 0)
                return NULL;
        made_groups[i] = strdup(name);
        return made_groups[i];
}

static int groups_teardown(void **state)
{
        (void)state;
        for (size_t i = 0; i < ELEMENTSOF(made_groups) && made_groups[i]; i++) {
                if (tu_run(NULL, "/usr/sbin/groupdel", made_groups[i], NULL) != 0)
                        fprintf(stderr, "groupdel %s failed\n", made_groups[i]);
                free(made_groups[i]);
                made_groups[i] = NULL;
        }
        return 0;
}

/* The number of group `name`, as text for setpriv --groups (a static buffer). */
static const char *gid_of(const char *name)
{
        static char buf[16];
        struct group *g = getgrnam(name);

        assert_non_null(g);
        snprintf(buf, sizeof buf, "%u", (unsigned)g->gr_gid);
        return buf;
}

/*
 * Runs imgctl -s SOCKET args... as uid 65534 with primary group 65534 and the supplementary
 * groups `groups` (a comma-separated list of numbers), under setpriv; returns its exit status
 * and its output in *ret_out (caller frees).
 */
static int imgctl_as(struct tu_daemon *d, const char *groups, char **ret_out, const char *a1,
                     const char *a2)
{
        _cleanup_free_ char *opt = tu_path("--groups=%s", groups);

        return tu_run(ret_out, "/usr/bin/setpriv", "--reuid=" NOBODY, "--regid=" NOBODY, opt,
                      IMGD_BUILD_DIR "/imgctl", "-s", d->socket, a1, a2, NULL);
}

static void write_group_config(struct tu_daemon *d, const char *groups)
{
        char *conf = tu_path("state_dir = \"%s\";\nsocket = \"%s\";\nworkers = 1;\n"
                             "watch = ( { path = \"%s\"; output = \"%s\"; pipeline = \"p\"; } );\n"
                             "pipelines = { p = %s; };\n%s\n",
                             d->state, d->socket, d->uploads, d->media, PIPE_1, groups);

        tu_write_file(d->config, conf, (size_t)-1);
        free(conf);
}

static void test_roles(void **state)
{
        _cleanup_free_ char *ops_name = NULL, *ro_name = NULL, *conf = NULL, *denied = NULL;
        _cleanup_free_ char *ops_gid = NULL, *ro_gid = NULL, *stranger = NULL;
        const char *ops, *ro;
        char *out = NULL;
        struct tu_daemon d;

        (void)state;
        ops_name = tu_path("imgdtest-ops-%d", (int)getpid());
        ro_name = tu_path("imgdtest-ro-%d", (int)getpid());
        ops = group_new(ops_name);
        ro = group_new(ro_name);
        if (!ops || !ro)
                skip();
        ops_gid = strdup(gid_of(ops));
        ro_gid = strdup(gid_of(ro));
        stranger = strdup("65533");

        tu_daemon_setup(&d, PIPE_1, 1, NULL);
        assert_int_equal(chmod(d.root, 0711), 0); /* for uid 65534 to reach the socket */
        conf = tu_path("control_group = \"%s\";\nread_group = \"%s\";", ops, ro);
        write_group_config(&d, conf);
        tu_daemon_start(&d);

        /* The read-only role asks... */
        assert_int_equal(imgctl_as(&d, ro_gid, &out, "jobs", NULL), 0);
        free(out);
        assert_int_equal(imgctl_as(&d, ro_gid, &out, "metrics", NULL), 0);
        free(out);
        assert_true(imgctl_as(&d, ro_gid, &out, "status", NULL) <= 1);
        free(out);
        assert_int_equal(imgctl_as(&d, ro_gid, &out, "events", NULL), 0); /* subscribes */
        free(out);
        /* ... but may not steer: a distinct exit status and a message naming both roles. */
        denied = tu_path("permission denied: 'pause' needs the operator role (group '%s'); you "
                         "are in the read-only role (group '%s')",
                         ops, ro);
        assert_int_equal(imgctl_as(&d, ro_gid, &out, "pause", NULL), 4);
        assert_has_all("read-only pause", out, denied, NULL);
        free(out);
        assert_int_equal(imgctl_as(&d, ro_gid, &out, "reload", NULL), 4);
        free(out);
        assert_int_equal(tu_imgctl(&d, &out, "status", "--json", NULL) <= 1, 1);
        assert_has_all("status after a refused pause", out, "\"paused\": false", NULL);
        free(out);

        /* The operators' group steers (a member by a supplementary group). */
        assert_int_equal(imgctl_as(&d, ops_gid, &out, "pause", NULL), 0);
        free(out);
        assert_int_equal(imgctl_as(&d, ops_gid, &out, "resume", NULL), 0);
        free(out);

        /* Anyone else is refused at connect. */
        assert_int_equal(imgctl_as(&d, stranger, &out, "jobs", NULL), 3);
        assert_has_all("stranger", out, "permission denied: uid 65534 is not root", NULL);
        free(out);

        /* A reload applies a changed group: the read-only group becomes the operators'. */
        free(conf);
        conf = tu_path("control_group = \"%s\";", ro);
        write_group_config(&d, conf);
        assert_int_equal(tu_imgctl(&d, &out, "reload", NULL), 0);
        free(out);
        assert_int_equal(imgctl_as(&d, ro_gid, &out, "pause", NULL), 0);
        free(out);
        assert_int_equal(imgctl_as(&d, ops_gid, &out, "jobs", NULL), 3);
        free(out);

        /* A group named in the file must exist: the reload is rejected, naming it. */
        free(conf);
        conf = tu_path("read_group = \"%s-gone\";", ro);
        write_group_config(&d, conf);
        assert_int_equal(tu_imgctl(&d, &out, "reload", NULL), 1);
        free(conf);
        conf = tu_path("read_group '%s-gone': no such group", ro);
        assert_has_all("reload with a missing group", out, conf, NULL);
        free(out);
        assert_int_equal(tu_run(&out, IMGD, "--check-config", "-c", d.config, NULL), 1);
        assert_has_all("--check-config with a missing group", out, conf, NULL);
        free(out);

        assert_true(WIFEXITED(tu_daemon_stop(&d, SIGTERM)));
        tu_daemon_cleanup(&d);
}

/*
 * Without control_group, the group "imgd" of the unit and the README is the operators' (made
 * for the test when it does not exist).
 */
static void test_default_group(void **state)
{
        char *out = NULL;
        _cleanup_free_ char *gid = NULL;
        struct tu_daemon d;

        (void)state;
        if (!getgrnam("imgd") && !group_new("imgd"))
                skip();
        gid = strdup(gid_of("imgd"));
        tu_daemon_setup(&d, PIPE_1, 1, NULL);
        assert_int_equal(chmod(d.root, 0711), 0);
        tu_daemon_start(&d);
        assert_int_equal(imgctl_as(&d, gid, &out, "pause", NULL), 0);
        free(out);
        assert_int_equal(imgctl_as(&d, "65533", &out, "jobs", NULL), 3);
        free(out);
        assert_true(WIFEXITED(tu_daemon_stop(&d, SIGTERM)));
        tu_daemon_cleanup(&d);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_read_only_mount),
                cmocka_unit_test_teardown(test_roles, groups_teardown),
                cmocka_unit_test_teardown(test_default_group, groups_teardown),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
