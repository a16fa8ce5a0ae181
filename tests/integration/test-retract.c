/* SPDX-License-Identifier: MIT */
/*
 * test-retract.c - the output tree follows its sources (issue 17), with the real daemon and a
 * watch with on_delete = "retract": a deleted source has its outputs and manifest removed; one
 * moved out of the tree too; one renamed within the tree has its outputs moved to the new
 * names (the same files: no render); a directory renamed moves the outputs of every source
 * below it; a source deleted while imgd was stopped is retracted by the next start's pass; an
 * output whose content changed since it was published is left in place; the outputs of a
 * variant removed from the configuration stay until `imgctl reconcile retract-removed`; the
 * default (on_delete = "keep") removes nothing; the on_retract hook is told the files; kill -9
 * inside a retraction or a move loses nothing. imgctl verify agrees with the result every time.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

#define V_S "{ name = \"s\"; width = 16; height = 16; fit = \"cover\"; format = \"webp\"; }"
#define V_M "{ name = \"m\"; width = 20; height = 20; format = \"jpeg\"; }"

/* The configuration of tu_daemon_setup() with these variants and watch_extra in the watch. */
static void write_conf(struct tu_daemon *d, const char *variants, const char *watch_extra)
{
        char *conf = tu_path("state_dir = \"%s\";\nsocket = \"%s\";\nworkers = 2;\n"
                             "watch = ( { path = \"%s\"; output = \"%s\"; pipeline = \"p\"; "
                             "recursive = true; %s } );\n"
                             "pipelines = { p = ( %s ); };\n",
                             d->state, d->socket, d->uploads, d->media, watch_extra, variants);

        tu_write_file(d->config, conf, (size_t)-1);
        free(conf);
}

/* A daemon with variants s and m, on_delete as given ("" for the default), and n sources
 * a0.png ... done. */
static void start_with(struct tu_daemon *d, const char *watch_extra, unsigned n)
{
        tu_daemon_setup(d, "( " V_S ", " V_M " )", 2, NULL);
        write_conf(d, V_S ", " V_M, watch_extra);
        tu_daemon_start(d);
        for (unsigned i = 0; i < n; i++) {
                char *p = tu_path("%s/a%u.png", d->uploads, i);
                tu_make_image(p, 24 + i, 16, "png", false);
                free(p);
        }
        tu_daemon_wait_idle(d, 60);
}

static bool media_has(struct tu_daemon *d, const char *name)
{
        char *p = tu_path("%s/%s", d->media, name);
        bool there = access(p, F_OK) == 0;

        free(p);
        return there;
}

static ino_t media_ino(struct tu_daemon *d, const char *name)
{
        char *p = tu_path("%s/%s", d->media, name);
        struct stat st;

        if (stat(p, &st) < 0)
                fail_msg("%s: missing", p);
        free(p);
        return st.st_ino;
}

static void assert_verified(struct tu_daemon *d)
{
        char *out = NULL;
        int r = tu_imgctl(d, &out, "verify", NULL);

        if (r != 0)
                fail_msg("imgctl verify: %d: %s", r, out ? out : "");
        free(out);
}

/* Waits until the ledger has `n` done jobs of kind `kind`. */
static void wait_kind_done(struct tu_daemon *d, const char *kind, int64_t n)
{
        char *sql = tu_path("SELECT count(*) FROM jobs WHERE kind = '%s' AND state = 'done'", kind);

        for (int waited = 0; tu_ledger_int(d, sql) < n; waited += 20) {
                if (waited > 20000)
                        fail_msg("%s jobs done: %" PRId64 ", expected %" PRId64, kind,
                                 tu_ledger_int(d, sql), n);
                usleep(20 * 1000);
        }
        free(sql);
        tu_daemon_wait_idle(d, 60);
}

static int64_t renders(struct tu_daemon *d)
{
        return tu_ledger_int(d, "SELECT count(*) FROM jobs WHERE kind IS NULL");
}

/* A deleted source: its outputs and manifest go; the others stay; the same file uploaded
 * again is rendered again. */
static void test_deleted(void **state)
{
        struct tu_daemon d;
        char *src;

        (void)state;
        start_with(&d, "on_delete = \"retract\";", 3);
        assert_true(media_has(&d, "a0_s.webp"));
        src = tu_path("%s/a0.png", d.uploads);
        assert_int_equal(unlink(src), 0);
        wait_kind_done(&d, "retract", 1);
        assert_false(media_has(&d, "a0_s.webp"));
        assert_false(media_has(&d, "a0_m.jpg"));
        assert_false(media_has(&d, "a0.manifest.json"));
        assert_true(media_has(&d, "a1_s.webp"));
        assert_true(media_has(&d, "a1.manifest.json"));
        assert_verified(&d);

        /* The next pass finds nothing to do for it: no render of a gone source. */
        assert_int_equal(tu_imgctl(&d, NULL, "reload", NULL), 0);
        tu_daemon_wait_idle(&d, 60);
        assert_int_equal(renders(&d), 3);

        /* Back again (the same content): rendered again, as a new upload. */
        tu_make_image(src, 24, 16, "png", false);
        tu_daemon_wait_idle(&d, 60);
        for (int waited = 0; !media_has(&d, "a0.manifest.json"); waited += 20) {
                if (waited > 20000)
                        fail_msg("a0 was not rendered again");
                usleep(20 * 1000);
        }
        assert_true(media_has(&d, "a0_s.webp"));
        assert_int_equal(renders(&d), 4);
        assert_verified(&d);
        free(src);
        tu_daemon_cleanup(&d);
}

/* Moved out of the tree: retracted; renamed within it: its outputs move, nothing renders. */
static void test_moved_out_and_renamed(void **state)
{
        struct tu_daemon d;
        char *from, *to, *out;
        ino_t s_ino, m_ino;
        json_t *manifest;
        char *mpath;

        (void)state;
        start_with(&d, "on_delete = \"retract\";", 3);
        from = tu_path("%s/a1.png", d.uploads);
        to = tu_path("%s/a1.png", d.root);
        assert_int_equal(rename(from, to), 0);
        wait_kind_done(&d, "retract", 1);
        assert_false(media_has(&d, "a1_s.webp"));
        assert_false(media_has(&d, "a1.manifest.json"));
        /* Moved back (the same file, the same stat): rendered again, not taken as known. */
        assert_int_equal(rename(to, from), 0);
        for (int waited = 0; !media_has(&d, "a1.manifest.json"); waited += 20) {
                if (waited > 20000)
                        fail_msg("a1 moved back was not rendered again");
                usleep(20 * 1000);
        }
        tu_daemon_wait_idle(&d, 60);
        assert_true(media_has(&d, "a1_s.webp"));
        assert_int_equal(renders(&d), 4);
        free(from);
        free(to);

        s_ino = media_ino(&d, "a2_s.webp");
        m_ino = media_ino(&d, "a2_m.jpg");
        from = tu_path("%s/a2.png", d.uploads);
        to = tu_path("%s/b2.png", d.uploads);
        assert_int_equal(rename(from, to), 0);
        wait_kind_done(&d, "move", 1);
        assert_false(media_has(&d, "a2_s.webp"));
        assert_false(media_has(&d, "a2_m.jpg"));
        assert_false(media_has(&d, "a2.manifest.json"));
        /* The same files under their new names: moved, not rendered. */
        assert_int_equal(media_ino(&d, "b2_s.webp"), s_ino);
        assert_int_equal(media_ino(&d, "b2_m.jpg"), m_ino);
        assert_int_equal(renders(&d), 4);
        mpath = tu_path("%s/b2.manifest.json", d.media);
        manifest = json_load_file(mpath, 0, NULL);
        assert_non_null(manifest);
        assert_string_equal(json_string_value(json_object_get(manifest, "source")), to);
        assert_int_equal(json_array_size(json_object_get(manifest, "outputs")), 2);
        json_decref(manifest);
        assert_verified(&d);
        /* imgctl jobs lists it, imgctl show tells the move and what it moved from. */
        assert_int_equal(tu_imgctl(&d, &out, "jobs", "--state", "done", NULL), 0);
        assert_non_null(strstr(out, "b2.png"));
        free(out);
        {
                char *id = tu_path("%" PRId64, tu_ledger_int(&d, "SELECT id FROM jobs WHERE "
                                                                 "kind = 'move'"));
                json_t *show = tu_imgctl_json(&d, "show", id, NULL);
                const json_t *job = json_object_get(show, "job");

                assert_string_equal(json_string_value(json_object_get(job, "kind")), "move");
                assert_int_equal(json_integer_value(json_object_get(job, "origin")),
                                 tu_ledger_int(&d, "SELECT id FROM jobs WHERE source_path LIKE "
                                                   "'%/a2.png' AND kind IS NULL"));
                assert_int_equal(json_array_size(json_object_get(job, "outputs")), 2);
                json_decref(show);
                assert_int_equal(tu_imgctl(&d, &out, "show", id, NULL), 0);
                assert_non_null(strstr(out, "move (from job"));
                free(out);
                free(id);
        }
        free(mpath);
        free(from);
        free(to);
        tu_daemon_cleanup(&d);
}

/* A directory renamed: the outputs of every source below move with it. */
static void test_dir_renamed(void **state)
{
        struct tu_daemon d;
        char *dir, *dir2, *p;
        ino_t ino;

        (void)state;
        start_with(&d, "on_delete = \"retract\";", 0);
        dir = tu_path("%s/sub", d.uploads);
        assert_int_equal(mkdir(dir, 0755), 0);
        usleep(200 * 1000); /* its watch is set */
        for (unsigned i = 0; i < 3; i++) {
                p = tu_path("%s/x%u.png", dir, i);
                tu_make_image(p, 30 + i, 20, "png", false);
                free(p);
        }
        tu_daemon_wait_idle(&d, 60);
        ino = media_ino(&d, "sub/x1_s.webp");
        dir2 = tu_path("%s/sub2", d.uploads);
        assert_int_equal(rename(dir, dir2), 0);
        wait_kind_done(&d, "move", 3);
        assert_int_equal(media_ino(&d, "sub2/x1_s.webp"), ino);
        assert_false(media_has(&d, "sub/x1_s.webp"));
        assert_false(media_has(&d, "sub/x0.manifest.json"));
        assert_true(media_has(&d, "sub2/x2.manifest.json"));
        assert_int_equal(renders(&d), 3);
        assert_verified(&d);
        free(dir);
        free(dir2);
        tu_daemon_cleanup(&d);
}

/* The default keeps everything; a source deleted while imgd was stopped from a retracting
 * watch is retracted by the next start. */
static void test_keep_and_deleted_while_stopped(void **state)
{
        struct tu_daemon d;
        char *src;

        (void)state;
        start_with(&d, "", 2);
        src = tu_path("%s/a0.png", d.uploads);
        assert_int_equal(unlink(src), 0);
        usleep(500 * 1000);
        tu_daemon_wait_idle(&d, 60);
        assert_true(media_has(&d, "a0_s.webp"));
        assert_true(media_has(&d, "a0.manifest.json"));
        assert_int_equal(tu_ledger_int(&d, "SELECT count(*) FROM jobs WHERE kind IS NOT NULL"), 0);
        free(src);

        assert_int_equal(WEXITSTATUS(tu_daemon_stop(&d, SIGTERM)), 0);
        write_conf(&d, V_S ", " V_M, "on_delete = \"retract\";");
        src = tu_path("%s/a1.png", d.uploads);
        assert_int_equal(unlink(src), 0);
        tu_daemon_start(&d);
        wait_kind_done(&d, "retract", 2);
        assert_false(media_has(&d, "a0_s.webp"));
        assert_false(media_has(&d, "a1_m.jpg"));
        assert_false(media_has(&d, "a1.manifest.json"));
        assert_verified(&d);
        free(src);
        tu_daemon_cleanup(&d);
}

/* An output altered since imgd published it is not imgd's to remove. */
static void test_altered_output_kept(void **state)
{
        struct tu_daemon d;
        char *src, *out;

        (void)state;
        start_with(&d, "on_delete = \"retract\";", 1);
        out = tu_path("%s/a0_m.jpg", d.media);
        tu_write_file(out, "not imgd's any more", (size_t)-1);
        src = tu_path("%s/a0.png", d.uploads);
        assert_int_equal(unlink(src), 0);
        wait_kind_done(&d, "retract", 1);
        assert_false(media_has(&d, "a0_s.webp"));
        assert_true(media_has(&d, "a0_m.jpg"));
        assert_true(tu_log_contains(&d, "left in place"));
        free(out);
        free(src);
        tu_daemon_cleanup(&d);
}

/* A variant removed: kept (and listed) until the operator says; then removed, the manifest
 * written again without it. */
static void test_removed_variant(void **state)
{
        struct tu_daemon d;
        json_t *plan, *manifest;
        char *mpath;
        ino_t s_ino;

        (void)state;
        start_with(&d, "", 2);
        s_ino = media_ino(&d, "a0_s.webp");
        write_conf(&d, V_S, "");
        assert_int_equal(tu_imgctl(&d, NULL, "reload", NULL), 0);
        usleep(300 * 1000);
        tu_daemon_wait_idle(&d, 60);
        assert_true(media_has(&d, "a0_m.jpg"));
        assert_verified(&d);

        plan = tu_imgctl_json(&d, "reconcile", "retract-removed", NULL);
        assert_true(json_is_true(json_object_get(plan, "retract_removed")));
        json_decref(plan);
        wait_kind_done(&d, "drop", 2);
        assert_false(media_has(&d, "a0_m.jpg"));
        assert_false(media_has(&d, "a1_m.jpg"));
        assert_int_equal(media_ino(&d, "a0_s.webp"), s_ino);
        mpath = tu_path("%s/a0.manifest.json", d.media);
        manifest = json_load_file(mpath, 0, NULL);
        assert_non_null(manifest);
        assert_int_equal(json_array_size(json_object_get(manifest, "outputs")), 1);
        json_decref(manifest);
        assert_verified(&d);

        /* The next pass counts nothing removed any more. */
        assert_int_equal(tu_imgctl(&d, NULL, "reload", NULL), 0);
        for (int waited = 0;; waited += 50) {
                plan = tu_imgctl_json(&d, "plan", NULL, NULL);
                if (!json_is_true(json_object_get(plan, "scanning")))
                        break;
                json_decref(plan);
                if (waited > 30000)
                        fail_msg("the reconciliation pass did not end");
                usleep(50 * 1000);
        }
        for (size_t i = 0;
             i < json_array_size(json_object_get(
                         json_array_get(json_object_get(plan, "watches"), 0), "variants"));
             i++) {
                const json_t *v = json_array_get(
                        json_object_get(json_array_get(json_object_get(plan, "watches"), 0),
                                        "variants"),
                        i);
                assert_string_not_equal(json_string_value(json_object_get(v, "variant")), "m");
        }
        json_decref(plan);
        free(mpath);
        tu_daemon_cleanup(&d);
}

/* The on_retract hook gets the files removed. */
static void test_hook(void **state)
{
        struct tu_daemon d;
        char *hook, *seen, *script, *src, *text;
        char extra[1024];

        (void)state;
        tu_daemon_setup(&d, "( " V_S " )", 2, NULL);
        hook = tu_path("%s/hook.sh", d.root);
        seen = tu_path("%s/hook.out", d.root);
        script = tu_path(
                "#!/bin/sh\necho \"$IMGD_EVENT $IMGD_OUTPUTS_COUNT $IMGD_OUTPUTS\" >> %s\n", seen);
        tu_write_file(hook, script, (size_t)-1);
        assert_int_equal(chmod(hook, 0755), 0);
        snprintf(extra, sizeof extra, "on_delete = \"retract\"; on_retract = \"%s\";", hook);
        write_conf(&d, V_S, extra);
        tu_daemon_start(&d);
        src = tu_path("%s/h.png", d.uploads);
        tu_make_image(src, 30, 20, "png", false);
        tu_daemon_wait_idle(&d, 60);
        assert_int_equal(unlink(src), 0);
        wait_kind_done(&d, "retract", 1);
        text = NULL;
        for (int waited = 0; waited < 10000; waited += 50) {
                size_t n = 0;

                free(text);
                text = tu_read_file(seen, &n);
                if (text && strchr(text, '\n'))
                        break;
                usleep(50 * 1000);
        }
        assert_non_null(text);
        assert_non_null(strstr(text, "retracted 1 "));
        assert_non_null(strstr(text, "/h_s.webp"));
        free(text);
        free(src);
        free(script);
        free(seen);
        free(hook);
        tu_daemon_cleanup(&d);
}

/* kill -9 at the fault point `point` of a retraction (or a move), then a restart: the job
 * finishes, nothing is left half done. */
static void crash_at(const char *point, bool move)
{
        struct tu_daemon d;
        char *from, *to;
        int status;

        start_with(&d, "on_delete = \"retract\";", 2);
        assert_int_equal(WEXITSTATUS(tu_daemon_stop(&d, SIGTERM)), 0);
        setenv("IMGD_FAULT", point, 1);
        tu_daemon_start(&d);
        unsetenv("IMGD_FAULT");
        from = tu_path("%s/a0.png", d.uploads);
        to = tu_path("%s/c0.png", d.uploads);
        if (move)
                assert_int_equal(rename(from, to), 0);
        else
                assert_int_equal(unlink(from), 0);
        status = tu_daemon_wait_exit(&d, 20000);
        if (status < 0)
                fail_msg("imgd did not stop at %s", point);
        assert_int_equal(WEXITSTATUS(status), 99);
        d.pid = 0;
        tu_daemon_start(&d);
        wait_kind_done(&d, move ? "move" : "retract", 1);
        assert_false(media_has(&d, "a0_s.webp"));
        assert_false(media_has(&d, "a0_m.jpg"));
        assert_false(media_has(&d, "a0.manifest.json"));
        if (move) {
                assert_true(media_has(&d, "c0_s.webp"));
                assert_true(media_has(&d, "c0_m.jpg"));
                assert_true(media_has(&d, "c0.manifest.json"));
        }
        assert_true(media_has(&d, "a1_s.webp"));
        assert_verified(&d);
        free(from);
        free(to);
        tu_daemon_cleanup(&d);
}

static void test_crash_retract(void **state)
{
        (void)state;
        crash_at("retract.after_unlink", false);
        crash_at("retract.before_complete", false);
}

static void test_crash_move(void **state)
{
        (void)state;
        crash_at("retract.after_rename", true);
        crash_at("retract.before_complete", true);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_deleted),
                cmocka_unit_test(test_moved_out_and_renamed),
                cmocka_unit_test(test_dir_renamed),
                cmocka_unit_test(test_keep_and_deleted_while_stopped),
                cmocka_unit_test(test_altered_output_kept),
                cmocka_unit_test(test_removed_variant),
                cmocka_unit_test(test_hook),
                cmocka_unit_test(test_crash_retract),
                cmocka_unit_test(test_crash_move),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
