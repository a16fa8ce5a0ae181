/* SPDX-License-Identifier: MIT */
/*
 * test-access.c - what imgd may write and who may drive it, with the real daemon (issue 14).
 *
 * Read-only mounts: a folder imgd must write (an output, a watch it moves dead sources out
 * of, a quarantine, the state directory) on a read-only bind mount, made in a private mount
 * namespace as systemd's ProtectSystem=strict makes every path outside ReadWritePaths=, is
 * refused by --check-config, at start (exit status 78) and by a reload, with the path, EROFS
 * and the drop-in that fixes it.
 */
#include <errno.h>
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

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_read_only_mount),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
