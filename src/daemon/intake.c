/* SPDX-License-Identifier: MIT */
/*
 * intake.c - a file in an upload folder becomes a job; see intake.h.
 *
 * Anything but a regular file is refused with a reason, before it is opened (a device is
 * never opened at all): symlinks (imgd does not follow links out of the upload tree), FIFOs,
 * devices, sockets. A regular file that the ledger already knows by its size, mtime and
 * inode (from lstat(), after the hard-link and size limits) needs nothing more and is not
 * opened: that is most files of a start-up scan. Otherwise it is opened O_NOFOLLOW|O_NONBLOCK
 * (a symlink swapped in fails, a FIFO swapped in opens without waiting for a writer) and
 * everything is decided again on the descriptor: a regular file, not hard-linked elsewhere
 * unless allowed, within the size limit. Its content is hashed from that descriptor, so the
 * recorded SHA-256 is that of one file even if the name is replaced meanwhile.
 */
#include <errno.h>
#include <inttypes.h>
#include <search.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "daemon/intake.h"
#include "daemon/retry.h"
#include "daemon/source.h"
#include "shared/log.h"
#include "shared/macro.h"
#include "shared/pathmap.h"
#include "shared/time-util.h"

static int fail(char **ret_error, int r, const char *path, const char *why)
{
        if (asprintf(ret_error, "%s: %s", path, why) < 0)
                *ret_error = NULL;
        return r;
}

static const char *file_type_refusal(mode_t mode)
{
        if (S_ISFIFO(mode))
                return "refused: a FIFO, not a regular file";
        if (S_ISCHR(mode) || S_ISBLK(mode))
                return "refused: a device, not a regular file";
        if (S_ISSOCK(mode))
                return "refused: a socket, not a regular file";
        if (S_ISDIR(mode))
                return "refused: a directory, not a regular file";
        return "refused: not a regular file";
}

/* Refuses a regular file that is hard-linked (unless allowed) or over the size limit. */
static int check_limits(const struct config *cfg, const char *path, const struct stat *st,
                        char **ret_error)
{
        if (st->st_nlink > 1 && !cfg->limits.allow_hardlinks) {
                char why[200];
                snprintf(why, sizeof why,
                         "refused: it has %lu hard links, and a hard link can expose a file from "
                         "outside the upload folder (limits.allow_hardlinks = false)",
                         (unsigned long)st->st_nlink);
                return fail(ret_error, -EMLINK, path, why);
        }
        if ((uint64_t)st->st_size > cfg->limits.max_file_bytes) {
                char why[128];
                snprintf(why, sizeof why,
                         "%" PRIu64 " bytes, over limits.max_file_bytes (%" PRIu64 ")",
                         (uint64_t)st->st_size, cfg->limits.max_file_bytes);
                return fail(ret_error, -EFBIG, path, why);
        }
        return 0;
}

/* What ledger_known_stat() compares. */
static bool same_stat(const struct stat *a, const struct stat *b)
{
        return a->st_size == b->st_size && a->st_ino == b->st_ino &&
               source_mtime_ns(a) == source_mtime_ns(b);
}

/* 1 if the ledger has a job for path with st's size, mtime and inode, 0 if not. */
static int known(ledger *l, const char *path, const struct stat *st, char **ret_error)
{
        int r = ledger_known_stat(l, path, (uint64_t)st->st_size, source_mtime_ns(st),
                                  (uint64_t)st->st_ino);

        return r < 0 ? fail(ret_error, r, path, ledger_errmsg(l)) : r;
}

int intake_file(ledger *l, const struct config *cfg, const struct watch_config *w, const char *path,
                int64_t now_usec, int64_t *ret_id, char **ret_error)
{
        _cleanup_free_ char *key = NULL;
        _cleanup_close_ int fd = -1;
        struct source_info src;
        const char *name = strrchr(path, '/');
        int64_t mtime_ns, id = 0;
        struct stat lst, st;
        int r;

        if (pathmap_is_ignored(name ? name + 1 : path))
                return 0;
        if (lstat(path, &lst) < 0)
                return errno == ENOENT ? 0
                                       : fail(ret_error, negative_errno(), path, strerror(errno));
        if (!S_ISREG(lst.st_mode))
                return fail(ret_error, S_ISLNK(lst.st_mode) ? -ELOOP : -EINVAL, path,
                            S_ISLNK(lst.st_mode) ? "refused: a symbolic link (imgd does not follow "
                                                   "links out of the upload folder)"
                                                 : file_type_refusal(lst.st_mode));
        r = pathmap_output_key(w->path, w->output, path, &key);
        if (r < 0)
                return fail(ret_error, r, path, "not below its watched folder");
        r = check_limits(cfg, path, &lst, ret_error);
        if (r < 0)
                return r;
        /* Known by its stat: nothing to do, and no need to open it (the start-up scan of a
         * tree that is all done costs one lstat() and one index lookup per file). */
        r = known(l, path, &lst, ret_error);
        if (r != 0)
                return r < 0 ? r : 0;

        fd = source_open(path, &st);
        if (fd == -ENOENT)
                return 0; /* gone again before we looked: nothing to do */
        if (fd == -EINVAL)
                return fail(ret_error, -EINVAL, path, file_type_refusal(st.st_mode));
        if (fd < 0)
                return fail(ret_error, fd, path,
                            fd == -ELOOP ? "refused: a symbolic link" : strerror(-fd));
        r = check_limits(cfg, path, &st, ret_error);
        if (r < 0)
                return r;
        if (!same_stat(&st, &lst)) {
                /* Replaced since lstat(): what was looked up is not this file. */
                r = known(l, path, &st, ret_error);
                if (r != 0)
                        return r < 0 ? r : 0;
        }

        mtime_ns = source_mtime_ns(&st);

        src = (struct source_info){
                .watch = w->path,
                .path = path,
                .output_key = key,
                .pipeline = w->pipeline_name,
                .size = (uint64_t)st.st_size,
                .mtime_ns = mtime_ns,
                .ino = (uint64_t)st.st_ino,
        };
        r = hash_sha256_fd(fd, cfg->limits.max_file_bytes, src.sha256);
        if (r < 0)
                return fail(ret_error, r, path,
                            r == -EFBIG ? "grew over limits.max_file_bytes" : strerror(-r));
        r = ledger_enqueue(l, &src, now_usec, &id);
        if (r < 0)
                return fail(ret_error, r, path, ledger_errmsg(l));
        if (r > 0 && ret_id)
                *ret_id = id;
        return r;
}

int intake_moved(ledger *l, const struct watch_config *w, const char *from, const char *to,
                 int64_t now_usec, int64_t *ret_id, char **ret_error)
{
        _cleanup_free_ char *key = NULL;
        struct source_info src;
        struct stat st;
        int r;

        if (lstat(to, &st) < 0 || !S_ISREG(st.st_mode) ||
            pathmap_output_key(w->path, w->output, to, &key) < 0)
                return 0;
        src = (struct source_info){
                .watch = w->path,
                .path = to,
                .output_key = key,
                .pipeline = w->pipeline_name,
                .size = (uint64_t)st.st_size,
                .mtime_ns = source_mtime_ns(&st),
                .ino = (uint64_t)st.st_ino,
        };
        r = ledger_move(l, from, &src, now_usec, ret_id);
        if (r < 0 &&
            asprintf(ret_error, "%s: move the outputs of %s: %s", to, from, ledger_errmsg(l)) < 0)
                *ret_error = NULL;
        return r;
}

bool intake_error_transient(int r)
{
        /* The errors of the machine that block a job (retry.h), and passing shortages. */
        if (retry_environmental(r))
                return true;
        switch (-r) {
        case ENOMEM:
        case ENOBUFS:
        case EBUSY:
        case EAGAIN:
        case EINTR:
        case ETIMEDOUT:
        case ENOTCONN: /* a ledger server unreachable (PostgreSQL stopped, failing over) */
                return true;
        default:
                return false;
        }
}

/* ---- retries -----------------------------------------------------------------------------
 *
 * `files` is a FIFO of the uploads kept, `index` a search tree of their paths (each the
 * string its entry owns). A round (on_round) goes through the files there were when it began,
 * from `cursor` to `round_end`, compacting the ones that still fail to the front (`kept`);
 * files added meanwhile wait after round_end for the next round.
 */
struct retry_file {
        char *watch, *path;
};

struct intake_retry {
        sd_event *event;
        sd_event_source *timer, *round;
        intake_retry_fn fn;
        intake_rescan_fn rescan;
        void *userdata;
        struct retry_file *files;
        size_t n, allocated;
        void *index;
        bool in_round, round_failed, overflowed;
        size_t cursor, round_end, kept, taken;
        uint64_t delay_usec;
        char *error; /* why the last one failed */
};

/* Slices of a round take this long at most. */
#define INTAKE_RETRY_TURN_USEC 10000

static int path_cmp(const void *a, const void *b)
{
        return strcmp(a, b);
}

static void note_error(intake_retry *q, const char *error)
{
        char *copy;

        if (!error || (q->error && strcmp(q->error, error) == 0))
                return;
        copy = strdup(error);
        if (!copy)
                return;
        free(q->error);
        q->error = copy;
}

static void arm(intake_retry *q)
{
        if (q->in_round || q->n == 0)
                return;
        sd_event_source_set_time_relative(q->timer, q->delay_usec);
        sd_event_source_set_enabled(q->timer, SD_EVENT_ONESHOT);
}

static void forget(intake_retry *q, struct retry_file *f)
{
        tdelete(f->path, &q->index, path_cmp);
        free(f->path);
        free(f->watch);
}

static void round_end(intake_retry *q)
{
        size_t added = q->n - q->round_end;

        memmove(q->files + q->kept, q->files + q->round_end, added * sizeof *q->files);
        q->n = q->kept + added;
        q->in_round = false;
        sd_event_source_set_enabled(q->round, SD_EVENT_OFF);
        if (q->taken > 0)
                log_notice("intake: %zu upload(s) taken in on retry", q->taken);
        if (q->n == 0) {
                q->delay_usec = INTAKE_RETRY_MIN_USEC;
                if (q->overflowed) {
                        q->overflowed = false;
                        log_notice("intake: looking again for the uploads not kept for a retry");
                        q->rescan(q->userdata);
                }
                return;
        }
        if (q->round_failed) {
                q->delay_usec = q->delay_usec * 2 > INTAKE_RETRY_MAX_USEC ? INTAKE_RETRY_MAX_USEC
                                                                          : q->delay_usec * 2;
                log_warning("intake: %zu upload(s) still cannot be taken in (last: %s); "
                            "retrying in %.0f s",
                            q->n, q->error ?: "?", (double)q->delay_usec / (double)USEC_PER_SEC);
        }
        arm(q);
}

static int on_round(sd_event_source *s, void *userdata)
{
        intake_retry *q = userdata;
        uint64_t start = mono_usec();

        while (q->cursor < q->round_end && mono_usec() - start < INTAKE_RETRY_TURN_USEC) {
                struct retry_file f = q->files[q->cursor++];
                _cleanup_free_ char *error = NULL;
                int r = q->fn(f.watch, f.path, &error, q->userdata);

                if (r < 0 && intake_error_transient(r)) {
                        note_error(q, error);
                        q->round_failed = true;
                        q->files[q->kept++] = f;
                        continue;
                }
                if (r < 0)
                        log_warning("intake %s", error ?: f.path);
                else
                        q->taken++;
                forget(q, &f);
        }
        if (q->cursor == q->round_end)
                round_end(q);
        return 0;
}

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
        intake_retry *q = userdata;

        if (q->n == 0)
                return 0;
        q->in_round = true;
        q->round_failed = false;
        q->cursor = q->kept = q->taken = 0;
        q->round_end = q->n;
        sd_event_source_set_enabled(q->round, SD_EVENT_ON);
        return 0;
}

int intake_retry_new(sd_event *e, intake_retry_fn fn, intake_rescan_fn rescan, void *userdata,
                     intake_retry **ret)
{
        intake_retry *q = calloc(1, sizeof *q);
        int r;

        if (!q)
                return -ENOMEM;
        *q = (intake_retry){ .event = sd_event_ref(e),
                             .fn = fn,
                             .rescan = rescan,
                             .userdata = userdata,
                             .delay_usec = INTAKE_RETRY_MIN_USEC };
        r = sd_event_add_time_relative(e, &q->timer, CLOCK_MONOTONIC, INTAKE_RETRY_MIN_USEC, 0,
                                       on_timer, q);
        if (r >= 0)
                r = sd_event_source_set_enabled(q->timer, SD_EVENT_OFF);
        if (r >= 0)
                r = sd_event_add_defer(e, &q->round, on_round, q);
        /* Like intake itself: below the workers' results and the control socket. */
        if (r >= 0)
                r = sd_event_source_set_priority(q->round, SD_EVENT_PRIORITY_NORMAL + 1);
        if (r >= 0)
                r = sd_event_source_set_enabled(q->round, SD_EVENT_OFF);
        if (r < 0) {
                intake_retry_free(q);
                return r;
        }
        *ret = q;
        return 0;
}

void intake_retry_clear(intake_retry *q)
{
        if (!q)
                return;
        for (size_t i = 0; i < q->n; i++) {
                if (q->in_round && i >= q->kept && i < q->cursor)
                        continue; /* moved to the front or forgotten */
                forget(q, &q->files[i]);
        }
        q->n = q->cursor = q->round_end = q->kept = 0;
        q->in_round = q->overflowed = false;
        q->delay_usec = INTAKE_RETRY_MIN_USEC;
        sd_event_source_set_enabled(q->round, SD_EVENT_OFF);
        sd_event_source_set_enabled(q->timer, SD_EVENT_OFF);
}

intake_retry *intake_retry_free(intake_retry *q)
{
        if (!q)
                return NULL;
        intake_retry_clear(q);
        sd_event_source_disable_unref(q->timer);
        sd_event_source_disable_unref(q->round);
        free(q->files);
        free(q->error);
        sd_event_unref(q->event);
        free(q);
        return NULL;
}

int intake_retry_add(intake_retry *q, const char *watch_path, const char *path, const char *error)
{
        struct retry_file f;
        void *node;

        note_error(q, error);
        if (tfind(path, &q->index, path_cmp))
                return 0;
        if (q->n >= INTAKE_RETRY_MAX_FILES) {
                q->overflowed = true;
                return -ENOBUFS;
        }
        if (q->n == q->allocated) {
                size_t n = q->allocated ? 2 * q->allocated : 64;
                struct retry_file *p = realloc(q->files, n * sizeof *p);

                if (!p)
                        goto oom;
                q->files = p;
                q->allocated = n;
        }
        f = (struct retry_file){ .watch = strdup(watch_path), .path = strdup(path) };
        node = f.watch && f.path ? tsearch(f.path, &q->index, path_cmp) : NULL;
        if (!node) {
                free(f.watch);
                free(f.path);
                goto oom;
        }
        q->files[q->n++] = f;
        if (!q->in_round && sd_event_source_get_enabled(q->timer, NULL) == 0)
                arm(q);
        return 0;
oom:
        q->overflowed = true;
        return -ENOMEM;
}

size_t intake_retry_pending(const intake_retry *q, const char **ret_error)
{
        if (ret_error)
                *ret_error = q && q->error && q->n > 0 ? q->error : "";
        return q ? q->n : 0;
}
