/* SPDX-License-Identifier: MIT */
/*
 * test-adversarial-storage.c - the adversarial battery, quick size, against the real daemon: the
 * state directory's storage taken away. The ledger's write-ahead log and its WAL index deleted
 * under the running daemon (each checked across a kill -9), the ledger's file system turned read-
 * only under running jobs (the fsshim's EROFS mode), also between publication and the record of
 * it, and at start (read-only bind mounts), and the state directory's file system full (a real 8
 * MiB tmpfs filled by a file). The ledger stays intact, the cause is named, no job fails for it,
 * and every upload is done exactly once.
 *
 * IMGD_TEST_FILTER=test_wal_* runs only the cases whose names match.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <sched.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shared/hash.h"
#include "testutil.h"
#include "adversarial-fixture.h"

static int compare_strings(const void *a, const void *b)
{
        return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * "name:inode " for each output in media (flat), sorted by name; caller frees. A job rendered
 * and published again replaces its outputs by new files: the signature changes.
 */
static char *outputs_signature(struct tu_daemon *d)
{
        DIR *dir = opendir(d->media);
        struct dirent *de;
        char **names = NULL, *sig;
        size_t n = 0, len = 0;

        assert_non_null(dir);
        while ((de = readdir(dir))) {
                if (!strstr(de->d_name, "_s.webp"))
                        continue;
                names = realloc(names, (n + 1) * sizeof *names);
                assert_non_null(names);
                names[n++] = tu_path("%s:%llu ", de->d_name, (unsigned long long)de->d_ino);
        }
        closedir(dir);
        qsort(names, n, sizeof *names, compare_strings);
        for (size_t i = 0; i < n; i++)
                len += strlen(names[i]);
        sig = calloc(1, len + 1);
        assert_non_null(sig);
        for (size_t i = 0; i < n; i++) {
                strcat(sig, names[i]);
                free(names[i]);
        }
        free(names);
        return sig;
}

/* Kills the daemon with SIGKILL (a crash: nothing is closed or checkpointed) and starts it
 * again on the same tree. */
static void crash_and_restart(struct tu_daemon *d)
{
        int status = tu_daemon_stop(d, SIGKILL);

        assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        tu_daemon_start(d);
}

/*
 * The ledger's write-ahead log deleted under the running daemon (`rm STATE/imgd.db-wal`):
 * SQLite would go on writing into the unlinked file, and every transition since the last
 * checkpoint would be lost with the next crash. A trustworthy daemon notices, says so naming
 * the file, checkpoints what the unlinked log holds into the database while it still can and
 * starts a new log. Checked twice: the log deleted while idle (its earlier commits must
 * survive a kill -9 a few seconds later), and deleted with uploads arriving after it (their
 * jobs must survive a kill -9 right after they are done). Every job done exactly once.
 */
static void test_wal_deleted(void **state)
{
        struct tu_daemon d;
        char *wal, *before, *after;

        (void)state;
        tu_daemon_setup(&d, PIPE, 2, NULL);
        wal = tu_path("%s/imgd.db-wal", d.state);
        tu_daemon_start(&d);

        /* Idle: ten jobs done, their commits in the log; the log deleted, then a crash. */
        advfx_drop_images(&d, "idle", 10);
        tu_daemon_wait_idle(&d, 120);
        before = outputs_signature(&d);
        assert_int_equal(unlink(wal), 0);
        advfx_wait_log(&d, "imgd.db-wal was removed", 10000);
        crash_and_restart(&d);
        tu_daemon_wait_idle(&d, 120);
        advfx_assert_each_done_once(&d, 10);
        /* Not rendered and published a second time because the ledger forgot them. */
        after = outputs_signature(&d);
        if (strcmp(before, after) != 0) {
                char *log = advfx_log_of(&d);
                fail_msg("outputs published again after the restart:\nbefore %s\nafter  %s\n"
                         "log:\n%s",
                         before, after, log);
        }
        free(before);
        free(after);

        /* Busy: the log deleted, then ten more uploads done, then a crash at once. */
        assert_int_equal(unlink(wal), 0);
        advfx_drop_images(&d, "busy", 10);
        tu_daemon_wait_idle(&d, 120);
        before = outputs_signature(&d);
        crash_and_restart(&d);
        tu_daemon_wait_idle(&d, 120);
        advfx_assert_each_done_once(&d, 20);
        after = outputs_signature(&d);
        if (strcmp(before, after) != 0) {
                char *log = advfx_log_of(&d);
                fail_msg("outputs published again after the restart:\nbefore %s\nafter  %s\n"
                         "log:\n%s",
                         before, after, log);
        }
        assert_int_equal(access(wal, F_OK), 0);

        free(before);
        free(after);
        free(wal);
        tu_daemon_cleanup(&d);
}

/*
 * The WAL index deleted under the running daemon (`rm STATE/imgd.db-shm`): imgd's own
 * connection keeps the mapping it has, so the ledger stays durable, but no new index can be
 * made while it runs. A trustworthy daemon says so, naming the file and what it means, and
 * loses nothing: uploads after it are done exactly once across a kill -9 and a restart, which
 * makes the index again.
 */
static void test_shm_deleted(void **state)
{
        struct tu_daemon d;
        char *shm, *before, *after;

        (void)state;
        tu_daemon_setup(&d, PIPE, 2, NULL);
        shm = tu_path("%s/imgd.db-shm", d.state);
        tu_daemon_start(&d);
        advfx_drop_images(&d, "first", 5);
        tu_daemon_wait_idle(&d, 120);
        assert_int_equal(unlink(shm), 0);
        advfx_wait_log(&d, "imgd.db-shm was removed", 10000);
        advfx_drop_images(&d, "then", 5);
        tu_daemon_wait_idle(&d, 120);
        before = outputs_signature(&d);
        crash_and_restart(&d);
        tu_daemon_wait_idle(&d, 120);
        assert_int_equal(access(shm, F_OK), 0);
        advfx_assert_each_done_once(&d, 10);
        after = outputs_signature(&d);
        assert_string_equal(before, after);
        free(before);
        free(after);
        free(shm);
        tu_daemon_cleanup(&d);
}

/* The messages of the active alerts in a status answer, one a line; caller frees. */
static char *alert_messages(const json_t *status)
{
        const json_t *alerts = json_object_get(status, "alerts");
        char *all = strdup("");

        for (size_t i = 0; i < json_array_size(alerts); i++) {
                const json_t *a = json_array_get(alerts, i);
                char *next = tu_path("%s%s: %s\n", all,
                                     json_string_value(json_object_get(a, "alert")) ?: "?",
                                     json_string_value(json_object_get(a, "message")) ?: "?");
                free(all);
                all = next;
        }
        return all;
}

/* PRAGMA integrity_check of the ledger is "ok". */
static void assert_ledger_intact(struct tu_daemon *d)
{
        char *db_path = tu_path("%s/imgd.db", d->state);
        sqlite3 *db;
        sqlite3_stmt *st;

        assert_int_equal(sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
        sqlite3_busy_timeout(db, 5000);
        assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL),
                         SQLITE_OK);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        assert_string_equal((const char *)sqlite3_column_text(st, 0), "ok");
        sqlite3_finalize(st);
        sqlite3_close(db);
        free(db_path);
}

/* Stops (SIGSTOP) or continues (SIGCONT) the daemon's workers. */
static void signal_workers(struct tu_daemon *d, int sig)
{
        pid_t pids[16];
        unsigned k = tu_daemon_children(d, pids, 16);

        for (unsigned i = 0; i < k; i++)
                kill(pids[i], sig);
}

/* Starts the daemon with the fsshim (tests/tools/fsshim.c) acting on its state directory:
 * `var` (IMGD_SHIM_EROFS or IMGD_SHIM_ENOSPC) names the flag file that turns the fault on. */
static void start_with_shim(struct tu_daemon *d, const char *var, const char *flag)
{
        setenv("LD_PRELOAD", IMGD_FSSHIM, 1);
        setenv("ASAN_OPTIONS", "verify_asan_link_order=0:detect_leaks=0", 1);
        setenv("IMGD_SHIM_ROOT", d->state, 1);
        setenv(var, flag, 1);
        tu_daemon_start(d);
        unsetenv("LD_PRELOAD");
        unsetenv("ASAN_OPTIONS");
        unsetenv("IMGD_SHIM_ROOT");
        unsetenv(var);
}

/*
 * The state directory's file system turns read-only under the running daemon (as the kernel
 * does after an error, with errors=remount-ro: the files open stay open, every write fails
 * with EROFS), with jobs in flight and uploads arriving. A trustworthy daemon keeps the
 * ledger intact, says what is wrong naming the ledger file and the cause (log, and an alert
 * in `imgctl status`), fails no job for it (nothing retried with an attempt used, nothing
 * dead): work waits and intake is retried; once the file system is writable again every
 * upload is done exactly once.
 */
static void test_ledger_read_only(void **state)
{
        const unsigned before = 6, inflight = 6, during = 8;
        struct tu_daemon d;
        char *flag, *alerts, *text;
        json_t *st;

        (void)state;
        tu_daemon_setup(&d, PIPE, 2, "retry = { base_delay_ms = 200; max_delay_ms = 2000; };\n");
        assert_int_equal(mkdir(d.state, 0750), 0);
        flag = tu_path("%s/state-read-only", d.root);
        start_with_shim(&d, "IMGD_SHIM_EROFS", flag);
        advfx_drop_images(&d, "before", before);
        tu_daemon_wait_idle(&d, 120);

        /* Uploads taken in; the file system turns read-only while the workers render the
         * first two of them (held with SIGSTOP until then), then more arrive. */
        assert_int_equal(tu_imgctl(&d, NULL, "pause", NULL), 0);
        advfx_drop_images(&d, "inflight", inflight);
        advfx_wait_jobs(&d, "queued", inflight);
        signal_workers(&d, SIGSTOP);
        assert_int_equal(tu_imgctl(&d, NULL, "resume", NULL), 0);
        advfx_wait_jobs(&d, "running", 2);
        tu_write_file(flag, "", 0);
        signal_workers(&d, SIGCONT);
        advfx_drop_images(&d, "during", during);
        sleep(4);
        assert_int_equal(tu_ledger_int(&d,
                                       "SELECT count(*) FROM jobs WHERE state IN ('dead', 'retry') "
                                       "OR attempts > 1"),
                         0);

        st = tu_status_json(&d, NULL);
        alerts = alert_messages(st);
        text = advfx_log_of(&d);
        if (!strstr(text, "imgd.db") || !strstr(text, "Read-only file system"))
                fail_msg("the log does not name the ledger and EROFS:\n%s", text);
        if (!strstr(alerts, "imgd.db") || !strstr(alerts, "Read-only file system"))
                fail_msg("no alert names the ledger and EROFS:\n%s\nlog:\n%s", alerts, text);
        free(alerts);
        free(text);
        json_decref(st);
        /* The alert is one of health.h's list: in the metrics too, as every alert is. */
        {
                char *metrics = NULL;

                assert_int_equal(tu_imgctl(&d, &metrics, "metrics", NULL), 0);
                if (!strstr(metrics, "imgd_alert{alert=\"ledger_failing\"} 1\n"))
                        fail_msg("imgd_alert{alert=\"ledger_failing\"} is not 1:\n%s", metrics);
                /* A file system that refuses the writes is not a server out of reach. */
                if (!strstr(metrics, "imgd_alert{alert=\"ledger_unreachable\"} 0\n"))
                        fail_msg("imgd_alert{alert=\"ledger_unreachable\"} is not 0:\n%s", metrics);
                free(metrics);
        }

        /* Writable again: everything done, once, at the first attempt. */
        assert_int_equal(unlink(flag), 0);
        for (int waited = 0;; waited += 500) {
                st = tu_status_json(&d, NULL);
                json_int_t done = tu_jobs_in(st, "done"), running = tu_jobs_in(st, "running");
                json_decref(st);
                if (done >= before + inflight + during && running == 0)
                        break;
                if (waited > 120000) {
                        char *log = advfx_log_of(&d);
                        fail_msg("%lld of %u done 120 s after the file system was writable "
                                 "again; log:\n%s",
                                 (long long)done, before + inflight + during, log);
                }
                usleep(500 * 1000);
        }
        tu_daemon_wait_idle(&d, 60);
        advfx_assert_each_done_once(&d, before + inflight + during);
        assert_ledger_intact(&d);
        st = tu_status_json(&d, NULL);
        alerts = alert_messages(st);
        if (strstr(alerts, "imgd.db"))
                fail_msg("the ledger's alert outlived the fault:\n%s", alerts);
        free(alerts);
        json_decref(st);
        free(flag);
        tu_daemon_cleanup(&d);
}

/*
 * The same between publication and the ledger's record of it: the job's outputs are in
 * place when the file system turns read-only, and its completion cannot be committed. The
 * job must not be left running until its lease expires (then retried, its attempt used, and
 * rendered and published again): it is recorded done, as it is, once the ledger can write.
 */
static void test_ledger_read_only_at_completion(void **state)
{
        struct tu_daemon d;
        char *flag, *out, *before, *after, *alerts;
        json_t *st;
        int64_t t0;

        (void)state;
        tu_daemon_setup(&d, PIPE, 1, "limits = { job_timeout = 5; };\n");
        assert_int_equal(mkdir(d.state, 0750), 0);
        flag = tu_path("%s/state-read-only", d.root);
        /* Two seconds between publishing and completing, for the test to act in. */
        setenv("IMGD_FAULT_DELAY", "ledger.before_complete", 1);
        setenv("IMGD_FAULT_DELAY_MS", "2000", 1);
        start_with_shim(&d, "IMGD_SHIM_EROFS", flag);
        unsetenv("IMGD_FAULT_DELAY");
        unsetenv("IMGD_FAULT_DELAY_MS");

        advfx_drop_images(&d, "late", 1);
        out = tu_path("%s/late000_s.webp", d.media);
        for (int waited = 0; access(out, F_OK) != 0; waited += 10) {
                if (waited > 60000)
                        fail_msg("%s was not published", out);
                usleep(10 * 1000);
        }
        tu_write_file(flag, "", 0);
        before = outputs_signature(&d);
        sleep(4);
        st = tu_status_json(&d, NULL);
        assert_int_equal(tu_jobs_in(st, "done"), 0);
        alerts = alert_messages(st);
        if (!strstr(alerts, "Read-only file system"))
                fail_msg("no alert names EROFS:\n%s", alerts);
        free(alerts);
        json_decref(st);

        /* Writable again: recorded done within seconds, not after a lease of 65 s. */
        t0 = tu_now_us();
        assert_int_equal(unlink(flag), 0);
        for (;;) {
                st = tu_status_json(&d, NULL);
                json_int_t done = tu_jobs_in(st, "done");
                json_decref(st);
                if (done == 1)
                        break;
                if (tu_now_us() - t0 > 20000000) {
                        char *log = advfx_log_of(&d);
                        fail_msg("not done 20 s after the ledger was writable again; log:\n%s",
                                 log);
                }
                usleep(200 * 1000);
        }
        tu_daemon_wait_idle(&d, 60);
        advfx_assert_each_done_once(&d, 1);
        after = outputs_signature(&d);
        assert_string_equal(before, after);
        assert_ledger_intact(&d);
        free(before);
        free(after);
        free(out);
        free(flag);
        tu_daemon_cleanup(&d);
}

/*
 * Runs imgd on d's configuration in a mount namespace of its own where `target` (the state
 * directory, or the ledger file alone) is bind-mounted read-only, its output in d's log.
 * Returns the wait status, or -1 when no namespace or mount could be made (not root).
 */
static int run_on_read_only(struct tu_daemon *d, const char *target)
{
        int status;
        pid_t pid = fork();

        assert_true(pid >= 0);
        if (pid == 0) {
                int fd = open(d->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

                /* Nothing done here may reach the namespace the tests run in. */
                if (fd < 0 || unshare(CLONE_NEWNS) < 0 ||
                    mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
                    mount(target, target, NULL, MS_BIND, NULL) < 0 ||
                    mount(NULL, target, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL) < 0)
                        _exit(200);
                dup2(fd, STDERR_FILENO);
                dup2(fd, STDOUT_FILENO);
                execl(IMGD_BUILD_DIR "/imgd", "imgd", "-c", d->config, (char *)NULL);
                _exit(127);
        }
        assert_int_equal(waitpid(pid, &status, 0), pid);
        return WIFEXITED(status) && WEXITSTATUS(status) == 200 ? -1 : status;
}

/*
 * imgd started on a ledger it cannot write: the state directory's file system read-only, or
 * the ledger file alone (a read-only bind mount). It must refuse at once, with a message
 * naming the ledger (or its directory) and EROFS, and the exit status of an error of its
 * environment (78, EX_CONFIG, which the unit's RestartPreventExitStatus= stops on), rather
 * than start and fail every job, or exit 1 into a restart loop.
 */
static void test_start_read_only(void **state)
{
        struct tu_daemon d;
        char *db, *text;
        const char *targets[2];

        (void)state;
        tu_daemon_setup(&d, PIPE, 1, NULL);
        tu_daemon_start(&d);
        advfx_drop_images(&d, "first", 2);
        tu_daemon_wait_idle(&d, 60);
        assert_true(WIFEXITED(tu_daemon_stop(&d, SIGTERM)));
        db = tu_path("%s/imgd.db", d.state);
        targets[0] = d.state;
        targets[1] = db;
        for (size_t i = 0; i < 2; i++) {
                int status = run_on_read_only(&d, targets[i]);

                if (status == -1)
                        skip();
                text = advfx_log_of(&d);
                if (!WIFEXITED(status) || WEXITSTATUS(status) != 78 ||
                    (!strstr(text, "Read-only file system") && !strstr(text, "EROFS")) ||
                    !strstr(text, targets[i]))
                        fail_msg("%s read-only: wait status %#x, wanted exit 78 and a message "
                                 "naming it and EROFS:\n%s",
                                 targets[i], (unsigned)status, text);
                free(text);
        }
        /* Writable: it starts, and the two jobs are as they were. */
        tu_daemon_start(&d);
        tu_daemon_wait_idle(&d, 60);
        advfx_assert_each_done_once(&d, 2);
        free(db);
        tu_daemon_cleanup(&d);
}

/* Fills the file system holding path with a file there until a write fails with ENOSPC. */
static void fill_up(const char *path)
{
        static char block[65536];
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        ssize_t k;

        assert_true(fd >= 0);
        memset(block, 0x5a, sizeof block);
        while ((k = write(fd, block, sizeof block)) > 0)
                ;
        /* The last bytes a block would not hold. */
        while (write(fd, block, 1) == 1)
                ;
        assert_int_equal(errno, ENOSPC);
        close(fd);
}

/*
 * The state directory's own file system (a real 8 MiB tmpfs, in a mount namespace of the
 * test's own) fills up while jobs are in flight and uploads arrive, then a file is removed
 * and the space comes back. A trustworthy daemon keeps the ledger intact, names the ledger
 * and ENOSPC in its log and in a status alert, fails no job for it, retries intake, and does
 * every upload exactly once when there is space again. (test-intake-faults covers the same
 * with the fsshim, for intake and hand-backs alone.)
 */
static void test_state_dir_full(void **state)
{
        const unsigned before = 4, inflight = 4, during = 6;
        struct tu_daemon d;
        char *filler, *alerts, *text;
        json_t *st;

        (void)state;
        tu_daemon_setup(&d, PIPE, 2, "retry = { base_delay_ms = 200; max_delay_ms = 2000; };\n");
        assert_int_equal(mkdir(d.state, 0750), 0);
        /* The test program's own mount namespace: the tmpfs and the daemon live in it. */
        if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
            mount("imgd-test", d.state, "tmpfs", 0, "size=8m,mode=0750") < 0) {
                tu_daemon_cleanup(&d);
                skip();
        }
        filler = tu_path("%s/filler", d.state);
        tu_daemon_start(&d);
        advfx_drop_images(&d, "before", before);
        tu_daemon_wait_idle(&d, 120);

        assert_int_equal(tu_imgctl(&d, NULL, "pause", NULL), 0);
        advfx_drop_images(&d, "inflight", inflight);
        advfx_wait_jobs(&d, "queued", inflight);
        signal_workers(&d, SIGSTOP);
        assert_int_equal(tu_imgctl(&d, NULL, "resume", NULL), 0);
        advfx_wait_jobs(&d, "running", 2);
        fill_up(filler);
        signal_workers(&d, SIGCONT);
        advfx_drop_images(&d, "during", during);
        sleep(4);

        assert_int_equal(tu_ledger_int(&d,
                                       "SELECT count(*) FROM jobs WHERE state IN ('dead', 'retry') "
                                       "OR attempts > 1"),
                         0);
        st = tu_status_json(&d, NULL);
        alerts = alert_messages(st);
        text = advfx_log_of(&d);
        if (!strstr(text, "imgd.db") || !strstr(text, "No space left on device"))
                fail_msg("the log does not name the ledger and ENOSPC:\n%s", text);
        if (!strstr(alerts, "imgd.db") || !strstr(alerts, "No space left on device"))
                fail_msg("no alert names the ledger and ENOSPC:\n%s\nlog:\n%s", alerts, text);
        free(alerts);
        free(text);
        json_decref(st);

        /* Space again: everything done, once, at the first attempt. */
        assert_int_equal(unlink(filler), 0);
        for (int waited = 0;; waited += 500) {
                st = tu_status_json(&d, NULL);
                json_int_t done = tu_jobs_in(st, "done"), running = tu_jobs_in(st, "running");
                json_decref(st);
                if (done >= before + inflight + during && running == 0)
                        break;
                if (waited > 120000) {
                        char *log = advfx_log_of(&d);
                        fail_msg("%lld of %u done 120 s after the space came back; log:\n%s",
                                 (long long)done, before + inflight + during, log);
                }
                usleep(500 * 1000);
        }
        tu_daemon_wait_idle(&d, 60);
        advfx_assert_each_done_once(&d, before + inflight + during);
        assert_ledger_intact(&d);
        st = tu_status_json(&d, NULL);
        alerts = alert_messages(st);
        if (strstr(alerts, "imgd.db"))
                fail_msg("the ledger's alert outlived the fault:\n%s", alerts);
        free(alerts);
        json_decref(st);
        tu_daemon_stop(&d, SIGTERM);
        assert_int_equal(umount2(d.state, MNT_DETACH), 0);
        free(filler);
        tu_daemon_cleanup(&d);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                /* The state directory's storage. */
                cmocka_unit_test(test_wal_deleted),
                cmocka_unit_test(test_shm_deleted),
                cmocka_unit_test(test_ledger_read_only),
                cmocka_unit_test(test_ledger_read_only_at_completion),
                cmocka_unit_test(test_start_read_only),
                cmocka_unit_test(test_state_dir_full),
        };

        /* IMGD_TEST_FILTER=test_wal_* runs only the cases whose names match. */
        if (getenv("IMGD_TEST_FILTER"))
                cmocka_set_test_filter(getenv("IMGD_TEST_FILTER"));
        return cmocka_run_group_tests(tests, NULL, NULL);
}
