/* SPDX-License-Identifier: MIT */
/*
 * top.c - imgctl top (imgctl.h): a live view of imgd, refreshed every TOP_INTERVAL_USEC from a
 * status request: the daemon's state, intake, the breaker and health level, a progress bar of
 * the backlog (jobs finished since top started against those left), the throughput over the
 * last 10 s, the alerts and what each worker is doing (the source of its job asked once with
 * show, and remembered). On a terminal it redraws the screen and reads keys without Enter (q
 * quits; the terminal's mode is restored on the way out); otherwise it prints one summary
 * line a refresh. SIGINT and SIGTERM end it after the current refresh.
 */
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include "shared/proto.h"
#include "shared/time-util.h"
#include "imgctl/imgctl.h"

#define TOP_INTERVAL_USEC USEC_PER_SEC
#define TOP_RATE_WINDOW_USEC (10 * (int64_t)USEC_PER_SEC)
#define TOP_SAMPLES 16 /* one a second: more than the rate window */
#define TOP_SOURCE_CACHE 64

static volatile sig_atomic_t top_interrupted;

static void top_on_signal(int sig)
{
        (void)sig;
        top_interrupted = 1;
}

struct top {
        struct client *ctl;
        bool tty;
        unsigned columns;
        int64_t finished0; /* done + dead + cancelled when top started */
        struct {
                int64_t at_usec, finished;
        } samples[TOP_SAMPLES];
        size_t n_samples;
        struct {
                int64_t id;
                char *source;
        } cache[TOP_SOURCE_CACHE]; /* sources of jobs seen on workers */
        size_t next_cache;
};

/* The source of job `id` ("" if imgd does not say), asked once and remembered. */
static const char *top_source(struct top *t, int64_t id)
{
        _cleanup_(json_decrefp) json_t *result = NULL;
        _cleanup_free_ char *error = NULL;
        json_t *req;
        size_t slot;
        int r;

        for (size_t i = 0; i < TOP_SOURCE_CACHE; i++)
                if (t->cache[i].source && t->cache[i].id == id)
                        return t->cache[i].source;
        req = client_request_with_id("show", id);
        r = client_call(t->ctl, req, &result, &error);
        json_decref(req);
        if (r < 0)
                return "";
        slot = t->next_cache++ % TOP_SOURCE_CACHE;
        free(t->cache[slot].source);
        t->cache[slot].id = id;
        t->cache[slot].source =
                imgctl_strdup(client_get_str(json_object_get(result, "job"), "source", ""));
        return t->cache[slot].source;
}

/* Jobs per second over the last TOP_RATE_WINDOW_USEC (0 until there are two samples); records
 * this sample. */
static double top_rate(struct top *t, int64_t now, int64_t finished)
{
        size_t n = t->n_samples < TOP_SAMPLES ? t->n_samples : TOP_SAMPLES;
        int64_t at = now, base = finished;

        for (size_t i = 0; i < n; i++)
                if (now - t->samples[i].at_usec <= TOP_RATE_WINDOW_USEC &&
                    t->samples[i].at_usec < at) {
                        at = t->samples[i].at_usec;
                        base = t->samples[i].finished;
                }
        t->samples[t->n_samples % TOP_SAMPLES].at_usec = now;
        t->samples[t->n_samples % TOP_SAMPLES].finished = finished;
        t->n_samples++;
        if (at >= now || finished < base)
                return 0;
        return (double)(finished - base) * (double)USEC_PER_SEC / (double)(now - at);
}

static void top_bar(double fraction, unsigned width)
{
        unsigned filled = (unsigned)(fraction * width + 0.5);

        fputc('[', stdout);
        for (unsigned i = 0; i < width; i++)
                fputc(i < filled ? '#' : '-', stdout);
        fputc(']', stdout);
}

/* One refresh: the whole screen (TTY) or one line. */
static void top_render(struct top *t, const json_t *status, int64_t now_mono)
{
        const json_t *jobs = json_object_get(status, "jobs");
        const json_t *workers = json_object_get(status, "workers");
        const json_t *list = json_object_get(workers, "list");
        const json_t *breaker = json_object_get(status, "breaker");
        int64_t queued = client_get_int(jobs, "queued"), running = client_get_int(jobs, "running"),
                retry = client_get_int(jobs, "retry"), done = client_get_int(jobs, "done"),
                dead = client_get_int(jobs, "dead"), cancelled = client_get_int(jobs, "cancelled");
        int64_t finished = done + dead + cancelled, left = queued + running + retry;
        int64_t processed = finished - t->finished0;
        bool paused = json_is_true(json_object_get(status, "paused"));
        _cleanup_free_ char *state = output_clean(client_get_str(status, "state", "?"), 16);
        _cleanup_free_ char *breaker_state = NULL, *level = NULL;
        const json_t *health_j = json_object_get(status, "health");
        const json_t *alerts = json_object_get(status, "alerts");
        double rate = top_rate(t, now_mono, finished), fraction;
        char now[32], uptime[32], eta[32];

        if (processed < 0)
                processed = 0; /* finished jobs pruned meanwhile */
        fraction = processed + left > 0 ? (double)processed / (double)(processed + left) : 1;
        if (json_is_string(breaker))
                breaker_state = output_clean(json_string_value(breaker), 16);
        else if (json_is_object(breaker))
                breaker_state = output_clean(client_get_str(breaker, "state", "?"), 16);
        if (json_is_object(health_j))
                level = output_clean(client_get_str(health_j, "level", "?"), 16);
        output_time(wall_usec(), now, sizeof now);

        if (left == 0)
                snprintf(eta, sizeof eta, "0s");
        else
                (void)output_drain(health_j, eta, sizeof eta);
        if (!t->tty) {
                printf("%s %s%s queued=%" PRId64 " running=%" PRId64 " retry=%" PRId64
                       " done=%" PRId64 " dead=%" PRId64 " cancelled=%" PRId64 " workers=%" PRId64
                       "/%" PRId64 " rate=%.2f/s backlog=%.0f%% eta=%s"
                       "%s%s%s%s alerts=%zu\n",
                       now, state, paused ? " paused" : "", queued, running, retry, done, dead,
                       cancelled, client_get_int(workers, "busy"), client_get_int(workers, "total"),
                       rate, fraction * 100, eta, breaker_state ? " breaker=" : "",
                       breaker_state ? breaker_state : "", level ? " level=" : "",
                       level ? level : "", json_array_size(alerts));
                fflush(stdout);
                return;
        }

        output_uptime(client_get_int(status, "uptime_s"), uptime, sizeof uptime);
        fputs("\033[H\033[2J", stdout);
        {
                _cleanup_free_ char *version =
                        output_clean(client_get_str(status, "version", "?"), 16);

                printf("imgd %s %s, pid %" PRId64 ", up %s    %s\n", version, state,
                       client_get_int(status, "pid"), uptime, now);
        }
        printf("intake %s", paused ? "PAUSED" : "running");
        if (breaker_state)
                printf("    breaker %s", breaker_state);
        if (level)
                printf("    health %.0f/100, level %s",
                       json_number_value(json_object_get(health_j, "score")), level);
        printf("\n\nbacklog    ");
        top_bar(fraction, t->columns > 60 ? t->columns - 50 : 10);
        printf(" %3.0f%%  %" PRId64 " processed, %" PRId64 " left\n", fraction * 100, processed,
               left);
        printf("throughput %.2f jobs/s (last 10 s), backlog drained in about %s\n", rate, eta);
        printf("jobs       queued %" PRId64 "  running %" PRId64 "  retry %" PRId64
               "  done %" PRId64 "  dead %" PRId64 "  cancelled %" PRId64 "\n",
               queued, running, retry, done, dead, cancelled);
        {
                /* Background work (reconciliation): what is left of it, at its own rate. */
                const json_t *rc = json_object_get(status, "reconcile");
                const json_t *rc_eta = json_object_get(rc, "eta_s");

                if (client_get_int(rc, "remaining") > 0 ||
                    json_is_true(json_object_get(rc, "scanning"))) {
                        printf("reconcile  %s%" PRId64 " left, %" PRId64 " done, %.1f/s",
                               json_is_true(json_object_get(rc, "scanning")) ? "scanning; " : "",
                               client_get_int(rc, "remaining"), client_get_int(rc, "done"),
                               json_number_value(json_object_get(rc, "per_s")));
                        if (json_is_integer(rc_eta))
                                printf(", about %" PRId64 " s left",
                                       (int64_t)json_integer_value(rc_eta));
                        printf("%s\n",
                               json_is_true(json_object_get(rc, "paused")) ? " (paused)" : "");
                }
        }
        printf("\n");
        for (size_t i = 0; i < json_array_size(alerts); i++) {
                _cleanup_free_ char *msg =
                        output_clean(client_get_str(json_array_get(alerts, i), "message", "?"),
                                     t->columns > 12 ? t->columns - 11 : 40);

                printf("ALERT      %s\n", msg);
        }
        if (json_array_size(alerts) > 0)
                printf("\n");

        printf("workers    %" PRId64 " busy of %" PRId64 "\n", client_get_int(workers, "busy"),
               client_get_int(workers, "total"));
        if (json_array_size(list) > 0) {
                struct output_table tab;
                size_t width = t->columns > 40 ? t->columns - 40 : 20;

                output_table_init(&tab, 5);
                output_table_add(&tab, "PID", "STATE", "DONE", "JOB", "SOURCE");
                for (size_t i = 0; i < json_array_size(list); i++) {
                        const json_t *w = json_array_get(list, i);
                        const char *wstate = client_get_str(w, "state", "?");
                        int64_t job = client_get_int(w, "job");
                        _cleanup_free_ char *source = NULL;
                        char pid[24], jobs_done[24], jobid[24] = "";

                        snprintf(pid, sizeof pid, "%" PRId64, client_get_int(w, "pid"));
                        snprintf(jobs_done, sizeof jobs_done, "%" PRId64,
                                 client_get_int(w, "jobs_done"));
                        if (strcmp(wstate, "busy") == 0 && job > 0) {
                                snprintf(jobid, sizeof jobid, "#%" PRId64, job);
                                source = output_clean(top_source(t, job), width);
                        }
                        output_table_add(&tab, pid, wstate, jobs_done, jobid, source ? source : "");
                }
                output_table_print(&tab, "  ");
                output_table_clear(&tab);
        }
        printf("\nq or Ctrl-C: quit\n");
        fflush(stdout);
}

int top_run(struct client *ctl, const struct verb_args *a)
{
        struct top t = { .ctl = ctl };
        struct termios saved, raw;
        struct sigaction sa = { .sa_handler = top_on_signal }, old_int, old_term;
        bool keys = false;
        int r = EXIT_OK;

        t.tty = isatty(STDOUT_FILENO);
        t.columns = 80;
        if (t.tty) {
                struct winsize ws;

                if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 40)
                        t.columns = ws.ws_col;
        }
        /* Keys without Enter, not echoed; Ctrl-C still a signal. */
        if (t.tty && isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved) == 0) {
                raw = saved;
                raw.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
                raw.c_cc[VMIN] = 0;
                raw.c_cc[VTIME] = 0;
                keys = tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0;
        }
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, &old_int);
        sigaction(SIGTERM, &sa, &old_term);

        for (int64_t i = 0; !top_interrupted; i++) {
                _cleanup_(json_decrefp) json_t *status = NULL;
                const json_t *jobs;
                int64_t wake;

                r = client_request(ctl, proto_request_new("status"), &status);
                if (r != EXIT_OK)
                        break;
                jobs = json_object_get(status, "jobs");
                if (i == 0)
                        t.finished0 = client_get_int(jobs, "done") + client_get_int(jobs, "dead") +
                                      client_get_int(jobs, "cancelled");
                top_render(&t, status, (int64_t)mono_usec());
                if (a->iterations > 0 && i + 1 >= a->iterations)
                        break;

                /* Wait for the next refresh, or a key. */
                wake = (int64_t)mono_usec() + (int64_t)TOP_INTERVAL_USEC;
                while (!top_interrupted) {
                        struct pollfd p = { .fd = STDIN_FILENO, .events = POLLIN };
                        int64_t left = wake - (int64_t)mono_usec();
                        char key;

                        if (left <= 0)
                                break;
                        if (poll(keys ? &p : NULL, keys ? 1 : 0,
                                 (int)((left + (int64_t)USEC_PER_MSEC - 1) /
                                       (int64_t)USEC_PER_MSEC)) > 0 &&
                            read(STDIN_FILENO, &key, 1) == 1 && (key == 'q' || key == 'Q'))
                                top_interrupted = 1;
                }
        }

        if (keys)
                tcsetattr(STDIN_FILENO, TCSANOW, &saved);
        sigaction(SIGINT, &old_int, NULL);
        sigaction(SIGTERM, &old_term, NULL);
        for (size_t i = 0; i < TOP_SOURCE_CACHE; i++)
                free(t.cache[i].source);
        return r;
}
