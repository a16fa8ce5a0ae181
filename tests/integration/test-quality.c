/* SPDX-License-Identifier: MIT */
/*
 * test-quality.c - quality = "auto", format = "jxl" and format = "best" end to end: the real
 * imgd and imgd-worker on a temporary tree. A busy and a flat image go through a pipeline of
 * an auto JPEG, a JPEG XL and a best-of (webp, jpeg) variant; the published files are the
 * formats they claim (JPEG XL decoded back), the best one is named for the format chosen,
 * the flat image's auto quality is far below the busy one's, and the chosen quality and
 * DSSIM are in the manifest, in `imgctl show` (JSON and the QUALITY and DSSIM columns, from
 * the ledger's job) and in the done event.
 */
#include <jansson.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <vips/vips.h>

#include "shared/imgformat.h"
#include "testutil.h"

#define VIPS_OK(call)                                                                              \
        do {                                                                                       \
                if ((call) != 0)                                                                   \
                        fail_msg("%s: %s", #call, vips_error_buffer());                            \
        } while (0)

#define PIPELINE                                                                                   \
        "( { name = \"auto\"; width = 480; height = 360; format = \"jpeg\"; quality = \"auto\"; "  \
        "    target = \"good\"; },"                                                                \
        "  { name = \"jxl\"; width = 480; height = 360; format = \"jxl\"; quality = 70; },"        \
        "  { name = \"best\"; width = 480; height = 360; format = \"best\";"                       \
        "    candidates = [ \"webp\", \"jpeg\" ]; } )"

/* A 640 x 480 grey image: a gradient with noise (busy), or two flat halves. */
static void drop(struct tu_daemon *d, const char *name, bool busy)
{
        VipsImage *t[6] = {};
        char *tmp = tu_path("%s/%s", d->root, name), *dest = tu_path("%s/%s", d->uploads, name);
        void *buf = NULL;
        size_t len = 0;

        VIPS_OK(vips_xyz(&t[0], 640, 480, NULL));
        if (busy) {
                VIPS_OK(vips_gaussnoise(&t[1], 640, 480, "mean", 0.0, "sigma", 40.0, NULL));
                VIPS_OK(vips_extract_band(t[0], &t[2], 0, NULL));
                VIPS_OK(vips_linear1(t[2], &t[3], 0.3, 20.0, NULL));
                VIPS_OK(vips_add(t[3], t[1], &t[4], NULL));
        } else {
                VIPS_OK(vips_extract_band(t[0], &t[2], 0, NULL));
                VIPS_OK(vips_moreeq_const1(t[2], &t[3], 320, NULL));         /* 0 or 255 */
                VIPS_OK(vips_linear1(t[3], &t[4], 50 / 255.0, 100.0, NULL)); /* 100 or 150 */
        }
        VIPS_OK(vips_bandjoin((VipsImage *[]){ t[4], t[4], t[4] }, &t[5], 3, NULL));
        VIPS_OK(vips_image_write_to_buffer(t[5], ".png", &buf, &len, NULL));
        for (size_t i = 0; i < 6; i++)
                if (t[i])
                        g_object_unref(t[i]);
        tu_write_file(tmp, buf, len);
        g_free(buf);
        if (rename(tmp, dest) != 0)
                fail_msg("rename %s: %m", tmp);
        free(tmp);
        free(dest);
}

static json_t *manifest(struct tu_daemon *d, const char *stem)
{
        char *path = tu_path("%s/%s.manifest.json", d->media, stem);
        json_error_t err;
        json_t *m = json_load_file(path, 0, &err);

        if (!m)
                fail_msg("%s: %s", path, err.text);
        free(path);
        return m;
}

static const json_t *output_of(const json_t *outputs, const char *variant)
{
        for (size_t i = 0; i < json_array_size(outputs); i++) {
                const json_t *o = json_array_get(outputs, i);

                if (strcmp(json_string_value(json_object_get(o, "variant")), variant) == 0)
                        return o;
        }
        fail_msg("no output of variant %s", variant);
        return NULL;
}

/* The published file's format by its content, after decoding it in full. */
static enum image_format published(struct tu_daemon *d, const char *file, int w, int h)
{
        char *path = tu_path("%s/%s", d->media, file);
        size_t len = 0;
        char *data = tu_read_file(path, &len);
        VipsImage *im, *mem;
        enum image_format f;

        if (!data)
                fail_msg("%s is not published", path);
        f = image_format_sniff(data, len);
        im = vips_image_new_from_buffer(data, len, "", NULL);
        if (!im || !(mem = vips_image_copy_memory(im)))
                fail_msg("%s: %s", path, vips_error_buffer());
        assert_int_equal(mem->Xsize, w);
        assert_int_equal(mem->Ysize, h);
        g_object_unref(mem);
        g_object_unref(im);
        free(data);
        free(path);
        return f;
}

/* Connects to d's socket and subscribes to its events; returns the descriptor. */
static int subscribe(struct tu_daemon *d)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        static const char req[] = "{\"v\":1,\"cmd\":\"events\"}\n";
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

        snprintf(sa.sun_path, sizeof sa.sun_path, "%s", d->socket);
        assert_true(fd >= 0);
        assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
        assert_int_equal(send(fd, req, sizeof req - 1, MSG_NOSIGNAL), (ssize_t)sizeof req - 1);
        return fd;
}

/* The jobs of the next n done events on fd (a JSON array; caller decrefs); fails after 120 s. */
static json_t *done_events(int fd, size_t n)
{
        static char buf[1 << 18];
        size_t len = 0;
        json_t *jobs = json_array();
        int64_t deadline = tu_now_us() + 120 * 1000000LL;

        while (json_array_size(jobs) < n) {
                char *nl = memchr(buf, '\n', len);
                struct pollfd p = { .fd = fd, .events = POLLIN };
                ssize_t k;

                if (nl) {
                        json_t *ev = json_loadb(buf, (size_t)(nl - buf), 0, NULL);

                        if (ev && strcmp(json_string_value(json_object_get(ev, "event")) ?: "",
                                         "done") == 0)
                                json_array_append(jobs, json_object_get(ev, "job"));
                        json_decref(ev);
                        len -= (size_t)(nl - buf) + 1;
                        memmove(buf, nl + 1, len);
                        continue;
                }
                if (tu_now_us() > deadline || poll(&p, 1, 1000) < 0)
                        fail_msg("%zu of %zu done events within 120 s", json_array_size(jobs), n);
                if (!(p.revents & POLLIN))
                        continue;
                k = recv(fd, buf + len, sizeof buf - len, 0);
                if (k <= 0)
                        fail_msg("events: connection closed");
                len += (size_t)k;
        }
        return jobs;
}

static void test_auto_jxl_best(void **state)
{
        struct tu_daemon d;
        json_t *mb, *mf, *show, *events;
        const json_t *info, *o;
        const char *best_file;
        long q_busy, q_flat;
        char *out = NULL;
        int fd;

        (void)state;
        tu_daemon_setup(&d, PIPELINE, 1, NULL);
        tu_daemon_start(&d);
        fd = subscribe(&d);
        drop(&d, "busy.png", true);
        drop(&d, "flat.png", false);
        events = done_events(fd, 2);
        close(fd);
        tu_daemon_wait_idle(&d, 120);

        mb = manifest(&d, "busy");
        mf = manifest(&d, "flat");

        /* The auto JPEG: a quality and a score meeting the target, per image. */
        info = json_object_get(json_object_get(mb, "variants"), "auto");
        q_busy = (long)json_integer_value(json_object_get(info, "quality"));
        assert_true(json_is_real(json_object_get(info, "dssim")));
        assert_true(json_real_value(json_object_get(info, "dssim")) <= 0.005);
        assert_true(json_real_value(json_object_get(info, "target")) == 0.005);
        info = json_object_get(json_object_get(mf, "variants"), "auto");
        q_flat = (long)json_integer_value(json_object_get(info, "quality"));
        print_message("auto JPEG: busy q %ld, flat q %ld\n", q_busy, q_flat);
        assert_true(q_flat <= 30);
        assert_true(q_busy >= q_flat + 30);
        assert_int_equal(published(&d, "busy_auto.jpg", 480, 360), IMAGE_FORMAT_JPEG);

        /* JPEG XL: written, named .jxl, and verified (it decodes in full here too). */
        o = output_of(json_object_get(mb, "outputs"), "jxl");
        assert_string_equal(json_string_value(json_object_get(o, "format")), "jxl");
        assert_string_equal(json_string_value(json_object_get(o, "file")), "busy_jxl.jxl");
        assert_int_equal(published(&d, "busy_jxl.jxl", 480, 360), IMAGE_FORMAT_JXL);

        /* Best: the manifest says which format won, and the file has its extension. */
        o = output_of(json_object_get(mb, "outputs"), "best");
        best_file = json_string_value(json_object_get(o, "file"));
        print_message("best: %s (%s)\n", best_file,
                      json_string_value(json_object_get(o, "format")));
        assert_true(strcmp(best_file, "busy_best.webp") == 0 ||
                    strcmp(best_file, "busy_best.jpg") == 0);
        assert_int_equal(published(&d, best_file, 480, 360),
                         image_format_from_name(json_string_value(json_object_get(o, "format"))));
        assert_true(json_is_real(json_object_get(
                json_object_get(json_object_get(mb, "variants"), "best"), "dssim")));
        assert_int_equal(tu_count_files(d.media, "busy_best.*"), 1);

        /* imgctl show: the quality and the score per output. */
        show = tu_imgctl_json(&d, "show", "1", NULL);
        o = output_of(json_object_get(json_object_get(show, "job"), "outputs"), "auto");
        assert_int_equal(json_integer_value(json_object_get(o, "quality")), q_busy);
        assert_true(json_is_real(json_object_get(o, "dssim")));
        o = output_of(json_object_get(json_object_get(show, "job"), "outputs"), "jxl");
        assert_int_equal(json_integer_value(json_object_get(o, "quality")), 70);
        assert_true(json_is_null(json_object_get(o, "dssim")));
        assert_int_equal(tu_imgctl(&d, &out, "show", "1", NULL), 0);
        assert_non_null(strstr(out, "QUALITY"));
        assert_non_null(strstr(out, "DSSIM"));
        print_message("%s", out);

        /* The done event: each output's format, and what the render reported per variant. */
        for (size_t i = 0; i < 2; i++) {
                const json_t *job = json_array_get(events, i);
                const json_t *auto_info = json_object_get(json_object_get(job, "variants"), "auto");
                const json_t *best = output_of(json_object_get(job, "outputs"), "best");
                const char *path = json_string_value(json_object_get(best, "path"));
                const char *format = json_string_value(json_object_get(best, "format"));

                assert_true(json_is_integer(json_object_get(auto_info, "quality")));
                assert_true(json_is_real(json_object_get(auto_info, "dssim")));
                assert_non_null(path);
                assert_non_null(format);
                assert_string_equal(strrchr(path, '.') + 1,
                                    image_format_extension(image_format_from_name(format)));
        }

        json_decref(events);
        free(out);
        json_decref(show);
        json_decref(mb);
        json_decref(mf);
        tu_daemon_cleanup(&d);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_auto_jxl_best),
        };

        if (VIPS_INIT("test-quality") != 0)
                return 1;
        return cmocka_run_group_tests(tests, NULL, NULL);
}
