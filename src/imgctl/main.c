/* SPDX-License-Identifier: MIT */
/*
 * main.c - imgctl, the command-line client of imgd's control socket: status, jobs, show, wait,
 * retry, cancel, pause, resume, drain, enqueue, reload, metrics, events, top, verify.
 *
 * It finds the socket (-s, else the "socket" setting of the configuration named by -c, else
 * $IMGD_SOCKET, else CONFIG_DEFAULT_SOCKET), connects, and sends one request line per
 * command over one connection (wait and drain send one every 100 ms, top every second).
 * Every read and write has a deadline of 10 s (events waits for events as long as it
 * runs); an answer is one line of at most PROTO_MAX_LINE bytes, parsed with the same codec
 * as the daemon's (proto.h). It never touches the ledger itself: verify reads the output
 * tree and asks imgd ("show") for the ledger's record.
 *
 * Everything printed that came from the daemon (file names, error texts) is stripped of
 * control characters first, so a file name cannot play tricks on a terminal.
 *
 * Exit status: 0 success; 1 the command failed (imgd answered with an error, wait timed
 * out, status found an alert active, verify found a problem); 2 usage error; 3 imgd could not be
 * reached (or its configuration could not be read, or its answer was not understood); 4 the
 * command needs the operator role and the user has the read-only one (read_group).
 */
#include <assert.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <langinfo.h>
#include <limits.h>
#include <locale.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>
#include <wchar.h>

#include "shared/config.h"
#include "shared/hash.h"
#include "shared/macro.h"
#include "shared/pathmap.h"
#include "shared/proto.h"

enum {
        EXIT_OK = 0,
        EXIT_FAILED = 1,
        EXIT_USAGE = 2,
        EXIT_UNREACHABLE = 3,
        EXIT_FORBIDDEN = 4, /* the command needs the operator role; this user has read-only */
};

#define IO_TIMEOUT_MS 10000
#define WAIT_POLL_MS 100
#define LIST_MAX 10000
#define ERROR_COLUMN_CHARS 48

static const char *program = "imgctl";

/* ---- small helpers ------------------------------------------------------------------- */

static void errorf(const char *fmt, ...) _printf_(1, 2);
static void errorf(const char *fmt, ...)
{
        va_list ap;

        fprintf(stderr, "%s: ", program);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
}

/* A CLI has nothing better to do when memory runs out than to say so and stop. */
static _Noreturn void oom(void)
{
        errorf("out of memory");
        exit(EXIT_FAILED);
}

static char *xstrdup(const char *s)
{
        char *p = strdup(s);

        if (!p)
                oom();
        return p;
}

static char *xasprintf(const char *fmt, ...) _printf_(1, 2);
static char *xasprintf(const char *fmt, ...)
{
        va_list ap;
        char *s;
        int r;

        va_start(ap, fmt);
        r = vasprintf(&s, fmt, ap);
        va_end(ap);
        if (r < 0)
                oom();
        return s;
}

/*
 * The character at s (not at its end) as a terminal shows it: returns its length in bytes and
 * puts in shown (NUL-terminated) what to print and in *ret_cols its display columns
 * (wcwidth() under the UTF-8 locale main() sets): the character itself; "?" (1 column) for a
 * control character (C0, DEL, C1); "\xNN" (4 columns) for a byte that does not begin a valid
 * character.
 */
static size_t text_char(const char *s, char shown[static MB_LEN_MAX + 1], size_t *ret_cols)
{
        mbstate_t st = { 0 };
        wchar_t wc;
        size_t k = mbrtowc(&wc, s, strnlen(s, MB_LEN_MAX), &st);
        int w;

        if (k == (size_t)-1 || k == (size_t)-2 || k == 0) {
                snprintf(shown, MB_LEN_MAX + 1, "\\x%02x", (unsigned char)*s);
                *ret_cols = 4;
                return 1;
        }
        if (wc < 0x20 || wc == 0x7f || (wc >= 0x80 && wc <= 0x9f)) {
                strcpy(shown, "?");
                *ret_cols = 1;
                return k;
        }
        memcpy(shown, s, k);
        shown[k] = '\0';
        w = wcwidth(wc);
        *ret_cols = w < 0 ? 1 : (size_t)w;
        return k;
}

/* Display columns of s as clean_text() prints it, for column widths. */
static size_t text_width(const char *s)
{
        char shown[MB_LEN_MAX + 1];
        size_t n = 0, cols;

        while (*s) {
                s += text_char(s, shown, &cols);
                n += cols;
        }
        return n;
}

/*
 * A copy of s fit for a terminal (text_char()): control characters become '?', bytes that
 * are not UTF-8 "\xNN". With max_cols > 0, a text wider than max_cols display columns is cut
 * to at most max_cols, the last three of them "...".
 */
static char *clean_text(const char *s, size_t max_cols)
{
        const char *p = s ? s : "";
        size_t keep = SIZE_MAX, used = 0, len = strlen(p);
        char shown[MB_LEN_MAX + 1];
        char *out, *q;

        if (max_cols > 3 && text_width(p) > max_cols)
                keep = max_cols - 3;
        /* At worst every byte becomes "\xNN". */
        out = q = malloc(4 * len + 4);
        if (!out)
                oom();
        while (*p) {
                size_t cols, k = text_char(p, shown, &cols);

                if (used + cols > keep)
                        break;
                q = stpcpy(q, shown);
                used += cols;
                p += k;
        }
        if (*p)
                q = stpcpy(q, "...");
        *q = '\0';
        return out;
}

/* "2026-11-23 10:04:12" in local time, or "-" for 0. */
static void format_time(int64_t us, char *buf, size_t size)
{
        time_t t = (time_t)(us / 1000000);
        struct tm tm;

        if (us <= 0 || !localtime_r(&t, &tm) || strftime(buf, size, "%Y-%m-%d %H:%M:%S", &tm) == 0)
                snprintf(buf, size, "-");
}

/* "42s", "3m", "2h 5m", "3d 4h". */
static void format_uptime(int64_t s, char *buf, size_t size)
{
        if (s < 0)
                s = 0;
        if (s < 60)
                snprintf(buf, size, "%" PRId64 "s", s);
        else if (s < 3600)
                snprintf(buf, size, "%" PRId64 "m", s / 60);
        else if (s < 86400)
                snprintf(buf, size, "%" PRId64 "h %" PRId64 "m", s / 3600, s / 60 % 60);
        else
                snprintf(buf, size, "%" PRId64 "d %" PRId64 "h", s / 86400, s / 3600 % 24);
}

/*
 * The predicted time to drain the backlog, from the "health" object of status ("2m", "0s"),
 * or "never" when it is not draining (drain_s is null, or missing); returns false then.
 */
static bool format_drain(const json_t *health_obj, char *buf, size_t size)
{
        const json_t *drain = json_object_get(health_obj, "drain_s");

        if (!json_is_number(drain)) {
                snprintf(buf, size, "never");
                return false;
        }
        format_uptime((int64_t)ceil(json_number_value(drain)), buf, size);
        return true;
}

/* "512 B", "12.1 KiB", "3.4 MiB". */
static void format_bytes(uint64_t n, char *buf, size_t size)
{
        static const char *const units[] = { "KiB", "MiB", "GiB", "TiB" };
        double v = (double)n;
        size_t u = 0;

        if (n < 1024) {
                snprintf(buf, size, "%" PRIu64 " B", n);
                return;
        }
        v /= 1024;
        while (v >= 1024 && u + 1 < ELEMENTSOF(units)) {
                v /= 1024;
                u++;
        }
        snprintf(buf, size, "%.1f %s", v, units[u]);
}

static int64_t get_int(const json_t *o, const char *key)
{
        return (int64_t)json_integer_value(json_object_get(o, key));
}

/*
 * Whether a status answer says imgd has nothing left to do: no job queued (but held, waiting
 * for its watch to be configured again), running or waiting for a retry, no upload reported
 * by the kernel that it has not taken in yet (a file dropped just before the question is not
 * a job yet, but it will be), none waiting for its intake to be retried.
 */
static bool status_idle(const json_t *status)
{
        const json_t *jobs = json_object_get(status, "jobs");

        return get_int(jobs, "queued") - get_int(jobs, "held") + get_int(jobs, "running") +
                               get_int(jobs, "retry") ==
                       0 &&
               !json_is_true(json_object_get(status, "intake_pending")) &&
               get_int(status, "intake_retry") == 0;
}

/* The string at key, or `fallback` when it is missing or not a string. */
static const char *get_str(const json_t *o, const char *key, const char *fallback)
{
        const char *s = json_string_value(json_object_get(o, key));

        return s ? s : fallback;
}

/* ---- tables --------------------------------------------------------------------------- */

struct table {
        size_t n_cols, n_rows, alloc;
        char **cells; /* row-major, cleaned copies */
};

static void table_init(struct table *t, size_t n_cols)
{
        *t = (struct table){ .n_cols = n_cols };
}

/* Adds a row of n_cols strings (NULL prints as "-"). The first row is the header. */
static void table_add(struct table *t, ...)
{
        va_list ap;

        if (t->n_rows == t->alloc) {
                size_t a = t->alloc ? t->alloc * 2 : 16;
                char **c = reallocarray(t->cells, a * t->n_cols, sizeof *c);

                if (!c)
                        oom();
                t->cells = c;
                t->alloc = a;
        }
        va_start(ap, t);
        for (size_t i = 0; i < t->n_cols; i++) {
                const char *s = va_arg(ap, const char *);

                t->cells[t->n_rows * t->n_cols + i] = clean_text(s ? s : "-", 0);
        }
        va_end(ap);
        t->n_rows++;
}

static void table_print(const struct table *t, const char *indent)
{
        size_t width[16] = { 0 };

        assert(t->n_cols <= ELEMENTSOF(width));
        for (size_t r = 0; r < t->n_rows; r++)
                for (size_t c = 0; c < t->n_cols; c++) {
                        size_t w = text_width(t->cells[r * t->n_cols + c]);

                        if (w > width[c])
                                width[c] = w;
                }
        for (size_t r = 0; r < t->n_rows; r++) {
                size_t last = t->n_cols - 1;

                /* No padding after the last cell that has text. */
                while (last > 0 && !t->cells[r * t->n_cols + last][0])
                        last--;
                fputs(indent, stdout);
                for (size_t c = 0; c <= last; c++) {
                        const char *s = t->cells[r * t->n_cols + c];

                        fputs(s, stdout);
                        if (c == last)
                                break;
                        for (size_t k = text_width(s); k < width[c] + 2; k++)
                                fputc(' ', stdout);
                }
                fputc('\n', stdout);
        }
}

static void table_clear(struct table *t)
{
        for (size_t i = 0; i < t->n_rows * t->n_cols; i++)
                free(t->cells[i]);
        free(t->cells);
        *t = (struct table){ 0 };
}

/* ---- talking to imgd ------------------------------------------------------------------ */

struct ctl {
        const char *socket;
        int64_t connect_wait_us; /* --connect-timeout: how long to retry an absent socket */
        int fd;
        char *buf;   /* PROTO_MAX_LINE + 1 bytes: one answer and its newline */
        size_t len;  /* bytes in buf */
        size_t used; /* of which the line returned last, with its newline */
};

/*
 * Connects to the socket; while it does not exist or refuses (imgd starting or restarting),
 * tries again every 50 ms for up to ctl->connect_wait_us. Returns 0, or a negative errno with
 * the message in *ret_error: "cannot connect to PATH: CAUSE (HINT)".
 */
static int ctl_connect(struct ctl *ctl, char **ret_error)
{
        struct sockaddr_un addr = { .sun_family = AF_UNIX };
        struct timeval tv = { .tv_sec = IO_TIMEOUT_MS / 1000 };
        _cleanup_close_ int fd = -1;
        const char *hint = "";
        int r;

        if (strlen(ctl->socket) >= sizeof addr.sun_path) {
                *ret_error = xasprintf("cannot connect to %s: path too long (at most %zu bytes)",
                                       ctl->socket, sizeof addr.sun_path - 1);
                return -ENAMETOOLONG;
        }
        memcpy(addr.sun_path, ctl->socket, strlen(ctl->socket) + 1);

        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
                r = negative_errno();
                *ret_error = xasprintf("cannot create a socket: %s", strerror(-r));
                return r;
        }
        /* A connect to a listener whose backlog is full would wait: bound it too. */
        (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        for (int64_t until = (int64_t)mono_usec() + ctl->connect_wait_us;;) {
                if (connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0) {
                        r = 0;
                        break;
                }
                r = negative_errno();
                if ((r != -ENOENT && r != -ECONNREFUSED) || (int64_t)mono_usec() >= until)
                        break;
                (void)usleep(50 * 1000);
        }
        if (r < 0) {
                switch (-r) {
                case ENOENT:
                case ECONNREFUSED:
                        hint = " (is imgd running?)";
                        break;
                case EACCES:
                case EPERM:
                        hint = " (imgctl must run as root or as a member of the socket's group)";
                        break;
                case EAGAIN:
                case EINPROGRESS:
                        r = -ETIMEDOUT;
                        hint = " (imgd is not accepting connections)";
                        break;
                default:
                        break;
                }
                *ret_error =
                        xasprintf("cannot connect to %s: %s%s", ctl->socket, strerror(-r), hint);
                return r;
        }
        if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) {
                r = negative_errno();
                *ret_error = xasprintf("%s: %s", ctl->socket, strerror(-r));
                return r;
        }
        ctl->fd = TAKE_FD(fd);
        return 0;
}

/* Waits until fd is ready for `events` or the deadline (monotonic µs) passes. */
static int ctl_poll(struct ctl *ctl, short events, int64_t deadline)
{
        struct pollfd p = { .fd = ctl->fd, .events = events };
        int64_t left;
        int r;

        for (;;) {
                left = deadline - (int64_t)mono_usec();
                if (left <= 0)
                        return -ETIMEDOUT;
                r = poll(&p, 1, (int)((left + 999) / 1000));
                if (r > 0)
                        return 0;
                if (r < 0 && errno != EINTR)
                        return negative_errno();
        }
}

static int ctl_send(struct ctl *ctl, const char *data, size_t n, int64_t deadline)
{
        ssize_t k;
        int r;

        while (n > 0) {
                k = send(ctl->fd, data, n, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno != EAGAIN && errno != EWOULDBLOCK)
                                return negative_errno();
                        r = ctl_poll(ctl, POLLOUT, deadline);
                        if (r < 0)
                                return r;
                        continue;
                }
                data += k;
                n -= (size_t)k;
        }
        return 0;
}

/*
 * Reads one answer line. Returns 0 with the line (NUL-terminated in place, without its
 * newline, valid until the next call) and its length, -ECONNRESET when imgd closed the
 * connection, -EMSGSIZE for an over-long line, -ETIMEDOUT, or another negative errno.
 */
static int ctl_read_line(struct ctl *ctl, int64_t deadline, char **ret_line, size_t *ret_n)
{
        const size_t size = PROTO_MAX_LINE + 1;
        char *nl;
        ssize_t k;
        int r;

        if (!ctl->buf) {
                ctl->buf = malloc(size);
                if (!ctl->buf)
                        oom();
        }
        /* Drop the previous answer. */
        memmove(ctl->buf, ctl->buf + ctl->used, ctl->len - ctl->used);
        ctl->len -= ctl->used;
        ctl->used = 0;

        for (;;) {
                nl = memchr(ctl->buf, '\n', ctl->len);
                if (nl) {
                        *nl = '\0';
                        *ret_line = ctl->buf;
                        *ret_n = (size_t)(nl - ctl->buf);
                        ctl->used = *ret_n + 1;
                        return 0;
                }
                if (ctl->len >= size)
                        return -EMSGSIZE;
                k = recv(ctl->fd, ctl->buf + ctl->len, size - ctl->len, 0);
                if (k == 0)
                        return -ECONNRESET;
                if (k > 0) {
                        ctl->len += (size_t)k;
                        continue;
                }
                if (errno == EINTR)
                        continue;
                if (errno != EAGAIN && errno != EWOULDBLOCK)
                        return negative_errno();
                r = ctl_poll(ctl, POLLIN, deadline);
                if (r < 0)
                        return r;
        }
}

/*
 * Sends one request and reads its answer. Returns 0 with the result in *ret_result (owned by
 * the caller); -EREMOTEIO when imgd answered with an error; another negative errno when imgd
 * could not be reached or not understood. On failure the message is in *ret_error.
 */
static int ctl_call(struct ctl *ctl, const json_t *req, json_t **ret_result, char **ret_error)
{
        int64_t deadline = (int64_t)mono_usec() + (int64_t)IO_TIMEOUT_MS * 1000;
        _cleanup_free_ char *line = NULL, *error = NULL;
        char *answer = NULL;
        size_t n = 0;
        int r;

        if (ctl->fd < 0) {
                r = ctl_connect(ctl, ret_error);
                if (r < 0)
                        return r;
        }

        line = proto_format_request(req);
        if (!line)
                oom();
        if (strlen(line) > PROTO_MAX_LINE + 1) {
                *ret_error = xasprintf("request too long (more than %d bytes)", PROTO_MAX_LINE);
                return -EMSGSIZE;
        }

        r = ctl_send(ctl, line, strlen(line), deadline);
        /* imgd may have answered and closed before the request arrived (a refused peer):
         * its answer is still there to read. */
        if (r >= 0 || r == -EPIPE || r == -ECONNRESET)
                r = ctl_read_line(ctl, deadline, &answer, &n);
        switch (r) {
        case 0:
                break;
        case -ETIMEDOUT:
                *ret_error = xasprintf("no answer from imgd on %s within %d s", ctl->socket,
                                       IO_TIMEOUT_MS / 1000);
                return r;
        case -ECONNRESET:
        case -EPIPE:
                *ret_error = xasprintf("imgd on %s closed the connection", ctl->socket);
                return r;
        case -EMSGSIZE:
                *ret_error = xasprintf("answer from imgd on %s is longer than %d bytes",
                                       ctl->socket, PROTO_MAX_LINE);
                return r;
        default:
                *ret_error = xasprintf("%s: %s", ctl->socket, strerror(-r));
                return r;
        }

        r = proto_parse_response(answer, n, ret_result, &error);
        if (r == -ENOMEM)
                oom();
        if (r == -EREMOTEIO) {
                *ret_error = TAKE_PTR(error);
                return r;
        }
        if (r < 0) {
                *ret_error = xasprintf("cannot understand imgd's answer: %s",
                                       error ? error : strerror(-r));
                return r;
        }
        return 0;
}

static void ctl_close(struct ctl *ctl)
{
        if (ctl->fd >= 0)
                close(ctl->fd);
        ctl->fd = -1;
        free(ctl->buf);
        ctl->buf = NULL;
        ctl->len = ctl->used = 0;
}

/* Prints a failed call's message and returns the exit status for it. */
static int call_failed(int r, const char *error)
{
        _cleanup_free_ char *clean = clean_text(error ? error : strerror(-r), 0);

        errorf("%s", clean);
        if (r == -EREMOTEIO && strncmp(clean, "permission denied: '", 20) == 0 &&
            strstr(clean, "needs the operator role"))
                return EXIT_FORBIDDEN;
        /* imgd refusing the connection is not a failed command: it was not reached. */
        if (r == -EREMOTEIO && strncmp(clean, "permission denied", 17) == 0)
                return EXIT_UNREACHABLE;
        return r == -EREMOTEIO ? EXIT_FAILED : EXIT_UNREACHABLE;
}

/* Sends a request and stores the result; returns EXIT_OK or the failure's exit status. */
static int call(struct ctl *ctl, json_t *req, json_t **ret_result)
{
        _cleanup_free_ char *error = NULL;
        int r;

        if (!req)
                oom();
        r = ctl_call(ctl, req, ret_result, &error);
        json_decref(req);
        if (r < 0)
                return call_failed(r, error);
        return EXIT_OK;
}

static int print_json(const json_t *result)
{
        if (json_dumpf(result, stdout, JSON_INDENT(2)) < 0)
                return EXIT_FAILED;
        fputc('\n', stdout);
        return EXIT_OK;
}

/* ---- help ----------------------------------------------------------------------------- */

struct command {
        const char *name;
        int (*run)(struct ctl *ctl, int argc, char **argv);
        const char *synopsis;
        const char *help;
};

static const char help_status[] =
        "    Show the daemon's state, version, process id and uptime, its configuration\n"
        "    file, whether intake is paused, the circuit breaker (and why it is open),\n"
        "    the health score and degradation level (and what drives it), the backlog\n"
        "    with the rate at which jobs finish and the predicted time to drain it, the\n"
        "    recent error rate, the active alerts, the watched folders with their output\n"
        "    folder and pipeline, the workers (how many, how many busy) and the number of\n"
        "    jobs in each state.\n"
        "\n"
        "    An alert is active while a condition of the configuration's alerts group\n"
        "    holds (imgd.conf(5)): the error rate, the number of waiting jobs or the age\n"
        "    of the oldest one over its threshold, a backlog predicted to take too long\n"
        "    to drain or not draining at all, the circuit breaker not closed, or a\n"
        "    degradation level below full; uploads waiting for their intake to be\n"
        "    retried (intake_failing), folders not watched for the inotify watch limit\n"
        "    (unwatched_folders), a job ledger its file system refuses to write\n"
        "    (ledger_failing). Each is printed on an ALERT line, and the\n"
        "    exit status is 1 while any is active, so that 'imgctl status' can serve as\n"
        "    a monitoring check (0 healthy, 1 alert, 3 imgd unreachable).\n"
        "\n"
        "    --json    print the daemon's answer as indented JSON instead (the exit\n"
        "              status is the same)\n";

static const char help_jobs[] =
        "    List jobs, most recently updated first, as a table: ID, STATE, ATTEMPTS,\n"
        "    UPDATED (local time), SOURCE and the last ERROR (shortened).\n"
        "\n"
        "    --state STATE  only jobs in STATE: queued, running, retry, done, dead or\n"
        "                   cancelled\n"
        "    --watch DIR    only jobs from the watched folder DIR\n"
        "    --since WHEN   only jobs updated since WHEN: a time ago such as 30s, 10m,\n"
        "                   2h, 1d, 1w or 1h30m, or a local date and time such as\n"
        "                   2026-11-23, 2026-11-23T10:00 or 2026-11-23T10:00:05\n"
        "                   (append Z for UTC)\n"
        "    --limit N      at most N jobs, 1 to 10000 (default 50); an answer is\n"
        "                   limited to 64 KiB, so a long list may be cut short, which\n"
        "                   imgctl then says\n"
        "    --json         print the daemon's answer as indented JSON instead\n";

static const char help_show[] =
        "    Show job JOB (its numeric ID, as listed by jobs): source, watch, pipeline,\n"
        "    output key, content SHA-256, state, attempts, times, and last error; the\n"
        "    placeholder (BlurHash, dominant colour, data: URI) where its pipeline has\n"
        "    placeholder = true; then the outputs it published (variant, format, size,\n"
        "    path) and the error of every failed attempt.\n"
        "\n"
        "    --json    print the daemon's answer as indented JSON instead\n";

static const char help_wait[] =
        "    Wait until no job is queued, running or waiting for a retry, asking the\n"
        "    daemon every 100 ms. Uploads already complete in a watched folder count\n"
        "    even before they become jobs; files still being written do not, nor do\n"
        "    jobs held because their watch is no longer configured.\n"
        "\n"
        "    --timeout SECONDS  give up after SECONDS (may have a fraction): print what\n"
        "                       is left to stderr and exit with status 1. Without it,\n"
        "                       wait as long as it takes.\n";

static const char help_retry[] =
        "    Put dead job JOB (or one held because its watch is no longer configured)\n"
        "    back in the queue, or with --dead every dead job. Its attempts start again\n"
        "    from 0; the errors of earlier attempts stay in its history (see show).\n"
        "    A cancelled job is refused: enqueue its file instead.\n"
        "\n"
        "    --dead    retry every dead job and print how many\n"
        "    --json    print the daemon's answer as indented JSON instead\n";

static const char help_cancel[] =
        "    Cancel job JOB, which must be queued, waiting for a retry or dead; a running\n"
        "    job cannot be cancelled (it publishes nothing until it is done). Its file\n"
        "    is not ignored: an event on it, enqueue or the next start's scan makes a\n"
        "    new job while it stays in the upload folder.\n"
        "\n"
        "    --json    print the daemon's answer as indented JSON instead\n";

static const char help_pause[] =
        "    Stop starting new jobs. Running jobs finish; new uploads are still recorded\n"
        "    and wait in the queue until resume.\n"
        "\n"
        "    --json    print the daemon's answer as indented JSON instead\n";

static const char help_resume[] =
        "    Start jobs again after pause or drain.\n"
        "\n"
        "    --json    print the daemon's answer as indented JSON instead\n";

static const char help_drain[] =
        "    Pause, then wait until no job is running, asking the daemon every 100 ms:\n"
        "    afterwards nothing is being rendered or published (for maintenance of the\n"
        "    output tree, or before stopping). Intake stays paused until resume.\n"
        "\n"
        "    --timeout SECONDS  give up after SECONDS: say how many jobs still run and\n"
        "                       exit with status 1 (intake stays paused)\n"
        "    --json             print {\"paused\": true, \"running\": 0} when drained\n";

static const char help_enqueue[] =
        "    Make a job of the file PATH now (relative to the current directory or\n"
        "    absolute), whether or not imgd noticed it: for files that arrived without\n"
        "    a close or rename imgd could see (a file written as an O_TMPFILE elsewhere\n"
        "    and linked in with linkat(), some network file systems).\n"
        "    PATH must be below a watched folder, as it really is (symlinks resolved),\n"
        "    and must not have a hidden or temporary name. A file whose content imgd\n"
        "    already has a job for is not processed again: its job is shown (a\n"
        "    cancelled job does not count).\n"
        "\n"
        "    --json    print the daemon's answer as indented JSON instead\n";

static const char help_reload[] =
        "    Have imgd load its configuration file again, as SIGHUP does, and wait for\n"
        "    the outcome: exit status 0 when the new configuration is in force, 1 with\n"
        "    the reason when imgd rejected it (the running configuration then stays in\n"
        "    force). The unit's ExecReload= runs it, so that 'systemctl reload imgd'\n"
        "    fails, with the reason, when the new configuration is rejected.\n"
        "\n"
        "    --json    print the daemon's answer as indented JSON instead\n";

static const char help_metrics[] =
        "    Print the daemon's metrics in the Prometheus text format: jobs by state,\n"
        "    jobs processed and failed, processing time histograms by pipeline, worker\n"
        "    restarts, queue age, workers, memory. For node_exporter's textfile\n"
        "    collector, write it to a temporary file and rename it (see README.md):\n"
        "      imgctl metrics > DIR/imgd.prom.$$ && mv DIR/imgd.prom.$$ DIR/imgd.prom\n"
        "\n"
        "    --json    print {\"text\": ...} instead\n";

static const char help_events[] =
        "    Print job transitions as they happen, one line each: queued, done (with\n"
        "    the number of outputs), retry and dead (with the error), cancelled.\n"
        "    Without --follow, stop once no job is queued, running or waiting for a\n"
        "    retry (checked every 500 ms); at once when there is nothing to wait for.\n"
        "    imgd serves at most 16 subscribers at a time; beyond that, events fails\n"
        "    with 'too many event subscribers'.\n"
        "\n"
        "    --follow  go on until interrupted\n"
        "    --json    print each event as the daemon sends it, one JSON object a line:\n"
        "              {\"v\":1,\"event\":\"done\",\"at_us\":...,\"job\":{\"id\":...,\n"
        "              \"source\":...,\"outputs\":[...]}}\n";

static const char help_top[] =
        "    A live view, refreshed every second: the daemon's state, whether intake is\n"
        "    paused, a progress bar of the backlog (jobs finished since top started\n"
        "    against those still queued, running or waiting for a retry), throughput\n"
        "    over the last 10 seconds, and what each worker is doing. Press q or\n"
        "    Ctrl-C to quit. When standard output is not a terminal, prints one summary\n"
        "    line a second instead.\n"
        "\n"
        "    --iterations N  stop after N refreshes\n";

static const char help_verify[] =
        "    Check the published outputs against their manifests and the ledger: every\n"
        "    file a manifest (*.manifest.json) lists must exist with the size and\n"
        "    SHA-256 it lists (else it is missing or altered), the ledger's record of the\n"
        "    manifest's job must agree (else a mismatch), and every other file in the\n"
        "    tree is orphaned (imgd's own temporary files aside). Checks the output\n"
        "    folders of all watches, or the folder or manifest PATH. Exit status 1 when\n"
        "    anything is wrong.\n"
        "\n"
        "    --all     every watch's output folder (the default)\n"
        "    --json    print a report object: ok, counts, and the lists of problems\n";

static const char help_help[] = "    Show this text, or the text of one COMMAND.\n";

static int run_status(struct ctl *ctl, int argc, char **argv);
static int run_jobs(struct ctl *ctl, int argc, char **argv);
static int run_show(struct ctl *ctl, int argc, char **argv);
static int run_wait(struct ctl *ctl, int argc, char **argv);
static int run_retry(struct ctl *ctl, int argc, char **argv);
static int run_cancel(struct ctl *ctl, int argc, char **argv);
static int run_pause(struct ctl *ctl, int argc, char **argv);
static int run_resume(struct ctl *ctl, int argc, char **argv);
static int run_drain(struct ctl *ctl, int argc, char **argv);
static int run_enqueue(struct ctl *ctl, int argc, char **argv);
static int run_reload(struct ctl *ctl, int argc, char **argv);
static int run_metrics(struct ctl *ctl, int argc, char **argv);
static int run_events(struct ctl *ctl, int argc, char **argv);
static int run_top(struct ctl *ctl, int argc, char **argv);
static int run_verify(struct ctl *ctl, int argc, char **argv);
static int run_help(struct ctl *ctl, int argc, char **argv);

static const struct command commands[] = {
        { "status", run_status, "status [--json]", help_status },
        { "jobs", run_jobs,
          "jobs [--state STATE] [--watch DIR] [--since WHEN] [--limit N] [--json]", help_jobs },
        { "show", run_show, "show JOB [--json]", help_show },
        { "wait", run_wait, "wait [--timeout SECONDS]", help_wait },
        { "retry", run_retry, "retry JOB|--dead [--json]", help_retry },
        { "cancel", run_cancel, "cancel JOB [--json]", help_cancel },
        { "pause", run_pause, "pause [--json]", help_pause },
        { "resume", run_resume, "resume [--json]", help_resume },
        { "drain", run_drain, "drain [--timeout SECONDS] [--json]", help_drain },
        { "enqueue", run_enqueue, "enqueue PATH [--json]", help_enqueue },
        { "reload", run_reload, "reload [--json]", help_reload },
        { "metrics", run_metrics, "metrics [--json]", help_metrics },
        { "events", run_events, "events [--follow] [--json]", help_events },
        { "top", run_top, "top [--iterations N]", help_top },
        { "verify", run_verify, "verify [PATH|--all] [--json]", help_verify },
        { "help", run_help, "help [COMMAND]", help_help },
};

static const struct command *find_command(const char *name)
{
        for (size_t i = 0; i < ELEMENTSOF(commands); i++)
                if (strcmp(commands[i].name, name) == 0)
                        return &commands[i];
        return NULL;
}

static void print_help(void)
{
        printf("Usage: %s [-c CONFIG | -s SOCKET] COMMAND [OPTIONS]\n"
               "       %s help [COMMAND]\n"
               "       %s --version\n"
               "\n"
               "Ask imgd, the image variant daemon, what it is doing and steer it, through its\n"
               "control socket. imgctl never opens the job ledger itself: every change (retry,\n"
               "cancel, pause, enqueue) is made by imgd.\n"
               "\n"
               "Commands:\n",
               program, program, program);
        for (size_t i = 0; i < ELEMENTSOF(commands); i++)
                printf("  %s\n%s\n", commands[i].synopsis, commands[i].help);
        printf("Options:\n"
               "  -c, --config FILE    read the socket path from imgd's configuration FILE\n"
               "                       (its \"socket\" setting)\n"
               "  -s, --socket PATH    use the control socket at PATH\n"
               "      --connect-timeout DURATION\n"
               "                       while the socket is missing or refuses (imgd is\n"
               "                       starting), keep trying for up to DURATION (30s, 2m;\n"
               "                       a bare number is seconds) instead of failing at once\n"
               "  -h, --help           show this text and exit\n"
               "      --version        show imgctl's version and exit\n"
               "  COMMAND --help       show the text of one command\n"
               "\n"
               "Exit status:\n"
               "  0  success\n"
               "  1  the command failed: imgd answered with an error (for example, no such\n"
               "     job), wait or drain timed out, verify found a problem, or events lost\n"
               "     its subscription\n"
               "  2  usage error: unknown command or option, missing or malformed argument\n"
               "  3  imgd could not be reached: no socket, connection refused, permission\n"
               "     denied (by the socket's mode, or by imgd: only root, imgd's user and\n"
               "     members of its control group are served), no answer within %d s, or\n"
               "     an answer imgctl does not understand; also when the configuration\n"
               "     given with -c cannot be read\n"
               "  4  permission denied for this command: it needs the operator role (root,\n"
               "     imgd's user, control_group) and you are in the read-only role\n"
               "     (read_group), which may only ask (status, jobs, show, metrics, events)\n"
               "\n"
               "Environment:\n"
               "  IMGD_SOCKET\n"
               "      the control socket to use when neither -s nor -c is given\n"
               "\n"
               "Files:\n"
               "  %s\n"
               "      the control socket imgd listens on by default; its mode is 0660, so\n"
               "      imgctl must run as its owner, as a member of its group, or as root\n"
               "  %s\n"
               "      imgd's default configuration; -c reads the \"socket\" setting of\n"
               "      this or another configuration file\n"
               "\n"
               "Examples:\n"
               "  %s status\n"
               "  %s jobs --state dead --since 1d\n"
               "  %s show 42 --json\n"
               "  %s wait --timeout 60 && echo all uploads processed\n"
               "  %s retry --dead\n"
               "  %s events --follow --json\n"
               "  %s verify --all || echo outputs changed behind imgd's back\n",
               IO_TIMEOUT_MS / 1000, CONFIG_DEFAULT_SOCKET, CONFIG_DEFAULT_PATH, program, program,
               program, program, program, program, program);
}

static void print_command_help(const struct command *c)
{
        printf("Usage: %s [-c CONFIG | -s SOCKET] %s\n\n%s", program, c->synopsis, c->help);
        printf("\nSee '%s help' for the global options, exit status and environment.\n", program);
}

/* Reports a usage error and returns EXIT_USAGE. */
static int usage_error(const char *cmd, const char *fmt, ...) _printf_(2, 3);
static int usage_error(const char *cmd, const char *fmt, ...)
{
        va_list ap;

        fprintf(stderr, "%s: ", program);
        if (cmd)
                fprintf(stderr, "%s: ", cmd);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fprintf(stderr, "\nTry '%s help%s%s'.\n", program, cmd ? " " : "", cmd ? cmd : "");
        return EXIT_USAGE;
}

/* For getopt_long's '?' and ':' results, with opterr = 0 and ':' leading optstring. */
static int option_error(const char *cmd, int c, char **argv)
{
        const char *arg = optind > 0 ? argv[optind - 1] : NULL;
        char opt[3] = { '-', (char)optopt, '\0' };
        int len;

        if (arg && strncmp(arg, "--", 2) == 0) {
                /* A long option: name it as written, without any "=value". */
                len = (int)strcspn(arg, "=");
        } else {
                arg = opt;
                len = 2;
        }
        if (c == ':')
                return usage_error(cmd, "option '%.*s' needs an argument", len, arg);
        return usage_error(cmd, "unknown option '%.*s'", len, arg);
}

/* ---- argument parsing ----------------------------------------------------------------- */

/* Parses a decimal integer in [min, max]; returns 0 or -EINVAL / -ERANGE. */
static int parse_int(const char *s, int64_t min, int64_t max, int64_t *ret)
{
        char *end;
        long long v;

        if (!s || !*s)
                return -EINVAL;
        errno = 0;
        v = strtoll(s, &end, 10);
        if (*end != '\0' || end == s)
                return -EINVAL;
        if (errno == ERANGE || v < min || v > max)
                return -ERANGE;
        *ret = v;
        return 0;
}

/* "30s", "10m", "2h", "1d", "1w", "1h30m" (a bare number is seconds) -> microseconds. */
static int parse_duration(const char *s, int64_t *ret_us)
{
        static const struct {
                char unit;
                int64_t seconds;
        } units[] = { { 's', 1 }, { 'm', 60 }, { 'h', 3600 }, { 'd', 86400 }, { 'w', 7 * 86400 } };
        const int64_t max_s = INT64_C(100) * 366 * 86400;
        int64_t total = 0;
        const char *p = s;

        if (!*p)
                return -EINVAL;
        while (*p) {
                int64_t mult = 0;
                uint64_t v = 0;

                if (*p < '0' || *p > '9')
                        return -EINVAL;
                while (*p >= '0' && *p <= '9') {
                        v = v * 10 + (uint64_t)(*p++ - '0');
                        if (v > (uint64_t)max_s)
                                return -ERANGE;
                }
                if (*p == '\0' && p != s && total == 0) {
                        mult = 1; /* a bare number: seconds */
                } else {
                        for (size_t i = 0; i < ELEMENTSOF(units); i++)
                                if (*p == units[i].unit)
                                        mult = units[i].seconds;
                        if (mult == 0)
                                return -EINVAL;
                        p++;
                }
                total += (int64_t)v * mult;
                if (total > max_s)
                        return -ERANGE;
        }
        *ret_us = total * 1000000;
        return 0;
}

/* "2026-11-23", "2026-11-23T10:00", "2026-11-23 10:00:05", local time, or UTC with a
 * trailing Z -> microseconds since the epoch. */
static int parse_date(const char *s, int64_t *ret_us)
{
        static const char *const formats[] = {
                "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S",
                "%Y-%m-%d %H:%M",    "%Y-%m-%d",
        };

        for (size_t i = 0; i < ELEMENTSOF(formats); i++) {
                struct tm tm = { 0 };
                const char *end = strptime(s, formats[i], &tm);
                bool utc;
                time_t t;

                if (!end || (end[0] != '\0' && strcmp(end, "Z") != 0))
                        continue;
                utc = end[0] == 'Z';
                tm.tm_isdst = -1;
                t = utc ? timegm(&tm) : mktime(&tm);
                if (t == (time_t)-1)
                        return -ERANGE;
                *ret_us = (int64_t)t * 1000000;
                return 0;
        }
        return -EINVAL;
}

/* --since: a time ago or a date -> microseconds since the epoch. */
static int parse_since(const char *s, int64_t *ret_us)
{
        int64_t us;

        if (parse_duration(s, &us) == 0) {
                us = wall_usec() - us;
                *ret_us = us > 0 ? us : 1;
                return 0;
        }
        if (parse_date(s, &us) == 0) {
                *ret_us = us > 0 ? us : 1;
                return 0;
        }
        return -EINVAL;
}

/* ---- commands ------------------------------------------------------------------------- */

/*
 * Each command parses its own options with getopt_long over its own argv (argv[0] is the
 * command's name). optind = 0 makes glibc start over; opterr = 0 leaves the messages to
 * option_error().
 */
#define COMMAND_GETOPT_RESET() (optind = 0, opterr = 0)

static int run_status(struct ctl *ctl, int argc, char **argv)
{
        static const struct option options[] = {
                { "json", no_argument, NULL, 'j' },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        _cleanup_(json_decrefp) json_t *result = NULL;
        const json_t *watches, *workers, *jobs, *alerts, *v;
        const char *key;
        char uptime[32];
        struct table t;
        bool json = false, first;
        int c, r, status;

        COMMAND_GETOPT_RESET();
        while ((c = getopt_long(argc, argv, ":h", options, NULL)) >= 0) {
                switch (c) {
                case 'j':
                        json = true;
                        break;
                case 'h':
                        print_command_help(find_command("status"));
                        return EXIT_OK;
                default:
                        return option_error("status", c, argv);
                }
        }
        if (optind < argc)
                return usage_error("status", "unexpected argument '%s'", argv[optind]);

        r = call(ctl, proto_request_new("status"), &result);
        if (r != EXIT_OK)
                return r;
        alerts = json_object_get(result, "alerts");
        status = json_array_size(alerts) > 0 ? EXIT_FAILED : EXIT_OK;
        if (json) {
                r = print_json(result);
                return r != EXIT_OK ? r : status;
        }

        format_uptime(get_int(result, "uptime_s"), uptime, sizeof uptime);
        {
                _cleanup_free_ char *state = clean_text(get_str(result, "state", "?"), 0);
                _cleanup_free_ char *version = clean_text(get_str(result, "version", "?"), 0);
                _cleanup_free_ char *config = clean_text(get_str(result, "config", "-"), 0);

                printf("imgd %s %s, pid %" PRId64 ", up %s\n", version, state,
                       get_int(result, "pid"), uptime);
                printf("config   %s\n", config);
        }

        workers = json_object_get(result, "workers");
        printf("workers  %" PRId64 " (%" PRId64 " busy)\n", get_int(workers, "total"),
               get_int(workers, "busy"));
        if (json_is_true(json_object_get(result, "paused")))
                printf("intake   paused: no new jobs are started ('%s resume')\n", program);
        v = json_object_get(result, "breaker");
        if (json_is_object(v)) {
                _cleanup_free_ char *bstate = clean_text(get_str(v, "state", "?"), 16);
                _cleanup_free_ char *why = clean_text(get_str(v, "reason", ""), 0);

                printf("breaker  %s%s%s\n", bstate, *why ? ": " : "", why);
        }
        v = json_object_get(result, "health");
        if (json_is_object(v)) {
                _cleanup_free_ char *level = clean_text(get_str(v, "level", "?"), 16);
                _cleanup_free_ char *why = clean_text(get_str(v, "reason", ""), 0);

                int64_t backlog = get_int(v, "backlog");
                char eta[32];

                printf("health   %.0f/100, level %s%s%s\n",
                       json_number_value(json_object_get(v, "score")), level, *why ? ": " : "",
                       why);
                if (backlog == 0)
                        printf("backlog  none");
                else if (format_drain(v, eta, sizeof eta))
                        printf("backlog  %" PRId64 " job%s, drained in about %s", backlog,
                               backlog == 1 ? "" : "s", eta);
                else
                        printf("backlog  %" PRId64 " job%s, not draining (none finished recently)",
                               backlog, backlog == 1 ? "" : "s");
                printf("; %.2f jobs/s finished, error rate %.0f%%\n",
                       json_number_value(json_object_get(v, "finished_per_s")),
                       100 * json_number_value(json_object_get(v, "error_rate")));
        }
        for (size_t i = 0; i < json_array_size(alerts); i++) {
                _cleanup_free_ char *msg =
                        clean_text(get_str(json_array_get(alerts, i), "message", "?"), 0);

                printf("ALERT    %s\n", msg);
        }

        /* Every state the daemon reports, in its order: queued 0  running 1  retry 0 ... */
        jobs = json_object_get(result, "jobs");
        printf("jobs     ");
        first = true;
        json_object_foreach((json_t *)jobs, key, v)
        {
                _cleanup_free_ char *name = clean_text(key, 0);

                printf("%s%s %" PRId64, first ? "" : "  ", name, (int64_t)json_integer_value(v));
                first = false;
        }
        printf("\n\n");

        watches = json_object_get(result, "watches");
        if (json_array_size(watches) == 0) {
                printf("no watched folders\n");
                return status;
        }
        table_init(&t, 4);
        table_add(&t, "WATCH", "OUTPUT", "PIPELINE", "RECURSIVE");
        for (size_t i = 0; i < json_array_size(watches); i++) {
                const json_t *w = json_array_get(watches, i);

                table_add(&t, get_str(w, "path", NULL), get_str(w, "output", NULL),
                          get_str(w, "pipeline", NULL),
                          json_is_true(json_object_get(w, "recursive")) ? "yes" : "no");
        }
        table_print(&t, "");
        table_clear(&t);
        return status;
}

/* A watch path as imgd records it: absolute, without a trailing slash. */
static char *normalize_watch(const char *s)
{
        _cleanup_free_ char *cwd = NULL;
        char *p;
        size_t n;

        if (s[0] == '/') {
                p = xstrdup(s);
        } else {
                cwd = getcwd(NULL, 0);
                if (!cwd)
                        return xstrdup(s);
                p = xasprintf("%s/%s", strcmp(cwd, "/") == 0 ? "" : cwd, s);
        }
        n = strlen(p);
        while (n > 1 && p[n - 1] == '/')
                p[--n] = '\0';
        if (n > 2 && strcmp(p + n - 2, "/.") == 0)
                p[n - 2] = '\0';
        return p;
}

static int run_jobs(struct ctl *ctl, int argc, char **argv)
{
        static const struct option options[] = {
                { "state", required_argument, NULL, 'S' },
                { "watch", required_argument, NULL, 'W' },
                { "since", required_argument, NULL, 'T' },
                { "limit", required_argument, NULL, 'L' },
                { "json", no_argument, NULL, 'j' },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        _cleanup_(json_decrefp) json_t *result = NULL;
        _cleanup_free_ char *watch = NULL;
        const char *state = NULL;
        const json_t *jobs;
        int64_t since = 0, limit = 0;
        bool json = false;
        json_t *req;
        struct table t;
        int c, r;

        COMMAND_GETOPT_RESET();
        while ((c = getopt_long(argc, argv, ":h", options, NULL)) >= 0) {
                switch (c) {
                case 'S':
                        state = optarg;
                        break;
                case 'W':
                        free(watch);
                        watch = normalize_watch(optarg);
                        break;
                case 'T':
                        if (parse_since(optarg, &since) < 0)
                                return usage_error("jobs",
                                                   "--since '%s': expected a time ago such as "
                                                   "10m, 2h or 1d, or a date such as "
                                                   "2026-11-23T10:00",
                                                   optarg);
                        break;
                case 'L':
                        if (parse_int(optarg, 1, LIST_MAX, &limit) < 0)
                                return usage_error("jobs",
                                                   "--limit '%s': expected a number from 1 to %d",
                                                   optarg, LIST_MAX);
                        break;
                case 'j':
                        json = true;
                        break;
                case 'h':
                        print_command_help(find_command("jobs"));
                        return EXIT_OK;
                default:
                        return option_error("jobs", c, argv);
                }
        }
        if (optind < argc)
                return usage_error("jobs", "unexpected argument '%s'", argv[optind]);

        req = proto_request_new("jobs");
        if (!req)
                oom();
        if ((state && json_object_set_new(req, "state", proto_string_lossy(state)) < 0) ||
            (watch && json_object_set_new(req, "watch", proto_string_lossy(watch)) < 0) ||
            (since > 0 && json_object_set_new(req, "since", json_integer(since)) < 0) ||
            (limit > 0 && json_object_set_new(req, "limit", json_integer(limit)) < 0))
                oom();
        r = call(ctl, req, &result);
        if (r != EXIT_OK)
                return r;
        if (json)
                return print_json(result);

        jobs = json_object_get(result, "jobs");
        if (json_array_size(jobs) == 0) {
                printf("no jobs\n");
                return EXIT_OK;
        }
        table_init(&t, 6);
        table_add(&t, "ID", "STATE", "ATTEMPTS", "UPDATED", "SOURCE", "ERROR");
        for (size_t i = 0; i < json_array_size(jobs); i++) {
                const json_t *j = json_array_get(jobs, i);
                _cleanup_free_ char *error = NULL;
                char id[24], attempts[24], updated[32];

                snprintf(id, sizeof id, "%" PRId64, get_int(j, "id"));
                snprintf(attempts, sizeof attempts, "%" PRId64, get_int(j, "attempts"));
                format_time(get_int(j, "updated_us"), updated, sizeof updated);
                error = clean_text(get_str(j, "error", ""), ERROR_COLUMN_CHARS);
                table_add(&t, id, get_str(j, "state", NULL), attempts, updated,
                          get_str(j, "source", NULL), error);
        }
        table_print(&t, "");
        table_clear(&t);
        if (json_is_true(json_object_get(result, "truncated")))
                fprintf(stderr,
                        "%s: only the newest %zu jobs fit in one answer; narrow the list with "
                        "--state, --watch, --since or --limit\n",
                        program, json_array_size(jobs));
        return EXIT_OK;
}

static void print_field(const char *key, const char *value)
{
        _cleanup_free_ char *clean = clean_text(value, 0);

        printf("%-11s %s\n", key, clean);
}

static void print_job(const json_t *job)
{
        const json_t *outputs = json_object_get(job, "outputs");
        const json_t *errors = json_object_get(job, "errors");
        const json_t *placeholder = json_object_get(job, "placeholder");
        const char *state = get_str(job, "state", "?");
        char buf[64];
        struct table t;

        snprintf(buf, sizeof buf, "%" PRId64, get_int(job, "id"));
        print_field("id:", buf);
        print_field("state:", state);
        print_field("source:", get_str(job, "source", "-"));
        print_field("watch:", get_str(job, "watch", "-"));
        print_field("pipeline:", get_str(job, "pipeline", "-"));
        print_field("output key:", get_str(job, "output_key", "-"));
        if (json_is_string(json_object_get(job, "manifest")))
                print_field("manifest:", get_str(job, "manifest", "-"));
        print_field("sha256:", get_str(job, "sha256", "-"));
        snprintf(buf, sizeof buf, "%" PRId64, get_int(job, "attempts"));
        print_field("attempts:", buf);
        format_time(get_int(job, "created_us"), buf, sizeof buf);
        print_field("created:", buf);
        format_time(get_int(job, "updated_us"), buf, sizeof buf);
        print_field("updated:", buf);
        if (strcmp(state, "queued") == 0 || strcmp(state, "retry") == 0) {
                format_time(get_int(job, "next_at_us"), buf, sizeof buf);
                print_field("next try:", buf);
        }
        if (json_is_string(json_object_get(job, "error")))
                print_field("error:", get_str(job, "error", ""));
        if (json_is_object(placeholder)) {
                print_field("blurhash:", get_str(placeholder, "blurhash", "-"));
                print_field("dominant:", get_str(placeholder, "dominant", "-"));
                print_field("data URI:", get_str(placeholder, "data_uri", "-"));
        }

        printf("\noutputs:\n");
        if (json_array_size(outputs) == 0) {
                printf("  none\n");
        } else {
                table_init(&t, 5);
                table_add(&t, "VARIANT", "FORMAT", "SIZE", "BYTES", "PATH");
                for (size_t i = 0; i < json_array_size(outputs); i++) {
                        const json_t *o = json_array_get(outputs, i);
                        char size[48], bytes[32];

                        snprintf(size, sizeof size, "%" PRId64 "x%" PRId64, get_int(o, "width"),
                                 get_int(o, "height"));
                        format_bytes((uint64_t)get_int(o, "bytes"), bytes, sizeof bytes);
                        table_add(&t, get_str(o, "variant", NULL), get_str(o, "format", NULL), size,
                                  bytes, get_str(o, "path", NULL));
                }
                table_print(&t, "  ");
                table_clear(&t);
        }

        printf("\nerrors:\n");
        if (json_array_size(errors) == 0) {
                printf("  none\n");
                return;
        }
        table_init(&t, 3);
        table_add(&t, "ATTEMPT", "AT", "MESSAGE");
        for (size_t i = 0; i < json_array_size(errors); i++) {
                const json_t *e = json_array_get(errors, i);
                char attempt[24], at[32];

                snprintf(attempt, sizeof attempt, "%" PRId64, get_int(e, "attempt"));
                format_time(get_int(e, "at_us"), at, sizeof at);
                table_add(&t, attempt, at, get_str(e, "message", NULL));
        }
        table_print(&t, "  ");
        table_clear(&t);
}

static int run_show(struct ctl *ctl, int argc, char **argv)
{
        static const struct option options[] = {
                { "json", no_argument, NULL, 'j' },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        _cleanup_(json_decrefp) json_t *result = NULL;
        bool json = false;
        const char *arg;
        int64_t id;
        json_t *req;
        int c, r;

        COMMAND_GETOPT_RESET();
        while ((c = getopt_long(argc, argv, ":h", options, NULL)) >= 0) {
                switch (c) {
                case 'j':
                        json = true;
                        break;
                case 'h':
                        print_command_help(find_command("show"));
                        return EXIT_OK;
                default:
                        return option_error("show", c, argv);
                }
        }
        if (optind >= argc)
                return usage_error("show", "which job? Give its ID, as listed by 'jobs'");
        if (optind + 1 < argc)
                return usage_error("show", "unexpected argument '%s'", argv[optind + 1]);
        arg = argv[optind];
        if (arg[0] == '#')
                arg++;
        if (parse_int(arg, 1, INT64_MAX, &id) < 0)
                return usage_error("show", "'%s' is not a job ID (a positive number)",
                                   argv[optind]);

        req = proto_request_new("show");
        if (!req || json_object_set_new(req, "id", json_integer(id)) < 0)
                oom();
        r = call(ctl, req, &result);
        if (r != EXIT_OK)
                return r;
        if (json)
                return print_json(result);
        print_job(json_object_get(result, "job"));
        return EXIT_OK;
}

static int run_wait(struct ctl *ctl, int argc, char **argv)
{
        static const struct option options[] = {
                { "timeout", required_argument, NULL, 't' },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        const char *timeout_arg = NULL;
        double timeout_s = 0;
        int64_t deadline = 0;
        char *end;
        int c, r;

        COMMAND_GETOPT_RESET();
        while ((c = getopt_long(argc, argv, ":ht:", options, NULL)) >= 0) {
                switch (c) {
                case 't':
                        errno = 0;
                        timeout_s = strtod(optarg, &end);
                        if (end == optarg || *end != '\0' || errno == ERANGE ||
                            !isfinite(timeout_s) || timeout_s < 0 || timeout_s > 1e9)
                                return usage_error("wait",
                                                   "--timeout '%s': expected a number of "
                                                   "seconds",
                                                   optarg);
                        timeout_arg = optarg;
                        break;
                case 'h':
                        print_command_help(find_command("wait"));
                        return EXIT_OK;
                default:
                        return option_error("wait", c, argv);
                }
        }
        if (optind < argc)
                return usage_error("wait", "unexpected argument '%s'", argv[optind]);

        if (timeout_arg)
                deadline = (int64_t)mono_usec() + (int64_t)(timeout_s * 1e6);

        for (;;) {
                _cleanup_(json_decrefp) json_t *result = NULL;
                const json_t *jobs;
                int64_t queued, running, retry, left;

                r = call(ctl, proto_request_new("status"), &result);
                if (r != EXIT_OK)
                        return r;
                if (status_idle(result))
                        return EXIT_OK;
                jobs = json_object_get(result, "jobs");
                queued = get_int(jobs, "queued");
                running = get_int(jobs, "running");
                retry = get_int(jobs, "retry");

                if (timeout_arg) {
                        left = deadline - (int64_t)mono_usec();
                        if (left <= 0) {
                                errorf("timed out after %g s: %" PRId64 " queued, %" PRId64
                                       " running, %" PRId64 " retry",
                                       timeout_s, queued, running, retry);
                                return EXIT_FAILED;
                        }
                        if (left < WAIT_POLL_MS * 1000) {
                                usleep((useconds_t)left);
                                continue;
                        }
                }
                usleep(WAIT_POLL_MS * 1000);
        }
}

/* ---- operator commands ---------------------------------------------------------------- */

/*
 * Parses the options of a command that takes nothing but --json (when json is not NULL) and
 * --help, and no arguments. Returns -1 to go on, or the exit status to return.
 */
static int parse_plain_options(const char *cmd, int argc, char **argv, bool *json)
{
        static const struct option with_json[] = {
                { "json", no_argument, NULL, 'j' },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        int c;

        COMMAND_GETOPT_RESET();
        while ((c = getopt_long(argc, argv, ":h", with_json, NULL)) >= 0) {
                switch (c) {
                case 'j':
                        if (!json)
                                return option_error(cmd, '?', argv);
                        *json = true;
                        break;
                case 'h':
                        print_command_help(find_command(cmd));
                        return EXIT_OK;
                default:
                        return option_error(cmd, c, argv);
                }
        }
        if (optind < argc)
                return usage_error(cmd, "unexpected argument '%s'", argv[optind]);
        return -1;
}

/* The one JOB argument of a command ("42" or "#42"). Returns EXIT_OK or EXIT_USAGE. */
static int parse_job_arg(const char *cmd, int argc, char **argv, int64_t *ret)
{
        const char *arg;

        if (optind >= argc)
                return usage_error(cmd, "which job? Give its ID, as listed by 'jobs'");
        if (optind + 1 < argc)
                return usage_error(cmd, "unexpected argument '%s'", argv[optind + 1]);
        arg = argv[optind];
        if (arg[0] == '#')
                arg++;
        if (parse_int(arg, 1, INT64_MAX, ret) < 0)
                return usage_error(cmd, "'%s' is not a job ID (a positive number)", argv[optind]);
        return EXIT_OK;
}

/* A number of seconds (may have a fraction) for --timeout. Returns EXIT_OK or EXIT_USAGE. */
static int parse_seconds(const char *cmd, const char *arg, double *ret)
{
        char *end;
        double v;

        errno = 0;
        v = strtod(arg, &end);
        if (end == arg || *end != '\0' || errno == ERANGE || !isfinite(v) || v < 0 || v > 1e9)
                return usage_error(cmd, "--timeout '%s': expected a number of seconds", arg);
        *ret = v;
        return EXIT_OK;
}

static json_t *request_with_id(const char *cmd, int64_t id)
{
        json_t *req = proto_request_new(cmd);

        if (!req || json_object_set_new(req, "id", json_integer(id)) < 0)
                oom();
        return req;
}

static int run_retry(struct ctl *ctl, int argc, char **argv)
{
        static const struct option options[] = {
                { "dead", no_argument, NULL, 'D' },
                { "json", no_argument, NULL, 'j' },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        _cleanup_(json_decrefp) json_t *result = NULL;
        bool json = false, dead = false;
        int64_t id = 0, total = 0, remaining = 0, first = -1;
        int c, r;

        COMMAND_GETOPT_RESET();
        while ((c = getopt_long(argc, argv, ":h", options, NULL)) >= 0) {
                switch (c) {
                case 'D':
                        dead = true;
                        break;
                case 'j':
                        json = true;
                        break;
                case 'h':
                        print_command_help(find_command("retry"));
                        return EXIT_OK;
                default:
                        return option_error("retry", c, argv);
                }
        }
        if (dead) {
                if (optind < argc)
                        return usage_error("retry", "give either JOB or --dead, not both");
        } else {
                r = parse_job_arg("retry", argc, argv, &id);
                if (r != EXIT_OK)
                        return r;
        }

        if (!dead) {
                r = call(ctl, request_with_id("retry", id), &result);
                if (r != EXIT_OK)
                        return r;
                if (json)
                        return print_json(result);
                printf("job %" PRId64 " queued again\n", id);
                return EXIT_OK;
        }

        /* imgd retries a batch per request and says how many remain. Jobs that die again
         * meanwhile are not retried twice: stop after as many as there were at first. */
        for (;;) {
                _cleanup_(json_decrefp) json_t *batch = NULL;
                json_t *req = proto_request_new("retry");
                int64_t retried;

                if (!req || json_object_set_new(req, "dead", json_true()) < 0)
                        oom();
                r = call(ctl, req, &batch);
                if (r != EXIT_OK)
                        return r;
                retried = get_int(batch, "retried");
                remaining = get_int(batch, "remaining");
                if (first < 0)
                        first = retried + remaining;
                total += retried;
                if (remaining <= 0 || retried <= 0 || total >= first)
                        break;
        }
        if (json) {
                result = json_pack("{s:I, s:I}", "retried", (json_int_t)total, "remaining",
                                   (json_int_t)remaining);
                if (!result)
                        oom();
                return print_json(result);
        }
        printf("%" PRId64 " dead job(s) queued again\n", total);
        if (remaining > 0)
                printf("%" PRId64 " job(s) dead again already or meanwhile\n", remaining);
        return EXIT_OK;
}

static int run_cancel(struct ctl *ctl, int argc, char **argv)
{
        static const struct option options[] = {
                { "json", no_argument, NULL, 'j' },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        _cleanup_(json_decrefp) json_t *result = NULL;
        bool json = false;
        int64_t id = 0;
        int c, r;

        COMMAND_GETOPT_RESET();
        while ((c = getopt_long(argc, argv, ":h", options, NULL)) >= 0) {
                switch (c) {
                case 'j':
                        json = true;
                        break;
                case 'h':
                        print_command_help(find_command("cancel"));
                        return EXIT_OK;
                default:
                        return option_error("cancel", c, argv);
                }
        }
        r = parse_job_arg("cancel", argc, argv, &id);
        if (r != EXIT_OK)
                return r;
        r = call(ctl, request_with_id("cancel", id), &result);
        if (r != EXIT_OK)
                return r;
        if (json)
                return print_json(result);
        {
                _cleanup_free_ char *was = clean_text(get_str(result, "was", "?"), 0);

                printf("job %" PRId64 " cancelled (it was %s)\n", id, was);
        }
        return EXIT_OK;
}

static int run_pause(struct ctl *ctl, int argc, char **argv)
{
        _cleanup_(json_decrefp) json_t *result = NULL;
        bool json = false;
        int r;

        r = parse_plain_options("pause", argc, argv, &json);
        if (r >= 0)
                return r;
        r = call(ctl, proto_request_new("pause"), &result);
        if (r != EXIT_OK)
                return r;
        if (json)
                return print_json(result);
        printf("intake paused: no new jobs are started; %" PRId64 " job(s) still running\n",
               get_int(result, "running"));
        return EXIT_OK;
}

static int run_resume(struct ctl *ctl, int argc, char **argv)
{
        _cleanup_(json_decrefp) json_t *result = NULL;
        bool json = false;
        int r;

        r = parse_plain_options("resume", argc, argv, &json);
        if (r >= 0)
                return r;
        r = call(ctl, proto_request_new("resume"), &result);
        if (r != EXIT_OK)
                return r;
        if (json)
                return print_json(result);
        printf("intake resumed\n");
        return EXIT_OK;
}

/* The number of dispatched jobs in a status answer ("running"; older daemons: the ledger's
 * count). */
static int64_t status_running(const json_t *status)
{
        const json_t *v = json_object_get(status, "running");

        if (json_is_integer(v))
                return (int64_t)json_integer_value(v);
        return get_int(json_object_get(status, "jobs"), "running");
}

static int run_drain(struct ctl *ctl, int argc, char **argv)
{
        static const struct option options[] = {
                { "timeout", required_argument, NULL, 't' },
                { "json", no_argument, NULL, 'j' },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        _cleanup_(json_decrefp) json_t *result = NULL;
        bool json = false, has_timeout = false;
        double timeout_s = 0;
        int64_t deadline = 0, running;
        int c, r;

        COMMAND_GETOPT_RESET();
        while ((c = getopt_long(argc, argv, ":ht:", options, NULL)) >= 0) {
                switch (c) {
                case 't':
                        r = parse_seconds("drain", optarg, &timeout_s);
                        if (r != EXIT_OK)
                                return r;
                        has_timeout = true;
                        break;
                case 'j':
                        json = true;
                        break;
                case 'h':
                        print_command_help(find_command("drain"));
                        return EXIT_OK;
                default:
                        return option_error("drain", c, argv);
                }
        }
        if (optind < argc)
                return usage_error("drain", "unexpected argument '%s'", argv[optind]);
        if (has_timeout)
                deadline = (int64_t)mono_usec() + (int64_t)(timeout_s * 1e6);

        r = call(ctl, proto_request_new("drain"), &result);
        if (r != EXIT_OK)
                return r;
        running = get_int(result, "running");
        while (running > 0) {
                _cleanup_(json_decrefp) json_t *status = NULL;

                if (has_timeout && (int64_t)mono_usec() >= deadline) {
                        errorf("timed out after %g s: %" PRId64 " job(s) still running; intake "
                               "stays paused ('%s resume' to continue)",
                               timeout_s, running, program);
                        return EXIT_FAILED;
                }
                usleep(WAIT_POLL_MS * 1000);
                r = call(ctl, proto_request_new("status"), &status);
                if (r != EXIT_OK)
                        return r;
                running = status_running(status);
        }
        if (json) {
                json_decref(result);
                result = json_pack("{s:b, s:i}", "paused", 1, "running", 0);
                if (!result)
                        oom();
                return print_json(result);
        }
        printf("drained: intake paused and no job running ('%s resume' to continue)\n", program);
        return EXIT_OK;
}

static int run_enqueue(struct ctl *ctl, int argc, char **argv)
{
        static const struct option options[] = {
                { "json", no_argument, NULL, 'j' },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        _cleanup_(json_decrefp) json_t *result = NULL;
        _cleanup_free_ char *real = NULL, *source = NULL, *state = NULL;
        bool json = false;
        json_t *req;
        int c, r;

        COMMAND_GETOPT_RESET();
        while ((c = getopt_long(argc, argv, ":h", options, NULL)) >= 0) {
                switch (c) {
                case 'j':
                        json = true;
                        break;
                case 'h':
                        print_command_help(find_command("enqueue"));
                        return EXIT_OK;
                default:
                        return option_error("enqueue", c, argv);
                }
        }
        if (optind >= argc)
                return usage_error("enqueue", "which file? Give its path");
        if (optind + 1 < argc)
                return usage_error("enqueue", "unexpected argument '%s'", argv[optind + 1]);

        /* imgd resolves the path again itself; this makes a relative one absolute. */
        real = realpath(argv[optind], NULL);
        if (!real) {
                _cleanup_free_ char *clean = clean_text(argv[optind], 0);

                errorf("%s: %s", clean, strerror(errno));
                return EXIT_FAILED;
        }
        req = proto_request_new("enqueue");
        if (!req || json_object_set_new(req, "path", proto_string_lossy(real)) < 0)
                oom();
        r = call(ctl, req, &result);
        if (r != EXIT_OK)
                return r;
        if (json)
                return print_json(result);

        source = clean_text(get_str(result, "source", real), 0);
        state = clean_text(get_str(result, "state", "?"), 0);
        if (json_is_true(json_object_get(result, "created")))
                printf("job %" PRId64 " queued: %s\n", get_int(result, "id"), source);
        else if (get_int(result, "id") > 0)
                printf("job %" PRId64 " for %s exists already (%s)\n", get_int(result, "id"),
                       source, state);
        else
                printf("%s is known to imgd already; no job was created\n", source);
        return EXIT_OK;
}

static int run_reload(struct ctl *ctl, int argc, char **argv)
{
        _cleanup_(json_decrefp) json_t *result = NULL;
        bool json = false;
        int r;

        r = parse_plain_options("reload", argc, argv, &json);
        if (r >= 0)
                return r;
        r = call(ctl, proto_request_new("reload"), &result);
        if (r != EXIT_OK)
                return r;
        if (json)
                return print_json(result);
        {
                _cleanup_free_ char *file = clean_text(get_str(result, "config", "?"), 0);

                printf("reloaded %s: watching %" PRId64 " folder(s)\n", file,
                       get_int(result, "watches"));
        }
        return EXIT_OK;
}

static int run_metrics(struct ctl *ctl, int argc, char **argv)
{
        _cleanup_(json_decrefp) json_t *result = NULL;
        bool json = false;
        const char *text;
        int r;

        r = parse_plain_options("metrics", argc, argv, &json);
        if (r >= 0)
                return r;
        r = call(ctl, proto_request_new("metrics"), &result);
        if (r != EXIT_OK)
                return r;
        if (json)
                return print_json(result);
        /* The exposition as it is, except for control characters other than newlines. */
        for (text = get_str(result, "text", ""); *text; text++) {
                unsigned char ch = (unsigned char)*text;

                fputc(ch == '\n' || (ch >= 0x20 && ch != 0x7f) ? ch : '?', stdout);
        }
        return EXIT_OK;
}

/* ---- events --------------------------------------------------------------------------- */

#define EVENTS_POLL_MS 500

/* One event as a line for people: "done      #12 /srv/uploads/a.jpg  3 outputs". */
static void print_event(const json_t *ev)
{
        const json_t *job = json_object_get(ev, "job");
        const char *name = get_str(ev, "event", "?");
        _cleanup_free_ char *event = clean_text(name, 16);
        _cleanup_free_ char *source = clean_text(get_str(job, "source", "-"), 0);
        _cleanup_free_ char *error = NULL;

        printf("%-9s #%-5" PRId64 " %s", event, get_int(job, "id"), source);
        if (strcmp(name, "done") == 0) {
                size_t n = json_array_size(json_object_get(job, "outputs"));

                printf("  %zu output%s", n, n == 1 ? "" : "s");
        } else if (json_is_string(json_object_get(job, "error"))) {
                error = clean_text(get_str(job, "error", ""), 0);
                printf("  %s", error);
                if (strcmp(name, "retry") == 0 && get_int(job, "next_at_us") > 0) {
                        char at[32];

                        format_time(get_int(job, "next_at_us"), at, sizeof at);
                        printf(" (next try %s)", at);
                }
        }
        fputc('\n', stdout);
}

/* True when status says no job is queued, running or waiting for a retry. */
static int events_idle(struct ctl *status_ctl, bool *ret_idle)
{
        _cleanup_(json_decrefp) json_t *status = NULL;
        int r;

        r = call(status_ctl, proto_request_new("status"), &status);
        if (r != EXIT_OK)
                return r;
        *ret_idle = status_idle(status);
        return EXIT_OK;
}

static int run_events(struct ctl *ctl, int argc, char **argv)
{
        static const struct option options[] = {
                { "follow", no_argument, NULL, 'f' },
                { "json", no_argument, NULL, 'j' },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        _cleanup_(json_decrefp) json_t *result = NULL;
        struct ctl status_ctl = { .socket = ctl->socket, .fd = -1 };
        bool json = false, follow = false, idle = false;
        int64_t next_check = 0;
        int c, r;

        COMMAND_GETOPT_RESET();
        while ((c = getopt_long(argc, argv, ":fh", options, NULL)) >= 0) {
                switch (c) {
                case 'f':
                        follow = true;
                        break;
                case 'j':
                        json = true;
                        break;
                case 'h':
                        print_command_help(find_command("events"));
                        return EXIT_OK;
                default:
                        return option_error("events", c, argv);
                }
        }
        if (optind < argc)
                return usage_error("events", "unexpected argument '%s'", argv[optind]);

        r = call(ctl, proto_request_new("events"), &result);
        if (r != EXIT_OK)
                return r;
        if (!json_is_true(json_object_get(result, "subscribed"))) {
                errorf("imgd did not subscribe this client to events");
                return EXIT_FAILED;
        }

        for (;;) {
                _cleanup_(json_decrefp) json_t *ev = NULL;
                _cleanup_free_ char *error = NULL;
                int64_t now = (int64_t)mono_usec(), deadline;
                char *line = NULL;
                size_t n = 0;

                if (!follow && now >= next_check) {
                        /* Before reading on: is there anything left to report? Events already
                         * sent are read first (below, with a zero wait) once it is idle. */
                        r = events_idle(&status_ctl, &idle);
                        if (r != EXIT_OK)
                                goto out;
                        next_check = (int64_t)mono_usec() + EVENTS_POLL_MS * 1000;
                }
                if (idle)
                        deadline = (int64_t)mono_usec() + 1000; /* only what has arrived */
                else if (follow)
                        deadline = now + 3600 * INT64_C(1000000);
                else
                        deadline = next_check;
                r = ctl_read_line(ctl, deadline, &line, &n);
                if (r == -ETIMEDOUT) {
                        if (idle) {
                                r = EXIT_OK;
                                goto out;
                        }
                        continue;
                }
                if (r < 0) {
                        if (r == -ECONNRESET)
                                errorf("imgd on %s ended the subscription (events not read fast "
                                       "enough, or imgd stopped)",
                                       ctl->socket);
                        else
                                errorf("%s: %s", ctl->socket, strerror(-r));
                        r = EXIT_FAILED;
                        goto out;
                }
                r = proto_parse_event(line, n, &ev, &error);
                if (r == -ENOMEM)
                        oom();
                if (r < 0)
                        continue; /* an answer, or something newer than this imgctl knows */
                if (json) {
                        _cleanup_free_ char *s = json_dumps(ev, JSON_COMPACT);

                        if (!s)
                                oom();
                        puts(s);
                } else
                        print_event(ev);
                fflush(stdout);
        }
out:
        ctl_close(&status_ctl);
        return r;
}

/* ---- top ------------------------------------------------------------------------------ */

#define TOP_INTERVAL_MS 1000
#define TOP_RATE_WINDOW_US (10 * INT64_C(1000000))
#define TOP_SAMPLES 16 /* one a second: more than the rate window */
#define TOP_SOURCE_CACHE 64

static volatile sig_atomic_t top_interrupted;

static void top_on_signal(int sig)
{
        (void)sig;
        top_interrupted = 1;
}

struct top {
        struct ctl *ctl;
        bool tty;
        unsigned columns;
        int64_t finished0; /* done + dead + cancelled when top started */
        struct {
                int64_t at_us, finished;
        } samples[TOP_SAMPLES];
        size_t n_samples;
        struct {
                int64_t id;
                char *source;
        } cache[TOP_SOURCE_CACHE]; /* sources of jobs seen on workers */
        size_t next_cache;
};

/* The source of job `id` ("" if imgd does not say), asked once and remembered. */
static const char *top_source(struct top *t, int64_t id)
{
        _cleanup_(json_decrefp) json_t *result = NULL;
        _cleanup_free_ char *error = NULL;
        json_t *req;
        size_t slot;
        int r;

        for (size_t i = 0; i < TOP_SOURCE_CACHE; i++)
                if (t->cache[i].source && t->cache[i].id == id)
                        return t->cache[i].source;
        req = request_with_id("show", id);
        r = ctl_call(t->ctl, req, &result, &error);
        json_decref(req);
        if (r < 0)
                return "";
        slot = t->next_cache++ % TOP_SOURCE_CACHE;
        free(t->cache[slot].source);
        t->cache[slot].id = id;
        t->cache[slot].source = xstrdup(get_str(json_object_get(result, "job"), "source", ""));
        return t->cache[slot].source;
}

/* Jobs per second over the last TOP_RATE_WINDOW_US (0 until there are two samples); records
 * this sample. */
static double top_rate(struct top *t, int64_t now, int64_t finished)
{
        size_t n = t->n_samples < TOP_SAMPLES ? t->n_samples : TOP_SAMPLES;
        int64_t at = now, base = finished;

        for (size_t i = 0; i < n; i++)
                if (now - t->samples[i].at_us <= TOP_RATE_WINDOW_US && t->samples[i].at_us < at) {
                        at = t->samples[i].at_us;
                        base = t->samples[i].finished;
                }
        t->samples[t->n_samples % TOP_SAMPLES].at_us = now;
        t->samples[t->n_samples % TOP_SAMPLES].finished = finished;
        t->n_samples++;
        if (at >= now || finished < base)
                return 0;
        return (double)(finished - base) * 1e6 / (double)(now - at);
}

static void top_bar(double fraction, unsigned width)
{
        unsigned filled = (unsigned)(fraction * width + 0.5);

        fputc('[', stdout);
        for (unsigned i = 0; i < width; i++)
                fputc(i < filled ? '#' : '-', stdout);
        fputc(']', stdout);
}

/* One refresh: the whole screen (TTY) or one line. */
static void top_render(struct top *t, const json_t *status, int64_t now_mono)
{
        const json_t *jobs = json_object_get(status, "jobs");
        const json_t *workers = json_object_get(status, "workers");
        const json_t *list = json_object_get(workers, "list");
        const json_t *breaker = json_object_get(status, "breaker");
        int64_t queued = get_int(jobs, "queued"), running = get_int(jobs, "running"),
                retry = get_int(jobs, "retry"), done = get_int(jobs, "done"),
                dead = get_int(jobs, "dead"), cancelled = get_int(jobs, "cancelled");
        int64_t finished = done + dead + cancelled, left = queued + running + retry;
        int64_t processed = finished - t->finished0;
        bool paused = json_is_true(json_object_get(status, "paused"));
        _cleanup_free_ char *state = clean_text(get_str(status, "state", "?"), 16);
        _cleanup_free_ char *breaker_state = NULL, *level = NULL;
        const json_t *health_j = json_object_get(status, "health");
        const json_t *alerts = json_object_get(status, "alerts");
        double rate = top_rate(t, now_mono, finished), fraction;
        char now[32], uptime[32], eta[32];

        if (processed < 0)
                processed = 0; /* finished jobs pruned meanwhile */
        fraction = processed + left > 0 ? (double)processed / (double)(processed + left) : 1;
        if (json_is_string(breaker))
                breaker_state = clean_text(json_string_value(breaker), 16);
        else if (json_is_object(breaker))
                breaker_state = clean_text(get_str(breaker, "state", "?"), 16);
        if (json_is_object(health_j))
                level = clean_text(get_str(health_j, "level", "?"), 16);
        format_time(wall_usec(), now, sizeof now);

        if (left == 0)
                snprintf(eta, sizeof eta, "0s");
        else
                (void)format_drain(health_j, eta, sizeof eta);
        if (!t->tty) {
                printf("%s %s%s queued=%" PRId64 " running=%" PRId64 " retry=%" PRId64
                       " done=%" PRId64 " dead=%" PRId64 " cancelled=%" PRId64 " workers=%" PRId64
                       "/%" PRId64 " rate=%.2f/s backlog=%.0f%% eta=%s"
                       "%s%s%s%s alerts=%zu\n",
                       now, state, paused ? " paused" : "", queued, running, retry, done, dead,
                       cancelled, get_int(workers, "busy"), get_int(workers, "total"), rate,
                       fraction * 100, eta, breaker_state ? " breaker=" : "",
                       breaker_state ? breaker_state : "", level ? " level=" : "",
                       level ? level : "", json_array_size(alerts));
                fflush(stdout);
                return;
        }

        format_uptime(get_int(status, "uptime_s"), uptime, sizeof uptime);
        fputs("\033[H\033[2J", stdout);
        {
                _cleanup_free_ char *version = clean_text(get_str(status, "version", "?"), 16);

                printf("imgd %s %s, pid %" PRId64 ", up %s    %s\n", version, state,
                       get_int(status, "pid"), uptime, now);
        }
        printf("intake %s", paused ? "PAUSED" : "running");
        if (breaker_state)
                printf("    breaker %s", breaker_state);
        if (level)
                printf("    health %.0f/100, level %s",
                       json_number_value(json_object_get(health_j, "score")), level);
        printf("\n\nbacklog    ");
        top_bar(fraction, t->columns > 60 ? t->columns - 50 : 10);
        printf(" %3.0f%%  %" PRId64 " processed, %" PRId64 " left\n", fraction * 100, processed,
               left);
        printf("throughput %.2f jobs/s (last 10 s), backlog drained in about %s\n", rate, eta);
        printf("jobs       queued %" PRId64 "  running %" PRId64 "  retry %" PRId64
               "  done %" PRId64 "  dead %" PRId64 "  cancelled %" PRId64 "\n\n",
               queued, running, retry, done, dead, cancelled);
        for (size_t i = 0; i < json_array_size(alerts); i++) {
                _cleanup_free_ char *msg =
                        clean_text(get_str(json_array_get(alerts, i), "message", "?"),
                                   t->columns > 12 ? t->columns - 11 : 40);

                printf("ALERT      %s\n", msg);
        }
        if (json_array_size(alerts) > 0)
                printf("\n");

        printf("workers    %" PRId64 " busy of %" PRId64 "\n", get_int(workers, "busy"),
               get_int(workers, "total"));
        if (json_array_size(list) > 0) {
                struct table tab;
                size_t width = t->columns > 40 ? t->columns - 40 : 20;

                table_init(&tab, 5);
                table_add(&tab, "PID", "STATE", "DONE", "JOB", "SOURCE");
                for (size_t i = 0; i < json_array_size(list); i++) {
                        const json_t *w = json_array_get(list, i);
                        const char *wstate = get_str(w, "state", "?");
                        int64_t job = get_int(w, "job");
                        _cleanup_free_ char *source = NULL;
                        char pid[24], jobs_done[24], jobid[24] = "";

                        snprintf(pid, sizeof pid, "%" PRId64, get_int(w, "pid"));
                        snprintf(jobs_done, sizeof jobs_done, "%" PRId64, get_int(w, "jobs_done"));
                        if (strcmp(wstate, "busy") == 0 && job > 0) {
                                snprintf(jobid, sizeof jobid, "#%" PRId64, job);
                                source = clean_text(top_source(t, job), width);
                        }
                        table_add(&tab, pid, wstate, jobs_done, jobid, source ? source : "");
                }
                table_print(&tab, "  ");
                table_clear(&tab);
        }
        printf("\nq or Ctrl-C: quit\n");
        fflush(stdout);
}

static int run_top(struct ctl *ctl, int argc, char **argv)
{
        static const struct option options[] = {
                { "iterations", required_argument, NULL, 'n' },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        struct top t = { .ctl = ctl };
        struct termios saved, raw;
        struct sigaction sa = { .sa_handler = top_on_signal }, old_int, old_term;
        bool keys = false;
        int64_t iterations = 0;
        int c, r = EXIT_OK;

        COMMAND_GETOPT_RESET();
        while ((c = getopt_long(argc, argv, ":hn:", options, NULL)) >= 0) {
                switch (c) {
                case 'n':
                        if (parse_int(optarg, 1, INT32_MAX, &iterations) < 0)
                                return usage_error("top",
                                                   "--iterations '%s': expected a positive number",
                                                   optarg);
                        break;
                case 'h':
                        print_command_help(find_command("top"));
                        return EXIT_OK;
                default:
                        return option_error("top", c, argv);
                }
        }
        if (optind < argc)
                return usage_error("top", "unexpected argument '%s'", argv[optind]);

        t.tty = isatty(STDOUT_FILENO);
        t.columns = 80;
        if (t.tty) {
                struct winsize ws;

                if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 40)
                        t.columns = ws.ws_col;
        }
        /* Keys without Enter, not echoed; Ctrl-C still a signal. */
        if (t.tty && isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved) == 0) {
                raw = saved;
                raw.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
                raw.c_cc[VMIN] = 0;
                raw.c_cc[VTIME] = 0;
                keys = tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0;
        }
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, &old_int);
        sigaction(SIGTERM, &sa, &old_term);

        for (int64_t i = 0; !top_interrupted; i++) {
                _cleanup_(json_decrefp) json_t *status = NULL;
                const json_t *jobs;
                int64_t wake;

                r = call(ctl, proto_request_new("status"), &status);
                if (r != EXIT_OK)
                        break;
                jobs = json_object_get(status, "jobs");
                if (i == 0)
                        t.finished0 = get_int(jobs, "done") + get_int(jobs, "dead") +
                                      get_int(jobs, "cancelled");
                top_render(&t, status, (int64_t)mono_usec());
                if (iterations > 0 && i + 1 >= iterations)
                        break;

                /* Wait for the next refresh, or a key. */
                wake = (int64_t)mono_usec() + TOP_INTERVAL_MS * 1000;
                while (!top_interrupted) {
                        struct pollfd p = { .fd = STDIN_FILENO, .events = POLLIN };
                        int64_t left = wake - (int64_t)mono_usec();
                        char key;

                        if (left <= 0)
                                break;
                        if (poll(keys ? &p : NULL, keys ? 1 : 0, (int)((left + 999) / 1000)) > 0 &&
                            read(STDIN_FILENO, &key, 1) == 1 && (key == 'q' || key == 'Q'))
                                top_interrupted = 1;
                }
        }

        if (keys)
                tcsetattr(STDIN_FILENO, TCSANOW, &saved);
        sigaction(SIGINT, &old_int, NULL);
        sigaction(SIGTERM, &old_term, NULL);
        for (size_t i = 0; i < TOP_SOURCE_CACHE; i++)
                free(t.cache[i].source);
        return r;
}

/* ---- verify --------------------------------------------------------------------------- */

#define VERIFY_MAX_DEPTH 64
#define VERIFY_MANIFEST_MAX (1024 * 1024)
#define MANIFEST_SUFFIX ".manifest.json"

struct verify {
        struct ctl *ctl;
        char **files; /* every non-directory entry of the trees walked */
        size_t n_files, alloc_files;
        char **listed; /* files some manifest lists */
        size_t n_listed, alloc_listed;
        unsigned manifests, checked, unrecorded;
        json_t *missing, *altered, *orphaned, *mismatched, *bad;
};

static void strv_push(char ***v, size_t *n, size_t *alloc, char *s)
{
        if (*n == *alloc) {
                size_t a = *alloc ? *alloc * 2 : 64;
                char **p = reallocarray(*v, a, sizeof *p);

                if (!p)
                        oom();
                *v = p;
                *alloc = a;
        }
        (*v)[(*n)++] = s;
}

static void strv_free(char **v, size_t n)
{
        for (size_t i = 0; i < n; i++)
                free(v[i]);
        free(v);
}

static int cmp_str(const void *a, const void *b)
{
        return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool has_suffix(const char *s, const char *suffix)
{
        size_t n = strlen(s), m = strlen(suffix);

        return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* Appends {"path": path, key: value, ...} to a problem list (pairs end with NULL). */
static void verify_problem(json_t *list, const char *path, ...)
{
        json_t *o = json_object();
        const char *key;
        va_list ap;

        if (!o || json_object_set_new(o, "path", proto_string_lossy(path)) < 0)
                oom();
        va_start(ap, path);
        while ((key = va_arg(ap, const char *))) {
                const char *value = va_arg(ap, const char *);

                if (json_object_set_new(o, key, proto_string_lossy(value)) < 0)
                        oom();
        }
        va_end(ap);
        if (json_array_append_new(list, o) < 0)
                oom();
}

/* Collects every non-directory below dir (not following symlinks) into v->files. */
static void verify_walk(struct verify *v, const char *dir, unsigned depth)
{
        struct dirent *de;
        DIR *d;

        if (depth > VERIFY_MAX_DEPTH)
                return;
        d = opendir(dir);
        if (!d) {
                if (errno != ENOENT || depth > 0)
                        verify_problem(v->bad, dir, "error", strerror(errno), NULL);
                return;
        }
        while ((de = readdir(d))) {
                char *path;
                struct stat st;

                if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                        continue;
                path = xasprintf("%s/%s", strcmp(dir, "/") == 0 ? "" : dir, de->d_name);
                if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
                        verify_walk(v, path, depth + 1);
                        free(path);
                } else
                        strv_push(&v->files, &v->n_files, &v->alloc_files, path);
        }
        closedir(d);
}

/* The file of a manifest entry: a plain name in the manifest's directory, or NULL. */
static char *manifest_entry_path(const char *dir, const char *file)
{
        if (!file || !*file || strchr(file, '/') || strcmp(file, ".") == 0 ||
            strcmp(file, "..") == 0)
                return NULL;
        return xasprintf("%s/%s", dir, file);
}

/*
 * The name of a manifest entry's file as bytes: "file_hex" decoded when present (imgd
 * writes it for names that are not UTF-8; "file" then holds a lossy copy), else "file".
 * NULL (and nothing allocated) for malformed hex. Caller frees.
 */
static char *manifest_entry_name(const json_t *o)
{
        const char *hex = get_str(o, "file_hex", NULL), *file = get_str(o, "file", NULL);
        size_t n;
        char *name;

        if (!hex)
                return file ? xstrdup(file) : NULL;
        n = strlen(hex);
        if (n == 0 || n % 2 != 0)
                return NULL;
        name = malloc(n / 2 + 1);
        if (!name)
                oom();
        for (size_t i = 0; i < n / 2; i++) {
                unsigned v;

                if (!isxdigit((unsigned char)hex[2 * i]) ||
                    !isxdigit((unsigned char)hex[2 * i + 1]) ||
                    sscanf(hex + 2 * i, "%2x", &v) != 1 || v == 0) {
                        free(name);
                        return NULL;
                }
                name[i] = (char)v;
        }
        name[n / 2] = '\0';
        return name;
}

/* Compares the manifest with the ledger's record of its job (imgd's "show"). */
static int verify_against_ledger(struct verify *v, const char *mpath, const json_t *manifest,
                                 const char *dir)
{
        _cleanup_(json_decrefp) json_t *result = NULL;
        _cleanup_free_ char *error = NULL;
        const json_t *job, *outs = json_object_get(manifest, "outputs"), *o;
        int64_t id = get_int(manifest, "job");
        const char *state;
        json_t *req;
        size_t i;
        int r;

        if (id <= 0) {
                verify_problem(v->bad, mpath, "error", "no job id", NULL);
                return EXIT_OK;
        }
        req = request_with_id("show", id);
        r = ctl_call(v->ctl, req, &result, &error);
        json_decref(req);
        if (r == -EREMOTEIO) {
                /* Pruned from the ledger (or never there): only the files can be checked. */
                v->unrecorded++;
                return EXIT_OK;
        }
        if (r < 0)
                return call_failed(r, error);

        job = json_object_get(result, "job");
        state = get_str(job, "state", "?");
        if (strcmp(state, "done") != 0) {
                _cleanup_free_ char *why =
                        xasprintf("the ledger has its job %" PRId64 " as %s", id, state);

                verify_problem(v->mismatched, mpath, "error", why, NULL);
                return EXIT_OK;
        }
        if (strcmp(get_str(job, "sha256", ""), get_str(manifest, "source_sha256", "")) != 0)
                verify_problem(v->mismatched, mpath, "error",
                               "the ledger records another source SHA-256", NULL);

        json_array_foreach(outs, i, o)
        {
                const char *file = get_str(o, "file", NULL), *sha = get_str(o, "sha256", "");
                _cleanup_free_ char *name = manifest_entry_name(o);
                _cleanup_free_ char *path = manifest_entry_path(dir, name);
                const json_t *lo, *found = NULL;
                size_t k;

                if (!path)
                        continue; /* reported as a bad manifest already */
                json_array_foreach(json_object_get(job, "outputs"), k, lo)
                {
                        const char *lpath = get_str(lo, "path", "");
                        const char *base = strrchr(lpath, '/');

                        if (strcmp(base ? base + 1 : lpath, file) == 0)
                                found = lo;
                }
                if (!found) {
                        _cleanup_free_ char *why =
                                xasprintf("the ledger's job %" PRId64 " has no such output", id);

                        verify_problem(v->mismatched, path, "manifest", mpath, "error", why, NULL);
                } else if (strcmp(get_str(found, "sha256", ""), sha) != 0) {
                        _cleanup_free_ char *why = xasprintf(
                                "the ledger's job %" PRId64 " records SHA-256 %s, the manifest %s",
                                id, get_str(found, "sha256", "?"), sha);

                        verify_problem(v->mismatched, path, "manifest", mpath, "error", why, NULL);
                }
        }
        return EXIT_OK;
}

/* Checks one manifest: every file it lists exists with its size and SHA-256, and the ledger
 * agrees. Returns EXIT_OK or, when imgd cannot be asked, an exit status. */
static int verify_manifest(struct verify *v, const char *mpath)
{
        _cleanup_(json_decrefp) json_t *m = NULL;
        _cleanup_free_ char *text = NULL, *dir = xstrdup(mpath);
        _cleanup_close_ int mfd = -1;
        json_error_t jerr;
        const json_t *outs, *o;
        char *slash;
        size_t i;
        ssize_t n;

        slash = strrchr(dir, '/');
        if (slash == dir)
                slash[1] = '\0';
        else if (slash)
                *slash = '\0';
        v->manifests++;

        mfd = open(mpath, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        if (mfd < 0) {
                verify_problem(v->bad, mpath, "error", strerror(errno), NULL);
                return EXIT_OK;
        }
        text = malloc(VERIFY_MANIFEST_MAX + 1);
        if (!text)
                oom();
        n = read(mfd, text, VERIFY_MANIFEST_MAX + 1);
        if (n < 0 || n > VERIFY_MANIFEST_MAX) {
                verify_problem(v->bad, mpath, "error",
                               n < 0 ? strerror(errno) : "larger than 1 MiB", NULL);
                return EXIT_OK;
        }
        m = json_loadb(text, (size_t)n, JSON_REJECT_DUPLICATES, &jerr);
        outs = json_object_get(m, "outputs");
        if (!m || !json_is_array(outs)) {
                _cleanup_free_ char *why =
                        xasprintf("not a manifest: %s", m ? "no \"outputs\" list" : jerr.text);

                verify_problem(v->bad, mpath, "error", why, NULL);
                return EXIT_OK;
        }

        json_array_foreach(outs, i, o)
        {
                const char *sha = get_str(o, "sha256", "");
                _cleanup_free_ char *name = manifest_entry_name(o);
                char *path = manifest_entry_path(dir, name);
                _cleanup_close_ int fd = -1;
                char actual[HASH_HEX_SIZE];
                struct stat st;
                int r;

                if (!path) {
                        verify_problem(v->bad, mpath, "error",
                                       "lists a file that is not a plain name", NULL);
                        continue;
                }
                strv_push(&v->listed, &v->n_listed, &v->alloc_listed, path);
                v->checked++;
                fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
                if (fd < 0) {
                        if (errno == ENOENT)
                                verify_problem(v->missing, path, "manifest", mpath, NULL);
                        else
                                verify_problem(v->altered, path, "manifest", mpath, "error",
                                               errno == ELOOP ? "is a symlink" : strerror(errno),
                                               NULL);
                        continue;
                }
                if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
                        verify_problem(v->altered, path, "manifest", mpath, "error",
                                       "not a regular file", NULL);
                        continue;
                }
                r = hash_sha256_fd(fd, 0, actual);
                if (r < 0) {
                        verify_problem(v->altered, path, "manifest", mpath, "error", strerror(-r),
                                       NULL);
                        continue;
                }
                if (strcmp(actual, sha) != 0 || (int64_t)st.st_size != get_int(o, "bytes")) {
                        _cleanup_free_ char *why = xasprintf(
                                "SHA-256 %.12s..., %jd bytes; the manifest says %.12s..., %" PRId64
                                " bytes",
                                actual, (intmax_t)st.st_size, sha, get_int(o, "bytes"));

                        verify_problem(v->altered, path, "manifest", mpath, "expected", sha,
                                       "actual", actual, "error", why, NULL);
                }
        }
        return verify_against_ledger(v, mpath, m, dir);
}

/* Verifies a tree: its manifests, then what no manifest lists. */
static int verify_tree(struct verify *v, const char *root)
{
        size_t first = v->n_files;
        int r;

        verify_walk(v, root, 0);
        qsort(v->files + first, v->n_files - first, sizeof *v->files, cmp_str);
        for (size_t i = first; i < v->n_files; i++)
                if (has_suffix(v->files[i], MANIFEST_SUFFIX)) {
                        r = verify_manifest(v, v->files[i]);
                        if (r != EXIT_OK)
                                return r;
                }
        qsort(v->listed, v->n_listed, sizeof *v->listed, cmp_str);
        for (size_t i = first; i < v->n_files; i++) {
                const char *path = v->files[i], *name = strrchr(path, '/') + 1;

                if (has_suffix(path, MANIFEST_SUFFIX) || pathmap_is_own_temp(name))
                        continue;
                if (!bsearch(&path, v->listed, v->n_listed, sizeof *v->listed, cmp_str))
                        verify_problem(v->orphaned, path, NULL);
        }
        return EXIT_OK;
}

static void verify_print(const char *what, const json_t *list)
{
        const json_t *o;
        size_t i;

        json_array_foreach(list, i, o)
        {
                _cleanup_free_ char *path = clean_text(get_str(o, "path", "?"), 0);
                _cleanup_free_ char *error = clean_text(get_str(o, "error", ""), 0);
                _cleanup_free_ char *manifest = clean_text(get_str(o, "manifest", ""), 0);

                printf("%-10s %s", what, path);
                if (*error)
                        printf(": %s", error);
                else if (*manifest)
                        printf(" (listed in %s)", manifest);
                fputc('\n', stdout);
        }
}

static int run_verify(struct ctl *ctl, int argc, char **argv)
{
        static const struct option options[] = {
                { "all", no_argument, NULL, 'a' },
                { "json", no_argument, NULL, 'j' },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        _cleanup_(json_decrefp) json_t *report = NULL, *roots = json_array();
        struct verify v = { .ctl = ctl };
        bool json = false, all = false, ok;
        size_t problems;
        int c, r = EXIT_OK;

        COMMAND_GETOPT_RESET();
        while ((c = getopt_long(argc, argv, ":h", options, NULL)) >= 0) {
                switch (c) {
                case 'a':
                        all = true;
                        break;
                case 'j':
                        json = true;
                        break;
                case 'h':
                        print_command_help(find_command("verify"));
                        return EXIT_OK;
                default:
                        return option_error("verify", c, argv);
                }
        }
        if (optind + 1 < argc)
                return usage_error("verify", "unexpected argument '%s'", argv[optind + 1]);
        if (all && optind < argc)
                return usage_error("verify", "give either PATH or --all, not both");

        v.missing = json_array();
        v.altered = json_array();
        v.orphaned = json_array();
        v.mismatched = json_array();
        v.bad = json_array();
        if (!roots || !v.missing || !v.altered || !v.orphaned || !v.mismatched || !v.bad)
                oom();

        if (optind < argc) {
                _cleanup_free_ char *real = realpath(argv[optind], NULL);
                struct stat st;

                if (!real || stat(real, &st) < 0) {
                        _cleanup_free_ char *clean = clean_text(argv[optind], 0);

                        errorf("%s: %s", clean, strerror(errno));
                        r = EXIT_FAILED;
                        goto out;
                }
                if (json_array_append_new(roots, proto_string_lossy(real)) < 0)
                        oom();
                if (S_ISDIR(st.st_mode))
                        r = verify_tree(&v, real);
                else if (S_ISREG(st.st_mode) && has_suffix(real, MANIFEST_SUFFIX))
                        r = verify_manifest(&v, real);
                else {
                        _cleanup_free_ char *clean = clean_text(real, 0);

                        errorf("%s is neither a folder nor a manifest (*%s)", clean,
                               MANIFEST_SUFFIX);
                        r = EXIT_FAILED;
                }
        } else {
                _cleanup_(json_decrefp) json_t *status = NULL;
                const json_t *w;
                size_t i;

                r = call(ctl, proto_request_new("status"), &status);
                if (r != EXIT_OK)
                        goto out;
                /* Every output tree once, even when several watches share one. */
                json_array_foreach(json_object_get(status, "watches"), i, w)
                {
                        const char *output = get_str(w, "output", NULL);
                        const json_t *seen;
                        size_t k;
                        bool dup = false;

                        if (!output)
                                continue;
                        json_array_foreach(roots, k, seen) if (strcmp(json_string_value(seen),
                                                                      output) == 0) dup = true;
                        if (dup)
                                continue;
                        if (json_array_append_new(roots, json_string(output)) < 0)
                                oom();
                        r = verify_tree(&v, output);
                        if (r != EXIT_OK)
                                goto out;
                }
        }
        if (r != EXIT_OK)
                goto out;

        problems = json_array_size(v.missing) + json_array_size(v.altered) +
                   json_array_size(v.orphaned) + json_array_size(v.mismatched) +
                   json_array_size(v.bad);
        ok = problems == 0;
        if (json) {
                report = json_pack("{s:b, s:O, s:i, s:i, s:i, s:O, s:O, s:O, s:O, s:O}", "ok",
                                   (int)ok, "roots", roots, "manifests", (int)v.manifests, "files",
                                   (int)v.checked, "unrecorded", (int)v.unrecorded, "missing",
                                   v.missing, "altered", v.altered, "orphaned", v.orphaned,
                                   "mismatched", v.mismatched, "bad", v.bad);
                if (!report)
                        oom();
                print_json(report);
        } else {
                verify_print("missing", v.missing);
                verify_print("altered", v.altered);
                verify_print("orphaned", v.orphaned);
                verify_print("mismatch", v.mismatched);
                verify_print("bad", v.bad);
                printf("%s: %u manifest(s), %u file(s) checked: %zu missing, %zu altered, "
                       "%zu orphaned, %zu ledger mismatch(es), %zu unreadable",
                       ok ? "ok" : "PROBLEMS", v.manifests, v.checked, json_array_size(v.missing),
                       json_array_size(v.altered), json_array_size(v.orphaned),
                       json_array_size(v.mismatched), json_array_size(v.bad));
                if (v.unrecorded > 0)
                        printf(" (%u manifest(s) of jobs no longer in the ledger: files checked "
                               "only)",
                               v.unrecorded);
                fputc('\n', stdout);
        }
        r = ok ? EXIT_OK : EXIT_FAILED;
out:
        strv_free(v.files, v.n_files);
        strv_free(v.listed, v.n_listed);
        json_decref(v.missing);
        json_decref(v.altered);
        json_decref(v.orphaned);
        json_decref(v.mismatched);
        json_decref(v.bad);
        return r;
}

static int run_help(struct ctl *ctl, int argc, char **argv)
{
        const struct command *c;

        (void)ctl;
        if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
                print_help();
                return EXIT_OK;
        }
        if (argc > 2)
                return usage_error("help", "unexpected argument '%s'", argv[2]);
        c = find_command(argv[1]);
        if (!c)
                return usage_error(NULL, "unknown command '%s'", argv[1]);
        print_command_help(c);
        return EXIT_OK;
}

/* ---- main ----------------------------------------------------------------------------- */

/* The socket to use, per -s, -c, $IMGD_SOCKET, default. Returns EXIT_OK or an exit status. */
static int find_socket(const char *socket_arg, const char *config_arg, char **ret)
{
        _cleanup_free_ char *error = NULL, *clean = NULL;
        struct config *cfg = NULL;
        const char *env;
        int r;

        if (socket_arg) {
                *ret = xstrdup(socket_arg);
                return EXIT_OK;
        }
        if (config_arg) {
                r = config_load(config_arg, &cfg, &error);
                if (r < 0) {
                        if (r == -ENOMEM && !error)
                                oom();
                        clean = clean_text(error ? error : strerror(-r), 0);
                        errorf("cannot read the socket path from %s: %s", config_arg, clean);
                        return EXIT_UNREACHABLE;
                }
                *ret = xstrdup(cfg->socket && *cfg->socket ? cfg->socket : CONFIG_DEFAULT_SOCKET);
                config_free(cfg);
                return EXIT_OK;
        }
        env = getenv("IMGD_SOCKET");
        *ret = xstrdup(env && *env ? env : CONFIG_DEFAULT_SOCKET);
        return EXIT_OK;
}

int main(int argc, char **argv)
{
        static const struct option options[] = {
                { "config", required_argument, NULL, 'c' },
                { "socket", required_argument, NULL, 's' },
                { "connect-timeout", required_argument, NULL, 'T' },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, 'V' },
                {},
        };
        const char *socket_arg = NULL, *config_arg = NULL;
        int64_t connect_wait_us = 0;
        _cleanup_free_ char *socket_path = NULL;
        const struct command *cmd;
        struct ctl ctl = { .fd = -1 };
        int c, r;

        /* Table columns are display columns of UTF-8 text (text_char()), whatever the
         * terminal's locale says (imgd's text is UTF-8). */
        if (!setlocale(LC_CTYPE, "") || strcmp(nl_langinfo(CODESET), "UTF-8") != 0)
                (void)setlocale(LC_CTYPE, "C.UTF-8");

        opterr = 0;
        while ((c = getopt_long(argc, argv, "+:c:s:h", options, NULL)) >= 0) {
                switch (c) {
                case 'c':
                        config_arg = optarg;
                        break;
                case 's':
                        socket_arg = optarg;
                        break;
                case 'T':
                        if (parse_duration(optarg, &connect_wait_us) < 0)
                                return usage_error(NULL,
                                                   "--connect-timeout: '%s' is not a duration "
                                                   "(30s, 2m; a bare number is seconds)",
                                                   optarg);
                        break;
                case 'h':
                        print_help();
                        return EXIT_OK;
                case 'V':
                        printf("imgctl %s\n", IMGD_VERSION);
                        return EXIT_OK;
                default:
                        return option_error(NULL, c, argv);
                }
        }
        if (socket_arg && config_arg)
                return usage_error(NULL, "give either -c CONFIG or -s SOCKET, not both");
        if (optind >= argc)
                return usage_error(NULL, "no command given (status, jobs, show, wait, retry, "
                                         "cancel, pause, resume, drain, enqueue, reload, "
                                         "metrics, events, top, verify, help)");

        cmd = find_command(argv[optind]);
        if (!cmd)
                return usage_error(NULL, "unknown command '%s'", argv[optind]);
        if (cmd->run == run_help)
                return run_help(NULL, argc - optind, argv + optind);

        /* --help needs no daemon and no configuration. */
        for (int i = optind + 1; i < argc && strcmp(argv[i], "--") != 0; i++)
                if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
                        print_command_help(cmd);
                        return EXIT_OK;
                }

        r = find_socket(socket_arg, config_arg, &socket_path);
        if (r != EXIT_OK)
                return r;
        ctl.socket = socket_path;
        ctl.connect_wait_us = connect_wait_us;

        r = cmd->run(&ctl, argc - optind, argv + optind);
        ctl_close(&ctl);
        if (fflush(stdout) != 0 || ferror(stdout)) {
                errorf("cannot write the output: %s", strerror(errno));
                return EXIT_FAILED;
        }
        return r;
}
