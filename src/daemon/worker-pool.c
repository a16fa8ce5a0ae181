/* SPDX-License-Identifier: MIT */
/*
 * worker-pool.c - the daemon's worker processes; see worker-pool.h.
 *
 * A worker is started with fork+exec (libvips and GLib threads do not survive a bare fork,
 * and the daemon never loads libvips at all), with its end of a SOCK_SEQPACKET socketpair
 * as fd 3, every other descriptor closed, the signal mask cleared, and --threads: the CPUs
 * shared out between the workers (one each when there are as many workers as CPUs). The
 * daemon watches it with three event sources: the socket (results), the child (exit), and,
 * while it is busy, a timer (the job's wall-clock limit, after which it is killed).
 *
 * The done callback is called exactly once per dispatched job: from the socket handler
 * when a result arrives, or from the child handler when the worker died first (a result
 * already waiting in the socket is still taken). A dead worker is replaced; when workers die
 * soon after starting (a broken installation), replacement backs off up to 10 s.
 *
 * Killing a worker (its job's timeout, its memory) races with its result: after the daemon
 * was stopped (SIGSTOP, a loaded machine), a result and an overdue timeout are ready in the
 * same loop turn, in either order. So a timeout fires only for the job it was armed for,
 * and takes a result already waiting in the socket before it kills (the result wins); and a
 * worker once sent SIGKILL is `killed` for good: a result it still delivers finishes its
 * job, but it never goes back to idle and is never handed another job (it is replaced).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>

#include "shared/fault.h"
#include "shared/log.h"
#include "shared/string-table.h"
#include "shared/time-util.h"
#include "shared/wire.h"
#include "daemon/worker-pool.h"

#define WORKER_FD 3
#define RESPAWN_MIN_USEC (100 * USEC_PER_MSEC)
#define RESPAWN_MAX_USEC (10 * USEC_PER_SEC)
#define QUICK_DEATH_USEC (2 * USEC_PER_SEC)

/* STARTING until the worker's {"type":"ready"}: a worker that cannot even start libvips
 * is never handed a job. */
enum worker_state { WORKER_STARTING, WORKER_IDLE, WORKER_BUSY, WORKER_DOWN, _WORKER_STATE_MAX };

static const char *const worker_state_table[_WORKER_STATE_MAX] = {
        [WORKER_STARTING] = "starting",
        [WORKER_IDLE] = "idle",
        [WORKER_BUSY] = "busy",
        [WORKER_DOWN] = "down",
};
DEFINE_PRIVATE_STRING_TABLE_NAME(worker_state, enum worker_state, "unknown")

#define RSS_POLL_USEC (100 * USEC_PER_MSEC)

struct worker {
        worker_pool *pool;
        unsigned slot;
        enum worker_state state;
        pid_t pid;
        int sock;
        sd_event_source *io, *child, *timer, *respawn;
        int64_t job_id;
        char *failure; /* why the current job is being killed, if we kill it */
        bool killed;   /* sent SIGKILL: never handed another job, replaced once it is reaped */
        uint64_t started_usec;
        unsigned quick_deaths;
        unsigned jobs_done;
        uint64_t rss, peak_rss;  /* bytes, sampled while busy and after jobs */
        uint64_t rss_after_usec; /* when it was last sampled after a job */
        bool recycling;          /* retired on purpose: its exit is not a failure */
};

struct worker_pool {
        sd_event *event;
        char *worker_path;
        char threads_arg[32]; /* "--threads=N": libvips threads of each worker */
        char nice_arg[32];    /* "--nice=N": of the background workers */
        usec_t job_timeout_usec;
        uint64_t memory_limit;
        unsigned max_jobs;
        unsigned n_background; /* the last slots: background workers */
        uint64_t max_output_bytes;
        worker_done_fn done;
        void (*restarted)(worker_pool *p, const char *cause, void *userdata);
        void *userdata;
        sd_event_source *rss_timer;
        uint64_t peak_rss; /* the most any worker used */
        unsigned restarts;
        struct worker *workers;
        unsigned n;
};

static int worker_start(struct worker *w);

/* Resident set of a process in bytes, 0 if it cannot be read. */
static uint64_t rss_of(pid_t pid)
{
        char path[64], buf[128];
        unsigned long long size, resident;
        _cleanup_close_ int fd = -1;
        ssize_t k;

        snprintf(path, sizeof path, "/proc/%d/statm", (int)pid);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return 0;
        k = read(fd, buf, sizeof buf - 1);
        if (k <= 0)
                return 0;
        buf[k] = '\0';
        if (sscanf(buf, "%llu %llu", &size, &resident) != 2)
                return 0;
        return (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

static void sample_rss(struct worker *w)
{
        w->rss = rss_of(w->pid);
        if (w->rss > w->peak_rss)
                w->peak_rss = w->rss;
        if (w->rss > w->pool->peak_rss)
                w->pool->peak_rss = w->rss;
}

/* Sends SIGKILL to a busy worker, recording why its job failed (`why` is copied; NULL keeps
 * a reason given earlier). From here on the worker takes no new job. */
static void worker_kill(struct worker *w, const char *why)
{
        if (why && !w->failure)
                w->failure = strdup(why);
        w->killed = true;
        kill(w->pid, SIGKILL);
}

/* Retires an idle worker (its socket closes, it exits, it is replaced). */
static void worker_recycle(struct worker *w, const char *why)
{
        log_debug("worker %d: recycling after %u job(s) (%s)", (int)w->pid, w->jobs_done, why);
        w->recycling = true;
        w->state = WORKER_DOWN;
        w->io = sd_event_source_disable_unref(w->io);
        if (w->sock >= 0)
                close(w->sock);
        w->sock = -1;
}

/* While jobs run, kills a worker whose memory passes the limit (libvips cannot be stopped
 * cleanly inside a decoder; its job costs one attempt with the reason). */
static int on_rss_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
        worker_pool *p = userdata;
        bool busy = false;

        for (unsigned i = 0; i < p->n; i++) {
                struct worker *w = &p->workers[i];

                if (w->state != WORKER_BUSY)
                        continue;
                busy = true;
                sample_rss(w);
                if (p->memory_limit > 0 && w->rss > p->memory_limit && !w->killed) {
                        char why[64];

                        snprintf(why, sizeof why, "exceeded %llu MiB",
                                 (unsigned long long)(p->memory_limit >> 20));
                        log_warning("worker %d (job %" PRId64 "): %llu MiB resident, over the "
                                    "limit of %llu MiB; killing it",
                                    (int)w->pid, w->job_id, (unsigned long long)(w->rss >> 20),
                                    (unsigned long long)(p->memory_limit >> 20));
                        worker_kill(w, why);
                }
        }
        if (busy) {
                sd_event_source_set_time_relative(s, RSS_POLL_USEC);
                sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
        }
        return 0;
}

static void worker_finish_job(struct worker *w, const json_t *reply, const char *failure)
{
        int64_t id = w->job_id;

        w->timer = sd_event_source_disable_unref(w->timer);
        w->job_id = 0;
        free(w->failure);
        w->failure = NULL;
        /* A worker being killed is done for, whatever it still delivers: it must not be
         * handed the next job (which its death would then fail). */
        if (w->state == WORKER_BUSY)
                w->state = w->killed ? WORKER_DOWN : WORKER_IDLE;
        w->jobs_done++;
        if (w->state == WORKER_IDLE) {
                /* After a job, at most every RSS_POLL_USEC (reading /proc after each of a
                 * thousand small jobs a second costs 4% of the supervisor's CPU); in
                 * between, the checks below use the last sample, so a worker grown by a
                 * short job is replaced after at most RSS_POLL_USEC more of them (a long
                 * job is sampled by the timer while it runs, and again when it ends). */
                uint64_t now = mono_usec();

                if (now - w->rss_after_usec >= RSS_POLL_USEC) {
                        sample_rss(w);
                        w->rss_after_usec = now;
                }
                /* Long-running libvips processes fragment their heap: start afresh. */
                if (w->pool->max_jobs > 0 && w->jobs_done >= w->pool->max_jobs)
                        worker_recycle(w, "job limit");
                else if (w->pool->memory_limit > 0 && w->rss > w->pool->memory_limit / 2)
                        worker_recycle(w, "memory");
        }
        w->pool->done(w->pool, id, reply, failure, w->pool->userdata);
}

/* Takes a result waiting on the socket, if any. Returns 1 if a job was finished by it. */
static int worker_take_result(struct worker *w)
{
        _cleanup_(json_decrefp) json_t *msg = NULL;
        int fds[WIRE_MAX_FDS];
        size_t n_fds = 0;
        json_int_t id = 0;
        const char *type = NULL;
        int r;

        r = wire_recv(w->sock, &msg, fds, &n_fds);
        if (r < 0)
                return r == -EAGAIN ? 0 : r;
        for (size_t i = 0; i < n_fds; i++)
                close(fds[i]);
        if (json_unpack(msg, "{s:s}", "type", &type) == 0 && strcmp(type, "ready") == 0 &&
            w->state == WORKER_STARTING) {
                w->timer = sd_event_source_disable_unref(w->timer); /* its start timeout */
                w->state = WORKER_IDLE;
                log_debug("worker %d ready", (int)w->pid);
                w->pool->done(w->pool, 0, NULL, NULL, w->pool->userdata); /* a worker is free */
                return 0;
        }
        if (json_unpack(msg, "{s:s, s:I}", "type", &type, "id", &id) < 0 ||
            strcmp(type, "result") != 0 || w->state != WORKER_BUSY || id != w->job_id) {
                log_error("worker %d sent an unexpected message; killing it", (int)w->pid);
                worker_kill(w, NULL);
                return -EBADMSG;
        }
        worker_finish_job(w, msg, NULL);
        return 1;
}

static int on_worker_io(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
        struct worker *w = userdata;

        if (revents & EPOLLIN) {
                int r = worker_take_result(w);
                if (r < 0 && r != -EBADMSG)
                        /* Closed or broken: the child handler will report and replace it. */
                        w->io = sd_event_source_disable_unref(w->io);
                return 0;
        }
        if (revents & (EPOLLHUP | EPOLLERR))
                w->io = sd_event_source_disable_unref(w->io);
        return 0;
}

static int on_respawn(sd_event_source *s, uint64_t usec, void *userdata)
{
        struct worker *w = userdata;

        w->respawn = sd_event_source_disable_unref(w->respawn);
        if (worker_start(w) < 0) {
                /* Try again later, as if it had died at once. */
                w->quick_deaths++;
                uint64_t delay = RESPAWN_MIN_USEC << (w->quick_deaths < 7 ? w->quick_deaths : 7);
                if (delay > RESPAWN_MAX_USEC)
                        delay = RESPAWN_MAX_USEC;
                sd_event_add_time_relative(w->pool->event, &w->respawn, CLOCK_MONOTONIC, delay, 0,
                                           on_respawn, w);
        }
        return 0;
}

/* Why a worker ended, as worker_pool_options.restarted reports it. w->failure is set when
 * imgd killed it over a limit ("timed out ...", "exceeded ... MiB"). */
static const char *restart_cause(const struct worker *w, const siginfo_t *si)
{
        if (w->recycling)
                return "recycle";
        if (w->failure)
                return strncmp(w->failure, "exceeded", 8) == 0 ? "memory" : "timeout";
        return si->si_code == CLD_EXITED ? "exit" : "crash";
}

static int on_worker_exit(sd_event_source *s, const siginfo_t *si, void *userdata)
{
        struct worker *w = userdata;
        const char *cause = restart_cause(w, si);
        char reason[128];
        uint64_t delay = 0;

        if (si->si_code == CLD_EXITED)
                snprintf(reason, sizeof reason, "worker exited with status %d", si->si_status);
        else
                snprintf(reason, sizeof reason, "worker killed by SIG%s",
                         sigabbrev_np(si->si_status) ?: "?");

        if (w->state == WORKER_BUSY && worker_take_result(w) <= 0) {
                _cleanup_free_ char *why = w->failure ? strdup(w->failure) : strdup(reason);
                log_warning("worker %d (job %" PRId64 "): %s", (int)w->pid, w->job_id,
                            why ?: reason);
                worker_finish_job(w, NULL, why ?: reason);
        } else if (w->killed) {
                log_debug("worker %d: %s, as sent after its last job", (int)w->pid, reason);
        } else if (!w->recycling) {
                log_warning("worker %d: %s while %s", (int)w->pid, reason,
                            w->state == WORKER_STARTING ? "starting" : "idle");
        }
        w->pool->restarts++;
        if (w->pool->restarted)
                w->pool->restarted(w->pool, cause, w->pool->userdata);

        w->state = WORKER_DOWN;
        w->child = sd_event_source_disable_unref(w->child);
        w->io = sd_event_source_disable_unref(w->io);
        w->timer = sd_event_source_disable_unref(w->timer);
        if (w->sock >= 0)
                close(w->sock);
        w->sock = -1;
        w->pid = 0;

        if (!w->recycling && mono_usec() - w->started_usec < QUICK_DEATH_USEC &&
            w->jobs_done == 0) {
                w->quick_deaths++;
                delay = RESPAWN_MIN_USEC << (w->quick_deaths < 7 ? w->quick_deaths : 7);
                if (delay > RESPAWN_MAX_USEC)
                        delay = RESPAWN_MAX_USEC;
        } else {
                w->quick_deaths = 0;
        }
        sd_event_add_time_relative(w->pool->event, &w->respawn, CLOCK_MONOTONIC, delay, 0,
                                   on_respawn, w);
        return 0;
}

/*
 * Arms the worker's timer for job_timeout from now: from the clock, not from when the event
 * loop woke up (sd_event_add_time_relative), so that a daemon held up in between (stopped,
 * overloaded, a long commit) does not spend the worker's time.
 */
static int arm_limit(struct worker *w, sd_event_time_handler_t handler)
{
        return sd_event_add_time(w->pool->event, &w->timer, CLOCK_MONOTONIC,
                                 mono_usec() + w->pool->job_timeout_usec, 0, handler, w);
}

/*
 * The wall-clock limit of the job the timer was armed for. Only that job, still on this
 * worker, is timed out; and a result already waiting in the socket (the daemon was late to
 * look, not the worker to answer) finishes the job instead.
 */
static int on_timeout(sd_event_source *s, uint64_t usec, void *userdata)
{
        struct worker *w = userdata;
        char why[64];
        int r;

        if (s != w->timer || w->state != WORKER_BUSY || w->killed)
                return 0;
        w->timer = sd_event_source_disable_unref(w->timer);
        r = worker_take_result(w);
        if (r > 0 || r == -EBADMSG)
                return 0; /* the result won, or a bad message had the worker killed */
        snprintf(why, sizeof why, "timed out after %u s",
                 (unsigned)(w->pool->job_timeout_usec / USEC_PER_SEC));
        log_warning("worker %d (job %" PRId64 "): %s; killing it", (int)w->pid, w->job_id, why);
        free(w->failure);
        w->failure = NULL;
        worker_kill(w, why);
        return 0;
}

/*
 * A worker that has not said it is ready within job_timeout (libvips hung at start-up, the
 * worker stopped before its first message) is killed and replaced like one that died: it
 * would otherwise hold its slot for ever, and with workers = 1 nothing would run.
 */
static int on_start_timeout(sd_event_source *s, uint64_t usec, void *userdata)
{
        struct worker *w = userdata;
        char why[64];

        (void)usec;
        if (s != w->timer || w->state != WORKER_STARTING || w->killed)
                return 0;
        w->timer = sd_event_source_disable_unref(w->timer);
        if (worker_take_result(w) < 0 || w->state != WORKER_STARTING)
                return 0; /* its "ready" was waiting in the socket, or it sent nonsense */
        snprintf(why, sizeof why, "not ready after %u s",
                 (unsigned)(w->pool->job_timeout_usec / USEC_PER_SEC));
        log_warning("worker %d: %s; killing it", (int)w->pid, why);
        worker_kill(w, why);
        return 0;
}

static void set_limit(int resource, uint64_t soft, uint64_t hard)
{
        struct rlimit rl = { .rlim_cur = soft, .rlim_max = hard };

        (void)setrlimit(resource, &rl);
}

static bool is_background(const worker_pool *p, unsigned slot)
{
        return slot >= p->n - p->n_background;
}

static _Noreturn void worker_exec(const worker_pool *p, int sock, unsigned slot)
{
        const char *path = p->worker_path;
        sigset_t all;

        /* Only async-signal-safe calls from here on. */
        if (sock != WORKER_FD) {
                if (dup2(sock, WORKER_FD) < 0)
                        _exit(127);
        } else {
                fcntl(WORKER_FD, F_SETFD, 0);
        }
        close_range(WORKER_FD + 1, ~0U, 0);
        /* Limits: no core dumps of untrusted input's decoders; outputs no larger than the
         * largest source allowed; the address space as a backstop behind the RSS limit the
         * daemon enforces (libvips maps more than it touches: 4x). The worker lowers its
         * own soft CPU limit for each job. */
        set_limit(RLIMIT_CORE, 0, 0);
        if (p->max_output_bytes > 0)
                set_limit(RLIMIT_FSIZE, p->max_output_bytes, p->max_output_bytes);
#if !defined(__SANITIZE_ADDRESS__)
        /* (Not under AddressSanitizer, whose shadow memory needs a huge address space.) */
        if (p->memory_limit > 0) {
                uint64_t as =
                        p->memory_limit * 4 < (1ULL << 30) ? (1ULL << 30) : p->memory_limit * 4;
                set_limit(RLIMIT_AS, as, as);
        }
#endif
        set_limit(RLIMIT_NOFILE, 256, 256);
        /* A stop is the daemon's decision, never a signal to the whole process group
         * (systemd's KillMode=control-group, `kill -TERM -<pgid>`, ^C in a terminal): the
         * worker ignores SIGTERM, SIGINT and SIGHUP, set before the mask is cleared so that
         * one already pending is discarded, and kept across exec. It stops when the daemon
         * closes its socket or kills it with SIGKILL (its own timeouts, or the daemon's
         * death through PR_SET_PDEATHSIG). */
        for (int sig = 1; sig < NSIG; sig++)
                if (sig != SIGKILL && sig != SIGSTOP)
                        signal(sig, sig == SIGTERM || sig == SIGINT || sig == SIGHUP ? SIG_IGN
                                                                                     : SIG_DFL);
        sigemptyset(&all);
        sigprocmask(SIG_SETMASK, &all, NULL);
        /* A background worker lowers its own priority once libvips is up (--nice). */
        if (is_background(p, slot))
                execl(path, "imgd-worker", p->threads_arg, p->nice_arg, (char *)NULL);
        else
                execl(path, "imgd-worker", p->threads_arg, (char *)NULL);
        _exit(127);
}

static int worker_start(struct worker *w)
{
        int sv[2];
        pid_t pid;
        int r;

        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
                return log_error_errno(errno, "socketpair for worker: %m");
        pid = fork();
        if (pid < 0) {
                r = negative_errno();
                close(sv[0]);
                close(sv[1]);
                return log_error_errno(r, "fork worker: %m");
        }
        if (pid == 0)
                worker_exec(w->pool, sv[1], w->slot);
        close(sv[1]);
        fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);

        *w = (struct worker){
                .pool = w->pool,
                .slot = w->slot,
                .state = WORKER_STARTING,
                .pid = pid,
                .sock = sv[0],
                .respawn = w->respawn,
                .started_usec = mono_usec(),
                .quick_deaths = w->quick_deaths,
        };
        r = sd_event_add_child(w->pool->event, &w->child, pid, WEXITED, on_worker_exit, w);
        if (r >= 0)
                r = sd_event_add_io(w->pool->event, &w->io, w->sock, EPOLLIN, on_worker_io, w);
        if (r >= 0)
                r = arm_limit(w, on_start_timeout);
        if (r < 0) {
                log_error_errno(r, "watch worker %d: %m", (int)pid);
                kill(pid, SIGKILL);
                (void)waitpid(pid, NULL, 0);
                w->child = sd_event_source_disable_unref(w->child);
                w->io = sd_event_source_disable_unref(w->io);
                w->timer = sd_event_source_disable_unref(w->timer);
                close(w->sock);
                w->sock = -1;
                w->pid = 0;
                w->state = WORKER_DOWN;
                return r;
        }
        log_debug("worker %d started (slot %u)", (int)pid, w->slot);
        return 0;
}

/*
 * libvips threads for each of n workers: the CPUs this process may run on, shared out, at
 * least one. With as many workers as CPUs (the default), each worker computes on one thread:
 * the workers already keep every CPU busy, and more threads only add locking and memory.
 */
static unsigned worker_threads(unsigned n)
{
        cpu_set_t set;
        long cpus = 0;

        if (sched_getaffinity(0, sizeof set, &set) == 0)
                cpus = CPU_COUNT(&set);
        if (cpus < 1)
                cpus = sysconf(_SC_NPROCESSORS_ONLN);
        if (cpus < 1 || n == 0 || (unsigned long)cpus <= n)
                return 1;
        return (unsigned)cpus / n;
}

int worker_pool_new(sd_event *e, const struct worker_pool_options *o, worker_pool **ret)
{
        worker_pool *p = calloc(1, sizeof *p);
        int r = -ENOMEM;

        if (!p)
                return -ENOMEM;
        p->event = sd_event_ref(e);
        p->worker_path = strdup(o->worker_path);
        p->job_timeout_usec = o->job_timeout_usec;
        p->memory_limit = o->memory_limit;
        p->max_jobs = o->max_jobs;
        p->n_background = o->n_background < o->n_workers ? o->n_background : 0;
        p->max_output_bytes = o->max_output_bytes;
        p->done = o->done;
        p->restarted = o->restarted;
        p->userdata = o->userdata;
        p->n = o->n_workers;
        snprintf(p->nice_arg, sizeof p->nice_arg, "--nice=%d", WORKER_BACKGROUND_NICE);
        snprintf(p->threads_arg, sizeof p->threads_arg, "--threads=%u",
                 o->threads > 0 ? o->threads : worker_threads(p->n));
        p->workers = calloc(p->n, sizeof *p->workers);
        if (!p->worker_path || !p->workers)
                goto fail;
        for (unsigned i = 0; i < p->n; i++)
                p->workers[i] =
                        (struct worker){ .pool = p, .slot = i, .state = WORKER_DOWN, .sock = -1 };
        r = sd_event_add_time_relative(e, &p->rss_timer, CLOCK_MONOTONIC, RSS_POLL_USEC, 0,
                                       on_rss_timer, p);
        if (r < 0)
                goto fail;
        sd_event_source_set_enabled(p->rss_timer, SD_EVENT_OFF);
        for (unsigned i = 0; i < p->n; i++) {
                r = worker_start(&p->workers[i]);
                if (r < 0)
                        goto fail;
        }
        *ret = p;
        return 0;
fail:
        worker_pool_free(p);
        return r;
}

worker_pool *worker_pool_free(worker_pool *p)
{
        if (!p)
                return NULL;
        for (unsigned i = 0; p->workers && i < p->n; i++) {
                struct worker *w = &p->workers[i];

                w->io = sd_event_source_disable_unref(w->io);
                w->timer = sd_event_source_disable_unref(w->timer);
                w->respawn = sd_event_source_disable_unref(w->respawn);
                w->child = sd_event_source_disable_unref(w->child);
                if (w->sock >= 0)
                        close(w->sock); /* an idle worker sees end of stream and exits */
                w->sock = -1;
                if (w->pid > 0 && w->state == WORKER_BUSY)
                        kill(w->pid, SIGKILL);
        }
        for (unsigned i = 0; p->workers && i < p->n; i++) {
                struct worker *w = &p->workers[i];

                if (w->pid <= 0)
                        continue;
                for (int tries = 0; tries < 200; tries++) {
                        if (waitpid(w->pid, NULL, WNOHANG) != 0)
                                goto reaped;
                        usleep(10 * USEC_PER_MSEC);
                }
                kill(w->pid, SIGKILL);
                (void)waitpid(w->pid, NULL, 0);
        reaped:
                w->pid = 0;
                free(w->failure);
        }
        sd_event_source_disable_unref(p->rss_timer);
        free(p->workers);
        free(p->worker_path);
        sd_event_unref(p->event);
        free(p);
        return NULL;
}

void worker_pool_set_timeout(worker_pool *p, usec_t job_timeout_usec)
{
        p->job_timeout_usec = job_timeout_usec;
}

unsigned worker_pool_idle(const worker_pool *p)
{
        unsigned n = 0;

        for (unsigned i = 0; i < p->n; i++)
                n += p->workers[i].state == WORKER_IDLE;
        return n;
}

unsigned worker_pool_busy(const worker_pool *p)
{
        unsigned n = 0;

        for (unsigned i = 0; i < p->n; i++)
                n += p->workers[i].state == WORKER_BUSY;
        return n;
}

uint64_t worker_pool_peak_rss(const worker_pool *p)
{
        return p->peak_rss;
}

unsigned worker_pool_restarts(const worker_pool *p)
{
        return p->restarts;
}

unsigned worker_pool_size(const worker_pool *p)
{
        return p->n;
}

int worker_pool_dispatch(worker_pool *p, int64_t job_id, const json_t *request, const int *fds,
                         size_t n_fds, bool background)
{
        struct worker *w = NULL;
        int r;

        /* Background work from the last slot down (the background workers first), live work
         * from the first up. */
        for (unsigned k = 0; k < p->n && !w; k++) {
                unsigned i = background ? p->n - 1 - k : k;

                if (p->workers[i].state == WORKER_IDLE)
                        w = &p->workers[i];
        }
        if (!w)
                return -EBUSY;

        fault_delay("pool.dispatch");
        r = wire_send(w->sock, request, fds, n_fds);
        if (r < 0) {
                log_warning_errno(r, "send job %" PRId64 " to worker %d: %m; replacing it", job_id,
                                  (int)w->pid);
                worker_kill(w, NULL);
                w->state = WORKER_DOWN; /* the child handler replaces it */
                return r;
        }
        r = arm_limit(w, on_timeout);
        if (r < 0)
                log_warning_errno(r, "job %" PRId64 ": cannot arm its timeout: %m", job_id);
        w->state = WORKER_BUSY;
        w->job_id = job_id;
        if (p->memory_limit > 0) {
                sd_event_source_set_time_relative(p->rss_timer, RSS_POLL_USEC);
                sd_event_source_set_enabled(p->rss_timer, SD_EVENT_ONESHOT);
        }
        return 0;
}

int worker_pool_describe(const worker_pool *p, json_t *arr)
{
        for (unsigned i = 0; i < p->n; i++) {
                const struct worker *w = &p->workers[i];
                json_t *o = json_pack("{s:i, s:s, s:I, s:I, s:I, s:I, s:b}", "pid", (int)w->pid,
                                      "state", worker_state_name(w->state), "job",
                                      (json_int_t)w->job_id, "jobs_done", (json_int_t)w->jobs_done,
                                      "rss", (json_int_t)w->rss, "peak_rss",
                                      (json_int_t)w->peak_rss, "background", is_background(p, i));
                if (!o || json_array_append_new(arr, o) < 0)
                        return -ENOMEM;
        }
        return 0;
}

int worker_find_executable(char **ret)
{
        char self[PATH_MAX];
        const char *env = getenv("IMGD_WORKER");
        char *path = NULL;
        ssize_t n;

        if (env && *env) {
                path = strdup(env);
                goto found;
        }
        n = readlink("/proc/self/exe", self, sizeof self - 1);
        if (n > 0) {
                self[n] = '\0';
                char *slash = strrchr(self, '/');
                if (slash) {
                        *slash = '\0';
                        /* Beside imgd (the build tree), then where the install put it
                         * relative to imgd (sbin/../libexec/imgd), whatever the prefix. */
                        if (asprintf(&path, "%s/imgd-worker", self) < 0)
                                return -ENOMEM;
                        if (access(path, X_OK) == 0)
                                goto found;
                        free(path);
                        if (asprintf(&path, "%s/%s/imgd-worker", self, IMGD_LIBEXEC_FROM_SBIN) < 0)
                                return -ENOMEM;
                        if (access(path, X_OK) == 0)
                                goto found;
                        free(path);
                }
        }
        path = strdup(IMGD_LIBEXECDIR "/imgd-worker");
found:
        if (!path)
                return -ENOMEM;
        if (access(path, X_OK) < 0) {
                int r = negative_errno();
                free(path);
                return r;
        }
        *ret = path;
        return 0;
}
