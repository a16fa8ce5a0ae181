/* SPDX-License-Identifier: MIT */
/*
 * hooks.c - on_done / on_dead programs; see hooks.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

#include "imgd/hooks.h"
#include "imgd/log.h"

struct hook {
        hooks *owner;
        pid_t pid;
        char *program;
        int64_t job_id;
        sd_event_source *child, *timer;
        bool timed_out;
};

struct hooks {
        sd_event *event;
        struct hook running[HOOKS_MAX_RUNNING];
        unsigned n;
};

int hooks_new(sd_event *e, hooks **ret)
{
        hooks *h = calloc(1, sizeof *h);

        if (!h)
                return -ENOMEM;
        h->event = sd_event_ref(e);
        *ret = h;
        return 0;
}

static void hook_clear(struct hook *k)
{
        k->child = sd_event_source_disable_unref(k->child);
        k->timer = sd_event_source_disable_unref(k->timer);
        free(k->program);
        k->program = NULL;
        k->pid = 0;
        if (k->owner)
                k->owner->n--;
        k->owner = NULL;
}

hooks *hooks_free(hooks *h)
{
        if (!h)
                return NULL;
        for (unsigned i = 0; i < HOOKS_MAX_RUNNING; i++) {
                struct hook *k = &h->running[i];
                if (!k->owner)
                        continue;
                pid_t pid = k->pid;
                hook_clear(k);
                kill(pid, SIGKILL);
                (void)waitpid(pid, NULL, 0);
        }
        sd_event_unref(h->event);
        free(h);
        return NULL;
}

unsigned hooks_running(const hooks *h)
{
        return h->n;
}

static int on_hook_exit(sd_event_source *s, const siginfo_t *si, void *userdata)
{
        struct hook *k = userdata;

        if (k->timed_out)
                log_warning("hook %s (job %" PRId64 ") timed out and was killed", k->program,
                            k->job_id);
        else if (si->si_code != CLD_EXITED)
                log_warning("hook %s (job %" PRId64 ") was killed by SIG%s", k->program,
                            k->job_id, sigabbrev_np(si->si_status) ?: "?");
        else if (si->si_status != 0)
                log_warning("hook %s (job %" PRId64 ") failed with status %d", k->program,
                            k->job_id, si->si_status);
        else
                log_debug("hook %s (job %" PRId64 ") succeeded", k->program, k->job_id);
        hook_clear(k);
        return 0;
}

static int on_hook_timeout(sd_event_source *s, uint64_t usec, void *userdata)
{
        struct hook *k = userdata;

        k->timed_out = true;
        kill(k->pid, SIGKILL);
        return 0;
}

static char *env_entry(const char *name, const char *value)
{
        char *e;

        return asprintf(&e, "%s=%s", name, value ? value : "") < 0 ? NULL : e;
}

void hooks_run(hooks *h, const char *program, unsigned timeout_s, const char *event,
               const json_t *job)
{
        struct hook *k = NULL;
        char *env[16] = {};
        char *outputs = NULL, id[32];
        size_t n_env = 0, len = 0;
        FILE *f;
        pid_t pid;
        int r;

        for (unsigned i = 0; i < HOOKS_MAX_RUNNING && !k; i++)
                if (!h->running[i].owner)
                        k = &h->running[i];
        if (!k) {
                log_warning("hook %s not run for job %" JSON_INTEGER_FORMAT ": %d hooks are "
                            "already running",
                            program, json_integer_value(json_object_get(job, "id")),
                            HOOKS_MAX_RUNNING);
                return;
        }

        f = open_memstream(&outputs, &len);
        if (f) {
                size_t i;
                json_t *o;
                json_array_foreach(json_object_get(job, "outputs"), i, o)
                        fprintf(f, "%s%s", i ? "\n" : "",
                                json_string_value(json_object_get(o, "path")) ?: "");
                fclose(f);
        }
        snprintf(id, sizeof id, "%" JSON_INTEGER_FORMAT,
                 json_integer_value(json_object_get(job, "id")));
        env[n_env++] = env_entry("IMGD_EVENT", event);
        env[n_env++] = env_entry("IMGD_JOB_ID", id);
        env[n_env++] = env_entry("IMGD_SOURCE", json_string_value(json_object_get(job, "source")));
        env[n_env++] = env_entry("IMGD_WATCH", json_string_value(json_object_get(job, "watch")));
        env[n_env++] = env_entry("IMGD_PIPELINE",
                                 json_string_value(json_object_get(job, "pipeline")));
        env[n_env++] = env_entry("IMGD_OUTPUTS", outputs);
        env[n_env++] = env_entry("IMGD_ERROR", json_string_value(json_object_get(job, "error")));
        env[n_env++] = env_entry("IMGD_QUARANTINED",
                                 json_string_value(json_object_get(job, "quarantined")));
        env[n_env++] = env_entry("PATH", "/usr/local/bin:/usr/bin:/bin");
        free(outputs);

        pid = fork();
        if (pid == 0) {
                sigset_t all;
                int null = open("/dev/null", O_RDONLY | O_CLOEXEC);

                if (null >= 0)
                        dup2(null, STDIN_FILENO);
                close_range(3, ~0U, 0);
                sigemptyset(&all);
                sigprocmask(SIG_SETMASK, &all, NULL);
                execle(program, program, (char *)NULL, env);
                _exit(127);
        }
        for (size_t i = 0; i < n_env; i++)
                free(env[i]);
        if (pid < 0) {
                log_warning_errno(errno, "hook %s for job %s: fork: %m", program, id);
                return;
        }
        *k = (struct hook){ .owner = h, .pid = pid, .program = strdup(program),
                            .job_id = strtoll(id, NULL, 10) };
        h->n++;
        r = sd_event_add_child(h->event, &k->child, pid, WEXITED, on_hook_exit, k);
        if (r >= 0)
                r = sd_event_add_time_relative(h->event, &k->timer, CLOCK_MONOTONIC,
                                               (uint64_t)timeout_s * 1000000ULL, 0,
                                               on_hook_timeout, k);
        if (r < 0) {
                log_warning_errno(r, "hook %s for job %s: cannot watch it: %m", program, id);
                kill(pid, SIGKILL);
                (void)waitpid(pid, NULL, 0);
                hook_clear(k);
        }
}
