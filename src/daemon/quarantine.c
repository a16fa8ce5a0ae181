/* SPDX-License-Identifier: MIT */
/*
 * quarantine.c - dead jobs' sources moved aside and back; see quarantine.h.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "daemon/publish.h"
#include "daemon/quarantine.h"
#include "daemon/source.h"
#include "shared/hash.h"
#include "shared/log.h"
#include "shared/macro.h"

char *quarantine_path(const struct watch_config *wc, const char *source_path)
{
        char *dest = NULL;
        size_t n;

        if (!wc || !wc->quarantine)
                return NULL;
        n = strlen(wc->path);
        if (strncmp(source_path, wc->path, n) != 0 || source_path[n] != '/')
                return NULL;
        if (asprintf(&dest, "%s%s", wc->quarantine, source_path + n) < 0)
                return NULL;
        return dest;
}

/* mkdir -p (durably, mode 0750) of the directory that holds path; logs why it failed. */
static int make_parents(const struct job *job, const char *path)
{
        _cleanup_free_ char *dir = strdup(path);
        char *slash = dir ? strrchr(dir, '/') : NULL;
        int r;

        if (!slash)
                return -ENOMEM;
        if (slash == dir)
                return 0;
        *slash = '\0';
        r = publish_mkdir_parents(dir, 0750);
        if (r < 0)
                log_warning_errno(r, "job %" PRId64 ": cannot create %s: %s", job->id, dir,
                                  strerror(-r));
        return r;
}

/*
 * True if the file at the job's source path is still the one the job was made of: the size,
 * mtime and inode intake recorded, or failing that the same SHA-256. False when it is gone
 * or something else took its place (an upload that replaced it while the job ran).
 */
static bool source_is_jobs(const struct job *job, uint64_t max_file_bytes)
{
        _cleanup_close_ int fd = -1;
        char sha[HASH_HEX_SIZE];
        struct stat st;

        if (lstat(job->source_path, &st) < 0 || !S_ISREG(st.st_mode))
                return false;
        if ((uint64_t)st.st_size == job->size && (uint64_t)st.st_ino == job->ino &&
            source_mtime_ns(&st) == job->mtime_ns)
                return true;
        fd = source_open(job->source_path, &st);
        if (fd < 0 || hash_sha256_fd(fd, max_file_bytes, sha) < 0)
                return false;
        return strcmp(sha, job->sha256) == 0;
}

char *quarantine_move(const struct watch_config *wc, const struct job *job, uint64_t max_file_bytes)
{
        _cleanup_free_ char *dest = quarantine_path(wc, job->source_path);

        if (!dest)
                return NULL;
        if (!source_is_jobs(job, max_file_bytes)) {
                log_notice("job %" PRId64 ": %s is no longer the file this job failed on; "
                           "not moved to quarantine",
                           job->id, job->source_path);
                return NULL;
        }
        if (make_parents(job, dest) < 0)
                return NULL;
        if (rename(job->source_path, dest) < 0) {
                log_warning_errno(errno, "job %" PRId64 ": quarantine %s -> %s: %m%s", job->id,
                                  job->source_path, dest,
                                  errno == EXDEV ? " (the quarantine folder must be on the "
                                                   "upload folder's file system)"
                                                 : "");
                return NULL;
        }
        log_notice("job %" PRId64 ": moved %s to quarantine %s", job->id, job->source_path, dest);
        return TAKE_PTR(dest);
}

void quarantine_restore(const struct watch_config *wc, const struct job *job)
{
        _cleanup_free_ char *from = quarantine_path(wc, job->source_path);
        struct stat st;

        if (!from || lstat(job->source_path, &st) == 0 || lstat(from, &st) < 0 ||
            make_parents(job, job->source_path) < 0)
                return;
        if (rename(from, job->source_path) < 0)
                log_warning_errno(errno, "job %" PRId64 ": back from quarantine %s -> %s: %m",
                                  job->id, from, job->source_path);
        else
                log_notice("job %" PRId64 ": moved %s back from quarantine to %s", job->id, from,
                           job->source_path);
}
