/* SPDX-License-Identifier: MIT */
/*
 * fault.h - fault injection for crash and power-cut tests (after SQLite's sqlite3FaultSim).
 *
 * Compiled in only when IMGD_FAULT_INJECTION is defined (CMake option of the same name,
 * turned on by scripts/test.sh; off in installed builds, where both calls are constants):
 *
 *   fault_point("publish.after_rename")  makes the process _exit(FAULT_EXIT_STATUS) right
 *                                         there when $IMGD_FAULT names that point;
 *   fault_skip("publish.dir_fsync")       returns true when $IMGD_FAULT_SKIP names the point,
 *                                         so a test can build a deliberately broken run
 *                                         (e.g. without the directory fsync) and show that
 *                                         the power-cut test catches it;
 *   fault_delay("worker.job")             sleeps $IMGD_FAULT_DELAY_MS milliseconds (default
 *                                         1000) when $IMGD_FAULT_DELAY names the point, so a
 *                                         test can have a job still running when it acts.
 *
 * The variables hold a comma-separated list of point names. With $IMGD_FAULT_ONCE naming a
 * file, a fault point (or a delay) fires only in the first process that gets there (it
 * creates the file), so a worker fault costs one attempt instead of every attempt.
 */
#pragma once

#include <stdbool.h>

#define FAULT_EXIT_STATUS 99

#ifdef IMGD_FAULT_INJECTION
void fault_point(const char *name);
bool fault_skip(const char *name);
void fault_delay(const char *name);
#else
static inline void fault_point(const char *name)
{
        (void)name;
}
static inline bool fault_skip(const char *name)
{
        (void)name;
        return false;
}
static inline void fault_delay(const char *name)
{
        (void)name;
}
#endif
