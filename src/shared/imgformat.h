/* SPDX-License-Identifier: MIT */
/*
 * imgformat.h - the image formats imgd knows: their names (as written in the
 * configuration and the ledger), file extensions, capabilities, and identification of a
 * file's format from its first bytes ("magic"). Pure functions, no state; shared by the
 * daemon (which resolves `format = "same"` and names outputs) and the worker (which picks
 * the loader from an allowlist by magic, never by file name).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

enum image_format {
        IMAGE_FORMAT_UNKNOWN = 0,
        IMAGE_FORMAT_JPEG,
        IMAGE_FORMAT_PNG,
        IMAGE_FORMAT_WEBP,
        IMAGE_FORMAT_GIF,
        IMAGE_FORMAT_TIFF,
        IMAGE_FORMAT_HEIF,
        IMAGE_FORMAT_AVIF,
        IMAGE_FORMAT_JXL, /* JPEG XL: written, never decoded as a source */
        _IMAGE_FORMAT_MAX,
};

/* How many leading bytes image_format_sniff() looks at, at most. */
#define IMAGE_FORMAT_SNIFF_BYTES 32

/* "jpeg", "png", "webp", "gif", "tiff", "heif", "avif", "jxl"; "unknown" for UNKNOWN. */
const char *image_format_name(enum image_format f);

/* The format named `name`, or IMAGE_FORMAT_UNKNOWN. */
enum image_format image_format_from_name(const char *name);

/* File extension without the dot: "jpg" for jpeg, "png", "webp", ... */
const char *image_format_extension(enum image_format f);

/* True where imgd can write the format as an output (jpeg, png, webp, avif, jxl). */
bool image_format_writable(enum image_format f);

/* True where the format can carry an alpha channel. */
bool image_format_has_alpha(enum image_format f);

/* Identifies the format from the first `n` bytes of a file; UNKNOWN if none matches. */
enum image_format image_format_sniff(const void *buf, size_t n);
