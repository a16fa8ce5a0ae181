/* SPDX-License-Identifier: MIT */
/*
 * test-jobprep.c - what preparing a job computes (jobprep.h): output formats resolved
 * against the source's (a writable source format kept, else WebP); the variants selected at
 * each health level (all at full and reduced, only the essential ones at essential and
 * paused, all of them when none is essential), quality lowered for lossy formats only and
 * effort for webp and avif only from reduced on, and the degraded flag exactly when
 * something was left out or lowered; a variant that keeps an unknown source format stops
 * the selection after the variants before it; at most JOBPREP_MAX_VARIANTS; the output
 * paths and the worker's request; quality = "auto" capped at one encode from reduced on,
 * and format = "best" named for the format its worker reports.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "daemon/jobprep.h"
#include "shared/macro.h"
#include "shared/pathmap.h"
#include "shared/time-util.h"

static struct variant make(const char *name, enum image_format f, bool essential)
{
        struct variant v;

        variant_init(&v);
        snprintf(v.name, sizeof v.name, "%s", name);
        v.width = v.height = 100;
        v.format = f;
        v.essential = essential;
        v.effort = 4;
        return v;
}

static void test_format(void **state)
{
        struct variant v = make("a", VARIANT_FORMAT_SAME, false);

        assert_int_equal(jobprep_format(&v, IMAGE_FORMAT_JPEG), IMAGE_FORMAT_JPEG);
        assert_int_equal(jobprep_format(&v, IMAGE_FORMAT_PNG), IMAGE_FORMAT_PNG);
        assert_int_equal(jobprep_format(&v, IMAGE_FORMAT_AVIF), IMAGE_FORMAT_AVIF);
        /* Read but not written: WebP. */
        assert_int_equal(jobprep_format(&v, IMAGE_FORMAT_GIF), IMAGE_FORMAT_WEBP);
        assert_int_equal(jobprep_format(&v, IMAGE_FORMAT_TIFF), IMAGE_FORMAT_WEBP);
        assert_int_equal(jobprep_format(&v, IMAGE_FORMAT_HEIF), IMAGE_FORMAT_WEBP);
        v.format = IMAGE_FORMAT_PNG;
        assert_int_equal(jobprep_format(&v, IMAGE_FORMAT_JPEG), IMAGE_FORMAT_PNG);
        assert_int_equal(jobprep_format(&v, IMAGE_FORMAT_UNKNOWN), IMAGE_FORMAT_PNG);
}

/* thumb: essential jpeg; web: webp; lossless: lossless webp; same: the source's; png. */
static struct variant pipeline_variants[5];
static struct pipeline pl = { .name = (char *)"p", .variants = pipeline_variants, .n_variants = 5 };

static int setup(void **state)
{
        pipeline_variants[0] = make("thumb", IMAGE_FORMAT_JPEG, true);
        pipeline_variants[1] = make("web", IMAGE_FORMAT_WEBP, false);
        pipeline_variants[2] = make("lossless", IMAGE_FORMAT_WEBP, false);
        pipeline_variants[2].lossless = true;
        pipeline_variants[3] = make("same", VARIANT_FORMAT_SAME, false);
        pipeline_variants[4] = make("png", IMAGE_FORMAT_PNG, false);
        pl.n_variants = 5;
        return 0;
}

static void test_full(void **state)
{
        struct variant v[5];
        struct jobprep_selection sel;

        jobprep_select(&pl, IMAGE_FORMAT_GIF, HEALTH_FULL, v, &sel);
        assert_int_equal(sel.n, 5);
        assert_false(sel.degraded);
        assert_false(sel.unsupported);
        for (size_t i = 0; i < 5; i++) {
                assert_string_equal(v[i].name, pipeline_variants[i].name);
                assert_int_equal(v[i].quality, 80);
                assert_int_equal(v[i].effort, 4);
        }
        assert_int_equal(v[3].format, IMAGE_FORMAT_WEBP); /* gif is not written */
        jobprep_select(&pl, IMAGE_FORMAT_JPEG, HEALTH_FULL, v, &sel);
        assert_int_equal(v[3].format, IMAGE_FORMAT_JPEG);
        /* The pipeline itself is left as it was. */
        assert_int_equal(pipeline_variants[3].format, VARIANT_FORMAT_SAME);
}

static void test_reduced(void **state)
{
        struct variant v[5];
        struct jobprep_selection sel;

        jobprep_select(&pl, IMAGE_FORMAT_PNG, HEALTH_REDUCED, v, &sel);
        assert_int_equal(sel.n, 5);
        assert_true(sel.degraded);
        assert_false(sel.unsupported);
        /* jpeg: quality lowered (80 -> 68), no effort; webp: both; lossless webp: effort
         * only; png (also "same" from a png): neither. */
        assert_int_equal(v[0].quality, 68);
        assert_int_equal(v[0].effort, 4);
        assert_int_equal(v[1].quality, 68);
        assert_int_equal(v[1].effort, HEALTH_EFFORT_FASTEST);
        assert_int_equal(v[2].quality, 80);
        assert_int_equal(v[2].effort, HEALTH_EFFORT_FASTEST);
        assert_int_equal(v[3].format, IMAGE_FORMAT_PNG);
        assert_int_equal(v[3].quality, 80);
        assert_int_equal(v[3].effort, 4);
        assert_int_equal(v[4].quality, 80);
        assert_int_equal(v[4].effort, 4);

        /* Nothing to lower (png only): not degraded at reduced. */
        pl.n_variants = 1;
        pipeline_variants[0] = make("png", IMAGE_FORMAT_PNG, true);
        jobprep_select(&pl, IMAGE_FORMAT_PNG, HEALTH_REDUCED, v, &sel);
        assert_int_equal(sel.n, 1);
        assert_false(sel.degraded);
        /* Nor a quality already at the floor, with webp's effort already the fastest. */
        pipeline_variants[0] = make("q", IMAGE_FORMAT_WEBP, true);
        pipeline_variants[0].quality = 30;
        pipeline_variants[0].effort = HEALTH_EFFORT_FASTEST;
        jobprep_select(&pl, IMAGE_FORMAT_PNG, HEALTH_REDUCED, v, &sel);
        assert_int_equal(v[0].quality, 30);
        assert_false(sel.degraded);
}

static void test_essential(void **state)
{
        static const enum health_level levels[] = { HEALTH_ESSENTIAL, HEALTH_PAUSED };
        struct variant v[5];
        struct jobprep_selection sel;

        for (size_t l = 0; l < ELEMENTSOF(levels); l++) {
                jobprep_select(&pl, IMAGE_FORMAT_JPEG, levels[l], v, &sel);
                assert_int_equal(sel.n, 1);
                assert_string_equal(v[0].name, "thumb");
                assert_int_equal(v[0].quality, 68);
                assert_true(sel.degraded);
                assert_false(sel.unsupported);
        }
        /* None essential: all of them, at the lowered quality. */
        pipeline_variants[0].essential = false;
        jobprep_select(&pl, IMAGE_FORMAT_JPEG, HEALTH_ESSENTIAL, v, &sel);
        assert_int_equal(sel.n, 5);
        assert_true(sel.degraded);
        /* Two essential: both, in pipeline order. */
        pipeline_variants[4].essential = true;
        pipeline_variants[1].essential = true;
        jobprep_select(&pl, IMAGE_FORMAT_JPEG, HEALTH_PAUSED, v, &sel);
        assert_int_equal(sel.n, 2);
        assert_string_equal(v[0].name, "web");
        assert_string_equal(v[1].name, "png");
        assert_true(sel.degraded);
        /* Left out, even with nothing lowered (png has no quality nor effort), is degraded. */
        pl.n_variants = 2;
        pipeline_variants[0] = make("a", IMAGE_FORMAT_PNG, true);
        pipeline_variants[1] = make("b", IMAGE_FORMAT_PNG, false);
        jobprep_select(&pl, IMAGE_FORMAT_JPEG, HEALTH_ESSENTIAL, v, &sel);
        assert_int_equal(sel.n, 1);
        assert_int_equal(v[0].quality, 80);
        assert_true(sel.degraded);
        jobprep_select(&pl, IMAGE_FORMAT_JPEG, HEALTH_REDUCED, v, &sel);
        assert_int_equal(sel.n, 2);
        assert_false(sel.degraded);
}

static void test_unsupported(void **state)
{
        struct variant v[5];
        struct jobprep_selection sel;

        /* "same" is the fourth: the three before it are selected, then it stops. */
        jobprep_select(&pl, IMAGE_FORMAT_UNKNOWN, HEALTH_FULL, v, &sel);
        assert_true(sel.unsupported);
        assert_int_equal(sel.n, 3);
        assert_string_equal(v[2].name, "lossless");
        /* Left out at essential, it does not matter. */
        jobprep_select(&pl, IMAGE_FORMAT_UNKNOWN, HEALTH_ESSENTIAL, v, &sel);
        assert_false(sel.unsupported);
        assert_int_equal(sel.n, 1);
        /* Without a "same" variant an unknown source is not refused here. */
        pipeline_variants[3].format = IMAGE_FORMAT_AVIF;
        jobprep_select(&pl, IMAGE_FORMAT_UNKNOWN, HEALTH_FULL, v, &sel);
        assert_false(sel.unsupported);
        assert_int_equal(sel.n, 5);
}

static void test_max_variants(void **state)
{
        struct variant many[JOBPREP_MAX_VARIANTS + 3], v[JOBPREP_MAX_VARIANTS + 3];
        struct pipeline big = { .name = (char *)"big",
                                .variants = many,
                                .n_variants = ELEMENTSOF(many) };
        struct jobprep_selection sel;

        for (size_t i = 0; i < ELEMENTSOF(many); i++) {
                char name[16];

                snprintf(name, sizeof name, "v%zu", i);
                many[i] = make(name, IMAGE_FORMAT_JPEG, i == 0 || i >= JOBPREP_MAX_VARIANTS);
        }
        jobprep_select(&big, IMAGE_FORMAT_JPEG, HEALTH_FULL, v, &sel);
        assert_int_equal(sel.n, JOBPREP_MAX_VARIANTS);
        assert_string_equal(v[JOBPREP_MAX_VARIANTS - 1].name, "v31");
        /* The limit counts the pipeline's variants, not the selected ones. */
        jobprep_select(&big, IMAGE_FORMAT_JPEG, HEALTH_ESSENTIAL, v, &sel);
        assert_int_equal(sel.n, 1);
}

static void test_paths_and_request(void **state)
{
        struct config cfg = { 0 };
        struct variant v = make("thumb", IMAGE_FORMAT_WEBP, false);
        json_t *variants = json_array(), *req;
        char *path = NULL;
        json_int_t id = 0, max_decode = 0;
        int placeholder = -1;

        assert_int_equal(jobprep_output_path("/srv/out/a/photo", &v, &path), 0);
        assert_string_equal(path, "/srv/out/a/photo_thumb.webp");
        free(path);
        v.format = IMAGE_FORMAT_JPEG;
        assert_int_equal(jobprep_output_path("/srv/out/a/photo", &v, &path), 0);
        assert_string_equal(path, "/srv/out/a/photo_thumb.jpg");
        free(path);

        cfg.limits.max_pixels = 1000;
        cfg.limits.worker_memory = 400;
        cfg.limits.max_file_bytes = 77;
        cfg.limits.job_timeout_usec = 9 * USEC_PER_SEC;
        pl.placeholder = true;
        req = jobprep_request(&cfg, &pl, 42, variants);
        assert_non_null(req);
        assert_int_equal(json_unpack(req, "{s:I, s:I, s:b}", "id", &id, "max_decode_bytes",
                                     &max_decode, "placeholder", &placeholder),
                         0);
        assert_int_equal(id, 42);
        assert_int_equal(max_decode, 300);
        assert_true(placeholder);
        assert_string_equal(json_string_value(json_object_get(req, "type")), "job");
        assert_int_equal(json_integer_value(json_object_get(req, "timeout_s")), 9);
        assert_ptr_equal(json_object_get(req, "variants"), variants);
        json_decref(req);
        json_decref(variants);
        pl.placeholder = false;
}

/* quality = "auto" and format = "best": reduced caps the search at one encode (degraded),
 * best keeps its format and candidates, and its file takes the format the worker chose. */
static void test_auto_and_best(void **state)
{
        struct variant vars[2], out[2];
        struct pipeline ap = { .name = (char *)"a", .variants = vars, .n_variants = 2 };
        struct jobprep_selection sel;
        enum image_format f;
        char *path = NULL, *named = NULL;

        vars[0] = make("auto", IMAGE_FORMAT_JPEG, false);
        vars[0].quality_auto = true;
        vars[0].target = 0.005;
        vars[1] = make("best", VARIANT_FORMAT_BEST, false);
        vars[1].quality_auto = true;
        vars[1].target = 0.005;
        vars[1].n_candidates = 2;
        vars[1].candidates[0] = IMAGE_FORMAT_JPEG;
        vars[1].candidates[1] = IMAGE_FORMAT_AVIF;
        vars[1].best_time_limit_usec = VARIANT_BEST_TIME_LIMIT_DEFAULT_USEC;

        jobprep_select(&ap, IMAGE_FORMAT_PNG, HEALTH_FULL, out, &sel);
        assert_int_equal(sel.n, 2);
        assert_false(sel.degraded);
        assert_int_equal(out[0].auto_encodes, VARIANT_AUTO_ENCODES_DEFAULT);
        assert_int_equal(out[1].format, VARIANT_FORMAT_BEST);

        jobprep_select(&ap, IMAGE_FORMAT_PNG, HEALTH_REDUCED, out, &sel);
        assert_true(sel.degraded);
        for (size_t i = 0; i < 2; i++) {
                assert_int_equal(out[i].auto_encodes, 1);
                assert_int_equal(variant_check(&out[i], NULL), 0);
        }
        assert_int_equal(out[1].format, VARIANT_FORMAT_BEST);
        assert_int_equal(out[1].effort, VARIANT_EFFORT_DEFAULT); /* none applies to best */

        /* The name before the render has the longest extension of the candidates. */
        assert_int_equal(jobprep_output_path("/srv/out/photo", &vars[1], &path), 0);
        assert_string_equal(path, "/srv/out/photo_best.avif");
        assert_int_equal(jobprep_output_format(&vars[1], "jpeg", &f), 0);
        assert_int_equal(f, IMAGE_FORMAT_JPEG);
        assert_int_equal(pathmap_replace_extension(path, image_format_extension(f), &named), 0);
        assert_string_equal(named, "/srv/out/photo_best.jpg");
        /* A format that is not a candidate, or another than a plain variant's, is refused. */
        assert_int_equal(jobprep_output_format(&vars[1], "webp", &f), -EBADMSG);
        assert_int_equal(jobprep_output_format(&vars[0], "webp", &f), -EBADMSG);
        assert_int_equal(jobprep_output_format(&vars[0], NULL, &f), 0);
        assert_int_equal(f, IMAGE_FORMAT_JPEG);
        free(path);
        free(named);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_format),
                cmocka_unit_test_setup(test_full, setup),
                cmocka_unit_test_setup(test_reduced, setup),
                cmocka_unit_test_setup(test_essential, setup),
                cmocka_unit_test_setup(test_unsupported, setup),
                cmocka_unit_test(test_max_variants),
                cmocka_unit_test_setup(test_paths_and_request, setup),
                cmocka_unit_test(test_auto_and_best),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
