/* SPDX-License-Identifier: MIT */
/*
 * test-api-verify.c - `imgctl verify` end to end on the real imgd: all good, altered, missing,
 * orphaned, and a manifest the ledger contradicts.
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

/* Replaces the first occurrence of `from` in file `path` by `to` (same length). */
static void patch_file(const char *path, const char *from, const char *to)
{
        size_t len;
        char *text = tu_read_file(path, &len), *at;

        assert_non_null(text);
        at = strstr(text, from);
        assert_non_null(at);
        assert_int_equal(strlen(from), strlen(to));
        memcpy(at, to, strlen(to));
        tu_write_file(path, text, len);
        free(text);
}

static json_t *verify_json(struct tu_daemon *d, int expect_status, const char *arg)
{
        char *out = NULL;
        json_error_t err;
        json_t *j;
        int r;

        if (arg)
                r = tu_run(&out, IMGD_BUILD_DIR "/imgctl", "-s", d->socket, "verify", arg, "--json",
                           NULL);
        else
                r = tu_run(&out, IMGD_BUILD_DIR "/imgctl", "-s", d->socket, "verify", "--json",
                           NULL);
        if (r != expect_status)
                fail_msg("verify exited %d, expected %d: %s", r, expect_status, out);
        j = json_loads(out, 0, &err);
        if (!j)
                fail_msg("verify --json printed no JSON (%s): %s", err.text, out);
        free(out);
        return j;
}

static size_t list_size(const json_t *report, const char *key)
{
        return json_array_size(json_object_get(report, key));
}

static const char *first_path(const json_t *report, const char *key)
{
        return json_string_value(
                json_object_get(json_array_get(json_object_get(report, key), 0), "path"));
}

/* verify: all good; one byte altered; one output deleted; a stray file; imgd's temporary
 * files ignored; a manifest edited to match an altered file contradicts the ledger. */
static void test_verify(void **state)
{
        struct tu_daemon d;
        char *out = NULL, *small, *medium, *stray, *tmpfile, *manifest, *hexonly;
        json_t *rep, *m, *o;
        size_t i;
        char sha[65] = "";
        int fd;

        (void)state;
        tu_daemon_setup(&d, TWO_VARIANTS, 2, NULL);
        tu_daemon_start(&d);
        apifx_drop_image(&d, "a.jpg", 640, 480);
        apifx_drop_image(&d, "b.jpg", 480, 640);
        tu_daemon_wait_idle(&d, 30);

        assert_int_equal(tu_imgctl(&d, &out, "verify", NULL), 0);
        apifx_assert_contains(out, "ok: 2 manifest(s), 4 file(s) checked");
        free(out);
        rep = verify_json(&d, 0, NULL);
        assert_true(json_is_true(json_object_get(rep, "ok")));
        assert_int_equal(json_integer_value(json_object_get(rep, "manifests")), 2);
        assert_int_equal(json_integer_value(json_object_get(rep, "files")), 4);
        json_decref(rep);

        /* One byte of a_s.webp changed. */
        small = tu_path("%s/a_s.webp", d.media);
        fd = open(small, O_WRONLY | O_CLOEXEC);
        assert_true(fd >= 0);
        assert_int_equal(pwrite(fd, "\x5a", 1, 40), 1);
        close(fd);
        assert_int_equal(tu_imgctl(&d, &out, "verify", NULL), 1);
        apifx_assert_contains(out, "altered");
        apifx_assert_contains(out, small);
        free(out);
        rep = verify_json(&d, 1, NULL);
        assert_int_equal(list_size(rep, "altered"), 1);
        assert_string_equal(first_path(rep, "altered"), small);
        assert_int_equal(list_size(rep, "missing") + list_size(rep, "orphaned") +
                                 list_size(rep, "mismatched") + list_size(rep, "bad"),
                         0);
        json_decref(rep);

        /* b_m.jpg deleted, a stray file added, an imgd temporary file (ignored). */
        medium = tu_path("%s/b_m.jpg", d.media);
        assert_int_equal(unlink(medium), 0);
        stray = tu_path("%s/sub/stray.txt", d.media);
        tu_write_file(stray, "stray\n", (size_t)-1);
        tmpfile = tu_path("%s/.imgd-7-0-abcdef.tmp", d.media);
        tu_write_file(tmpfile, "partial", (size_t)-1);
        assert_int_equal(tu_imgctl(&d, &out, "verify", NULL), 1);
        apifx_assert_contains(out, "missing");
        apifx_assert_contains(out, "orphaned");
        free(out);
        rep = verify_json(&d, 1, NULL);
        assert_int_equal(list_size(rep, "altered"), 1);
        assert_int_equal(list_size(rep, "missing"), 1);
        assert_string_equal(first_path(rep, "missing"), medium);
        assert_int_equal(list_size(rep, "orphaned"), 1);
        assert_string_equal(first_path(rep, "orphaned"), stray);
        json_decref(rep);

        /* Only one manifest: its own problems, no orphans. */
        manifest = tu_path("%s/a.manifest.json", d.media);
        rep = verify_json(&d, 1, manifest);
        assert_int_equal(json_integer_value(json_object_get(rep, "manifests")), 1);
        assert_int_equal(list_size(rep, "altered"), 1);
        assert_int_equal(list_size(rep, "orphaned"), 0);
        assert_int_equal(list_size(rep, "missing"), 0);
        json_decref(rep);

        /* Tampering that keeps file and manifest consistent is caught by the ledger. */
        m = json_load_file(manifest, 0, NULL);
        assert_non_null(m);
        json_array_foreach(
                json_object_get(m, "outputs"), i,
                o) if (strcmp(json_string_value(json_object_get(o, "file")), "a_s.webp") == 0)
                snprintf(sha, sizeof sha, "%s", json_string_value(json_object_get(o, "sha256")));
        json_decref(m);
        assert_int_equal(strlen(sha), 64);
        {
                char actual[65];

                fd = open(small, O_RDONLY | O_CLOEXEC);
                assert_true(fd >= 0);
                assert_int_equal(hash_sha256_fd(fd, 0, actual), 0);
                close(fd);
                patch_file(manifest, sha, actual);
        }
        rep = verify_json(&d, 1, manifest);
        assert_int_equal(list_size(rep, "altered"), 0);
        assert_int_equal(list_size(rep, "mismatched"), 1);
        assert_string_equal(first_path(rep, "mismatched"), small);
        json_decref(rep);

        assert_int_equal(tu_imgctl(&d, NULL, "verify", "--all", small, NULL), 2);
        assert_int_equal(tu_imgctl(&d, NULL, "verify", small, NULL), 1); /* not a manifest */

        /* An entry with the bytes of its name ("file_hex") but no "file": a bad entry, not a
         * crash (verify once compared the ledger's outputs with its NULL "file"). The ledger's
         * job is done and has the output, so the other entry is compared with it. */
        m = json_load_file(manifest, 0, NULL);
        assert_non_null(m);
        json_array_foreach(json_object_get(m, "outputs"), i, o)
        {
                if (strcmp(json_string_value(json_object_get(o, "file")), "a_s.webp") != 0)
                        continue;
                assert_int_equal(json_object_del(o, "file"), 0);
                assert_int_equal(
                        json_object_set_new(o, "file_hex", json_string("615f732e77656270")), 0);
        }
        hexonly = tu_path("%s/hexonly.manifest.json", d.media);
        assert_int_equal(json_dump_file(m, hexonly, 0), 0);
        json_decref(m);
        rep = verify_json(&d, 1, hexonly);
        assert_int_equal(list_size(rep, "bad"), 1);
        assert_string_equal(first_path(rep, "bad"), hexonly);
        assert_string_equal(json_string_value(json_object_get(
                                    json_array_get(json_object_get(rep, "bad"), 0), "error")),
                            "lists a file without a \"file\" name");
        assert_int_equal(json_integer_value(json_object_get(rep, "files")), 1);
        assert_int_equal(list_size(rep, "mismatched"), 0);
        json_decref(rep);
        assert_int_equal(unlink(hexonly), 0);

        free(hexonly);
        free(manifest);
        free(tmpfile);
        free(stray);
        free(medium);
        free(small);
        tu_daemon_cleanup(&d);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_verify),
        };

        signal(SIGPIPE, SIG_IGN);
        return cmocka_run_group_tests(tests, NULL, NULL);
}
