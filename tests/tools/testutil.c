/* SPDX-License-Identifier: MIT */
/*
 * testutil.c - helpers for the cmocka tests; see testutil.h.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <vips/vips.h>

#include "shared/macro.h"
#include "shared/time-util.h"
#include "worker/render.h"
#include "testutil.h"

char *tu_mkdtemp(void)
{
        const char *tmp = getenv("TMPDIR");
        char *p = NULL;

        assert_true(asprintf(&p, "%s/imgd-test-XXXXXX", tmp && *tmp ? tmp : "/tmp") > 0);
        assert_non_null(mkdtemp(p));
        return p;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
        (void)st;
        (void)ftw;
        if (flag == FTW_DP || flag == FTW_D)
                rmdir(path);
        else
                unlink(path);
        return 0;
}

void tu_rm_rf(const char *path)
{
        if (path)
                nftw(path, rm_one, 32, FTW_DEPTH | FTW_PHYS);
}

static void mkdir_parents_of(const char *path)
{
        char *copy = strdup(path);

        assert_non_null(copy);
        for (char *p = copy + 1; *p; p++) {
                if (*p != '/')
                        continue;
                *p = '\0';
                (void)mkdir(copy, 0755);
                *p = '/';
        }
        free(copy);
}

void tu_write_file(const char *path, const void *data, size_t len)
{
        FILE *f;

        if (len == (size_t)-1)
                len = strlen(data);
        mkdir_parents_of(path);
        f = fopen(path, "we");
        assert_non_null(f);
        assert_int_equal(fwrite(data, 1, len, f), len);
        assert_int_equal(fclose(f), 0);
}

char *tu_path(const char *fmt, ...)
{
        va_list ap;
        char *p = NULL;
        int r;

        va_start(ap, fmt);
        r = vasprintf(&p, fmt, ap);
        va_end(ap);
        assert_true(r >= 0);
        return p;
}

void *tu_read_file(const char *path, size_t *ret_len)
{
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        size_t got = 0, cap = 4096;
        char *buf;

        if (fd < 0)
                return NULL;
        /* Read to the end: /proc files report a size of 0. */
        buf = malloc(cap + 1);
        assert_non_null(buf);
        for (;;) {
                ssize_t k;

                if (got == cap) {
                        cap *= 2;
                        buf = realloc(buf, cap + 1);
                        assert_non_null(buf);
                }
                k = read(fd, buf + got, cap - got);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        break;
                got += (size_t)k;
        }
        close(fd);
        buf[got] = '\0';
        if (ret_len)
                *ret_len = got;
        return buf;
}

static void ensure_vips(void)
{
        static bool done;

        if (!done) {
                assert_int_equal(render_init("imgd-test", 0), 0);
                done = true;
        }
}

void tu_make_image(const char *path, unsigned width, unsigned height, const char *format,
                   bool alpha)
{
        VipsImage *xyz = NULL, *r = NULL, *g = NULL, *b = NULL, *rgb = NULL, *u = NULL, *img = NULL;
        char *name = NULL;

        ensure_vips();
        mkdir_parents_of(path);
        /* A smooth colourful gradient with some detail, so encoders have real work. */
        assert_int_equal(vips_xyz(&xyz, (int)width, (int)height, NULL), 0);
        VipsImage *x = NULL, *y = NULL;
        assert_int_equal(vips_extract_band(xyz, &x, 0, NULL), 0);
        assert_int_equal(vips_extract_band(xyz, &y, 1, NULL), 0);
        assert_int_equal(vips_linear1(x, &r, 255.0 / width, 0, NULL), 0);
        assert_int_equal(vips_linear1(y, &g, 255.0 / height, 0, NULL), 0);
        VipsImage *sum = NULL;
        assert_int_equal(vips_add(x, y, &sum, NULL), 0);
        assert_int_equal(vips_linear1(sum, &b, 3.0, 0, NULL), 0);
        VipsImage *bm = NULL;
        assert_int_equal(vips_remainder_const1(b, &bm, 256, NULL), 0);
        VipsImage *bands[4] = { r, g, bm, NULL };
        int n = 3;
        if (alpha) {
                assert_int_equal(vips_linear1(x, &bands[3], 255.0 / width, 0, NULL), 0);
                n = 4;
        }
        assert_int_equal(vips_bandjoin(bands, &rgb, n, NULL), 0);
        assert_int_equal(vips_cast(rgb, &u, VIPS_FORMAT_UCHAR, NULL), 0);
        assert_int_equal(vips_copy(u, &img, "interpretation", VIPS_INTERPRETATION_sRGB, NULL), 0);
        /* Encode by `format`, whatever the file is called (e.g. "x.jpg.part"). */
        if (strcmp(format, "jpeg") == 0)
                name = tu_path(".jpg[Q=90,strip]");
        else if (!strcmp(format, "png") || !strcmp(format, "webp") || !strcmp(format, "gif") ||
                 !strcmp(format, "tiff"))
                name = tu_path(".%s[strip]", format);
        else
                fail_msg("unknown format %s", format);
        void *buf = NULL;
        size_t len = 0;
        if (vips_image_write_to_buffer(img, name, &buf, &len, NULL) != 0)
                fail_msg("write %s: %s", path, vips_error_buffer());
        tu_write_file(path, buf, len);
        g_free(buf);
        free(name);
        VipsImage *all[] = { xyz, x, y, r, g, sum, b, bm, bands[3], rgb, u, img };
        for (size_t i = 0; i < ELEMENTSOF(all); i++)
                if (all[i])
                        g_object_unref(all[i]);
}

bool tu_image_props(const char *path, unsigned *ret_w, unsigned *ret_h, char *ret_loader,
                    size_t loader_len, bool *ret_has_alpha, int *ret_alpha_at_00)
{
        VipsImage *img;
        const char *loader = NULL;
        double *pix = NULL;
        int n = 0;
        bool ok = true;

        ensure_vips();
        img = vips_image_new_from_file(path, "fail_on", VIPS_FAIL_ON_WARNING, NULL);
        if (!img) {
                vips_error_clear();
                return false;
        }
        if (vips_image_get_string(img, VIPS_META_LOADER, &loader) != 0)
                loader = "";
        /* Force a full decode: a truncated file must fail here. */
        double avg;
        if (vips_avg(img, &avg, NULL) != 0) {
                vips_error_clear();
                ok = false;
                goto out;
        }
        if (ret_w)
                *ret_w = (unsigned)vips_image_get_width(img);
        if (ret_h)
                *ret_h = (unsigned)vips_image_get_height(img);
        if (ret_loader)
                snprintf(ret_loader, loader_len, "%s", loader);
        if (ret_has_alpha)
                *ret_has_alpha = vips_image_hasalpha(img);
        if (ret_alpha_at_00) {
                *ret_alpha_at_00 = 255;
                if (vips_image_hasalpha(img) && vips_getpoint(img, &pix, &n, 0, 0, NULL) == 0)
                        *ret_alpha_at_00 = (int)pix[n - 1];
                g_free(pix);
        }
out:
        g_object_unref(img);
        return ok;
}

static unsigned count_in(const char *dir, const char *pattern)
{
        DIR *d = opendir(dir);
        struct dirent *de;
        unsigned n = 0;

        if (!d)
                return 0;
        while ((de = readdir(d))) {
                char *p;
                struct stat st;

                if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                        continue;
                p = tu_path("%s/%s", dir, de->d_name);
                if (lstat(p, &st) == 0) {
                        if (S_ISDIR(st.st_mode))
                                n += count_in(p, pattern);
                        else if (S_ISREG(st.st_mode) &&
                                 fnmatch(pattern, de->d_name, FNM_PERIOD * 0) == 0)
                                n++;
                }
                free(p);
        }
        closedir(d);
        return n;
}

unsigned tu_count_files(const char *dir, const char *pattern)
{
        return count_in(dir, pattern);
}

int64_t tu_now_us(void)
{
        return (int64_t)mono_usec();
}

void tu_daemon_setup(struct tu_daemon *d, const char *pipeline_body, unsigned workers,
                     const char *extra)
{
        char *conf;

        *d = (struct tu_daemon){};
        d->root = tu_mkdtemp();
        d->uploads = tu_path("%s/uploads", d->root);
        d->media = tu_path("%s/media", d->root);
        d->state = tu_path("%s/state", d->root);
        d->config = tu_path("%s/imgd.conf", d->root);
        d->socket = tu_path("%s/imgd.sock", d->root);
        d->log = tu_path("%s/imgd.log", d->root);
        assert_int_equal(mkdir(d->uploads, 0755), 0);
        conf = tu_path("state_dir = \"%s\";\n"
                       "socket = \"%s\";\n"
                       "workers = %u;\n"
                       "watch = ( { path = \"%s\"; output = \"%s\"; pipeline = \"p\"; "
                       "recursive = true; } );\n"
                       "pipelines = { p = %s; };\n"
                       "%s\n",
                       d->state, d->socket, workers, d->uploads, d->media, pipeline_body,
                       extra ? extra : "");
        tu_write_file(d->config, conf, (size_t)-1);
        free(conf);
}

static int wait_status(pid_t pid, int *status, int timeout_ms)
{
        for (int waited = 0; waited <= timeout_ms; waited += 10) {
                pid_t r = waitpid(pid, status, WNOHANG);
                if (r == pid)
                        return 0;
                if (r < 0)
                        return -errno;
                usleep(10 * 1000);
        }
        return -ETIMEDOUT;
}

/* Daemons still running when the test program exits (a failed check skips the cleanup)
 * are killed, so none outlives its test. */
static pid_t started[64];

static void kill_started(void)
{
        for (size_t i = 0; i < ELEMENTSOF(started); i++)
                if (started[i] > 0 && kill(started[i], SIGKILL) == 0)
                        (void)waitpid(started[i], NULL, 0);
}

static void remember(pid_t pid)
{
        static bool registered;

        if (!registered)
                registered = atexit(kill_started) == 0;
        for (size_t i = 0; i < ELEMENTSOF(started); i++) {
                if (started[i] <= 0 || kill(started[i], 0) < 0) {
                        started[i] = pid;
                        return;
                }
        }
}

void tu_daemon_start(struct tu_daemon *d)
{
        tu_daemon_start_with(d, NULL);
}

char *tu_find_program(const char *name, const char *package)
{
        const char *path = getenv("PATH");
        char *dirs = tu_path("%s:/usr/local/sbin:/usr/sbin:/sbin:/usr/bin:/bin", path ? path : "");
        char *save = NULL;

        for (char *dir = strtok_r(dirs, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
                char *p = tu_path("%s/%s", *dir ? dir : ".", name);

                if (access(p, X_OK) == 0) {
                        free(dirs);
                        return p;
                }
                free(p);
        }
        free(dirs);
        fail_msg("%s is not installed; it comes with the Debian package %s "
                 "(scripts/deps.sh --tests installs it)",
                 name, package);
        return NULL;
}

void tu_daemon_start_with(struct tu_daemon *d, void (*in_child)(struct tu_daemon *d))
{
        pid_t pid = fork();

        assert_true(pid >= 0);
        if (pid == 0) {
                int fd = open(d->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
                if (fd >= 0) {
                        dup2(fd, STDERR_FILENO);
                        dup2(fd, STDOUT_FILENO);
                }
                if (in_child)
                        in_child(d);
                execl(IMGD_BUILD_DIR "/imgd", "imgd", "-v", "-c", d->config, (char *)NULL);
                _exit(127);
        }
        d->pid = pid;
        remember(pid);
        for (int i = 0; i < 2000; i++) {
                int status;
                if (tu_imgctl(d, NULL, "status", NULL) == 0)
                        return;
                if (waitpid(pid, &status, WNOHANG) == pid) {
                        char *log = tu_read_file(d->log, NULL);
                        size_t len = log ? strlen(log) : 0;

                        d->pid = 0;
                        /* The end of the log says why (cmocka cuts a long message short). */
                        fail_msg("imgd exited during start-up (status %d); the end of its "
                                 "log:\n%s",
                                 status, log ? log + (len > 2000 ? len - 2000 : 0) : "");
                }
                usleep(10 * 1000);
        }
        fail_msg("imgd did not answer on %s within 20 s", d->socket);
}

int tu_daemon_stop(struct tu_daemon *d, int sig)
{
        int status = 0;

        if (d->pid <= 0)
                return 0;
        kill(d->pid, sig);
        if (wait_status(d->pid, &status, 30000) < 0) {
                kill(d->pid, SIGKILL);
                waitpid(d->pid, &status, 0);
        }
        d->pid = 0;
        return status;
}

int tu_daemon_wait_exit(struct tu_daemon *d, int timeout_ms)
{
        int status = 0;

        if (d->pid <= 0)
                return -1;
        if (wait_status(d->pid, &status, timeout_ms) < 0)
                return -1;
        d->pid = 0;
        return status;
}

unsigned tu_daemon_children(struct tu_daemon *d, pid_t *pids, unsigned max)
{
        DIR *proc = opendir("/proc");
        struct dirent *de;
        unsigned n = 0;

        if (!proc)
                return 0;
        while ((de = readdir(proc)) && n < max) {
                char *path, *stat, *close_paren;
                int ppid;

                if (de->d_name[0] < '0' || de->d_name[0] > '9')
                        continue;
                path = tu_path("/proc/%s/stat", de->d_name);
                stat = tu_read_file(path, NULL);
                free(path);
                /* "pid (comm) state ppid ...": comm may hold spaces, so parse after ')'. */
                close_paren = stat ? strrchr(stat, ')') : NULL;
                if (close_paren && sscanf(close_paren + 1, " %*c %d", &ppid) == 1 &&
                    ppid == (int)d->pid)
                        pids[n++] = (pid_t)atoi(de->d_name);
                free(stat);
        }
        closedir(proc);
        return n;
}

bool tu_log_contains(struct tu_daemon *d, const char *text)
{
        char *log = tu_read_file(d->log, NULL);
        bool found = log && strstr(log, text);

        free(log);
        return found;
}

void tu_daemon_cleanup(struct tu_daemon *d)
{
        if (d->pid > 0)
                tu_daemon_stop(d, SIGTERM);
        if (getenv("IMGD_TEST_KEEP"))
                fprintf(stderr, "keeping %s\n", d->root);
        else
                tu_rm_rf(d->root);
        free(d->root);
        free(d->uploads);
        free(d->media);
        free(d->state);
        free(d->config);
        free(d->socket);
        free(d->log);
        *d = (struct tu_daemon){};
}

static int run_argv(char **ret_out, char *const argv[])
{
        int pipefd[2];
        pid_t pid;
        int status;
        char *out = NULL;
        size_t len = 0, cap = 0;

        assert_int_equal(pipe2(pipefd, O_CLOEXEC), 0);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                dup2(pipefd[1], STDOUT_FILENO);
                if (ret_out) {
                        dup2(pipefd[1], STDERR_FILENO);
                } else {
                        int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
                        if (null >= 0)
                                dup2(null, STDERR_FILENO);
                }
                execv(argv[0], argv);
                _exit(127);
        }
        close(pipefd[1]);
        for (;;) {
                if (len + 4096 + 1 > cap) {
                        cap = cap ? cap * 2 : 8192;
                        out = realloc(out, cap);
                        assert_non_null(out);
                }
                ssize_t k = read(pipefd[0], out + len, cap - len - 1);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        break;
                len += (size_t)k;
        }
        close(pipefd[0]);
        out[len] = '\0';
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                ;
        if (ret_out)
                *ret_out = out;
        else
                free(out);
        if (WIFSIGNALED(status))
                return 128 + WTERMSIG(status);
        return WEXITSTATUS(status);
}

int tu_imgctl(struct tu_daemon *d, char **ret_out, ...)
{
        char *argv[32] = { IMGD_BUILD_DIR "/imgctl", "-s", d->socket };
        size_t n = 3;
        va_list ap;
        const char *a;

        va_start(ap, ret_out);
        while ((a = va_arg(ap, const char *)) && n < ELEMENTSOF(argv) - 1)
                argv[n++] = (char *)a;
        va_end(ap);
        argv[n] = NULL;
        return run_argv(ret_out, argv);
}

void tu_daemon_wait_idle(struct tu_daemon *d, unsigned timeout_s)
{
        char t[32];
        char *out = NULL;
        int r;

        snprintf(t, sizeof t, "%u", timeout_s);
        r = tu_imgctl(d, &out, "wait", "--timeout", t, NULL);
        if (r != 0) {
                char *log = tu_read_file(d->log, NULL);
                fail_msg("imgctl wait failed (%d): %s\ndaemon log:\n%s", r, out ? out : "",
                         log ? log : "");
        }
        free(out);
}

int tu_run(char **ret_out, const char *prog, ...)
{
        char *argv[64] = { (char *)prog };
        size_t n = 1;
        va_list ap;
        const char *a;

        va_start(ap, prog);
        while ((a = va_arg(ap, const char *)) && n < ELEMENTSOF(argv) - 1)
                argv[n++] = (char *)a;
        va_end(ap);
        argv[n] = NULL;
        return run_argv(ret_out, argv);
}

json_t *tu_imgctl_json(struct tu_daemon *d, const char *cmd, const char *arg1, const char *arg2)
{
        char *out = NULL;
        json_error_t err;
        json_t *j;
        int r;

        if (arg2)
                r = tu_imgctl(d, &out, cmd, arg1, arg2, "--json", NULL);
        else if (arg1)
                r = tu_imgctl(d, &out, cmd, arg1, "--json", NULL);
        else
                r = tu_imgctl(d, &out, cmd, "--json", NULL);
        if (r != 0)
                fail_msg("imgctl %s %s failed (%d): %s", cmd, arg1 ? arg1 : "", r, out ? out : "");
        j = json_loads(out, 0, &err);
        if (!j)
                fail_msg("imgctl %s --json printed no JSON (%s): %s", cmd, err.text, out);
        free(out);
        return j;
}

json_t *tu_status_json(struct tu_daemon *d, int64_t *ret_us)
{
        int64_t t0 = tu_now_us();
        char *out = NULL;
        json_error_t err;
        json_t *j;
        int r = tu_imgctl(d, &out, "status", "--json", NULL);

        if (ret_us)
                *ret_us = tu_now_us() - t0;
        if (r != 0 && r != 1)
                fail_msg("imgctl status failed (%d): %s", r, out ? out : "");
        j = json_loads(out, 0, &err);
        if (!j)
                fail_msg("imgctl status --json printed no JSON (%s): %s", err.text, out);
        free(out);
        return j;
}

json_int_t tu_jobs_in(const json_t *status, const char *state)
{
        return json_integer_value(json_object_get(json_object_get(status, "jobs"), state));
}

const char *tu_alert_message(const json_t *status, const char *name)
{
        const json_t *alerts = json_object_get(status, "alerts");

        for (size_t i = 0; i < json_array_size(alerts); i++) {
                const json_t *a = json_array_get(alerts, i);
                const char *n = json_string_value(json_object_get(a, "alert"));

                if (n && strcmp(n, name) == 0)
                        return json_string_value(json_object_get(a, "message"));
        }
        return NULL;
}

int64_t tu_ledger_int(struct tu_daemon *d, const char *sql)
{
        char *db_path = tu_path("%s/imgd.db", d->state);
        sqlite3 *db;
        sqlite3_stmt *st;
        int64_t v = -1;

        assert_int_equal(sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
        sqlite3_busy_timeout(db, 5000);
        assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
        if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL)
                v = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        sqlite3_close(db);
        free(db_path);
        return v;
}

int tu_connect_raw(const char *path)
{
        struct sockaddr_un addr = { .sun_family = AF_UNIX };
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

        assert_true(fd >= 0);
        snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path);
        assert_int_equal(connect(fd, (struct sockaddr *)&addr, sizeof addr), 0);
        return fd;
}

void tu_sub_open(struct tu_sub *s, struct tu_daemon *d)
{
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        static const char req[] = "{\"v\":1,\"cmd\":\"events\"}\n";

        s->len = 0;
        snprintf(sa.sun_path, sizeof sa.sun_path, "%s", d->socket);
        s->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(s->fd >= 0);
        assert_int_equal(connect(s->fd, (struct sockaddr *)&sa, sizeof sa), 0);
        assert_int_equal(send(s->fd, req, sizeof req - 1, MSG_NOSIGNAL), (ssize_t)sizeof req - 1);
}

char *tu_sub_line(struct tu_sub *s, int timeout_ms)
{
        int64_t deadline = tu_now_us() + (int64_t)timeout_ms * 1000;

        for (;;) {
                char *nl = memchr(s->buf, '\n', s->len);
                struct pollfd p = { .fd = s->fd, .events = POLLIN };
                int64_t left = deadline - tu_now_us();
                ssize_t k;

                if (nl) {
                        size_t n = (size_t)(nl - s->buf);
                        char *line = strndup(s->buf, n);

                        memmove(s->buf, nl + 1, s->len - n - 1);
                        s->len -= n + 1;
                        return line;
                }
                if (left <= 0 || poll(&p, 1, (int)(left / 1000) + 1) <= 0)
                        return NULL;
                k = recv(s->fd, s->buf + s->len, sizeof s->buf - s->len, 0);
                if (k <= 0)
                        return NULL;
                s->len += (size_t)k;
        }
}
