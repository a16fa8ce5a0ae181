/* SPDX-License-Identifier: MIT */
/*
 * test-config.c - config_load() on a complete valid file (values and defaults), on every
 * kind of invalid file (errno, file name, line and wording of the message), on syntax
 * errors and missing files; config_check_paths() on missing, unusable and to-be-created
 * directories; and the shipped etc/imgd.conf. Self-contained: files go to a temporary
 * directory made by the group setup.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include <jansson.h>

#include "shared/config.h"
#include "shared/macro.h"
#include "shared/time-util.h"

static char *tmp;

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
        return remove(path) < 0 ? -1 : 0;
}

static void rm_rf(const char *path)
{
        if (path)
                nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

_printf_(1, 2) static char *path_join(const char *fmt, ...)
{
        va_list ap;
        char *s;

        va_start(ap, fmt);
        assert_true(vasprintf(&s, fmt, ap) >= 0);
        va_end(ap);
        return s;
}

static void write_text(const char *path, const char *text)
{
        FILE *f = fopen(path, "we");

        assert_non_null(f);
        assert_int_equal(fputs(text, f) >= 0, 1);
        assert_int_equal(fclose(f), 0);
}

static bool exists(const char *path)
{
        struct stat st;

        return stat(path, &st) == 0;
}

static bool is_dir(const char *path)
{
        struct stat st;

        return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int setup(void **state)
{
        char tmpl[] = "/tmp/test-config-XXXXXX";

        if (!mkdtemp(tmpl))
                return -1;
        tmp = strdup(tmpl);
        return tmp ? 0 : -1;
}

static int teardown(void **state)
{
        rm_rf(tmp);
        free(tmp);
        tmp = NULL;
        return 0;
}

/* Writes text to <tmp>/<name> and returns the path; caller frees. */
static char *write_conf(const char *name, const char *text)
{
        char *path = path_join("%s/%s", tmp, name);

        write_text(path, text);
        return path;
}

/* Line (1-based) of the first line of text containing marker; fails if none. */
static unsigned line_of(const char *text, const char *marker)
{
        const char *at = strstr(text, marker);
        unsigned line = 1;

        assert_non_null(at);
        for (const char *c = text; c < at; c++)
                if (*c == '\n')
                        line++;
        return line;
}

/*
 * Loads text, expects error err, and a message that starts with "FILE:LINE: " where LINE is
 * the line holding `marker` (or "FILE: " when marker is NULL) and contains each word.
 */
static void expect_error(const char *text, int err, const char *marker, const char *const *words)
{
        _cleanup_free_ char *path = write_conf("bad.conf", text), *prefix = NULL;
        _cleanup_free_ char *error = NULL;
        struct config *c = NULL;
        int r;

        r = config_load(path, &c, &error);
        if (r != err || !error)
                print_error("unexpected result %d (wanted %d) for:\n%s\nmessage: %s\n", r, err,
                            text, error ? error : "(none)");
        assert_int_equal(r, err);
        assert_null(c);
        assert_non_null(error);

        if (marker)
                prefix = path_join("%s:%u: ", path, line_of(text, marker));
        else
                prefix = path_join("%s: ", path);
        if (strncmp(error, prefix, strlen(prefix)) != 0)
                print_error("message \"%s\" does not start with \"%s\"\n", error, prefix);
        assert_true(strncmp(error, prefix, strlen(prefix)) == 0);
        for (const char *const *w = words; w && *w; w++) {
                if (!strstr(error, *w))
                        print_error("message \"%s\" lacks \"%s\"\n", error, *w);
                assert_non_null(strstr(error, *w));
        }
}

/* Loads text and expects success; caller frees the config. */
static struct config *expect_ok(const char *text)
{
        _cleanup_free_ char *path = write_conf("good.conf", text);
        _cleanup_free_ char *error = NULL;
        struct config *c = NULL;
        int r;

        r = config_load(path, &c, &error);
        if (r < 0)
                print_error("unexpected error %d: %s\nfor:\n%s\n", r, error ? error : "(none)",
                            text);
        assert_int_equal(r, 0);
        assert_non_null(c);
        assert_null(error);
        return c;
}

#define WATCH "watch = ( { path = \"/srv/in\"; output = \"/srv/out\"; pipeline = \"p\"; } );\n"
#define PIPE                                                                                       \
        "pipelines = { p = ( { name = \"a\"; width = 10; height = 10; format = \"webp\"; } ); "    \
        "};\n"
/* A pipeline `p` around one variant body. */
#define PIPE_V(body) WATCH "pipelines = {\n  p = (\n    { " body " }\n  );\n};\n"

static const char full_conf[] =
        "# a full configuration\n"
        "state_dir = \"/var/lib/imgd-test/\";\n"
        "socket = \"/run/imgd-test/imgd.sock\";\n"
        "workers = 3;\n"
        "background = \"#102030\";\n"
        "limits = { max_file_bytes = 1073741824L; max_pixels = 5000; job_timeout = 30; };\n"
        "retry = { max_attempts = 7; base_delay_ms = 50; max_delay_ms = 60000; jitter = 1; };\n"
        "watch = (\n"
        "  { path = \"/srv//uploads/avatars/\"; output = \"/srv/media/avatars\";\n"
        "    pipeline = \"avatar\"; recursive = true; },\n"
        "  { path = \"/srv/uploads/b\"; output = \"/srv/uploads/bc\"; pipeline = \"web\"; }\n"
        ");\n"
        "pipelines = {\n"
        "  avatar = (\n"
        "    { name = \"small\"; width = 100; height = 100; fit = \"cover\"; format = \"webp\";\n"
        "      quality = 80; mask = \"circle\"; },\n"
        "    { name = \"Big_one-2\"; width = 400; height = 300; format = \"png\";\n"
        "      background = \"#abc\"; }\n"
        "  );\n"
        "  web = (\n"
        "    { name = \"orig\"; fit = \"none\"; format = \"same\"; quality = 90; },\n"
        "    { name = \"zero\"; fit = \"none\"; width = 0; height = 0; format = \"jpeg\"; },\n"
        "    { name = \"w\"; width = 16384; height = 1; fit = \"inside\"; format = \"avif\";\n"
        "      mask = \"none\"; }\n"
        "  );\n"
        "  unused = ( { name = \"x\"; width = 1; height = 1; fit = \"fill\";\n"
        "               format = \"jpeg\"; } );\n"
        "};\n";

static void test_full(void **state)
{
        struct config *c = expect_ok(full_conf);
        const struct pipeline *p;
        const struct variant *v;

        assert_non_null(strstr(c->file, "good.conf"));
        assert_string_equal(c->state_dir, "/var/lib/imgd-test");
        assert_string_equal(c->socket, "/run/imgd-test/imgd.sock");
        assert_int_equal(c->workers, 3);
        assert_int_equal(c->limits.max_file_bytes, 1073741824ULL);
        assert_int_equal(c->limits.max_pixels, 5000);
        assert_int_equal(c->limits.job_timeout_usec, 30 * USEC_PER_SEC);
        assert_int_equal(c->retry.max_attempts, 7);
        assert_int_equal(c->retry.base_delay_usec, 50 * USEC_PER_MSEC);
        assert_int_equal(c->retry.max_delay_usec, 60000 * USEC_PER_MSEC);
        assert_true(c->retry.jitter == 1.0);

        assert_int_equal(c->n_watches, 2);
        assert_string_equal(c->watches[0].path, "/srv/uploads/avatars");
        assert_string_equal(c->watches[0].output, "/srv/media/avatars");
        assert_string_equal(c->watches[0].pipeline_name, "avatar");
        assert_true(c->watches[0].recursive);
        assert_int_equal(c->watches[0].line, line_of(full_conf, "/srv//uploads"));
        assert_ptr_equal(c->watches[0].pipeline, &c->pipelines[0]);
        assert_string_equal(c->watches[1].path, "/srv/uploads/b");
        /* Not inside /srv/uploads/b: paths are compared by components. */
        assert_string_equal(c->watches[1].output, "/srv/uploads/bc");
        assert_false(c->watches[1].recursive);
        assert_ptr_equal(c->watches[1].pipeline, config_find_pipeline(c, "web"));

        assert_int_equal(c->n_pipelines, 3);
        assert_null(config_find_pipeline(c, "nope"));
        assert_null(config_find_pipeline(c, NULL));

        p = config_find_pipeline(c, "avatar");
        assert_non_null(p);
        assert_string_equal(p->name, "avatar");
        assert_int_equal(p->n_variants, 2);
        v = &p->variants[0];
        assert_string_equal(v->name, "small");
        assert_int_equal(v->width, 100);
        assert_int_equal(v->height, 100);
        assert_int_equal(v->fit, VARIANT_FIT_COVER);
        assert_int_equal(v->format, IMAGE_FORMAT_WEBP);
        assert_int_equal(v->quality, 80);
        assert_int_equal(v->mask, VARIANT_MASK_CIRCLE);
        assert_int_equal(v->background[0], 0x10); /* top-level background */
        assert_int_equal(v->background[1], 0x20);
        assert_int_equal(v->background[2], 0x30);
        v = &p->variants[1];
        assert_string_equal(v->name, "Big_one-2");
        assert_int_equal(v->width, 400);
        assert_int_equal(v->height, 300);
        assert_int_equal(v->fit, VARIANT_FIT_COVER); /* default */
        assert_int_equal(v->format, IMAGE_FORMAT_PNG);
        assert_int_equal(v->quality, 80); /* default */
        assert_int_equal(v->mask, VARIANT_MASK_NONE);
        assert_int_equal(v->background[0], 0xaa); /* "#abc" */
        assert_int_equal(v->background[1], 0xbb);
        assert_int_equal(v->background[2], 0xcc);

        p = config_find_pipeline(c, "web");
        assert_non_null(p);
        assert_int_equal(p->n_variants, 3);
        assert_int_equal(p->variants[0].fit, VARIANT_FIT_NONE);
        assert_int_equal(p->variants[0].width, 0);
        assert_int_equal(p->variants[0].height, 0);
        assert_int_equal(p->variants[0].format, VARIANT_FORMAT_SAME);
        assert_int_equal(p->variants[0].quality, 90);
        assert_int_equal(p->variants[1].format, IMAGE_FORMAT_JPEG);
        assert_int_equal(p->variants[2].fit, VARIANT_FIT_INSIDE);
        assert_int_equal(p->variants[2].width, 16384);
        assert_int_equal(p->variants[2].format, IMAGE_FORMAT_AVIF);

        assert_null(config_free(c));
        assert_null(config_free(NULL));
}

static void test_defaults(void **state)
{
        struct config *c = expect_ok(WATCH PIPE);
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        const struct variant *v;

        assert_string_equal(c->state_dir, CONFIG_DEFAULT_STATE_DIR);
        assert_string_equal(c->socket, CONFIG_DEFAULT_SOCKET);
        assert_int_equal(c->workers, cpus < 1 ? 1 : cpus > 256 ? 256 : cpus);
        assert_int_equal(c->limits.max_file_bytes, 256ULL * 1024 * 1024);
        assert_int_equal(c->limits.max_pixels, 100000000ULL);
        assert_int_equal(c->limits.job_timeout_usec, 120 * USEC_PER_SEC);
        assert_int_equal(c->retry.max_attempts, 5);
        assert_int_equal(c->retry.base_delay_usec, 1000 * USEC_PER_MSEC);
        assert_int_equal(c->retry.max_delay_usec, 300000 * USEC_PER_MSEC);
        assert_true(c->retry.jitter > 0.199 && c->retry.jitter < 0.201);
        assert_false(c->watches[0].recursive);
        /* The alerts' defaults are health.h's. */
        {
                struct health_alerts_config a;

                health_alerts_config_init(&a);
                assert_true(c->alerts.error_rate == a.error_rate);
                assert_int_equal(c->alerts.queued, a.queued);
                assert_int_equal(c->alerts.oldest_usec, a.oldest_usec);
                assert_int_equal(c->alerts.drain_usec, a.drain_usec);
                assert_true(c->alerts.breaker == a.breaker && a.breaker);
                assert_true(c->alerts.degraded == a.degraded && a.degraded);
        }

        v = &c->pipelines[0].variants[0];
        assert_int_equal(v->fit, VARIANT_FIT_COVER);
        assert_int_equal(v->quality, 80);
        assert_int_equal(v->mask, VARIANT_MASK_NONE);
        assert_int_equal(v->background[0], 255);
        assert_int_equal(v->background[1], 255);
        assert_int_equal(v->background[2], 255);
        config_free(c);

        /* Partial limits and retry keep the other defaults; int values for int64 fields. */
        c = expect_ok("limits = { max_pixels = 7; };\nretry = { jitter = 0.0; };\n" WATCH PIPE);
        assert_int_equal(c->limits.max_pixels, 7);
        assert_int_equal(c->limits.max_file_bytes, 256ULL * 1024 * 1024);
        assert_int_equal(c->limits.job_timeout_usec, 120 * USEC_PER_SEC);
        assert_true(c->retry.jitter == 0.0);
        assert_int_equal(c->retry.max_attempts, 5);
        config_free(c);
}

static const char options_conf[] = WATCH
        "pipelines = {\n"
        "  p = {\n"
        "    placeholder = true;\n"
        "    variants = (\n"
        "      { name = \"card\"; width = 320; height = 200; gravity = \"attention\";\n"
        "        format = \"webp\"; quality = 75; effort = 6; },\n"
        "      { name = \"nw\"; width = 10; height = 10; fit = \"cover\"; gravity = "
        "\"north-west\";\n"
        "        format = \"jpeg\"; progressive = true; chroma = \"4:4:4\";\n"
        "        keep = [ \"copyright\", \"icc\" ]; max_bytes = 1024; max_bytes_strict = true; },\n"
        "      { name = \"wm\"; width = 1600; height = 1600; fit = \"inside\"; format = \"png\";\n"
        "        progressive = true; keep = ( \"icc\" );\n"
        "        watermark = { image = \"/etc/imgd/logo.png\"; position = \"north\"; margin = 0;\n"
        "                      opacity = 0.5; width = 1; }; },\n"
        "      { name = \"text\"; fit = \"none\"; format = \"avif\"; effort = 9; chroma = "
        "\"4:2:0\";\n"
        "        max_bytes = 20000;\n"
        "        watermark = { text = \"\xc2\xa9 Example\"; color = \"#f00\"; }; },\n"
        "      { name = \"anim\"; width = 100; height = 100; format = \"gif\"; animated = true;\n"
        "        progressive = true; mask = \"circle\"; },\n"
        "      { name = \"anim2\"; fit = \"none\"; format = \"same\"; animated = true;\n"
        "        keep = [ \"icc\" ]; },\n"
        "      { name = \"lossless\"; fit = \"none\"; format = \"webp\"; lossless = true;\n"
        "        effort = 0; }\n"
        "    );\n"
        "  };\n"
        "  q = ( { name = \"a\"; width = 1; height = 1; format = \"png\"; } );\n"
        "  r = { variants = ( { name = \"a\"; width = 1; height = 1; format = \"png\"; } ); };\n"
        "};\n";

/* Every image option read into the variant, with the defaults of those not set. */
/* The alerts group: each threshold, 0 and false turning one off, the rest left at defaults. */
static void test_alerts(void **state)
{
        struct config *c = expect_ok("alerts = { error_rate = 0.2; queued = 50; oldest_s = 120;\n"
                                     "  drain_s = 0; breaker = false; };\n" WATCH PIPE);

        (void)state;
        assert_true(c->alerts.error_rate > 0.199 && c->alerts.error_rate < 0.201);
        assert_int_equal(c->alerts.queued, 50);
        assert_int_equal(c->alerts.oldest_usec, 120 * 1000000ULL);
        assert_int_equal(c->alerts.drain_usec, 0);
        assert_false(c->alerts.breaker);
        assert_true(c->alerts.degraded);
        config_free(c);
        c = expect_ok("alerts = { error_rate = 0; degraded = false; };\n" WATCH PIPE);
        assert_true(c->alerts.error_rate == 0);
        assert_false(c->alerts.degraded);
        assert_int_equal(c->alerts.queued, 1000);
        config_free(c);
}

static void test_image_options(void **state)
{
        struct config *c = expect_ok(options_conf);
        const struct pipeline *p = config_find_pipeline(c, "p");
        const struct variant *v;

        assert_non_null(p);
        assert_true(p->placeholder);
        assert_int_equal(p->n_variants, 7);
        assert_false(config_find_pipeline(c, "q")->placeholder); /* a list: no placeholder */
        assert_false(config_find_pipeline(c, "r")->placeholder); /* a group without it */
        assert_int_equal(config_find_pipeline(c, "r")->n_variants, 1);

        v = &p->variants[0];
        assert_int_equal(v->gravity, VARIANT_GRAVITY_ATTENTION);
        assert_int_equal(v->fit, VARIANT_FIT_COVER);
        assert_int_equal(v->effort, 6);
        assert_int_equal(v->quality, 75);
        assert_false(v->progressive);
        assert_false(v->lossless);
        assert_int_equal(v->chroma, VARIANT_CHROMA_AUTO);
        assert_int_equal(v->keep, 0);
        assert_int_equal(v->max_bytes, 0);
        assert_false(v->animated);
        assert_int_equal(v->watermark.kind, VARIANT_WATERMARK_NONE);

        v = &p->variants[1];
        assert_int_equal(v->gravity, VARIANT_GRAVITY_NORTH_WEST);
        assert_true(v->progressive);
        assert_int_equal(v->chroma, VARIANT_CHROMA_444);
        assert_int_equal(v->keep, VARIANT_KEEP_ICC | VARIANT_KEEP_COPYRIGHT);
        assert_int_equal(v->max_bytes, 1024);
        assert_true(v->max_bytes_strict);
        assert_int_equal(v->effort, VARIANT_EFFORT_DEFAULT);

        v = &p->variants[2];
        assert_int_equal(v->gravity, VARIANT_GRAVITY_CENTRE);
        assert_int_equal(v->keep, VARIANT_KEEP_ICC);
        assert_int_equal(v->watermark.kind, VARIANT_WATERMARK_IMAGE);
        assert_string_equal(v->watermark.image, "/etc/imgd/logo.png");
        assert_int_equal(v->watermark.position, VARIANT_GRAVITY_NORTH);
        assert_int_equal(v->watermark.margin, 0);
        assert_true(v->watermark.opacity == 0.5);
        assert_true(v->watermark.width == 1.0);
        assert_string_equal(v->watermark.text, "");

        v = &p->variants[3];
        assert_int_equal(v->format, IMAGE_FORMAT_AVIF);
        assert_int_equal(v->effort, 9);
        assert_int_equal(v->chroma, VARIANT_CHROMA_420);
        assert_int_equal(v->max_bytes, 20000);
        assert_false(v->max_bytes_strict);
        assert_int_equal(v->watermark.kind, VARIANT_WATERMARK_TEXT);
        assert_string_equal(v->watermark.text, "\xc2\xa9 Example");
        assert_string_equal(v->watermark.font, "sans 24"); /* defaults */
        assert_int_equal(v->watermark.position, VARIANT_GRAVITY_SOUTH_EAST);
        assert_int_equal(v->watermark.margin, 16);
        assert_true(v->watermark.opacity == 1.0);
        assert_true(v->watermark.width == 0.0); /* text: its font's size */
        assert_int_equal(v->watermark.color[0], 255);
        assert_int_equal(v->watermark.color[1], 0);
        assert_int_equal(v->watermark.color[2], 0);

        v = &p->variants[4];
        assert_int_equal(v->format, IMAGE_FORMAT_GIF);
        assert_true(v->animated);
        assert_true(v->progressive);
        assert_int_equal(v->mask, VARIANT_MASK_CIRCLE);
        assert_true(p->variants[5].animated);
        assert_int_equal(p->variants[5].format, VARIANT_FORMAT_SAME);
        assert_true(p->variants[6].lossless);
        assert_int_equal(p->variants[6].effort, 0);

        /* An image watermark's default width is a quarter of the output's. */
        config_free(c);
        c = expect_ok(PIPE_V("name = \"v\"; width = 9; height = 9; format = \"png\";\n"
                             " watermark = { image = \"/a.png\"; };"));
        v = &c->pipelines[0].variants[0];
        assert_true(v->watermark.width == 0.25);
        assert_true(v->watermark.opacity == 1.0);
        assert_int_equal(v->watermark.margin, 16);
        assert_int_equal(v->watermark.position, VARIANT_GRAVITY_SOUTH_EAST);
        config_free(c);
}

/*
 * Every variant of options_conf through the JSON sent to workers and back is the same
 * variant; and the reader is strict: an unknown member, a missing one, a wrong type or a
 * combination the configuration refuses is an error.
 */
static void test_variant_json(void **state)
{
        struct config *c = expect_ok(options_conf);
        const struct pipeline *p = config_find_pipeline(c, "p");
        static const struct {
                const char *member;
                const char *json; /* replaces the member's value; NULL: removes it */
                const char *words;
        } broken[] = {
                { "bogus", "1", "malformed variant" },
                { "gravity", NULL, "malformed variant" },
                { "gravity", "\"up\"", "unknown gravity 'up'" },
                { "effort", "\"4\"", "malformed variant" },
                { "keep", "[\"exif\"]", "invalid keep entry" },
                { "max_bytes", "10", "max_bytes below 1024" },
                { "animated", "1", "malformed variant" },
                { "lossless", "true", "lossless does not apply to jpeg" },
                { "fit", "\"none\"", "fit none takes no width or height" },
                { "watermark",
                  "{\"image\":\"/a.png\",\"position\":\"north\",\"margin\":1,"
                  "\"opacity\":2,\"width\":0.5}",
                  "watermark opacity out of range" },
                { "watermark",
                  "{\"image\":\"a.png\",\"position\":\"north\",\"margin\":1,"
                  "\"opacity\":1,\"width\":0.5}",
                  "must be an absolute path" },
                { "watermark",
                  "{\"image\":\"/a.png\",\"position\":\"attention\",\"margin\":1,"
                  "\"opacity\":1,\"width\":0.5}",
                  "unknown watermark position" },
                { "watermark",
                  "{\"image\":\"/a.png\",\"text\":\"x\",\"position\":\"north\","
                  "\"margin\":1,\"opacity\":1,\"width\":0.5}",
                  "either an image or text" },
                { "watermark",
                  "{\"image\":\"/a.png\",\"position\":\"north\",\"margin\":1,"
                  "\"opacity\":1,\"width\":0.5,\"extra\":1}",
                  "malformed watermark" },
        };

        /* "same" with animated = true, resolved for a still JPEG source: still a variant. */
        {
                struct variant v = p->variants[5], back;
                _cleanup_free_ char *err = NULL;
                json_t *j;

                v.format = IMAGE_FORMAT_JPEG;
                j = variant_to_json(&v);
                if (variant_from_json(j, &back, &err) < 0)
                        fail_msg("resolved animated variant: %s", err);
                assert_true(back.animated);
                json_decref(j);
        }

        for (size_t i = 0; i < p->n_variants; i++) {
                json_t *j = variant_to_json(&p->variants[i]), *j2;
                _cleanup_free_ char *err = NULL;
                struct variant back;

                assert_non_null(j);
                memset(&back, 0x5a, sizeof back);
                if (variant_from_json(j, &back, &err) < 0)
                        fail_msg("variant %s: %s", p->variants[i].name, err);
                j2 = variant_to_json(&back);
                assert_true(json_equal(j, j2));
                assert_string_equal(back.name, p->variants[i].name);
                assert_int_equal(back.gravity, p->variants[i].gravity);
                assert_int_equal(back.keep, p->variants[i].keep);
                assert_int_equal(back.max_bytes, p->variants[i].max_bytes);
                assert_int_equal(back.watermark.kind, p->variants[i].watermark.kind);
                assert_string_equal(back.watermark.image, p->variants[i].watermark.image);
                assert_string_equal(back.watermark.text, p->variants[i].watermark.text);
                assert_true(back.watermark.opacity == p->variants[i].watermark.opacity);
                assert_memory_equal(back.watermark.color, p->variants[i].watermark.color, 3);
                json_decref(j);
                json_decref(j2);
        }

        /* Variant 1 (jpeg, 10x10, north-west) with one member broken at a time. */
        for (size_t i = 0; i < ELEMENTSOF(broken); i++) {
                json_t *j = variant_to_json(&p->variants[1]);
                _cleanup_free_ char *err = NULL;
                struct variant back = {};

                if (broken[i].json) {
                        json_t *val = json_loads(broken[i].json, JSON_DECODE_ANY, NULL);

                        assert_non_null(val);
                        json_object_set_new(j, broken[i].member, val);
                } else {
                        json_object_del(j, broken[i].member);
                }
                assert_int_equal(variant_from_json(j, &back, &err), -EINVAL);
                assert_non_null(err);
                if (!strstr(err, broken[i].words))
                        fail_msg("%s: \"%s\" lacks \"%s\"", broken[i].member, err, broken[i].words);
                assert_string_equal(back.name, ""); /* unchanged */
                json_decref(j);
        }
        config_free(c);
}

struct bad_case {
        const char *text;
        int err;
        const char *marker; /* text on the line the message must name; NULL: no line */
        const char *words[4];
};

static const struct bad_case bad_cases[] = {
        /* Unknown settings and wrong types. */
        { "wokers = 2;\n" WATCH PIPE, -EINVAL, "wokers", { "unknown setting 'wokers'" } },
        { "watch = (\n { path = \"/srv/in\"; output = \"/srv/out\"; pipeline = \"p\";\n"
          "   recursiv = true; }\n);\n" PIPE,
          -EINVAL,
          "recursiv",
          { "unknown setting 'recursiv' in watch '/srv/in'" } },
        { PIPE_V("name = \"small\"; width = 1; height = 1; format = \"png\";\n qualty = 5;"),
          -EINVAL,
          "qualty",
          { "unknown setting 'qualty' in variant 'small'", "pipeline 'p'" } },
        { "limits = {\n job_timeout = 3;\n max_bytes = 5; };\n" WATCH PIPE,
          -EINVAL,
          "max_bytes",
          { "unknown setting 'max_bytes' in limits" } },
        { "retry = {\n attempts = 3; };\n" WATCH PIPE,
          -EINVAL,
          "attempts",
          { "unknown setting 'attempts' in retry" } },
        { "workers = \"two\";\n" WATCH PIPE,
          -EINVAL,
          "workers",
          { "'workers' must be an integer" } },
        { "workers = 2.5;\n" WATCH PIPE, -EINVAL, "workers", { "'workers' must be an integer" } },
        { "workers = 0;\n" WATCH PIPE, -EINVAL, "workers", { "'workers'", "between 1 and 256" } },
        { "workers = 257;\n" WATCH PIPE, -EINVAL, "workers", { "'workers'", "257" } },
        { "state_dir = 5;\n" WATCH PIPE, -EINVAL, "state_dir", { "'state_dir' must be a string" } },
        { "background = \"white\";\n" WATCH PIPE,
          -EINVAL,
          "background",
          { "'background'", "#rrggbb", "white" } },
        { "limits = 5;\n" WATCH PIPE, -EINVAL, "limits", { "'limits' must be a group" } },
        { "retry = { jitter = \"x\"; };\n" WATCH PIPE,
          -EINVAL,
          "jitter",
          { "'jitter' must be a number" } },
        { "alerts = 5;\n" WATCH PIPE, -EINVAL, "alerts", { "'alerts' must be a group" } },
        { "alerts = {\n queue = 5; };\n" WATCH PIPE,
          -EINVAL,
          "queue",
          { "unknown setting 'queue' in alerts" } },
        { "alerts = {\n error_rate = 1.5; };\n" WATCH PIPE,
          -EINVAL,
          "error_rate",
          { "alerts: 'error_rate' must be from 0 (off) to 1, not 1.5" } },
        { "alerts = {\n queued = -1; };\n" WATCH PIPE, -EINVAL, "queued", { "alerts: 'queued'" } },
        { "alerts = {\n drain_s = 1.5; };\n" WATCH PIPE,
          -EINVAL,
          "drain_s",
          { "alerts: 'drain_s' must be an integer" } },
        { "alerts = {\n breaker = 1; };\n" WATCH PIPE,
          -EINVAL,
          "breaker",
          { "alerts: 'breaker' must be true or false" } },

        /* Paths. */
        { "state_dir = \"var/lib/imgd\";\n" WATCH PIPE,
          -EINVAL,
          "state_dir",
          { "'state_dir'", "absolute" } },
        { "socket = \"imgd.sock\";\n" WATCH PIPE, -EINVAL, "socket", { "'socket'", "absolute" } },
        { "socket = \"/run/"
          "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
          "xxxxxxxxxxxxxxxxxxxxxxxxxxxx.sock\";\n" WATCH PIPE,
          -EINVAL,
          "socket",
          { "'socket'", "too long" } },

        /* Watches. */
        { PIPE, -EINVAL, NULL, { "no watch" } },
        { "watch = ();\n" PIPE, -EINVAL, "watch", { "'watch'", "at least one" } },
        { "watch = { path = \"/a\"; };\n" PIPE, -EINVAL, "watch", { "'watch' must be a list" } },
        { "watch = (\n { path = \"srv/in\"; output = \"/srv/out\"; pipeline = \"p\"; }\n);\n" PIPE,
          -EINVAL,
          "srv/in",
          { "watch 'srv/in'", "'path'", "absolute" } },
        { "watch = (\n { path = \"/srv/in\";\n output = \"/srv/../out\"; pipeline = \"p\"; "
          "}\n);\n" PIPE,
          -EINVAL,
          "output =",
          { "watch '/srv/in'", "'output' must not contain", "\"..\"" } },
        { "watch = (\n { path = \"/srv/./in\"; output = \"/srv/out\"; pipeline = \"p\"; "
          "}\n);\n" PIPE,
          -EINVAL,
          "path =",
          { "'path'", "\".\"" } },
        { "watch = (\n { path = \"/\"; output = \"/srv/out\"; pipeline = \"p\"; }\n);\n" PIPE,
          -EINVAL,
          "path =",
          { "'path' must not be the root directory" } },
        { "watch = (\n { output = \"/srv/out\"; pipeline = \"p\"; }\n);\n" PIPE,
          -EINVAL,
          "{ output",
          { "watch #1", "'path' is required" } },
        { "watch = (\n { path = \"/srv/in\"; pipeline = \"p\"; }\n);\n" PIPE,
          -EINVAL,
          "{ path",
          { "watch '/srv/in'", "'output' is required" } },
        { "watch = (\n { path = \"/srv/in\"; output = \"/srv/out\"; }\n);\n" PIPE,
          -EINVAL,
          "{ path",
          { "watch '/srv/in'", "'pipeline' is required" } },
        { "watch = (\n { path = \"/srv/in\"; output = \"/srv/out\";\n pipeline = \"nope\"; "
          "}\n);\n" PIPE,
          -EINVAL,
          "nope",
          { "watch '/srv/in'", "pipeline 'nope' is not defined" } },
        { "watch = (\n { path = \"/srv/in\"; output = \"/srv/out\"; pipeline = \"p\";\n"
          " recursive = \"yes\"; }\n);\n" PIPE,
          -EINVAL,
          "recursive",
          { "'recursive' must be true or false" } },
        { "watch = (\n { path = \"/srv/in\"; output = \"/srv/out\"; pipeline = \"p\"; },\n"
          " { path = \"/srv/in/\"; output = \"/srv/out2\"; pipeline = \"p\"; }\n);\n" PIPE,
          -EINVAL,
          "/srv/in/\"",
          { "watch '/srv/in'", "already watched" } },
        { "watch = (\n { path = \"/srv/in\";\n output = \"/srv/in/out\"; pipeline = \"p\"; "
          "}\n);\n" PIPE,
          -EINVAL,
          "output =",
          { "/srv/in/out", "inside watched path /srv/in" } },
        { "watch = (\n { path = \"/srv/in\";\n output = \"/srv/in\"; pipeline = \"p\"; "
          "}\n);\n" PIPE,
          -EINVAL,
          "output =",
          { "inside watched path /srv/in" } },
        { "watch = (\n { path = \"/srv/in\"; output = \"/srv/out\"; pipeline = \"p\"; },\n"
          " { path = \"/srv/x\";\n output = \"/srv/in/sub\"; pipeline = \"p\"; }\n);\n" PIPE,
          -EINVAL,
          "/srv/in/sub",
          { "watch '/srv/x'", "inside watched path /srv/in (line 2)" } },
        { "watch = (\n { path = \"/srv/in\"; output = \"/srv/out\"; pipeline = \"p\"; },\n"
          " { path = \"/srv/out/up\"; output = \"/srv/o2\"; pipeline = \"p\"; }\n);\n" PIPE,
          -EINVAL,
          "/srv/out/up",
          { "watch '/srv/out/up'", "inside output /srv/out of watch '/srv/in' (line 2)" } },
        { "watch = (\n { path = \"/srv/in/deep\"; output = \"/srv/out\"; pipeline = \"p\"; },\n"
          " { path = \"/srv\"; output = \"/var/o2\"; pipeline = \"p\"; }\n);\n" PIPE,
          -EINVAL,
          "/srv/out\"",
          { "watch '/srv/in/deep'", "inside watched path /srv" } },

        /* Nested watches: the inner tree would belong to both when the outer one recurses. */
        { "watch = (\n { path = \"/srv/in\"; output = \"/srv/out\"; pipeline = \"p\";\n"
          "   recursive = true; },\n"
          " { path = \"/srv/in/sub\"; output = \"/srv/out2\"; pipeline = \"p\"; }\n);\n" PIPE,
          -EINVAL,
          "/srv/in/sub",
          { "watch '/srv/in/sub': path is inside watch '/srv/in' (line 2), which is recursive" } },
        { "watch = (\n { path = \"/srv/in/sub\"; output = \"/srv/out\"; pipeline = \"p\"; },\n"
          " { path = \"/srv/in\"; output = \"/srv/out2\"; pipeline = \"p\";\n"
          "   recursive = true; }\n);\n" PIPE,
          -EINVAL,
          "/srv/in/sub",
          { "watch '/srv/in/sub'", "inside watch '/srv/in' (line 3)" } },
        /* The ledger's files inside a watched tree. */
        { "state_dir = \"/srv/in/.imgd\";\n" WATCH PIPE,
          -EINVAL,
          "state_dir",
          { "state_dir /srv/in/.imgd is inside watched path /srv/in (line 2)" } },

        /* Pipelines. */
        { WATCH, -EINVAL, NULL, { "no pipelines" } },
        { WATCH "pipelines = {\n p = ();\n};\n",
          -EINVAL,
          "p = ()",
          { "pipeline 'p'", "no variants" } },
        { WATCH "pipelines = {\n p = 5;\n};\n",
          -EINVAL,
          "p = 5",
          { "pipeline 'p'", "must be a list" } },
        { WATCH "pipelines = (\n 5 );\n", -EINVAL, "pipelines", { "'pipelines' must be a group" } },

        /* Variants. */
        { PIPE_V("width = 1; height = 1; format = \"png\";"),
          -EINVAL,
          "{ width",
          { "pipeline 'p'", "variant #1", "'name' is required" } },
        { PIPE_V("name = \"a b\"; width = 1; height = 1; format = \"png\";"),
          -EINVAL,
          "a b",
          { "'name'", "A-Z", "a b" } },
        { PIPE_V("name = \"\"; width = 1; height = 1; format = \"png\";"),
          -EINVAL,
          "name",
          { "'name'" } },
        { PIPE_V("name = \"x1234567890123456789012345678901234567890123456789012345678901234\";"
                 "width = 1; height = 1; format = \"png\";"),
          -EINVAL,
          "name",
          { "'name'", "1 to 63" } },
        { WATCH "pipelines = {\n p = (\n"
                "  { name = \"a\"; width = 1; height = 1; format = \"png\"; },\n"
                "  { name = \"b\"; width = 1; height = 1; format = \"png\"; },\n"
                "  { name = \"a\"; width = 2; height = 2; format = \"png\"; }\n );\n};\n",
          -EINVAL,
          "name = \"a\"; width = 2",
          { "pipeline 'p'", "variant 'a'", "twice" } },
        { PIPE_V("name = \"v\"; width = 1; height = 1; format = \"png\";\n fit = \"cver\";"),
          -EINVAL,
          "cver",
          { "pipeline 'p': variant 'v'", "fit must be one of cover, contain, inside, fill, none",
            "cver" } },
        { PIPE_V("name = \"v\"; height = 1; format = \"png\";"),
          -EINVAL,
          "{ name",
          { "variant 'v'", "'width' is required" } },
        { PIPE_V("name = \"v\"; width = 1; fit = \"fill\"; format = \"png\";"),
          -EINVAL,
          "{ name",
          { "variant 'v'", "'height' is required" } },
        { PIPE_V("name = \"v\"; height = 1; format = \"png\";\n width = 0;"),
          -EINVAL,
          "width",
          { "'width' must be between 1 and 16384" } },
        { PIPE_V("name = \"v\"; width = 1; format = \"png\";\n height = 16385;"),
          -EINVAL,
          "height",
          { "'height' must be between 1 and 16384", "16385" } },
        { PIPE_V("name = \"v\"; height = 1; format = \"png\";\n width = \"100\";"),
          -EINVAL,
          "width",
          { "'width' must be an integer" } },
        { PIPE_V("name = \"v\"; fit = \"none\"; format = \"png\";\n width = 100;"),
          -EINVAL,
          "width",
          { "'width' must be absent or 0", "none" } },
        { PIPE_V("name = \"v\"; width = 1; height = 1;"),
          -EINVAL,
          "{ name",
          { "variant 'v'", "'format' is required" } },
        { PIPE_V("name = \"v\"; width = 1; height = 1;\n format = \"bmp\";"),
          -EINVAL,
          "bmp",
          { "variant 'v'", "format must be one of jpeg, webp, png, avif, gif, same", "bmp" } },
        { PIPE_V("name = \"v\"; width = 1; height = 1;\n format = \"tiff\";"),
          -EINVAL,
          "tiff",
          { "variant 'v'", "format must be one of", "tiff" } },
        { PIPE_V("name = \"v\"; width = 1; height = 1; format = \"png\";\n quality = 0;"),
          -EINVAL,
          "quality",
          { "variant 'v'", "'quality' must be between 1 and 100" } },
        { PIPE_V("name = \"v\"; width = 1; height = 1; format = \"png\";\n quality = 101;"),
          -EINVAL,
          "quality",
          { "'quality'", "101" } },
        { PIPE_V("name = \"v\"; width = 1; height = 1; format = \"png\";\n mask = \"square\";"),
          -EINVAL,
          "square",
          { "mask must be one of none, circle", "square" } },
        { PIPE_V("name = \"small\"; width = 1; height = 1; format = \"jpeg\";\n"
                 " mask = \"circle\";"),
          -EINVAL,
          "circle",
          { "pipeline 'p': variant 'small': mask = \"circle\" needs a format with alpha "
            "(webp, png, avif, gif), not jpeg" } },
        { PIPE_V("name = \"v\"; width = 1; height = 1; format = \"same\";\n mask = \"circle\";"),
          -EINVAL,
          "circle",
          { "needs a format with alpha", "not same" } },
        { PIPE_V("name = \"v\"; width = 1; height = 1; format = \"png\";\n"
                 " background = \"#12345g\";"),
          -EINVAL,
          "background",
          { "variant 'v'", "'background'", "#12345g" } },

        /* Gravity: known names, and only with fit = "cover". */
        { PIPE_V("name = \"v\"; width = 1; height = 1; format = \"png\";\n gravity = \"top\";"),
          -EINVAL,
          "top",
          { "pipeline 'p': variant 'v': gravity must be one of centre, north, south, east, west, "
            "north-east, north-west, south-east, south-west, attention, entropy",
            "not \"top\"" } },
        { PIPE_V("name = \"v\"; fit = \"none\"; format = \"png\";\n gravity = \"north\";"),
          -EINVAL,
          "gravity",
          { "variant 'v'", "'gravity' needs fit = \"cover\"", "not fit = \"none\"" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; fit = \"contain\"; format = \"png\";\n"
                 " gravity = \"attention\";"),
          -EINVAL,
          "gravity",
          { "'gravity' needs fit = \"cover\"", "not fit = \"contain\"" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; fit = \"inside\"; format = \"png\";\n"
                 " gravity = \"centre\";"),
          -EINVAL,
          "gravity",
          { "'gravity' needs fit = \"cover\"", "not fit = \"inside\"" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; fit = \"fill\"; format = \"png\";\n"
                 " gravity = \"south\";"),
          -EINVAL,
          "gravity",
          { "not fit = \"fill\"" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"png\";\n gravity = 3;"),
          -EINVAL,
          "gravity",
          { "'gravity' must be a string" } },

        /* Encoder settings that the format does not have. */
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"jpeg\";\n lossless = true;"),
          -EINVAL,
          "lossless",
          { "pipeline 'p': variant 'v': 'lossless' applies to webp only, not jpeg" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"same\";\n lossless = true;"),
          -EINVAL,
          "lossless",
          { "'lossless' applies to webp only, not same" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"png\";\n"
                 " chroma = \"4:4:4\";"),
          -EINVAL,
          "chroma",
          { "variant 'v'", "'chroma' applies to jpeg, avif only, not png" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"jpeg\";\n"
                 " chroma = \"4:2:2\";"),
          -EINVAL,
          "4:2:2",
          { "chroma must be one of auto, 4:4:4, 4:2:0, not \"4:2:2\"" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"jpeg\";\n effort = 3;"),
          -EINVAL,
          "effort",
          { "'effort' applies to webp, avif only, not jpeg" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"webp\";\n effort = 7;"),
          -EINVAL,
          "effort",
          { "'effort' must be between 0 and 6 for webp, not 7" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"avif\";\n effort = 10;"),
          -EINVAL,
          "effort",
          { "'effort' must be between 0 and 9 for avif, not 10" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"webp\";\n"
                 " progressive = true;"),
          -EINVAL,
          "progressive",
          { "'progressive' applies to jpeg, png, gif only, not webp" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"jpeg\";\n progressive = 1;"),
          -EINVAL,
          "progressive",
          { "'progressive' must be true or false" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"jpeg\";\n"
                 " keep = [ \"exif\" ];"),
          -EINVAL,
          "keep",
          { "'keep' entries must be \"icc\" or \"copyright\", not \"exif\"" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"jpeg\";\n"
                 " keep = [ \"icc\", \"icc\" ];"),
          -EINVAL,
          "keep",
          { "'keep' lists \"icc\" twice" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"jpeg\";\n keep = \"icc\";"),
          -EINVAL,
          "keep",
          { "'keep' must be a list of names" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"gif\";\n"
                 " keep = [ \"copyright\" ];"),
          -EINVAL,
          "keep",
          { "'keep' applies to jpeg, webp, png, avif only, not gif" } },

        /* max_bytes: a minimum, a format encoded with a quality, strict only with it. */
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"jpeg\";\n max_bytes = 1023;"),
          -EINVAL,
          "max_bytes",
          { "pipeline 'p': variant 'v': 'max_bytes' must be at least 1024, not 1023" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"png\";\n max_bytes = 5000;"),
          -EINVAL,
          "max_bytes",
          { "'max_bytes' needs a format encoded with a quality (jpeg, webp, avif), not png" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"webp\"; lossless = true;\n"
                 " max_bytes = 5000;"),
          -EINVAL,
          "max_bytes",
          { "'max_bytes' needs a format", "not lossless webp" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"same\";\n max_bytes = 5000;"),
          -EINVAL,
          "max_bytes",
          { "'max_bytes' needs a format", "not same" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"jpeg\";\n"
                 " max_bytes_strict = true;"),
          -EINVAL,
          "max_bytes_strict",
          { "'max_bytes_strict' needs 'max_bytes'" } },

        /* animated: only where the output can hold an animation. */
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"jpeg\";\n animated = true;"),
          -EINVAL,
          "animated",
          { "pipeline 'p': variant 'v': 'animated' needs a format that can hold an animation "
            "(webp, gif) or same, not jpeg" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"png\";\n animated = true;"),
          -EINVAL,
          "animated",
          { "'animated' needs a format", "not png" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"avif\";\n animated = true;"),
          -EINVAL,
          "animated",
          { "'animated' needs a format", "not avif" } },

        /* Watermarks. */
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"png\";\n"
                 " watermark = \"logo.png\";"),
          -EINVAL,
          "watermark",
          { "variant 'v'", "'watermark' must be a group" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"png\";\n"
                 " watermark = { position = \"north\"; };"),
          -EINVAL,
          "watermark",
          { "variant 'v': watermark: 'image' or 'text' is required" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"png\";\n watermark = {\n"
                 " image = \"/a.png\";\n text = \"x\"; };"),
          -EINVAL,
          "text = ",
          { "'image' and 'text' cannot both be set" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"png\";\n watermark = {\n"
                 " image = \"logo.png\"; };"),
          -EINVAL,
          "logo.png",
          { "watermark: 'image' must be an absolute path, not \"logo.png\"" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"png\";\n watermark = {\n"
                 " image = \"/a.png\";\n opacity = 1.5; };"),
          -EINVAL,
          "opacity",
          { "pipeline 'p': variant 'v': watermark: 'opacity' must be more than 0 and at most 1, "
            "not 1.5" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"png\";\n watermark = {\n"
                 " image = \"/a.png\";\n opacity = -0.2; };"),
          -EINVAL,
          "opacity",
          { "'opacity' must be more than 0 and at most 1, not -0.2" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"png\";\n watermark = {\n"
                 " text = \"(c)\";\n opacity = 0; };"),
          -EINVAL,
          "opacity",
          { "'opacity' must be more than 0 and at most 1, not 0" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"png\";\n watermark = {\n"
                 " image = \"/a.png\";\n width = 0; };"),
          -EINVAL,
          "width = 0",
          { "watermark: 'width' must be more than 0 and at most 1 (a fraction of the output's "
            "width), not 0" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"png\";\n watermark = {\n"
                 " text = \"x\";\n width = 1.25; };"),
          -EINVAL,
          "width = 1.25",
          { "'width' must be more than 0 and at most 1", "1.25" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"png\";\n watermark = {\n"
                 " image = \"/a.png\";\n position = \"attention\"; };"),
          -EINVAL,
          "attention",
          { "watermark: position must be one of centre, north, south, east, west, north-east, "
            "north-west, south-east, south-west, not \"attention\"" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"png\";\n watermark = {\n"
                 " image = \"/a.png\";\n margin = -1; };"),
          -EINVAL,
          "margin",
          { "watermark: 'margin' must be between 0 and 4096, not -1" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"png\";\n watermark = {\n"
                 " image = \"/a.png\";\n font = \"sans 9\"; };"),
          -EINVAL,
          "font",
          { "'font' applies to text watermarks only" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"png\";\n watermark = {\n"
                 " text = \"x\";\n color = \"red\"; };"),
          -EINVAL,
          "color",
          { "watermark: 'color' must be a colour \"#rrggbb\"", "red" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"png\";\n watermark = {\n"
                 " text = \"\"; };"),
          -EINVAL,
          "text = ",
          { "watermark: 'text' must be 1 to 255 bytes long" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"png\";\n watermark = {\n"
                 " text = \"x\";\n colour = \"#fff\"; };"),
          -EINVAL,
          "colour",
          { "unknown setting 'colour' in the watermark of variant 'v'" } },

        /* Pipelines as groups. */
        { WATCH "pipelines = {\n p = { variants = ( { name = \"a\"; width = 1; height = 1; "
                "format = \"png\"; } );\n placeholder = \"yes\"; };\n};\n",
          -EINVAL,
          "placeholder",
          { "pipeline 'p': 'placeholder' must be true or false" } },
        { WATCH "pipelines = {\n p = { placeholder = true; };\n};\n",
          -EINVAL,
          "p = {",
          { "pipeline 'p': 'variants' is required" } },
        { WATCH "pipelines = {\n p = { placeholder = true;\n variants = 5; };\n};\n",
          -EINVAL,
          "variants = 5",
          { "pipeline 'p': 'variants' must be a list" } },
        { WATCH "pipelines = {\n p = { variants = ( { name = \"a\"; width = 1; height = 1; "
                "format = \"png\"; } );\n blurhash = true; };\n};\n",
          -EINVAL,
          "blurhash",
          { "unknown setting 'blurhash' in pipeline 'p'" } },
        { WATCH "pipelines = {\n p = { variants = ();\n};\n};\n",
          -EINVAL,
          "variants = ()",
          { "pipeline 'p' has no variants" } },

        /* Limits and retry. */
        { "limits = {\n max_file_bytes = 1023; };\n" WATCH PIPE,
          -EINVAL,
          "max_file_bytes",
          { "limits", "'max_file_bytes' must be at least 1024" } },
        { "limits = {\n max_pixels = 0; };\n" WATCH PIPE,
          -EINVAL,
          "max_pixels",
          { "'max_pixels' must be at least 1" } },
        { "limits = {\n max_pixels = -5L; };\n" WATCH PIPE,
          -EINVAL,
          "max_pixels",
          { "'max_pixels'" } },
        { "limits = {\n job_timeout = 0; };\n" WATCH PIPE,
          -EINVAL,
          "job_timeout",
          { "'job_timeout' must be between 1 and 86400" } },
        { "limits = {\n job_timeout = 86401; };\n" WATCH PIPE,
          -EINVAL,
          "job_timeout",
          { "'job_timeout'" } },
        { "limits = {\n job_timeout = 1.5; };\n" WATCH PIPE,
          -EINVAL,
          "job_timeout",
          { "'job_timeout' must be an integer" } },
        { "retry = {\n max_attempts = 0; };\n" WATCH PIPE,
          -EINVAL,
          "max_attempts",
          { "retry", "'max_attempts' must be between 1 and 100" } },
        { "retry = {\n max_attempts = 101; };\n" WATCH PIPE,
          -EINVAL,
          "max_attempts",
          { "'max_attempts'" } },
        { "retry = {\n base_delay_ms = 0; };\n" WATCH PIPE,
          -EINVAL,
          "base_delay_ms",
          { "'base_delay_ms'" } },
        { "retry = { base_delay_ms = 5000;\n max_delay_ms = 4000; };\n" WATCH PIPE,
          -EINVAL,
          "retry",
          { "'max_delay_ms'", "'base_delay_ms'" } },
        { "retry = { base_delay_ms = 500000; };\n" WATCH PIPE,
          -EINVAL,
          "retry",
          { "'max_delay_ms' (300000)", "'base_delay_ms' (500000)" } },
        { "retry = {\n jitter = 1.5; };\n" WATCH PIPE,
          -EINVAL,
          "jitter",
          { "'jitter' must be between 0 and 1" } },
        { "retry = {\n jitter = -0.1; };\n" WATCH PIPE, -EINVAL, "jitter", { "'jitter'" } },
        /* A quarantine folder inside another watch would feed dead files back in. */
        { "watch = (\n { path = \"/srv/in\"; output = \"/srv/out\"; pipeline = \"p\";\n"
          "   quarantine = \"/srv/in2/q\"; },\n"
          " { path = \"/srv/in2\"; output = \"/srv/out2\"; pipeline = \"p\"; }\n);\n" PIPE,
          -EINVAL,
          "quarantine",
          { "watch '/srv/in': quarantine /srv/in2/q overlaps watched path /srv/in2 (line 4)" } },
        { "watch = (\n { path = \"/srv/in\"; output = \"/srv/out\"; pipeline = \"p\";\n"
          "   quarantine = \"/srv/out2/q\"; },\n"
          " { path = \"/srv/in2\"; output = \"/srv/out2\"; pipeline = \"p\"; }\n);\n" PIPE,
          -EINVAL,
          "quarantine",
          { "watch '/srv/in': quarantine /srv/out2/q is inside output /srv/out2 of watch "
            "'/srv/in2' (line 4)" } },
};

static void test_bad(void **state)
{
        for (size_t i = 0; i < ELEMENTSOF(bad_cases); i++)
                expect_error(bad_cases[i].text, bad_cases[i].err, bad_cases[i].marker,
                             bad_cases[i].words);
}

static void test_too_many_variants(void **state)
{
        static const char *const words[] = { "pipeline 'p'", "33 variants", "at most 32", NULL };
        char text[8192];
        size_t n;

        n = (size_t)snprintf(text, sizeof text, WATCH "pipelines = {\n p = (\n");
        for (int i = 0; i < 33; i++)
                n += (size_t)snprintf(text + n, sizeof text - n,
                                      "  { name = \"v%d\"; width = 1; height = 1; format = "
                                      "\"png\"; }%s\n",
                                      i, i < 32 ? "," : "");
        snprintf(text + n, sizeof text - n, " );\n};\n");
        expect_error(text, -EINVAL, " p = (", words);

        /* 32 is fine. */
        n = (size_t)snprintf(text, sizeof text, WATCH "pipelines = {\n p = (\n");
        for (int i = 0; i < 32; i++)
                n += (size_t)snprintf(text + n, sizeof text - n,
                                      "  { name = \"v%d\"; width = 1; height = 1; format = "
                                      "\"png\"; }%s\n",
                                      i, i < 31 ? "," : "");
        snprintf(text + n, sizeof text - n, " );\n};\n");
        config_free(expect_ok(text));
}

static void test_syntax_error(void **state)
{
        static const char text[] = "state_dir = \"/var/lib/imgd\";\n"
                                   "socket = \"/run/imgd/imgd.sock\";\n"
                                   "workers = = 2;\n" WATCH PIPE;
        /* No final newline: libconfig reports the end of the file on the last line. */
        static const char text2[] = WATCH PIPE "limits = {\n max_pixels = 5;";
        static const char *const words[] = { "syntax error", NULL };

        expect_error(text, -EBADMSG, "workers", words);
        /* An unclosed group is noticed at the end of the file. */
        expect_error(text2, -EBADMSG, "max_pixels", words);
}

static void test_missing_file(void **state)
{
        _cleanup_free_ char *path = path_join("%s/does-not-exist.conf", tmp);
        _cleanup_free_ char *expected =
                path_join("%s: cannot read: No such file or directory", path);
        _cleanup_free_ char *error = NULL;
        struct config *c = NULL;

        assert_int_equal(config_load(path, &c, &error), -ENOENT);
        assert_null(c);
        assert_non_null(error);
        assert_string_equal(error, expected);

        free(error);
        error = NULL;
        assert_int_equal(config_load(tmp, &c, &error), -EISDIR);
        assert_non_null(strstr(error, "cannot read"));
}

/* A configuration below <tmp>/<dir>, with the given watch path and output. */
static struct config *paths_conf(const char *dir, const char *watch_path, const char *output)
{
        _cleanup_free_ char *text = NULL;

        text = path_join("state_dir = \"%s/%s/state/lib\";\n"
                         "socket = \"%s/%s/run/sub/imgd.sock\";\n"
                         "watch = (\n"
                         "  { path = \"%s\"; output = \"%s\"; pipeline = \"p\"; }\n"
                         ");\n" PIPE,
                         tmp, dir, tmp, dir, watch_path, output);
        return expect_ok(text);
}

static void test_check_paths(void **state)
{
        _cleanup_free_ char *base = path_join("%s/paths", tmp), *in = NULL, *out = NULL;
        _cleanup_free_ char *afile = NULL, *bad_out = NULL, *missing = NULL, *error = NULL;
        _cleanup_free_ char *probe_pattern = NULL;
        struct config *c;
        DIR *d;
        struct dirent *de;

        assert_int_equal(mkdir(base, 0755), 0);
        in = path_join("%s/in", base);
        out = path_join("%s/media/deep/out", base);
        afile = path_join("%s/afile", base);
        bad_out = path_join("%s/afile/out", base);
        missing = path_join("%s/missing", base);
        write_text(afile, "not a directory\n");

        /* A missing watch path is named, with the watch's line. */
        c = paths_conf("paths", missing, out);
        assert_int_equal(config_check_paths(c, &error), -ENOENT);
        assert_non_null(error);
        assert_non_null(strstr(error, c->file));
        assert_non_null(strstr(error, ":4: "));
        assert_non_null(strstr(error, missing));
        assert_non_null(strstr(error, "No such file or directory"));
        free(error);
        error = NULL;
        config_free(c);

        /* A watch path that is a file. */
        c = paths_conf("paths", afile, out);
        assert_int_equal(config_check_paths(c, &error), -ENOTDIR);
        assert_non_null(strstr(error, afile));
        free(error);
        error = NULL;
        config_free(c);

        /* An output that cannot be created (below a regular file). */
        assert_int_equal(mkdir(in, 0755), 0);
        c = paths_conf("paths", in, bad_out);
        assert_int_equal(config_check_paths(c, &error), -ENOTDIR);
        assert_non_null(strstr(error, c->file));
        assert_non_null(strstr(error, bad_out));
        assert_non_null(strstr(error, "Not a directory"));
        free(error);
        error = NULL;
        config_free(c);

        /* Missing outputs, state and socket directories are created, nothing left behind. */
        c = paths_conf("paths", in, out);
        assert_int_equal(config_check_paths(c, &error), 0);
        assert_null(error);
        assert_true(is_dir(out));
        assert_true(is_dir(c->state_dir));
        {
                _cleanup_free_ char *sockdir = path_join("%s/run/sub", base);

                assert_true(is_dir(sockdir));
                assert_false(exists(c->socket));
        }
        /* Idempotent. */
        assert_int_equal(config_check_paths(c, &error), 0);
        d = opendir(out);
        assert_non_null(d);
        while ((de = readdir(d)))
                assert_true(strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0);
        closedir(d);
        config_free(c);
}

/* A configuration whose variant 'v' of pipeline 'w' (unused by the watch) has the watermark
 * image `image`. */
static struct config *watermark_conf(const char *base, const char *image)
{
        _cleanup_free_ char *text = NULL;

        text = path_join(
                "state_dir = \"%s/state\";\n"
                "socket = \"%s/imgd.sock\";\n"
                "watch = ( { path = \"%s/in\"; output = \"%s/out\"; pipeline = \"p\"; } );\n"
                "pipelines = {\n"
                "  p = ( { name = \"a\"; width = 10; height = 10; format = \"webp\"; } );\n"
                "  w = ( { name = \"a\"; width = 10; height = 10; format = \"webp\"; },\n"
                "        { name = \"v\"; width = 10; height = 10; format = \"png\";\n"
                "          watermark = { image = \"%s\"; }; } );\n"
                "};\n",
                base, base, base, base, image);
        return expect_ok(text);
}

/* --check-config: a watermark image that is missing, not a file, or not an image is a
 * configuration error naming the pipeline, the variant and the file. */
static void test_check_paths_watermark(void **state)
{
        static const unsigned char png_magic[] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n',
                                                   0,    0,   0,   13,  'I',  'H',  'D',  'R' };
        _cleanup_free_ char *base = path_join("%s/wm", tmp), *in = NULL, *logo = NULL;
        _cleanup_free_ char *text = NULL, *missing = NULL;
        static const struct {
                const char *name;
                int err;
                const char *cause;
        } cases[] = {
                { "missing.png", -ENOENT, "No such file or directory" },
                { "notes.png", -EMEDIUMTYPE, "not a supported image" },
                { "in", -EINVAL, "not a regular file" },
        };

        assert_int_equal(mkdir(base, 0755), 0);
        in = path_join("%s/in", base);
        assert_int_equal(mkdir(in, 0755), 0);
        text = path_join("%s/notes.png", base);
        write_text(text, "this is a text file named .png\n");

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_free_ char *image = path_join("%s/%s", base, cases[i].name);
                _cleanup_free_ char *error = NULL, *want = NULL;
                struct config *c = watermark_conf(base, image);

                assert_int_equal(config_check_paths(c, &error), cases[i].err);
                assert_non_null(error);
                want = path_join("%s: pipeline 'w': variant 'v': watermark image %s: %s", c->file,
                                 image, cases[i].cause);
                if (strncmp(error, want, strlen(want)) != 0)
                        fail_msg("\"%s\" is not \"%s...\"", error, want);
                config_free(c);
        }

        /* A file that starts like a PNG passes (the workers decode it). */
        logo = path_join("%s/logo.png", base);
        {
                FILE *f = fopen(logo, "we");

                assert_non_null(f);
                assert_int_equal(fwrite(png_magic, 1, sizeof png_magic, f), sizeof png_magic);
                assert_int_equal(fclose(f), 0);
        }
        {
                _cleanup_free_ char *error = NULL;
                struct config *c = watermark_conf(base, logo);

                assert_int_equal(config_check_paths(c, &error), 0);
                assert_null(error);
                config_free(c);
        }
}

/* A path without a directory part (imgd -c imgd.conf) loads like any other. */
/*
 * A configuration with state_dir `state` (NULL: <tmp>/state), a socket below <tmp>, and the watch
 * groups `watches` (each "  { ... },\n", the last comma dropped); caller frees.
 */
static char *overlap_text(const char *state, const char *watches)
{
        _cleanup_free_ char *list = strdup(watches);
        char *comma;

        assert_non_null(list);
        comma = strrchr(list, ',');
        assert_non_null(comma);
        *comma = ' ';
        if (state)
                return path_join("state_dir = \"%s\";\n"
                                 "socket = \"%s/run/imgd.sock\";\n"
                                 "watch = (\n%s);\n" PIPE,
                                 state, tmp, list);
        return path_join("state_dir = \"%s/state\";\n"
                         "socket = \"%s/run/imgd.sock\";\n"
                         "watch = (\n%s);\n" PIPE,
                         tmp, tmp, list);
}

/*
 * Loads text (valid by name) and expects config_check_paths() to fail with err and a
 * message starting "FILE:LINE: ", LINE being the line holding marker, that contains each of
 * words.
 */
static void expect_paths_error(const char *text, int err, const char *marker,
                               const char *const *words)
{
        _cleanup_free_ char *error = NULL, *prefix = NULL;
        struct config *c = expect_ok(text);
        int r;

        r = config_check_paths(c, &error);
        if (r != err || !error)
                print_error("unexpected result %d (wanted %d) for:\n%s\nmessage: %s\n", r, err,
                            text, error ? error : "(none)");
        assert_int_equal(r, err);
        assert_non_null(error);
        prefix = path_join("%s:%u: ", c->file, line_of(text, marker));
        if (strncmp(error, prefix, strlen(prefix)) != 0)
                print_error("message \"%s\" does not start with \"%s\"\n", error, prefix);
        assert_true(strncmp(error, prefix, strlen(prefix)) == 0);
        for (const char *const *w = words; *w; w++) {
                if (!strstr(error, *w))
                        print_error("message \"%s\" lacks \"%s\"\n", error, *w);
                assert_non_null(strstr(error, *w));
        }
        config_free(c);
}

/* Loads text and expects config_check_paths() to accept it. */
static void expect_paths_ok(const char *text)
{
        _cleanup_free_ char *error = NULL;
        struct config *c = expect_ok(text);
        int r;

        r = config_check_paths(c, &error);
        if (r < 0)
                print_error("unexpected error %d: %s\nfor:\n%s\n", r, error ? error : "(none)",
                            text);
        assert_int_equal(r, 0);
        config_free(c);
}

/*
 * Overlaps that only the file system shows: an output, a quarantine folder or the state
 * directory reached through a symbolic link into a watched tree, two watches of one folder
 * under two names, a watch inside a recursive one through a link. Each is refused by
 * config_check_paths() (what --check-config, start-up and a reload run) with the line of the
 * watch at fault, the other watch and its line, and the resolved path; nothing is created
 * inside the watched tree. A watch path that is itself a symbolic link is refused with its
 * target. Names that only share a prefix (up, up2) and a watch inside a non-recursive one
 * are accepted.
 */
static void test_check_paths_overlap(void **state)
{
        _cleanup_free_ char *b = path_join("%s/ov", tmp), *up = NULL, *up2 = NULL;
        _cleanup_free_ char *link_up = NULL, *link_b = NULL, *sub = NULL, *link_sub = NULL;
        _cleanup_free_ char *dangling = NULL;
        char *text, *w, *created;

        assert_int_equal(mkdir(b, 0755), 0);
        up = path_join("%s/up", b);
        up2 = path_join("%s/up2", b);
        sub = path_join("%s/up/sub", b);
        link_up = path_join("%s/link-up", b);   /* -> up */
        link_b = path_join("%s/link-b", b);     /* -> b */
        link_sub = path_join("%s/link-sub", b); /* -> up/sub */
        dangling = path_join("%s/dangling", b); /* -> up/nothing */
        assert_int_equal(mkdir(up, 0755), 0);
        assert_int_equal(mkdir(up2, 0755), 0);
        assert_int_equal(mkdir(sub, 0755), 0);
        assert_int_equal(symlink(up, link_up), 0);
        assert_int_equal(symlink(b, link_b), 0);
        assert_int_equal(symlink(sub, link_sub), 0);
        assert_int_equal(symlink("up/nothing", dangling), 0);

        /* An output through a link into the watched tree, not there yet: refused, and not
         * created (a reload would otherwise make it inside the running watch). */
        w = path_join("  { path = \"%s/up\"; output = \"%s/link-up/out\"; pipeline = \"p\"; },\n",
                      b, b);
        text = overlap_text(NULL, w);
        {
                _cleanup_free_ char *m1 =
                        path_join("output %s/link-up/out (resolved: %s/up/out)", b, b);
                _cleanup_free_ char *m2 = path_join("inside watched path %s/up (line 4)", b);
                const char *const words[] = { m1, m2, "picked up as uploads", NULL };

                expect_paths_error(text, -EINVAL, "link-up/out", words);
        }
        created = path_join("%s/out", up);
        assert_false(exists(created));
        free(created);
        free(text);
        free(w);

        /* An output that is a link to an existing folder in the tree, in another watch. */
        w = path_join("  { path = \"%s/up2\"; output = \"%s/o2\"; pipeline = \"p\"; },\n"
                      "  { path = \"%s/up\"; output = \"%s/o1\"; pipeline = \"p\";\n"
                      "    recursive = true; },\n"
                      "  { path = \"%s/x\"; output = \"%s/link-sub\"; pipeline = \"p\"; },\n",
                      b, b, b, b, tmp, b);
        text = overlap_text(NULL, w);
        {
                _cleanup_free_ char *m1 = path_join("watch '%s/x': output %s/link-sub "
                                                    "(resolved: %s)",
                                                    tmp, b, sub);
                _cleanup_free_ char *m2 = path_join("inside watched path %s/up (line 5)", b);
                const char *const words[] = { m1, m2, NULL };
                _cleanup_free_ char *x = path_join("%s/x", tmp);

                assert_int_equal(mkdir(x, 0755), 0);
                expect_paths_error(text, -EINVAL, "link-sub", words);
        }
        free(text);
        free(w);

        /* A dangling link as output: said so, not "No such file". */
        w = path_join("  { path = \"%s/up2\"; output = \"%s/dangling/o\"; pipeline = \"p\"; },\n",
                      b, b);
        text = overlap_text(NULL, w);
        {
                _cleanup_free_ char *m1 = path_join("output %s/dangling/o: a symbolic link", b);
                const char *const words[] = { m1, "points to nothing", NULL };

                expect_paths_error(text, -ENOLINK, "dangling", words);
        }
        free(text);
        free(w);

        /* A watch path that is a symbolic link: refused with its target (the watcher does not
         * follow it, and start-up would fail with "Not a directory"). */
        w = path_join("  { path = \"%s/link-up\"; output = \"%s/o1\"; pipeline = \"p\"; },\n", b,
                      b);
        text = overlap_text(NULL, w);
        {
                _cleanup_free_ char *m1 = path_join("watch path %s/link-up is a symbolic link "
                                                    "to %s",
                                                    b, up);
                const char *const words[] = { m1, "write the directory it points to", NULL };

                expect_paths_error(text, -ELOOP, "link-up", words);
        }
        free(text);
        free(w);

        /* One folder watched under two names (a link higher up in one of them). */
        w = path_join("  { path = \"%s/up\"; output = \"%s/o1\"; pipeline = \"p\"; },\n"
                      "  { path = \"%s/link-b/up\"; output = \"%s/o2\"; pipeline = \"p\"; },\n",
                      b, b, b, b);
        text = overlap_text(NULL, w);
        {
                _cleanup_free_ char *m1 = path_join("watch '%s/link-b/up': path %s/link-b/up "
                                                    "(resolved: %s) is the same directory as "
                                                    "watch '%s' (line 4)",
                                                    b, b, up, up);
                const char *const words[] = { m1, NULL };

                expect_paths_error(text, -EINVAL, "link-b/up", words);
        }
        free(text);
        free(w);

        /* A watch inside a recursive watch, through a link: named with both lines. */
        w = path_join("  { path = \"%s/link-b/up/sub\"; output = \"%s/o2\"; pipeline = \"p\"; },\n"
                      "  { path = \"%s/up\"; output = \"%s/o1\"; pipeline = \"p\";\n"
                      "    recursive = true; },\n",
                      b, b, b, b);
        text = overlap_text(NULL, w);
        {
                _cleanup_free_ char *m1 = path_join("watch '%s/link-b/up/sub': path "
                                                    "%s/link-b/up/sub (resolved: %s) is inside "
                                                    "watch '%s' (line 5), which is recursive",
                                                    b, b, sub, up);
                const char *const words[] = { m1, "belong to both watches", NULL };

                expect_paths_error(text, -EINVAL, "link-b/up/sub", words);
        }
        free(text);
        free(w);

        /* A quarantine folder through a link into a watched tree. */
        w = path_join("  { path = \"%s/up2\"; output = \"%s/o2\"; pipeline = \"p\";\n"
                      "    quarantine = \"%s/link-up/dead\"; },\n"
                      "  { path = \"%s/up\"; output = \"%s/o1\"; pipeline = \"p\"; },\n",
                      b, b, b, b, b);
        text = overlap_text(NULL, w);
        {
                _cleanup_free_ char *m1 = path_join("watch '%s': quarantine %s/link-up/dead "
                                                    "(resolved: %s/dead) overlaps watched path "
                                                    "%s (line 6)",
                                                    up2, b, up, up);
                const char *const words[] = { m1, NULL };

                expect_paths_error(text, -EINVAL, "{ path", words);
        }
        free(text);
        free(w);

        /* The state directory through a link into a watched tree: its own line; not made. */
        w = path_join("  { path = \"%s/up\"; output = \"%s/o1\"; pipeline = \"p\"; },\n", b, b);
        {
                _cleanup_free_ char *st = path_join("%s/link-up/state", b);
                _cleanup_free_ char *m1 = path_join("state_dir %s (resolved: %s/state) is inside "
                                                    "watched path %s (line 4)",
                                                    st, up, up);
                const char *const words[] = { m1, "ledger", NULL };

                text = overlap_text(st, w);
                expect_paths_error(text, -EINVAL, "state_dir", words);
        }
        created = path_join("%s/state", up);
        assert_false(exists(created));
        free(created);
        free(text);
        free(w);

        /* Accepted: names that share a prefix (up, up2, and up2's output up2-out next to
         * them), links higher up in a watch path, a watch inside a non-recursive one. */
        w = path_join("  { path = \"%s/up\"; output = \"%s/up2-out\"; pipeline = \"p\";\n"
                      "    recursive = true; quarantine = \"%s/up-dead\"; },\n"
                      "  { path = \"%s/link-b/up2\"; output = \"%s/up-out\"; pipeline = \"p\";\n"
                      "    recursive = true; },\n",
                      b, b, b, b, b);
        {
                _cleanup_free_ char *st = path_join("%s/up-state", b);

                text = overlap_text(st, w);
                expect_paths_ok(text);
                assert_true(is_dir(st));
        }
        free(text);
        free(w);
        w = path_join("  { path = \"%s/up\"; output = \"%s/o1\"; pipeline = \"p\"; },\n"
                      "  { path = \"%s/link-b/up/sub\"; output = \"%s/o2\"; pipeline = \"p\";\n"
                      "    recursive = true; },\n",
                      b, b, b, b);
        text = overlap_text(NULL, w);
        expect_paths_ok(text);
        free(text);
        free(w);
}

/*
 * In a child process with its own mount namespace (skipped where one cannot be had): binds
 * `source` onto `target` and runs config_check_paths() on each of cfgs, expecting -EINVAL
 * and a message with each of its words. Returns the child's exit status: 0 when all were as
 * expected, 77 when the namespace or the mount could not be made, 1 otherwise (the reason on
 * stderr).
 */
static int check_paths_with_bind(const char *source, const char *target, struct config **cfgs,
                                 const char *const (*words)[4], size_t n)
{
        int status;
        pid_t pid = fork();

        assert_true(pid >= 0);
        if (pid == 0) {
                if (unshare(CLONE_NEWNS) < 0) {
                        /* Not root: a user namespace of our own, mapped to our ids. */
                        uid_t uid = getuid();
                        gid_t gid = getgid();
                        char map[64];
                        int fd;

                        if (unshare(CLONE_NEWUSER | CLONE_NEWNS) < 0)
                                _exit(77);
                        fd = open("/proc/self/setgroups", O_WRONLY | O_CLOEXEC);
                        if (fd >= 0) {
                                (void)!write(fd, "deny", 4);
                                close(fd);
                        }
                        snprintf(map, sizeof map, "%u %u 1", (unsigned)uid, (unsigned)uid);
                        fd = open("/proc/self/uid_map", O_WRONLY | O_CLOEXEC);
                        if (fd < 0 || write(fd, map, strlen(map)) < 0)
                                _exit(77);
                        close(fd);
                        snprintf(map, sizeof map, "%u %u 1", (unsigned)gid, (unsigned)gid);
                        fd = open("/proc/self/gid_map", O_WRONLY | O_CLOEXEC);
                        if (fd < 0 || write(fd, map, strlen(map)) < 0)
                                _exit(77);
                        close(fd);
                }
                /* Nothing done here may reach the namespace the tests run in. */
                if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
                    mount(source, target, NULL, MS_BIND, NULL) < 0)
                        _exit(77);
                for (size_t i = 0; i < n; i++) {
                        char *error = NULL;
                        int r = config_check_paths(cfgs[i], &error);

                        if (r != -EINVAL || !error) {
                                fprintf(stderr, "case %zu: %d, wanted -EINVAL: %s\n", i, r,
                                        error ? error : "(none)");
                                _exit(1);
                        }
                        for (size_t k = 0; k < 4 && words[i][k]; k++)
                                if (!strstr(error, words[i][k])) {
                                        fprintf(stderr, "case %zu: \"%s\" lacks \"%s\"\n", i, error,
                                                words[i][k]);
                                        _exit(1);
                                }
                        free(error);
                }
                _exit(0);
        }
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        return WEXITSTATUS(status);
}

/*
 * A bind mount of a watched folder is the same folder under another name, which no
 * resolving of symbolic links shows: an output below the bind and a second watch of it are
 * found by device and inode, and refused with the line of the watch.
 */
static void test_check_paths_bind_mount(void **state)
{
        _cleanup_free_ char *b = path_join("%s/bind", tmp), *up = NULL, *alias = NULL;
        _cleanup_free_ char *w1 = NULL, *w2 = NULL, *t1 = NULL, *t2 = NULL, *m1 = NULL;
        _cleanup_free_ char *m2 = NULL, *created = NULL;
        struct config *cfgs[2];
        int r;

        up = path_join("%s/up", b);
        alias = path_join("%s/alias", b);
        assert_int_equal(mkdir(b, 0755), 0);
        assert_int_equal(mkdir(up, 0755), 0);
        assert_int_equal(mkdir(alias, 0755), 0);

        w1 = path_join("  { path = \"%s\"; output = \"%s/out\"; pipeline = \"p\"; },\n", up, alias);
        w2 = path_join("  { path = \"%s\"; output = \"%s/o1\"; pipeline = \"p\"; },\n"
                       "  { path = \"%s\"; output = \"%s/o2\"; pipeline = \"p\"; },\n",
                       up, b, alias, b);
        t1 = overlap_text(NULL, w1);
        t2 = overlap_text(NULL, w2);
        m1 = path_join("%s:4: watch '%s': output %s/out is inside watched path %s (line 4)", tmp,
                       up, alias, up);
        m2 = path_join("%s:5: watch '%s': path %s is the same directory as watch '%s' (line 4)",
                       tmp, alias, alias, up);
        const char *const words[2][4] = { { m1 + strlen(tmp) + 1, "device and inode", NULL },
                                          { m2 + strlen(tmp) + 1, "device and inode", NULL } };

        cfgs[0] = expect_ok(t1);
        cfgs[1] = expect_ok(t2);
        r = check_paths_with_bind(up, alias, cfgs, words, 2);
        config_free(cfgs[0]);
        config_free(cfgs[1]);
        if (r == 77)
                skip();
        assert_int_equal(r, 0);
        created = path_join("%s/out", up);
        assert_false(exists(created));
}

static void test_relative_path(void **state)
{
        _cleanup_free_ char *path = write_conf("relative.conf", WATCH PIPE);
        _cleanup_free_ char *error = NULL, *cwd = get_current_dir_name();
        struct config *c = NULL;

        assert_non_null(cwd);
        assert_int_equal(chdir(tmp), 0);
        assert_int_equal(config_load("relative.conf", &c, &error), 0);
        assert_int_equal(chdir(cwd), 0);
        assert_non_null(c);
        assert_string_equal(c->watches[0].path, "/srv/in");
        config_free(c);
}

static void test_example_conf(void **state)
{
#ifdef IMGD_SOURCE_DIR
        _cleanup_free_ char *error = NULL;
        struct config *c = NULL;
        const struct pipeline *p;
        int r;

        r = config_load(IMGD_SOURCE_DIR "/etc/imgd.conf", &c, &error);
        if (r < 0)
                print_error("%s\n", error);
        assert_int_equal(r, 0);
        assert_string_equal(c->state_dir, "/var/lib/imgd");
        assert_string_equal(c->socket, "/run/imgd/imgd.sock");
        assert_int_equal(c->n_watches, 1);
        assert_string_equal(c->watches[0].path, "/srv/uploads/avatars");
        assert_string_equal(c->watches[0].output, "/srv/media/avatars");
        assert_true(c->watches[0].recursive);
        p = c->watches[0].pipeline;
        assert_string_equal(p->name, "avatar");
        assert_int_equal(p->n_variants, 3);
        for (size_t i = 0; i < 3; i++) {
                static const char *const names[] = { "small", "medium", "large" };
                static const unsigned sizes[] = { 100, 200, 400 };

                assert_string_equal(p->variants[i].name, names[i]);
                assert_int_equal(p->variants[i].width, sizes[i]);
                assert_int_equal(p->variants[i].height, sizes[i]);
                assert_int_equal(p->variants[i].fit, VARIANT_FIT_COVER);
                assert_int_equal(p->variants[i].format, IMAGE_FORMAT_WEBP);
                assert_int_equal(p->variants[i].quality, 80);
                assert_int_equal(p->variants[i].mask, VARIANT_MASK_CIRCLE);
        }
        p = config_find_pipeline(c, "web");
        assert_non_null(p);
        assert_true(p->placeholder);
        assert_int_equal(p->n_variants, 6);
        for (size_t i = 0; i < 4; i++) {
                const struct variant *v = &p->variants[i];

                assert_int_equal(v->width, i < 2 ? 1600 : 800);
                assert_int_equal(v->height, v->width);
                assert_int_equal(v->fit, VARIANT_FIT_INSIDE);
                assert_int_equal(v->format, i % 2 ? IMAGE_FORMAT_WEBP : IMAGE_FORMAT_JPEG);
                assert_int_equal(v->quality, i % 2 ? 80 : 82);
                assert_int_equal(v->progressive, i % 2 == 0);
                assert_int_equal(v->keep, i % 2 ? 0 : VARIANT_KEEP_ICC | VARIANT_KEEP_COPYRIGHT);
        }
        assert_string_equal(p->variants[4].name, "marked");
        assert_int_equal(p->variants[4].width, 1600);
        assert_int_equal(p->variants[4].watermark.kind, VARIANT_WATERMARK_TEXT);
        assert_string_equal(p->variants[4].watermark.text, "\xc2\xa9 Example");
        assert_int_equal(p->variants[4].watermark.position, VARIANT_GRAVITY_SOUTH_EAST);
        assert_string_equal(p->variants[5].name, "card");
        assert_int_equal(p->variants[5].width, 320);
        assert_int_equal(p->variants[5].fit, VARIANT_FIT_COVER);
        assert_int_equal(p->variants[5].gravity, VARIANT_GRAVITY_ATTENTION);
        assert_int_equal(p->variants[5].format, IMAGE_FORMAT_WEBP);
        assert_int_equal(p->variants[5].max_bytes, 20000);
        config_free(c);
#else
        skip();
#endif
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_full),
                cmocka_unit_test(test_defaults),
                cmocka_unit_test(test_alerts),
                cmocka_unit_test(test_image_options),
                cmocka_unit_test(test_variant_json),
                cmocka_unit_test(test_bad),
                cmocka_unit_test(test_too_many_variants),
                cmocka_unit_test(test_syntax_error),
                cmocka_unit_test(test_missing_file),
                cmocka_unit_test(test_check_paths),
                cmocka_unit_test(test_check_paths_watermark),
                cmocka_unit_test(test_check_paths_overlap),
                cmocka_unit_test(test_check_paths_bind_mount),
                cmocka_unit_test(test_relative_path),
                cmocka_unit_test(test_example_conf),
        };

        return cmocka_run_group_tests(tests, setup, teardown);
}
