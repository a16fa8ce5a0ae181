/* SPDX-License-Identifier: MIT */
/*
 * systemd-fixture.h - helpers of the test-systemd-* programs: the unit file systemd/imgd.service
 * read and queried (a key of a section, its words), and the real imgd started under the seccomp
 * filter that MemoryDenyWriteExecute=yes installs, with the unit's Environment=.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "testutil.h"

#define UNIT_PATH IMGD_SOURCE_DIR "/systemd/imgd.service"

/*
 * The values assigned to `key` in [section] of a unit file's text, in order, joined by a
 * space; an empty assignment resets the list, as systemd does. NULL when the key is never
 * assigned. Caller frees.
 */
char *sdfx_unit_get(const char *unit, const char *section, const char *key);

char *sdfx_read_unit(void);

#define SECCOMP_ARG2 (offsetof(struct seccomp_data, args) + 2 * sizeof(__u64))

/*
 * Installs the filter of systemd's MemoryDenyWriteExecute=yes (src/shared/seccomp-util.c,
 * seccomp_memory_deny_write_execute()): no new memory that is both writable and
 * executable, no memory made executable later. Returns 0 or -errno.
 */
int sdfx_deny_write_execute(void);

/* Sets each VAR=VALUE of the unit's Environment= (no quoting is used there). */
void sdfx_apply_unit_environment(const char *unit);

/*
 * Starts `program` (NULL: build/imgd) -v -c d->config as systemd would: with the unit's
 * Environment= when `unit` is given, under the MemoryDenyWriteExecute= filter when `mdwe`, and,
 * when `own_group`, as the leader of its own process group (as in a service's cgroup, where `kill
 * -TERM -<pgid>` reaches the daemon and every worker). Waits until the socket answers.
 */
void sdfx_start_daemon(struct tu_daemon *d, const char *program, const char *unit, bool mdwe,
                       bool own_group);

#define PIPE_1 "( { name = \"s\"; width = 64; height = 64; fit = \"cover\"; format = \"webp\"; } )"
