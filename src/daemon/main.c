/* SPDX-License-Identifier: MIT */
/*
 * main.c - imgd, the image pipeline daemon. This file only wires the modules together, in
 * the order the data flows:
 *
 *   recover (publish what a crash left verified, requeue the rest, sweep temporary files)
 *   watch (inotify, start-up scan) -> intake (open safely, hash) -> ledger (enqueue)
 *     -> scheduler (claim, retry) -> worker (libvips, in imgd-worker processes; verify)
 *     -> publish (rename, fsync) -> ledger (complete)
 *
 * while control (the Unix socket, answered by api) and notify (sd_notify) only observe.
 */
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-event.h>

#include "daemon/api.h"
#include "daemon/cluster.h"
#include "shared/confdump.h"
#include "shared/config.h"
#include "daemon/control.h"
#include "daemon/http.h"
#include "daemon/intake-batch.h"
#include "daemon/intake.h"
#include "daemon/ledger.h"
#include "daemon/lockfile.h"
#include "shared/log.h"
#include "shared/macro.h"
#include "shared/time-util.h"
#include "daemon/notify.h"
#include "daemon/recipe.h"
#include "daemon/reconcile.h"
#include "daemon/recover.h"
#include "daemon/scheduler.h"
#include "daemon/watch.h"
#include "daemon/worker-pool.h"

/* How long SIGTERM waits for running jobs before handing them back to the ledger. */
#define DRAIN_TIMEOUT_USEC (20 * USEC_PER_SEC)
#define STATUS_INTERVAL_USEC (2 * USEC_PER_SEC)

struct daemon {
        sd_event *event;
        struct config *config;
        lockfile *state_lock, *socket_lock;
        ledger *ledger;
        scheduler *scheduler;
        reconciler *reconciler;
        watch *watch;
        intake_retry *retry;  /* uploads whose intake failed for a transient reason */
        intake_batch *intake; /* group commit of uploads taken in together */
        control *control;
        cluster *cluster; /* the other nodes of a shared ledger; NULL: one node */
        http *http;       /* GET /metrics and /health; NULL: not configured */
        int http_fd;      /* the socket systemd passed for it until http_new() takes it */
        struct api_context api;
        sd_event_source *status_timer, *watchdog_timer, *drain_timer;
        uint64_t watchdog_usec;
        uint64_t drain_deadline;
        char last_status[512];
        char last_ledger_error[512]; /* check_ledger_files(): logged once until it changes */
        int exit_status;             /* when run() fails: main()'s exit status, if not 1 */
};

static void help(void)
{
        printf("Usage: imgd [OPTIONS]\n"
               "\n"
               "The image pipeline daemon. Watches upload folders, records every file as a job\n"
               "in a durable SQLite ledger, renders the configured variants with libvips in\n"
               "worker processes, verifies each output and publishes it atomically.\n"
               "\n"
               "Options:\n"
               "  -c, --config=FILE    configuration file (default: %s)\n"
               "      --check-config   validate the configuration and its paths, then exit:\n"
               "                       0 if it is valid; otherwise print FILE:LINE: problem\n"
               "      --dump-config    print the effective configuration, every default filled\n"
               "                       in, in the file's syntax (imgd reads it back), then exit;\n"
               "                       an invalid configuration fails as with --check-config\n"
               "  -v, --verbose        log debug messages\n"
               "  -h, --help           show this help and exit\n"
               "      --version        show the version and exit\n"
               "\n"
               "imgd runs in the foreground and logs to standard error; under systemd it is a\n"
               "Type=notify service. SIGTERM or SIGINT stop it: running jobs are handed back to\n"
               "the ledger and resumed at the next start.\n"
               "\n"
               "Files:\n"
               "  %s   configuration (see imgd.conf(5) and README.md)\n"
               "  STATE_DIR/imgd.db     the job ledger\n"
               "  STATE_DIR/imgd.lock   held while imgd runs; a second imgd on the same\n"
               "                        state directory refuses to start\n"
               "  SOCKET.lock           the same for the control socket\n"
               "\n"
               "Exit status: 0 on a clean stop or a valid configuration, 78 (EX_CONFIG) when\n"
               "the daemon does not start because of its configuration (or because its state\n"
               "directory or ledger cannot be written), 1 on any other error\n"
               "(and on an invalid configuration with --check-config), 2 on a usage error.\n"
               "\n"
               "See also: imgctl(1)\n",
               CONFIG_DEFAULT_PATH, CONFIG_DEFAULT_PATH);
}

/* Takes in `path`: 1 and logs a new job, 0 when it needs none, or a negative errno and the
 * message in *ret_error. */
static int take_in(struct daemon *d, const struct watch_config *w, const char *path,
                   char **ret_error)
{
        return intake_batch_add(d->intake, d->config, w, path, wall_usec(), ret_error);
}

/* An intake failed for a transient reason (the machine's fault, not the file's): nothing
 * else would take the file in again. */
static void keep_for_retry(struct daemon *d, const struct watch_config *w, const char *path,
                           const char *error)
{
        if (intake_retry_add(d->retry, w->path, path, error) < 0)
                log_warning("intake %s; not kept for a retry (too many), a rescan will find it",
                            error ?: path);
        else
                log_warning("intake %s; retrying", error ?: path);
}

/* An intake_batch_fn: a new job is durable (announced), or its batch was lost (retried). */
static void on_taken_in(const struct watch_config *w, const char *path, int64_t id, int r,
                        const char *error, void *userdata)
{
        struct daemon *d = userdata;

        if (r < 0) {
                _cleanup_free_ char *msg = NULL;

                if (asprintf(&msg, "%s: %s", path, error ?: strerror(-r)) < 0)
                        msg = NULL;
                keep_for_retry(d, w, path, msg);
                return;
        }
        log_job(LOG_INFO, LOG_JOB_QUEUED, id, path, w->pipeline_name, "job %" PRId64 " %s: queued",
                id, path);
        scheduler_enqueued(d->scheduler, id);
}

/* A running job's source was rewritten while it ran (scheduler_set_changed_handler()): the
 * new content is taken in as a job of its own. */
static void on_source_changed(const struct watch_config *w, const char *path, void *userdata)
{
        struct daemon *d = userdata;
        _cleanup_free_ char *error = NULL;

        if (intake_file(d->ledger, d->config, w, path, wall_usec(), NULL, &error) < 0)
                log_error("%s", error ?: path);
}

static void on_file(const struct watch_config *w, const char *path, void *userdata)
{
        struct daemon *d = userdata;
        _cleanup_free_ char *error = NULL;
        int r = take_in(d, w, path, &error);

        if (r >= 0)
                return;
        if (!intake_error_transient(r)) {
                log_warning("intake %s", error ?: path);
                return;
        }
        keep_for_retry(d, w, path, error);
}

/* Queues the retraction of what is published of `path` (its source is gone). */
static void retract_path(struct daemon *d, const struct watch_config *w, const char *path)
{
        int64_t id = 0;
        int r = ledger_retract(d->ledger, path, wall_usec(), &id);

        if (r < 0) {
                log_error("ledger: retract the outputs of %s: %s; the next reconciliation pass "
                          "(at a restart or reload) retracts them",
                          path, ledger_errmsg(d->ledger));
                return;
        }
        if (r == 0)
                return;
        log_job(LOG_INFO, LOG_JOB_QUEUED, id, path, w->pipeline_name,
                "job %" PRId64 " %s: source gone; its outputs are to be retracted", id, path);
        scheduler_enqueued(d->scheduler, id);
}

/* Queues the move of what is published of `from` to the names of `to` (renamed); if that is
 * not a move imgd can make, `from` is retracted and (file_too) `to` taken in. */
static void move_path(struct daemon *d, const struct watch_config *w, const char *from,
                      const char *to, bool file_too)
{
        _cleanup_free_ char *error = NULL;
        int64_t id = 0;
        int r = intake_moved(d->ledger, w, from, to, wall_usec(), &id, &error);

        if (r > 0) {
                log_job(LOG_INFO, LOG_JOB_QUEUED, id, to, w->pipeline_name,
                        "job %" PRId64 " %s: renamed from %s; its outputs are to be moved", id, to,
                        from);
                scheduler_enqueued(d->scheduler, id);
                return;
        }
        if (r < 0)
                log_error("%s", error ?: to);
        retract_path(d, w, from);
        if (file_too)
                on_file(w, to, d);
}

/* A watch_gone_fn: with on_delete = "retract", what is published of the file (of every file
 * below the directory) is retracted. */
static void on_gone(const struct watch_config *w, const char *path, bool is_dir, void *userdata)
{
        struct daemon *d = userdata;
        char **paths = NULL;
        size_t n = 0;

        if (w->on_delete != WATCH_ON_DELETE_RETRACT)
                return;
        intake_batch_flush(d->intake); /* the uploads before it come first */
        if (!is_dir) {
                retract_path(d, w, path);
                return;
        }
        if (ledger_paths_below(d->ledger, path, &paths, &n) < 0) {
                log_error("ledger: the sources below %s: %s; the next reconciliation pass "
                          "retracts their outputs",
                          path, ledger_errmsg(d->ledger));
                return;
        }
        for (size_t i = 0; i < n; i++) {
                retract_path(d, w, paths[i]);
                free(paths[i]);
        }
        free(paths);
}

/* A watch_moved_fn: with on_delete = "retract", the outputs follow their source's new name;
 * otherwise a renamed file is an upload (and its old outputs stay). */
static void on_moved(const struct watch_config *w, const char *from, const char *to, bool is_dir,
                     void *userdata)
{
        struct daemon *d = userdata;
        char **paths = NULL;
        size_t n = 0, len = strlen(from);

        if (w->on_delete != WATCH_ON_DELETE_RETRACT) {
                if (!is_dir)
                        on_file(w, to, d);
                return;
        }
        intake_batch_flush(d->intake);
        if (!is_dir) {
                move_path(d, w, from, to, true);
                return;
        }
        /* The files below are taken in by the walk of the new tree, after their moves. */
        if (ledger_paths_below(d->ledger, from, &paths, &n) < 0) {
                log_error("ledger: the sources below %s: %s; they are rendered again under %s",
                          from, ledger_errmsg(d->ledger), to);
                return;
        }
        for (size_t i = 0; i < n; i++) {
                _cleanup_free_ char *new_path = NULL;

                if (asprintf(&new_path, "%s%s", to, paths[i] + len) >= 0)
                        move_path(d, w, paths[i], new_path, false);
                free(paths[i]);
        }
        free(paths);
}

/* An intake_retry_fn: the watch is looked up again, the configuration may have changed. */
static int on_retry(const char *watch_path, const char *path, char **ret_error, void *userdata)
{
        struct daemon *d = userdata;

        for (size_t i = 0; i < d->config->n_watches; i++)
                if (strcmp(d->config->watches[i].path, watch_path) == 0)
                        return take_in(d, &d->config->watches[i], path, ret_error);
        return 0; /* no longer watched */
}

static void on_retry_rescan(void *userdata)
{
        struct daemon *d = userdata;

        if (d->watch)
                watch_rescan(d->watch);
}

/* A watch_batch_fn: the files of a turn of events or of a slice of a walk are taken in
 * together, in one group commit of the ledger (which their lookups share). */
static void on_batch(bool begin, void *userdata)
{
        struct daemon *d = userdata;

        if (begin)
                intake_batch_begin(d->intake);
        else
                intake_batch_end(d->intake);
}

/* Scans the watched trees for files that arrived while imgd was not watching, in group
 * commits. Returns the files found, or a negative errno. */
static int scan(struct daemon *d)
{
        int r;

        watch_set_batch_fn(d->watch, on_batch);
        intake_batch_begin(d->intake);
        r = watch_scan(d->watch);
        intake_batch_end(d->intake);
        return r;
}

/* The intake's part of the alerts (scheduler_set_intake_probe()): uploads waiting for a retry
 * and folders that could not be watched. */
static void intake_probe(struct health_alert_inputs *in, void *userdata)
{
        struct daemon *d = userdata;
        const char *why = NULL;
        int error = 0;

        in->intake_retry = intake_retry_pending(d->retry, &why);
        in->intake_reason = why;
        in->unwatched = watch_unwatched(d->watch, &error);
        in->unwatched_error = error;
        in->unwatched_first = watch_unwatched_first(d->watch);
        in->unwatched_scan_usec = d->config ? d->config->unwatched_scan_interval_usec : 0;
}

/*
 * Keeps the unit's STATUS= line current: "12 queued, 2 running, 0 retry, 1 dead, level full,
 * health 97/100, breaker closed", with "12 queued (10 held)" while jobs are held for a removed
 * watch, ", ALERT: <names>" while alerts are active (imgctl status has their messages) and the
 * breaker's reason last; "ledger unreachable, 2 running, ..." while the ledger's server cannot
 * be reached.
 */
static void update_status(struct daemon *d)
{
        struct scheduler_report rep;
        const uint64_t *counts = rep.jobs;
        char line[512], alerts[192] = "", held[48] = "", jobs[160];
        size_t n = 0;
        bool unread = scheduler_report(d->scheduler, &rep) < 0;

        /* The ledger's server unreachable: the line says so instead of the job counts. */
        if (unread && !ledger_unreachable(d->ledger, NULL))
                return;
        for (int i = 0; i < _HEALTH_ALERT_MAX; i++)
                if (rep.alerts.active & (1u << i) && n < sizeof alerts)
                        n += (size_t)snprintf(alerts + n, sizeof alerts - n, "%s%s",
                                              n ? ", " : ", ALERT: ", health_alert_name(i));
        if (rep.held > 0)
                snprintf(held, sizeof held, " (%llu held)", (unsigned long long)rep.held);
        if (unread)
                snprintf(jobs, sizeof jobs, "ledger unreachable, %u running",
                         scheduler_running(d->scheduler));
        else
                snprintf(jobs, sizeof jobs, "%llu queued%s, %u running, %llu retry, %llu dead",
                         (unsigned long long)counts[JOB_QUEUED], held,
                         scheduler_running(d->scheduler), (unsigned long long)counts[JOB_RETRY],
                         (unsigned long long)counts[JOB_DEAD]);
        snprintf(line, sizeof line, "%s%s, level %s, health %.0f/100%s, breaker %s%s%s",
                 scheduler_paused(d->scheduler) ? "paused: " : "", jobs,
                 rep.level ? rep.level : "full", rep.score, alerts, rep.breaker,
                 rep.breaker_reason && *rep.breaker_reason ? ": " : "",
                 rep.breaker_reason ? rep.breaker_reason : "");
        if (strcmp(line, d->last_status) != 0) {
                notify_status("%s", line);
                snprintf(d->last_status, sizeof d->last_status, "%s", line);
        }
}

/*
 * The ledger's WAL and WAL index still in place (ledger_check_files()): what was found is
 * logged once; a failure to save a removed WAL's commits is logged each time it changes.
 */
static void check_ledger_files(struct daemon *d)
{
        char *last = d->last_ledger_error;
        int r = ledger_check_files(d->ledger);

        if (r > 0) {
                log_error("ledger: %s", ledger_errmsg(d->ledger));
                last[0] = '\0';
        } else if (r < 0 && strcmp(last, ledger_errmsg(d->ledger)) != 0) {
                snprintf(last, sizeof d->last_ledger_error, "%s", ledger_errmsg(d->ledger));
                log_error_errno(r, "ledger: %s", last);
        }
}

static int on_status_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
        check_ledger_files(userdata);
        update_status(userdata);
        sd_event_source_set_time_relative(s, STATUS_INTERVAL_USEC);
        sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
        return 0;
}

/* Pings the watchdog only while the loop runs (it does, or this would not fire) and the
 * workers make progress: a wedged pool stops the pings and lets systemd restart imgd. */
static int on_watchdog_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
        struct daemon *d = userdata;

        if (!scheduler_stalled(d->scheduler))
                notify_watchdog();
        else
                log_error("no job has made progress for longer than the job timeout; "
                          "withholding the watchdog ping");
        sd_event_source_set_time_relative(s, d->watchdog_usec / 2);
        sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
        return 0;
}

/*
 * Jobs held because their watch was gone are tried again under the configuration loaded now
 * (at start or reload); they are held again at their claim if it is still gone.
 */
static bool streq_ptr(const char *a, const char *b)
{
        return a == b || (a && b && strcmp(a, b) == 0);
}

static void wake_held(ledger *l)
{
        int r = ledger_unhold(l, wall_usec());

        if (r < 0)
                log_error_errno(r, "ledger: wake held jobs: %s", ledger_errmsg(l));
        else if (r > 0)
                log_info("%d held job(s) queued again under the configuration as it is now", r);
}

/*
 * Who may use the control socket under d->config (at start and reload; connections accepted
 * from now on): the operators' group control_group, or CONFIG_DEFAULT_CONTROL_GROUP when that is
 * not set and exists, and the read-only group read_group. config_check_paths() has checked
 * that the groups set exist; one gone since is logged and not served.
 */
static void set_control_groups(struct daemon *d)
{
        const char *names[2] = { d->config->control_group ?: CONFIG_DEFAULT_CONTROL_GROUP,
                                 d->config->read_group };
        gid_t gids[2] = { (gid_t)-1, (gid_t)-1 };

        for (size_t i = 0; i < 2; i++) {
                struct group *g = names[i] ? getgrnam(names[i]) : NULL;

                if (g)
                        gids[i] = g->gr_gid;
                else if (names[i] && (i == 1 || d->config->control_group))
                        log_warning("%s '%s' does not exist; its members are not served",
                                    i == 0 ? "control_group" : "read_group", names[i]);
        }
        control_set_group(d->control, gids[0]);
        control_set_read_group(d->control, gids[1], api_command_read_only);
}

/*
 * SIGHUP, or the control command "reload" (imgctl reload, the unit's ExecReload=): load the
 * configuration again. An invalid one is rejected and the old one stays in force: returns a
 * negative errno and, when ret_error is not NULL, the reason in *ret_error (caller frees). A
 * valid one replaces watches, pipelines and limits; returns 0 (held jobs are woken).
 */
static int reload(struct daemon *d, char **ret_error)
{
        _cleanup_free_ char *error = NULL;
        struct config *next = NULL;
        watch *w = NULL;
        int r;

        notify_reloading();
        log_info("reloading %s", d->config->file);
        r = config_load(d->config->file, &next, &error);
        if (r >= 0)
                r = config_check_paths(next, &error);
        if (r >= 0)
                r = recipe_config(next, &error);
        if (r >= 0) {
                r = watch_new(d->event, next, on_file, d, &w);
                if (r < 0)
                        error = strdup("cannot watch the new folders (see above)");
                else
                        watch_set_removal_fns(w, on_gone, on_moved);
        }
        if (r < 0) {
                log_error("reload rejected, the running configuration stays in force: %s",
                          error ?: "unknown error");
                config_free(next);
                notify_ready();
                if (ret_error)
                        *ret_error = TAKE_PTR(error);
                return r;
        }
        if (strcmp(next->socket, d->config->socket) != 0 ||
            strcmp(next->state_dir, d->config->state_dir) != 0)
                log_warning("reload: socket and state_dir changes take effect at the next start");
        if (next->ledger.engine != d->config->ledger.engine ||
            !streq_ptr(next->ledger.conninfo, d->config->ledger.conninfo) ||
            !streq_ptr(next->ledger.node, d->config->ledger.node) ||
            next->ledger.lease_usec != d->config->ledger.lease_usec)
                log_warning("reload: ledger changes take effect at the next start");
        if (!next->http.listen != !d->config->http.listen ||
            (next->http.listen && strcmp(next->http.listen, d->config->http.listen) != 0))
                log_warning("reload: an http.listen change takes effect at the next start");

        d->watch = watch_free(d->watch);
        d->watch = w;
        d->api.watch = w;
        wake_held(d->ledger);
        scheduler_set_config(d->scheduler, next);
        reconciler_start(d->reconciler, next);
        d->api.config = next;
        config_free(d->config);
        d->config = next;
        set_control_groups(d);
        intake_retry_clear(d->retry); /* the scan reports them again */
        r = scan(d);
        log_info("reloaded: watching %u folder(s), %d file(s) found", watch_count(d->watch),
                 r < 0 ? 0 : r);
        notify_ready();
        update_status(d);
        return 0;
}

/* Reconciliation queued jobs: the workers may take them. */
static void on_reconcile_queued(void *userdata)
{
        struct daemon *d = userdata;

        scheduler_kick(d->scheduler);
}

/* Uploads are being processed: the reconciliation's pass yields to them. */
static bool on_reconcile_live(void *userdata)
{
        struct daemon *d = userdata;

        return scheduler_live_about(d->scheduler);
}

/* Another node made a job claimable (cluster.h). */
static void on_cluster_wake(void *userdata)
{
        struct daemon *d = userdata;

        scheduler_kick(d->scheduler);
}

/* Another node's job event, to this node's subscribers. */
static void on_cluster_event(const char *event, const json_t *job, void *userdata)
{
        struct daemon *d = userdata;

        api_on_node_event(event, job, &d->api);
}

/* The reconciliation's events, to the subscribers. */
static void on_reconcile_event(const char *event, const json_t *data, void *userdata)
{
        struct daemon *d = userdata;

        api_on_reconcile_event(event, data, &d->api);
}

/* The api's reload hook (api.h): refused while stopping, when the watches are gone. */
static int api_reload(void *userdata, char **ret_error)
{
        struct daemon *d = userdata;

        if (d->drain_timer) {
                *ret_error = strdup("imgd is stopping");
                return -ESHUTDOWN;
        }
        return reload(d, ret_error);
}

static int on_drain_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
        struct daemon *d = userdata;
        unsigned running = scheduler_running(d->scheduler);

        if (running == 0 || mono_usec() >= d->drain_deadline) {
                if (running > 0)
                        log_notice("stopping with %u job(s) unfinished; they are handed back to "
                                   "the ledger and resume at the next start",
                                   running);
                return sd_event_exit(d->event, 0);
        }
        sd_event_source_set_time_relative(s, 100 * USEC_PER_MSEC);
        sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
        return 0;
}

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata)
{
        struct daemon *d = userdata;
        int r;

        if (si->ssi_signo == SIGHUP) {
                log_info("SIGHUP");
                if (!d->drain_timer)
                        (void)reload(d, NULL);
                return 0;
        }
        if (d->drain_timer) {
                log_notice("%s again: stopping now", strsignal((int)si->ssi_signo));
                return sd_event_exit(d->event, 0);
        }
        /* Drain: claim nothing new, let running jobs finish within a bound. */
        log_info("%s: stopping; waiting up to %llu s for %u running job(s)",
                 strsignal((int)si->ssi_signo),
                 (unsigned long long)(DRAIN_TIMEOUT_USEC / USEC_PER_SEC),
                 scheduler_running(d->scheduler));
        d->api.state = "stopping";
        notify_stopping();
        scheduler_pause(d->scheduler);
        d->api.watch = NULL;
        d->watch = watch_free(d->watch);
        d->drain_deadline = mono_usec() + DRAIN_TIMEOUT_USEC;
        r = sd_event_add_time_relative(d->event, &d->drain_timer, CLOCK_MONOTONIC, 0, 0,
                                       on_drain_timer, d);
        return r < 0 ? sd_event_exit(d->event, 0) : 0;
}

/*
 * Takes the lock at `path` into *ret, or logs who holds it and why that stops this start
 * (`what` says what the holder is using). Returns 0 or a negative errno.
 */
static int take_lock(const char *path, const char *what, lockfile **ret)
{
        pid_t holder = 0;
        int r = lockfile_take(path, ret, &holder);

        if (r == -EWOULDBLOCK) {
                if (holder > 0)
                        log_error("another imgd (pid %ld) holds %s: it is using %s; refusing to "
                                  "start",
                                  (long)holder, path, what);
                else
                        log_error("another imgd holds %s: it is using %s; refusing to start", path,
                                  what);
                return r;
        }
        if (r < 0)
                return log_error_errno(r, "lock %s: %m", path);
        return 0;
}

/*
 * One imgd per state directory (its ledger, staging and recovery) and per control socket:
 * takes STATE_DIR/imgd.lock and SOCKET.lock, held until the end of run(). Returns 0, or a
 * negative errno (logged) when another imgd holds either, and then nothing has been touched.
 */
static int take_locks(struct daemon *d)
{
        _cleanup_free_ char *state = NULL, *socket = NULL, *what = NULL;
        int r;

        if (asprintf(&state, "%s/imgd.lock", d->config->state_dir) < 0 ||
            asprintf(&socket, "%s.lock", d->config->socket) < 0)
                return log_error_errno(-ENOMEM, "lock: %m");
        if (asprintf(&what, "the state directory %s", d->config->state_dir) < 0)
                return log_error_errno(-ENOMEM, "lock: %m");
        r = take_lock(state, what, &d->state_lock);
        if (r < 0)
                return r;
        if (lockfile_same_file(d->state_lock, socket))
                return 0; /* socket = STATE_DIR/imgd: one lock covers both */
        free(what);
        if (asprintf(&what, "the control socket %s", d->config->socket) < 0)
                return log_error_errno(-ENOMEM, "lock: %m");
        return take_lock(socket, what, &d->socket_lock);
}

/*
 * Opens the ledger the configuration names: SQLite's STATE_DIR/imgd.db, or the PostgreSQL
 * database of ledger.conninfo. Returns 0 and *ret, or a negative errno and a message in
 * *ret_error (never with a password: see ledger_open_params()).
 */
static int open_ledger(const struct config *c, ledger **ret, char **ret_error)
{
        _cleanup_free_ char *db = NULL;
        struct ledger_params p = { .engine = LEDGER_ENGINE_SQLITE };

        if (c->ledger.engine == CONFIG_LEDGER_POSTGRESQL) {
                p.engine = LEDGER_ENGINE_POSTGRESQL;
                p.conninfo = c->ledger.conninfo;
                /* A node stopped inside a transaction holds its locks a heartbeat's interval
                 * at most: the others' heartbeats and rescues go on. */
                p.stall_usec = (int64_t)config_ledger_heartbeat_usec(&c->ledger);
        } else {
                if (asprintf(&db, "%s/imgd.db", c->state_dir) < 0)
                        return -ENOMEM;
                p.path = db;
        }
        return ledger_open_params(&p, ret, ret_error);
}

static int run(struct daemon *d)
{
        _cleanup_free_ char *error = NULL, *worker_path = NULL;
        struct recover_stats rs;
        sd_event *e = NULL;
        sigset_t mask;
        int r;

        r = take_locks(d);
        if (r < 0)
                goto out;
        /* Before any process is started: workers must not inherit it, nor LISTEN_FDS. */
        d->http_fd = http_take_passed_fd();
        if (d->http_fd < 0 && d->http_fd != -ENOENT) {
                r = d->http_fd;
                goto out;
        }

        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        sigaddset(&mask, SIGCHLD);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        signal(SIGPIPE, SIG_IGN);

        r = sd_event_default(&e);
        if (r < 0)
                return log_error_errno(r, "event loop: %m");
        d->event = e;
        (void)sd_event_add_signal(e, NULL, SIGTERM, on_signal, d);
        (void)sd_event_add_signal(e, NULL, SIGINT, on_signal, d);
        (void)sd_event_add_signal(e, NULL, SIGHUP, on_signal, d);

        r = open_ledger(d->config, &d->ledger, &error);
        if (r < 0) {
                log_error("%s", error ?: "ledger: cannot open");
                /* The environment's fault, as a configuration's is: restarting cannot help. */
                if (r == -EROFS || r == -EACCES || r == -EPERM || r == -EPROTONOSUPPORT ||
                    r == -EMEDIUMTYPE)
                        d->exit_status = EX_CONFIG;
                goto out;
        }
        log_info("ledger %s: %s", ledger_name(d->ledger), ledger_open_check(d->ledger));
        r = recover_run(d->ledger, d->config, wall_usec(), &rs);
        if (r < 0)
                goto out;
        if (rs.published + rs.redone + rs.requeued + rs.swept + rs.lost > 0)
                log_notice("recovered after an unclean stop: %u staged job(s) published, %u to "
                           "render again, %u put back in the queue, %u temporary file(s) removed, "
                           "%u taken over by other nodes meanwhile",
                           rs.published, rs.redone, rs.requeued, rs.swept, rs.lost);
        wake_held(d->ledger);

        r = worker_find_executable(&worker_path);
        if (r < 0) {
                log_error_errno(r,
                                "cannot find the imgd-worker executable next to imgd or in "
                                "%s: %m",
                                IMGD_LIBEXECDIR);
                goto out;
        }
        r = scheduler_new(e, d->config, d->ledger, worker_path, &d->scheduler);
        if (r < 0) {
                log_error_errno(r, "start workers (%s): %m", worker_path);
                goto out;
        }
        r = reconciler_new(e, d->ledger, on_reconcile_queued, d, &d->reconciler);
        if (r < 0) {
                log_error_errno(r, "reconciliation: %m");
                goto out;
        }
        reconciler_set_event_fn(d->reconciler, on_reconcile_event);
        reconciler_set_live_fn(d->reconciler, on_reconcile_live);
        r = intake_retry_new(e, on_retry, on_retry_rescan, d, &d->retry);
        if (r < 0) {
                log_error_errno(r, "intake retries: %m");
                goto out;
        }
        r = intake_batch_new(d->ledger, on_taken_in, d, &d->intake);
        if (r < 0) {
                log_error_errno(r, "intake: %m");
                goto out;
        }
        r = watch_new(e, d->config, on_file, d, &d->watch);
        if (r < 0)
                goto out;
        watch_set_removal_fns(d->watch, on_gone, on_moved);
        d->api = (struct api_context){
                .config = d->config,
                .ledger = d->ledger,
                .scheduler = d->scheduler,
                .reconciler = d->reconciler,
                .state = "starting",
                .started_usec = wall_usec(),
                .watch = d->watch,
                .retry = d->retry,
                .reload = api_reload,
                .reload_userdata = d,
        };
        r = control_new(e, d->config->socket, api_handle, &d->api, &d->control);
        if (r < 0)
                goto out;
        d->api.control = d->control;
        set_control_groups(d);
        if (d->config->ledger.engine == CONFIG_LEDGER_POSTGRESQL) {
                /* Woken by the other nodes' work, and their events told here. */
                r = cluster_new(e, d->ledger, scheduler_node(d->scheduler),
                                scheduler_owner(d->scheduler), on_cluster_wake, on_cluster_event, d,
                                &d->cluster);
                if (r < 0) {
                        log_error_errno(r, "ledger %s: listen for the other nodes: %m",
                                        ledger_name(d->ledger));
                        goto out;
                }
                d->api.node = scheduler_node(d->scheduler);
                d->api.cluster = d->cluster;
        }
        scheduler_set_event_handler(d->scheduler, api_on_event, &d->api);
        scheduler_set_intake_probe(d->scheduler, intake_probe, d);
        scheduler_set_changed_handler(d->scheduler, on_source_changed, d);
        r = http_new(e, &d->config->http, d->http_fd, &d->api, &d->http);
        d->http_fd = -1; /* taken */
        if (r < 0)
                goto out;

        r = scan(d);
        log_info("watching %u folder(s), %d file(s) found at start, %u worker(s)",
                 watch_count(d->watch), r < 0 ? 0 : r, d->config->workers);
        scheduler_kick(d->scheduler);
        reconciler_start(d->reconciler, d->config);

        (void)sd_event_add_time_relative(e, &d->status_timer, CLOCK_MONOTONIC, STATUS_INTERVAL_USEC,
                                         0, on_status_timer, d);
        d->watchdog_usec = notify_watchdog_usec();
        if (d->watchdog_usec > 0)
                (void)sd_event_add_time_relative(e, &d->watchdog_timer, CLOCK_MONOTONIC,
                                                 d->watchdog_usec / 2, 0, on_watchdog_timer, d);
        d->api.state = "running";
        notify_ready();
        update_status(d);
        r = sd_event_loop(e);
        if (r < 0)
                log_error_errno(r, "event loop: %m");
out:
        d->status_timer = sd_event_source_disable_unref(d->status_timer);
        d->watchdog_timer = sd_event_source_disable_unref(d->watchdog_timer);
        d->drain_timer = sd_event_source_disable_unref(d->drain_timer);
        d->http = http_free(d->http);
        if (d->http_fd >= 0)
                close(d->http_fd);
        d->http_fd = -1;
        d->control = control_free(d->control);
        d->api.control = NULL;
        d->api.watch = NULL;
        d->watch = watch_free(d->watch);
        d->intake = intake_batch_free(d->intake);
        d->api.retry = NULL;
        d->retry = intake_retry_free(d->retry);
        d->api.reconciler = NULL;
        d->reconciler = reconciler_free(d->reconciler);
        d->scheduler = scheduler_free(d->scheduler);
        d->api.cluster = NULL;
        d->api.node = NULL;
        d->cluster = cluster_free(d->cluster);
        if (d->ledger) {
                _cleanup_free_ char *why = NULL;
                int k = ledger_close(TAKE_PTR(d->ledger), &why);

                if (k < 0)
                        log_warning("%s; no clean stop recorded, so the next start checks the "
                                    "whole ledger",
                                    why ?: strerror(-k));
        }
        sd_event_unref(e);
        d->socket_lock = lockfile_free(d->socket_lock);
        d->state_lock = lockfile_free(d->state_lock);
        return r;
}

int main(int argc, char **argv)
{
        enum { ARG_CHECK_CONFIG = 0x100, ARG_DUMP_CONFIG, ARG_VERSION };
        static const struct option options[] = {
                { "config", required_argument, NULL, 'c' },
                { "check-config", no_argument, NULL, ARG_CHECK_CONFIG },
                { "dump-config", no_argument, NULL, ARG_DUMP_CONFIG },
                { "verbose", no_argument, NULL, 'v' },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                {},
        };
        const char *config_path = CONFIG_DEFAULT_PATH;
        _cleanup_free_ char *error = NULL;
        struct daemon d = { .http_fd = -1 };
        bool check_only = false, dump = false;
        int c, r;

        log_setup("imgd");
        while ((c = getopt_long(argc, argv, "c:vh", options, NULL)) >= 0) {
                switch (c) {
                case 'c':
                        config_path = optarg;
                        break;
                case ARG_CHECK_CONFIG:
                        check_only = true;
                        break;
                case ARG_DUMP_CONFIG:
                        check_only = dump = true;
                        break;
                case 'v':
                        log_set_max_level(LOG_DEBUG);
                        break;
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        printf("imgd %s\n", IMGD_VERSION);
                        return 0;
                default:
                        fprintf(stderr, "Try 'imgd --help' for more information.\n");
                        return 2;
                }
        }
        if (optind < argc) {
                fprintf(stderr,
                        "imgd: unexpected argument '%s'\n"
                        "Try 'imgd --help' for more information.\n",
                        argv[optind]);
                return 2;
        }

        r = config_load(config_path, &d.config, &error);
        if (r >= 0)
                r = config_check_paths(d.config, &error);
        if (r >= 0)
                r = recipe_config(d.config, &error);
        if (r < 0) {
                log_error("%s", error ?: config_path);
                config_free(d.config);
                /* EX_CONFIG: the unit's RestartPreventExitStatus= ends in a failed unit
                 * instead of restarting on the same file forever. */
                return check_only ? 1 : EX_CONFIG;
        }
        if (dump) {
                r = config_dump(d.config, stdout);
                if (r < 0)
                        log_error("--dump-config: cannot write the configuration: %s",
                                  strerror(-r));
                config_free(d.config);
                return r < 0 ? 1 : 0;
        }
        if (check_only) {
                /* A database ledger is checked where it is: reached, and of a schema this imgd
                 * reads (created or migrated if need be, as at start). */
                if (d.config->ledger.engine == CONFIG_LEDGER_POSTGRESQL) {
                        ledger *l = NULL;

                        r = open_ledger(d.config, &l, &error);
                        if (r < 0) {
                                log_error("%s: ledger: %s", d.config->file, error ?: strerror(-r));
                                config_free(d.config);
                                return 1;
                        }
                        printf("%s: ledger %s: %s\n", d.config->file, ledger_name(l),
                               ledger_open_check(l));
                        ledger_free(l);
                }
                printf("%s: configuration OK (%zu watch(es), %zu pipeline(s), %u worker(s))\n",
                       d.config->file, d.config->n_watches, d.config->n_pipelines,
                       d.config->workers);
                config_free(d.config);
                return 0;
        }

        r = run(&d);
        config_free(d.config);
        return r >= 0 ? 0 : d.exit_status > 0 ? d.exit_status : 1;
}
