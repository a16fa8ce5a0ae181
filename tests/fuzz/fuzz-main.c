/* SPDX-License-Identifier: MIT */
/*
 * fuzz-main.c - runs a libFuzzer harness (LLVMFuzzerTestOneInput) once over each file named
 * on the command line, or each file in a named directory, for compilers without libFuzzer:
 * the seed corpus then is a regression test under ctest. Exit status 0 when every input was
 * run (a violated invariant aborts), 1 when an input cannot be read or none was found.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz.h"

/* Runs the harness on the file at path. Returns 0, or -1 if it cannot be read. */
static int run_file(const char *path)
{
        size_t cap = FUZZ_MAX_INPUT + 1, len = 0;
        uint8_t *buf = malloc(cap);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        ssize_t k;

        if (!buf || fd < 0) {
                fprintf(stderr, "fuzz-main: %s: %s\n", path, strerror(errno));
                free(buf);
                if (fd >= 0)
                        close(fd);
                return -1;
        }
        while (len < cap && (k = read(fd, buf + len, cap - len)) > 0)
                len += (size_t)k;
        close(fd);
        LLVMFuzzerTestOneInput(buf, len);
        free(buf);
        return 0;
}

static int compare(const void *a, const void *b)
{
        return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(int argc, char **argv)
{
        unsigned runs = 0, failures = 0;

        for (int i = 1; i < argc; i++) {
                struct stat st;
                struct dirent *de;
                char **names = NULL;
                size_t n = 0;
                DIR *d;

                if (stat(argv[i], &st) < 0 || !S_ISDIR(st.st_mode)) {
                        failures += run_file(argv[i]) < 0;
                        runs++;
                        continue;
                }
                d = opendir(argv[i]);
                if (!d) {
                        fprintf(stderr, "fuzz-main: %s: %s\n", argv[i], strerror(errno));
                        failures++;
                        continue;
                }
                while ((de = readdir(d))) {
                        char **p;

                        if (de->d_name[0] == '.')
                                continue;
                        p = realloc(names, (n + 1) * sizeof *names);
                        if (!p || asprintf(&p[n], "%s/%s", argv[i], de->d_name) < 0)
                                abort();
                        names = p;
                        n++;
                }
                closedir(d);
                qsort(names, n, sizeof *names, compare);
                for (size_t k = 0; k < n; k++) {
                        failures += run_file(names[k]) < 0;
                        runs++;
                        free(names[k]);
                }
                free(names);
        }
        printf("fuzz-main: %u input(s) run, %u unreadable\n", runs, failures);
        return runs > 0 && failures == 0 ? 0 : 1;
}
