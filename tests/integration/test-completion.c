/* SPDX-License-Identifier: MIT */
/*
 * test-completion.c - the shell completions in completion/ against the programs:
 *
 *  - zsh loads completion/_imgctl and completion/_imgd (autoload +X) without a message;
 *  - in a real interactive zsh (tests/tools/zsh-complete.zsh drives one through zsh/zpty,
 *    with compinit and completion/ in $fpath), Tab after "imgctl " offers exactly the
 *    commands of imgctl's command table (the Commands section of `imgctl --help`), after
 *    "imgctl COMMAND --" every long option of the command's synopsis, after "imgctl -" the
 *    global options, after "imgd -" every option of `imgd --help`; and nothing else is
 *    printed (no error of the completion functions);
 *  - the bash completion (completion/imgctl.bash) offers every command of the table too, so
 *    that neither completion can drift from the command table.
 *
 * zsh (Debian package zsh) must be installed; scripts/deps.sh --tests installs it. A
 * missing zsh fails the test rather than skipping it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

#define COMPLETION_DIR IMGD_SOURCE_DIR "/completion"
#define ZSH_COMPLETE IMGD_SOURCE_DIR "/tests/tools/zsh-complete.zsh"

/* compinit's dump file, shared by the tests of this run: compinit without one takes seconds. */
static char *tmpdir, *zsh_dump;

/* " a b c ": set of words; set_has() looks one up. */
static char *set_add(char *set, const char *word, size_t n)
{
        char *w = tu_path(" %.*s ", (int)n, word), *more;

        if (strstr(set, w)) {
                free(w);
                return set;
        }
        more = tu_path("%s%s", set, w + 1);
        free(w);
        free(set);
        return more;
}

static bool set_has(const char *set, const char *word)
{
        char *w = tu_path(" %s ", word);
        bool found = strstr(set, w) != NULL;

        free(w);
        return found;
}

static unsigned set_size(const char *set)
{
        unsigned n = 0;

        for (const char *p = set; *p; p++)
                n += p[0] == ' ' && p[1] != '\0';
        return n;
}

/* The long options ("--json") in text, as a set. */
static char *long_options(const char *text)
{
        char *out = strdup(" ");

        assert_non_null(out);
        for (const char *p = strstr(text, "--"); p; p = strstr(p + 2, "--")) {
                size_t n = 2;

                if (p > text && !strchr(" [,|", p[-1]))
                        continue;
                while (p[n] == '-' || (p[n] >= 'a' && p[n] <= 'z'))
                        n++;
                if (n > 2)
                        out = set_add(out, p, n);
        }
        return out;
}

/*
 * What zsh offers at the end of `line`, as a set of words. Fails the test when the
 * completion printed anything but matches (an error message).
 */
static char *zsh_complete(const char *line)
{
        char *zsh = tu_find_program("zsh", "zsh"), *out = NULL, *set = strdup(" "), *save = NULL;
        int rc = tu_run(&out, zsh, "-f", ZSH_COMPLETE, COMPLETION_DIR, line, zsh_dump, NULL);

        if (rc != 0)
                fail_msg("zsh-complete '%s' failed (exit %d): %s", line, rc, out ? out : "");
        assert_non_null(set);
        for (char *l = strtok_r(out, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
                if (strncmp(l, "MATCH:", 6) != 0)
                        fail_msg("completing '%s' printed: %s", line, l);
                set = set_add(set, l + 6, strlen(l + 6));
        }
        free(out);
        free(zsh);
        return set;
}

/* What the bash completion offers for the words (the last one completed), as a set. */
static char *bash_complete(const char *word1, const char *word2)
{
        static const char script[] =
                "source \"$1\" || exit 90\n"
                "COMP_WORDS=(imgctl \"$2\" \"$3\")\n"
                "COMP_CWORD=$(( $# - 1 ))\n"
                "[[ -z $3 ]] && COMP_WORDS=(imgctl \"$2\") && COMP_CWORD=1\n"
                "COMPREPLY=()\n"
                "_imgctl imgctl \"${COMP_WORDS[COMP_CWORD]}\" \"${COMP_WORDS[COMP_CWORD-1]}\" "
                "|| exit 93\n"
                "printf '%s\\n' \"${COMPREPLY[@]}\"\n";
        char *bash = tu_find_program("bash", "bash"), *out = NULL, *set = strdup(" "), *save = NULL;
        int rc = tu_run(&out, bash, "--norc", "--noprofile", "-c", script, "complete",
                        COMPLETION_DIR "/imgctl.bash", word1, word2 ? word2 : "", NULL);

        if (rc != 0)
                fail_msg("bash completion failed (exit %d): %s", rc, out ? out : "");
        assert_non_null(set);
        for (char *l = strtok_r(out, "\n", &save); l; l = strtok_r(NULL, "\n", &save))
                set = set_add(set, l, strlen(l));
        free(out);
        free(bash);
        return set;
}

/*
 * The Commands section of `imgctl --help`: one synopsis line per entry of the command table
 * ("  jobs [--state STATE] ..."). Returns the lines, "\n"-separated (caller frees).
 */
static char *imgctl_synopses(void)
{
        char *help = NULL, *out = strdup(""), *save = NULL;
        bool in_commands = false;

        assert_int_equal(tu_run(&help, IMGD_BUILD_DIR "/imgctl", "--help", NULL), 0);
        assert_non_null(out);
        for (char *l = strtok_r(help, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
                char *more;

                if (strcmp(l, "Commands:") == 0) {
                        in_commands = true;
                        continue;
                }
                if (!in_commands)
                        continue;
                if (l[0] != ' ')
                        break; /* "Options:" */
                if (strncmp(l, "  ", 2) != 0 || l[2] == ' ')
                        continue; /* a help text line */
                more = tu_path("%s%s\n", out, l + 2);
                free(out);
                out = more;
        }
        free(help);
        return out;
}

static void test_zsh_loads(void **state)
{
        char *zsh = tu_find_program("zsh", "zsh"), *out = NULL;
        int rc;

        (void)state;
        rc = tu_run(&out, zsh, "-fc",
                    "fpath=(\"$1\" $fpath); autoload -U compinit && compinit -u -d \"$2\" && "
                    "autoload +X _imgctl _imgd && (( $+functions[_imgctl] && "
                    "$+functions[_imgd] )) && [[ $_comps[imgctl] == _imgctl && "
                    "$_comps[imgd] == _imgd ]]",
                    "zsh", COMPLETION_DIR, zsh_dump, NULL);
        if (rc != 0 || (out && *out))
                fail_msg("zsh does not load the completions cleanly (exit %d): %s", rc,
                         out ? out : "");
        free(out);
        free(zsh);
}

static void test_imgctl_commands(void **state)
{
        char *synopses = imgctl_synopses(), *save = NULL;
        char *zsh_commands = zsh_complete("imgctl ");
        char *bash_commands = bash_complete("", NULL);
        char *table = strdup(" ");

        (void)state;
        assert_non_null(table);
        for (char *l = strtok_r(synopses, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
                size_t n = strcspn(l, " ");
                char *name = strndup(l, n), *line, *opts, *offered, *save2 = NULL;

                assert_non_null(name);
                table = set_add(table, name, n);
                if (!set_has(zsh_commands, name))
                        fail_msg("the zsh completion does not offer the command %s:%s", name,
                                 zsh_commands);
                if (!set_has(bash_commands, name))
                        fail_msg("the bash completion does not offer the command %s:%s", name,
                                 bash_commands);

                /* Its options, after "imgctl NAME --". */
                opts = long_options(l);
                line = tu_path("imgctl %s --", name);
                offered = zsh_complete(line);
                for (char *o = strtok_r(opts, " ", &save2); o; o = strtok_r(NULL, " ", &save2))
                        if (!set_has(offered, o))
                                fail_msg("the zsh completion of '%s' lacks %s:%s", line, o,
                                         offered);
                free(offered);
                free(line);
                free(opts);
                free(name);
        }
        assert_true(set_size(table) >= 10);
        /* And nothing that is not a command. */
        if (set_size(zsh_commands) != set_size(table))
                fail_msg("the zsh completion offers%s\nbut the commands are%s", zsh_commands,
                         table);
        free(table);
        free(bash_commands);
        free(zsh_commands);
        free(synopses);
}

/* Every long option of `prog --help`'s Options section is offered after "prog -". */
static void assert_options_offered(const char *prog, const char *path)
{
        char *help = NULL, *opts, *offered, *line = tu_path("%s -", prog), *save = NULL, *end;
        unsigned n = 0;

        assert_int_equal(tu_run(&help, path, "--help", NULL), 0);
        assert_non_null(strstr(help, "Options:"));
        end = strstr(strstr(help, "Options:"), "\n\n"); /* the section ends at a blank line */
        if (end)
                *end = '\0';
        opts = long_options(strstr(help, "Options:"));
        offered = zsh_complete(line);
        for (char *o = strtok_r(opts, " ", &save); o; o = strtok_r(NULL, " ", &save), n++)
                if (!set_has(offered, o))
                        fail_msg("the zsh completion of '%s' lacks %s:%s", line, o, offered);
        assert_true(n >= 4);
        free(offered);
        free(opts);
        free(line);
        free(help);
}

static void test_global_options(void **state)
{
        char *states;

        (void)state;
        assert_options_offered("imgctl", IMGD_BUILD_DIR "/imgctl");
        assert_options_offered("imgd", IMGD_BUILD_DIR "/imgd");

        /* A value: the job states after --state=. */
        states = zsh_complete("imgctl jobs --state=");
        assert_true(set_has(states, "dead"));
        assert_true(set_has(states, "queued"));
        free(states);
}

static int setup(void **state)
{
        (void)state;
        tmpdir = tu_mkdtemp();
        zsh_dump = tu_path("%s/zcompdump", tmpdir);
        return 0;
}

static int teardown(void **state)
{
        (void)state;
        tu_rm_rf(tmpdir);
        free(tmpdir);
        free(zsh_dump);
        return 0;
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_zsh_loads),
                cmocka_unit_test(test_imgctl_commands),
                cmocka_unit_test(test_global_options),
        };

        return cmocka_run_group_tests(tests, setup, teardown);
}
