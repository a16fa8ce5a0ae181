/* SPDX-License-Identifier: MIT */
/*
 * test-lockfile.c - lock files (lockfile.h) on real files with real processes: the holder's
 * pid is written and reported to a refused process; another process cannot take a held lock;
 * a process started with exec does not inherit it (close-on-exec); a holder that dies, even
 * by SIGKILL, leaves the lock free; lockfile_same_file() tells the locked file by its inode.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon/lockfile.h"
#include "testutil.h"

/* In a child process: tries to take the lock at path; exits 0 if it got it, 1 if it is held
 * by `expect_holder` (as reported), 2 on anything else. Returns the exit status. */
static int take_in_child(const char *path, pid_t expect_holder)
{
        int status;
        pid_t pid = fork();

        assert_true(pid >= 0);
        if (pid == 0) {
                lockfile *l = NULL;
                pid_t holder = -1;
                int r = lockfile_take(path, &l, &holder);

                if (r == 0)
                        _exit(0);
                _exit(r == -EWOULDBLOCK && holder == expect_holder ? 1 : 2);
        }
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        return WEXITSTATUS(status);
}

static void test_held_and_released(void **state)
{
        char *dir = tu_mkdtemp(), *path = tu_path("%s/imgd.lock", dir), *text, *want;
        lockfile *l = NULL;

        (void)state;
        assert_int_equal(lockfile_take(path, &l, NULL), 0);
        text = tu_read_file(path, NULL);
        want = tu_path("%d\n", (int)getpid());
        assert_string_equal(text, want);
        assert_int_equal(take_in_child(path, getpid()), 1);
        assert_true(lockfile_same_file(l, path));

        l = lockfile_free(l);
        assert_null(l);
        /* The file stays (removing it would race with a process opening it), emptied. */
        free(text);
        text = tu_read_file(path, NULL);
        assert_string_equal(text, "");
        assert_int_equal(take_in_child(path, 0), 0);

        free(want);
        free(text);
        free(path);
        tu_rm_rf(dir);
        free(dir);
}

/* A program started while the lock is held (as workers and hooks are) does not hold it: once
 * the holder lets go, the lock is free although that program still runs. */
static void test_not_inherited_by_exec(void **state)
{
        char *dir = tu_mkdtemp(), *path = tu_path("%s/imgd.lock", dir);
        lockfile *l = NULL;
        pid_t child;

        (void)state;
        assert_int_equal(lockfile_take(path, &l, NULL), 0);
        child = fork();
        assert_true(child >= 0);
        if (child == 0) {
                execl("/bin/sleep", "sleep", "30", (char *)NULL);
                _exit(127);
        }
        usleep(100 * 1000); /* sleep has started */
        l = lockfile_free(l);
        assert_int_equal(kill(child, 0), 0);
        assert_int_equal(take_in_child(path, 0), 0);
        kill(child, SIGKILL);
        waitpid(child, NULL, 0);
        free(path);
        tu_rm_rf(dir);
        free(dir);
}

/* A holder killed with SIGKILL leaves the lock free, its pid still in the file. */
static void test_free_after_holder_killed(void **state)
{
        char *dir = tu_mkdtemp(), *path = tu_path("%s/imgd.lock", dir), *text, *want;
        int pipefd[2];
        char c;
        pid_t holder;
        lockfile *l = NULL;

        (void)state;
        assert_int_equal(pipe(pipefd), 0);
        holder = fork();
        assert_true(holder >= 0);
        if (holder == 0) {
                lockfile *mine = NULL;

                if (lockfile_take(path, &mine, NULL) < 0)
                        _exit(2);
                (void)write(pipefd[1], "x", 1);
                pause();
                _exit(0);
        }
        close(pipefd[1]);
        assert_int_equal(read(pipefd[0], &c, 1), 1);
        close(pipefd[0]);
        assert_int_equal(take_in_child(path, holder), 1);
        kill(holder, SIGKILL);
        waitpid(holder, NULL, 0);

        text = tu_read_file(path, NULL);
        want = tu_path("%d\n", (int)holder);
        assert_string_equal(text, want); /* stale, and harmless */
        assert_int_equal(lockfile_take(path, &l, NULL), 0);
        l = lockfile_free(l);

        free(text);
        free(want);
        free(path);
        tu_rm_rf(dir);
        free(dir);
}

static void test_same_file(void **state)
{
        char *dir = tu_mkdtemp(), *path = tu_path("%s/imgd.lock", dir);
        char *link = tu_path("%s/link.lock", dir), *other = tu_path("%s/other.lock", dir);
        lockfile *l = NULL;

        (void)state;
        assert_int_equal(lockfile_take(path, &l, NULL), 0);
        assert_int_equal(symlink(path, link), 0);
        assert_true(lockfile_same_file(l, link));
        assert_false(lockfile_same_file(l, other)); /* missing */
        tu_write_file(other, "", 0);
        assert_false(lockfile_same_file(l, other));
        /* And the lock file itself must not be a symlink: refused, not followed. */
        assert_int_equal(lockfile_take(link, &(lockfile *){ NULL }, NULL), -ELOOP);
        l = lockfile_free(l);
        free(path);
        free(link);
        free(other);
        tu_rm_rf(dir);
        free(dir);
}

/* The holder killed between a fork and its child's exec: the child holds the lock a moment
 * longer, and the next taker waits for it instead of refusing (after a kill -9, a restart);
 * one that holds it for long is refused all the same, naming the dead holder. */
static void test_orphaned_by_dead_holder(void **state)
{
        char *dir = tu_mkdtemp(), *path = tu_path("%s/imgd.lock", dir);

        (void)state;
        for (int hold_ms = 300; hold_ms <= 4000; hold_ms += 3700) {
                int pipefd[2], status;
                pid_t holder, orphan = 0;
                lockfile *l = NULL;
                int64_t t0;
                char c;

                assert_int_equal(pipe(pipefd), 0);
                holder = fork();
                assert_true(holder >= 0);
                if (holder == 0) {
                        /* Takes the lock, forks a child that keeps the descriptor (as between
                         * fork and exec), and dies. */
                        if (lockfile_take(path, &l, NULL) < 0)
                                _exit(2);
                        if (fork() == 0) {
                                close(pipefd[0]);
                                if (write(pipefd[1], "x", 1) != 1)
                                        _exit(2);
                                usleep((useconds_t)hold_ms * 1000);
                                _exit(0);
                        }
                        _exit(0);
                }
                close(pipefd[1]);
                assert_int_equal(read(pipefd[0], &c, 1), 1);
                close(pipefd[0]);
                assert_int_equal(waitpid(holder, &status, 0), holder);
                assert_int_equal(WEXITSTATUS(status), 0);

                t0 = tu_now_us();
                if (hold_ms < 1000) {
                        assert_int_equal(lockfile_take(path, &l, NULL), 0);
                        assert_true(tu_now_us() - t0 >= 100 * 1000);
                        l = lockfile_free(l);
                } else {
                        assert_int_equal(lockfile_take(path, &l, &orphan), -EWOULDBLOCK);
                        assert_int_equal(orphan, holder);
                        assert_true(tu_now_us() - t0 >= 1500 * 1000);
                }
                usleep(100 * 1000);
                while (waitpid(-1, NULL, WNOHANG) > 0) {
                }
        }
        free(path);
        free(dir);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_held_and_released),
                cmocka_unit_test(test_not_inherited_by_exec),
                cmocka_unit_test(test_free_after_holder_killed),
                cmocka_unit_test(test_same_file),
                cmocka_unit_test(test_orphaned_by_dead_holder),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
