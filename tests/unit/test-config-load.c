/* SPDX-License-Identifier: MIT */
/*
 * test-config-load.c - config_load() on valid files: a complete file (every value read, the
 * watch line kept), the defaults of a minimal one, the alerts group, every image option of a
 * variant and the variant's JSON form; a configuration named by a relative path; and the
 * shipped etc/imgd.conf. Self-contained: files go to the temporary directory of
 * config-fixture.c.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <jansson.h>

#include "shared/config.h"
#include "shared/macro.h"
#include "shared/time-util.h"

#include "config-fixture.h"

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
        struct config *c = cfgfx_expect_ok(full_conf);
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
        assert_int_equal(c->watches[0].line, cfgfx_line_of(full_conf, "/srv//uploads"));
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
        struct config *c = cfgfx_expect_ok(WATCH PIPE);
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
        c = cfgfx_expect_ok(
                "limits = { max_pixels = 7; };\nretry = { jitter = 0.0; };\n" WATCH PIPE);
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
        struct config *c =
                cfgfx_expect_ok("alerts = { error_rate = 0.2; queued = 50; oldest_s = 120;\n"
                                "  drain_s = 0; breaker = false; };\n" WATCH PIPE);

        (void)state;
        assert_true(c->alerts.error_rate > 0.199 && c->alerts.error_rate < 0.201);
        assert_int_equal(c->alerts.queued, 50);
        assert_int_equal(c->alerts.oldest_usec, 120 * 1000000ULL);
        assert_int_equal(c->alerts.drain_usec, 0);
        assert_false(c->alerts.breaker);
        assert_true(c->alerts.degraded);
        config_free(c);
        c = cfgfx_expect_ok("alerts = { error_rate = 0; degraded = false; };\n" WATCH PIPE);
        assert_true(c->alerts.error_rate == 0);
        assert_false(c->alerts.degraded);
        assert_int_equal(c->alerts.queued, 1000);
        config_free(c);
}

static void test_image_options(void **state)
{
        struct config *c = cfgfx_expect_ok(options_conf);
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
        c = cfgfx_expect_ok(PIPE_V("name = \"v\"; width = 9; height = 9; format = \"png\";\n"
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
        struct config *c = cfgfx_expect_ok(options_conf);
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

/* A path without a directory part (imgd -c imgd.conf) loads like any other. */
static void test_relative_path(void **state)
{
        _cleanup_free_ char *path = cfgfx_write_conf("relative.conf", WATCH PIPE);
        _cleanup_free_ char *error = NULL, *cwd = get_current_dir_name();
        struct config *c = NULL;

        assert_non_null(cwd);
        assert_int_equal(chdir(cfgfx_tmp), 0);
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
                cmocka_unit_test(test_full),         cmocka_unit_test(test_defaults),
                cmocka_unit_test(test_alerts),       cmocka_unit_test(test_image_options),
                cmocka_unit_test(test_variant_json), cmocka_unit_test(test_relative_path),
                cmocka_unit_test(test_example_conf),
        };

        return cmocka_run_group_tests(tests, cfgfx_setup, cfgfx_teardown);
}
