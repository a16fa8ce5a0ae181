/* SPDX-License-Identifier: MIT */
/*
 * main.c - imgd-worker, the worker process: the daemon execs it with its end of a SOCK_SEQPACKET
 * socketpair as fd 3 and sends it jobs (wire.h). For each job it reads the source from the
 * descriptor it was given, decodes it once, renders every variant into the output descriptor
 * for it, fsyncs, reads the file back, hashes and decodes what is on disk, computes the
 * source's placeholder when the job asks for one, and answers with one result. Between jobs
 * it keeps only its cache of decoded watermark images (render_cache: each watermark file is
 * decoded once per worker process, again only when the file changes); it closes every
 * descriptor a job brought.
 *
 *   wait (wire_recv) --job--> read source --> render_base_new --> for each variant:
 *   render_variant_full -> write -> fsync -> read back -> hash -> render_verify_pages -->
 *   [render_placeholder] --> reply --> wait
 *
 * It exits 0 when the daemon closes the socket, 1 on a protocol error, and is killed with
 * the daemon (PR_SET_PDEATHSIG), so a worker never outlives it. It ignores SIGTERM, SIGINT
 * and SIGHUP: a signal to the whole process group or cgroup (systemctl stop without
 * KillMode=mixed, kill -TERM -PGID, ^C) is the daemon's to act on, which lets running jobs
 * finish or hands them back without using an attempt. A crash or an allocation
 * failure here costs one attempt of one job, never the daemon.
 *
 * Options (from the daemon): --threads=N, libvips threads; --nice=N, a background worker
 * (issue 17) that lowers its threads' priority by N once libvips is up.
 */
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib.h>

#include "shared/fault.h"
#include "shared/fileio.h"
#include "shared/hash.h"
#include "shared/imgformat.h"
#include "shared/log.h"
#include "shared/macro.h"
#include "shared/manifest.h"
#include "shared/pathmap.h"
#include "shared/proto.h"
#include "worker/render.h"
#include "shared/variant.h"
#include "shared/wire.h"

#define WORKER_SOCKET_FD 3

/* Decoded watermark images, kept for the life of the process. */
static render_cache *watermarks;

/* json_decrefp() is jansson's own (jansson.h, 2.11 and later). */
#define _cleanup_json_ _cleanup_(json_decrefp)

static inline void render_base_freep(render_base **p)
{
        render_base_free(*p);
}

static inline void gfreep(void *p)
{
        g_free(*(void **)p);
}

/*
 * Benchmark hook, compiled in with the fault points (shared/fault.h): with $IMGD_FAULT_SKIP
 * naming "worker.render", a worker renders its first job for real and gives every later job
 * with as many variants (and no placeholder) the same outputs without decoding or rendering
 * anything; they are still written, read back, hashed, verified and synced. That is the
 * no-op render with which scripts/bench.sh measures how many jobs a second the daemon could
 * feed its workers.
 */
static struct {
        size_t n; /* 0: nothing canned yet */
        struct render_output *outputs;
        struct render_info info;
} canned;

/* Why a job failed, as sent back to the daemon. */
struct job_error {
        char message[1024];
        bool permanent;
        int error; /* the errno behind it, for the daemon's classification; 0 if none */
};

_printf_(4, 5) static int job_fail(struct job_error *e, int r, bool permanent, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(e->message, sizeof(e->message), fmt, ap);
        va_end(ap);
        e->permanent = permanent;
        e->error = r < 0 ? -r : r;
        return r;
}

/*
 * Reads the whole file open at fd from offset 0 into a new buffer (caller frees), refusing
 * files over max_bytes (0: no limit) with -EFBIG. Returns 0, *ret_buf and *ret_len, or a
 * negative errno.
 */
static int read_fd_all(int fd, uint64_t max_bytes, void **ret_buf, size_t *ret_len)
{
        _cleanup_free_ char *buf = NULL;
        uint64_t len = 0;
        size_t cap;
        struct stat st;

        if (fstat(fd, &st) < 0)
                return negative_errno();
        if (!S_ISREG(st.st_mode))
                return -EBADFD;
        if (max_bytes > 0 && (uint64_t)st.st_size > max_bytes)
                return -EFBIG;

        /* One byte more than expected, so a file that grew is noticed without a realloc. */
        cap = (size_t)st.st_size + 1;
        buf = malloc(cap);
        if (!buf)
                return -ENOMEM;
        for (;;) {
                ssize_t k;

                if (len == cap) {
                        size_t ncap = cap * 2;
                        char *n;

                        if (max_bytes > 0 && ncap > max_bytes + 1)
                                ncap = max_bytes + 1;
                        if (ncap <= cap)
                                return -EFBIG;
                        n = realloc(buf, ncap);
                        if (!n)
                                return -ENOMEM;
                        buf = n;
                        cap = ncap;
                }
                k = read_at_step(fd, buf + len, cap - len, &len, max_bytes);
                if (k < 0)
                        return (int)k;
                if (k == 0)
                        break;
        }
        *ret_buf = TAKE_PTR(buf);
        *ret_len = (size_t)len;
        return 0;
}

/* Writes buf[0..len) to fd from offset 0, the file cut to exactly len bytes first. */
static int write_fd_all(int fd, const void *buf, size_t len)
{
        const char *p = buf;
        size_t done = 0;
        int flags;

        /* pwrite() on an O_APPEND descriptor appends on Linux; write at the offsets we mean. */
        flags = fcntl(fd, F_GETFL);
        if (flags < 0)
                return negative_errno();
        if ((flags & O_APPEND) && fcntl(fd, F_SETFL, flags & ~O_APPEND) < 0)
                return negative_errno();

        if (ftruncate(fd, (off_t)len) < 0)
                return negative_errno();
        while (done < len) {
                ssize_t k = pwrite(fd, p + done, len - done, (off_t)done);

                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                if (k == 0)
                        return -EIO;
                done += (size_t)k;
        }
        return 0;
}

/*
 * Reads back the output file at fd. A descriptor opened write-only cannot be read, so that
 * one is reopened read-only through /proc/self/fd (same file, even when unlinked).
 */
static int read_back(int fd, size_t expected, void **ret_buf, size_t *ret_len)
{
        _cleanup_close_ int rfd = -1;
        int flags = fcntl(fd, F_GETFL);

        if (flags < 0)
                return negative_errno();
        if ((flags & O_ACCMODE) == O_WRONLY) {
                char path[64];

                snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
                rfd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
                if (rfd < 0)
                        return negative_errno();
                fd = rfd;
        }
        /* A limit just above the expected size: a longer file fails without being read. */
        return read_fd_all(fd, (uint64_t)expected + 1, ret_buf, ret_len);
}

/*
 * Renders variant i of the job into fd and checks what the file holds (read back, compared,
 * hashed, decoded); job_sync() makes it durable with the job's other files. Returns 0 and the
 * output's description in *ret_out, or a negative errno with e filled in.
 */
static int job_variant(render_base *base, const struct variant *v, size_t i, int fd,
                       const struct render_output *can, json_t **ret_out, struct job_error *e)
{
        _cleanup_free_ void *back = NULL;
        _cleanup_(gfreep) void *buf = NULL;
        _cleanup_(json_decrefp) json_t *out = NULL;
        char hex[HASH_HEX_SIZE];
        struct render_error rerr = {};
        struct render_output ro;
        size_t len = 0, back_len = 0;
        int r;

        if (can) {
                ro = *can;
                ro.buf = g_memdup2(can->buf, can->size);
        } else {
                r = render_variant_full(base, v, watermarks, &ro, &rerr);
                if (r < 0)
                        return job_fail(e, r, rerr.permanent, "variant %s: %s", v->name,
                                        rerr.message);
        }
        buf = ro.buf;
        len = ro.size;

        r = write_fd_all(fd, buf, len);
        if (r < 0)
                return job_fail(e, r, false, "variant %s: write: %s", v->name, strerror(-r));
        fault_point("worker.after_write");

        r = read_back(fd, len, &back, &back_len);
        if (r == -EFBIG || (r >= 0 && back_len != len))
                return job_fail(e, -EIO, false,
                                "variant %s: read back a different length than the %zu bytes "
                                "written",
                                v->name, len);
        if (r < 0)
                return job_fail(e, r, false, "variant %s: read back: %s", v->name, strerror(-r));
        if (memcmp(back, buf, len) != 0)
                return job_fail(e, -EIO, false,
                                "variant %s: the file read back differs from what was written",
                                v->name);

        hash_sha256_buf(back, back_len, hex);
        r = render_verify_pages(back, back_len, ro.format, ro.width, ro.height, ro.pages, &rerr);
        if (r < 0)
                return job_fail(e, r, rerr.permanent, "variant %s: %s", v->name, rerr.message);

        out = json_pack("{s:I, s:I, s:I, s:s, s:s}", "width", (json_int_t)ro.width, "height",
                        (json_int_t)ro.height, "bytes", (json_int_t)len, "sha256", hex, "format",
                        image_format_name(ro.format));
        if (!out ||
            (ro.quality >= 0 &&
             json_object_set_new(out, "quality", json_integer(ro.quality)) < 0) ||
            (ro.score >= 0 &&
             (json_object_set_new(out, "dssim", json_real(round(ro.score * 1e6) / 1e6)) < 0 ||
              json_object_set_new(out, "encodes", json_integer(ro.encodes)) < 0)) ||
            (ro.warning[0] && json_object_set_new(out, "warning", json_string(ro.warning)) < 0))
                return job_fail(e, -ENOMEM, false, "out of memory");
        if (ro.warning[0])
                log_warning("variant %s: %s", v->name, ro.warning);
        log_debug("job variant %zu (%s): %s %ux%u x %u frames, %zu bytes, quality %d, DSSIM %g, "
                  "%u encodes",
                  i, v->name, image_format_name(ro.format), ro.width, ro.height, ro.pages, len,
                  ro.quality, ro.score, ro.encodes);
        *ret_out = TAKE_PTR(out);
        return 0;
}

/*
 * The placeholder of the source in base: {"blurhash":..., "dominant":"#rrggbb",
 * "data_uri":"data:image/webp;base64,..."}. Returns 0 and *ret, or a negative errno with e
 * filled in.
 */
static int job_placeholder(render_base *base, const uint8_t background[3], json_t **ret,
                           struct job_error *e)
{
        struct render_placeholder ph = {};
        struct render_error rerr = {};
        char dominant[8];
        json_t *j;
        int r;

        r = render_placeholder(base, background, &ph, &rerr);
        if (r < 0)
                return job_fail(e, r, rerr.permanent, "placeholder: %s", rerr.message);
        snprintf(dominant, sizeof dominant, "#%02x%02x%02x", ph.dominant[0], ph.dominant[1],
                 ph.dominant[2]);
        j = json_pack("{s:s, s:s, s:s}", "blurhash", ph.blurhash, "dominant", dominant, "data_uri",
                      ph.data_uri);
        render_placeholder_clear(&ph);
        if (!j)
                return job_fail(e, -ENOMEM, false, "out of memory");
        *ret = j;
        return 0;
}

/*
 * Writes the job's manifest (shared/manifest.h) to fd and fsyncs it, as the daemon asked in
 * the request's "manifest" ({"job", "source" and "files" as hex, "pipeline", "degraded"}), for
 * the outputs just written: what the daemon would write, without its fsync in the daemon.
 * Returns 0 and {"bytes": N} in *ret, or a negative errno with e filled in.
 */
static int job_manifest(const json_t *jm, const char *src_hex, const struct variant *variants,
                        size_t n, const json_t *outputs, const json_t *placeholder, int fd,
                        json_t **ret, struct job_error *e)
{
        _cleanup_free_ char *source = NULL, *text = NULL;
        _cleanup_free_ struct manifest_output *list = NULL;
        _cleanup_json_ json_t *extra = NULL;
        char **files = NULL;
        const char *source_hex, *pipeline;
        json_t *jfiles, *jrecipes = NULL, *jcarry = NULL;
        json_int_t job;
        int degraded = 0, r;
        size_t len = 0;

        size_t n_carry;

        if (json_unpack((json_t *)jm, "{s:I, s:s, s:s, s:o, s?o, s?o, s?b}", "job", &job, "source",
                        &source_hex, "pipeline", &pipeline, "files", &jfiles, "recipes", &jrecipes,
                        "carry", &jcarry, "degraded", &degraded) < 0 ||
            !json_is_array(jfiles) || json_array_size(jfiles) != n ||
            (jrecipes && (!json_is_array(jrecipes) || json_array_size(jrecipes) != n)) ||
            (jcarry && !json_is_array(jcarry)) || proto_hex_decode(source_hex, &source) < 0)
                return job_fail(e, -EINVAL, true, "malformed job: bad manifest");
        /* A reconciliation job's manifest lists the outputs it carries over too. */
        n_carry = json_array_size(jcarry);
        files = calloc(n + n_carry, sizeof *files);
        list = calloc(n + n_carry, sizeof *list);
        if (!files || !list) {
                free(files);
                return job_fail(e, -ENOMEM, false, "out of memory");
        }
        r = 0;
        for (size_t i = 0; i < n && r >= 0; i++) {
                const json_t *o = json_array_get(outputs, i);
                const char *f = json_string_value(json_array_get(jfiles, i));
                const char *format = json_string_value(json_object_get(o, "format"));

                r = f ? proto_hex_decode(f, &files[i]) : -EINVAL;
                /* Format "best": the file is named for the format chosen. */
                if (r >= 0 && variants[i].format == VARIANT_FORMAT_BEST) {
                        char *named = NULL;

                        r = pathmap_replace_extension(
                                files[i], image_format_extension(image_format_from_name(format)),
                                &named);
                        free(files[i]);
                        files[i] = named;
                }
                list[i] = (struct manifest_output){
                        .variant = variants[i].name,
                        .file = files[i],
                        .format = format,
                        .width = (unsigned)json_integer_value(json_object_get(o, "width")),
                        .height = (unsigned)json_integer_value(json_object_get(o, "height")),
                        .bytes = (uint64_t)json_integer_value(json_object_get(o, "bytes")),
                        .sha256 = json_string_value(json_object_get(o, "sha256")),
                        .recipe = json_string_value(json_array_get(jrecipes, i)),
                };
        }
        for (size_t i = 0; i < n_carry && r >= 0; i++) {
                const json_t *c = json_array_get(jcarry, i);
                const char *variant = NULL, *file = NULL, *format = NULL, *sha = NULL,
                           *recipe = NULL;
                json_int_t w = 0, h = 0, bytes = 0;

                if (json_unpack((json_t *)c, "{s:s, s:s, s:s, s:I, s:I, s:I, s:s, s?s}", "variant",
                                &variant, "file", &file, "format", &format, "width", &w, "height",
                                &h, "bytes", &bytes, "sha256", &sha, "recipe", &recipe) < 0 ||
                    w < 0 || h < 0 || bytes < 0) {
                        r = -EINVAL;
                        break;
                }
                r = proto_hex_decode(file, &files[n + i]);
                list[n + i] = (struct manifest_output){
                        .variant = variant,
                        .file = files[n + i],
                        .format = format,
                        .width = (unsigned)w,
                        .height = (unsigned)h,
                        .bytes = (uint64_t)bytes,
                        .sha256 = sha,
                        .recipe = recipe,
                };
        }
        if (r >= 0) {
                const struct manifest_source src = {
                        .job = job, .path = source, .sha256 = src_hex, .pipeline = pipeline
                };

                extra = manifest_extra(outputs, variants, placeholder, degraded);
                r = extra ? manifest_format(&src, list, n + n_carry, extra, &text, &len) : -ENOMEM;
        }
        for (size_t i = 0; i < n + n_carry; i++)
                free(files[i]);
        free(files);
        if (r == -ENOMEM)
                return job_fail(e, r, false, "out of memory");
        if (r < 0)
                return job_fail(e, -EINVAL, true, "malformed job: bad manifest");

        r = write_fd_all(fd, text, len);
        if (r < 0)
                return job_fail(e, r, false, "manifest: write: %s", strerror(-r));
        *ret = json_pack("{s:I}", "bytes", (json_int_t)len);
        return *ret ? 0 : job_fail(e, -ENOMEM, false, "out of memory");
}

/*
 * Makes the job's files durable: the outputs and the manifest, fds[0..n). Their writeback is
 * started for all of them first (sync_file_range), then each is fsynced, so that the disk
 * sees one burst and the fsyncs mostly find their data already written (one output and a
 * manifest: 0.4 ms instead of 0.64 ms on the development VM). On an fsync error the daemon
 * discards the files and the job renders again: the fsync is never retried (its failure
 * may have dropped the dirty pages).
 */
static int job_sync(const int *fds, size_t n, struct job_error *e)
{
        if (fault_skip("worker.file_fsync"))
                return 0;
        for (size_t i = 0; i < n; i++)
                (void)sync_file_range(fds[i], 0, 0, SYNC_FILE_RANGE_WRITE); /* a hint only */
        for (size_t i = 0; i < n; i++)
                if (fsync(fds[i]) < 0) {
                        int r = negative_errno();
                        return job_fail(e, r, false, "fsync: %s", strerror(-r));
                }
        return 0;
}

/* Keeps the outputs of base's variants for the no-op render (canned); a failure only means
 * that the next job renders for real again. */
static void can_outputs(render_base *base, const struct variant *variants, size_t n)
{
        struct render_output *outs = calloc(n, sizeof *outs);
        struct render_error rerr = {};

        if (!outs)
                return;
        for (size_t i = 0; i < n; i++)
                if (render_variant_full(base, &variants[i], watermarks, &outs[i], &rerr) < 0) {
                        for (size_t j = 0; j < i; j++)
                                g_free(outs[j].buf);
                        free(outs);
                        return;
                }
        canned.outputs = outs;
        canned.info = *render_base_info(base);
        canned.n = n;
}

/*
 * Runs one job. fds[0] is the source, fds[1 + i] the output for variant i, and, when the
 * request has a "manifest", fds[1 + n] the manifest (passed open, or created by
 * job_create_files()). Returns 0 and
 * the body of an ok result (without type and id) in *ret_body, or a negative errno with e
 * filled in.
 */
static int job_run(const json_t *msg, const int *fds, size_t n_fds, json_t **ret_body,
                   struct job_error *e)
{
        _cleanup_(render_base_freep) render_base *base = NULL;
        _cleanup_free_ struct variant *variants = NULL;
        _cleanup_free_ void *src = NULL;
        _cleanup_json_ json_t *outputs = NULL;
        _cleanup_json_ json_t *body = NULL;
        const json_t *jvariants = json_object_get(msg, "variants");
        const json_t *jmax_pixels = json_object_get(msg, "max_pixels");
        const json_t *jmax_decode = json_object_get(msg, "max_decode_bytes");
        const json_t *jmax_bytes = json_object_get(msg, "max_bytes");
        const json_t *jplaceholder = json_object_get(msg, "placeholder");
        const json_t *jheif = json_object_get(msg, "allow_heif");
        const json_t *jtimeout = json_object_get(msg, "timeout_s");
        const json_t *jmanifest = json_object_get(msg, "manifest");
        const struct render_info *info;
        struct render_limits limits = {};
        struct render_error rerr = {};
        char src_hex[HASH_HEX_SIZE];
        uint64_t max_bytes = 0;
        size_t n, src_len = 0;
        bool noop;
        int r;

        if (!json_is_array(jvariants) || json_array_size(jvariants) == 0)
                return job_fail(e, -EINVAL, true, "malformed job: no variants");
        n = json_array_size(jvariants);
        if (n_fds != 1 + n + (jmanifest ? 1 : 0))
                return job_fail(e, -EINVAL, true, "malformed job: %zu variants but %zu descriptors",
                                n, n_fds);
        if ((jmax_pixels &&
             (!json_is_integer(jmax_pixels) || json_integer_value(jmax_pixels) < 0)) ||
            (jmax_bytes && (!json_is_integer(jmax_bytes) || json_integer_value(jmax_bytes) < 0)) ||
            (jmax_decode && (!json_is_integer(jmax_decode) || json_integer_value(jmax_decode) < 0)))
                return job_fail(e, -EINVAL, true, "malformed job: bad limits");
        /* Absent means no placeholder: a daemon that does not ask gets none. */
        if (jplaceholder && !json_is_boolean(jplaceholder))
                return job_fail(e, -EINVAL, true, "malformed job: bad placeholder");
        limits.max_pixels = jmax_pixels ? (uint64_t)json_integer_value(jmax_pixels) : 0;
        limits.max_decode_bytes = jmax_decode ? (uint64_t)json_integer_value(jmax_decode) : 0;
        max_bytes = jmax_bytes ? (uint64_t)json_integer_value(jmax_bytes) : 0;

        variants = calloc(n, sizeof(*variants));
        if (!variants)
                return job_fail(e, -ENOMEM, false, "out of memory");
        for (size_t i = 0; i < n; i++) {
                _cleanup_free_ char *verr = NULL;

                r = variant_from_json(json_array_get(jvariants, i), &variants[i], &verr);
                if (r < 0)
                        return job_fail(e, r, true, "variant %zu: %s", i, verr ? verr : "invalid");
                if (variants[i].format == VARIANT_FORMAT_SAME)
                        return job_fail(e, -EINVAL, true,
                                        "variant %s: format \"same\" was not resolved",
                                        variants[i].name);
        }

        r = read_fd_all(fds[0], max_bytes, &src, &src_len);
        if (r == -EFBIG)
                return job_fail(e, r, true, "source is over the limit of %" PRIu64 " bytes",
                                max_bytes);
        if (r < 0)
                return job_fail(e, r, false, "read source: %s", strerror(-r));
        hash_sha256_buf(src, src_len, src_hex);
#ifdef IMGD_FAULT_INJECTION
        /* Test hook: a "poison" source that crashes its worker every time. */
        {
                const char *poison = getenv("IMGD_TEST_CRASH_SHA");
                if (poison && *poison && strncmp(src_hex, poison, strlen(poison)) == 0)
                        abort();
        }
#endif
        if (json_is_false(jheif)) {
                enum image_format f = image_format_sniff(src, src_len);
                if (f == IMAGE_FORMAT_HEIF || f == IMAGE_FORMAT_AVIF)
                        return job_fail(e, -EMEDIUMTYPE, true,
                                        "%s sources are disabled (limits.allow_heif = false)",
                                        image_format_name(f));
        }
        /* CPU time for this job: its wall-clock limit (SIGXCPU ends a runaway decoder even
         * when the daemon's timer cannot fire in time). */
        if (json_is_integer(jtimeout) && json_integer_value(jtimeout) > 0) {
                struct rusage ru;
                struct rlimit rl;

                if (getrusage(RUSAGE_SELF, &ru) == 0 && getrlimit(RLIMIT_CPU, &rl) == 0) {
                        rlim_t used = (rlim_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec);
                        rl.rlim_cur = used + (rlim_t)json_integer_value(jtimeout) + 1;
                        if (rl.rlim_max != RLIM_INFINITY && rl.rlim_cur > rl.rlim_max)
                                rl.rlim_cur = rl.rlim_max;
                        (void)setrlimit(RLIMIT_CPU, &rl);
                }
        }

        noop = fault_skip("worker.render") && !json_is_true(jplaceholder);
        if (noop && canned.n == n)
                info = &canned.info;
        else {
                r = render_base_new(src, src_len, variants, n, &limits, &base, &rerr);
                if (r < 0)
                        return job_fail(e, r, rerr.permanent, "%s", rerr.message);
                info = render_base_info(base);
        }

        outputs = json_array();
        if (!outputs)
                return job_fail(e, -ENOMEM, false, "out of memory");
        for (size_t i = 0; i < n; i++) {
                json_t *out = NULL;

                r = job_variant(base, &variants[i], i, fds[1 + i], base ? NULL : &canned.outputs[i],
                                &out, e);
                if (r < 0)
                        return r;
                if (json_array_append_new(outputs, out) < 0)
                        return job_fail(e, -ENOMEM, false, "out of memory");
        }
        if (noop && base && !canned.outputs)
                can_outputs(base, variants, n);

        body = json_pack("{s:b, s:{s:s, s:I, s:I, s:s}, s:O}", "ok", 1, "source", "format",
                         image_format_name(info->format), "width", (json_int_t)info->width,
                         "height", (json_int_t)info->height, "sha256", src_hex, "outputs", outputs);
        if (!body)
                return job_fail(e, -ENOMEM, false, "out of memory");
        if (json_is_true(jplaceholder)) {
                json_t *ph = NULL;

                /* Flattened for the hash onto what the first variant flattens onto. */
                r = job_placeholder(base, variants[0].background, &ph, e);
                if (r < 0)
                        return r;
                if (json_object_set_new(body, "placeholder", ph) < 0)
                        return job_fail(e, -ENOMEM, false, "out of memory");
        }
        if (jmanifest) {
                json_t *m = NULL;

                r = job_manifest(jmanifest, src_hex, variants, n, outputs,
                                 json_object_get(body, "placeholder"), fds[1 + n], &m, e);
                if (r < 0)
                        return r;
                if (json_object_set_new(body, "manifest", m) < 0)
                        return job_fail(e, -ENOMEM, false, "out of memory");
        }
        r = job_sync(fds + 1, n_fds - 1, e);
        if (r < 0)
                return r;
        fault_point("worker.after_fsync");
        *ret_body = TAKE_PTR(body);
        return 0;
}

static void close_all(int *fds, size_t n)
{
        for (size_t i = 0; i < n; i++)
                if (fds[i] >= 0)
                        close(fds[i]);
}

/*
 * The files of a job whose daemon names them ("files": each output's final path, for
 * messages, and its temporary name, in the directory of descriptor 1) instead of passing them
 * open: created here, O_EXCL, so that their creation runs in the workers, in parallel, not in
 * the daemon's one thread (issue 16). out[1 + i] becomes file i, out[0] the source (borrowed);
 * returns how many descriptors out holds, or a negative errno with e filled in (the files
 * made so far closed; the daemon removes them by name).
 */
static int job_create_files(const json_t *jfiles, const int *fds, size_t n_fds,
                            int out[static WIRE_MAX_FDS], struct job_error *e)
{
        size_t n = json_array_size(jfiles);

        if (n_fds != 2 || n == 0 || n >= WIRE_MAX_FDS)
                return job_fail(e, -EINVAL, true,
                                "malformed job: %zu files in a folder, %zu descriptors", n, n_fds);
        out[0] = fds[0];
        for (size_t i = 0; i < n; i++) {
                const char *path = NULL, *tmp = NULL;
                int r;

                if (json_unpack(json_array_get(jfiles, i), "{s:s, s:s}", "path", &path, "tmp",
                                &tmp) < 0 ||
                    !*tmp || strchr(tmp, '/')) {
                        close_all(out + 1, i);
                        return job_fail(e, -EINVAL, true, "malformed job: bad file %zu", i);
                }
                out[1 + i] = openat(fds[1], tmp, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                                    0644);
                if (out[1 + i] < 0) {
                        r = negative_errno();
                        close_all(out + 1, i);
                        return job_fail(e, r, r == -ENAMETOOLONG, "create output %s: %s", path,
                                        strerror(-r));
                }
        }
        return (int)(1 + n);
}

/* Handles one job message and sends its result. Returns 0, or a negative errno from sending. */
static int job_handle(const json_t *msg, const int *fds, size_t n_fds)
{
        _cleanup_json_ json_t *reply = NULL;
        json_t *body = NULL;
        json_t *id = json_object_get(msg, "id");
        const json_t *jfiles = json_object_get(msg, "files");
        struct job_error e = {};
        int made[WIRE_MAX_FDS];
        int r;

        fault_delay("worker.job");
        r = jfiles ? job_create_files(jfiles, fds, n_fds, made, &e) : 0;
        if (r > 0) {
                n_fds = (size_t)r;
                r = job_run(msg, made, n_fds, &body, &e);
                close_all(made + 1, n_fds - 1);
        } else if (r == 0) {
                r = job_run(msg, fds, n_fds, &body, &e);
        }
        if (r < 0) {
                log_debug("job %" JSON_INTEGER_FORMAT ": %s", json_integer_value(id), e.message);
                body = json_pack("{s:b, s:s, s:b, s:i}", "ok", 0, "error", e.message, "permanent",
                                 e.permanent, "errno", e.error);
                if (!body)
                        return -ENOMEM;
        }
        reply = json_pack("{s:s, s:O?}", "type", "result", "id", id);
        if (!reply || json_object_update(reply, body) < 0) {
                json_decref(body);
                return -ENOMEM;
        }
        json_decref(body);
        return wire_send(WORKER_SOCKET_FD, reply, NULL, 0);
}

static int parse_argv(int argc, char **argv, unsigned *ret_threads, int *ret_nice)
{
        static const struct option options[] = {
                { "threads", required_argument, NULL, 't' },
                { "nice", required_argument, NULL, 'n' },
                {},
        };
        unsigned threads = 0;
        int c;

        while ((c = getopt_long(argc, argv, "", options, NULL)) >= 0) {
                switch (c) {
                case 't': {
                        char *end;
                        unsigned long t;

                        errno = 0;
                        t = strtoul(optarg, &end, 10);
                        if (errno != 0 || *end != '\0' || end == optarg || t > 1024)
                                return log_error_errno(EINVAL, "invalid --threads '%s'", optarg);
                        threads = (unsigned)t;
                        break;
                }
                case 'n': {
                        char *end;
                        long n;

                        errno = 0;
                        n = strtol(optarg, &end, 10);
                        if (errno != 0 || *end != '\0' || end == optarg || n < 0 || n > 19)
                                return log_error_errno(EINVAL, "invalid --nice '%s'", optarg);
                        *ret_nice = (int)n;
                        break;
                }
                default:
                        return -EINVAL;
                }
        }
        if (optind < argc)
                return log_error_errno(EINVAL, "unexpected argument '%s'", argv[optind]);
        *ret_threads = threads;
        return 0;
}

/*
 * A background worker (--nice): every thread of the process made `nice` nicer, once libvips
 * is up (a worker started nice would start slowly on a busy machine, and be late for the live
 * work it may get). The nice value is per thread on Linux: each thread is set, and the
 * threads started later inherit it from the one that starts them. A failure only leaves the
 * worker at the daemon's priority.
 */
static void renice_threads(int nice)
{
        DIR *d = opendir("/proc/self/task");
        struct dirent *de;

        if (!d) {
                log_warning_errno(errno, "/proc/self/task: %m; rendering at the daemon's priority");
                return;
        }
        while ((de = readdir(d))) {
                char *end;
                long tid = strtol(de->d_name, &end, 10);
                int base;

                if (de->d_name[0] == '.' || *end != '\0' || tid <= 0)
                        continue;
                errno = 0;
                base = getpriority(PRIO_PROCESS, (id_t)tid);
                if (errno == 0 && setpriority(PRIO_PROCESS, (id_t)tid, base + nice) < 0)
                        log_warning_errno(errno, "setpriority of thread %ld: %m", tid);
        }
        closedir(d);
}

int main(int argc, char **argv)
{
        pid_t parent = getppid();
        unsigned threads = 0;
        int nice = 0;
        struct stat st;
        int r;

        log_setup("imgd-worker");

        /* Die with the daemon; and if it already died before this took effect, go now. */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0) {
                log_error_errno(errno, "prctl(PR_SET_PDEATHSIG): %m");
                return EXIT_FAILURE;
        }
        if (getppid() != parent)
                return EXIT_FAILURE;
        /* A daemon that went away shows up as EPIPE from sending, not as a signal. */
        signal(SIGPIPE, SIG_IGN);
        /* Only the daemon stops a worker (closing the socket, or SIGKILL): a SIGTERM, SIGINT
         * or SIGHUP sent to the whole process group or cgroup must not cost a running job an
         * attempt. (imgd already starts it with these ignored; this is for any other way.) */
        signal(SIGTERM, SIG_IGN);
        signal(SIGINT, SIG_IGN);
        signal(SIGHUP, SIG_IGN);

        if (parse_argv(argc, argv, &threads, &nice) < 0)
                return EXIT_FAILURE;
        if (fstat(WORKER_SOCKET_FD, &st) < 0 || !S_ISSOCK(st.st_mode)) {
                log_error("fd %d is not the daemon's socket; imgd-worker is started by imgd",
                          WORKER_SOCKET_FD);
                return EXIT_FAILURE;
        }
        if (render_init(argv[0], threads) < 0) {
                log_error("cannot start libvips");
                return EXIT_FAILURE;
        }
        watermarks = render_cache_new();
        if (!watermarks) {
                log_error("out of memory");
                render_shutdown();
                return EXIT_FAILURE;
        }

        if (nice > 0)
                renice_threads(nice);

        /* Tell the daemon libvips is up: only now does it hand this worker jobs. */
        fault_delay("worker.before_ready");
        {
                _cleanup_json_ json_t *ready =
                        json_pack("{s:s, s:i}", "type", "ready", "pid", (int)getpid());
                r = ready ? wire_send(WORKER_SOCKET_FD, ready, NULL, 0) : -ENOMEM;
                if (r < 0) {
                        log_error_errno(r, "tell the daemon this worker is ready: %m");
                        r = EXIT_FAILURE;
                        goto shutdown;
                }
        }

        for (;;) {
                _cleanup_json_ json_t *msg = NULL;
                int fds[WIRE_MAX_FDS];
                size_t n_fds = 0;
                const char *type;

                r = wire_recv(WORKER_SOCKET_FD, &msg, fds, &n_fds);
                if (r == -ECONNRESET)
                        break;
                if (r < 0) {
                        log_error_errno(r, "receive from daemon: %m");
                        r = EXIT_FAILURE;
                        goto shutdown;
                }

                type = json_string_value(json_object_get(msg, "type"));
                if (!type || strcmp(type, "job") != 0) {
                        close_all(fds, n_fds);
                        log_error("unknown message type '%s' from daemon", type ? type : "");
                        r = EXIT_FAILURE;
                        goto shutdown;
                }

                r = job_handle(msg, fds, n_fds);
                close_all(fds, n_fds);
                if (r == -EPIPE || r == -ECONNRESET)
                        break;
                if (r < 0) {
                        log_error_errno(r, "send result to daemon: %m");
                        r = EXIT_FAILURE;
                        goto shutdown;
                }
        }
        r = EXIT_SUCCESS;
shutdown:
        watermarks = render_cache_free(watermarks);
        render_shutdown();
        return r;
}
