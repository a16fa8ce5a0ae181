/* SPDX-License-Identifier: MIT */
/*
 * config-fixture.h - helpers of the test-config-* programs: the group's temporary directory
 * (made by cfgfx_setup(), removed with its contents by cfgfx_teardown()), paths formatted into
 * new strings, files written, the line of a marker in a text, a configuration text loaded that
 * must be valid, and the watch and pipeline snippets the configurations are built from.
 */
#pragma once

#include <stdbool.h>

#include "shared/config.h"
#include "shared/macro.h"

#define WATCH "watch = ( { path = \"/srv/in\"; output = \"/srv/out\"; pipeline = \"p\"; } );\n"
#define PIPE                                                                                       \
        "pipelines = { p = ( { name = \"a\"; width = 10; height = 10; format = \"webp\"; } ); "    \
        "};\n"
/* A pipeline `p` around one variant body. */
#define PIPE_V(body) WATCH "pipelines = {\n  p = (\n    { " body " }\n  );\n};\n"

/* The group's temporary directory (/tmp/test-config-XXXXXX), set by cfgfx_setup(). */
extern char *cfgfx_tmp;

/* cmocka group setup and teardown: make cfgfx_tmp; remove it with its contents. */
int cfgfx_setup(void **state);
int cfgfx_teardown(void **state);

/* A new string formatted like printf (fails the test when out of memory); caller frees. */
_printf_(1, 2) char *cfgfx_path_join(const char *fmt, ...);

/* Writes text to path (fails the test on error). */
void cfgfx_write_text(const char *path, const char *text);

/* Writes text to <tmp>/<name> and returns the path; caller frees. */
char *cfgfx_write_conf(const char *name, const char *text);

/* Line (1-based) of the first line of text containing marker; fails if none. */
unsigned cfgfx_line_of(const char *text, const char *marker);

/* Loads text and expects success; caller frees the config. */
struct config *cfgfx_expect_ok(const char *text);
