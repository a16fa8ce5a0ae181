/* SPDX-License-Identifier: MIT */
/*
 * manifest.c - the manifest format, written by imgd and read by imgctl verify; see
 * manifest.h. The writer builds the document with jansson and dumps it with sorted keys; the
 * reader parses it back into entries whose file names are safe to open in the manifest's
 * directory. Neither touches the file system.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shared/macro.h"
#include "shared/manifest.h"
#include "shared/proto.h"

int manifest_path(const char *output_key, char **ret)
{
        return asprintf(ret, "%s" MANIFEST_SUFFIX, output_key) < 0 ? -ENOMEM : 0;
}

/* ---- the writer ------------------------------------------------------------------------- */

/*
 * A name that is not UTF-8 goes into the manifest twice: lossily under its usual key (by the
 * caller), for people, and as the hex of its bytes under `key`, for programs that open the
 * file. UTF-8 names only once. Returns 0 or -ENOMEM.
 */
static int add_raw_name(json_t *o, const char *key, const char *name)
{
        _cleanup_free_ char *hex = NULL;

        if (proto_utf8_valid(name))
                return 0;
        hex = proto_hex_encode(name);
        if (!hex)
                return -ENOMEM;
        return json_object_set_new(o, key, json_string(hex)) < 0 ? -ENOMEM : 0;
}

json_t *manifest_extra(const json_t *outputs, const struct variant *variants,
                       const json_t *placeholder, bool degraded)
{
        json_t *info = json_object(), *by_name = NULL;

        if (!info)
                return NULL;
        if (placeholder && json_object_set(info, "placeholder", (json_t *)placeholder) < 0)
                goto fail;
        for (size_t i = 0; i < json_array_size(outputs); i++) {
                json_t *o = json_array_get(outputs, i), *q = json_object_get(o, "quality"),
                       *w = json_object_get(o, "warning"), *d = json_object_get(o, "dssim");

                if (!q && !w && !d)
                        continue;
                if (!by_name) {
                        by_name = json_object();
                        if (!by_name || json_object_set_new(info, "variants", by_name) < 0)
                                goto fail;
                }
                if (json_object_set_new(by_name, variants[i].name,
                                        json_pack("{s:O?, s:O?}", "quality", q, "warning", w)) < 0)
                        goto fail;
                /* quality = "auto": the score of the output, and the target it was held to. */
                if (d && json_object_update_new(json_object_get(by_name, variants[i].name),
                                                json_pack("{s:O, s:f}", "dssim", d, "target",
                                                          variants[i].target)) < 0)
                        goto fail;
        }
        if (degraded && json_object_set_new(info, "degraded", json_true()) < 0)
                goto fail;
        return info;
fail:
        json_decref(info);
        return NULL;
}

int manifest_format(const struct manifest_source *src, const struct manifest_output *outs, size_t n,
                    const json_t *extra, char **ret_text, size_t *ret_len)
{
        _cleanup_(json_decrefp) json_t *m = NULL, *list = json_array();
        _cleanup_free_ char *dump = NULL;
        char *text;
        size_t len;
        int r;

        if (!list)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                json_t *o = json_pack("{s:s, s:o, s:s, s:I, s:I, s:I, s:s}", "variant",
                                      outs[i].variant, "file", proto_string_lossy(outs[i].file),
                                      "format", outs[i].format, "width", (json_int_t)outs[i].width,
                                      "height", (json_int_t)outs[i].height, "bytes",
                                      (json_int_t)outs[i].bytes, "sha256", outs[i].sha256);

                if (!o || json_array_append_new(list, o) < 0)
                        return -ENOMEM;
                if (outs[i].recipe && outs[i].recipe[0] &&
                    json_object_set_new(o, "recipe", json_string(outs[i].recipe)) < 0)
                        return -ENOMEM;
                r = add_raw_name(o, "file_hex", outs[i].file);
                if (r < 0)
                        return r;
        }
        m = json_pack("{s:i, s:I, s:o, s:s, s:s, s:b, s:O}", "version", MANIFEST_VERSION, "job",
                      (json_int_t)src->job, "source", proto_string_lossy(src->path),
                      "source_sha256", src->sha256, "pipeline", src->pipeline, "degraded", 0,
                      "outputs", list);
        if (!m)
                return -ENOMEM;
        r = add_raw_name(m, "source_hex", src->path);
        if (r < 0)
                return r;
        if (extra && json_object_update(m, (json_t *)extra) < 0)
                return -ENOMEM;
        dump = json_dumps(m, JSON_INDENT(2) | JSON_SORT_KEYS);
        if (!dump)
                return -ENOMEM;
        len = strlen(dump);
        text = malloc(len + 2);
        if (!text)
                return -ENOMEM;
        memcpy(text, dump, len);
        text[len++] = '\n';
        text[len] = '\0';
        *ret_text = text;
        *ret_len = len;
        return 0;
}

/* ---- the reader ------------------------------------------------------------------------- */

bool manifest_name_is_plain(const char *name)
{
        return name && *name && !strchr(name, '/') && strcmp(name, ".") != 0 &&
               strcmp(name, "..") != 0;
}

static const char *get_str(const json_t *o, const char *key, const char *fallback)
{
        const char *s = json_string_value(json_object_get(o, key));

        return s ? s : fallback;
}

/*
 * The name of an entry's file as bytes: "file_hex" decoded when present, else "file".
 * Returns 0 with *ret (NULL when there is neither; owned by the caller), -EBADMSG for hex
 * that is not of non-NUL bytes, or -ENOMEM.
 */
static int entry_name(const json_t *o, char **ret)
{
        const char *hex = get_str(o, "file_hex", NULL), *file = get_str(o, "file", NULL);

        if (!hex) {
                *ret = file ? strdup(file) : NULL;
                return file && !*ret ? -ENOMEM : 0;
        }
        if (hex[0] == '\0')
                return -EBADMSG;
        return proto_hex_decode(hex, ret);
}

int manifest_parse(const char *text, size_t n, struct manifest **ret, char **ret_error)
{
        struct manifest *m;
        const json_t *outs, *o;
        json_error_t jerr;
        json_t *doc;
        size_t i;
        int r;

        doc = json_loadb(text, n, JSON_REJECT_DUPLICATES, &jerr);
        outs = json_object_get(doc, "outputs");
        if (!doc || !json_is_array(outs)) {
                r = asprintf(ret_error, "not a manifest: %s",
                             doc ? "no \"outputs\" list" : jerr.text);
                json_decref(doc);
                if (r < 0) {
                        *ret_error = NULL;
                        return -ENOMEM;
                }
                return -EBADMSG;
        }
        m = calloc(1, sizeof *m);
        if (!m || (json_array_size(outs) > 0 &&
                   !(m->entries = calloc(json_array_size(outs), sizeof *m->entries)))) {
                json_decref(doc);
                free(m);
                return -ENOMEM;
        }
        m->json = doc;
        m->job = (int64_t)json_integer_value(json_object_get(doc, "job"));
        m->source_sha256 = get_str(doc, "source_sha256", "");
        json_array_foreach(outs, i, o)
        {
                struct manifest_entry *e = &m->entries[m->n_entries++];

                e->file = get_str(o, "file", NULL);
                e->sha256 = get_str(o, "sha256", "");
                e->bytes = (int64_t)json_integer_value(json_object_get(o, "bytes"));
                r = entry_name(o, &e->name);
                if (r == -ENOMEM) {
                        manifest_free(m);
                        return r;
                }
                if (!manifest_name_is_plain(e->name))
                        e->problem = "lists a file that is not a plain name";
                else if (!e->file)
                        /* Every entry names its file for people: one without is not imgd's. */
                        e->problem = "lists a file without a \"file\" name";
                if (e->problem) {
                        free(e->name);
                        e->name = NULL;
                }
        }
        *ret = m;
        return 0;
}

struct manifest *manifest_free(struct manifest *m)
{
        if (!m)
                return NULL;
        for (size_t i = 0; i < m->n_entries; i++)
                free(m->entries[i].name);
        free(m->entries);
        json_decref(m->json);
        free(m);
        return NULL;
}
