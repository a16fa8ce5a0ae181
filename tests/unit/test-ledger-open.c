/* SPDX-License-Identifier: MIT */
/*
 * test-ledger-open.c - opening the job ledger. On real SQLite files: creation and reopening,
 * the schema version, persistence across a crash, a missing parent folder, the refusal to open
 * corrupt, foreign or newer databases without touching them, the migration from the released
 * schema version 1, and the integrity check at open (whole file unless a clean stop of the file
 * exactly as it is was recorded). On a real PostgreSQL server (a schema of the test's own):
 * the schema created and kept, persistence across a crash, the refusal of a newer schema and of
 * a foreign one, and a server that cannot be reached, named without the password.
 * Tests look at the stored values (through ledger_get() or a second SQLite connection), not
 * only at return codes; the shared helpers are in tests/tools/ledger-fixture.h.
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
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "daemon/ledger.h"
#include "shared/macro.h"

#include "ledger-fixture.h"
#include "pg-fixture.h"

static void write_file(const char *path, const void *data, size_t len)
{
        FILE *f = fopen(path, "we");

        assert_non_null(f);
        assert_int_equal(fwrite(data, 1, len, f), len);
        assert_int_equal(fclose(f), 0);
}

static void *read_file(const char *path, size_t *ret_len)
{
        struct stat st;
        char *buf;
        FILE *f = fopen(path, "re");

        assert_non_null(f);
        assert_int_equal(fstat(fileno(f), &st), 0);
        buf = malloc((size_t)st.st_size + 1);
        assert_non_null(buf);
        assert_int_equal(fread(buf, 1, (size_t)st.st_size, f), (size_t)st.st_size);
        fclose(f);
        *ret_len = (size_t)st.st_size;
        return buf;
}

static bool exists(const char *path)
{
        return access(path, F_OK) == 0;
}

/* The schema of version 1, as imgd 0.1 created it (ledger.c migrations[0], released). */
static const char schema_v1[] =
        "CREATE TABLE schema_version (version INTEGER NOT NULL);"
        "CREATE TABLE jobs ("
        "  id INTEGER PRIMARY KEY, watch TEXT NOT NULL, source_path TEXT NOT NULL,"
        "  source_sha256 TEXT NOT NULL, source_size INTEGER NOT NULL,"
        "  source_mtime_ns INTEGER NOT NULL, source_ino INTEGER NOT NULL,"
        "  output_key TEXT NOT NULL, pipeline TEXT NOT NULL,"
        "  state TEXT NOT NULL CHECK (state IN"
        "    ('queued', 'running', 'retry', 'done', 'dead', 'cancelled')),"
        "  attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),"
        "  created_us INTEGER NOT NULL, updated_us INTEGER NOT NULL,"
        "  next_at_us INTEGER NOT NULL, finished_us INTEGER, lease_owner TEXT,"
        "  lease_expires_us INTEGER, last_error TEXT,"
        "  stage TEXT CHECK (stage IS NULL OR stage = 'verified'),"
        "  degraded INTEGER NOT NULL DEFAULT 0, info TEXT,"
        "  CHECK (length(source_sha256) = 64));"
        "CREATE INDEX jobs_state_next ON jobs (state, next_at_us);"
        "CREATE INDEX jobs_due ON jobs (next_at_us) WHERE state IN ('queued', 'retry');"
        "CREATE INDEX jobs_path ON jobs (source_path, id);"
        "CREATE INDEX jobs_output_key ON jobs (output_key, state);"
        "CREATE INDEX jobs_updated ON jobs (updated_us, id);"
        "CREATE INDEX jobs_degraded ON jobs (id) WHERE state = 'done' AND degraded = 1;"
        "CREATE TABLE job_errors ("
        "  job_id INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,"
        "  attempt INTEGER NOT NULL, at_us INTEGER NOT NULL, message TEXT NOT NULL);"
        "CREATE INDEX job_errors_job ON job_errors (job_id);"
        "CREATE TABLE outputs ("
        "  job_id INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,"
        "  variant TEXT NOT NULL, path TEXT NOT NULL, format TEXT NOT NULL,"
        "  width INTEGER NOT NULL, height INTEGER NOT NULL, bytes INTEGER NOT NULL,"
        "  sha256 TEXT NOT NULL, tmp_path TEXT,"
        "  PRIMARY KEY (job_id, variant));"
        "CREATE INDEX outputs_path ON outputs (path);"
        "INSERT INTO schema_version (version) VALUES (1);";

static bool checked_whole(ledger *l)
{
        const char *what = ledger_open_check(l);

        assert_non_null(what);
        return strstr(what, "whole file") != NULL;
}

/* Opening, persistence, schema */

static void test_create_reopen(void **state)
{
        struct ledfx *f = *state;
        struct source_info s = ledfx_src_make("/srv/uploads/a.jpg", "/srv/media/a", 7);
        struct job_detail *d;
        struct stat st;
        int64_t id;

        assert_int_equal(stat(f->db, &st), 0);
        assert_true(S_ISREG(st.st_mode));
        assert_int_equal(st.st_mode & 0777, 0640 & ~(mode_t)022);

        assert_int_equal(ledger_enqueue(f->l, &s, 1000, &id), 1);
        ledfx_reopen(f);

        d = ledfx_get(f->l, id);
        assert_string_equal(d->job.watch, "/srv/uploads");
        assert_string_equal(d->job.source_path, "/srv/uploads/a.jpg");
        assert_string_equal(d->job.output_key, "/srv/media/a");
        assert_string_equal(d->job.pipeline, "default");
        assert_string_equal(d->job.sha256, s.sha256);
        assert_int_equal(d->job.size, 1007);
        assert_int_equal(d->job.mtime_ns, 1700000000000000007LL);
        assert_int_equal(d->job.ino, 49);
        assert_int_equal(d->job.state, JOB_QUEUED);
        assert_int_equal(d->job.attempts, 0);
        assert_int_equal(d->job.created_usec, 1000);
        assert_int_equal(d->job.updated_usec, 1000);
        assert_int_equal(d->job.next_at_usec, 1000);
        assert_null(d->job.last_error);
        assert_int_equal(d->n_outputs, 0);
        assert_int_equal(d->n_errors, 0);
        job_detail_free(d);

        assert_int_equal(ledger_integrity_check(f->l), 0);
}

static void test_schema_version(void **state)
{
        struct ledfx *f = *state;

        assert_int_equal(ledfx_raw_int(f, "SELECT count(*) FROM schema_version"), 1);
        assert_int_equal(ledfx_raw_int(f, "SELECT version FROM schema_version"), 5);
        /* journal_mode=WAL is stored in the file: byte 18 of the header is 2. */
        assert_int_equal(ledfx_raw_int(f, "SELECT count(*) FROM pragma_journal_mode "
                                          "WHERE journal_mode = 'wal'"),
                         1);
        ledfx_reopen(f);
        assert_int_equal(ledfx_raw_int(f, "SELECT count(*) FROM schema_version"), 1);
        assert_int_equal(ledfx_raw_int(f, "SELECT version FROM schema_version"), 5);
}

static void test_crash_persists(void **state)
{
        struct ledfx *f = *state;
        int64_t id = 0;
        int status;
        pid_t pid;

        f->l = ledger_free(f->l);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                struct source_info s = ledfx_src_make("/srv/uploads/c.jpg", "/srv/media/c", 1);
                struct job *j = NULL;
                ledger *l = NULL;

                if (ledger_open(f->db, &l, NULL) < 0 || ledger_enqueue(l, &s, 10, &id) != 1 ||
                    ledger_claim(l, "child", 20, LEDFX_LEASE_US, JOB_PRIORITY_BACKGROUND, &j) !=
                            1 ||
                    ledger_commit_claims(l) < 0)
                        _exit(1);
                /* Committed (on SQLite a claim waits for a commit), then no close, no checkpoint.
                 */
                _exit(j->id == id ? 0 : 2);
        }
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);

        ledfx_reopen(f);
        assert_int_equal(ledfx_state_of(f->l, 1), JOB_RUNNING);
        assert_int_equal(ledfx_attempts_of(f->l, 1), 1);
        assert_int_equal(ledger_recover(f->l, 30), 1);
        assert_int_equal(ledfx_state_of(f->l, 1), JOB_QUEUED);
}

static void test_missing_parent(void **state)
{
        struct ledfx *f = *state;
        char *dir = ledfx_xasprintf("%s/no/such", f->dir);
        char *path = ledfx_xasprintf("%s/imgd.db", dir);
        ledger *l = NULL;
        char *err = NULL;

        assert_int_equal(ledger_open(path, &l, &err), -ENOENT);
        assert_null(l);
        assert_non_null(err);
        assert_non_null(strstr(err, path));
        assert_non_null(strstr(err, dir));
        assert_false(exists(dir));
        free(err);
        free(path);
        free(dir);
}

/* Opens path expecting -EBADMSG with the corruption message, and the file unchanged. */
static void assert_refused_corrupt(const char *path)
{
        size_t n_before, n_after;
        char *before = read_file(path, &n_before);
        char *wal = ledfx_xasprintf("%s-wal", path);
        ledger *l = NULL;
        char *err = NULL, *after;

        assert_int_equal(ledger_open(path, &l, &err), -EBADMSG);
        assert_null(l);
        assert_non_null(err);
        assert_non_null(strstr(err, path));
        assert_non_null(strstr(err, "corrupt"));
        assert_non_null(strstr(err, ".recover"));
        assert_non_null(strstr(err, "quick_check: "));

        after = read_file(path, &n_after);
        assert_int_equal(n_before, n_after);
        assert_memory_equal(before, after, n_before);
        assert_false(exists(wal));

        free(err);
        free(before);
        free(after);
        free(wal);
}

static void test_corrupt_garbage(void **state)
{
        struct ledfx *f = *state;
        char garbage[8192];

        f->l = ledger_free(f->l);
        assert_int_equal(unlink(f->db), 0);
        for (size_t i = 0; i < sizeof garbage; i++)
                garbage[i] = (char)(i * 131 + 7);
        write_file(f->db, garbage, sizeof garbage);

        assert_refused_corrupt(f->db);
}

static void test_corrupt_pages(void **state)
{
        struct ledfx *f = *state;
        size_t len;
        char *buf;
        int fd;

        /* Enough rows for many b-tree pages; then closed, so the WAL is checkpointed. */
        ledfx_raw_bulk_done(f, 2000);
        ledfx_enqueue(f->l, "/u/a.jpg", "/m/a", 1, 1000);
        f->l = ledger_free(f->l);
        buf = read_file(f->db, &len);
        free(buf);
        assert_true(len >= 20 * 4096);

        fd = open(f->db, O_WRONLY | O_CLOEXEC);
        assert_true(fd >= 0);
        for (size_t off = (len / 4096 / 2) * 4096; off < (len / 4096 / 2 + 3) * 4096; off++) {
                char c = (char)(off * 37 + 11);
                assert_int_equal(pwrite(fd, &c, 1, (off_t)off), 1);
        }
        close(fd);

        assert_refused_corrupt(f->db);
}

static void test_future_schema(void **state)
{
        struct ledfx *f = *state;
        ledger *l = NULL;
        char *err = NULL;

        f->l = ledger_free(f->l);
        ledfx_raw_exec(f, "UPDATE schema_version SET version = 6");

        assert_int_equal(ledger_open(f->db, &l, &err), -EPROTONOSUPPORT);
        assert_null(l);
        assert_non_null(err);
        assert_non_null(strstr(err, f->db));
        assert_non_null(strstr(err, "version 6"));
        free(err);
        assert_int_equal(ledfx_raw_int(f, "SELECT version FROM schema_version"), 6);
}

static void test_foreign_database(void **state)
{
        struct ledfx *f = *state;
        char *path = ledfx_xasprintf("%s/other.db", f->dir);
        ledger *l = NULL;
        char *err = NULL;

        struct ledfx other = { .engine = LEDGER_ENGINE_SQLITE, .db = path };

        write_file(path, "", 0);
        ledfx_raw_exec(&other, "CREATE TABLE notes (x TEXT)");
        assert_int_equal(ledger_open(path, &l, &err), -EMEDIUMTYPE);
        assert_null(l);
        assert_non_null(err);
        assert_non_null(strstr(err, path));
        free(err);
        assert_int_equal(ledfx_raw_int(&other, "SELECT count(*) FROM sqlite_master"), 1);
        free(path);
}

/* A ledger of schema version 1 is migrated at open: indexes replaced, counts filled from
 * the jobs it holds, and kept from then on. */
static void test_migrate_v1(void **state)
{
        struct ledfx *f = *state;
        struct ledger_filter flt = { .state = JOB_DONE, .limit = 2 };
        struct job *jobs = NULL;
        size_t n = 0;
        int64_t id;

        f->l = ledger_free(f->l);
        assert_int_equal(unlink(f->db), 0);
        write_file(f->db, "", 0);
        ledfx_raw_exec(f, schema_v1);
        ledfx_raw_exec(f, "PRAGMA journal_mode = WAL");
        ledfx_raw_bulk_done(f, 30);
        ledfx_raw_exec(f, "UPDATE jobs SET state = 'queued' WHERE id <= 3;"
                          "UPDATE jobs SET state = 'dead', finished_us = 7 WHERE id = 4;"
                          "UPDATE jobs SET state = 'cancelled' WHERE id = 5;"
                          "UPDATE jobs SET state = 'running', lease_owner = 'x' WHERE id = 6;");
        assert_int_equal(ledfx_raw_int(f, "SELECT version FROM schema_version"), 1);

        ledfx_reopen(f);
        assert_int_equal(ledfx_raw_int(f, "SELECT version FROM schema_version"), 5);
        assert_int_equal(ledfx_raw_int(f, "SELECT count(*) FROM pragma_table_info('outputs') "
                                          "WHERE name = 'recipe'"),
                         1);
        assert_int_equal(ledfx_raw_int(f, "SELECT count(*) FROM pragma_table_info('jobs') "
                                          "WHERE name IN ('fence', 'kind', 'origin')"),
                         3);
        assert_int_equal(ledfx_raw_int(f, "SELECT count(*) FROM sqlite_master "
                                          "WHERE name = 'jobs_state_next'"),
                         0);
        assert_int_equal(ledfx_raw_int(f, "SELECT count(*) FROM sqlite_master WHERE type = 'index' "
                                          "AND name IN ('jobs_state_updated', 'jobs_path')"),
                         2);
        assert_int_equal(ledfx_raw_int(f, "SELECT count(*) FROM sqlite_master "
                                          "WHERE type = 'trigger'"),
                         3);
        ledfx_assert_counts(f->l, 3, 1, 0, 24, 1, 1);
        ledfx_assert_counts_real(f);

        /* The migrated ledger works as a new one: lookups, lists, transitions, counts. */
        assert_int_equal(ledger_known_stat(f->l, "/bulk/9.jpg", 1, 1, 9), 1);
        assert_int_equal(ledger_known_stat(f->l, "/bulk/9.jpg", 1, 1, 10), 0);
        assert_int_equal(ledger_known_stat(f->l, "/bulk/5.jpg", 1, 1, 5), 0); /* cancelled */
        assert_int_equal(ledger_list(f->l, &flt, &jobs, &n), 0);
        assert_int_equal(n, 2);
        assert_int_equal(jobs[0].id, 30);
        assert_int_equal(jobs[1].id, 29);
        for (size_t i = 0; i < n; i++)
                job_clear(&jobs[i]);
        free(jobs);
        assert_int_equal(ledger_recover(f->l, 100), 1);
        id = ledfx_enqueue(f->l, "/u/new.jpg", "/m/new", 77, 200);
        assert_int_equal(ledfx_claim(f->l, 200), 1);
        ledfx_assert_counts(f->l, 4, 1, 0, 24, 1, 1);
        assert_int_equal(ledfx_state_of(f->l, id), JOB_QUEUED);

        /* Opened again, nothing is migrated twice. */
        ledfx_reopen(f);
        assert_int_equal(ledfx_raw_int(f, "SELECT version FROM schema_version"), 5);
        ledfx_assert_counts_real(f);
}

/* Past this size (ledger.c's LEDGER_ALWAYS_CHECK_BYTES) the clean-stop record decides. */
static void make_large(struct ledfx *f)
{
        struct stat st;

        ledfx_raw_bulk_done(f, 40000);
        ledfx_reopen(f); /* checkpointed into the file */
        assert_int_equal(stat(f->db, &st), 0);
        assert_true(st.st_size > 4 << 20);
}

/* The whole file is checked at open unless imgd recorded a clean stop of the file exactly as
 * it is; the record is used once. */
static void test_clean_stop(void **state)
{
        struct ledfx *f = *state;
        char *closed = ledfx_xasprintf("%s.closed", f->db);
        char *wal = ledfx_xasprintf("%s-wal", f->db);
        struct timespec times[2] = { { .tv_nsec = UTIME_OMIT } };
        sqlite3 *h = NULL;
        char *err = NULL;
        struct stat st;

        /* A small ledger is checked in full, record or not. */
        assert_true(checked_whole(f->l));
        ledfx_reopen_clean(f);
        assert_true(checked_whole(f->l));
        assert_false(exists(closed));

        make_large(f);
        assert_true(checked_whole(f->l)); /* closed without a record */
        assert_int_equal(ledger_close(TAKE_PTR(f->l), &err), 0);
        assert_true(exists(closed));
        assert_int_equal(ledger_open(f->db, &f->l, &err), 0);
        assert_false(checked_whole(f->l));
        assert_false(exists(closed)); /* gone before the first write */
        ledfx_assert_counts(f->l, 0, 0, 0, 40000, 0, 0);
        assert_int_equal(ledger_integrity_check(f->l), 0);

        /* Killed, or closed without ledger_close(): in full. */
        ledfx_reopen(f);
        assert_true(checked_whole(f->l));

        /* A WAL left beside the file: in full. */
        assert_int_equal(ledger_close(TAKE_PTR(f->l), &err), 0);
        write_file(wal, "not a WAL", 9);
        assert_int_equal(ledger_open(f->db, &f->l, &err), 0);
        assert_true(checked_whole(f->l));

        /* A record of another file, or of this one before it changed: in full. */
        assert_int_equal(ledger_close(TAKE_PTR(f->l), &err), 0);
        write_file(closed, "imgd-ledger-closed-v1 dev=1 ino=2 size=3 mtime=4.0 ctime=5.0\n", 61);
        assert_int_equal(ledger_open(f->db, &f->l, &err), 0);
        assert_true(checked_whole(f->l));
        assert_int_equal(ledger_close(TAKE_PTR(f->l), &err), 0);
        assert_int_equal(stat(f->db, &st), 0);
        times[1] = (struct timespec){ .tv_sec = st.st_mtim.tv_sec - 1, .tv_nsec = 0 };
        assert_int_equal(utimensat(AT_FDCWD, f->db, times, 0), 0);
        assert_int_equal(ledger_open(f->db, &f->l, &err), 0);
        assert_true(checked_whole(f->l));

        /* Another program writing to it after the clean stop (and still holding it open,
         * so that its WAL stays): in full. */
        assert_int_equal(ledger_close(TAKE_PTR(f->l), &err), 0);
        assert_int_equal(sqlite3_open_v2(f->db, &h, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
        assert_int_equal(
                sqlite3_exec(h, "UPDATE jobs SET attempts = 2 WHERE id = 1", NULL, NULL, NULL),
                SQLITE_OK);
        assert_int_equal(ledger_open(f->db, &f->l, &err), 0);
        assert_true(checked_whole(f->l));
        sqlite3_close(h);
        ledfx_assert_counts_real(f);

        free(wal);
        free(closed);
}

/* Pages corrupted after a clean stop: the write moved the file's times, so the record no
 * longer matches and the whole file is checked. */
static void test_clean_stop_then_changed(void **state)
{
        struct ledfx *f = *state;
        struct timespec times[2] = { { .tv_nsec = UTIME_OMIT } };
        char *err = NULL;
        struct stat st;
        int fd;

        make_large(f);
        assert_int_equal(ledger_close(TAKE_PTR(f->l), &err), 0);
        assert_int_equal(stat(f->db, &st), 0);

        fd = open(f->db, O_WRONLY | O_CLOEXEC);
        assert_true(fd >= 0);
        for (off_t off = (st.st_size / 4096 / 2) * 4096; off < (st.st_size / 4096 / 2 + 3) * 4096;
             off++) {
                char c = (char)(off * 37 + 11);
                assert_int_equal(pwrite(fd, &c, 1, off), 1);
        }
        close(fd);
        /* The write moved mtime, unless within one tick of the file system's clock: move it
         * for certain. */
        times[1] = (struct timespec){ .tv_sec = st.st_mtim.tv_sec - 1, .tv_nsec = 0 };
        assert_int_equal(utimensat(AT_FDCWD, f->db, times, 0), 0);

        assert_refused_corrupt(f->db);
}

/* PostgreSQL */

/* A schema of its own beside the test's: its conninfo. */
static char *other_schema(struct ledfx *f, const char *name)
{
        char *sql = ledfx_xasprintf("CREATE SCHEMA %s", name);
        char *conninfo;
        const char *at = strstr(f->conninfo, "search_path=");

        assert_non_null(at);
        ledfx_raw_exec(f, sql);
        free(sql);
        conninfo =
                ledfx_xasprintf("%.*ssearch_path=%s'", (int)(at - f->conninfo), f->conninfo, name);
        return conninfo;
}

/* Turns the current PostgreSQL schema (3) back into version 2: one row of job_counts per state
 * (the shares added up), and the trigger function that updated those rows. */
static void pg_back_to_v2(struct ledfx *f)
{
        ledfx_raw_exec(f, "UPDATE job_counts AS c SET n = (SELECT sum(n) FROM job_counts AS d "
                          "                             WHERE d.state = c.state) "
                          "WHERE slot = 0;"
                          "DELETE FROM job_counts WHERE slot <> 0;"
                          "ALTER TABLE job_counts DROP CONSTRAINT job_counts_pkey;"
                          "ALTER TABLE job_counts DROP COLUMN slot;"
                          "ALTER TABLE job_counts ADD PRIMARY KEY (state);"
                          "CREATE OR REPLACE FUNCTION jobs_count() RETURNS trigger "
                          "  LANGUAGE plpgsql SET search_path FROM CURRENT AS $$ "
                          "BEGIN "
                          "  IF TG_OP IN ('UPDATE', 'DELETE') THEN "
                          "    UPDATE job_counts SET n = n - 1 WHERE state = OLD.state; "
                          "  END IF; "
                          "  IF TG_OP IN ('UPDATE', 'INSERT') THEN "
                          "    UPDATE job_counts SET n = n + 1 WHERE state = NEW.state; "
                          "  END IF; "
                          "  RETURN NULL; "
                          "END $$;"
                          "UPDATE schema_version SET version = 2");
}

/* A ledger of PostgreSQL schema version 2 is migrated at open: its counts kept (as the shares
 * of slot 0), and from then on each connection's transitions counted in rows of its own. */
static void test_pg_migrate_v2(void **state)
{
        struct ledfx *f = *state;
        uint64_t counts[_JOB_STATE_MAX];
        int64_t id;

        ledfx_enqueue(f->l, "/srv/uploads/a.jpg", "/srv/media/a", 7, 1000);
        ledfx_enqueue(f->l, "/srv/uploads/b.jpg", "/srv/media/b", 8, 1000);
        ledger_free(f->l);
        f->l = NULL;
        pg_back_to_v2(f);
        assert_int_equal(ledfx_raw_int(f, "SELECT n FROM job_counts WHERE state = 'queued'"), 2);
        ledfx_open(f);
        assert_int_equal(ledfx_raw_int(f, "SELECT version FROM schema_version"), 3);
        assert_non_null(strstr(ledger_open_check(f->l), "schema version 3"));
        assert_int_equal(ledger_counts(f->l, counts), 0);
        assert_int_equal(counts[JOB_QUEUED], 2);
        assert_int_equal(counts[JOB_RUNNING], 0);

        id = ledfx_claim(f->l, 2000);
        assert_true(id > 0);
        assert_int_equal(ledger_counts(f->l, counts), 0);
        assert_int_equal(counts[JOB_QUEUED], 1);
        assert_int_equal(counts[JOB_RUNNING], 1);
        /* The claim was counted in this connection's rows, not in the migrated ones. */
        assert_int_equal(ledfx_raw_int(f, "SELECT n FROM job_counts "
                                          "WHERE state = 'queued' AND slot = 0"),
                         2);
        assert_int_equal(ledfx_raw_int(f, "SELECT count(*) FROM job_counts WHERE slot <> 0"), 2);
        ledfx_assert_counts_real(f);
}

/* A ledger of PostgreSQL schema version 1 (before nodes) is migrated at open: its jobs kept,
 * the nodes table and the index of running jobs by owner added. */
static void test_pg_migrate_v1(void **state)
{
        struct ledfx *f = *state;
        int64_t id = ledfx_enqueue(f->l, "/srv/uploads/a.jpg", "/srv/media/a", 7, 1000);

        ledger_free(f->l);
        f->l = NULL;
        /* Version 2 is version 1 and these. */
        pg_back_to_v2(f);
        ledfx_raw_exec(f, "DROP TABLE nodes; DROP INDEX jobs_owner; "
                          "UPDATE schema_version SET version = 1");
        ledfx_open(f);
        assert_int_equal(ledfx_raw_int(f, "SELECT version FROM schema_version"), 3);
        assert_int_equal(ledfx_raw_int(f, "SELECT count(*) FROM nodes"), 0);
        assert_int_equal(ledfx_raw_int(f, "SELECT count(*) FROM pg_indexes "
                                          "WHERE indexname = 'jobs_owner' "
                                          "AND schemaname = current_schema()"),
                         1);
        assert_int_equal(ledfx_state_of(f->l, id), JOB_QUEUED);
        assert_non_null(strstr(ledger_open_check(f->l), "schema version 3"));
}

static void test_pg_create_reopen(void **state)
{
        struct ledfx *f = *state;
        struct source_info s = ledfx_src_make("/srv/uploads/a.jpg", "/srv/media/a", 7);
        struct job_detail *d;
        int64_t id;

        assert_string_equal(ledger_engine_name(f->l), "postgresql");
        assert_non_null(strstr(ledger_open_check(f->l), "PostgreSQL"));
        assert_int_equal(ledfx_raw_int(f, "SELECT count(*) FROM schema_version"), 1);
        assert_int_equal(ledfx_raw_int(f, "SELECT version FROM schema_version"), 3);
        assert_int_equal(ledger_enqueue(f->l, &s, 1000, &id), 1);
        ledfx_reopen_clean(f);
        ledfx_reopen(f);
        assert_int_equal(ledfx_raw_int(f, "SELECT count(*) FROM schema_version"), 1);

        d = ledfx_get(f->l, id);
        assert_string_equal(d->job.source_path, "/srv/uploads/a.jpg");
        assert_string_equal(d->job.sha256, s.sha256);
        assert_int_equal(d->job.mtime_ns, 1700000000000000007LL);
        assert_int_equal(d->job.state, JOB_QUEUED);
        assert_int_equal(d->job.created_usec, 1000);
        job_detail_free(d);
        /* No files of its own to watch. */
        assert_int_equal(ledger_check_files(f->l), 0);
        assert_int_equal(ledger_integrity_check(f->l), 0);
        ledfx_raw_exec(f, "UPDATE job_counts SET n = n + 1 WHERE state = 'done'");
        assert_int_equal(ledger_integrity_check(f->l), -EBADMSG);
}

/* A node that dies without closing: what it committed is there for the next. */
static void test_pg_crash_persists(void **state)
{
        struct ledfx *f = *state;
        int status;
        pid_t pid;

        f->l = ledger_free(f->l);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                struct ledger_params p = { .engine = LEDGER_ENGINE_POSTGRESQL,
                                           .conninfo = f->conninfo };
                struct source_info s = ledfx_src_make("/srv/uploads/c.jpg", "/srv/media/c", 1);
                struct job *j = NULL;
                ledger *l = NULL;
                int64_t id = 0;

                if (ledger_open_params(&p, &l, NULL) < 0 || ledger_enqueue(l, &s, 10, &id) != 1 ||
                    ledger_claim(l, "child", 20, LEDFX_LEASE_US, JOB_PRIORITY_BACKGROUND, &j) !=
                            1 ||
                    ledger_commit_claims(l) < 0)
                        _exit(1);
                _exit(j->id == id ? 0 : 2); /* no close */
        }
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);

        ledfx_reopen(f);
        assert_int_equal(ledfx_state_of(f->l, 1), JOB_RUNNING);
        assert_int_equal(ledfx_attempts_of(f->l, 1), 1);
        assert_int_equal(ledger_recover(f->l, 30), 1);
        assert_int_equal(ledfx_state_of(f->l, 1), JOB_QUEUED);
}

static void test_pg_future_schema(void **state)
{
        struct ledfx *f = *state;
        struct ledger_params p = { .engine = LEDGER_ENGINE_POSTGRESQL, .conninfo = f->conninfo };
        ledger *l = NULL;
        char *err = NULL;

        f->l = ledger_free(f->l);
        ledfx_raw_exec(f, "UPDATE schema_version SET version = 99");
        assert_int_equal(ledger_open_params(&p, &l, &err), -EPROTONOSUPPORT);
        assert_null(l);
        assert_non_null(err);
        assert_non_null(strstr(err, "version 99"));
        assert_non_null(strstr(err, "postgresql://"));
        free(err);
        assert_int_equal(ledfx_raw_int(f, "SELECT version FROM schema_version"), 99);
}

static void test_pg_foreign_schema(void **state)
{
        struct ledfx *f = *state;
        _cleanup_free_ char *conninfo = other_schema(f, "foreign_app");
        struct ledger_params p = { .engine = LEDGER_ENGINE_POSTGRESQL, .conninfo = conninfo };
        ledger *l = NULL;
        char *err = NULL;

        ledfx_raw_exec(f, "CREATE TABLE foreign_app.notes (x text)");
        assert_int_equal(ledger_open_params(&p, &l, &err), -EMEDIUMTYPE);
        assert_null(l);
        assert_non_null(strstr(err, "not an imgd ledger"));
        free(err);
        assert_int_equal(ledfx_raw_int(f, "SELECT count(*) FROM pg_tables "
                                          "WHERE schemaname = 'foreign_app'"),
                         1);
}

/* A schema of its own in the same database: two ledgers side by side. */
static void test_pg_two_schemas(void **state)
{
        struct ledfx *f = *state;
        _cleanup_free_ char *conninfo = other_schema(f, "second");
        struct ledger_params p = { .engine = LEDGER_ENGINE_POSTGRESQL, .conninfo = conninfo };
        ledger *l = NULL;
        char *err = NULL;

        ledfx_enqueue(f->l, "/u/a.jpg", "/m/a", 1, 100);
        assert_int_equal(ledger_open_params(&p, &l, &err), 0);
        ledfx_assert_counts(l, 0, 0, 0, 0, 0, 0);
        ledfx_enqueue(l, "/u/b.jpg", "/m/b", 2, 100);
        ledfx_enqueue(l, "/u/c.jpg", "/m/c", 3, 100);
        ledfx_assert_counts(l, 2, 0, 0, 0, 0, 0);
        ledfx_assert_counts(f->l, 1, 0, 0, 0, 0, 0);
        ledger_free(l);
}

/* No server there: -ENOTCONN, a message that says so, never the password. */
static void test_pg_unreachable(void **state)
{
        struct ledger_params p = {
                .engine = LEDGER_ENGINE_POSTGRESQL,
                .conninfo = "host=/nonexistent/imgd-test user=imgd password=sesame dbname=imgd "
                            "connect_timeout=2",
        };
        ledger *l = NULL;
        char *err = NULL;

        assert_int_equal(ledger_open_params(&p, &l, &err), -ENOTCONN);
        assert_null(l);
        assert_non_null(err);
        assert_non_null(strstr(err, "cannot connect to PostgreSQL"));
        assert_null(strstr(err, "sesame"));
        free(err);
}

/*
 * The server goes away under an open ledger (pg_ctl stop -m fast) and comes back: every
 * command fails with -ENOTCONN meanwhile, and ledger_unreachable() names the database and
 * libpq's reason from the first failure on, since when, until the server answers again; it is
 * not a failure of the server's storage (ledger_write_failure() stays NULL).
 */
static void test_pg_server_gone(void **state)
{
        struct ledfx *f = *state;
        uint64_t counts[_JOB_STATE_MAX];
        struct source_info src = ledfx_src_make("/u/b.jpg", "/m/b", 2);
        int64_t since = 0, before = 0, id = 0;
        const char *why;

        ledfx_enqueue(f->l, "/u/a.jpg", "/m/a", 1, 100);
        assert_null(ledger_unreachable(f->l, NULL));

        pgfx_server_down();
        assert_int_equal(ledger_counts(f->l, counts), -ENOTCONN);
        why = ledger_unreachable(f->l, &since);
        assert_non_null(why);
        assert_non_null(strstr(why, ledger_name(f->l)));
        assert_true(since > 0);
        /* A write fails the same way; the first failure's time is kept. */
        assert_int_equal(ledger_enqueue(f->l, &src, 200, &id), -ENOTCONN);
        assert_non_null(ledger_unreachable(f->l, &before));
        assert_int_equal(before, since);
        assert_null(ledger_write_failure(f->l, NULL));

        pgfx_server_up();
        assert_int_equal(ledger_counts(f->l, counts), 0);
        assert_null(ledger_unreachable(f->l, NULL));
        assert_int_equal(counts[JOB_QUEUED], 1);
}

int main(void)
{
#define T(t) cmocka_unit_test_setup_teardown(t, ledfx_setup, ledfx_teardown)
        const struct CMUnitTest tests[] = {
                T(test_create_reopen),  T(test_schema_version),          T(test_crash_persists),
                T(test_missing_parent), T(test_corrupt_garbage),         T(test_corrupt_pages),
                T(test_future_schema),  T(test_foreign_database),        T(test_migrate_v1),
                T(test_clean_stop),     T(test_clean_stop_then_changed),
        };

        const struct CMUnitTest pg_tests[] = {
                T(test_pg_create_reopen),  T(test_pg_crash_persists), T(test_pg_future_schema),
                T(test_pg_foreign_schema), T(test_pg_two_schemas),    T(test_pg_unreachable),
                T(test_pg_migrate_v1),     T(test_pg_migrate_v2),     T(test_pg_server_gone),
        };
#undef T

        umask(022);
        /* Each engine opens its own way: SQLite's file (its checks at open, its clean-stop
         * record, its corruption) and PostgreSQL's server and schema. */
        if (ledfx_engine() == LEDGER_ENGINE_POSTGRESQL)
                return ledfx_run("ledger-open", pg_tests, ELEMENTSOF(pg_tests), NULL, 0);
        return ledfx_run("ledger-open", tests, ELEMENTSOF(tests), NULL, 0);
}
