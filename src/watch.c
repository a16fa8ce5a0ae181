/* SPDX-License-Identifier: MIT */
/*
 * watch.c - inotify watches on the upload trees; see watch.h.
 *
 * Each watched directory has an inotify watch descriptor (wd) and an entry in `dirs`,
 * indexed by wd, holding its path and the watch it belongs to. Directories created or
 * moved into a recursive tree are added and scanned at once (files may have landed in them
 * before their watch existed); directories moved out are dropped, with their descendants.
 * Hidden directories are neither watched nor scanned.
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

#include "imgd/log.h"
#include "imgd/macro.h"
#include "imgd/pathmap.h"
#include "imgd/watch.h"

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

#define DIR_MASK                                                                               \
        (IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE_SELF |           \
         IN_MOVE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW | IN_EXCL_UNLINK)

struct wdir {
        char *path; /* NULL: slot unused */
        const struct watch_config *wc;
};

struct watch {
        sd_event *event;
        const struct config *cfg;
        int fd;
        sd_event_source *source;
        watch_file_fn fn;
        void *userdata;
        struct wdir *dirs; /* indexed by wd */
        size_t n_dirs;     /* allocated slots */
        unsigned count;    /* slots in use */
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
                size_t n = w->n_dirs ? w->n_dirs : 64;
                struct wdir *d;

                while (n <= (size_t)wd)
                        n *= 2;
                d = realloc(w->dirs, n * sizeof *d);
                if (!d) {
                        free(copy);
                        return -ENOMEM;
                }
                memset(d + w->n_dirs, 0, (n - w->n_dirs) * sizeof *d);
                w->dirs = d;
                w->n_dirs = n;
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

/* A directory entry waiting in a walk's batch. */
struct entry {
        char *name;
        unsigned char type; /* DT_DIR, DT_REG, or 0 for anything else */
};

static int entry_cmp(const void *a, const void *b)
{
        return strcmp(((const struct entry *)a)->name, ((const struct entry *)b)->name);
}

static void *mfree(void *p)
{
        free(p);
        return NULL;
}

/*
 * Walks `path`: adds watches (when add is set, on directories of recursive watches, and on
 * `path` itself) and reports files (when report is set). Returns files reported, or a
 * negative errno if `path` itself cannot be watched or read.
 */
static int walk(watch *w, const struct watch_config *wc, const char *path, bool add, bool report,
                unsigned depth)
{
        struct entry *batch;
        DIR *d;
        struct dirent *de;
        int fd, reported = 0;

        if (depth > WATCH_MAX_DEPTH) {
                log_warning("%s: deeper than %d levels, not watched", path, WATCH_MAX_DEPTH);
                return 0;
        }
        if (add) {
                int wd = inotify_add_watch(w->fd, path, DIR_MASK);
                if (wd < 0) {
                        int r = negative_errno();
                        if (r == -ENOSPC)
                                return log_error_errno(r, "watch %s: inotify watch limit reached "
                                                          "(raise fs.inotify.max_user_watches)",
                                                       path);
                        return log_error_errno(r, "watch %s: %m", path);
                }
                int r = set_dir(w, wd, path, wc);
                if (r < 0)
                        return r;
        }

        fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return log_error_errno(errno, "scan %s: %m", path);
        d = fdopendir(fd);
        if (!d) {
                close(fd);
                return -ENOMEM;
        }
        batch = calloc(WATCH_SCAN_BATCH, sizeof *batch);
        if (!batch) {
                closedir(d);
                return -ENOMEM;
        }
        for (bool more = true; more;) {
                size_t n = 0;

                while (n < WATCH_SCAN_BATCH && (de = readdir(d))) {
                        unsigned char type = de->d_type;

                        if (de->d_name[0] == '.')
                                continue; /* ".", "..", and hidden names */
                        if (type == DT_UNKNOWN) {
                                struct stat st;
                                if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                                        continue;
                                type = S_ISDIR(st.st_mode)   ? DT_DIR
                                       : S_ISREG(st.st_mode) ? DT_REG
                                                             : 0;
                        }
                        if (type == DT_DIR && !wc->recursive)
                                continue;
                        /* Everything that is not a directory is reported, so that intake can
                         * refuse symlinks, FIFOs and devices with a reason rather than pass
                         * them over. */
                        if (type != DT_DIR && (!report || pathmap_is_ignored(de->d_name)))
                                continue;
                        batch[n].name = strdup(de->d_name);
                        if (!batch[n].name)
                                break;
                        batch[n++].type = type;
                }
                more = n == WATCH_SCAN_BATCH;
                qsort(batch, n, sizeof *batch, entry_cmp);
                for (size_t i = 0; i < n; i++) {
                        _cleanup_free_ char *child = join(path, batch[i].name);

                        batch[i].name = mfree(batch[i].name);
                        if (!child)
                                continue;
                        if (batch[i].type == DT_DIR) {
                                int k = walk(w, wc, child, add, report, depth + 1);
                                if (k > 0)
                                        reported += k;
                        } else {
                                w->fn(wc, child, w->userdata);
                                reported++;
                        }
                }
        }
        free(batch);
        closedir(d);
        return reported;
}

int watch_scan(watch *w)
{
        int total = 0;

        for (size_t i = 0; i < w->cfg->n_watches; i++) {
                const struct watch_config *wc = &w->cfg->watches[i];
                int k = walk(w, wc, wc->path, false, true, 0);
                if (k > 0)
                        total += k;
        }
        return total;
}

/* After an overflow, events were lost: re-add every tree (new directories included) and
 * report every file; files already done are recognised by the ledger. */
static void rescan(watch *w)
{
        log_warning("inotify queue overflowed; rescanning the watched folders");
        for (size_t i = 0; i < w->cfg->n_watches; i++) {
                const struct watch_config *wc = &w->cfg->watches[i];
                (void)walk(w, wc, wc->path, true, true, 0);
        }
}

static void handle_event(watch *w, const struct inotify_event *ev)
{
        _cleanup_free_ char *path = NULL;
        const struct wdir *dir;

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
        if (ev->len == 0 || ev->name[0] == '.')
                return;
        path = join(dir->path, ev->name);
        if (!path)
                return;

        if (ev->mask & IN_ISDIR) {
                if (ev->mask & IN_MOVED_FROM)
                        drop_tree(w, path);
                else if ((ev->mask & (IN_CREATE | IN_MOVED_TO)) && dir->wc->recursive)
                        (void)walk(w, dir->wc, path, true, true, 0);
                return;
        }
        if (pathmap_is_ignored(ev->name))
                return;
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

        for (;;) {
                if (mono_usec() - start >= WATCH_TURN_USEC)
                        return 0;
                ssize_t n = read(fd, buf, sizeof buf);

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno != EAGAIN)
                                log_error_errno(errno, "read inotify events: %m");
                        return 0;
                }
                for (char *p = buf; p < buf + n;) {
                        const struct inotify_event *ev = (const struct inotify_event *)p;
                        handle_event(w, ev);
                        p += sizeof *ev + ev->len;
                }
        }
}

int watch_new(sd_event *e, const struct config *cfg, watch_file_fn fn, void *userdata,
              watch **ret)
{
        watch *w = calloc(1, sizeof *w);
        int r;

        if (!w)
                return -ENOMEM;
        *w = (watch){ .event = sd_event_ref(e), .cfg = cfg, .fn = fn, .userdata = userdata };
        w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        if (w->fd < 0) {
                r = log_error_errno(errno, "inotify_init1: %m");
                goto fail;
        }
        for (size_t i = 0; i < cfg->n_watches; i++) {
                r = walk(w, &cfg->watches[i], cfg->watches[i].path, true, false, 0);
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
        if (w->fd >= 0)
                close(w->fd);
        for (size_t i = 0; i < w->n_dirs; i++)
                free(w->dirs[i].path);
        free(w->dirs);
        sd_event_unref(w->event);
        free(w);
        return NULL;
}

bool watch_intake_pending(const watch *w)
{
        int n = 0;

        return w && ioctl(w->fd, FIONREAD, &n) == 0 && n > 0;
}

unsigned watch_count(const watch *w)
{
        return w->count;
}
