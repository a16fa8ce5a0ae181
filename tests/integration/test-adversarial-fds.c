/* SPDX-License-Identifier: MIT */
/*
 * test-adversarial-fds.c - the adversarial battery (issue 13), quick size, against the real
 * daemon: descriptors and subscribers.
 *
 *   (k) imgd started with 64 file descriptors (`ulimit -n 64`), a burst of uploads and
 *       silent control clients: no crash, no job lost, clear errors; and a folder renamed
 *       in while no descriptor is free is read once there are;
 *   (e) a subscriber that never reads while 2,000 jobs run: it is dropped, not buffered for,
 *       every job is done once, status is answered within 1 s throughout (the rest of
 *       (e), the silent crowd and malformed requests, is test-control-abuse's
 *       test_daemon_under_abuse).
 *
 * (j), the inotify watch limit at start-up, is test-watch's test_unwatched_at_start.
 * IMGD_TEST_FILTER=test_fd_* runs only the cases whose names match.
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

/* The value of a "Name:   N kB" line of /proc/<pid>/status, in kB; -1 if absent. */
static long proc_kb(pid_t pid, const char *name)
{
        char *path = tu_path("/proc/%d/status", (int)pid), *text = tu_read_file(path, NULL);
        const char *at = text ? strstr(text, name) : NULL;
        long kb = -1;

        if (at)
                kb = strtol(at + strlen(name) + 1, NULL, 10);
        free(text);
        free(path);
        return kb;
}

/*
 * How long the daemon takes to answer a status request, in microseconds: connect, send
 * {"cmd":"status"}, read the whole answer line, as imgctl does, but without starting a
 * program (which, on a loaded machine, measures the machine rather than the daemon). Fails
 * the test when no answer comes within 10 s or the answer is not a status.
 */
static int64_t status_latency_us(struct tu_daemon *d)
{
        static const char request[] = "{\"v\":1,\"cmd\":\"status\"}\n";
        struct timeval tv = { .tv_sec = 10 };
        int64_t t0 = tu_now_us();
        int fd = tu_connect_raw(d->socket);
        char buf[65536];
        size_t len = 0;

        assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
        assert_int_equal(send(fd, request, strlen(request), MSG_NOSIGNAL),
                         (ssize_t)strlen(request));
        while (!memchr(buf, '\n', len)) {
                ssize_t k = len < sizeof buf ? recv(fd, buf + len, sizeof buf - len, 0) : 0;

                if (k <= 0)
                        fail_msg("no status answer within 10 s (%zu bytes): %s", len,
                                 k < 0 ? strerror(errno) : "closed");
                len += (size_t)k;
        }
        t0 = tu_now_us() - t0;
        close(fd);
        if (!memmem(buf, len, "\"ok\":true", 9))
                fail_msg("status answered: %.*s", (int)(len < 300 ? len : 300), buf);
        return t0;
}

/*
 * (e) A subscriber that asks for events and then never reads, while 2,000 jobs are done: the
 * daemon keeps at most CONTROL_MAX_SUBSCRIBER_OUTPUT for it and then drops it (its memory
 * does not grow with the backlog of events), every job is done once, and a status request
 * is answered within 1 s throughout (sampled every 100 ms, timed on the socket; the worst and
 * the daemon's peak resident size are printed).
 */
static void test_subscriber_never_reads(void **state)
{
        enum { N = 2000 };
        static const char events[] = "{\"v\":1,\"cmd\":\"events\"}\n";
        struct tu_daemon d;
        int sub, rcvbuf = 4096, samples = 0;
        int64_t worst = 0, t0;
        long hwm_before, hwm_after;
        json_t *st;

        (void)state;
        tu_daemon_setup(&d, PIPE, 2, "degradation = { enabled = false; };");
        /* Under AddressSanitizer, freed memory waits in a quarantine of 256 MiB before reuse,
         * which the peak would measure instead of what imgd keeps: keep it small here. */
        {
                const char *asan = getenv("ASAN_OPTIONS");
                char *opts = tu_path("%s%squarantine_size_mb=1", asan ? asan : "",
                                     asan && *asan ? ":" : "");

                setenv("ASAN_OPTIONS", opts, 1);
                tu_daemon_start(&d);
                if (asan)
                        setenv("ASAN_OPTIONS", asan, 1);
                else
                        unsetenv("ASAN_OPTIONS");
                free(opts);
        }
        hwm_before = proc_kb(d.pid, "VmHWM:");
        sub = tu_connect_raw(d.socket);
        assert_int_equal(setsockopt(sub, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf), 0);
        assert_int_equal(send(sub, events, strlen(events), MSG_NOSIGNAL), (ssize_t)strlen(events));
        for (int waited = 0;; waited += 50) {
                st = advfx_status_of(&d, NULL);
                if (json_integer_value(json_object_get(st, "subscribers")) == 1)
                        break;
                json_decref(st);
                assert_true(waited < 10000);
                usleep(50 * 1000);
        }
        json_decref(st);

        /* The 2,000 uploads, intake running as they come, the workers too. */
        t0 = tu_now_us();
        for (unsigned i = 0; i < N; i++) {
                char *p = tu_path("%s/s%02u/up%04u.png", d.uploads, i / 100, i);

                tu_make_image(p, 16 + i % 50, 16 + i / 50, "png", false);
                free(p);
                if (i % 100 == 99) {
                        int64_t us = status_latency_us(&d);
                        worst = us > worst ? us : worst;
                        samples++;
                }
        }
        for (;;) {
                int64_t us = status_latency_us(&d);
                bool idle;

                worst = us > worst ? us : worst;
                samples++;
                st = advfx_status_of(&d, NULL);
                idle = advfx_status_jobs(st, "done") == N &&
                       !json_is_true(json_object_get(st, "intake_pending"));
                json_decref(st);
                if (idle)
                        break;
                if (tu_now_us() - t0 > 600 * 1000000LL) {
                        char *log = advfx_log_of(&d);
                        fail_msg("2,000 jobs not done in 600 s; log:\n%s", log);
                }
                usleep(100 * 1000);
        }
        hwm_after = proc_kb(d.pid, "VmHWM:");
        print_message("2,000 jobs with a subscriber that never reads: %.1f s; imgctl status "
                      "worst %.1f ms of %d samples (a status request on the socket); imgd VmHWM "
                      "%ld kB before, %ld kB after\n",
                      (double)(tu_now_us() - t0) / 1e6, (double)worst / 1000, samples, hwm_before,
                      hwm_after);
        if (worst >= 1000000)
                fail_msg("a status request took %.1f ms", (double)worst / 1000);
        /* Dropped: its events are not kept for it without bound. */
        st = advfx_status_of(&d, NULL);
        assert_int_equal(json_integer_value(json_object_get(st, "subscribers")), 0);
        json_decref(st);
        assert_true(tu_log_contains(&d, "subscriber"));
        /* A daemon that buffered every event for it (about 600 bytes each, three each job)
         * would have grown by over 3 MB; the bound is 1 MiB. */
        assert_true(hwm_after - hwm_before < 16 * 1024);
        tu_daemon_wait_idle(&d, 120);
        advfx_assert_each_done_once(&d, N);
        close(sub);
        tu_daemon_cleanup(&d);
}

/* tu_daemon_start() with RLIMIT_NOFILE set to nofile, soft and hard, for imgd alone. */
static void start_with_nofile(struct tu_daemon *d, rlim_t nofile)
{
        pid_t pid = fork();

        assert_true(pid >= 0);
        if (pid == 0) {
                struct rlimit rl = { .rlim_cur = nofile, .rlim_max = nofile };
                int fd = open(d->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);

                if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
                        _exit(126);
                if (fd >= 0) {
                        dup2(fd, STDERR_FILENO);
                        dup2(fd, STDOUT_FILENO);
                }
                execl(IMGD_BUILD_DIR "/imgd", "imgd", "-v", "-c", d->config, (char *)NULL);
                _exit(127);
        }
        d->pid = pid;
        for (int waited = 0;; waited += 10) {
                int status;

                if (tu_imgctl(d, NULL, "status", NULL) == 0)
                        return;
                if (waitpid(pid, &status, WNOHANG) == pid) {
                        char *log = advfx_log_of(d);

                        d->pid = 0;
                        fail_msg("imgd exited during start-up (status %d):\n%s", status, log);
                }
                if (waited > 20000) {
                        kill(pid, SIGKILL);
                        fail_msg("imgd did not answer within 20 s");
                }
                usleep(10 * 1000);
        }
}

/*
 * (k) imgd started with 64 file descriptors (soft and hard: `ulimit -n 64`), 40 control
 * clients that connect and stay silent, then 400 uploads in a burst while `imgctl status` is
 * asked: imgd does not crash, answers status within 1 s, makes every upload a job once and
 * does it, and says what ran short ("Too many open files") if anything did. (The silent
 * clients used to take every descriptor: accept() failed for `imgctl status` until they
 * timed out, 30 s later, and intake failed with EMFILE meanwhile.)
 */
static void test_fd_limit_64(void **state)
{
        enum { N = 400, SILENT = 60 };
        struct tu_daemon d;
        int silent[SILENT];
        int64_t worst = 0;
        char *log;

        (void)state;
        tu_daemon_setup(&d, PIPE, 2, "degradation = { enabled = false; };");
        start_with_nofile(&d, 64);
        {
                struct rlimit got;

                assert_int_equal(prlimit(d.pid, RLIMIT_NOFILE, NULL, &got), 0);
                assert_int_equal(got.rlim_cur, 64);
                assert_int_equal(got.rlim_max, 64);
        }
        for (unsigned i = 0; i < SILENT; i++)
                silent[i] = tu_connect_raw(d.socket);
        for (unsigned i = 0; i < N; i++) {
                char *p = tu_path("%s/d%u/fd%03u.png", d.uploads, i % 8, i);

                tu_make_image(p, 20 + i % 40, 20 + i / 40, "png", false);
                free(p);
                if (i % 50 == 49) {
                        int64_t us = status_latency_us(&d);
                        worst = us > worst ? us : worst;
                }
        }
        for (int64_t until = tu_now_us() + 300 * 1000000LL;;) {
                json_t *st = advfx_status_of(&d, NULL);
                int64_t us = status_latency_us(&d);
                bool done = advfx_status_jobs(st, "done") == N &&
                            !json_is_true(json_object_get(st, "intake_pending")) &&
                            json_integer_value(json_object_get(st, "intake_retry")) == 0;

                worst = us > worst ? us : worst;
                json_decref(st);
                if (done)
                        break;
                if (tu_now_us() > until) {
                        log = advfx_log_of(&d);
                        fail_msg("not every upload was done within 300 s; log:\n%s", log);
                }
                usleep(200 * 1000);
        }
        assert_int_equal(kill(d.pid, 0), 0);
        /* Clients are limited to a quarter of the descriptors, and the log says so. */
        assert_true(tu_log_contains(&d, "at most 16 clients and 4 event subscribers "
                                        "(RLIMIT_NOFILE is 64)"));
        log = advfx_log_of(&d);
        print_message("64 descriptors, %d silent clients, %d uploads: a status request took %.1f "
                      "ms at worst; "
                      "\"Too many open files\" %s in the log\n",
                      SILENT, N, (double)worst / 1000,
                      strstr(log, "Too many open files") ? "is" : "is not");
        free(log);
        if (worst >= 1000000)
                fail_msg("a status request took %.1f ms", (double)worst / 1000);
        tu_daemon_wait_idle(&d, 120);
        advfx_assert_each_done_once(&d, N);
        for (unsigned i = 0; i < SILENT; i++)
                close(silent[i]);
        tu_daemon_cleanup(&d);
}

/* The lowest descriptor number that pid does not use. */
static rlim_t lowest_free_fd(pid_t pid)
{
        char *dir = tu_path("/proc/%d/fd", (int)pid);
        bool used[4096] = { false };
        DIR *dp = opendir(dir);
        struct dirent *de;
        rlim_t n = 0;

        assert_non_null(dp);
        while ((de = readdir(dp))) {
                long fd = strtol(de->d_name, NULL, 10);

                if (de->d_name[0] != '.' && fd >= 0 && fd < 4096)
                        used[fd] = true;
        }
        closedir(dp);
        free(dir);
        while (n < 4096 && used[n])
                n++;
        return n;
}

/*
 * (k) A folder of uploads renamed into the tree while imgd has no descriptor to spare: its
 * files came before its watch, so they have no events, and the folder cannot be read. It is
 * read again by the periodic scan once descriptors are back, and each file becomes a job
 * once. (Its files used to be lost until the next restart: the failed read was only logged.)
 */
static void test_fd_exhausted_folder_moved_in(void **state)
{
        enum { N = 5 };
        struct tu_daemon d;
        struct rlimit old, low;
        char *outside, *inside, *msg;

        (void)state;
        tu_daemon_setup(&d, PIPE, 1, "unwatched_scan_interval = 2;");
        tu_daemon_start(&d);
        assert_int_equal(tu_imgctl(&d, NULL, "pause", NULL), 0); /* intake alone is tested */
        outside = tu_path("%s/staging/album", d.root);
        for (unsigned i = 0; i < N; i++) {
                char *p = tu_path("%s/a%u.png", outside, i);

                tu_make_image(p, 30 + i, 20, "png", false);
                free(p);
        }
        usleep(300 * 1000); /* the control connection closed */
        assert_int_equal(prlimit(d.pid, RLIMIT_NOFILE, NULL, &old), 0);
        low = old;
        low.rlim_cur = lowest_free_fd(d.pid);
        assert_int_equal(prlimit(d.pid, RLIMIT_NOFILE, &low, NULL), 0);

        inside = tu_path("%s/album", d.uploads);
        assert_int_equal(rename(outside, inside), 0);
        msg = tu_path("scan %s: Too many open files", inside);
        for (int waited = 0; !tu_log_contains(&d, msg); waited += 50) {
                if (waited > 20000) {
                        char *log = advfx_log_of(&d);
                        fail_msg("no \"%s\" in the log:\n%s", msg, log);
                }
                usleep(50 * 1000);
        }
        usleep(500 * 1000);
        assert_int_equal(prlimit(d.pid, RLIMIT_NOFILE, &old, NULL), 0);
        advfx_wait_jobs_until(&d, "queued", N, 30);
        assert_int_equal(tu_ledger_int(&d, "SELECT count(*) FROM jobs"), N);
        assert_int_equal(tu_ledger_int(&d, "SELECT count(DISTINCT source_path) FROM jobs"), N);
        free(msg);
        free(inside);
        free(outside);
        tu_daemon_cleanup(&d);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_fd_limit_64),
                cmocka_unit_test(test_fd_exhausted_folder_moved_in),
                cmocka_unit_test(test_subscriber_never_reads),
        };

        /* IMGD_TEST_FILTER=test_fd_* runs only the cases whose names match. */
        if (getenv("IMGD_TEST_FILTER"))
                cmocka_set_test_filter(getenv("IMGD_TEST_FILTER"));
        return cmocka_run_group_tests(tests, NULL, NULL);
}
