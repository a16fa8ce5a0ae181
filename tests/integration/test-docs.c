/* SPDX-License-Identifier: MIT */
/*
 * test-docs.c - the man pages (man/imgd.8, man/imgctl.1, man/imgd.conf.5) and the bash
 * completion (completion/imgctl.bash):
 *
 *  - each page formats without a single groff warning (groff -ww -man -z) and has the
 *    sections a man page of its kind has;
 *  - the pages and the completion keep up with the programs: every command and option that
 *    `imgctl --help` lists, and every option of `imgd --help`, is in the page, and the
 *    completion offers the command and its options. Adding an imgctl command therefore
 *    means documenting it and completing it;
 *  - the completion, sourced into a plain bash (no bash-completion package needed), finds
 *    its function with `complete -p imgctl` and answers a few real inputs;
 *  - imgd.conf(5) keeps up with src/shared/config-schema.c: every setting name the configuration
 *    accepts (the `.name = "..."` of its tables, which config_check_keys() holds every group
 *    to) is the tag of a .TP paragraph in the page, and no tag that looks like a setting
 *    (a lower-case word with an underscore) names one that the tables do not declare.
 *
 * groff (Debian package groff-base) must be installed; scripts/deps.sh --tests installs it.
 * A missing groff fails the test rather than skipping it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

#define MAN_DIR IMGD_SOURCE_DIR "/man"
#define CONFIG_SOURCE IMGD_SOURCE_DIR "/src/shared/config-schema.c"
#define COMPLETION IMGD_SOURCE_DIR "/completion/imgctl.bash"

static char *read_page(const char *name)
{
        char *path = tu_path("%s/%s", MAN_DIR, name);
        char *text = tu_read_file(path, NULL);

        if (!text)
                fail_msg("cannot read %s", path);
        free(path);
        return text;
}

/* The page has a line ".SH <section>" (quoted or not). */
static void assert_section(const char *page, const char *text, const char *section)
{
        char *plain = tu_path("\n.SH %s\n", section);
        char *quoted = tu_path("\n.SH \"%s\"\n", section);

        if (!strstr(text, plain) && !strstr(text, quoted))
                fail_msg("%s has no section %s", page, section);
        free(plain);
        free(quoted);
}

/* ---- groff ------------------------------------------------------------------------------ */

static void check_page(const char *page, const char *const *sections)
{
        char *groff = tu_find_program("groff", "groff-base");
        char *path = tu_path("%s/%s", MAN_DIR, page);
        char *text = read_page(page);
        char *out = NULL;
        int rc;

        rc = tu_run(&out, groff, "-ww", "-man", "-z", path, NULL);
        if (rc != 0 || (out && *out))
                fail_msg("groff -ww -man -z %s: exit %d:\n%s", path, rc, out ? out : "");
        for (size_t i = 0; sections[i]; i++)
                assert_section(page, text, sections[i]);
        free(out);
        free(text);
        free(path);
        free(groff);
}

static void test_imgd_8(void **state)
{
        static const char *const sections[] = { "NAME",     "SYNOPSIS",    "DESCRIPTION", "OPTIONS",
                                                "SIGNALS",  "EXIT STATUS", "ENVIRONMENT", "FILES",
                                                "EXAMPLES", "SEE ALSO",    NULL };
        (void)state;
        check_page("imgd.8", sections);
}

static void test_imgctl_1(void **state)
{
        static const char *const sections[] = { "NAME",        "SYNOPSIS", "DESCRIPTION",
                                                "COMMANDS",    "OPTIONS",  "EXIT STATUS",
                                                "ENVIRONMENT", "FILES",    "EXAMPLES",
                                                "SEE ALSO",    NULL };
        (void)state;
        check_page("imgctl.1", sections);
}

static void test_imgd_conf_5(void **state)
{
        static const char *const sections[] = { "NAME",     "SYNOPSIS", "DESCRIPTION", "FILES",
                                                "EXAMPLES", "SEE ALSO", NULL };
        (void)state;
        check_page("imgd.conf.5", sections);
}

/* ---- the completion --------------------------------------------------------------------- */

/*
 * Sources the completion into bash, finds the function `complete -p imgctl` names, calls it
 * as bash would for the command line words[] (the last word being the one completed; "="
 * stands alone, as bash splits "--state=d") and returns COMPREPLY sorted, one per line.
 */
static const char completion_script[] =
        "source \"$1\" || exit 90\n"
        "shift\n"
        "spec=$(complete -p imgctl) || exit 91\n"
        "[[ $spec == *' -F '* ]] || exit 92\n"
        "fn=${spec#* -F }; fn=${fn%% *}\n"
        "COMP_WORDS=(\"$@\")\n"
        "COMP_CWORD=$(($# - 1))\n"
        "COMP_LINE=\"$*\"\n"
        "COMP_POINT=${#COMP_LINE}\n"
        "COMPREPLY=()\n"
        "\"$fn\" imgctl \"${COMP_WORDS[COMP_CWORD]}\" \"${COMP_WORDS[COMP_CWORD-1]}\" || exit 93\n"
        "((${#COMPREPLY[@]})) && printf '%s\\n' \"${COMPREPLY[@]}\" | LC_ALL=C sort\n"
        "exit 0\n";

#define complete(...) complete_words((const char *[]){ "imgctl", __VA_ARGS__, NULL })

static char *complete_words(const char **words)
{
        /* NULL-padded, so that passing every slot hands tu_run() its terminating NULL. */
        const char *a[16] = { NULL };
        char *bash = tu_find_program("bash", "bash");
        char *out = NULL;
        size_t n = 0;
        int rc;

        a[n++] = "--norc";
        a[n++] = "--noprofile";
        a[n++] = "-c";
        a[n++] = completion_script;
        a[n++] = "complete"; /* $0 */
        a[n++] = COMPLETION; /* $1 */
        for (size_t i = 0; words[i]; i++) {
                assert_true(n < ELEMENTSOF(a) - 1);
                a[n++] = words[i];
        }
        rc = tu_run(&out, bash, a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10],
                    a[11], a[12], a[13], a[14], a[15], NULL);
        if (rc != 0)
                fail_msg("completing failed (exit %d): %s", rc, out ? out : "");
        free(bash);
        return out ? out : strdup("");
}

static void assert_completes(char *got, const char *want)
{
        if (strcmp(got, want) != 0)
                fail_msg("completion: expected\n%s\ngot\n%s", want, got);
        free(got);
}

static void test_completion(void **state)
{
        char *dir = tu_mkdtemp();
        char *conf = tu_path("%s/imgd.conf", dir);
        char *sock = tu_path("%s/imgd.sock", dir);
        char *sub = tu_path("%s/sub/x", dir);
        char *prefix = tu_path("%s/imgd.c", dir);
        char *dirprefix = tu_path("%s/s", dir);
        char *slash = tu_path("%s/", dir);
        char *want = NULL;

        (void)state;
        tu_write_file(conf, "", 0);
        tu_write_file(sock, "", 0);
        tu_write_file(sub, "", 0);

        assert_completes(complete("st"), "status\n");
        assert_completes(complete(""), "cancel\ndrain\nenqueue\nevents\nhelp\njobs\nmetrics\n"
                                       "pause\nplan\nreconcile\nreload\nresume\nretry\nshow\n"
                                       "status\ntop\nverify\nwait\n");
        assert_completes(complete("re"), "reconcile\nreload\nresume\nretry\n");
        assert_completes(complete("reconcile", ""), "pause\nresume\nretract-removed\n");
        assert_completes(complete("--v"), "--version\n");
        assert_completes(complete("-"),
                         "--config\n--connect-timeout\n--help\n--socket\n--version\n-c\n-h\n-s\n");
        assert_completes(complete("--connect-timeout", "5", "st"), "status\n");
        assert_completes(complete("jobs", "--state", "d"), "dead\ndone\n");
        assert_completes(complete("jobs", "--state", ""),
                         "cancelled\ndead\ndone\nqueued\nretry\nrunning\n");
        assert_completes(complete("jobs", "--state", "=", "r"), "retry\nrunning\n");
        assert_completes(complete("jobs", "--st"), "--state\n");
        assert_completes(complete("jobs", "--state", "dead", "--l"), "--limit\n");
        assert_completes(complete("jobs", "--since", ""), "");
        assert_completes(complete("-s", "/run/imgd/imgd.sock", "jobs", "--state", "c"),
                         "cancelled\n");
        assert_completes(complete("--config", "=", "/etc/imgd/imgd.conf", "st"), "status\n");
        assert_completes(complete("status", "--j"), "--json\n");
        assert_completes(complete("show", "--"), "--help\n--json\n");
        assert_completes(complete("show", ""), "");
        assert_completes(complete("wait", "--t"), "--timeout\n");
        assert_completes(complete("drain", "--"), "--help\n--json\n--timeout\n");
        assert_completes(complete("retry", "--d"), "--dead\n");
        assert_completes(complete("retry", ""), "");
        assert_completes(complete("events", "--f"), "--follow\n");
        assert_completes(complete("top", "--iterations", ""), "");
        assert_completes(complete("verify", "--a"), "--all\n");
        assert_completes(complete("help", "s"), "show\nstatus\n");
        assert_completes(complete("help", "status", ""), "");

        /* -c, -s and enqueue complete file names, --watch directories. */
        want = tu_path("%s\n", conf);
        assert_completes(complete("-c", prefix), want);
        assert_completes(complete("enqueue", prefix), want);
        free(want);
        want = tu_path("%s\n%s\n%s/sub\n", conf, sock, dir);
        assert_completes(complete("-s", slash), want);
        free(want);
        want = tu_path("%s/sub\n", dir);
        assert_completes(complete("jobs", "--watch", dirprefix), want);
        free(want);

        tu_rm_rf(dir);
        free(slash);
        free(dirprefix);
        free(prefix);
        free(sub);
        free(sock);
        free(conf);
        free(dir);
}

/* ---- in step with the programs ---------------------------------------------------------- */

/* The "--option" words of text, each once, space-separated with a space at both ends. */
static char *long_options(const char *text)
{
        char *out = strdup(" ");

        assert_non_null(out);
        for (const char *p = strstr(text, "--"); p; p = strstr(p + 2, "--")) {
                size_t n = 2;
                char *word, *with;

                if (p > text && !strchr(" [,|", p[-1]))
                        continue;
                while (p[n] == '-' || (p[n] >= 'a' && p[n] <= 'z'))
                        n++;
                if (n == 2)
                        continue;
                word = tu_path(" %.*s ", (int)n, p);
                if (!strstr(out, word)) {
                        with = tu_path("%s%s", out, word + 1);
                        free(out);
                        out = with;
                }
                free(word);
        }
        return out;
}

/* The page mentions the option, as roff writes it: "--state" is "\-\-state". */
static void assert_page_has_option(const char *page, const char *text, const char *opt)
{
        char *roff = malloc(2 * strlen(opt) + 1), *q = roff;

        assert_non_null(roff);
        for (const char *p = opt; *p; p++) {
                if (*p == '-')
                        *q++ = '\\';
                *q++ = *p;
        }
        *q = '\0';
        if (!strstr(text, roff))
                fail_msg("%s does not document %s", page, opt);
        free(roff);
}

/* text (lines ending in \n) has the line `line`. */
static bool has_line(const char *text, const char *line)
{
        size_t n = strlen(line);

        for (const char *p = text; (p = strstr(p, line)); p++)
                if ((p == text || p[-1] == '\n') && p[n] == '\n')
                        return true;
        return false;
}

static void test_imgctl_in_step(void **state)
{
        char *help = NULL, *page = read_page("imgctl.1"), *save = NULL, *commands;
        bool in_commands = false;
        unsigned n = 0;

        (void)state;
        assert_int_equal(tu_run(&help, IMGD_BUILD_DIR "/imgctl", "--help", NULL), 0);
        commands = strdup(help);
        assert_non_null(commands);
        for (char *l = strtok_r(commands, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
                char name[64], *opts, *got, *save2 = NULL, *tags[3];

                if (strcmp(l, "Commands:") == 0) {
                        in_commands = true;
                        continue;
                }
                if (!in_commands)
                        continue;
                if (l[0] != ' ' && l[0] != '\0')
                        break; /* "Options:" */
                if (strncmp(l, "  ", 2) != 0 || l[2] == ' ' ||
                    sscanf(l + 2, "%63[a-z-]", name) != 1)
                        continue;
                n++;

                /* The page has the command as a .TP tag (one of the three forms it uses). */
                tags[0] = tu_path("\n.BR %s ", name);
                tags[1] = tu_path("\n.BI %s ", name);
                tags[2] = tu_path("\n\\fB%s\\fP", name);
                if (!strstr(page, tags[0]) && !strstr(page, tags[1]) && !strstr(page, tags[2]))
                        fail_msg("imgctl.1 does not document the command %s", name);
                for (size_t i = 0; i < ELEMENTSOF(tags); i++)
                        free(tags[i]);
                /* The completion offers it. */
                got = complete_words((const char *[]){ "imgctl", name, NULL });
                if (!has_line(got, name))
                        fail_msg("the completion does not offer the command %s: %s", name, got);
                free(got);

                /* Its options: in the page, and offered after "imgctl NAME --". */
                opts = long_options(l);
                got = complete_words((const char *[]){ "imgctl", name, "--", NULL });
                for (char *o = strtok_r(opts, " ", &save2); o; o = strtok_r(NULL, " ", &save2)) {
                        assert_page_has_option("imgctl.1", page, o);
                        if (!has_line(got, o))
                                fail_msg("the completion of 'imgctl %s --' lacks %s: %s", name, o,
                                         got);
                }
                free(got);
                free(opts);
        }
        assert_true(n >= 4);

        /* The global options (and those the examples use). */
        {
                char *opts = long_options(strstr(help, "Options:")), *save3 = NULL;

                for (char *o = strtok_r(opts, " ", &save3); o; o = strtok_r(NULL, " ", &save3))
                        assert_page_has_option("imgctl.1", page, o);
                free(opts);
        }
        free(commands);
        free(help);
        free(page);
}

static void test_imgd_in_step(void **state)
{
        char *help = NULL, *page = read_page("imgd.8"), *opts, *save = NULL;

        (void)state;
        assert_int_equal(tu_run(&help, IMGD_BUILD_DIR "/imgd", "--help", NULL), 0);
        opts = long_options(strstr(help, "Options:"));
        for (char *o = strtok_r(opts, " ", &save); o; o = strtok_r(NULL, " ", &save))
                assert_page_has_option("imgd.8", page, o);
        free(opts);
        free(help);
        free(page);
}

/* ---- imgd.conf(5) in step with src/shared/config-schema.c
 * ----------------------------------------------- */

/* Appends " word " to the set (a space-separated string with a space at both ends) once. */
static char *set_add(char *set, const char *word, size_t n)
{
        char *w = tu_path(" %.*s ", (int)n, word), *with;

        if (!strstr(set, w)) {
                with = tu_path("%s%s", set, w + 1);
                free(set);
                set = with;
        }
        free(w);
        return set;
}

static bool set_has(const char *set, const char *word)
{
        char *w = tu_path(" %s ", word);
        bool found = strstr(set, w) != NULL;

        free(w);
        return found;
}

/*
 * The setting names the configuration accepts: every `.name = "..."` of the tables of settings
 * in src/shared/config-schema.c. *ret_tables: how many tables (`config_setting ...[] = {`).
 */
static char *config_keys(unsigned *ret_tables)
{
        char *source = tu_read_file(CONFIG_SOURCE, NULL), *keys = strdup(" ");
        unsigned tables = 0;

        if (!source)
                fail_msg("cannot read %s", CONFIG_SOURCE);
        assert_non_null(keys);
        for (const char *p = strstr(source, "config_setting "); p;
             p = strstr(p + 1, "config_setting "))
                if (strncmp(p + strcspn(p, "[;("), "[] = {", 6) == 0)
                        tables++;
        for (const char *p = strstr(source, ".name = \""); p; p = strstr(p, ".name = \"")) {
                const char *q;

                p += strlen(".name = \"");
                q = strchr(p, '"');
                assert_non_null(q);
                keys = set_add(keys, p, (size_t)(q - p));
                p = q + 1;
        }
        free(source);
        *ret_tables = tables;
        return keys;
}

/*
 * The words of the page's .TP tags (the line after each .TP), font escapes and macros
 * removed: ".BR width \", \" height" gives "width" and "height".
 */
static char *tag_words(const char *page)
{
        char *words = strdup(" ");

        assert_non_null(words);
        for (const char *p = strstr(page, "\n.TP\n"); p; p = strstr(p, "\n.TP\n")) {
                const char *tag = p + 5, *eol = strchr(tag, '\n');

                if (!eol)
                        break;
                if (*tag == '.') /* the macro: .B, .BR, .BI, ... */
                        tag += strcspn(tag, " \n");
                for (const char *c = tag; c < eol;) {
                        size_t n;

                        if (c[0] == '\\' && c[1] == 'f' && c + 2 < eol) {
                                c += 3; /* \fB, \fI, \fR, \fP */
                                continue;
                        }
                        n = strspn(c, "abcdefghijklmnopqrstuvwxyz0123456789_");
                        if (n > (size_t)(eol - c))
                                n = (size_t)(eol - c);
                        if (n == 0) {
                                c++;
                                continue;
                        }
                        words = set_add(words, c, n);
                        c += n;
                }
                p = eol - 1;
        }
        return words;
}

static void test_imgd_conf_in_step(void **state)
{
        char *page = read_page("imgd.conf.5"), *keys, *tags, *save = NULL, *list;
        unsigned tables = 0, n = 0;

        (void)state;
        keys = config_keys(&tables);
        /* The extraction still works: the groups and a few settings it must find. */
        if (tables < 10)
                fail_msg("found only %u tables of settings in %s", tables, CONFIG_SOURCE);
        assert_true(set_has(keys, "state_dir"));
        assert_true(set_has(keys, "max_bytes_strict"));
        assert_true(set_has(keys, "worker_failure_rate"));
        assert_true(set_has(keys, "hook_timeout"));
        assert_true(set_has(keys, "placeholder"));
        assert_true(set_has(keys, "opacity"));

        tags = tag_words(page);
        list = strdup(keys);
        assert_non_null(list);
        for (char *k = strtok_r(list, " ", &save); k; k = strtok_r(NULL, " ", &save)) {
                n++;
                if (!set_has(tags, k))
                        fail_msg("imgd.conf.5 does not document the setting '%s' that %s "
                                 "accepts (as a .TP tag)",
                                 k, CONFIG_SOURCE);
        }
        assert_true(n >= 60);
        free(list);

        /* Nothing invented: a tag like a setting name is one the configuration accepts. */
        list = strdup(tags);
        assert_non_null(list);
        for (char *t = strtok_r(list, " ", &save); t; t = strtok_r(NULL, " ", &save))
                if (strchr(t, '_') && !set_has(keys, t))
                        fail_msg("imgd.conf.5 documents a setting '%s' that %s does not accept", t,
                                 CONFIG_SOURCE);
        free(list);
        free(tags);
        free(keys);
        free(page);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_imgd_8),
                cmocka_unit_test(test_imgctl_1),
                cmocka_unit_test(test_imgd_conf_5),
                cmocka_unit_test(test_completion),
                cmocka_unit_test(test_imgctl_in_step),
                cmocka_unit_test(test_imgd_in_step),
                cmocka_unit_test(test_imgd_conf_in_step),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
