/* SPDX-License-Identifier: MIT */
/*
 * api-fixture.c - helpers of the test-api-* programs: imgctl's JSON answers (status counts, the
 * newest job, one job shown), images and text files dropped into the uploads, and a raw client of
 * the control socket (connect, send, read a line, call, subscribe).
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#include "shared/hash.h"
#include "shared/proto.h"
#include "testutil.h"
#include "api-fixture.h"

json_int_t apifx_status_int(struct tu_daemon *d, const char *group, const char *key)
{
        json_t *st = tu_imgctl_json(d, "status", NULL, NULL);
        json_t *o = group ? json_object_get(st, group) : st;
        json_t *v = json_object_get(o, key);
        json_int_t n;

        if (json_is_boolean(v))
                n = json_is_true(v);
        else {
                assert_true(json_is_integer(v));
                n = json_integer_value(v);
        }
        json_decref(st);
        return n;
}

json_int_t apifx_count_state(struct tu_daemon *d, const char *state)
{
        return apifx_status_int(d, "jobs", state);
}

void apifx_wait_count(struct tu_daemon *d, const char *state, json_int_t want, int timeout_ms)
{
        json_int_t n = -1;

        for (int waited = 0; waited <= timeout_ms; waited += 50) {
                n = apifx_count_state(d, state);
                if (n == want)
                        return;
                usleep(50 * 1000);
        }
        fail_msg("%lld %s job(s) after %d ms, expected %lld", (long long)n, state, timeout_ms,
                 (long long)want);
}

void apifx_drop_image(struct tu_daemon *d, const char *name, unsigned w, unsigned h)
{
        char *tmp = tu_path("%s/%s", d->root, name);
        char *dest = tu_path("%s/%s", d->uploads, name);

        tu_make_image(tmp, w, h, "jpeg", false);
        if (rename(tmp, dest) != 0)
                fail_msg("rename %s -> %s: %m", tmp, dest);
        free(tmp);
        free(dest);
}

void apifx_drop_text(struct tu_daemon *d, const char *name)
{
        char *p = tu_path("%s/%s", d->uploads, name);

        tu_write_file(p, "this is not an image\n", (size_t)-1);
        free(p);
}

void apifx_assert_contains(const char *haystack, const char *needle)
{
        if (!haystack || !strstr(haystack, needle))
                fail_msg("expected '%s' in:\n%s", needle, haystack ? haystack : "(nothing)");
}

unsigned apifx_count_lines(const char *s)
{
        unsigned n = 0;

        for (; s && *s; s++)
                if (*s == '\n')
                        n++;
        return n;
}

void apifx_raw_connect(struct raw *c, const char *path)
{
        struct sockaddr_un addr = { .sun_family = AF_UNIX };

        c->len = 0;
        c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(c->fd >= 0);
        assert_true(strlen(path) < sizeof addr.sun_path);
        strcpy(addr.sun_path, path);
        if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) < 0)
                fail_msg("connect %s: %m", path);
}

void apifx_raw_send(struct raw *c, const char *line)
{
        size_t n = strlen(line);

        assert_int_equal(send(c->fd, line, n, MSG_NOSIGNAL), (ssize_t)n);
}

char *apifx_raw_read_line(struct raw *c, int timeout_ms, bool *ret_eof)
{
        int64_t deadline = tu_now_us() + (int64_t)timeout_ms * 1000;

        if (ret_eof)
                *ret_eof = false;
        for (;;) {
                char *nl = memchr(c->buf, '\n', c->len);
                struct pollfd p = { .fd = c->fd, .events = POLLIN };
                int64_t left;
                ssize_t k;

                if (nl) {
                        size_t n = (size_t)(nl - c->buf);
                        char *line = strndup(c->buf, n);

                        assert_non_null(line);
                        memmove(c->buf, nl + 1, c->len - n - 1);
                        c->len -= n + 1;
                        return line;
                }
                assert_true(c->len < sizeof c->buf);
                left = deadline - tu_now_us();
                if (left <= 0 || poll(&p, 1, (int)(left / 1000) + 1) <= 0)
                        return NULL;
                k = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
                if (k <= 0) {
                        if (ret_eof)
                                *ret_eof = true;
                        return NULL;
                }
                c->len += (size_t)k;
        }
}
