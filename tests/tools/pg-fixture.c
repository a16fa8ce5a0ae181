/* SPDX-License-Identifier: MIT */
/*
 * pg-fixture.c - a PostgreSQL server of the test program's own (pg-fixture.h): initdb and
 * pg_ctl of Debian's newest installed PostgreSQL, a Unix socket in a temporary directory,
 * a schema per test, and a reaper process that stops and removes the server when the program
 * ends however it ends.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <libpq-fe.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "pg-fixture.h"

/* The user the server runs as when the tests run as root: nobody. */
#define PGFX_UID 65534
#define PGFX_GID 65534
/* The superuser initdb creates, whom the tests connect as. */
#define PGFX_USER "imgd_test"

static struct {
        char *dir;    /* the temporary directory: data/, the socket, the log */
        char *bindir; /* /usr/lib/postgresql/<version>/bin */
        pid_t reaper;
        int reaper_fd; /* the write end of the reaper's pipe: closed, the reaper cleans up */
        unsigned schemas;
        pid_t owner; /* the process that started the server (not a forked child) */
} srv = { .reaper_fd = -1 };

static char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *xasprintf(const char *fmt, ...)
{
        va_list ap;
        char *s;
        int r;

        va_start(ap, fmt);
        r = vasprintf(&s, fmt, ap);
        va_end(ap);
        if (r < 0)
                abort();
        return s;
}

/* The bin directory of the newest PostgreSQL under /usr/lib/postgresql, or NULL. */
static char *find_bindir(void)
{
        DIR *d = opendir("/usr/lib/postgresql");
        struct dirent *e;
        long best = -1;
        char *found = NULL;

        if (!d)
                return NULL;
        while ((e = readdir(d))) {
                char *end, *bin;
                long v = strtol(e->d_name, &end, 10);

                if (end == e->d_name || *end || v <= best)
                        continue;
                bin = xasprintf("/usr/lib/postgresql/%s/bin/pg_ctl", e->d_name);
                if (access(bin, X_OK) == 0) {
                        best = v;
                        free(found);
                        found = xasprintf("/usr/lib/postgresql/%s/bin", e->d_name);
                }
                free(bin);
        }
        closedir(d);
        return found;
}

/* Runs argv (as nobody when root), its output to the log; returns its exit status. */
static int run(char *const argv[])
{
        pid_t pid = fork();
        int status;

        if (pid < 0)
                return -1;
        if (pid == 0) {
                char *log = xasprintf("%s/setup.log", srv.dir);
                int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);

                if (fd >= 0) {
                        dup2(fd, STDOUT_FILENO);
                        dup2(fd, STDERR_FILENO);
                }
                if (chdir(srv.dir) < 0)
                        _exit(127);
                if (geteuid() == 0) {
                        /* setpriv --reuid=65534 --regid=65534 --clear-groups -- argv... */
                        size_t n = 0;
                        while (argv[n])
                                n++;
                        char **v = calloc(n + 6, sizeof *v);
                        v[0] = "setpriv";
                        v[1] = "--reuid=65534";
                        v[2] = "--regid=65534";
                        v[3] = "--clear-groups";
                        v[4] = "--";
                        memcpy(v + 5, argv, n * sizeof *v);
                        execvp("setpriv", v);
                } else {
                        execv(argv[0], argv);
                }
                _exit(127);
        }
        if (waitpid(pid, &status, 0) < 0)
                return -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
        remove(path);
        return 0;
}

/* Stops the server (immediate: nothing of it needs to last) and removes the directory. */
static void stop_and_remove(void)
{
        char *data = xasprintf("%s/data", srv.dir);
        char *pg_ctl = xasprintf("%s/pg_ctl", srv.bindir);
        char *argv[] = { pg_ctl, "stop", "-D", data, "-m", "immediate", "-w", "-s", NULL };

        (void)run(argv);
        nftw(srv.dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
        free(data);
        free(pg_ctl);
}

/* The reaper: waits until the test program closes its pipe (by pgfx_server_stop() or by
 * ending, however), then stops the server and removes the directory. */
static void start_reaper(void)
{
        int fds[2];
        pid_t pid;

        if (pipe2(fds, O_CLOEXEC) < 0)
                fail_msg("pipe: %s", strerror(errno));
        pid = fork();
        if (pid < 0)
                fail_msg("fork: %s", strerror(errno));
        if (pid == 0) {
                char c;

                close(fds[1]);
                /* Not killed with the program's process group by a test's timeout first. */
                setsid();
                signal(SIGINT, SIG_IGN);
                signal(SIGTERM, SIG_IGN);
                while (read(fds[0], &c, 1) < 0 && errno == EINTR)
                        ;
                stop_and_remove();
                _exit(0);
        }
        close(fds[0]);
        srv.reaper = pid;
        srv.reaper_fd = fds[1];
}

static void at_exit_stop(void)
{
        if (getpid() == srv.owner)
                pgfx_server_stop();
}

static void server_start(void)
{
        char *data, *initdb, *pg_ctl, *opts, *log;
        const char *tmp = getenv("TMPDIR");
        int r;

        srv.bindir = find_bindir();
        if (!srv.bindir)
                fail_msg("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/pg_ctl); it "
                         "comes with the Debian package postgresql (scripts/deps.sh --tests "
                         "installs it)");
        /* The socket's path must fit in sun_path: a short directory. */
        srv.dir = xasprintf("%s/pgfx.XXXXXX", tmp && *tmp && strlen(tmp) < 60 ? tmp : "/tmp");
        if (!mkdtemp(srv.dir))
                fail_msg("mkdtemp %s: %s", srv.dir, strerror(errno));
        if (geteuid() == 0 && chown(srv.dir, PGFX_UID, PGFX_GID) < 0)
                fail_msg("chown %s: %s", srv.dir, strerror(errno));
        srv.owner = getpid();
        start_reaper();
        atexit(at_exit_stop);

        data = xasprintf("%s/data", srv.dir);
        initdb = xasprintf("%s/initdb", srv.bindir);
        pg_ctl = xasprintf("%s/pg_ctl", srv.bindir);
        log = xasprintf("%s/server.log", srv.dir);
        {
                /* --no-sync: initdb's own flush of a throwaway cluster; the server keeps
                 * fsync on. */
                char *argv[] = { initdb,    "-D",         data,        "-U",
                                 PGFX_USER, "-A",         "trust",     "-E",
                                 "UTF8",    "--locale=C", "--no-sync", "--no-instructions",
                                 NULL };
                r = run(argv);
        }
        if (r != 0) {
                char *m = xasprintf("cat %s/setup.log >&2", srv.dir);
                (void)system(m);
                free(m);
                fail_msg("initdb failed (exit status %d); its output is above", r);
        }
        opts = xasprintf("-c listen_addresses='' -c unix_socket_directories='%s' "
                         "-c fsync=on -c shared_buffers=16MB -c max_connections=20 "
                         "-c max_wal_size=256MB",
                         srv.dir);
        {
                char *argv[] = { pg_ctl, "start", "-D", data, "-l", log, "-w",
                                 "-t",   "60",    "-s", "-o", opts, NULL };
                r = run(argv);
        }
        if (r != 0) {
                char *m = xasprintf("cat %s/setup.log %s >&2", srv.dir, log);
                (void)system(m);
                free(m);
                fail_msg("pg_ctl start failed (exit status %d); its output and the server's "
                         "log are above",
                         r);
        }
        free(data);
        free(initdb);
        free(pg_ctl);
        free(opts);
        free(log);
}

void pgfx_server_down(void)
{
        char *data = xasprintf("%s/data", srv.dir), *pg_ctl = xasprintf("%s/pg_ctl", srv.bindir);
        char *argv[] = { pg_ctl, "stop", "-D", data, "-m", "fast", "-w", "-s", NULL };
        int r;

        assert_non_null(srv.dir);
        r = run(argv);
        if (r != 0)
                fail_msg("pg_ctl stop failed (exit status %d)", r);
        free(data);
        free(pg_ctl);
}

void pgfx_server_up(void)
{
        char *data = xasprintf("%s/data", srv.dir), *pg_ctl = xasprintf("%s/pg_ctl", srv.bindir);
        char *log = xasprintf("%s/server.log", srv.dir);
        char *opts = xasprintf("-c listen_addresses='' -c unix_socket_directories='%s' "
                               "-c fsync=on -c shared_buffers=16MB -c max_connections=20 "
                               "-c max_wal_size=256MB",
                               srv.dir);
        char *argv[] = { pg_ctl, "start", "-D", data, "-l", log, "-w",
                         "-t",   "60",    "-s", "-o", opts, NULL };
        int r;

        r = run(argv);
        if (r != 0)
                fail_msg("pg_ctl start failed (exit status %d)", r);
        free(data);
        free(pg_ctl);
        free(log);
        free(opts);
}

void pgfx_server_stop(void)
{
        if (srv.reaper <= 0)
                return;
        close(srv.reaper_fd);
        srv.reaper_fd = -1;
        while (waitpid(srv.reaper, NULL, 0) < 0 && errno == EINTR)
                ;
        srv.reaper = 0;
        free(srv.dir);
        free(srv.bindir);
        srv.dir = srv.bindir = NULL;
}

static char *conninfo_of(const char *schema)
{
        if (!schema)
                return xasprintf("host=%s user=" PGFX_USER " dbname=postgres", srv.dir);
        return xasprintf("host=%s user=" PGFX_USER " dbname=postgres "
                         "options='-c search_path=%s'",
                         srv.dir, schema);
}

char *pgfx_schema_new(void)
{
        char *admin, *sql, *schema;

        if (srv.reaper <= 0 || getpid() != srv.owner)
                server_start();
        schema = xasprintf("t%u", ++srv.schemas);
        admin = conninfo_of(NULL);
        sql = xasprintf("CREATE SCHEMA %s", schema);
        pgfx_exec(admin, sql);
        free(sql);
        free(admin);
        sql = conninfo_of(schema);
        free(schema);
        return sql;
}

static PGconn *connect_or_fail(const char *conninfo)
{
        PGconn *c = PQconnectdb(conninfo);

        if (PQstatus(c) != CONNECTION_OK) {
                char *m = xasprintf("%s", PQerrorMessage(c));
                PQfinish(c);
                fail_msg("connect %s: %s", conninfo, m);
        }
        return c;
}

void pgfx_exec(const char *conninfo, const char *sql)
{
        PGconn *c = connect_or_fail(conninfo);
        PGresult *res = PQexec(c, sql);
        ExecStatusType s = PQresultStatus(res);

        if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK) {
                char *m = xasprintf("%s", PQresultErrorMessage(res));
                PQclear(res);
                PQfinish(c);
                fail_msg("%s: %s", sql, m);
        }
        PQclear(res);
        PQfinish(c);
}

int64_t pgfx_int(const char *conninfo, const char *sql)
{
        PGconn *c = connect_or_fail(conninfo);
        PGresult *res = PQexec(c, sql);
        int64_t v = 0;

        if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) < 1) {
                char *m = xasprintf("%s", PQresultErrorMessage(res));
                PQclear(res);
                PQfinish(c);
                fail_msg("%s: no row (%s)", sql, m);
        }
        if (!PQgetisnull(res, 0, 0)) {
                const char *s = PQgetvalue(res, 0, 0);
                v = strcmp(s, "t") == 0 ? 1 : strcmp(s, "f") == 0 ? 0 : strtoll(s, NULL, 10);
        }
        PQclear(res);
        PQfinish(c);
        return v;
}
