/* SPDX-License-Identifier: MIT */
/*
 * test-examples.c - the applications in examples/ (examples/node/upload-and-wait.js with
 * node, examples/python/upload_and_wait.py with python3), run against a real imgd:
 *
 *  - an image dropped with the example is rendered, and the example prints each published
 *    variant ("VARIANT PATH", the files exist) and exits 0, leaving no temporary file in the
 *    watched folder;
 *  - a corrupt image: the example reports the dead job with imgd's error and exits 1;
 *  - the same file at the same path again makes no new job: the example times out with a
 *    clear message and exits 1;
 *  - no daemon at the socket: exit 3.
 *
 * node (Debian package nodejs) and python3 must be installed; scripts/deps.sh --tests
 * installs them. A missing one fails the test rather than skipping it.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

struct example {
        const char *interpreter, *package, *script;
};

static const struct example node = { "node", "nodejs",
                                     IMGD_SOURCE_DIR "/examples/node/upload-and-wait.js" };
static const struct example python = { "python3", "python3",
                                       IMGD_SOURCE_DIR "/examples/python/upload_and_wait.py" };

#define PIPELINE                                                                                   \
        "( { name = \"small\"; width = 64; height = 64; fit = \"cover\"; format = \"webp\"; },"    \
        "  { name = \"large\"; width = 200; height = 200; fit = \"inside\"; format = \"jpeg\"; } " \
        ")"

/* Runs the example on `file` with the given socket and timeout; returns its exit status and
 * its output (stdout and stderr) in *ret_out. */
static int run_example(const struct example *e, struct tu_daemon *d, const char *socket,
                       const char *timeout, const char *file, char **ret_out)
{
        char *interpreter = tu_find_program(e->interpreter, e->package);
        int rc = tu_run(ret_out, interpreter, e->script, "--socket", socket, "--watch", d->uploads,
                        "--timeout", timeout, file, NULL);

        if (!*ret_out)
                *ret_out = strdup("");
        free(interpreter);
        return rc;
}

/* The number of names starting with '.' in dir (temporary files left behind). */
static unsigned hidden_files(const char *dir)
{
        DIR *dh = opendir(dir);
        struct dirent *de;
        unsigned n = 0;

        assert_non_null(dh);
        while ((de = readdir(dh)))
                if (de->d_name[0] == '.' && strcmp(de->d_name, ".") != 0 &&
                    strcmp(de->d_name, "..") != 0)
                        n++;
        closedir(dh);
        return n;
}

static void test_upload_and_wait(void **state)
{
        const struct example *e = *state;
        struct tu_daemon d;
        char *file, *out = NULL, *small, *large, *line;
        int rc;

        tu_daemon_setup(&d, PIPELINE, 1, NULL);
        tu_daemon_start(&d);
        file = tu_path("%s/in/photo-%s.png", d.root, e->interpreter);
        tu_make_image(file, 400, 300, "png", false);

        rc = run_example(e, &d, d.socket, "120", file, &out);
        if (rc != 0)
                fail_msg("%s %s: exit %d: %s", e->interpreter, e->script, rc, out);
        small = tu_path("%s/photo-%s_small.webp", d.media, e->interpreter);
        large = tu_path("%s/photo-%s_large.jpg", d.media, e->interpreter);
        line = tu_path("small %s\n", small);
        if (!strstr(out, line))
                fail_msg("the output lacks '%s': %s", line, out);
        free(line);
        line = tu_path("large %s\n", large);
        if (!strstr(out, line))
                fail_msg("the output lacks '%s': %s", line, out);
        free(line);
        /* Published when the example says so. */
        assert_int_equal(access(small, R_OK), 0);
        assert_int_equal(access(large, R_OK), 0);
        assert_int_equal(hidden_files(d.uploads), 0);
        free(out);
        out = NULL;

        /* The same content at the same path again is no new job: nothing to wait for. */
        rc = run_example(e, &d, d.socket, "3", file, &out);
        assert_int_equal(rc, 1);
        if (!strstr(out, "timed out after 3 s"))
                fail_msg("no time-out message: %s", out);
        free(out);
        out = NULL;

        free(small);
        free(large);
        free(file);
        tu_daemon_cleanup(&d);
}

static void test_dead(void **state)
{
        const struct example *e = *state;
        struct tu_daemon d;
        char *file, *out = NULL, *nosock;
        int rc;

        tu_daemon_setup(&d, PIPELINE, 1, NULL);
        tu_daemon_start(&d);
        file = tu_path("%s/in/corrupt-%s.png", d.root, e->interpreter);
        tu_write_file(file, "this is not an image\n", (size_t)-1);

        rc = run_example(e, &d, d.socket, "120", file, &out);
        assert_int_equal(rc, 1);
        if (!strstr(out, "dead") || !strstr(out, "corrupt-") || !strstr(out, "not a supported"))
                fail_msg("%s did not report the dead job: %s", e->script, out);
        assert_null(strstr(out, "small "));
        assert_int_equal(hidden_files(d.uploads), 0);
        free(out);
        out = NULL;

        /* No daemon behind the socket. */
        nosock = tu_path("%s/none.sock", d.root);
        rc = run_example(e, &d, nosock, "5", file, &out);
        if (rc != 3)
                fail_msg("exit %d, not 3, without a daemon: %s", rc, out);
        free(out);
        free(nosock);
        free(file);
        tu_daemon_cleanup(&d);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_prestate(test_upload_and_wait, (void *)&node),
                cmocka_unit_test_prestate(test_dead, (void *)&node),
                cmocka_unit_test_prestate(test_upload_and_wait, (void *)&python),
                cmocka_unit_test_prestate(test_dead, (void *)&python),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
