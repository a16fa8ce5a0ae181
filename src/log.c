/* SPDX-License-Identifier: MIT */
/*
 * log.c - stderr logging with journald priority prefixes; see log.h.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <systemd/sd-journal.h>

#include "imgd/log.h"

static const char *log_program = "imgd";
static int log_max_level = LOG_INFO;
static bool log_to_journal;

static bool stderr_is_journal(void)
{
        const char *e = getenv("JOURNAL_STREAM");
        unsigned long long dev, ino;
        struct stat st;

        if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2)
                return false;
        if (fstat(STDERR_FILENO, &st) < 0)
                return false;
        return st.st_dev == (dev_t)dev && st.st_ino == (ino_t)ino;
}

void log_setup(const char *program)
{
        const char *lvl = getenv("IMGD_LOG_LEVEL");

        if (program)
                log_program = program;
        log_to_journal = stderr_is_journal();
        if (lvl && strcmp(lvl, "debug") == 0)
                log_max_level = LOG_DEBUG;
}

void log_set_max_level(int level)
{
        log_max_level = level;
}

int log_get_max_level(void)
{
        return log_max_level;
}

int log_internal(int level, int error, const char *fmt, ...)
{
        static const char *const names[] = {
                [LOG_EMERG] = "emergency", [LOG_ALERT] = "alert", [LOG_CRIT] = "critical",
                [LOG_ERR] = "error",       [LOG_WARNING] = "warning", [LOG_NOTICE] = "notice",
                [LOG_INFO] = "info",       [LOG_DEBUG] = "debug",
        };
        int saved = errno;
        char buf[4096];
        va_list ap;

        if (error < 0)
                error = -error;
        if (level > log_max_level)
                goto out;

        errno = error ? error : saved;
        va_start(ap, fmt);
        vsnprintf(buf, sizeof buf, fmt, ap);
        va_end(ap);

        if (log_to_journal)
                fprintf(stderr, "<%d>%s\n", level, buf);
        else if (level <= LOG_WARNING)
                fprintf(stderr, "%s: %s: %s\n", log_program, names[level & 7], buf);
        else
                fprintf(stderr, "%s: %s\n", log_program, buf);
out:
        errno = saved;
        return -error;
}

int log_job(int level, int64_t job_id, const char *source, const char *variant, const char *fmt,
            ...)
{
        char buf[4096];
        va_list ap;

        if (level > log_max_level)
                return 0;
        va_start(ap, fmt);
        vsnprintf(buf, sizeof buf, fmt, ap);
        va_end(ap);
        if (!log_to_journal)
                return log_internal(level, 0, "%s", buf);
        if (variant)
                sd_journal_send("MESSAGE=%s", buf, "PRIORITY=%i", level, "SYSLOG_IDENTIFIER=%s",
                                log_program, "JOB_ID=%lld", (long long)job_id, "SOURCE=%s",
                                source ? source : "", "VARIANT=%s", variant, NULL);
        else
                sd_journal_send("MESSAGE=%s", buf, "PRIORITY=%i", level, "SYSLOG_IDENTIFIER=%s",
                                log_program, "JOB_ID=%lld", (long long)job_id, "SOURCE=%s",
                                source ? source : "", NULL);
        return 0;
}
