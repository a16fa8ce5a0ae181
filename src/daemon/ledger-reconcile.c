/* SPDX-License-Identifier: MIT */
/*
 * ledger-reconcile.c - what reconciliation (issue 17) asks of the ledger: the current done
 * job of each source with its outputs' recipes, in ranges of job ids (ledger_scan_done());
 * recipes adopted for outputs made before recipes were kept; reconciliation jobs queued for
 * the variants to render again; and the outputs such a job carries over from the done job
 * before it (ledger_carried_outputs(); ledger_complete() records them as the job's own).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/ledger-private.h"
#include "shared/alloc.h"

void ledger_done_sources_free(struct ledger_done_source *v, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                free(v[i].watch);
                free(v[i].source_path);
                for (size_t k = 0; k < v[i].n_outputs; k++)
                        free(v[i].outputs[k].variant);
                free(v[i].outputs);
        }
        free(v);
}

static int scan_done_locked(ledger *l, int64_t after_id, int64_t upto_id,
                            struct ledger_done_source **ret, size_t *ret_n)
{
        _cleanup_cursor_ struct ledger_cursor st = ledger_stmt_get(l, STMT_SCAN_DONE);
        struct ledger_done_source *v = NULL;
        size_t n = 0, allocated = 0;
        int r;

        r = ledger_stmt_bind(l, &st, "ii", after_id, upto_id);
        if (r < 0)
                return r;
        while ((r = ledger_stmt_step(l, &st)) > 0) {
                int64_t id = ledger_column_int64(&st, 0);
                struct ledger_done_source *src;
                struct ledger_output_recipe *o;
                size_t allocated_outputs;

                if (n == 0 || v[n - 1].id != id) {
                        if (GROW_ARRAY(v, allocated, n + 1) < 0) {
                                r = ledger_error(l, -ENOMEM, "out of memory");
                                break;
                        }
                        v[n] = (struct ledger_done_source){ .id = id };
                        n++;
                        r = ledger_column_strdup(l, &st, 1, &v[n - 1].watch);
                        if (r >= 0)
                                r = ledger_column_strdup(l, &st, 2, &v[n - 1].source_path);
                        if (r < 0)
                                break;
                }
                src = &v[n - 1];
                if (ledger_column_null(&st, 3))
                        continue; /* a done job without outputs */
                allocated_outputs = src->n_outputs;
                if (GROW_ARRAY(src->outputs, allocated_outputs, src->n_outputs + 1) < 0) {
                        r = ledger_error(l, -ENOMEM, "out of memory");
                        break;
                }
                o = &src->outputs[src->n_outputs];
                *o = (struct ledger_output_recipe){};
                r = ledger_column_strdup(l, &st, 3, &o->variant);
                if (r < 0)
                        break;
                src->n_outputs++;
                ledger_column_recipe(&st, 4, o->recipe);
        }
        if (r < 0) {
                ledger_done_sources_free(v, n);
                return r;
        }
        *ret = v;
        *ret_n = n;
        return 0;
}

int ledger_scan_done(ledger *l, int64_t after_id, int64_t upto_id, struct ledger_done_source **ret,
                     size_t *ret_n)
{
        int r, begun;

        assert(l);
        assert(ret);
        assert(ret_n);

        *ret = NULL;
        *ret_n = 0;
        begun = ledger_tx_begin_read(l);
        if (begun < 0)
                return begun;
        r = scan_done_locked(l, after_id, upto_id, ret, ret_n);
        if (begun == 0) {
                int e = ledger_tx_end(l, r);
                if (e < 0 && r >= 0) {
                        ledger_done_sources_free(*ret, *ret_n);
                        *ret = NULL;
                        *ret_n = 0;
                        r = e;
                }
        }
        return r;
}

int ledger_id_range(ledger *l, int64_t *ret_min, int64_t *ret_max)
{
        _cleanup_cursor_ struct ledger_cursor st = ledger_stmt_get(l, STMT_ID_RANGE);
        int r = ledger_stmt_step(l, &st);

        if (r < 0)
                return r;
        *ret_min = r > 0 ? ledger_column_int64(&st, 0) : 0;
        *ret_max = r > 0 ? ledger_column_int64(&st, 1) : 0;
        return 0;
}

int ledger_count_background(ledger *l, uint64_t *ret_n)
{
        _cleanup_cursor_ struct ledger_cursor st = ledger_stmt_get(l, STMT_COUNT_BACKGROUND);
        int r = ledger_stmt_step(l, &st);

        if (r < 0)
                return r;
        *ret_n = r > 0 ? (uint64_t)ledger_column_int64(&st, 0) : 0;
        return 0;
}

int ledger_count_background_waiting(ledger *l, uint64_t *ret_n)
{
        _cleanup_cursor_ struct ledger_cursor st =
                ledger_stmt_get(l, STMT_COUNT_BACKGROUND_WAITING);
        int r = ledger_stmt_step(l, &st);

        if (r < 0)
                return r;
        *ret_n = r > 0 ? (uint64_t)ledger_column_int64(&st, 0) : 0;
        return 0;
}

int ledger_adopt_recipe(ledger *l, int64_t id, const char *variant, const char *recipe)
{
        assert(l);
        assert(variant);
        assert(recipe);

        return LEDGER_WRITE(l,
                            ledger_stmt_changes(l, STMT_ADOPT_RECIPE, "itt", id, variant, recipe));
}

static int reconcile_locked(ledger *l, int64_t id, const char *redo, int64_t now_usec,
                            int64_t *ret_id)
{
        int64_t new_id = 0;
        int r;

        /* Nodes reconciling the same source, and an upload of it, take turns (as
         * ledger_enqueue()): the insert checks that job id is still its source's current done
         * job in a snapshot taken after the lock, so the second finds the first's job. */
        r = ledger_lock_source_of_locked(l, id);
        if (r < 0)
                return r;
        r = ledger_stmt_insert(l, STMT_RECONCILE, &new_id, "iti", id, redo, now_usec);
        if (r <= 0)
                return r;
        ledger_wake_locked(l);
        if (ret_id)
                *ret_id = new_id;
        return 1;
}

int ledger_reconcile(ledger *l, int64_t id, const char *redo, int64_t now_usec, int64_t *ret_id)
{
        assert(l);
        assert(redo);

        return LEDGER_WRITE(l, reconcile_locked(l, id, redo, now_usec, ret_id));
}

int ledger_carry_locked(ledger *l, int64_t id)
{
        return ledger_stmt_exec(l, STMT_CARRY, "i", id);
}

int ledger_carried_outputs(ledger *l, int64_t id, struct job_output **ret, size_t *ret_n)
{
        _cleanup_cursor_ struct ledger_cursor st = ledger_stmt_get(l, STMT_CARRIED);
        struct job_detail d = {};
        int r;

        assert(l);
        assert(ret);
        assert(ret_n);

        r = ledger_stmt_bind(l, &st, "i", id);
        if (r >= 0)
                r = ledger_read_outputs(l, &st, &d);
        if (r < 0) {
                job_outputs_free(d.outputs, d.n_outputs);
                return r;
        }
        *ret = d.outputs;
        *ret_n = d.n_outputs;
        return 0;
}
