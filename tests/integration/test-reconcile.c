/* SPDX-License-Identifier: MIT */
/*
 * test-reconcile.c - the output tree follows the configuration (issue 17), with the real
 * daemon: a variant added to a pipeline is rendered for every done source, and only it (the
 * other outputs keep their files); a variant whose settings changed is rendered again; a
 * variant removed is counted, its files kept and still listed; `imgctl plan` shows the counts;
 * a watch with reconcile = false, or reconciliation paused, only counts. imgctl verify agrees
 * with the result every time.
 */
#include <inttypes.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

#define V_S(q)                                                                                     \
        "{ name = \"s\"; width = 16; height = 16; fit = \"cover\"; format = \"webp\"; quality "    \
        "= " q "; }"
#define V_M "{ name = \"m\"; width = 20; height = 20; format = \"jpeg\"; }"

/* The configuration of tu_daemon_setup() with these variants, and watch_extra in the watch,
 * and `extra` (may be NULL) at the end. */
static void write_conf_extra(struct tu_daemon *d, const char *variants, const char *watch_extra,
                             const char *extra)
{
        char *conf = tu_path("state_dir = \"%s\";\nsocket = \"%s\";\nworkers = 2;\n"
                             "watch = ( { path = \"%s\"; output = \"%s\"; pipeline = \"p\"; "
                             "recursive = true; %s } );\n"
                             "pipelines = { p = ( %s ); };\n%s\n",
                             d->state, d->socket, d->uploads, d->media, watch_extra, variants,
                             extra ? extra : "");

        tu_write_file(d->config, conf, (size_t)-1);
        free(conf);
}

static void write_conf(struct tu_daemon *d, const char *variants, const char *watch_extra)
{
        write_conf_extra(d, variants, watch_extra, NULL);
}

/* imgctl reload, then the reconciliation pass to its end and the jobs it queued done. */
static json_t *reload_and_settle(struct tu_daemon *d)
{
        json_t *plan = NULL;

        assert_int_equal(tu_imgctl(d, NULL, "reload", NULL), 0);
        for (int waited = 0;; waited += 50) {
                json_decref(plan);
                plan = tu_imgctl_json(d, "plan", NULL, NULL);
                if (!json_is_true(json_object_get(plan, "scanning")))
                        break;
                if (waited > 30000)
                        fail_msg("the reconciliation pass did not end");
                usleep(50 * 1000);
        }
        tu_daemon_wait_idle(d, 120);
        return plan;
}

/* The plan's counts for `variant` (of the one watch): current, missing, stale, removed. */
static void counts(const json_t *plan, const char *variant, long long c[4])
{
        const json_t *vs =
                json_object_get(json_array_get(json_object_get(plan, "watches"), 0), "variants");

        for (size_t i = 0; i < json_array_size(vs); i++) {
                const json_t *v = json_array_get(vs, i);

                if (strcmp(json_string_value(json_object_get(v, "variant")), variant) != 0)
                        continue;
                c[0] = json_integer_value(json_object_get(v, "current"));
                c[1] = json_integer_value(json_object_get(v, "missing"));
                c[2] = json_integer_value(json_object_get(v, "stale"));
                c[3] = json_integer_value(json_object_get(v, "removed"));
                return;
        }
        fail_msg("variant %s is not in the plan", variant);
}

#define ASSERT_COUNTS(plan, variant, cur, miss, stl, rem)                                          \
        do {                                                                                       \
                long long c_[4] = { -1, -1, -1, -1 };                                              \
                counts(plan, variant, c_);                                                         \
                if (c_[0] != (cur) || c_[1] != (miss) || c_[2] != (stl) || c_[3] != (rem))         \
                        fail_msg("plan %s: current %lld missing %lld stale %lld removed %lld, "    \
                                 "expected %d %d %d %d",                                           \
                                 variant, c_[0], c_[1], c_[2], c_[3], cur, miss, stl, rem);        \
        } while (0)

static void drop(struct tu_daemon *d, unsigned n)
{
        for (unsigned i = 0; i < n; i++) {
                char *p = tu_path("%s/a%u.png", d->uploads, i);
                tu_make_image(p, 24 + i, 16, "png", false);
                free(p);
        }
}

static void stat_output(struct tu_daemon *d, const char *name, struct stat *st)
{
        char *p = tu_path("%s/%s", d->media, name);

        if (stat(p, st) < 0)
                fail_msg("%s: missing", p);
        free(p);
}

/* The variants a manifest lists, as "m,s" (sorted), into buf. */
static void manifest_variants(struct tu_daemon *d, const char *stem, char *buf, size_t size)
{
        char *p = tu_path("%s/%s.manifest.json", d->media, stem);
        json_t *m = json_load_file(p, 0, NULL);
        const json_t *outs = json_object_get(m, "outputs");
        char names[8][16];
        size_t n = json_array_size(outs);

        assert_non_null(m);
        assert_true(n <= 8);
        for (size_t i = 0; i < n; i++) {
                const json_t *o = json_array_get(outs, i);
                snprintf(names[i], sizeof names[i], "%s",
                         json_string_value(json_object_get(o, "variant")));
                assert_non_null(json_string_value(json_object_get(o, "recipe")));
        }
        qsort(names, n, sizeof names[0], (int (*)(const void *, const void *))strcmp);
        buf[0] = '\0';
        for (size_t i = 0; i < n; i++)
                snprintf(buf + strlen(buf), size - strlen(buf), "%s%s", i ? "," : "", names[i]);
        json_decref(m);
        free(p);
}

static void assert_verified(struct tu_daemon *d)
{
        char *out = NULL;
        int r = tu_imgctl(d, &out, "verify", NULL);

        if (r != 0)
                fail_msg("imgctl verify: %d: %s", r, out ? out : "");
        free(out);
}

/* A variant added: rendered for every done source, and nothing else is. */
static void test_added_variant(void **state)
{
        struct tu_daemon d;
        struct stat before, after, m;
        json_t *plan;
        char names[64];

        (void)state;
        tu_daemon_setup(&d, "( " V_S("80") " )", 2, NULL);
        tu_daemon_start(&d);
        drop(&d, 5);
        tu_daemon_wait_idle(&d, 60);
        stat_output(&d, "a0_s.webp", &before);

        write_conf(&d, V_S("80") ", " V_M, "");
        plan = reload_and_settle(&d);
        ASSERT_COUNTS(plan, "s", 5, 0, 0, 0);
        ASSERT_COUNTS(plan, "m", 0, 5, 0, 0);
        assert_int_equal(json_integer_value(json_object_get(plan, "queued")), 5);
        json_decref(plan);

        for (unsigned i = 0; i < 5; i++) {
                char *name = tu_path("a%u_m.jpg", i), *stem = tu_path("a%u", i);
                stat_output(&d, name, &m);
                manifest_variants(&d, stem, names, sizeof names);
                assert_string_equal(names, "m,s");
                free(name);
                free(stem);
        }
        /* Only m was rendered: s is the same file, not written again. */
        stat_output(&d, "a0_s.webp", &after);
        assert_int_equal(after.st_ino, before.st_ino);
        assert_int_equal(after.st_mtim.tv_nsec, before.st_mtim.tv_nsec);
        assert_int_equal(tu_ledger_int(&d, "SELECT count(*) FROM jobs WHERE redo IS NOT NULL "
                                           "AND state = 'done'"),
                         5);
        assert_verified(&d);
        /* Status tells the progress: all 5 done, none remaining; so do the metrics. */
        {
                json_t *st = tu_status_json(&d, NULL);
                const json_t *rc = json_object_get(st, "reconcile");
                char *text = NULL;

                assert_int_equal(json_integer_value(json_object_get(rc, "done")), 5);
                assert_int_equal(json_integer_value(json_object_get(rc, "remaining")), 0);
                assert_true(json_number_value(json_object_get(rc, "per_s")) > 0);
                json_decref(st);
                assert_int_equal(tu_imgctl(&d, &text, "metrics", NULL), 0);
                assert_non_null(strstr(text, "\nimgd_background_jobs_remaining 0\n"));
                free(text);
        }

        /* The next pass finds everything current and queues nothing. */
        plan = reload_and_settle(&d);
        ASSERT_COUNTS(plan, "s", 5, 0, 0, 0);
        ASSERT_COUNTS(plan, "m", 5, 0, 0, 0);
        assert_int_equal(json_integer_value(json_object_get(plan, "queued")), 0);
        json_decref(plan);
        tu_daemon_cleanup(&d);
}

/* A variant changed and one removed: the first rendered again, the second kept and listed. */
static void test_changed_and_removed(void **state)
{
        struct tu_daemon d;
        struct stat s_before, s_after, m_before, m_after;
        json_t *plan;
        char names[64];

        (void)state;
        tu_daemon_setup(&d, "( " V_S("80") ", " V_M " )", 2, NULL);
        tu_daemon_start(&d);
        drop(&d, 3);
        tu_daemon_wait_idle(&d, 60);
        stat_output(&d, "a1_s.webp", &s_before);
        stat_output(&d, "a1_m.jpg", &m_before);

        write_conf(&d, V_S("40"), "");
        plan = reload_and_settle(&d);
        ASSERT_COUNTS(plan, "s", 0, 0, 3, 0);
        ASSERT_COUNTS(plan, "m", 0, 0, 0, 3);
        json_decref(plan);

        stat_output(&d, "a1_s.webp", &s_after);
        stat_output(&d, "a1_m.jpg", &m_after);
        assert_int_not_equal(s_after.st_ino, s_before.st_ino); /* published anew */
        assert_int_equal(m_after.st_ino, m_before.st_ino);     /* kept as it was */
        manifest_variants(&d, "a1", names, sizeof names);
        assert_string_equal(names, "m,s");
        assert_verified(&d);

        plan = reload_and_settle(&d);
        ASSERT_COUNTS(plan, "s", 3, 0, 0, 0);
        ASSERT_COUNTS(plan, "m", 0, 0, 0, 3);
        assert_int_equal(json_integer_value(json_object_get(plan, "queued")), 0);
        json_decref(plan);
        tu_daemon_cleanup(&d);
}

/* A variant's format changed: rendered again under its new name, and the file under the old
 * one, which no manifest lists any more, removed (imgctl verify finds no orphan). */
static void test_format_changed(void **state)
{
        struct tu_daemon d;
        json_t *plan;

        (void)state;
        tu_daemon_setup(&d, "( " V_S("80") " )", 2, NULL);
        tu_daemon_start(&d);
        drop(&d, 2);
        tu_daemon_wait_idle(&d, 60);
        assert_true(tu_count_files(d.media, "*_s.webp") == 2);

        write_conf(&d,
                   "{ name = \"s\"; width = 16; height = 16; fit = \"cover\"; format = "
                   "\"jpeg\"; quality = 80; }",
                   "");
        plan = reload_and_settle(&d);
        ASSERT_COUNTS(plan, "s", 0, 0, 2, 0);
        json_decref(plan);
        assert_int_equal(tu_count_files(d.media, "*_s.jpg"), 2);
        assert_int_equal(tu_count_files(d.media, "*_s.webp"), 0);
        assert_verified(&d);
        tu_daemon_cleanup(&d);
}

/* reconcile = false, and a paused reconciliation: counted, nothing queued; resumed: done. */
static void test_off_and_paused(void **state)
{
        struct tu_daemon d;
        json_t *plan;
        char *out = NULL;

        (void)state;
        tu_daemon_setup(&d, "( " V_S("80") " )", 2, NULL);
        tu_daemon_start(&d);
        drop(&d, 2);
        tu_daemon_wait_idle(&d, 60);

        write_conf(&d, V_S("80") ", " V_M, "reconcile = false;");
        plan = reload_and_settle(&d);
        ASSERT_COUNTS(plan, "m", 0, 2, 0, 0);
        assert_int_equal(json_integer_value(json_object_get(plan, "queued")), 0);
        json_decref(plan);
        assert_int_equal(tu_count_files(d.media, "*_m.jpg"), 0);

        assert_int_equal(tu_imgctl(&d, NULL, "reconcile", "pause", NULL), 0);
        write_conf(&d, V_S("80") ", " V_M, "");
        plan = reload_and_settle(&d);
        ASSERT_COUNTS(plan, "m", 0, 2, 0, 0);
        assert_true(json_is_true(json_object_get(plan, "paused")));
        assert_int_equal(json_integer_value(json_object_get(plan, "queued")), 0);
        json_decref(plan);
        assert_int_equal(tu_count_files(d.media, "*_m.jpg"), 0);

        /* The text form names the counts. */
        assert_int_equal(tu_imgctl(&d, &out, "plan", NULL), 0);
        assert_non_null(strstr(out, "MISSING"));
        assert_non_null(strstr(out, "(paused)"));
        free(out);

        assert_int_equal(tu_imgctl(&d, NULL, "reconcile", "resume", NULL), 0);
        plan = reload_and_settle(&d);
        json_decref(plan);
        assert_int_equal(tu_count_files(d.media, "*_m.jpg"), 2);
        assert_verified(&d);
        tu_daemon_cleanup(&d);
}

/*
 * Priorities: with a backfill of 16 jobs queued and every render taking 400 ms (the fault
 * delay), uploads that arrive one after the other are each done within two renders (one
 * to wait for a worker, its own) and a margin. background_share = 1 lets the backfill take
 * every worker, so that only the order of claims keeps uploads ahead: first in, first out
 * would keep the first of them behind the whole backfill (16 renders on 2 workers: 3.2 s).
 */
#define SHARE_ALL "limits = { background_share = 1.0; };"
static void test_live_first(void **state)
{
        const int64_t render_ms = 400;
        struct tu_daemon d;
        json_t *plan = NULL;
        int64_t worst;

        (void)state;
        tu_daemon_setup(&d, "( " V_S("80") " )", 2, SHARE_ALL);
        setenv("IMGD_FAULT_DELAY", "worker.job", 1);
        setenv("IMGD_FAULT_DELAY_MS", "400", 1);
        tu_daemon_start(&d);
        unsetenv("IMGD_FAULT_DELAY");
        unsetenv("IMGD_FAULT_DELAY_MS");
        drop(&d, 16);
        tu_daemon_wait_idle(&d, 120);

        write_conf_extra(&d, V_S("80") ", " V_M, "", SHARE_ALL);
        assert_int_equal(tu_imgctl(&d, NULL, "reload", NULL), 0);
        for (int waited = 0;; waited += 20) {
                json_decref(plan);
                plan = tu_imgctl_json(&d, "plan", NULL, NULL);
                if (!json_is_true(json_object_get(plan, "scanning")))
                        break;
                if (waited > 30000)
                        fail_msg("the reconciliation pass did not end");
                usleep(20 * 1000);
        }
        assert_int_equal(json_integer_value(json_object_get(plan, "queued")), 16);
        json_decref(plan);
        for (unsigned i = 0; i < 6; i++) {
                char *p = tu_path("%s/live%u.png", d.uploads, i);
                tu_make_image(p, 30, 20 + i, "png", false);
                free(p);
                usleep(300 * 1000);
        }
        tu_daemon_wait_idle(&d, 120);

        worst = tu_ledger_int(&d, "SELECT max(finished_us - created_us) FROM jobs "
                                  "WHERE source_path LIKE '%/live%'");
        print_message("slowest upload during the backfill: %.0f ms (renders take %" PRId64 " ms)\n",
                      (double)worst / 1000.0, render_ms);
        assert_true(worst > 0);
        assert_true(worst <= (2 * render_ms + 500) * 1000);
        assert_int_equal(tu_count_files(d.media, "*_m.jpg"), 22);
        assert_int_equal(tu_ledger_int(&d, "SELECT count(*) FROM jobs WHERE state <> 'done'"), 0);
        assert_verified(&d);
        tu_daemon_cleanup(&d);
}

/* The nice value of process pid (/proc/<pid>/stat, field 19). */
static int nice_of(pid_t pid)
{
        char *path = tu_path("/proc/%d/stat", (int)pid), buf[1024];
        FILE *f = fopen(path, "re");
        const char *p;
        int nice = 100;

        assert_non_null(f);
        assert_non_null(fgets(buf, sizeof buf, f));
        fclose(f);
        free(path);
        p = strrchr(buf, ')'); /* after the command name, which may hold spaces */
        assert_non_null(p);
        /* state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
         * cutime cstime priority nice */
        assert_int_equal(sscanf(p + 2,
                                "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d "
                                "%*d %*d %d",
                                &nice),
                         1);
        return nice;
}

/*
 * Of 2 workers, one is a background worker (background_share 0.5): it runs 10 nicer than the
 * daemon, so that a live render sharing a CPU with it goes first; and a reconciliation job on
 * an idle daemon goes to it, not to the worker live work takes first.
 */
static void test_background_worker(void **state)
{
        json_t *st = NULL, *list;
        int daemon_nice, background = 0, normal = 0;
        bool seen = false;
        struct tu_daemon d;

        (void)state;
        tu_daemon_setup(&d, "( " V_S("80") " )", 2, NULL);
        /* Renders slowed down, for the reconciliation job to be seen on its worker. */
        setenv("IMGD_FAULT_DELAY", "worker.job", 1);
        setenv("IMGD_FAULT_DELAY_MS", "1000", 1);
        tu_daemon_start(&d);
        unsetenv("IMGD_FAULT_DELAY");
        unsetenv("IMGD_FAULT_DELAY_MS");
        drop(&d, 1);
        tu_daemon_wait_idle(&d, 60);
        daemon_nice = nice_of(d.pid);

        st = tu_imgctl_json(&d, "status", NULL, NULL);
        list = json_object_get(json_object_get(st, "workers"), "list");
        assert_int_equal(json_array_size(list), 2);
        for (size_t i = 0; i < json_array_size(list); i++) {
                json_t *w = json_array_get(list, i);
                pid_t pid = (pid_t)json_integer_value(json_object_get(w, "pid"));
                int want = json_is_true(json_object_get(w, "background"))
                                   ? (daemon_nice + 10 > 19 ? 19 : daemon_nice + 10)
                                   : daemon_nice;

                background += json_is_true(json_object_get(w, "background"));
                normal += json_is_false(json_object_get(w, "background"));
                assert_int_equal(nice_of(pid), want);
        }
        assert_int_equal(background, 1);
        assert_int_equal(normal, 1);
        json_decref(st);

        /* Both workers idle: the reconciliation job of an added variant goes to the
         * background worker. */
        write_conf(&d, V_S("80") ", " V_M, "");
        assert_int_equal(tu_imgctl(&d, NULL, "reload", NULL), 0);
        for (int waited = 0; !seen && waited < 20000; waited += 50) {
                st = tu_imgctl_json(&d, "status", NULL, NULL);
                list = json_object_get(json_object_get(st, "workers"), "list");
                for (size_t i = 0; i < json_array_size(list); i++) {
                        json_t *w = json_array_get(list, i);

                        if (strcmp(json_string_value(json_object_get(w, "state")), "busy") != 0)
                                continue;
                        assert_true(json_is_true(json_object_get(w, "background")));
                        seen = true;
                }
                json_decref(st);
                usleep(50 * 1000);
        }
        assert_true(seen);
        tu_daemon_wait_idle(&d, 60);
        assert_int_equal(tu_count_files(d.media, "*_m.jpg"), 1);
        tu_daemon_cleanup(&d);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_added_variant),  cmocka_unit_test(test_changed_and_removed),
                cmocka_unit_test(test_format_changed), cmocka_unit_test(test_off_and_paused),
                cmocka_unit_test(test_live_first),     cmocka_unit_test(test_background_worker),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
