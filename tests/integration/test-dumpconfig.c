/* SPDX-License-Identifier: MIT */
/*
 * test-dumpconfig.c - `imgd --dump-config`, run as the real build/imgd:
 *
 *  - the shipped etc/imgd.conf (its paths moved to a temporary tree) and a minimal file
 *    dump with exit 0; a value the file sets appears as set, a default as the default, in
 *    the file's units (seconds, milliseconds, MiB);
 *  - round trip: the dump, written to a file, passes `imgd --check-config` and dumps to the
 *    very same text;
 *  - every setting name src/shared/config-schema.c declares (its `.name = "..."`) is in the
 *    dump of a file that uses every kind of setting, as a value or as "# NAME: not set", so
 *    a setting the dump leaves out of the table it writes from fails here;
 *  - an invalid file fails with what --check-config prints, and its exit code.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

#define IMGD IMGD_BUILD_DIR "/imgd"

struct tree {
        char *root, *conf, *dump;
};

static void tree_setup(struct tree *t)
{
        t->root = tu_mkdtemp();
        t->conf = tu_path("%s/imgd.conf", t->root);
        t->dump = tu_path("%s/dump.conf", t->root);
}

/* Creates the folder root/sub (an empty file in it). */
static void mkfolder(const struct tree *t, const char *sub)
{
        char *keep = tu_path("%s/%s/.keep", t->root, sub);

        tu_write_file(keep, "", 0);
        free(keep);
}

static void tree_cleanup(struct tree *t)
{
        tu_rm_rf(t->root);
        free(t->root);
        free(t->conf);
        free(t->dump);
}

/* s with every `from` replaced by `to`; the caller frees. */
static char *replace(const char *s, const char *from, const char *to)
{
        size_t nf = strlen(from), nt = strlen(to), n = 0;
        char *out = malloc(strlen(s) * (nt > nf ? nt / nf + 2 : 1) + 1);

        assert_non_null(out);
        for (const char *p = s; *p;) {
                if (strncmp(p, from, nf) == 0) {
                        memcpy(out + n, to, nt);
                        n += nt;
                        p += nf;
                } else
                        out[n++] = *p++;
        }
        out[n] = '\0';
        return out;
}

/* `imgd --dump-config -c conf`: asserts exit 0 and returns the text (caller frees). */
static char *dump(const char *conf)
{
        char *out = NULL;
        int rc = tu_run(&out, IMGD, "--dump-config", "-c", conf, NULL);

        if (rc != 0)
                fail_msg("imgd --dump-config -c %s: exit %d: %s", conf, rc, out ? out : "");
        assert_non_null(out);
        return out;
}

/* The dump has the line `line` (leading spaces ignored). */
static void assert_has(const char *text, const char *line)
{
        for (const char *p = text; (p = strstr(p, line)); p++) {
                const char *bol = p;

                while (bol > text && bol[-1] == ' ')
                        bol--;
                if ((bol == text || bol[-1] == '\n') && p[strlen(line)] == '\n')
                        return;
        }
        fail_msg("the dump lacks the line '%s':\n%s", line, text);
}

/*
 * Writes `text` to t->dump, checks `imgd --check-config -c dump` accepts it and that its dump
 * is `text` again.
 */
static void assert_round_trip(struct tree *t, const char *text)
{
        char *out = NULL, *again;
        int rc;

        tu_write_file(t->dump, text, (size_t)-1);
        rc = tu_run(&out, IMGD, "--check-config", "-c", t->dump, NULL);
        if (rc != 0)
                fail_msg("imgd --check-config rejects the dump (exit %d): %s\n%s", rc,
                         out ? out : "", text);
        free(out);
        again = dump(t->dump);
        if (strcmp(again, text) != 0)
                fail_msg("the dump of the dump differs:\n--- first\n%s\n--- second\n%s", text,
                         again);
        free(again);
}

static void test_example(void **state)
{
        struct tree t;
        char *example = tu_read_file(IMGD_SOURCE_DIR "/etc/imgd.conf", NULL), *a, *b, *text;
        char *srv, *state_dir, *sock;

        (void)state;
        assert_non_null(example);
        tree_setup(&t);
        srv = tu_path("\"%s/", t.root);
        state_dir = tu_path("\"%s/state\"", t.root);
        sock = tu_path("\"%s/imgd.sock\"", t.root);
        a = replace(example, "\"/srv/", srv);
        b = replace(a, "\"/var/lib/imgd\"", state_dir);
        free(a);
        a = replace(b, "\"/run/imgd/imgd.sock\"", sock);
        free(b);
        mkfolder(&t, "uploads/avatars");
        tu_write_file(t.conf, a, (size_t)-1);

        text = dump(t.conf);
        /* Set in the file. */
        assert_has(text, "pipeline = \"avatar\";");
        assert_has(text, "recursive = true;");
        assert_has(text, "quality = 82;");
        assert_has(text, "keep = [ \"icc\", \"copyright\" ];");
        assert_has(text, "max_bytes = 20000;");
        assert_has(text, "gravity = \"attention\";");
        assert_has(text, "text = \"© Example\";");
        assert_has(text, "opacity = 0.6;");
        assert_has(text, "placeholder = true;");
        /* Commented out in the file: the defaults, in the file's units. */
        assert_has(text, "job_timeout = 120;");
        assert_has(text, "worker_memory = 1024;");
        assert_has(text, "max_file_bytes = 268435456;");
        assert_has(text, "jitter = 0.2;");
        assert_has(text, "recover_ms = 60000;");
        assert_has(text, "oldest_s = 3600;");
        assert_has(text, "hook_timeout = 30;");
        assert_has(text, "# quarantine: not set");
        assert_has(text, "# control_group: not set");
        assert_has(text, "effort = 4;");
        assert_round_trip(&t, text);

        free(text);
        free(a);
        free(srv);
        free(state_dir);
        free(sock);
        free(example);
        tree_cleanup(&t);
}

static const char minimal_conf[] =
        "state_dir = \"@/state\";\n"
        "socket = \"@/imgd.sock\";\n"
        "watch = ( { path = \"@/up\"; output = \"@/media\"; pipeline = \"p\"; } );\n"
        "pipelines = { p = ( { name = \"s\"; width = 10; height = 10; format = \"png\"; } ); };\n";

static void test_minimal(void **state)
{
        struct tree t;
        char *conf, *text, *workers;

        (void)state;
        tree_setup(&t);
        conf = replace(minimal_conf, "@", t.root);
        mkfolder(&t, "up");
        tu_write_file(t.conf, conf, (size_t)-1);

        text = dump(t.conf);
        assert_has(text, "width = 10;");
        assert_has(text, "format = \"png\";");
        /* Every default is there. */
        workers = tu_path("workers = %ld;", sysconf(_SC_NPROCESSORS_ONLN));
        assert_has(text, workers);
        assert_has(text, "background = \"#ffffff\";");
        assert_has(text, "fit = \"cover\";");
        assert_has(text, "gravity = \"centre\";");
        assert_has(text, "quality = 80;");
        assert_has(text, "mask = \"none\";");
        assert_has(text, "recursive = false;");
        assert_has(text, "placeholder = false;");
        assert_has(text, "max_attempts = 5;");
        assert_has(text, "output_failures = 3;");
        assert_has(text, "prune_after_days = 30;");
        assert_has(text, "unwatched_scan_interval = 60;");
        assert_has(text, "enabled = true;");
        assert_has(text, "drain_s = 3600;");
        assert_has(text, "allow_heif = true;");
        assert_has(text, "# watermark: not set");
        assert_round_trip(&t, text);

        free(workers);
        free(text);
        free(conf);
        tree_cleanup(&t);
}

/* Every kind of setting, set to something other than its default. */
static const char full_conf[] =
        "state_dir = \"@/state\";\n"
        "socket = \"@/imgd.sock\";\n"
        "workers = 3;\n"
        "background = \"#123\";\n"
        "control_group = \"root\";\n"
        "prune_after_days = 0;\n"
        "unwatched_scan_interval = 5;\n"
        "limits = { max_file_bytes = 5000000000L; max_pixels = 4096; job_timeout = 45;\n"
        "           worker_memory = 2048; worker_max_jobs = 0; allow_hardlinks = true;\n"
        "           allow_heif = false; };\n"
        "retry = { max_attempts = 2; base_delay_ms = 10; max_delay_ms = 20; jitter = 0; };\n"
        "breaker = { output_failures = 9; worker_failure_rate = 1; worker_min_samples = 2;\n"
        "            window_ms = 1000; cooldown_ms = 10; max_cooldown_ms = 10; };\n"
        "degradation = { enabled = false; recover_ms = 1500;\n"
        "    reduced = { queued = 1; oldest_s = 1; memory = 0.125; error_rate = 0.1; };\n"
        "    essential = { queued = 2; oldest_s = 2; memory = 0.25; error_rate = 0.2; };\n"
        "    paused = { queued = 3000000000L; oldest_s = 3; memory = 0.5; error_rate = 0.3; };\n"
        "};\n"
        "alerts = { error_rate = 0; queued = 0; oldest_s = 0; drain_s = 7; breaker = false;\n"
        "           degraded = false; };\n"
        "watch = ( { path = \"@/up\"; output = \"@/media\"; pipeline = \"p\"; recursive = true;\n"
        "            quarantine = \"@/q\"; on_done = \"/bin/true\"; on_dead = \"/bin/false\";\n"
        "            hook_timeout = 3; },\n"
        "          { path = \"@/up2\"; output = \"@/media2\"; pipeline = \"q\"; } );\n"
        "pipelines = {\n"
        "  p = { placeholder = true; variants = (\n"
        "    { name = \"a\"; fit = \"none\"; format = \"same\"; animated = true; },\n"
        "    { name = \"b\"; width = 20; height = 30; fit = \"inside\"; format = \"jpeg\";\n"
        "      quality = 90; progressive = true; chroma = \"4:4:4\"; keep = [ \"icc\" ];\n"
        "      max_bytes = 4096; max_bytes_strict = true; essential = true;\n"
        "      background = \"#abcdef\";\n"
        "      watermark = { text = \"say \\\"hi\\\" \\\\ there\"; font = \"serif 9\";\n"
        "                    color = \"#000000\"; position = \"north-west\"; margin = 0;\n"
        "                    opacity = 0.5; }; },\n"
        "    { name = \"c\"; width = 5; height = 5; format = \"webp\"; lossless = true;\n"
        "      effort = 6; mask = \"circle\"; gravity = \"entropy\";\n"
        "      watermark = { image = \"@/logo.png\"; width = 0.3; }; }\n"
        "  ); };\n"
        "  q = ( { name = \"x\"; width = 1; height = 1; format = \"avif\"; effort = 9; },\n"
        "        { name = \"y\"; width = 9; height = 9; format = \"jxl\"; quality = \"auto\";\n"
        "          target = 0.0123; auto_encodes = 3; },\n"
        "        { name = \"z\"; width = 9; height = 9; format = \"best\"; target = \"high\";\n"
        "          candidates = [ \"jxl\", \"jpeg\" ]; best_time_limit_ms = 2500; } );\n"
        "};\n";

/*
 * The setting names the configuration accepts, " a b c ": every `.name = "..."` of the tables
 * of settings in src/shared/config-schema.c.
 */
static char *config_keys(void)
{
        char *source = tu_read_file(IMGD_SOURCE_DIR "/src/shared/config-schema.c", NULL);
        char *keys = strdup(" ");
        unsigned names = 0;

        assert_non_null(source);
        assert_non_null(keys);
        for (const char *p = strstr(source, ".name = \""); p; p = strstr(p, ".name = \"")) {
                const char *q;
                char *more;

                p += strlen(".name = \"");
                q = strchr(p, '"');
                assert_non_null(q);
                more = tu_path("%s%.*s ", keys, (int)(q - p), p);
                free(keys);
                keys = more;
                p = q + 1;
                names++;
        }
        assert_true(names >= 60);
        free(source);
        return keys;
}

static void test_every_setting(void **state)
{
        struct tree t;
        char *conf, *text, *keys, *logo, *quarantine, *save = NULL;
        unsigned n = 0;

        (void)state;
        tree_setup(&t);
        conf = replace(full_conf, "@", t.root);
        mkfolder(&t, "up");
        mkfolder(&t, "up2");
        logo = tu_path("%s/logo.png", t.root);
        tu_make_image(logo, 8, 8, "png", true);
        tu_write_file(t.conf, conf, (size_t)-1);

        text = dump(t.conf);
        /* Set values, in the file's units; 64-bit ones with their L. */
        assert_has(text, "workers = 3;");
        assert_has(text, "background = \"#112233\";");
        assert_has(text, "background = \"#abcdef\";");
        assert_has(text, "control_group = \"root\";");
        assert_has(text, "prune_after_days = 0;");
        assert_has(text, "max_file_bytes = 5000000000L;");
        assert_has(text, "queued = 3000000000L;");
        assert_has(text, "job_timeout = 45;");
        assert_has(text, "worker_memory = 2048;");
        assert_has(text, "jitter = 0.0;");
        assert_has(text, "recover_ms = 1500;");
        assert_has(text, "memory = 0.125;");
        assert_has(text, "drain_s = 7;");
        quarantine = tu_path("quarantine = \"%s/q\";", t.root);
        assert_has(text, quarantine);
        assert_has(text, "on_done = \"/bin/true\";");
        assert_has(text, "hook_timeout = 3;");
        assert_has(text, "chroma = \"4:4:4\";");
        assert_has(text, "keep = [ \"icc\" ];");
        assert_has(text, "max_bytes_strict = true;");
        assert_has(text, "text = \"say \\\"hi\\\" \\\\ there\";");
        assert_has(text, "position = \"north-west\";");
        assert_has(text, "width = 0.3;");
        assert_has(text, "format = \"same\";");
        assert_has(text, "animated = true;");
        assert_has(text, "effort = 9;");
        assert_has(text, "format = \"jxl\";");
        assert_has(text, "quality = \"auto\";");
        assert_has(text, "target = 0.0123;");
        assert_has(text, "auto_encodes = 3;");
        assert_has(text, "format = \"best\";");
        assert_has(text, "target = \"high\";");
        assert_has(text, "candidates = [ \"jxl\", \"jpeg\" ];");
        assert_has(text, "best_time_limit_ms = 2500;");

        keys = config_keys();
        for (char *k = strtok_r(keys, " ", &save); k; k = strtok_r(NULL, " ", &save)) {
                char *set = tu_path("\n%s = ", k), *unset = tu_path("# %s: not set\n", k);
                bool found = strstr(text, unset) != NULL;

                for (const char *p = text; !found && (p = strstr(p, set + 1)); p++)
                        found = p == text || p[-1] == ' ' || p[-1] == '\n';
                if (!found)
                        fail_msg("the dump lacks the setting '%s' that "
                                 "src/shared/config-schema.c declares:\n%s",
                                 k, text);
                free(set);
                free(unset);
                n++;
        }
        assert_true(n >= 60);
        assert_round_trip(&t, text);

        free(keys);
        free(text);
        free(conf);
        free(logo);
        free(quarantine);
        tree_cleanup(&t);
}

static void test_invalid(void **state)
{
        static const char *const bad[] = {
                "workers = 0;\n",         /* out of range */
                "workers = ;\n",          /* syntax */
                "no_such_setting = 1;\n", /* unknown */
        };
        struct tree t;

        (void)state;
        tree_setup(&t);
        for (size_t i = 0; i < ELEMENTSOF(bad) + 2; i++) {
                char *check = NULL, *dumped = NULL, *conf;
                const char *path = t.conf;
                int rc_check, rc_dump;

                if (i < ELEMENTSOF(bad)) {
                        char *good = replace(minimal_conf, "@", t.root);

                        conf = tu_path("%s%s", good, bad[i]);
                        free(good);
                        tu_write_file(t.conf, conf, (size_t)-1);
                        free(conf);
                } else if (i == ELEMENTSOF(bad)) {
                        path = "/nonexistent/imgd.conf";
                } else {
                        /* Valid as a file, but the watched folder is missing. */
                        char *up = tu_path("%s/up", t.root);

                        conf = replace(minimal_conf, "@", t.root);
                        tu_rm_rf(up);
                        free(up);
                        tu_write_file(t.conf, conf, (size_t)-1);
                        free(conf);
                }
                rc_check = tu_run(&check, IMGD, "--check-config", "-c", path, NULL);
                rc_dump = tu_run(&dumped, IMGD, "--dump-config", "-c", path, NULL);
                assert_int_not_equal(rc_check, 0);
                assert_int_equal(rc_dump, rc_check);
                assert_non_null(check);
                assert_non_null(dumped);
                if (strcmp(check, dumped) != 0)
                        fail_msg("case %zu: --check-config says\n%s\nbut --dump-config says\n%s", i,
                                 check, dumped);
                assert_null(strstr(dumped, "state_dir ="));
                free(check);
                free(dumped);
        }
        tree_cleanup(&t);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_example),
                cmocka_unit_test(test_minimal),
                cmocka_unit_test(test_every_setting),
                cmocka_unit_test(test_invalid),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
