/* SPDX-License-Identifier: MIT */
/*
 * test-layout.c - README.md's "Layout of the source" keeps up with the tree:
 *
 *  - every program folder under src/ is a heading of the section's block ("src/daemon/");
 *  - every .c file of a folder is named under its folder's heading, and so is every header
 *    that has no .c of its own (macro.h, a private header): a header beside its .c is that
 *    file's contract and needs no line of its own;
 *  - every file the section names under a folder exists there (no stale line after a file
 *    is renamed or removed).
 *
 * A file added without a line in the README, or a line left behind, fails the test with the
 * file's name.
 */
#include <ctype.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "testutil.h"

#define README IMGD_SOURCE_DIR "/README.md"
#define SRC IMGD_SOURCE_DIR "/src"
#define MAX_NAMES 512

/* What the README says: file names by folder ("daemon", "ledger.c"). */
struct listing {
        unsigned n;
        char *folder[MAX_NAMES];
        char *file[MAX_NAMES];
        unsigned n_folders;
        char *folders[32];
};

static void listing_free(struct listing *l)
{
        for (unsigned i = 0; i < l->n; i++) {
                free(l->folder[i]);
                free(l->file[i]);
        }
        for (unsigned i = 0; i < l->n_folders; i++)
                free(l->folders[i]);
}

static bool name_char(char c)
{
        return isalnum((unsigned char)c) || c == '-' || c == '_';
}

/* Each word of `line` that ends in ".c" or ".h" is a file of `folder`. */
static void add_names(struct listing *l, const char *folder, const char *line, size_t len)
{
        for (size_t i = 0; i < len;) {
                size_t start = i, end;

                while (i < len && name_char(line[i]))
                        i++;
                end = i;
                if (end > start && i + 1 < len && line[i] == '.' &&
                    (line[i + 1] == 'c' || line[i + 1] == 'h') &&
                    (i + 2 == len || !name_char(line[i + 2]))) {
                        assert_true(l->n < MAX_NAMES);
                        l->folder[l->n] = strdup(folder);
                        l->file[l->n] = strndup(line + start, end - start + 2);
                        l->n++;
                        i += 2;
                }
                if (i == start)
                        i++;
        }
}

/* The first ``` block after "## Layout of the source": lines "src/<folder>/ ..." open a
 * folder; indented lines under it name its files. */
static void read_listing(struct listing *l)
{
        char *text = tu_read_file(README, NULL), *p, *end;
        char folder[64] = "";

        assert_non_null(text);
        p = strstr(text, "\n## Layout of the source\n");
        if (!p)
                fail_msg("%s has no section \"Layout of the source\"", README);
        p = strstr(p, "\n```");
        assert_non_null(p);
        p = strchr(p + 1, '\n') + 1;
        end = strstr(p, "\n```");
        assert_non_null(end);
        while (p < end) {
                char *nl = strchr(p, '\n');
                size_t len = (size_t)((nl && nl < end ? nl : end) - p);

                if (strncmp(p, "src/", 4) == 0) {
                        size_t n = strcspn(p + 4, "/ \n");

                        assert_true(n < sizeof(folder));
                        memcpy(folder, p + 4, n);
                        folder[n] = '\0';
                        assert_true(l->n_folders < ELEMENTSOF(l->folders));
                        l->folders[l->n_folders++] = strdup(folder);
                } else if (!isspace((unsigned char)p[0])) {
                        folder[0] = '\0'; /* tests/, completion/: not src */
                } else if (folder[0]) {
                        add_names(l, folder, p, len);
                }
                p += len + 1;
        }
        free(text);
}

static bool listed(const struct listing *l, const char *folder, const char *file)
{
        for (unsigned i = 0; i < l->n; i++)
                if (strcmp(l->folder[i], folder) == 0 && strcmp(l->file[i], file) == 0)
                        return true;
        return false;
}

static bool exists(const char *folder, const char *file)
{
        char *path = tu_path("%s/%s/%s", SRC, folder, file);
        struct stat st;
        bool ok = stat(path, &st) == 0 && S_ISREG(st.st_mode);

        free(path);
        return ok;
}

/* A file the README must name: a .c, or a .h without a .c of the same name. */
static bool needs_line(const char *folder, const char *file)
{
        size_t n = strlen(file);
        char *c;
        bool own;

        if (n < 3 || file[n - 2] != '.')
                return false;
        if (file[n - 1] == 'c')
                return true;
        if (file[n - 1] != 'h')
                return false;
        c = strdup(file);
        c[n - 1] = 'c';
        own = exists(folder, c);
        free(c);
        return !own;
}

static void test_every_file_listed(void **state)
{
        struct listing l = { 0 };
        DIR *src = opendir(SRC);
        struct dirent *de;
        unsigned missing = 0, files = 0;

        (void)state;
        read_listing(&l);
        assert_non_null(src);
        while ((de = readdir(src))) {
                char *path;
                DIR *d;
                struct dirent *fe;
                bool heading = false;

                if (de->d_name[0] == '.')
                        continue;
                path = tu_path("%s/%s", SRC, de->d_name);
                d = opendir(path);
                free(path);
                if (!d)
                        continue;
                for (unsigned i = 0; i < l.n_folders; i++)
                        heading |= strcmp(l.folders[i], de->d_name) == 0;
                if (!heading) {
                        print_error("README.md, Layout of the source: no heading src/%s/\n",
                                    de->d_name);
                        missing++;
                }
                while ((fe = readdir(d))) {
                        if (!needs_line(de->d_name, fe->d_name))
                                continue;
                        files++;
                        if (!listed(&l, de->d_name, fe->d_name)) {
                                print_error("README.md, Layout of the source: src/%s/%s is "
                                            "not listed under src/%s/\n",
                                            de->d_name, fe->d_name, de->d_name);
                                missing++;
                        }
                }
                closedir(d);
        }
        closedir(src);
        listing_free(&l);
        assert_true(files > 20);
        assert_int_equal(missing, 0);
}

static void test_no_stale_lines(void **state)
{
        struct listing l = { 0 };
        unsigned stale = 0;

        (void)state;
        read_listing(&l);
        assert_true(l.n > 20);
        for (unsigned i = 0; i < l.n; i++)
                if (!exists(l.folder[i], l.file[i])) {
                        print_error("README.md, Layout of the source: src/%s/%s is listed "
                                    "but does not exist\n",
                                    l.folder[i], l.file[i]);
                        stale++;
                }
        listing_free(&l);
        assert_int_equal(stale, 0);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_every_file_listed),
                cmocka_unit_test(test_no_stale_lines),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
