/* SPDX-License-Identifier: MIT */
/*
 * pathmap.h - where things go: which names in an upload folder are ignored as temporary,
 * and the output paths of a source. For a source <watch>/<sub/dirs>/<stem>.<ext>, its
 * "output key" is <output>/<sub/dirs>/<stem> and variant V in format F is published at
 * <output>/<sub/dirs>/<stem>_<V>.<extension of F>. Pure functions, no state.
 */
#pragma once

#include <stdbool.h>

/*
 * True for names that are not (yet) uploads: hidden names (".*"), and "*.tmp", "*.part",
 * "*.crdownload", "*~". `name` is a file name, not a path.
 */
bool pathmap_is_ignored(const char *name);

/* True for the names of imgd's own temporary output files (".imgd-*.tmp"). */
bool pathmap_is_own_temp(const char *name);

/*
 * The output key of `source` (an absolute path under `watch_path`) for the output tree
 * `output_root`. Returns 0 and a new string in *ret, -EINVAL if source is not below
 * watch_path, -ENOMEM.
 */
int pathmap_output_key(const char *watch_path, const char *output_root, const char *source,
                       char **ret);

/* "<key>_<variant>.<ext>". Returns 0 and a new string in *ret, or -ENOMEM. */
int pathmap_output_path(const char *key, const char *variant, const char *ext, char **ret);

/*
 * path with the extension of its last component (after its last '.') replaced by ext, or
 * ext appended after a '.' when it has none: for an output whose format the worker chose
 * (format "best"). Returns 0 and a new string in *ret, or -ENOMEM.
 */
int pathmap_replace_extension(const char *path, const char *ext, char **ret);

/*
 * True when the last component of `path` is longer than NAME_MAX (255 bytes): no Linux file
 * system can hold it, so the output cannot be published under that name.
 */
bool pathmap_name_too_long(const char *path);
