/* SPDX-License-Identifier: MIT */
/*
 * prune.c - the pruning of old finished jobs, in batches; see prune.h.
 */
#include "daemon/prune.h"
#include "shared/log.h"
#include "shared/time-util.h"

uint64_t prune_step(struct prune_pass *p, ledger *l, unsigned days, int64_t now_usec)
{
        uint64_t next = PRUNE_USEC;
        int k;

        if (days == 0) {
                p->cursor = 0; /* turned off by a reload: a later pass starts over */
                return next;
        }
        if (p->cursor == 0) {
                p->cutoff_usec = now_usec - (int64_t)days * 86400 * (int64_t)USEC_PER_SEC;
                p->total = 0;
        }
        k = ledger_prune(l, p->cutoff_usec, &p->cursor, PRUNE_BATCH);
        if (k < 0) {
                log_warning_errno(k, "ledger: prune: %s", ledger_errmsg(l));
                p->cursor = 0; /* the next pass starts over */
        } else {
                p->total += k;
                if (p->cursor != 0)
                        next = PRUNE_PAUSE_USEC;
                else if (p->total > 0)
                        log_info("pruned %d finished job(s) older than %u days", p->total, days);
        }
        return next;
}
