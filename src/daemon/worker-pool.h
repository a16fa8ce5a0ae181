/* SPDX-License-Identifier: MIT */
/*
 * worker-pool.h - the daemon's side of its worker processes. The pool keeps `n` workers running:
 * each is the imgd-worker binary, started with fork+exec and connected to the daemon by a
 * SOCK_SEQPACKET socketpair (see wire.h). A worker does one job at a time.
 *
 * Worker states:  starting --ready--> idle --worker_pool_dispatch()--> busy --result--> idle
 *                                                            |
 *                        exit, signal, timeout, bad message  v
 *                                                      (killed, reaped) --> replaced
 *
 * Every dispatched job ends in exactly one call of the done callback: with the worker's
 * result message, or with reply = NULL and a reason ("worker killed by SIGSEGV",
 * "timed out after 120 s", "worker exited with status 1"). A worker that dies is replaced.
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "shared/time-util.h"

typedef struct worker_pool worker_pool;

/* How much nicer (setpriority(2)) than the daemon the background workers run. */
#define WORKER_BACKGROUND_NICE 10

/*
 * Called once per dispatched job. reply: the worker's result (borrowed; NULL if the worker
 * failed), failure: why it failed (NULL when reply is set).
 */
typedef void (*worker_done_fn)(worker_pool *p, int64_t job_id, const json_t *reply,
                               const char *failure, void *userdata);

struct worker_pool_options {
        const char *worker_path; /* the imgd-worker executable */
        unsigned n_workers;
        unsigned threads; /* libvips threads of each worker; 0: the CPUs shared out, at least 1 */
        usec_t job_timeout_usec;
        uint64_t memory_limit; /* resident bytes a busy worker may use; 0: none */
        unsigned max_jobs;     /* jobs before a worker is replaced; 0: never */
        /* Workers for background work (issue 17), the last n_background of n_workers: they run
         * WORKER_BACKGROUND_NICE below the daemon's CPU priority once started (imgd-worker
         * --nice: started nice, a worker would start slowly on a busy machine), so that a live
         * render sharing a CPU with one of them goes first (on an idle CPU they render at full
         * speed).
         * Background jobs go to them first, live jobs to the others first. */
        unsigned n_background;
        uint64_t max_output_bytes; /* RLIMIT_FSIZE of workers; 0: none */
        worker_done_fn done;       /* also called with job_id 0 when a worker becomes ready */
        /* Called when a worker process ended and is to be replaced, with the cause: "crash"
         * (killed by a signal imgd did not send), "exit" (it exited by itself), "timeout"
         * and "memory" (imgd killed it over limits.job_timeout or limits.worker_memory),
         * "recycle" (retired on purpose, limits.worker_max_jobs or its memory). May be NULL. */
        void (*restarted)(worker_pool *p, const char *cause, void *userdata);
        void *userdata;
};

/* Starts the workers. Returns 0 and *ret, or a negative errno (logged). */
int worker_pool_new(sd_event *e, const struct worker_pool_options *o, worker_pool **ret);

/* Stops and reaps all workers: an idle one sees its socket close and exits, a busy one is
 * killed with SIGKILL, and one still there after 2 s too (workers ignore SIGTERM). Accepts
 * NULL. */
worker_pool *worker_pool_free(worker_pool *p);

/* Changes the wall-clock limit for jobs dispatched from now on. */
void worker_pool_set_timeout(worker_pool *p, usec_t job_timeout_usec);

/* The largest resident set any worker reached, in bytes; worker processes replaced. */
uint64_t worker_pool_peak_rss(const worker_pool *p);
unsigned worker_pool_restarts(const worker_pool *p);

/* Number of workers able to take a job now. */
unsigned worker_pool_idle(const worker_pool *p);
unsigned worker_pool_busy(const worker_pool *p);
unsigned worker_pool_size(const worker_pool *p);

/*
 * Hands a job to an idle worker, a background worker first for background work and another
 * first for live work: sends the request with the descriptors (which stay owned by the
 * caller; the worker receives duplicates). Returns 0, or -EBUSY when no worker is idle, or a
 * negative errno when sending failed (the worker is then replaced and the callback is not
 * called).
 */
int worker_pool_dispatch(worker_pool *p, int64_t job_id, const json_t *request, const int *fds,
                         size_t n_fds, bool background);

/* Appends one object per worker ({"pid":..., "state":"idle"|"busy", "job":id, "background":
 * bool, ...}) to arr. */
int worker_pool_describe(const worker_pool *p, json_t *arr);

/* Finds the imgd-worker executable: $IMGD_WORKER; else next to /proc/self/exe (the build
 * tree); else at the install's place relative to it (../libexec/imgd/imgd-worker from sbin,
 * whatever prefix it was installed under); else the configured IMGD_LIBEXECDIR. Returns 0
 * and *ret (caller frees), or a negative errno. */
int worker_find_executable(char **ret);
