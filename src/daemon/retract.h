/* SPDX-License-Identifier: MIT */
/*
 * retract.h - retract, drop and move jobs (ledger.h, enum job_kind) carried out by the
 * supervisor, without a worker (issue 17). From the job's origin (ledger_origin(): what of
 * its path is published), in this order:
 *
 *   retract  each output whose file still has the SHA-256 imgd recorded is unlinked (a file
 *            whose content changed since is not imgd's any more: it stays, and is reported);
 *            the manifest is unlinked if the origin wrote it;
 *   drop     the same for the outputs of the variants the job lists; the manifest is written
 *            again with the others (removed when none is left);
 *   move     each output is renamed to its name under the job's output key (the old path's
 *            key replaced by the new one); a new manifest is written and the old one unlinked.
 *            A source gone or replaced since the rename (its stat not the one recorded) makes
 *            the job a render of whatever is there, and the old path's outputs are retracted.
 *            An output already at its new name with its SHA-256 was moved before a crash; one
 *            found at neither name makes the job a render of its source
 *            (ledger_move_to_render()): what it moved to the new names is removed (the render
 *            makes its own) and the old path's outputs are retracted;
 *
 * then every directory touched is fsynced, and only then is the job completed
 * (ledger_complete_retract()). Each step can be done again: a job interrupted at any point
 * (kill -9, power cut) is claimed again after the restart and finishes the same way.
 */
#pragma once

#include <stddef.h>

#include "daemon/ledger.h"

struct retract_result {
        bool rendered; /* a move that could not be made: queued as a render instead */
        /* The files removed from their names (a move: the old names) and the outputs
         * published now (kept by a drop; a move's at their new names). */
        char **removed;
        size_t n_removed;
        struct job_output *outputs;
        size_t n_outputs;
        /* Outputs left in place because their content is no longer what imgd published. */
        char **kept;
        size_t n_kept;
        char *from; /* a move: the old path of the source */
};

void retract_result_clear(struct retract_result *r);

/*
 * Carries out claimed job `job` (kind retract, drop or move) and completes it in the ledger.
 * Returns 0 and what was done in *ret (clear with retract_result_clear()); or a negative
 * errno with a message naming the file and the cause in *ret_error (owned by the caller): the
 * job stays running for the caller to fail or hand back, and whatever was done is done again
 * harmlessly by its next attempt.
 */
int retract_run(ledger *l, const struct job *job, int64_t now_usec, struct retract_result *ret,
                char **ret_error);
