/* SPDX-License-Identifier: MIT */
/*
 * imgctl.c - the command-line client of imgd's control socket: status, jobs, show, wait.
 *
 * It finds the socket (-s, else the "socket" setting of the configuration named by -c, else
 * $IMGD_SOCKET, else CONFIG_DEFAULT_SOCKET), connects, and sends one request line per
 * command over one connection (wait sends one every 100 ms). Every read and write has a
 * deadline of 10 s; an answer is one line of at most PROTO_MAX_LINE bytes, parsed with the
 * same codec as the daemon's (proto.h). It never touches the ledger itself.
 *
 * Everything printed that came from the daemon (file names, error texts) is stripped of
 * control characters first, so a file name cannot play tricks on a terminal.
 *
 * Exit status: 0 success; 1 the command failed (imgd answered with an error, wait timed
 * out); 2 usage error; 3 imgd could not be reached (or its configuration could not be read,
 * or its answer was not understood).
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "imgd/config.h"
#include "imgd/macro.h"
#include "imgd/proto.h"

enum {
        EXIT_OK = 0,
        EXIT_FAILED = 1,
        EXIT_USAGE = 2,
        EXIT_UNREACHABLE = 3,
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

static int64_t mono_now_us(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t wall_now_us(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Characters (not bytes) in a UTF-8 string, for column widths. */
static size_t text_width(const char *s)
{
        size_t n = 0;

        for (; *s; s++)
                if (((unsigned char)*s & 0xc0) != 0x80)
                        n++;
        return n;
}

/*
 * A copy of s fit for a terminal: control characters (C0, DEL and the UTF-8 encoded C1
 * range) become '?'. With max_chars > 0, a longer text is cut to max_chars characters, the
 * last three of them "...".
 */
static char *clean_text(const char *s, size_t max_chars)
{
        const unsigned char *p = (const unsigned char *)(s ? s : "");
        size_t keep = SIZE_MAX, chars = 0;
        char *out, *q;

        if (max_chars > 3 && text_width((const char *)p) > max_chars)
                keep = max_chars - 3;
        out = q = malloc(strlen((const char *)p) + 4);
        if (!out)
                oom();
        while (*p && chars < keep) {
                size_t k = 1;

                if (*p < 0x20 || *p == 0x7f) {
                        *q++ = '?';
                } else if (*p == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f) {
                        *q++ = '?';
                        k = 2;
                } else {
                        *q++ = (char)*p;
                        while (p[k] && (p[k] & 0xc0) == 0x80)
                                *q++ = (char)p[k++];
                }
                p += k;
                chars++;
        }
        if (*p) {
                memcpy(q, "...", 3);
                q += 3;
        }
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

/* "512 B", "12.1 KiB", "3.4 MiB". */
static void format_bytes(uint64_t n, char *buf, size_t size)
{
        static const char *const units[] = {"KiB", "MiB", "GiB", "TiB"};
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
        *t = (struct table){.n_cols = n_cols};
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
        size_t width[16] = {0};

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
        *t = (struct table){0};
}

/* ---- talking to imgd ------------------------------------------------------------------ */

struct ctl {
        const char *socket;
        int fd;
        char *buf;   /* PROTO_MAX_LINE + 1 bytes: one answer and its newline */
        size_t len;  /* bytes in buf */
        size_t used; /* of which the line returned last, with its newline */
};

/*
 * Connects to the socket. Returns 0, or a negative errno with the message in *ret_error:
 * "cannot connect to PATH: CAUSE (HINT)".
 */
static int ctl_connect(struct ctl *ctl, char **ret_error)
{
        struct sockaddr_un addr = {.sun_family = AF_UNIX};
        struct timeval tv = {.tv_sec = IO_TIMEOUT_MS / 1000};
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
        if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
                r = negative_errno();
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
                *ret_error = xasprintf("cannot connect to %s: %s%s", ctl->socket, strerror(-r),
                                       hint);
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
        struct pollfd p = {.fd = ctl->fd, .events = events};
        int64_t left;
        int r;

        for (;;) {
                left = deadline - mono_now_us();
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
        int64_t deadline = mono_now_us() + (int64_t)IO_TIMEOUT_MS * 1000;
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
        if (r >= 0)
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
        "    file, the watched folders with their output folder and pipeline, the\n"
        "    workers (how many, how many busy) and the number of jobs in each state.\n"
        "\n"
        "    --json    print the daemon's answer as indented JSON instead\n";

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
        "    output key, content SHA-256, state, attempts, times, and last error; then\n"
        "    the outputs it published (variant, format, size, path) and the error of\n"
        "    every failed attempt.\n"
        "\n"
        "    --json    print the daemon's answer as indented JSON instead\n";

static const char help_wait[] =
        "    Wait until no job is queued, running or waiting for a retry, asking the\n"
        "    daemon every 100 ms. Uploads the daemon has not noticed yet are not counted.\n"
        "\n"
        "    --timeout SECONDS  give up after SECONDS (may have a fraction): print what\n"
        "                       is left to stderr and exit with status 1. Without it,\n"
        "                       wait as long as it takes.\n";

static const char help_help[] = "    Show this text, or the text of one COMMAND.\n";

static int run_status(struct ctl *ctl, int argc, char **argv);
static int run_jobs(struct ctl *ctl, int argc, char **argv);
static int run_show(struct ctl *ctl, int argc, char **argv);
static int run_wait(struct ctl *ctl, int argc, char **argv);
static int run_help(struct ctl *ctl, int argc, char **argv);

static const struct command commands[] = {
        {"status", run_status, "status [--json]", help_status},
        {"jobs", run_jobs,
         "jobs [--state STATE] [--watch DIR] [--since WHEN] [--limit N] [--json]", help_jobs},
        {"show", run_show, "show JOB [--json]", help_show},
        {"wait", run_wait, "wait [--timeout SECONDS]", help_wait},
        {"help", run_help, "help [COMMAND]", help_help},
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
               "Ask imgd, the image variant daemon, what it is doing, through its control\n"
               "socket. imgctl only reads; it never changes a job.\n"
               "\n"
               "Commands:\n",
               program, program, program);
        for (size_t i = 0; i < ELEMENTSOF(commands); i++)
                printf("  %s\n%s\n", commands[i].synopsis, commands[i].help);
        printf("Options:\n"
               "  -c, --config FILE    read the socket path from imgd's configuration FILE\n"
               "                       (its \"socket\" setting)\n"
               "  -s, --socket PATH    use the control socket at PATH\n"
               "  -h, --help           show this text and exit\n"
               "      --version        show imgctl's version and exit\n"
               "  COMMAND --help       show the text of one command\n"
               "\n"
               "Exit status:\n"
               "  0  success\n"
               "  1  the command failed: imgd answered with an error (for example, no such\n"
               "     job), or wait timed out\n"
               "  2  usage error: unknown command or option, missing or malformed argument\n"
               "  3  imgd could not be reached: no socket, connection refused, permission\n"
               "     denied, no answer within %d s, or an answer imgctl does not\n"
               "     understand; also when the configuration given with -c cannot be read\n"
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
               "  %s wait --timeout 60 && echo all uploads processed\n",
               IO_TIMEOUT_MS / 1000, CONFIG_DEFAULT_SOCKET, CONFIG_DEFAULT_PATH, program,
               program, program, program);
}

static void print_command_help(const struct command *c)
{
        printf("Usage: %s [-c CONFIG | -s SOCKET] %s\n\n%s", program, c->synopsis, c->help);
        printf("\nSee '%s help' for the global options, exit status and environment.\n",
               program);
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
        char opt[3] = {'-', (char)optopt, '\0'};
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
        } units[] = {{'s', 1}, {'m', 60}, {'h', 3600}, {'d', 86400}, {'w', 7 * 86400}};
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
                "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M",
                "%Y-%m-%d",
        };

        for (size_t i = 0; i < ELEMENTSOF(formats); i++) {
                struct tm tm = {0};
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
                us = wall_now_us() - us;
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
                {"json", no_argument, NULL, 'j'},
                {"help", no_argument, NULL, 'h'},
                {},
        };
        _cleanup_(json_decrefp) json_t *result = NULL;
        const json_t *watches, *workers, *jobs, *v;
        const char *key;
        char uptime[32];
        struct table t;
        bool json = false, first;
        int c, r;

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
        if (json)
                return print_json(result);

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

        /* Every state the daemon reports, in its order: queued 0  running 1  retry 0 ... */
        jobs = json_object_get(result, "jobs");
        printf("jobs     ");
        first = true;
        json_object_foreach((json_t *)jobs, key, v) {
                _cleanup_free_ char *name = clean_text(key, 0);

                printf("%s%s %" PRId64, first ? "" : "  ", name, (int64_t)json_integer_value(v));
                first = false;
        }
        printf("\n\n");

        watches = json_object_get(result, "watches");
        if (json_array_size(watches) == 0) {
                printf("no watched folders\n");
                return EXIT_OK;
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
        return EXIT_OK;
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
                {"state", required_argument, NULL, 'S'},
                {"watch", required_argument, NULL, 'W'},
                {"since", required_argument, NULL, 'T'},
                {"limit", required_argument, NULL, 'L'},
                {"json", no_argument, NULL, 'j'},
                {"help", no_argument, NULL, 'h'},
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
                        table_add(&t, get_str(o, "variant", NULL), get_str(o, "format", NULL),
                                  size, bytes, get_str(o, "path", NULL));
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
                {"json", no_argument, NULL, 'j'},
                {"help", no_argument, NULL, 'h'},
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
                {"timeout", required_argument, NULL, 't'},
                {"help", no_argument, NULL, 'h'},
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
                deadline = mono_now_us() + (int64_t)(timeout_s * 1e6);

        for (;;) {
                _cleanup_(json_decrefp) json_t *result = NULL;
                const json_t *jobs;
                int64_t queued, running, retry, left;

                r = call(ctl, proto_request_new("status"), &result);
                if (r != EXIT_OK)
                        return r;
                jobs = json_object_get(result, "jobs");
                queued = get_int(jobs, "queued");
                running = get_int(jobs, "running");
                retry = get_int(jobs, "retry");
                if (queued + running + retry == 0)
                        return EXIT_OK;

                if (timeout_arg) {
                        left = deadline - mono_now_us();
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
                *ret = xstrdup(cfg->socket && *cfg->socket ? cfg->socket
                                                           : CONFIG_DEFAULT_SOCKET);
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
                {"config", required_argument, NULL, 'c'},
                {"socket", required_argument, NULL, 's'},
                {"help", no_argument, NULL, 'h'},
                {"version", no_argument, NULL, 'V'},
                {},
        };
        const char *socket_arg = NULL, *config_arg = NULL;
        _cleanup_free_ char *socket_path = NULL;
        const struct command *cmd;
        struct ctl ctl = {.fd = -1};
        int c, r;

        opterr = 0;
        while ((c = getopt_long(argc, argv, "+:c:s:h", options, NULL)) >= 0) {
                switch (c) {
                case 'c':
                        config_arg = optarg;
                        break;
                case 's':
                        socket_arg = optarg;
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
                return usage_error(NULL, "no command given (status, jobs, show, wait, help)");

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

        r = cmd->run(&ctl, argc - optind, argv + optind);
        ctl_close(&ctl);
        if (fflush(stdout) != 0 || ferror(stdout)) {
                errorf("cannot write the output: %s", strerror(errno));
                return EXIT_FAILED;
        }
        return r;
}
