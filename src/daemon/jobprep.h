/* SPDX-License-Identifier: MIT */
/*
 * jobprep.h - what preparing a claimed job computes, as pure functions: the variants it
 * renders (the pipeline's, with their output formats resolved against the source's, and at a
 * degraded health level only the essential ones, at lower quality and the fastest effort),
 * each output's final path, and the request a worker gets. The scheduler does the rest
 * (opening the source, creating the temporary files, dispatching).
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon/ledger.h"
#include "shared/config.h"
#include "shared/health.h"
#include "shared/imgformat.h"
#include "shared/variant.h"

/* A job renders at most this many variants (the descriptors handed to a worker). */
#define JOBPREP_MAX_VARIANTS 32

/* The output format of variant v for a source in format src: the variant's own, else the
 * source's when it can be written, else WebP. */
enum image_format jobprep_format(const struct variant *v, enum image_format src);

struct jobprep_selection {
        size_t n;         /* variants written */
        bool degraded;    /* some left out, or rendered below their quality or effort */
        bool unsupported; /* stopped at a variant that keeps the source's format, which is
                           * unknown: the job fails (after the n before it) */
};

/*
 * The variants a job of pipeline pl renders for a source in src_format at health level
 * `level`, in pipeline order, formats resolved, at most JOBPREP_MAX_VARIANTS of the
 * pipeline's: at "essential" and worse only the variants marked essential (all of them when
 * none is); at "reduced" and worse the quality of lossy formats and the effort of webp, avif
 * and jxl lowered (health_quality(), health_effort()), and quality = "auto" capped at one
 * encode (auto_encodes 1: no search; format "best" tries its first candidate only). Writes them to
 * `variants` (room for pl->n_variants) and what was chosen to *ret.
 */
void jobprep_select(const struct pipeline *pl, enum image_format src_format,
                    enum health_level level, struct variant *variants,
                    struct jobprep_selection *ret);

/*
 * Keeps of variants[0..n) those named in `redo` (a reconciliation job's JSON list of variant
 * names), in their order; returns how many. A malformed list keeps none.
 */
size_t jobprep_only(struct variant *variants, size_t n, const char *redo);

/*
 * Adds to a request's "manifest" member the outputs a reconciliation job carries over
 * (outs[0..n_outs) but those of the variants it renders, variants[0..n)): "carry": [{"variant",
 * "file" (hex of the name), "format", "width", "height", "bytes", "sha256", "recipe"}], so
 * that the worker's manifest lists the source's every output. 0 or -ENOMEM.
 */
int jobprep_manifest_carry(json_t *manifest, const struct job_output *outs, size_t n_outs,
                           const struct variant *variants, size_t n);

/* The final path of variant v (format resolved) of the outputs `output_key`: 0 and *ret
 * (caller frees), or -ENOMEM. The name may still be too long (pathmap_name_too_long()). For
 * format "best", with the longest extension of its candidates: the name is given the chosen
 * format's extension when the job is published (pathmap_replace_extension()). */
int jobprep_output_path(const char *output_key, const struct variant *v, char **ret);

/*
 * The format of variant v's output as the worker reported it (`reported`, a format's name;
 * NULL: not reported, v's own): v's own format, or for format "best" one of its candidates.
 * Returns 0 and *ret, or -EBADMSG for any other.
 */
int jobprep_output_format(const struct variant *v, const char *reported, enum image_format *ret);

/* The worker's request for job `id` of pipeline pl with `variants` (variant_to_json()s, a
 * reference taken): limits from cfg. NULL when out of memory. */
json_t *jobprep_request(const struct config *cfg, const struct pipeline *pl, int64_t id,
                        json_t *variants);

/*
 * The request's "manifest" member, which has the worker write the job's manifest (to the
 * descriptor after the outputs', and fsync it) beside its outputs: {"job": id, "source": hex of
 * source_path, "pipeline": pipeline, "files": [hex of the name of each final path], "recipes":
 * [the recipe of each of `variants`, "" when unknown], "degraded": degraded}; names are hex
 * (proto_hex_encode()) as they need not be UTF-8. NULL when out of memory.
 */
json_t *jobprep_manifest(int64_t id, const char *source_path, const char *pipeline,
                         const char *const *final_paths, const struct variant *variants, size_t n,
                         bool degraded);
