/* SPDX-License-Identifier: MIT */
/*
 * hash.c - SHA-256 as hex through libcrypto's EVP interface; see hash.h.
 */
#include <errno.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <unistd.h>

#include "shared/fileio.h"
#include "shared/hash.h"
#include "shared/macro.h"

static void to_hex(const unsigned char *md, unsigned n, char *out)
{
        static const char digits[] = "0123456789abcdef";

        for (unsigned i = 0; i < n; i++) {
                out[2 * i] = digits[md[i] >> 4];
                out[2 * i + 1] = digits[md[i] & 15];
        }
        out[2 * n] = '\0';
}

void hash_sha256_buf(const void *buf, size_t n, char ret_hex[static HASH_HEX_SIZE])
{
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned len = 0;

        EVP_Digest(buf, n, md, &len, EVP_sha256(), NULL);
        to_hex(md, len, ret_hex);
}

DEFINE_TRIVIAL_CLEANUP_FUNC(EVP_MD_CTX *, EVP_MD_CTX_free)

int hash_sha256_fd(int fd, uint64_t max_bytes, char ret_hex[static HASH_HEX_SIZE])
{
        _cleanup_(EVP_MD_CTX_freep) EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned char buf[1 << 16];
        unsigned len = 0;
        uint64_t off = 0;

        if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1)
                return -ENOMEM;
        for (;;) {
                ssize_t k = read_at_step(fd, buf, sizeof buf, &off, max_bytes);

                if (k < 0)
                        return (int)k;
                if (k == 0)
                        break;
                if (EVP_DigestUpdate(ctx, buf, (size_t)k) != 1)
                        return -EIO;
        }
        if (EVP_DigestFinal_ex(ctx, md, &len) != 1)
                return -EIO;
        to_hex(md, len, ret_hex);
        return 0;
}
