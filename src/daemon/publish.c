/* SPDX-License-Identifier: MIT */
/*
 * publish.c - temporary outputs, atomic renames and directory fsyncs; see publish.h.
 *
 * The order of one publication is: worker writes the temporary file and fsyncs it ->
 * publish_commit() checks its size, renames it over the final name, fsyncs the directory ->
 * the caller commits the job to the ledger. A reader of the output tree sees either the old
 * file or the new one, never a part of one.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>

#include "shared/alloc.h"
#include "shared/fault.h"
#include "shared/hash.h"
#include "shared/log.h"
#include "shared/manifest.h"
#include "shared/pathmap.h"
#include "daemon/publish.h"

static int fsync_dir(const char *dir)
{
        _cleanup_close_ int fd = -1;

        if (fault_skip("publish.dir_fsync"))
                return 0;
        fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return negative_errno();
        return fsync(fd) < 0 ? negative_errno() : 0;
}

int publish_mkdir_parents(const char *dir, mode_t mode)
{
        _cleanup_free_ char *copy = strdup(dir);
        struct stat st;
        int r;

        if (!copy)
                return -ENOMEM;
        if (stat(dir, &st) == 0)
                return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
        for (char *p = copy + 1;; p++) {
                if (*p != '/' && *p != '\0')
                        continue;
                char saved = *p;
                *p = '\0';
                if (mkdir(copy, mode) == 0) {
                        char *slash = strrchr(copy, '/');
                        *slash = '\0';
                        r = fsync_dir(slash == copy ? "/" : copy);
                        *slash = '/';
                        if (r < 0)
                                return r;
                } else if (errno != EEXIST) {
                        return negative_errno();
                }
                *p = saved;
                if (saved == '\0')
                        break;
        }
        if (stat(dir, &st) < 0)
                return negative_errno();
        return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

static char *dir_of(const char *path)
{
        const char *slash = strrchr(path, '/');

        if (!slash)
                return strdup(".");
        if (slash == path)
                return strdup("/");
        return strndup(path, (size_t)(slash - path));
}

/* A new temporary name beside final_path (in dir) for job_id's output `index`. */
static char *tmp_name(const char *dir, int64_t job_id, unsigned index, int tries)
{
        uint32_t rnd;
        char *tmp;

        if (getrandom(&rnd, sizeof rnd, 0) != sizeof rnd)
                rnd = (uint32_t)getpid() ^ (uint32_t)tries;
        if (asprintf(&tmp, "%s/.imgd-%" PRId64 "-%u-%08x.tmp", dir, job_id, index, rnd) < 0)
                return NULL;
        return tmp;
}

int publish_tmp_name(const char *final_path, int64_t job_id, unsigned index,
                     struct publish_tmp *ret)
{
        _cleanup_free_ char *dir = dir_of(final_path), *tmp = NULL, *final = NULL;

        if (!dir)
                return -ENOMEM;
        final = strdup(final_path);
        tmp = tmp_name(dir, job_id, index, 0);
        if (!final || !tmp)
                return -ENOMEM;
        *ret = (struct publish_tmp){
                .final_path = TAKE_PTR(final),
                .tmp_path = TAKE_PTR(tmp),
                .fd = -1,
        };
        return 0;
}

int publish_dir_open(const char *final_path)
{
        _cleanup_free_ char *dir = dir_of(final_path);
        int r, fd;

        if (!dir)
                return -ENOMEM;
        r = publish_mkdir_parents(dir, 0755);
        if (r < 0)
                return r;
        fd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
        return fd < 0 ? negative_errno() : fd;
}

int publish_tmp_open(const char *final_path, int64_t job_id, unsigned index,
                     struct publish_tmp *ret)
{
        _cleanup_free_ char *dir = dir_of(final_path), *tmp = NULL, *final = NULL;
        int r;

        if (!dir)
                return -ENOMEM;
        r = publish_mkdir_parents(dir, 0755);
        if (r < 0)
                return r;
        final = strdup(final_path);
        if (!final)
                return -ENOMEM;

        for (int tries = 0; tries < 16; tries++) {
                int fd;

                free(tmp);
                tmp = tmp_name(dir, job_id, index, tries);
                if (!tmp)
                        return -ENOMEM;
                fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
                if (fd < 0 && errno == EEXIST)
                        continue;
                if (fd < 0)
                        return negative_errno();
                *ret = (struct publish_tmp){
                        .final_path = TAKE_PTR(final),
                        .tmp_path = TAKE_PTR(tmp),
                        .fd = fd,
                };
                return 0;
        }
        return -EEXIST;
}

void publish_tmp_discard(struct publish_tmp *t)
{
        if (!t)
                return;
        if (t->fd >= 0)
                close(t->fd);
        if (t->tmp_path && unlink(t->tmp_path) < 0 && errno != ENOENT)
                log_debug_errno(errno, "unlink %s: %m", t->tmp_path);
        free(t->tmp_path);
        free(t->final_path);
        *t = (struct publish_tmp){ .fd = -1 };
}

int publish_dirs_add(struct publish_dirs *d, const char *path)
{
        _cleanup_free_ char *dir = dir_of(path);

        if (!dir)
                return -ENOMEM;
        for (size_t i = 0; i < d->n; i++)
                if (strcmp(d->paths[i], dir) == 0)
                        return 0;
        if (GROW_ARRAY(d->paths, d->allocated, d->n + 1) < 0)
                return -ENOMEM;
        d->paths[d->n++] = TAKE_PTR(dir);
        return 0;
}

int publish_dirs_sync(struct publish_dirs *d, const char **ret_failed_dir)
{
        for (size_t i = 0; i < d->n; i++) {
                int r = fsync_dir(d->paths[i]);

                if (r < 0) {
                        *ret_failed_dir = d->paths[i];
                        return r;
                }
        }
        fault_point("publish.after_dir_fsync");
        return 0;
}

void publish_dirs_clear(struct publish_dirs *d)
{
        for (size_t i = 0; i < d->n; i++)
                free(d->paths[i]);
        free(d->paths);
        *d = (struct publish_dirs){};
}

int publish_rename(struct publish_tmp *tmps, const uint64_t *sizes, size_t n,
                   struct publish_dirs *dirs, const char **ret_failed_path)
{
        int r;

        for (size_t i = 0; i < n; i++) {
                struct stat st;

                /* Made by a worker (fd -1): the file at the name, which a link there cannot
                 * pass for (lstat). */
                if ((tmps[i].fd >= 0 ? fstat(tmps[i].fd, &st) : lstat(tmps[i].tmp_path, &st)) < 0) {
                        r = negative_errno();
                        goto fail;
                }
                if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size != sizes[i]) {
                        r = -EBADMSG;
                        goto fail_at;
                }
                /* Close and check: a deferred write error surfaces here, before publishing. */
                if (tmps[i].fd >= 0) {
                        r = close(tmps[i].fd);
                        tmps[i].fd = -1;
                        if (r < 0) {
                                r = negative_errno();
                                goto fail;
                        }
                }
                if (rename(tmps[i].tmp_path, tmps[i].final_path) < 0) {
                        r = negative_errno();
                        goto fail_at;
                }
                fault_point("publish.after_rename");
                /* Renamed: nothing left to unlink under the temporary name. */
                free(tmps[i].tmp_path);
                tmps[i].tmp_path = NULL;
                r = publish_dirs_add(dirs, tmps[i].final_path);
                if (r < 0)
                        goto fail_at;
                continue;
        fail_at:
                *ret_failed_path = tmps[i].final_path;
                return r;
        fail:
                *ret_failed_path = tmps[i].tmp_path;
                return r;
        }
        return 0;
}

int publish_commit(struct publish_tmp *tmps, const uint64_t *sizes, size_t n,
                   const char **ret_failed_path)
{
        struct publish_dirs dirs = {};
        int r;

        r = publish_rename(tmps, sizes, n, &dirs, ret_failed_path);
        if (r >= 0) {
                const char *dir = NULL;

                r = publish_dirs_sync(&dirs, &dir);
                /* The first of the job's files in the failing directory. */
                for (size_t i = 0; r < 0 && i < n; i++) {
                        _cleanup_free_ char *other = dir_of(tmps[i].final_path);

                        if (other && strcmp(other, dir) == 0) {
                                *ret_failed_path = tmps[i].final_path;
                                break;
                        }
                }
        }
        publish_dirs_clear(&dirs);
        return r;
}

int publish_manifest(const struct job *job, const struct job_output *outs, size_t n,
                     const json_t *extra)
{
        const struct manifest_source src = {
                .job = job->id,
                .path = job->source_path,
                .sha256 = job->sha256,
                .pipeline = job->pipeline,
        };
        _cleanup_free_ struct manifest_output *list = NULL;
        _cleanup_free_ char *path = NULL, *text = NULL;
        struct publish_tmp tmp = { .fd = -1 };
        const char *failed = NULL;
        uint64_t size;
        size_t len, off = 0;
        int r;

        list = calloc(n ? n : 1, sizeof *list);
        if (!list)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                const char *file = strrchr(outs[i].path, '/');

                list[i] = (struct manifest_output){
                        .variant = outs[i].variant,
                        .file = file ? file + 1 : outs[i].path,
                        .format = outs[i].format,
                        .width = outs[i].width,
                        .height = outs[i].height,
                        .bytes = outs[i].bytes,
                        .sha256 = outs[i].sha256,
                        .recipe = outs[i].recipe,
                };
        }
        r = manifest_format(&src, list, n, extra, &text, &len);
        if (r < 0)
                return r;

        r = manifest_path(job->output_key, &path);
        if (r < 0)
                return r;
        r = publish_tmp_open(path, job->id, PUBLISH_MANIFEST_INDEX, &tmp);
        if (r < 0)
                return r;
        while (off < len) {
                ssize_t k = write(tmp.fd, text + off, len - off);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0) {
                        r = negative_errno();
                        goto out;
                }
                off += (size_t)k;
        }
        if (!fault_skip("publish.file_fsync") && fsync(tmp.fd) < 0) {
                r = negative_errno();
                goto out;
        }
        size = len;
        r = publish_commit(&tmp, &size, 1, &failed);
out:
        publish_tmp_discard(&tmp);
        return r;
}

/* The job id a temporary file's name carries (".imgd-<job>-<n>-<random>.tmp"), or -1. */
static int64_t temp_job_id(const char *name)
{
        char *end;
        long long id;

        if (!pathmap_is_own_temp(name))
                return -1;
        errno = 0;
        id = strtoll(name + 6, &end, 10);
        return errno == 0 && end != name + 6 && *end == '-' && id > 0 ? id : -1;
}

struct sweep {
        publish_keep_fn keep;
        void *userdata;
};

static int sweep_dir(int dfd, const char *path, unsigned depth, const struct sweep *sw)
{
        DIR *d;
        struct dirent *de;
        int removed = 0;

        if (depth > 64) {
                close(dfd);
                return 0;
        }
        d = fdopendir(dfd);
        if (!d) {
                close(dfd);
                return negative_errno();
        }
        while ((de = readdir(d))) {
                if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                        continue;
                unsigned char type = de->d_type;
                if (type == DT_UNKNOWN) {
                        struct stat st;
                        if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                                continue;
                        type = S_ISDIR(st.st_mode) ? DT_DIR : S_ISREG(st.st_mode) ? DT_REG : 0;
                }
                if (type == DT_DIR) {
                        int sub = openat(dirfd(d), de->d_name,
                                         O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                        if (sub >= 0) {
                                int k = sweep_dir(sub, path, depth + 1, sw);
                                if (k > 0)
                                        removed += k;
                        }
                } else if (type == DT_REG && pathmap_is_own_temp(de->d_name)) {
                        if (sw->keep && sw->keep(temp_job_id(de->d_name), sw->userdata))
                                continue;
                        if (unlinkat(dirfd(d), de->d_name, 0) == 0)
                                removed++;
                }
        }
        closedir(d);
        return removed;
}

int publish_sweep_keep(const char *root, publish_keep_fn keep, void *userdata)
{
        int fd = open(root, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        struct sweep sw = { .keep = keep, .userdata = userdata };

        if (fd < 0)
                return errno == ENOENT ? 0 : negative_errno();
        return sweep_dir(fd, root, 0, &sw);
}

int publish_sweep(const char *root)
{
        return publish_sweep_keep(root, NULL, NULL);
}

int publish_unlink_job_temps(const char *dir, int64_t job_id)
{
        DIR *d = opendir(dir);
        struct dirent *de;
        int removed = 0, r = 0;

        if (!d)
                return errno == ENOENT ? 0 : negative_errno();
        while ((de = readdir(d))) {
                if (temp_job_id(de->d_name) != job_id)
                        continue;
                if (unlinkat(dirfd(d), de->d_name, 0) == 0)
                        removed++;
                else if (errno != ENOENT && r == 0)
                        r = negative_errno();
        }
        closedir(d);
        return r < 0 ? r : removed;
}

int publish_file_has(const char *path, const char *sha256)
{
        _cleanup_close_ int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
        char got[HASH_HEX_SIZE];
        struct stat st;

        if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
                return 0;
        if (hash_sha256_fd(fd, 0, got) < 0)
                return 0;
        return strcmp(got, sha256) == 0;
}

int publish_unlink_own(const char *path, const char *sha256, struct publish_dirs *dirs)
{
        if (!publish_file_has(path, sha256))
                return access(path, F_OK) < 0 && errno == ENOENT ? 0 : -EEXIST;
        if (unlink(path) < 0)
                return errno == ENOENT ? 0 : negative_errno();
        return publish_dirs_add(dirs, path) < 0 ? -ENOMEM : 1;
}

int publish_unlink_replaced(const struct job_output *prev, size_t n_prev,
                            const struct job_output *now, size_t n_now, struct publish_dirs *dirs)
{
        int ret = 0;

        for (size_t i = 0; i < n_prev; i++)
                for (size_t k = 0; k < n_now; k++) {
                        int r;

                        if (strcmp(prev[i].variant, now[k].variant) != 0 ||
                            strcmp(prev[i].path, now[k].path) == 0)
                                continue;
                        r = publish_unlink_own(prev[i].path, prev[i].sha256, dirs);
                        if (r < 0 && r != -EEXIST && ret == 0)
                                ret = r;
                }
        return ret;
}
