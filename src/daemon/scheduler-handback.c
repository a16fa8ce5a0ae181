/* SPDX-License-Identifier: MIT */
/*
 * scheduler-handback.c - jobs handed back to the ledger (running -> queued, no attempt used)
 * and completions it could not record at once. When the ledger cannot write (its disk full,
 * say), the job stays the scheduler's, kept in `handbacks` and tried again by a timer with a
 * backoff (HANDBACK_MIN_USEC, doubling up to HANDBACK_MAX_USEC), rather than left to its
 * lease (whose expiry would use an attempt). At stop, every running job is handed back and
 * every kept one tried once more; what still fails is requeued by the next start's recovery.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

#include "daemon/scheduler-private.h"
#include "shared/log.h"
#include "shared/macro.h"
#include "shared/time-util.h"

/* Tries the hand-backs (and completions) that failed again; those that fail again wait
 * longer. */
static int on_handback_timer(sd_event_source *es, uint64_t usec, void *userdata)
{
        scheduler *s = userdata;
        int64_t now = wall_usec();
        bool any = false;

        for (struct handback **p = &s->handbacks; *p;) {
                struct handback *h = *p;
                int r = h->done ? ledger_complete(s->ledger, h->id, h->fence, NULL, 0, now)
                                : ledger_release(s->ledger, h->id, h->fence, now + h->delay_usec,
                                                 now);

                /* -ESTALE: not running any more (a reset of the ledger); nothing to hand back. */
                if (r < 0 && r != -ESTALE) {
                        p = &h->next;
                        continue;
                }
                if (h->done && r >= 0)
                        scheduler_completed_late(s, h->done);
                else
                        log_notice("job %" PRId64 ": handed back to the ledger", h->id);
                *p = h->next;
                job_free(h->done);
                free(h);
                any = true;
        }
        if (any)
                scheduler_kick(s);
        if (s->handbacks) {
                s->handback_delay_usec = 2 * s->handback_delay_usec > HANDBACK_MAX_USEC
                                                 ? HANDBACK_MAX_USEC
                                                 : 2 * s->handback_delay_usec;
                log_warning("ledger: hand-backs still failing (%s); trying again in %.0f s",
                            ledger_errmsg(s->ledger),
                            (double)s->handback_delay_usec / (double)USEC_PER_SEC);
                sd_event_source_set_time_relative(es, s->handback_delay_usec);
                sd_event_source_set_enabled(es, SD_EVENT_ONESHOT);
        }
        return 0;
}

void scheduler_handback_keep(scheduler *s, struct handback *h)
{
        int r;

        h->next = s->handbacks;
        s->handbacks = h;
        if (!s->handback_timer) {
                s->handback_delay_usec = HANDBACK_MIN_USEC;
                r = sd_event_add_time_relative(s->event, &s->handback_timer, CLOCK_MONOTONIC,
                                               HANDBACK_MIN_USEC, 0, on_handback_timer, s);
                if (r < 0)
                        log_error_errno(r, "hand-back timer: %m");
        } else if (sd_event_source_get_enabled(s->handback_timer, NULL) == 0) {
                s->handback_delay_usec = HANDBACK_MIN_USEC;
                sd_event_source_set_time_relative(s->handback_timer, HANDBACK_MIN_USEC);
                sd_event_source_set_enabled(s->handback_timer, SD_EVENT_ONESHOT);
        }
}

void scheduler_hand_back(scheduler *s, int64_t id, int64_t fence, int64_t delay_usec)
{
        int64_t now = wall_usec();
        struct handback *h;
        int r = ledger_release(s->ledger, id, fence, now + delay_usec, now);

        if (r >= 0 || r == -ESTALE)
                return;
        h = calloc(1, sizeof *h);
        if (!h) {
                log_error_errno(r, "ledger: hand back job %" PRId64 ": %s; left to its lease", id,
                                ledger_errmsg(s->ledger));
                return;
        }
        *h = (struct handback){ .id = id, .fence = fence, .delay_usec = delay_usec };
        scheduler_handback_keep(s, h);
        log_error_errno(r, "ledger: hand back job %" PRId64 ": %s; trying again in %.0f s", id,
                        ledger_errmsg(s->ledger),
                        (double)s->handback_delay_usec / (double)USEC_PER_SEC);
}

void scheduler_handback_all(scheduler *s, int64_t now)
{
        /* Jobs still running were not finished: hand them back without using an attempt. */
        while (s->running) {
                struct running *run = s->running;
                s->running = run->next;
                (void)ledger_release(s->ledger, run->job->id, run->job->fence, now, now);
                scheduler_running_free(run);
        }
        /* Hand-backs that failed: once more (if not, the next start requeues them). */
        while (s->handbacks) {
                struct handback *h = s->handbacks;
                s->handbacks = h->next;
                if (h->done)
                        (void)ledger_complete(s->ledger, h->id, h->fence, NULL, 0, now);
                else
                        (void)ledger_release(s->ledger, h->id, h->fence, now, now);
                job_free(h->done);
                free(h);
        }
        s->handback_timer = sd_event_source_disable_unref(s->handback_timer);
}
