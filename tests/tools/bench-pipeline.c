/* SPDX-License-Identifier: MIT */
/*
 * imgd-bench-pipeline - the bare pipeline: imgd's own libvips code (imgd-render) with no
 * daemon, no ledger, no verify and no disk write. It is the limit imgd's end-to-end
 * throughput is measured against (scripts/bench.sh). Not installed.
 *
 *   imgd-bench-pipeline -c CONFIG -p PIPELINE [-j JOBS] [-t THREADS] [-r REPEAT]
 *                       [-m MANIFEST] [-o OUTDIR [-s]] FILE...
 *
 * It forks JOBS processes (default: the number of online CPUs); each starts libvips with
 * THREADS worker threads (default 1, as a worker of a daemon with workers = CPUs should) and
 * pulls files from a shared counter until none is left, as the daemon's workers pull jobs.
 * For each file it reads the whole file into memory, decodes it once (render_base_new) and
 * renders every variant of PIPELINE from CONFIG into a memory buffer (render_variant), which
 * is then dropped. -r runs the whole list REPEAT times (for single-image latency).
 *
 * It prints one line of key=value figures: images, outputs, errors, wall_s (from the first
 * fork to the last exit), cpu_s (user + system of the children, getrusage RUSAGE_CHILDREN),
 * maxrss_kb (largest peak RSS of a child) and images_per_s. -m writes a tab-separated line
 * per image ("image", path, source width, height, bytes, microseconds in all, of which in the
 * decode: render_base_new) and per output
 * ("output", path, variant, width, height, bytes) into MANIFEST (one line per write, so the
 * children can share it). -o writes the outputs to OUTDIR/<stem>_<variant>.<ext> after the
 * image's clock stopped, for looking at them; the timed work never touches the disk.
 *
 * -s (with -o) makes the outputs durable inside the timed work instead: each is written to a
 * temporary file in OUTDIR, fsynced, and renamed to its name. That is the least a durable
 * publication costs (imgd also verifies, fsyncs the directory and records it in its ledger):
 * the ceiling of anything that keeps the guarantee "an output is on disk before it is seen".
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <glib.h>

#include "shared/config.h"
#include "shared/imgformat.h"
#include "shared/macro.h"
#include "shared/time-util.h"
#include "worker/render.h"
#include "shared/variant.h"

struct bench {
        const struct pipeline *pipeline;
        char **files;
        size_t n_files;
        unsigned repeat;
        unsigned threads;
        int manifest_fd; /* -1: none */
        const char *outdir;
        bool sync;      /* -s: write the outputs durably inside the timed work */
        unsigned *next; /* shared between the children: index of the next item to take */
};

static int usage(void)
{
        fprintf(stderr, "usage: imgd-bench-pipeline -c CONFIG -p PIPELINE [-j JOBS] [-t THREADS] "
                        "[-r REPEAT] [-m MANIFEST] [-o OUTDIR [-s]] FILE...\n");
        return 2;
}

/* Reads path into a new buffer (caller frees). Returns 0, or a negative errno. */
static int read_file(const char *path, void **ret_buf, size_t *ret_len)
{
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        _cleanup_free_ char *buf = NULL;
        struct stat st;
        size_t len = 0;

        if (fd < 0 || fstat(fd, &st) < 0)
                return negative_errno();
        buf = malloc((size_t)st.st_size + 1);
        if (!buf)
                return -ENOMEM;
        while (len < (size_t)st.st_size) {
                ssize_t k = read(fd, buf + len, (size_t)st.st_size - len);

                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        return negative_errno();
                if (k == 0)
                        break;
                len += (size_t)k;
        }
        *ret_buf = TAKE_PTR(buf);
        *ret_len = len;
        return 0;
}

/* Writes one manifest line with a single write(), so lines of the children do not mix. */
_printf_(2, 3) static void manifest(const struct bench *b, const char *fmt, ...)
{
        char line[8192];
        va_list ap;
        int n;

        if (b->manifest_fd < 0)
                return;
        va_start(ap, fmt);
        n = vsnprintf(line, sizeof(line), fmt, ap);
        va_end(ap);
        if (n > 0 && (size_t)n < sizeof(line) && write(b->manifest_fd, line, (size_t)n) != n)
                fprintf(stderr, "imgd-bench-pipeline: manifest: %s\n", strerror(errno));
}

/* What the daemon's scheduler makes of format = "same" for a source of format f. */
static enum image_format resolve_same(enum image_format f)
{
        switch (f) {
        case IMAGE_FORMAT_JPEG:
        case IMAGE_FORMAT_PNG:
        case IMAGE_FORMAT_WEBP:
        case IMAGE_FORMAT_AVIF:
                return f;
        default:
                return IMAGE_FORMAT_WEBP;
        }
}

static void write_output(const struct bench *b, const char *src, const struct variant *v,
                         const void *buf, size_t len)
{
        _cleanup_free_ char *stem = strdup(strrchr(src, '/') ? strrchr(src, '/') + 1 : src);
        _cleanup_free_ char *path = NULL, *tmp = NULL;
        _cleanup_close_ int fd = -1;
        char *dot;

        if (!stem)
                return;
        dot = strrchr(stem, '.');
        if (dot)
                *dot = '\0';
        if (asprintf(&path, "%s/%s_%s.%s", b->outdir, stem, v->name,
                     image_format_extension(v->format)) < 0)
                return;
        if (!b->sync) {
                fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
                if (fd < 0 || write(fd, buf, len) != (ssize_t)len)
                        fprintf(stderr, "imgd-bench-pipeline: %s: %s\n", path, strerror(errno));
                return;
        }
        if (asprintf(&tmp, "%s/.tmp-%d-%s_%s", b->outdir, (int)getpid(), stem, v->name) < 0)
                return;
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0 || write(fd, buf, len) != (ssize_t)len || fsync(fd) < 0 || rename(tmp, path) < 0)
                fprintf(stderr, "imgd-bench-pipeline: %s: %s\n", path, strerror(errno));
}

/*
 * Reads, decodes and renders one file. Returns the number of outputs, or a negative errno
 * (after printing why).
 */
static int bench_one(const struct bench *b, const char *path)
{
        const struct pipeline *p = b->pipeline;
        struct variant variants[64];
        void *bufs[64] = {};
        size_t lens[64] = {};
        unsigned ws[64], hs[64];
        _cleanup_free_ void *data = NULL;
        render_base *base = NULL;
        struct render_error err = {};
        enum image_format f;
        size_t size = 0, n = p->n_variants;
        int64_t t0 = (int64_t)mono_usec(), t_base, t1;
        int r;

        if (n > ELEMENTSOF(variants))
                return -E2BIG;
        r = read_file(path, &data, &size);
        if (r < 0) {
                fprintf(stderr, "imgd-bench-pipeline: %s: %s\n", path, strerror(-r));
                return r;
        }
        f = image_format_sniff(data,
                               size < IMAGE_FORMAT_SNIFF_BYTES ? size : IMAGE_FORMAT_SNIFF_BYTES);
        for (size_t i = 0; i < n; i++) {
                variants[i] = p->variants[i];
                if (variants[i].format == VARIANT_FORMAT_SAME)
                        variants[i].format = resolve_same(f);
        }

        r = render_base_new(data, size, variants, n, NULL, &base, &err);
        t_base = (int64_t)mono_usec();
        if (r < 0) {
                fprintf(stderr, "imgd-bench-pipeline: %s: %s\n", path, err.message);
                return r;
        }
        for (size_t i = 0; i < n && r >= 0; i++) {
                r = render_variant(base, &variants[i], &bufs[i], &lens[i], &ws[i], &hs[i], &err);
                if (r < 0)
                        fprintf(stderr, "imgd-bench-pipeline: %s: %s: %s\n", path, variants[i].name,
                                err.message);
                else if (b->sync)
                        write_output(b, path, &variants[i], bufs[i], lens[i]);
        }
        t1 = (int64_t)mono_usec();

        if (r >= 0) {
                const struct render_info *info = render_base_info(base);

                manifest(b, "image\t%s\t%u\t%u\t%zu\t%" PRId64 "\t%" PRId64 "\n", path, info->width,
                         info->height, size, t1 - t0, t_base - t0);
                for (size_t i = 0; i < n; i++) {
                        manifest(b, "output\t%s\t%s\t%u\t%u\t%zu\n", path, variants[i].name, ws[i],
                                 hs[i], lens[i]);
                        if (b->outdir && !b->sync)
                                write_output(b, path, &variants[i], bufs[i], lens[i]);
                }
        }
        for (size_t i = 0; i < n; i++)
                g_free(bufs[i]);
        render_base_free(base);
        return r < 0 ? r : (int)n;
}

/* A child: takes items from the shared counter until none is left. Exit status: errors. */
static _Noreturn void bench_child(const struct bench *b)
{
        size_t total = b->n_files * b->repeat;
        int errors = 0;

        if (render_init("imgd-bench-pipeline", b->threads) < 0) {
                fprintf(stderr, "imgd-bench-pipeline: cannot start libvips\n");
                _exit(100);
        }
        for (;;) {
                unsigned i = __atomic_fetch_add(b->next, 1, __ATOMIC_RELAXED);

                if (i >= total)
                        break;
                if (bench_one(b, b->files[i % b->n_files]) < 0)
                        errors++;
        }
        render_shutdown();
        _exit(errors > 99 ? 99 : errors);
}

int main(int argc, char **argv)
{
        static const struct option options[] = {
                { "config", required_argument, NULL, 'c' },
                { "pipeline", required_argument, NULL, 'p' },
                { "jobs", required_argument, NULL, 'j' },
                { "threads", required_argument, NULL, 't' },
                { "repeat", required_argument, NULL, 'r' },
                { "manifest", required_argument, NULL, 'm' },
                { "outdir", required_argument, NULL, 'o' },
                { "sync", no_argument, NULL, 's' },
                {},
        };
        const char *config_path = NULL, *pipeline = NULL, *manifest_path = NULL;
        struct config *cfg = NULL;
        _cleanup_free_ char *cerr = NULL;
        struct bench b = { .repeat = 1, .threads = 1, .manifest_fd = -1 };
        long jobs = sysconf(_SC_NPROCESSORS_ONLN);
        struct rusage ru;
        int64_t t0, t1;
        int c, errors = 0, r;
        long maxrss = 0;

        while ((c = getopt_long(argc, argv, "c:p:j:t:r:m:o:s", options, NULL)) >= 0) {
                switch (c) {
                case 'c':
                        config_path = optarg;
                        break;
                case 'p':
                        pipeline = optarg;
                        break;
                case 'j':
                        jobs = atol(optarg);
                        break;
                case 't':
                        b.threads = (unsigned)atoi(optarg);
                        break;
                case 'r':
                        b.repeat = (unsigned)atoi(optarg);
                        break;
                case 'm':
                        manifest_path = optarg;
                        break;
                case 'o':
                        b.outdir = optarg;
                        break;
                case 's':
                        b.sync = true;
                        break;
                default:
                        return usage();
                }
        }
        if (!config_path || !pipeline || optind >= argc || jobs < 1 || b.repeat < 1 ||
            (b.sync && !b.outdir))
                return usage();
        b.files = argv + optind;
        b.n_files = (size_t)(argc - optind);

        r = config_load(config_path, &cfg, &cerr);
        if (r < 0) {
                fprintf(stderr, "imgd-bench-pipeline: %s\n", cerr ? cerr : strerror(-r));
                return 1;
        }
        b.pipeline = config_find_pipeline(cfg, pipeline);
        if (!b.pipeline) {
                fprintf(stderr, "imgd-bench-pipeline: no pipeline '%s' in %s\n", pipeline,
                        config_path);
                return 1;
        }
        if (manifest_path) {
                b.manifest_fd = open(manifest_path,
                                     O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
                if (b.manifest_fd < 0) {
                        fprintf(stderr, "imgd-bench-pipeline: %s: %m\n", manifest_path);
                        return 1;
                }
        }
        b.next = mmap(NULL, sizeof(*b.next), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1,
                      0);
        if (b.next == MAP_FAILED) {
                fprintf(stderr, "imgd-bench-pipeline: mmap: %m\n");
                return 1;
        }
        *b.next = 0;

        t0 = (int64_t)mono_usec();
        for (long i = 0; i < jobs; i++) {
                pid_t pid = fork();

                if (pid < 0) {
                        fprintf(stderr, "imgd-bench-pipeline: fork: %m\n");
                        return 1;
                }
                if (pid == 0)
                        bench_child(&b);
        }
        for (long i = 0; i < jobs; i++) {
                int status;
                struct rusage cru;

                if (wait4(-1, &status, 0, &cru) < 0) {
                        fprintf(stderr, "imgd-bench-pipeline: wait: %m\n");
                        return 1;
                }
                if (cru.ru_maxrss > maxrss)
                        maxrss = cru.ru_maxrss;
                if (!WIFEXITED(status))
                        errors += 1000;
                else
                        errors += WEXITSTATUS(status);
        }
        t1 = (int64_t)mono_usec();
        getrusage(RUSAGE_CHILDREN, &ru);

        double wall = (double)(t1 - t0) / 1e6;
        double cpu = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
                     (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
        size_t images = b.n_files * b.repeat;

        printf("images=%zu outputs=%zu errors=%d jobs=%ld threads=%u wall_s=%.3f cpu_s=%.3f "
               "maxrss_kb=%ld images_per_s=%.3f\n",
               images, images * b.pipeline->n_variants, errors, jobs, b.threads, wall, cpu,
               maxrss > ru.ru_maxrss ? maxrss : ru.ru_maxrss, images / wall);
        config_free(cfg);
        return errors ? 1 : 0;
}
