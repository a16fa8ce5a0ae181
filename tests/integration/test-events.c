/* SPDX-License-Identifier: MIT */
/*
 * test-events.c - what an application and an operator read, with the real daemon (issue 14):
 * the done event carries the manifest's path and the placeholder (no second request needed),
 * as does `imgctl show --json`; the dead event carries its error inside `job`; and `imgctl
 * jobs` lines up its columns in display columns when a file name has wide (Japanese)
 * characters.
 */
#include <jansson.h>
#include <locale.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include <wchar.h>

#include "testutil.h"

#define PLACEHOLDER_PIPE                                                                           \
        "{ placeholder = true; variants = ( { name = \"s\"; width = 64; height = 64; "             \
        "format = \"webp\"; } ); }"

/* The `member` ("job", or "reconcile" for the reconciliation's events) of the next event named
 * `event` (the event's other members are only v and at_us); fails after 60 s. Caller decrefs. */
static json_t *sub_wait_member(struct tu_sub *s, const char *event, const char *member)
{
        for (;;) {
                char *line = tu_sub_line(s, 60000);
                json_t *ev, *job;

                if (!line)
                        fail_msg("no %s event within 60 s", event);
                ev = json_loads(line, 0, NULL);
                assert_non_null(ev);
                if (strcmp(json_string_value(json_object_get(ev, "event")) ?: "", event) != 0) {
                        json_decref(ev);
                        free(line);
                        continue;
                }
                /* Everything the event says is in its one object. */
                assert_int_equal(json_object_size(ev), 4);
                job = json_incref(json_object_get(ev, member));
                assert_true(json_is_object(job));
                json_decref(ev);
                free(line);
                return job;
        }
}

static json_t *sub_wait_event(struct tu_sub *s, const char *event)
{
        return sub_wait_member(s, event, "job");
}

static void test_done_event(void **state)
{
        _cleanup_free_ char *src = NULL, *manifest = NULL, *ids = NULL;
        const json_t *ph, *err;
        json_t *job, *show;
        struct tu_daemon d;
        struct tu_sub s;
        struct stat st;

        (void)state;
        tu_daemon_setup(&d, PLACEHOLDER_PIPE, 1, NULL);
        tu_daemon_start(&d);
        tu_sub_open(&s, &d);
        free(tu_sub_line(&s, 5000)); /* {"subscribed":true} */

        src = tu_path("%s/photo.png", d.uploads);
        tu_make_image(src, 200, 100, "png", false);
        job = sub_wait_event(&s, "done");
        manifest = tu_path("%s/photo.manifest.json", d.media);
        if (!json_is_string(json_object_get(job, "manifest")))
                fail_msg("done event without its manifest: %s", json_dumps(job, 0));
        assert_string_equal(json_string_value(json_object_get(job, "manifest")), manifest);
        assert_int_equal(stat(manifest, &st), 0);
        ph = json_object_get(job, "placeholder");
        if (!json_is_object(ph))
                fail_msg("done event without its placeholder: %s", json_dumps(job, 0));
        assert_true(strlen(json_string_value(json_object_get(ph, "blurhash")) ?: "") >= 6);
        assert_int_equal(strlen(json_string_value(json_object_get(ph, "dominant")) ?: ""), 7);
        assert_non_null(
                strstr(json_string_value(json_object_get(ph, "data_uri")) ?: "", "data:image/"));

        /* show --json: the same manifest. */
        ids = tu_path("%lld", (long long)json_integer_value(json_object_get(job, "id")));
        show = tu_imgctl_json(&d, "show", ids, NULL);
        assert_string_equal(
                json_string_value(json_object_get(json_object_get(show, "job"), "manifest")) ?: "",
                manifest);
        json_decref(show);
        json_decref(job);

        /* A dead job's error is a member of "job", as the README says now. */
        free(src);
        src = tu_path("%s/broken.png", d.uploads);
        tu_write_file(src, "not an image at all", (size_t)-1);
        job = sub_wait_event(&s, "dead");
        err = json_object_get(job, "error");
        assert_true(json_is_string(err));
        assert_true(json_is_null(json_object_get(job, "manifest")) ||
                    !json_object_get(job, "manifest"));
        json_decref(job);

        close(s.fd);
        assert_true(WIFEXITED(tu_daemon_stop(&d, SIGTERM)));
        tu_daemon_cleanup(&d);
}

/* Display columns of the first n bytes of the UTF-8 text s. */
/* The reconciliation tells when a pass has looked at everything and when its jobs are done;
 * a retraction and a move are told with the files they removed and where a source came from. */
static void test_reconcile_and_retract_events(void **state)
{
        struct tu_daemon d;
        struct tu_sub s;
        json_t *ev;
        char *conf, *a, *b;

        (void)state;
        tu_daemon_setup(&d, "( { name = \"s\"; width = 16; height = 16; format = \"webp\"; } )", 1,
                        NULL);
        conf = tu_path("state_dir = \"%s\";\nsocket = \"%s\";\nworkers = 1;\n"
                       "watch = ( { path = \"%s\"; output = \"%s\"; pipeline = \"p\"; "
                       "on_delete = \"retract\"; } );\npipelines = { p = ( %s ); };\n",
                       d.state, d.socket, d.uploads, d.media, "%s");
        {
                char *c1 = tu_path(conf, "{ name = \"s\"; width = 16; height = 16; format = "
                                         "\"webp\"; }");
                tu_write_file(d.config, c1, (size_t)-1);
                free(c1);
        }
        tu_daemon_start(&d);
        a = tu_path("%s/a.png", d.uploads);
        b = tu_path("%s/b.png", d.uploads);
        tu_make_image(a, 40, 30, "png", false);
        tu_make_image(b, 30, 40, "png", false);
        tu_daemon_wait_idle(&d, 60);

        tu_sub_open(&s, &d);
        {
                char *c2 = tu_path(conf, "{ name = \"s\"; width = 16; height = 16; format = "
                                         "\"webp\"; }, { name = \"m\"; width = 24; height = 24; "
                                         "format = \"jpeg\"; }");
                tu_write_file(d.config, c2, (size_t)-1);
                free(c2);
        }
        assert_int_equal(tu_imgctl(&d, NULL, "reload", NULL), 0);
        ev = sub_wait_member(&s, "reconcile-pass", "reconcile");
        assert_int_equal(json_integer_value(json_object_get(ev, "scanned")), 2);
        assert_int_equal(json_integer_value(json_object_get(ev, "queued")), 2);
        json_decref(ev);
        ev = sub_wait_member(&s, "reconcile-done", "reconcile");
        assert_int_equal(json_integer_value(json_object_get(ev, "done")), 2);
        json_decref(ev);

        assert_int_equal(unlink(a), 0);
        ev = sub_wait_event(&s, "retracted");
        assert_string_equal(json_string_value(json_object_get(ev, "kind")), "retract");
        assert_int_equal(json_array_size(json_object_get(ev, "removed")), 2);
        assert_int_equal(json_array_size(json_object_get(ev, "kept")), 0);
        json_decref(ev);

        free(a);
        a = tu_path("%s/c.png", d.uploads);
        assert_int_equal(rename(b, a), 0);
        ev = sub_wait_event(&s, "moved");
        assert_string_equal(json_string_value(json_object_get(ev, "from")), b);
        assert_string_equal(json_string_value(json_object_get(ev, "source")), a);
        assert_int_equal(json_array_size(json_object_get(ev, "outputs")), 2);
        assert_int_equal(json_array_size(json_object_get(ev, "removed")), 2);
        json_decref(ev);

        close(s.fd);
        free(a);
        free(b);
        free(conf);
        tu_daemon_cleanup(&d);
}

static size_t columns(const char *s, size_t n)
{
        char *prefix = strndup(s, n);
        wchar_t w[1024];
        size_t k = mbstowcs(w, prefix, ELEMENTSOF(w));
        int cols;

        free(prefix);
        assert_true(k != (size_t)-1);
        cols = wcswidth(w, k);
        assert_true(cols >= 0);
        return (size_t)cols;
}

/*
 * Two dead jobs, one with a Japanese name (five characters, ten columns) and one ASCII:
 * `imgctl jobs` starts the ERROR field (and every other) at the same display column on
 * every line.
 */
static void test_jobs_wide_names(void **state)
{
        static const char *const names[] = { "写真の名前.png", "plain-name.png" };
        char *out = NULL, *line, *save = NULL;
        size_t error_col = 0, lines = 0;
        struct tu_daemon d;

        (void)state;
        if (!setlocale(LC_CTYPE, "C.UTF-8"))
                skip();
        tu_daemon_setup(&d, PLACEHOLDER_PIPE, 1, NULL);
        tu_daemon_start(&d);
        for (size_t i = 0; i < ELEMENTSOF(names); i++) {
                char *p = tu_path("%s/%s", d.uploads, names[i]);

                tu_write_file(p, "not an image at all", (size_t)-1);
                free(p);
        }
        tu_daemon_wait_idle(&d, 60);
        assert_int_equal(tu_imgctl(&d, &out, "jobs", NULL), 0);
        for (line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                const char *at = lines == 0 ? strstr(line, "ERROR") : strstr(line, ".png");
                size_t col;

                assert_non_null(at);
                if (lines > 0) {
                        /* The error follows the source and its padding. */
                        at += strlen(".png");
                        while (*at == ' ')
                                at++;
                }
                col = columns(line, (size_t)(at - line));
                if (lines == 0)
                        error_col = col;
                else if (col != error_col)
                        fail_msg("ERROR starts at column %zu on line %zu, %zu in the header:\n%s",
                                 col, lines, error_col, line);
                lines++;
        }
        assert_int_equal(lines, 3);
        free(out);
        assert_true(WIFEXITED(tu_daemon_stop(&d, SIGTERM)));
        tu_daemon_cleanup(&d);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_done_event),
                cmocka_unit_test(test_reconcile_and_retract_events),
                cmocka_unit_test(test_jobs_wide_names),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
