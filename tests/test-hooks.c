/* SPDX-License-Identifier: MIT */
/*
 * test-hooks.c - per-watch hooks and quarantine against the real daemon: on_done and
 * on_dead programs get the job in their environment; a failing or hanging hook is logged and
 * killed and never affects the job; dead sources move to the quarantine folder.
 */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "testutil.h"

#define PIPE_1                                                                                 \
        "( { name = \"s\"; width = 64; height = 64; fit = \"cover\"; format = \"webp\"; } )"

static char *write_hook(const char *dir, const char *name, const char *body)
{
        char *path = tu_path("%s/%s", dir, name);
        char *text = tu_path("#!/bin/sh\n%s\n", body);

        tu_write_file(path, text, (size_t)-1);
        assert_int_equal(chmod(path, 0755), 0);
        free(text);
        return path;
}

/* Replaces the watch line of the daemon's configuration with one that has extra settings. */
static void set_watch_extra(struct tu_daemon *d, const char *extra)
{
        char *conf = tu_path("state_dir = \"%s\";\nsocket = \"%s\";\nworkers = 1;\n"
                             "watch = ( { path = \"%s\"; output = \"%s\"; pipeline = \"p\"; "
                             "recursive = true; %s } );\n"
                             "pipelines = { p = %s; };\n"
                             "retry = { max_attempts = 1; };\n",
                             d->state, d->socket, d->uploads, d->media, extra, PIPE_1);
        tu_write_file(d->config, conf, (size_t)-1);
        free(conf);
}

static bool wait_for_file(const char *path, int timeout_ms)
{
        struct stat st;

        for (int waited = 0; waited <= timeout_ms; waited += 50) {
                if (stat(path, &st) == 0 && st.st_size > 0)
                        return true;
                usleep(50 * 1000);
        }
        return false;
}

static void test_done_and_dead_hooks(void **state)
{
        struct tu_daemon d;
        char *done_hook, *dead_hook, *extra, *done_out, *dead_out, *p, *text, *quarantine;

        tu_daemon_setup(&d, PIPE_1, 1, NULL);
        done_out = tu_path("%s/done.env", d.root);
        dead_out = tu_path("%s/dead.env", d.root);
        quarantine = tu_path("%s/quarantine", d.root);
        p = tu_path("env | grep ^IMGD_ | sort > %s.tmp; mv %s.tmp %s", done_out, done_out,
                    done_out);
        done_hook = write_hook(d.root, "on-done.sh", p);
        free(p);
        p = tu_path("env | grep ^IMGD_ | sort > %s.tmp; mv %s.tmp %s", dead_out, dead_out,
                    dead_out);
        dead_hook = write_hook(d.root, "on-dead.sh", p);
        free(p);
        extra = tu_path("on_done = \"%s\"; on_dead = \"%s\"; quarantine = \"%s\";", done_hook,
                        dead_hook, quarantine);
        set_watch_extra(&d, extra);
        tu_daemon_start(&d);

        p = tu_path("%s/sub/good.jpg", d.uploads);
        tu_make_image(p, 200, 100, "jpeg", false);
        free(p);
        assert_true(wait_for_file(done_out, 30000));
        text = tu_read_file(done_out, NULL);
        assert_non_null(strstr(text, "IMGD_EVENT=done"));
        assert_non_null(strstr(text, "IMGD_JOB_ID=1"));
        p = tu_path("IMGD_SOURCE=%s/sub/good.jpg", d.uploads);
        assert_non_null(strstr(text, p));
        free(p);
        p = tu_path("IMGD_OUTPUTS=%s/sub/good_s.webp", d.media);
        assert_non_null(strstr(text, p));
        free(p);
        free(text);

        /* A dead job: its hook runs with the error, and the source goes to quarantine. */
        p = tu_path("%s/sub/bad.jpg", d.uploads);
        tu_write_file(p, "not an image at all\n", (size_t)-1);
        free(p);
        assert_true(wait_for_file(dead_out, 30000));
        text = tu_read_file(dead_out, NULL);
        assert_non_null(strstr(text, "IMGD_EVENT=dead"));
        assert_non_null(strstr(text, "IMGD_ERROR=not a supported image"));
        /* The hook learns where the source went (it is no longer at IMGD_SOURCE). */
        p = tu_path("IMGD_QUARANTINED=%s/sub/bad.jpg\n", quarantine);
        assert_non_null(strstr(text, p));
        free(p);
        free(text);
        tu_daemon_wait_idle(&d, 30);
        p = tu_path("%s/sub/bad.jpg", quarantine);
        assert_true(wait_for_file(p, 5000));
        free(p);
        p = tu_path("%s/sub/bad.jpg", d.uploads);
        assert_int_equal(access(p, F_OK), -1);
        free(p);

        /* Retried, the source comes back from quarantine and is tried again (failing for
         * what it is, not for being gone), then goes back to quarantine. */
        assert_int_equal(unlink(dead_out), 0);
        assert_int_equal(tu_imgctl(&d, NULL, "retry", "2", NULL), 0);
        assert_true(wait_for_file(dead_out, 30000));
        tu_daemon_wait_idle(&d, 30);
        assert_true(tu_log_contains(&d, "back from quarantine"));
        text = NULL;
        assert_int_equal(tu_imgctl(&d, &text, "show", "2", NULL), 0);
        if (!text || strstr(text, "No such file") || !strstr(text, "not a supported image"))
                fail_msg("the retried job did not see its source again:\n%s", text ? text : "");
        free(text);
        p = tu_path("%s/sub/bad.jpg", quarantine);
        assert_true(wait_for_file(p, 5000));
        free(p);

        free(done_hook);
        free(dead_hook);
        free(extra);
        free(done_out);
        free(dead_out);
        free(quarantine);
        tu_daemon_cleanup(&d);
}

/* A hook that hangs is killed at its timeout, one that fails is logged; jobs are unaffected
 * and the daemon keeps answering meanwhile. */
static void test_bad_hooks(void **state)
{
        struct tu_daemon d;
        char *hang, *extra, *p, *log, *out = NULL;

        tu_daemon_setup(&d, PIPE_1, 1, NULL);
        hang = write_hook(d.root, "hang.sh", "exec sleep 100");
        p = tu_path("on_done = \"%s\"; on_dead = \"%s/fail.sh\"; hook_timeout = 1;", hang, d.root);
        extra = p;
        free(write_hook(d.root, "fail.sh", "exit 3"));
        set_watch_extra(&d, extra);
        tu_daemon_start(&d);

        for (int i = 0; i < 3; i++) {
                p = tu_path("%s/img%d.png", d.uploads, i);
                tu_make_image(p, 120, 90, "png", false);
                free(p);
        }
        p = tu_path("%s/broken.jpg", d.uploads);
        tu_write_file(p, "garbage", (size_t)-1);
        free(p);
        tu_daemon_wait_idle(&d, 30);
        assert_int_equal(tu_imgctl(&d, &out, "status", NULL), 0);
        assert_non_null(strstr(out, "done 3"));
        assert_non_null(strstr(out, "dead 1"));
        free(out);
        usleep(2500 * 1000); /* past the hooks' timeout */
        log = tu_read_file(d.log, NULL);
        if (!strstr(log, "timed out and was killed") || !strstr(log, "failed with status 3"))
                fail_msg("hook failures were not logged:\n%s", log);
        free(log);
        free(hang);
        free(extra);
        tu_daemon_cleanup(&d);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_done_and_dead_hooks),
                cmocka_unit_test(test_bad_hooks),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
