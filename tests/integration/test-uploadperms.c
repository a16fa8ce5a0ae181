/* SPDX-License-Identifier: MIT */
/*
 * test-uploadperms.c - the upload setup of README.md ("Uploads from a web server") with
 * three users, as on a server: the real imgd runs as an unprivileged "imgd" (its own uid and
 * group, member of the upload group, UMask=0022 as in the unit), and a "web server" (another
 * uid, member of the upload group, umask 0002) drops uploads, as PHP or nginx would, into
 * the folders made the documented way:
 *
 *   uploads     install -d -m 2775 -o imgd -g imgd-upload   (setgid: new files and folders
 *                                                             get the group imgd-upload)
 *   media       install -d -m 0755 -o imgd -g imgd
 *   quarantine  install -d -m 0750 -o imgd -g imgd
 *   state       0750 imgd:imgd (the package's tmpfiles.d, the unit's StateDirectory=)
 *
 * Checked: the web server can write an upload (in place, and as a hidden temporary file
 * renamed, in a folder of its own making); imgd reads and renders them and publishes outputs
 * the web server can read; imgd can move a dead upload out of the web server's folder into
 * its quarantine (group write through the setgid folder); the ledger stays closed to the web
 * server. Also with outputs for the web server alone (media 2750 imgd:www-data, setgid):
 * every output and sub-folder gets the web server's group, and other local users cannot
 * read them. With the old setup (install -d -o imgd -g imgd, 0755) the web server's first
 * upload fails with EACCES (defect 10).
 *
 * Needs root (to change uids); skipped otherwise. The uids and gids are numbers without
 * passwd entries, so nothing on the machine is changed.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

#define IMGD_UID 64201
#define IMGD_GID 64201
#define WEB_UID 64202
#define WEB_GID 64202
#define UPLOAD_GID 64210
#define OTHER_UID 64203 /* a local user that is neither imgd nor the web server */
#define OTHER_GID 64203

#define PIPE_1 "( { name = \"s\"; width = 64; height = 64; fit = \"cover\"; format = \"webp\"; } )"

static struct tu_daemon daemon_under_test;

/* Drops the calling (child) process to uid, gid and the one supplementary group upload_gid,
 * with umask `mask`; returns 0 or -errno. */
static int drop_to(uid_t uid, gid_t gid, gid_t upload_gid, mode_t mask)
{
        if (setgroups(1, &upload_gid) < 0 || setgid(gid) < 0 || setuid(uid) < 0)
                return -errno;
        umask(mask);
        return 0;
}

/* In the child that becomes imgd: the user, groups and umask the unit gives it. */
static void as_imgd(struct tu_daemon *d)
{
        if (drop_to(IMGD_UID, IMGD_GID, UPLOAD_GID, 0022) < 0)
                _exit(126);
        setenv("HOME", d->state, 1);
}

/* Starts build/imgd as IMGD_UID (groups IMGD_GID and UPLOAD_GID, umask 0022, as the unit
 * runs it) and waits until its socket answers. */
static void start_daemon_as_imgd(struct tu_daemon *d)
{
        tu_daemon_start_with(d, as_imgd);
}

/* What the web server does, in a child running as WEB_UID. */
struct upload {
        const char *dir;  /* the upload folder */
        const void *jpeg; /* a real JPEG */
        size_t jpeg_len;
        const void *png; /* a real PNG */
        size_t png_len;
};

/* Writes all of buf to a new file at path (mode 0666 less the umask); 0 or -errno. */
static int write_new(const char *path, const void *buf, size_t len)
{
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        const char *p = buf;

        if (fd < 0)
                return -errno;
        while (len > 0) {
                ssize_t n = write(fd, p, len);

                if (n < 0) {
                        int r = -errno;

                        close(fd);
                        return r;
                }
                p += n;
                len -= (size_t)n;
        }
        return close(fd) < 0 ? -errno : 0;
}

/*
 * The web server's uploads: a.jpg written as a hidden temporary file and renamed (the atomic
 * way), a folder sub/ of its own with b.png written in place and bad.jpg, which is no image.
 * Exits with 0, or 10 + the step that failed; the errno of the failure is written to stderr.
 */
static int web_upload(const struct upload *u)
{
        char path[4096], tmp[4096];
        int r;

        snprintf(tmp, sizeof tmp, "%s/.upload-a.jpg", u->dir);
        snprintf(path, sizeof path, "%s/a.jpg", u->dir);
        r = write_new(tmp, u->jpeg, u->jpeg_len);
        if (r < 0) {
                fprintf(stderr, "web server: create %s: %s\n", tmp, strerror(-r));
                return r == -EACCES ? 10 : 11;
        }
        if (rename(tmp, path) < 0) {
                fprintf(stderr, "web server: rename %s: %m\n", tmp);
                return 12;
        }
        snprintf(path, sizeof path, "%s/sub", u->dir);
        if (mkdir(path, 0777) < 0) {
                fprintf(stderr, "web server: mkdir %s: %m\n", path);
                return 13;
        }
        snprintf(path, sizeof path, "%s/sub/b.png", u->dir);
        r = write_new(path, u->png, u->png_len);
        if (r < 0) {
                fprintf(stderr, "web server: create %s: %s\n", path, strerror(-r));
                return 14;
        }
        snprintf(path, sizeof path, "%s/sub/bad.jpg", u->dir);
        r = write_new(path, "this is no image", 16);
        if (r < 0) {
                fprintf(stderr, "web server: create %s: %s\n", path, strerror(-r));
                return 15;
        }
        return 0;
}

/* Reads the whole file at path; returns its length, or -errno. */
static ssize_t read_all(const char *path)
{
        char buf[4096];
        ssize_t n, total = 0;
        int fd = open(path, O_RDONLY | O_CLOEXEC);

        if (fd < 0)
                return -errno;
        while ((n = read(fd, buf, sizeof buf)) > 0)
                total += n;
        if (n < 0)
                total = -errno;
        close(fd);
        return total;
}

/* Runs fn(arg) in a child as uid (groups gid and group, umask 0002); returns its exit
 * status, or 128 + signal. */
static int as_user(uid_t uid, gid_t gid, gid_t group, int (*fn)(const void *arg), const void *arg)
{
        pid_t pid = fork();
        int status;

        assert_true(pid >= 0);
        if (pid == 0) {
                if (drop_to(uid, gid, group, 0002) < 0)
                        _exit(126);
                _exit(fn(arg));
        }
        assert_int_equal(waitpid(pid, &status, 0), pid);
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* fn(arg) as the web server: WEB_UID, groups WEB_GID and UPLOAD_GID, umask 0002. */
static int as_web_server(int (*fn)(const void *arg), const void *arg)
{
        return as_user(WEB_UID, WEB_GID, UPLOAD_GID, fn, arg);
}

static int upload_fn(const void *arg)
{
        return web_upload(arg);
}

/* The web server serves an output: 0 when it reads the whole file (at least 1 byte). */
static int serve_fn(const void *arg)
{
        ssize_t n = read_all(arg);

        if (n <= 0)
                fprintf(stderr, "web server: read %s: %s\n", (const char *)arg,
                        n < 0 ? strerror((int)-n) : "empty");
        return n > 0 ? 0 : 1;
}

/* Opening the file at arg is refused (EACCES): 0, as it should be; else 1 or 2. */
static int refused_fn(const void *arg)
{
        int fd = open(arg, O_RDONLY | O_CLOEXEC);

        if (fd >= 0) {
                close(fd);
                return 1;
        }
        return errno == EACCES ? 0 : 2;
}

/* mkdir, chown and chmod (chmod after chown, which clears the setgid bit). */
static void make_dir(const char *path, uid_t uid, gid_t gid, mode_t mode)
{
        if (mkdir(path, 0700) < 0)
                assert_int_equal(errno, EEXIST);
        assert_int_equal(chown(path, uid, gid), 0);
        assert_int_equal(chmod(path, mode), 0);
}

static void assert_owned(const char *path, uid_t uid, gid_t gid, mode_t mode)
{
        struct stat st;

        assert_int_equal(lstat(path, &st), 0);
        if (st.st_uid != uid || st.st_gid != gid || (st.st_mode & 07777) != mode)
                fail_msg("%s: %u:%u %04o, expected %u:%u %04o", path, (unsigned)st.st_uid,
                         (unsigned)st.st_gid, (unsigned)(st.st_mode & 07777), (unsigned)uid,
                         (unsigned)gid, (unsigned)mode);
}

/*
 * The documented setup, with outputs for everybody (media 0755 imgd:imgd) or, when
 * private_outputs, for the web server's group only (media 2750 imgd:www-data).
 */
static void check_setup(bool private_outputs)
{
        const gid_t out_gid = private_outputs ? WEB_GID : IMGD_GID;
        const mode_t out_dir_mode = private_outputs ? 02755 : 0755;
        struct tu_daemon *d = &daemon_under_test;
        char *src = tu_mkdtemp(), *jpeg_path = tu_path("%s/a.jpg", src);
        char *png_path = tu_path("%s/b.png", src);
        char *quarantine, *conf, *path;
        struct upload u = {};
        int r;

        if (geteuid() != 0) {
                free(jpeg_path);
                free(png_path);
                tu_rm_rf(src);
                free(src);
                skip();
        }
        tu_make_image(jpeg_path, 200, 150, "jpeg", false);
        tu_make_image(png_path, 120, 160, "png", true);
        u.jpeg = tu_read_file(jpeg_path, &u.jpeg_len);
        u.png = tu_read_file(png_path, &u.png_len);
        assert_non_null(u.jpeg);
        assert_non_null(u.png);

        /* The tree: imgd's, where its socket and log are; the trees as documented. */
        tu_daemon_setup(d, PIPE_1, 1, NULL);
        quarantine = tu_path("%s/quarantine", d->root);
        conf = tu_path("state_dir = \"%s\";\nsocket = \"%s\";\nworkers = 1;\n"
                       "watch = ( { path = \"%s\"; output = \"%s\"; pipeline = \"p\"; "
                       "recursive = true; quarantine = \"%s\"; } );\n"
                       "pipelines = { p = %s; };\n"
                       "retry = { max_attempts = 1; };\n",
                       d->state, d->socket, d->uploads, d->media, quarantine, PIPE_1);
        tu_write_file(d->config, conf, (size_t)-1);
        make_dir(d->root, IMGD_UID, IMGD_GID, 0755);
        make_dir(d->uploads, IMGD_UID, UPLOAD_GID, 02775);
        make_dir(d->media, IMGD_UID, out_gid, private_outputs ? 02750 : 0755);
        make_dir(quarantine, IMGD_UID, IMGD_GID, 0750);
        make_dir(d->state, IMGD_UID, IMGD_GID, 0750);

        start_daemon_as_imgd(d);

        u.dir = d->uploads;
        r = as_web_server(upload_fn, &u);
        if (r != 0)
                fail_msg("the web server could not upload (exit status %d; 10: EACCES on its "
                         "first file in %s)",
                         r, d->uploads);
        /* Its folder and files took the upload group from the setgid folder. */
        path = tu_path("%s/sub", d->uploads);
        assert_owned(path, WEB_UID, UPLOAD_GID, 02775);
        free(path);
        path = tu_path("%s/sub/b.png", d->uploads);
        assert_owned(path, WEB_UID, UPLOAD_GID, 0664);
        free(path);

        tu_daemon_wait_idle(d, 60);

        /* Published by imgd, readable by the web server. */
        path = tu_path("%s/a_s.webp", d->media);
        assert_owned(path, IMGD_UID, out_gid, 0644);
        assert_int_equal(as_web_server(serve_fn, path), 0);
        /* Other local users read them too, or, with private outputs, cannot. */
        assert_int_equal(as_user(OTHER_UID, OTHER_GID, OTHER_GID,
                                 private_outputs ? refused_fn : serve_fn, path),
                         0);
        free(path);
        path = tu_path("%s/sub", d->media);
        assert_owned(path, IMGD_UID, out_gid, out_dir_mode);
        free(path);
        path = tu_path("%s/sub/b_s.webp", d->media);
        assert_owned(path, IMGD_UID, out_gid, 0644);
        assert_int_equal(as_web_server(serve_fn, path), 0);
        free(path);

        /* The dead upload left the web server's folder for imgd's quarantine. */
        path = tu_path("%s/sub/bad.jpg", d->uploads);
        assert_int_equal(access(path, F_OK), -1);
        free(path);
        path = tu_path("%s/sub/bad.jpg", quarantine);
        if (access(path, F_OK) < 0) {
                char *log = tu_read_file(d->log, NULL);

                fail_msg("%s is missing; imgd's log:\n%s", path, log ? log : "");
        }
        free(path);

        /* The ledger is imgd's alone. */
        path = tu_path("%s/imgd.db", d->state);
        assert_int_equal(access(path, F_OK), 0);
        assert_int_equal(as_web_server(refused_fn, path), 0);
        free(path);

        assert_false(tu_log_contains(d, "Permission denied"));
        assert_int_equal(tu_daemon_stop(d, SIGTERM), 0);

        free(conf);
        free(quarantine);
        free((void *)u.jpeg);
        free((void *)u.png);
        free(jpeg_path);
        free(png_path);
        tu_rm_rf(src);
        free(src);
}

static void test_web_server_uploads(void **state)
{
        check_setup(false);
        (void)state;
}

static void test_private_outputs(void **state)
{
        check_setup(true);
        (void)state;
}

static int teardown(void **state)
{
        tu_daemon_cleanup(&daemon_under_test);
        (void)state;
        return 0;
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_teardown(test_web_server_uploads, teardown),
                cmocka_unit_test_teardown(test_private_outputs, teardown),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
