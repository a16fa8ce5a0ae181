/* SPDX-License-Identifier: MIT */
/*
 * ledger-fixture.c - helpers of the test-ledger-* programs: a job ledger opened on a real
 * SQLite file in a temporary directory or on a schema of a real PostgreSQL server
 * (ledfx_setup(), ledfx_teardown()), SQL run on a second connection to the same database, sources,
 * enqueue and claim asserted to succeed, a job's stored state and attempts, the counts checked
 * against the table, reopening, and whole prune passes.
 */
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
#include <unistd.h>
#include <cmocka.h>

#include "ledger-fixture.h"
#include "pg-fixture.h"

char *ledfx_xasprintf(const char *fmt, ...)
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

void ledfx_rm_rf(const char *path)
{
        if (path)
                nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

enum ledger_engine_kind ledfx_engine(void)
{
        const char *e = getenv("IMGD_TEST_LEDGER_ENGINE");
        int k;

        if (!e || !*e)
                return LEDGER_ENGINE_SQLITE;
        k = ledger_engine_kind_from_name(e);
        if (k < 0) {
                fprintf(stderr, "IMGD_TEST_LEDGER_ENGINE=%s: not sqlite or postgresql\n", e);
                abort();
        }
        return (enum ledger_engine_kind)k;
}

static void sqlite_exec(const char *db, const char *sql)
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

/* What a second connection or a crash is to see committed: the claims that wait for a
 * commit (ledger_claim() on SQLite). */
static void commit_claims(struct ledfx *f)
{
        if (f->l)
                assert_int_equal(ledger_commit_claims(f->l), 0);
}

void ledfx_raw_exec(struct ledfx *f, const char *sql)
{
        commit_claims(f);
        if (f->engine == LEDGER_ENGINE_POSTGRESQL)
                pgfx_exec(f->conninfo, sql);
        else
                sqlite_exec(f->db, sql);
}

int64_t ledfx_raw_int(struct ledfx *f, const char *sql)
{
        sqlite3 *h = NULL;
        sqlite3_stmt *st = NULL;
        int64_t v;

        commit_claims(f);
        if (f->engine == LEDGER_ENGINE_POSTGRESQL)
                return pgfx_int(f->conninfo, sql);
        assert_int_equal(sqlite3_open_v2(f->db, &h, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_prepare_v2(h, sql, -1, &st, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        v = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        sqlite3_close(h);
        return v;
}

void ledfx_raw_bulk_done(struct ledfx *f, unsigned n)
{
        char *sql;

        commit_claims(f);
        if (f->engine == LEDGER_ENGINE_POSTGRESQL)
                sql = ledfx_xasprintf(
                        "INSERT INTO jobs (watch, source_path, source_sha256, source_size, "
                        "source_mtime_ns, source_ino, output_key, pipeline, state, attempts, "
                        "created_us, updated_us, next_at_us, finished_us) "
                        "SELECT 'bulk', '/bulk/' || x || '.jpg', lpad(x::text, 64, '0'), 1, 1, x, "
                        "'/out/bulk/' || x, 'p', 'done', 1, x, x, x, x "
                        "FROM generate_series(1, %u) AS x",
                        n);
        else
                sql = ledfx_xasprintf(
                        "BEGIN;"
                        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < "
                        "%u) "
                        "INSERT INTO jobs (watch, source_path, source_sha256, source_size, "
                        "source_mtime_ns, source_ino, output_key, pipeline, state, attempts, "
                        "created_us, updated_us, next_at_us, finished_us) "
                        "SELECT 'bulk', '/bulk/' || x || '.jpg', printf('%%064d', x), 1, 1, x, "
                        "'/out/bulk/' || x, 'p', 'done', 1, x, x, x, x FROM c;"
                        "COMMIT;",
                        n);
        ledfx_raw_exec(f, sql);
        free(sql);
}

/* A source whose content hash is made from `content`. */
struct source_info ledfx_src_make(const char *path, const char *output_key, unsigned content)
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

int64_t ledfx_enqueue(ledger *l, const char *path, const char *key, unsigned content, int64_t now)
{
        struct source_info s = ledfx_src_make(path, key, content);
        int64_t id = -1;

        assert_int_equal(ledger_enqueue(l, &s, now, &id), 1);
        assert_true(id > 0);
        return id;
}

int64_t ledfx_claim(ledger *l, int64_t now)
{
        struct job *j = NULL;
        int64_t id;

        assert_int_equal(ledger_claim(l, "test", now, LEDFX_LEASE_US, JOB_PRIORITY_BACKGROUND, &j),
                         1);
        assert_non_null(j);
        assert_int_equal(j->state, JOB_RUNNING);
        id = j->id;
        job_free(j);
        return id;
}

int64_t ledfx_fence_of(ledger *l, int64_t id)
{
        struct job_detail *d = NULL;
        int64_t fence;

        if (ledger_get(l, id, &d) <= 0)
                return 0;
        fence = d->job.fence;
        job_detail_free(d);
        return fence;
}

void ledfx_assert_no_claim(ledger *l, int64_t now)
{
        struct job *j = NULL;

        assert_int_equal(ledger_claim(l, "test", now, LEDFX_LEASE_US, JOB_PRIORITY_BACKGROUND, &j),
                         0);
        assert_null(j);
}

struct job_detail *ledfx_get(ledger *l, int64_t id)
{
        struct job_detail *d = NULL;

        assert_int_equal(ledger_get(l, id, &d), 1);
        assert_non_null(d);
        assert_int_equal(d->job.id, id);
        return d;
}

enum job_state ledfx_state_of(ledger *l, int64_t id)
{
        struct job_detail *d = ledfx_get(l, id);
        enum job_state s = d->job.state;

        job_detail_free(d);
        return s;
}

unsigned ledfx_attempts_of(ledger *l, int64_t id)
{
        struct job_detail *d = ledfx_get(l, id);
        unsigned a = d->job.attempts;

        job_detail_free(d);
        return a;
}

/* ledger_counts() agrees with a count of the table, and so does ledger_integrity_check(). */
void ledfx_assert_counts_real(struct ledfx *f)
{
        uint64_t counts[_JOB_STATE_MAX];

        assert_int_equal(ledger_counts(f->l, counts), 0);
        for (int i = 0; i < _JOB_STATE_MAX; i++) {
                char *sql = ledfx_xasprintf("SELECT count(*) FROM jobs WHERE state = '%s'",
                                            job_state_name(i));
                int64_t real = ledfx_raw_int(f, sql);

                if ((int64_t)counts[i] != real)
                        fail_msg("%s: counted %" PRIu64 ", the table has %" PRId64,
                                 job_state_name(i), counts[i], real);
                free(sql);
        }
        assert_int_equal(ledger_integrity_check(f->l), 0);
}

void ledfx_assert_counts(ledger *l, uint64_t queued, uint64_t running, uint64_t retry,
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

void ledfx_open(struct ledfx *f)
{
        struct ledger_params p = { .engine = f->engine, .path = f->db, .conninfo = f->conninfo };
        char *err = NULL;
        int r = ledger_open_params(&p, &f->l, &err);

        if (r < 0)
                fail_msg("ledger_open: %s (%s)", strerror(-r), err ? err : "no message");
        assert_null(err);
}

/* Closes the ledger recording a clean stop, and opens it again. */
void ledfx_reopen_clean(struct ledfx *f)
{
        char *err = NULL;

        assert_int_equal(ledger_close(TAKE_PTR(f->l), &err), 0);
        assert_null(err);
        ledfx_open(f);
}

void ledfx_reopen(struct ledfx *f)
{
        commit_claims(f);
        ledfx_crash(f);
}

void ledfx_crash(struct ledfx *f)
{
        f->l = ledger_free(f->l);
        ledfx_open(f);
}

int ledfx_setup(void **state)
{
        struct ledfx *f = calloc(1, sizeof *f);
        const char *tmp = getenv("TMPDIR");

        assert_non_null(f);
        f->engine = ledfx_engine();
        f->dir = ledfx_xasprintf("%s/test-ledger.XXXXXX", tmp && *tmp ? tmp : "/tmp");
        assert_non_null(mkdtemp(f->dir));
        f->db = ledfx_xasprintf("%s/imgd.db", f->dir);
        if (f->engine == LEDGER_ENGINE_POSTGRESQL)
                f->conninfo = pgfx_schema_new();
        *state = f;
        ledfx_open(f);
        return 0;
}

int ledfx_teardown(void **state)
{
        struct ledfx *f = *state;

        ledger_free(f->l);
        ledfx_rm_rf(f->dir);
        free(f->dir);
        free(f->db);
        free(f->conninfo);
        free(f);
        return 0;
}

/* The rest of a prune pass from *cursor in batches of `batch` ids; returns how many went. */
int ledfx_prune_all_from(ledger *l, int64_t cutoff_usec, int64_t *cursor, unsigned batch)
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
int ledfx_prune_all(ledger *l, int64_t cutoff_usec, unsigned batch)
{
        int64_t cursor = 0;

        return ledfx_prune_all_from(l, cutoff_usec, &cursor, batch);
}

int ledfx_run(const char *name, const struct CMUnitTest *tests, size_t n,
              const struct CMUnitTest *sqlite_only, size_t n_sqlite_only)
{
        char group[128];
        int failed;

        snprintf(group, sizeof group, "%s (%s)", name, ledger_engine_kind_name(ledfx_engine()));
        failed = _cmocka_run_group_tests(group, tests, n, NULL, NULL);
        if (ledfx_engine() == LEDGER_ENGINE_SQLITE && n_sqlite_only > 0) {
                snprintf(group, sizeof group, "%s (sqlite only)", name);
                failed += _cmocka_run_group_tests(group, sqlite_only, n_sqlite_only, NULL, NULL);
        }
        pgfx_server_stop();
        return failed;
}

void ledfx_race(struct ledfx *f, int n, ledfx_race_fn fn)
{
        pid_t *pids = calloc((size_t)n, sizeof *pids);
        int go[2];

        assert_non_null(pids);
        /* The children connect first, then start together when the pipe closes. */
        assert_int_equal(pipe(go), 0);
        for (int k = 0; k < n; k++) {
                pids[k] = fork();
                assert_true(pids[k] >= 0);
                if (pids[k] == 0) {
                        struct ledger_params p = { .engine = f->engine,
                                                   .path = f->db,
                                                   .conninfo = f->conninfo };
                        ledger *l = NULL;
                        char *error = NULL, c;
                        int bad;

                        close(go[1]);
                        if (ledger_open_params(&p, &l, &error) < 0)
                                _exit(2);
                        (void)!read(go[0], &c, 1);
                        bad = fn(l, k);
                        ledger_free(l);
                        _exit(bad ? 1 : 0);
                }
        }
        close(go[0]);
        usleep(200 * 1000);
        close(go[1]);
        for (int k = 0; k < n; k++) {
                int status = 0;

                assert_int_equal(waitpid(pids[k], &status, 0), pids[k]);
                assert_true(WIFEXITED(status));
                assert_int_equal(WEXITSTATUS(status), 0);
        }
        free(pids);
}
