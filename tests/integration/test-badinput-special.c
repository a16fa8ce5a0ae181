/* SPDX-License-Identifier: MIT */
/*
 * test-badinput-special.c - issue 4's special files, against the real daemon: symlinks (to a file
 * and to a folder outside the tree), hard links, FIFOs and a device: refused with a reason in the
 * log, never jobs, nothing outside the tree read or published, no hang.
 *
 * Checks that are independent of each other are collected (CHECK) and reported together, so one
 * run shows every broken promise; the test then fails.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>

#include "shared/hash.h"
#include "testutil.h"
#include "badinput-fixture.h"

static json_int_t status_jobs_total(json_t *st)
{
        json_t *jobs = json_object_get(st, "jobs"), *v;
        const char *k;
        json_int_t n = 0;

        json_object_foreach(jobs, k, v) n += json_integer_value(v);
        return n;
}

/*
 * The first line of the daemon's log naming `path` (as a whole name: the next character is
 * not part of a longer path) and containing one of the reasons (NULL-terminated); a new
 * string, or NULL. Lines naming the path without a reason go to *ret_other when not NULL.
 */
static char *log_line_for(struct tu_daemon *d, const char *path, const char *const *reasons,
                          char **ret_other)
{
        char *log = tu_read_file(d->log, NULL), *line, *save = NULL, *found = NULL;
        size_t plen = strlen(path);

        if (ret_other)
                *ret_other = NULL;
        for (line = log ? strtok_r(log, "\n", &save) : NULL; line && !found;
             line = strtok_r(NULL, "\n", &save)) {
                for (char *p = strstr(line, path); p; p = strstr(p + 1, path)) {
                        char next = p[plen];
                        if (next == '/' || isalnum((unsigned char)next) || next == '.' ||
                            next == '_' || next == '-')
                                continue;
                        for (size_t r = 0; reasons[r] && !found; r++)
                                if (strstr(line, reasons[r]))
                                        found = strdup(line);
                        if (!found && ret_other && !*ret_other)
                                *ret_other = strdup(line);
                        break;
                }
        }
        free(log);
        return found;
}

struct refused {
        char *path;
        const char *what;
        const char *reasons[4];
};

static void test_special_files(void **state)
{
        struct tu_daemon *const d = badfx_daemon_new();
        struct refused r[16];
        size_t n = 0;
        char *outside, *secret, *odir, *inner, *tmp, *later, *later_out;
        char secret_sha[HASH_HEX_SIZE], inner_sha[HASH_HEX_SIZE];
        struct job_row j;
        int64_t lat, t0, ms;
        sqlite3 *db;
        json_t *st;
        int fd;

        (void)state;
#define REFUSE(p, w, ...) (r[n] = (struct refused){ (p), (w), { __VA_ARGS__, NULL } }, n++)
        tu_daemon_setup(d, PIPE_T, 2, "limits = { job_timeout = 10; };");

        /* Outside the tree: real images, which would render if they were ever read. */
        outside = tu_path("%s/outside", d->root);
        secret = tu_path("%s/secret.jpg", outside);
        odir = tu_path("%s/dir", outside);
        inner = tu_path("%s/inner.jpg", odir);
        tu_make_image(secret, 301, 201, "jpeg", false);
        tu_make_image(inner, 302, 202, "jpeg", false);
        fd = open(secret, O_RDONLY | O_CLOEXEC);
        assert_int_equal(hash_sha256_fd(fd, 0, secret_sha), 0);
        close(fd);
        fd = open(inner, O_RDONLY | O_CLOEXEC);
        assert_int_equal(hash_sha256_fd(fd, 0, inner_sha), 0);
        close(fd);

        /* Present at start (found by the start-up scan). */
        REFUSE(tu_path("%s/pre-link.jpg", d->uploads), "symlink to a file outside (at start)",
               "symlink", "symbolic link");
        assert_int_equal(symlink(secret, r[n - 1].path), 0);
        REFUSE(tu_path("%s/pre-linkdir", d->uploads), "symlinked folder outside (at start)",
               "symlink", "symbolic link");
        assert_int_equal(symlink(odir, r[n - 1].path), 0);
        REFUSE(tu_path("%s/pre-hl.jpg", d->uploads), "hard link to a file outside (at start)",
               "hard link");
        assert_int_equal(link(secret, r[n - 1].path), 0);

        tu_daemon_start(d);

        /* Made while running (inotify). */
        REFUSE(tu_path("%s/link.jpg", d->uploads), "symlink to a file outside", "symlink",
               "symbolic link");
        assert_int_equal(symlink(secret, r[n - 1].path), 0);
        REFUSE(tu_path("%s/linkdir", d->uploads), "symlinked folder outside", "symlink",
               "symbolic link");
        assert_int_equal(symlink(odir, r[n - 1].path), 0);

        /* A hard link inside the tree: the file is written under an ignored name, linked
         * to a second name with link(), then renamed to its own final name. */
        tmp = tu_path("%s/.hl.tmp", d->uploads);
        tu_make_image(tmp, 303, 203, "jpeg", false);
        REFUSE(tu_path("%s/hl-b.jpg", d->uploads), "hard link made with link() in the tree",
               "hard link");
        assert_int_equal(link(tmp, r[n - 1].path), 0);
        REFUSE(tu_path("%s/hl-a.jpg", d->uploads), "hard-linked file renamed into the tree",
               "hard link");
        badfx_rename_or_fail(tmp, r[n - 1].path);
        free(tmp);
        /* A hard link to a file outside the tree, made in place (ln outside/x uploads/y). */
        REFUSE(tu_path("%s/hl-out.jpg", d->uploads), "hard link to a file outside", "hard link");
        assert_int_equal(link(secret, r[n - 1].path), 0);

        /* FIFOs: made in place, and renamed in. Nothing writes to them: an open() that waits
         * for a writer would hang the daemon. */
        REFUSE(tu_path("%s/pipe.jpg", d->uploads), "FIFO made in place", "FIFO",
               "not a regular file");
        assert_int_equal(mkfifo(r[n - 1].path, 0644), 0);
        tmp = tu_path("%s/fifo.jpg", d->root);
        assert_int_equal(mkfifo(tmp, 0644), 0);
        REFUSE(tu_path("%s/pipe2.jpg", d->uploads), "FIFO renamed in", "FIFO",
               "not a regular file");
        badfx_rename_or_fail(tmp, r[n - 1].path);
        free(tmp);

        /* A character device like /dev/null (1:3); mknod needs root. */
        tmp = tu_path("%s/null.jpg", d->uploads);
        if (mknod(tmp, S_IFCHR | 0666, makedev(1, 3)) == 0) {
                REFUSE(tmp, "character device 1:3", "not a regular file", "device");
        } else {
                fprintf(stderr, "special files: mknod %s: %m; the device case is skipped\n", tmp);
                free(tmp);
        }

        /* An image renamed into the symlinked folder lands outside the tree. */
        tmp = tu_path("%s/stage/through.jpg", d->root);
        tu_make_image(tmp, 304, 204, "jpeg", false);
        {
                char *via = tu_path("%s/linkdir/through.jpg", d->uploads);
                badfx_rename_or_fail(tmp, via);
                free(via);
        }
        free(tmp);

        /* No hang: the daemon answers at once, and a good image dropped now is done within
         * seconds. */
        usleep(300 * 1000);
        badfx_assert_daemon_alive(d, "after the special files");
        st = badfx_status_json(d, &lat);
        json_decref(st);
        CHECK(lat < 2000000, "imgctl status took %.1f s after the FIFOs were made",
              (double)lat / 1e6);
        tmp = tu_path("%s/stage/later.jpg", d->root);
        later = tu_path("%s/later.jpg", d->uploads);
        later_out = tu_path("%s/later_t.webp", d->media);
        tu_make_image(tmp, 305, 205, "jpeg", false);
        db = badfx_ledger_open(d);
        t0 = tu_now_us();
        badfx_rename_or_fail(tmp, later);
        free(tmp);
        ms = badfx_wait_final(d, db, later, t0, 10000, NULL, &j);
        fprintf(stderr, "special files: a good image dropped after them ended %s in %lld ms\n",
                j.state[0] ? j.state : "(no job)", (long long)ms);
        CHECK(ms >= 0 && strcmp(j.state, "done") == 0,
              "the good image dropped after the special files is %s after %lld ms (%s)",
              j.state[0] ? j.state : "not a job", (long long)ms, j.error ? j.error : "");
        badfx_job_row_clear(&j);
        usleep(500 * 1000); /* anything that would still be picked up */
        tu_daemon_wait_idle(d, 30);
        badfx_assert_daemon_alive(d, "at the end");

        /* Nothing outside the tree was read or published: the only job and the only outputs
         * are later.jpg's. */
        CHECK(tu_count_files(d->media, "*") == 2 && access(later_out, F_OK) == 0,
              "the output tree holds %u files, expected later_t.webp and its manifest",
              tu_count_files(d->media, "*"));
        CHECK(badfx_query_int(db, "SELECT count(*) FROM jobs") == 1,
              "the ledger has %lld jobs, expected 1 (later.jpg)",
              (long long)badfx_query_int(db, "SELECT count(*) FROM jobs"));
        {
                sqlite3_stmt *q = badfx_prepare(db, "SELECT count(*) FROM jobs WHERE source_sha256 "
                                                    "IN (?1, ?2)");
                sqlite3_bind_text(q, 1, secret_sha, -1, SQLITE_STATIC);
                sqlite3_bind_text(q, 2, inner_sha, -1, SQLITE_STATIC);
                assert_int_equal(sqlite3_step(q), SQLITE_ROW);
                CHECK(sqlite3_column_int(q, 0) == 0,
                      "a job holds the content of a file outside the tree");
                sqlite3_finalize(q);
        }
        st = badfx_status_json(d, NULL);
        CHECK(status_jobs_total(st) == 1, "status counts %lld jobs, expected 1",
              (long long)status_jobs_total(st));
        json_decref(st);

        for (size_t i = 0; i < n; i++) {
                char *other = NULL, *line = log_line_for(d, r[i].path, r[i].reasons, &other);
                bool has_job = badfx_job_of(db, r[i].path, &j);
                const char *name = strrchr(r[i].path, '/') + 1;
                char *stem = strdup(name), *dot = strrchr(stem, '.'), *out;

                if (dot)
                        *dot = '\0';
                out = tu_path("%s/%s_t.webp", d->media, stem);
                fprintf(stderr, "  %-44s %s\n", r[i].what,
                        line    ? line
                        : other ? other
                                : "(not in the log)");
                CHECK(!has_job, "%s (%s) became job %lld (%s)", r[i].path, r[i].what,
                      (long long)j.id, j.state);
                CHECK(access(out, F_OK) != 0, "%s (%s) was published as %s", r[i].path, r[i].what,
                      out);
                CHECK(line, "the log does not name %s (%s) with a reason (\"%s\")%s%s", r[i].path,
                      r[i].what, r[i].reasons[0], other ? "; it only says: " : "",
                      other ? other : "");
                badfx_job_row_clear(&j);
                free(line);
                free(other);
                free(stem);
                free(out);
        }
        {
                /* The folders behind the symlinks were never entered. */
                char *o1 = tu_path("%s/linkdir", d->media),
                     *o2 = tu_path("%s/pre-linkdir", d->media);
                CHECK(access(o1, F_OK) != 0 && access(o2, F_OK) != 0,
                      "outputs were made for a symlinked folder");
                free(o1);
                free(o2);
        }

        if (badfx_problems)
                badfx_print_log_tail(d, 6000);
        sqlite3_close(db);
        for (size_t i = 0; i < n; i++)
                free(r[i].path);
        free(outside);
        free(secret);
        free(odir);
        free(inner);
        free(later);
        free(later_out);
        tu_daemon_cleanup(d);
        badfx_end_checks("special files");
#undef REFUSE
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_teardown(test_special_files, badfx_teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
