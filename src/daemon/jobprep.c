/* SPDX-License-Identifier: MIT */
/*
 * jobprep.c - the variants, paths and request of a claimed job; see jobprep.h.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/jobprep.h"
#include "shared/macro.h"
#include "shared/pathmap.h"
#include "shared/proto.h"
#include "shared/time-util.h"

enum image_format jobprep_format(const struct variant *v, enum image_format src)
{
        if (v->format != VARIANT_FORMAT_SAME)
                return v->format;
        if (image_format_writable(src))
                return src;
        return IMAGE_FORMAT_WEBP;
}

void jobprep_select(const struct pipeline *pl, enum image_format src_format,
                    enum health_level level, struct variant *variants,
                    struct jobprep_selection *ret)
{
        struct jobprep_selection sel = { 0 };
        bool any_essential = false;

        for (size_t i = 0; i < pl->n_variants; i++)
                any_essential |= pl->variants[i].essential;
        for (size_t i = 0; i < pl->n_variants && i < JOBPREP_MAX_VARIANTS; i++) {
                struct variant *v = &variants[sel.n];

                /* Degraded: at "essential", only the variants marked so (all of them when
                 * none is); at "reduced" and worse, lower quality and the fastest effort. The
                 * job is recorded as degraded and rendered again once health returns. */
                if (any_essential && !health_variant_enabled(pl->variants[i].essential, level)) {
                        sel.degraded = true;
                        continue;
                }
                *v = pl->variants[i];
                if (v->format == VARIANT_FORMAT_SAME && src_format == IMAGE_FORMAT_UNKNOWN) {
                        sel.unsupported = true;
                        break;
                }
                v->format = jobprep_format(v, src_format);
                if (level != HEALTH_FULL) {
                        /* Quality where the encoder has one; effort for webp and avif. */
                        bool lossy = v->format == IMAGE_FORMAT_JPEG ||
                                     v->format == VARIANT_FORMAT_BEST ||
                                     v->format == IMAGE_FORMAT_AVIF ||
                                     v->format == IMAGE_FORMAT_JXL ||
                                     (v->format == IMAGE_FORMAT_WEBP && !v->lossless);
                        bool effort = v->format == IMAGE_FORMAT_WEBP ||
                                      v->format == IMAGE_FORMAT_AVIF ||
                                      v->format == IMAGE_FORMAT_JXL;
                        unsigned q = lossy ? health_quality(v->quality, level) : v->quality;
                        unsigned e =
                                effort ? (unsigned)health_effort((int)v->effort, level) : v->effort;
                        sel.degraded |= q != v->quality || e != v->effort;
                        v->quality = q;
                        v->effort = e;
                        /* quality = "auto": one encode, at the first guess (or the lowered
                         * quality, when lower); format "best": its first candidate only. */
                        if (v->quality_auto && v->auto_encodes > 1) {
                                v->auto_encodes = 1;
                                sel.degraded = true;
                        }
                }
                sel.n++;
        }
        *ret = sel;
}

int jobprep_output_path(const char *output_key, const struct variant *v, char **ret)
{
        const char *ext = image_format_extension(v->format);

        /* Format "best": the worker chooses, the name gets its extension when the job is
         * published; until then the longest of the candidates', for the NAME_MAX check. */
        for (unsigned i = 0; v->format == VARIANT_FORMAT_BEST && i < v->n_candidates; i++) {
                const char *e = image_format_extension(v->candidates[i]);

                if (i == 0 || strlen(e) > strlen(ext))
                        ext = e;
        }
        return pathmap_output_path(output_key, v->name, ext, ret);
}

int jobprep_output_format(const struct variant *v, const char *reported, enum image_format *ret)
{
        enum image_format f = image_format_from_name(reported);

        if (!reported || f == v->format) {
                *ret = v->format;
                return 0;
        }
        for (unsigned i = 0; v->format == VARIANT_FORMAT_BEST && i < v->n_candidates; i++)
                if (v->candidates[i] == f) {
                        *ret = f;
                        return 0;
                }
        return -EBADMSG;
}

json_t *jobprep_request(const struct config *cfg, const struct pipeline *pl, int64_t id,
                        json_t *variants)
{
        /* What a decoder may need beside the image: three quarters of the worker's memory. */
        return json_pack("{s:s, s:I, s:I, s:I, s:I, s:O, s:b, s:b, s:i}", "type", "job", "id",
                         (json_int_t)id, "max_pixels", (json_int_t)cfg->limits.max_pixels,
                         "max_decode_bytes", (json_int_t)(cfg->limits.worker_memory / 4 * 3),
                         "max_bytes", (json_int_t)cfg->limits.max_file_bytes, "variants", variants,
                         "placeholder", (int)pl->placeholder, "allow_heif",
                         (int)cfg->limits.allow_heif, "timeout_s",
                         (int)(cfg->limits.job_timeout_usec / USEC_PER_SEC));
}

json_t *jobprep_manifest(int64_t id, const char *source_path, const char *pipeline,
                         const char *const *final_paths, const struct variant *variants, size_t n,
                         bool degraded)
{
        _cleanup_free_ char *source = proto_hex_encode(source_path);
        json_t *files = json_array(), *recipes = json_array();

        if (!source || !files || !recipes) {
                json_decref(files);
                json_decref(recipes);
                return NULL;
        }
        for (size_t i = 0; i < n; i++)
                if (json_array_append_new(recipes, json_string(variants[i].recipe)) < 0) {
                        json_decref(files);
                        json_decref(recipes);
                        return NULL;
                }
        for (size_t i = 0; i < n; i++) {
                const char *slash = strrchr(final_paths[i], '/');
                char *hex = proto_hex_encode(slash ? slash + 1 : final_paths[i]);

                if (!hex || json_array_append_new(files, json_string(hex)) < 0) {
                        free(hex);
                        json_decref(files);
                        json_decref(recipes);
                        return NULL;
                }
                free(hex);
        }
        return json_pack("{s:I, s:s, s:s, s:o, s:o, s:b}", "job", (json_int_t)id, "source", source,
                         "pipeline", pipeline, "files", files, "recipes", recipes, "degraded",
                         (int)degraded);
}

size_t jobprep_only(struct variant *variants, size_t n, const char *redo)
{
        _cleanup_(json_decrefp) json_t *names = json_loads(redo, 0, NULL);
        size_t kept = 0;

        for (size_t i = 0; i < n; i++) {
                bool wanted = false;

                for (size_t k = 0; json_is_array(names) && k < json_array_size(names); k++) {
                        const char *name = json_string_value(json_array_get(names, k));
                        wanted |= name && strcmp(name, variants[i].name) == 0;
                }
                if (wanted)
                        variants[kept++] = variants[i];
        }
        return kept;
}

int jobprep_manifest_carry(json_t *manifest, const struct job_output *outs, size_t n_outs,
                           const struct variant *variants, size_t n)
{
        _cleanup_(json_decrefp) json_t *carry = json_array();

        if (!carry)
                return -ENOMEM;
        for (size_t i = 0; i < n_outs; i++) {
                const char *slash = strrchr(outs[i].path, '/');
                _cleanup_free_ char *hex = proto_hex_encode(slash ? slash + 1 : outs[i].path);
                bool rendered = false;

                for (size_t k = 0; k < n; k++)
                        rendered |= strcmp(variants[k].name, outs[i].variant) == 0;
                if (rendered)
                        continue;
                if (!hex ||
                    json_array_append_new(
                            carry, json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:s, s:s}", "variant",
                                             outs[i].variant, "file", hex, "format", outs[i].format,
                                             "width", (json_int_t)outs[i].width, "height",
                                             (json_int_t)outs[i].height, "bytes",
                                             (json_int_t)outs[i].bytes, "sha256", outs[i].sha256,
                                             "recipe", outs[i].recipe)) < 0)
                        return -ENOMEM;
        }
        return json_object_set(manifest, "carry", carry) < 0 ? -ENOMEM : 0;
}
