/* SPDX-License-Identifier: MIT */
/*
 * ledger-fixture.h - helpers of the test-ledger-* programs, which test the job ledger on
 * either engine: a real SQLite file in a temporary directory, or a schema of its own on a real
 * PostgreSQL server (pg-fixture.h). The environment variable IMGD_TEST_LEDGER_ENGINE
 * ("sqlite", the default, or "postgresql") chooses; ctest runs every test-ledger-* program
 * once with each (tests/CMakeLists.txt). ledfx_setup() opens a fresh ledger as the cmocka
 * state (a struct ledfx), ledfx_teardown() frees it and removes the directory. The other
 * helpers fail the running test (cmocka) when what they assert does not hold.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "daemon/ledger.h"
#include "shared/macro.h"

/* The database's clock (PostgreSQL), in microseconds since the epoch, in SQL. */
#define LEDFX_PG_NOW_US "(extract(epoch FROM clock_timestamp()) * 1000000)::bigint"

/* The lease every claim of these tests takes. */
#define LEDFX_LEASE_US (60 * 1000000LL)

struct ledfx {
        enum ledger_engine_kind engine;
        char *dir;
        char *db;       /* SQLite: the file */
        char *conninfo; /* PostgreSQL: the test's schema */
        ledger *l;
};

/* The engine these tests run on (IMGD_TEST_LEDGER_ENGINE). */
enum ledger_engine_kind ledfx_engine(void);

/* Opens a new ledger on f's database (asserted to succeed) into f->l. */
void ledfx_open(struct ledfx *f);

char *ledfx_xasprintf(const char *fmt, ...) _printf_(1, 2);

/* Removes a directory tree; a NULL path is nothing to do. */
void ledfx_rm_rf(const char *path);

/* Runs SQL (written for both engines) on a second connection to f's database. A second
 * connection sees what is committed: the claims that wait for a commit (ledger_claim() on
 * SQLite) are committed first (ledger_commit_claims()), here and in ledfx_raw_int() and
 * ledfx_raw_bulk_done(). */
void ledfx_raw_exec(struct ledfx *f, const char *sql);

/* The first column of the first row of a query on a second connection (true is 1). */
int64_t ledfx_raw_int(struct ledfx *f, const char *sql);

/* Inserts n done jobs in one transaction, straight into the table. */
void ledfx_raw_bulk_done(struct ledfx *f, unsigned n);

/* A source whose content hash is made from `content`. */
struct source_info ledfx_src_make(const char *path, const char *output_key, unsigned content);

/* Enqueues a new job (asserted new) and returns its id. */
int64_t ledfx_enqueue(ledger *l, const char *path, const char *key, unsigned content, int64_t now);

/* Claims a job (asserted there is one, now running) and returns its id. */
int64_t ledfx_claim(ledger *l, int64_t now);

/* The fencing token of job id's latest claim (0 if there is no such job): what the
 * transitions of a running job name (ledger_claim()). */
int64_t ledfx_fence_of(ledger *l, int64_t id);

/* Asserts that nothing is claimable at now. */
void ledfx_assert_no_claim(ledger *l, int64_t now);

/* The stored job id (asserted present); free with job_detail_free(). */
struct job_detail *ledfx_get(ledger *l, int64_t id);
enum job_state ledfx_state_of(ledger *l, int64_t id);
unsigned ledfx_attempts_of(ledger *l, int64_t id);

/* ledger_counts() agrees with a count of the table, and so does ledger_integrity_check(). */
void ledfx_assert_counts_real(struct ledfx *f);

/* ledger_counts() returns exactly these counts. */
void ledfx_assert_counts(ledger *l, uint64_t queued, uint64_t running, uint64_t retry,
                         uint64_t done, uint64_t dead, uint64_t cancelled);

/* Closes the ledger recording a clean stop, and opens it again. */
void ledfx_reopen_clean(struct ledfx *f);

/* Frees the ledger (no clean stop recorded) and opens it again: a crash after the claims
 * made were committed (ledger_commit_claims() first; ledfx_crash() forgets them). */
void ledfx_reopen(struct ledfx *f);

/* Frees the ledger as ledfx_reopen() does, without committing the claims that wait: a crash
 * of imgd at that moment. */
void ledfx_crash(struct ledfx *f);

/* The rest of a prune pass from *cursor in batches of `batch` ids; returns how many went. */
int ledfx_prune_all_from(ledger *l, int64_t cutoff_usec, int64_t *cursor, unsigned batch);

/* A whole prune pass in batches of `batch` ids; returns how many were deleted. */
int ledfx_prune_all(ledger *l, int64_t cutoff_usec, unsigned batch);

int ledfx_setup(void **state);
int ledfx_teardown(void **state);

/*
 * Runs `tests` on the engine of IMGD_TEST_LEDGER_ENGINE and, when it is SQLite, also
 * `sqlite_only` (tests of what only SQLite has: its file, its WAL, its checks at open); then
 * stops the PostgreSQL server if one was started. Returns cmocka's count of failures.
 */
int ledfx_run(const char *name, const struct CMUnitTest *tests, size_t n,
              const struct CMUnitTest *sqlite_only, size_t n_sqlite_only);

/* What each of ledfx_race()'s children runs, on its own connection: 0 if all went well. */
typedef int (*ledfx_race_fn)(ledger *l, int racer);

/* Runs fn in n child processes at once (they connect first, then start together), each on
 * a new connection to f's ledger, and asserts that each returned 0. */
void ledfx_race(struct ledfx *f, int n, ledfx_race_fn fn);
