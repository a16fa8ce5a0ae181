/* SPDX-License-Identifier: MIT */
/*
 * main.c - imgctl, the command-line client of imgd's control socket: status, jobs, show, wait,
 * retry, cancel, pause, resume, drain, enqueue, reload, metrics, events, top, verify. This
 * file is the verb table (each verb's options, operands, synopsis and help text), --help, and
 * the dispatch: the global options, the socket (client.c), the verb's options (options.c),
 * then the verb's function (query.c, operate.c, events.c, top.c, verify.c). The help texts
 * are kept in step with man/imgctl.1 (test-docs).
 *
 * Exit status: 0 success; 1 the command failed (imgd answered with an error, wait timed
 * out, status found an alert active, verify found a problem); 2 usage error; 3 imgd could not be
 * reached (or its configuration could not be read, or its answer was not understood); 4 the
 * command needs the operator role and the user has the read-only one (read_group).
 */
#include <errno.h>
#include <langinfo.h>
#include <locale.h>
#include <stdio.h>
#include <string.h>

#include "shared/config.h"
#include "shared/time-util.h"
#include "imgctl/imgctl.h"

/* ---- help texts ------------------------------------------------------------------------- */

static const char help_status[] =
        "    Show the daemon's state, version, process id and uptime, its configuration\n"
        "    file, whether intake is paused, the circuit breaker (and why it is open),\n"
        "    the health score and degradation level (and what drives it), the backlog\n"
        "    with the rate at which jobs finish and the predicted time to drain it, the\n"
        "    recent error rate, the active alerts, the watched folders with their output\n"
        "    folder and pipeline, the workers (how many, how many busy) and the number of\n"
        "    jobs in each state.\n"
        "\n"
        "    On a node of a cluster (a PostgreSQL ledger several imgd nodes share) the\n"
        "    job counts are the cluster's, next to the jobs running on this node, and a\n"
        "    table shows every node: alive or lapsed (its last heartbeat older than the\n"
        "    lease, by the database's clock), the age of its last heartbeat, its\n"
        "    workers, the jobs running under its lease, its version and pid.\n"
        "\n"
        "    An alert is active while a condition of the configuration's alerts group\n"
        "    holds (imgd.conf(5)): the error rate, the number of waiting jobs or the age\n"
        "    of the oldest one over its threshold, a backlog predicted to take too long\n"
        "    to drain or not draining at all, the circuit breaker not closed, or a\n"
        "    degradation level below full; uploads waiting for their intake to be\n"
        "    retried (intake_failing), folders not watched for the inotify watch limit\n"
        "    (unwatched_folders), a job ledger its file system refuses to write\n"
        "    (ledger_failing), a PostgreSQL ledger that cannot be reached\n"
        "    (ledger_unreachable: \"ledger unreachable: ...\", the breaker held open\n"
        "    for it). Each is printed on an ALERT line, and the\n"
        "    exit status is 1 while any is active, so that 'imgctl status' can serve as\n"
        "    a monitoring check (0 healthy, 1 alert, 3 imgd unreachable).\n"
        "\n"
        "    --json    print the daemon's answer as indented JSON instead (the exit\n"
        "              status is the same)\n";

static const char help_jobs[] =
        "    List jobs, most recently updated first, as a table: ID, STATE, ATTEMPTS,\n"
        "    UPDATED (local time), SOURCE and the last ERROR (shortened).\n"
        "\n"
        "    --state STATE  only jobs in STATE: queued, running, retry, done, dead or\n"
        "                   cancelled\n"
        "    --watch DIR    only jobs from the watched folder DIR\n"
        "    --since WHEN   only jobs updated since WHEN: a time ago such as 30s, 10m,\n"
        "                   2h, 1d, 1w or 1h30m, or a local date and time such as\n"
        "                   2026-11-23, 2026-11-23T10:00 or 2026-11-23T10:00:05\n"
        "                   (append Z for UTC)\n"
        "    --limit N      at most N jobs, 1 to 10000 (default 50); an answer is\n"
        "                   limited to 64 KiB, so a long list may be cut short, which\n"
        "                   imgctl then says\n"
        "    --json         print the daemon's answer as indented JSON instead\n";

static const char help_show[] =
        "    Show job JOB (its numeric ID, as listed by jobs): source, watch, pipeline,\n"
        "    output key, content SHA-256, state, attempts, times, and last error; the\n"
        "    placeholder (BlurHash, dominant colour, data: URI) where its pipeline has\n"
        "    placeholder = true; then the outputs it published (variant, format, size,\n"
        "    bytes, quality, the DSSIM of quality = \"auto\", path) and the error of\n"
        "    every failed attempt.\n"
        "\n"
        "    --json    print the daemon's answer as indented JSON instead\n";

static const char help_wait[] =
        "    Wait until no job is queued, running or waiting for a retry, asking the\n"
        "    daemon every 100 ms. Uploads already complete in a watched folder count\n"
        "    even before they become jobs; files still being written do not, nor do\n"
        "    jobs held because their watch is no longer configured.\n"
        "\n"
        "    --timeout SECONDS  give up after SECONDS (may have a fraction): print what\n"
        "                       is left to stderr and exit with status 1. Without it,\n"
        "                       wait as long as it takes.\n";

static const char help_retry[] =
        "    Put dead job JOB (or one held because its watch is no longer configured)\n"
        "    back in the queue, or with --dead every dead job. Its attempts start again\n"
        "    from 0; the errors of earlier attempts stay in its history (see show).\n"
        "    A cancelled job is refused: enqueue its file instead.\n"
        "\n"
        "    --dead    retry every dead job and print how many\n"
        "    --json    print the daemon's answer as indented JSON instead\n";

static const char help_cancel[] =
        "    Cancel job JOB, which must be queued, waiting for a retry or dead; a running\n"
        "    job cannot be cancelled (it publishes nothing until it is done). Its file\n"
        "    is not ignored: an event on it, enqueue or the next start's scan makes a\n"
        "    new job while it stays in the upload folder.\n"
        "\n"
        "    --json    print the daemon's answer as indented JSON instead\n";

static const char help_pause[] =
        "    Stop starting new jobs. Running jobs finish; new uploads are still recorded\n"
        "    and wait in the queue until resume.\n"
        "\n"
        "    --json    print the daemon's answer as indented JSON instead\n";

static const char help_resume[] =
        "    Start jobs again after pause or drain.\n"
        "\n"
        "    --json    print the daemon's answer as indented JSON instead\n";

static const char help_drain[] =
        "    Pause, then wait until no job is running, asking the daemon every 100 ms:\n"
        "    afterwards nothing is being rendered or published (for maintenance of the\n"
        "    output tree, or before stopping). Intake stays paused until resume.\n"
        "\n"
        "    --timeout SECONDS  give up after SECONDS: say how many jobs still run and\n"
        "                       exit with status 1 (intake stays paused)\n"
        "    --json             print {\"paused\": true, \"running\": 0} when drained\n";

static const char help_enqueue[] =
        "    Make a job of the file PATH now (relative to the current directory or\n"
        "    absolute), whether or not imgd noticed it: for files that arrived without\n"
        "    a close or rename imgd could see (a file written as an O_TMPFILE elsewhere\n"
        "    and linked in with linkat(), some network file systems).\n"
        "    PATH must be below a watched folder, as it really is (symlinks resolved),\n"
        "    and must not have a hidden or temporary name. A file whose content imgd\n"
        "    already has a job for is not processed again: its job is shown (a\n"
        "    cancelled job does not count).\n"
        "\n"
        "    --json    print the daemon's answer as indented JSON instead\n";

static const char help_reload[] =
        "    Have imgd load its configuration file again, as SIGHUP does, and wait for\n"
        "    the outcome: exit status 0 when the new configuration is in force, 1 with\n"
        "    the reason when imgd rejected it (the running configuration then stays in\n"
        "    force). The unit's ExecReload= runs it, so that 'systemctl reload imgd'\n"
        "    fails, with the reason, when the new configuration is rejected.\n"
        "\n"
        "    --json    print the daemon's answer as indented JSON instead\n";

static const char help_metrics[] =
        "    Print the daemon's metrics in the Prometheus text format: jobs by state,\n"
        "    jobs processed and failed, processing time histograms by pipeline, worker\n"
        "    restarts, queue age, workers, memory. For node_exporter's textfile\n"
        "    collector, write it to a temporary file and rename it (see README.md):\n"
        "      imgctl metrics > DIR/imgd.prom.$$ && mv DIR/imgd.prom.$$ DIR/imgd.prom\n"
        "\n"
        "    --json    print {\"text\": ...} instead\n";

static const char help_events[] =
        "    Print job transitions as they happen, one line each: queued, done (with\n"
        "    the number of outputs), retry and dead (with the error), cancelled.\n"
        "    Without --follow, stop once no job is queued, running or waiting for a\n"
        "    retry (checked every 500 ms); at once when there is nothing to wait for.\n"
        "    imgd serves at most 16 subscribers at a time; beyond that, events fails\n"
        "    with 'too many event subscribers'.\n"
        "\n"
        "    --follow  go on until interrupted\n"
        "    --json    print each event as the daemon sends it, one JSON object a line:\n"
        "              {\"v\":1,\"event\":\"done\",\"at_us\":...,\"job\":{\"id\":...,\n"
        "              \"source\":...,\"outputs\":[...]}}\n";

static const char help_top[] =
        "    A live view, refreshed every second: the daemon's state, whether intake is\n"
        "    paused, a progress bar of the backlog (jobs finished since top started\n"
        "    against those still queued, running or waiting for a retry), throughput\n"
        "    over the last 10 seconds, and what each worker is doing. Press q or\n"
        "    Ctrl-C to quit. When standard output is not a terminal, prints one summary\n"
        "    line a second instead.\n"
        "\n"
        "    --iterations N  stop after N refreshes\n";

static const char help_verify[] =
        "    Check the published outputs against their manifests and the ledger: every\n"
        "    file a manifest (*.manifest.json) lists must exist with the size and\n"
        "    SHA-256 it lists (else it is missing or altered), the ledger's record of the\n"
        "    manifest's job must agree (else a mismatch), and every other file in the\n"
        "    tree is orphaned (imgd's own temporary files aside). Checks the output\n"
        "    folders of all watches, or the folder or manifest PATH. Exit status 1 when\n"
        "    anything is wrong.\n"
        "\n"
        "    --all     every watch's output folder (the default)\n"
        "    --json    print a report object: ok, counts, and the lists of problems\n";

static const char help_plan[] =
        "    Show how the outputs stand against the configuration now, per watch and\n"
        "    variant: current, missing (a variant added), stale (made with an earlier\n"
        "    recipe: other settings, watermark or imgd) and removed (a variant no longer\n"
        "    configured; its files are kept). Counted by imgd's reconciliation pass over\n"
        "    the ledger at start and at each reload, which also queues the missing and\n"
        "    stale variants to be rendered; changes nothing itself.\n"
        "\n"
        "    --json    print the daemon's answer as indented JSON instead\n";

static const char help_reconcile[] =
        "    pause: stop queueing reconciliation jobs (passes still count for plan);\n"
        "    those queued already still run. resume: queue them again, from a new pass.\n"
        "    retract-removed: a new pass also removes the outputs of variants no longer\n"
        "    configured (which imgd otherwise keeps), each source's manifest written again\n"
        "    without them; a source that also has variants to render is done after them.\n"
        "    Only files imgd recorded, with the content it recorded, are removed.\n"
        "\n"
        "    --json    print the daemon's answer (the plan) as indented JSON instead\n";

static const char help_help[] = "    Show this text, or the text of one COMMAND.\n";

/* ---- the verb table --------------------------------------------------------------------- */

#define OPTIONS(...) ((const enum imgctl_option[]){ __VA_ARGS__, OPTION_END })

/* The options before the verb. */
static const struct verb global_options = {
        .options = OPTIONS(OPTION_CONFIG, OPTION_SOCKET, OPTION_CONNECT_TIMEOUT, OPTION_HELP,
                           OPTION_VERSION),
};

static const struct verb verbs[] = {
        { "status", query_status, OPTIONS(OPTION_JSON, OPTION_HELP), OPERANDS_NONE,
          "status [--json]", help_status },
        { "jobs", query_jobs,
          OPTIONS(OPTION_STATE, OPTION_WATCH, OPTION_SINCE, OPTION_LIMIT, OPTION_JSON, OPTION_HELP),
          OPERANDS_NONE, "jobs [--state STATE] [--watch DIR] [--since WHEN] [--limit N] [--json]",
          help_jobs },
        { "show", query_show, OPTIONS(OPTION_JSON, OPTION_HELP), OPERANDS_JOB, "show JOB [--json]",
          help_show },
        { "wait", query_wait, OPTIONS(OPTION_TIMEOUT, OPTION_HELP), OPERANDS_NONE,
          "wait [--timeout SECONDS]", help_wait },
        { "retry", operate_retry, OPTIONS(OPTION_DEAD, OPTION_JSON, OPTION_HELP),
          OPERANDS_JOB_OR_DEAD, "retry JOB|--dead [--json]", help_retry },
        { "cancel", operate_cancel, OPTIONS(OPTION_JSON, OPTION_HELP), OPERANDS_JOB,
          "cancel JOB [--json]", help_cancel },
        { "pause", operate_intake, OPTIONS(OPTION_JSON, OPTION_HELP), OPERANDS_NONE,
          "pause [--json]", help_pause },
        { "resume", operate_intake, OPTIONS(OPTION_JSON, OPTION_HELP), OPERANDS_NONE,
          "resume [--json]", help_resume },
        { "drain", operate_drain, OPTIONS(OPTION_TIMEOUT, OPTION_JSON, OPTION_HELP), OPERANDS_NONE,
          "drain [--timeout SECONDS] [--json]", help_drain },
        { "enqueue", operate_enqueue, OPTIONS(OPTION_JSON, OPTION_HELP), OPERANDS_FILE,
          "enqueue PATH [--json]", help_enqueue },
        { "reload", operate_reload, OPTIONS(OPTION_JSON, OPTION_HELP), OPERANDS_NONE,
          "reload [--json]", help_reload },
        { "metrics", query_metrics, OPTIONS(OPTION_JSON, OPTION_HELP), OPERANDS_NONE,
          "metrics [--json]", help_metrics },
        { "events", events_run, OPTIONS(OPTION_FOLLOW, OPTION_JSON, OPTION_HELP), OPERANDS_NONE,
          "events [--follow] [--json]", help_events },
        { "top", top_run, OPTIONS(OPTION_ITERATIONS, OPTION_HELP), OPERANDS_NONE,
          "top [--iterations N]", help_top },
        { "plan", query_plan, OPTIONS(OPTION_JSON, OPTION_HELP), OPERANDS_NONE, "plan [--json]",
          help_plan },
        { "reconcile", operate_reconcile, OPTIONS(OPTION_JSON, OPTION_HELP), OPERANDS_WORD,
          "reconcile pause|resume|retract-removed [--json]", help_reconcile },
        { "verify", verify_run, OPTIONS(OPTION_ALL, OPTION_JSON, OPTION_HELP), OPERANDS_PATH_OR_ALL,
          "verify [PATH|--all] [--json]", help_verify },
        { "help", NULL, OPTIONS(OPTION_HELP), OPERANDS_UNPARSED, "help [COMMAND]", help_help },
};

const struct verb *verb_find(const char *name)
{
        for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
                if (strcmp(verbs[i].name, name) == 0)
                        return &verbs[i];
        return NULL;
}

/* ---- --help ----------------------------------------------------------------------------- */

void verb_print_help(void)
{
        printf("Usage: %s [-c CONFIG | -s SOCKET] COMMAND [OPTIONS]\n"
               "       %s help [COMMAND]\n"
               "       %s --version\n"
               "\n"
               "Ask imgd, the image variant daemon, what it is doing and steer it, through its\n"
               "control socket. imgctl never opens the job ledger itself: every change (retry,\n"
               "cancel, pause, enqueue) is made by imgd.\n"
               "\n"
               "Commands:\n",
               IMGCTL_PROGRAM, IMGCTL_PROGRAM, IMGCTL_PROGRAM);
        for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
                printf("  %s\n%s\n", verbs[i].synopsis, verbs[i].help);
        printf("Options:\n"
               "  -c, --config FILE    read the socket path from imgd's configuration FILE\n"
               "                       (its \"socket\" setting)\n"
               "  -s, --socket PATH    use the control socket at PATH\n"
               "      --connect-timeout DURATION\n"
               "                       while the socket is missing or refuses (imgd is\n"
               "                       starting), keep trying for up to DURATION (30s, 2m;\n"
               "                       a bare number is seconds) instead of failing at once\n"
               "  -h, --help           show this text and exit\n"
               "      --version        show imgctl's version and exit\n"
               "  COMMAND --help       show the text of one command\n"
               "\n"
               "Exit status:\n"
               "  0  success\n"
               "  1  the command failed: imgd answered with an error (for example, no such\n"
               "     job), wait or drain timed out, verify found a problem, or events lost\n"
               "     its subscription\n"
               "  2  usage error: unknown command or option, missing or malformed argument\n"
               "  3  imgd could not be reached: no socket, connection refused, permission\n"
               "     denied (by the socket's mode, or by imgd: only root, imgd's user and\n"
               "     members of its control group are served), no answer within %d s, or\n"
               "     an answer imgctl does not understand; also when the configuration\n"
               "     given with -c cannot be read\n"
               "  4  permission denied for this command: it needs the operator role (root,\n"
               "     imgd's user, control_group) and you are in the read-only role\n"
               "     (read_group), which may only ask (status, jobs, show, metrics, events)\n"
               "\n"
               "Environment:\n"
               "  IMGD_SOCKET\n"
               "      the control socket to use when neither -s nor -c is given\n"
               "\n"
               "Files:\n"
               "  %s\n"
               "      the control socket imgd listens on by default; its mode is 0660, so\n"
               "      imgctl must run as its owner, as a member of its group, or as root\n"
               "  %s\n"
               "      imgd's default configuration; -c reads the \"socket\" setting of\n"
               "      this or another configuration file\n"
               "\n"
               "Examples:\n"
               "  %s status\n"
               "  %s jobs --state dead --since 1d\n"
               "  %s show 42 --json\n"
               "  %s wait --timeout 60 && echo all uploads processed\n"
               "  %s retry --dead\n"
               "  %s events --follow --json\n"
               "  %s verify --all || echo outputs changed behind imgd's back\n",
               (int)(IO_TIMEOUT_USEC / USEC_PER_SEC), CONFIG_DEFAULT_SOCKET, CONFIG_DEFAULT_PATH,
               IMGCTL_PROGRAM, IMGCTL_PROGRAM, IMGCTL_PROGRAM, IMGCTL_PROGRAM, IMGCTL_PROGRAM,
               IMGCTL_PROGRAM, IMGCTL_PROGRAM);
}

void verb_print_verb_help(const struct verb *v)
{
        printf("Usage: %s [-c CONFIG | -s SOCKET] %s\n\n%s", IMGCTL_PROGRAM, v->synopsis, v->help);
        printf("\nSee '%s help' for the global options, exit status and environment.\n",
               IMGCTL_PROGRAM);
}

/* imgctl help [VERB]: argv[0] is "help". */
static int verb_help(int argc, char **argv)
{
        const struct verb *v;

        if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
                verb_print_help();
                return EXIT_OK;
        }
        if (argc > 2)
                return options_usage_error("help", "unexpected argument '%s'", argv[2]);
        v = verb_find(argv[1]);
        if (!v)
                return options_usage_error(NULL, "unknown command '%s'", argv[1]);
        verb_print_verb_help(v);
        return EXIT_OK;
}

/* ---- dispatch --------------------------------------------------------------------------- */

/* The verb's options and operands (argv[0] is its name), then the verb. */
static int verb_dispatch(const struct verb *v, struct client *c, int argc, char **argv)
{
        _cleanup_(verb_args_clear) struct verb_args a = {};
        int r;

        r = options_parse(v, argc, argv, &a);
        if (r < 0)
                return EXIT_USAGE;
        if (r == OPTIONS_HELP) {
                verb_print_verb_help(v);
                return EXIT_OK;
        }
        return v->run(c, &a);
}

int main(int argc, char **argv)
{
        _cleanup_(verb_args_clear) struct verb_args global = {};
        _cleanup_free_ char *socket_path = NULL;
        const struct verb *v;
        struct client c;
        int r;

        /* Table columns are display columns of UTF-8 text (output.c), whatever the
         * terminal's locale says (imgd's text is UTF-8). */
        if (!setlocale(LC_CTYPE, "") || strcmp(nl_langinfo(CODESET), "UTF-8") != 0)
                (void)setlocale(LC_CTYPE, "C.UTF-8");

        r = options_parse(&global_options, argc, argv, &global);
        if (r < 0)
                return EXIT_USAGE;
        if (r == OPTIONS_HELP) {
                verb_print_help();
                return EXIT_OK;
        }
        if (r == OPTIONS_VERSION) {
                printf("imgctl %s\n", IMGD_VERSION);
                return EXIT_OK;
        }
        if (global.socket && global.config)
                return options_usage_error(NULL, "give either -c CONFIG or -s SOCKET, not both");
        if (global.next >= argc)
                return options_usage_error(NULL,
                                           "no command given (status, jobs, show, wait, retry, "
                                           "cancel, pause, resume, drain, enqueue, reload, "
                                           "metrics, events, top, verify, help)");
        argc -= global.next;
        argv += global.next;

        v = verb_find(argv[0]);
        if (!v)
                return options_usage_error(NULL, "unknown command '%s'", argv[0]);
        if (v->operands == OPERANDS_UNPARSED)
                return verb_help(argc, argv);

        /* --help needs no daemon and no configuration. */
        for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++)
                if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
                        verb_print_verb_help(v);
                        return EXIT_OK;
                }

        r = client_find_socket(global.socket, global.config, &socket_path);
        if (r != EXIT_OK)
                return r;
        c = CLIENT_INIT(socket_path);
        c.connect_wait_usec = global.connect_wait_usec;

        r = verb_dispatch(v, &c, argc, argv);
        client_close(&c);
        if (fflush(stdout) != 0 || ferror(stdout)) {
                imgctl_error("cannot write the output: %s", strerror(errno));
                return EXIT_FAILED;
        }
        return r;
}
