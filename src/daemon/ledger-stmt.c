/* SPDX-License-Identifier: MIT */
/*
 * ledger-stmt.c - the ledger's engine-neutral statement layer: the state machine
 * (ledger-jobs.c), the queries (ledger-query.c) and reconciliation (ledger-reconcile.c) are
 * written over it once, and each engine (ledger-sqlite.c, ledger-pg.c) supplies what is below
 * it: statements, their parameters and rows, and transactions (struct ledger_engine).
 *
 * A statement in use is a struct ledger_cursor on the caller's stack: the ledger and the
 * engine's statement, which the engine keeps prepared (SQLite: sqlite3_stmt; PostgreSQL: a
 * statement prepared on its connection). Parameters are bound by the letters of a type string
 * and never copied; columns are read in place (ledger-private.h's inline readers). Nothing
 * here allocates but what a row read into a struct needs.
 *
 * Transactions and group commits: ledger_tx_begin_sync(), ledger_tx_begin_read() and
 * ledger_tx_end() are the engine's; ledger_batch_begin() and ledger_batch_commit() are one
 * transaction of the engine whose transitions are savepoints (the engine's tx functions see
 * l->batch).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/ledger-private.h"

/* Statements */

struct ledger_cursor ledger_stmt_get(ledger *l, enum ledger_stmt id)
{
        assert(id < _STMT_MAX);
        if (l->engine == &ledger_engine_sqlite) {
                assert(l->stmts[id]);
                return (struct ledger_cursor){ .l = l, .sq = l->stmts[id] };
        }
        return ledger_pg_stmt_get(l, id);
}

int ledger_stmt_prepare(ledger *l, const char *sql, struct ledger_cursor *ret)
{
        return l->engine->prepare(l, sql, ret);
}

void ledger_cursor_reset(struct ledger_cursor *c)
{
        if (c->l)
                c->l->engine->reset(c);
}

int ledger_exec(ledger *l, const char *sql)
{
        return l->engine->exec(l, sql);
}

/* ledger_stmt_bind() with a va_list. */
static int stmt_bindv(ledger *l, struct ledger_cursor *c, const char *types, va_list ap)
{
        const struct ledger_engine *e = l->engine;
        int r = 0;

        assert(strlen(types) == (size_t)e->nparams(c));
        for (int i = 1; *types && r >= 0; types++, i++) {
                switch (*types) {
                case 't':
                        r = e->bind_text(l, c, i, va_arg(ap, const char *), -1);
                        break;
                case 'm': {
                        const char *s = va_arg(ap, const char *);
                        r = e->bind_text(l, c, i, s, ledger_message_len(s, LEDGER_MESSAGE_MAX));
                        break;
                }
                case 'i':
                        r = e->bind_int64(l, c, i, va_arg(ap, int64_t));
                        break;
                default:
                        assert(!"bad ledger_stmt_bind type");
                        r = ledger_error(l, -EINVAL, "bad parameter type");
                }
        }
        return r < 0 ? r : 0;
}

int ledger_stmt_bind(ledger *l, struct ledger_cursor *c, const char *types, ...)
{
        va_list ap;
        int r;

        va_start(ap, types);
        r = stmt_bindv(l, c, types, ap);
        va_end(ap);
        return r;
}

int ledger_stmt_step(ledger *l, struct ledger_cursor *c)
{
        return l->engine->step(l, c);
}

int ledger_stmt_run(ledger *l, struct ledger_cursor *c)
{
        int r = ledger_stmt_step(l, c);

        if (r > 0)
                return ledger_error(l, -EIO, "statement returned a row unexpectedly");
        return r;
}

int ledger_bind_step(ledger *l, struct ledger_cursor *c, const char *types, ...)
{
        va_list ap;
        int r;

        va_start(ap, types);
        r = stmt_bindv(l, c, types, ap);
        va_end(ap);
        if (r < 0)
                return r;
        return ledger_stmt_step(l, c);
}

/* Takes statement id, binds ap, runs it (no rows) and resets it: the number of rows it
 * changed, or a negative errno. */
static int stmt_execv(ledger *l, enum ledger_stmt id, const char *types, va_list ap)
{
        _cleanup_cursor_ struct ledger_cursor c = ledger_stmt_get(l, id);
        int r;

        r = stmt_bindv(l, &c, types, ap);
        if (r >= 0)
                r = ledger_stmt_run(l, &c);
        return r < 0 ? r : l->engine->changes(l, &c);
}

int ledger_stmt_exec(ledger *l, enum ledger_stmt id, const char *types, ...)
{
        va_list ap;
        int r;

        va_start(ap, types);
        r = stmt_execv(l, id, types, ap);
        va_end(ap);
        return r < 0 ? r : 0;
}

int ledger_stmt_changes(ledger *l, enum ledger_stmt id, const char *types, ...)
{
        va_list ap;
        int r;

        va_start(ap, types);
        r = stmt_execv(l, id, types, ap);
        va_end(ap);
        return r;
}

int ledger_stmt_insert(ledger *l, enum ledger_stmt id, int64_t *ret_id, const char *types, ...)
{
        _cleanup_cursor_ struct ledger_cursor c = ledger_stmt_get(l, id);
        int64_t new_id;
        va_list ap;
        int r;

        va_start(ap, types);
        r = stmt_bindv(l, &c, types, ap);
        va_end(ap);
        if (r >= 0)
                r = ledger_stmt_step(l, &c);
        if (r < 0)
                return r;
        if (r > 0) {
                /* The engine's SQL returned the new row's id. */
                new_id = ledger_column_int64(&c, 0);
                r = ledger_stmt_step(l, &c);
                if (r < 0)
                        return r;
                if (r > 0)
                        return ledger_error(l, -EIO, "an INSERT of one row returned more");
        } else {
                r = l->engine->changes(l, &c);
                if (r <= 0)
                        return r;
                new_id = l->engine->last_insert_id(l);
        }
        *ret_id = new_id;
        return 1;
}

/* Transactions */

int ledger_tx_begin_sync(ledger *l, bool flush)
{
        return l->engine->tx_begin_sync(l, flush);
}

int ledger_tx_begin_read(ledger *l)
{
        return l->engine->tx_begin_read(l);
}

int ledger_tx_end(ledger *l, int r)
{
        return l->engine->tx_end(l, r);
}

int ledger_batch_begin(ledger *l)
{
        int r;

        assert(l);
        assert(!l->batch);
        r = ledger_tx_begin(l);
        if (r < 0)
                return r;
        l->batch = true;
        l->batch_error = 0;
        return 0;
}

int ledger_batch_commit(ledger *l)
{
        assert(l);
        assert(l->batch);
        l->batch = false;
        /* The batch's own transaction, begun by ledger_batch_begin(): committed, or rolled
         * back when a transition made the engine abandon it. */
        return ledger_tx_end(l, l->batch_error);
}

bool ledger_in_batch(const ledger *l)
{
        return l->batch;
}

/* Rows */

int ledger_column_strdup(ledger *l, const struct ledger_cursor *c, int col, char **ret)
{
        const char *s;
        char *p;

        if (ledger_column_null(c, col)) {
                *ret = NULL;
                return 0;
        }
        s = ledger_column_text(c, col);
        if (!s)
                return ledger_error(l, -ENOMEM, "out of memory");
        p = strdup(s);
        if (!p)
                return ledger_error(l, -ENOMEM, "out of memory");
        *ret = p;
        return 0;
}

int ledger_column_sha256(ledger *l, const struct ledger_cursor *c, int col,
                         char ret[static HASH_HEX_SIZE])
{
        const char *s = ledger_column_text(c, col);
        int n = ledger_column_bytes(c, col);

        if (!s || n >= HASH_HEX_SIZE)
                return ledger_error(l, -EBADMSG, "bad sha256 in the ledger");
        memcpy(ret, s, (size_t)n + 1);
        return 0;
}

void ledger_column_recipe(const struct ledger_cursor *c, int col,
                          char ret[static VARIANT_RECIPE_SIZE])
{
        const char *s = ledger_column_null(c, col) ? NULL : ledger_column_text(c, col);
        int n = s ? ledger_column_bytes(c, col) : 0;

        if (s && n < VARIANT_RECIPE_SIZE)
                memcpy(ret, s, (size_t)n + 1);
        else
                ret[0] = '\0';
}

int ledger_column_state(ledger *l, const struct ledger_cursor *c, int col, enum job_state *ret)
{
        int s = job_state_from_name(ledger_column_text(c, col));

        if (s < 0)
                return ledger_error(l, -EBADMSG, "unknown job state in the ledger");
        *ret = s;
        return 0;
}

int ledger_read_job(ledger *l, const struct ledger_cursor *c, struct job *ret)
{
        struct job j = {
                .id = ledger_column_int64(c, 0),
                .size = (uint64_t)ledger_column_int64(c, 6),
                .mtime_ns = ledger_column_int64(c, 7),
                .ino = (uint64_t)ledger_column_int64(c, 8),
                .attempts = (unsigned)ledger_column_int64(c, 10),
                .created_usec = ledger_column_int64(c, 11),
                .updated_usec = ledger_column_int64(c, 12),
                .next_at_usec = ledger_column_int64(c, 13),
        };
        int r;

        r = ledger_column_strdup(l, c, 1, &j.watch);
        if (r < 0)
                goto fail;
        r = ledger_column_strdup(l, c, 2, &j.source_path);
        if (r < 0)
                goto fail;
        r = ledger_column_strdup(l, c, 3, &j.output_key);
        if (r < 0)
                goto fail;
        r = ledger_column_strdup(l, c, 4, &j.pipeline);
        if (r < 0)
                goto fail;
        r = ledger_column_sha256(l, c, 5, j.sha256);
        if (r < 0)
                goto fail;
        j.degraded = ledger_column_int64(c, 15) != 0;
        r = ledger_column_strdup(l, c, 16, &j.info);
        if (r < 0)
                goto fail;
        j.priority = (enum job_priority)ledger_column_int64(c, 17);
        j.fence = ledger_column_int64(c, 19);
        r = ledger_column_strdup(l, c, 18, &j.redo);
        if (r < 0)
                goto fail;
        if (!ledger_column_null(c, 20)) {
                r = job_kind_from_name(ledger_column_text(c, 20));
                if (r <= 0) {
                        r = ledger_error(l, -EBADMSG, "job %" PRId64 " has an unknown kind", j.id);
                        goto fail;
                }
                j.kind = (enum job_kind)r;
        }
        j.origin = ledger_column_int64(c, 21);
        r = ledger_column_state(l, c, 9, &j.state);
        if (r < 0)
                goto fail;
        r = ledger_column_strdup(l, c, 14, &j.last_error);
        if (r < 0)
                goto fail;
        if (!j.watch || !j.source_path || !j.output_key || !j.pipeline) {
                r = ledger_error(l, -EBADMSG, "job %" PRId64 " has a NULL column", j.id);
                goto fail;
        }
        *ret = j;
        return 0;
fail:
        job_clear(&j);
        return r;
}
