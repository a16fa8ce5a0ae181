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
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon/hooks.h"
#include "shared/log.h"
#include "shared/macro.h"
#include "shared/time-util.h"

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
                log_warning("hook %s (job %" PRId64 ") was killed by SIG%s", k->program, k->job_id,
                            sigabbrev_np(si->si_status) ?: "?");
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

/* The string at `key` of `job`, or NULL. */
static const char *job_str(const json_t *job, const char *key)
{
        return json_string_value(json_object_get(job, key));
}

/*
 * A memory file holding `n` paths, each followed by a NUL byte, read from its start: the
 * hook's standard input. Returns the descriptor (close-on-exec) or a negative errno.
 */
static int outputs_memfd(const char *const *paths, size_t n)
{
        _cleanup_close_ int fd = memfd_create("imgd-hook-outputs", MFD_CLOEXEC);

        if (fd < 0)
                return -errno;
        for (size_t i = 0; i < n; i++) {
                size_t len = strlen(paths[i]) + 1, done = 0; /* with its NUL */

                while (done < len) {
                        ssize_t k = write(fd, paths[i] + done, len - done);
                        if (k < 0 && errno == EINTR)
                                continue;
                        if (k < 0)
                                return -errno;
                        done += (size_t)k;
                }
        }
        if (lseek(fd, 0, SEEK_SET) < 0)
                return -errno;
        return TAKE_FD(fd);
}

void hooks_run(hooks *h, const char *program, usec_t timeout_usec, const char *event,
               const json_t *job, const struct hook_names *names)
{
        struct hook *k = NULL;
        char *env[16] = {};
        _cleanup_free_ const char **json_outputs = NULL;
        const char *const *outputs = names ? names->outputs : NULL;
        size_t n_outputs = names ? names->n_outputs : 0;
        char *joined = NULL, id[32], count[32];
        size_t n_env = 0, len = 0;
        _cleanup_close_ int input = -1;
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

        if (!outputs) {
                /* No exact names given: those of the event object. */
                const json_t *list = json_object_get(job, "outputs");

                json_outputs = calloc(json_array_size(list) + 1, sizeof *json_outputs);
                for (size_t i = 0; json_outputs && i < json_array_size(list); i++) {
                        const json_t *o = json_array_get(list, i);

                        json_outputs[i] = json_string_value(json_object_get(o, "path")) ?: "";
                        n_outputs = i + 1;
                }
                outputs = json_outputs;
        }
        f = open_memstream(&joined, &len);
        if (f) {
                for (size_t i = 0; i < n_outputs; i++)
                        fprintf(f, "%s%s", i ? "\n" : "", outputs[i]);
                fclose(f);
        }
        input = outputs_memfd(outputs, n_outputs);
        if (input < 0)
                log_warning_errno(input, "hook %s: cannot pass the outputs on stdin: %m", program);
        snprintf(id, sizeof id, "%" JSON_INTEGER_FORMAT,
                 json_integer_value(json_object_get(job, "id")));
        snprintf(count, sizeof count, "%zu", n_outputs);
        env[n_env++] = env_entry("IMGD_EVENT", event);
        env[n_env++] = env_entry("IMGD_JOB_ID", id);
        env[n_env++] = env_entry("IMGD_SOURCE",
                                 names && names->source ? names->source : job_str(job, "source"));
        env[n_env++] = env_entry("IMGD_WATCH",
                                 names && names->watch ? names->watch : job_str(job, "watch"));
        env[n_env++] = env_entry("IMGD_PIPELINE", job_str(job, "pipeline"));
        env[n_env++] = env_entry("IMGD_OUTPUTS", joined);
        env[n_env++] = env_entry("IMGD_OUTPUTS_COUNT", count);
        env[n_env++] = env_entry("IMGD_ERROR", job_str(job, "error"));
        env[n_env++] = env_entry("IMGD_QUARANTINED", names && names->quarantined
                                                             ? names->quarantined
                                                             : job_str(job, "quarantined"));
        env[n_env++] = env_entry("PATH", "/usr/local/bin:/usr/bin:/bin");
        free(joined);

        pid = fork();
        if (pid == 0) {
                sigset_t all;
                int in = input >= 0 ? input : open("/dev/null", O_RDONLY | O_CLOEXEC);

                if (in >= 0)
                        dup2(in, STDIN_FILENO);
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
        *k = (struct hook){
                .owner = h, .pid = pid, .program = strdup(program), .job_id = strtoll(id, NULL, 10)
        };
        h->n++;
        r = sd_event_add_child(h->event, &k->child, pid, WEXITED, on_hook_exit, k);
        if (r >= 0)
                /* From the clock, not the loop's wake-up: a late daemon does not shorten it. */
                r = sd_event_add_time(h->event, &k->timer, CLOCK_MONOTONIC,
                                      mono_usec() + timeout_usec, 0, on_hook_timeout, k);
        if (r < 0) {
                log_warning_errno(r, "hook %s for job %s: cannot watch it: %m", program, id);
                kill(pid, SIGKILL);
                (void)waitpid(pid, NULL, 0);
                hook_clear(k);
        }
}
