/* SPDX-License-Identifier: MIT */
/*
 * outcomes.c - the rings of recent outcomes and completions; see outcomes.h.
 */
#include <errno.h>
#include <stdlib.h>

#include "daemon/outcomes.h"
#include "shared/macro.h"
#include "shared/time-util.h"

struct outcomes {
        struct {
                uint64_t at_usec;
                bool failed;
        } outcomes[OUTCOMES_MAX];
        unsigned n_outcomes, next_outcome;
        uint64_t completions[OUTCOMES_MAX_FINISHED];
        unsigned n_completions, next_completion;
        uint64_t started_usec;
};

int outcomes_new(uint64_t now, outcomes **ret)
{
        outcomes *o = calloc(1, sizeof *o);

        if (!o)
                return -ENOMEM;
        o->started_usec = now;
        *ret = o;
        return 0;
}

outcomes *outcomes_free(outcomes *o)
{
        free(o);
        return NULL;
}

void outcomes_note(outcomes *o, uint64_t now, bool failed)
{
        o->outcomes[o->next_outcome].at_usec = now;
        o->outcomes[o->next_outcome].failed = failed;
        o->next_outcome = (o->next_outcome + 1) % ELEMENTSOF(o->outcomes);
        if (o->n_outcomes < ELEMENTSOF(o->outcomes))
                o->n_outcomes++;
}

void outcomes_note_finished(outcomes *o, uint64_t now)
{
        o->completions[o->next_completion] = now;
        o->next_completion = (o->next_completion + 1) % ELEMENTSOF(o->completions);
        if (o->n_completions < ELEMENTSOF(o->completions))
                o->n_completions++;
}

double outcomes_error_rate(const outcomes *o, uint64_t now)
{
        unsigned total = 0, failed = 0;

        for (unsigned i = 0; i < o->n_outcomes; i++) {
                if (now - o->outcomes[i].at_usec > OUTCOMES_WINDOW_USEC)
                        continue;
                total++;
                failed += o->outcomes[i].failed;
        }
        return total >= 10 ? (double)failed / total : 0;
}

double outcomes_finished_per_s(const outcomes *o, uint64_t now, uint64_t *ret_window_usec)
{
        uint64_t span, oldest = now;
        unsigned n = 0;

        *ret_window_usec = now - o->started_usec < OUTCOMES_WINDOW_USEC ? now - o->started_usec
                                                                        : OUTCOMES_WINDOW_USEC;
        for (unsigned i = 0; i < o->n_completions; i++) {
                if (now - o->completions[i] > OUTCOMES_WINDOW_USEC)
                        continue;
                n++;
                if (o->completions[i] < oldest)
                        oldest = o->completions[i];
        }
        span = now - oldest > USEC_PER_SEC ? now - oldest : USEC_PER_SEC;
        return (double)n / ((double)span / (double)USEC_PER_SEC);
}
