/* SPDX-License-Identifier: MIT */
/*
 * test-imageops.c - the image options of variants end to end: the real imgd (and its real
 * imgd-worker processes) on a temporary tree, with real images dropped into the upload
 * folder and the published files decoded and checked: fit none and fill, crop gravity
 * (compass and smart), image and text watermarks (their area differs from the output
 * without one, nothing else does), encoder settings (progressive, chroma, lossless,
 * effort, kept metadata), max_bytes (respected, and strict failing the job), animated
 * sources (frames kept in webp and gif, the first frame otherwise, limits over all frames),
 * and --check-config on a missing watermark file.
 */
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <vips/vips.h>

#include "worker/render.h"
#include "testutil.h"

#define VIPS_OK(call)                                                                              \
        do {                                                                                       \
                if ((call) != 0)                                                                   \
                        fail_msg("%s: %s", #call, vips_error_buffer());                            \
        } while (0)

static inline void image_unrefp(VipsImage **p)
{
        if (*p)
                g_object_unref(*p);
}
#define _cleanup_image_ _cleanup_(image_unrefp)

static const double RED[3] = { 255, 0, 0 }, BLUE[3] = { 0, 0, 255 }, GREY[3] = { 128, 128, 128 };

/* ---- images ------------------------------------------------------------------------------ */

static VipsImage *solid(int w, int h, const double rgb[3])
{
        _cleanup_image_ VipsImage *blk = NULL, *lin = NULL, *u8 = NULL;
        VipsImage *out = NULL;

        VIPS_OK(vips_black(&blk, w, h, "bands", 3, NULL));
        VIPS_OK(vips_linear(blk, &lin, (double[]){ 1, 1, 1 }, (double *)rgb, 3, NULL));
        VIPS_OK(vips_cast(lin, &u8, VIPS_FORMAT_UCHAR, NULL));
        VIPS_OK(vips_copy(u8, &out, "interpretation", VIPS_INTERPRETATION_sRGB, NULL));
        return out;
}

/* Noise: hard to compress, busy for a smart crop. */
static VipsImage *noise(int w, int h)
{
        _cleanup_image_ VipsImage *r = NULL, *g = NULL, *b = NULL, *rgb = NULL, *u8 = NULL;
        VipsImage *out = NULL;

        VIPS_OK(vips_gaussnoise(&r, w, h, "mean", 128.0, "sigma", 60.0, "seed", 1, NULL));
        VIPS_OK(vips_gaussnoise(&g, w, h, "mean", 128.0, "sigma", 60.0, "seed", 2, NULL));
        VIPS_OK(vips_gaussnoise(&b, w, h, "mean", 128.0, "sigma", 60.0, "seed", 3, NULL));
        VIPS_OK(vips_bandjoin((VipsImage *[]){ r, g, b }, &rgb, 3, NULL));
        VIPS_OK(vips_cast(rgb, &u8, VIPS_FORMAT_UCHAR, NULL));
        VIPS_OK(vips_copy(u8, &out, "interpretation", VIPS_INTERPRETATION_sRGB, NULL));
        return out;
}

/* a beside b (horizontal) or above it. */
static VipsImage *join(VipsImage *a, VipsImage *b, bool vertical)
{
        VipsImage *out = NULL;

        VIPS_OK(vips_join(a, b, &out,
                          vertical ? VIPS_DIRECTION_VERTICAL : VIPS_DIRECTION_HORIZONTAL, NULL));
        return out;
}

/* Writes im to d->root/name with libvips (suffix picks the saver, e.g. ".png") and renames
 * it into the upload folder: a complete file appears at once. */
static void drop(struct tu_daemon *d, const char *name, VipsImage *im, const char *suffix)
{
        char *tmp = tu_path("%s/%s", d->root, name), *dest = tu_path("%s/%s", d->uploads, name);
        void *buf = NULL;
        size_t len = 0;

        VIPS_OK(vips_image_write_to_buffer(im, suffix, &buf, &len, NULL));
        tu_write_file(tmp, buf, len);
        g_free(buf);
        if (rename(tmp, dest) != 0)
                fail_msg("rename %s: %m", tmp);
        free(tmp);
        free(dest);
}

/* A published file, decoded into memory (all frames with `all_pages`); fails if missing. */
static VipsImage *load(struct tu_daemon *d, const char *name, bool all_pages)
{
        char *path = tu_path("%s/%s", d->media, name);
        _cleanup_image_ VipsImage *lazy = all_pages ? vips_image_new_from_file(path, "n", -1, NULL)
                                                    : vips_image_new_from_file(path, NULL);
        VipsImage *mem;

        if (!lazy)
                fail_msg("%s: %s", path, vips_error_buffer());
        mem = vips_image_copy_memory(lazy);
        if (!mem)
                fail_msg("%s: %s", path, vips_error_buffer());
        free(path);
        return mem;
}

static off_t file_size(struct tu_daemon *d, const char *name)
{
        char *path = tu_path("%s/%s", d->media, name);
        struct stat st;

        if (stat(path, &st) != 0)
                fail_msg("%s: %m", path);
        free(path);
        return st.st_size;
}

static const char *loader_of(VipsImage *im)
{
        const char *loader = "";

        if (vips_image_get_string(im, VIPS_META_LOADER, &loader) != 0)
                vips_error_clear();
        return loader;
}

static double pixel(VipsImage *im, int x, int y, int band)
{
        double *v = NULL, r;
        int n = 0;

        VIPS_OK(vips_getpoint(im, &v, &n, x, y, NULL));
        assert_true(band < n);
        r = v[band];
        g_free(v);
        return r;
}

static void assert_near(double got, double want, double tolerance)
{
        if (got < want - tolerance || got > want + tolerance)
                fail_msg("got %.1f, want %.1f +- %.1f", got, want, tolerance);
}

static void assert_size(VipsImage *im, int w, int h)
{
        if (im->Xsize != w || im->Ysize != h)
                fail_msg("%s: %dx%d, want %dx%d", loader_of(im), im->Xsize, im->Ysize, w, h);
}

/* Pixels where a and b differ, and their bounding box [x0, x1) x [y0, y1). */
static size_t diff_box(VipsImage *a, VipsImage *b, int box[4])
{
        _cleanup_image_ VipsImage *ua = NULL, *ub = NULL;
        uint8_t *pa, *pb;
        size_t la = 0, lb = 0, n = 0;

        assert_int_equal(a->Xsize, b->Xsize);
        assert_int_equal(a->Ysize, b->Ysize);
        assert_int_equal(a->Bands, b->Bands);
        VIPS_OK(vips_cast(a, &ua, VIPS_FORMAT_UCHAR, NULL));
        VIPS_OK(vips_cast(b, &ub, VIPS_FORMAT_UCHAR, NULL));
        pa = vips_image_write_to_memory(ua, &la);
        pb = vips_image_write_to_memory(ub, &lb);
        assert_true(pa && pb && la == lb);
        box[0] = box[1] = INT32_MAX;
        box[2] = box[3] = -1;
        for (int y = 0; y < a->Ysize; y++)
                for (int x = 0; x < a->Xsize; x++) {
                        size_t o = ((size_t)y * a->Xsize + x) * a->Bands;

                        if (memcmp(pa + o, pb + o, a->Bands) == 0)
                                continue;
                        n++;
                        box[0] = MIN(box[0], x);
                        box[1] = MIN(box[1], y);
                        box[2] = MAX(box[2], x + 1);
                        box[3] = MAX(box[3], y + 1);
                }
        g_free(pa);
        g_free(pb);
        return n;
}

/* ---- the daemon -------------------------------------------------------------------------- */

/* Asserts that the jobs are all done, or shows the errors and the daemon's log. */
static void assert_all_done(struct tu_daemon *d, int n)
{
        json_t *st = tu_imgctl_json(d, "status", NULL, NULL);
        json_t *jobs = json_object_get(st, "jobs");

        if (json_integer_value(json_object_get(jobs, "done")) != n) {
                json_t *dead = tu_imgctl_json(d, "jobs", "--state", "dead");
                char *s = json_dumps(dead, JSON_INDENT(1));
                char *log = tu_read_file(d->log, NULL);

                fail_msg("%" JSON_INTEGER_FORMAT " of %d jobs done; dead: %s\nlog:\n%s",
                         json_integer_value(json_object_get(jobs, "done")), n, s, log);
        }
        json_decref(st);
}

/* The error of the only dead job; caller frees. */
static char *dead_error(struct tu_daemon *d)
{
        json_t *jobs = tu_imgctl_json(d, "jobs", "--state", "dead");
        json_t *list = json_object_get(jobs, "jobs");
        char *err;

        if (json_array_size(list) != 1)
                fail_msg("%zu dead jobs, want 1", json_array_size(list));
        err = strdup(json_string_value(json_object_get(json_array_get(list, 0), "error")));
        json_decref(jobs);
        return err;
}

/* ---- tests ------------------------------------------------------------------------------- */

/* fit = "none" keeps the source's size (a convert-only variant); "fill" stretches. */
static void test_fit_none_fill(void **state)
{
        struct tu_daemon d;
        char *p;

        tu_daemon_setup(&d,
                        "( { name = \"orig\"; fit = \"none\"; format = \"webp\"; },"
                        "  { name = \"fill\"; width = 300; height = 100; fit = \"fill\"; "
                        "    format = \"png\"; } )",
                        1, NULL);
        tu_daemon_start(&d);
        p = tu_path("%s/photo.jpg", d.uploads);
        tu_make_image(p, 400, 300, "jpeg", false);
        free(p);
        tu_daemon_wait_idle(&d, 60);
        assert_all_done(&d, 1);
        {
                _cleanup_image_ VipsImage *o = load(&d, "photo_orig.webp", false),
                                          *f = load(&d, "photo_fill.png", false);

                assert_size(o, 400, 300);
                assert_non_null(strstr(loader_of(o), "webp"));
                assert_size(f, 300, 100);
                assert_non_null(strstr(loader_of(f), "png"));
                /* Stretched, not cropped: the gradient's right end (red) is still there. */
                assert_true(pixel(f, 299, 50, 0) > 240);
        }
        tu_daemon_cleanup(&d);
}

/* gravity picks the part a cover crop keeps; attention finds the busy patch. */
static void test_gravity(void **state)
{
        struct tu_daemon d;
        _cleanup_image_ VipsImage *r = solid(150, 100, RED), *b = solid(150, 100, BLUE),
                                  *wide = NULL, *grey = solid(400, 100, GREY),
                                  *patch = noise(60, 60), *busy = NULL;

        tu_daemon_setup(&d,
                        "( { name = \"w\"; width = 50; height = 50; gravity = \"west\"; "
                        "    format = \"png\"; },"
                        "  { name = \"e\"; width = 50; height = 50; gravity = \"east\"; "
                        "    format = \"png\"; },"
                        "  { name = \"c\"; width = 50; height = 50; format = \"png\"; },"
                        "  { name = \"card\"; width = 100; height = 100; fit = \"cover\"; "
                        "    gravity = \"attention\"; format = \"png\"; },"
                        "  { name = \"ent\"; width = 100; height = 100; gravity = \"entropy\"; "
                        "    format = \"png\"; } )",
                        2, NULL);
        tu_daemon_start(&d);
        wide = join(r, b, false);
        VIPS_OK(vips_insert(grey, patch, &busy, 320, 20, NULL));
        drop(&d, "halves.png", wide, ".png");
        drop(&d, "busy.png", busy, ".png");
        tu_daemon_wait_idle(&d, 60);
        assert_all_done(&d, 2);
        {
                _cleanup_image_ VipsImage *w = load(&d, "halves_w.png", false),
                                          *e = load(&d, "halves_e.png", false),
                                          *c = load(&d, "halves_c.png", false);

                assert_size(w, 50, 50);
                assert_size(e, 50, 50);
                assert_near(pixel(w, 45, 25, 0), 255, 2); /* all red */
                assert_near(pixel(w, 45, 25, 2), 0, 2);
                assert_near(pixel(e, 5, 25, 2), 255, 2); /* all blue */
                assert_near(pixel(e, 5, 25, 0), 0, 2);
                assert_near(pixel(c, 5, 25, 0), 255, 2); /* centre: both */
                assert_near(pixel(c, 45, 25, 2), 255, 2);
        }
        {
                static const char *const names[] = { "busy_card.png", "busy_ent.png",
                                                     "busy_c.png" };

                for (int i = 0; i < 3; i++) {
                        _cleanup_image_ VipsImage *o = load(&d, names[i], false);
                        double sd = 0;

                        VIPS_OK(vips_deviate(o, &sd, NULL));
                        if (i < 2 && sd < 20)
                                fail_msg("%s missed the busy patch (deviation %.1f)", names[i], sd);
                        if (i == 2 && sd > 1)
                                fail_msg("%s: the centre is grey, deviation %.1f", names[i], sd);
                }
        }
        tu_daemon_cleanup(&d);
}

/*
 * Image and text watermarks: compared with the same variant without one, exactly the
 * watermark's area differs; the image is decoded from the file the configuration names,
 * and a missing file is a configuration error.
 */
static void test_watermark(void **state)
{
        struct tu_daemon d;
        _cleanup_image_ VipsImage *mark = solid(200, 100, RED);
        char *logo_dir, *logo, *body, *out = NULL, *p;
        int box[4], r;
        size_t n;

        logo_dir = tu_mkdtemp();
        logo = tu_path("%s/logo.png", logo_dir);
        VIPS_OK(vips_image_write_to_file(mark, logo, NULL));
        body = tu_path("( { name = \"plain\"; fit = \"none\"; format = \"png\"; },"
                       "  { name = \"logo\"; fit = \"none\"; format = \"png\";"
                       "    watermark = { image = \"%s\"; position = \"south-east\"; margin = 16;"
                       "                  opacity = 0.5; width = 0.25; }; },"
                       "  { name = \"text\"; fit = \"none\"; format = \"png\";"
                       "    watermark = { text = \"\xc2\xa9 Example\"; font = \"sans 20\";"
                       "                  color = \"#ffffff\"; position = \"north-west\";"
                       "                  margin = 8; }; } )",
                       logo);
        tu_daemon_setup(&d, body, 1, NULL);
        free(body);
        tu_daemon_start(&d);
        p = tu_path("%s/photo.jpg", d.uploads);
        tu_make_image(p, 400, 300, "jpeg", false);
        free(p);
        tu_daemon_wait_idle(&d, 60);
        assert_all_done(&d, 1);
        {
                _cleanup_image_ VipsImage *plain = load(&d, "photo_plain.png", false),
                                          *marked = load(&d, "photo_logo.png", false),
                                          *text = load(&d, "photo_text.png", false);

                /* 0.25 of 400 = 100 x 50, 16 px from the bottom right corner. */
                n = diff_box(plain, marked, box);
                assert_int_equal(box[0], 400 - 16 - 100);
                assert_int_equal(box[1], 300 - 16 - 50);
                assert_int_equal(box[2], 400 - 16);
                assert_int_equal(box[3], 300 - 16);
                assert_true(n > 100 * 50 * 9 / 10);
                assert_near(pixel(marked, 330, 260, 0), (pixel(plain, 330, 260, 0) + 255) / 2, 3);
                assert_near(pixel(marked, 330, 260, 1), pixel(plain, 330, 260, 1) / 2, 3);
                assert_int_equal(marked->Bands, plain->Bands);

                /* Text at the top left, about 20 px high, nowhere else. */
                n = diff_box(plain, text, box);
                assert_true(n > 100);
                assert_true(box[0] >= 8 && box[0] < 16);
                assert_true(box[1] >= 8 && box[1] < 20);
                assert_true(box[3] - box[1] >= 10 && box[3] - box[1] <= 34);
                assert_true(box[2] - box[0] >= 60 && box[2] < 300);
        }
        tu_daemon_stop(&d, SIGTERM);

        /* The watermark file gone: --check-config names it, and imgd does not start. */
        assert_int_equal(unlink(logo), 0);
        r = tu_run(&out, IMGD_BUILD_DIR "/imgd", "--check-config", "-c", d.config, NULL);
        assert_int_equal(r, 1);
        if (!strstr(out, "pipeline 'p': variant 'logo': watermark image") || !strstr(out, logo) ||
            !strstr(out, "No such file or directory"))
                fail_msg("--check-config: %s", out);
        free(out);
        r = tu_run(&out, IMGD_BUILD_DIR "/imgd", "-c", d.config, NULL);
        assert_int_not_equal(r, 0);
        assert_non_null(strstr(out, logo));
        free(out);
        free(logo);
        tu_rm_rf(logo_dir);
        free(logo_dir);
        tu_daemon_cleanup(&d);
}

/* Encoder settings and kept metadata, read back from the published files. */
static void test_encoder(void **state)
{
        struct tu_daemon d;
        _cleanup_image_ VipsImage *src = noise(200, 150), *tagged = NULL;
        VipsBlob *p3 = NULL;
        const void *p3_data;
        size_t p3_len = 0;
        bool avif = vips_type_find("VipsOperation", "heifsave_buffer") != 0;
        char *body;

        body = tu_path("( { name = \"prog\"; fit = \"none\"; format = \"jpeg\"; quality = 85;"
                       "    progressive = true; chroma = \"4:4:4\";"
                       "    keep = [ \"icc\", \"copyright\" ]; },"
                       "  { name = \"base\"; fit = \"none\"; format = \"jpeg\"; quality = 85; },"
                       "  { name = \"sub\"; fit = \"none\"; format = \"jpeg\"; quality = 95;"
                       "    chroma = \"4:2:0\"; },"
                       "  { name = \"ll\"; fit = \"none\"; format = \"webp\"; lossless = true;"
                       "    effort = 1; },"
                       "  { name = \"png\"; fit = \"none\"; format = \"png\"; progressive = true;"
                       "    keep = [ \"copyright\" ]; }%s )",
                       avif ? ", { name = \"av\"; width = 64; height = 48; format = \"avif\";"
                              "    effort = 0; chroma = \"4:4:4\"; quality = 50; }"
                            : "");
        tu_daemon_setup(&d, body, 2, NULL);
        free(body);
        tu_daemon_start(&d);

        /* A PNG source with a Display P3 profile, a copyright and a private artist. */
        VIPS_OK(vips_profile_load("p3", &p3, NULL));
        p3_data = vips_area_get_data(VIPS_AREA(p3), &p3_len, NULL, NULL, NULL);
        VIPS_OK(vips_copy(src, &tagged, NULL));
        vips_image_set_blob_copy(tagged, VIPS_META_ICC_NAME, p3_data, p3_len);
        vips_area_unref(VIPS_AREA(p3));
        vips_image_set_string(tagged, "exif-ifd0-Copyright", "(c) Jane Doe 2024");
        vips_image_set_string(tagged, "exif-ifd0-Artist", "SECRET-ARTIST");
        drop(&d, "photo.jpg", tagged, ".jpg[Q=98,strip=false]");
        /* And one without any metadata, for the pixel-exact lossless check. */
        drop(&d, "plain.png", src, ".png");
        tu_daemon_wait_idle(&d, 120);
        assert_all_done(&d, 2);
        {
                _cleanup_image_ VipsImage *prog = load(&d, "photo_prog.jpg", false),
                                          *base = load(&d, "photo_base.jpg", false),
                                          *sub = load(&d, "photo_sub.jpg", false),
                                          *ll = load(&d, "plain_ll.webp", false),
                                          *png = load(&d, "photo_png.png", false),
                                          *plainpng = load(&d, "plain_png.png", false);
                const char *s = NULL;
                int multiscan = -1, interlaced = 0, box[4];

                VIPS_OK(vips_image_get_int(prog, "jpeg-multiscan", &multiscan));
                assert_int_equal(multiscan, 1);
                VIPS_OK(vips_image_get_string(prog, "jpeg-chroma-subsample", &s));
                assert_string_equal(s, "4:4:4");
                VIPS_OK(vips_image_get_int(base, "jpeg-multiscan", &multiscan));
                assert_int_equal(multiscan, 0);
                VIPS_OK(vips_image_get_string(sub, "jpeg-chroma-subsample", &s));
                assert_string_equal(s, "4:2:0");
                /* Kept: an sRGB profile and the copyright; never the artist. */
                assert_true(vips_image_get_typeof(prog, VIPS_META_ICC_NAME) != 0);
                VIPS_OK(vips_image_get_string(prog, "exif-ifd0-Copyright", &s));
                assert_non_null(strstr(s, "(c) Jane Doe 2024"));
                assert_false(vips_image_get_typeof(prog, "exif-ifd0-Artist"));
                assert_false(vips_image_get_typeof(base, VIPS_META_ICC_NAME));
                assert_false(vips_image_get_typeof(base, VIPS_META_EXIF_NAME));
                VIPS_OK(vips_image_get_string(png, "exif-ifd0-Copyright", &s));
                assert_non_null(strstr(s, "(c) Jane Doe 2024"));
                assert_false(vips_image_get_typeof(png, "exif-ifd0-Artist"));
                assert_false(vips_image_get_typeof(png, VIPS_META_ICC_NAME));
                VIPS_OK(vips_image_get_int(png, "interlaced", &interlaced));
                assert_int_equal(interlaced, 1);
                assert_false(vips_image_get_typeof(plainpng, VIPS_META_EXIF_NAME));
                /* Lossless: every pixel of the source. */
                assert_int_equal(diff_box(ll, src, box), 0);
                if (avif) {
                        _cleanup_image_ VipsImage *av = load(&d, "photo_av.avif", false);

                        assert_size(av, 64, 48);
                }
        }
        tu_daemon_cleanup(&d);
}

/* max_bytes: every output within it; unreachable and strict, the job fails for good. */
static void test_max_bytes(void **state)
{
        struct tu_daemon d;
        _cleanup_image_ VipsImage *src = noise(400, 300);
        char *err, *log;

        tu_daemon_setup(&d,
                        "( { name = \"j\"; fit = \"none\"; format = \"jpeg\"; quality = 95;"
                        "    max_bytes = 40000; },"
                        "  { name = \"w\"; fit = \"none\"; format = \"webp\"; quality = 95;"
                        "    max_bytes = 60000; },"
                        "  { name = \"tiny\"; width = 200; height = 150; format = \"jpeg\";"
                        "    max_bytes = 1024; } )",
                        1, NULL);
        tu_daemon_start(&d);
        drop(&d, "noise.png", src, ".png");
        tu_daemon_wait_idle(&d, 60);
        assert_all_done(&d, 1);
        assert_true(file_size(&d, "noise_j.jpg") <= 40000);
        assert_true(file_size(&d, "noise_j.jpg") > 20000); /* not lower than it had to */
        assert_true(file_size(&d, "noise_w.webp") <= 60000);
        assert_true(file_size(&d, "noise_w.webp") > 30000);
        /* Not reachable: published anyway, larger, with a warning in the log. */
        assert_true(file_size(&d, "noise_tiny.jpg") > 1024);
        log = tu_read_file(d.log, NULL);
        if (!strstr(log, "max_bytes 1024 not reached at the lowest quality 30; published at"))
                fail_msg("no warning in the log:\n%s", log);
        free(log);
        {
                _cleanup_image_ VipsImage *j = load(&d, "noise_j.jpg", false);

                assert_size(j, 400, 300);
        }
        tu_daemon_cleanup(&d);

        tu_daemon_setup(&d,
                        "( { name = \"tiny\"; width = 200; height = 150; format = \"jpeg\";"
                        "    max_bytes = 1024; max_bytes_strict = true; } )",
                        1, NULL);
        tu_daemon_start(&d);
        drop(&d, "noise.png", src, ".png");
        tu_daemon_wait_idle(&d, 60);
        err = dead_error(&d);
        if (!strstr(err, "variant tiny: max_bytes 1024 not reached at the lowest quality 30"))
                fail_msg("unexpected error: %s", err);
        free(err);
        assert_int_equal(tu_count_files(d.media, "*"), 0);
        tu_daemon_cleanup(&d);
}

/* An animated GIF of 5 frames of 60 x 40, frame i red, green, blue, yellow, red. */
static VipsImage *animation(void)
{
        static const double colours[5][3] = {
                { 255, 0, 0 }, { 0, 255, 0 }, { 0, 0, 255 }, { 255, 255, 0 }, { 255, 0, 0 }
        };
        VipsImage *frames[5], *roll = NULL, *out = NULL;
        int delays[5] = { 100, 100, 100, 100, 300 };

        for (int i = 0; i < 5; i++)
                frames[i] = solid(60, 40, colours[i]);
        VIPS_OK(vips_arrayjoin(frames, &roll, 5, "across", 1, NULL));
        for (int i = 0; i < 5; i++)
                g_object_unref(frames[i]);
        VIPS_OK(vips_copy(roll, &out, NULL));
        g_object_unref(roll);
        vips_image_set_int(out, VIPS_META_PAGE_HEIGHT, 40);
        vips_image_set_array_int(out, "delay", delays, 5);
        vips_image_set_int(out, "loop", 0);
        return out;
}

static void assert_frames(VipsImage *im, int w, int h, int n)
{
        assert_int_equal(vips_image_get_n_pages(im), n);
        assert_int_equal(im->Xsize, w);
        assert_int_equal(n > 1 ? vips_image_get_page_height(im) : im->Ysize, h);
        assert_int_equal(im->Ysize, h * n);
        if (n >= 3) {
                assert_near(pixel(im, w / 2, h / 2, 0), 255, 24);         /* red */
                assert_near(pixel(im, w / 2, h + h / 2, 1), 255, 24);     /* green */
                assert_near(pixel(im, w / 2, 2 * h + h / 2, 2), 255, 24); /* blue */
        }
}

/*
 * animated = true keeps every frame in webp and gif outputs ("same" turns a GIF into an
 * animated WebP); without it, the first frame. The pixel limit counts all the frames.
 */
static void test_animated(void **state)
{
        struct tu_daemon d;
        _cleanup_image_ VipsImage *anim = animation();
        char *err;

        tu_daemon_setup(
                &d,
                "( { name = \"aw\"; width = 30; height = 20; format = \"webp\";"
                "    animated = true; },"
                "  { name = \"ag\"; fit = \"none\"; format = \"gif\"; animated = true; },"
                "  { name = \"same\"; fit = \"none\"; format = \"same\"; animated = true; },"
                "  { name = \"still\"; width = 30; height = 20; format = \"webp\"; },"
                "  { name = \"png\"; width = 30; height = 20; format = \"png\"; } )",
                1, NULL);
        tu_daemon_start(&d);
        drop(&d, "anim.gif", anim, ".gif");
        /* A still JPEG through the same variants: "same" stays a JPEG, one frame. */
        {
                char *p = tu_path("%s/still.jpg", d.uploads);

                tu_make_image(p, 90, 60, "jpeg", false);
                free(p);
        }
        tu_daemon_wait_idle(&d, 60);
        assert_all_done(&d, 2);
        {
                _cleanup_image_ VipsImage *sj = load(&d, "still_same.jpg", false),
                                          *sw = load(&d, "still_aw.webp", true);

                assert_size(sj, 90, 60);
                assert_frames(sw, 30, 20, 1);
        }
        {
                _cleanup_image_ VipsImage *aw = load(&d, "anim_aw.webp", true),
                                          *ag = load(&d, "anim_ag.gif", true),
                                          *same = load(&d, "anim_same.webp", true),
                                          *still = load(&d, "anim_still.webp", true),
                                          *png = load(&d, "anim_png.png", false);
                int *delays = NULL, n = 0;

                assert_frames(aw, 30, 20, 5);
                assert_frames(ag, 60, 40, 5);
                assert_frames(same, 60, 40, 5);
                assert_frames(still, 30, 20, 1);
                assert_frames(png, 30, 20, 1);
                assert_near(pixel(still, 15, 10, 0), 255, 8); /* the first frame: red */
                VIPS_OK(vips_image_get_array_int(aw, "delay", &delays, &n));
                assert_int_equal(n, 5);
                assert_int_equal(delays[4], 300);
        }
        tu_daemon_cleanup(&d);

        /* 5 frames of 60 x 40 are 12000 pixels: over a limit of 10000 that one frame is not. */
        tu_daemon_setup(&d,
                        "( { name = \"aw\"; width = 30; height = 20; format = \"webp\";"
                        "    animated = true; } )",
                        1, "limits = { max_pixels = 10000; };");
        tu_daemon_start(&d);
        drop(&d, "anim.gif", anim, ".gif");
        tu_daemon_wait_idle(&d, 60);
        err = dead_error(&d);
        if (!strstr(err, "animation is 5 frames of 60x40 (12000 pixels in all), over the limit "
                         "of 10000"))
                fail_msg("unexpected error: %s", err);
        free(err);
        tu_daemon_cleanup(&d);
}

/*
 * A pipeline written as a group with placeholder = true runs like any other, and its
 * placeholder reaches the manifest and `imgctl show`, human and --json. (How the worker
 * computes it is tested in test-render-overlay.)
 */
static void test_placeholder_pipeline(void **state)
{
        struct tu_daemon d;
        json_t *jobs, *show, *ph, *manifest;
        const char *blurhash, *dominant, *data_uri;
        char *p, *out = NULL, *line, ids[32];
        json_error_t jerr;

        tu_daemon_setup(&d,
                        "{ placeholder = true;"
                        "  variants = ( { name = \"s\"; width = 64; height = 64;"
                        "                 format = \"webp\"; } ); }",
                        1, NULL);
        tu_daemon_start(&d);
        p = tu_path("%s/photo.png", d.uploads);
        tu_make_image(p, 200, 100, "png", true);
        free(p);
        tu_daemon_wait_idle(&d, 60);
        assert_all_done(&d, 1);
        {
                _cleanup_image_ VipsImage *s = load(&d, "photo_s.webp", false);

                assert_size(s, 64, 64);
                assert_true(vips_image_hasalpha(s));
        }

        /* show --json carries what the manifest has: a 4 x 3 BlurHash (the image is
         * landscape), the dominant colour and the tiny WebP. */
        jobs = tu_imgctl_json(&d, "jobs", NULL, NULL);
        assert_int_equal(json_array_size(json_object_get(jobs, "jobs")), 1);
        snprintf(ids, sizeof ids, "%" JSON_INTEGER_FORMAT,
                 json_integer_value(
                         json_object_get(json_array_get(json_object_get(jobs, "jobs"), 0), "id")));
        show = tu_imgctl_json(&d, "show", ids, NULL);
        ph = json_object_get(json_object_get(show, "job"), "placeholder");
        if (!json_is_object(ph))
                fail_msg("imgctl show --json has no placeholder: %s",
                         json_dumps(show, JSON_INDENT(1)));
        blurhash = json_string_value(json_object_get(ph, "blurhash"));
        dominant = json_string_value(json_object_get(ph, "dominant"));
        data_uri = json_string_value(json_object_get(ph, "data_uri"));
        assert_non_null(blurhash);
        assert_int_equal(strlen(blurhash), blurhash_length(4, 3));
        assert_non_null(dominant);
        assert_int_equal(strlen(dominant), 7);
        assert_int_equal(dominant[0], '#');
        assert_non_null(data_uri);
        assert_true(strncmp(data_uri, "data:image/webp;base64,", 23) == 0);
        p = tu_path("%s/photo.manifest.json", d.media);
        manifest = json_load_file(p, 0, &jerr);
        if (!manifest)
                fail_msg("%s: %s", p, jerr.text);
        free(p);
        assert_true(json_equal(ph, json_object_get(manifest, "placeholder")));

        /* The human output prints the same three. */
        assert_int_equal(tu_imgctl(&d, &out, "show", ids, NULL), 0);
        line = tu_path("\nblurhash:   %s\n", blurhash);
        if (!strstr(out, line))
                fail_msg("imgctl show does not print the blurhash %s:\n%s", blurhash, out);
        free(line);
        line = tu_path("\ndominant:   %s\n", dominant);
        assert_non_null(strstr(out, line));
        free(line);
        line = tu_path("\ndata URI:   %s\n", data_uri);
        assert_non_null(strstr(out, line));
        free(line);
        free(out);

        json_decref(manifest);
        json_decref(show);
        json_decref(jobs);
        tu_daemon_cleanup(&d);
}

static int setup(void **state)
{
        return render_init("test-imageops", 0) < 0 ? -1 : 0;
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_fit_none_fill),
                cmocka_unit_test(test_gravity),
                cmocka_unit_test(test_watermark),
                cmocka_unit_test(test_encoder),
                cmocka_unit_test(test_max_bytes),
                cmocka_unit_test(test_animated),
                cmocka_unit_test(test_placeholder_pipeline),
        };

        return cmocka_run_group_tests(tests, setup, NULL);
}
