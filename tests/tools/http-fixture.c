/* SPDX-License-Identifier: MIT */
/*
 * http-fixture.c - the HTTP client of the test-http-* programs: one request over TCP on the
 * loopback or a Unix socket with its reply (status line, headers, body), the port the daemon
 * logged, and an image dropped into the uploads.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include "daemon/http.h"
#include "testutil.h"
#include "http-fixture.h"

void httpfx_reply_done(struct reply *r)
{
        free(r->headers);
        free(r->body);
        *r = (struct reply){};
}

char *httpfx_header(const struct reply *r, const char *name)
{
        for (const char *p = r->headers; p && (p = strstr(p, "\r\n")); p += 2) {
                const char *line = p + 2, *end = strstr(line, "\r\n");

                if (strncasecmp(line, name, strlen(name)) == 0 && line[strlen(name)] == ':') {
                        const char *v = line + strlen(name) + 1;

                        while (*v == ' ')
                                v++;
                        return strndup(v, end ? (size_t)(end - v) : strlen(v));
                }
        }
        return NULL;
}

int httpfx_connect_to(const char *where)
{
        int fd;

        if (where[0] == '/') {
                struct sockaddr_un un = { .sun_family = AF_UNIX };

                snprintf(un.sun_path, sizeof un.sun_path, "%s", where);
                fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (fd >= 0 && connect(fd, (struct sockaddr *)&un, sizeof un) < 0) {
                        close(fd);
                        fd = -1;
                }
        } else {
                struct sockaddr_in in = { .sin_family = AF_INET,
                                          .sin_port = htons((uint16_t)atoi(where)),
                                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };

                fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (fd >= 0 && connect(fd, (struct sockaddr *)&in, sizeof in) < 0) {
                        close(fd);
                        fd = -1;
                }
        }
        return fd;
}

int httpfx_request(const char *where, const char *method, const char *path, int timeout_ms,
                   struct reply *ret)
{
        char *req = NULL, *buf = NULL, *split;
        size_t len = 0, cap = 0;
        int64_t deadline = tu_now_us() + (int64_t)timeout_ms * 1000;
        int fd, r = 0;

        *ret = (struct reply){};
        fd = httpfx_connect_to(where);
        if (fd < 0)
                return -errno;
        assert_true(asprintf(&req, "%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                             method, path) > 0);
        if (write(fd, req, strlen(req)) != (ssize_t)strlen(req))
                r = -EIO;
        free(req);
        while (r == 0) {
                struct pollfd p = { .fd = fd, .events = POLLIN };
                int64_t left = deadline - tu_now_us();
                ssize_t n;

                if (left <= 0 || poll(&p, 1, (int)(left / 1000) + 1) == 0) {
                        r = -ETIMEDOUT;
                        break;
                }
                if (len + 4096 + 1 > cap) {
                        cap = cap ? cap * 2 : 16384;
                        buf = realloc(buf, cap);
                        assert_non_null(buf);
                }
                n = read(fd, buf + len, 4096);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        r = -errno;
                        break;
                }
                if (n == 0)
                        break;
                len += (size_t)n;
        }
        close(fd);
        if (r < 0 && len == 0) {
                free(buf);
                return r;
        }
        if (!buf)
                return -ECONNRESET;
        buf[len] = '\0';
        split = strstr(buf, "\r\n\r\n");
        if (split && sscanf(buf, "HTTP/1.%*d %d", &ret->status) == 1) {
                ret->headers = strndup(buf, (size_t)(split - buf));
                ret->body_len = len - (size_t)(split + 4 - buf);
                ret->body = strndup(split + 4, ret->body_len);
        }
        free(buf);
        return 0;
}

void httpfx_must_request(const char *where, const char *method, const char *path, struct reply *ret)
{
        int r = httpfx_request(where, method, path, 10000, ret);

        if (r < 0 || ret->status == 0)
                fail_msg("%s %s on %s: no HTTP answer (%s)", method, path, where,
                         r < 0 ? strerror(-r) : "not HTTP");
}

char *httpfx_logged_port(struct tu_daemon *d)
{
        char *log = tu_read_file(d->log, NULL), *p, *port;

        assert_non_null(log);
        p = strstr(log, "/health on 127.0.0.1:");
        if (!p)
                fail_msg("imgd did not log its HTTP address:\n%s", log);
        port = strndup(p + strlen("/health on 127.0.0.1:"),
                       strspn(p + strlen("/health on 127.0.0.1:"), "0123456789"));
        free(log);
        return port;
}

void httpfx_drop_image(struct tu_daemon *d, const char *name)
{
        char *tmp = tu_path("%s/.%s", d->root, name), *dst = tu_path("%s/%s", d->uploads, name);

        tu_make_image(tmp, 120, 80, "jpeg", false);
        assert_int_equal(rename(tmp, dst), 0);
        free(tmp);
        free(dst);
}
