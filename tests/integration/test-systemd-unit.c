/* SPDX-License-Identifier: MIT */
/*
 * test-systemd-unit.c - the systemd unit, systemd/imgd.service, as a file: what issue 5 asks of
 * it, how `systemd-analyze security` rates it (at most 2.0), and that `systemd-analyze verify`
 * finds nothing wrong with it.
 *
 * systemd-analyze must be installed (Debian package systemd, installed by scripts/deps.sh
 * --tests): a missing one fails these tests rather than skipping them, so the checks cannot
 * silently stop running.
 *
 * verify needs a unit whose programs exist and whose man pages man(1) can find, so it is run on a
 * copy in a temporary directory with /usr/sbin/imgd and /usr/bin/imgctl replaced by the build
 * tree's, and with MANPATH pointing at a temporary man tree holding man/imgd.8, imgctl.1 and
 * imgd.conf.5 (the unit's Documentation=). Everything else is checked as shipped: User=imgd stays,
 * since verify does not look users up. A copy whose ExecStart= names a missing program must fail,
 * which shows verify really checks.
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

#define EXPOSURE_MAX 2.0

/* [Service] key is set, and its value (all assignments joined) is exactly `want`. */
static void assert_service(const char *unit, const char *key, const char *want)
{
        char *v = sdfx_unit_get(unit, "Service", key);

        if (!v || strcmp(v, want) != 0)
                fail_msg("imgd.service: expected %s=%s, found %s%s%s", key, want,
                         v ? key : "(not set)", v ? "=" : "", v ? v : "");
        free(v);
}

/* [Service] key has the word `word` among its values. */
static void assert_service_has(const char *unit, const char *key, const char *word)
{
        char *v = sdfx_unit_get(unit, "Service", key);
        bool found = false;

        if (v) {
                char *save = NULL;

                for (char *w = strtok_r(v, " ", &save); w && !found; w = strtok_r(NULL, " ", &save))
                        found = strcmp(w, word) == 0;
        }
        free(v);
        if (!found)
                fail_msg("imgd.service: %s= does not contain %s", key, word);
}

static void test_unit_contents(void **state)
{
        char *unit = sdfx_read_unit();
        char *v;

        (void)state;
        assert_service(unit, "Type", "notify");
        /* A rejected reload fails systemctl reload (issue 14): not a bare kill -HUP. */
        assert_service(unit, "ExecReload", "/usr/bin/imgctl -c /etc/imgd/imgd.conf reload");
        assert_service(unit, "Restart", "on-failure");
        /* systemctl stop signals imgd, not its workers (issue 14). */
        assert_service(unit, "KillMode", "mixed");
        assert_service(unit, "WatchdogSec", "30s");
        assert_service(unit, "User", "imgd");
        assert_service(unit, "Group", "imgd");
        assert_service(unit, "StateDirectory", "imgd");
        assert_service(unit, "RuntimeDirectory", "imgd");
        assert_service(unit, "RuntimeDirectoryMode", "0750");
        assert_service(unit, "UMask", "0022");
        assert_service(unit, "ProtectSystem", "strict");
        assert_service_has(unit, "ReadWritePaths", "-/srv/uploads");
        assert_service_has(unit, "ReadWritePaths", "-/srv/media");
        assert_service(unit, "ProtectHome", "yes");
        assert_service(unit, "PrivateTmp", "yes");
        assert_service(unit, "PrivateDevices", "yes");
        assert_service(unit, "PrivateNetwork", "yes");
        assert_service(unit, "NoNewPrivileges", "yes");
        assert_service(unit, "RestrictAddressFamilies", "AF_UNIX");
        assert_service(unit, "RestrictNamespaces", "yes");
        assert_service(unit, "LockPersonality", "yes");
        assert_service(unit, "SystemCallArchitectures", "native");
        assert_service_has(unit, "SystemCallFilter", "@system-service");
        assert_service(unit, "CapabilityBoundingSet", "");
        assert_service(unit, "MemoryDenyWriteExecute", "yes");
        assert_service_has(unit, "Environment", "VIPS_NOVECTOR=1");

        v = sdfx_unit_get(unit, "Service", "MemoryMax");
        assert_non_null(v);
        free(v);
        v = sdfx_unit_get(unit, "Service", "TasksMax");
        assert_non_null(v);
        free(v);
        /* The daemon checks its configuration before systemd considers it started: before
         * READY=1 (Type=notify), and a configuration error is its exit status 78, which
         * RestartPreventExitStatus= turns into a failed unit rather than a restart loop.
         * Not in an ExecStartPre=: its failure is not the main process' exit status, so
         * RestartPreventExitStatus= would not apply and Restart=on-failure would loop. */
        v = sdfx_unit_get(unit, "Service", "ExecStartPre");
        if (v)
                fail_msg("imgd.service: ExecStartPre=%s: a failing one is restarted", v);
        assert_service(unit, "RestartPreventExitStatus", "78");
        v = sdfx_unit_get(unit, "Unit", "StartLimitIntervalSec");
        assert_non_null(v);
        free(v);
        v = sdfx_unit_get(unit, "Unit", "StartLimitBurst");
        assert_non_null(v);
        assert_true(atoi(v) > 0);
        free(v);
        v = sdfx_unit_get(unit, "Service", "ExecStart");
        assert_non_null(v);
        assert_non_null(strstr(v, "/usr/sbin/imgd -c /etc/imgd/imgd.conf"));
        free(v);
        v = sdfx_unit_get(unit, "Install", "WantedBy");
        assert_non_null(v);
        assert_string_equal(v, "multi-user.target");
        free(v);
        free(unit);

        /* GET /metrics and /health reach the service through a socket systemd opens in the
         * host's network and passes as "http" (http.h), so PrivateNetwork=yes above stays. */
        unit = tu_read_file(IMGD_SOURCE_DIR "/systemd/imgd-http.socket", NULL);
        assert_non_null(unit);
        static const char *const want[][3] = {
                { "Socket", "ListenStream", "127.0.0.1:9118" },
                { "Socket", "FileDescriptorName", "http" },
                { "Socket", "Service", "imgd.service" },
                { "Install", "WantedBy", "sockets.target" },
        };
        for (size_t i = 0; i < ELEMENTSOF(want); i++) {
                v = sdfx_unit_get(unit, want[i][0], want[i][1]);
                if (!v || strcmp(v, want[i][2]) != 0)
                        fail_msg("imgd-http.socket: %s=%s, expected %s", want[i][1], v ? v : "",
                                 want[i][2]);
                free(v);
        }
        free(unit);
}

static void test_security_exposure(void **state)
{
        char *analyze = tu_find_program("systemd-analyze", "systemd");
        char *out = NULL, *line, *end, *save = NULL;
        const char *tag = "Overall exposure level for imgd.service:";
        double exposure = -1;
        int rc;

        (void)state;
        /* --threshold is in tenths: the command itself fails above 2.0 too. */
        rc = tu_run(&out, analyze, "security", "--offline=true", "--threshold=20", UNIT_PATH, NULL);
        line = strstr(out ? out : "", tag);
        if (!line)
                fail_msg("systemd-analyze security printed no \"%s\" line (exit %d):\n%s", tag, rc,
                         out ? out : "");
        exposure = strtod(line + strlen(tag), &end);
        if (end == line + strlen(tag))
                fail_msg("cannot read the exposure level in: %.80s", line);
        print_message("systemd-analyze security: exposure %.1f (at most %.1f allowed)\n", exposure,
                      EXPOSURE_MAX);
        /* What is left, for the record. */
        for (char *l = strtok_r(out, "\n", &save); l; l = strtok_r(NULL, "\n", &save))
                if (strncmp(l, "\xe2\x9c\x97", 3) == 0) /* ✗ */
                        print_message("  %s\n", l);
        if (exposure > EXPOSURE_MAX)
                fail_msg("imgd.service is rated %.1f, more than %.1f", exposure, EXPOSURE_MAX);
        assert_int_equal(rc, 0);
        free(out);
        free(analyze);
}

static char *replace_all(const char *s, const char *from, const char *to)
{
        size_t n = 0, flen = strlen(from), tlen = strlen(to);
        char *out, *q;

        for (const char *p = strstr(s, from); p; p = strstr(p + flen, from))
                n++;
        out = q = malloc(strlen(s) + n * tlen + 1);
        assert_non_null(out);
        for (const char *p = s;;) {
                const char *m = strstr(p, from);

                if (!m) {
                        strcpy(q, p);
                        break;
                }
                memcpy(q, p, (size_t)(m - p));
                q += m - p;
                memcpy(q, to, tlen);
                q += tlen;
                p = m + flen;
        }
        return out;
}

/* A man tree under dir with the pages of man/, as an installation has them. */
static char *make_man_tree(const char *dir)
{
        static const char *const pages[][2] = {
                { "imgd.8", "man8" },
                { "imgctl.1", "man1" },
                { "imgd.conf.5", "man5" },
        };
        char *root = tu_path("%s/man", dir);

        for (size_t i = 0; i < ELEMENTSOF(pages); i++) {
                char *src = tu_path("%s/man/%s", IMGD_SOURCE_DIR, pages[i][0]);
                char *dst = tu_path("%s/%s/%s", root, pages[i][1], pages[i][0]);
                size_t len = 0;
                char *text = tu_read_file(src, &len);

                if (!text)
                        fail_msg("cannot read %s", src);
                tu_write_file(dst, text, len);
                free(text);
                free(src);
                free(dst);
        }
        return root;
}

static void test_verify(void **state)
{
        char *analyze = tu_find_program("systemd-analyze", "systemd");
        char *dir = tu_mkdtemp();
        char *unit = sdfx_read_unit();
        char *copy0 = replace_all(unit, "/usr/sbin/imgd", IMGD_BUILD_DIR "/imgd");
        char *copy = replace_all(copy0, "/usr/bin/imgctl", IMGD_BUILD_DIR "/imgctl");
        char *broken = replace_all(unit, "/usr/sbin/imgd", "/nonexistent/imgd");
        char *unit_path = tu_path("%s/imgd.service", dir);
        char *broken_dir = tu_path("%s/broken", dir);
        char *broken_path = tu_path("%s/imgd.service", broken_dir);
        char *man = make_man_tree(dir);
        char *old_manpath = getenv("MANPATH") ? strdup(getenv("MANPATH")) : NULL;
        char *out = NULL;
        int rc;

        (void)state;
        assert_int_equal(access(IMGD_BUILD_DIR "/imgctl", X_OK), 0);
        tu_write_file(unit_path, copy, (size_t)-1);
        tu_write_file(broken_path, broken, (size_t)-1);
        setenv("MANPATH", man, 1);

        rc = tu_run(&out, analyze, "verify", unit_path, NULL);
        if (rc != 0 || (out && *out))
                fail_msg("systemd-analyze verify %s: exit %d:\n%s", unit_path, rc, out ? out : "");
        free(out);
        out = NULL;

        /* The HTTP socket, beside the service it activates. */
        {
                char *sock = tu_read_file(IMGD_SOURCE_DIR "/systemd/imgd-http.socket", NULL);
                char *sock_path = tu_path("%s/imgd-http.socket", dir);

                assert_non_null(sock);
                tu_write_file(sock_path, sock, (size_t)-1);
                rc = tu_run(&out, analyze, "verify", sock_path, NULL);
                if (rc != 0 || (out && *out))
                        fail_msg("systemd-analyze verify %s: exit %d:\n%s", sock_path, rc,
                                 out ? out : "");
                free(out);
                out = NULL;
                free(sock_path);
                free(sock);
        }

        /* The control: a missing program is reported, so the check above means something. */
        rc = tu_run(&out, analyze, "verify", broken_path, NULL);
        assert_int_not_equal(rc, 0);
        assert_non_null(out);
        if (!strstr(out, "/nonexistent/imgd"))
                fail_msg("systemd-analyze verify did not name the missing program:\n%s", out);
        free(out);

        if (old_manpath)
                setenv("MANPATH", old_manpath, 1);
        else
                unsetenv("MANPATH");
        free(old_manpath);
        tu_rm_rf(dir);
        free(man);
        free(broken_path);
        free(broken_dir);
        free(unit_path);
        free(broken);
        free(copy);
        free(copy0);
        free(unit);
        free(dir);
        free(analyze);
}

/* A path of `list` (words, "-" prefixes dropped) is `path` or a parent of it. */
static bool covered_by(const char *list, const char *path)
{
        char *copy = strdup(list ? list : ""), *save = NULL;
        bool found = false;

        assert_non_null(copy);
        for (char *w = strtok_r(copy, " ", &save); w && !found; w = strtok_r(NULL, " ", &save)) {
                size_t n;

                w += *w == '-';
                n = strlen(w);
                while (n > 1 && w[n - 1] == '/')
                        w[--n] = '\0';
                found = strcmp(w, "/") == 0 ||
                        (strncmp(path, w, n) == 0 && (path[n] == '\0' || path[n] == '/'));
        }
        free(copy);
        return found;
}

/*
 * `path` itself is a word of `list` ("-" prefixes and trailing slashes dropped). On systemd
 * 252 a path of ReadWritePaths=, StateDirectory=, RuntimeDirectory= or the private /var/tmp
 * is a bind mount of its own, which does not take the noexec of a parent in NoExecPaths=
 * (seen in scripts/systemd-test.sh: NoExecPaths=/var left /var/lib/imgd and /var/tmp
 * executable), so each must be named itself.
 */
static bool named_in(const char *list, const char *path)
{
        char *copy = strdup(list ? list : ""), *save = NULL;
        bool found = false;

        assert_non_null(copy);
        for (char *w = strtok_r(copy, " ", &save); w && !found; w = strtok_r(NULL, " ", &save)) {
                size_t n;

                w += *w == '-';
                n = strlen(w);
                while (n > 1 && w[n - 1] == '/')
                        w[--n] = '\0';
                found = strcmp(w, path) == 0;
        }
        free(copy);
        return found;
}

/*
 * On systemd 252, a path in ExecPaths= becomes a bind mount of its own that the read-only
 * pass of ProtectSystem=strict skips: ExecPaths=/usr made /usr writable inside the service's
 * namespace. So the unit has no ExecPaths= at all, and W^X comes from NoExecPaths= naming every
 * place the service can write instead: the ReadWritePaths=, its StateDirectory= and
 * RuntimeDirectory=, the private /tmp and /var/tmp, and /dev/shm. NoExecPaths=/ is not
 * usable without ExecPaths=, so it must not be there either.
 */
static void test_unit_wx(void **state)
{
        char *unit = sdfx_read_unit();
        char *exec = sdfx_unit_get(unit, "Service", "ExecPaths");
        char *noexec = sdfx_unit_get(unit, "Service", "NoExecPaths");
        char *rw = sdfx_unit_get(unit, "Service", "ReadWritePaths"), *save = NULL, *p;
        char *dirs[] = { sdfx_unit_get(unit, "Service", "StateDirectory"),
                         sdfx_unit_get(unit, "Service", "RuntimeDirectory") };
        const char *parents[] = { "/var/lib", "/run" };

        (void)state;
        assert_service(unit, "ProtectSystem", "strict");
        if (exec && *exec)
                fail_msg("imgd.service: ExecPaths=%s makes those paths writable on systemd 252",
                         exec);
        if (!noexec)
                fail_msg("imgd.service: no NoExecPaths=");
        for (char *w = strtok_r(noexec, " ", &save); w; w = strtok_r(NULL, " ", &save))
                if (strcmp(w + (*w == '-'), "/") == 0)
                        fail_msg("imgd.service: NoExecPaths=/ without ExecPaths= runs nothing");
        free(noexec);
        noexec = sdfx_unit_get(unit, "Service", "NoExecPaths");

        save = NULL;
        for (char *w = strtok_r(rw, " ", &save); w; w = strtok_r(NULL, " ", &save))
                if (!named_in(noexec, w + (*w == '-')))
                        fail_msg("imgd.service: ReadWritePaths=%s is not in NoExecPaths=%s", w,
                                 noexec);
        for (size_t i = 0; i < ELEMENTSOF(dirs); i++) {
                assert_non_null(dirs[i]);
                p = tu_path("%s/%s", parents[i], dirs[i]);
                if (!named_in(noexec, p))
                        fail_msg("imgd.service: %s is writable and not in NoExecPaths=%s", p,
                                 noexec);
                free(p);
                free(dirs[i]);
        }
        for (size_t i = 0; i < 3; i++) {
                static const char *const always[] = { "/tmp", "/var/tmp", "/dev/shm" };

                if (!named_in(noexec, always[i]))
                        fail_msg("imgd.service: %s is writable and not in NoExecPaths=%s",
                                 always[i], noexec);
        }
        /* The programs stay executable. */
        assert_false(covered_by(noexec, "/usr/sbin/imgd"));
        assert_false(covered_by(noexec, "/usr/lib"));
        free(rw);
        free(noexec);
        free(exec);
        free(unit);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_unit_contents),
                cmocka_unit_test(test_unit_wx),
                cmocka_unit_test(test_security_exposure),
                cmocka_unit_test(test_verify),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
