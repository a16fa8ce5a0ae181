/* SPDX-License-Identifier: MIT */
/*
 * log.c - stderr logging with journald priority prefixes; see log.h.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
/* CODE_FILE= and the like are the caller's (log_job()), not this file's. */
#define SD_JOURNAL_SUPPRESS_LOCATION
#include <systemd/sd-journal.h>

#include "shared/log.h"

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

/*
 * Rewrites buf (NUL-terminated, `size` bytes in all) so that it is one line: each control
 * character but tab (C0 and DEL: a newline or carriage return in a file name, an escape
 * sequence) becomes "\xNN". An upload named "a\n<0>forged" would otherwise write a line of
 * its own, which journald (reading the "<N>" prefix) or a reader of the log takes for one of
 * imgd's. What does not fit is cut.
 */
static void one_line(char *buf, size_t size)
{
        char out[4096];
        size_t n = 0;

        if (!strpbrk(buf, "\x01\x02\x03\x04\x05\x06\x07\x08\n\v\f\r\x0e\x0f\x10\x11"
                          "\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f\x7f"))
                return;
        for (const unsigned char *p = (const unsigned char *)buf; *p && n + 5 < sizeof out; p++) {
                if ((*p < 0x20 && *p != '\t') || *p == 0x7f)
                        n += (size_t)snprintf(out + n, sizeof out - n, "\\x%02x", *p);
                else
                        out[n++] = (char)*p;
        }
        out[n] = '\0';
        snprintf(buf, size, "%s", out);
}

int log_internal(int level, int error, const char *fmt, ...)
{
        static const char *const names[] = {
                [LOG_EMERG] = "emergency", [LOG_ALERT] = "alert",     [LOG_CRIT] = "critical",
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
        one_line(buf, sizeof buf);

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

static const struct {
        const char *name;
        const char *message_id; /* made once with systemd-id128 new; never change one */
} job_events[_LOG_JOB_EVENT_MAX] = {
        [LOG_JOB_QUEUED] = { "queued", "b3e2289ec1534f428e59b154bf670195" },
        [LOG_JOB_DONE] = { "done", "73e4f80e147c457693a399f5f03c80cf" },
        [LOG_JOB_RETRY] = { "retry", "1d6ffde6848b4711851b2f7ebb370e15" },
        [LOG_JOB_DEAD] = { "dead", "233807dbbf69464690c61f4717262301" },
        [LOG_JOB_RELEASED] = { "released", "bf58606c59dc49eea08826d2e24fb2d9" },
        [LOG_JOB_CANCELLED] = { "cancelled", "00533d2d30af430b8acdaeef4df592a9" },
};

const char *log_job_event_name(enum log_job_event event)
{
        return (unsigned)event < _LOG_JOB_EVENT_MAX ? job_events[event].name : NULL;
}

const char *log_job_message_id(enum log_job_event event)
{
        return (unsigned)event < _LOG_JOB_EVENT_MAX ? job_events[event].message_id : NULL;
}

const char *log_code_file(const char *file)
{
        static const char *const roots[] = { "src/", "include/", "tests/" };
        const char *best = NULL;

        if (!file)
                return "";
        /* The last "/src/" (or "src/" at the start) in the path, and so on. */
        for (size_t i = 0; i < ELEMENTSOF(roots); i++)
                for (const char *p = file; (p = strstr(p, roots[i])); p++)
                        if ((p == file || p[-1] == '/') && (!best || p > best))
                                best = p;
        return best ? best : file;
}

/* Appends NAME=value (printf-style) to f: one field, cut short when buf is full. */
_printf_(2, 3) static void add_field(struct log_job_fields *f, const char *fmt, ...)
{
        size_t used = 0, room;
        char *at;
        va_list ap;
        int k;

        if (f->n > 0)
                used = (size_t)((char *)f->iov[f->n - 1].iov_base - f->buf) +
                       f->iov[f->n - 1].iov_len;
        if (f->n >= LOG_JOB_FIELDS_MAX || used >= sizeof f->buf)
                return;
        at = f->buf + used;
        room = sizeof f->buf - used;
        va_start(ap, fmt);
        k = vsnprintf(at, room, fmt, ap);
        va_end(ap);
        if (k < 0)
                return;
        f->iov[f->n].iov_base = at;
        f->iov[f->n].iov_len = (size_t)k < room ? (size_t)k : room - 1;
        f->n++;
}

int log_job_fields(struct log_job_fields *f, int level, const char *program,
                   enum log_job_event event, int64_t job_id, const char *source,
                   const char *pipeline, const struct log_site *site, const char *message)
{
        if ((unsigned)event >= _LOG_JOB_EVENT_MAX)
                return -EINVAL;
        f->n = 0;
        add_field(f, "MESSAGE=%s", message ? message : "");
        add_field(f, "MESSAGE_ID=%s", job_events[event].message_id);
        add_field(f, "PRIORITY=%i", level);
        add_field(f, "SYSLOG_IDENTIFIER=%s", program ? program : "");
        add_field(f, "IMGD_EVENT=%s", job_events[event].name);
        add_field(f, "IMGD_JOB_ID=%lld", (long long)job_id);
        add_field(f, "IMGD_SOURCE=%s", source ? source : "");
        if (pipeline)
                add_field(f, "IMGD_PIPELINE=%s", pipeline);
        if (site) {
                add_field(f, "CODE_FILE=%s", log_code_file(site->file));
                add_field(f, "CODE_LINE=%i", site->line);
                add_field(f, "CODE_FUNC=%s", site->func ? site->func : "");
        }
        return (int)f->n;
}

int log_job_internal(int level, enum log_job_event event, int64_t job_id, const char *source,
                     const char *pipeline, const struct log_site *site, const char *fmt, ...)
{
        struct log_job_fields f;
        char buf[4096];
        va_list ap;

        if (level > log_max_level)
                return 0;
        va_start(ap, fmt);
        vsnprintf(buf, sizeof buf, fmt, ap);
        va_end(ap);
        one_line(buf, sizeof buf); /* MESSAGE= too; IMGD_SOURCE= keeps the name's bytes */
        if (!log_to_journal ||
            log_job_fields(&f, level, log_program, event, job_id, source, pipeline, site, buf) <
                    0 ||
            sd_journal_sendv(f.iov, (int)f.n) < 0)
                return log_internal(level, 0, "%s", buf);
        return 0;
}
