/* SPDX-License-Identifier: MIT */
/*
 * test-config-bad.c - config_load() refusing invalid files: every kind of bad setting (errno,
 * "FILE:LINE: " prefix naming the line at fault, and the wording of the message), too many
 * variants in a pipeline, syntax errors and files that cannot be read. Self-contained: files go
 * to the temporary directory of config-fixture.c.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "shared/config.h"
#include "shared/macro.h"

#include "config-fixture.h"

/*
 * Loads text, expects error err, and a message that starts with "FILE:LINE: " where LINE is
 * the line holding `marker` (or "FILE: " when marker is NULL) and contains each word.
 */
static void expect_error(const char *text, int err, const char *marker, const char *const *words)
{
        _cleanup_free_ char *path = cfgfx_write_conf("bad.conf", text), *prefix = NULL;
        _cleanup_free_ char *error = NULL;
        struct config *c = NULL;
        int r;

        r = config_load(path, &c, &error);
        if (r != err || !error)
                print_error("unexpected result %d (wanted %d) for:\n%s\nmessage: %s\n", r, err,
                            text, error ? error : "(none)");
        assert_int_equal(r, err);
        assert_null(c);
        assert_non_null(error);

        if (marker)
                prefix = cfgfx_path_join("%s:%u: ", path, cfgfx_line_of(text, marker));
        else
                prefix = cfgfx_path_join("%s: ", path);
        if (strncmp(error, prefix, strlen(prefix)) != 0)
                print_error("message \"%s\" does not start with \"%s\"\n", error, prefix);
        assert_true(strncmp(error, prefix, strlen(prefix)) == 0);
        for (const char *const *w = words; w && *w; w++) {
                if (!strstr(error, *w))
                        print_error("message \"%s\" lacks \"%s\"\n", error, *w);
                assert_non_null(strstr(error, *w));
        }
}

struct bad_case {
        const char *text;
        int err;
        const char *marker; /* text on the line the message must name; NULL: no line */
        const char *words[4];
};

static const struct bad_case bad_cases[] = {
        /* Unknown settings and wrong types. */
        { "wokers = 2;\n" WATCH PIPE, -EINVAL, "wokers", { "unknown setting 'wokers'" } },
        { "watch = (\n { path = \"/srv/in\"; output = \"/srv/out\"; pipeline = \"p\";\n"
          "   recursiv = true; }\n);\n" PIPE,
          -EINVAL,
          "recursiv",
          { "unknown setting 'recursiv' in watch '/srv/in'" } },
        { PIPE_V("name = \"small\"; width = 1; height = 1; format = \"png\";\n qualty = 5;"),
          -EINVAL,
          "qualty",
          { "unknown setting 'qualty' in variant 'small'", "pipeline 'p'" } },
        { "limits = {\n job_timeout = 3;\n max_bytes = 5; };\n" WATCH PIPE,
          -EINVAL,
          "max_bytes",
          { "unknown setting 'max_bytes' in limits" } },
        { "retry = {\n attempts = 3; };\n" WATCH PIPE,
          -EINVAL,
          "attempts",
          { "unknown setting 'attempts' in retry" } },
        { "workers = \"two\";\n" WATCH PIPE,
          -EINVAL,
          "workers",
          { "'workers' must be an integer" } },
        { "workers = 2.5;\n" WATCH PIPE, -EINVAL, "workers", { "'workers' must be an integer" } },
        { "workers = 0;\n" WATCH PIPE, -EINVAL, "workers", { "'workers'", "between 1 and 256" } },
        { "workers = 257;\n" WATCH PIPE, -EINVAL, "workers", { "'workers'", "257" } },
        { "state_dir = 5;\n" WATCH PIPE, -EINVAL, "state_dir", { "'state_dir' must be a string" } },
        { "background = \"white\";\n" WATCH PIPE,
          -EINVAL,
          "background",
          { "'background'", "#rrggbb", "white" } },
        { "limits = 5;\n" WATCH PIPE, -EINVAL, "limits", { "'limits' must be a group" } },
        /* The ledger group: the engine, a conninfo without a password, the node's name. */
        { "ledger = 5;\n" WATCH PIPE, -EINVAL, "ledger", { "'ledger' must be a group" } },
        { "ledger = {\n engine = \"mysql\"; };\n" WATCH PIPE,
          -EINVAL,
          "mysql",
          { "'engine'", "\"sqlite\" or \"postgresql\"", "mysql" } },
        { "ledger = {\n engine = \"postgresql\"; };\n" WATCH PIPE,
          -EINVAL,
          "ledger",
          { "needs a 'conninfo'" } },
        { "ledger = {\n conninfo = \"dbname=imgd\"; };\n" WATCH PIPE,
          -EINVAL,
          "conninfo",
          { "'conninfo' is for engine = \"postgresql\"" } },
        { "ledger = { engine = \"postgresql\";\n conninfo = \"dbname=imgd password=sesame\"; "
          "};\n" WATCH PIPE,
          -EINVAL,
          "conninfo",
          { "must not hold a password", "PGPASSFILE" } },
        { "ledger = { engine = \"postgresql\";\n conninfo = \"postgresql://imgd:sesame@db/imgd\"; "
          "};\n" WATCH PIPE,
          -EINVAL,
          "conninfo",
          { "must not hold a password" } },
        { "ledger = { engine = \"postgresql\"; conninfo = \"dbname=imgd\";\n node = \"a b\"; "
          "};\n" WATCH PIPE,
          -EINVAL,
          "node",
          { "'node' must be 1 to 63 letters" } },
        { "retry = { jitter = \"x\"; };\n" WATCH PIPE,
          -EINVAL,
          "jitter",
          { "'jitter' must be a number" } },
        { "alerts = 5;\n" WATCH PIPE, -EINVAL, "alerts", { "'alerts' must be a group" } },
        { "alerts = {\n queue = 5; };\n" WATCH PIPE,
          -EINVAL,
          "queue",
          { "unknown setting 'queue' in alerts" } },
        { "alerts = {\n error_rate = 1.5; };\n" WATCH PIPE,
          -EINVAL,
          "error_rate",
          { "alerts: 'error_rate' must be from 0 (off) to 1, not 1.5" } },
        { "alerts = {\n queued = -1; };\n" WATCH PIPE, -EINVAL, "queued", { "alerts: 'queued'" } },
        { "alerts = {\n drain_s = 1.5; };\n" WATCH PIPE,
          -EINVAL,
          "drain_s",
          { "alerts: 'drain_s' must be an integer" } },
        { "alerts = {\n breaker = 1; };\n" WATCH PIPE,
          -EINVAL,
          "breaker",
          { "alerts: 'breaker' must be true or false" } },

        /* Paths. */
        { "state_dir = \"var/lib/imgd\";\n" WATCH PIPE,
          -EINVAL,
          "state_dir",
          { "'state_dir'", "absolute" } },
        { "socket = \"imgd.sock\";\n" WATCH PIPE, -EINVAL, "socket", { "'socket'", "absolute" } },
        { "socket = \"/run/"
          "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
          "xxxxxxxxxxxxxxxxxxxxxxxxxxxx.sock\";\n" WATCH PIPE,
          -EINVAL,
          "socket",
          { "'socket'", "too long" } },

        /* Watches. */
        { PIPE, -EINVAL, NULL, { "no watch" } },
        { "watch = ();\n" PIPE, -EINVAL, "watch", { "'watch'", "at least one" } },
        { "watch = { path = \"/a\"; };\n" PIPE, -EINVAL, "watch", { "'watch' must be a list" } },
        { "watch = (\n { path = \"srv/in\"; output = \"/srv/out\"; pipeline = \"p\"; }\n);\n" PIPE,
          -EINVAL,
          "srv/in",
          { "watch 'srv/in'", "'path'", "absolute" } },
        { "watch = (\n { path = \"/srv/in\";\n output = \"/srv/../out\"; pipeline = \"p\"; "
          "}\n);\n" PIPE,
          -EINVAL,
          "output =",
          { "watch '/srv/in'", "'output' must not contain", "\"..\"" } },
        { "watch = (\n { path = \"/srv/./in\"; output = \"/srv/out\"; pipeline = \"p\"; "
          "}\n);\n" PIPE,
          -EINVAL,
          "path =",
          { "'path'", "\".\"" } },
        { "watch = (\n { path = \"/\"; output = \"/srv/out\"; pipeline = \"p\"; }\n);\n" PIPE,
          -EINVAL,
          "path =",
          { "'path' must not be the root directory" } },
        { "watch = (\n { output = \"/srv/out\"; pipeline = \"p\"; }\n);\n" PIPE,
          -EINVAL,
          "{ output",
          { "watch #1", "'path' is required" } },
        { "watch = (\n { path = \"/srv/in\"; pipeline = \"p\"; }\n);\n" PIPE,
          -EINVAL,
          "{ path",
          { "watch '/srv/in'", "'output' is required" } },
        { "watch = (\n { path = \"/srv/in\"; output = \"/srv/out\"; }\n);\n" PIPE,
          -EINVAL,
          "{ path",
          { "watch '/srv/in'", "'pipeline' is required" } },
        { "watch = (\n { path = \"/srv/in\"; output = \"/srv/out\";\n pipeline = \"nope\"; "
          "}\n);\n" PIPE,
          -EINVAL,
          "nope",
          { "watch '/srv/in'", "pipeline 'nope' is not defined" } },
        { "watch = (\n { path = \"/srv/in\"; output = \"/srv/out\"; pipeline = \"p\";\n"
          " recursive = \"yes\"; }\n);\n" PIPE,
          -EINVAL,
          "recursive",
          { "'recursive' must be true or false" } },
        { "watch = (\n { path = \"/srv/in\"; output = \"/srv/out\"; pipeline = \"p\"; },\n"
          " { path = \"/srv/in/\"; output = \"/srv/out2\"; pipeline = \"p\"; }\n);\n" PIPE,
          -EINVAL,
          "/srv/in/\"",
          { "watch '/srv/in'", "already watched" } },
        { "watch = (\n { path = \"/srv/in\";\n output = \"/srv/in/out\"; pipeline = \"p\"; "
          "}\n);\n" PIPE,
          -EINVAL,
          "output =",
          { "/srv/in/out", "inside watched path /srv/in" } },
        { "watch = (\n { path = \"/srv/in\";\n output = \"/srv/in\"; pipeline = \"p\"; "
          "}\n);\n" PIPE,
          -EINVAL,
          "output =",
          { "inside watched path /srv/in" } },
        { "watch = (\n { path = \"/srv/in\"; output = \"/srv/out\"; pipeline = \"p\"; },\n"
          " { path = \"/srv/x\";\n output = \"/srv/in/sub\"; pipeline = \"p\"; }\n);\n" PIPE,
          -EINVAL,
          "/srv/in/sub",
          { "watch '/srv/x'", "inside watched path /srv/in (line 2)" } },
        { "watch = (\n { path = \"/srv/in\"; output = \"/srv/out\"; pipeline = \"p\"; },\n"
          " { path = \"/srv/out/up\"; output = \"/srv/o2\"; pipeline = \"p\"; }\n);\n" PIPE,
          -EINVAL,
          "/srv/out/up",
          { "watch '/srv/out/up'", "inside output /srv/out of watch '/srv/in' (line 2)" } },
        { "watch = (\n { path = \"/srv/in/deep\"; output = \"/srv/out\"; pipeline = \"p\"; },\n"
          " { path = \"/srv\"; output = \"/var/o2\"; pipeline = \"p\"; }\n);\n" PIPE,
          -EINVAL,
          "/srv/out\"",
          { "watch '/srv/in/deep'", "inside watched path /srv" } },

        /* Nested watches: the inner tree would belong to both when the outer one recurses. */
        { "watch = (\n { path = \"/srv/in\"; output = \"/srv/out\"; pipeline = \"p\";\n"
          "   recursive = true; },\n"
          " { path = \"/srv/in/sub\"; output = \"/srv/out2\"; pipeline = \"p\"; }\n);\n" PIPE,
          -EINVAL,
          "/srv/in/sub",
          { "watch '/srv/in/sub': path is inside watch '/srv/in' (line 2), which is recursive" } },
        { "watch = (\n { path = \"/srv/in/sub\"; output = \"/srv/out\"; pipeline = \"p\"; },\n"
          " { path = \"/srv/in\"; output = \"/srv/out2\"; pipeline = \"p\";\n"
          "   recursive = true; }\n);\n" PIPE,
          -EINVAL,
          "/srv/in/sub",
          { "watch '/srv/in/sub'", "inside watch '/srv/in' (line 3)" } },
        /* The ledger's files inside a watched tree. */
        { "state_dir = \"/srv/in/.imgd\";\n" WATCH PIPE,
          -EINVAL,
          "state_dir",
          { "state_dir /srv/in/.imgd is inside watched path /srv/in (line 2)" } },

        /* Pipelines. */
        { WATCH, -EINVAL, NULL, { "no pipelines" } },
        { WATCH "pipelines = {\n p = ();\n};\n",
          -EINVAL,
          "p = ()",
          { "pipeline 'p'", "no variants" } },
        { WATCH "pipelines = {\n p = 5;\n};\n",
          -EINVAL,
          "p = 5",
          { "pipeline 'p'", "must be a list" } },
        { WATCH "pipelines = (\n 5 );\n", -EINVAL, "pipelines", { "'pipelines' must be a group" } },

        /* Variants. */
        { PIPE_V("width = 1; height = 1; format = \"png\";"),
          -EINVAL,
          "{ width",
          { "pipeline 'p'", "variant #1", "'name' is required" } },
        { PIPE_V("name = \"a b\"; width = 1; height = 1; format = \"png\";"),
          -EINVAL,
          "a b",
          { "'name'", "A-Z", "a b" } },
        { PIPE_V("name = \"\"; width = 1; height = 1; format = \"png\";"),
          -EINVAL,
          "name",
          { "'name'" } },
        { PIPE_V("name = \"x1234567890123456789012345678901234567890123456789012345678901234\";"
                 "width = 1; height = 1; format = \"png\";"),
          -EINVAL,
          "name",
          { "'name'", "1 to 63" } },
        { WATCH "pipelines = {\n p = (\n"
                "  { name = \"a\"; width = 1; height = 1; format = \"png\"; },\n"
                "  { name = \"b\"; width = 1; height = 1; format = \"png\"; },\n"
                "  { name = \"a\"; width = 2; height = 2; format = \"png\"; }\n );\n};\n",
          -EINVAL,
          "name = \"a\"; width = 2",
          { "pipeline 'p'", "variant 'a'", "twice" } },
        { PIPE_V("name = \"v\"; width = 1; height = 1; format = \"png\";\n fit = \"cver\";"),
          -EINVAL,
          "cver",
          { "pipeline 'p': variant 'v'", "fit must be one of cover, contain, inside, fill, none",
            "cver" } },
        { PIPE_V("name = \"v\"; height = 1; format = \"png\";"),
          -EINVAL,
          "{ name",
          { "variant 'v'", "'width' is required" } },
        { PIPE_V("name = \"v\"; width = 1; fit = \"fill\"; format = \"png\";"),
          -EINVAL,
          "{ name",
          { "variant 'v'", "'height' is required" } },
        { PIPE_V("name = \"v\"; height = 1; format = \"png\";\n width = 0;"),
          -EINVAL,
          "width",
          { "'width' must be between 1 and 16384" } },
        { PIPE_V("name = \"v\"; width = 1; format = \"png\";\n height = 16385;"),
          -EINVAL,
          "height",
          { "'height' must be between 1 and 16384", "16385" } },
        { PIPE_V("name = \"v\"; height = 1; format = \"png\";\n width = \"100\";"),
          -EINVAL,
          "width",
          { "'width' must be an integer" } },
        { PIPE_V("name = \"v\"; fit = \"none\"; format = \"png\";\n width = 100;"),
          -EINVAL,
          "width",
          { "'width' must be absent or 0", "none" } },
        { PIPE_V("name = \"v\"; width = 1; height = 1;"),
          -EINVAL,
          "{ name",
          { "variant 'v'", "'format' is required" } },
        { PIPE_V("name = \"v\"; width = 1; height = 1;\n format = \"bmp\";"),
          -EINVAL,
          "bmp",
          { "variant 'v'", "format must be one of jpeg, webp, png, avif, jxl, gif, same, best",
            "bmp" } },
        { PIPE_V("name = \"v\"; width = 1; height = 1;\n format = \"tiff\";"),
          -EINVAL,
          "tiff",
          { "variant 'v'", "format must be one of", "tiff" } },
        /* quality = "auto", its target and encodes; format = "best" and its candidates. */
        { PIPE_V("name = \"v\"; width = 1; height = 1; format = \"jpeg\";\n quality = \"top\";"),
          -EINVAL,
          "top",
          { "variant 'v'", "'quality' must be 1 to 100 or \"auto\", not \"top\"" } },
        { PIPE_V("name = \"v\"; width = 1; height = 1; format = \"png\";\n quality = \"auto\";"),
          -EINVAL,
          "auto",
          { "quality = \"auto\" needs a format encoded with a quality", "not png" } },
        { PIPE_V("name = \"v\"; width = 1; height = 1; format = \"jpeg\";\n target = 0.02;"),
          -EINVAL,
          "target",
          { "'target' needs quality = \"auto\"" } },
        { PIPE_V("name = \"v\"; width = 1; height = 1; format = \"jpeg\"; quality = \"auto\";\n"
                 " target = 2;"),
          -EINVAL,
          "target",
          { "'target' must be a DSSIM above 0 and at most 1", "\"good\"", "not 2" } },
        { PIPE_V("name = \"v\"; width = 1; height = 1; format = \"jpeg\"; quality = \"auto\";\n"
                 " target = \"great\";"),
          -EINVAL,
          "great",
          { "'target' must be a DSSIM", "\"high\"", "not \"great\"" } },
        { PIPE_V("name = \"v\"; width = 1; height = 1; format = \"webp\"; quality = \"auto\";\n"
                 " auto_encodes = 0;"),
          -EINVAL,
          "auto_encodes",
          { "'auto_encodes' must be between 1 and 16, not 0" } },
        { PIPE_V("name = \"v\"; width = 1; height = 1; format = \"webp\";\n auto_encodes = 3;"),
          -EINVAL,
          "auto_encodes",
          { "'auto_encodes' needs quality = \"auto\"" } },
        { PIPE_V("name = \"v\"; width = 1; height = 1; format = \"webp\"; quality = \"auto\";\n"
                 " lossless = true;"),
          -EINVAL,
          "lossless",
          { "'lossless' has no quality to search" } },
        { PIPE_V("name = \"v\"; width = 1; height = 1; format = \"jpeg\";\n"
                 " candidates = [ \"webp\" ];"),
          -EINVAL,
          "candidates",
          { "'candidates' needs format = \"best\"" } },
        { PIPE_V("name = \"v\"; width = 1; height = 1; format = \"best\";\n"
                 " candidates = [ \"webp\", \"png\" ];"),
          -EINVAL,
          "candidates",
          { "'candidates' entries must be formats encoded with a quality", "not \"png\"" } },
        { PIPE_V("name = \"v\"; width = 1; height = 1; format = \"best\";\n"
                 " candidates = [ \"jxl\", \"jxl\" ];"),
          -EINVAL,
          "candidates",
          { "'candidates' lists \"jxl\" twice" } },
        { PIPE_V("name = \"v\"; width = 1; height = 1; format = \"best\";\n candidates = [ ];"),
          -EINVAL,
          "candidates",
          { "'candidates' must list 1 to 4 formats, not 0" } },
        { PIPE_V("name = \"v\"; width = 1; height = 1; format = \"best\";\n quality = 80;"),
          -EINVAL,
          "quality",
          { "format = \"best\" searches the quality of each candidate" } },
        { PIPE_V("name = \"v\"; width = 1; height = 1; format = \"best\";\n"
                 " best_time_limit_ms = 0;"),
          -EINVAL,
          "best_time_limit_ms",
          { "'best_time_limit_ms' must be between 1 and 600000, not 0" } },
        { PIPE_V("name = \"v\"; width = 1; height = 1; format = \"avif\";\n"
                 " best_time_limit_ms = 10;"),
          -EINVAL,
          "best_time_limit_ms",
          { "'best_time_limit_ms' needs format = \"best\"" } },
        { PIPE_V("name = \"v\"; width = 1; height = 1; format = \"png\";\n quality = 0;"),
          -EINVAL,
          "quality",
          { "variant 'v'", "'quality' must be between 1 and 100" } },
        { PIPE_V("name = \"v\"; width = 1; height = 1; format = \"png\";\n quality = 101;"),
          -EINVAL,
          "quality",
          { "'quality'", "101" } },
        { PIPE_V("name = \"v\"; width = 1; height = 1; format = \"png\";\n mask = \"square\";"),
          -EINVAL,
          "square",
          { "mask must be one of none, circle", "square" } },
        { PIPE_V("name = \"small\"; width = 1; height = 1; format = \"jpeg\";\n"
                 " mask = \"circle\";"),
          -EINVAL,
          "circle",
          { "pipeline 'p': variant 'small': mask = \"circle\" needs a format with alpha "
            "(webp, png, avif, jxl, gif), not jpeg" } },
        { PIPE_V("name = \"v\"; width = 1; height = 1; format = \"same\";\n mask = \"circle\";"),
          -EINVAL,
          "circle",
          { "needs a format with alpha", "not same" } },
        { PIPE_V("name = \"v\"; width = 1; height = 1; format = \"png\";\n"
                 " background = \"#12345g\";"),
          -EINVAL,
          "background",
          { "variant 'v'", "'background'", "#12345g" } },

        /* Gravity: known names, and only with fit = "cover". */
        { PIPE_V("name = \"v\"; width = 1; height = 1; format = \"png\";\n gravity = \"top\";"),
          -EINVAL,
          "top",
          { "pipeline 'p': variant 'v': gravity must be one of centre, north, south, east, west, "
            "north-east, north-west, south-east, south-west, attention, entropy",
            "not \"top\"" } },
        { PIPE_V("name = \"v\"; fit = \"none\"; format = \"png\";\n gravity = \"north\";"),
          -EINVAL,
          "gravity",
          { "variant 'v'", "'gravity' needs fit = \"cover\"", "not fit = \"none\"" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; fit = \"contain\"; format = \"png\";\n"
                 " gravity = \"attention\";"),
          -EINVAL,
          "gravity",
          { "'gravity' needs fit = \"cover\"", "not fit = \"contain\"" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; fit = \"inside\"; format = \"png\";\n"
                 " gravity = \"centre\";"),
          -EINVAL,
          "gravity",
          { "'gravity' needs fit = \"cover\"", "not fit = \"inside\"" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; fit = \"fill\"; format = \"png\";\n"
                 " gravity = \"south\";"),
          -EINVAL,
          "gravity",
          { "not fit = \"fill\"" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"png\";\n gravity = 3;"),
          -EINVAL,
          "gravity",
          { "'gravity' must be a string" } },

        /* Encoder settings that the format does not have. */
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"jpeg\";\n lossless = true;"),
          -EINVAL,
          "lossless",
          { "pipeline 'p': variant 'v': 'lossless' applies to webp only, not jpeg" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"same\";\n lossless = true;"),
          -EINVAL,
          "lossless",
          { "'lossless' applies to webp only, not same" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"png\";\n"
                 " chroma = \"4:4:4\";"),
          -EINVAL,
          "chroma",
          { "variant 'v'", "'chroma' applies to jpeg, avif only, not png" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"jpeg\";\n"
                 " chroma = \"4:2:2\";"),
          -EINVAL,
          "4:2:2",
          { "chroma must be one of auto, 4:4:4, 4:2:0, not \"4:2:2\"" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"jpeg\";\n effort = 3;"),
          -EINVAL,
          "effort",
          { "'effort' applies to webp, avif, jxl only, not jpeg" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"webp\";\n effort = 7;"),
          -EINVAL,
          "effort",
          { "'effort' must be between 0 and 6 for webp, not 7" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"avif\";\n effort = 10;"),
          -EINVAL,
          "effort",
          { "'effort' must be between 0 and 9 for avif, not 10" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"webp\";\n"
                 " progressive = true;"),
          -EINVAL,
          "progressive",
          { "'progressive' applies to jpeg, png, gif only, not webp" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"jpeg\";\n progressive = 1;"),
          -EINVAL,
          "progressive",
          { "'progressive' must be true or false" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"jpeg\";\n"
                 " keep = [ \"exif\" ];"),
          -EINVAL,
          "keep",
          { "'keep' entries must be \"icc\" or \"copyright\", not \"exif\"" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"jpeg\";\n"
                 " keep = [ \"icc\", \"icc\" ];"),
          -EINVAL,
          "keep",
          { "'keep' lists \"icc\" twice" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"jpeg\";\n keep = \"icc\";"),
          -EINVAL,
          "keep",
          { "'keep' must be a list of names" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"gif\";\n"
                 " keep = [ \"copyright\" ];"),
          -EINVAL,
          "keep",
          { "'keep' applies to jpeg, webp, png, avif only, not gif" } },

        /* max_bytes: a minimum, a format encoded with a quality, strict only with it. */
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"jpeg\";\n max_bytes = 1023;"),
          -EINVAL,
          "max_bytes",
          { "pipeline 'p': variant 'v': 'max_bytes' must be at least 1024, not 1023" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"png\";\n max_bytes = 5000;"),
          -EINVAL,
          "max_bytes",
          { "'max_bytes' needs a format encoded with a quality (jpeg, webp, avif, jxl), not "
            "png" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"webp\"; lossless = true;\n"
                 " max_bytes = 5000;"),
          -EINVAL,
          "max_bytes",
          { "'max_bytes' needs a format", "not lossless webp" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"same\";\n max_bytes = 5000;"),
          -EINVAL,
          "max_bytes",
          { "'max_bytes' needs a format", "not same" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"jpeg\";\n"
                 " max_bytes_strict = true;"),
          -EINVAL,
          "max_bytes_strict",
          { "'max_bytes_strict' needs 'max_bytes'" } },

        /* animated: only where the output can hold an animation. */
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"jpeg\";\n animated = true;"),
          -EINVAL,
          "animated",
          { "pipeline 'p': variant 'v': 'animated' needs a format that can hold an animation "
            "(webp, gif) or same, not jpeg" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"png\";\n animated = true;"),
          -EINVAL,
          "animated",
          { "'animated' needs a format", "not png" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"avif\";\n animated = true;"),
          -EINVAL,
          "animated",
          { "'animated' needs a format", "not avif" } },

        /* Watermarks. */
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"png\";\n"
                 " watermark = \"logo.png\";"),
          -EINVAL,
          "watermark",
          { "variant 'v'", "'watermark' must be a group" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"png\";\n"
                 " watermark = { position = \"north\"; };"),
          -EINVAL,
          "watermark",
          { "variant 'v': watermark: 'image' or 'text' is required" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"png\";\n watermark = {\n"
                 " image = \"/a.png\";\n text = \"x\"; };"),
          -EINVAL,
          "text = ",
          { "'image' and 'text' cannot both be set" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"png\";\n watermark = {\n"
                 " image = \"logo.png\"; };"),
          -EINVAL,
          "logo.png",
          { "watermark: 'image' must be an absolute path, not \"logo.png\"" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"png\";\n watermark = {\n"
                 " image = \"/a.png\";\n opacity = 1.5; };"),
          -EINVAL,
          "opacity",
          { "pipeline 'p': variant 'v': watermark: 'opacity' must be more than 0 and at most 1, "
            "not 1.5" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"png\";\n watermark = {\n"
                 " image = \"/a.png\";\n opacity = -0.2; };"),
          -EINVAL,
          "opacity",
          { "'opacity' must be more than 0 and at most 1, not -0.2" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"png\";\n watermark = {\n"
                 " text = \"(c)\";\n opacity = 0; };"),
          -EINVAL,
          "opacity",
          { "'opacity' must be more than 0 and at most 1, not 0" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"png\";\n watermark = {\n"
                 " image = \"/a.png\";\n width = 0; };"),
          -EINVAL,
          "width = 0",
          { "watermark: 'width' must be more than 0 and at most 1 (a fraction of the output's "
            "width), not 0" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"png\";\n watermark = {\n"
                 " text = \"x\";\n width = 1.25; };"),
          -EINVAL,
          "width = 1.25",
          { "'width' must be more than 0 and at most 1", "1.25" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"png\";\n watermark = {\n"
                 " image = \"/a.png\";\n position = \"attention\"; };"),
          -EINVAL,
          "attention",
          { "watermark: position must be one of centre, north, south, east, west, north-east, "
            "north-west, south-east, south-west, not \"attention\"" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"png\";\n watermark = {\n"
                 " image = \"/a.png\";\n margin = -1; };"),
          -EINVAL,
          "margin",
          { "watermark: 'margin' must be between 0 and 4096, not -1" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"png\";\n watermark = {\n"
                 " image = \"/a.png\";\n font = \"sans 9\"; };"),
          -EINVAL,
          "font",
          { "'font' applies to text watermarks only" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"png\";\n watermark = {\n"
                 " text = \"x\";\n color = \"red\"; };"),
          -EINVAL,
          "color",
          { "watermark: 'color' must be a colour \"#rrggbb\"", "red" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"png\";\n watermark = {\n"
                 " text = \"\"; };"),
          -EINVAL,
          "text = ",
          { "watermark: 'text' must be 1 to 255 bytes long" } },
        { PIPE_V("name = \"v\"; width = 9; height = 9; format = \"png\";\n watermark = {\n"
                 " text = \"x\";\n colour = \"#fff\"; };"),
          -EINVAL,
          "colour",
          { "unknown setting 'colour' in the watermark of variant 'v'" } },

        /* Pipelines as groups. */
        { WATCH "pipelines = {\n p = { variants = ( { name = \"a\"; width = 1; height = 1; "
                "format = \"png\"; } );\n placeholder = \"yes\"; };\n};\n",
          -EINVAL,
          "placeholder",
          { "pipeline 'p': 'placeholder' must be true or false" } },
        { WATCH "pipelines = {\n p = { placeholder = true; };\n};\n",
          -EINVAL,
          "p = {",
          { "pipeline 'p': 'variants' is required" } },
        { WATCH "pipelines = {\n p = { placeholder = true;\n variants = 5; };\n};\n",
          -EINVAL,
          "variants = 5",
          { "pipeline 'p': 'variants' must be a list" } },
        { WATCH "pipelines = {\n p = { variants = ( { name = \"a\"; width = 1; height = 1; "
                "format = \"png\"; } );\n blurhash = true; };\n};\n",
          -EINVAL,
          "blurhash",
          { "unknown setting 'blurhash' in pipeline 'p'" } },
        { WATCH "pipelines = {\n p = { variants = ();\n};\n};\n",
          -EINVAL,
          "variants = ()",
          { "pipeline 'p' has no variants" } },

        /* Limits and retry. */
        { "limits = {\n max_file_bytes = 1023; };\n" WATCH PIPE,
          -EINVAL,
          "max_file_bytes",
          { "limits", "'max_file_bytes' must be at least 1024" } },
        { "limits = {\n max_pixels = 0; };\n" WATCH PIPE,
          -EINVAL,
          "max_pixels",
          { "'max_pixels' must be at least 1" } },
        { "limits = {\n max_pixels = -5L; };\n" WATCH PIPE,
          -EINVAL,
          "max_pixels",
          { "'max_pixels'" } },
        { "limits = {\n job_timeout = 0; };\n" WATCH PIPE,
          -EINVAL,
          "job_timeout",
          { "'job_timeout' must be between 1 and 86400" } },
        { "limits = {\n job_timeout = 86401; };\n" WATCH PIPE,
          -EINVAL,
          "job_timeout",
          { "'job_timeout'" } },
        { "limits = {\n job_timeout = 1.5; };\n" WATCH PIPE,
          -EINVAL,
          "job_timeout",
          { "'job_timeout' must be an integer" } },
        { "retry = {\n max_attempts = 0; };\n" WATCH PIPE,
          -EINVAL,
          "max_attempts",
          { "retry", "'max_attempts' must be between 1 and 100" } },
        { "retry = {\n max_attempts = 101; };\n" WATCH PIPE,
          -EINVAL,
          "max_attempts",
          { "'max_attempts'" } },
        { "retry = {\n base_delay_ms = 0; };\n" WATCH PIPE,
          -EINVAL,
          "base_delay_ms",
          { "'base_delay_ms'" } },
        { "retry = { base_delay_ms = 5000;\n max_delay_ms = 4000; };\n" WATCH PIPE,
          -EINVAL,
          "retry",
          { "'max_delay_ms'", "'base_delay_ms'" } },
        { "retry = { base_delay_ms = 500000; };\n" WATCH PIPE,
          -EINVAL,
          "retry",
          { "'max_delay_ms' (300000)", "'base_delay_ms' (500000)" } },
        { "retry = {\n jitter = 1.5; };\n" WATCH PIPE,
          -EINVAL,
          "jitter",
          { "'jitter' must be between 0 and 1" } },
        { "retry = {\n jitter = -0.1; };\n" WATCH PIPE, -EINVAL, "jitter", { "'jitter'" } },
        /* A quarantine folder inside another watch would feed dead files back in. */
        { "watch = (\n { path = \"/srv/in\"; output = \"/srv/out\"; pipeline = \"p\";\n"
          "   quarantine = \"/srv/in2/q\"; },\n"
          " { path = \"/srv/in2\"; output = \"/srv/out2\"; pipeline = \"p\"; }\n);\n" PIPE,
          -EINVAL,
          "quarantine",
          { "watch '/srv/in': quarantine /srv/in2/q overlaps watched path /srv/in2 (line 4)" } },
        { "watch = (\n { path = \"/srv/in\"; output = \"/srv/out\"; pipeline = \"p\";\n"
          "   quarantine = \"/srv/out2/q\"; },\n"
          " { path = \"/srv/in2\"; output = \"/srv/out2\"; pipeline = \"p\"; }\n);\n" PIPE,
          -EINVAL,
          "quarantine",
          { "watch '/srv/in': quarantine /srv/out2/q is inside output /srv/out2 of watch "
            "'/srv/in2' (line 4)" } },
};

static void test_bad(void **state)
{
        for (size_t i = 0; i < ELEMENTSOF(bad_cases); i++)
                expect_error(bad_cases[i].text, bad_cases[i].err, bad_cases[i].marker,
                             bad_cases[i].words);
}

static void test_too_many_variants(void **state)
{
        static const char *const words[] = { "pipeline 'p'", "33 variants", "at most 32", NULL };
        char text[8192];
        size_t n;

        n = (size_t)snprintf(text, sizeof text, WATCH "pipelines = {\n p = (\n");
        for (int i = 0; i < 33; i++)
                n += (size_t)snprintf(text + n, sizeof text - n,
                                      "  { name = \"v%d\"; width = 1; height = 1; format = "
                                      "\"png\"; }%s\n",
                                      i, i < 32 ? "," : "");
        snprintf(text + n, sizeof text - n, " );\n};\n");
        expect_error(text, -EINVAL, " p = (", words);

        /* 32 is fine. */
        n = (size_t)snprintf(text, sizeof text, WATCH "pipelines = {\n p = (\n");
        for (int i = 0; i < 32; i++)
                n += (size_t)snprintf(text + n, sizeof text - n,
                                      "  { name = \"v%d\"; width = 1; height = 1; format = "
                                      "\"png\"; }%s\n",
                                      i, i < 31 ? "," : "");
        snprintf(text + n, sizeof text - n, " );\n};\n");
        config_free(cfgfx_expect_ok(text));
}

static void test_syntax_error(void **state)
{
        static const char text[] = "state_dir = \"/var/lib/imgd\";\n"
                                   "socket = \"/run/imgd/imgd.sock\";\n"
                                   "workers = = 2;\n" WATCH PIPE;
        /* No final newline: libconfig reports the end of the file on the last line. */
        static const char text2[] = WATCH PIPE "limits = {\n max_pixels = 5;";
        static const char *const words[] = { "syntax error", NULL };

        expect_error(text, -EBADMSG, "workers", words);
        /* An unclosed group is noticed at the end of the file. */
        expect_error(text2, -EBADMSG, "max_pixels", words);
}

static void test_missing_file(void **state)
{
        _cleanup_free_ char *path = cfgfx_path_join("%s/does-not-exist.conf", cfgfx_tmp);
        _cleanup_free_ char *expected =
                cfgfx_path_join("%s: cannot read: No such file or directory", path);
        _cleanup_free_ char *error = NULL;
        struct config *c = NULL;

        assert_int_equal(config_load(path, &c, &error), -ENOENT);
        assert_null(c);
        assert_non_null(error);
        assert_string_equal(error, expected);

        free(error);
        error = NULL;
        assert_int_equal(config_load(cfgfx_tmp, &c, &error), -EISDIR);
        assert_non_null(strstr(error, "cannot read"));
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_bad),
                cmocka_unit_test(test_too_many_variants),
                cmocka_unit_test(test_syntax_error),
                cmocka_unit_test(test_missing_file),
        };

        return cmocka_run_group_tests(tests, cfgfx_setup, cfgfx_teardown);
}
