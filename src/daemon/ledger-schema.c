/* SPDX-License-Identifier: MIT */
/*
 * ledger-schema.c - the SQLite ledger's schema, its migrations, and the SQL of every
 * prepared statement: what to read, in one place, when the schema changes.
 *
 * The schema is versioned (table schema_version). ledger_open() applies the missing steps of
 * `migrations` one transaction each (ledger_migrate()) and refuses a schema newer than it
 * knows. The statements of ledger_stmt_sql[] are prepared once per connection
 * (ledger_prepare(), SQLITE_PREPARE_PERSISTENT).
 *
 * Scale: claiming walks the partial index jobs_due, which holds only queued and retry jobs in
 * (next_at_us, id) order, and stops at the first one whose output_key is free; so the cost of
 * ledger_claim() and ledger_next_due() does not grow with finished jobs, nor with a long
 * queue. The statements name it with INDEXED BY: without statistics the planner would pick
 * another index and sort every due job on each claim. Counting jobs by state reads the six
 * rows of job_counts (kept by triggers); listing the newest jobs of a state walks
 * jobs_state_updated; ledger_known_stat() is answered by jobs_path alone. A caller that
 * makes many lookups in a row (the start-up scan) makes them inside a group commit
 * (ledger_batch_begin()): one transaction instead of one per lookup.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>

#include "daemon/ledger-private.h"

/*
 * Schema steps. Entry i turns a schema of version i into version i + 1 and is applied in one
 * transaction together with the update of schema_version. Add a version 2 by appending an
 * entry; never edit an entry that has been released.
 */
static const char *const migrations[] = {
        /* 0 -> 1 */
        "CREATE TABLE schema_version (version INTEGER NOT NULL);"
        "CREATE TABLE jobs ("
        "  id INTEGER PRIMARY KEY,"
        "  watch TEXT NOT NULL,"
        "  source_path TEXT NOT NULL,"
        "  source_sha256 TEXT NOT NULL,"
        "  source_size INTEGER NOT NULL,"
        "  source_mtime_ns INTEGER NOT NULL,"
        "  source_ino INTEGER NOT NULL,"
        "  output_key TEXT NOT NULL,"
        "  pipeline TEXT NOT NULL,"
        "  state TEXT NOT NULL CHECK (state IN"
        "    ('queued', 'running', 'retry', 'done', 'dead', 'cancelled')),"
        "  attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),"
        "  created_us INTEGER NOT NULL,"
        "  updated_us INTEGER NOT NULL,"
        "  next_at_us INTEGER NOT NULL,"
        "  finished_us INTEGER,"
        "  lease_owner TEXT,"
        "  lease_expires_us INTEGER,"
        "  last_error TEXT,"
        /* For a running job: NULL (claimed) or 'verified' (outputs staged, see ledger.h). */
        "  stage TEXT CHECK (stage IS NULL OR stage = 'verified'),"
        /* Rendered below full quality (graceful degradation): to be rendered again. */
        "  degraded INTEGER NOT NULL DEFAULT 0,"
        /* What the render reported beyond its outputs (JSON: placeholder, warnings). */
        "  info TEXT,"
        "  CHECK (length(source_sha256) = 64));"
        "CREATE INDEX jobs_state_next ON jobs (state, next_at_us);"
        /* Only the claimable states, ordered by (next_at_us, id): what ledger_claim() walks
         * (from version 3 by (priority, next_at_us)). */
        "CREATE INDEX jobs_due ON jobs (next_at_us) WHERE state IN ('queued', 'retry');"
        "CREATE INDEX jobs_path ON jobs (source_path, id);"
        "CREATE INDEX jobs_output_key ON jobs (output_key, state);"
        "CREATE INDEX jobs_updated ON jobs (updated_us, id);"
        "CREATE INDEX jobs_degraded ON jobs (id) WHERE state = 'done' AND degraded = 1;"
        "CREATE TABLE job_errors ("
        "  job_id INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,"
        "  attempt INTEGER NOT NULL,"
        "  at_us INTEGER NOT NULL,"
        "  message TEXT NOT NULL);"
        "CREATE INDEX job_errors_job ON job_errors (job_id);"
        "CREATE TABLE outputs ("
        "  job_id INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,"
        "  variant TEXT NOT NULL,"
        "  path TEXT NOT NULL,"
        "  format TEXT NOT NULL,"
        "  width INTEGER NOT NULL,"
        "  height INTEGER NOT NULL,"
        "  bytes INTEGER NOT NULL,"
        "  sha256 TEXT NOT NULL,"
        /* Set while the output waits in its temporary file (stage 'verified'). */
        "  tmp_path TEXT,"
        "  PRIMARY KEY (job_id, variant));"
        "CREATE INDEX outputs_path ON outputs (path);",
        /*
         * 1 -> 2: sizes of a million jobs (issue 7).
         * - jobs_state_updated (state, updated_us; the rowid id follows) answers "the newest
         *   jobs in a state" from the index in order, and finds running jobs; it replaces
         *   jobs_state_next, which nothing needed next_at_us in.
         * - jobs_path carries the stat columns and the state, so that a start-up scan learns
         *   whether a file is known from the index alone, without reading the table's rows.
         * - job_counts holds the number of jobs in each state, kept by triggers in the same
         *   transaction as every insert, delete and change of state (whoever makes it), so
         *   that counting does not read a million rows.
         */
        "DROP INDEX jobs_state_next;"
        "CREATE INDEX jobs_state_updated ON jobs (state, updated_us);"
        "DROP INDEX jobs_path;"
        "CREATE INDEX jobs_path ON jobs (source_path, id, source_size, source_mtime_ns, "
        "  source_ino, state);"
        "CREATE TABLE job_counts ("
        "  state TEXT PRIMARY KEY,"
        "  n INTEGER NOT NULL) WITHOUT ROWID;"
        "INSERT INTO job_counts (state, n) VALUES ('queued', 0), ('running', 0), ('retry', 0),"
        "  ('done', 0), ('dead', 0), ('cancelled', 0);"
        "UPDATE job_counts SET n = (SELECT count(*) FROM jobs WHERE jobs.state = job_counts.state);"
        "CREATE TRIGGER jobs_count_insert AFTER INSERT ON jobs BEGIN"
        "  UPDATE job_counts SET n = n + 1 WHERE state = NEW.state;"
        "END;"
        "CREATE TRIGGER jobs_count_delete AFTER DELETE ON jobs BEGIN"
        "  UPDATE job_counts SET n = n - 1 WHERE state = OLD.state;"
        "END;"
        "CREATE TRIGGER jobs_count_update AFTER UPDATE OF state ON jobs"
        "  WHEN OLD.state IS NOT NEW.state BEGIN"
        "  UPDATE job_counts SET n = n - 1 WHERE state = OLD.state;"
        "  UPDATE job_counts SET n = n + 1 WHERE state = NEW.state;"
        "END;",
        /*
         * 2 -> 3: recipes, priorities and partial renders (issue 17).
         * - outputs.recipe: the recipe each output was made with (daemon/recipe.h); NULL for
         *   outputs made before, which reconciliation adopts as made with the current one.
         * - jobs.priority: the order of claims (ledger.h, enum job_priority); jobs_due now
         *   leads with it, so that a claim walks live work first.
         * - jobs.redo: NULL (every variant) or the JSON list of the variants a
         *   reconciliation job renders; the source's other outputs are carried over.
         */
        "ALTER TABLE outputs ADD COLUMN recipe TEXT;"
        "ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;"
        "ALTER TABLE jobs ADD COLUMN redo TEXT;"
        "DROP INDEX jobs_due;"
        "CREATE INDEX jobs_due ON jobs (priority, next_at_us) WHERE state IN ('queued', 'retry');",
        /*
         * 3 -> 4: fencing tokens (issue 18). jobs.fence is incremented by every claim; the
         * transitions of a running job (stage, complete, fail, release, hold) name the token
         * of the claim they act for and are refused when the job was claimed again since.
         */
        "ALTER TABLE jobs ADD COLUMN fence INTEGER NOT NULL DEFAULT 0;",
        /*
         * 4 -> 5: retraction (issue 17).
         * - jobs.kind: NULL for a render; 'retract' (the source is gone: its outputs and
         *   manifest are removed), 'drop' (the outputs of the variants in `redo` are removed,
         *   the others kept) or 'move' (the source was renamed: the outputs of job `origin`,
         *   of its old path, are moved to its new names). The supervisor carries these out
         *   without a worker (daemon/retract.h). A done 'retract' job is its path's newest: it
         *   says that nothing of the path is published. Its stat columns are 0 (no file: a
         *   start-up scan never takes it for a file it knows).
         * - jobs.origin: the done job a 'retract', 'drop' or 'move' job was queued from.
         */
        "ALTER TABLE jobs ADD COLUMN kind TEXT CHECK (kind IS NULL OR kind IN "
        "  ('retract', 'drop', 'move'));"
        "ALTER TABLE jobs ADD COLUMN origin INTEGER;",
};
#define LEDGER_SCHEMA_VERSION ((int64_t)ELEMENTSOF(migrations))

/* Whether done job `j` is its source's current job: no newer job of the path but failed or
 * cancelled reconciliations of the same content. */
#define CURRENT_DONE_SQL(j)                                                                        \
        j ".kind IS NOT 'retract' AND "                                                            \
          "NOT EXISTS (SELECT 1 FROM jobs AS n WHERE n.source_path = " j ".source_path "           \
          "AND n.id > " j ".id AND NOT (n.state IN ('dead', 'cancelled') "                         \
          "AND n.source_sha256 = " j ".source_sha256))"
/* The done job before reconciliation job ?1 whose outputs it carries over (none unless ?1 is
 * one: redo not NULL). */
#define PREVIOUS_DONE_SQL                                                                          \
        "SELECT max(p.id) FROM jobs AS p, jobs AS r WHERE r.id = ?1 AND r.redo IS NOT NULL "       \
        "AND r.kind IS NULL AND p.source_path = r.source_path AND p.id < r.id "                    \
        "AND p.state = 'done' AND p.kind IS NOT 'retract' AND p.source_sha256 = r.source_sha256"

/* LEDGER_HELD in SQL. */
#define HELD_SQL "9223372036854775807"
static_assert(LEDGER_HELD == 9223372036854775807, "HELD_SQL is LEDGER_HELD");

/* The earliest due time of priority p's queued jobs (NULL if none): one seek in jobs_due. */
#define NEXT_DUE_OF(p)                                                                             \
        "SELECT (SELECT next_at_us FROM jobs INDEXED BY jobs_due "                                 \
        "        WHERE state IN ('queued', 'retry') AND priority = " p " "                         \
        "          AND next_at_us < " HELD_SQL " ORDER BY next_at_us LIMIT 1)"

const char *const ledger_stmt_sql[_STMT_MAX] = {
        /* Not a job before a retraction of the path: the file come back is new work. */
        [STMT_KNOWN_STAT] = "SELECT 1 FROM jobs WHERE source_path = ?1 AND source_size = ?2 "
                            "AND source_mtime_ns = ?3 AND source_ino = ?4 "
                            "AND state <> 'cancelled' "
                            "AND NOT EXISTS (SELECT 1 FROM jobs AS n WHERE n.source_path = ?1 "
                            "                AND n.id > jobs.id AND n.kind = 'retract') LIMIT 1",
        /* The newest job of the path: content is "known" only if it is that job's, and that
         * job was not cancelled (the content coming back after its file went away, or after
         * an operator's cancel, is work to do again). */
        [STMT_FIND_SOURCE] = "SELECT id, source_sha256 = ?2 AND state <> 'cancelled' "
                             "AND kind IS NOT 'retract' FROM jobs "
                             "WHERE source_path = ?1 ORDER BY id DESC LIMIT 1",
        [STMT_REFRESH_STAT] = "UPDATE jobs SET source_size = ?2, source_mtime_ns = ?3, "
                              "source_ino = ?4 WHERE id = ?1",
        [STMT_INSERT_JOB] = "INSERT INTO jobs (watch, source_path, source_sha256, source_size, "
                            "source_mtime_ns, source_ino, output_key, pipeline, state, attempts, "
                            "created_us, updated_us, next_at_us) "
                            "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'queued', 0, ?9, ?9, ?9)",
        [STMT_SUPERSEDE] = "UPDATE jobs SET state = 'cancelled', last_error = ?3, "
                           "updated_us = ?4, finished_us = ?4 "
                           "WHERE source_path = ?1 AND id < ?2 AND state IN ('queued', 'retry')",
        /* A claim is two statements (ledger-jobs.c): STMT_CLAIM_PICK chooses the job (?1 now,
         * ?2 the least urgent priority; its id and output_key), STMT_CLAIM takes it (?4 its
         * id) if no job of its output runs. On SQLite BEGIN IMMEDIATE already serialises them. */
        [STMT_CLAIM_PICK] = "SELECT j.id, j.output_key FROM jobs AS j INDEXED BY jobs_due "
                            "WHERE j.state IN ('queued', 'retry') AND j.priority <= ?2 "
                            "  AND j.next_at_us <= ?1 "
                            "  AND NOT EXISTS (SELECT 1 FROM jobs AS r "
                            "                  WHERE r.output_key = j.output_key "
                            "                    AND r.state = 'running') "
                            "ORDER BY j.priority, j.next_at_us, j.id LIMIT 1",
        [STMT_CLAIM] = "UPDATE jobs SET state = 'running', attempts = attempts + 1, degraded = 0, "
                       "fence = fence + 1, "
                       "lease_owner = ?2, lease_expires_us = ?3, updated_us = ?1 "
                       "WHERE id = ?4 AND state IN ('queued', 'retry') "
                       "  AND NOT EXISTS (SELECT 1 FROM jobs AS r "
                       "                  WHERE r.output_key = jobs.output_key "
                       "                    AND r.state = 'running') "
                       "RETURNING " JOB_COLUMNS,
        /* The earliest of each priority's earliest: one index seek each. Written as ORDER BY
         * ... LIMIT 1, not min(): SQLite's min() optimisation does not apply with the range on
         * next_at_us, and min() then read every queued job's entry (12,051 VM steps instead of
         * 83 with 2,000 queued; a backfill of 100,000 made each claim pay for all of them). */
        [STMT_NEXT_DUE] = "SELECT n FROM (" NEXT_DUE_OF("0") " AS n UNION ALL " NEXT_DUE_OF(
                "1") " UNION ALL " NEXT_DUE_OF("2") ") WHERE n IS NOT NULL ORDER BY n LIMIT 1",
        [STMT_JOB_STATE] = "SELECT state, fence FROM jobs WHERE id = ?1",
        [STMT_SET_DONE] = "UPDATE jobs SET state = 'done', updated_us = ?2, finished_us = ?2, "
                          "stage = NULL, lease_owner = NULL, lease_expires_us = NULL "
                          "WHERE id = ?1",
        [STMT_INSERT_OUTPUT] = "INSERT INTO outputs (job_id, variant, path, format, width, "
                               "height, bytes, sha256, tmp_path, recipe) "
                               "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, nullif(?10, ''))",
        [STMT_INSERT_ERROR] = "INSERT INTO job_errors (job_id, attempt, at_us, message) "
                              "SELECT id, attempts, ?2, ?3 FROM jobs WHERE id = ?1",
        /* A live job waits behind live work once it failed; background work stays behind. */
        [STMT_SET_FAILED] = "UPDATE jobs SET state = ?2, last_error = ?3, "
                            "priority = max(priority, 1), "
                            "next_at_us = CASE WHEN ?2 = 'retry' THEN ?4 ELSE next_at_us END, "
                            "finished_us = CASE WHEN ?2 = 'dead' THEN ?5 END, "
                            "updated_us = ?5, stage = NULL, lease_owner = NULL, "
                            "lease_expires_us = NULL WHERE id = ?1",
        [STMT_SET_RELEASED] = "UPDATE jobs SET state = 'queued', attempts = max(attempts - 1, 0), "
                              "next_at_us = ?2, updated_us = ?3, stage = NULL, lease_owner = NULL, "
                              "lease_expires_us = NULL WHERE id = ?1",
        [STMT_SET_CANCELLED] = "UPDATE jobs SET state = 'cancelled', last_error = ?2, "
                               "updated_us = ?3, finished_us = ?3, stage = NULL, "
                               "lease_owner = NULL, lease_expires_us = NULL WHERE id = ?1",
        [STMT_SET_REQUEUED] = "UPDATE jobs SET state = 'queued', attempts = 0, next_at_us = ?2, "
                              "updated_us = ?2, finished_us = NULL WHERE id = ?1",
        [STMT_RECOVER] = "UPDATE jobs SET state = 'queued', updated_us = ?1, lease_owner = NULL, "
                         "lease_expires_us = NULL WHERE state = 'running' AND stage IS NULL",
        [STMT_SUPERSEDED] = "SELECT EXISTS (SELECT 1 FROM jobs AS n "
                            "               WHERE n.source_path = j.source_path AND n.id > j.id) "
                            "FROM jobs AS j WHERE j.id = ?1",
        /* A retracted source owns nothing: neither its retraction nor the jobs before it. */
        [STMT_OUTPUT_OWNER] = "SELECT source_path FROM jobs WHERE output_key = ?1 "
                              "AND state = 'done' AND source_path <> ?2 "
                              "AND kind IS NOT 'retract' "
                              "AND NOT EXISTS (SELECT 1 FROM jobs AS n "
                              "                WHERE n.source_path = jobs.source_path "
                              "                  AND n.id > jobs.id AND n.kind = 'retract' "
                              "                  AND n.state = 'done') "
                              "ORDER BY finished_us DESC, id DESC LIMIT 1",
        [STMT_COUNTS] = "SELECT state, n FROM job_counts",
        /* What ledger_integrity_check() compares job_counts with. */
        [STMT_COUNTS_SCAN] = "SELECT c.state, c.n, (SELECT count(*) FROM jobs "
                             "                     WHERE jobs.state = c.state) "
                             "FROM job_counts AS c",
        [STMT_GET_JOB] = "SELECT " JOB_COLUMNS " FROM jobs WHERE id = ?1",
        [STMT_GET_OUTPUTS] = "SELECT variant, path, format, width, height, bytes, sha256, "
                             "tmp_path, recipe FROM outputs WHERE job_id = ?1 ORDER BY rowid",
        [STMT_GET_ERRORS] = "SELECT attempt, at_us, message FROM job_errors WHERE job_id = ?1 "
                            "ORDER BY rowid",
        [STMT_SET_STAGED] = "UPDATE jobs SET stage = 'verified', updated_us = ?2, degraded = ?3, "
                            "info = ?4 WHERE id = ?1",
        /* Outputs of a job that were staged and not published: forgotten with the stage. */
        [STMT_DROP_STAGED] = "DELETE FROM outputs WHERE job_id = ?1",
        [STMT_PUBLISHED] = "UPDATE outputs SET tmp_path = NULL WHERE job_id = ?1",
        [STMT_LIST_STAGED] = "SELECT id FROM jobs INDEXED BY jobs_state_updated "
                             "WHERE state = 'running' AND stage = 'verified' ORDER BY id",
        [STMT_EXPIRED] = "SELECT id FROM jobs INDEXED BY jobs_state_updated "
                         "WHERE state = 'running' AND stage IS NULL AND lease_expires_us < ?1 "
                         "ORDER BY id",
        [STMT_OLDEST_QUEUED] = "SELECT min(created_us) FROM jobs INDEXED BY jobs_due "
                               "WHERE state IN ('queued', 'retry') AND priority < 2 "
                               "AND next_at_us < " HELD_SQL,
        /* Held (ledger_hold()): queued, the attempt given back, not claimable until woken. */
        [STMT_SET_HELD] = "UPDATE jobs SET state = 'queued', attempts = max(attempts - 1, 0), "
                          "next_at_us = " HELD_SQL ", last_error = ?2, updated_us = ?3, "
                          "stage = NULL, lease_owner = NULL, lease_expires_us = NULL "
                          "WHERE id = ?1",
        [STMT_IS_HELD] = "SELECT state = 'queued' AND next_at_us = " HELD_SQL " FROM jobs "
                         "WHERE id = ?1",
        [STMT_UNHOLD] = "UPDATE jobs SET next_at_us = ?1, updated_us = ?1 "
                        "WHERE state = 'queued' AND next_at_us = " HELD_SQL,
        /* Each priority's held ones are one range of jobs_due: not a read of every queued job. */
        [STMT_COUNT_HELD] = "SELECT count(*) FROM jobs INDEXED BY jobs_due "
                            "WHERE state IN ('queued', 'retry') AND priority IN (0, 1, 2) "
                            "AND next_at_us = " HELD_SQL,
        /* Not onto an output another running job has (as a claim, STMT_CLAIM). */
        [STMT_RELOCATE] = "UPDATE jobs SET pipeline = ?2, output_key = ?3 "
                          "WHERE id = ?1 AND state = 'running' AND fence = ?4 "
                          "  AND NOT EXISTS (SELECT 1 FROM jobs AS r "
                          "                  WHERE r.output_key = ?3 AND r.state = 'running' "
                          "                    AND r.id <> ?1)",
        /* Degraded done jobs that are still their source's newest go back to the queue, to
         * render every variant (a reconciliation job too: what it carried over is its own). */
        [STMT_RERENDER] = "UPDATE jobs SET state = 'queued', attempts = 0, next_at_us = ?1, "
                          "updated_us = ?1, finished_us = NULL, priority = 2, redo = NULL, "
                          "kind = NULL, origin = NULL "
                          "WHERE id IN (SELECT j.id FROM jobs AS j INDEXED BY jobs_degraded "
                          "             WHERE j.state = 'done' AND j.degraded = 1 "
                          "               AND NOT EXISTS (SELECT 1 FROM jobs AS n "
                          "                               WHERE n.source_path = j.source_path "
                          "                                 AND n.id > j.id) "
                          "             ORDER BY j.id LIMIT ?2)",
        /* Finished jobs older than the cut-off that are not their source's newest job (the
         * newest is what tells a start-up scan that a file is done); a done job stays while
         * the jobs after it are reconciliations of its content (their outputs are carried
         * over from it, or it stays the current one if they fail). Dead jobs stay. A done or
         * cancelled job's updated_us is its finished_us (every statement sets both): the
         * bound on it lets jobs_state_updated skip the jobs finished since the cut-off. */
        /* One batch of ids (?2, ?3]: the rowid range, never an index over all the old jobs
         * (the unary + keeps the planner off jobs_state_updated). */
        [STMT_PRUNE] = "DELETE FROM jobs WHERE id > ?2 AND id <= ?3 "
                       "AND +state IN ('done', 'cancelled') "
                       "AND +updated_us < ?1 AND finished_us < ?1 "
                       "AND EXISTS (SELECT 1 FROM jobs AS n WHERE n.source_path = jobs.source_path "
                       "            AND n.id > jobs.id AND (jobs.state = 'cancelled' "
                       "            OR n.state = 'done' OR n.source_sha256 <> jobs.source_sha256))",
        [STMT_ID_RANGE] = "SELECT min(id), max(id) FROM jobs",
        /* Reconciliation (ledger-reconcile.c). A done job is its source's current one when no
         * newer job of the path is there but failed or cancelled reconciliations of the same
         * content (CURRENT_DONE_SQL). The unary + keeps the scan on the rowid range (on
         * jobs_state_updated it read every done job's entry: 180 ms instead of 20 for a range
         * of 2,000 in a ledger of a million). */
        [STMT_SCAN_DONE] = "SELECT j.id, j.watch, j.source_path, o.variant, o.recipe "
                           "FROM jobs AS j "
                           "LEFT JOIN outputs AS o ON o.job_id = j.id "
                           "WHERE j.id > ?1 AND j.id <= ?2 AND +j.state = 'done' "
                           "AND " CURRENT_DONE_SQL("j") " ORDER BY j.id, o.variant",
        [STMT_ADOPT_RECIPE] = "UPDATE outputs SET recipe = ?3 "
                              "WHERE job_id = ?1 AND variant = ?2 AND recipe IS NULL",
        [STMT_RECONCILE] = "INSERT INTO jobs (watch, source_path, source_sha256, source_size, "
                           "source_mtime_ns, source_ino, output_key, pipeline, state, attempts, "
                           "created_us, updated_us, next_at_us, priority, redo) "
                           "SELECT watch, source_path, source_sha256, source_size, "
                           "source_mtime_ns, source_ino, output_key, pipeline, 'queued', 0, "
                           "?3, ?3, ?3, 2, ?2 FROM jobs AS j "
                           "WHERE j.id = ?1 AND j.state = 'done' AND " CURRENT_DONE_SQL("j"),
        /* A reconciliation job done: the outputs of its source's previous done job that it
         * did not render are its own too (published, unchanged). */
        [STMT_CARRY] = "INSERT INTO outputs (job_id, variant, path, format, width, height, bytes, "
                       "sha256, tmp_path, recipe) "
                       "SELECT ?1, o.variant, o.path, o.format, o.width, o.height, o.bytes, "
                       "o.sha256, NULL, o.recipe FROM outputs AS o "
                       "WHERE o.job_id = (" PREVIOUS_DONE_SQL ") "
                       "AND o.variant NOT IN (SELECT variant FROM outputs WHERE job_id = ?1)",
        /* From jobs_due for the queued and retried, the running few from jobs_state_updated. */
        [STMT_COUNT_BACKGROUND_WAITING] = "SELECT count(*) FROM jobs INDEXED BY jobs_due "
                                          "WHERE state IN ('queued', 'retry') AND priority = 2 "
                                          "AND next_at_us < " HELD_SQL,
        [STMT_COUNT_BACKGROUND] = "SELECT (SELECT count(*) FROM jobs INDEXED BY jobs_due "
                                  "        WHERE state IN ('queued', 'retry') AND priority = 2) "
                                  "     + (SELECT count(*) FROM jobs WHERE state = 'running' "
                                  "        AND priority = 2)",
        /* Retraction (ledger-retract.c). The job a 'retract', 'drop' or 'move' job ?1 works
         * from: the newest done job before it of its path (a move: of its origin's path),
         * unless that one is a retraction (then nothing is published). */
        [STMT_ORIGIN] = "SELECT p.id, p.kind IS 'retract' FROM jobs AS r, jobs AS o, jobs AS p "
                        "WHERE r.id = ?1 AND o.id = coalesce(r.origin, r.id) "
                        "AND p.source_path = o.source_path AND p.id < r.id "
                        "AND p.state = 'done' ORDER BY p.id DESC LIMIT 1",
        /* A retraction or drop queued from job ?1 of the path (?2 the kind): a retraction
         * records no file (stat 0). */
        [STMT_INSERT_RETRACT] = "INSERT INTO jobs (watch, source_path, source_sha256, source_size, "
                                "source_mtime_ns, source_ino, output_key, pipeline, state, "
                                "attempts, created_us, updated_us, next_at_us, priority, redo, "
                                "kind, origin) "
                                "SELECT watch, source_path, source_sha256, "
                                "CASE WHEN ?2 = 'retract' THEN 0 ELSE source_size END, "
                                "CASE WHEN ?2 = 'retract' THEN 0 ELSE source_mtime_ns END, "
                                "CASE WHEN ?2 = 'retract' THEN 0 ELSE source_ino END, "
                                "output_key, pipeline, 'queued', 0, ?3, ?3, ?3, ?4, ?5, ?2, id "
                                "FROM jobs WHERE id = ?1",
        [STMT_INSERT_MOVE] = "INSERT INTO jobs (watch, source_path, source_sha256, source_size, "
                             "source_mtime_ns, source_ino, output_key, pipeline, state, attempts, "
                             "created_us, updated_us, next_at_us, kind, origin) "
                             "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'queued', 0, ?9, ?9, ?9, "
                             "'move', ?10)",
        /* The newest job of a path: its id, whether it is a retraction, running. */
        [STMT_NEWEST_OF_PATH] = "SELECT id, kind IS 'retract', state = 'running' "
                                "FROM jobs WHERE source_path = ?1 ORDER BY id DESC LIMIT 1",
        /* The newest done job of a path that is not a retraction, unless a retraction came
         * after it. */
        [STMT_PUBLISHED_OF_PATH] = "SELECT id, kind IS 'retract' FROM jobs WHERE source_path = ?1 "
                                   "AND state = 'done' ORDER BY id DESC LIMIT 1",
        [STMT_IS_CURRENT_DONE] = "SELECT 1 FROM jobs AS j WHERE j.id = ?1 AND j.state = 'done' "
                                 "AND " CURRENT_DONE_SQL("j"),
        /* Leases across nodes (ledger-lease.c). One node uses SQLite: times are the
         * caller's (the last parameter, now), there is no nodes table (STMT_NODE_BEAT does
         * nothing), and a path needs no lock of its own (BEGIN IMMEDIATE serializes). ?2 of
         * STMT_RECOVER_NODE, ?1 of STMT_LIST_STAGED_NODE: a node's name, NULL for every one. */
        [STMT_RECOVER_NODE] = "UPDATE jobs SET state = 'queued', updated_us = ?1, "
                              "lease_owner = NULL, lease_expires_us = NULL "
                              "WHERE state = 'running' AND stage IS NULL AND (?2 IS NULL OR "
                              "substr(lease_owner, 1, length(?2) + 1) = ?2 || ':')",
        [STMT_LIST_STAGED_NODE] = "SELECT id FROM jobs INDEXED BY jobs_state_updated "
                                  "WHERE state = 'running' AND stage = 'verified' AND (?1 IS NULL "
                                  "OR substr(lease_owner, 1, length(?1) + 1) = ?1 || ':') "
                                  "ORDER BY id",
        [STMT_LOCK_SOURCE] = "SELECT ?1",
        [STMT_LOCK_SOURCE_OF] = "SELECT ?1",
        [STMT_LOCK_OUTPUT] = "SELECT ?1",
        /* One node, no nodes table: no rows (?1 the lease). */
        [STMT_NODES] = "SELECT '', '', 0, 0, 0, 0, 0, '', 0, 0 WHERE ?1 IS NULL AND 0",
        [STMT_NODE_BEAT] = "SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8 WHERE 0",
        [STMT_RENEW_OWNED] = "UPDATE jobs SET lease_expires_us = ?3 + ?2 "
                             "WHERE state = 'running' AND lease_owner = ?1",
        [STMT_RENEW_ONE] = "UPDATE jobs SET lease_expires_us = ?4 + ?3 "
                           "WHERE id = ?1 AND state = 'running' AND fence = ?2",
        [STMT_LEASE_OF] = "SELECT state, fence, lease_owner, lease_expires_us - ?2 FROM jobs "
                          "WHERE id = ?1",
        [STMT_LAPSED] = "SELECT id, fence, lease_owner, stage IS NOT NULL FROM jobs "
                        "INDEXED BY jobs_state_updated "
                        "WHERE state = 'running' AND lease_expires_us < ?1 ORDER BY id",
        [STMT_LAPSED_LOCK] = "SELECT 1 FROM jobs WHERE id = ?1 AND state = 'running' "
                             "AND fence = ?2 AND lease_expires_us < ?3",
        /* The paths below a directory (?1 "dir/", ?2 "dir0": '/' + 1) that have jobs. */
        [STMT_PATHS_BELOW] = "SELECT DISTINCT source_path FROM jobs "
                             "WHERE source_path >= ?1 AND source_path < ?2 ORDER BY source_path",
        /* A move that cannot be made: a render of the source instead. */
        [STMT_MOVE_TO_RENDER] = "UPDATE jobs SET kind = NULL, origin = NULL WHERE id = ?1 "
                                "AND kind = 'move' AND state = 'running'",
        [STMT_COPY_RENDER_INFO] = "UPDATE jobs SET (degraded, info) = (SELECT degraded, info "
                                  "                     FROM jobs AS o WHERE o.id = ?2) "
                                  "WHERE id = ?1",
        [STMT_CARRIED] = "SELECT variant, path, format, width, height, bytes, sha256, tmp_path, "
                         "recipe FROM outputs WHERE job_id = (" PREVIOUS_DONE_SQL ") "
                         "ORDER BY rowid",
};

/* Migrations */

static int ledger_read_version(ledger *l, int64_t *ret)
{
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        int rc, r;

        rc = sqlite3_prepare_v2(l->db,
                                "SELECT (SELECT count(*) FROM sqlite_master "
                                "        WHERE type = 'table' AND name = 'schema_version'), "
                                "       (SELECT count(*) FROM sqlite_master "
                                "        WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\')",
                                -1, &st, NULL);
        if (rc != SQLITE_OK)
                return ledger_sqlite_error(l, rc);
        r = ledger_sqlite_step(l, st);
        if (r <= 0)
                return r < 0 ? r : ledger_error(l, -EIO, "no answer from sqlite_master");
        if (sqlite3_column_int64(st, 0) == 0) {
                if (sqlite3_column_int64(st, 1) > 0)
                        return ledger_error(l, -EMEDIUMTYPE,
                                            "not an imgd ledger (it has tables but no "
                                            "schema_version table); imgd will not touch it");
                *ret = 0;
                return 0;
        }
        sqlite3_finalize(TAKE_PTR(st));

        rc = sqlite3_prepare_v2(l->db, "SELECT max(version), count(*) FROM schema_version", -1, &st,
                                NULL);
        if (rc != SQLITE_OK)
                return ledger_sqlite_error(l, rc);
        r = ledger_sqlite_step(l, st);
        if (r <= 0)
                return r < 0 ? r : ledger_error(l, -EIO, "no answer from schema_version");
        if (sqlite3_column_int64(st, 1) != 1 || sqlite3_column_int64(st, 0) < 1)
                return ledger_error(l, -EBADMSG, "schema_version does not hold one version");
        *ret = sqlite3_column_int64(st, 0);
        return 0;
}

/* Applies the next migration step if one is due; returns 1 if it did, 0 if up to date. */
static int ledger_migrate_step_locked(ledger *l)
{
        char sql[128];
        int64_t v = 0;
        int r;

        r = ledger_read_version(l, &v);
        if (r < 0)
                return r;
        if (v > LEDGER_SCHEMA_VERSION)
                return ledger_error(l, -EPROTONOSUPPORT,
                                    "ledger schema version %" PRId64 " is newer than this imgd "
                                    "supports (%" PRId64 "); run a newer imgd, or move the file "
                                    "aside to begin a new ledger",
                                    v, LEDGER_SCHEMA_VERSION);
        if (v == LEDGER_SCHEMA_VERSION)
                return 0;

        r = ledger_exec(l, migrations[v]);
        if (r < 0)
                return r;
        snprintf(sql, sizeof sql,
                 "DELETE FROM schema_version; INSERT INTO schema_version (version) VALUES (%" PRId64
                 ")",
                 v + 1);
        r = ledger_exec(l, sql);
        if (r < 0)
                return r;
        return 1;
}

int ledger_migrate(ledger *l)
{
        for (;;) {
                int r = LEDGER_WRITE(l, ledger_migrate_step_locked(l));
                if (r <= 0)
                        return r;
        }
}

const char *const ledger_tx_stmt_sql[_TX_STMT_END - _STMT_MAX] = {
        [TX_BEGIN - _STMT_MAX] = "BEGIN",
        [TX_BEGIN_IMMEDIATE - _STMT_MAX] = "BEGIN IMMEDIATE",
        [TX_COMMIT - _STMT_MAX] = "COMMIT",
        [TX_SAVEPOINT - _STMT_MAX] = "SAVEPOINT tx",
        [TX_RELEASE - _STMT_MAX] = "RELEASE tx",
};

int ledger_prepare(ledger *l)
{
        for (size_t i = 0; i < _TX_STMT_END; i++) {
                const char *sql =
                        i < _STMT_MAX ? ledger_stmt_sql[i] : ledger_tx_stmt_sql[i - _STMT_MAX];
                int rc = sqlite3_prepare_v3(l->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &l->stmts[i],
                                            NULL);
                if (rc != SQLITE_OK)
                        return ledger_sqlite_error(l, rc);
        }
        return 0;
}
