/* SPDX-License-Identifier: MIT */
/*
 * ledger-pg.c - the ledger's PostgreSQL engine (libpq): the connection, the server's errors
 * turned into a negative errno and a message, statements prepared on the connection,
 * transactions and group commits. ledger-pg-schema.c has its schema and SQL.
 *
 * Promises:
 * - The connection string is libpq's own (keywords or a URI, and libpq's environment:
 *   PGHOST, PGPASSFILE, ...). It is never logged or put in a message: the ledger is named by
 *   the server, database and user the connection reached (l->path), never with a password.
 * - Every transition is one transaction (BEGIN ... COMMIT, READ COMMITTED); a transition that
 *   reads a job before it changes it locks its row first (STMT_JOB_STATE: FOR UPDATE), so two
 *   nodes never both move one job. A claim passes over rows other transactions hold (FOR
 *   UPDATE SKIP LOCKED) and commits without waiting for the server's flush (SET LOCAL
 *   synchronous_commit = off): as on SQLite, a crash of the server can only lose the claim,
 *   which leaves the job queued; every other commit waits for it. Reads that must see one
 *   snapshot (ledger_get()) run in a REPEATABLE READ, READ ONLY transaction.
 * - Group commits: one transaction, each transition a savepoint (SAVEPOINT tx), released on
 *   success and rolled back to on failure. A failure that loses the transaction (the
 *   connection) makes the rest of the batch fail with it, as on SQLite.
 * - Statements are prepared on the connection at their first use (PREPARE imgd_<n>), their
 *   parameters sent as text (a message cut to its length), their rows read as text. A
 *   statement's result is held until its cursor is reset.
 * - A connection that broke is made again (and its statements prepared again) when the next
 *   transaction or statement outside one begins; the failure itself is -ENOTCONN.
 */
#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/ledger-private.h"
#include "shared/time-util.h"

/* The most parameters a statement of ledger_pg_stmt_sql[] has (STMT_INSERT_OUTPUT: 10). */
#define PG_MAX_PARAMS 12

struct ledger_pg_stmt {
        char name[16];   /* the prepared statement's name; "" for one prepared for one use */
        const char *sql; /* ledger_pg_stmt_sql[], or (one use) a copy owned here */
        int nparams;
        enum ledger_stmt id;
        const char *values[PG_MAX_PARAMS];
        int lengths[PG_MAX_PARAMS];
        int formats[PG_MAX_PARAMS];
        char ints[PG_MAX_PARAMS][24]; /* the text of the int64 parameters */
        PGresult *res;                /* the result of the run, until the reset */
        int row, nrows;
};

struct ledger_pg {
        PGconn *conn;
        bool prepared[_STMT_MAX]; /* on this connection */
        bool in_tx;               /* inside a transaction begun here */
        int64_t stall_usec;       /* idle_in_transaction_session_timeout; 0: not set */
        struct ledger_pg_stmt stmts[_STMT_MAX];
        char open_check[256];
};

static void pg_notice(void *arg, const char *message)
{
        /* Notices (a NOTICE of CREATE ... IF NOT EXISTS) are not errors: the library keeps
         * quiet, as every module of the ledger does. */
}

/* Errors */

/* The server's SQLSTATE as a negative errno. */
static int pg_errno_from_sqlstate(const char *state)
{
        if (!state || strlen(state) != 5)
                return -EIO;
        if (strncmp(state, "08", 2) == 0 || strncmp(state, "57P", 3) == 0)
                return -ENOTCONN; /* connection exception, shut down, cannot connect now */
        if (strcmp(state, "53100") == 0)
                return -ENOSPC; /* disk_full */
        if (strcmp(state, "53200") == 0)
                return -ENOMEM;
        if (strncmp(state, "53", 2) == 0)
                return -EAGAIN; /* too many connections, ... */
        if (strcmp(state, "58030") == 0)
                return -EIO; /* io_error */
        if (strncmp(state, "23", 2) == 0)
                return -EEXIST; /* a constraint */
        if (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0 ||
            strcmp(state, "55P03") == 0)
                return -EBUSY; /* serialization failure, deadlock, lock not available */
        if (strcmp(state, "25006") == 0)
                return -EROFS; /* read-only transaction: a standby */
        if (strcmp(state, "57014") == 0)
                return -ETIMEDOUT; /* statement_timeout */
        if (strcmp(state, "42501") == 0)
                return -EACCES;
        if (strcmp(state, "3F000") == 0)
                return -ENOENT; /* no such schema */
        return -EIO;
}

/* A message of the connection's (libpq's) on one line. */
static void pg_conn_message(const PGconn *conn, char *buf, size_t size)
{
        const char *m = conn ? PQerrorMessage(conn) : NULL;

        snprintf(buf, size, "%s", m && *m ? m : "no connection to the server");
        for (char *p = buf; *p; p++)
                if (*p == '\n' || *p == '\t')
                        *p = *(p + 1) ? ' ' : '\0';
}

/* The server answered a command: it is reachable (ledger_unreachable() is NULL again). */
static void pg_reached(ledger *l)
{
        l->unreachable_since_usec = 0;
}

/* The command failed with r: -ENOTCONN (its message in l->errmsg) makes the server
 * unreachable for ledger_unreachable() until it answers again; any other failure is an
 * answer. Returns r. */
static int pg_note_reach(ledger *l, int r)
{
        if (r != -ENOTCONN) {
                pg_reached(l);
                return r;
        }
        snprintf(l->unreachable, sizeof l->unreachable, "%s", l->errmsg);
        if (l->unreachable_since_usec == 0)
                l->unreachable_since_usec = wall_usec();
        return r;
}

/*
 * Records the failure of a command (res may be NULL: libpq could not send it) and returns it
 * as a negative errno. A failure of the server's storage names the database and is kept for
 * ledger_write_failure() by the transaction that saw it; a failure to reach the server names
 * it too, and is kept for ledger_unreachable().
 */
static int pg_error(ledger *l, const PGresult *res)
{
        const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
        const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
        const char *detail = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL) : NULL;
        char m[sizeof l->errmsg];
        int r;

        if (!state && PQstatus(l->pg->conn) == CONNECTION_BAD) {
                pg_conn_message(l->pg->conn, m, sizeof m);
                return pg_note_reach(l, ledger_error(l, -ENOTCONN, "%s: %s", l->path, m));
        }
        r = pg_errno_from_sqlstate(state);
        if (!primary) {
                pg_conn_message(l->pg->conn, m, sizeof m);
                primary = m;
        }
        if (ledger_storage_errno(-r) || r == -ENOTCONN)
                return pg_note_reach(l, ledger_error(l, r, "%s: %s%s%s", l->path, primary,
                                                     detail ? ": " : "", detail ? detail : ""));
        return pg_note_reach(
                l, ledger_error(l, r, "%s%s%s", primary, detail ? ": " : "", detail ? detail : ""));
}

/* Whether a command's result is a success. */
static bool pg_ok(const PGresult *res)
{
        ExecStatusType s = PQresultStatus(res);

        return res && (s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK);
}

/* The connection */

/* What every connection is set to. */
static int pg_session(ledger *l)
{
        PGresult *res;
        int r = 0;

        PQsetNoticeProcessor(l->pg->conn, pg_notice, NULL);
        res = PQexec(l->pg->conn, "SET client_min_messages = warning");
        if (!pg_ok(res))
                r = pg_error(l, res);
        PQclear(res);
        if (r >= 0 && l->pg->stall_usec > 0) {
                char sql[96];

                snprintf(sql, sizeof sql, "SET idle_in_transaction_session_timeout = %" PRId64,
                         (l->pg->stall_usec + 999) / 1000);
                res = PQexec(l->pg->conn, sql);
                if (!pg_ok(res))
                        r = pg_error(l, res);
                PQclear(res);
        }
        memset(l->pg->prepared, 0, sizeof l->pg->prepared);
        if (r < 0)
                return r;
        /* The channels listened on before the connection broke, listened on again. */
        return ledger_notify_session(l);
}

struct pg_conn *ledger_pg_conn(ledger *l)
{
        return l->pg && PQstatus(l->pg->conn) == CONNECTION_OK ? l->pg->conn : NULL;
}

/* Makes the connection again when it broke, outside transactions only. */
static int pg_ensure(ledger *l)
{
        if (PQstatus(l->pg->conn) == CONNECTION_OK)
                return 0;
        if (l->pg->in_tx || l->batch)
                return pg_error(l, NULL);
        PQreset(l->pg->conn);
        if (PQstatus(l->pg->conn) != CONNECTION_OK)
                return pg_error(l, NULL);
        return pg_session(l);
}

/* Statements */

/* The highest $n in sql: the statement's number of parameters. */
static int count_params(const char *sql)
{
        int n = 0;

        for (const char *p = sql; (p = strchr(p, '$'));) {
                char *end;
                long k = strtol(++p, &end, 10);

                if (end != p && k > n)
                        n = (int)k;
        }
        return n;
}

struct ledger_cursor ledger_pg_stmt_get(ledger *l, enum ledger_stmt id)
{
        return (struct ledger_cursor){ .l = l, .pg = &l->pg->stmts[id] };
}

static int pg_bind_text(ledger *l, struct ledger_cursor *c, int i, const char *s, int len)
{
        struct ledger_pg_stmt *st = c->pg;

        assert(i >= 1 && i <= st->nparams);
        st->values[i - 1] = s;
        /* A string cut to a length goes as binary: text's binary form is its bytes. */
        st->formats[i - 1] = s && len >= 0 ? 1 : 0;
        st->lengths[i - 1] = s && len >= 0 ? len : 0;
        return 0;
}

static int pg_bind_int64(ledger *l, struct ledger_cursor *c, int i, int64_t v)
{
        struct ledger_pg_stmt *st = c->pg;

        assert(i >= 1 && i <= st->nparams);
        snprintf(st->ints[i - 1], sizeof st->ints[i - 1], "%" PRId64, v);
        st->values[i - 1] = st->ints[i - 1];
        st->formats[i - 1] = 0;
        st->lengths[i - 1] = 0;
        return 0;
}

/* Runs the statement with its parameters; its rows wait in st->res. */
static int pg_run(ledger *l, struct ledger_pg_stmt *st)
{
        PGresult *res;
        int r;

        if (!l->pg->in_tx && !l->batch) {
                r = pg_ensure(l);
                if (r < 0)
                        return r;
        }
        if (st->name[0] && !l->pg->prepared[st->id]) {
                res = PQprepare(l->pg->conn, st->name, st->sql, 0, NULL);
                if (!pg_ok(res)) {
                        r = pg_error(l, res);
                        PQclear(res);
                        return r;
                }
                PQclear(res);
                l->pg->prepared[st->id] = true;
        }
        if (st->name[0])
                res = PQexecPrepared(l->pg->conn, st->name, st->nparams, st->values, st->lengths,
                                     st->formats, 0);
        else
                res = PQexecParams(l->pg->conn, st->sql, st->nparams, NULL, st->values, st->lengths,
                                   st->formats, 0);
        if (!pg_ok(res)) {
                r = pg_error(l, res);
                PQclear(res);
                return r;
        }
        pg_reached(l);
        st->res = res;
        st->nrows = PQntuples(res);
        st->row = -1;
        return 0;
}

static int pg_step(ledger *l, struct ledger_cursor *c)
{
        struct ledger_pg_stmt *st = c->pg;

        if (!st->res) {
                int r = pg_run(l, st);
                if (r < 0)
                        return r;
        }
        if (st->row < st->nrows)
                st->row++;
        return st->row < st->nrows ? 1 : 0;
}

static int pg_changes(ledger *l, struct ledger_cursor *c)
{
        const char *n = c->pg->res ? PQcmdTuples(c->pg->res) : "";

        return *n ? atoi(n) : 0;
}

static int64_t pg_last_insert_id(ledger *l)
{
        /* Every INSERT of ledger_pg_stmt_sql[] that needs its id returns it (RETURNING id). */
        assert(!"PostgreSQL's inserts return their id");
        return 0;
}

static int pg_nparams(const struct ledger_cursor *c)
{
        return c->pg->nparams;
}

static void pg_reset(struct ledger_cursor *c)
{
        struct ledger_pg_stmt *st = c->pg;

        if (!st)
                return;
        PQclear(st->res);
        st->res = NULL;
        st->row = st->nrows = 0;
        memset(st->values, 0, sizeof st->values);
        if (c->once) {
                free((char *)st->sql);
                free(st);
                c->pg = NULL;
        }
}

static int pg_prepare(ledger *l, const char *sql, struct ledger_cursor *ret)
{
        struct ledger_pg_stmt *st = calloc(1, sizeof *st);

        if (!st || !(st->sql = strdup(sql))) {
                free(st);
                return ledger_error(l, -ENOMEM, "out of memory");
        }
        st->nparams = count_params(sql);
        assert(st->nparams <= PG_MAX_PARAMS);
        *ret = (struct ledger_cursor){ .l = l, .pg = st, .once = true };
        return 0;
}

static int pg_exec(ledger *l, const char *sql)
{
        PGresult *res;
        int r = 0;

        if (!l->pg->in_tx && !l->batch) {
                r = pg_ensure(l);
                if (r < 0)
                        return r;
        }
        res = PQexec(l->pg->conn, sql);
        if (!pg_ok(res))
                r = pg_error(l, res);
        else
                pg_reached(l);
        PQclear(res);
        return r;
}

/* Transactions */

/* Whether the connection is inside a transaction that can go on (or be rolled back to a
 * savepoint). */
static bool pg_tx_alive(ledger *l)
{
        PGTransactionStatusType t = PQtransactionStatus(l->pg->conn);

        return PQstatus(l->pg->conn) == CONNECTION_OK &&
               (t == PQTRANS_INTRANS || t == PQTRANS_INERROR);
}

static int pg_tx_begin_sync(ledger *l, bool flush)
{
        int r;

        if (l->batch) {
                l->wake_sp = false;
                return l->batch_error < 0 ? l->batch_error : pg_exec(l, "SAVEPOINT tx");
        }
        r = pg_ensure(l);
        if (r < 0)
                return r;
        r = pg_exec(l, flush ? "BEGIN" : "BEGIN; SET LOCAL synchronous_commit = off");
        if (r < 0) {
                if (PQtransactionStatus(l->pg->conn) != PQTRANS_IDLE)
                        (void)pg_exec(l, "ROLLBACK");
                return r;
        }
        l->pg->in_tx = true;
        l->in_write = true;
        return 0;
}

static int pg_tx_begin_read(ledger *l)
{
        int r;

        if (l->batch)
                return 1; /* the batch's transaction, with its own writes */
        r = pg_ensure(l);
        if (r < 0)
                return r;
        r = pg_exec(l, "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY");
        if (r < 0)
                return r;
        l->pg->in_tx = true;
        return 0;
}

static int pg_savepoint_end(ledger *l, int r)
{
        if (r >= 0) {
                int k = pg_exec(l, "RELEASE SAVEPOINT tx");
                if (k >= 0) {
                        ledger_notify_savepoint_end(l, true);
                        return r;
                }
                r = k;
        }
        ledger_notify_savepoint_end(l, false);
        if (!pg_tx_alive(l) || pg_exec(l, "ROLLBACK TO SAVEPOINT tx; RELEASE SAVEPOINT tx") < 0) {
                char m[sizeof l->errmsg];

                /* The batch's transaction is lost: the rest of the batch fails with it. */
                snprintf(m, sizeof m, "%s", l->errmsg);
                l->batch_error = r;
                ledger_error(l, r, "%s", m);
        }
        return r;
}

static int pg_tx_end(ledger *l, int r)
{
        bool wrote = l->in_write, wake = l->wake;

        if (l->batch)
                return pg_savepoint_end(l, r);

        l->in_write = false;
        l->pg->in_tx = false;
        l->wake = false;
        if (r >= 0) {
                /* Other nodes are woken by the commit itself: NOTIFY in the transaction, sent
                 * with the COMMIT in one round trip (delivered only if it commits). */
                char sql[96];
                PGresult *res;
                int k = 0;

                snprintf(sql, sizeof sql, "%sCOMMIT", ledger_notify_commit_sql(l, wake));
                res = PQexec(l->pg->conn, sql);

                if (!pg_ok(res)) {
                        k = pg_error(l, res);
                } else {
                        pg_reached(l);
                        if (strcmp(PQcmdStatus(res), "COMMIT") != 0)
                                /* The server ends a failed transaction with a rollback. */
                                k = ledger_error(l, -EIO, "the transaction was rolled back");
                }
                PQclear(res);
                if (k >= 0) {
                        if (wrote)
                                l->write_failed_since_usec = 0;
                        return r;
                }
                r = k;
        }
        if (wrote && ledger_storage_errno(-r)) {
                snprintf(l->write_failure, sizeof l->write_failure, "%s", l->errmsg);
                if (l->write_failed_since_usec == 0)
                        l->write_failed_since_usec = wall_usec();
        }
        if (PQstatus(l->pg->conn) == CONNECTION_OK &&
            PQtransactionStatus(l->pg->conn) != PQTRANS_IDLE) {
                PGresult *res = PQexec(l->pg->conn, "ROLLBACK");
                PQclear(res);
        }
        return r;
}

/* Maintenance */

static int pg_integrity_check(ledger *l)
{
        /* The server checks its own pages (data checksums, amcheck); the ledger checks what
         * it keeps itself. */
        return ledger_counts_check(l);
}

static int pg_close(ledger *l, bool clean)
{
        struct ledger_pg *pg = l->pg;

        if (!pg)
                return 0;
        for (size_t i = 0; i < _STMT_MAX; i++)
                PQclear(pg->stmts[i].res);
        PQfinish(pg->conn);
        free(pg);
        l->pg = NULL;
        return 0;
}

const struct ledger_engine ledger_engine_pg = {
        .name = "postgresql",
        .param = '$',
        .bind_text = pg_bind_text,
        .bind_int64 = pg_bind_int64,
        .step = pg_step,
        .changes = pg_changes,
        .last_insert_id = pg_last_insert_id,
        .nparams = pg_nparams,
        .reset = pg_reset,
        .prepare = pg_prepare,
        .exec = pg_exec,
        .tx_begin_sync = pg_tx_begin_sync,
        .tx_begin_read = pg_tx_begin_read,
        .tx_end = pg_tx_end,
        .check_files = NULL,
        .integrity_check = pg_integrity_check,
        .close = pg_close,
};

/* Columns: text, as the server sent them. */

int64_t ledger_pg_column_int64(const struct ledger_pg_stmt *st, int col)
{
        const char *v;

        if (PQgetisnull(st->res, st->row, col))
                return 0;
        v = PQgetvalue(st->res, st->row, col);
        if ((v[0] == 't' || v[0] == 'f') && v[1] == '\0')
                return v[0] == 't'; /* a boolean */
        return strtoll(v, NULL, 10);
}

const char *ledger_pg_column_text(const struct ledger_pg_stmt *st, int col)
{
        return PQgetisnull(st->res, st->row, col) ? NULL : PQgetvalue(st->res, st->row, col);
}

int ledger_pg_column_bytes(const struct ledger_pg_stmt *st, int col)
{
        return PQgetlength(st->res, st->row, col);
}

/* Opening */

/* Names the database the connection reached, for messages: never with a password. */
static int pg_describe(ledger *l)
{
        PGconn *conn = l->pg->conn;
        const char *host = PQhost(conn), *port = PQport(conn);

        if (asprintf(&l->path, "postgresql://%s@%s%s%s/%s", PQuser(conn),
                     host && *host ? host : "localhost", port && *port ? ":" : "", port ? port : "",
                     PQdb(conn)) < 0) {
                l->path = NULL;
                return -ENOMEM;
        }
        return 0;
}

static int pg_open(ledger *l, const char *conninfo)
{
        const char *const keys[] = { "dbname", "fallback_application_name", NULL };
        const char *const values[] = { conninfo, "imgd", NULL };
        struct ledger_pg *pg = l->pg;
        int64_t version = 0;
        int r;

        pg->conn = PQconnectdbParams(keys, values, 1);
        if (!pg->conn)
                return ledger_error(l, -ENOMEM, "out of memory");
        if (PQstatus(pg->conn) != CONNECTION_OK) {
                char m[sizeof l->errmsg];

                pg_conn_message(pg->conn, m, sizeof m);
                return ledger_error(l, -ENOTCONN, "cannot connect to PostgreSQL: %s", m);
        }
        r = pg_describe(l);
        if (r < 0)
                return ledger_error(l, r, "out of memory");
        for (size_t i = 0; i < _STMT_MAX; i++) {
                struct ledger_pg_stmt *st = &pg->stmts[i];

                snprintf(st->name, sizeof st->name, "imgd_%zu", i);
                st->id = (enum ledger_stmt)i;
                st->sql = ledger_pg_stmt_sql[i];
                st->nparams = count_params(st->sql);
                assert(st->nparams <= PG_MAX_PARAMS);
        }
        r = pg_session(l);
        if (r < 0)
                return r;
        r = ledger_pg_migrate(l);
        if (r < 0)
                return r;
        r = ledger_pg_schema_version(l, &version);
        if (r < 0)
                return r;
        r = ledger_notify_init(l);
        if (r < 0)
                return r;
        snprintf(pg->open_check, sizeof pg->open_check,
                 "PostgreSQL %d.%d, schema version %" PRId64 " (the server checks its own files)",
                 PQserverVersion(pg->conn) / 10000, PQserverVersion(pg->conn) % 10000, version);
        l->open_check = pg->open_check;
        return 0;
}

/* Not named ledger_freep: that name is left free for ledger.h. */
static void free_ledgerp(ledger **l)
{
        ledger_free(*l);
}

int ledger_pg_open(const char *conninfo, int64_t stall_usec, ledger **ret, char **ret_error)
{
        _cleanup_(free_ledgerp) ledger *l = NULL;
        int r;

        assert(conninfo);
        assert(ret);

        l = calloc(1, sizeof *l);
        if (!l)
                return -ENOMEM;
        l->engine = &ledger_engine_pg;
        l->pg = calloc(1, sizeof *l->pg);
        if (!l->pg)
                return -ENOMEM;
        l->pg->stall_usec = stall_usec;
        r = pg_open(l, conninfo);
        if (r < 0) {
                if (ret_error && asprintf(ret_error, "%s%s%s", l->path ? l->path : "",
                                          l->path ? ": " : "", l->errmsg) < 0)
                        *ret_error = NULL;
                return r;
        }
        *ret = TAKE_PTR(l);
        return 0;
}
