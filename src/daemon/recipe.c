/* SPDX-License-Identifier: MIT */
/*
 * recipe.c - recipes of variants; see recipe.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/recipe.h"
#include "shared/hash.h"
#include "shared/macro.h"

#define _cleanup_json_ _cleanup_(json_decrefp)

int recipe_of(const struct variant *v, const char *watermark_sha256, char ret[static RECIPE_SIZE])
{
        _cleanup_json_ json_t *j = variant_to_json(v);
        _cleanup_free_ char *settings = NULL, *text = NULL;
        json_t *wm = j ? json_object_get(j, "watermark") : NULL;
        char hex[HASH_HEX_SIZE];

        if (!j)
                return -ENOMEM;
        /* The image's content, not where it lies. */
        if (wm && json_object_get(wm, "image") &&
            json_object_set_new(wm, "image", json_string(watermark_sha256 ?: "")) < 0)
                return -ENOMEM;
        settings = json_dumps(j, JSON_SORT_KEYS | JSON_COMPACT | JSON_ENSURE_ASCII);
        if (!settings)
                return -ENOMEM;
        if (asprintf(&text, "imgd-recipe 1\n%d\n%s", RECIPE_RENDER_VERSION, settings) < 0)
                return -ENOMEM;
        hash_sha256_buf(text, strlen(text), hex);
        memcpy(ret, hex, RECIPE_SIZE - 1);
        ret[RECIPE_SIZE - 1] = '\0';
        return 0;
}

/* The SHA-256 of the watermark image of v (hex) into ret. */
static int watermark_hash(const struct config *c, const struct pipeline *pl,
                          const struct variant *v, char ret[static HASH_HEX_SIZE], char **ret_error)
{
        _cleanup_close_ int fd = open(v->watermark.image, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        int r = fd < 0 ? negative_errno() : hash_sha256_fd(fd, VARIANT_WATERMARK_FILE_MAX, ret);

        if (r < 0 && ret_error &&
            asprintf(ret_error, "%s: pipeline '%s': variant '%s': watermark image %s: %s", c->file,
                     pl->name, v->name, v->watermark.image,
                     r == -EFBIG ? "over the size limit" : strerror(-r)) < 0)
                *ret_error = NULL;
        return r;
}

int recipe_config(struct config *c, char **ret_error)
{
        for (size_t i = 0; i < c->n_pipelines; i++) {
                struct pipeline *pl = &c->pipelines[i];

                for (size_t j = 0; j < pl->n_variants; j++) {
                        struct variant *v = &pl->variants[j];
                        char wm[HASH_HEX_SIZE] = "";
                        int r;

                        if (v->watermark.kind == VARIANT_WATERMARK_IMAGE) {
                                r = watermark_hash(c, pl, v, wm, ret_error);
                                if (r < 0)
                                        return r;
                        }
                        r = recipe_of(v, wm, v->recipe);
                        if (r < 0) {
                                if (ret_error)
                                        *ret_error = strdup("out of memory");
                                return r;
                        }
                }
        }
        return 0;
}
