/* SPDX-License-Identifier: MIT */
/*
 * ledger-notify.c - PostgreSQL's LISTEN/NOTIFY on the ledger's connection (issue 18): nodes
 * woken when a job becomes claimable, and job events told to the other nodes.
 *
 * Promises:
 * - A transition that makes a job claimable marks its transaction (ledger_wake_locked());
 *   ledger-pg.c then sends NOTIFY imgd_jobs with the COMMIT, in one round trip, so the
 *   notification is delivered if and only if the transaction commits; a group commit
 *   notifies once (the server folds equal notifications of one transaction), and a savepoint
 *   rolled back forgets its mark, as the server forgets its NOTIFY.
 * - Notifications are the database's, not a schema's: the channels are named after the
 *   ledger's schema ("imgd_jobs:<schema>"), so that ledgers in two schemas of one database
 *   (two clusters, or tests) do not hear each other.
 * - The channels listened on are remembered in l->listening and LISTENed again on each new
 *   connection (ledger_notify_session(), from ledger-pg.c's session set-up); the connection's
 *   generation counts new connections, so that the caller watches the new socket (which may
 *   have the old one's number). Notifications sent while there was no connection are lost:
 *   the caller looks for work after a new connection, and polls as a backstop.
 * - ledger_notifications() never waits: libpq's socket is non-blocking, PQconsumeInput()
 *   reads what is there, and PQnotifies() also returns what arrived with the answers of other
 *   statements (which the socket's readiness no longer shows).
 */
#include <errno.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/ledger-private.h"

static const char *const channel_names[_LEDGER_CHANNEL_MAX] = {
        [LEDGER_CHANNEL_JOBS] = "imgd_jobs",
        [LEDGER_CHANNEL_EVENTS] = "imgd_events",
};

const char *ledger_channel_name(enum ledger_channel c)
{
        return c < _LEDGER_CHANNEL_MAX ? channel_names[c] : NULL;
}

/* Which channel of l's schema `name` is, or -EINVAL. */
static int channel_from_name(const ledger *l, const char *name)
{
        for (size_t i = 0; i < _LEDGER_CHANNEL_MAX; i++)
                if (strcmp(l->channels[i], name) == 0)
                        return (int)i;
        return -EINVAL;
}

/* Runs one command on conn: 0, or a negative errno with the server's message. */
static int run(ledger *l, PGconn *conn, const char *sql)
{
        PGresult *res = PQexec(conn, sql);
        ExecStatusType st = PQresultStatus(res);
        int r = 0;

        if (!res || (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)) {
                const char *m = res ? PQresultErrorMessage(res) : PQerrorMessage(conn);

                r = ledger_error(l, PQstatus(conn) == CONNECTION_OK ? -EIO : -ENOTCONN,
                                 "%s: %.40s: %.*s", l->path ? l->path : "PostgreSQL", sql,
                                 (int)strcspn(m ? m : "", "\n"), m ? m : "");
        }
        PQclear(res);
        return r;
}

static int listen_on(ledger *l, PGconn *conn, enum ledger_channel c)
{
        char *id = PQescapeIdentifier(conn, l->channels[c], strlen(l->channels[c]));
        char sql[160];

        if (!id)
                return ledger_error(l, -ENOMEM, "out of memory");
        snprintf(sql, sizeof sql, "LISTEN %s", id);
        PQfreemem(id);
        return run(l, conn, sql);
}

int ledger_notify_init(ledger *l)
{
        _cleanup_cursor_ struct ledger_cursor st = {};
        PGconn *conn = (PGconn *)ledger_pg_conn(l);
        const char *schema;
        char *id;
        int r;

        r = ledger_stmt_prepare(l, "SELECT current_schema()", &st);
        if (r < 0)
                return r;
        r = ledger_stmt_step(l, &st);
        if (r < 0)
                return r;
        schema = r > 0 ? ledger_column_text(&st, 0) : NULL;
        /* A channel's name is an identifier: 63 bytes at most, the schema's cut to fit. */
        for (size_t c = 0; c < _LEDGER_CHANNEL_MAX; c++)
                snprintf(l->channels[c], sizeof l->channels[c], "%s:%.40s", channel_names[c],
                         schema ? schema : "");
        id = conn ? PQescapeIdentifier(conn, l->channels[LEDGER_CHANNEL_JOBS],
                                       strlen(l->channels[LEDGER_CHANNEL_JOBS]))
                  : NULL;
        if (!id)
                return ledger_error(l, -ENOMEM, "out of memory");
        snprintf(l->notify_jobs_sql, sizeof l->notify_jobs_sql, "NOTIFY %s; ", id);
        PQfreemem(id);
        return 0;
}

int ledger_notify_session(ledger *l)
{
        PGconn *conn = (PGconn *)ledger_pg_conn(l);
        int r = 0;

        l->generation++;
        for (size_t c = 0; conn && c < _LEDGER_CHANNEL_MAX && r >= 0; c++)
                if (l->listening & (1u << c))
                        r = listen_on(l, conn, (enum ledger_channel)c);
        return r;
}

const char *ledger_notify_commit_sql(ledger *l, bool wake)
{
        return wake ? l->notify_jobs_sql : "";
}

void ledger_notify_savepoint_end(ledger *l, bool released)
{
        if (released && l->wake_sp)
                l->wake = true;
        l->wake_sp = false;
}

/* The connection, made again first if it broke (outside transactions). */
static int ledger_notify_connect(ledger *l, PGconn **ret)
{
        int r;

        if (!ledger_pg_conn(l)) {
                /* An empty read-only transaction makes it again (ledger-pg.c: pg_ensure()). */
                r = ledger_tx_begin_read(l);
                if (r == 0)
                        r = ledger_tx_end(l, 0);
                if (r < 0)
                        return r;
        }
        *ret = (PGconn *)ledger_pg_conn(l);
        return *ret ? 0 : ledger_error(l, -ENOTCONN, "%s: no connection to the server", l->path);
}

int ledger_listen(ledger *l, enum ledger_channel c)
{
        PGconn *conn;

        assert(l);
        assert(c < _LEDGER_CHANNEL_MAX);
        if (!l->pg)
                return -EOPNOTSUPP;
        l->listening |= 1u << c;
        conn = (PGconn *)ledger_pg_conn(l);
        if (!conn)
                return ledger_error(l, -ENOTCONN, "%s: no connection to the server", l->path);
        return listen_on(l, conn, c);
}

int ledger_notify_fd(ledger *l, uint64_t *ret_generation)
{
        PGconn *conn;
        int fd;

        assert(l);
        if (!l->pg)
                return -EOPNOTSUPP;
        conn = (PGconn *)ledger_pg_conn(l);
        fd = conn ? PQsocket(conn) : -1;
        if (fd < 0)
                return -ENOTCONN;
        if (ret_generation)
                *ret_generation = l->generation;
        return fd;
}

int ledger_notifications(ledger *l, ledger_notify_fn fn, void *userdata)
{
        PGconn *conn;
        PGnotify *n;
        int count = 0, pid;

        assert(l);
        assert(!l->batch && !l->in_write);
        if (!l->pg)
                return -EOPNOTSUPP;
        conn = (PGconn *)ledger_pg_conn(l);
        if (!conn)
                return ledger_error(l, -ENOTCONN, "%s: no connection to the server", l->path);
        if (PQconsumeInput(conn) == 0) {
                char m[256];

                snprintf(m, sizeof m, "%s", PQerrorMessage(conn));
                m[strcspn(m, "\n")] = '\0';
                return ledger_error(l, PQstatus(conn) == CONNECTION_OK ? -EIO : -ENOTCONN, "%s: %s",
                                    l->path, m);
        }
        if (PQstatus(conn) != CONNECTION_OK)
                /* The server ended the session: made again at the next transaction. */
                return ledger_error(l, -ENOTCONN, "%s: the connection was closed", l->path);
        pid = PQbackendPID(conn);
        while ((n = PQnotifies(conn))) {
                int c = channel_from_name(l, n->relname);

                if (c >= 0 && (l->listening & (1u << c))) {
                        fn((enum ledger_channel)c, n->extra ? n->extra : "", n->be_pid == pid,
                           userdata);
                        count++;
                }
                PQfreemem(n);
        }
        return count;
}

int ledger_notify(ledger *l, enum ledger_channel c, const char *const *payloads, size_t n)
{
        _cleanup_free_ char *sql = NULL;
        size_t size = 0, len = 0;
        PGconn *conn;
        int r;

        assert(l);
        assert(c < _LEDGER_CHANNEL_MAX);
        assert(payloads || n == 0);
        assert(!l->batch && !l->in_write);
        if (!l->pg)
                return -EOPNOTSUPP;
        if (n == 0)
                return 0;
        for (size_t i = 0; i < n; i++) {
                if (strlen(payloads[i]) > LEDGER_NOTIFY_PAYLOAD_MAX)
                        return ledger_error(l, -E2BIG, "notification of %zu bytes: the most is %d",
                                            strlen(payloads[i]), LEDGER_NOTIFY_PAYLOAD_MAX);
                /* Each quote may double, and E'' and the call around it. */
                size += 2 * strlen(payloads[i]) + 128;
        }
        r = ledger_notify_connect(l, &conn);
        if (r < 0)
                return r;
        sql = malloc(size + 1);
        if (!sql)
                return ledger_error(l, -ENOMEM, "out of memory");
        for (size_t i = 0; i < n; i++) {
                char *lit = PQescapeLiteral(conn, payloads[i], strlen(payloads[i]));
                int k;

                if (!lit)
                        return ledger_error(l, -ENOMEM, "%s: escape a notification: %s", l->path,
                                            PQerrorMessage(conn));
                k = snprintf(sql + len, size + 1 - len, "SELECT pg_notify('%s', %s);",
                             l->channels[c], lit);
                PQfreemem(lit);
                if (k < 0 || (size_t)k > size - len)
                        return ledger_error(l, -EIO, "notification too long");
                len += (size_t)k;
        }
        return run(l, conn, sql);
}
