/* SPDX-License-Identifier: MIT */
/*
 * test-daemon.c - end-to-end tests: the real imgd (with real imgd-worker processes) on a
 * temporary tree, driven with real files, real inotify, real signals and imgctl over the
 * real socket. Images are made with libvips and outputs checked by decoding them.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <vips/vips.h>

#include "shared/hash.h"
#include "testutil.h"

#define AVATAR                                                                                     \
        "( { name = \"small\"; width = 100; height = 100; fit = \"cover\"; format = \"webp\"; "    \
        "quality = 80; mask = \"circle\"; },"                                                      \
        "  { name = \"medium\"; width = 200; height = 200; fit = \"cover\"; format = \"webp\"; "   \
        "quality = 80; mask = \"circle\"; },"                                                      \
        "  { name = \"large\"; width = 400; height = 400; fit = \"cover\"; format = \"webp\"; "    \
        "quality = 80; mask = \"circle\"; } )"

/* Jobs in `state` (an alert active, as after a burst, changes nothing to the count). */
static json_int_t count_state(struct tu_daemon *d, const char *state)
{
        json_t *st = tu_status_json(d, NULL);
        json_t *n = json_object_get(json_object_get(st, "jobs"), state);
        json_int_t v;

        assert_true(json_is_integer(n));
        v = json_integer_value(n);
        json_decref(st);
        return v;
}

static void assert_output(const char *path, unsigned w, unsigned h, const char *loader,
                          bool transparent_corner)
{
        unsigned ow = 0, oh = 0;
        char ol[64] = "";
        bool alpha = false;
        int a00 = -1;

        if (!tu_image_props(path, &ow, &oh, ol, sizeof ol, &alpha, &a00))
                fail_msg("%s does not exist or does not decode", path);
        assert_int_equal(ow, w);
        assert_int_equal(oh, h);
        if (!strstr(ol, loader))
                fail_msg("%s: loaded by %s, expected %s", path, ol, loader);
        if (transparent_corner) {
                assert_true(alpha);
                assert_int_equal(a00, 0);
        }
}

static void assert_avatars(struct tu_daemon *d, const char *stem)
{
        static const unsigned sizes[] = { 100, 200, 400 };
        static const char *const names[] = { "small", "medium", "large" };

        for (int i = 0; i < 3; i++) {
                char *p = tu_path("%s/%s_%s.webp", d->media, stem, names[i]);
                assert_output(p, sizes[i], sizes[i], "webp", true);
                free(p);
        }
}

/* The manifest lists every output with the SHA-256 of the file as it is on disk. */
static void assert_manifest(struct tu_daemon *d, const char *stem, size_t n_outputs)
{
        char *path = tu_path("%s/%s.manifest.json", d->media, stem);
        json_error_t err;
        json_t *m = json_load_file(path, 0, &err), *outs, *o;
        size_t i;

        if (!m)
                fail_msg("%s: %s", path, err.text);
        outs = json_object_get(m, "outputs");
        assert_int_equal(json_array_size(outs), n_outputs);
        assert_true(json_is_string(json_object_get(m, "source_sha256")));
        json_array_foreach(outs, i, o)
        {
                const char *file = json_string_value(json_object_get(o, "file"));
                char *dir = strdup(path), *slash = strrchr(dir, '/');
                *slash = '\0';
                char *fp = tu_path("%s/%s", dir, file);
                char sha[HASH_HEX_SIZE];
                int fd = open(fp, O_RDONLY | O_CLOEXEC);
                assert_true(fd >= 0);
                assert_int_equal(hash_sha256_fd(fd, 0, sha), 0);
                close(fd);
                assert_string_equal(sha, json_string_value(json_object_get(o, "sha256")));
                free(fp);
                free(dir);
        }
        json_decref(m);
        free(path);
}

static void make_and_move(const char *tmpdir, const char *dest, unsigned w, unsigned h,
                          const char *fmt, bool alpha)
{
        const char *base = strrchr(dest, '/') + 1;
        char *tmp = tu_path("%s/%s", tmpdir, base);

        tu_make_image(tmp, w, h, fmt, alpha);
        if (rename(tmp, dest) != 0)
                fail_msg("rename %s -> %s: %m", tmp, dest);
        free(tmp);
}

/* cp-style (written in place) and mv-style (renamed in) files are each processed once, into
 * three circle-masked WebP avatars of the right sizes; nested folders map to nested outputs;
 * no temporary file is left behind. */
/* Each of the daemon's `workers` workers runs libvips on its share of the CPUs, at least 1. */
static void assert_worker_threads(struct tu_daemon *d, unsigned workers)
{
        pid_t pids[16];
        unsigned n = tu_daemon_children(d, pids, 16);
        cpu_set_t set;
        long cpus = 0;
        char want[32];

        if (sched_getaffinity(0, sizeof set, &set) == 0)
                cpus = CPU_COUNT(&set);
        snprintf(want, sizeof want, "--threads=%ld",
                 cpus > (long)workers ? cpus / (long)workers : 1L);
        assert_int_equal(n, workers);
        for (unsigned i = 0; i < n; i++) {
                char path[64], cmdline[256];
                size_t k = 0;

                snprintf(path, sizeof path, "/proc/%d/cmdline", (int)pids[i]);
                /* Forked before the socket answered; exec'd (argv[0] "imgd-worker") soon. */
                for (int tries = 0; tries < 500; tries++) {
                        FILE *f = fopen(path, "re");

                        assert_non_null(f);
                        memset(cmdline, 0, sizeof cmdline);
                        k = fread(cmdline, 1, sizeof cmdline - 1, f);
                        fclose(f);
                        if (strcmp(cmdline, "imgd-worker") == 0)
                                break;
                        usleep(10 * 1000);
                }
                assert_string_equal(cmdline, "imgd-worker");
                assert_true(k > strlen(cmdline) + 1);
                assert_string_equal(cmdline + strlen(cmdline) + 1, want);
        }
}

static void test_end_to_end(void **state)
{
        struct tu_daemon d;
        char *p, *sub;
        json_t *jobs;

        tu_daemon_setup(&d, AVATAR, 2, NULL);
        tu_daemon_start(&d);
        assert_worker_threads(&d, 2);

        p = tu_path("%s/alice.jpg", d.uploads);
        tu_make_image(p, 1200, 800, "jpeg", false); /* written in place */
        free(p);
        sub = tu_path("%s/team", d.uploads);
        assert_int_equal(mkdir(sub, 0755), 0);
        free(sub);
        sub = tu_path("%s/team/2026", d.uploads);
        assert_int_equal(mkdir(sub, 0755), 0);
        p = tu_path("%s/bob.png", sub);
        make_and_move(d.root, p, 300, 500, "png", false); /* renamed in */
        free(p);
        free(sub);

        tu_daemon_wait_idle(&d, 60);
        assert_avatars(&d, "alice");
        assert_avatars(&d, "team/2026/bob");
        assert_int_equal(count_state(&d, "done"), 2);
        assert_int_equal(count_state(&d, "dead"), 0);
        assert_int_equal(tu_count_files(d.media, ".imgd-*"), 0);
        assert_int_equal(tu_count_files(d.media, "*.webp"), 6);
        assert_int_equal(tu_count_files(d.media, "*.manifest.json"), 2);
        assert_int_equal(tu_count_files(d.media, "*"), 8);
        assert_manifest(&d, "team/2026/bob", 3);

        /* Exactly one job per file, each with its three outputs recorded. */
        jobs = tu_imgctl_json(&d, "jobs", NULL, NULL);
        json_t *list = json_object_get(jobs, "jobs");
        assert_int_equal(json_array_size(list), 2);
        json_int_t id = json_integer_value(json_object_get(json_array_get(list, 0), "id"));
        char ids[32];
        snprintf(ids, sizeof ids, "%lld", (long long)id);
        json_t *show = tu_imgctl_json(&d, "show", ids, NULL);
        json_t *outs = json_object_get(json_object_get(show, "job"), "outputs");
        assert_int_equal(json_array_size(outs), 3);
        assert_int_equal(json_integer_value(json_object_get(json_array_get(outs, 2), "width")),
                         400);
        /* A pipeline without placeholder = true has none. */
        assert_true(json_is_null(json_object_get(json_object_get(show, "job"), "placeholder")));
        json_decref(show);
        json_decref(jobs);

        assert_true(WIFEXITED(tu_daemon_stop(&d, SIGTERM)));
        tu_daemon_cleanup(&d);
}

/*
 * A burst of uploads is worked on while it is being taken in: the uploads of one turn of
 * events share one commit of the ledger (issue 16), and the turn is short, so the first job
 * is done before the last upload of a long burst is even taken in, rather than the workers
 * waiting for the whole burst.
 */
static void test_burst_worked_while_taken_in(void **state)
{
        enum { N = 3000 };
        struct tu_daemon d;
        _cleanup_free_ char *stage = NULL, *src = NULL, *sql = NULL;
        void *img;
        size_t len;
        int64_t later;

        tu_daemon_setup(&d,
                        "( { name = \"s\"; width = 32; height = 32; fit = \"cover\"; "
                        "format = \"webp\"; } )",
                        1, NULL);
        tu_daemon_start(&d);
        stage = tu_path("%s/stage", d.root);
        assert_int_equal(mkdir(stage, 0755), 0);
        src = tu_path("%s/src.jpg", d.root);
        tu_make_image(src, 64, 48, "jpeg", false);
        img = tu_read_file(src, &len);
        for (int i = 0; i < N; i++) {
                _cleanup_free_ char *p = tu_path("%s/f%04d.jpg", stage, i);
                tu_write_file(p, img, len);
        }
        free(img);
        /* The whole burst is waiting in the kernel when imgd reads the first of its events. */
        assert_int_equal(kill(d.pid, SIGSTOP), 0);
        for (int i = 0; i < N; i++) {
                _cleanup_free_ char *from = tu_path("%s/f%04d.jpg", stage, i);
                _cleanup_free_ char *to = tu_path("%s/f%04d.jpg", d.uploads, i);
                assert_int_equal(rename(from, to), 0);
        }
        assert_int_equal(kill(d.pid, SIGCONT), 0);
        tu_daemon_wait_idle(&d, 180);
        assert_int_equal(count_state(&d, "done"), N);

        /* Jobs taken in after the first one was done. */
        later = tu_ledger_int(&d, "SELECT count(*) FROM jobs WHERE created_us > "
                                  "(SELECT updated_us FROM jobs WHERE id = 1)");
        fprintf(stderr, "%" PRId64 " of %d uploads were taken in after the first was done\n", later,
                N);
        assert_true(later > 0);

        assert_true(WIFEXITED(tu_daemon_stop(&d, SIGTERM)));
        tu_daemon_cleanup(&d);
}

/* Files dropped while imgd is stopped are processed at the next start; files already done
 * are not redone; touching a file without changing it creates no new job. */
static void test_dropped_while_stopped(void **state)
{
        struct tu_daemon d;
        char *a, *b;

        tu_daemon_setup(&d, AVATAR, 1, NULL);
        a = tu_path("%s/a.jpg", d.uploads);
        b = tu_path("%s/deep/down/b.webp", d.uploads);
        tu_make_image(a, 640, 480, "jpeg", false);
        tu_daemon_start(&d);
        tu_daemon_wait_idle(&d, 60);
        assert_int_equal(count_state(&d, "done"), 1);
        tu_daemon_stop(&d, SIGTERM);

        tu_make_image(b, 500, 700, "webp", false);
        assert_int_equal(utimes(a, NULL), 0); /* new mtime, same content */
        tu_daemon_start(&d);
        tu_daemon_wait_idle(&d, 60);
        assert_avatars(&d, "deep/down/b");
        assert_int_equal(count_state(&d, "done"), 2);

        /* Same content written again while running: still no new job. */
        size_t len;
        void *data = tu_read_file(a, &len);
        tu_write_file(a, data, len);
        free(data);
        usleep(300 * 1000);
        tu_daemon_wait_idle(&d, 60);
        assert_int_equal(count_state(&d, "done"), 2);
        assert_int_equal(count_state(&d, "queued"), 0);

        free(a);
        free(b);
        tu_daemon_cleanup(&d);
}

/* A file that is not an image ends dead with the loader's message, and the daemon goes on
 * to process the next image. Temporary and hidden names are ignored until renamed. */
static void test_bad_input_and_ignored_names(void **state)
{
        struct tu_daemon d;
        char *p, *out = NULL;
        json_t *jobs, *job;

        tu_daemon_setup(&d, AVATAR, 1, NULL);
        tu_daemon_start(&d);
        p = tu_path("%s/notes.jpg", d.uploads);
        tu_write_file(p, "this is not an image\n", (size_t)-1);
        free(p);
        p = tu_path("%s/upload.jpg.part", d.uploads);
        tu_make_image(p, 300, 300, "jpeg", false);
        free(p);
        p = tu_path("%s/.hidden.jpg", d.uploads);
        tu_make_image(p, 300, 300, "jpeg", false);
        free(p);
        tu_daemon_wait_idle(&d, 60);

        assert_int_equal(count_state(&d, "dead"), 1);
        assert_int_equal(count_state(&d, "done"), 0);
        jobs = tu_imgctl_json(&d, "jobs", "--state", "dead");
        job = json_array_get(json_object_get(jobs, "jobs"), 0);
        const char *err = json_string_value(json_object_get(job, "error"));
        assert_non_null(err);
        if (!strstr(err, "not a supported image") || !strstr(err, "known"))
                fail_msg("unexpected error for a text file: %s", err);
        json_decref(jobs);

        /* The daemon is alive and the next image works; the .part file counts once renamed. */
        char *from = tu_path("%s/upload.jpg.part", d.uploads);
        char *to = tu_path("%s/upload.jpg", d.uploads);
        assert_int_equal(rename(from, to), 0);
        free(from);
        free(to);
        tu_daemon_wait_idle(&d, 60);
        assert_int_equal(count_state(&d, "done"), 1);
        assert_avatars(&d, "upload");
        assert_int_equal(tu_count_files(d.media, "*.webp"), 3);
        assert_int_equal(tu_count_files(d.media, "*"), 4); /* and one manifest */

        assert_int_equal(tu_imgctl(&d, &out, "status", NULL), 0);
        assert_non_null(strstr(out, "dead"));
        /* One node (SQLite): no cluster section. */
        assert_null(strstr(out, "cluster"));
        assert_null(strstr(out, "node "));
        free(out);
        {
                json_t *st = tu_status_json(&d, NULL);

                assert_null(json_object_get(st, "cluster"));
                assert_null(json_object_get(st, "node"));
                json_decref(st);
        }
        tu_daemon_cleanup(&d);
}

/*
 * A progressive JPEG whose coefficients alone need more than three quarters of
 * limits.worker_memory (128 MiB: 96 MiB; 4800x4000 at 4:4:4 needs 110 MiB) is refused from
 * its header in one attempt, with the reason, not killed for its memory and retried; a
 * good image after it is rendered. (That the same picture as a baseline JPEG is rendered
 * within the same limit is test-render-decode's test_progressive_jpeg_memory: under
 * AddressSanitizer a worker's own memory would not fit such a test here.)
 */
static void test_progressive_jpeg_limit(void **state)
{
        struct tu_daemon d;
        VipsImage *im = NULL, *n[3] = {};
        char *p, *staged;
        json_t *jobs, *job;
        const char *err;

        (void)state;
        tu_daemon_setup(&d, AVATAR, 1, "limits = { worker_memory = 128; };");
        tu_daemon_start(&d);
        assert_int_equal(VIPS_INIT("test-daemon"), 0);
        for (int i = 0; i < 3; i++)
                assert_int_equal(vips_gaussnoise(&n[i], 4800, 4000, NULL), 0);
        assert_int_equal(vips_bandjoin(n, &im, 3, NULL), 0); /* RGB: 3 components */
        for (int i = 0; i < 3; i++)
                g_object_unref(n[i]);
        staged = tu_path("%s/prog.jpg", d.root);
        assert_int_equal(vips_image_write_to_file(im, staged, "Q", 85, "interlace", TRUE,
                                                  "subsample_mode", VIPS_FOREIGN_SUBSAMPLE_OFF,
                                                  NULL),
                         0);
        g_object_unref(im);
        p = tu_path("%s/prog.jpg", d.uploads);
        assert_int_equal(rename(staged, p), 0);
        free(p);
        free(staged);
        tu_daemon_wait_idle(&d, 120);
        p = tu_path("%s/good.jpg", d.uploads);
        tu_make_image(p, 300, 200, "jpeg", false);
        free(p);
        tu_daemon_wait_idle(&d, 120);

        assert_int_equal(count_state(&d, "done"), 1);
        assert_avatars(&d, "good");
        jobs = tu_imgctl_json(&d, "jobs", "--state", "dead");
        job = json_array_get(json_object_get(jobs, "jobs"), 0);
        err = json_string_value(json_object_get(job, "error"));
        if (!err || !strstr(err, "progressive JPEG needs 110 MiB to decode, over the limit of "
                                 "96 MiB (limits.worker_memory)"))
                fail_msg("unexpected error for the progressive JPEG: %s", err ? err : "(none)");
        assert_int_equal(json_integer_value(json_object_get(job, "attempts")), 1);
        json_decref(jobs);
        tu_daemon_cleanup(&d);
}

/* A source replaced with new content gets new outputs; a second source whose outputs would
 * overwrite the first's (a.jpg, a.png) is refused, never silently overwriting. */
static void test_replace_and_collision(void **state)
{
        const char *pipe = "( { name = \"w\"; width = 300; height = 300; fit = \"inside\"; "
                           "format = \"jpeg\"; quality = 85; } )";
        struct tu_daemon d;
        char *src, *out_path, *other;
        void *before, *after;
        size_t blen, alen;
        unsigned w, h;

        tu_daemon_setup(&d, pipe, 2, NULL);
        tu_daemon_start(&d);
        src = tu_path("%s/a.jpg", d.uploads);
        out_path = tu_path("%s/a_w.jpg", d.media);
        make_and_move(d.root, src, 600, 400, "jpeg", false);
        tu_daemon_wait_idle(&d, 60);
        assert_true(tu_image_props(out_path, &w, &h, NULL, 0, NULL, NULL));
        assert_int_equal(w, 300);
        assert_int_equal(h, 200);
        before = tu_read_file(out_path, &blen);

        /* Replace with different content and aspect: outputs are replaced. */
        make_and_move(d.root, src, 400, 800, "jpeg", false);
        tu_daemon_wait_idle(&d, 60);
        assert_true(tu_image_props(out_path, &w, &h, NULL, 0, NULL, NULL));
        assert_int_equal(w, 150);
        assert_int_equal(h, 300);
        after = tu_read_file(out_path, &alen);
        assert_false(blen == alen && memcmp(before, after, blen) == 0);
        assert_int_equal(count_state(&d, "done"), 2);

        /* a.png maps to the same outputs as a.jpg: dead, and a_w.jpg untouched. */
        other = tu_path("%s/a.png", d.uploads);
        make_and_move(d.root, other, 500, 500, "png", false);
        tu_daemon_wait_idle(&d, 60);
        assert_int_equal(count_state(&d, "dead"), 1);
        json_t *jobs = tu_imgctl_json(&d, "jobs", "--state", "dead");
        const char *err = json_string_value(
                json_object_get(json_array_get(json_object_get(jobs, "jobs"), 0), "error"));
        assert_non_null(err);
        assert_non_null(strstr(err, "a.jpg"));
        json_decref(jobs);
        free(after);
        after = tu_read_file(out_path, &alen);
        assert_true(tu_image_props(out_path, &w, &h, NULL, 0, NULL, NULL));
        assert_int_equal(w, 150);

        free(before);
        free(after);
        free(src);
        free(other);
        free(out_path);
        tu_daemon_cleanup(&d);
}

/* Fits, formats, EXIF rotation and flattening, end to end. */
static void test_fits_and_formats(void **state)
{
        const char *pipe = "( { name = \"cover\"; width = 120; height = 80; fit = \"cover\"; "
                           "format = \"png\"; },"
                           "  { name = \"contain\"; width = 120; height = 80; fit = \"contain\"; "
                           "format = \"jpeg\"; },"
                           "  { name = \"inside\"; width = 5000; height = 5000; fit = \"inside\"; "
                           "format = \"webp\"; },"
                           "  { name = \"same\"; width = 64; height = 64; fit = \"cover\"; format "
                           "= \"same\"; } )";
        struct tu_daemon d;
        char *p;

        tu_daemon_setup(&d, pipe, 2, "background = \"#ff0000\";");
        tu_daemon_start(&d);
        p = tu_path("%s/photo.png", d.uploads);
        make_and_move(d.root, p, 400, 200, "png", true);
        free(p);
        tu_daemon_wait_idle(&d, 60);

        p = tu_path("%s/photo_cover.png", d.media);
        assert_output(p, 120, 80, "png", false);
        free(p);
        p = tu_path("%s/photo_contain.jpg", d.media);
        assert_output(p, 120, 60, "jpeg", false); /* 2:1 inside 120x80 */
        free(p);
        p = tu_path("%s/photo_inside.webp", d.media);
        assert_output(p, 400, 200, "webp", false); /* never enlarged */
        free(p);
        p = tu_path("%s/photo_same.png", d.media); /* same as the source: png */
        assert_output(p, 64, 64, "png", false);
        free(p);
        assert_int_equal(count_state(&d, "done"), 1);
        tu_daemon_cleanup(&d);
}

/* Start-up errors name the path and the cause; --check-config validates. */
static bool exists(const char *path)
{
        return access(path, F_OK) == 0;
}

/* A stop on SIGTERM records the clean stop next to the ledger; a start consumes the record
 * before it writes; a kill leaves none, and the next start checks the whole ledger. */
static void test_clean_stop_record(void **state)
{
        struct tu_daemon d;
        char *closed, *a;

        tu_daemon_setup(&d, AVATAR, 1, NULL);
        closed = tu_path("%s/imgd.db.closed", d.state);
        a = tu_path("%s/a.jpg", d.uploads);
        tu_make_image(a, 320, 240, "jpeg", false);
        tu_daemon_start(&d);
        assert_true(tu_log_contains(&d, "PRAGMA quick_check of the whole file"));
        tu_daemon_wait_idle(&d, 60);
        assert_false(exists(closed));
        assert_int_equal(tu_daemon_stop(&d, SIGTERM), 0);
        assert_true(exists(closed));

        tu_daemon_start(&d);
        assert_false(exists(closed));
        assert_int_equal(count_state(&d, "done"), 1);
        tu_daemon_stop(&d, SIGKILL);
        assert_false(exists(closed));

        tu_daemon_start(&d);
        assert_int_equal(count_state(&d, "done"), 1);
        assert_int_equal(count_state(&d, "queued"), 0);
        assert_int_equal(tu_daemon_stop(&d, SIGTERM), 0);
        assert_true(exists(closed));

        free(a);
        free(closed);
        tu_daemon_cleanup(&d);
}

static void test_startup_errors(void **state)
{
        struct tu_daemon d;
        char *out = NULL, *conf;
        int r;

        tu_daemon_setup(&d, AVATAR, 1, NULL);
        r = tu_run(&out, IMGD_BUILD_DIR "/imgd", "--check-config", "-c", d.config, NULL);
        if (r != 0)
                fail_msg("--check-config of a valid file failed: %s", out);
        free(out);

        /* A watched folder that does not exist. */
        tu_rm_rf(d.uploads);
        r = tu_run(&out, IMGD_BUILD_DIR "/imgd", "-c", d.config, NULL);
        assert_int_not_equal(r, 0);
        if (!strstr(out, d.uploads) || !strstr(out, "No such file"))
                fail_msg("error does not name the watched path and cause: %s", out);
        free(out);

        /* A configuration file that does not exist. */
        conf = tu_path("%s/missing.conf", d.root);
        r = tu_run(&out, IMGD_BUILD_DIR "/imgd", "-c", conf, NULL);
        assert_int_not_equal(r, 0);
        assert_non_null(strstr(out, conf));
        free(out);
        free(conf);

        /* imgctl against no daemon: a clear message and exit status 3. */
        r = tu_imgctl(&d, &out, "status", NULL);
        assert_int_equal(r, 3);
        assert_non_null(strstr(out, d.socket));
        free(out);
        tu_daemon_cleanup(&d);
}

/* Starts `imgctl -s SOCKET a b c` in the background, its output dropped; returns its pid. */
static pid_t spawn_imgctl(struct tu_daemon *d, const char *a, const char *b, const char *c)
{
        pid_t pid = fork();

        assert_true(pid >= 0);
        if (pid == 0) {
                int null = open("/dev/null", O_WRONLY);

                dup2(null, STDOUT_FILENO);
                dup2(null, STDERR_FILENO);
                execl(IMGD_BUILD_DIR "/imgctl", "imgctl", "-s", d->socket, a, b, c, (char *)NULL);
                _exit(127);
        }
        return pid;
}

/*
 * imgctl --connect-timeout: without a daemon it keeps trying for the time given, then exits 3
 * naming the socket; started before the daemon, it gets its answer once the daemon is up.
 */
static void test_connect_timeout(void **state)
{
        struct tu_daemon d;
        char *out = NULL;
        int64_t t0;
        pid_t pid;
        int r, status;

        tu_daemon_setup(&d, AVATAR, 1, NULL);

        t0 = tu_now_us();
        r = tu_imgctl(&d, &out, "--connect-timeout", "1", "status", NULL);
        assert_int_equal(r, 3);
        assert_true(tu_now_us() - t0 >= 1000000);
        assert_non_null(strstr(out, d.socket));
        free(out);

        r = tu_imgctl(&d, &out, "--connect-timeout", "soon", "status", NULL);
        assert_int_equal(r, 2);
        assert_non_null(strstr(out, "--connect-timeout: 'soon' is not a duration"));
        free(out);

        pid = spawn_imgctl(&d, "--connect-timeout", "30", "status");
        usleep(300 * 1000); /* imgctl is retrying by now */
        assert_int_equal(waitpid(pid, &status, WNOHANG), 0);
        tu_daemon_start(&d);
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
        tu_daemon_cleanup(&d);
}

/*
 * A file dropped while imgd could not look (stopped, here; busy, in life) is work that
 * `imgctl wait` waits for, even when its question is answered before the upload is taken in:
 * on SIGCONT the control socket goes first (intake runs at a lower priority), and status says
 * "intake_pending" until the kernel's report is read.
 */
static void test_wait_counts_uploads_not_yet_taken_in(void **state)
{
        struct tu_daemon d;
        char *staged, *dest;
        pid_t pid;
        int status;

        tu_daemon_setup(&d, AVATAR, 1, NULL);
        staged = tu_path("%s/a.jpg", d.root);
        dest = tu_path("%s/a.jpg", d.uploads);
        tu_make_image(staged, 320, 240, "jpeg", false);
        tu_daemon_start(&d);

        assert_int_equal(kill(d.pid, SIGSTOP), 0);
        assert_int_equal(rename(staged, dest), 0);
        pid = spawn_imgctl(&d, "wait", "--timeout", "60");
        usleep(300 * 1000); /* imgctl has connected and asked (the kernel holds both) */
        assert_int_equal(kill(d.pid, SIGCONT), 0);
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
        assert_int_equal(count_state(&d, "done"), 1);

        free(staged);
        free(dest);
        tu_daemon_cleanup(&d);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_end_to_end),
                cmocka_unit_test(test_dropped_while_stopped),
                cmocka_unit_test(test_burst_worked_while_taken_in),
                cmocka_unit_test(test_bad_input_and_ignored_names),
                cmocka_unit_test(test_progressive_jpeg_limit),
                cmocka_unit_test(test_replace_and_collision),
                cmocka_unit_test(test_fits_and_formats),
                cmocka_unit_test(test_startup_errors),
                cmocka_unit_test(test_connect_timeout),
                cmocka_unit_test(test_wait_counts_uploads_not_yet_taken_in),
                cmocka_unit_test(test_clean_stop_record),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
