/* SPDX-License-Identifier: MIT */
/*
 * test-systemd-run.c - imgd run the way systemd/imgd.service runs it: rendering under
 * MemoryDenyWriteExecute=yes, SIGTERM to the whole control group, the exit status of a
 * configuration error, and ExecReload=.
 *
 * MemoryDenyWriteExecute= cannot be tried through systemd here (no systemd is running in a build
 * container), so the test builds the same seccomp filter that systemd installs for it (mmap with
 * PROT_WRITE|PROT_EXEC, mprotect and pkey_mprotect adding PROT_EXEC, shmat with SHM_EXEC fail with
 * EPERM), starts the real imgd under it with the unit's Environment=, renders real images, and
 * then checks every executable mapping of the daemon and its workers: none is writable, and each
 * is a file of the system or of the build tree, never anonymous memory or a temporary file
 * (liborc's generated code lives in a deleted "orcexec.*" file mapped twice, which
 * MemoryDenyWriteExecute= alone does not stop).
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

                if (sdfx_deny_write_execute() < 0)
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

static void test_renders_under_mdwe(void **state)
{
        /* Resizing a decoded PNG is where libvips would use orc's generated code. */
        static const char pipeline[] =
                "( { name = \"small\"; width = 100; height = 100; fit = \"cover\"; "
                "format = \"webp\"; mask = \"circle\"; },"
                "  { name = \"web\"; width = 700; height = 700; fit = \"inside\"; "
                "format = \"jpeg\"; quality = 82; } )";
        char *unit = sdfx_read_unit();
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

        sdfx_start_daemon(&d, NULL, unit, true, false);
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
        sdfx_start_daemon(&d, NULL, NULL, false, true);
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
        char *unit = sdfx_read_unit();
        char *prevent = sdfx_unit_get(unit, "Service", "RestartPreventExitStatus");
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

/*
 * Runs the unit's ExecReload= command line for the daemon d as systemd would (its words
 * split at spaces, $MAINPID the daemon's pid), with the programs and the configuration of
 * the build and the test tree in place of /usr/bin/imgctl and /etc/imgd/imgd.conf. Returns
 * its exit status and its output in *ret_out.
 */
static int run_exec_reload(struct tu_daemon *d, const char *unit, char **ret_out)
{
        char *line = sdfx_unit_get(unit, "Service", "ExecReload"), *save = NULL;
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
        char *unit = sdfx_read_unit();
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

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_mdwe_filter),
                cmocka_unit_test(test_renders_under_mdwe),
                cmocka_unit_test(test_group_sigterm),
                cmocka_unit_test(test_config_error_exit_status),
                cmocka_unit_test(test_exec_reload),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
