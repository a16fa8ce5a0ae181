/* SPDX-License-Identifier: MIT */
/*
 * manifest.h - the manifest of a source's outputs, "<output key>.manifest.json": one
 * definition of the format for its writer (imgd's publish.c) and its reader (imgctl verify).
 *
 * A manifest is one JSON object, written with sorted keys, indented, ending in a newline:
 *
 *   {"version": 1, "job": ID, "source": PATH, "source_sha256": HEX, "pipeline": NAME,
 *    "degraded": false, "outputs": [{"variant": NAME, "file": NAME, "format": FORMAT,
 *    "width": N, "height": N, "bytes": N, "sha256": HEX, "recipe": HEX}, ...],
 *    ...extra members}
 *
 * "recipe" is the recipe the output was made with (daemon/recipe.h), absent when unknown.
 *
 * "file" is the output's name in the manifest's own directory (never a path). A name that is
 * not UTF-8 is written twice: lossily (U+FFFD for each byte that is not UTF-8) under "file",
 * for people, and as the hex of its bytes under "file_hex", for programs that open the file;
 * the same for the source under "source" and "source_hex". UTF-8 names are written once.
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shared/macro.h"
#include "shared/variant.h"

#define MANIFEST_SUFFIX ".manifest.json"
#define MANIFEST_VERSION 1
/* The largest manifest a reader accepts. */
#define MANIFEST_MAX_BYTES (1024 * 1024)

/* What the writer records of one output. All strings borrowed. */
struct manifest_output {
        const char *variant;
        const char *file; /* the output's name (bytes, any encoding); not a path */
        const char *format;
        unsigned width, height;
        uint64_t bytes;
        const char *sha256;
        const char *recipe; /* NULL or "": not recorded (made before recipes were kept) */
};

/* What the writer records of the source. All strings borrowed. */
struct manifest_source {
        int64_t job;
        const char *path; /* bytes, any encoding */
        const char *sha256;
        const char *pipeline;
};

/* "<output_key>.manifest.json" in *ret (owned by the caller). Returns 0 or -ENOMEM. */
int manifest_path(const char *output_key, char **ret);

/*
 * What a job reported beyond its files, as the manifest's extra members and the ledger's
 * `info` keep it: {"placeholder": placeholder (when not NULL), "variants": {NAME: {"quality":
 * Q or null, "warning": W or null, and with quality = "auto" "dssim": the output's DSSIM and
 * "target": its target}} for the outputs that have a quality, a score or a warning,
 * "degraded": true (when degraded)}. outputs is the worker's list of outputs (objects with
 * "quality", "dssim" and "warning" when they have one), variants[i] the variant of outputs[i].
 * NULL when out of memory.
 */
json_t *manifest_extra(const json_t *outputs, const struct variant *variants,
                       const json_t *placeholder, bool degraded);

/*
 * The text of a manifest of src and its n outputs, members of `extra` (may be NULL) added at
 * the top level (replacing the standard ones of the same name). Returns 0 with the text
 * (NUL-terminated, ending in a newline; owned by the caller) in *ret_text and its length in
 * *ret_len, or -ENOMEM (nothing allocated).
 */
int manifest_format(const struct manifest_source *src, const struct manifest_output *outs, size_t n,
                    const json_t *extra, char **ret_text, size_t *ret_len);

/* One listed output, as a reader sees it. */
struct manifest_entry {
        /* The name of the file to open: "file_hex" decoded when present, else "file". NULL
         * when the entry is unusable; then `problem` says why. Owned by the manifest. */
        char *name;
        const char *problem; /* NULL, or why the entry is unusable (a static text) */
        const char *file;    /* "file" as written (lossy for names that are not UTF-8) */
        const char *sha256;  /* "" when missing */
        int64_t bytes;       /* 0 when missing */
};

struct manifest {
        json_t *json;                   /* the whole document */
        int64_t job;                    /* 0 when missing */
        const char *source_sha256;      /* "" when missing */
        struct manifest_entry *entries; /* one per element of "outputs" */
        size_t n_entries;
};

/*
 * Parses a manifest's text (duplicate keys refused). Returns 0 with the manifest in *ret (free
 * with manifest_free()), -EBADMSG with "not a manifest: WHY" in *ret_error (owned by the
 * caller) when the text is not JSON or has no "outputs" list, or -ENOMEM. An entry whose
 * file cannot be named safely is kept with name NULL and a problem: "lists a file that is not
 * a plain name" (no name, a name that is empty, ".", "..", contains a '/', or a "file_hex"
 * that is not the hex of non-NUL bytes), "lists a file without a \"file\" name" (a
 * "file_hex" without the "file" every entry has).
 */
int manifest_parse(const char *text, size_t n, struct manifest **ret, char **ret_error);
struct manifest *manifest_free(struct manifest *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct manifest *, manifest_free);

/* Whether name names a file in its directory: not empty, ".", "..", and without '/'. */
bool manifest_name_is_plain(const char *name);
