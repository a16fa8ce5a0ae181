/* SPDX-License-Identifier: MIT */
/*
 * test-config-paths.c - config_check_paths() (what --check-config, start-up and a reload run):
 * missing, unusable and to-be-created directories, watermark images, watches, outputs,
 * quarantine folders and the state directory that overlap (also through symbolic links and,
 * in a mount namespace of its own, a bind mount). Self-contained: files go to the temporary
 * directory of config-fixture.c.
 */
#include <dirent.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "shared/config.h"
#include "shared/macro.h"

#include "config-fixture.h"

static bool exists(const char *path)
{
        struct stat st;

        return stat(path, &st) == 0;
}

static bool is_dir(const char *path)
{
        struct stat st;

        return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* A configuration below <tmp>/<dir>, with the given watch path and output. */
static struct config *paths_conf(const char *dir, const char *watch_path, const char *output)
{
        _cleanup_free_ char *text = NULL;

        text = cfgfx_path_join("state_dir = \"%s/%s/state/lib\";\n"
                               "socket = \"%s/%s/run/sub/imgd.sock\";\n"
                               "watch = (\n"
                               "  { path = \"%s\"; output = \"%s\"; pipeline = \"p\"; }\n"
                               ");\n" PIPE,
                               cfgfx_tmp, dir, cfgfx_tmp, dir, watch_path, output);
        return cfgfx_expect_ok(text);
}

static void test_check_paths(void **state)
{
        _cleanup_free_ char *base = cfgfx_path_join("%s/paths", cfgfx_tmp), *in = NULL, *out = NULL;
        _cleanup_free_ char *afile = NULL, *bad_out = NULL, *missing = NULL, *error = NULL;
        _cleanup_free_ char *probe_pattern = NULL;
        struct config *c;
        DIR *d;
        struct dirent *de;

        assert_int_equal(mkdir(base, 0755), 0);
        in = cfgfx_path_join("%s/in", base);
        out = cfgfx_path_join("%s/media/deep/out", base);
        afile = cfgfx_path_join("%s/afile", base);
        bad_out = cfgfx_path_join("%s/afile/out", base);
        missing = cfgfx_path_join("%s/missing", base);
        cfgfx_write_text(afile, "not a directory\n");

        /* A missing watch path is named, with the watch's line. */
        c = paths_conf("paths", missing, out);
        assert_int_equal(config_check_paths(c, &error), -ENOENT);
        assert_non_null(error);
        assert_non_null(strstr(error, c->file));
        assert_non_null(strstr(error, ":4: "));
        assert_non_null(strstr(error, missing));
        assert_non_null(strstr(error, "No such file or directory"));
        free(error);
        error = NULL;
        config_free(c);

        /* A watch path that is a file. */
        c = paths_conf("paths", afile, out);
        assert_int_equal(config_check_paths(c, &error), -ENOTDIR);
        assert_non_null(strstr(error, afile));
        free(error);
        error = NULL;
        config_free(c);

        /* An output that cannot be created (below a regular file). */
        assert_int_equal(mkdir(in, 0755), 0);
        c = paths_conf("paths", in, bad_out);
        assert_int_equal(config_check_paths(c, &error), -ENOTDIR);
        assert_non_null(strstr(error, c->file));
        assert_non_null(strstr(error, bad_out));
        assert_non_null(strstr(error, "Not a directory"));
        free(error);
        error = NULL;
        config_free(c);

        /* Missing outputs, state and socket directories are created, nothing left behind. */
        c = paths_conf("paths", in, out);
        assert_int_equal(config_check_paths(c, &error), 0);
        assert_null(error);
        assert_true(is_dir(out));
        assert_true(is_dir(c->state_dir));
        {
                _cleanup_free_ char *sockdir = cfgfx_path_join("%s/run/sub", base);

                assert_true(is_dir(sockdir));
                assert_false(exists(c->socket));
        }
        /* Idempotent. */
        assert_int_equal(config_check_paths(c, &error), 0);
        d = opendir(out);
        assert_non_null(d);
        while ((de = readdir(d)))
                assert_true(strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0);
        closedir(d);
        config_free(c);
}

/* A configuration whose variant 'v' of pipeline 'w' (unused by the watch) has the watermark
 * image `image`. */
static struct config *watermark_conf(const char *base, const char *image)
{
        _cleanup_free_ char *text = NULL;

        text = cfgfx_path_join(
                "state_dir = \"%s/state\";\n"
                "socket = \"%s/imgd.sock\";\n"
                "watch = ( { path = \"%s/in\"; output = \"%s/out\"; pipeline = \"p\"; } );\n"
                "pipelines = {\n"
                "  p = ( { name = \"a\"; width = 10; height = 10; format = \"webp\"; } );\n"
                "  w = ( { name = \"a\"; width = 10; height = 10; format = \"webp\"; },\n"
                "        { name = \"v\"; width = 10; height = 10; format = \"png\";\n"
                "          watermark = { image = \"%s\"; }; } );\n"
                "};\n",
                base, base, base, base, image);
        return cfgfx_expect_ok(text);
}

/* --check-config: a watermark image that is missing, not a file, or not an image is a
 * configuration error naming the pipeline, the variant and the file. */
static void test_check_paths_watermark(void **state)
{
        static const unsigned char png_magic[] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n',
                                                   0,    0,   0,   13,  'I',  'H',  'D',  'R' };
        _cleanup_free_ char *base = cfgfx_path_join("%s/wm", cfgfx_tmp), *in = NULL, *logo = NULL;
        _cleanup_free_ char *text = NULL, *missing = NULL;
        static const struct {
                const char *name;
                int err;
                const char *cause;
        } cases[] = {
                { "missing.png", -ENOENT, "No such file or directory" },
                { "notes.png", -EMEDIUMTYPE, "not a supported image" },
                { "in", -EINVAL, "not a regular file" },
        };

        assert_int_equal(mkdir(base, 0755), 0);
        in = cfgfx_path_join("%s/in", base);
        assert_int_equal(mkdir(in, 0755), 0);
        text = cfgfx_path_join("%s/notes.png", base);
        cfgfx_write_text(text, "this is a text file named .png\n");

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_free_ char *image = cfgfx_path_join("%s/%s", base, cases[i].name);
                _cleanup_free_ char *error = NULL, *want = NULL;
                struct config *c = watermark_conf(base, image);

                assert_int_equal(config_check_paths(c, &error), cases[i].err);
                assert_non_null(error);
                want = cfgfx_path_join("%s: pipeline 'w': variant 'v': watermark image %s: %s",
                                       c->file, image, cases[i].cause);
                if (strncmp(error, want, strlen(want)) != 0)
                        fail_msg("\"%s\" is not \"%s...\"", error, want);
                config_free(c);
        }

        /* A file that starts like a PNG passes (the workers decode it). */
        logo = cfgfx_path_join("%s/logo.png", base);
        {
                FILE *f = fopen(logo, "we");

                assert_non_null(f);
                assert_int_equal(fwrite(png_magic, 1, sizeof png_magic, f), sizeof png_magic);
                assert_int_equal(fclose(f), 0);
        }
        {
                _cleanup_free_ char *error = NULL;
                struct config *c = watermark_conf(base, logo);

                assert_int_equal(config_check_paths(c, &error), 0);
                assert_null(error);
                config_free(c);
        }
}

/*
 * A configuration with state_dir `state` (NULL: <tmp>/state), a socket below <tmp>, and the watch
 * groups `watches` (each "  { ... },\n", the last comma dropped); caller frees.
 */
static char *overlap_text(const char *state, const char *watches)
{
        _cleanup_free_ char *list = strdup(watches);
        char *comma;

        assert_non_null(list);
        comma = strrchr(list, ',');
        assert_non_null(comma);
        *comma = ' ';
        if (state)
                return cfgfx_path_join("state_dir = \"%s\";\n"
                                       "socket = \"%s/run/imgd.sock\";\n"
                                       "watch = (\n%s);\n" PIPE,
                                       state, cfgfx_tmp, list);
        return cfgfx_path_join("state_dir = \"%s/state\";\n"
                               "socket = \"%s/run/imgd.sock\";\n"
                               "watch = (\n%s);\n" PIPE,
                               cfgfx_tmp, cfgfx_tmp, list);
}

/*
 * Loads text (valid by name) and expects config_check_paths() to fail with err and a
 * message starting "FILE:LINE: ", LINE being the line holding marker, that contains each of
 * words.
 */
static void expect_paths_error(const char *text, int err, const char *marker,
                               const char *const *words)
{
        _cleanup_free_ char *error = NULL, *prefix = NULL;
        struct config *c = cfgfx_expect_ok(text);
        int r;

        r = config_check_paths(c, &error);
        if (r != err || !error)
                print_error("unexpected result %d (wanted %d) for:\n%s\nmessage: %s\n", r, err,
                            text, error ? error : "(none)");
        assert_int_equal(r, err);
        assert_non_null(error);
        prefix = cfgfx_path_join("%s:%u: ", c->file, cfgfx_line_of(text, marker));
        if (strncmp(error, prefix, strlen(prefix)) != 0)
                print_error("message \"%s\" does not start with \"%s\"\n", error, prefix);
        assert_true(strncmp(error, prefix, strlen(prefix)) == 0);
        for (const char *const *w = words; *w; w++) {
                if (!strstr(error, *w))
                        print_error("message \"%s\" lacks \"%s\"\n", error, *w);
                assert_non_null(strstr(error, *w));
        }
        config_free(c);
}

/* Loads text and expects config_check_paths() to accept it. */
static void expect_paths_ok(const char *text)
{
        _cleanup_free_ char *error = NULL;
        struct config *c = cfgfx_expect_ok(text);
        int r;

        r = config_check_paths(c, &error);
        if (r < 0)
                print_error("unexpected error %d: %s\nfor:\n%s\n", r, error ? error : "(none)",
                            text);
        assert_int_equal(r, 0);
        config_free(c);
}

/*
 * Overlaps that only the file system shows: an output, a quarantine folder or the state
 * directory reached through a symbolic link into a watched tree, two watches of one folder
 * under two names, a watch inside a recursive one through a link. Each is refused by
 * config_check_paths() (what --check-config, start-up and a reload run) with the line of the
 * watch at fault, the other watch and its line, and the resolved path; nothing is created
 * inside the watched tree. A watch path that is itself a symbolic link is refused with its
 * target. Names that only share a prefix (up, up2) and a watch inside a non-recursive one
 * are accepted.
 */
static void test_check_paths_overlap(void **state)
{
        _cleanup_free_ char *b = cfgfx_path_join("%s/ov", cfgfx_tmp), *up = NULL, *up2 = NULL;
        _cleanup_free_ char *link_up = NULL, *link_b = NULL, *sub = NULL, *link_sub = NULL;
        _cleanup_free_ char *dangling = NULL;
        char *text, *w, *created;

        assert_int_equal(mkdir(b, 0755), 0);
        up = cfgfx_path_join("%s/up", b);
        up2 = cfgfx_path_join("%s/up2", b);
        sub = cfgfx_path_join("%s/up/sub", b);
        link_up = cfgfx_path_join("%s/link-up", b);   /* -> up */
        link_b = cfgfx_path_join("%s/link-b", b);     /* -> b */
        link_sub = cfgfx_path_join("%s/link-sub", b); /* -> up/sub */
        dangling = cfgfx_path_join("%s/dangling", b); /* -> up/nothing */
        assert_int_equal(mkdir(up, 0755), 0);
        assert_int_equal(mkdir(up2, 0755), 0);
        assert_int_equal(mkdir(sub, 0755), 0);
        assert_int_equal(symlink(up, link_up), 0);
        assert_int_equal(symlink(b, link_b), 0);
        assert_int_equal(symlink(sub, link_sub), 0);
        assert_int_equal(symlink("up/nothing", dangling), 0);

        /* An output through a link into the watched tree, not there yet: refused, and not
         * created (a reload would otherwise make it inside the running watch). */
        w = cfgfx_path_join(
                "  { path = \"%s/up\"; output = \"%s/link-up/out\"; pipeline = \"p\"; },\n", b, b);
        text = overlap_text(NULL, w);
        {
                _cleanup_free_ char *m1 =
                        cfgfx_path_join("output %s/link-up/out (resolved: %s/up/out)", b, b);
                _cleanup_free_ char *m2 = cfgfx_path_join("inside watched path %s/up (line 4)", b);
                const char *const words[] = { m1, m2, "picked up as uploads", NULL };

                expect_paths_error(text, -EINVAL, "link-up/out", words);
        }
        created = cfgfx_path_join("%s/out", up);
        assert_false(exists(created));
        free(created);
        free(text);
        free(w);

        /* An output that is a link to an existing folder in the tree, in another watch. */
        w = cfgfx_path_join("  { path = \"%s/up2\"; output = \"%s/o2\"; pipeline = \"p\"; },\n"
                            "  { path = \"%s/up\"; output = \"%s/o1\"; pipeline = \"p\";\n"
                            "    recursive = true; },\n"
                            "  { path = \"%s/x\"; output = \"%s/link-sub\"; pipeline = \"p\"; },\n",
                            b, b, b, b, cfgfx_tmp, b);
        text = overlap_text(NULL, w);
        {
                _cleanup_free_ char *m1 = cfgfx_path_join("watch '%s/x': output %s/link-sub "
                                                          "(resolved: %s)",
                                                          cfgfx_tmp, b, sub);
                _cleanup_free_ char *m2 = cfgfx_path_join("inside watched path %s/up (line 5)", b);
                const char *const words[] = { m1, m2, NULL };
                _cleanup_free_ char *x = cfgfx_path_join("%s/x", cfgfx_tmp);

                assert_int_equal(mkdir(x, 0755), 0);
                expect_paths_error(text, -EINVAL, "link-sub", words);
        }
        free(text);
        free(w);

        /* A dangling link as output: said so, not "No such file". */
        w = cfgfx_path_join(
                "  { path = \"%s/up2\"; output = \"%s/dangling/o\"; pipeline = \"p\"; },\n", b, b);
        text = overlap_text(NULL, w);
        {
                _cleanup_free_ char *m1 =
                        cfgfx_path_join("output %s/dangling/o: a symbolic link", b);
                const char *const words[] = { m1, "points to nothing", NULL };

                expect_paths_error(text, -ENOLINK, "dangling", words);
        }
        free(text);
        free(w);

        /* A watch path that is a symbolic link: refused with its target (the watcher does not
         * follow it, and start-up would fail with "Not a directory"). */
        w = cfgfx_path_join("  { path = \"%s/link-up\"; output = \"%s/o1\"; pipeline = \"p\"; },\n",
                            b, b);
        text = overlap_text(NULL, w);
        {
                _cleanup_free_ char *m1 =
                        cfgfx_path_join("watch path %s/link-up is a symbolic link "
                                        "to %s",
                                        b, up);
                const char *const words[] = { m1, "write the directory it points to", NULL };

                expect_paths_error(text, -ELOOP, "link-up", words);
        }
        free(text);
        free(w);

        /* One folder watched under two names (a link higher up in one of them). */
        w = cfgfx_path_join(
                "  { path = \"%s/up\"; output = \"%s/o1\"; pipeline = \"p\"; },\n"
                "  { path = \"%s/link-b/up\"; output = \"%s/o2\"; pipeline = \"p\"; },\n",
                b, b, b, b);
        text = overlap_text(NULL, w);
        {
                _cleanup_free_ char *m1 = cfgfx_path_join("watch '%s/link-b/up': path %s/link-b/up "
                                                          "(resolved: %s) is the same directory as "
                                                          "watch '%s' (line 4)",
                                                          b, b, up, up);
                const char *const words[] = { m1, NULL };

                expect_paths_error(text, -EINVAL, "link-b/up", words);
        }
        free(text);
        free(w);

        /* A watch inside a recursive watch, through a link: named with both lines. */
        w = cfgfx_path_join(
                "  { path = \"%s/link-b/up/sub\"; output = \"%s/o2\"; pipeline = \"p\"; },\n"
                "  { path = \"%s/up\"; output = \"%s/o1\"; pipeline = \"p\";\n"
                "    recursive = true; },\n",
                b, b, b, b);
        text = overlap_text(NULL, w);
        {
                _cleanup_free_ char *m1 =
                        cfgfx_path_join("watch '%s/link-b/up/sub': path "
                                        "%s/link-b/up/sub (resolved: %s) is inside "
                                        "watch '%s' (line 5), which is recursive",
                                        b, b, sub, up);
                const char *const words[] = { m1, "belong to both watches", NULL };

                expect_paths_error(text, -EINVAL, "link-b/up/sub", words);
        }
        free(text);
        free(w);

        /* A quarantine folder through a link into a watched tree. */
        w = cfgfx_path_join("  { path = \"%s/up2\"; output = \"%s/o2\"; pipeline = \"p\";\n"
                            "    quarantine = \"%s/link-up/dead\"; },\n"
                            "  { path = \"%s/up\"; output = \"%s/o1\"; pipeline = \"p\"; },\n",
                            b, b, b, b, b);
        text = overlap_text(NULL, w);
        {
                _cleanup_free_ char *m1 =
                        cfgfx_path_join("watch '%s': quarantine %s/link-up/dead "
                                        "(resolved: %s/dead) overlaps watched path "
                                        "%s (line 6)",
                                        up2, b, up, up);
                const char *const words[] = { m1, NULL };

                expect_paths_error(text, -EINVAL, "{ path", words);
        }
        free(text);
        free(w);

        /* The state directory through a link into a watched tree: its own line; not made. */
        w = cfgfx_path_join("  { path = \"%s/up\"; output = \"%s/o1\"; pipeline = \"p\"; },\n", b,
                            b);
        {
                _cleanup_free_ char *st = cfgfx_path_join("%s/link-up/state", b);
                _cleanup_free_ char *m1 =
                        cfgfx_path_join("state_dir %s (resolved: %s/state) is inside "
                                        "watched path %s (line 4)",
                                        st, up, up);
                const char *const words[] = { m1, "ledger", NULL };

                text = overlap_text(st, w);
                expect_paths_error(text, -EINVAL, "state_dir", words);
        }
        created = cfgfx_path_join("%s/state", up);
        assert_false(exists(created));
        free(created);
        free(text);
        free(w);

        /* Accepted: names that share a prefix (up, up2, and up2's output up2-out next to
         * them), links higher up in a watch path, a watch inside a non-recursive one. */
        w = cfgfx_path_join(
                "  { path = \"%s/up\"; output = \"%s/up2-out\"; pipeline = \"p\";\n"
                "    recursive = true; quarantine = \"%s/up-dead\"; },\n"
                "  { path = \"%s/link-b/up2\"; output = \"%s/up-out\"; pipeline = \"p\";\n"
                "    recursive = true; },\n",
                b, b, b, b, b);
        {
                _cleanup_free_ char *st = cfgfx_path_join("%s/up-state", b);

                text = overlap_text(st, w);
                expect_paths_ok(text);
                assert_true(is_dir(st));
        }
        free(text);
        free(w);
        w = cfgfx_path_join(
                "  { path = \"%s/up\"; output = \"%s/o1\"; pipeline = \"p\"; },\n"
                "  { path = \"%s/link-b/up/sub\"; output = \"%s/o2\"; pipeline = \"p\";\n"
                "    recursive = true; },\n",
                b, b, b, b);
        text = overlap_text(NULL, w);
        expect_paths_ok(text);
        free(text);
        free(w);
}

/*
 * In a child process with its own mount namespace (skipped where one cannot be had): binds
 * `source` onto `target` and runs config_check_paths() on each of cfgs, expecting -EINVAL
 * and a message with each of its words. Returns the child's exit status: 0 when all were as
 * expected, 77 when the namespace or the mount could not be made, 1 otherwise (the reason on
 * stderr).
 */
static int check_paths_with_bind(const char *source, const char *target, struct config **cfgs,
                                 const char *const (*words)[4], size_t n)
{
        int status;
        pid_t pid = fork();

        assert_true(pid >= 0);
        if (pid == 0) {
                if (unshare(CLONE_NEWNS) < 0) {
                        /* Not root: a user namespace of our own, mapped to our ids. */
                        uid_t uid = getuid();
                        gid_t gid = getgid();
                        char map[64];
                        int fd;

                        if (unshare(CLONE_NEWUSER | CLONE_NEWNS) < 0)
                                _exit(77);
                        fd = open("/proc/self/setgroups", O_WRONLY | O_CLOEXEC);
                        if (fd >= 0) {
                                (void)!write(fd, "deny", 4);
                                close(fd);
                        }
                        snprintf(map, sizeof map, "%u %u 1", (unsigned)uid, (unsigned)uid);
                        fd = open("/proc/self/uid_map", O_WRONLY | O_CLOEXEC);
                        if (fd < 0 || write(fd, map, strlen(map)) < 0)
                                _exit(77);
                        close(fd);
                        snprintf(map, sizeof map, "%u %u 1", (unsigned)gid, (unsigned)gid);
                        fd = open("/proc/self/gid_map", O_WRONLY | O_CLOEXEC);
                        if (fd < 0 || write(fd, map, strlen(map)) < 0)
                                _exit(77);
                        close(fd);
                }
                /* Nothing done here may reach the namespace the tests run in. */
                if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
                    mount(source, target, NULL, MS_BIND, NULL) < 0)
                        _exit(77);
                for (size_t i = 0; i < n; i++) {
                        char *error = NULL;
                        int r = config_check_paths(cfgs[i], &error);

                        if (r != -EINVAL || !error) {
                                fprintf(stderr, "case %zu: %d, wanted -EINVAL: %s\n", i, r,
                                        error ? error : "(none)");
                                _exit(1);
                        }
                        for (size_t k = 0; k < 4 && words[i][k]; k++)
                                if (!strstr(error, words[i][k])) {
                                        fprintf(stderr, "case %zu: \"%s\" lacks \"%s\"\n", i, error,
                                                words[i][k]);
                                        _exit(1);
                                }
                        free(error);
                }
                _exit(0);
        }
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        return WEXITSTATUS(status);
}

/*
 * A bind mount of a watched folder is the same folder under another name, which no
 * resolving of symbolic links shows: an output below the bind and a second watch of it are
 * found by device and inode, and refused with the line of the watch.
 */
static void test_check_paths_bind_mount(void **state)
{
        _cleanup_free_ char *b = cfgfx_path_join("%s/bind", cfgfx_tmp), *up = NULL, *alias = NULL;
        _cleanup_free_ char *w1 = NULL, *w2 = NULL, *t1 = NULL, *t2 = NULL, *m1 = NULL;
        _cleanup_free_ char *m2 = NULL, *created = NULL;
        struct config *cfgs[2];
        int r;

        up = cfgfx_path_join("%s/up", b);
        alias = cfgfx_path_join("%s/alias", b);
        assert_int_equal(mkdir(b, 0755), 0);
        assert_int_equal(mkdir(up, 0755), 0);
        assert_int_equal(mkdir(alias, 0755), 0);

        w1 = cfgfx_path_join("  { path = \"%s\"; output = \"%s/out\"; pipeline = \"p\"; },\n", up,
                             alias);
        w2 = cfgfx_path_join("  { path = \"%s\"; output = \"%s/o1\"; pipeline = \"p\"; },\n"
                             "  { path = \"%s\"; output = \"%s/o2\"; pipeline = \"p\"; },\n",
                             up, b, alias, b);
        t1 = overlap_text(NULL, w1);
        t2 = overlap_text(NULL, w2);
        m1 = cfgfx_path_join("%s:4: watch '%s': output %s/out is inside watched path %s (line 4)",
                             cfgfx_tmp, up, alias, up);
        m2 = cfgfx_path_join(
                "%s:5: watch '%s': path %s is the same directory as watch '%s' (line 4)", cfgfx_tmp,
                alias, alias, up);
        const char *const words[2][4] = { { m1 + strlen(cfgfx_tmp) + 1, "device and inode", NULL },
                                          { m2 + strlen(cfgfx_tmp) + 1, "device and inode",
                                            NULL } };

        cfgs[0] = cfgfx_expect_ok(t1);
        cfgs[1] = cfgfx_expect_ok(t2);
        r = check_paths_with_bind(up, alias, cfgs, words, 2);
        config_free(cfgs[0]);
        config_free(cfgs[1]);
        if (r == 77)
                skip();
        assert_int_equal(r, 0);
        created = cfgfx_path_join("%s/out", up);
        assert_false(exists(created));
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_check_paths),
                cmocka_unit_test(test_check_paths_watermark),
                cmocka_unit_test(test_check_paths_overlap),
                cmocka_unit_test(test_check_paths_bind_mount),
        };

        return cmocka_run_group_tests(tests, cfgfx_setup, cfgfx_teardown);
}
