/* SPDX-License-Identifier: MIT */
/*
 * test-manifest.c - the manifest format of shared/manifest.h: the writer's document (keys,
 * sorted and indented, the final newline, extra members), names that are not UTF-8 written
 * twice and read back by their bytes, the reader's refusals (not JSON, duplicate keys, no
 * "outputs" list) and its unusable entries (names that are not plain, bad hex, and a
 * "file_hex" without "file", which imgctl verify once compared with strcmp(NULL)).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "shared/macro.h"
#include "shared/manifest.h"

#define SHA_A "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
#define SHA_B "cb8379ac2098aa165029e3938a51da0bcecfc008fd6795f401178647f96c5b34"

static const struct manifest_source source = {
        .job = 42,
        .path = "/srv/up/caf\xe9.jpg",
        .sha256 = "5f",
        .pipeline = "avatar",
};

static const struct manifest_output outputs[] = {
        { "small", "photo_small.webp", "webp", 100, 100, 3, SHA_A, "0123456789abcdef" },
        { "medium", "caf\xe9_m.jpg", "jpeg", 200, 150, 1234567, SHA_B, NULL },
};

static struct manifest *parse_ok(const char *text)
{
        struct manifest *m = NULL;
        char *error = NULL;
        int r = manifest_parse(text, strlen(text), &m, &error);

        if (r < 0)
                fail_msg("manifest_parse(%s): %d %s", text, r, error ? error : "");
        assert_non_null(m);
        return m;
}

static void test_path(void **state)
{
        _cleanup_free_ char *path = NULL;

        (void)state;
        assert_int_equal(manifest_path("/srv/media/a/photo", &path), 0);
        assert_string_equal(path, "/srv/media/a/photo.manifest.json");
}

/* What the writer writes: every member, sorted and indented, one final newline. */
static void test_format(void **state)
{
        _cleanup_(json_decrefp) json_t *doc = NULL, *extra = NULL;
        _cleanup_free_ char *text = NULL;
        const json_t *o;
        json_error_t jerr;
        size_t len = 0;

        (void)state;
        extra = json_pack("{s:b, s:s}", "degraded", 1, "placeholder", "LEHV6n");
        assert_non_null(extra);
        assert_int_equal(manifest_format(&source, outputs, ELEMENTSOF(outputs), extra, &text, &len),
                         0);
        assert_int_equal(strlen(text), len);
        assert_true(len > 2 && text[len - 1] == '\n' && text[len - 2] == '}');
        /* Sorted keys, indented by 2. */
        assert_non_null(strstr(text, "{\n  \"degraded\": true,\n  \"job\": 42,\n"));
        assert_true(strstr(text, "\"job\"") < strstr(text, "\"outputs\"") &&
                    strstr(text, "\"outputs\"") < strstr(text, "\"version\""));

        doc = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
        assert_non_null(doc);
        assert_int_equal(json_integer_value(json_object_get(doc, "version")), 1);
        assert_string_equal(json_string_value(json_object_get(doc, "source")),
                            "/srv/up/caf\xef\xbf\xbd.jpg");
        assert_string_equal(json_string_value(json_object_get(doc, "source_hex")),
                            "2f7372762f75702f636166e92e6a7067");
        assert_string_equal(json_string_value(json_object_get(doc, "source_sha256")), "5f");
        assert_string_equal(json_string_value(json_object_get(doc, "pipeline")), "avatar");
        assert_true(json_is_true(json_object_get(doc, "degraded"))); /* extra replaces it */
        assert_string_equal(json_string_value(json_object_get(doc, "placeholder")), "LEHV6n");
        assert_int_equal(json_array_size(json_object_get(doc, "outputs")), 2);

        o = json_array_get(json_object_get(doc, "outputs"), 0);
        assert_string_equal(json_string_value(json_object_get(o, "variant")), "small");
        assert_string_equal(json_string_value(json_object_get(o, "file")), "photo_small.webp");
        assert_null(json_object_get(o, "file_hex")); /* UTF-8: once */
        assert_string_equal(json_string_value(json_object_get(o, "format")), "webp");
        assert_int_equal(json_integer_value(json_object_get(o, "width")), 100);
        assert_int_equal(json_integer_value(json_object_get(o, "height")), 100);
        assert_int_equal(json_integer_value(json_object_get(o, "bytes")), 3);
        assert_string_equal(json_string_value(json_object_get(o, "sha256")), SHA_A);
        assert_string_equal(json_string_value(json_object_get(o, "recipe")), "0123456789abcdef");
        assert_int_equal(json_object_size(o), 8);

        o = json_array_get(json_object_get(doc, "outputs"), 1);
        assert_string_equal(json_string_value(json_object_get(o, "file")), "caf\xef\xbf\xbd_m.jpg");
        assert_string_equal(json_string_value(json_object_get(o, "file_hex")),
                            "636166e95f6d2e6a7067");
        assert_null(json_object_get(o, "recipe")); /* unknown: not written */
}

/* What the writer writes, the reader reads: names by their bytes. */
static void test_round_trip(void **state)
{
        _cleanup_(manifest_freep) struct manifest *m = NULL;
        _cleanup_free_ char *text = NULL;
        size_t len = 0;

        (void)state;
        assert_int_equal(manifest_format(&source, outputs, ELEMENTSOF(outputs), NULL, &text, &len),
                         0);
        m = parse_ok(text);
        assert_int_equal(m->job, 42);
        assert_string_equal(m->source_sha256, "5f");
        assert_int_equal(m->n_entries, 2);
        for (size_t i = 0; i < 2; i++) {
                assert_null(m->entries[i].problem);
                assert_string_equal(m->entries[i].name, outputs[i].file);
                assert_string_equal(m->entries[i].sha256, outputs[i].sha256);
                assert_int_equal(m->entries[i].bytes, outputs[i].bytes);
        }
        assert_string_equal(m->entries[0].file, "photo_small.webp");
        assert_string_equal(m->entries[1].file, "caf\xef\xbf\xbd_m.jpg"); /* the lossy copy */
}

/* No outputs at all, nothing but the list: still a manifest, with defaults. */
static void test_minimal(void **state)
{
        _cleanup_(manifest_freep) struct manifest *m = NULL;
        _cleanup_free_ char *text = NULL;
        size_t len = 0;

        (void)state;
        assert_int_equal(manifest_format(&source, NULL, 0, NULL, &text, &len), 0);
        m = parse_ok(text);
        assert_int_equal(m->n_entries, 0);
        m = manifest_free(m);
        assert_null(m);

        m = parse_ok("{\"outputs\": [{}]}");
        assert_int_equal(m->job, 0);
        assert_string_equal(m->source_sha256, "");
        assert_int_equal(m->n_entries, 1);
        assert_null(m->entries[0].name);
        assert_string_equal(m->entries[0].sha256, "");
        assert_int_equal(m->entries[0].bytes, 0);
}

static void test_refused(void **state)
{
        static const struct {
                const char *text, *error;
        } cases[] = {
                { "not json", "not a manifest: '[' or '{' expected near 'not'" },
                { "", "not a manifest: '[' or '{' expected near end of file" },
                { "{\"outputs\": [], \"outputs\": []}",
                  "not a manifest: duplicate object key near '\"outputs\"'" },
                { "{\"outputs\": {}}", "not a manifest: no \"outputs\" list" },
                { "{\"job\": 1}", "not a manifest: no \"outputs\" list" },
                { "[]", "not a manifest: no \"outputs\" list" },
        };

        (void)state;
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                struct manifest *m = NULL;
                _cleanup_free_ char *error = NULL;

                assert_int_equal(manifest_parse(cases[i].text, strlen(cases[i].text), &m, &error),
                                 -EBADMSG);
                assert_null(m);
                if (!error || strcmp(error, cases[i].error) != 0)
                        fail_msg("%s: %s, expected %s", cases[i].text, error, cases[i].error);
        }
}

/* Each entry: the name to open, or why there is none. */
static void test_entries(void **state)
{
        static const char plain[] = "lists a file that is not a plain name";
        static const char no_file[] = "lists a file without a \"file\" name";
        static const struct {
                const char *entry;
                const char *name;    /* NULL: unusable */
                const char *problem; /* when unusable */
        } cases[] = {
                { "{\"file\": \"a_s.webp\"}", "a_s.webp", NULL },
                { "{\"file\": \"x\", \"file_hex\": \"61\"}", "a", NULL }, /* the bytes win */
                { "{\"file\": \"caf?\", \"file_hex\": \"636166E9\"}", "caf\xe9", NULL },
                { "{\"file\": \"..\"}", NULL, plain },
                { "{\"file\": \".\"}", NULL, plain },
                { "{\"file\": \"\"}", NULL, plain },
                { "{\"file\": \"../x\"}", NULL, plain },
                { "{\"file\": \"a/b\"}", NULL, plain },
                { "{\"file\": 7}", NULL, plain },
                { "{}", NULL, plain },
                { "7", NULL, plain },
                { "{\"file\": \"q\", \"file_hex\": \"\"}", NULL, plain },
                { "{\"file\": \"q\", \"file_hex\": \"6\"}", NULL, plain },
                { "{\"file\": \"q\", \"file_hex\": \"zz\"}", NULL, plain },
                { "{\"file\": \"q\", \"file_hex\": \"6100\"}", NULL, plain },
                { "{\"file\": \"q\", \"file_hex\": \"2f\"}", NULL, plain },
                { "{\"file\": \"q\", \"file_hex\": \"2e2e\"}", NULL, plain },
                { "{\"file\": \"q\", \"file_hex\": 61}", "q", NULL }, /* not a string: absent */
                /* The bytes of a name but not the name for people: not imgd's manifest. */
                { "{\"file_hex\": \"61\", \"sha256\": \"" SHA_A "\"}", NULL, no_file },
                { "{\"file\": null, \"file_hex\": \"61\"}", NULL, no_file },
        };

        (void)state;
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_free_ char *text = NULL;
                _cleanup_(manifest_freep) struct manifest *m = NULL;
                const struct manifest_entry *e;

                assert_true(asprintf(&text, "{\"job\": 3, \"outputs\": [%s]}", cases[i].entry) > 0);
                m = parse_ok(text);
                assert_int_equal(m->n_entries, 1);
                e = &m->entries[0];
                if (cases[i].name) {
                        if (!e->name || strcmp(e->name, cases[i].name) != 0 || e->problem)
                                fail_msg("%s: name %s (%s), expected %s", cases[i].entry,
                                         e->name ? e->name : "NULL", e->problem ? e->problem : "",
                                         cases[i].name);
                } else {
                        if (e->name || !e->problem || strcmp(e->problem, cases[i].problem) != 0)
                                fail_msg("%s: name %s (%s), expected none (%s)", cases[i].entry,
                                         e->name ? e->name : "NULL", e->problem ? e->problem : "",
                                         cases[i].problem);
                }
        }
}

static void test_name_is_plain(void **state)
{
        (void)state;
        assert_true(manifest_name_is_plain("a.webp"));
        assert_true(manifest_name_is_plain("...")); /* a name, if an odd one */
        assert_true(manifest_name_is_plain(".hidden"));
        assert_false(manifest_name_is_plain(NULL));
        assert_false(manifest_name_is_plain(""));
        assert_false(manifest_name_is_plain("."));
        assert_false(manifest_name_is_plain(".."));
        assert_false(manifest_name_is_plain("a/b"));
        assert_false(manifest_name_is_plain("/"));
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_path),          cmocka_unit_test(test_format),
                cmocka_unit_test(test_round_trip),    cmocka_unit_test(test_minimal),
                cmocka_unit_test(test_refused),       cmocka_unit_test(test_entries),
                cmocka_unit_test(test_name_is_plain),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
