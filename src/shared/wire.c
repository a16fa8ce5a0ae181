/* SPDX-License-Identifier: MIT */
/*
 * wire.c - one JSON object per SOCK_SEQPACKET datagram, descriptors as SCM_RIGHTS; see
 * wire.h. A datagram is never split, so a message is either received whole or refused.
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#include "shared/macro.h"
#include "shared/wire.h"

int wire_send(int sock, const json_t *msg, const int *fds, size_t n_fds)
{
        _cleanup_free_ char *text = json_dumps(msg, JSON_COMPACT);
        union {
                struct cmsghdr align;
                char buf[CMSG_SPACE(sizeof(int) * WIRE_MAX_FDS)];
        } control = {};
        struct iovec iov;
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
        size_t len;
        ssize_t k;

        if (!text)
                return -ENOMEM;
        len = strlen(text);
        if (len > WIRE_MAX_MESSAGE)
                return -EMSGSIZE;
        if (n_fds > WIRE_MAX_FDS)
                return -E2BIG;
        iov = (struct iovec){ .iov_base = text, .iov_len = len };
        if (n_fds > 0) {
                struct cmsghdr *c;

                mh.msg_control = control.buf;
                mh.msg_controllen = CMSG_SPACE(sizeof(int) * n_fds);
                c = CMSG_FIRSTHDR(&mh);
                c->cmsg_level = SOL_SOCKET;
                c->cmsg_type = SCM_RIGHTS;
                c->cmsg_len = CMSG_LEN(sizeof(int) * n_fds);
                memcpy(CMSG_DATA(c), fds, sizeof(int) * n_fds);
        }
        do
                k = sendmsg(sock, &mh, MSG_NOSIGNAL);
        while (k < 0 && errno == EINTR);
        if (k < 0)
                return negative_errno();
        return (size_t)k == len ? 0 : -EIO;
}

int wire_recv(int sock, json_t **ret_msg, int ret_fds[static WIRE_MAX_FDS], size_t *ret_n_fds)
{
        _cleanup_free_ char *buf = malloc(WIRE_MAX_MESSAGE + 1);
        union {
                struct cmsghdr align;
                char buf[CMSG_SPACE(sizeof(int) * WIRE_MAX_FDS)];
        } control = {};
        struct iovec iov = { .iov_base = buf, .iov_len = WIRE_MAX_MESSAGE + 1 };
        struct msghdr mh = {
                .msg_iov = &iov,
                .msg_iovlen = 1,
                .msg_control = control.buf,
                .msg_controllen = sizeof control.buf,
        };
        int fds[WIRE_MAX_FDS];
        size_t n_fds = 0;
        json_t *msg;
        ssize_t k;

        if (!buf)
                return -ENOMEM;
        do
                k = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
        while (k < 0 && errno == EINTR);
        if (k < 0)
                return errno == EWOULDBLOCK ? -EAGAIN : negative_errno();

        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
                if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
                        continue;
                size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                for (size_t i = 0; i < n && n_fds < WIRE_MAX_FDS; i++)
                        memcpy(&fds[n_fds++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        }

        if (k == 0 && n_fds == 0)
                return -ECONNRESET;
        msg = NULL;
        if (!(mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) && k <= WIRE_MAX_MESSAGE)
                msg = json_loadb(buf, (size_t)k, 0, NULL);
        if (!msg || !json_is_object(msg)) {
                json_decref(msg);
                for (size_t i = 0; i < n_fds; i++)
                        close(fds[i]);
                return -EBADMSG;
        }
        memcpy(ret_fds, fds, sizeof(int) * n_fds);
        *ret_n_fds = n_fds;
        *ret_msg = msg;
        return 0;
}
