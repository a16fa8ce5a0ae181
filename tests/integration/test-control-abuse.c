/* SPDX-License-Identifier: MIT */
/*
 * test-control-abuse.c - the real daemon's control socket under abuse (idle subscribers, silent
 * connections, a 10 MB line, invalid UTF-8, deep nesting): `imgctl status` still answers within 1
 * s, the latencies are printed (issue 20).
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "daemon/control.h"
#include "shared/log.h"
#include "shared/macro.h"
#include "shared/proto.h"
#include "testutil.h"
#include "control-fixture.h"

/* A blocking connection to the socket at path, with 10 s send and receive timeouts. */
static int raw_connect(const char *path)
{
        struct timeval tv = { .tv_sec = 10 };
        int fd = tu_connect_raw(path);

        assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv), 0);
        assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
        return fd;
}

/*
 * Sends data on fd and reads what comes back: a new string with the first answer line, or
 * "(closed)" when the daemon closed the connection without one. Stops sending when the
 * daemon stops reading (it answered already). Fails the test on a timeout.
 */
static char *raw_exchange_on(int fd, const char *data, size_t n)
{
        char buf[4096];
        size_t len = 0;
        ssize_t k;

        while (n > 0) {
                k = send(fd, data, n, MSG_NOSIGNAL);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0) {
                        assert_true(errno == EPIPE || errno == ECONNRESET);
                        break;
                }
                data += k;
                n -= (size_t)k;
        }
        for (;;) {
                char *nl = memchr(buf, '\n', len);

                if (nl)
                        return strndup(buf, (size_t)(nl - buf));
                assert_true(len < sizeof buf);
                k = recv(fd, buf + len, sizeof buf - len, 0);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k == 0 || (k < 0 && errno == ECONNRESET))
                        return strdup("(closed)");
                if (k < 0)
                        fail_msg("no answer within 10 s: %s", strerror(errno));
                len += (size_t)k;
        }
}

/* raw_exchange_on() on a connection of its own. */
static char *raw_exchange(const char *path, const char *data, size_t n)
{
        int fd = raw_connect(path);
        char *line = raw_exchange_on(fd, data, n);

        close(fd);
        return line;
}

/* How long `imgctl status` takes (its own start included); fails the test if it fails. */
static int64_t status_us(struct tu_daemon *d)
{
        int64_t t0 = tu_now_us();
        char *out = NULL;
        int r = tu_imgctl(d, &out, "status", NULL);

        if (r != 0)
                fail_msg("imgctl status exited %d: %s", r, out ? out : "");
        free(out);
        return tu_now_us() - t0;
}

static int cmp_i64(const void *a, const void *b)
{
        int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

        return (x > y) - (x < y);
}

/* Runs `imgctl status` n times (n <= 16); prints the median and the worst, fails the test if
 * any took 1 s or more. */
static void measure_status(struct tu_daemon *d, const char *what, unsigned n)
{
        int64_t t[16];

        assert_true(n > 0 && n <= ELEMENTSOF(t));
        for (unsigned i = 0; i < n; i++)
                t[i] = status_us(d);
        qsort(t, n, sizeof t[0], cmp_i64);
        print_message("imgctl status %s: median %.1f ms, worst %.1f ms (%u runs)\n", what,
                      (double)t[n / 2] / 1000, (double)t[n - 1] / 1000, n);
        if (t[n - 1] >= 1000000)
                fail_msg("imgctl status %s took %.1f ms", what, (double)t[n - 1] / 1000);
}

/* Malformed requests: a 10 MB line without a newline, a line of invalid UTF-8, 100000 nested
 * brackets (over the line limit) and 30000 (within it). */
struct abuse {
        char *big, *nested, *nested_short;
        size_t big_len, nested_len, nested_short_len;
};

static void abuse_init(struct abuse *a)
{
        a->big_len = 10u * 1024 * 1024;
        a->big = malloc(a->big_len);
        assert_non_null(a->big);
        memset(a->big, 'x', a->big_len);
        a->nested_len = 100000 + 1;
        a->nested = malloc(a->nested_len);
        assert_non_null(a->nested);
        memset(a->nested, '[', a->nested_len - 1);
        a->nested[a->nested_len - 1] = '\n';
        a->nested_short_len = 30000 + 1;
        a->nested_short = malloc(a->nested_short_len);
        assert_non_null(a->nested_short);
        memset(a->nested_short, '[', a->nested_short_len - 1);
        a->nested_short[a->nested_short_len - 1] = '\n';
}

static const char bad_utf8[] = "{\"v\":1,\"cmd\":\"st\xff\xfe\xc3\x28tus\"}\n";

static void abuse_free(struct abuse *a)
{
        free(a->big);
        free(a->nested);
        free(a->nested_short);
}

/* Sends each malformed request on its own connection; each must get an error answer (or, if
 * too long, be closed). */
static void abuse_once(const char *path, const struct abuse *a)
{
        struct {
                const char *data;
                size_t n;
                const char *expect;
                bool may_close; /* too long: the daemon may close before we read its answer */
        } cases[] = {
                { a->big, a->big_len, "request too long", true },
                { bad_utf8, sizeof bad_utf8 - 1, "not valid JSON", false },
                { a->nested, a->nested_len, "request too long", true },
                { a->nested_short, a->nested_short_len, "not valid JSON", false },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                char *got = raw_exchange(path, cases[i].data, cases[i].n);

                if (!(cases[i].may_close && strcmp(got, "(closed)") == 0) &&
                    (!strstr(got, "\"ok\":false") || !strstr(got, cases[i].expect)))
                        fail_msg("malformed request %zu answered \"%s\" (expected an error "
                                 "saying \"%s\")",
                                 i, got, cases[i].expect);
                free(got);
        }
}

/* The malformed requests again and again, each on its own connection, without looking at
 * the answers: for a child process, which must not return into the test (it never does). */
_Noreturn static void abuse_forever(const char *path, const struct abuse *a)
{
        const struct {
                const char *data;
                size_t n;
        } cases[] = {
                { a->big, a->big_len },
                { bad_utf8, sizeof bad_utf8 - 1 },
                { a->nested, a->nested_len },
                { a->nested_short, a->nested_short_len },
        };
        struct sockaddr_un addr = { .sun_family = AF_UNIX };
        char buf[4096];

        snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path);
        for (size_t i = 0;; i = (i + 1) % ELEMENTSOF(cases)) {
                int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
                size_t sent = 0;
                ssize_t k;

                if (fd < 0)
                        _exit(1);
                if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
                        close(fd);
                        usleep(1000);
                        continue;
                }
                while (sent < cases[i].n) {
                        k = send(fd, cases[i].data + sent, cases[i].n - sent, MSG_NOSIGNAL);
                        if (k <= 0)
                                break;
                        sent += (size_t)k;
                }
                (void)recv(fd, buf, sizeof buf, 0);
                close(fd);
        }
}

/*
 * Issue 20, against the real daemon: CONTROL_MAX_SUBSCRIBERS idle subscribers and 100
 * connections that never send anything (they used to lock everyone out, the silent ones for
 * 30 s, the subscribers for good), then malformed requests (a 10 MB line, invalid UTF-8,
 * deep nesting) sent again and again by another process: `imgctl status` answers within 1 s
 * throughout; the latencies are printed. One subscriber more is refused with an error.
 */
static void test_daemon_under_abuse(void **state)
{
        struct tu_daemon d;
        int subs[CONTROL_MAX_SUBSCRIBERS], silent[100], extra;
        struct abuse a;
        char *line, *out = NULL;
        json_t *st;
        pid_t abuser;

        (void)state;
        tu_daemon_setup(&d,
                        "( { name = \"s\"; width = 64; height = 64; fit = \"cover\"; "
                        "format = \"webp\"; } )",
                        1, NULL);
        tu_daemon_start(&d);
        abuse_init(&a);
        measure_status(&d, "alone", 9);

        for (size_t i = 0; i < ELEMENTSOF(subs); i++) {
                subs[i] = raw_connect(d.socket);
                line = raw_exchange_on(subs[i], ctlfx_events, strlen(ctlfx_events));
                assert_non_null(strstr(line, "\"subscribed\":true"));
                free(line);
        }
        for (size_t i = 0; i < ELEMENTSOF(silent); i++)
                silent[i] = raw_connect(d.socket);
        usleep(200 * 1000);
        measure_status(&d, "with 16 idle subscribers and 100 silent connections", 9);

        extra = raw_connect(d.socket);
        line = raw_exchange_on(extra, ctlfx_events, strlen(ctlfx_events));
        if (!strstr(line, "too many event subscribers"))
                fail_msg("subscriber %d was answered \"%s\"", CONTROL_MAX_SUBSCRIBERS + 1, line);
        free(line);
        close(extra);

        abuse_once(d.socket, &a);
        measure_status(&d, "after malformed requests", 5);

        /* The same, sent again and again by another process while status is asked. */
        abuser = fork();
        assert_true(abuser >= 0);
        if (abuser == 0)
                abuse_forever(d.socket, &a);
        usleep(100 * 1000);
        measure_status(&d, "while malformed requests keep coming", 15);
        kill(abuser, SIGKILL);
        waitpid(abuser, NULL, 0);

        /* The subscribers are all still there. */
        assert_int_equal(tu_imgctl(&d, &out, "status", "--json", NULL), 0);
        st = json_loads(out, 0, NULL);
        assert_non_null(st);
        assert_int_equal(json_integer_value(json_object_get(st, "subscribers")),
                         CONTROL_MAX_SUBSCRIBERS);
        json_decref(st);
        free(out);

        for (size_t i = 0; i < ELEMENTSOF(silent); i++)
                close(silent[i]);
        for (size_t i = 0; i < ELEMENTSOF(subs); i++)
                close(subs[i]);
        abuse_free(&a);
        tu_daemon_cleanup(&d);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_daemon_under_abuse),
        };

        log_setup("test-control-abuse");
        return cmocka_run_group_tests(tests, NULL, NULL);
}
