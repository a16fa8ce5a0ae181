/* SPDX-License-Identifier: MIT */
/*
 * test-systemd-install.c - `cmake --install` into /usr and /opt prefixes: the installed unit names
 * the installed programs, and the installed imgd runs; and a configure without cmocka (no tests)
 * still works.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"
#include "systemd-fixture.h"

/* The first word of the unit's `key` after `skip` words (a program or an argument). */
static char *unit_word(const char *unit, const char *key, unsigned skip)
{
        char *v = sdfx_unit_get(unit, "Service", key), *save = NULL, *w, *word = NULL;

        if (!v)
                fail_msg("imgd.service: no %s=", key);
        w = strtok_r(v, " ", &save);
        for (unsigned i = 0; w && i < skip; i++)
                w = strtok_r(NULL, " ", &save);
        if (w)
                word = strdup(w);
        free(v);
        if (!word)
                fail_msg("imgd.service: %s= has fewer than %u words", key, skip + 1);
        return word;
}

/* `cmake --install build --prefix PREFIX` into DESTDIR=dest; fails the test if it fails. */
static void cmake_install(const char *dest, const char *prefix)
{
        char *cmake = tu_find_program("cmake", "cmake");
        char *out = NULL;
        int rc;

        setenv("DESTDIR", dest, 1);
        rc = tu_run(&out, cmake, "--install", IMGD_BUILD_DIR, "--prefix", prefix, NULL);
        unsetenv("DESTDIR");
        if (rc != 0)
                fail_msg("cmake --install --prefix %s: exit %d:\n%s", prefix, rc, out ? out : "");
        free(out);
        free(cmake);
}

/*
 * README's recipe, `cmake --install build --prefix PREFIX` after a default configure (the
 * build tree's prefix is /usr/local), into a DESTDIR: the unit it installs runs programs that
 * are there (ExecStart=, ExecReload=), names the configuration it installed, in `etc_dir`,
 * and the installed imgd starts and renders with the installed imgd-worker. A second install
 * keeps an operator's edits to the configuration.
 */
static void check_install(const char *prefix, const char *etc_dir)
{
        char *dest = tu_mkdtemp();
        char *unit_path = tu_path("%s%s/lib/systemd/system/imgd.service", dest, prefix);
        char *unit, *start, *conf, *reload, *p, *want_conf, *edited, *log;
        struct tu_daemon d;
        pid_t workers[4];
        unsigned n;

        cmake_install(dest, prefix);
        unit = tu_read_file(unit_path, NULL);
        if (!unit)
                fail_msg("--prefix %s: no unit at %s", prefix, unit_path);
        p = tu_path("%s%s/lib/systemd/system/imgd-http.socket", dest, prefix);
        if (access(p, R_OK) != 0)
                fail_msg("--prefix %s: imgd-http.socket was not installed beside imgd.service",
                         prefix);
        free(p);

        start = unit_word(unit, "ExecStart", 0);
        p = tu_path("%s%s", dest, start);
        if (strncmp(start, prefix, strlen(prefix)) != 0 || access(p, X_OK) != 0)
                fail_msg("--prefix %s: ExecStart= runs %s, which the install did not put there",
                         prefix, start);
        free(p);
        p = unit_word(unit, "ExecStart", 1);
        assert_string_equal(p, "-c");
        free(p);
        conf = unit_word(unit, "ExecStart", 2);
        want_conf = tu_path("%s/imgd/imgd.conf", etc_dir);
        if (strcmp(conf, want_conf) != 0)
                fail_msg("--prefix %s: ExecStart= reads %s, expected %s", prefix, conf, want_conf);
        p = tu_path("%s%s", dest, conf);
        if (access(p, R_OK) != 0)
                fail_msg("--prefix %s: the unit's configuration %s was not installed", prefix,
                         conf);
        free(p);
        reload = unit_word(unit, "ExecReload", 0);
        p = tu_path("%s%s", dest, reload);
        if (access(p, X_OK) != 0)
                fail_msg("--prefix %s: ExecReload= runs %s, which the install did not put there",
                         prefix, reload);
        free(p);
        p = unit_word(unit, "ExecReload", 2);
        if (strcmp(p, conf) != 0)
                fail_msg("--prefix %s: ExecReload= reads %s, ExecStart= %s", prefix, p, conf);
        free(p);

        /* The installed imgd finds the installed worker, not the build tree's. */
        tu_daemon_setup(&d, PIPE_1, 1, NULL);
        p = tu_path("%s%s", dest, start);
        unsetenv("IMGD_WORKER");
        sdfx_start_daemon(&d, p, NULL, false, false);
        free(p);
        p = tu_path("%s/i.png", d.uploads);
        tu_make_image(p, 120, 90, "png", false);
        free(p);
        tu_daemon_wait_idle(&d, 60);
        assert_int_equal(tu_count_files(d.media, "*_s.webp"), 1);
        n = tu_daemon_children(&d, workers, ELEMENTSOF(workers));
        assert_true(n > 0);
        for (unsigned i = 0; i < n; i++) {
                char exe[4096] = "", *link = tu_path("/proc/%d/exe", (int)workers[i]);
                ssize_t k = readlink(link, exe, sizeof exe - 1);

                assert_true(k > 0);
                if (strncmp(exe, dest, strlen(dest)) != 0) {
                        log = tu_read_file(d.log, NULL);
                        fail_msg("--prefix %s: the installed imgd runs worker %s\n%s", prefix, exe,
                                 log ? log : "");
                }
                free(link);
        }
        tu_daemon_cleanup(&d);

        /* An operator's edit survives the next install. */
        p = tu_path("%s%s", dest, conf);
        log = tu_read_file(p, NULL);
        assert_non_null(log);
        edited = tu_path("%s# edited by the operator\n", log);
        free(log);
        tu_write_file(p, edited, (size_t)-1);
        cmake_install(dest, prefix);
        log = tu_read_file(p, NULL);
        if (!log || strcmp(log, edited) != 0)
                fail_msg("--prefix %s: a second install overwrote the edited %s", prefix, conf);
        free(log);
        free(edited);
        free(p);

        tu_rm_rf(dest);
        free(want_conf);
        free(reload);
        free(conf);
        free(start);
        free(unit);
        free(unit_path);
        free(dest);
}

static void test_install_usr(void **state)
{
        (void)state;
        check_install("/usr", "/etc");
}

static void test_install_opt(void **state)
{
        (void)state;
        check_install("/opt/imgd", "/opt/imgd/etc");
}

/*
 * README's `cmake -S . -B build` on a machine without cmocka (libcmocka-dev, only needed for
 * the tests): the configure succeeds and says the tests are skipped. cmocka is hidden from
 * pkg-config by a PKG_CONFIG_LIBDIR holding every other package's .pc file.
 */
static void test_configure_without_cmocka(void **state)
{
        static const char script[] =
                "set -e\n"
                "pc=$1/pc; mkdir -p \"$pc\"\n"
                "for d in $(pkg-config --variable pc_path pkg-config | tr : ' '); do\n"
                "  [ -d \"$d\" ] || continue\n"
                "  for f in \"$d\"/*.pc; do\n"
                "    [ -e \"$f\" ] || continue\n"
                "    [ \"${f##*/}\" = cmocka.pc ] || ln -sf \"$f\" \"$pc/\"\n"
                "  done\n"
                "done\n"
                "! PKG_CONFIG_LIBDIR=$pc pkg-config --exists cmocka\n"
                "PKG_CONFIG_LIBDIR=$pc cmake -S \"$2\" -B \"$1/build\" 2>&1\n";
        char *dir = tu_mkdtemp(), *out = NULL;
        int rc;

        (void)state;
        rc = tu_run(&out, "/bin/sh", "-c", script, "sh", dir, IMGD_SOURCE_DIR, NULL);
        if (rc != 0 || !strstr(out, "cmocka not found"))
                fail_msg("cmake -S . -B build without cmocka: exit %d:\n%s", rc, out ? out : "");
        free(out);
        tu_rm_rf(dir);
        free(dir);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_install_usr),
                cmocka_unit_test(test_install_opt),
                cmocka_unit_test(test_configure_without_cmocka),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
