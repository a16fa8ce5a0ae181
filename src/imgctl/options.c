/* SPDX-License-Identifier: MIT */
/*
 * options.c - the one option parser of imgctl (imgctl.h): the table of every option (its
 * long name, its short letter, whether it takes a value), getopt_long over the options a verb
 * lists in the verb table (main.c), the parsers of option values, the check of the verb's
 * operands, and the usage errors ("imgctl: VERB: MESSAGE" and "Try 'imgctl help VERB'.").
 *
 * getopt_long runs with opterr = 0 and a ':' leading the short options, so that every
 * message is imgctl's own, and with optind = 0 before each parse, so that glibc starts over
 * (the global options first, then the verb's over the verb's own argv). The global options
 * stop at the first operand, the verb ('+'); a verb's options and operands may be mixed (glibc
 * moves the operands to the end of argv). A value is parsed where its option stands, so the
 * first mistake from the left is the one reported.
 */
#include <assert.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "imgctl/imgctl.h"
#include "shared/time-util.h"

/* The getopt_long value of an option without a short letter. */
#define LONG_ONLY(id) (256 + (int)(id))

static const struct option_def {
        const char *name;
        char short_name; /* 0: none */
        bool has_arg;
} option_defs[_OPTION_MAX] = {
        [OPTION_CONFIG] = { "config", 'c', true },
        [OPTION_SOCKET] = { "socket", 's', true },
        [OPTION_CONNECT_TIMEOUT] = { "connect-timeout", 0, true },
        [OPTION_HELP] = { "help", 'h', false },
        [OPTION_VERSION] = { "version", 0, false },
        [OPTION_JSON] = { "json", 0, false },
        [OPTION_STATE] = { "state", 0, true },
        [OPTION_WATCH] = { "watch", 0, true },
        [OPTION_SINCE] = { "since", 0, true },
        [OPTION_LIMIT] = { "limit", 0, true },
        [OPTION_TIMEOUT] = { "timeout", 't', true },
        [OPTION_DEAD] = { "dead", 0, false },
        [OPTION_FOLLOW] = { "follow", 'f', false },
        [OPTION_ITERATIONS] = { "iterations", 'n', true },
        [OPTION_ALL] = { "all", 0, false },
};

/* ---- usage errors ----------------------------------------------------------------------- */

int options_usage_error(const char *verb, const char *fmt, ...)
{
        va_list ap;

        fprintf(stderr, "%s: ", IMGCTL_PROGRAM);
        if (verb)
                fprintf(stderr, "%s: ", verb);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fprintf(stderr, "\nTry '%s help%s%s'.\n", IMGCTL_PROGRAM, verb ? " " : "",
                verb ? verb : "");
        return EXIT_USAGE;
}

/* For getopt_long's '?' and ':' results: names the option as written (a long one without
 * any "=value"). Returns -EINVAL. */
static int option_error(const char *verb, int c, char **argv)
{
        const char *arg = optind > 0 ? argv[optind - 1] : NULL;
        char opt[3] = { '-', (char)optopt, '\0' };
        int len;

        if (arg && strncmp(arg, "--", 2) == 0) {
                len = (int)strcspn(arg, "=");
        } else {
                arg = opt;
                len = 2;
        }
        if (c == ':')
                options_usage_error(verb, "option '%.*s' needs an argument", len, arg);
        else
                options_usage_error(verb, "unknown option '%.*s'", len, arg);
        return -EINVAL;
}

/* ---- option values ---------------------------------------------------------------------- */

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
static int parse_duration(const char *s, int64_t *ret_usec)
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
        *ret_usec = total * (int64_t)USEC_PER_SEC;
        return 0;
}

/* "2026-11-23", "2026-11-23T10:00", "2026-11-23 10:00:05", local time, or UTC with a
 * trailing Z -> microseconds since the epoch. */
static int parse_date(const char *s, int64_t *ret_usec)
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
                *ret_usec = (int64_t)t * (int64_t)USEC_PER_SEC;
                return 0;
        }
        return -EINVAL;
}

/* --since: a time ago or a date -> microseconds since the epoch. */
static int parse_since(const char *s, int64_t *ret_usec)
{
        int64_t usec;

        if (parse_duration(s, &usec) == 0) {
                usec = wall_usec() - usec;
                *ret_usec = usec > 0 ? usec : 1;
                return 0;
        }
        if (parse_date(s, &usec) == 0) {
                *ret_usec = usec > 0 ? usec : 1;
                return 0;
        }
        return -EINVAL;
}

/* A watch path as imgd records it: absolute, without a trailing slash. */
static char *normalize_watch(const char *s)
{
        _cleanup_free_ char *cwd = NULL;
        char *p;
        size_t n;

        if (s[0] == '/') {
                p = imgctl_strdup(s);
        } else {
                cwd = getcwd(NULL, 0);
                if (!cwd)
                        return imgctl_strdup(s);
                p = imgctl_asprintf("%s/%s", strcmp(cwd, "/") == 0 ? "" : cwd, s);
        }
        n = strlen(p);
        while (n > 1 && p[n - 1] == '/')
                p[--n] = '\0';
        if (n > 2 && strcmp(p + n - 2, "/.") == 0)
                p[n - 2] = '\0';
        return p;
}

/* A number of seconds (may have a fraction) for --timeout; returns 0 or -EINVAL. */
static int parse_seconds(const char *arg, double *ret)
{
        char *end;
        double v;

        errno = 0;
        v = strtod(arg, &end);
        if (end == arg || *end != '\0' || errno == ERANGE || !isfinite(v) || v < 0 || v > 1e9)
                return -EINVAL;
        *ret = v;
        return 0;
}

/* Stores the option `id` with its value arg (NULL for a flag) in a. Returns OPTIONS_RUN,
 * OPTIONS_HELP, OPTIONS_VERSION, or -EINVAL after the usage error. */
static int option_apply(const char *verb, enum imgctl_option id, const char *arg,
                        struct verb_args *a)
{
        switch (id) {
        case OPTION_CONFIG:
                a->config = arg;
                break;
        case OPTION_SOCKET:
                a->socket = arg;
                break;
        case OPTION_CONNECT_TIMEOUT:
                if (parse_duration(arg, &a->connect_wait_usec) < 0) {
                        options_usage_error(verb,
                                            "--connect-timeout: '%s' is not a duration (30s, 2m; "
                                            "a bare number is seconds)",
                                            arg);
                        return -EINVAL;
                }
                break;
        case OPTION_HELP:
                return OPTIONS_HELP;
        case OPTION_VERSION:
                return OPTIONS_VERSION;
        case OPTION_JSON:
                a->json = true;
                break;
        case OPTION_STATE:
                a->state = arg;
                break;
        case OPTION_WATCH:
                free(a->watch);
                a->watch = normalize_watch(arg);
                break;
        case OPTION_SINCE:
                if (parse_since(arg, &a->since_usec) < 0) {
                        options_usage_error(verb,
                                            "--since '%s': expected a time ago such as 10m, 2h or "
                                            "1d, or a date such as 2026-11-23T10:00",
                                            arg);
                        return -EINVAL;
                }
                break;
        case OPTION_LIMIT:
                if (parse_int(arg, 1, LIST_MAX, &a->limit) < 0) {
                        options_usage_error(verb, "--limit '%s': expected a number from 1 to %d",
                                            arg, LIST_MAX);
                        return -EINVAL;
                }
                break;
        case OPTION_TIMEOUT:
                if (parse_seconds(arg, &a->timeout_s) < 0) {
                        options_usage_error(verb, "--timeout '%s': expected a number of seconds",
                                            arg);
                        return -EINVAL;
                }
                a->has_timeout = true;
                break;
        case OPTION_DEAD:
                a->dead = true;
                break;
        case OPTION_FOLLOW:
                a->follow = true;
                break;
        case OPTION_ITERATIONS:
                if (parse_int(arg, 1, INT32_MAX, &a->iterations) < 0) {
                        options_usage_error(verb, "--iterations '%s': expected a positive number",
                                            arg);
                        return -EINVAL;
                }
                break;
        case OPTION_ALL:
                a->all = true;
                break;
        case OPTION_END:
        case _OPTION_MAX:
                assert(!"not an option");
                break;
        }
        return OPTIONS_RUN;
}

/* ---- operands --------------------------------------------------------------------------- */

/* The one JOB operand ("42" or "#42") at argv[first]. Returns 0 or -EINVAL. */
static int parse_job_operand(const char *verb, int first, int argc, char **argv, int64_t *ret)
{
        const char *arg;

        if (first >= argc) {
                options_usage_error(verb, "which job? Give its ID, as listed by 'jobs'");
                return -EINVAL;
        }
        if (first + 1 < argc) {
                options_usage_error(verb, "unexpected argument '%s'", argv[first + 1]);
                return -EINVAL;
        }
        arg = argv[first];
        if (arg[0] == '#')
                arg++;
        if (parse_int(arg, 1, INT64_MAX, ret) < 0) {
                options_usage_error(verb, "'%s' is not a job ID (a positive number)", argv[first]);
                return -EINVAL;
        }
        return 0;
}

/* Checks the operands argv[first..argc) by the verb's kind and stores them in a. Returns 0 or
 * -EINVAL after the usage error. */
static int parse_operands(const struct verb *v, int first, int argc, char **argv,
                          struct verb_args *a)
{
        switch (v->operands) {
        case OPERANDS_NONE:
                if (first < argc)
                        break;
                return 0;
        case OPERANDS_JOB:
                return parse_job_operand(v->name, first, argc, argv, &a->job);
        case OPERANDS_JOB_OR_DEAD:
                if (!a->dead)
                        return parse_job_operand(v->name, first, argc, argv, &a->job);
                if (first < argc) {
                        options_usage_error(v->name, "give either JOB or --dead, not both");
                        return -EINVAL;
                }
                return 0;
        case OPERANDS_FILE:
                if (first >= argc) {
                        options_usage_error(v->name, "which file? Give its path");
                        return -EINVAL;
                }
                if (first + 1 < argc) {
                        first++;
                        break;
                }
                a->path = argv[first];
                return 0;
        case OPERANDS_PATH_OR_ALL:
                if (first + 1 < argc) {
                        first++;
                        break;
                }
                if (a->all && first < argc) {
                        options_usage_error(v->name, "give either PATH or --all, not both");
                        return -EINVAL;
                }
                a->path = first < argc ? argv[first] : NULL;
                return 0;
        case OPERANDS_WORD:
                if (first >= argc) {
                        options_usage_error(v->name, "what should it do? See: imgctl help %s",
                                            v->name);
                        return -EINVAL;
                }
                if (first + 1 < argc) {
                        first++;
                        break;
                }
                a->word = argv[first];
                return 0;
        case OPERANDS_UNPARSED:
                return 0;
        }
        /* argv[first] is one operand too many. */
        options_usage_error(v->name, "unexpected argument '%s'", argv[first]);
        return -EINVAL;
}

/* ---- the parser ------------------------------------------------------------------------- */

int options_parse(const struct verb *v, int argc, char **argv, struct verb_args *ret)
{
        struct option longopts[_OPTION_MAX + 1] = {};
        enum imgctl_option ids[_OPTION_MAX] = {};
        /* "+:" and a letter with ':' per option. */
        char shortopts[2 + 2 * _OPTION_MAX + 1] = "";
        struct verb_args a = { .verb = v };
        size_t n = 0, k = 0;
        int c, r;

        if (!v->name)
                shortopts[k++] = '+';
        shortopts[k++] = ':';
        for (const enum imgctl_option *o = v->options; *o != OPTION_END; o++, n++) {
                const struct option_def *d = &option_defs[*o];

                assert(n < ELEMENTSOF(ids));
                ids[n] = *o;
                longopts[n] =
                        (struct option){ d->name, d->has_arg ? required_argument : no_argument,
                                         NULL, d->short_name ? d->short_name : LONG_ONLY(*o) };
                if (d->short_name) {
                        shortopts[k++] = d->short_name;
                        if (d->has_arg)
                                shortopts[k++] = ':';
                }
        }
        shortopts[k] = '\0';

        optind = 0;
        opterr = 0;
        while ((c = getopt_long(argc, argv, shortopts, longopts, NULL)) >= 0) {
                enum imgctl_option id = OPTION_END;

                for (size_t i = 0; i < n && id == OPTION_END; i++)
                        if (longopts[i].val == c)
                                id = ids[i];
                if (id == OPTION_END) {
                        r = option_error(v->name, c, argv);
                        goto discard;
                }
                r = option_apply(v->name, id, option_defs[id].has_arg ? optarg : NULL, &a);
                if (r != OPTIONS_RUN)
                        goto discard;
        }
        if (!v->name)
                a.next = optind;
        else {
                r = parse_operands(v, optind, argc, argv, &a);
                if (r < 0)
                        goto discard;
        }
        *ret = a;
        return OPTIONS_RUN;
discard:
        verb_args_clear(&a);
        return r;
}

void verb_args_clear(struct verb_args *a)
{
        free(a->watch);
        *a = (struct verb_args){ 0 };
}
