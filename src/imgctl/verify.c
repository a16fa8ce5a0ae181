/* SPDX-License-Identifier: MIT */
/*
 * verify.c - imgctl verify (imgctl.h): checks the published outputs against their manifests
 * (read with shared/manifest.h, the format imgd writes) and the ledger. Every file a manifest
 * lists must exist with the size and SHA-256 it lists (else missing or altered), the ledger's
 * record of the manifest's job must agree (imgd's "show"; else a mismatch), and every other
 * file in the tree is orphaned (imgd's own temporary files aside). A manifest that cannot be
 * read, or an entry that names no plain file, is bad. It reads the output trees itself and
 * never writes; it asks imgd for the ledger's records and, without PATH, for the watches.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shared/alloc.h"
#include "shared/hash.h"
#include "shared/manifest.h"
#include "shared/pathmap.h"
#include "shared/proto.h"
#include "imgctl/imgctl.h"

/* How deep a tree is walked. */
#define VERIFY_MAX_DEPTH 64

struct verify {
        struct client *ctl;
        char **files; /* every non-directory entry of the trees walked */
        size_t n_files, alloc_files;
        char **listed; /* files some manifest lists */
        size_t n_listed, alloc_listed;
        unsigned manifests, checked, unrecorded;
        json_t *missing, *altered, *orphaned, *mismatched, *bad;
};

static void strv_push(char ***v, size_t *n, size_t *alloc, char *s)
{
        if (GROW_ARRAY(*v, *alloc, *n + 1) < 0)
                imgctl_oom();
        (*v)[(*n)++] = s;
}

static void strv_free(char **v, size_t n)
{
        for (size_t i = 0; i < n; i++)
                free(v[i]);
        free(v);
}

static int cmp_str(const void *a, const void *b)
{
        return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool has_suffix(const char *s, const char *suffix)
{
        size_t n = strlen(s), m = strlen(suffix);

        return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* Appends {"path": path, key: value, ...} to a problem list (pairs end with NULL). */
static void verify_problem(json_t *list, const char *path, ...)
{
        json_t *o = json_object();
        const char *key;
        va_list ap;

        if (!o || json_object_set_new(o, "path", proto_string_lossy(path)) < 0)
                imgctl_oom();
        va_start(ap, path);
        while ((key = va_arg(ap, const char *))) {
                const char *value = va_arg(ap, const char *);

                if (json_object_set_new(o, key, proto_string_lossy(value)) < 0)
                        imgctl_oom();
        }
        va_end(ap);
        if (json_array_append_new(list, o) < 0)
                imgctl_oom();
}

/* Collects every non-directory below dir (not following symlinks) into v->files. */
static void verify_walk(struct verify *v, const char *dir, unsigned depth)
{
        struct dirent *de;
        DIR *d;

        if (depth > VERIFY_MAX_DEPTH)
                return;
        d = opendir(dir);
        if (!d) {
                if (errno != ENOENT || depth > 0)
                        verify_problem(v->bad, dir, "error", strerror(errno), NULL);
                return;
        }
        while ((de = readdir(d))) {
                char *path;
                struct stat st;

                if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                        continue;
                path = imgctl_asprintf("%s/%s", strcmp(dir, "/") == 0 ? "" : dir, de->d_name);
                if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
                        verify_walk(v, path, depth + 1);
                        free(path);
                } else
                        strv_push(&v->files, &v->n_files, &v->alloc_files, path);
        }
        closedir(d);
}

/* The file of a manifest entry: a plain name in the manifest's directory, or NULL. */

/* Compares the manifest with the ledger's record of its job (imgd's "show"). */
static int verify_against_ledger(struct verify *v, const char *mpath, const struct manifest *m,
                                 const char *dir)
{
        _cleanup_(json_decrefp) json_t *result = NULL;
        _cleanup_free_ char *error = NULL;
        const json_t *job;
        const char *state;
        json_t *req;
        int r;

        if (m->job <= 0) {
                verify_problem(v->bad, mpath, "error", "no job id", NULL);
                return EXIT_OK;
        }
        req = client_request_with_id("show", m->job);
        r = client_call(v->ctl, req, &result, &error);
        json_decref(req);
        if (r == -EREMOTEIO) {
                /* Pruned from the ledger (or never there): only the files can be checked. */
                v->unrecorded++;
                return EXIT_OK;
        }
        if (r < 0)
                return client_failed(r, error);

        job = json_object_get(result, "job");
        state = client_get_str(job, "state", "?");
        if (strcmp(state, "done") != 0) {
                _cleanup_free_ char *why =
                        imgctl_asprintf("the ledger has its job %" PRId64 " as %s", m->job, state);

                verify_problem(v->mismatched, mpath, "error", why, NULL);
                return EXIT_OK;
        }
        if (strcmp(client_get_str(job, "sha256", ""), m->source_sha256) != 0)
                verify_problem(v->mismatched, mpath, "error",
                               "the ledger records another source SHA-256", NULL);

        for (size_t i = 0; i < m->n_entries; i++) {
                const struct manifest_entry *e = &m->entries[i];
                _cleanup_free_ char *path = NULL;
                const json_t *lo, *found = NULL;
                size_t k;

                if (!e->name)
                        continue; /* reported as a bad manifest already */
                path = imgctl_asprintf("%s/%s", dir, e->name);
                json_array_foreach(json_object_get(job, "outputs"), k, lo)
                {
                        const char *lpath = client_get_str(lo, "path", "");
                        const char *base = strrchr(lpath, '/');

                        if (strcmp(base ? base + 1 : lpath, e->file) == 0)
                                found = lo;
                }
                if (!found) {
                        _cleanup_free_ char *why = imgctl_asprintf(
                                "the ledger's job %" PRId64 " has no such output", m->job);

                        verify_problem(v->mismatched, path, "manifest", mpath, "error", why, NULL);
                } else if (strcmp(client_get_str(found, "sha256", ""), e->sha256) != 0) {
                        _cleanup_free_ char *why = imgctl_asprintf(
                                "the ledger's job %" PRId64 " records SHA-256 %s, the manifest %s",
                                m->job, client_get_str(found, "sha256", "?"), e->sha256);

                        verify_problem(v->mismatched, path, "manifest", mpath, "error", why, NULL);
                }
        }
        return EXIT_OK;
}

/* Checks one listed file: it exists with the size and SHA-256 the manifest says. */
static void verify_entry(struct verify *v, const char *mpath, const struct manifest_entry *e,
                         const char *path)
{
        _cleanup_close_ int fd = -1;
        char actual[HASH_HEX_SIZE];
        struct stat st;
        int r;

        fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0) {
                if (errno == ENOENT)
                        verify_problem(v->missing, path, "manifest", mpath, NULL);
                else
                        verify_problem(v->altered, path, "manifest", mpath, "error",
                                       errno == ELOOP ? "is a symlink" : strerror(errno), NULL);
                return;
        }
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
                verify_problem(v->altered, path, "manifest", mpath, "error", "not a regular file",
                               NULL);
                return;
        }
        r = hash_sha256_fd(fd, 0, actual);
        if (r < 0) {
                verify_problem(v->altered, path, "manifest", mpath, "error", strerror(-r), NULL);
                return;
        }
        if (strcmp(actual, e->sha256) != 0 || (int64_t)st.st_size != e->bytes) {
                _cleanup_free_ char *why = imgctl_asprintf(
                        "SHA-256 %.12s..., %jd bytes; the manifest says %.12s..., %" PRId64
                        " bytes",
                        actual, (intmax_t)st.st_size, e->sha256, e->bytes);

                verify_problem(v->altered, path, "manifest", mpath, "expected", e->sha256, "actual",
                               actual, "error", why, NULL);
        }
}

/* Checks one manifest: every file it lists exists with its size and SHA-256, and the ledger
 * agrees. Returns EXIT_OK or, when imgd cannot be asked, an exit status. */
static int verify_manifest(struct verify *v, const char *mpath)
{
        _cleanup_(manifest_freep) struct manifest *m = NULL;
        _cleanup_free_ char *text = NULL, *dir = imgctl_strdup(mpath), *error = NULL;
        _cleanup_close_ int mfd = -1;
        char *slash;
        ssize_t n;
        int r;

        slash = strrchr(dir, '/');
        if (slash == dir)
                slash[1] = '\0';
        else if (slash)
                *slash = '\0';
        v->manifests++;

        mfd = open(mpath, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        if (mfd < 0) {
                verify_problem(v->bad, mpath, "error", strerror(errno), NULL);
                return EXIT_OK;
        }
        text = malloc(MANIFEST_MAX_BYTES + 1);
        if (!text)
                imgctl_oom();
        n = read(mfd, text, MANIFEST_MAX_BYTES + 1);
        if (n < 0 || n > MANIFEST_MAX_BYTES) {
                verify_problem(v->bad, mpath, "error",
                               n < 0 ? strerror(errno) : "larger than 1 MiB", NULL);
                return EXIT_OK;
        }
        r = manifest_parse(text, (size_t)n, &m, &error);
        if (r == -ENOMEM)
                imgctl_oom();
        if (r < 0) {
                verify_problem(v->bad, mpath, "error", error, NULL);
                return EXIT_OK;
        }

        for (size_t i = 0; i < m->n_entries; i++) {
                const struct manifest_entry *e = &m->entries[i];
                char *path;

                if (!e->name) {
                        verify_problem(v->bad, mpath, "error", e->problem, NULL);
                        continue;
                }
                path = imgctl_asprintf("%s/%s", dir, e->name);
                strv_push(&v->listed, &v->n_listed, &v->alloc_listed, path);
                v->checked++;
                verify_entry(v, mpath, e, path);
        }
        return verify_against_ledger(v, mpath, m, dir);
}

static int verify_tree(struct verify *v, const char *root)
{
        size_t first = v->n_files;
        int r;

        verify_walk(v, root, 0);
        /* (qsort() and bsearch() want an array even for none: files and listed may be NULL.) */
        if (v->n_files > first)
                qsort(v->files + first, v->n_files - first, sizeof *v->files, cmp_str);
        for (size_t i = first; i < v->n_files; i++)
                if (has_suffix(v->files[i], MANIFEST_SUFFIX)) {
                        r = verify_manifest(v, v->files[i]);
                        if (r != EXIT_OK)
                                return r;
                }
        if (v->n_listed > 0)
                qsort(v->listed, v->n_listed, sizeof *v->listed, cmp_str);
        for (size_t i = first; i < v->n_files; i++) {
                const char *path = v->files[i], *name = strrchr(path, '/') + 1;

                if (has_suffix(path, MANIFEST_SUFFIX) || pathmap_is_own_temp(name))
                        continue;
                if (v->n_listed == 0 ||
                    !bsearch(&path, v->listed, v->n_listed, sizeof *v->listed, cmp_str))
                        verify_problem(v->orphaned, path, NULL);
        }
        return EXIT_OK;
}

static void verify_print(const char *what, const json_t *list)
{
        const json_t *o;
        size_t i;

        json_array_foreach(list, i, o)
        {
                _cleanup_free_ char *path = output_clean(client_get_str(o, "path", "?"), 0);
                _cleanup_free_ char *error = output_clean(client_get_str(o, "error", ""), 0);
                _cleanup_free_ char *manifest = output_clean(client_get_str(o, "manifest", ""), 0);

                printf("%-10s %s", what, path);
                if (*error)
                        printf(": %s", error);
                else if (*manifest)
                        printf(" (listed in %s)", manifest);
                fputc('\n', stdout);
        }
}

int verify_run(struct client *ctl, const struct verb_args *a)
{
        _cleanup_(json_decrefp) json_t *report = NULL, *roots = json_array();
        struct verify v = { .ctl = ctl };
        size_t problems;
        bool ok;
        int r = EXIT_OK;

        v.missing = json_array();
        v.altered = json_array();
        v.orphaned = json_array();
        v.mismatched = json_array();
        v.bad = json_array();
        if (!roots || !v.missing || !v.altered || !v.orphaned || !v.mismatched || !v.bad)
                imgctl_oom();

        if (a->path) {
                _cleanup_free_ char *real = realpath(a->path, NULL);
                struct stat st;

                if (!real || stat(real, &st) < 0) {
                        _cleanup_free_ char *clean = output_clean(a->path, 0);

                        imgctl_error("%s: %s", clean, strerror(errno));
                        r = EXIT_FAILED;
                        goto out;
                }
                if (json_array_append_new(roots, proto_string_lossy(real)) < 0)
                        imgctl_oom();
                if (S_ISDIR(st.st_mode))
                        r = verify_tree(&v, real);
                else if (S_ISREG(st.st_mode) && has_suffix(real, MANIFEST_SUFFIX))
                        r = verify_manifest(&v, real);
                else {
                        _cleanup_free_ char *clean = output_clean(real, 0);

                        imgctl_error("%s is neither a folder nor a manifest (*%s)", clean,
                                     MANIFEST_SUFFIX);
                        r = EXIT_FAILED;
                }
        } else {
                _cleanup_(json_decrefp) json_t *status = NULL;
                const json_t *w;
                size_t i;

                r = client_request(ctl, proto_request_new("status"), &status);
                if (r != EXIT_OK)
                        goto out;
                /* Every output tree once, even when several watches share one. */
                json_array_foreach(json_object_get(status, "watches"), i, w)
                {
                        const char *output = client_get_str(w, "output", NULL);
                        const json_t *seen;
                        size_t k;
                        bool dup = false;

                        if (!output)
                                continue;
                        json_array_foreach(roots, k, seen) if (strcmp(json_string_value(seen),
                                                                      output) == 0) dup = true;
                        if (dup)
                                continue;
                        if (json_array_append_new(roots, json_string(output)) < 0)
                                imgctl_oom();
                        r = verify_tree(&v, output);
                        if (r != EXIT_OK)
                                goto out;
                }
        }
        if (r != EXIT_OK)
                goto out;

        problems = json_array_size(v.missing) + json_array_size(v.altered) +
                   json_array_size(v.orphaned) + json_array_size(v.mismatched) +
                   json_array_size(v.bad);
        ok = problems == 0;
        if (a->json) {
                report = json_pack("{s:b, s:O, s:i, s:i, s:i, s:O, s:O, s:O, s:O, s:O}", "ok",
                                   (int)ok, "roots", roots, "manifests", (int)v.manifests, "files",
                                   (int)v.checked, "unrecorded", (int)v.unrecorded, "missing",
                                   v.missing, "altered", v.altered, "orphaned", v.orphaned,
                                   "mismatched", v.mismatched, "bad", v.bad);
                if (!report)
                        imgctl_oom();
                output_json(report);
        } else {
                verify_print("missing", v.missing);
                verify_print("altered", v.altered);
                verify_print("orphaned", v.orphaned);
                verify_print("mismatch", v.mismatched);
                verify_print("bad", v.bad);
                printf("%s: %u manifest(s), %u file(s) checked: %zu missing, %zu altered, "
                       "%zu orphaned, %zu ledger mismatch(es), %zu unreadable",
                       ok ? "ok" : "PROBLEMS", v.manifests, v.checked, json_array_size(v.missing),
                       json_array_size(v.altered), json_array_size(v.orphaned),
                       json_array_size(v.mismatched), json_array_size(v.bad));
                if (v.unrecorded > 0)
                        printf(" (%u manifest(s) of jobs no longer in the ledger: files checked "
                               "only)",
                               v.unrecorded);
                fputc('\n', stdout);
        }
        r = ok ? EXIT_OK : EXIT_FAILED;
out:
        strv_free(v.files, v.n_files);
        strv_free(v.listed, v.n_listed);
        json_decref(v.missing);
        json_decref(v.altered);
        json_decref(v.orphaned);
        json_decref(v.mismatched);
        json_decref(v.bad);
        return r;
}
