/* SPDX-License-Identifier: MIT */
/*
 * watch.c - inotify watches on the upload trees; see watch.h.
 *
 * Each watched directory has an inotify watch descriptor (wd) and an entry in `dirs`,
 * indexed by wd, holding its path and the watch it belongs to. Directories created or
 * moved into a recursive tree are added and scanned at once (files may have landed in them
 * before their watch existed); directories moved out are dropped, with their descendants.
 * Hidden directories are neither watched nor scanned.
 *
 * A file found by a walk rather than by an event may still be being written: it goes through
 * settle.c, which reports it once it is complete; its event, if one comes first, reports it
 * at once and settle.c forgets it.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include "shared/alloc.h"
#include "shared/log.h"
#include "shared/macro.h"
#include "shared/pathmap.h"
#include "shared/time-util.h"
#include "daemon/settle.h"
#include "daemon/watch.h"

#define WATCH_MAX_DEPTH 64
/*
 * A walk reads a directory's entries in batches of this many and handles each batch in name
 * order: the ledger's path index is in that order too, so the lookups of a start-up scan
 * move forward through it rather than jump around it in readdir's (hash) order. Bounded so
 * that a huge directory costs no more memory than one batch per level.
 */
#define WATCH_SCAN_BATCH 1024
/* Event handling per event-loop turn (see on_inotify()). */
#define WATCH_TURN_USEC 10000

#define DIR_MASK                                                                                   \
        (IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE | IN_DELETE_SELF |   \
         IN_MOVE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW | IN_EXCL_UNLINK)
/* Renames out of a folder waiting for their other half (IN_MOVED_TO with the same cookie);
 * those still unmatched once the queue is read to its end moved out of the trees. */
#define WATCH_MOVES_MAX 64

/* A directory entry waiting in a walk's batch. */
struct entry {
        char *name;
        unsigned char type; /* DT_DIR, DT_REG, or 0 for anything else */
};

struct wdir {
        char *path; /* NULL: slot unused */
        const struct watch_config *wc;
};

/* A directory being read by a walk. */
struct frame {
        char *path;
        DIR *d;
        struct entry *batch; /* the batch being reported: entries i..n still to do */
        size_t n, i;
        bool more; /* more entries to read after this batch */
        unsigned depth;
};

/* An IN_MOVED_FROM waiting for its IN_MOVED_TO. */
struct move_from {
        uint32_t cookie;
        const struct watch_config *wc;
        char *path;
        bool is_dir;
};

/* A tree queued for a walk. */
struct root {
        const struct watch_config *wc;
        char *path; /* freed once its walk is done */
        bool add;   /* add watches (on the top, and below it for recursive watches) */
};

/*
 * A walk of the trees in `roots`, in order, one step at a time (walk_step()): `frames` is the
 * stack of directories open below roots[next_root]. The start-up scan runs one to its end; the
 * background walk (rescans, new directories, unwatched folders) takes turns with the loop.
 */
struct walk {
        bool report; /* report files (not only add watches) */
        struct frame frames[WATCH_MAX_DEPTH + 2];
        size_t n_frames;
        struct root *roots;
        size_t n_roots, a_roots, next_root;
        unsigned reported, failed;
};

struct watch {
        sd_event *event;
        const struct config *cfg;
        int fd;
        sd_event_source *source;
        watch_file_fn fn;
        watch_batch_fn batch_fn;
        watch_gone_fn gone_fn;
        watch_moved_fn moved_fn;
        void *userdata;
        struct move_from moves[WATCH_MOVES_MAX];
        size_t n_moves;
        struct wdir *dirs; /* indexed by wd */
        size_t n_dirs;     /* allocated slots */
        unsigned count;    /* slots in use */
        struct walk bg;    /* the background walk */
        bool rescanning;   /* it includes a rescan of every tree */
        sd_event_source *bg_source, *unwatched_timer;
        struct wdir *unwatched; /* folders that could not be watched, sorted by path */
        size_t n_unwatched, a_unwatched;
        int unwatched_error; /* why the last one could not be */
        settle *settle;      /* files found by walks that may still be being written */
};

static char *join(const char *dir, const char *name)
{
        char *p;

        return asprintf(&p, "%s/%s", dir, name) < 0 ? NULL : p;
}

static int set_dir(watch *w, int wd, const char *path, const struct watch_config *wc)
{
        char *copy = strdup(path);

        if (!copy)
                return -ENOMEM;
        if ((size_t)wd >= w->n_dirs) {
                size_t was = w->n_dirs;

                if (GROW_ARRAY(w->dirs, w->n_dirs, (size_t)wd + 1) < 0) {
                        free(copy);
                        return -ENOMEM;
                }
                memset(w->dirs + was, 0, (w->n_dirs - was) * sizeof *w->dirs);
        }
        if (!w->dirs[wd].path)
                w->count++;
        free(w->dirs[wd].path);
        w->dirs[wd] = (struct wdir){ .path = copy, .wc = wc };
        return 0;
}

static void drop_dir(watch *w, int wd)
{
        if (wd < 0 || (size_t)wd >= w->n_dirs || !w->dirs[wd].path)
                return;
        free(w->dirs[wd].path);
        w->dirs[wd].path = NULL;
        w->count--;
}

/* Stops watching `path` and everything below it. */
static void drop_tree(watch *w, const char *path)
{
        size_t len = strlen(path);

        for (size_t wd = 0; wd < w->n_dirs; wd++) {
                const char *p = w->dirs[wd].path;

                if (!p || strncmp(p, path, len) != 0 || (p[len] != '\0' && p[len] != '/'))
                        continue;
                inotify_rm_watch(w->fd, (int)wd);
                drop_dir(w, (int)wd);
        }
}

static int entry_cmp(const void *a, const void *b)
{
        return strcmp(((const struct entry *)a)->name, ((const struct entry *)b)->name);
}

/* ---- folders that could not be watched -------------------------------------------------- */

/* The index of path in w->unwatched (sorted by path), or where it would go, with *ret_found. */
static size_t unwatched_find(const watch *w, const char *path, bool *ret_found)
{
        size_t lo = 0, hi = w->n_unwatched;

        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                int c = strcmp(w->unwatched[mid].path, path);

                if (c == 0) {
                        *ret_found = true;
                        return mid;
                }
                if (c < 0)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        *ret_found = false;
        return lo;
}

/* Records that `path` could not be watched (error r); logs the first time only. */
static void unwatched_add(watch *w, const struct watch_config *wc, const char *path, int r)
{
        bool found;
        size_t i = unwatched_find(w, path, &found);
        char *copy;

        if (found) {
                w->unwatched[i].wc = wc;
                return;
        }
        if (r == -ENOSPC)
                log_error("watch %s: inotify watch limit reached (raise "
                          "fs.inotify.max_user_watches); its uploads are found by a scan every "
                          "%u s instead",
                          path, (unsigned)(w->cfg->unwatched_scan_interval_usec / USEC_PER_SEC));
        else
                log_error_errno(r,
                                "watch %s: %m; its uploads are found by a scan every %u s "
                                "instead",
                                path,
                                (unsigned)(w->cfg->unwatched_scan_interval_usec / USEC_PER_SEC));
        if (GROW_ARRAY(w->unwatched, w->a_unwatched, w->n_unwatched + 1) < 0)
                return;
        copy = strdup(path);
        if (!copy)
                return;
        memmove(w->unwatched + i + 1, w->unwatched + i,
                (w->n_unwatched - i) * sizeof *w->unwatched);
        w->unwatched[i] = (struct wdir){ .path = copy, .wc = wc };
        w->n_unwatched++;
        w->unwatched_error = r;
}

/* `path` is watched now (watched = true), or gone. */
static void unwatched_remove(watch *w, const char *path, bool watched)
{
        bool found;
        size_t i = w->n_unwatched ? unwatched_find(w, path, &found) : 0;

        if (!w->n_unwatched || !found)
                return;
        if (watched)
                log_notice("watching %s again", path);
        free(w->unwatched[i].path);
        memmove(w->unwatched + i, w->unwatched + i + 1,
                (w->n_unwatched - i - 1) * sizeof *w->unwatched);
        w->n_unwatched--;
}

/* ---- walks ------------------------------------------------------------------------------ */

static void frame_close(struct frame *f)
{
        for (size_t i = f->i; i < f->n; i++)
                free(f->batch[i].name);
        free(f->batch);
        if (f->d)
                closedir(f->d);
        free(f->path);
        *f = (struct frame){};
}

/* Drops whatever k still had to do. */
static void walk_clear(struct walk *k)
{
        while (k->n_frames > 0)
                frame_close(&k->frames[--k->n_frames]);
        for (size_t i = k->next_root; i < k->n_roots; i++)
                free(k->roots[i].path);
        free(k->roots);
        k->roots = NULL;
        k->n_roots = k->a_roots = k->next_root = 0;
}

static bool walk_busy(const struct walk *k)
{
        return k->n_frames > 0 || k->next_root < k->n_roots;
}

/* Queues the tree at `path` (of watch wc) for walk k. Returns 0 or -ENOMEM. */
static int walk_push(struct walk *k, const struct watch_config *wc, const char *path, bool add)
{
        struct root *r;

        for (size_t i = k->next_root; i < k->n_roots; i++)
                if (strcmp(k->roots[i].path, path) == 0 && k->roots[i].add >= add)
                        return 0; /* already waiting */
        if (GROW_ARRAY(k->roots, k->a_roots, k->n_roots + 1) < 0)
                return -ENOMEM;
        r = &k->roots[k->n_roots];
        *r = (struct root){ .wc = wc, .path = strdup(path), .add = add };
        if (!r->path)
                return -ENOMEM;
        k->n_roots++;
        return 0;
}

/*
 * Starts on the directory `path` of walk k: adds its watch (when the root was queued with
 * add, for the root and the directories of recursive watches) and opens it. A directory that
 * cannot be watched for want of watches or kernel memory is recorded as unwatched (and is read
 * all the same), and so is one that cannot be read for want of descriptors or memory (read
 * again by the periodic scan). Returns 0, or a negative errno if `path` cannot be watched or
 * read.
 */
static int walk_open(watch *w, struct walk *k, const struct root *root, const char *path,
                     unsigned depth)
{
        _cleanup_free_ struct entry *batch = NULL;
        _cleanup_free_ char *copy = NULL;
        int fd, r;
        DIR *d;

        if (depth > WATCH_MAX_DEPTH) {
                log_warning("%s: deeper than %d levels, not watched", path, WATCH_MAX_DEPTH);
                return 0;
        }
        if (root->add) {
                int wd = inotify_add_watch(w->fd, path, DIR_MASK);

                if (wd < 0) {
                        r = negative_errno();
                        if (r != -ENOSPC && r != -ENOMEM) {
                                unwatched_remove(w, path, false); /* removed, say */
                                return log_error_errno(r, "watch %s: %m", path);
                        }
                        unwatched_add(w, root->wc, path, r);
                } else {
                        r = set_dir(w, wd, path, root->wc);
                        if (r < 0)
                                return r;
                        unwatched_remove(w, path, true);
                }
        }
        fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) {
                r = negative_errno();
                /* Out of descriptors or memory for now: the files in it that came before its
                 * watch have no events, so it is read again by the periodic scan of the
                 * folders not watched, until it can be. */
                if (r == -EMFILE || r == -ENFILE || r == -ENOMEM || r == -ENOBUFS)
                        unwatched_add(w, root->wc, path, r);
                return log_error_errno(r, "scan %s: %m", path);
        }
        d = fdopendir(fd);
        if (!d) {
                close(fd);
                return -ENOMEM;
        }
        batch = calloc(WATCH_SCAN_BATCH, sizeof *batch);
        copy = strdup(path);
        if (!batch || !copy) {
                closedir(d);
                return -ENOMEM;
        }
        k->frames[k->n_frames++] = (struct frame){
                .path = TAKE_PTR(copy),
                .d = d,
                .batch = TAKE_PTR(batch),
                .more = true,
                .depth = depth,
        };
        return 0;
}

/* Reads the next batch of f's entries, sorted by name. */
static void frame_read(const struct walk *k, const struct root *root, struct frame *f)
{
        struct dirent *de;

        f->n = f->i = 0;
        while (f->n < WATCH_SCAN_BATCH && (de = readdir(f->d))) {
                unsigned char type = de->d_type;

                if (de->d_name[0] == '.')
                        continue; /* ".", "..", and hidden names */
                if (type == DT_UNKNOWN) {
                        struct stat st;
                        if (fstatat(dirfd(f->d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                                continue;
                        type = S_ISDIR(st.st_mode) ? DT_DIR : S_ISREG(st.st_mode) ? DT_REG : 0;
                }
                if (type == DT_DIR && !root->wc->recursive)
                        continue;
                /* Everything that is not a directory is reported, so that intake can refuse
                 * symlinks, FIFOs and devices with a reason rather than pass them over. */
                if (type != DT_DIR && (!k->report || pathmap_is_ignored(de->d_name)))
                        continue;
                f->batch[f->n].name = strdup(de->d_name);
                if (!f->batch[f->n].name)
                        break;
                f->batch[f->n++].type = type;
        }
        f->more = f->n == WATCH_SCAN_BATCH;
        qsort(f->batch, f->n, sizeof *f->batch, entry_cmp);
}

/*
 * Does one step of walk k: opens the next queued tree, or reports one file, or opens one
 * sub-directory, or reads the next batch of a directory, or closes one. Returns true while
 * there is more to do. A tree whose top cannot be watched or read counts in k->failed.
 */
static bool walk_step(watch *w, struct walk *k)
{
        const struct root *root;
        struct frame *f;

        if (k->n_frames == 0) {
                if (k->next_root == k->n_roots) {
                        walk_clear(k);
                        return false;
                }
                root = &k->roots[k->next_root];
                if (walk_open(w, k, root, root->path, 0) < 0)
                        k->failed++;
                if (k->n_frames == 0) {
                        free(k->roots[k->next_root].path);
                        k->next_root++;
                }
                return true;
        }
        root = &k->roots[k->next_root];
        f = &k->frames[k->n_frames - 1];
        if (f->i < f->n) {
                struct entry *e = &f->batch[f->i++];
                _cleanup_free_ char *name = TAKE_PTR(e->name);
                _cleanup_free_ char *child = join(f->path, name);

                if (!child)
                        return true;
                if (e->type == DT_DIR)
                        (void)walk_open(w, k, root, child, f->depth + 1);
                else {
                        settle_found(w->settle, root->wc, child);
                        k->reported++;
                }
                return true;
        }
        if (f->more) {
                frame_read(k, root, f);
                return true;
        }
        frame_close(f);
        if (--k->n_frames == 0) {
                free(k->roots[k->next_root].path);
                k->next_root++;
        }
        return true;
}

/* Walks the tree at `path` to its end, now. Returns the files reported, or a negative errno
 * if `path` itself cannot be watched (with add) or read. */
static int walk_now(watch *w, const struct watch_config *wc, const char *path, bool add,
                    bool report)
{
        struct walk k = { .report = report };
        int r = walk_push(&k, wc, path, add);

        if (r < 0)
                return r;
        while (walk_step(w, &k))
                ;
        return k.failed > 0 ? -EIO : (int)k.reported;
}

int watch_scan(watch *w)
{
        int total = 0;

        for (size_t i = 0; i < w->cfg->n_watches; i++) {
                const struct watch_config *wc = &w->cfg->watches[i];
                int k = walk_now(w, wc, wc->path, false, true);
                if (k > 0)
                        total += k;
        }
        return total;
}

/*
 * Runs the background walk for at most WATCH_TURN_USEC, inside one batch (see
 * watch_set_batch_fn()), then returns to the loop, which comes back while there is more.
 */
static int on_background(sd_event_source *s, void *userdata)
{
        watch *w = userdata;
        uint64_t start = mono_usec();
        bool more = true;

        if (w->batch_fn)
                w->batch_fn(true, w->userdata);
        while (more && mono_usec() - start < WATCH_TURN_USEC)
                more = walk_step(w, &w->bg);
        if (w->batch_fn)
                w->batch_fn(false, w->userdata);
        if (!more) {
                log_full_errno(w->rescanning ? LOG_INFO : LOG_DEBUG, 0,
                               "background scan done: %u file(s) reported", w->bg.reported);
                w->bg.reported = 0;
                w->rescanning = false;
                sd_event_source_set_enabled(s, SD_EVENT_OFF);
        }
        return 0;
}

/* Queues a walk in the background; the event loop takes turns with it. */
static void walk_later(watch *w, const struct watch_config *wc, const char *path)
{
        int r = walk_push(&w->bg, wc, path, true);

        if (r < 0) {
                log_error_errno(r, "scan %s: %m", path);
                return;
        }
        sd_event_source_set_enabled(w->bg_source, SD_EVENT_ON);
}

void watch_rescan(watch *w)
{
        /* What the walk under way has seen may have changed since: start again. */
        walk_clear(&w->bg);
        w->bg.reported = 0;
        w->rescanning = true;
        for (size_t i = 0; i < w->cfg->n_watches; i++)
                walk_later(w, &w->cfg->watches[i], w->cfg->watches[i].path);
}

/* After an overflow, events were lost: re-add every tree (new directories included) and
 * report every file; files already done are recognised by the ledger. */
static void rescan(watch *w)
{
        log_warning("inotify queue overflowed; rescanning the watched folders in the background");
        watch_rescan(w);
}

static uint64_t unwatched_interval_usec(const watch *w)
{
        return w->cfg->unwatched_scan_interval_usec ? w->cfg->unwatched_scan_interval_usec
                                                    : 60 * USEC_PER_SEC;
}

/* Every unwatched_scan_interval: tries to watch the folders that could not be, and reports
 * the files in them (their uploads have no events). */
static int on_unwatched_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
        watch *w = userdata;

        for (size_t i = 0; i < w->n_unwatched; i++)
                walk_later(w, w->unwatched[i].wc, w->unwatched[i].path);
        sd_event_source_set_time_relative(s, unwatched_interval_usec(w));
        sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
        return 0;
}

/* A file, or a directory with everything below it, left its tree (deleted, moved out). */
static void report_gone(watch *w, const struct watch_config *wc, const char *path, bool is_dir)
{
        if (!is_dir)
                settle_forget(w->settle, path);
        if (w->gone_fn)
                w->gone_fn(wc, path, is_dir, w->userdata);
}

/* The renames out of a folder that found no other half: moved out of the trees. */
static void flush_moves(watch *w, size_t keep)
{
        while (w->n_moves > keep) {
                struct move_from m = w->moves[0];

                memmove(w->moves, w->moves + 1, (w->n_moves - 1) * sizeof *w->moves);
                w->n_moves--;
                report_gone(w, m.wc, m.path, m.is_dir);
                free(m.path);
        }
}

/* Takes the waiting IN_MOVED_FROM of `cookie` (its path owned by the caller); false if none. */
static bool take_move(watch *w, uint32_t cookie, struct move_from *ret)
{
        for (size_t i = 0; i < w->n_moves; i++)
                if (w->moves[i].cookie == cookie) {
                        *ret = w->moves[i];
                        memmove(w->moves + i, w->moves + i + 1,
                                (w->n_moves - i - 1) * sizeof *w->moves);
                        w->n_moves--;
                        return true;
                }
        return false;
}

static void handle_event(watch *w, const struct inotify_event *ev)
{
        _cleanup_free_ char *path = NULL, *from_path = NULL;
        const struct wdir *dir;
        struct move_from from = {};
        bool moved = false;

        if (ev->mask & IN_Q_OVERFLOW) {
                rescan(w);
                return;
        }
        if (ev->wd < 0 || (size_t)ev->wd >= w->n_dirs || !w->dirs[ev->wd].path)
                return;
        dir = &w->dirs[ev->wd];

        if (ev->mask & IN_IGNORED) {
                drop_dir(w, ev->wd);
                return;
        }
        if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF)) {
                if (strcmp(dir->path, dir->wc->path) == 0)
                        log_error("watched folder %s was %s; uploads there are no longer seen",
                                  dir->path, ev->mask & IN_DELETE_SELF ? "removed" : "moved");
                return;
        }
        if (ev->len == 0)
                return;
        if (ev->mask & IN_MOVED_TO) {
                moved = take_move(w, ev->cookie, &from);
                from_path = from.path;
        }
        if (ev->name[0] == '.' || (!(ev->mask & IN_ISDIR) && pathmap_is_ignored(ev->name))) {
                /* Renamed to a name imgd ignores: gone from the tree all the same. */
                if (moved)
                        report_gone(w, from.wc, from_path, from.is_dir);
                return;
        }
        path = join(dir->path, ev->name);
        if (!path)
                return;

        if (ev->mask & IN_MOVED_FROM) {
                if (ev->mask & IN_ISDIR)
                        drop_tree(w, path);
                if (w->n_moves == WATCH_MOVES_MAX)
                        flush_moves(w, WATCH_MOVES_MAX - 1);
                w->moves[w->n_moves++] = (struct move_from){
                        .cookie = ev->cookie,
                        .wc = dir->wc,
                        .path = TAKE_PTR(path),
                        .is_dir = (ev->mask & IN_ISDIR) != 0,
                };
                return;
        }
        if (ev->mask & IN_DELETE) {
                /* A directory's files were reported one by one before it (rm -r). */
                if (!(ev->mask & IN_ISDIR))
                        report_gone(w, dir->wc, path, false);
                return;
        }
        if (moved && (from.wc != dir->wc || !w->moved_fn)) {
                /* From another watch (or without a mover): gone there, new here. */
                report_gone(w, from.wc, from_path, from.is_dir);
                moved = false;
        }
        if (ev->mask & IN_ISDIR) {
                if (moved)
                        w->moved_fn(dir->wc, from_path, path, true, w->userdata);
                if ((ev->mask & (IN_CREATE | IN_MOVED_TO)) && dir->wc->recursive)
                        walk_later(w, dir->wc, path); /* a whole tree may have moved in */
                return;
        }
        if (ev->mask & IN_CREATE) {
                /* A regular file is reported when it is closed after writing; anything else
                 * (a symlink, a FIFO, a device, a hard link) never will be: report it now. */
                struct stat st;
                /* A hard link made in place (link()) is complete at once and never closed. */
                if (lstat(path, &st) < 0 || (S_ISREG(st.st_mode) && st.st_nlink < 2))
                        return;
        } else if (!(ev->mask & (IN_CLOSE_WRITE | IN_MOVED_TO))) {
                return;
        }
        settle_forget(w->settle, path);
        if (moved)
                w->moved_fn(dir->wc, from_path, path, false, w->userdata);
        else
                w->fn(dir->wc, path, w->userdata);
}

/*
 * Handles the queued events for at most WATCH_TURN_USEC, then returns with the rest still
 * queued in the kernel: the descriptor stays readable, so the loop comes back for them after
 * the other sources that are ready. A burst of uploads (each one hashed and recorded) thus
 * does not keep the workers' results waiting; reads are one long name in size so that a
 * turn ends within a few events of its budget.
 */
static int on_inotify(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
        watch *w = userdata;
        char buf[sizeof(struct inotify_event) + NAME_MAX + 1]
                __attribute__((aligned(__alignof__(struct inotify_event))));
        uint64_t start = mono_usec();

        if (w->batch_fn)
                w->batch_fn(true, w->userdata);
        for (;;) {
                if (mono_usec() - start >= WATCH_TURN_USEC)
                        break;
                ssize_t n = read(fd, buf, sizeof buf);

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno != EAGAIN)
                                log_error_errno(errno, "read inotify events: %m");
                        else
                                flush_moves(w, 0); /* read to its end: moved out */
                        break;
                }
                for (char *p = buf; p < buf + n;) {
                        const struct inotify_event *ev = (const struct inotify_event *)p;
                        handle_event(w, ev);
                        p += sizeof *ev + ev->len;
                }
        }
        if (w->batch_fn)
                w->batch_fn(false, w->userdata);
        return 0;
}

int watch_new(sd_event *e, const struct config *cfg, watch_file_fn fn, void *userdata, watch **ret)
{
        watch *w = calloc(1, sizeof *w);
        int r;

        if (!w)
                return -ENOMEM;
        *w = (watch){ .event = sd_event_ref(e), .cfg = cfg, .fn = fn, .userdata = userdata };
        w->bg.report = true;
        w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        if (w->fd < 0) {
                r = log_error_errno(errno, "inotify_init1: %m");
                goto fail;
        }
        for (size_t i = 0; i < cfg->n_watches; i++) {
                r = walk_now(w, &cfg->watches[i], cfg->watches[i].path, true, false);
                if (r < 0)
                        goto fail;
        }
        r = sd_event_add_io(e, &w->source, w->fd, EPOLLIN, on_inotify, w);
        if (r < 0) {
                log_error_errno(r, "add inotify to event loop: %m");
                goto fail;
        }
        /* New work waits for work in flight: the workers' results and the claims go first,
         * and publishing (the scheduler's, at this same priority) takes turns with intake. */
        r = sd_event_source_set_priority(w->source, SD_EVENT_PRIORITY_NORMAL + 1);
        if (r < 0) {
                log_error_errno(r, "set the priority of inotify's event source: %m");
                goto fail;
        }
        /* The background walk takes turns with inotify's events, below the control socket. */
        r = sd_event_add_defer(e, &w->bg_source, on_background, w);
        if (r >= 0)
                r = sd_event_source_set_priority(w->bg_source, SD_EVENT_PRIORITY_NORMAL + 1);
        if (r >= 0)
                r = sd_event_source_set_enabled(w->bg_source, SD_EVENT_OFF);
        if (r >= 0)
                r = sd_event_add_time_relative(e, &w->unwatched_timer, CLOCK_MONOTONIC,
                                               unwatched_interval_usec(w), 0, on_unwatched_timer,
                                               w);
        if (r >= 0)
                r = settle_new(e, fn, userdata, &w->settle);
        if (r < 0) {
                log_error_errno(r, "add the background scan to the event loop: %m");
                goto fail;
        }
        *ret = w;
        return 0;
fail:
        watch_free(w);
        return r;
}

watch *watch_free(watch *w)
{
        if (!w)
                return NULL;
        sd_event_source_disable_unref(w->source);
        sd_event_source_disable_unref(w->bg_source);
        sd_event_source_disable_unref(w->unwatched_timer);
        settle_free(w->settle);
        walk_clear(&w->bg);
        for (size_t i = 0; i < w->n_moves; i++)
                free(w->moves[i].path);
        if (w->fd >= 0)
                close(w->fd);
        for (size_t i = 0; i < w->n_dirs; i++)
                free(w->dirs[i].path);
        free(w->dirs);
        for (size_t i = 0; i < w->n_unwatched; i++)
                free(w->unwatched[i].path);
        free(w->unwatched);
        sd_event_unref(w->event);
        free(w);
        return NULL;
}

void watch_set_batch_fn(watch *w, watch_batch_fn fn)
{
        w->batch_fn = fn;
        if (w->settle)
                settle_set_batch_fn(w->settle, fn);
}

void watch_set_removal_fns(watch *w, watch_gone_fn gone, watch_moved_fn moved)
{
        w->gone_fn = gone;
        w->moved_fn = moved;
}

bool watch_intake_pending(const watch *w)
{
        int n = 0;

        return w && (walk_busy(&w->bg) || settle_pending(w->settle) > 0 ||
                     (ioctl(w->fd, FIONREAD, &n) == 0 && n > 0));
}

unsigned watch_count(const watch *w)
{
        return w->count;
}

unsigned watch_unwatched(const watch *w, int *ret_error)
{
        if (!w)
                return 0;
        if (ret_error)
                *ret_error = w->unwatched_error;
        return (unsigned)w->n_unwatched;
}

const char *watch_unwatched_first(const watch *w)
{
        return w && w->n_unwatched > 0 ? w->unwatched[0].path : NULL;
}
