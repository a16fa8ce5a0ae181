/* SPDX-License-Identifier: MIT */
/*
 * test-ledger.c - the job ledger on real SQLite files in a temporary directory: every state
 * transition and its refusals, enqueue de-duplication and superseding, claim order, output
 * key exclusion, error history, outputs, queries, persistence across close and crash, and
 * the refusal to open corrupt, foreign or newer databases without touching them. Tests look
 * at the stored values (through ledger_get() or a second SQLite connection), not only at
 * return codes.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
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

#define LEASE_US (60 * 1000000LL)

struct fx {
        char *dir;
        char *db;
        ledger *l;
};

/* Helpers, kept here so the test needs nothing but cmocka and the ledger. */

static char *xasprintf(const char *fmt, ...) _printf_(1, 2);
static char *xasprintf(const char *fmt, ...)
{
        va_list ap;
        char *s;
        int r;

        va_start(ap, fmt);
        r = vasprintf(&s, fmt, ap);
        va_end(ap);
        assert_true(r >= 0);
        return s;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
        (void)st;
        (void)flag;
        (void)ftw;
        remove(path);
        return 0;
}

static void rm_rf(const char *path)
{
        if (path)
                nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

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

/* Runs SQL on a second connection to the database file. */
static void raw_exec(const char *db, const char *sql)
{
        sqlite3 *h = NULL;
        char *m = NULL;
        int rc;

        assert_int_equal(sqlite3_open_v2(db, &h, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
        sqlite3_busy_timeout(h, 5000);
        rc = sqlite3_exec(h, sql, NULL, NULL, &m);
        if (rc != SQLITE_OK)
                fail_msg("%s: %s", sql, m);
        sqlite3_close(h);
}

/* The first column of the first row of a query on a second connection. */
static int64_t raw_int(const char *db, const char *sql)
{
        sqlite3 *h = NULL;
        sqlite3_stmt *st = NULL;
        int64_t v;

        assert_int_equal(sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_prepare_v2(h, sql, -1, &st, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        v = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        sqlite3_close(h);
        return v;
}

/* Inserts n done jobs in one transaction, straight into the table. */
static void raw_bulk_done(const char *db, unsigned n)
{
        char *sql = xasprintf(
                "BEGIN;"
                "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < %u) "
                "INSERT INTO jobs (watch, source_path, source_sha256, source_size, "
                "source_mtime_ns, source_ino, output_key, pipeline, state, attempts, created_us, "
                "updated_us, next_at_us, finished_us) "
                "SELECT 'bulk', '/bulk/' || x || '.jpg', printf('%%064d', x), 1, 1, x, "
                "'/out/bulk/' || x, 'p', 'done', 1, x, x, x, x FROM c;"
                "COMMIT;",
                n);
        raw_exec(db, sql);
        free(sql);
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

/* A source whose content hash is made from `content`. */
static struct source_info src_make(const char *path, const char *output_key, unsigned content)
{
        struct source_info s = {
                .watch = "/srv/uploads",
                .path = path,
                .output_key = output_key,
                .pipeline = "default",
                .size = 1000 + content,
                .mtime_ns = 1700000000000000000LL + content,
                .ino = 42 + content,
        };

        snprintf(s.sha256, sizeof s.sha256, "%064x", content);
        return s;
}

static int64_t enqueue(ledger *l, const char *path, const char *key, unsigned content, int64_t now)
{
        struct source_info s = src_make(path, key, content);
        int64_t id = -1;

        assert_int_equal(ledger_enqueue(l, &s, now, &id), 1);
        assert_true(id > 0);
        return id;
}

static int64_t claim(ledger *l, int64_t now)
{
        struct job *j = NULL;
        int64_t id;

        assert_int_equal(ledger_claim(l, "test", now, LEASE_US, &j), 1);
        assert_non_null(j);
        assert_int_equal(j->state, JOB_RUNNING);
        id = j->id;
        job_free(j);
        return id;
}

static void assert_no_claim(ledger *l, int64_t now)
{
        struct job *j = NULL;

        assert_int_equal(ledger_claim(l, "test", now, LEASE_US, &j), 0);
        assert_null(j);
}

static struct job_detail *get(ledger *l, int64_t id)
{
        struct job_detail *d = NULL;

        assert_int_equal(ledger_get(l, id, &d), 1);
        assert_non_null(d);
        assert_int_equal(d->job.id, id);
        return d;
}

static enum job_state state_of(ledger *l, int64_t id)
{
        struct job_detail *d = get(l, id);
        enum job_state s = d->job.state;

        job_detail_free(d);
        return s;
}

static unsigned attempts_of(ledger *l, int64_t id)
{
        struct job_detail *d = get(l, id);
        unsigned a = d->job.attempts;

        job_detail_free(d);
        return a;
}

/* ledger_counts() agrees with a count of the table, and so does ledger_integrity_check(). */
static void assert_counts_real(struct fx *f)
{
        uint64_t counts[_JOB_STATE_MAX];

        assert_int_equal(ledger_counts(f->l, counts), 0);
        for (int i = 0; i < _JOB_STATE_MAX; i++) {
                char *sql = xasprintf("SELECT count(*) FROM jobs WHERE state = '%s'",
                                      job_state_name(i));
                int64_t real = raw_int(f->db, sql);

                if ((int64_t)counts[i] != real)
                        fail_msg("%s: counted %" PRIu64 ", the table has %" PRId64,
                                 job_state_name(i), counts[i], real);
                free(sql);
        }
        assert_int_equal(ledger_integrity_check(f->l), 0);
}

static void assert_counts(ledger *l, uint64_t queued, uint64_t running, uint64_t retry,
                          uint64_t done, uint64_t dead, uint64_t cancelled)
{
        uint64_t c[_JOB_STATE_MAX];

        assert_int_equal(ledger_counts(l, c), 0);
        assert_int_equal(c[JOB_QUEUED], queued);
        assert_int_equal(c[JOB_RUNNING], running);
        assert_int_equal(c[JOB_RETRY], retry);
        assert_int_equal(c[JOB_DONE], done);
        assert_int_equal(c[JOB_DEAD], dead);
        assert_int_equal(c[JOB_CANCELLED], cancelled);
}

/* Closes the ledger recording a clean stop, and opens it again. */
static void reopen_clean(struct fx *f)
{
        char *err = NULL;

        assert_int_equal(ledger_close(TAKE_PTR(f->l), &err), 0);
        assert_null(err);
        assert_int_equal(ledger_open(f->db, &f->l, &err), 0);
        assert_null(err);
}

static bool checked_whole(ledger *l)
{
        const char *what = ledger_open_check(l);

        assert_non_null(what);
        return strstr(what, "whole file") != NULL;
}

static void reopen(struct fx *f)
{
        char *err = NULL;

        f->l = ledger_free(f->l);
        assert_int_equal(ledger_open(f->db, &f->l, &err), 0);
        assert_null(err);
}

static int setup(void **state)
{
        struct fx *f = calloc(1, sizeof *f);
        const char *tmp = getenv("TMPDIR");
        char *err = NULL;

        assert_non_null(f);
        f->dir = xasprintf("%s/test-ledger.XXXXXX", tmp && *tmp ? tmp : "/tmp");
        assert_non_null(mkdtemp(f->dir));
        f->db = xasprintf("%s/imgd.db", f->dir);
        assert_int_equal(ledger_open(f->db, &f->l, &err), 0);
        assert_null(err);
        *state = f;
        return 0;
}

static int teardown(void **state)
{
        struct fx *f = *state;

        ledger_free(f->l);
        rm_rf(f->dir);
        free(f->dir);
        free(f->db);
        free(f);
        return 0;
}

/* Opening, persistence, schema */

static void test_create_reopen(void **state)
{
        struct fx *f = *state;
        struct source_info s = src_make("/srv/uploads/a.jpg", "/srv/media/a", 7);
        struct job_detail *d;
        struct stat st;
        int64_t id;

        assert_int_equal(stat(f->db, &st), 0);
        assert_true(S_ISREG(st.st_mode));
        assert_int_equal(st.st_mode & 0777, 0640 & ~(mode_t)022);

        assert_int_equal(ledger_enqueue(f->l, &s, 1000, &id), 1);
        reopen(f);

        d = get(f->l, id);
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
        struct fx *f = *state;

        assert_int_equal(raw_int(f->db, "SELECT count(*) FROM schema_version"), 1);
        assert_int_equal(raw_int(f->db, "SELECT version FROM schema_version"), 2);
        /* journal_mode=WAL is stored in the file: byte 18 of the header is 2. */
        assert_int_equal(raw_int(f->db, "SELECT count(*) FROM pragma_journal_mode "
                                        "WHERE journal_mode = 'wal'"),
                         1);
        reopen(f);
        assert_int_equal(raw_int(f->db, "SELECT count(*) FROM schema_version"), 1);
        assert_int_equal(raw_int(f->db, "SELECT version FROM schema_version"), 2);
}

static void test_crash_persists(void **state)
{
        struct fx *f = *state;
        int64_t id = 0;
        int status;
        pid_t pid;

        f->l = ledger_free(f->l);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                struct source_info s = src_make("/srv/uploads/c.jpg", "/srv/media/c", 1);
                struct job *j = NULL;
                ledger *l = NULL;

                if (ledger_open(f->db, &l, NULL) < 0 || ledger_enqueue(l, &s, 10, &id) != 1 ||
                    ledger_claim(l, "child", 20, LEASE_US, &j) != 1)
                        _exit(1);
                _exit(j->id == id ? 0 : 2); /* no close, no checkpoint */
        }
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);

        reopen(f);
        assert_int_equal(state_of(f->l, 1), JOB_RUNNING);
        assert_int_equal(attempts_of(f->l, 1), 1);
        assert_int_equal(ledger_recover(f->l, 30), 1);
        assert_int_equal(state_of(f->l, 1), JOB_QUEUED);
}

static void test_missing_parent(void **state)
{
        struct fx *f = *state;
        char *dir = xasprintf("%s/no/such", f->dir);
        char *path = xasprintf("%s/imgd.db", dir);
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
        char *wal = xasprintf("%s-wal", path);
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
        struct fx *f = *state;
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
        struct fx *f = *state;
        size_t len;
        char *buf;
        int fd;

        /* Enough rows for many b-tree pages; then closed, so the WAL is checkpointed. */
        raw_bulk_done(f->db, 2000);
        enqueue(f->l, "/u/a.jpg", "/m/a", 1, 1000);
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
        struct fx *f = *state;
        ledger *l = NULL;
        char *err = NULL;

        f->l = ledger_free(f->l);
        raw_exec(f->db, "UPDATE schema_version SET version = 3");

        assert_int_equal(ledger_open(f->db, &l, &err), -EPROTONOSUPPORT);
        assert_null(l);
        assert_non_null(err);
        assert_non_null(strstr(err, f->db));
        assert_non_null(strstr(err, "version 3"));
        free(err);
        assert_int_equal(raw_int(f->db, "SELECT version FROM schema_version"), 3);
}

static void test_foreign_database(void **state)
{
        struct fx *f = *state;
        char *path = xasprintf("%s/other.db", f->dir);
        ledger *l = NULL;
        char *err = NULL;

        write_file(path, "", 0);
        raw_exec(path, "CREATE TABLE notes (x TEXT)");
        assert_int_equal(ledger_open(path, &l, &err), -EMEDIUMTYPE);
        assert_null(l);
        assert_non_null(err);
        assert_non_null(strstr(err, path));
        free(err);
        assert_int_equal(raw_int(path, "SELECT count(*) FROM sqlite_master"), 1);
        free(path);
}

/* Enqueue */

static void test_enqueue_dedupe(void **state)
{
        struct fx *f = *state;
        struct source_info s = src_make("/srv/uploads/a.jpg", "/srv/media/a", 1);
        struct job_detail *d;
        uint64_t counts[_JOB_STATE_MAX];
        int64_t id1, id2 = 0, id3;

        assert_int_equal(ledger_enqueue(f->l, &s, 1000, &id1), 1);

        /* Same path and content, new stat: the same job, with its stat refreshed. */
        s.size = 5;
        s.mtime_ns = 6;
        s.ino = 7;
        assert_int_equal(ledger_enqueue(f->l, &s, 2000, &id2), 0);
        assert_int_equal(id2, id1);
        d = get(f->l, id1);
        assert_int_equal(d->job.size, 5);
        assert_int_equal(d->job.mtime_ns, 6);
        assert_int_equal(d->job.ino, 7);
        assert_int_equal(d->job.state, JOB_QUEUED);
        assert_int_equal(d->job.created_usec, 1000);
        job_detail_free(d);

        /* Same content under another path is another job. */
        s.path = "/srv/uploads/b.jpg";
        assert_int_equal(ledger_enqueue(f->l, &s, 3000, &id3), 1);
        assert_true(id3 != id1);

        assert_int_equal(ledger_counts(f->l, counts), 0);
        assert_int_equal(counts[JOB_QUEUED], 2);
        assert_int_equal(raw_int(f->db, "SELECT count(*) FROM jobs"), 2);

        /* A bad hash is refused. */
        s.sha256[10] = '\0';
        assert_int_equal(ledger_enqueue(f->l, &s, 3000, &id3), -EINVAL);
}

/* Content A, then B, then A again: A is new again (its first job was superseded). */
static void test_enqueue_content_returns(void **state)
{
        struct fx *f = *state;
        const char *p = "/srv/uploads/a.jpg";
        int64_t a1, b, a2, again;
        struct source_info s = src_make(p, "/srv/media/a", 1);

        a1 = enqueue(f->l, p, "/srv/media/a", 1, 100);
        b = enqueue(f->l, p, "/srv/media/a", 2, 200);
        assert_int_equal(state_of(f->l, a1), JOB_CANCELLED);
        a2 = enqueue(f->l, p, "/srv/media/a", 1, 300);
        assert_true(a2 > b);
        assert_int_equal(state_of(f->l, b), JOB_CANCELLED);
        assert_int_equal(state_of(f->l, a2), JOB_QUEUED);
        assert_int_equal(ledger_superseded(f->l, a2), 0);
        /* And A once more, while A is the newest: known, same job. */
        assert_int_equal(ledger_enqueue(f->l, &s, 400, &again), 0);
        assert_int_equal(again, a2);
}

/* A cancelled job does not hold its content: the same file coming back (moved away while
 * queued, so cancelled, then moved back; or cancelled by an operator) is a new job. */
static void test_enqueue_after_cancel(void **state)
{
        struct fx *f = *state;
        const char *p = "/srv/uploads/a.jpg";
        struct source_info s = src_make(p, "/srv/media/a", 1);
        int64_t first, again, second, third;

        first = enqueue(f->l, p, "/srv/media/a", 1, 100);
        assert_int_equal(claim(f->l, 200), first);
        assert_int_equal(ledger_cancel(f->l, first, "source removed before processing", 210), 0);
        /* The same file, the same stat: not known by its stat, and not by its content. */
        assert_int_equal(ledger_known_stat(f->l, p, s.size, s.mtime_ns, s.ino), 0);
        assert_int_equal(ledger_enqueue(f->l, &s, 300, &second), 1);
        assert_true(second > first);
        assert_int_equal(state_of(f->l, second), JOB_QUEUED);
        assert_int_equal(state_of(f->l, first), JOB_CANCELLED);
        /* The new job is its content's job from now on. */
        assert_int_equal(ledger_enqueue(f->l, &s, 400, &again), 0);
        assert_int_equal(again, second);

        /* Cancelled while queued (by an operator): enqueued again, a new job too. */
        assert_int_equal(ledger_cancel(f->l, second, "cancelled by operator", 500), 0);
        assert_int_equal(ledger_enqueue(f->l, &s, 600, &third), 1);
        assert_true(third > second);
        assert_int_equal(claim(f->l, 700), third);
        assert_int_equal(ledger_complete(f->l, third, NULL, 0, 710), 0);
        /* Done: known again. */
        assert_int_equal(ledger_enqueue(f->l, &s, 800, &again), 0);
        assert_int_equal(again, third);
}

static void test_enqueue_supersedes(void **state)
{
        struct fx *f = *state;
        const char *p = "/srv/uploads/a.jpg";
        struct job_detail *d;
        char expect[64];
        int64_t running, q1, q2, r1, dead, other, newest;

        /* A dead job and a running one for the path, plus a job for another path. */
        dead = enqueue(f->l, p, "/srv/media/a", 1, 100);
        assert_int_equal(claim(f->l, 100), dead);
        assert_int_equal(ledger_fail(f->l, dead, "bad", false, 0, 110), 0);
        running = enqueue(f->l, p, "/srv/media/a", 2, 200);
        assert_int_equal(claim(f->l, 200), running);
        other = enqueue(f->l, "/srv/uploads/other.jpg", "/srv/media/other", 3, 300);

        /* Content changes: running is superseded, but keeps running. */
        q1 = enqueue(f->l, p, "/srv/media/a", 4, 400);
        assert_int_equal(ledger_superseded(f->l, running), 1);
        assert_int_equal(state_of(f->l, running), JOB_RUNNING);

        /* One in retry. */
        assert_int_equal(claim(f->l, 500), other);
        assert_int_equal(ledger_complete(f->l, other, NULL, 0, 510), 0);
        assert_int_equal(ledger_fail(f->l, running, "x", true, 600, 520), 0);
        r1 = running;
        assert_int_equal(state_of(f->l, r1), JOB_RETRY);

        /* Content changes again: the queued q1 and the retry r1 are cancelled. */
        q2 = enqueue(f->l, p, "/srv/media/a", 5, 700);
        snprintf(expect, sizeof expect, "superseded by job %" PRId64, q2);
        d = get(f->l, q1);
        assert_int_equal(d->job.state, JOB_CANCELLED);
        assert_string_equal(d->job.last_error, expect);
        assert_int_equal(d->job.updated_usec, 700);
        job_detail_free(d);
        d = get(f->l, r1);
        assert_int_equal(d->job.state, JOB_CANCELLED);
        assert_string_equal(d->job.last_error, expect);
        job_detail_free(d);
        assert_int_equal(state_of(f->l, dead), JOB_DEAD);
        assert_int_equal(state_of(f->l, other), JOB_DONE);
        assert_int_equal(state_of(f->l, q2), JOB_QUEUED);

        /* A running job is left alone. */
        assert_int_equal(claim(f->l, 800), q2);
        newest = enqueue(f->l, p, "/srv/media/a", 6, 900);
        assert_int_equal(state_of(f->l, q2), JOB_RUNNING);
        assert_int_equal(state_of(f->l, newest), JOB_QUEUED);

        assert_int_equal(ledger_superseded(f->l, q2), 1);
        assert_int_equal(ledger_superseded(f->l, newest), 0);
        assert_int_equal(ledger_superseded(f->l, other), 0);
        assert_int_equal(ledger_superseded(f->l, 9999), -ENOENT);
}

static void test_known_stat(void **state)
{
        struct fx *f = *state;
        struct source_info s = src_make("/srv/uploads/a.jpg", "/srv/media/a", 1);
        int64_t id;

        assert_int_equal(ledger_known_stat(f->l, s.path, s.size, s.mtime_ns, s.ino), 0);
        assert_int_equal(ledger_enqueue(f->l, &s, 100, &id), 1);
        assert_int_equal(ledger_known_stat(f->l, s.path, s.size, s.mtime_ns, s.ino), 1);
        assert_int_equal(ledger_known_stat(f->l, s.path, s.size + 1, s.mtime_ns, s.ino), 0);
        assert_int_equal(ledger_known_stat(f->l, s.path, s.size, s.mtime_ns + 1, s.ino), 0);
        assert_int_equal(ledger_known_stat(f->l, s.path, s.size, s.mtime_ns, s.ino + 1), 0);
        assert_int_equal(ledger_known_stat(f->l, "/srv/uploads/b.jpg", s.size, s.mtime_ns, s.ino),
                         0);

        /* Superseded (cancelled): no longer known; the new one is. */
        {
                struct source_info s2 = src_make("/srv/uploads/a.jpg", "/srv/media/a", 2);
                int64_t id2;

                assert_int_equal(ledger_enqueue(f->l, &s2, 200, &id2), 1);
                assert_int_equal(state_of(f->l, id), JOB_CANCELLED);
                assert_int_equal(ledger_known_stat(f->l, s.path, s.size, s.mtime_ns, s.ino), 0);
                assert_int_equal(ledger_known_stat(f->l, s2.path, s2.size, s2.mtime_ns, s2.ino), 1);
        }
}

/* Claiming */

static void test_claim_fields_and_attempts(void **state)
{
        struct fx *f = *state;
        struct source_info s = src_make("/srv/uploads/a.jpg", "/srv/media/a", 3);
        struct job *j = NULL;
        int64_t id;

        assert_int_equal(ledger_enqueue(f->l, &s, 1000, &id), 1);
        assert_int_equal(ledger_claim(f->l, "w1", 1500, LEASE_US, &j), 1);
        assert_int_equal(j->id, id);
        assert_string_equal(j->watch, s.watch);
        assert_string_equal(j->source_path, s.path);
        assert_string_equal(j->output_key, s.output_key);
        assert_string_equal(j->pipeline, s.pipeline);
        assert_string_equal(j->sha256, s.sha256);
        assert_int_equal(j->size, s.size);
        assert_int_equal(j->mtime_ns, s.mtime_ns);
        assert_int_equal(j->ino, s.ino);
        assert_int_equal(j->state, JOB_RUNNING);
        assert_int_equal(j->attempts, 1);
        assert_int_equal(j->created_usec, 1000);
        assert_int_equal(j->updated_usec, 1500);
        assert_null(j->last_error);
        j = job_free(j);
        assert_null(j);

        assert_int_equal(raw_int(f->db, "SELECT lease_expires_us FROM jobs"), 1500 + LEASE_US);
        assert_int_equal(raw_int(f->db, "SELECT lease_owner = 'w1' FROM jobs"), 1);

        /* Nothing else to claim. */
        assert_no_claim(f->l, 1600);

        assert_int_equal(ledger_fail(f->l, id, "oops", true, 2000, 1700), 0);
        assert_int_equal(ledger_claim(f->l, "w2", 2000, LEASE_US, &j), 1);
        assert_int_equal(j->attempts, 2);
        assert_string_equal(j->last_error, "oops");
        job_free(j);
}

static void test_claim_order_and_next_at(void **state)
{
        struct fx *f = *state;
        int64_t a, b, c, due = 0;

        assert_int_equal(ledger_next_due(f->l, &due), 0);
        a = enqueue(f->l, "/u/a.jpg", "/m/a", 1, 1000);
        b = enqueue(f->l, "/u/b.jpg", "/m/b", 2, 2000);
        c = enqueue(f->l, "/u/c.jpg", "/m/c", 3, 2000);
        assert_int_equal(ledger_next_due(f->l, &due), 1);
        assert_int_equal(due, 1000);

        /* Not before its next_at. */
        assert_no_claim(f->l, 999);
        assert_int_equal(claim(f->l, 1000), a);
        assert_no_claim(f->l, 1999);

        /* a fails and is due again at 5000, after b and c (same next_at: lower id first). */
        assert_int_equal(ledger_fail(f->l, a, "e", true, 5000, 1100), 0);
        assert_int_equal(ledger_next_due(f->l, &due), 1);
        assert_int_equal(due, 2000);
        assert_int_equal(claim(f->l, 4000), b);
        assert_int_equal(claim(f->l, 4000), c);
        assert_no_claim(f->l, 4999);
        assert_int_equal(ledger_next_due(f->l, &due), 1);
        assert_int_equal(due, 5000);
        assert_int_equal(claim(f->l, 5000), a);
        assert_int_equal(ledger_next_due(f->l, &due), 0);
}

static void test_claim_prefers_earlier_next_at(void **state)
{
        struct fx *f = *state;
        int64_t a, b;

        a = enqueue(f->l, "/u/a.jpg", "/m/a", 1, 1000);
        assert_int_equal(claim(f->l, 1000), a);
        assert_int_equal(ledger_fail(f->l, a, "e", true, 3000, 1100), 0);
        b = enqueue(f->l, "/u/b.jpg", "/m/b", 2, 2000);
        assert_true(b > a);
        /* Both due at 4000: b (next_at 2000) has waited longer than a (3000). */
        assert_int_equal(claim(f->l, 4000), b);
        assert_int_equal(claim(f->l, 4000), a);
}

static void test_claim_excludes_running_output_key(void **state)
{
        struct fx *f = *state;
        int64_t jpg, png, other;

        jpg = enqueue(f->l, "/u/a.jpg", "/m/a", 1, 1000);
        png = enqueue(f->l, "/u/a.png", "/m/a", 2, 1001);
        other = enqueue(f->l, "/u/b.jpg", "/m/b", 3, 1002);

        assert_int_equal(claim(f->l, 2000), jpg);
        /* png waits for jpg: its output key is busy, so the later job goes first. */
        assert_int_equal(claim(f->l, 2000), other);
        assert_no_claim(f->l, 2000);
        assert_int_equal(state_of(f->l, png), JOB_QUEUED);

        assert_int_equal(ledger_complete(f->l, jpg, NULL, 0, 2100), 0);
        assert_int_equal(claim(f->l, 2200), png);
}

static void test_claim_with_many_done(void **state)
{
        struct fx *f = *state;
        int64_t id, due;

        raw_bulk_done(f->db, 20000);
        id = enqueue(f->l, "/u/new.jpg", "/m/new", 1, 5000);

        assert_int_equal(claim(f->l, 5000), id);
        for (unsigned i = 0; i < 500; i++) {
                assert_no_claim(f->l, 6000 + i);
                assert_int_equal(ledger_next_due(f->l, &due), 0);
        }
        /* Timing belongs to scripts/bench-ledger.sh; here: correct with many done rows. */
        assert_int_equal(raw_int(f->db, "SELECT count(*) FROM jobs WHERE state = 'done'"), 20000);
}

/* Transitions */

static void test_fail_retry_then_dead(void **state)
{
        struct fx *f = *state;
        struct job_detail *d;
        int64_t id;

        id = enqueue(f->l, "/u/a.jpg", "/m/a", 1, 1000);
        assert_int_equal(claim(f->l, 1000), id);
        assert_int_equal(ledger_fail(f->l, id, "decode failed", true, 3000, 1500), 0);
        d = get(f->l, id);
        assert_int_equal(d->job.state, JOB_RETRY);
        assert_int_equal(d->job.next_at_usec, 3000);
        assert_int_equal(d->job.updated_usec, 1500);
        assert_string_equal(d->job.last_error, "decode failed");
        job_detail_free(d);

        assert_int_equal(claim(f->l, 3000), id);
        assert_int_equal(ledger_fail(f->l, id, "worker crashed", false, 99999, 3500), 0);

        d = get(f->l, id);
        assert_int_equal(d->job.state, JOB_DEAD);
        assert_int_equal(d->job.attempts, 2);
        assert_int_equal(d->job.next_at_usec, 3000); /* unchanged for dead */
        assert_string_equal(d->job.last_error, "worker crashed");
        assert_int_equal(d->n_errors, 2);
        assert_int_equal(d->errors[0].attempt, 1);
        assert_int_equal(d->errors[0].at_usec, 1500);
        assert_string_equal(d->errors[0].message, "decode failed");
        assert_int_equal(d->errors[1].attempt, 2);
        assert_int_equal(d->errors[1].at_usec, 3500);
        assert_string_equal(d->errors[1].message, "worker crashed");
        job_detail_free(d);
        assert_int_equal(raw_int(f->db, "SELECT finished_us FROM jobs"), 3500);

        /* Dead is not claimable. */
        assert_no_claim(f->l, 1000000);
}

static void test_fail_message_is_capped(void **state)
{
        struct fx *f = *state;
        struct job_detail *d;
        char *big = malloc(100000);
        int64_t id;

        assert_non_null(big);
        memset(big, 'x', 99999);
        big[99999] = '\0';
        /* A two-byte UTF-8 character straddling the cut. */
        big[4095] = (char)0xc3;
        big[4096] = (char)0xa9;
        id = enqueue(f->l, "/u/a.jpg", "/m/a", 1, 1000);
        assert_int_equal(claim(f->l, 1000), id);
        assert_int_equal(ledger_fail(f->l, id, big, false, 0, 1100), 0);
        d = get(f->l, id);
        assert_int_equal(strlen(d->job.last_error), 4095);
        assert_int_equal(strlen(d->errors[0].message), 4095);
        job_detail_free(d);
        free(big);
}

/* Checkpoint "verified": staged outputs carry their temporary files, survive a restart
 * (recover leaves the job running), become the published outputs on complete, and are
 * forgotten when the job is handed back. */
static void test_stage_checkpoint(void **state)
{
        struct fx *f = *state;
        struct job_output outs[2] = {
                { .variant = "s",
                  .path = "/m/a_s.webp",
                  .format = "webp",
                  .width = 10,
                  .height = 10,
                  .bytes = 100,
                  .tmp_path = "/m/.imgd-1-0-aa.tmp" },
                { .variant = "l",
                  .path = "/m/a_l.webp",
                  .format = "webp",
                  .width = 40,
                  .height = 40,
                  .bytes = 400,
                  .tmp_path = "/m/.imgd-1-1-bb.tmp" },
        };
        int64_t id, other, *ids = NULL;
        struct job_detail *d;
        size_t n = 0;

        snprintf(outs[0].sha256, sizeof outs[0].sha256, "%064x", 7);
        snprintf(outs[1].sha256, sizeof outs[1].sha256, "%064x", 8);
        id = enqueue(f->l, "/u/a.jpg", "/m/a", 1, 100);
        other = enqueue(f->l, "/u/b.jpg", "/m/b", 2, 100);
        assert_int_equal(claim(f->l, 200), id);
        assert_int_equal(claim(f->l, 200), other);
        assert_int_equal(ledger_stage(f->l, id, outs, 2, false,
                                      "{\"placeholder\":{\"blurhash\":\"x\"}}", 300),
                         0);

        /* A crash: the verified job stays running, the merely claimed one is requeued. */
        reopen(f);
        assert_int_equal(ledger_recover(f->l, 400), 1);
        assert_int_equal(state_of(f->l, id), JOB_RUNNING);
        assert_int_equal(state_of(f->l, other), JOB_QUEUED);
        assert_int_equal(attempts_of(f->l, other), 1);
        assert_int_equal(ledger_list_staged(f->l, &ids, &n), 0);
        assert_int_equal(n, 1);
        assert_int_equal(ids[0], id);
        free(ids);
        d = get(f->l, id);
        assert_int_equal(d->n_outputs, 2);
        assert_string_equal(d->job.info, "{\"placeholder\":{\"blurhash\":\"x\"}}");
        assert_string_equal(d->outputs[1].tmp_path, "/m/.imgd-1-1-bb.tmp");
        assert_string_equal(d->outputs[1].sha256, outs[1].sha256);
        job_detail_free(d);

        /* Published: complete without outputs keeps the staged ones, minus their tmp files. */
        assert_int_equal(ledger_complete(f->l, id, NULL, 0, 500), 0);
        d = get(f->l, id);
        assert_int_equal(d->job.state, JOB_DONE);
        assert_int_equal(d->n_outputs, 2);
        assert_null(d->outputs[0].tmp_path);
        assert_string_equal(d->outputs[0].path, "/m/a_s.webp");
        job_detail_free(d);
        assert_int_equal(ledger_list_staged(f->l, &ids, &n), 0);
        assert_int_equal(n, 0);
        free(ids);

        /* Handed back after staging: the staged outputs are forgotten. */
        assert_int_equal(claim(f->l, 600), other);
        assert_int_equal(ledger_stage(f->l, other, outs, 1, false, NULL, 610), 0);
        assert_int_equal(ledger_release(f->l, other, 620, 620), 0);
        d = get(f->l, other);
        assert_int_equal(d->job.state, JOB_QUEUED);
        assert_int_equal(d->n_outputs, 0);
        job_detail_free(d);
        /* Staging a job that is not running is refused. */
        assert_int_equal(ledger_stage(f->l, other, outs, 1, false, NULL, 630), -ESTALE);
        /* A staged output without its temporary file is refused, and nothing changes. */
        assert_int_equal(claim(f->l, 700), other);
        outs[0].tmp_path = NULL;
        assert_int_equal(ledger_stage(f->l, other, outs, 1, false, NULL, 710), -EINVAL);
        d = get(f->l, other);
        assert_int_equal(d->n_outputs, 0);
        job_detail_free(d);
}

/* Leases: a running, unverified job whose lease passed is listed as expired. */
static void test_expired_leases(void **state)
{
        struct fx *f = *state;
        int64_t id, *ids = NULL;
        size_t n = 0;

        id = enqueue(f->l, "/u/a.jpg", "/m/a", 1, 100);
        assert_int_equal(claim(f->l, 200), id);
        assert_int_equal(ledger_list_expired(f->l, 200 + LEASE_US - 1, &ids, &n), 0);
        assert_int_equal(n, 0);
        free(ids);
        assert_int_equal(ledger_list_expired(f->l, 200 + LEASE_US + 1, &ids, &n), 0);
        assert_int_equal(n, 1);
        assert_int_equal(ids[0], id);
        free(ids);
}

/* Degraded renders: marked while running, reset by the next claim; only the newest job of
 * a source goes back for a full-quality render, and only as many as asked. */
static void test_degraded_rerender(void **state)
{
        struct fx *f = *state;
        int64_t a, b, c, oldest;
        struct job_detail *d;

        a = enqueue(f->l, "/u/a.jpg", "/m/a", 1, 100);
        b = enqueue(f->l, "/u/b.jpg", "/m/b", 2, 110);
        assert_int_equal(ledger_oldest_queued(f->l, &oldest), 1);
        assert_int_equal(oldest, 100);
        assert_int_equal(claim(f->l, 200), a);
        assert_int_equal(claim(f->l, 200), b);
        assert_int_equal(ledger_oldest_queued(f->l, &oldest), 0);
        assert_int_equal(ledger_stage(f->l, a, NULL, 0, true, NULL, 250), 0);
        assert_int_equal(ledger_stage(f->l, b, NULL, 0, true, NULL, 250), 0);
        assert_int_equal(ledger_complete(f->l, a, NULL, 0, 300), 0);
        assert_int_equal(ledger_complete(f->l, b, NULL, 0, 300), 0);
        assert_int_equal(ledger_stage(f->l, a, NULL, 0, false, NULL, 310), -ESTALE);
        /* b's source changed since: its degraded job is not the newest and stays done. */
        c = enqueue(f->l, "/u/b.jpg", "/m/b", 3, 400);

        assert_int_equal(ledger_rerender_degraded(f->l, 500, 10), 1);
        d = get(f->l, a);
        assert_int_equal(d->job.state, JOB_QUEUED);
        assert_int_equal(d->job.attempts, 0);
        assert_true(d->job.degraded);
        job_detail_free(d);
        assert_int_equal(state_of(f->l, b), JOB_DONE);
        assert_int_equal(state_of(f->l, c), JOB_QUEUED);
        /* Claimed again (after c, queued earlier): no longer marked; completed at full
         * quality: nothing to re-render. */
        assert_int_equal(claim(f->l, 600), c);
        assert_int_equal(claim(f->l, 600), a);
        d = get(f->l, a);
        assert_false(d->job.degraded);
        job_detail_free(d);
        assert_int_equal(ledger_complete(f->l, a, NULL, 0, 700), 0);
        assert_int_equal(ledger_rerender_degraded(f->l, 800, 10), 0);
}

/* The rest of a prune pass from *cursor in batches of `batch` ids; returns how many went. */
static int prune_all_from(ledger *l, int64_t cutoff_usec, int64_t *cursor, unsigned batch)
{
        int total = 0, k, calls = 0;

        do {
                k = ledger_prune(l, cutoff_usec, cursor, batch);
                if (k < 0)
                        return k;
                total += k;
                assert_true(++calls < 1000000);
        } while (*cursor != 0);
        return total;
}

/* A whole prune pass in batches of `batch` ids; returns how many were deleted. */
static int prune_all(ledger *l, int64_t cutoff_usec, unsigned batch)
{
        int64_t cursor = 0;

        return prune_all_from(l, cutoff_usec, &cursor, batch);
}

/* Pruning keeps each source's newest job and dead jobs; it deletes older finished ones. */
static void test_prune(void **state)
{
        struct fx *f = *state;
        int64_t old_done, newest, dead, other;

        old_done = enqueue(f->l, "/u/a.jpg", "/m/a", 1, 100);
        assert_int_equal(claim(f->l, 100), old_done);
        assert_int_equal(ledger_complete(f->l, old_done, NULL, 0, 150), 0);
        newest = enqueue(f->l, "/u/a.jpg", "/m/a", 2, 200);
        assert_int_equal(claim(f->l, 200), newest);
        assert_int_equal(ledger_complete(f->l, newest, NULL, 0, 250), 0);
        dead = enqueue(f->l, "/u/d.jpg", "/m/d", 3, 100);
        assert_int_equal(claim(f->l, 100), dead);
        assert_int_equal(ledger_fail(f->l, dead, "bad", false, 0, 150), 0);
        other = enqueue(f->l, "/u/d.jpg", "/m/d", 4, 160); /* dead job superseded */

        assert_int_equal(prune_all(f->l, 100, 1000), 0); /* nothing finished before 100 */
        assert_int_equal(prune_all(f->l, 1000, 1000), 1);
        struct job_detail *d = NULL;
        assert_int_equal(ledger_get(f->l, old_done, &d), 0);
        assert_int_equal(state_of(f->l, newest), JOB_DONE);
        assert_int_equal(state_of(f->l, dead), JOB_DEAD);
        assert_int_equal(state_of(f->l, other), JOB_QUEUED);
        assert_int_equal(ledger_integrity_check(f->l), 0);
}

/*
 * A prune pass goes batch by batch: each call deletes only within its range of ids and says
 * where the next one starts; the pass starts at the oldest job and ends (cursor 0) at the
 * newest.
 */
static void test_prune_batches(void **state)
{
        struct fx *f = *state;
        struct job_detail *d = NULL;
        int64_t ids[20], cursor = 0;
        char path[32];
        int k;

        /* Sources s0..s9, each done twice: ids 1..10 the old jobs, 11..20 the newest. */
        for (int round = 0; round < 2; round++) {
                for (int i = 0; i < 10; i++) {
                        int64_t id;

                        snprintf(path, sizeof path, "/u/s%d.jpg", i);
                        id = enqueue(f->l, path, path, (unsigned)(round * 10 + i + 1), 100);
                        assert_int_equal(claim(f->l, 100), id);
                        assert_int_equal(ledger_complete(f->l, id, NULL, 0, 150), 0);
                        ids[round * 10 + i] = id;
                }
        }
        for (int i = 0; i < 20; i++)
                assert_int_equal(ids[i], ids[0] + i);

        /* The first batch covers ids[0] and ids[1] only. */
        cursor = ids[0] - 1;
        k = ledger_prune(f->l, 1000, &cursor, 2);
        assert_int_equal(k, 2);
        assert_int_equal(cursor, ids[1]);
        assert_int_equal(ledger_get(f->l, ids[0], &d), 0); /* gone */
        assert_int_equal(state_of(f->l, ids[2]), JOB_DONE);

        /* Ids 3..4 then 5..6: deleted in their turns, nothing beyond. */
        assert_int_equal(ledger_prune(f->l, 1000, &cursor, 2), 2);
        assert_int_equal(ledger_prune(f->l, 1000, &cursor, 2), 2);
        assert_int_equal(cursor, ids[5]);
        assert_int_equal(state_of(f->l, ids[6]), JOB_DONE);

        /* The rest of the pass in batches of 3: 4 more old jobs, none of the newest. */
        assert_int_equal(prune_all_from(f->l, 1000, &cursor, 3), 4);
        assert_int_equal(cursor, 0);
        for (int i = 10; i < 20; i++)
                assert_int_equal(state_of(f->l, ids[i]), JOB_DONE);

        /* A new pass starts at the oldest job left (ids[10]), not at id 1: one batch of ten
         * covers the whole ledger, and deletes nothing more. */
        cursor = 0;
        assert_int_equal(ledger_prune(f->l, 1000, &cursor, 10), 0);
        assert_int_equal(cursor, 0);
        assert_int_equal(prune_all(f->l, 1000, 4), 0);
        assert_int_equal(ledger_integrity_check(f->l), 0);
}

static void test_complete_outputs(void **state)
{
        struct fx *f = *state;
        struct job_output outs[2] = {
                { .variant = "small",
                  .path = "/m/a-small.webp",
                  .format = "webp",
                  .width = 100,
                  .height = 80,
                  .bytes = 1234 },
                { .variant = "large",
                  .path = "/m/a-large.jpg",
                  .format = "jpeg",
                  .width = 1000,
                  .height = 800,
                  .bytes = 98765 },
        };
        uint64_t counts[_JOB_STATE_MAX];
        struct job_detail *d;
        int64_t id;

        snprintf(outs[0].sha256, sizeof outs[0].sha256, "%064x", 0xaaa);
        snprintf(outs[1].sha256, sizeof outs[1].sha256, "%064x", 0xbbb);
        id = enqueue(f->l, "/u/a.jpg", "/m/a", 1, 1000);

        /* Not running yet. */
        assert_int_equal(ledger_complete(f->l, id, outs, 2, 1100), -ESTALE);
        assert_non_null(strstr(ledger_errmsg(f->l), "queued"));
        assert_int_equal(raw_int(f->db, "SELECT count(*) FROM outputs"), 0);

        assert_int_equal(claim(f->l, 1000), id);
        assert_int_equal(ledger_complete(f->l, id, outs, 2, 2000), 0);

        d = get(f->l, id);
        assert_int_equal(d->job.state, JOB_DONE);
        assert_int_equal(d->job.updated_usec, 2000);
        assert_int_equal(d->n_outputs, 2);
        assert_string_equal(d->outputs[0].variant, "small");
        assert_string_equal(d->outputs[0].path, "/m/a-small.webp");
        assert_string_equal(d->outputs[0].format, "webp");
        assert_int_equal(d->outputs[0].width, 100);
        assert_int_equal(d->outputs[0].height, 80);
        assert_int_equal(d->outputs[0].bytes, 1234);
        assert_string_equal(d->outputs[0].sha256, outs[0].sha256);
        assert_string_equal(d->outputs[1].variant, "large");
        assert_string_equal(d->outputs[1].path, "/m/a-large.jpg");
        assert_string_equal(d->outputs[1].format, "jpeg");
        assert_int_equal(d->outputs[1].width, 1000);
        assert_int_equal(d->outputs[1].height, 800);
        assert_int_equal(d->outputs[1].bytes, 98765);
        assert_string_equal(d->outputs[1].sha256, outs[1].sha256);
        job_detail_free(d);
        assert_int_equal(raw_int(f->db, "SELECT finished_us FROM jobs"), 2000);
        assert_int_equal(raw_int(f->db, "SELECT lease_owner IS NULL FROM jobs"), 1);

        /* Finished: neither complete nor fail apply, and nothing changes. */
        assert_int_equal(ledger_complete(f->l, id, outs, 2, 3000), -ESTALE);
        assert_int_equal(ledger_fail(f->l, id, "late", true, 0, 3000), -ESTALE);
        assert_int_equal(ledger_release(f->l, id, 0, 3000), -ESTALE);
        assert_int_equal(ledger_complete(f->l, 9999, outs, 2, 3000), -ENOENT);
        assert_int_equal(raw_int(f->db, "SELECT count(*) FROM outputs"), 2);
        assert_int_equal(raw_int(f->db, "SELECT count(*) FROM job_errors"), 0);
        assert_int_equal(raw_int(f->db, "SELECT updated_us FROM jobs"), 2000);

        assert_int_equal(ledger_counts(f->l, counts), 0);
        assert_int_equal(counts[JOB_DONE], 1);
        assert_int_equal(counts[JOB_RUNNING], 0);
}

static void test_complete_is_atomic(void **state)
{
        struct fx *f = *state;
        struct job_output outs[2] = {
                { .variant = "small", .path = "/m/1", .format = "webp", .width = 1, .height = 1 },
                { .variant = "small", .path = "/m/2", .format = "webp", .width = 1, .height = 1 },
        };
        int64_t id;

        id = enqueue(f->l, "/u/a.jpg", "/m/a", 1, 1000);
        assert_int_equal(claim(f->l, 1000), id);
        /* The second output breaks the (job, variant) key: nothing is written. */
        assert_int_equal(ledger_complete(f->l, id, outs, 2, 2000), -EEXIST);
        assert_true(strlen(ledger_errmsg(f->l)) > 0);
        assert_int_equal(state_of(f->l, id), JOB_RUNNING);
        assert_int_equal(raw_int(f->db, "SELECT count(*) FROM outputs"), 0);

        /* The ledger is usable after the rollback. */
        assert_int_equal(ledger_complete(f->l, id, outs, 1, 2000), 0);
        assert_int_equal(state_of(f->l, id), JOB_DONE);
        assert_int_equal(raw_int(f->db, "SELECT count(*) FROM outputs"), 1);
}

static void test_not_running_is_stale(void **state)
{
        struct fx *f = *state;
        struct job_detail *d;
        int64_t id;

        id = enqueue(f->l, "/u/a.jpg", "/m/a", 1, 1000);
        assert_int_equal(ledger_fail(f->l, id, "x", true, 5, 1100), -ESTALE);
        assert_int_equal(ledger_release(f->l, id, 5, 1100), -ESTALE);
        assert_int_equal(ledger_fail(f->l, 9999, "x", true, 5, 1100), -ENOENT);
        assert_int_equal(ledger_release(f->l, 9999, 5, 1100), -ENOENT);
        d = get(f->l, id);
        assert_int_equal(d->job.state, JOB_QUEUED);
        assert_int_equal(d->job.next_at_usec, 1000);
        assert_int_equal(d->job.updated_usec, 1000);
        assert_null(d->job.last_error);
        assert_int_equal(d->n_errors, 0);
        job_detail_free(d);
}

static void test_recover(void **state)
{
        struct fx *f = *state;
        int64_t a, b, c;

        a = enqueue(f->l, "/u/a.jpg", "/m/a", 1, 1000);
        b = enqueue(f->l, "/u/b.jpg", "/m/b", 2, 1000);
        c = enqueue(f->l, "/u/c.jpg", "/m/c", 3, 5000);
        assert_int_equal(claim(f->l, 1000), a);
        assert_int_equal(claim(f->l, 1000), b);
        assert_int_equal(ledger_fail(f->l, b, "e", true, 1500, 1100), 0);
        assert_int_equal(claim(f->l, 1500), b);

        reopen(f);
        assert_int_equal(ledger_recover(f->l, 2000), 2);
        assert_int_equal(state_of(f->l, a), JOB_QUEUED);
        assert_int_equal(state_of(f->l, b), JOB_QUEUED);
        assert_int_equal(state_of(f->l, c), JOB_QUEUED);
        assert_int_equal(attempts_of(f->l, a), 1);
        assert_int_equal(attempts_of(f->l, b), 2);
        assert_int_equal(raw_int(f->db, "SELECT count(*) FROM jobs WHERE lease_owner IS NOT NULL"),
                         0);
        assert_int_equal(ledger_recover(f->l, 2100), 0);

        /* The next claim counts another attempt. */
        assert_int_equal(claim(f->l, 3000), a);
        assert_int_equal(attempts_of(f->l, a), 2);
}

static void test_release(void **state)
{
        struct fx *f = *state;
        struct job_detail *d;
        int64_t id;

        id = enqueue(f->l, "/u/a.jpg", "/m/a", 1, 1000);
        assert_int_equal(claim(f->l, 1000), id);
        assert_int_equal(attempts_of(f->l, id), 1);
        assert_int_equal(ledger_release(f->l, id, 7000, 1200), 0);
        d = get(f->l, id);
        assert_int_equal(d->job.state, JOB_QUEUED);
        assert_int_equal(d->job.attempts, 0);
        assert_int_equal(d->job.next_at_usec, 7000);
        assert_int_equal(d->job.updated_usec, 1200);
        job_detail_free(d);
        assert_int_equal(raw_int(f->db, "SELECT lease_owner IS NULL AND lease_expires_us IS NULL "
                                        "FROM jobs"),
                         1);

        assert_no_claim(f->l, 6999);
        assert_int_equal(claim(f->l, 7000), id);
        assert_int_equal(attempts_of(f->l, id), 1);

        /* Never below zero. */
        raw_exec(f->db, "UPDATE jobs SET attempts = 0");
        assert_int_equal(ledger_release(f->l, id, 8000, 7100), 0);
        assert_int_equal(attempts_of(f->l, id), 0);
}

/* Held: queued with its attempt given back and a reason, claimable only once woken (by
 * ledger_unhold() or ledger_retry()); not due, not the oldest queued. Relocated: a running
 * job's pipeline and output key change. */
static void test_hold_and_relocate(void **state)
{
        struct fx *f = *state;
        struct job_detail *d;
        int64_t id, due, oldest;
        uint64_t held;

        id = enqueue(f->l, "/u/a.jpg", "/m/a", 1, 1000);
        assert_int_equal(ledger_hold(f->l, id, "watch /u is gone", 1100), -ESTALE);
        assert_int_equal(claim(f->l, 1000), id);
        assert_int_equal(ledger_relocate(f->l, id, "q", "/n/a"), 0);
        assert_int_equal(ledger_hold(f->l, id, "watch /u is gone", 1100), 0);
        d = get(f->l, id);
        assert_int_equal(d->job.state, JOB_QUEUED);
        assert_int_equal(d->job.attempts, 0);
        assert_string_equal(d->job.last_error, "watch /u is gone");
        assert_string_equal(d->job.pipeline, "q");
        assert_string_equal(d->job.output_key, "/n/a");
        job_detail_free(d);
        assert_int_equal(ledger_count_held(f->l, &held), 0);
        assert_int_equal(held, 1);
        assert_no_claim(f->l, INT64_MAX - 1);
        assert_int_equal(ledger_next_due(f->l, &due), 0);
        assert_int_equal(ledger_oldest_queued(f->l, &oldest), 0);
        assert_int_equal(ledger_relocate(f->l, id, "p", "/m/a"), -ESTALE);

        assert_int_equal(ledger_unhold(f->l, 2000), 1);
        assert_int_equal(ledger_count_held(f->l, &held), 0);
        assert_int_equal(held, 0);
        assert_int_equal(claim(f->l, 2000), id);
        assert_int_equal(ledger_hold(f->l, id, "watch /u is gone", 2100), 0);
        assert_int_equal(ledger_retry(f->l, id, 3000), 0);
        assert_int_equal(state_of(f->l, id), JOB_QUEUED);
        assert_int_equal(claim(f->l, 3000), id);
        assert_int_equal(ledger_unhold(f->l, 4000), 0);
        assert_counts_real(f);
}

static void test_retry_dead(void **state)
{
        struct fx *f = *state;
        struct job_detail *d;
        int64_t id;

        id = enqueue(f->l, "/u/a.jpg", "/m/a", 1, 1000);
        assert_int_equal(ledger_retry(f->l, id, 1100), -ESTALE);
        assert_int_equal(ledger_retry(f->l, 9999, 1100), -ENOENT);
        assert_int_equal(claim(f->l, 1000), id);
        assert_int_equal(ledger_retry(f->l, id, 1100), -ESTALE);
        assert_int_equal(ledger_fail(f->l, id, "bad", false, 0, 1200), 0);
        assert_int_equal(raw_int(f->db, "SELECT finished_us FROM jobs"), 1200);

        assert_int_equal(ledger_retry(f->l, id, 5000), 0);
        d = get(f->l, id);
        assert_int_equal(d->job.state, JOB_QUEUED);
        assert_int_equal(d->job.attempts, 0);
        assert_int_equal(d->job.next_at_usec, 5000);
        assert_int_equal(d->job.updated_usec, 5000);
        assert_int_equal(d->n_errors, 1);
        job_detail_free(d);
        assert_int_equal(raw_int(f->db, "SELECT finished_us IS NULL FROM jobs"), 1);
        assert_int_equal(ledger_retry(f->l, id, 5100), -ESTALE);

        assert_no_claim(f->l, 4999);
        assert_int_equal(claim(f->l, 5000), id);
        assert_int_equal(attempts_of(f->l, id), 1);
}

static void test_cancel(void **state)
{
        struct fx *f = *state;
        struct job_detail *d;
        int64_t q, r, dd, run, done;

        q = enqueue(f->l, "/u/q.jpg", "/m/q", 1, 1000);
        r = enqueue(f->l, "/u/r.jpg", "/m/r", 2, 1001);
        dd = enqueue(f->l, "/u/d.jpg", "/m/d", 3, 1002);
        run = enqueue(f->l, "/u/run.jpg", "/m/run", 4, 1003);
        done = enqueue(f->l, "/u/done.jpg", "/m/done", 5, 1004);
        /* q is claimed and handed back with a far next_at, out of the way. */
        assert_int_equal(claim(f->l, 2000), q);
        assert_int_equal(ledger_release(f->l, q, 1000000, 2001), 0);
        assert_int_equal(claim(f->l, 2000), r);
        assert_int_equal(ledger_fail(f->l, r, "e", true, 9000, 2002), 0);
        assert_int_equal(claim(f->l, 2000), dd);
        assert_int_equal(ledger_fail(f->l, dd, "e", false, 0, 2003), 0);
        assert_int_equal(claim(f->l, 2000), run);
        assert_int_equal(claim(f->l, 2000), done);
        assert_int_equal(ledger_complete(f->l, done, NULL, 0, 2004), 0);
        assert_int_equal(state_of(f->l, q), JOB_QUEUED);
        assert_int_equal(state_of(f->l, r), JOB_RETRY);
        assert_int_equal(state_of(f->l, dd), JOB_DEAD);
        assert_int_equal(state_of(f->l, run), JOB_RUNNING);

        assert_int_equal(ledger_cancel(f->l, q, "by operator", 3000), 0);
        d = get(f->l, q);
        assert_int_equal(d->job.state, JOB_CANCELLED);
        assert_string_equal(d->job.last_error, "by operator");
        assert_int_equal(d->job.updated_usec, 3000);
        assert_int_equal(d->n_errors, 1);
        assert_string_equal(d->errors[0].message, "by operator");
        assert_int_equal(d->errors[0].at_usec, 3000);
        job_detail_free(d);

        assert_int_equal(ledger_cancel(f->l, r, "x", 3001), 0);
        assert_int_equal(state_of(f->l, r), JOB_CANCELLED);
        assert_int_equal(ledger_cancel(f->l, dd, "x", 3002), 0);
        assert_int_equal(state_of(f->l, dd), JOB_CANCELLED);
        assert_int_equal(ledger_cancel(f->l, run, "x", 3003), 0);
        assert_int_equal(state_of(f->l, run), JOB_CANCELLED);
        /* The worker's late result is refused. */
        assert_int_equal(ledger_complete(f->l, run, NULL, 0, 3004), -ESTALE);
        assert_int_equal(state_of(f->l, run), JOB_CANCELLED);

        assert_int_equal(ledger_cancel(f->l, done, "x", 3005), -ESTALE);
        assert_int_equal(state_of(f->l, done), JOB_DONE);
        assert_int_equal(ledger_cancel(f->l, q, "again", 3006), -ESTALE);
        assert_int_equal(ledger_cancel(f->l, 9999, "x", 3007), -ENOENT);
        assert_int_equal(raw_int(f->db, "SELECT count(*) FROM job_errors WHERE message = 'again'"),
                         0);

        /* Nothing cancelled is claimable. */
        assert_no_claim(f->l, 1000000);
}

/* Queries */

static void test_counts(void **state)
{
        struct fx *f = *state;
        uint64_t counts[_JOB_STATE_MAX];
        int64_t a, b, c, d;

        memset(counts, 0xff, sizeof counts);
        assert_int_equal(ledger_counts(f->l, counts), 0);
        for (int i = 0; i < _JOB_STATE_MAX; i++)
                assert_int_equal(counts[i], 0);

        a = enqueue(f->l, "/u/a.jpg", "/m/a", 1, 1000);
        b = enqueue(f->l, "/u/b.jpg", "/m/b", 2, 1000);
        c = enqueue(f->l, "/u/c.jpg", "/m/c", 3, 1000);
        d = enqueue(f->l, "/u/d.jpg", "/m/d", 4, 1000);
        enqueue(f->l, "/u/e.jpg", "/m/e", 5, 1000);
        enqueue(f->l, "/u/f.jpg", "/m/f", 6, 1000);
        assert_int_equal(claim(f->l, 1000), a);
        assert_int_equal(claim(f->l, 1000), b);
        assert_int_equal(claim(f->l, 1000), c);
        assert_int_equal(claim(f->l, 1000), d);
        assert_int_equal(ledger_complete(f->l, a, NULL, 0, 1100), 0);
        assert_int_equal(ledger_fail(f->l, b, "e", true, 5000, 1100), 0);
        assert_int_equal(ledger_fail(f->l, c, "e", false, 0, 1100), 0);
        enqueue(f->l, "/u/f.jpg", "/m/f", 7, 1200); /* cancels the queued f */

        assert_int_equal(ledger_counts(f->l, counts), 0);
        assert_int_equal(counts[JOB_QUEUED], 2);
        assert_int_equal(counts[JOB_RUNNING], 1);
        assert_int_equal(counts[JOB_RETRY], 1);
        assert_int_equal(counts[JOB_DONE], 1);
        assert_int_equal(counts[JOB_DEAD], 1);
        assert_int_equal(counts[JOB_CANCELLED], 1);
}

/* The counts kept by the triggers follow every transition, a restart, and writes made
 * behind imgd's back (the bench fills the ledger with the sqlite3 CLI). */
static void test_counts_kept(void **state)
{
        struct fx *f = *state;
        int64_t a, b, c, d, e, a2;
        struct job *j = NULL;

        assert_counts(f->l, 0, 0, 0, 0, 0, 0);
        a = enqueue(f->l, "/u/a.jpg", "/m/a", 1, 1000);
        b = enqueue(f->l, "/u/b.jpg", "/m/b", 2, 1000);
        c = enqueue(f->l, "/u/c.jpg", "/m/c", 3, 1000);
        d = enqueue(f->l, "/u/d.jpg", "/m/d", 4, 1000);
        e = enqueue(f->l, "/u/e.jpg", "/m/e", 5, 1000);
        assert_counts(f->l, 5, 0, 0, 0, 0, 0);
        /* Enqueueing known content changes nothing. */
        {
                struct source_info s = src_make("/u/a.jpg", "/m/a", 1);
                int64_t id;
                assert_int_equal(ledger_enqueue(f->l, &s, 1001, &id), 0);
        }
        assert_counts(f->l, 5, 0, 0, 0, 0, 0);

        assert_int_equal(claim(f->l, 1000), a);
        assert_int_equal(claim(f->l, 1000), b);
        assert_int_equal(claim(f->l, 1000), c);
        assert_int_equal(claim(f->l, 1000), d);
        assert_counts(f->l, 1, 4, 0, 0, 0, 0);
        assert_int_equal(ledger_stage(f->l, a, NULL, 0, true, NULL, 1050), 0);
        assert_int_equal(ledger_complete(f->l, a, NULL, 0, 1100), 0);
        assert_int_equal(ledger_fail(f->l, b, "e", true, 5000, 1100), 0);
        assert_int_equal(ledger_fail(f->l, c, "e", false, 0, 1100), 0);
        assert_int_equal(ledger_release(f->l, d, 1200, 1100), 0);
        assert_counts(f->l, 2, 0, 1, 1, 1, 0);
        /* Refused transitions change nothing. */
        assert_int_equal(ledger_complete(f->l, a, NULL, 0, 1150), -ESTALE);
        assert_int_equal(ledger_retry(f->l, b, 1150), -ESTALE);
        assert_int_equal(ledger_cancel(f->l, 999, "x", 1150), -ENOENT);
        assert_counts(f->l, 2, 0, 1, 1, 1, 0);
        assert_counts_real(f);

        assert_int_equal(ledger_retry(f->l, c, 1200), 0);        /* dead -> queued */
        assert_int_equal(ledger_cancel(f->l, e, "no", 1200), 0); /* queued -> cancelled */
        assert_counts(f->l, 2, 0, 1, 1, 0, 1);
        a2 = enqueue(f->l, "/u/b.jpg", "/m/b", 9, 1300); /* cancels b, waiting to retry */
        assert_counts(f->l, 3, 0, 0, 1, 0, 2);
        assert_int_equal(ledger_rerender_degraded(f->l, 1400, 10), 1); /* a: done -> queued */
        assert_counts(f->l, 4, 0, 0, 0, 0, 2);
        for (int i = 0; i < 2; i++) {
                assert_int_equal(ledger_claim(f->l, "test", 1500, LEASE_US, &j), 1);
                j = job_free(j);
        }
        assert_counts(f->l, 2, 2, 0, 0, 0, 2);
        assert_counts_real(f);

        /* After a crash: the running jobs go back to the queue at recovery. */
        reopen(f);
        assert_counts(f->l, 2, 2, 0, 0, 0, 2);
        assert_int_equal(ledger_recover(f->l, 1600), 2);
        assert_counts(f->l, 4, 0, 0, 0, 0, 2);

        /* Pruning deletes counted jobs: a's old one and b's cancelled one, no longer their
         * sources' newest; e's cancelled job is its source's newest and stays. */
        for (int i = 0; i < 4; i++) {
                assert_int_equal(ledger_claim(f->l, "test", 1700, LEASE_US, &j), 1);
                assert_int_equal(ledger_complete(f->l, j->id, NULL, 0, 1710), 0);
                j = job_free(j);
        }
        assert_counts(f->l, 0, 0, 0, 4, 0, 2);
        (void)enqueue(f->l, "/u/a.jpg", "/m/a", 11, 1720);
        assert_counts(f->l, 1, 0, 0, 4, 0, 2);
        assert_int_equal(prune_all(f->l, 100000, 1), 2);
        assert_counts(f->l, 1, 0, 0, 3, 0, 1);
        assert_counts_real(f);
        assert_int_equal(state_of(f->l, a2), JOB_DONE);

        /* Rows written by another program are counted too. */
        raw_bulk_done(f->db, 100);
        raw_exec(f->db, "UPDATE jobs SET state = 'dead' WHERE source_path = '/bulk/7.jpg';"
                        "DELETE FROM jobs WHERE source_path = '/bulk/8.jpg'");
        assert_counts(f->l, 1, 0, 0, 101, 1, 1);
        reopen_clean(f);
        assert_counts(f->l, 1, 0, 0, 101, 1, 1);
        assert_counts_real(f);
}

/* A kept count that went wrong is corruption to ledger_integrity_check(). */
static void test_counts_checked(void **state)
{
        struct fx *f = *state;
        uint64_t c[_JOB_STATE_MAX];

        enqueue(f->l, "/u/a.jpg", "/m/a", 1, 1000);
        assert_int_equal(ledger_integrity_check(f->l), 0);
        raw_exec(f->db, "UPDATE job_counts SET n = n + 1 WHERE state = 'done'");
        assert_int_equal(ledger_integrity_check(f->l), -EBADMSG);
        assert_non_null(strstr(ledger_errmsg(f->l), "job_counts: done holds 1"));
        raw_exec(f->db, "UPDATE job_counts SET n = -1 WHERE state = 'done'");
        assert_int_equal(ledger_counts(f->l, c), -EBADMSG);
}

/* A ledger of schema version 1 is migrated at open: indexes replaced, counts filled from
 * the jobs it holds, and kept from then on. */
static void test_migrate_v1(void **state)
{
        struct fx *f = *state;
        struct ledger_filter flt = { .state = JOB_DONE, .limit = 2 };
        struct job *jobs = NULL;
        size_t n = 0;
        int64_t id;

        f->l = ledger_free(f->l);
        assert_int_equal(unlink(f->db), 0);
        write_file(f->db, "", 0);
        raw_exec(f->db, schema_v1);
        raw_exec(f->db, "PRAGMA journal_mode = WAL");
        raw_bulk_done(f->db, 30);
        raw_exec(f->db, "UPDATE jobs SET state = 'queued' WHERE id <= 3;"
                        "UPDATE jobs SET state = 'dead', finished_us = 7 WHERE id = 4;"
                        "UPDATE jobs SET state = 'cancelled' WHERE id = 5;"
                        "UPDATE jobs SET state = 'running', lease_owner = 'x' WHERE id = 6;");
        assert_int_equal(raw_int(f->db, "SELECT version FROM schema_version"), 1);

        reopen(f);
        assert_int_equal(raw_int(f->db, "SELECT version FROM schema_version"), 2);
        assert_int_equal(raw_int(f->db, "SELECT count(*) FROM sqlite_master "
                                        "WHERE name = 'jobs_state_next'"),
                         0);
        assert_int_equal(raw_int(f->db, "SELECT count(*) FROM sqlite_master WHERE type = 'index' "
                                        "AND name IN ('jobs_state_updated', 'jobs_path')"),
                         2);
        assert_int_equal(raw_int(f->db, "SELECT count(*) FROM sqlite_master "
                                        "WHERE type = 'trigger'"),
                         3);
        assert_counts(f->l, 3, 1, 0, 24, 1, 1);
        assert_counts_real(f);

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
        id = enqueue(f->l, "/u/new.jpg", "/m/new", 77, 200);
        assert_int_equal(claim(f->l, 200), 1);
        assert_counts(f->l, 4, 1, 0, 24, 1, 1);
        assert_int_equal(state_of(f->l, id), JOB_QUEUED);

        /* Opened again, nothing is migrated twice. */
        reopen(f);
        assert_int_equal(raw_int(f->db, "SELECT version FROM schema_version"), 2);
        assert_counts_real(f);
}

/* Lookups inside a read batch, with transitions in between: every write goes through, and
 * the reads see it. */
static void test_read_batch(void **state)
{
        struct fx *f = *state;
        struct source_info s = src_make("/u/b.jpg", "/m/b", 2);
        struct job_detail *d = NULL;
        int64_t a, b = 0;

        a = enqueue(f->l, "/u/a.jpg", "/m/a", 1, 1000);
        ledger_read_begin(f->l);
        assert_int_equal(ledger_known_stat(f->l, "/u/a.jpg", 1001, 1700000000000000001LL, 43), 1);
        assert_int_equal(ledger_known_stat(f->l, "/u/b.jpg", s.size, s.mtime_ns, s.ino), 0);
        assert_int_equal(ledger_enqueue(f->l, &s, 1100, &b), 1);
        assert_int_equal(ledger_known_stat(f->l, "/u/b.jpg", s.size, s.mtime_ns, s.ino), 1);
        assert_int_equal(claim(f->l, 1200), a);
        assert_int_equal(ledger_get(f->l, a, &d), 1);
        assert_int_equal(d->job.state, JOB_RUNNING);
        d = job_detail_free(d);
        assert_int_equal(ledger_get(f->l, 999, &d), 0);
        assert_counts(f->l, 1, 1, 0, 0, 0, 0);
        /* Another connection can write meanwhile; the next transition sees its row. */
        raw_bulk_done(f->db, 3);
        assert_int_equal(ledger_complete(f->l, a, NULL, 0, 1300), 0);
        assert_counts(f->l, 1, 0, 0, 4, 0, 0);
        ledger_read_end(f->l);

        /* No transaction is left open: another connection checkpoints the whole WAL. */
        {
                sqlite3 *h = NULL;
                sqlite3_stmt *st = NULL;

                assert_int_equal(sqlite3_open_v2(f->db, &h, SQLITE_OPEN_READWRITE, NULL),
                                 SQLITE_OK);
                assert_int_equal(
                        sqlite3_prepare_v2(h, "PRAGMA wal_checkpoint(TRUNCATE)", -1, &st, NULL),
                        SQLITE_OK);
                assert_int_equal(sqlite3_step(st), SQLITE_ROW);
                assert_int_equal(sqlite3_column_int(st, 0), 0); /* not busy */
                sqlite3_finalize(st);
                sqlite3_close(h);
        }
        assert_int_equal(state_of(f->l, b), JOB_QUEUED);
        assert_counts_real(f);
}

/* Past this size (ledger.c's LEDGER_ALWAYS_CHECK_BYTES) the clean-stop record decides. */
static void make_large(struct fx *f)
{
        struct stat st;

        raw_bulk_done(f->db, 40000);
        reopen(f); /* checkpointed into the file */
        assert_int_equal(stat(f->db, &st), 0);
        assert_true(st.st_size > 4 << 20);
}

/* The whole file is checked at open unless imgd recorded a clean stop of the file exactly as
 * it is; the record is used once. */
static void test_clean_stop(void **state)
{
        struct fx *f = *state;
        char *closed = xasprintf("%s.closed", f->db);
        char *wal = xasprintf("%s-wal", f->db);
        struct timespec times[2] = { { .tv_nsec = UTIME_OMIT } };
        sqlite3 *h = NULL;
        char *err = NULL;
        struct stat st;

        /* A small ledger is checked in full, record or not. */
        assert_true(checked_whole(f->l));
        reopen_clean(f);
        assert_true(checked_whole(f->l));
        assert_false(exists(closed));

        make_large(f);
        assert_true(checked_whole(f->l)); /* closed without a record */
        assert_int_equal(ledger_close(TAKE_PTR(f->l), &err), 0);
        assert_true(exists(closed));
        assert_int_equal(ledger_open(f->db, &f->l, &err), 0);
        assert_false(checked_whole(f->l));
        assert_false(exists(closed)); /* gone before the first write */
        assert_counts(f->l, 0, 0, 0, 40000, 0, 0);
        assert_int_equal(ledger_integrity_check(f->l), 0);

        /* Killed, or closed without ledger_close(): in full. */
        reopen(f);
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
        assert_counts_real(f);

        free(wal);
        free(closed);
}

/* Pages corrupted after a clean stop: the write moved the file's times, so the record no
 * longer matches and the whole file is checked. */
static void test_clean_stop_then_changed(void **state)
{
        struct fx *f = *state;
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

/* Listing the newest jobs of a state walks an index in order (no sort of every job in that
 * state), with ties on updated_us broken by id as before. */
static void test_list_state_uses_index(void **state)
{
        struct fx *f = *state;
        struct ledger_filter flt = { .state = JOB_DONE, .limit = 3 };
        struct job *jobs = NULL;
        sqlite3_stmt *st = NULL;
        sqlite3 *h = NULL;
        size_t n = 0;
        char plan[512] = "";

        raw_bulk_done(f->db, 50);
        raw_exec(f->db, "UPDATE jobs SET updated_us = 1000 WHERE id > 40");
        assert_int_equal(ledger_list(f->l, &flt, &jobs, &n), 0);
        assert_int_equal(n, 3);
        assert_int_equal(jobs[0].id, 50);
        assert_int_equal(jobs[1].id, 49);
        assert_int_equal(jobs[2].id, 48);
        for (size_t i = 0; i < n; i++)
                job_clear(&jobs[i]);
        free(jobs);

        assert_int_equal(sqlite3_open_v2(f->db, &h, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_prepare_v2(h,
                                            "EXPLAIN QUERY PLAN SELECT id, state FROM jobs "
                                            "WHERE 1 AND state = ?1 "
                                            "ORDER BY updated_us DESC, id DESC LIMIT ?4",
                                            -1, &st, NULL),
                         SQLITE_OK);
        while (sqlite3_step(st) == SQLITE_ROW)
                snprintf(plan + strlen(plan), sizeof plan - strlen(plan), "%s;",
                         (const char *)sqlite3_column_text(st, 3));
        sqlite3_finalize(st);
        sqlite3_close(h);
        assert_non_null(strstr(plan, "jobs_state_updated"));
        assert_null(strstr(plan, "TEMP B-TREE"));
}

static void test_list(void **state)
{
        struct fx *f = *state;
        struct ledger_filter flt = { .state = -1 };
        struct job *jobs = NULL;
        size_t n = 99;
        int64_t a;

        /* 60 jobs: even ones in watch /w1, odd ones in /w2; updated at 1000 + i. */
        for (unsigned i = 0; i < 60; i++) {
                struct source_info s;
                char path[64];
                int64_t id;

                snprintf(path, sizeof path, "/u/%u.jpg", i);
                s = src_make(path, path, i);
                s.watch = i % 2 ? "/w2" : "/w1";
                assert_int_equal(ledger_enqueue(f->l, &s, 1000 + i, &id), 1);
                assert_int_equal(id, i + 1);
        }
        a = claim(f->l, 5000); /* job 1, now updated at 5000 */
        assert_int_equal(a, 1);

        /* Default limit, newest first. */
        assert_int_equal(ledger_list(f->l, &flt, &jobs, &n), 0);
        assert_int_equal(n, 50);
        assert_int_equal(jobs[0].id, 1);
        assert_int_equal(jobs[0].state, JOB_RUNNING);
        assert_int_equal(jobs[1].id, 60);
        assert_int_equal(jobs[49].id, 12);
        for (size_t i = 1; i < n; i++)
                assert_true(jobs[i - 1].updated_usec >= jobs[i].updated_usec);
        for (size_t i = 0; i < n; i++)
                job_clear(&jobs[i]);
        free(jobs);

        /* State, watch, since and limit together. */
        flt = (struct ledger_filter){
                .state = JOB_QUEUED, .watch = "/w2", .since_usec = 1050, .limit = 3
        };
        assert_int_equal(ledger_list(f->l, &flt, &jobs, &n), 0);
        assert_int_equal(n, 3);
        assert_int_equal(jobs[0].id, 60);
        assert_int_equal(jobs[1].id, 58);
        assert_int_equal(jobs[2].id, 56);
        for (size_t i = 0; i < n; i++) {
                assert_string_equal(jobs[i].watch, "/w2");
                job_clear(&jobs[i]);
        }
        free(jobs);

        flt = (struct ledger_filter){ .state = JOB_QUEUED, .watch = "/w1", .since_usec = 1050 };
        assert_int_equal(ledger_list(f->l, &flt, &jobs, &n), 0);
        assert_int_equal(n, 5); /* 1050, 1052, ..., 1058 */
        assert_int_equal(jobs[4].id, 51);
        for (size_t i = 0; i < n; i++)
                job_clear(&jobs[i]);
        free(jobs);

        flt = (struct ledger_filter){ .state = JOB_RUNNING };
        assert_int_equal(ledger_list(f->l, &flt, &jobs, &n), 0);
        assert_int_equal(n, 1);
        assert_int_equal(jobs[0].id, 1);
        job_clear(&jobs[0]);
        free(jobs);

        flt = (struct ledger_filter){ .state = JOB_DEAD };
        jobs = NULL;
        assert_int_equal(ledger_list(f->l, &flt, &jobs, &n), 0);
        assert_int_equal(n, 0);
        free(jobs);

        /* NULL filter: everything, default limit. */
        assert_int_equal(ledger_list(f->l, NULL, &jobs, &n), 0);
        assert_int_equal(n, 50);
        for (size_t i = 0; i < n; i++)
                job_clear(&jobs[i]);
        free(jobs);

        flt = (struct ledger_filter){ .state = _JOB_STATE_MAX };
        assert_int_equal(ledger_list(f->l, &flt, &jobs, &n), -EINVAL);
}

static void test_list_limit_capped(void **state)
{
        struct fx *f = *state;
        struct ledger_filter flt = { .state = JOB_DONE, .limit = 50000 };
        struct job *jobs = NULL;
        size_t n = 0;

        raw_bulk_done(f->db, 10050);
        assert_int_equal(ledger_list(f->l, &flt, &jobs, &n), 0);
        assert_int_equal(n, 10000);
        assert_int_equal(jobs[0].id, 10050);
        assert_string_equal(jobs[0].source_path, "/bulk/10050.jpg");
        assert_int_equal(jobs[9999].id, 51);
        for (size_t i = 0; i < n; i++)
                job_clear(&jobs[i]);
        free(jobs);
}

static void test_output_owner(void **state)
{
        struct fx *f = *state;
        char *owner = NULL;
        int64_t jpg, png, gif;

        jpg = enqueue(f->l, "/u/a.jpg", "/m/a", 1, 1000);
        assert_int_equal(ledger_output_owner(f->l, "/m/a", "/u/a.png", &owner), 0);
        assert_null(owner);
        assert_int_equal(claim(f->l, 1000), jpg);
        /* Running is not done. */
        assert_int_equal(ledger_output_owner(f->l, "/m/a", "/u/a.png", &owner), 0);
        assert_int_equal(ledger_complete(f->l, jpg, NULL, 0, 1100), 0);

        assert_int_equal(ledger_output_owner(f->l, "/m/a", "/u/a.png", &owner), 1);
        assert_string_equal(owner, "/u/a.jpg");
        free(owner);
        owner = NULL;
        assert_int_equal(ledger_output_owner(f->l, "/m/a", "/u/a.jpg", &owner), 0);
        assert_null(owner);
        assert_int_equal(ledger_output_owner(f->l, "/m/b", "/u/a.png", &owner), 0);

        /* The most recent done job wins. */
        png = enqueue(f->l, "/u/a.png", "/m/a", 2, 1200);
        assert_int_equal(claim(f->l, 1200), png);
        assert_int_equal(ledger_complete(f->l, png, NULL, 0, 1300), 0);
        gif = enqueue(f->l, "/u/a.gif", "/m/a", 3, 1400);
        assert_int_equal(ledger_output_owner(f->l, "/m/a", "/u/a.gif", &owner), 1);
        assert_string_equal(owner, "/u/a.png");
        free(owner);
        owner = NULL;
        assert_int_equal(ledger_output_owner(f->l, "/m/a", "/u/a.png", &owner), 1);
        assert_string_equal(owner, "/u/a.jpg");
        free(owner);
        owner = NULL;
        assert_int_equal(state_of(f->l, gif), JOB_QUEUED);
}

static void test_get_missing(void **state)
{
        struct fx *f = *state;
        struct job_detail *d = NULL;

        assert_int_equal(ledger_get(f->l, 12345, &d), 0);
        assert_null(d);
}

static void test_state_names(void **state)
{
        (void)state;
        for (int i = 0; i < _JOB_STATE_MAX; i++) {
                const char *name = job_state_name(i);
                assert_non_null(name);
                assert_int_equal(job_state_from_name(name), i);
        }
        assert_string_equal(job_state_name(JOB_RETRY), "retry");
        assert_string_equal(job_state_name(JOB_CANCELLED), "cancelled");
        assert_null(job_state_name(_JOB_STATE_MAX));
        assert_null(job_state_name((enum job_state) - 1));
        assert_int_equal(job_state_from_name("Queued"), -EINVAL);
        assert_int_equal(job_state_from_name(""), -EINVAL);
        assert_int_equal(job_state_from_name(NULL), -EINVAL);
        assert_null(job_free(NULL));
        assert_null(job_detail_free(NULL));
        assert_null(ledger_free(NULL));
        job_clear(NULL);
}

int main(void)
{
#define T(t) cmocka_unit_test_setup_teardown(t, setup, teardown)
        const struct CMUnitTest tests[] = {
                T(test_create_reopen),
                T(test_schema_version),
                T(test_crash_persists),
                T(test_missing_parent),
                T(test_corrupt_garbage),
                T(test_corrupt_pages),
                T(test_future_schema),
                T(test_foreign_database),
                T(test_enqueue_dedupe),
                T(test_enqueue_supersedes),
                T(test_enqueue_content_returns),
                T(test_enqueue_after_cancel),
                T(test_stage_checkpoint),
                T(test_expired_leases),
                T(test_degraded_rerender),
                T(test_prune),
                T(test_prune_batches),
                T(test_known_stat),
                T(test_claim_fields_and_attempts),
                T(test_claim_order_and_next_at),
                T(test_claim_prefers_earlier_next_at),
                T(test_claim_excludes_running_output_key),
                T(test_claim_with_many_done),
                T(test_fail_retry_then_dead),
                T(test_fail_message_is_capped),
                T(test_complete_outputs),
                T(test_complete_is_atomic),
                T(test_not_running_is_stale),
                T(test_recover),
                T(test_release),
                T(test_hold_and_relocate),
                T(test_retry_dead),
                T(test_cancel),
                T(test_counts),
                T(test_counts_kept),
                T(test_counts_checked),
                T(test_migrate_v1),
                T(test_read_batch),
                T(test_clean_stop),
                T(test_clean_stop_then_changed),
                T(test_list_state_uses_index),
                T(test_list),
                T(test_list_limit_capped),
                T(test_output_owner),
                T(test_get_missing),
                T(test_state_names),
        };
#undef T

        umask(022);
        return cmocka_run_group_tests(tests, NULL, NULL);
}
