/* SPDX-License-Identifier: MIT */
/*
 * log.h - the daemon's and the CLI's logging. Messages go to stderr, one line each (control
 * characters in them, say a newline in a file name, are written as "\xNN"). When
 * stderr is connected to the journal (JOURNAL_STREAM matches it), lines carry a "<N>"
 * syslog priority prefix so journald files them at the right level; otherwise they carry
 * the program name. The *_errno variants set errno from their error argument so that "%m"
 * prints its text, and return the error as a negative errno, so a caller can write
 * `return log_error_errno(r, "open %s: %m", path);`. Messages about one job (log_job()) go
 * to the journal with structured fields of imgd's own (IMGD_JOB_ID=, ...), a MESSAGE_ID= for
 * each kind, and the caller's CODE_FILE=, CODE_LINE= and CODE_FUNC=.
 *
 * Library modules do not log above debug level; the layer that decides what to do logs once.
 */
#pragma once

#include <stdarg.h>
#include <stdint.h>
#include <sys/uio.h>
#include <syslog.h>

#include "shared/macro.h"

/* Sets the program name shown in front of messages and detects the journal. */
void log_setup(const char *program);

/* Messages above this syslog level (LOG_DEBUG, LOG_INFO, ...) are dropped. */
void log_set_max_level(int level);
int log_get_max_level(void);

/* Writes one message; returns -abs(error) (or 0 when error is 0). */
int log_internal(int level, int error, const char *fmt, ...) _printf_(3, 4);

/* The kinds of job messages, each with its own MESSAGE_ID= (log_job_message_id()). */
enum log_job_event {
        LOG_JOB_QUEUED,    /* a file became a job */
        LOG_JOB_DONE,      /* its outputs are published */
        LOG_JOB_RETRY,     /* an attempt failed; it is tried again after a backoff */
        LOG_JOB_DEAD,      /* it failed for good */
        LOG_JOB_RELEASED,  /* handed back without using an attempt (the environment failed) */
        LOG_JOB_CANCELLED, /* superseded by newer content, or cancelled */
        _LOG_JOB_EVENT_MAX,
};

/* "queued", "done", ...: the IMGD_EVENT= value of a kind; NULL for one out of range. */
const char *log_job_event_name(enum log_job_event event);

/* The MESSAGE_ID= of a kind: 32 lowercase hex digits, fixed for good (journalctl
 * MESSAGE_ID=... finds every message of that kind); NULL for one out of range. */
const char *log_job_message_id(enum log_job_event event);

/* A source file name as CODE_FILE= gives it: from the last "src/", "include/" or "tests/"
 * on (a build's absolute path stripped), else the name itself. Points into `file`. */
const char *log_code_file(const char *file);

#define LOG_JOB_FIELDS_MAX 12

/* The journal fields of one job message: iov[0..n) point into buf. */
struct log_job_fields {
        struct iovec iov[LOG_JOB_FIELDS_MAX];
        size_t n;
        char buf[8192];
};

/* Where a message is written in the source: __FILE__, __LINE__, __func__. */
struct log_site {
        const char *file;
        int line;
        const char *func;
};

/*
 * Fills *f with the journal fields of a job message, in this order: MESSAGE=, MESSAGE_ID=,
 * PRIORITY=, SYSLOG_IDENTIFIER=, IMGD_EVENT=, IMGD_JOB_ID=, IMGD_SOURCE=, IMGD_PIPELINE=
 * (only when `pipeline` is not NULL), CODE_FILE= (log_code_file() of site->file),
 * CODE_LINE=, CODE_FUNC=. imgd's own names: JOB_ID= and the like are not journald's to
 * give away. A field too long for the buffer is cut short. Returns the number of fields,
 * or -EINVAL for an event out of range.
 */
int log_job_fields(struct log_job_fields *f, int level, const char *program,
                   enum log_job_event event, int64_t job_id, const char *source,
                   const char *pipeline, const struct log_site *site, const char *message);

/* log_job()'s function; call it through the macro, which passes the call site. */
int log_job_internal(int level, enum log_job_event event, int64_t job_id, const char *source,
                     const char *pipeline, const struct log_site *site, const char *fmt, ...)
        _printf_(7, 8);

/*
 * A message about one job, of a kind (enum log_job_event). Under journald it is sent with
 * the structured fields of log_job_fields(), CODE_FILE=/CODE_LINE=/CODE_FUNC= naming the
 * caller, so that `journalctl -u imgd IMGD_JOB_ID=42` finds every line of job 42 and
 * `journalctl MESSAGE_ID=<log_job_message_id(LOG_JOB_DEAD)>` every job that failed for good;
 * on a plain stderr it is the same line as log_internal() writes. `pipeline` may be NULL.
 */
#define log_job(level, event, job_id, source, pipeline, ...)                                       \
        log_job_internal((level), (event), (job_id), (source), (pipeline),                         \
                         &(const struct log_site){ __FILE__, __LINE__, __func__ }, __VA_ARGS__)

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
