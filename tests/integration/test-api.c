/* SPDX-License-Identifier: MIT */
/*
 * test-api.c - the control commands end to end: the real imgd (with real workers) on a
 * temporary tree, driven through the real socket by imgctl and, where the protocol itself
 * is the subject (events, slow subscribers, refused peers), by a raw socket client.
 *
 * Covers retry (one dead job, --dead), cancel of a queued job, pause/resume/drain, enqueue
 * (a file no watch event announced, a file outside the watches, hidden names, relative
 * paths), metrics against status, event subscriptions (raw and `imgctl events`), a
 * subscriber that never reads being dropped while imgd keeps answering, verify (all good,
 * altered, missing, orphaned, a manifest the ledger contradicts), top without a terminal,
 * the refusal of a peer that is not root, imgd's user or in its group, and --help of every
 * command.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#include "shared/hash.h"
#include "shared/proto.h"
#include "testutil.h"

#define ONE_VARIANT                                                                                \
        "( { name = \"s\"; width = 64; height = 64; fit = \"cover\"; format = \"webp\"; } )"
#define TWO_VARIANTS                                                                               \
        "( { name = \"s\"; width = 64; height = 64; fit = \"cover\"; format = \"webp\"; },"        \
        "  { name = \"m\"; width = 128; height = 96; fit = \"inside\"; format = \"jpeg\"; } )"

/* ---- helpers ---------------------------------------------------------------------------- */

/* Runs imgctl with up to three arguments and --json; fails the test unless it exits 0. */
static json_t *imgctl_json(struct tu_daemon *d, const char *cmd, const char *a1, const char *a2)
{
        char *out = NULL;
        json_error_t err;
        json_t *j;
        int r;

        if (a2)
                r = tu_imgctl(d, &out, cmd, a1, a2, "--json", NULL);
        else if (a1)
                r = tu_imgctl(d, &out, cmd, a1, "--json", NULL);
        else
                r = tu_imgctl(d, &out, cmd, "--json", NULL);
        if (r != 0)
                fail_msg("imgctl %s %s failed (%d): %s", cmd, a1 ? a1 : "", r, out ? out : "");
        j = json_loads(out, 0, &err);
        if (!j)
                fail_msg("imgctl %s --json printed no JSON (%s): %s", cmd, err.text, out);
        free(out);
        return j;
}

static json_int_t status_int(struct tu_daemon *d, const char *group, const char *key)
{
        json_t *st = imgctl_json(d, "status", NULL, NULL);
        json_t *o = group ? json_object_get(st, group) : st;
        json_t *v = json_object_get(o, key);
        json_int_t n;

        if (json_is_boolean(v))
                n = json_is_true(v);
        else {
                assert_true(json_is_integer(v));
                n = json_integer_value(v);
        }
        json_decref(st);
        return n;
}

static json_int_t count_state(struct tu_daemon *d, const char *state)
{
        return status_int(d, "jobs", state);
}

/* Waits up to timeout_ms for `state` to hold `want` jobs. */
static void wait_count(struct tu_daemon *d, const char *state, json_int_t want, int timeout_ms)
{
        json_int_t n = -1;

        for (int waited = 0; waited <= timeout_ms; waited += 50) {
                n = count_state(d, state);
                if (n == want)
                        return;
                usleep(50 * 1000);
        }
        fail_msg("%lld %s job(s) after %d ms, expected %lld", (long long)n, state, timeout_ms,
                 (long long)want);
}

/* The id of the newest job in `state`. */
static json_int_t newest_id(struct tu_daemon *d, const char *state)
{
        json_t *jobs = imgctl_json(d, "jobs", "--state", state);
        json_t *first = json_array_get(json_object_get(jobs, "jobs"), 0);
        json_int_t id;

        if (!first)
                fail_msg("no %s job", state);
        id = json_integer_value(json_object_get(first, "id"));
        json_decref(jobs);
        return id;
}

static json_t *show(struct tu_daemon *d, json_int_t id)
{
        char ids[32];
        json_t *r, *job;

        snprintf(ids, sizeof ids, "%lld", (long long)id);
        r = imgctl_json(d, "show", ids, NULL);
        job = json_incref(json_object_get(r, "job"));
        json_decref(r);
        return job;
}

static const char *job_state(const json_t *job)
{
        return json_string_value(json_object_get(job, "state"));
}

/* An image made beside the watched tree, then renamed into it (one IN_MOVED_TO). */
static void drop_image(struct tu_daemon *d, const char *name, unsigned w, unsigned h)
{
        char *tmp = tu_path("%s/%s", d->root, name);
        char *dest = tu_path("%s/%s", d->uploads, name);

        tu_make_image(tmp, w, h, "jpeg", false);
        if (rename(tmp, dest) != 0)
                fail_msg("rename %s -> %s: %m", tmp, dest);
        free(tmp);
        free(dest);
}

static void drop_text(struct tu_daemon *d, const char *name)
{
        char *p = tu_path("%s/%s", d->uploads, name);

        tu_write_file(p, "this is not an image\n", (size_t)-1);
        free(p);
}

static void assert_contains(const char *haystack, const char *needle)
{
        if (!haystack || !strstr(haystack, needle))
                fail_msg("expected '%s' in:\n%s", needle, haystack ? haystack : "(nothing)");
}

static unsigned count_lines(const char *s)
{
        unsigned n = 0;

        for (; s && *s; s++)
                if (*s == '\n')
                        n++;
        return n;
}

/* A raw protocol client. */
struct raw {
        int fd;
        char buf[2 * PROTO_MAX_LINE];
        size_t len;
};

static void raw_connect(struct raw *c, const char *path)
{
        struct sockaddr_un addr = { .sun_family = AF_UNIX };

        c->len = 0;
        c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(c->fd >= 0);
        assert_true(strlen(path) < sizeof addr.sun_path);
        strcpy(addr.sun_path, path);
        if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) < 0)
                fail_msg("connect %s: %m", path);
}

static void raw_send(struct raw *c, const char *line)
{
        size_t n = strlen(line);

        assert_int_equal(send(c->fd, line, n, MSG_NOSIGNAL), (ssize_t)n);
}

/*
 * The next line (without its newline; caller frees), or NULL when none came within
 * timeout_ms or the connection ended (*ret_eof set, if given).
 */
static char *raw_read_line(struct raw *c, int timeout_ms, bool *ret_eof)
{
        int64_t deadline = tu_now_us() + (int64_t)timeout_ms * 1000;

        if (ret_eof)
                *ret_eof = false;
        for (;;) {
                char *nl = memchr(c->buf, '\n', c->len);
                struct pollfd p = { .fd = c->fd, .events = POLLIN };
                int64_t left;
                ssize_t k;

                if (nl) {
                        size_t n = (size_t)(nl - c->buf);
                        char *line = strndup(c->buf, n);

                        assert_non_null(line);
                        memmove(c->buf, nl + 1, c->len - n - 1);
                        c->len -= n + 1;
                        return line;
                }
                assert_true(c->len < sizeof c->buf);
                left = deadline - tu_now_us();
                if (left <= 0 || poll(&p, 1, (int)(left / 1000) + 1) <= 0)
                        return NULL;
                k = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
                if (k <= 0) {
                        if (ret_eof)
                                *ret_eof = true;
                        return NULL;
                }
                c->len += (size_t)k;
        }
}

/* The daemon delivers events only once main.c wires them (api.control set, api_on_event
 * registered with the scheduler); say so rather than time out. */
static void assert_events_wired(struct tu_daemon *d)
{
        if (status_int(d, NULL, "subscribers") == 0)
                fail_msg("imgd counts no subscriber: is main.c wiring events (d->api.control = "
                         "d->control; scheduler_set_event_handler(d->scheduler, api_on_event, "
                         "&d->api))?");
}

/* Sends one request line and returns the result of its answer (fails the test on an error
 * answer). */
static json_t *raw_call(struct raw *c, const char *request)
{
        char *line, *error = NULL;
        json_t *result = NULL;

        raw_send(c, request);
        line = raw_read_line(c, 10000, NULL);
        assert_non_null(line);
        if (proto_parse_response(line, strlen(line), &result, &error) < 0)
                fail_msg("%s -> %s", request, error ? error : line);
        free(line);
        return result;
}

static json_int_t raw_status_int(struct raw *c, const char *key)
{
        json_t *st = raw_call(c, "{\"v\":1,\"cmd\":\"status\"}\n");
        json_int_t n = json_integer_value(json_object_get(st, key));

        json_decref(st);
        return n;
}

/* Subscribes c to events and checks the answer. */
static void raw_subscribe(struct raw *c, const char *path)
{
        char *line;

        raw_connect(c, path);
        raw_send(c, "{\"v\":1,\"cmd\":\"events\"}\n");
        line = raw_read_line(c, 5000, NULL);
        assert_non_null(line);
        assert_string_equal(line, "{\"v\":1,\"ok\":true,\"result\":{\"subscribed\":true}}");
        free(line);
}

/* ---- tests ------------------------------------------------------------------------------ */

/* A dead job put back by retry runs again (and dies again: its error history grows);
 * retry --dead puts back every dead job and says how many; other states are refused. */
static void test_retry(void **state)
{
        struct tu_daemon d;
        json_t *job, *r;
        json_int_t id;
        char *out = NULL, ids[32];

        (void)state;
        tu_daemon_setup(&d, ONE_VARIANT, 1, NULL);
        tu_daemon_start(&d);
        drop_text(&d, "bad.jpg");
        tu_daemon_wait_idle(&d, 30);
        assert_int_equal(count_state(&d, "dead"), 1);
        id = newest_id(&d, "dead");
        snprintf(ids, sizeof ids, "%lld", (long long)id);

        assert_int_equal(tu_imgctl(&d, &out, "retry", ids, NULL), 0);
        assert_contains(out, "queued again");
        free(out);
        tu_daemon_wait_idle(&d, 30);
        job = show(&d, id);
        assert_string_equal(job_state(job), "dead");
        assert_int_equal(json_array_size(json_object_get(job, "errors")), 2);
        json_decref(job);

        /* Two dead jobs now; --dead retries both. */
        drop_text(&d, "worse.jpg");
        tu_daemon_wait_idle(&d, 30);
        assert_int_equal(count_state(&d, "dead"), 2);
        r = imgctl_json(&d, "retry", "--dead", NULL);
        assert_int_equal(json_integer_value(json_object_get(r, "retried")), 2);
        assert_int_equal(json_integer_value(json_object_get(r, "remaining")), 0);
        json_decref(r);
        tu_daemon_wait_idle(&d, 30);
        assert_int_equal(count_state(&d, "dead"), 2);
        job = show(&d, id);
        assert_int_equal(json_array_size(json_object_get(job, "errors")), 3);
        json_decref(job);

        /* Nothing dead: 0. A done job, an unknown job, both or neither: refused. */
        drop_image(&d, "good.jpg", 200, 150);
        tu_daemon_wait_idle(&d, 30);
        snprintf(ids, sizeof ids, "%lld", (long long)newest_id(&d, "done"));
        assert_int_equal(tu_imgctl(&d, &out, "retry", ids, NULL), 1);
        assert_contains(out, "only dead jobs can be retried");
        free(out);
        assert_int_equal(tu_imgctl(&d, &out, "retry", "999", NULL), 1);
        assert_contains(out, "no job 999");
        free(out);
        assert_int_equal(tu_imgctl(&d, NULL, "retry", NULL), 2);
        assert_int_equal(tu_imgctl(&d, NULL, "retry", "1", "--dead", NULL), 2);
        assert_int_equal(tu_imgctl(&d, NULL, "retry", "x", NULL), 2);

        tu_daemon_cleanup(&d);
}

/* A job queued while intake is paused can be cancelled; it then never runs. Running and
 * finished jobs cannot be cancelled. */
static void test_cancel_queued(void **state)
{
        struct tu_daemon d;
        json_t *job, *r;
        json_int_t id;
        char *out = NULL, ids[32];

        (void)state;
        tu_daemon_setup(&d, ONE_VARIANT, 1, NULL);
        tu_daemon_start(&d);

        r = imgctl_json(&d, "pause", NULL, NULL);
        assert_true(json_is_true(json_object_get(r, "paused")));
        json_decref(r);
        assert_int_equal(status_int(&d, NULL, "paused"), 1);
        drop_image(&d, "a.jpg", 300, 200);
        wait_count(&d, "queued", 1, 10000);
        id = newest_id(&d, "queued");
        snprintf(ids, sizeof ids, "%lld", (long long)id);

        assert_int_equal(tu_imgctl(&d, &out, "cancel", ids, NULL), 0);
        assert_contains(out, "cancelled (it was queued)");
        free(out);
        job = show(&d, id);
        assert_string_equal(job_state(job), "cancelled");
        json_decref(job);
        assert_int_equal(tu_imgctl(&d, &out, "cancel", ids, NULL), 1);
        assert_contains(out, "cancelled already");
        free(out);
        assert_int_equal(tu_imgctl(&d, &out, "cancel", "#4242", NULL), 1);
        assert_contains(out, "no job 4242");
        free(out);

        r = imgctl_json(&d, "resume", NULL, NULL);
        assert_false(json_is_true(json_object_get(r, "paused")));
        json_decref(r);
        tu_daemon_wait_idle(&d, 30);
        assert_int_equal(count_state(&d, "done"), 0);
        assert_int_equal(count_state(&d, "cancelled"), 1);
        assert_int_equal(tu_count_files(d.media, "*.webp"), 0);

        tu_daemon_cleanup(&d);
}

/* Pause keeps new jobs queued, resume runs them; drain returns once nothing runs and leaves
 * intake paused. */
static void test_pause_resume_drain(void **state)
{
        struct tu_daemon d;
        json_t *r;
        char *out = NULL, name[32];

        (void)state;
        tu_daemon_setup(&d, ONE_VARIANT, 2, NULL);
        tu_daemon_start(&d);

        assert_int_equal(tu_imgctl(&d, &out, "pause", NULL), 0);
        assert_contains(out, "intake paused");
        free(out);
        assert_int_equal(tu_imgctl(&d, &out, "status", NULL), 0);
        assert_contains(out, "intake   paused");
        free(out);
        drop_image(&d, "a.jpg", 400, 300);
        wait_count(&d, "queued", 1, 10000);
        usleep(700 * 1000);
        assert_int_equal(count_state(&d, "queued"), 1);
        assert_int_equal(count_state(&d, "done"), 0);
        assert_int_equal(status_int(&d, NULL, "running"), 0);

        assert_int_equal(tu_imgctl(&d, &out, "resume", NULL), 0);
        assert_contains(out, "intake resumed");
        free(out);
        tu_daemon_wait_idle(&d, 30);
        assert_int_equal(count_state(&d, "done"), 1);
        assert_int_equal(status_int(&d, NULL, "paused"), 0);

        /* Drain while jobs run. The timing is done over one raw connection, as spawning
         * imgctl can take longer than a job on a loaded machine: paused, the four files
         * wait in the queue; resumed, imgd answers status with jobs running; drain, asked
         * then, finds them running; imgctl drain returns only once none runs. */
        assert_int_equal(tu_imgctl(&d, NULL, "pause", NULL), 0);
        for (int i = 0; i < 4; i++) {
                snprintf(name, sizeof name, "big%d.jpg", i);
                drop_image(&d, name, 3000, 2000);
        }
        wait_count(&d, "queued", 4, 30000);
        {
                struct raw c;
                int64_t deadline = tu_now_us() + 30 * 1000000;

                raw_connect(&c, d.socket);
                json_decref(raw_call(&c, "{\"v\":1,\"cmd\":\"resume\"}\n"));
                while (raw_status_int(&c, "running") == 0) {
                        assert_true(tu_now_us() < deadline);
                        usleep(2000);
                }
                r = raw_call(&c, "{\"v\":1,\"cmd\":\"drain\"}\n");
                assert_true(json_is_true(json_object_get(r, "paused")));
                assert_true(json_integer_value(json_object_get(r, "running")) > 0);
                json_decref(r);
                close(c.fd);
        }
        r = imgctl_json(&d, "drain", "--timeout", "120");
        assert_true(json_is_true(json_object_get(r, "paused")));
        assert_int_equal(json_integer_value(json_object_get(r, "running")), 0);
        json_decref(r);
        assert_int_equal(status_int(&d, NULL, "running"), 0);
        assert_int_equal(count_state(&d, "running"), 0);
        assert_int_equal(status_int(&d, NULL, "paused"), 1);
        assert_int_equal(count_state(&d, "done") + count_state(&d, "queued"), 5);
        assert_true(count_state(&d, "done") >= 2); /* those found running finished */

        assert_int_equal(tu_imgctl(&d, NULL, "resume", NULL), 0);
        tu_daemon_wait_idle(&d, 60);
        assert_int_equal(count_state(&d, "done"), 5);
        assert_int_equal(tu_imgctl(&d, NULL, "drain", "--timeout", "x", NULL), 2);
        assert_int_equal(tu_imgctl(&d, NULL, "resume", NULL), 0);

        tu_daemon_cleanup(&d);
}

/*
 * Publishes `content` at dest the way some tools do atomically: written to an unnamed
 * O_TMPFILE in `tmpdir` (outside the watch, same file system), then given its name with
 * linkat(), then closed. The watch sees an IN_CREATE of a file with one link, which it
 * leaves for the close, and the close is reported where the file was opened: no event
 * announces it as complete.
 */
static void publish_tmpfile(const char *tmpdir, const char *dest, const void *content, size_t len)
{
        char proc[64];
        int fd = open(tmpdir, O_TMPFILE | O_WRONLY | O_CLOEXEC, 0644);

        if (fd < 0)
                fail_msg("O_TMPFILE in %s: %m", tmpdir);
        assert_int_equal(write(fd, content, len), (ssize_t)len);
        snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
        if (linkat(AT_FDCWD, proc, AT_FDCWD, dest, AT_SYMLINK_FOLLOW) < 0)
                fail_msg("linkat %s: %m", dest);
        close(fd);
}

/* enqueue makes a job of a file no watch event announced (published with O_TMPFILE and
 * linkat()), answers the existing job when asked again, takes relative paths, and refuses
 * files outside the watches, hidden names, other refusals of intake and missing files. */
static void test_enqueue(void **state)
{
        struct tu_daemon d;
        char *src, *dest, *hidden, *out = NULL, *cwd;
        json_t *r, *jobs;
        json_int_t id;

        (void)state;
        tu_daemon_setup(&d, ONE_VARIANT, 1, NULL);
        tu_daemon_start(&d);
        assert_int_equal(tu_imgctl(&d, NULL, "pause", NULL), 0);

        src = tu_path("%s/linked.jpg", d.root);
        dest = tu_path("%s/linked.jpg", d.uploads);
        tu_make_image(src, 320, 240, "jpeg", false);
        {
                size_t len;
                void *content = tu_read_file(src, &len);

                assert_non_null(content);
                publish_tmpfile(d.root, dest, content, len);
                free(content);
        }
        usleep(700 * 1000);
        jobs = imgctl_json(&d, "jobs", NULL, NULL);
        assert_int_equal(json_array_size(json_object_get(jobs, "jobs")), 0);
        json_decref(jobs);

        r = imgctl_json(&d, "enqueue", dest, NULL);
        assert_true(json_is_true(json_object_get(r, "created")));
        id = json_integer_value(json_object_get(r, "id"));
        assert_true(id > 0);
        assert_string_equal(json_string_value(json_object_get(r, "state")), "queued");
        assert_string_equal(json_string_value(json_object_get(r, "source")), dest);
        json_decref(r);
        assert_int_equal(count_state(&d, "queued"), 1);

        /* Again, and relative to the current directory: the same job. */
        cwd = getcwd(NULL, 0);
        assert_non_null(cwd);
        assert_int_equal(chdir(d.uploads), 0);
        r = imgctl_json(&d, "enqueue", "linked.jpg", NULL);
        assert_int_equal(chdir(cwd), 0);
        free(cwd);
        assert_false(json_is_true(json_object_get(r, "created")));
        assert_int_equal(json_integer_value(json_object_get(r, "id")), id);
        json_decref(r);
        assert_int_equal(tu_imgctl(&d, &out, "enqueue", dest, NULL), 0);
        assert_contains(out, "exists already (queued)");
        free(out);

        assert_int_equal(tu_imgctl(&d, &out, "enqueue", "/etc/passwd", NULL), 1);
        assert_contains(out, "not below a watched folder");
        free(out);
        hidden = tu_path("%s/.hidden.jpg", d.uploads);
        assert_int_equal(rename(src, hidden), 0);
        assert_int_equal(tu_imgctl(&d, &out, "enqueue", hidden, NULL), 1);
        assert_contains(out, "hidden or temporary name");
        free(out);
        {
                /* intake's own refusals come through: here, a file with two links. */
                char *second = tu_path("%s/second.jpg", d.uploads);

                assert_int_equal(link(hidden, second), 0);
                assert_int_equal(tu_imgctl(&d, &out, "enqueue", second, NULL), 1);
                assert_contains(out, "hard links");
                free(out);
                free(second);
        }
        assert_int_equal(tu_imgctl(&d, &out, "enqueue", "/nonexistent/x.jpg", NULL), 1);
        assert_contains(out, "No such file");
        free(out);
        assert_int_equal(tu_imgctl(&d, NULL, "enqueue", NULL), 2);

        assert_int_equal(tu_imgctl(&d, NULL, "resume", NULL), 0);
        tu_daemon_wait_idle(&d, 30);
        assert_int_equal(count_state(&d, "done"), 1);
        assert_int_equal(tu_count_files(d.media, "linked_s.webp"), 1);

        free(hidden);
        free(src);
        free(dest);
        tu_daemon_cleanup(&d);
}

/* The value of the sample `series` in a Prometheus exposition; -1 if absent. */
static double prom_value(const char *text, const char *series)
{
        size_t n = strlen(series);

        for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
                if (strncmp(l, series, n) == 0 && l[n] == ' ')
                        return strtod(l + n + 1, NULL);
        return -1;
}

/* metrics agrees with status: jobs by state, the histogram's count, failures, workers. */
static void test_metrics(void **state)
{
        struct tu_daemon d;
        char *out = NULL, series[128];
        static const char *const states[] = { "queued", "running", "retry",
                                              "done",   "dead",    "cancelled" };
        json_t *r;

        (void)state;
        tu_daemon_setup(&d, ONE_VARIANT, 2, NULL);
        tu_daemon_start(&d);
        drop_image(&d, "a.jpg", 300, 200);
        drop_image(&d, "b.jpg", 200, 300);
        drop_text(&d, "c.jpg");
        tu_daemon_wait_idle(&d, 30);

        assert_int_equal(tu_imgctl(&d, &out, "metrics", NULL), 0);
        assert_contains(out, "# TYPE imgd_jobs gauge\n");
        assert_contains(out, "# TYPE imgd_job_duration_seconds histogram\n");
        for (size_t i = 0; i < ELEMENTSOF(states); i++) {
                snprintf(series, sizeof series, "imgd_jobs{state=\"%s\"}", states[i]);
                assert_int_equal((json_int_t)prom_value(out, series), count_state(&d, states[i]));
        }
        assert_int_equal(prom_value(out, "imgd_job_duration_seconds_count{pipeline=\"p\"}"), 2);
        assert_int_equal(
                prom_value(out, "imgd_job_duration_seconds_bucket{pipeline=\"p\",le=\"+Inf\"}"), 2);
        assert_int_equal(prom_value(out, "imgd_jobs_processed_total{pipeline=\"p\"}"), 2);
        assert_int_equal(prom_value(out, "imgd_jobs_failed_total{reason=\"permanent\"}"), 1);
        /* imgd_workers by state sums to the pool's size. */
        assert_int_equal(prom_value(out, "imgd_workers{state=\"busy\"}") +
                                 prom_value(out, "imgd_workers{state=\"idle\"}") +
                                 prom_value(out, "imgd_workers{state=\"starting\"}"),
                         2);
        assert_true(prom_value(out, "imgd_resident_memory_bytes") > 1024 * 1024);

        assert_int_equal(prom_value(out, "imgd_oldest_queued_seconds"), 0);
        assert_int_equal(prom_value(out, "imgd_breaker_state"), 0);
        assert_true(prom_value(out, "imgd_degradation_level") >= 0); /* load-dependent */
        free(out);

        r = imgctl_json(&d, "metrics", NULL, NULL);
        assert_true(json_is_string(json_object_get(r, "text")));
        json_decref(r);

        /* A job waiting while paused ages. */
        assert_int_equal(tu_imgctl(&d, NULL, "pause", NULL), 0);
        drop_image(&d, "late.jpg", 100, 100);
        wait_count(&d, "queued", 1, 10000);
        usleep(1200 * 1000);
        assert_int_equal(tu_imgctl(&d, &out, "metrics", NULL), 0);
        assert_true(prom_value(out, "imgd_oldest_queued_seconds") >= 1.0);
        free(out);

        /* status tells the breaker and the health level. */
        r = imgctl_json(&d, "status", NULL, NULL);
        assert_string_equal(
                json_string_value(json_object_get(json_object_get(r, "breaker"), "state")),
                "closed");
        assert_true(json_is_string(json_object_get(json_object_get(r, "health"), "level")));
        assert_true(json_is_number(json_object_get(json_object_get(r, "health"), "score")));
        json_decref(r);
        assert_int_equal(tu_imgctl(&d, &out, "status", NULL), 0);
        assert_contains(out, "breaker  closed\n");
        assert_contains(out, "health   ");
        free(out);
        tu_daemon_cleanup(&d);
}

/* A subscriber receives "queued", then "done" with the outputs, for a dropped file; status
 * counts it. */
static void test_events_raw(void **state)
{
        struct tu_daemon d;
        struct raw c;
        bool queued = false, done = false;
        json_int_t id = 0;

        (void)state;
        tu_daemon_setup(&d, TWO_VARIANTS, 1, NULL);
        tu_daemon_start(&d);
        raw_subscribe(&c, d.socket);
        assert_events_wired(&d);
        assert_int_equal(status_int(&d, NULL, "subscribers"), 1);
        drop_image(&d, "a.jpg", 640, 480);

        while (!done) {
                char *line = raw_read_line(&c, 30000, NULL);
                json_t *ev, *job;
                const char *name;

                if (!line)
                        fail_msg("no event within 30 s:\n%s", (char *)tu_read_file(d.log, NULL));
                assert_int_equal(proto_parse_event(line, strlen(line), &ev, NULL), 0);
                assert_true(json_is_integer(json_object_get(ev, "at_us")));
                name = json_string_value(json_object_get(ev, "event"));
                job = json_object_get(ev, "job");
                assert_non_null(
                        strstr(json_string_value(json_object_get(job, "source")), "/a.jpg"));
                if (strcmp(name, "queued") == 0) {
                        assert_false(queued);
                        queued = true;
                        id = json_integer_value(json_object_get(job, "id"));
                } else if (strcmp(name, "done") == 0) {
                        json_t *outs = json_object_get(job, "outputs"), *o;
                        size_t i;

                        assert_true(queued); /* queued came first */
                        assert_int_equal(json_integer_value(json_object_get(job, "id")), id);
                        assert_int_equal(json_array_size(outs), 2);
                        json_array_foreach(outs, i, o)
                        {
                                struct stat st;
                                const char *p = json_string_value(json_object_get(o, "path"));

                                assert_int_equal(stat(p, &st), 0);
                                assert_int_equal(st.st_size,
                                                 json_integer_value(json_object_get(o, "bytes")));
                        }
                        done = true;
                }
                json_decref(ev);
                free(line);
        }
        close(c.fd);
        for (int i = 0; i < 100 && status_int(&d, NULL, "subscribers") != 0; i++)
                usleep(20 * 1000);
        assert_int_equal(status_int(&d, NULL, "subscribers"), 0);
        tu_daemon_cleanup(&d);
}

/* A file name that is not UTF-8 still gets its events (and its hook-visible fields), with
 * the bytes that are not UTF-8 replaced by U+FFFD; its outputs are published under the raw
 * name. */
static void test_events_non_utf8(void **state)
{
        struct tu_daemon d;
        struct raw c;
        bool queued = false, done = false;
        char *p, *out;

        (void)state;
        tu_daemon_setup(&d, TWO_VARIANTS, 1, NULL);
        tu_daemon_start(&d);
        raw_subscribe(&c, d.socket);
        assert_events_wired(&d);
        drop_image(&d, "caf\xe9.jpg", 320, 240); /* Latin-1 e-acute */

        while (!done) {
                char *line = raw_read_line(&c, 30000, NULL);
                json_t *ev, *job;
                const char *name, *source;

                if (!line)
                        fail_msg("no event within 30 s:\n%s", (char *)tu_read_file(d.log, NULL));
                assert_int_equal(proto_parse_event(line, strlen(line), &ev, NULL), 0);
                name = json_string_value(json_object_get(ev, "event"));
                job = json_object_get(ev, "job");
                source = json_string_value(json_object_get(job, "source"));
                assert_non_null(source);
                assert_non_null(strstr(source, "/caf\xef\xbf\xbd.jpg"));
                if (strcmp(name, "queued") == 0)
                        queued = true;
                else if (strcmp(name, "done") == 0) {
                        const json_t *outs = json_object_get(job, "outputs");

                        assert_true(queued);
                        assert_int_equal(json_array_size(outs), 2);
                        assert_non_null(strstr(
                                json_string_value(json_object_get(json_array_get(outs, 0), "path")),
                                "caf\xef\xbf\xbd_"));
                        done = true;
                }
                json_decref(ev);
                free(line);
        }
        close(c.fd);
        out = tu_path("%s/caf\xe9_s.webp", d.media);
        p = tu_path("%s/caf\xe9_m.jpg", d.media);
        if (access(out, F_OK) != 0 || access(p, F_OK) != 0) {
                char *ls = NULL;

                tu_run(&ls, "/bin/ls", "-b", d.media, NULL);
                fail_msg("no output under the raw name in %s:\n%s", d.media, ls ? ls : "");
        }
        free(out);
        free(p);

        /* The manifest names the files lossily for people and by their bytes for programs:
         * imgctl verify finds both outputs intact. */
        {
                char *mpath = tu_path("%s/caf\xe9.manifest.json", d.media), *text;
                json_t *m, *o;

                text = tu_read_file(mpath, NULL);
                m = json_loads(text, 0, NULL);
                assert_non_null(m);
                assert_non_null(strstr(json_string_value(json_object_get(m, "source")),
                                       "/caf\xef\xbf\xbd.jpg"));
                assert_non_null(strstr(json_string_value(json_object_get(m, "source_hex")),
                                       "636166e92e6a7067")); /* "caf\xe9.jpg" */
                o = json_array_get(json_object_get(m, "outputs"), 0);
                assert_non_null(
                        strstr(json_string_value(json_object_get(o, "file")), "caf\xef\xbf\xbd_"));
                assert_non_null(strstr(json_string_value(json_object_get(o, "file_hex")),
                                       "636166e95f")); /* "caf\xe9_" */
                json_decref(m);
                free(text);
                free(mpath);
                assert_int_equal(tu_imgctl(&d, &out, "verify", NULL), 0);
                assert_contains(out, "ok: 1 manifest(s), 2 file(s) checked");
                free(out);
        }
        tu_daemon_cleanup(&d);
}

/* Starts imgctl -s SOCKET args... with stdout into out_path; returns its pid. */
static pid_t spawn_imgctl(struct tu_daemon *d, const char *out_path, const char *a1, const char *a2)
{
        pid_t pid = fork();

        assert_true(pid >= 0);
        if (pid == 0) {
                int fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

                if (fd < 0 || dup2(fd, STDOUT_FILENO) < 0)
                        _exit(126);
                execl(IMGD_BUILD_DIR "/imgctl", "imgctl", "-s", d->socket, a1, a2, (char *)NULL);
                _exit(127);
        }
        return pid;
}

static int wait_child(pid_t pid, int timeout_ms)
{
        int status = 0;

        for (int waited = 0; waited <= timeout_ms; waited += 20) {
                if (waitpid(pid, &status, WNOHANG) == pid)
                        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
                usleep(20 * 1000);
        }
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        fail_msg("child %d did not exit within %d ms", (int)pid, timeout_ms);
        return -1;
}

/* `imgctl events` prints the events and, without --follow, exits once nothing is left. */
static void test_events_imgctl(void **state)
{
        struct tu_daemon d;
        char *human = NULL, *json = NULL, *hpath, *jpath;
        pid_t ph, pj;

        (void)state;
        tu_daemon_setup(&d, ONE_VARIANT, 1, NULL);
        tu_daemon_start(&d);
        {
                struct raw probe;

                raw_subscribe(&probe, d.socket);
                assert_events_wired(&d);
                close(probe.fd);
        }
        /* Nothing to wait for: returns at once. */
        assert_int_equal(tu_imgctl(&d, NULL, "events", NULL), 0);

        assert_int_equal(tu_imgctl(&d, NULL, "pause", NULL), 0);
        drop_image(&d, "a.jpg", 300, 200);
        drop_text(&d, "b.jpg");
        wait_count(&d, "queued", 2, 10000);
        hpath = tu_path("%s/events.txt", d.root);
        jpath = tu_path("%s/events.json", d.root);
        ph = spawn_imgctl(&d, hpath, "events", NULL);
        pj = spawn_imgctl(&d, jpath, "events", "--json");
        usleep(300 * 1000); /* subscribed */
        assert_int_equal(tu_imgctl(&d, NULL, "resume", NULL), 0);
        assert_int_equal(wait_child(ph, 30000), 0);
        assert_int_equal(wait_child(pj, 30000), 0);

        human = tu_read_file(hpath, NULL);
        assert_contains(human, "done      #");
        assert_contains(human, "/a.jpg  1 output\n");
        assert_contains(human, "dead      #");
        assert_contains(human, "not a supported image");
        json = tu_read_file(jpath, NULL);
        assert_int_equal(count_lines(json), 2);
        for (char *l = json, *nl; (nl = strchr(l, '\n')); l = nl + 1) {
                json_t *ev = NULL;

                assert_int_equal(proto_parse_event(l, (size_t)(nl - l), &ev, NULL), 0);
                json_decref(ev);
        }
        assert_contains(json, "\"event\":\"done\"");
        assert_contains(json, "\"event\":\"dead\"");

        free(human);
        free(json);
        free(hpath);
        free(jpath);
        tu_daemon_cleanup(&d);
}

/* A subscriber that never reads is dropped once its unread events pass the bound; imgd
 * answers status all along. Events are made large with long paths (a deep tree of long
 * folder names, made before the start so the watches are set), and small in number: files
 * dropped while paused are only queued. */
static void test_slow_subscriber_dropped(void **state)
{
        struct tu_daemon d;
        char component[201], *deep, *p;
        struct raw c;
        bool dropped = false, eof = false;
        unsigned files = 0;

        (void)state;
        memset(component, 'd', sizeof component - 1);
        component[sizeof component - 1] = '\0';
        tu_daemon_setup(&d, ONE_VARIANT, 1, NULL);
        deep = strdup(d.uploads);
        assert_non_null(deep);
        for (int i = 0; i < 15; i++) {
                p = tu_path("%s/%s", deep, component);
                free(deep);
                deep = p;
                assert_int_equal(mkdir(deep, 0755), 0);
        }
        tu_daemon_start(&d);
        assert_int_equal(tu_imgctl(&d, NULL, "pause", NULL), 0);
        raw_subscribe(&c, d.socket);
        assert_events_wired(&d);

        while (!dropped) {
                for (int i = 0; i < 50; i++, files++) {
                        p = tu_path("%s/%s-%u.jpg", deep, component, files);
                        tu_write_file(p, "x", 1);
                        free(p);
                }
                /* Answered within imgctl's 10 s: the stalled subscriber holds nothing up. */
                assert_int_equal(tu_imgctl(&d, NULL, "status", NULL), 0);
                for (int i = 0; i < 20 && !dropped; i++) {
                        dropped = tu_log_contains(&d, "events subscriber dropped");
                        usleep(25 * 1000);
                }
                if (files >= 3000)
                        fail_msg("subscriber not dropped after %u events", files);
        }
        assert_int_equal(status_int(&d, NULL, "subscribers"), 0);
        assert_int_equal(tu_imgctl(&d, NULL, "status", NULL), 0);

        /* What the kernel buffered is still there, then the end. */
        for (int i = 0; i < 100000 && !eof; i++) {
                char *line = raw_read_line(&c, 5000, &eof);

                if (!line && !eof)
                        fail_msg("the dropped subscriber's connection is still open");
                free(line);
        }
        assert_true(eof);
        close(c.fd);
        free(deep);
        tu_daemon_cleanup(&d);
}

/* Replaces the first occurrence of `from` in file `path` by `to` (same length). */
static void patch_file(const char *path, const char *from, const char *to)
{
        size_t len;
        char *text = tu_read_file(path, &len), *at;

        assert_non_null(text);
        at = strstr(text, from);
        assert_non_null(at);
        assert_int_equal(strlen(from), strlen(to));
        memcpy(at, to, strlen(to));
        tu_write_file(path, text, len);
        free(text);
}

static json_t *verify_json(struct tu_daemon *d, int expect_status, const char *arg)
{
        char *out = NULL;
        json_error_t err;
        json_t *j;
        int r;

        if (arg)
                r = tu_run(&out, IMGD_BUILD_DIR "/imgctl", "-s", d->socket, "verify", arg, "--json",
                           NULL);
        else
                r = tu_run(&out, IMGD_BUILD_DIR "/imgctl", "-s", d->socket, "verify", "--json",
                           NULL);
        if (r != expect_status)
                fail_msg("verify exited %d, expected %d: %s", r, expect_status, out);
        j = json_loads(out, 0, &err);
        if (!j)
                fail_msg("verify --json printed no JSON (%s): %s", err.text, out);
        free(out);
        return j;
}

static size_t list_size(const json_t *report, const char *key)
{
        return json_array_size(json_object_get(report, key));
}

static const char *first_path(const json_t *report, const char *key)
{
        return json_string_value(
                json_object_get(json_array_get(json_object_get(report, key), 0), "path"));
}

/* verify: all good; one byte altered; one output deleted; a stray file; imgd's temporary
 * files ignored; a manifest edited to match an altered file contradicts the ledger. */
static void test_verify(void **state)
{
        struct tu_daemon d;
        char *out = NULL, *small, *medium, *stray, *tmpfile, *manifest, *hexonly;
        json_t *rep, *m, *o;
        size_t i;
        char sha[65] = "";
        int fd;

        (void)state;
        tu_daemon_setup(&d, TWO_VARIANTS, 2, NULL);
        tu_daemon_start(&d);
        drop_image(&d, "a.jpg", 640, 480);
        drop_image(&d, "b.jpg", 480, 640);
        tu_daemon_wait_idle(&d, 30);

        assert_int_equal(tu_imgctl(&d, &out, "verify", NULL), 0);
        assert_contains(out, "ok: 2 manifest(s), 4 file(s) checked");
        free(out);
        rep = verify_json(&d, 0, NULL);
        assert_true(json_is_true(json_object_get(rep, "ok")));
        assert_int_equal(json_integer_value(json_object_get(rep, "manifests")), 2);
        assert_int_equal(json_integer_value(json_object_get(rep, "files")), 4);
        json_decref(rep);

        /* One byte of a_s.webp changed. */
        small = tu_path("%s/a_s.webp", d.media);
        fd = open(small, O_WRONLY | O_CLOEXEC);
        assert_true(fd >= 0);
        assert_int_equal(pwrite(fd, "\x5a", 1, 40), 1);
        close(fd);
        assert_int_equal(tu_imgctl(&d, &out, "verify", NULL), 1);
        assert_contains(out, "altered");
        assert_contains(out, small);
        free(out);
        rep = verify_json(&d, 1, NULL);
        assert_int_equal(list_size(rep, "altered"), 1);
        assert_string_equal(first_path(rep, "altered"), small);
        assert_int_equal(list_size(rep, "missing") + list_size(rep, "orphaned") +
                                 list_size(rep, "mismatched") + list_size(rep, "bad"),
                         0);
        json_decref(rep);

        /* b_m.jpg deleted, a stray file added, an imgd temporary file (ignored). */
        medium = tu_path("%s/b_m.jpg", d.media);
        assert_int_equal(unlink(medium), 0);
        stray = tu_path("%s/sub/stray.txt", d.media);
        tu_write_file(stray, "stray\n", (size_t)-1);
        tmpfile = tu_path("%s/.imgd-7-0-abcdef.tmp", d.media);
        tu_write_file(tmpfile, "partial", (size_t)-1);
        assert_int_equal(tu_imgctl(&d, &out, "verify", NULL), 1);
        assert_contains(out, "missing");
        assert_contains(out, "orphaned");
        free(out);
        rep = verify_json(&d, 1, NULL);
        assert_int_equal(list_size(rep, "altered"), 1);
        assert_int_equal(list_size(rep, "missing"), 1);
        assert_string_equal(first_path(rep, "missing"), medium);
        assert_int_equal(list_size(rep, "orphaned"), 1);
        assert_string_equal(first_path(rep, "orphaned"), stray);
        json_decref(rep);

        /* Only one manifest: its own problems, no orphans. */
        manifest = tu_path("%s/a.manifest.json", d.media);
        rep = verify_json(&d, 1, manifest);
        assert_int_equal(json_integer_value(json_object_get(rep, "manifests")), 1);
        assert_int_equal(list_size(rep, "altered"), 1);
        assert_int_equal(list_size(rep, "orphaned"), 0);
        assert_int_equal(list_size(rep, "missing"), 0);
        json_decref(rep);

        /* Tampering that keeps file and manifest consistent is caught by the ledger. */
        m = json_load_file(manifest, 0, NULL);
        assert_non_null(m);
        json_array_foreach(
                json_object_get(m, "outputs"), i,
                o) if (strcmp(json_string_value(json_object_get(o, "file")), "a_s.webp") == 0)
                snprintf(sha, sizeof sha, "%s", json_string_value(json_object_get(o, "sha256")));
        json_decref(m);
        assert_int_equal(strlen(sha), 64);
        {
                char actual[65];

                fd = open(small, O_RDONLY | O_CLOEXEC);
                assert_true(fd >= 0);
                assert_int_equal(hash_sha256_fd(fd, 0, actual), 0);
                close(fd);
                patch_file(manifest, sha, actual);
        }
        rep = verify_json(&d, 1, manifest);
        assert_int_equal(list_size(rep, "altered"), 0);
        assert_int_equal(list_size(rep, "mismatched"), 1);
        assert_string_equal(first_path(rep, "mismatched"), small);
        json_decref(rep);

        assert_int_equal(tu_imgctl(&d, NULL, "verify", "--all", small, NULL), 2);
        assert_int_equal(tu_imgctl(&d, NULL, "verify", small, NULL), 1); /* not a manifest */

        /* An entry with the bytes of its name ("file_hex") but no "file": a bad entry, not a
         * crash (verify once compared the ledger's outputs with its NULL "file"). The ledger's
         * job is done and has the output, so the other entry is compared with it. */
        m = json_load_file(manifest, 0, NULL);
        assert_non_null(m);
        json_array_foreach(json_object_get(m, "outputs"), i, o)
        {
                if (strcmp(json_string_value(json_object_get(o, "file")), "a_s.webp") != 0)
                        continue;
                assert_int_equal(json_object_del(o, "file"), 0);
                assert_int_equal(
                        json_object_set_new(o, "file_hex", json_string("615f732e77656270")), 0);
        }
        hexonly = tu_path("%s/hexonly.manifest.json", d.media);
        assert_int_equal(json_dump_file(m, hexonly, 0), 0);
        json_decref(m);
        rep = verify_json(&d, 1, hexonly);
        assert_int_equal(list_size(rep, "bad"), 1);
        assert_string_equal(first_path(rep, "bad"), hexonly);
        assert_string_equal(json_string_value(json_object_get(
                                    json_array_get(json_object_get(rep, "bad"), 0), "error")),
                            "lists a file without a \"file\" name");
        assert_int_equal(json_integer_value(json_object_get(rep, "files")), 1);
        assert_int_equal(list_size(rep, "mismatched"), 0);
        json_decref(rep);
        assert_int_equal(unlink(hexonly), 0);

        free(hexonly);
        free(manifest);
        free(tmpfile);
        free(stray);
        free(medium);
        free(small);
        tu_daemon_cleanup(&d);
}

/* top without a terminal: one summary line per refresh. */
static void test_top_not_a_tty(void **state)
{
        struct tu_daemon d;
        char *out = NULL;
        int64_t t0;

        (void)state;
        tu_daemon_setup(&d, ONE_VARIANT, 1, NULL);
        tu_daemon_start(&d);
        t0 = tu_now_us();
        assert_int_equal(tu_run(&out, IMGD_BUILD_DIR "/imgctl", "-s", d.socket, "top",
                                "--iterations", "2", NULL),
                         0);
        assert_true(tu_now_us() - t0 >= 900 * 1000); /* a second between refreshes */
        assert_int_equal(count_lines(out), 2);
        assert_null(strchr(out, '\033'));
        assert_contains(out, " running queued=0 running=0 retry=0 done=0");
        assert_contains(out, "workers=0/1");
        assert_contains(out, " backlog=100% eta=0s ");
        assert_contains(out, " alerts=0\n");
        free(out);
        assert_int_equal(tu_imgctl(&d, NULL, "top", "--iterations", "0", NULL), 2);
        tu_daemon_cleanup(&d);
}

/* A peer that is not root, imgd's user or in its group is refused with one line and
 * closed (imgctl: exit 3); imgd goes on serving others. The socket's mode would stop such a
 * peer first, so the test opens it up to show imgd's own check. */
static void test_authorization(void **state)
{
        struct tu_daemon d;
        char buf[512] = "";
        int pipefd[2], status;
        ssize_t n;
        pid_t pid;

        (void)state;
        if (geteuid() != 0)
                skip();
        tu_daemon_setup(&d, ONE_VARIANT, 1, NULL);
        tu_daemon_start(&d);
        assert_int_equal(chmod(d.root, 0711), 0);
        assert_int_equal(chmod(d.socket, 0666), 0);

        assert_int_equal(pipe2(pipefd, O_CLOEXEC), 0);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                struct raw c;
                char *line;

                if (setgroups(0, NULL) < 0 || setgid(65534) < 0 || setuid(65534) < 0)
                        _exit(10);
                raw_connect(&c, d.socket);
                line = raw_read_line(&c, 5000, NULL);
                if (line && write(pipefd[1], line, strlen(line)) < 0)
                        _exit(11);
                _exit(line ? 0 : 12);
        }
        close(pipefd[1]);
        n = read(pipefd[0], buf, sizeof buf - 1);
        close(pipefd[0]);
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
        assert_true(n > 0);
        buf[n] = '\0';
        /* control_group defaults to "imgd" where that group exists (an installed imgd). */
        if (getgrnam("imgd"))
                assert_string_equal(buf, "{\"v\":1,\"ok\":false,\"error\":\"permission denied: "
                                         "uid 65534 is not root, imgd's user or in group imgd\"}");
        else
                assert_string_equal(buf, "{\"v\":1,\"ok\":false,\"error\":\"permission denied: "
                                         "uid 65534 is not root or imgd's user\"}");

        /* imgctl as that user: the message, exit status 3. */
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                int null = open("/dev/null", O_WRONLY | O_CLOEXEC);

                if (null < 0 || dup2(null, STDOUT_FILENO) < 0 || dup2(null, STDERR_FILENO) < 0 ||
                    setgroups(0, NULL) < 0 || setgid(65534) < 0 || setuid(65534) < 0)
                        _exit(10);
                execl(IMGD_BUILD_DIR "/imgctl", "imgctl", "-s", d.socket, "status", (char *)NULL);
                _exit(127);
        }
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        if (WEXITSTATUS(status) != 127) /* the build tree may not be reachable for nobody */
                assert_int_equal(WEXITSTATUS(status), 3);

        assert_true(tu_log_contains(&d, "refused pid"));
        assert_int_equal(tu_imgctl(&d, NULL, "status", NULL), 0);
        tu_daemon_cleanup(&d);
}

/* Sends one request line and returns its error message (caller frees); fails the test when the
 * request is answered without an error. */
static char *raw_call_error(struct raw *c, const char *request)
{
        char *line, *error = NULL;
        json_t *result = NULL;

        raw_send(c, request);
        line = raw_read_line(c, 10000, NULL);
        assert_non_null(line);
        if (proto_parse_response(line, strlen(line), &result, &error) >= 0)
                fail_msg("%s -> %s: expected an error", request, line);
        assert_non_null(error);
        json_decref(result);
        free(line);
        return error;
}

/* Every argument of every command is checked, in the order of its schema, and refused with a
 * message that says what was expected (the exact texts are the protocol's: imgctl prints
 * them). Arguments a command does not take are ignored. */
static void test_bad_arguments(void **state)
{
        static const char a70[] =
                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        static const struct {
                const char *request;
                const char *error;
        } cases[] = {
                /* jobs: state, watch, since, limit, in that order */
                { "\"cmd\":\"jobs\",\"state\":\"bogus\"",
                  "unknown state 'bogus' (expected one of queued, running, retry, done, dead, "
                  "cancelled)" },
                { "\"cmd\":\"jobs\",\"state\":5", "\"state\" must be a string" },
                { "\"cmd\":\"jobs\",\"state\":null,\"watch\":3", "\"watch\" must be a string" },
                { "\"cmd\":\"jobs\",\"since\":\"x\"",
                  "\"since\" must be an integer number of microseconds since the epoch" },
                { "\"cmd\":\"jobs\",\"since\":-1",
                  "\"since\" must be an integer number of microseconds since the epoch, not -1" },
                { "\"cmd\":\"jobs\",\"limit\":0",
                  "\"limit\" must be an integer from 1 to 10000, not 0" },
                { "\"cmd\":\"jobs\",\"limit\":10001",
                  "\"limit\" must be an integer from 1 to 10000, not 10001" },
                { "\"cmd\":\"jobs\",\"limit\":1.5",
                  "\"limit\" must be an integer from 1 to 10000" },
                { "\"cmd\":\"jobs\",\"limit\":0,\"state\":\"bogus\"",
                  "unknown state 'bogus' (expected one of queued, running, retry, done, dead, "
                  "cancelled)" },
                { "\"cmd\":\"jobs\",\"limit\":0,\"watch\":true", "\"watch\" must be a string" },
                /* show, cancel: a required id */
                { "\"cmd\":\"show\"", "show needs a job \"id\"" },
                { "\"cmd\":\"show\",\"id\":null", "show needs a job \"id\"" },
                { "\"cmd\":\"show\",\"id\":\"1\"", "\"id\" must be a job id (a positive integer)" },
                { "\"cmd\":\"show\",\"id\":0",
                  "\"id\" must be a job id (a positive integer), not 0" },
                { "\"cmd\":\"show\",\"id\":999999", "no job 999999" },
                { "\"cmd\":\"cancel\"", "cancel needs a job \"id\"" },
                { "\"cmd\":\"cancel\",\"id\":\"x\"",
                  "\"id\" must be a job id (a positive integer)" },
                { "\"cmd\":\"cancel\",\"id\":999999", "no job 999999" },
                /* retry: "dead" (true or false, not null), then "id", then one of them */
                { "\"cmd\":\"retry\"", "retry needs either a job \"id\" or \"dead\": true" },
                { "\"cmd\":\"retry\",\"dead\":false",
                  "retry needs either a job \"id\" or \"dead\": true" },
                { "\"cmd\":\"retry\",\"dead\":true,\"id\":1",
                  "retry needs either a job \"id\" or \"dead\": true" },
                { "\"cmd\":\"retry\",\"dead\":null", "\"dead\" must be true or false" },
                { "\"cmd\":\"retry\",\"dead\":1,\"id\":\"x\"", "\"dead\" must be true or false" },
                { "\"cmd\":\"retry\",\"id\":-3",
                  "\"id\" must be a job id (a positive integer), not -3" },
                { "\"cmd\":\"retry\",\"id\":999999", "no job 999999" },
                /* enqueue: a required absolute path */
                { "\"cmd\":\"enqueue\"", "enqueue needs a \"path\"" },
                { "\"cmd\":\"enqueue\",\"path\":null", "enqueue needs a \"path\"" },
                { "\"cmd\":\"enqueue\",\"path\":5", "\"path\" must be a string" },
                { "\"cmd\":\"enqueue\",\"path\":\"up/a.jpg\"",
                  "\"path\" must be absolute, not 'up/a.jpg'" },
                { "\"cmd\":\"enqueue\",\"path\":\"/nonexistent-imgd-test/a.jpg\"",
                  "/nonexistent-imgd-test/a.jpg: No such file or directory" },
                { "\"cmd\":\"frobnicate\",\"id\":1", "unknown command 'frobnicate'" },
        };
        struct tu_daemon d;
        struct raw c;
        char *error, *request, *long_path;

        (void)state;
        tu_daemon_setup(&d, ONE_VARIANT, 1, NULL);
        tu_daemon_start(&d);
        raw_connect(&c, d.socket);

        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
                request = tu_path("{\"v\":1,%s}\n", cases[i].request);
                error = raw_call_error(&c, request);
                if (strcmp(error, cases[i].error) != 0)
                        fail_msg("%s -> '%s', expected '%s'", cases[i].request, error,
                                 cases[i].error);
                free(error);
                free(request);
        }

        /* What is repeated of a client's text is cut at 64 bytes. */
        request = tu_path("{\"v\":1,\"cmd\":\"jobs\",\"state\":\"%s\"}\n", a70);
        error = raw_call_error(&c, request);
        long_path = tu_path("unknown state '%.64s...' (expected one of queued, running, retry, "
                            "done, dead, cancelled)",
                            a70);
        assert_string_equal(error, long_path);
        free(long_path);
        free(error);
        free(request);
        request = tu_path("{\"v\":1,\"cmd\":\"enqueue\",\"path\":\"%s\"}\n", a70);
        error = raw_call_error(&c, request);
        long_path = tu_path("\"path\" must be absolute, not '%.64s...'", a70);
        assert_string_equal(error, long_path);
        free(long_path);
        free(error);
        free(request);
        request = tu_path("{\"v\":1,\"cmd\":\"%s\"}\n", a70);
        error = raw_call_error(&c, request);
        long_path = tu_path("unknown command '%.64s...'", a70);
        assert_string_equal(error, long_path);
        free(long_path);
        free(error);
        free(request);

        /* A path of PATH_MAX bytes or more. */
        long_path = malloc(5001);
        assert_non_null(long_path);
        memset(long_path, 'a', 5000);
        long_path[0] = '/';
        long_path[5000] = '\0';
        request = tu_path("{\"v\":1,\"cmd\":\"enqueue\",\"path\":\"%s\"}\n", long_path);
        error = raw_call_error(&c, request);
        assert_string_equal(error, "\"path\" is too long");
        free(error);
        free(request);
        free(long_path);

        /* Arguments a command does not take change nothing. */
        json_decref(raw_call(&c, "{\"v\":1,\"cmd\":\"ping\",\"id\":\"x\",\"dead\":null}\n"));
        json_decref(raw_call(&c, "{\"v\":1,\"cmd\":\"status\",\"limit\":0}\n"));

        close(c.fd);
        tu_daemon_cleanup(&d);
}

/* Every command has --help (no daemon needed), and unknown options are usage errors. */
static void test_help(void **state)
{
        static const char *const commands[] = { "status",  "jobs",   "show",   "wait",  "retry",
                                                "cancel",  "pause",  "resume", "drain", "enqueue",
                                                "metrics", "events", "top",    "verify" };
        char *out = NULL;

        (void)state;
        for (size_t i = 0; i < ELEMENTSOF(commands); i++) {
                char *usage = tu_path("Usage: imgctl [-c CONFIG | -s SOCKET] %s", commands[i]);

                assert_int_equal(tu_run(&out, IMGD_BUILD_DIR "/imgctl", "-s", "/nonexistent",
                                        commands[i], "--help", NULL),
                                 0);
                assert_contains(out, usage);
                free(out);
                assert_int_equal(tu_run(&out, IMGD_BUILD_DIR "/imgctl", "-s", "/nonexistent",
                                        commands[i], "--bogus", NULL),
                                 2);
                assert_contains(out, "unknown option '--bogus'");
                free(out);
                free(usage);
        }
        assert_int_equal(tu_run(&out, IMGD_BUILD_DIR "/imgctl", "--help", NULL), 0);
        for (size_t i = 0; i < ELEMENTSOF(commands); i++)
                assert_contains(out, commands[i]);
        free(out);
        /* A daemon that is not there: exit 3. */
        assert_int_equal(tu_run(NULL, IMGD_BUILD_DIR "/imgctl", "-s", "/nonexistent/imgd.sock",
                                "pause", NULL),
                         3);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_help),
                cmocka_unit_test(test_bad_arguments),
                cmocka_unit_test(test_retry),
                cmocka_unit_test(test_cancel_queued),
                cmocka_unit_test(test_pause_resume_drain),
                cmocka_unit_test(test_enqueue),
                cmocka_unit_test(test_metrics),
                cmocka_unit_test(test_events_raw),
                cmocka_unit_test(test_events_non_utf8),
                cmocka_unit_test(test_events_imgctl),
                cmocka_unit_test(test_slow_subscriber_dropped),
                cmocka_unit_test(test_verify),
                cmocka_unit_test(test_top_not_a_tty),
                cmocka_unit_test(test_authorization),
        };

        signal(SIGPIPE, SIG_IGN);
        return cmocka_run_group_tests(tests, NULL, NULL);
}
