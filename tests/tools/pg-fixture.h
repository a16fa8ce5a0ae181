/* SPDX-License-Identifier: MIT */
/*
 * pg-fixture.h - a PostgreSQL server of the test program's own, for the tests of the ledger's
 * PostgreSQL engine: Debian's server (/usr/lib/postgresql/<version>/bin) set up with initdb and
 * started with pg_ctl in a temporary directory, listening only on a Unix socket there (no TCP),
 * trust authentication for that socket, fsync on. As root (CI), initdb, pg_ctl and the server
 * run as the unprivileged user nobody (setpriv), the directory handed to it.
 *
 * One server per test program, started by the first pgfx_schema_new() and stopped (pg_ctl stop
 * -m immediate) and removed by pgfx_server_stop(), at exit, or, if the program dies without
 * either (a crash, a failed assertion that aborts), by a small reaper process that waits for
 * the program's end. Each test takes a schema of its own (pgfx_schema_new()): a conninfo whose
 * search_path is that schema.
 *
 * PostgreSQL not installed fails the test (cmocka) with a message that says to run
 * scripts/deps.sh --tests, as every tool the tests need.
 */
#pragma once

#include <stdint.h>

/* A new empty schema on this program's server (started if need be): the libpq conninfo that
 * uses it (caller frees). */
char *pgfx_schema_new(void);

/* Stops the running server (pg_ctl stop -m fast: its clients are disconnected), keeping its
 * data, and starts it again with the same settings: an outage of the database. */
void pgfx_server_down(void);
void pgfx_server_up(void);

/* Stops the server and removes its directory (nothing to do if none runs). */
void pgfx_server_stop(void);

/* Runs SQL on a connection of its own to conninfo; fails the test on an error. */
void pgfx_exec(const char *conninfo, const char *sql);

/* The first column of the first row of a query (true and false read as 1 and 0). */
int64_t pgfx_int(const char *conninfo, const char *sql);
