/* SPDX-License-Identifier: MIT */
/*
 * test-render-worker.c - the real imgd-worker binary driven over its socket end to end: jobs
 * rendered and their replies, the image options of a variant carried through, and an unknown
 * message answered.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <vips/vips.h>

#include "shared/hash.h"
#include "shared/manifest.h"
#include "shared/proto.h"
#include "shared/macro.h"
#include "worker/render.h"
#include "shared/variant.h"
#include "shared/wire.h"

#ifndef IMGD_BUILD_DIR
#error "IMGD_BUILD_DIR must name the build directory holding imgd-worker"
#endif
#include "render-fixture.h"

struct worker {
        pid_t pid;
        int sock;
};

static void worker_start(struct worker *w)
{
        int sv[2];

        assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
        w->pid = fork();
        assert_true(w->pid >= 0);
        if (w->pid == 0) {
                if (sv[1] == 3)
                        fcntl(3, F_SETFD, 0);
                else if (dup2(sv[1], 3) < 0)
                        _exit(126);
                execl(IMGD_BUILD_DIR "/imgd-worker", "imgd-worker", "--threads", "2", (char *)NULL);
                _exit(127);
        }
        close(sv[1]);
        w->sock = sv[0];
        /* A hung worker fails the test instead of hanging it. */
        assert_int_equal(setsockopt(w->sock, SOL_SOCKET, SO_RCVTIMEO,
                                    &(struct timeval){ .tv_sec = 60 }, sizeof(struct timeval)),
                         0);
        /* The worker says it is ready (libvips is up) before it takes any job. */
        {
                json_t *ready = NULL;
                int rfds[WIRE_MAX_FDS];
                size_t n_rfds = 0;

                assert_int_equal(wire_recv(w->sock, &ready, rfds, &n_rfds), 0);
                assert_int_equal(n_rfds, 0);
                assert_string_equal(json_string_value(json_object_get(ready, "type")), "ready");
                assert_int_equal(json_integer_value(json_object_get(ready, "pid")), w->pid);
                json_decref(ready);
        }
}

/* Waits up to 30 s for the worker; returns its wait status. */
static int worker_wait(struct worker *w)
{
        int status = 0;

        for (int i = 0; i < 3000; i++) {
                pid_t p = waitpid(w->pid, &status, WNOHANG);

                assert_true(p >= 0);
                if (p == w->pid)
                        return status;
                usleep(10000);
        }
        kill(w->pid, SIGKILL);
        waitpid(w->pid, &status, 0);
        fail_msg("imgd-worker did not exit");
        return status;
}

static int open_tmp(const char *dir, const char *name, int flags)
{
        char path[4096];
        int fd;

        snprintf(path, sizeof(path), "%s/%s", dir, name);
        fd = open(path, flags | O_CLOEXEC, 0600);
        assert_true(fd >= 0);
        return fd;
}

static json_t *make_job(int id, const struct variant *vs, size_t n, json_int_t max_bytes)
{
        json_t *jv = json_array();

        for (size_t i = 0; i < n; i++)
                json_array_append_new(jv, variant_to_json(&vs[i]));
        return json_pack("{s:s, s:i, s:I, s:I, s:o}", "type", "job", "id", id, "max_pixels",
                         (json_int_t)100000000, "max_bytes", max_bytes, "variants", jv);
}

static json_t *worker_call(struct worker *w, json_t *job, const int *fds, size_t n_fds)
{
        json_t *reply = NULL;
        int rfds[WIRE_MAX_FDS];
        size_t n_rfds = 0;

        assert_int_equal(wire_send(w->sock, job, fds, n_fds), 0);
        assert_int_equal(wire_recv(w->sock, &reply, rfds, &n_rfds), 0);
        assert_int_equal(n_rfds, 0);
        assert_string_equal(json_string_value(json_object_get(reply, "type")), "result");
        return reply;
}

static void test_worker_end_to_end(void **state)
{
        char dir[] = "/tmp/test-render-XXXXXX";
        _cleanup_image_ VipsImage *src = renderfx_make_gradient(640, 480, false);
        _cleanup_gfree_ void *jpg = NULL;
        struct variant vs[2] = {
                renderfx_make_variant(120, 120, VARIANT_FIT_COVER, IMAGE_FORMAT_WEBP),
                renderfx_make_variant(200, 200, VARIANT_FIT_CONTAIN, IMAGE_FORMAT_PNG),
        };
        static const unsigned want[2][2] = { { 120, 120 }, { 200, 150 } };
        char src_hex[HASH_HEX_SIZE];
        struct worker w;
        size_t len;
        int fds[3];
        json_t *job, *reply, *outputs;

        assert_non_null(mkdtemp(dir));
        jpg = renderfx_encode(src, ".jpg", &len);
        hash_sha256_buf(jpg, len, src_hex);
        fds[0] = open_tmp(dir, "source.jpg", O_RDWR | O_CREAT | O_EXCL);
        assert_int_equal(write(fds[0], jpg, len), (ssize_t)len);
        fds[1] = open_tmp(dir, "out0.webp", O_RDWR | O_CREAT | O_EXCL);
        /* A stale, longer file: the worker must cut it to what it writes. */
        assert_int_equal(write(fds[1], src_hex, 64), 64);
        for (int i = 0; i < 200; i++)
                assert_int_equal(write(fds[1], jpg, 1024), 1024);
        fds[2] = open_tmp(dir, "out1.png", O_RDWR | O_CREAT | O_EXCL);

        worker_start(&w);

        job = make_job(7, vs, 2, 268435456);
        reply = worker_call(&w, job, fds, 3);
        json_decref(job);
        if (!json_is_true(json_object_get(reply, "ok")))
                fail_msg("job failed: %s", json_string_value(json_object_get(reply, "error")));
        assert_int_equal(json_integer_value(json_object_get(reply, "id")), 7);
        {
                json_t *s = json_object_get(reply, "source");

                assert_string_equal(json_string_value(json_object_get(s, "format")), "jpeg");
                assert_int_equal(json_integer_value(json_object_get(s, "width")), 640);
                assert_int_equal(json_integer_value(json_object_get(s, "height")), 480);
                assert_string_equal(json_string_value(json_object_get(s, "sha256")), src_hex);
        }
        outputs = json_object_get(reply, "outputs");
        assert_int_equal(json_array_size(outputs), 2);
        for (size_t i = 0; i < 2; i++) {
                json_t *o = json_array_get(outputs, i);
                char hex[HASH_HEX_SIZE];
                struct stat st;
                _cleanup_free_ void *data = NULL;
                _cleanup_image_ VipsImage *im = NULL;

                assert_int_equal(json_integer_value(json_object_get(o, "width")), want[i][0]);
                assert_int_equal(json_integer_value(json_object_get(o, "height")), want[i][1]);
                assert_int_equal(fstat(fds[1 + i], &st), 0);
                assert_int_equal(json_integer_value(json_object_get(o, "bytes")), st.st_size);
                assert_int_equal(hash_sha256_fd(fds[1 + i], 0, hex), 0);
                assert_string_equal(json_string_value(json_object_get(o, "sha256")), hex);

                data = malloc((size_t)st.st_size);
                assert_non_null(data);
                assert_int_equal(pread(fds[1 + i], data, (size_t)st.st_size, 0), st.st_size);
                assert_int_equal(image_format_sniff(data, (size_t)st.st_size), vs[i].format);
                im = renderfx_decode(data, (size_t)st.st_size);
                assert_int_equal(im->Xsize, (int)want[i][0]);
                assert_int_equal(im->Ysize, (int)want[i][1]);
        }
        json_decref(reply);

        /* A text file: refused for good, with libvips' reason. */
        {
                int tfds[2];
                static const char text[] = "hello, this is not an image\n";

                tfds[0] = open_tmp(dir, "source.txt", O_RDWR | O_CREAT | O_EXCL);
                assert_int_equal(write(tfds[0], text, sizeof(text) - 1), (ssize_t)sizeof(text) - 1);
                tfds[1] = open_tmp(dir, "out2.png", O_RDWR | O_CREAT | O_EXCL);
                job = make_job(8, &vs[1], 1, 268435456);
                reply = worker_call(&w, job, tfds, 2);
                json_decref(job);
                assert_int_equal(json_integer_value(json_object_get(reply, "id")), 8);
                assert_true(json_is_false(json_object_get(reply, "ok")));
                assert_true(json_is_true(json_object_get(reply, "permanent")));
                assert_non_null(strstr(json_string_value(json_object_get(reply, "error")),
                                       "not a supported image"));
                json_decref(reply);
                close(tfds[0]);
                close(tfds[1]);
        }

        /* A source over max_bytes: refused for good, nothing written. */
        {
                int tfds[2];
                struct stat st;

                tfds[0] = open_tmp(dir, "source.jpg", O_RDONLY);
                tfds[1] = open_tmp(dir, "out3.png", O_RDWR | O_CREAT | O_EXCL);
                job = make_job(9, &vs[1], 1, (json_int_t)len - 1);
                reply = worker_call(&w, job, tfds, 2);
                json_decref(job);
                assert_true(json_is_false(json_object_get(reply, "ok")));
                assert_true(json_is_true(json_object_get(reply, "permanent")));
                assert_non_null(strstr(json_string_value(json_object_get(reply, "error")),
                                       "over the limit"));
                assert_int_equal(fstat(tfds[1], &st), 0);
                assert_int_equal(st.st_size, 0);
                json_decref(reply);
                close(tfds[0]);
                close(tfds[1]);
        }

        /* An output opened write-only is still read back (through /proc/self/fd). */
        {
                int tfds[2];
                char hex[HASH_HEX_SIZE];

                tfds[0] = open_tmp(dir, "source.jpg", O_RDONLY);
                tfds[1] = open_tmp(dir, "out4.png", O_WRONLY | O_CREAT | O_EXCL);
                job = make_job(10, &vs[1], 1, 268435456);
                reply = worker_call(&w, job, tfds, 2);
                json_decref(job);
                if (!json_is_true(json_object_get(reply, "ok")))
                        fail_msg("job failed: %s",
                                 json_string_value(json_object_get(reply, "error")));
                close(tfds[1]);
                tfds[1] = open_tmp(dir, "out4.png", O_RDONLY);
                assert_int_equal(hash_sha256_fd(tfds[1], 0, hex), 0);
                assert_string_equal(
                        json_string_value(json_object_get(
                                json_array_get(json_object_get(reply, "outputs"), 0), "sha256")),
                        hex);
                json_decref(reply);
                close(tfds[0]);
                close(tfds[1]);
        }

        /* The daemon goes away: the worker exits 0. */
        close(w.sock);
        {
                int status = worker_wait(&w);

                assert_true(WIFEXITED(status));
                assert_int_equal(WEXITSTATUS(status), 0);
        }

        for (size_t i = 0; i < ELEMENTSOF(fds); i++)
                close(fds[i]);
        {
                char cmd[4200];

                snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
                assert_int_equal(system(cmd), 0);
        }
}

/* Renders one job on worker w: source file src, one output per variant in dir. */
static json_t *worker_job(struct worker *w, const char *dir, const char *src, int id,
                          const struct variant *vs, size_t n, json_t *placeholder)
{
        json_t *job = make_job(id, vs, n, 268435456), *reply;
        int fds[1 + 8];

        assert_true(n <= 8);
        if (placeholder)
                json_object_set_new(job, "placeholder", placeholder);
        fds[0] = open_tmp(dir, src, O_RDONLY);
        for (size_t i = 0; i < n; i++) {
                char name[64];

                snprintf(name, sizeof(name), "out-%d-%zu", id, i);
                fds[1 + i] = open_tmp(dir, name, O_RDWR | O_CREAT | O_EXCL);
        }
        reply = worker_call(w, job, fds, 1 + n);
        json_decref(job);
        for (size_t i = 0; i < 1 + n; i++)
                close(fds[i]);
        return reply;
}

/* Output i of job id, decoded. */
static VipsImage *worker_output(const char *dir, int id, size_t i)
{
        char path[4200];
        _cleanup_free_ void *data = NULL;
        struct stat st;
        int fd;

        snprintf(path, sizeof(path), "%s/out-%d-%zu", dir, id, i);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        assert_true(fd >= 0);
        assert_int_equal(fstat(fd, &st), 0);
        data = malloc((size_t)st.st_size);
        assert_non_null(data);
        assert_int_equal(read(fd, data, (size_t)st.st_size), st.st_size);
        close(fd);
        return renderfx_decode(data, (size_t)st.st_size);
}

static void assert_ok_reply(json_t *reply)
{
        if (!json_is_true(json_object_get(reply, "ok")))
                fail_msg("job failed: %s", json_string_value(json_object_get(reply, "error")));
}

/*
 * The worker's result carries the quality used and max_bytes warnings per output, and the
 * placeholder when the job asks for it; the worker decodes a watermark image once for as
 * long as the file stays the same (path, inode, size, mtime), not once per job.
 */
static void test_worker_image_options(void **state)
{
        char *dir = renderfx_temp_dir();
        _cleanup_free_ char *logo = NULL, *srcpath = NULL;
        _cleanup_image_ VipsImage *noise = renderfx_make_noise(300, 200, 5);
        struct variant vs[3] = {
                renderfx_make_variant(0, 0, VARIANT_FIT_NONE, IMAGE_FORMAT_WEBP),
                renderfx_make_variant(0, 0, VARIANT_FIT_NONE, IMAGE_FORMAT_JPEG),
                renderfx_make_variant(300, 200, VARIANT_FIT_COVER, IMAGE_FORMAT_PNG),
        };
        struct timespec mtime;
        struct worker w;
        struct stat st;
        ino_t ino;
        off_t size;
        json_t *reply, *outs, *ph;

        assert_true(asprintf(&logo, "%s/logo.tif", dir) > 0);
        assert_true(asprintf(&srcpath, "%s/noise.png", dir) > 0);
        VIPS_OK(vips_image_write_to_file(noise, srcpath, NULL));
        renderfx_write_mark(logo, 100, 50, renderfx_RED);
        assert_int_equal(stat(logo, &st), 0);
        mtime = st.st_mtim;
        ino = st.st_ino;
        size = st.st_size;

        vs[0].quality = 70;
        vs[1].quality = 90;
        vs[1].max_bytes = 1024; /* noise: not even at quality 30 */
        vs[2].watermark = (struct variant_watermark){
                .kind = VARIANT_WATERMARK_IMAGE,
                .position = VARIANT_GRAVITY_NORTH_WEST,
                .opacity = 1.0,
                .width = 0.5,
        };
        snprintf(vs[2].watermark.image, sizeof(vs[2].watermark.image), "%s", logo);

        worker_start(&w);
        reply = worker_job(&w, dir, "noise.png", 1, vs, 3, json_true());
        assert_ok_reply(reply);
        outs = json_object_get(reply, "outputs");
        assert_int_equal(json_integer_value(json_object_get(json_array_get(outs, 0), "quality")),
                         70);
        assert_null(json_object_get(json_array_get(outs, 0), "warning"));
        assert_int_equal(json_integer_value(json_object_get(json_array_get(outs, 1), "quality")),
                         30);
        {
                char want[200];

                snprintf(want, sizeof(want),
                         "max_bytes 1024 not reached at the lowest quality 30; published at "
                         "%" JSON_INTEGER_FORMAT " bytes",
                         json_integer_value(json_object_get(json_array_get(outs, 1), "bytes")));
                assert_string_equal(
                        json_string_value(json_object_get(json_array_get(outs, 1), "warning")),
                        want);
        }
        assert_null(json_object_get(json_array_get(outs, 2), "quality")); /* png */
        ph = json_object_get(reply, "placeholder");
        assert_true(json_is_object(ph));
        assert_int_equal(json_object_size(ph), 3);
        assert_int_equal(strlen(json_string_value(json_object_get(ph, "blurhash"))), 28);
        assert_int_equal(strlen(json_string_value(json_object_get(ph, "dominant"))), 7);
        assert_int_equal(json_string_value(json_object_get(ph, "dominant"))[0], '#');
        assert_true(strncmp(json_string_value(json_object_get(ph, "data_uri")),
                            "data:image/webp;base64,", 23) == 0);
        {
                _cleanup_image_ VipsImage *o = worker_output(dir, 1, 2);

                renderfx_assert_near(renderfx_pixel(o, 10, 10, 0), 255, 1); /* the red mark */
                renderfx_assert_near(renderfx_pixel(o, 10, 10, 2), 0, 1);
        }
        json_decref(reply);

        /*
         * The file rewritten in place, blue, with its old size and mtime: the worker still
         * has it decoded and does not read it again; so the mark stays red.
         */
        renderfx_write_mark(logo, 100, 50, renderfx_BLUE);
        assert_int_equal(stat(logo, &st), 0);
        assert_int_equal(st.st_ino, ino);
        assert_int_equal(st.st_size, size);
        assert_int_equal(utimensat(AT_FDCWD, logo, (struct timespec[]){ mtime, mtime }, 0), 0);
        reply = worker_job(&w, dir, "noise.png", 2, &vs[2], 1, NULL);
        assert_ok_reply(reply);
        assert_null(json_object_get(reply, "placeholder")); /* not asked for */
        {
                _cleanup_image_ VipsImage *o = worker_output(dir, 2, 0);

                renderfx_assert_near(renderfx_pixel(o, 10, 10, 0), 255, 1);
        }
        json_decref(reply);

        /* A new mtime: decoded again, now blue. */
        mtime.tv_sec -= 100;
        assert_int_equal(utimensat(AT_FDCWD, logo, (struct timespec[]){ mtime, mtime }, 0), 0);
        reply = worker_job(&w, dir, "noise.png", 3, &vs[2], 1, json_false());
        assert_ok_reply(reply);
        assert_null(json_object_get(reply, "placeholder"));
        {
                _cleanup_image_ VipsImage *o = worker_output(dir, 3, 0);

                renderfx_assert_near(renderfx_pixel(o, 10, 10, 0), 0, 1);
                renderfx_assert_near(renderfx_pixel(o, 10, 10, 2), 255, 1);
        }
        json_decref(reply);

        /* A watermark file gone: the job fails, naming it, and may be retried. */
        assert_int_equal(unlink(logo), 0);
        reply = worker_job(&w, dir, "noise.png", 4, &vs[2], 1, NULL);
        assert_true(json_is_false(json_object_get(reply, "ok")));
        assert_true(json_is_false(json_object_get(reply, "permanent")));
        assert_non_null(strstr(json_string_value(json_object_get(reply, "error")), logo));
        json_decref(reply);

        /* A placeholder member that is not a boolean is a malformed job. */
        reply = worker_job(&w, dir, "noise.png", 5, vs, 1, json_string("yes"));
        assert_true(json_is_false(json_object_get(reply, "ok")));
        assert_non_null(strstr(json_string_value(json_object_get(reply, "error")),
                               "malformed job: bad placeholder"));
        json_decref(reply);

        close(w.sock);
        {
                int status = worker_wait(&w);

                assert_true(WIFEXITED(status));
                assert_int_equal(WEXITSTATUS(status), 0);
        }
        renderfx_rm_tree(dir);
}

static void test_worker_unknown_message(void **state)
{
        struct worker w;
        json_t *msg = json_pack("{s:s}", "type", "bogus");
        int status;

        worker_start(&w);
        assert_int_equal(wire_send(w.sock, msg, NULL, 0), 0);
        json_decref(msg);
        status = worker_wait(&w);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 1);
        close(w.sock);
}

/*
 * The manifest the daemon has the worker write (the request's "manifest", the descriptor after
 * the outputs'): fsynced, of the size it reports, parsed by imgctl verify's reader, naming
 * the job, the source (a name that is not UTF-8, byte for byte), the content the worker read,
 * each output's file, size and SHA-256 as in its reply, the placeholder and "degraded".
 */
static void test_worker_writes_manifest(void **state)
{
        char dir[] = "/tmp/test-render-XXXXXX";
        _cleanup_image_ VipsImage *src = renderfx_make_gradient(160, 120, false);
        _cleanup_gfree_ void *img = NULL;
        _cleanup_free_ char *mtext = NULL, *src_hex = NULL, *f0 = NULL, *f1 = NULL;
        const char *source = "/srv/up/caf\xe9.jpg"; /* Latin-1: not UTF-8 */
        const char *finals[2] = { "/srv/out/caf\xe9_a.jpg", "/srv/out/caf\xe9_b.png" };
        struct variant vs[2] = {
                renderfx_make_variant(40, 30, VARIANT_FIT_INSIDE, IMAGE_FORMAT_JPEG),
                renderfx_make_variant(20, 20, VARIANT_FIT_COVER, IMAGE_FORMAT_PNG),
        };
        struct manifest *m = NULL;
        char *err = NULL, sha[HASH_HEX_SIZE];
        struct worker w;
        json_t *job, *reply, *outs, *ph;
        json_int_t bytes;
        size_t len = 0;
        int fds[4];

        assert_non_null(mkdtemp(dir));
        snprintf(vs[0].name, sizeof vs[0].name, "a");
        snprintf(vs[1].name, sizeof vs[1].name, "b");
        img = renderfx_encode(src, ".jpg", &len);
        fds[0] = open_tmp(dir, "src.jpg", O_RDWR | O_CREAT);
        assert_int_equal(write(fds[0], img, len), (ssize_t)len);
        hash_sha256_buf(img, len, sha);
        fds[1] = open_tmp(dir, "a.jpg", O_RDWR | O_CREAT);
        fds[2] = open_tmp(dir, "b.png", O_RDWR | O_CREAT);
        fds[3] = open_tmp(dir, "m.json", O_RDWR | O_CREAT);

        job = make_job(77, vs, 2, 0);
        json_object_set_new(job, "placeholder", json_true());
        src_hex = proto_hex_encode(source);
        f0 = proto_hex_encode(strrchr(finals[0], '/') + 1);
        f1 = proto_hex_encode(strrchr(finals[1], '/') + 1);
        json_object_set_new(job, "manifest",
                            json_pack("{s:i, s:s, s:s, s:[s,s], s:b}", "job", 77, "source", src_hex,
                                      "pipeline", "p", "files", f0, f1, "degraded", 1));
        worker_start(&w);
        reply = worker_call(&w, job, fds, 4);
        assert_true(json_is_true(json_object_get(reply, "ok")));
        assert_int_equal(json_unpack(reply, "{s:{s:I}}", "manifest", "bytes", &bytes), 0);

        mtext = calloc(1, (size_t)bytes + 1);
        assert_non_null(mtext);
        assert_int_equal(pread(fds[3], mtext, (size_t)bytes + 1, 0), bytes);
        assert_int_equal(manifest_parse(mtext, (size_t)bytes, &m, &err), 0);
        assert_int_equal(m->job, 77);
        assert_string_equal(m->source_sha256, sha);
        assert_int_equal(m->n_entries, 2);
        outs = json_object_get(reply, "outputs");
        for (size_t i = 0; i < 2; i++) {
                const json_t *o = json_array_get(outs, i);

                assert_string_equal(m->entries[i].name, strrchr(finals[i], '/') + 1);
                assert_string_equal(m->entries[i].sha256,
                                    json_string_value(json_object_get(o, "sha256")));
                assert_int_equal(m->entries[i].bytes,
                                 json_integer_value(json_object_get(o, "bytes")));
        }
        assert_string_equal(json_string_value(json_object_get(m->json, "source_hex")), src_hex);
        assert_string_equal(json_string_value(json_object_get(m->json, "pipeline")), "p");
        assert_true(json_is_true(json_object_get(m->json, "degraded")));
        ph = json_object_get(reply, "placeholder");
        assert_non_null(ph);
        assert_true(json_equal(json_object_get(m->json, "placeholder"), ph));

        manifest_free(m);
        json_decref(reply);
        json_decref(job);
        for (size_t i = 0; i < 4; i++)
                close(fds[i]);
        close(w.sock);
        worker_wait(&w);
        renderfx_rm_tree(strdup(dir));
}

/* A job whose files the worker creates ("files" in the folder of descriptor 1; issue 16). */
static json_t *call_with_files(struct worker *w, int id, const struct variant *v, int src,
                               int dirfd, const char *tmp)
{
        json_t *job = make_job(id, v, 1, 268435456), *reply;
        int fds[2] = { src, dirfd };

        json_object_set_new(job, "files",
                            json_pack("[{s:s, s:s}]", "path", "/srv/media/a_x.webp", "tmp", tmp));
        reply = worker_call(w, job, fds, 2);
        json_decref(job);
        assert_int_equal(json_integer_value(json_object_get(reply, "id")), id);
        return reply;
}

/*
 * Files the daemon names instead of passing open: the worker creates each in the folder it is
 * given, O_EXCL and no further (a name taken, or one that leaves the folder, fails the job,
 * naming the output), writes and fsyncs it, and reports it as it does a file passed open.
 */
static void test_worker_creates_files(void **state)
{
        char dir[] = "/tmp/test-render-XXXXXX", path[4096];
        _cleanup_image_ VipsImage *src = renderfx_make_gradient(320, 240, false);
        _cleanup_gfree_ void *jpg = NULL;
        struct variant v = renderfx_make_variant(120, 120, VARIANT_FIT_COVER, IMAGE_FORMAT_WEBP);
        char hex[HASH_HEX_SIZE];
        struct worker w;
        struct stat st;
        size_t len;
        int srcfd, dirfd, fd;
        json_t *reply, *o;

        assert_non_null(mkdtemp(dir));
        jpg = renderfx_encode(src, ".jpg", &len);
        srcfd = open_tmp(dir, "source.jpg", O_RDWR | O_CREAT | O_EXCL);
        assert_int_equal(write(srcfd, jpg, len), (ssize_t)len);
        dirfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
        assert_true(dirfd >= 0);
        worker_start(&w);

        reply = call_with_files(&w, 9, &v, srcfd, dirfd, ".imgd-9-0-0000abcd.tmp");
        if (!json_is_true(json_object_get(reply, "ok")))
                fail_msg("job failed: %s", json_string_value(json_object_get(reply, "error")));
        o = json_array_get(json_object_get(reply, "outputs"), 0);
        snprintf(path, sizeof path, "%s/.imgd-9-0-0000abcd.tmp", dir);
        assert_int_equal(lstat(path, &st), 0);
        assert_true(S_ISREG(st.st_mode));
        assert_int_equal(st.st_mode & 07777, 0644 & ~(mode_t)022);
        assert_int_equal(json_integer_value(json_object_get(o, "bytes")), st.st_size);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        assert_int_equal(hash_sha256_fd(fd, 0, hex), 0);
        close(fd);
        assert_string_equal(json_string_value(json_object_get(o, "sha256")), hex);
        json_decref(reply);

        /* The name taken: nothing written over it. */
        reply = call_with_files(&w, 10, &v, srcfd, dirfd, ".imgd-9-0-0000abcd.tmp");
        assert_false(json_is_true(json_object_get(reply, "ok")));
        assert_int_equal(json_integer_value(json_object_get(reply, "errno")), EEXIST);
        assert_false(json_is_true(json_object_get(reply, "permanent")));
        assert_non_null(strstr(json_string_value(json_object_get(reply, "error")),
                               "create output /srv/media/a_x.webp: File exists"));
        json_decref(reply);
        {
                struct stat again;

                assert_int_equal(lstat(path, &again), 0);
                assert_int_equal(again.st_size, st.st_size);
                assert_int_equal(again.st_mtim.tv_nsec, st.st_mtim.tv_nsec);
        }

        /* A name that leaves the folder: refused, nothing created. */
        reply = call_with_files(&w, 11, &v, srcfd, dirfd, "../escape.tmp");
        assert_false(json_is_true(json_object_get(reply, "ok")));
        assert_true(json_is_true(json_object_get(reply, "permanent")));
        json_decref(reply);
        snprintf(path, sizeof path, "%s/../escape.tmp", dir);
        assert_int_equal(access(path, F_OK), -1);

        close(srcfd);
        close(dirfd);
        close(w.sock);
        worker_wait(&w);
        renderfx_rm_tree(strdup(dir));
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_worker_creates_files),
                cmocka_unit_test(test_worker_end_to_end),
                cmocka_unit_test(test_worker_image_options),
                cmocka_unit_test(test_worker_unknown_message),
                cmocka_unit_test(test_worker_writes_manifest),
        };

        int r = cmocka_run_group_tests(tests, renderfx_setup, NULL);
        render_shutdown();
        return r;
}
