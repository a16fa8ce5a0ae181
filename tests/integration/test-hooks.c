/* SPDX-License-Identifier: MIT */
/*
 * test-hooks.c - per-watch hooks and quarantine against the real daemon: on_done and
 * on_dead programs get the job in their environment; a failing or hanging hook is logged and
 * killed and never affects the job; dead sources move to the quarantine folder.
 */
#include <dirent.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "testutil.h"

#define PIPE_1 "( { name = \"s\"; width = 64; height = 64; fit = \"cover\"; format = \"webp\"; } )"

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

/* The bytes of file `dir`/`name`, or NULL; *ret_len set when not NULL. */
static char *read_hook_file(const char *dir, const char *name, size_t *ret_len)
{
        char *p = tu_path("%s/%s", dir, name);
        char *text = tu_read_file(p, ret_len);

        free(p);
        return text;
}

/* imgctl show ID --json: the job object (caller decrefs). */
static json_t *show_job(struct tu_daemon *d, const char *id)
{
        char *out = NULL;
        json_t *r, *job;

        assert_int_equal(tu_imgctl(d, &out, "show", id, "--json", NULL), 0);
        r = json_loads(out, 0, NULL);
        if (!r)
                fail_msg("imgctl show printed no JSON: %s", out);
        free(out);
        job = json_incref(json_object_get(r, "job"));
        json_decref(r);
        return job;
}

/*
 * Names that are not plain: with a newline, with a leading '-', not UTF-8 ("\xff\xfe"), and
 * 255 bytes long (its outputs' names would be longer than NAME_MAX). The hooks get each
 * path byte for byte (IMGD_SOURCE, and the outputs NUL-terminated on stdin) and can open
 * them; the long one fails once, permanently, with the reason, its dead hook getting its
 * exact name too.
 */
static void test_exact_names(void **state)
{
        struct tu_daemon d;
        char *hook, *body, *conf, *got, *p, *long_name;
        static const char *const names[] = { "new\nline.png", "-rf.png", "\xff\xfe.png" };
        unsigned seen[3] = {};
        bool dead_seen = false;
        DIR *dir;
        struct dirent *de;

        (void)state;
        tu_daemon_setup(&d, PIPE_1, 1, NULL);
        got = tu_path("%s/got", d.root);
        assert_int_equal(mkdir(got, 0755), 0);
        /* Per job: the source's bytes, the outputs from stdin, whether the hook could open
         * every one of them; then the marker. */
        body = tu_path("f=%s/$IMGD_EVENT-$IMGD_JOB_ID\n"
                       "printf '%%s' \"$IMGD_SOURCE\" > \"$f.source\"\n"
                       "cat > \"$f.outputs\"\n"
                       "printf '%%s' \"$IMGD_OUTPUTS_COUNT\" > \"$f.count\"\n"
                       "ok=yes\n"
                       "[ \"$IMGD_EVENT\" = dead ] || [ -r \"$IMGD_SOURCE\" ] || ok=no\n"
                       "xargs -0 -n 1 test -r < \"$f.outputs\" || ok=no\n"
                       "echo $ok > \"$f.opened\"\n"
                       "touch \"$f.end\"",
                       got);
        hook = write_hook(d.root, "record.sh", body);
        conf = tu_path("state_dir = \"%s\";\nsocket = \"%s\";\nworkers = 1;\n"
                       "watch = ( { path = \"%s\"; output = \"%s\"; pipeline = \"p\"; "
                       "on_done = \"%s\"; on_dead = \"%s\"; } );\n"
                       "pipelines = { p = %s; };\n"
                       "retry = { max_attempts = 5; base_delay_ms = 50; max_delay_ms = 200; };\n",
                       d.state, d.socket, d.uploads, d.media, hook, hook, PIPE_1);
        tu_write_file(d.config, conf, (size_t)-1);
        tu_daemon_start(&d);

        for (size_t i = 0; i < 3; i++) {
                p = tu_path("%s/%s", d.uploads, names[i]);
                tu_make_image(p, 120, 80, "png", false);
                free(p);
        }
        long_name = malloc(256);
        memset(long_name, 'n', 251);
        memcpy(long_name + 251, ".png", 5);
        p = tu_path("%s/%s", d.uploads, long_name);
        tu_make_image(p, 120, 80, "png", false);
        free(p);
        tu_daemon_wait_idle(&d, 60);
        usleep(1000 * 1000); /* the last hooks finish */

        dir = opendir(got);
        assert_non_null(dir);
        while ((de = readdir(dir))) {
                char *stem, *source, *outputs, *count, *opened, *want;
                size_t source_len, outputs_len;
                size_t n = strlen(de->d_name);

                if (n < 4 || strcmp(de->d_name + n - 4, ".end") != 0)
                        continue;
                stem = strndup(de->d_name, n - 4);
                p = tu_path("%s.source", stem);
                source = read_hook_file(got, p, &source_len);
                free(p);
                p = tu_path("%s.outputs", stem);
                outputs = read_hook_file(got, p, &outputs_len);
                free(p);
                p = tu_path("%s.count", stem);
                count = read_hook_file(got, p, NULL);
                free(p);
                p = tu_path("%s.opened", stem);
                opened = read_hook_file(got, p, NULL);
                free(p);
                assert_non_null(source);
                assert_non_null(outputs);
                if (strncmp(stem, "dead-", 5) == 0) {
                        json_t *job;
                        const char *error;

                        /* The long name, exactly, after one attempt, with the reason. */
                        want = tu_path("%s/%s", d.uploads, long_name);
                        if (source_len != strlen(want) || memcmp(source, want, source_len) != 0)
                                fail_msg("dead hook got IMGD_SOURCE '%.*s'", (int)source_len,
                                         source);
                        free(want);
                        assert_false(dead_seen);
                        dead_seen = true;
                        job = show_job(&d, stem + 5);
                        error = json_string_value(json_object_get(job, "error"));
                        if (json_integer_value(json_object_get(job, "attempts")) != 1 || !error ||
                            !strstr(error, "output name too long: nnnn") ||
                            !strstr(error, "(NAME_MAX 255)"))
                                fail_msg("the 255-byte name: attempts %lld, error %s",
                                         (long long)json_integer_value(
                                                 json_object_get(job, "attempts")),
                                         error ? error : "(none)");
                        json_decref(job);
                } else {
                        size_t i;

                        for (i = 0; i < 3; i++) {
                                want = tu_path("%s/%s", d.uploads, names[i]);
                                bool match = source_len == strlen(want) &&
                                             memcmp(source, want, source_len) == 0;
                                free(want);
                                if (match)
                                        break;
                        }
                        if (i == 3)
                                fail_msg("done hook got an IMGD_SOURCE that is no source: "
                                         "'%.*s' (%zu bytes)",
                                         (int)source_len, source, source_len);
                        seen[i]++;
                        /* Exactly one output, NUL-terminated, with the exact name. */
                        p = tu_path("%s/%.*s_s.webp", d.media, (int)(strlen(names[i]) - 4),
                                    names[i]);
                        if (outputs_len != strlen(p) + 1 || memcmp(outputs, p, outputs_len) != 0)
                                fail_msg("done hook got outputs '%.*s' (%zu bytes) for '%s'",
                                         (int)outputs_len, outputs, outputs_len, p);
                        free(p);
                        assert_string_equal(count, "1");
                        assert_non_null(opened);
                        if (strcmp(opened, "yes\n") != 0)
                                fail_msg("hook could not open the paths of %s", stem);
                }
                free(stem);
                free(source);
                free(outputs);
                free(count);
                free(opened);
        }
        closedir(dir);
        for (size_t i = 0; i < 3; i++)
                if (seen[i] != 1)
                        fail_msg("source %zu: %u done hook(s)", i, seen[i]);
        assert_true(dead_seen);
        /* Nothing ran with a name as an option: the sources are all still there. */
        for (size_t i = 0; i < 3; i++) {
                p = tu_path("%s/%s", d.uploads, names[i]);
                assert_int_equal(access(p, F_OK), 0);
                free(p);
        }

        free(long_name);
        free(hook);
        free(body);
        free(conf);
        free(got);
        tu_daemon_cleanup(&d);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_done_and_dead_hooks),
                cmocka_unit_test(test_bad_hooks),
                cmocka_unit_test(test_exact_names),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
