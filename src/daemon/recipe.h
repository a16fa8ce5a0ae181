/* SPDX-License-Identifier: MIT */
/*
 * recipe.h - the recipe of a variant (issue 17): one identity for everything that decides
 * the bytes of an output other than its source. Two outputs of the same source made with the
 * same recipe are the same; an output recorded with another recipe than its variant's current
 * one is stale, and one recorded with none was made before recipes were kept.
 *
 * The recipe is the first 64 bits, in hex, of the SHA-256 of
 *
 *   "imgd-recipe 1\n" RECIPE_RENDER_VERSION "\n" <variant_to_json(v), keys sorted, compact,
 *   the watermark's "image" path replaced by the SHA-256 of the file>
 *
 * that is: imgd's render version, the variant's settings as a worker receives them (name,
 * size, fit, format, quality, effort and every other member variant_to_json() writes; not
 * `essential`, which only chooses when it is rendered), and the content of its watermark
 * image (not its path: a logo moved elsewhere makes the same outputs). A degraded render records
 * its variant's configured recipe; the job's degraded mark says it is to be rendered again.
 */
#pragma once

#include "shared/config.h"
#include "shared/variant.h"

/*
 * Bumped by a change of imgd's render code that changes the bytes of outputs made with the
 * same settings (a new resize kernel, another encoder default): every output becomes stale.
 */
#define RECIPE_RENDER_VERSION 1

/* Hex digits of a recipe, with the NUL. */
#define RECIPE_SIZE VARIANT_RECIPE_SIZE

/*
 * The recipe of v, whose watermark image (if any) has the SHA-256 `watermark_sha256` (hex;
 * NULL or "" for none), into ret. Returns 0 or -ENOMEM.
 */
int recipe_of(const struct variant *v, const char *watermark_sha256, char ret[static RECIPE_SIZE]);

/*
 * Sets the recipe (v->recipe) of every variant of every pipeline of c, reading each
 * watermark image once. Returns 0, or a negative errno with a message naming the
 * configuration, the variant and the file in *ret_error (owned by the caller).
 */
int recipe_config(struct config *c, char **ret_error);
