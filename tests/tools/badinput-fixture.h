/* SPDX-License-Identifier: MIT */
/*
 * badinput-fixture.h - helpers of the test-badinput-* programs (issue 4's untrusted-input tests
 * against the real daemon): checks collected and reported together (CHECK), the daemon under test,
 * its status and liveness, worker memory sampled, the ledger's jobs and attempts read directly,
 * and the daemon's log searched.
 */
#pragma once

#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "shared/hash.h"

#include "testutil.h"

/* One cheap variant: the battery is about inputs, not rendering. */
#define PIPE_T "( { name = \"t\"; width = 64; height = 64; fit = \"cover\"; format = \"webp\"; } )"

#define MIB (1024ULL * 1024ULL)

extern unsigned badfx_problems;

_printf_(1, 2) void badfx_problem(const char *fmt, ...);

#define CHECK(cond, ...)                                                                           \
        do {                                                                                       \
                if (!(cond))                                                                       \
                        badfx_problem(__VA_ARGS__);                                                \
        } while (0)

void badfx_end_checks(const char *test);

/* The daemon of the running test, stopped and removed by badfx_teardown() even when an assertion
 * ended the test early (so no daemon outlives a failed test). Static storage: the test's
 * stack is gone by then. */
extern struct tu_daemon *badfx_current;

struct tu_daemon *badfx_daemon_new(void);

int badfx_teardown(void **state);

/* CRC-32 of PNG chunks (ISO 3309, reflected polynomial 0xedb88320). */
uint32_t badfx_crc32_png(const unsigned char *p, size_t n);

void badfx_put_be32(unsigned char *p, uint32_t v);

/* Sets a PNG's IHDR to w x h and recomputes the chunk's CRC, so the header is valid. */
bool badfx_png_patch_ihdr(unsigned char *p, size_t n, uint32_t w, uint32_t h);

/* Sets the frame size in a JPEG's SOFn segment (baseline, progressive, ...). */
bool badfx_jpeg_patch_sof(unsigned char *p, size_t n, unsigned w, unsigned h);

/* Sets a lossy WebP's size to w x h (at most 16383 each): the VP8X canvas when there is
 * one, and the VP8 frame header (14 bits each). */
bool badfx_webp_patch_size(unsigned char *p, size_t n, unsigned w, unsigned h);

bool badfx_daemon_alive(struct tu_daemon *d, int *ret_status);

void badfx_print_log_tail(struct tu_daemon *d, size_t bytes);

void badfx_assert_daemon_alive(struct tu_daemon *d, const char *when);

/* `imgctl status --json`, which must answer; its latency in *ret_us when not NULL. */
json_t *badfx_status_json(struct tu_daemon *d, int64_t *ret_us);

/* VmHWM (peak resident set) of a process in bytes, 0 if it cannot be read. */
uint64_t badfx_vmhwm_of(pid_t pid);

/* The most any worker was seen to use: VmHWM from /proc (live workers) and the daemon's
 * own status (workers.list[].peak_rss, sampled by the daemon while jobs run). */
struct memory {
        uint64_t hwm;
        uint64_t status_peak;
};

void badfx_sample_memory(struct tu_daemon *d, json_t *status, struct memory *m);

sqlite3 *badfx_ledger_open(struct tu_daemon *d);

sqlite3_stmt *badfx_prepare(sqlite3 *db, const char *sql);

int64_t badfx_query_int(sqlite3 *db, const char *sql);

/* The latest job of a source path. */
struct job_row {
        int64_t id;
        char state[16];
        int attempts;
        char *error; /* NULL when none */
        char *sha;
        int64_t created_us, updated_us, finished_us;
        int n_errors; /* rows in job_errors */
        char *errors; /* every attempt's error, joined with " | " */
        int n_outputs;
        char *output; /* the first output's path */
};

void badfx_job_row_clear(struct job_row *j);

char *badfx_dup_col(sqlite3_stmt *st, int col);

/* Returns false when the path has no job. */
bool badfx_job_of(sqlite3 *db, const char *path, struct job_row *j);

/* Attempts seen running: (job, attempt) -> the earliest updated_us seen (the claim). */
struct attempt {
        int64_t id;
        int attempt;
        int64_t start_us;
};

struct attempts {
        struct attempt *v;
        size_t n;
};

unsigned badfx_log_count(struct tu_daemon *d, const char *text);

void badfx_rename_or_fail(const char *from, const char *to);

/* Waits until the job of `path` is done or dead (or timeout_ms); returns the ms it took
 * from t0_us, or -1. Samples worker memory meanwhile when m is not NULL. */
int64_t badfx_wait_final(struct tu_daemon *d, sqlite3 *db, const char *path, int64_t t0_us,
                         int timeout_ms, struct memory *m, struct job_row *ret);

void *badfx_read_or_fail(const char *path, size_t *ret_len);
