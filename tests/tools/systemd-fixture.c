/* SPDX-License-Identifier: MIT */
/*
 * systemd-fixture.c - helpers of the test-systemd-* programs: the unit file systemd/imgd.service
 * read and queried (a key of a section, its words), and the real imgd started under the seccomp
 * filter that MemoryDenyWriteExecute=yes installs, with the unit's Environment=.
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

char *sdfx_unit_get(const char *unit, const char *section, const char *key)
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

char *sdfx_read_unit(void)
{
        char *unit = tu_read_file(UNIT_PATH, NULL);

        if (!unit)
                fail_msg("cannot read %s", UNIT_PATH);
        return unit;
}

int sdfx_deny_write_execute(void)
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

void sdfx_apply_unit_environment(const char *unit)
{
        char *env = sdfx_unit_get(unit, "Service", "Environment"), *save = NULL;

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

void sdfx_start_daemon(struct tu_daemon *d, const char *program, const char *unit, bool mdwe,
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
                        sdfx_apply_unit_environment(unit);
                if (mdwe && sdfx_deny_write_execute() < 0)
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
