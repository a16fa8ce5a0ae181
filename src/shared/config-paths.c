/* SPDX-License-Identifier: MIT */
/*
 * config-paths.c - config_check_paths(): the file-system checks of a loaded configuration;
 * see config.h.
 *
 * The only part of the configuration that touches the file system beyond reading the file:
 * it resolves every configured folder (realpath() of its nearest existing ancestor, and the
 * device and inode of each directory up to "/") and checks again, on what the file system
 * shows, the overlaps config_load() checked by name (config-watch.c); refuses a watched path
 * that is a symbolic link; only then creates missing output, state and socket directories and
 * checks they are writable (a read-only file system named with what to do under systemd),
 * opens each watermark image to check it is there and looks like an image, and checks that
 * the groups named in the file exist.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "shared/config-private.h"
#include "shared/imgformat.h"
#include "shared/macro.h"
#include "shared/variant.h"

/* mkdir -p: creates path and its missing parents with `mode`. Returns 0 or -errno. */
static int mkdir_parents(const char *path, mode_t mode)
{
        _cleanup_free_ char *buf = strdup(path);

        if (!buf)
                return -ENOMEM;
        for (char *c = buf + 1;; c++) {
                char saved = *c;

                if (saved != '/' && saved != '\0')
                        continue;
                *c = '\0';
                if (mkdir(buf, mode) < 0 && errno != EEXIST)
                        return negative_errno();
                *c = saved;
                if (saved == '\0')
                        break;
        }
        return 0;
}

/*
 * Checks that dir is a directory in which files can be created, by creating and removing a
 * probe file (access(W_OK) says yes to root even on a read-only mount).
 */
static int check_dir_writable(const char *dir)
{
        _cleanup_free_ char *probe = NULL;
        struct stat st;
        int fd;

        if (stat(dir, &st) < 0)
                return negative_errno();
        if (!S_ISDIR(st.st_mode))
                return -ENOTDIR;
        if (asprintf(&probe, "%s/.imgd-probe-XXXXXX", dir) < 0) {
                probe = NULL;
                return -ENOMEM;
        }
        fd = mkstemp(probe);
        if (fd < 0)
                return negative_errno();
        close(fd);
        if (unlink(probe) < 0)
                return negative_errno();
        return 0;
}

/* Creates dir with parents if needed and checks it is a writable directory. */
static int ensure_dir_writable(const char *dir, mode_t mode)
{
        int r = mkdir_parents(dir, mode);

        if (r < 0)
                return r;
        return check_dir_writable(dir);
}

/*
 * Whether the file system of path, or of its nearest existing parent when path does not exist
 * yet, is mounted read-only: returns -EROFS if so, 0 if not, or another negative errno. Reads
 * the mount's flags (statvfs ST_RDONLY), so root is told too, and nothing is created: for
 * folders imgd writes only now and then (a watch it moves dead sources out of, a quarantine).
 */
static int check_not_read_only(const char *path)
{
        _cleanup_free_ char *buf = strdup(path);
        struct statvfs sv;

        if (!buf)
                return -ENOMEM;
        while (statvfs(buf, &sv) < 0) {
                char *slash = strrchr(buf, '/');

                if (errno != ENOENT || !slash || slash == buf)
                        return negative_errno();
                *slash = '\0';
        }
        return (sv.f_flag & ST_RDONLY) ? -EROFS : 0;
}

/*
 * Sets *ret_error to "WHERE: WHAT PATH: cause" for a folder imgd must write. A read-only file
 * system is what a path outside the unit's ReadWritePaths= looks like under ProtectSystem=strict
 * (where --check-config run from a shell saw it writable), so that message says what to do.
 */
static void set_write_error(char **ret_error, const char *where, const char *what, const char *path,
                            int r)
{
        if (r != -EROFS) {
                config_set_error(ret_error, "%s: %s %s: %s", where, what, path, strerror(-r));
                return;
        }
        config_set_error(
                ret_error,
                "%s: %s '%s' is on a read-only file system (EROFS) and imgd must write there; "
                "under systemd, add it to the unit: `systemctl edit imgd` and put `[Service]` / "
                "`ReadWritePaths=%s` (and, outside /srv, `NoExecPaths=%s`), then restart imgd",
                where, what, path, path, path);
}

/*
 * Checks the watermark image of variant v: a regular file that can be read, not over
 * VARIANT_WATERMARK_FILE_MAX bytes, whose first bytes are those of a format the workers
 * decode. Whether it decodes completely is only known to a worker (the daemon never decodes
 * images); one that does not fails its jobs with a message naming the file.
 */
static int check_watermark(const struct config *c, const struct pipeline *pl,
                           const struct variant *v, char **ret_error)
{
        const char *path = v->watermark.image;
        unsigned char magic[IMAGE_FORMAT_SNIFF_BYTES];
        _cleanup_close_ int fd = -1;
        struct stat st;
        ssize_t k;
        int r;

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0 || fstat(fd, &st) < 0) {
                r = negative_errno();
                config_set_error(ret_error,
                                 "%s: pipeline '%s': variant '%s': watermark image %s: %s", c->file,
                                 pl->name, v->name, path, strerror(-r));
                return r;
        }
        if (!S_ISREG(st.st_mode)) {
                config_set_error(
                        ret_error,
                        "%s: pipeline '%s': variant '%s': watermark image %s: not a regular "
                        "file",
                        c->file, pl->name, v->name, path);
                return -EINVAL;
        }
        if (st.st_size > VARIANT_WATERMARK_FILE_MAX) {
                config_set_error(
                        ret_error,
                        "%s: pipeline '%s': variant '%s': watermark image %s: %lld bytes, over "
                        "the limit of %d",
                        c->file, pl->name, v->name, path, (long long)st.st_size,
                        VARIANT_WATERMARK_FILE_MAX);
                return -EFBIG;
        }
        do
                k = pread(fd, magic, sizeof magic, 0);
        while (k < 0 && errno == EINTR);
        if (k < 0) {
                r = negative_errno();
                config_set_error(ret_error,
                                 "%s: pipeline '%s': variant '%s': watermark image %s: %s", c->file,
                                 pl->name, v->name, path, strerror(-r));
                return r;
        }
        if (image_format_sniff(magic, (size_t)k) == IMAGE_FORMAT_UNKNOWN) {
                config_set_error(
                        ret_error,
                        "%s: pipeline '%s': variant '%s': watermark image %s: not a supported "
                        "image (PNG, JPEG, WebP, GIF, TIFF, HEIF or AVIF)",
                        c->file, pl->name, v->name, path);
                return -EMEDIUMTYPE;
        }
        return 0;
}

/* A directory's identity on the file system. */
struct dir_id {
        dev_t dev;
        ino_t ino;
};

/*
 * A configured directory as the file system has it, for the overlap checks of
 * config_check_paths(): two names of one directory (through a symbolic link, or a bind mount)
 * have the same `real` path or the same device and inode.
 */
struct resolved_dir {
        char *real;         /* the nearest existing ancestor-or-self with symbolic links resolved
                             * (realpath), then the components below it that do not exist yet */
        char *shown;        /* "NAME", or "NAME (resolved: REAL)" when they differ; for messages */
        bool exists;        /* the directory itself exists: ids[0] is its own identity */
        struct dir_id *ids; /* that ancestor-or-self and each of its parents up to "/" */
        size_t n_ids;
};

static void resolved_dir_done(struct resolved_dir *d)
{
        free(d->real);
        free(d->shown);
        free(d->ids);
        *d = (struct resolved_dir){ 0 };
}

/*
 * Resolves the normalised absolute path `name` (which need not exist) into *ret. Returns 0,
 * -ENOMEM, -ENOLINK when a symbolic link on the way points to nothing, or the errno of
 * realpath() other than ENOENT (a component that is a file: -ENOTDIR; a loop of links:
 * -ELOOP; -EACCES); *ret is written only on success.
 */
static int resolve_dir(const char *name, struct resolved_dir *ret)
{
        _cleanup_free_ char *prefix = strdup(name), *real = NULL, *full = NULL, *up = NULL;
        _cleanup_free_ char *shown = NULL;
        _cleanup_free_ struct dir_id *ids = NULL;
        size_t cut = strlen(name), n_ids = 0;
        int r;

        if (!prefix)
                return -ENOMEM;
        /* The nearest ancestor-or-self that exists; "/" always does. */
        while (!(real = realpath(prefix, NULL))) {
                char *slash = strrchr(prefix, '/');
                struct stat st;

                if (errno != ENOENT || !slash || strcmp(prefix, "/") == 0)
                        return negative_errno();
                if (lstat(prefix, &st) == 0)
                        return -ENOLINK; /* there, but a symbolic link to nothing */
                cut = (size_t)(slash - prefix);
                if (slash == prefix)
                        slash[1] = '\0';
                else
                        *slash = '\0';
        }
        /* "/" and "/a" make "/a", not "//a". */
        r = asprintf(&full, "%s%s", strcmp(real, "/") == 0 && name[cut] ? "" : real, name + cut);
        if (r < 0) {
                full = NULL;
                return -ENOMEM;
        }

        /* The identities of real's existing part and of each of its parents. */
        up = strdup(real);
        if (!up)
                return -ENOMEM;
        ids = calloc(strlen(up) + 1, sizeof *ids); /* at most one per slash, plus one */
        if (!ids)
                return -ENOMEM;
        for (;;) {
                struct stat st;
                char *slash;

                if (stat(up, &st) < 0)
                        break; /* unreadable: compared by name only from here up */
                ids[n_ids++] = (struct dir_id){ .dev = st.st_dev, .ino = st.st_ino };
                slash = strrchr(up, '/');
                if (!slash || strcmp(up, "/") == 0)
                        break;
                if (slash == up)
                        slash[1] = '\0';
                else
                        *slash = '\0';
        }

        if (strcmp(full, name) == 0)
                shown = strdup(name);
        else if (asprintf(&shown, "%s (resolved: %s)", name, full) < 0)
                shown = NULL;
        if (!shown)
                return -ENOMEM;

        *ret = (struct resolved_dir){
                .real = TAKE_PTR(full),
                .shown = TAKE_PTR(shown),
                .exists = name[cut] == '\0',
                .ids = TAKE_PTR(ids),
                .n_ids = n_ids,
        };
        return 0;
}

enum {
        DIR_APART = 0,
        DIR_BY_NAME,  /* below or at, by the resolved names */
        DIR_BY_INODE, /* below or at, found only by device and inode (a bind mount) */
};

/* Whether x is y or below it: DIR_APART, DIR_BY_NAME or DIR_BY_INODE. */
static int dir_within(const struct resolved_dir *x, const struct resolved_dir *y)
{
        if (config_path_is_below_or_equal(x->real, y->real))
                return DIR_BY_NAME;
        /* A directory that does not exist yet holds nothing that exists. */
        if (!y->exists || y->n_ids == 0)
                return DIR_APART;
        for (size_t i = 0; i < x->n_ids; i++)
                if (x->ids[i].dev == y->ids[0].dev && x->ids[i].ino == y->ids[0].ino)
                        return DIR_BY_INODE;
        return DIR_APART;
}

/* Whether x and y are one directory: DIR_APART, DIR_BY_NAME or DIR_BY_INODE. */
static int dir_same(const struct resolved_dir *x, const struct resolved_dir *y)
{
        if (strcmp(x->real, y->real) == 0)
                return DIR_BY_NAME;
        if (x->exists && y->exists && x->n_ids > 0 && y->n_ids > 0 &&
            x->ids[0].dev == y->ids[0].dev && x->ids[0].ino == y->ids[0].ino)
                return DIR_BY_INODE;
        return DIR_APART;
}

static const char *how(int within)
{
        return within == DIR_BY_INODE ? " (the same directory by device and inode: a bind mount?)"
                                      : "";
}

/* The resolved directories of one watch; quarantine.real is NULL when it has none. */
struct resolved_watch {
        struct resolved_dir path, output, quarantine;
};

static void resolved_watches_free(struct resolved_watch *rw, size_t n)
{
        for (size_t i = 0; rw && i < n; i++) {
                resolved_dir_done(&rw[i].path);
                resolved_dir_done(&rw[i].output);
                resolved_dir_done(&rw[i].quarantine);
        }
        free(rw);
}

/*
 * The overlap checks of config_check_paths() on the resolved directories (see config.h).
 * Touches nothing. Returns 0, or a negative errno with "FILE:LINE: problem" in *ret_error,
 * LINE being that of the watch (or of state_dir) at fault; the message names the other
 * watch and its line.
 */
static int check_resolved_overlaps(const struct config *c, char **ret_error)
{
        struct resolved_watch *rw = NULL;
        struct resolved_dir state = { 0 };
        int r = 0;

        rw = calloc(c->n_watches, sizeof *rw);
        if (!rw) {
                config_set_error(ret_error, "%s: out of memory", c->file);
                return -ENOMEM;
        }
        for (size_t i = 0; i < c->n_watches; i++) {
                const struct watch_config *w = &c->watches[i];
                const char *what = "watch path", *name = w->path;

                r = resolve_dir(w->path, &rw[i].path);
                if (r >= 0) {
                        what = "output";
                        name = w->output;
                        r = resolve_dir(w->output, &rw[i].output);
                }
                if (r >= 0 && w->quarantine) {
                        what = "quarantine";
                        name = w->quarantine;
                        r = resolve_dir(w->quarantine, &rw[i].quarantine);
                }
                if (r < 0) {
                        config_set_error(
                                ret_error, "%s:%d: %s %s: %s", c->file, w->line, what, name,
                                r == -ENOLINK ? "a symbolic link on the way points to nothing"
                                              : strerror(-r));
                        goto done;
                }
        }
        r = resolve_dir(c->state_dir, &state);
        if (r < 0) {
                config_set_error(ret_error, "%s: state_dir %s: %s", c->file, c->state_dir,
                                 r == -ENOLINK ? "a symbolic link on the way points to nothing"
                                               : strerror(-r));
                goto done;
        }

        r = -EINVAL;
        for (size_t i = 0; i < c->n_watches; i++) {
                const struct watch_config *w = &c->watches[i];
                const struct resolved_watch *a = &rw[i];
                int k;

                for (size_t j = 0; j < c->n_watches; j++) {
                        const struct watch_config *o = &c->watches[j];
                        const struct resolved_watch *b = &rw[j];

                        k = j < i ? dir_same(&a->path, &b->path) : DIR_APART;
                        if (k) {
                                config_set_error(
                                        ret_error,
                                        "%s:%d: watch '%s': path %s is the same directory as "
                                        "watch '%s' (line %d)%s",
                                        c->file, w->line, w->path, a->path.shown, o->path, o->line,
                                        how(k));
                                goto done;
                        }
                        k = dir_within(&a->output, &b->path);
                        if (k) {
                                config_set_error(
                                        ret_error,
                                        "%s:%d: watch '%s': output %s is inside watched path "
                                        "%s (line %d)%s; outputs would be picked up as uploads",
                                        c->file, w->line, w->path, a->output.shown, b->path.shown,
                                        o->line, how(k));
                                goto done;
                        }
                        k = dir_within(&a->path, &b->output);
                        if (k) {
                                config_set_error(
                                        ret_error,
                                        "%s:%d: watch '%s': watched path %s is inside output "
                                        "%s of watch '%s' (line %d)%s; outputs would be picked "
                                        "up as uploads",
                                        c->file, w->line, w->path, a->path.shown, b->output.shown,
                                        o->path, o->line, how(k));
                                goto done;
                        }
                        k = j != i && o->recursive && !dir_same(&a->path, &b->path)
                                    ? dir_within(&a->path, &b->path)
                                    : DIR_APART;
                        if (k) {
                                config_set_error(
                                        ret_error,
                                        "%s:%d: watch '%s': path %s is inside watch '%s' (line "
                                        "%d)%s, which is recursive; files below it would belong "
                                        "to both watches",
                                        c->file, w->line, w->path, a->path.shown, o->path, o->line,
                                        how(k));
                                goto done;
                        }
                        if (!w->quarantine)
                                continue;
                        k = dir_within(&a->quarantine, &b->path);
                        if (!k)
                                k = dir_within(&b->path, &a->quarantine);
                        if (k) {
                                config_set_error(
                                        ret_error,
                                        "%s:%d: watch '%s': quarantine %s overlaps watched path "
                                        "%s (line %d)%s; quarantined files would be picked up "
                                        "as uploads",
                                        c->file, w->line, w->path, a->quarantine.shown,
                                        b->path.shown, o->line, how(k));
                                goto done;
                        }
                        k = dir_within(&a->quarantine, &b->output);
                        if (k) {
                                config_set_error(
                                        ret_error,
                                        "%s:%d: watch '%s': quarantine %s is inside output %s "
                                        "of watch '%s' (line %d)%s",
                                        c->file, w->line, w->path, a->quarantine.shown,
                                        b->output.shown, o->path, o->line, how(k));
                                goto done;
                        }
                }
                k = dir_within(&state, &a->path);
                if (k) {
                        if (c->state_dir_line > 0)
                                config_set_error(
                                        ret_error,
                                        "%s:%d: state_dir %s is inside watched path %s (line "
                                        "%d)%s; the ledger's files would be picked up as uploads",
                                        c->file, c->state_dir_line, state.shown, a->path.shown,
                                        w->line, how(k));
                        else
                                config_set_error(
                                        ret_error,
                                        "%s: state_dir %s is inside watched path %s (line %d)%s; "
                                        "the ledger's files would be picked up as uploads",
                                        c->file, state.shown, a->path.shown, w->line, how(k));
                        goto done;
                }
        }
        r = 0;
done:
        resolved_dir_done(&state);
        resolved_watches_free(rw, c->n_watches);
        return r;
}

int config_check_paths(const struct config *c, char **ret_error)
{
        _cleanup_free_ char *socket_dir = NULL;
        struct stat st;
        char *slash;
        int r;

        assert(c);

        for (size_t i = 0; i < c->n_watches; i++) {
                const struct watch_config *w = &c->watches[i];

                /* The watcher opens its folders without following a last symbolic link
                 * (O_NOFOLLOW, IN_DONT_FOLLOW), so such a watch would fail at start. */
                if (lstat(w->path, &st) == 0 && S_ISLNK(st.st_mode)) {
                        _cleanup_free_ char *target = realpath(w->path, NULL);

                        config_set_error(
                                ret_error,
                                "%s:%d: watch path %s is a symbolic link%s%s; imgd does not "
                                "follow it: write the directory it points to instead",
                                c->file, w->line, w->path, target ? " to " : "",
                                target ? target : "");
                        return -ELOOP;
                }
                if (stat(w->path, &st) < 0)
                        r = negative_errno();
                else
                        r = S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
                if (r < 0) {
                        config_set_error(ret_error, "%s:%d: watch path %s: %s", c->file, w->line,
                                         w->path, strerror(-r));
                        return r;
                }
        }

        /* Before anything is created: an output made inside a watched tree would be seen. */
        r = check_resolved_overlaps(c, ret_error);
        if (r < 0)
                return r;

        for (size_t i = 0; i < c->n_watches; i++) {
                const struct watch_config *w = &c->watches[i];
                char where[PATH_MAX + 16];

                snprintf(where, sizeof where, "%s:%d", c->file, w->line);
                r = ensure_dir_writable(w->output, 0755);
                if (r < 0) {
                        set_write_error(ret_error, where, "output", w->output, r);
                        return r;
                }
                /* Dead sources are moved out of the watched folder into the quarantine. */
                if (!w->quarantine)
                        continue;
                r = check_not_read_only(w->path);
                if (r < 0) {
                        set_write_error(ret_error, where, "watch", w->path, r);
                        return r;
                }
                r = check_not_read_only(w->quarantine);
                if (r < 0) {
                        set_write_error(ret_error, where, "quarantine", w->quarantine, r);
                        return r;
                }
        }

        for (size_t i = 0; i < c->n_pipelines; i++)
                for (size_t j = 0; j < c->pipelines[i].n_variants; j++) {
                        const struct variant *v = &c->pipelines[i].variants[j];

                        if (v->watermark.kind != VARIANT_WATERMARK_IMAGE)
                                continue;
                        r = check_watermark(c, &c->pipelines[i], v, ret_error);
                        if (r < 0)
                                return r;
                }

        r = ensure_dir_writable(c->state_dir, 0750);
        if (r < 0) {
                set_write_error(ret_error, c->file, "state_dir", c->state_dir, r);
                return r;
        }

        /* A group named in the file must exist (the default "imgd" need not). */
        for (size_t i = 0; i < 2; i++) {
                const char *key = i == 0 ? "control_group" : "read_group";
                const char *name = i == 0 ? c->control_group : c->read_group;

                if (name && !getgrnam(name)) {
                        config_set_error(ret_error, "%s: %s '%s': no such group", c->file, key,
                                         name);
                        return -EINVAL;
                }
        }

        socket_dir = strdup(c->socket);
        if (!socket_dir) {
                config_set_error(ret_error, "%s: out of memory", c->file);
                return -ENOMEM;
        }
        slash = strrchr(socket_dir, '/');
        if (slash && slash != socket_dir) {
                *slash = '\0';
                r = mkdir_parents(socket_dir, 0755);
                if (r >= 0 && stat(socket_dir, &st) < 0)
                        r = negative_errno();
                else if (r >= 0 && !S_ISDIR(st.st_mode))
                        r = -ENOTDIR;
                if (r < 0) {
                        set_write_error(ret_error, c->file, "socket directory", socket_dir, r);
                        return r;
                }
        }
        return 0;
}
