/* SPDX-License-Identifier: MIT */
/*
 * pathmap.c - which upload names are ignored, and where a source's outputs go; see
 * pathmap.h. Paths are compared by whole components ("/a/bc" is not below "/a/b") and a
 * relative part with "." or ".." components is refused, so a key never leaves its output
 * root. Pure functions, no state.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "shared/macro.h"
#include "shared/pathmap.h"

static bool has_suffix(const char *s, size_t n, const char *suffix)
{
        size_t m = strlen(suffix);

        return n >= m && strcasecmp(s + n - m, suffix) == 0;
}

bool pathmap_is_ignored(const char *name)
{
        /* Partial downloads and editor/uploader leftovers. */
        static const char *const suffixes[] = { ".tmp", ".part", ".crdownload", ".swp", "~" };
        size_t n;

        if (!name || name[0] == '\0' || name[0] == '.')
                return true;
        n = strlen(name);
        for (size_t i = 0; i < ELEMENTSOF(suffixes); i++)
                if (has_suffix(name, n, suffixes[i]))
                        return true;
        return false;
}

bool pathmap_is_own_temp(const char *name)
{
        size_t n;

        if (!name || strncmp(name, ".imgd-", 6) != 0)
                return false;
        n = strlen(name);
        return n >= strlen(".imgd-.tmp") && strcmp(name + n - 4, ".tmp") == 0;
}

/* Length of path without trailing slashes ("/" and "" become 0). */
static size_t strip_trailing_slashes(const char *path)
{
        size_t n = strlen(path);

        while (n > 0 && path[n - 1] == '/')
                n--;
        return n;
}

static bool is_dot_or_dotdot(const char *c, size_t len)
{
        return (len == 1 && c[0] == '.') || (len == 2 && c[0] == '.' && c[1] == '.');
}

int pathmap_output_key(const char *watch_path, const char *output_root, const char *source,
                       char **ret)
{
        _cleanup_free_ char *key = NULL;
        size_t wl, ol, n = 0, name_len = 0;
        const char *rel, *c, *name = NULL, *dot;

        if (!watch_path || !output_root || !source || !ret)
                return -EINVAL;

        wl = strip_trailing_slashes(watch_path);
        if (strncmp(source, watch_path, wl) != 0 || source[wl] != '/')
                return -EINVAL;
        rel = source + wl;

        /* The relative part: directories, then a file name; no "." / "..", no trailing '/'. */
        if (rel[strlen(rel) - 1] == '/')
                return -EINVAL;

        ol = strip_trailing_slashes(output_root);
        key = malloc(ol + strlen(rel) + 2);
        if (!key)
                return -ENOMEM;
        memcpy(key, output_root, ol);
        n = ol;

        c = rel;
        while (*c) {
                size_t len;

                while (*c == '/')
                        c++;
                if (!*c)
                        break;
                len = strcspn(c, "/");
                if (is_dot_or_dotdot(c, len))
                        return -EINVAL;
                if (name) {
                        /* The previous component was a directory. */
                        key[n++] = '/';
                        memcpy(key + n, name, name_len);
                        n += name_len;
                }
                name = c;
                name_len = len;
                c += len;
        }
        if (!name)
                return -EINVAL;

        /* The stem: the name without its last extension; ".hidden" and "noext" stay whole. */
        dot = memrchr(name, '.', name_len);
        if (dot && dot != name)
                name_len = (size_t)(dot - name);
        key[n++] = '/';
        memcpy(key + n, name, name_len);
        n += name_len;
        key[n] = '\0';

        *ret = TAKE_PTR(key);
        return 0;
}

int pathmap_output_path(const char *key, const char *variant, const char *ext, char **ret)
{
        char *s;

        if (!key || !variant || !ext || !ret)
                return -EINVAL;
        if (asprintf(&s, "%s_%s.%s", key, variant, ext) < 0)
                return -ENOMEM;
        *ret = s;
        return 0;
}

int pathmap_replace_extension(const char *path, const char *ext, char **ret)
{
        const char *slash = strrchr(path, '/'), *dot = strrchr(path, '.');
        size_t stem = dot && (!slash || dot > slash) ? (size_t)(dot - path) : strlen(path);
        char *s;

        if (asprintf(&s, "%.*s.%s", (int)stem, path, ext) < 0)
                return -ENOMEM;
        *ret = s;
        return 0;
}

bool pathmap_name_too_long(const char *path)
{
        const char *name = strrchr(path, '/');

        return strlen(name ? name + 1 : path) > NAME_MAX;
}
