/* SPDX-License-Identifier: MIT */
/*
 * lockfile.h - one imgd per state directory and per socket. A lock file is an ordinary file
 * (created if missing, never removed: removing it would let a second process lock a new
 * file while the first still holds the old one) on which the holder keeps an exclusive
 * flock() for as long as it runs, with its pid written inside so that a refused process can
 * name the holder. The descriptor is close-on-exec, so worker and hook processes never hold
 * the lock; the kernel drops it when the holder exits, however it exits, so there is no stale
 * lock to clean up after a crash.
 */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

typedef struct lockfile lockfile;

/*
 * Takes the lock on `path` without waiting for a live holder (a lock whose recorded holder
 * is dead is waited for up to 2 s: a child that holder forked lets go of it when it execs or
 * exits). Returns 0 and *ret (owned by the caller; the
 * lock is held until lockfile_free()); -EWOULDBLOCK when another process holds it, with that
 * process's pid in *ret_holder (0 when it cannot be told: it has not written it yet, or it
 * is in another pid namespace); or another negative errno (open, flock, write). ret_holder
 * may be NULL. Nothing is changed on failure, except that a missing file is created.
 */
int lockfile_take(const char *path, lockfile **ret, pid_t *ret_holder);

/* Whether `path` names the file locked by l (the same inode): taking it again would fail
 * against l itself. False when path does not exist. */
bool lockfile_same_file(const lockfile *l, const char *path);

/* Empties the file (the pid is no longer true) and releases the lock. Accepts NULL; returns
 * NULL. */
lockfile *lockfile_free(lockfile *l);
