/* SPDX-License-Identifier: MIT */
/*
 * test-watch.c - the start-up scan of watch.c on a real tree: every file is reported once,
 * hidden names and hidden folders are passed over, other file types are reported (for intake
 * to refuse), sub-folders only for recursive watches; and a large folder is reported in name
 * order, batch by batch, so that the ledger lookups that follow walk its path index forward.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "imgd/watch.h"
#include "testutil.h"

#define N_FILES 2500
#define BATCH 1024 /* watch.c's WATCH_SCAN_BATCH */

struct seen {
        char **paths;
        size_t n, allocated;
};

static void on_file(const struct watch_config *w, const char *path, void *userdata)
{
        struct seen *s = userdata;

        (void)w;
        if (s->n == s->allocated) {
                s->allocated = s->allocated ? 2 * s->allocated : 256;
                s->paths = realloc(s->paths, s->allocated * sizeof *s->paths);
                assert_non_null(s->paths);
        }
        s->paths[s->n] = strdup(path);
        assert_non_null(s->paths[s->n]);
        s->n++;
}

static void seen_clear(struct seen *s)
{
        for (size_t i = 0; i < s->n; i++)
                free(s->paths[i]);
        free(s->paths);
        *s = (struct seen){};
}

static size_t count_path(const struct seen *s, const char *path)
{
        size_t k = 0;

        for (size_t i = 0; i < s->n; i++)
                k += strcmp(s->paths[i], path) == 0;
        return k;
}

/* Scans `up` with one watch; the paths reported go to *s. */
static int scan(const char *up, bool recursive, struct seen *s)
{
        struct watch_config wc = {
                .path = (char *)up, .output = "/nonexistent", .pipeline_name = "p",
                .recursive = recursive,
        };
        struct config cfg = {.watches = &wc, .n_watches = 1};
        sd_event *e = NULL;
        watch *w = NULL;
        int r;

        assert_int_equal(sd_event_new(&e), 0);
        assert_int_equal(watch_new(e, &cfg, on_file, s, &w), 0);
        r = watch_scan(w);
        watch_free(w);
        sd_event_unref(e);
        return r;
}

static void test_scan_tree(void **state)
{
        char *root = tu_mkdtemp(), *up = tu_path("%s/up", root), *p;
        unsigned order[N_FILES], descents = 0;
        const char *prev = NULL;
        struct seen s = {};

        (void)state;
        assert_int_equal(mkdir(up, 0755), 0);
        /* Created in a scrambled order: neither creation nor hash order is name order. */
        for (unsigned i = 0; i < N_FILES; i++)
                order[i] = (i * 1237u) % N_FILES;
        for (unsigned i = 0; i < N_FILES; i++) {
                p = tu_path("%s/f%04u.jpg", up, order[i]);
                tu_write_file(p, "x", 1);
                free(p);
        }
        p = tu_path("%s/.hidden.jpg", up), tu_write_file(p, "x", 1), free(p);
        p = tu_path("%s/upload.jpg.part", up), tu_write_file(p, "x", 1), free(p);
        p = tu_path("%s/link.jpg", up);
        assert_int_equal(symlink("/etc/passwd", p), 0);
        free(p);
        p = tu_path("%s/sub", up), assert_int_equal(mkdir(p, 0755), 0), free(p);
        p = tu_path("%s/sub/a.jpg", up), tu_write_file(p, "x", 1), free(p);
        p = tu_path("%s/sub/b.jpg", up), tu_write_file(p, "x", 1), free(p);
        p = tu_path("%s/.cache", up), assert_int_equal(mkdir(p, 0755), 0), free(p);
        p = tu_path("%s/.cache/c.jpg", up), tu_write_file(p, "x", 1), free(p);

        assert_int_equal(scan(up, true, &s), N_FILES + 3);
        assert_int_equal(s.n, N_FILES + 3);
        for (unsigned i = 0; i < N_FILES; i += 97) {
                p = tu_path("%s/f%04u.jpg", up, i);
                assert_int_equal(count_path(&s, p), 1);
                free(p);
        }
        p = tu_path("%s/link.jpg", up), assert_int_equal(count_path(&s, p), 1), free(p);
        p = tu_path("%s/sub/a.jpg", up), assert_int_equal(count_path(&s, p), 1), free(p);
        p = tu_path("%s/sub/b.jpg", up), assert_int_equal(count_path(&s, p), 1), free(p);

        /* Name order within each batch: the top folder's names go down at most once per
         * batch boundary (the folder holds N_FILES + 2 entries to report and "sub"). */
        for (size_t i = 0; i < s.n; i++) {
                const char *name = s.paths[i] + strlen(up) + 1;

                if (strchr(name, '/'))
                        continue;
                if (prev && strcmp(name, prev) < 0)
                        descents++;
                prev = name;
        }
        assert_true(descents <= (N_FILES + 3) / BATCH);
        seen_clear(&s);

        /* Not recursive: the sub-folder is passed over. */
        assert_int_equal(scan(up, false, &s), N_FILES + 1);
        p = tu_path("%s/sub/a.jpg", up), assert_int_equal(count_path(&s, p), 0), free(p);
        seen_clear(&s);

        tu_rm_rf(root);
        free(up);
        free(root);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_scan_tree),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
