/* SPDX-License-Identifier: MIT */
/*
 * test-ledger-batch.c - group commit (ledger_batch_begin(), ledger_batch_commit(); issue 16) on
 * real SQLite files: the transitions of a batch are seen at once by reads through the ledger and
 * by nobody else until the commit; after it they are in the file; a process killed before the
 * commit leaves none of them; a transition that fails inside a batch is undone alone; a batch
 * on a file system that fills up undoes them all, and the ledger goes on afterwards.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sqlite3.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "daemon/ledger.h"
#include "shared/macro.h"

#include "ledger-fixture.h"

static int64_t count_jobs(struct ledfx *f)
{
        return ledfx_raw_int(f, "SELECT count(*) FROM jobs");
}

/* Enqueued in a batch: seen through the ledger at once, by another connection only after
 * the commit, and still there after the ledger is opened again. */
static void test_batch_commits_together(void **state)
{
        struct ledfx *f = *state;
        int64_t ids[5];

        assert_int_equal(ledger_batch_begin(f->l), 0);
        assert_true(ledger_in_batch(f->l));
        for (unsigned i = 0; i < 5; i++) {
                _cleanup_free_ char *p = ledfx_xasprintf("/srv/up/b%u.jpg", i);
                _cleanup_free_ char *k = ledfx_xasprintf("/srv/media/b%u", i);

                ids[i] = ledfx_enqueue(f->l, p, k, i, 1000 + i);
        }
        /* Reads through the ledger see the batch... */
        ledfx_assert_counts(f->l, 5, 0, 0, 0, 0, 0);
        for (unsigned i = 0; i < 5; i++)
                assert_int_equal(ledfx_state_of(f->l, ids[i]), JOB_QUEUED);
        /* ... a claim inside it too ... */
        assert_int_equal(ledfx_claim(f->l, 2000), ids[0]);
        /* ... and nobody else does, until the commit. */
        assert_int_equal(count_jobs(f), 0);
        assert_int_equal(ledger_batch_commit(f->l), 0);
        assert_false(ledger_in_batch(f->l));
        assert_int_equal(count_jobs(f), 5);

        ledfx_reopen(f);
        ledfx_assert_counts(f->l, 4, 1, 0, 0, 0, 0);
        ledfx_assert_counts_real(f);
}

/* A process that dies before its batch commits leaves none of the batch's transitions, and
 * every transition committed before it. */
static void test_killed_before_commit(void **state)
{
        struct ledfx *f = *state;
        int status;
        pid_t pid;

        ledfx_enqueue(f->l, "/srv/up/before.jpg", "/srv/media/before", 1, 1000);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                if (ledger_batch_begin(f->l) < 0)
                        _exit(2);
                for (unsigned i = 0; i < 20; i++) {
                        char p[64], k[64];
                        struct source_info s;
                        int64_t id;

                        snprintf(p, sizeof p, "/srv/up/lost%u.jpg", i);
                        snprintf(k, sizeof k, "/srv/media/lost%u", i);
                        s = ledfx_src_make(p, k, 100 + i);
                        if (ledger_enqueue(f->l, &s, 2000, &id) != 1)
                                _exit(3);
                }
                /* Killed, the transaction open. */
                raise(SIGKILL);
                _exit(4);
        }
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

        ledfx_reopen(f);
        assert_int_equal(count_jobs(f), 1);
        ledfx_assert_counts(f->l, 1, 0, 0, 0, 0, 0);
        ledfx_assert_counts_real(f);
}

/* A transition that fails inside the batch is undone alone: the others stand. */
static void test_failure_inside_undone_alone(void **state)
{
        struct ledfx *f = *state;
        struct job_output out = {
                .variant = "s",
                .path = "/srv/media/x_s.webp",
                .format = "webp",
                .width = 10,
                .height = 10,
                .bytes = 100,
                .sha256 = "0000000000000000000000000000000000000000000000000000000000000000",
        };
        int64_t a, b, queued;

        a = ledfx_enqueue(f->l, "/srv/up/a.jpg", "/srv/media/a", 1, 1000);
        b = ledfx_enqueue(f->l, "/srv/up/b.jpg", "/srv/media/b", 2, 1000);
        assert_int_equal(ledfx_claim(f->l, 1100), a);
        assert_int_equal(ledfx_claim(f->l, 1100), b);

        assert_int_equal(ledger_batch_begin(f->l), 0);
        assert_int_equal(ledger_complete(f->l, a, ledfx_fence_of(f->l, a), &out, 1, 1200), 0);
        /* Completed again: refused (it is no longer running), and only this transition is
         * undone. */
        assert_int_equal(ledger_complete(f->l, a, ledfx_fence_of(f->l, a), &out, 1, 1200), -ESTALE);
        queued = ledfx_enqueue(f->l, "/srv/up/c.jpg", "/srv/media/c", 3, 1300);
        assert_int_equal(ledger_batch_commit(f->l), 0);

        assert_int_equal(ledfx_state_of(f->l, a), JOB_DONE);
        assert_int_equal(ledfx_state_of(f->l, b), JOB_RUNNING);
        assert_int_equal(ledfx_state_of(f->l, queued), JOB_QUEUED);
        assert_int_equal(ledfx_raw_int(f, "SELECT count(*) FROM outputs"), 1);
        ledfx_assert_counts_real(f);
}

/* A batch on a file system that fills up: SQLite gives up the batch's transaction at the
 * transition that finds no space; the rest of the batch and its commit fail with ENOSPC, none
 * of its transitions is left, and the ledger goes on once there is space again. A real tmpfs
 * of 1 MiB in a mount namespace of the test's own (skipped where one cannot be made). */
static void test_disk_full_undoes_all(void **state)
{
        struct ledfx *f = *state;
        _cleanup_free_ char *filler = NULL, *db = NULL;
        char *err = NULL, big[3000];
        int64_t before, id;
        int r = 0, fd;
        unsigned i;

        ledger_free(f->l);
        f->l = NULL;
        if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
            mount("imgd-test", f->dir, "tmpfs", 0, "size=1m,mode=0750") < 0)
                skip();
        db = ledfx_xasprintf("%s/imgd.db", f->dir);
        assert_int_equal(ledger_open(db, &f->l, &err), 0);
        ledfx_enqueue(f->l, "/srv/up/kept.jpg", "/srv/media/kept", 1, 1000);
        before = count_jobs(f);
        /* Most of the space taken by a file, the rest by the batch. */
        filler = ledfx_xasprintf("%s/filler", f->dir);
        fd = open(filler, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        assert_true(fd >= 0);
        memset(big, 'x', sizeof big);
        while (write(fd, big, sizeof big) > 0 && lseek(fd, 0, SEEK_CUR) < 700 * 1024)
                ;
        close(fd);

        assert_int_equal(ledger_batch_begin(f->l), 0);
        big[sizeof big - 1] = '\0';
        for (i = 0; i < 2000 && r >= 0; i++) {
                _cleanup_free_ char *p = ledfx_xasprintf("/srv/up/%u-%s", i, big);
                struct source_info s = ledfx_src_make(p, p, 10 + i);

                r = ledger_enqueue(f->l, &s, 2000, &id);
        }
        assert_int_equal(r, -ENOSPC);
        /* The batch is lost: what follows in it fails the same way... */
        {
                struct source_info s = ledfx_src_make("/srv/up/late.jpg", "/srv/media/late", 9);

                assert_int_equal(ledger_enqueue(f->l, &s, 3000, &id), -ENOSPC);
        }
        /* ... and so does the commit, which leaves none of it. */
        assert_int_equal(ledger_batch_commit(f->l), -ENOSPC);
        assert_false(ledger_in_batch(f->l));
        assert_int_equal(count_jobs(f), before);

        /* Space again: the ledger takes transitions, and they last. */
        assert_int_equal(unlink(filler), 0);
        ledfx_enqueue(f->l, "/srv/up/after.jpg", "/srv/media/after", 2, 4000);
        assert_int_equal(count_jobs(f), before + 1);
        ledfx_assert_counts(f->l, 2, 0, 0, 0, 0, 0);
        ledger_free(f->l);
        f->l = NULL;
        assert_int_equal(umount(f->dir), 0);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_batch_commits_together, ledfx_setup,
                                                ledfx_teardown),
                cmocka_unit_test_setup_teardown(test_killed_before_commit, ledfx_setup,
                                                ledfx_teardown),
                cmocka_unit_test_setup_teardown(test_failure_inside_undone_alone, ledfx_setup,
                                                ledfx_teardown),
        };
        /* SQLite only: a file system under the ledger's file that fills up (PostgreSQL's
         * disk is the server's). */
        const struct CMUnitTest sqlite_only[] = {
                cmocka_unit_test_setup_teardown(test_disk_full_undoes_all, ledfx_setup,
                                                ledfx_teardown),
        };

        return ledfx_run("ledger-batch", tests, ELEMENTSOF(tests), sqlite_only,
                         ELEMENTSOF(sqlite_only));
}
