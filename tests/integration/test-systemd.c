/* SPDX-License-Identifier: MIT */
/*
 * test-systemd.c - the systemd unit, systemd/imgd.service: what issue 5 asks of it, how
 * `systemd-analyze security` rates it (at most 2.0), that `systemd-analyze verify` finds
 * nothing wrong with it, and that imgd still renders under its MemoryDenyWriteExecute=yes.
 *
 * systemd-analyze must be installed (Debian package systemd, installed by
 * scripts/deps.sh --tests): a missing one fails these tests rather than skipping them, so
 * the checks cannot silently stop running.
 *
 * verify needs a unit whose programs exist and whose man pages man(1) can find, so it is
 * run on a copy in a temporary directory with /usr/sbin/imgd and /usr/bin/imgctl replaced by
 * the build tree's, and with MANPATH pointing at a temporary man tree holding man/imgd.8, imgctl.1
 * and imgd.conf.5 (the unit's Documentation=). Everything else is checked as shipped: User=imgd
 * stays, since verify does not look users up. A copy
 * whose ExecStart= names a missing program must fail, which shows verify really checks.
 *
 * MemoryDenyWriteExecute= cannot be tried through systemd here (no systemd is running in a
 * build container), so the test builds the same seccomp filter that systemd installs for it
 * (mmap with PROT_WRITE|PROT_EXEC, mprotect and pkey_mprotect adding PROT_EXEC, shmat with
 * SHM_EXEC fail with EPERM), starts the real imgd under it with the unit's Environment=,
 * renders real images, and then checks every executable mapping of the daemon and its
 * workers: none is writable, and each is a file of the system or of the build tree, never
 * anonymous memory or a temporary file (liborc's generated code lives in a deleted
 * "orcexec.*" file mapped twice, which MemoryDenyWriteExecute= alone does not stop).
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

#define UNIT_PATH IMGD_SOURCE_DIR "/systemd/imgd.service"
#define EXPOSURE_MAX 2.0

/* Where `name` is in $PATH or the sbin directories; fails the test if nowhere. */
/* ---- the unit file ----------------------------------------------------------------------- */

/*
 * The values assigned to `key` in [section] of a unit file's text, in order, joined by a
 * space; an empty assignment resets the list, as systemd does. NULL when the key is never
 * assigned. Caller frees.
 */
static char *unit_get(const char *unit, const char *section, const char *key)
{
        char *copy = strdup(unit), *save = NULL, *value = NULL;
        bool in_section = false;
        size_t klen = strlen(key);

        assert_non_null(copy);
        for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                line += strspn(line, " \t");
                if (line[0] == '#' || line[0] == ';' || line[0] == '\0')
                        continue;
                if (line[0] == '[') {
                        in_section = strncmp(line + 1, section, strlen(section)) == 0 &&
                                     line[1 + strlen(section)] == ']';
                        continue;
                }
                if (!in_section || strncmp(line, key, klen) != 0 || line[klen] != '=')
                        continue;
                line += klen + 1;
                if (*line == '\0') {
                        free(value);
                        value = strdup("");
                } else if (value && *value) {
                        char *joined = tu_path("%s %s", value, line);

                        free(value);
                        value = joined;
                } else {
                        free(value);
                        value = strdup(line);
                }
                assert_non_null(value);
        }
        free(copy);
        return value;
}

static char *read_unit(void)
{
        char *unit = tu_read_file(UNIT_PATH, NULL);

        if (!unit)
                fail_msg("cannot read %s", UNIT_PATH);
        return unit;
}

/* [Service] key is set, and its value (all assignments joined) is exactly `want`. */
static void assert_service(const char *unit, const char *key, const char *want)
{
        char *v = unit_get(unit, "Service", key);

        if (!v || strcmp(v, want) != 0)
                fail_msg("imgd.service: expected %s=%s, found %s%s%s", key, want,
                         v ? key : "(not set)", v ? "=" : "", v ? v : "");
        free(v);
}

/* [Service] key has the word `word` among its values. */
static void assert_service_has(const char *unit, const char *key, const char *word)
{
        char *v = unit_get(unit, "Service", key);
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
        char *unit = read_unit();
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

        v = unit_get(unit, "Service", "MemoryMax");
        assert_non_null(v);
        free(v);
        v = unit_get(unit, "Service", "TasksMax");
        assert_non_null(v);
        free(v);
        /* The daemon checks its configuration before systemd considers it started: before
         * READY=1 (Type=notify), and a configuration error is its exit status 78, which
         * RestartPreventExitStatus= turns into a failed unit rather than a restart loop.
         * Not in an ExecStartPre=: its failure is not the main process' exit status, so
         * RestartPreventExitStatus= would not apply and Restart=on-failure would loop. */
        v = unit_get(unit, "Service", "ExecStartPre");
        if (v)
                fail_msg("imgd.service: ExecStartPre=%s: a failing one is restarted", v);
        assert_service(unit, "RestartPreventExitStatus", "78");
        v = unit_get(unit, "Unit", "StartLimitIntervalSec");
        assert_non_null(v);
        free(v);
        v = unit_get(unit, "Unit", "StartLimitBurst");
        assert_non_null(v);
        assert_true(atoi(v) > 0);
        free(v);
        v = unit_get(unit, "Service", "ExecStart");
        assert_non_null(v);
        assert_non_null(strstr(v, "/usr/sbin/imgd -c /etc/imgd/imgd.conf"));
        free(v);
        v = unit_get(unit, "Install", "WantedBy");
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
                v = unit_get(unit, want[i][0], want[i][1]);
                if (!v || strcmp(v, want[i][2]) != 0)
                        fail_msg("imgd-http.socket: %s=%s, expected %s", want[i][1], v ? v : "",
                                 want[i][2]);
                free(v);
        }
        free(unit);
}

/* ---- systemd-analyze security ------------------------------------------------------------ */

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

/* ---- systemd-analyze verify -------------------------------------------------------------- */

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
        char *unit = read_unit();
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

/* ---- MemoryDenyWriteExecute= ------------------------------------------------------------- */

#define SECCOMP_ARG2 (offsetof(struct seccomp_data, args) + 2 * sizeof(__u64))

/*
 * Installs the filter of systemd's MemoryDenyWriteExecute=yes (src/shared/seccomp-util.c,
 * seccomp_memory_deny_write_execute()): no new memory that is both writable and
 * executable, no memory made executable later. Returns 0 or -errno.
 */
static int deny_write_execute(void)
{
        struct sock_filter f[] = {
                BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
                /* mmap: EPERM when prot has both PROT_WRITE and PROT_EXEC */
                BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_mmap, 0, 3),
                BPF_STMT(BPF_LD | BPF_W | BPF_ABS, SECCOMP_ARG2),
                BPF_STMT(BPF_ALU | BPF_AND | BPF_K, PROT_WRITE | PROT_EXEC),
                BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, PROT_WRITE | PROT_EXEC, 10, 11),
                /* mprotect, pkey_mprotect: EPERM when prot has PROT_EXEC */
                BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_mprotect, 1, 0),
                BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_pkey_mprotect, 0, 3),
                BPF_STMT(BPF_LD | BPF_W | BPF_ABS, SECCOMP_ARG2),
                BPF_STMT(BPF_ALU | BPF_AND | BPF_K, PROT_EXEC),
                BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, 6, 5),
                /* shmat: EPERM when shmflg has SHM_EXEC */
                BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_shmat, 0, 5),
                BPF_STMT(BPF_LD | BPF_W | BPF_ABS, SECCOMP_ARG2),
                BPF_STMT(BPF_ALU | BPF_AND | BPF_K, SHM_EXEC),
                BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, 2, 1),
                BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
                BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
                BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        };
        struct sock_fprog prog = { .len = ELEMENTSOF(f), .filter = f };

        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
            prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0)
                return -errno;
        return 0;
}

/* The filter works as intended: checked in a child, which then goes away with it. */
static void test_mdwe_filter(void **state)
{
        pid_t pid;
        int status;

        (void)state;
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                void *rw, *rwx;

                if (deny_write_execute() < 0)
                        _exit(10);
                rwx = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC,
                           MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                if (rwx != MAP_FAILED || errno != EPERM)
                        _exit(11);
                rw = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                if (rw == MAP_FAILED)
                        _exit(12);
                if (mprotect(rw, 4096, PROT_READ | PROT_EXEC) == 0 || errno != EPERM)
                        _exit(13);
                if (mprotect(rw, 4096, PROT_READ) != 0)
                        _exit(14);
                _exit(0);
        }
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
}

/* Sets each VAR=VALUE of the unit's Environment= (no quoting is used there). */
static void apply_unit_environment(const char *unit)
{
        char *env = unit_get(unit, "Service", "Environment"), *save = NULL;

        if (!env)
                return;
        for (char *w = strtok_r(env, " ", &save); w; w = strtok_r(NULL, " ", &save)) {
                char *eq = strchr(w, '=');

                if (eq) {
                        *eq = '\0';
                        setenv(w, eq + 1, 1);
                }
        }
        free(env);
}

/*
 * Checks /proc/pid/maps: no mapping is writable and executable, and every executable one
 * is a file below one of the allowed directories or the kernel's [vdso]/[vsyscall].
 */
static void assert_no_generated_code(pid_t pid)
{
        char *path = tu_path("/proc/%d/maps", (int)pid);
        char *maps = tu_read_file(path, NULL), *save = NULL;
        unsigned executable = 0;

        if (!maps)
                fail_msg("cannot read %s", path);
        for (char *l = strtok_r(maps, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
                char perms[5] = "", file[4096] = "";

                if (sscanf(l, "%*s %4s %*s %*s %*s %4095[^\n]", perms, file) < 1)
                        continue;
                if (perms[2] != 'x')
                        continue;
                executable++;
                if (perms[1] == 'w')
                        fail_msg("pid %d has writable executable memory: %s", (int)pid, l);
                if (strcmp(file, "[vdso]") == 0 || strcmp(file, "[vsyscall]") == 0)
                        continue;
                if (strstr(file, "orcexec") || strstr(file, "(deleted)"))
                        fail_msg("pid %d runs generated code from a temporary file: %s", (int)pid,
                                 l);
                if (strncmp(file, "/usr/", 5) != 0 && strncmp(file, "/lib", 4) != 0 &&
                    strncmp(file, IMGD_BUILD_DIR "/", strlen(IMGD_BUILD_DIR) + 1) != 0)
                        fail_msg("pid %d has executable memory that is not a program or "
                                 "library: %s",
                                 (int)pid, l);
        }
        assert_true(executable > 0);
        free(maps);
        free(path);
}

/* The process runs under a seccomp filter (the "Seccomp:" line of /proc/pid/status). */
static void assert_seccomp(pid_t pid)
{
        char *path = tu_path("/proc/%d/status", (int)pid);
        char *status = tu_read_file(path, NULL);
        char *line;

        assert_non_null(status);
        line = strstr(status, "\nSeccomp:");
        assert_non_null(line);
        if (strtol(line + strlen("\nSeccomp:"), NULL, 10) != SECCOMP_MODE_FILTER)
                fail_msg("pid %d is not under a seccomp filter", (int)pid);
        free(status);
        free(path);
}

/*
 * Starts `program` (NULL: build/imgd) -v -c d->config as systemd would: with the unit's
 * Environment= when `unit` is given, under the MemoryDenyWriteExecute= filter when `mdwe`, and,
 * when `own_group`, as the leader of its own process group (as in a service's cgroup, where `kill
 * -TERM -<pgid>` reaches the daemon and every worker). Waits until the socket answers.
 */
static void start_daemon(struct tu_daemon *d, const char *program, const char *unit, bool mdwe,
                         bool own_group)
{
        pid_t pid = fork();
        int status;

        assert_true(pid >= 0);
        if (pid == 0) {
                int fd = open(d->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);

                if (own_group)
                        (void)setpgid(0, 0);
                if (fd >= 0) {
                        dup2(fd, STDERR_FILENO);
                        dup2(fd, STDOUT_FILENO);
                }
                if (unit)
                        apply_unit_environment(unit);
                if (mdwe && deny_write_execute() < 0)
                        _exit(126);
                execl(program ? program : IMGD_BUILD_DIR "/imgd", "imgd", "-v", "-c", d->config,
                      (char *)NULL);
                _exit(127);
        }
        if (own_group)
                (void)setpgid(pid, pid);
        d->pid = pid;
        for (int i = 0;; i++) {
                if (tu_imgctl(d, NULL, "status", NULL) == 0)
                        break;
                if (waitpid(pid, &status, WNOHANG) == pid) {
                        char *log = tu_read_file(d->log, NULL);

                        d->pid = 0;
                        fail_msg("imgd exited during start-up (status %d):\n%s", status,
                                 log ? log : "");
                }
                if (i == 2000)
                        fail_msg("imgd did not answer on %s within 20 s", d->socket);
                usleep(10 * 1000);
        }
}

static void test_renders_under_mdwe(void **state)
{
        /* Resizing a decoded PNG is where libvips would use orc's generated code. */
        static const char pipeline[] =
                "( { name = \"small\"; width = 100; height = 100; fit = \"cover\"; "
                "format = \"webp\"; mask = \"circle\"; },"
                "  { name = \"web\"; width = 700; height = 700; fit = \"inside\"; "
                "format = \"jpeg\"; quality = 82; } )";
        char *unit = read_unit();
        struct tu_daemon d;
        pid_t workers[16];
        unsigned n_workers;
        char *out = NULL, *p;
        json_t *st, *jobs;

        (void)state;
        tu_daemon_setup(&d, pipeline, 2, NULL);
        p = tu_path("%s/a.png", d.uploads);
        tu_make_image(p, 1600, 1200, "png", true);
        free(p);
        p = tu_path("%s/sub/b.jpg", d.uploads);
        tu_make_image(p, 2000, 1500, "jpeg", false);
        free(p);

        start_daemon(&d, NULL, unit, true, false);
        tu_daemon_wait_idle(&d, 120);

        assert_int_equal(tu_imgctl(&d, &out, "status", "--json", NULL), 0);
        st = json_loads(out, 0, NULL);
        assert_non_null(st);
        jobs = json_object_get(st, "jobs");
        if (json_integer_value(json_object_get(jobs, "done")) != 2) {
                char *log = tu_read_file(d.log, NULL);

                fail_msg("expected 2 jobs done under MemoryDenyWriteExecute, got: %s\n%s", out,
                         log ? log : "");
        }
        json_decref(st);
        free(out);
        assert_int_equal(tu_count_files(d.media, "*_small.webp"), 2);
        assert_int_equal(tu_count_files(d.media, "*_web.jpg"), 2);

        /* The workers that rendered are still there (one job at a time, long-lived). */
        assert_seccomp(d.pid);
        assert_no_generated_code(d.pid);
        n_workers = tu_daemon_children(&d, workers, ELEMENTSOF(workers));
        assert_true(n_workers > 0);
        for (unsigned i = 0; i < n_workers; i++) {
                assert_seccomp(workers[i]);
                assert_no_generated_code(workers[i]);
        }

        tu_daemon_cleanup(&d);
        free(unit);
}

/* ---- stopping: KillMode=mixed, and SIGTERM to the whole process group --------------------- */

#define PIPE_1 "( { name = \"s\"; width = 64; height = 64; fit = \"cover\"; format = \"webp\"; } )"

/* A job's member `key` from `imgctl show ID --json` (an integer). */
static long long job_field(struct tu_daemon *d, int id, const char *key)
{
        char *out = NULL, *ids = tu_path("%d", id);
        json_t *j, *job;
        long long v;

        if (tu_imgctl(d, &out, "show", ids, "--json", NULL) != 0)
                fail_msg("imgctl show %d failed: %s", id, out ? out : "");
        j = json_loads(out, 0, NULL);
        assert_non_null(j);
        job = json_object_get(j, "job") ?: j;
        v = json_integer_value(json_object_get(job, key));
        json_decref(j);
        free(out);
        free(ids);
        return v;
}

static long status_int(struct tu_daemon *d, const char *obj, const char *key)
{
        char *out = NULL;
        json_t *j, *o;
        long v;

        (void)tu_imgctl(d, &out, "status", "--json", NULL);
        j = json_loads(out ? out : "", 0, NULL);
        free(out);
        assert_non_null(j);
        o = obj ? json_object_get(j, obj) : j;
        v = (long)json_integer_value(json_object_get(o, key));
        json_decref(j);
        return v;
}

/*
 * `systemctl stop` with systemd's default KillMode=control-group, or `kill -TERM -<pgid>`,
 * sends SIGTERM to the daemon and every worker at once. A running job must not die of it:
 * it finishes within the daemon's drain (or is handed back) and costs no attempt. The job
 * here sleeps 4 s inside its worker (the worker.job fault delay), the group gets SIGTERM
 * while it does, and the daemon must exit 0 with nothing left in the group; after a restart
 * the job is done with 1 attempt, and no worker was killed by SIGTERM.
 */
static void test_group_sigterm(void **state)
{
        struct tu_daemon d;
        char *p, *log;
        pid_t pgid;
        int status = -1;

        (void)state;
        tu_daemon_setup(&d, PIPE_1, 2, NULL);
        setenv("IMGD_FAULT_DELAY", "worker.job", 1);
        setenv("IMGD_FAULT_DELAY_MS", "4000", 1);
        start_daemon(&d, NULL, NULL, false, true);
        unsetenv("IMGD_FAULT_DELAY");
        unsetenv("IMGD_FAULT_DELAY_MS");
        pgid = d.pid;
        assert_int_equal(getpgid(d.pid), pgid);

        p = tu_path("%s/slow.png", d.uploads);
        tu_make_image(p, 200, 150, "png", false);
        free(p);
        for (int i = 0; status_int(&d, NULL, "running") < 1; i++) {
                if (i == 3000)
                        fail_msg("the job did not start within 30 s");
                usleep(10 * 1000);
        }
        usleep(500 * 1000); /* inside the worker's 4 s */

        assert_int_equal(kill(-pgid, SIGTERM), 0);
        status = tu_daemon_wait_exit(&d, 40000);
        assert_int_not_equal(status, -1);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
        /* The workers went with the daemon (it reaps them before it exits). */
        for (int i = 0; kill(-pgid, 0) == 0; i++) {
                if (i == 500)
                        fail_msg("processes of group %d outlived the daemon", (int)pgid);
                usleep(10 * 1000);
        }

        log = tu_read_file(d.log, NULL);
        if (log && (strstr(log, "killed by SIGTERM") || strstr(log, "attempt 1 failed")))
                fail_msg("a worker died of the group's SIGTERM:\n%s", log);
        free(log);

        tu_daemon_start(&d);
        tu_daemon_wait_idle(&d, 60);
        assert_int_equal(status_int(&d, "jobs", "done"), 1);
        assert_int_equal(status_int(&d, "jobs", "dead"), 0);
        assert_int_equal(job_field(&d, 1, "attempts"), 1);
        assert_int_equal(tu_count_files(d.media, "*_s.webp"), 1);
        tu_daemon_cleanup(&d);
}

/* ---- a configuration error ends the unit (RestartPreventExitStatus=78) ------------------- */

/* imgd -c `config`: its exit status (128+signal if killed), and its output in *ret_out. */
static int run_imgd(const char *config, char **ret_out)
{
        return tu_run(ret_out, IMGD_BUILD_DIR "/imgd", "-c", config, NULL);
}

/*
 * A configuration that cannot be used, whether it does not parse, does not validate or
 * names a folder that is missing, makes imgd exit with 78 (EX_CONFIG), the status the unit's
 * RestartPreventExitStatus= names, and with the reason; --check-config still exits 1.
 */
static void test_config_error_exit_status(void **state)
{
        char *unit = read_unit();
        char *prevent = unit_get(unit, "Service", "RestartPreventExitStatus");
        struct tu_daemon d;
        char *out = NULL, *bad;
        int r;

        (void)state;
        tu_daemon_setup(&d, PIPE_1, 1, NULL);

        bad = tu_path("%s/syntax.conf", d.root);
        tu_write_file(bad, "workers = ;\n", (size_t)-1);
        r = run_imgd(bad, &out);
        if (r != 78 || !strstr(out, bad))
                fail_msg("imgd with a configuration that does not parse: exit %d (want 78):\n%s", r,
                         out ? out : "");
        free(out);
        free(bad);

        bad = tu_path("%s/invalid.conf", d.root);
        tu_write_file(bad, "workers = 0;\n", (size_t)-1);
        r = run_imgd(bad, &out);
        if (r != 78 || !strstr(out, "workers"))
                fail_msg("imgd with workers = 0: exit %d (want 78):\n%s", r, out ? out : "");
        free(out);
        r = tu_run(&out, IMGD_BUILD_DIR "/imgd", "--check-config", "-c", bad, NULL);
        assert_int_equal(r, 1);
        free(out);
        free(bad);

        tu_rm_rf(d.uploads);
        r = run_imgd(d.config, &out);
        if (r != 78 || !strstr(out, d.uploads))
                fail_msg("imgd with a missing watched folder: exit %d (want 78):\n%s", r,
                         out ? out : "");
        free(out);

        /* The unit names that status. */
        if (!prevent || !strstr(prevent, "78"))
                fail_msg("imgd.service: RestartPreventExitStatus=%s lacks 78",
                         prevent ? prevent : "(not set)");
        free(prevent);
        free(unit);
        tu_daemon_cleanup(&d);
}

/* ---- systemctl reload: ExecReload= fails, with the reason, when imgd rejects it ------------ */

/*
 * Runs the unit's ExecReload= command line for the daemon d as systemd would (its words
 * split at spaces, $MAINPID the daemon's pid), with the programs and the configuration of
 * the build and the test tree in place of /usr/bin/imgctl and /etc/imgd/imgd.conf. Returns
 * its exit status and its output in *ret_out.
 */
static int run_exec_reload(struct tu_daemon *d, const char *unit, char **ret_out)
{
        char *line = unit_get(unit, "Service", "ExecReload"), *save = NULL;
        char *words[9] = {}, pid[16];
        size_t n = 0;
        int rc;

        assert_non_null(line);
        snprintf(pid, sizeof pid, "%d", (int)d->pid);
        for (char *w = strtok_r(line, " ", &save); w; w = strtok_r(NULL, " ", &save)) {
                assert_true(n < ELEMENTSOF(words) - 1);
                if (strcmp(w, "$MAINPID") == 0)
                        words[n++] = strdup(pid);
                else if (strcmp(w, "/usr/bin/imgctl") == 0)
                        words[n++] = strdup(IMGD_BUILD_DIR "/imgctl");
                else if (strcmp(w, "/etc/imgd/imgd.conf") == 0)
                        words[n++] = strdup(d->config);
                else
                        words[n++] = strdup(w);
        }
        assert_true(n > 0);
        rc = tu_run(ret_out, words[0], words[1], words[2], words[3], words[4], words[5], words[6],
                    words[7], NULL);
        for (size_t i = 0; i < n; i++)
                free(words[i]);
        free(line);
        return rc;
}

static char *config_text(struct tu_daemon *d, const char *watches)
{
        return tu_path("state_dir = \"%s\";\nsocket = \"%s\";\nworkers = 1;\n"
                       "watch = ( %s );\npipelines = { p = %s; };\n",
                       d->state, d->socket, watches, PIPE_1);
}

/*
 * systemctl reload runs ExecReload= and reports its exit status. A new configuration that
 * imgd takes makes it exit 0, and the change is in force (a second watch renders); one that
 * does not parse, or that imgd rejects (a watched folder missing), makes it exit non-zero
 * and print the reason, and the running configuration stays in force.
 */
static void test_exec_reload(void **state)
{
        char *unit = read_unit();
        struct tu_daemon d;
        char *out = NULL, *uploads2, *media2, *missing, *watch1, *watches, *conf, *p;
        int rc;

        (void)state;
        tu_daemon_setup(&d, PIPE_1, 1, NULL);
        uploads2 = tu_path("%s/uploads2", d.root);
        media2 = tu_path("%s/media2", d.root);
        missing = tu_path("%s/missing", d.root);
        assert_int_equal(mkdir(uploads2, 0755), 0);
        tu_daemon_start(&d);
        assert_int_equal(status_int(&d, "workers", "total"), 1);

        /* A good one: in force when the command returns. */
        watch1 = tu_path("{ path = \"%s\"; output = \"%s\"; pipeline = \"p\"; }", d.uploads,
                         d.media);
        watches = tu_path("%s, { path = \"%s\"; output = \"%s\"; pipeline = \"p\"; }", watch1,
                          uploads2, media2);
        conf = config_text(&d, watches);
        tu_write_file(d.config, conf, (size_t)-1);
        free(conf);
        free(watches);
        rc = run_exec_reload(&d, unit, &out);
        if (rc != 0)
                fail_msg("ExecReload= with a good configuration: exit %d:\n%s", rc, out ? out : "");
        free(out);
        p = tu_path("%s/second.png", uploads2);
        tu_make_image(p, 120, 90, "png", false);
        free(p);
        tu_daemon_wait_idle(&d, 60);
        assert_int_equal(tu_count_files(media2, "*_s.webp"), 1);

        /* One that does not parse. */
        tu_write_file(d.config, "workers = ;\n", (size_t)-1);
        rc = run_exec_reload(&d, unit, &out);
        if (rc == 0 || !out || !strstr(out, d.config))
                fail_msg("ExecReload= with a configuration that does not parse: exit %d "
                         "(want non-zero, with the reason):\n%s",
                         rc, out ? out : "");
        free(out);

        /* One that parses but that imgd rejects: a watched folder is missing. */
        watches = tu_path("%s, { path = \"%s\"; output = \"%s\"; pipeline = \"p\"; }", watch1,
                          missing, media2);
        conf = config_text(&d, watches);
        tu_write_file(d.config, conf, (size_t)-1);
        free(conf);
        free(watches);
        rc = run_exec_reload(&d, unit, &out);
        if (rc == 0 || !out || !strstr(out, missing) || !strstr(out, "rejected"))
                fail_msg("ExecReload= with a configuration imgd rejects: exit %d (want "
                         "non-zero, with the reason):\n%s",
                         rc, out ? out : "");
        free(out);

        /* The daemon runs on with the configuration it had. */
        assert_int_equal(tu_imgctl(&d, NULL, "status", NULL), 0);
        p = tu_path("%s/third.png", uploads2);
        tu_make_image(p, 120, 90, "png", false);
        free(p);
        tu_daemon_wait_idle(&d, 60);
        assert_int_equal(tu_count_files(media2, "*_s.webp"), 2);

        free(watch1);
        free(missing);
        free(media2);
        free(uploads2);
        free(unit);
        tu_daemon_cleanup(&d);
}

/* ---- cmake --install: a daemon that starts, under every documented prefix ---------------- */

/* The first word of the unit's `key` after `skip` words (a program or an argument). */
static char *unit_word(const char *unit, const char *key, unsigned skip)
{
        char *v = unit_get(unit, "Service", key), *save = NULL, *w, *word = NULL;

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
        start_daemon(&d, p, NULL, false, false);
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

/* ---- W^X for files: nothing writable is executable, and nothing is made writable --------- */

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
        char *unit = read_unit();
        char *exec = unit_get(unit, "Service", "ExecPaths");
        char *noexec = unit_get(unit, "Service", "NoExecPaths");
        char *rw = unit_get(unit, "Service", "ReadWritePaths"), *save = NULL, *p;
        char *dirs[] = { unit_get(unit, "Service", "StateDirectory"),
                         unit_get(unit, "Service", "RuntimeDirectory") };
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
        noexec = unit_get(unit, "Service", "NoExecPaths");

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
                cmocka_unit_test(test_mdwe_filter),
                cmocka_unit_test(test_renders_under_mdwe),
                cmocka_unit_test(test_group_sigterm),
                cmocka_unit_test(test_config_error_exit_status),
                cmocka_unit_test(test_exec_reload),
                cmocka_unit_test(test_install_usr),
                cmocka_unit_test(test_install_opt),
                cmocka_unit_test(test_configure_without_cmocka),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
