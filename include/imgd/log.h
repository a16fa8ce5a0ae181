/* SPDX-License-Identifier: MIT */
/*
 * log.h - the daemon's and the CLI's logging. Messages go to stderr, one line each. When
 * stderr is connected to the journal (JOURNAL_STREAM matches it), lines carry a "<N>"
 * syslog priority prefix so journald files them at the right level; otherwise they carry
 * the program name. The *_errno variants set errno from their error argument so that "%m"
 * prints its text, and return the error as a negative errno, so a caller can write
 * `return log_error_errno(r, "open %s: %m", path);`.
 *
 * Library modules do not log above debug level; the layer that decides what to do logs once.
 */
#pragma once

#include <stdarg.h>
#include <stdint.h>
#include <syslog.h>

#include "macro.h"

/* Sets the program name shown in front of messages and detects the journal. */
void log_setup(const char *program);

/* Messages above this syslog level (LOG_DEBUG, LOG_INFO, ...) are dropped. */
void log_set_max_level(int level);
int log_get_max_level(void);

/* Writes one message; returns -abs(error) (or 0 when error is 0). */
int log_internal(int level, int error, const char *fmt, ...) _printf_(3, 4);

/*
 * A message about one job. Under journald it is sent with the structured fields JOB_ID=,
 * SOURCE= and (when not NULL) VARIANT=, so that `journalctl -u imgd JOB_ID=42` finds every
 * line of job 42; on a plain stderr it is the same line as log_internal() writes.
 */
int log_job(int level, int64_t job_id, const char *source, const char *variant, const char *fmt,
            ...) _printf_(5, 6);

#define log_full_errno(level, error, ...) log_internal((level), (error), __VA_ARGS__)

#define log_debug(...) log_internal(LOG_DEBUG, 0, __VA_ARGS__)
#define log_info(...) log_internal(LOG_INFO, 0, __VA_ARGS__)
#define log_notice(...) log_internal(LOG_NOTICE, 0, __VA_ARGS__)
#define log_warning(...) log_internal(LOG_WARNING, 0, __VA_ARGS__)
#define log_error(...) log_internal(LOG_ERR, 0, __VA_ARGS__)

#define log_debug_errno(e, ...) log_internal(LOG_DEBUG, (e), __VA_ARGS__)
#define log_info_errno(e, ...) log_internal(LOG_INFO, (e), __VA_ARGS__)
#define log_warning_errno(e, ...) log_internal(LOG_WARNING, (e), __VA_ARGS__)
#define log_error_errno(e, ...) log_internal(LOG_ERR, (e), __VA_ARGS__)
