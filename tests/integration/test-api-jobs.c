/* SPDX-License-Identifier: MIT */
/*
 * test-api-jobs.c - the job commands end to end: the real imgd (with real workers) on a temporary
 * tree, driven through the real socket by imgctl (and a raw socket client where the protocol is
 * the subject).
 *
 * Covers retry (one dead job, --dead), cancel of a queued job, pause/resume/drain, enqueue (a file
 * no watch event announced, a file outside the watches, hidden names, relative paths), metrics
 * against status, top without a terminal, and --help of every command.
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
#include "api-fixture.h"

/* The id of the newest job in `state`. */
static json_int_t newest_id(struct tu_daemon *d, const char *state)
{
        json_t *jobs = tu_imgctl_json(d, "jobs", "--state", state);
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
        r = tu_imgctl_json(d, "show", ids, NULL);
        job = json_incref(json_object_get(r, "job"));
        json_decref(r);
        return job;
}

static const char *job_state(const json_t *job)
{
        return json_string_value(json_object_get(job, "state"));
}

/* Sends one request line and returns the result of its answer (fails the test on an error
 * answer). */
static json_t *raw_call(struct raw *c, const char *request)
{
        char *line, *error = NULL;
        json_t *result = NULL;

        apifx_raw_send(c, request);
        line = apifx_raw_read_line(c, 10000, NULL);
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
        apifx_drop_text(&d, "bad.jpg");
        tu_daemon_wait_idle(&d, 30);
        assert_int_equal(apifx_count_state(&d, "dead"), 1);
        id = newest_id(&d, "dead");
        snprintf(ids, sizeof ids, "%lld", (long long)id);

        assert_int_equal(tu_imgctl(&d, &out, "retry", ids, NULL), 0);
        apifx_assert_contains(out, "queued again");
        free(out);
        tu_daemon_wait_idle(&d, 30);
        job = show(&d, id);
        assert_string_equal(job_state(job), "dead");
        assert_int_equal(json_array_size(json_object_get(job, "errors")), 2);
        json_decref(job);

        /* Two dead jobs now; --dead retries both. */
        apifx_drop_text(&d, "worse.jpg");
        tu_daemon_wait_idle(&d, 30);
        assert_int_equal(apifx_count_state(&d, "dead"), 2);
        r = tu_imgctl_json(&d, "retry", "--dead", NULL);
        assert_int_equal(json_integer_value(json_object_get(r, "retried")), 2);
        assert_int_equal(json_integer_value(json_object_get(r, "remaining")), 0);
        json_decref(r);
        tu_daemon_wait_idle(&d, 30);
        assert_int_equal(apifx_count_state(&d, "dead"), 2);
        job = show(&d, id);
        assert_int_equal(json_array_size(json_object_get(job, "errors")), 3);
        json_decref(job);

        /* Nothing dead: 0. A done job, an unknown job, both or neither: refused. */
        apifx_drop_image(&d, "good.jpg", 200, 150);
        tu_daemon_wait_idle(&d, 30);
        snprintf(ids, sizeof ids, "%lld", (long long)newest_id(&d, "done"));
        assert_int_equal(tu_imgctl(&d, &out, "retry", ids, NULL), 1);
        apifx_assert_contains(out, "only dead jobs can be retried");
        free(out);
        assert_int_equal(tu_imgctl(&d, &out, "retry", "999", NULL), 1);
        apifx_assert_contains(out, "no job 999");
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

        r = tu_imgctl_json(&d, "pause", NULL, NULL);
        assert_true(json_is_true(json_object_get(r, "paused")));
        json_decref(r);
        assert_int_equal(apifx_status_int(&d, NULL, "paused"), 1);
        apifx_drop_image(&d, "a.jpg", 300, 200);
        apifx_wait_count(&d, "queued", 1, 10000);
        id = newest_id(&d, "queued");
        snprintf(ids, sizeof ids, "%lld", (long long)id);

        assert_int_equal(tu_imgctl(&d, &out, "cancel", ids, NULL), 0);
        apifx_assert_contains(out, "cancelled (it was queued)");
        free(out);
        job = show(&d, id);
        assert_string_equal(job_state(job), "cancelled");
        json_decref(job);
        assert_int_equal(tu_imgctl(&d, &out, "cancel", ids, NULL), 1);
        apifx_assert_contains(out, "cancelled already");
        free(out);
        assert_int_equal(tu_imgctl(&d, &out, "cancel", "#4242", NULL), 1);
        apifx_assert_contains(out, "no job 4242");
        free(out);

        r = tu_imgctl_json(&d, "resume", NULL, NULL);
        assert_false(json_is_true(json_object_get(r, "paused")));
        json_decref(r);
        tu_daemon_wait_idle(&d, 30);
        assert_int_equal(apifx_count_state(&d, "done"), 0);
        assert_int_equal(apifx_count_state(&d, "cancelled"), 1);
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
        apifx_assert_contains(out, "intake paused");
        free(out);
        assert_int_equal(tu_imgctl(&d, &out, "status", NULL), 0);
        apifx_assert_contains(out, "intake   paused");
        free(out);
        apifx_drop_image(&d, "a.jpg", 400, 300);
        apifx_wait_count(&d, "queued", 1, 10000);
        usleep(700 * 1000);
        assert_int_equal(apifx_count_state(&d, "queued"), 1);
        assert_int_equal(apifx_count_state(&d, "done"), 0);
        assert_int_equal(apifx_status_int(&d, NULL, "running"), 0);

        assert_int_equal(tu_imgctl(&d, &out, "resume", NULL), 0);
        apifx_assert_contains(out, "intake resumed");
        free(out);
        tu_daemon_wait_idle(&d, 30);
        assert_int_equal(apifx_count_state(&d, "done"), 1);
        assert_int_equal(apifx_status_int(&d, NULL, "paused"), 0);

        /* Drain while jobs run. The timing is done over one raw connection, as spawning
         * imgctl can take longer than a job on a loaded machine: paused, the four files
         * wait in the queue; resumed, imgd answers status with jobs running; drain, asked
         * then, finds them running; imgctl drain returns only once none runs. */
        assert_int_equal(tu_imgctl(&d, NULL, "pause", NULL), 0);
        for (int i = 0; i < 4; i++) {
                snprintf(name, sizeof name, "big%d.jpg", i);
                apifx_drop_image(&d, name, 3000, 2000);
        }
        apifx_wait_count(&d, "queued", 4, 30000);
        {
                struct raw c;
                int64_t deadline = tu_now_us() + 30 * 1000000;

                apifx_raw_connect(&c, d.socket);
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
        r = tu_imgctl_json(&d, "drain", "--timeout", "120");
        assert_true(json_is_true(json_object_get(r, "paused")));
        assert_int_equal(json_integer_value(json_object_get(r, "running")), 0);
        json_decref(r);
        assert_int_equal(apifx_status_int(&d, NULL, "running"), 0);
        assert_int_equal(apifx_count_state(&d, "running"), 0);
        assert_int_equal(apifx_status_int(&d, NULL, "paused"), 1);
        assert_int_equal(apifx_count_state(&d, "done") + apifx_count_state(&d, "queued"), 5);
        assert_true(apifx_count_state(&d, "done") >= 2); /* those found running finished */

        assert_int_equal(tu_imgctl(&d, NULL, "resume", NULL), 0);
        tu_daemon_wait_idle(&d, 60);
        assert_int_equal(apifx_count_state(&d, "done"), 5);
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
        jobs = tu_imgctl_json(&d, "jobs", NULL, NULL);
        assert_int_equal(json_array_size(json_object_get(jobs, "jobs")), 0);
        json_decref(jobs);

        r = tu_imgctl_json(&d, "enqueue", dest, NULL);
        assert_true(json_is_true(json_object_get(r, "created")));
        id = json_integer_value(json_object_get(r, "id"));
        assert_true(id > 0);
        assert_string_equal(json_string_value(json_object_get(r, "state")), "queued");
        assert_string_equal(json_string_value(json_object_get(r, "source")), dest);
        json_decref(r);
        assert_int_equal(apifx_count_state(&d, "queued"), 1);

        /* Again, and relative to the current directory: the same job. */
        cwd = getcwd(NULL, 0);
        assert_non_null(cwd);
        assert_int_equal(chdir(d.uploads), 0);
        r = tu_imgctl_json(&d, "enqueue", "linked.jpg", NULL);
        assert_int_equal(chdir(cwd), 0);
        free(cwd);
        assert_false(json_is_true(json_object_get(r, "created")));
        assert_int_equal(json_integer_value(json_object_get(r, "id")), id);
        json_decref(r);
        assert_int_equal(tu_imgctl(&d, &out, "enqueue", dest, NULL), 0);
        apifx_assert_contains(out, "exists already (queued)");
        free(out);

        assert_int_equal(tu_imgctl(&d, &out, "enqueue", "/etc/passwd", NULL), 1);
        apifx_assert_contains(out, "not below a watched folder");
        free(out);
        hidden = tu_path("%s/.hidden.jpg", d.uploads);
        assert_int_equal(rename(src, hidden), 0);
        assert_int_equal(tu_imgctl(&d, &out, "enqueue", hidden, NULL), 1);
        apifx_assert_contains(out, "hidden or temporary name");
        free(out);
        {
                /* intake's own refusals come through: here, a file with two links. */
                char *second = tu_path("%s/second.jpg", d.uploads);

                assert_int_equal(link(hidden, second), 0);
                assert_int_equal(tu_imgctl(&d, &out, "enqueue", second, NULL), 1);
                apifx_assert_contains(out, "hard links");
                free(out);
                free(second);
        }
        assert_int_equal(tu_imgctl(&d, &out, "enqueue", "/nonexistent/x.jpg", NULL), 1);
        apifx_assert_contains(out, "No such file");
        free(out);
        assert_int_equal(tu_imgctl(&d, NULL, "enqueue", NULL), 2);

        assert_int_equal(tu_imgctl(&d, NULL, "resume", NULL), 0);
        tu_daemon_wait_idle(&d, 30);
        assert_int_equal(apifx_count_state(&d, "done"), 1);
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
        apifx_drop_image(&d, "a.jpg", 300, 200);
        apifx_drop_image(&d, "b.jpg", 200, 300);
        apifx_drop_text(&d, "c.jpg");
        tu_daemon_wait_idle(&d, 30);

        assert_int_equal(tu_imgctl(&d, &out, "metrics", NULL), 0);
        apifx_assert_contains(out, "# TYPE imgd_jobs gauge\n");
        apifx_assert_contains(out, "# TYPE imgd_job_duration_seconds histogram\n");
        for (size_t i = 0; i < ELEMENTSOF(states); i++) {
                snprintf(series, sizeof series, "imgd_jobs{state=\"%s\"}", states[i]);
                assert_int_equal((json_int_t)prom_value(out, series),
                                 apifx_count_state(&d, states[i]));
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

        r = tu_imgctl_json(&d, "metrics", NULL, NULL);
        assert_true(json_is_string(json_object_get(r, "text")));
        json_decref(r);

        /* A job waiting while paused ages. */
        assert_int_equal(tu_imgctl(&d, NULL, "pause", NULL), 0);
        apifx_drop_image(&d, "late.jpg", 100, 100);
        apifx_wait_count(&d, "queued", 1, 10000);
        usleep(1200 * 1000);
        assert_int_equal(tu_imgctl(&d, &out, "metrics", NULL), 0);
        assert_true(prom_value(out, "imgd_oldest_queued_seconds") >= 1.0);
        free(out);

        /* status tells the breaker and the health level. */
        r = tu_imgctl_json(&d, "status", NULL, NULL);
        assert_string_equal(
                json_string_value(json_object_get(json_object_get(r, "breaker"), "state")),
                "closed");
        assert_true(json_is_string(json_object_get(json_object_get(r, "health"), "level")));
        assert_true(json_is_number(json_object_get(json_object_get(r, "health"), "score")));
        json_decref(r);
        assert_int_equal(tu_imgctl(&d, &out, "status", NULL), 0);
        apifx_assert_contains(out, "breaker  closed\n");
        apifx_assert_contains(out, "health   ");
        free(out);
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
        assert_int_equal(apifx_count_lines(out), 2);
        assert_null(strchr(out, '\033'));
        apifx_assert_contains(out, " running queued=0 running=0 retry=0 done=0");
        apifx_assert_contains(out, "workers=0/1");
        apifx_assert_contains(out, " backlog=100% eta=0s ");
        apifx_assert_contains(out, " alerts=0\n");
        free(out);
        assert_int_equal(tu_imgctl(&d, NULL, "top", "--iterations", "0", NULL), 2);
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
                apifx_assert_contains(out, usage);
                free(out);
                assert_int_equal(tu_run(&out, IMGD_BUILD_DIR "/imgctl", "-s", "/nonexistent",
                                        commands[i], "--bogus", NULL),
                                 2);
                apifx_assert_contains(out, "unknown option '--bogus'");
                free(out);
                free(usage);
        }
        assert_int_equal(tu_run(&out, IMGD_BUILD_DIR "/imgctl", "--help", NULL), 0);
        for (size_t i = 0; i < ELEMENTSOF(commands); i++)
                apifx_assert_contains(out, commands[i]);
        free(out);
        /* A daemon that is not there: exit 3. */
        assert_int_equal(tu_run(NULL, IMGD_BUILD_DIR "/imgctl", "-s", "/nonexistent/imgd.sock",
                                "pause", NULL),
                         3);
}

/* Sends one request line and returns its error message (caller frees); fails the test when the
 * request is answered without an error. */
static char *raw_call_error(struct raw *c, const char *request)
{
        char *line, *error = NULL;
        json_t *result = NULL;

        apifx_raw_send(c, request);
        line = apifx_raw_read_line(c, 10000, NULL);
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
        /* Each with a70 in place of %s. */
        static const struct {
                const char *request;
                const char *error;
        } cut[] = {
                { "{\"v\":1,\"cmd\":\"jobs\",\"state\":\"%s\"}\n",
                  "unknown state '%.64s...' (expected one of queued, running, retry, done, dead, "
                  "cancelled)" },
                { "{\"v\":1,\"cmd\":\"enqueue\",\"path\":\"%s\"}\n",
                  "\"path\" must be absolute, not '%.64s...'" },
                { "{\"v\":1,\"cmd\":\"%s\"}\n", "unknown command '%.64s...'" },
        };
        struct tu_daemon d;
        struct raw c;
        char *error, *request, *long_path;

        (void)state;
        tu_daemon_setup(&d, ONE_VARIANT, 1, NULL);
        tu_daemon_start(&d);
        apifx_raw_connect(&c, d.socket);

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
        for (size_t i = 0; i < sizeof cut / sizeof cut[0]; i++) {
                char *expected = tu_path(cut[i].error, a70);

                request = tu_path(cut[i].request, a70);
                error = raw_call_error(&c, request);
                assert_string_equal(error, expected);
                free(expected);
                free(error);
                free(request);
        }

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
                cmocka_unit_test(test_top_not_a_tty),
        };

        signal(SIGPIPE, SIG_IGN);
        return cmocka_run_group_tests(tests, NULL, NULL);
}
