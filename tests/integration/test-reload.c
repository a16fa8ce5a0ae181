/* SPDX-License-Identifier: MIT */
/*
 * test-reload.c - a reload (SIGHUP) that changes a watch leaves no job unrecoverable, with
 * the real daemon: jobs queued before it run under the configuration as it is when they are
 * claimed. A renamed pipeline: all of them done, none dead. A watch's new output folder:
 * they publish there. A removed watch: its jobs are held (no attempt used, not dead, not
 * quarantined, 'imgctl wait' returns) until a reload configures it again, then done. Each
 * output records the recipe it was made with (issue 17), in the ledger (imgctl show) and in
 * its manifest alike; a reload that changes one variant's quality changes that variant's
 * recipe only.
 */
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

#define PIPE_1 "( { name = \"s\"; width = 16; height = 16; fit = \"cover\"; format = \"webp\"; } )"

/* Writes the configuration: `watches` is the libconfig list body, `pipeline` the name. */
static void write_config(struct tu_daemon *d, const char *watches, const char *pipeline)
{
        char *conf = tu_path("state_dir = \"%s\";\nsocket = \"%s\";\nworkers = 2;\n"
                             "watch = ( %s );\n"
                             "pipelines = { %s = %s; };\n",
                             d->state, d->socket, watches, pipeline, PIPE_1);

        tu_write_file(d->config, conf, (size_t)-1);
        free(conf);
}

/* Number of times the daemon's log says text. */
static unsigned log_count(struct tu_daemon *d, const char *text)
{
        char *log = tu_read_file(d->log, NULL);
        unsigned n = 0;

        for (const char *p = log; p && (p = strstr(p, text)); p += strlen(text))
                n++;
        free(log);
        return n;
}

/* SIGHUP, then waits for the reload to be done. */
static void reload(struct tu_daemon *d)
{
        unsigned before = log_count(d, "reloaded: watching");

        assert_int_equal(kill(d->pid, SIGHUP), 0);
        for (int waited = 0; log_count(d, "reloaded: watching") == before; waited += 50) {
                if (waited > 30000)
                        fail_msg("the reload did not finish");
                usleep(50 * 1000);
        }
}

/* The count of jobs in `state` ("held" too) from imgctl status --json. */
static long long count(struct tu_daemon *d, const char *state)
{
        char *out = NULL;
        json_t *st;
        long long n;
        int r = tu_imgctl(d, &out, "status", "--json", NULL);

        /* 1: an alert is active (a backlog of 500 waiting may well raise one). */
        if (r != 0 && r != 1)
                fail_msg("imgctl status failed (%d): %s", r, out ? out : "");
        st = json_loads(out, 0, NULL);
        if (!st)
                fail_msg("imgctl status printed no JSON: %s", out);
        n = json_integer_value(json_object_get(json_object_get(st, "jobs"), state));
        json_decref(st);
        free(out);
        return n;
}

static void wait_count(struct tu_daemon *d, const char *state, long long want, int timeout_s)
{
        long long n = -1;

        for (int waited = 0; waited <= timeout_s * 1000; waited += 100) {
                n = count(d, state);
                if (n == want)
                        return;
                usleep(100 * 1000);
        }
        fail_msg("%lld %s job(s) after %d s, expected %lld", n, state, timeout_s, want);
}

/* Drops n small images named <prefix><i>.png into dir. */
static void drop(const char *dir, const char *prefix, unsigned n)
{
        for (unsigned i = 0; i < n; i++) {
                char *p = tu_path("%s/%s%u.png", dir, prefix, i);
                tu_make_image(p, 24, 16, "png", false);
                free(p);
        }
}

/* 500 jobs queued (paused), then the pipeline renamed: all done after resume, none dead. */
static void test_pipeline_renamed(void **state)
{
        struct tu_daemon d;
        char *watch;

        (void)state;
        tu_daemon_setup(&d, PIPE_1, 2, NULL);
        watch = tu_path("{ path = \"%s\"; output = \"%s\"; pipeline = \"p\"; }", d.uploads,
                        d.media);
        write_config(&d, watch, "p");
        free(watch);
        tu_daemon_start(&d);
        assert_int_equal(tu_imgctl(&d, NULL, "pause", NULL), 0);
        drop(d.uploads, "img", 500);
        wait_count(&d, "queued", 500, 120);

        watch = tu_path("{ path = \"%s\"; output = \"%s\"; pipeline = \"renamed\"; }", d.uploads,
                        d.media);
        write_config(&d, watch, "renamed");
        free(watch);
        reload(&d);
        assert_int_equal(tu_imgctl(&d, NULL, "resume", NULL), 0);
        tu_daemon_wait_idle(&d, 300);
        assert_int_equal(count(&d, "dead"), 0);
        assert_int_equal(count(&d, "done"), 500);
        assert_int_equal(tu_count_files(d.media, "img*_s.webp"), 500);
        tu_daemon_cleanup(&d);
}

/* Queued jobs publish into the watch's output folder as configured when they run. */
static void test_output_moved(void **state)
{
        struct tu_daemon d;
        char *watch, *media2;

        (void)state;
        tu_daemon_setup(&d, PIPE_1, 2, NULL);
        media2 = tu_path("%s/media2", d.root);
        tu_daemon_start(&d);
        assert_int_equal(tu_imgctl(&d, NULL, "pause", NULL), 0);
        drop(d.uploads, "img", 20);
        wait_count(&d, "queued", 20, 60);

        watch = tu_path("{ path = \"%s\"; output = \"%s\"; pipeline = \"p\"; recursive = true; }",
                        d.uploads, media2);
        write_config(&d, watch, "p");
        free(watch);
        reload(&d);
        assert_int_equal(tu_imgctl(&d, NULL, "resume", NULL), 0);
        tu_daemon_wait_idle(&d, 120);
        assert_int_equal(count(&d, "done"), 20);
        assert_int_equal(tu_count_files(media2, "img*_s.webp"), 20);
        assert_int_equal(tu_count_files(d.media, "*"), 0);
        free(media2);
        tu_daemon_cleanup(&d);
}

#define PIPE_2(q)                                                                                  \
        "( { name = \"s\"; width = 16; height = 16; fit = \"cover\"; format = \"webp\"; },"        \
        "  { name = \"m\"; width = 20; height = 20; format = \"jpeg\"; quality = " q "; } )"

/* The recipe of each output of job `id` by variant (s, m), as imgctl show --json tells them,
 * and checks the job's manifest says the same. */
static void recipes_of(struct tu_daemon *d, const char *id, const char *stem, char s[17],
                       char m[17])
{
        json_t *show = tu_imgctl_json(d, "show", id, NULL);
        json_t *outs = json_object_get(json_object_get(show, "job"), "outputs");
        char *mpath = tu_path("%s/%s.manifest.json", d->media, stem);
        json_t *man = json_load_file(mpath, 0, NULL);
        json_t *mouts = json_object_get(man, "outputs");

        assert_non_null(man);
        assert_int_equal(json_array_size(outs), 2);
        assert_int_equal(json_array_size(mouts), 2);
        for (size_t i = 0; i < 2; i++) {
                const json_t *o = json_array_get(outs, i);
                const char *variant = json_string_value(json_object_get(o, "variant"));
                const char *recipe = json_string_value(json_object_get(o, "recipe"));
                const char *in_manifest = NULL;

                assert_non_null(variant);
                assert_non_null(recipe);
                assert_int_equal(strlen(recipe), 16);
                for (size_t k = 0; k < 2; k++) {
                        const json_t *mo = json_array_get(mouts, k);
                        if (strcmp(json_string_value(json_object_get(mo, "variant")), variant) == 0)
                                in_manifest = json_string_value(json_object_get(mo, "recipe"));
                }
                assert_non_null(in_manifest);
                assert_string_equal(in_manifest, recipe);
                strcpy(strcmp(variant, "s") == 0 ? s : m, recipe);
        }
        json_decref(man);
        json_decref(show);
        free(mpath);
}

/* Recipes: recorded for each output; a changed quality changes that variant's only. */
static void test_recipes(void **state)
{
        struct tu_daemon d;
        char s1[17], m1[17], s2[17], m2[17];
        char *conf, *text;

        (void)state;
        tu_daemon_setup(&d, PIPE_2("80"), 2, NULL);
        tu_daemon_start(&d);
        drop(d.uploads, "a", 1);
        tu_daemon_wait_idle(&d, 60);
        recipes_of(&d, "1", "a0", s1, m1);
        assert_string_not_equal(s1, m1);

        text = tu_read_file(d.config, NULL);
        conf = strstr(text, "quality = 80;");
        assert_non_null(conf);
        memcpy(conf, "quality = 60;", 13);
        tu_write_file(d.config, text, (size_t)-1);
        free(text);
        reload(&d);
        drop(d.uploads, "b", 1);
        tu_daemon_wait_idle(&d, 60);
        recipes_of(&d, "2", "b0", s2, m2);
        assert_string_equal(s1, s2);
        assert_string_not_equal(m1, m2);
        assert_int_equal(tu_ledger_int(&d, "SELECT count(DISTINCT recipe) FROM outputs"), 3);
        tu_daemon_cleanup(&d);
}

/*
 * Two watches removed with jobs queued: their jobs are held, not dead, none quarantined (the
 * watches had a quarantine folder), 'imgctl wait' returns, status counts them as held, the
 * reason is on each; 'imgctl retry' of one is accepted (held again, the watch still gone).
 * One watch configured again by a reload: its jobs are done. The other by a restart: its
 * jobs are done too.
 */
static void test_watch_removed(void **state)
{
        struct tu_daemon d;
        char *first, *second, *third, *conf, *uploads[2], *media[2], *quarantine, *out = NULL;
        json_t *jobs;
        char id[32];

        (void)state;
        tu_daemon_setup(&d, PIPE_1, 2, NULL);
        quarantine = tu_path("%s/quarantine", d.root);
        for (unsigned i = 0; i < 2; i++) {
                uploads[i] = tu_path("%s/uploads%u", d.root, i + 2);
                media[i] = tu_path("%s/media%u", d.root, i + 2);
                assert_int_equal(mkdir(uploads[i], 0755), 0);
        }
        first = tu_path("{ path = \"%s\"; output = \"%s\"; pipeline = \"p\"; }", d.uploads,
                        d.media);
        second = tu_path(
                "{ path = \"%s\"; output = \"%s\"; pipeline = \"p\"; quarantine = \"%s\"; }",
                uploads[0], media[0], quarantine);
        third = tu_path(
                "{ path = \"%s\"; output = \"%s\"; pipeline = \"p\"; quarantine = \"%s\"; }",
                uploads[1], media[1], quarantine);
        conf = tu_path("%s, %s, %s", first, second, third);
        write_config(&d, conf, "p");
        free(conf);
        tu_daemon_start(&d);
        assert_int_equal(tu_imgctl(&d, NULL, "pause", NULL), 0);
        drop(uploads[0], "img", 10);
        drop(uploads[1], "img", 10);
        wait_count(&d, "queued", 20, 60);

        write_config(&d, first, "p");
        reload(&d);
        assert_int_equal(tu_imgctl(&d, NULL, "resume", NULL), 0);
        wait_count(&d, "held", 20, 60);
        tu_daemon_wait_idle(&d, 30); /* held jobs are not work to wait for */
        assert_int_equal(count(&d, "dead"), 0);
        assert_int_equal(count(&d, "done"), 0);
        assert_int_equal(tu_count_files(uploads[0], "img*.png"), 10);
        assert_int_equal(tu_count_files(uploads[1], "img*.png"), 10);
        assert_int_equal(tu_count_files(d.root, "*_s.webp"), 0);
        assert_true(access(quarantine, F_OK) < 0);
        assert_true(tu_log_contains(&d, "is no longer configured"));

        /* The reason is on the job, no attempt used; retry is accepted. */
        assert_int_equal(tu_imgctl(&d, &out, "jobs", "--state", "queued", "--json", NULL), 0);
        jobs = json_loads(out, 0, NULL);
        assert_non_null(jobs);
        free(out);
        {
                json_t *j = json_array_get(json_object_get(jobs, "jobs"), 0);
                const char *error = json_string_value(json_object_get(j, "error"));

                assert_non_null(error);
                assert_non_null(strstr(error, "is no longer configured"));
                assert_non_null(strstr(error, d.root));
                assert_int_equal(json_integer_value(json_object_get(j, "attempts")), 0);
                snprintf(id, sizeof id, "%lld",
                         (long long)json_integer_value(json_object_get(j, "id")));
        }
        json_decref(jobs);
        assert_int_equal(tu_imgctl(&d, NULL, "retry", id, NULL), 0);
        wait_count(&d, "held", 20, 60);

        /* One configured again by a reload: its jobs done, into its output folder. */
        conf = tu_path("%s, %s", first, second);
        write_config(&d, conf, "p");
        free(conf);
        reload(&d);
        wait_count(&d, "done", 10, 120);
        tu_daemon_wait_idle(&d, 120);
        assert_int_equal(count(&d, "held"), 10);
        assert_int_equal(tu_count_files(media[0], "img*_s.webp"), 10);

        /* The other by a restart. */
        assert_int_equal(tu_daemon_stop(&d, SIGTERM), 0);
        conf = tu_path("%s, %s, %s", first, second, third);
        write_config(&d, conf, "p");
        free(conf);
        tu_daemon_start(&d);
        (void)tu_imgctl(&d, NULL, "resume", NULL);
        wait_count(&d, "done", 20, 120);
        tu_daemon_wait_idle(&d, 120);
        assert_int_equal(count(&d, "held"), 0);
        assert_int_equal(count(&d, "dead"), 0);
        assert_int_equal(tu_count_files(media[1], "img*_s.webp"), 10);
        assert_true(access(quarantine, F_OK) < 0);

        for (unsigned i = 0; i < 2; i++) {
                free(uploads[i]);
                free(media[i]);
        }
        free(first);
        free(second);
        free(third);
        free(quarantine);
        tu_daemon_cleanup(&d);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_pipeline_renamed),
                cmocka_unit_test(test_output_moved),
                cmocka_unit_test(test_watch_removed),
                cmocka_unit_test(test_recipes),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
