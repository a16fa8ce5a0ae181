/* SPDX-License-Identifier: MIT */
/*
 * imgd-bench-quality - quality = "auto" and format = "best" against a fixed quality, with
 * imgd's own libvips code (imgd-render), for scripts/bench-quality.sh. Not installed.
 *
 *   imgd-bench-quality [-t TARGET] [-q QUALITY] [-f FORMATS] [-s SIZES] [-b] [-L] [-o OUTDIR]
 *                      [-l LOG] FILE...
 *
 * Each FILE is decoded once (render_base_new) and resized for each size of SIZES (default
 * "1600,800": fit inside a box of that size, as the benchmark's web pipeline does), flattened
 * onto white when it has alpha, and held in memory. Then, for each format of FORMATS (default
 * "jpeg,webp,avif,jxl"), it is encoded once at QUALITY (default 80) and once with
 * quality = "auto" at TARGET (a DSSIM, or "high", "good", "low"; default "good"), each with
 * render_encode_fit() as the worker calls it, timing the CPU of each (the process's, with one
 * libvips thread). With -b also as format = "best" (candidates avif, webp, jpeg).
 *
 * Every output is then checked independently of the search: written to OUTDIR (default a
 * temporary folder), read back from the file, decoded by libvips' loader for what the file
 * is, and scored against the resized image (similarity_dssim()); "meets" counts the outputs
 * whose score, so measured, is at most the target. -l writes one tab-separated line per
 * output (file, size, format, mode, quality, bytes, DSSIM, encodes, CPU microseconds).
 *
 * It prints a table per format: outputs, bytes at QUALITY and auto, the saving, the median
 * and largest DSSIM of each, the median quality auto chose, how many outputs meet the target,
 * and the encode CPU of both and its ratio; and for best which format won how often. Then the
 * evidence on bytes, per format: the DSSIM of the fixed-quality outputs (10th percentile,
 * median, 90th percentile) and the share of them that miss TARGET; and, with -L, the bytes of
 * auto at each named level (high, good, low; encoded for each, checked like the others)
 * relative to the fixed quality, with how many outputs meet that level.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <glib.h>
#include <vips/vips.h>

#include "shared/imgformat.h"
#include "shared/macro.h"
#include "shared/variant.h"
#include "worker/render-private.h"
#include "worker/render.h"
#include "worker/similarity.h"

#define MAX_FORMATS 5
#define MAX_SIZES 4
#define MAX_SAMPLES 4096

enum mode { MODE_FIXED, MODE_AUTO, _MODE_MAX };

/* The named levels, as -L encodes them. */
static const char *const level_names[] = { "high", "good", "low" };
#define N_LEVELS (sizeof level_names / sizeof *level_names)

struct stats {
        uint64_t bytes[_MODE_MAX];
        uint64_t cpu_usec[_MODE_MAX];
        double dssim[_MODE_MAX][MAX_SAMPLES];
        int quality[MAX_SAMPLES];
        double saving[MAX_SAMPLES]; /* 1 - auto bytes / fixed bytes, per output */
        size_t fixed_size;          /* of the output being measured */
        unsigned encodes;
        unsigned n, meets, meets_fixed, reported_off;
        uint64_t level_bytes[N_LEVELS], level_fixed_bytes; /* -L: outputs with every level */
        unsigned level_meets[N_LEVELS], level_n;
};

static double target = -1;
static int fixed_q = 80;
static const char *outdir;
static FILE *log_file;

static uint64_t cpu_usec(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
        return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static int cmp_double(const void *a, const void *b)
{
        double x = *(const double *)a, y = *(const double *)b;

        return x < y ? -1 : x > y;
}

static int cmp_int(const void *a, const void *b)
{
        return *(const int *)a - *(const int *)b;
}

static double median(double *v, unsigned n)
{
        if (n == 0)
                return 0;
        qsort(v, n, sizeof *v, cmp_double);
        return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* The p-th quantile (0..1, nearest rank) of v[0..n), sorted in place. */
static double quantile(double *v, unsigned n, double p)
{
        if (n == 0)
                return 0;
        qsort(v, n, sizeof *v, cmp_double);
        return v[(unsigned)CLAMP(lround(p * (n - 1)), 0, (long)n - 1)];
}

static double largest(const double *v, unsigned n)
{
        double m = 0;

        for (unsigned i = 0; i < n; i++)
                m = MAX(m, v[i]);
        return m;
}

/* The independent check: the file written, read back, decoded by what it is, scored. */
static double check_file(VipsImage *ref, const char *path)
{
        gchar *data = NULL;
        gsize len = 0;
        VipsImage *im = NULL, *mem = NULL;
        double d = -1;

        if (!g_file_get_contents(path, &data, &len, NULL))
                return -1;
        im = vips_image_new_from_buffer(data, len, "", NULL);
        if (im)
                mem = vips_image_copy_memory(im);
        if (!mem || similarity_dssim(ref, mem, &d) < 0) {
                fprintf(stderr, "imgd-bench-quality: check %s: %s\n", path, vips_error_buffer());
                vips_error_clear();
                d = -1;
        }
        if (mem)
                g_object_unref(mem);
        if (im)
                g_object_unref(im);
        g_free(data);
        return d;
}

/*
 * Encodes in as v wants, timed; writes the output, checks it. Returns the independent score,
 * or -1 on failure; *ret the encoder's result (buf freed here).
 */
static double run(VipsImage *in, const struct variant *v, const char *stem, const char *mode,
                  struct render_output *ret, uint64_t *ret_cpu)
{
        struct render_output o = { .quality = -1, .score = -1 };
        struct render_error err = {};
        char path[4096];
        uint64_t t0 = cpu_usec();
        double d;

        if (v->format == VARIANT_FORMAT_BEST) {
                struct render_output best = { .quality = -1, .score = -1 };

                for (unsigned i = 0; i < v->n_candidates; i++) {
                        struct variant c = *v;
                        struct render_output t = { .quality = -1, .score = -1 };

                        c.format = v->candidates[i];
                        c.n_candidates = 0;
                        c.best_time_limit_usec = 0;
                        if (render_encode_fit(in, &c, true, NULL, &t, &err) < 0) {
                                fprintf(stderr, "imgd-bench-quality: %s: %s\n", stem, err.message);
                                g_free(best.buf);
                                return -1;
                        }
                        o.encodes += t.encodes;
                        if (!best.buf || ((t.score <= v->target) != (best.score <= v->target)
                                                  ? t.score <= v->target
                                          : t.score <= v->target ? t.size < best.size
                                                                 : t.score < best.score)) {
                                g_free(best.buf);
                                best = t;
                        } else {
                                g_free(t.buf);
                        }
                }
                best.encodes = o.encodes;
                o = best;
        } else if (render_encode_fit(in, v, true, NULL, &o, &err) < 0) {
                fprintf(stderr, "imgd-bench-quality: %s: %s\n", stem, err.message);
                return -1;
        }
        *ret_cpu = cpu_usec() - t0;
        snprintf(path, sizeof path, "%s/%s_%s.%s", outdir, stem, mode,
                 image_format_extension(o.format));
        if (!g_file_set_contents(path, o.buf, (gssize)o.size, NULL)) {
                g_free(o.buf);
                return -1;
        }
        d = check_file(in, path);
        if (log_file)
                fprintf(log_file, "%s\t%s\t%s\t%d\t%zu\t%.6f\t%.6f\t%u\t%" PRIu64 "\n", stem,
                        image_format_name(o.format), mode, o.quality, o.size, d, o.score, o.encodes,
                        *ret_cpu);
        g_free(o.buf);
        o.buf = NULL;
        *ret = o;
        return d;
}

static int parse_list(const char *s, char out[][16], int max)
{
        int n = 0;
        char *copy = strdup(s), *save = NULL;

        for (char *t = strtok_r(copy, ",", &save); t && n < max; t = strtok_r(NULL, ",", &save))
                snprintf(out[n++], 16, "%s", t);
        free(copy);
        return n;
}

int main(int argc, char **argv)
{
        char formats[MAX_FORMATS][16], sizes[MAX_SIZES][16];
        int n_formats = parse_list("jpeg,webp,avif,jxl", formats, MAX_FORMATS);
        int n_sizes = parse_list("1600,800", sizes, MAX_SIZES);
        static struct stats st[MAX_FORMATS], best_st;
        unsigned wins[_IMAGE_FORMAT_MAX] = {};
        bool best = false, levels = false;
        char tmpl[] = "/tmp/imgd-bench-quality-XXXXXX";
        int c;

        while ((c = getopt(argc, argv, "t:q:f:s:bLo:l:")) != -1) {
                switch (c) {
                case 't':
                        target = variant_target_from_name(optarg);
                        if (target < 0)
                                target = strtod(optarg, NULL);
                        break;
                case 'q':
                        fixed_q = atoi(optarg);
                        break;
                case 'f':
                        n_formats = parse_list(optarg, formats, MAX_FORMATS);
                        break;
                case 's':
                        n_sizes = parse_list(optarg, sizes, MAX_SIZES);
                        break;
                case 'b':
                        best = true;
                        break;
                case 'L':
                        levels = true;
                        break;
                case 'o':
                        outdir = optarg;
                        break;
                case 'l':
                        log_file = fopen(optarg, "w");
                        break;
                default:
                        fprintf(stderr, "usage: imgd-bench-quality [-t TARGET] [-q QUALITY] "
                                        "[-f FORMATS] [-s SIZES] [-b] [-L] [-o OUTDIR] [-l LOG] "
                                        "FILE...\n");
                        return 2;
                }
        }
        if (target <= 0)
                target = variant_target_from_name(VARIANT_TARGET_DEFAULT_LEVEL);
        if (!outdir && !(outdir = mkdtemp(tmpl))) {
                perror("mkdtemp");
                return 1;
        }
        if (render_init(argv[0], 1) < 0)
                return 1;

        for (int a = optind; a < argc; a++) {
                gchar *data = NULL;
                gsize len = 0;
                struct variant vs[MAX_SIZES];
                struct render_limits limits = {};
                struct render_error err = {};
                render_base *b = NULL;
                const char *name = strrchr(argv[a], '/') ? strrchr(argv[a], '/') + 1 : argv[a];

                if (!g_file_get_contents(argv[a], &data, &len, NULL)) {
                        fprintf(stderr, "imgd-bench-quality: cannot read %s\n", argv[a]);
                        continue;
                }
                for (int s = 0; s < n_sizes; s++) {
                        variant_init(&vs[s]);
                        snprintf(vs[s].name, sizeof vs[s].name, "%s", sizes[s]);
                        vs[s].width = vs[s].height = (unsigned)atoi(sizes[s]);
                        vs[s].fit = VARIANT_FIT_INSIDE;
                        vs[s].format = IMAGE_FORMAT_JPEG;
                }
                if (render_base_new(data, len, vs, (size_t)n_sizes, &limits, &b, &err) < 0) {
                        fprintf(stderr, "imgd-bench-quality: %s: %s\n", name, err.message);
                        g_free(data);
                        continue;
                }
                for (int s = 0; s < n_sizes; s++) {
                        VipsImage *resized = NULL, *flat = NULL, *in = NULL;
                        char stem[512];

                        if (render_resize(b->image, b->ref_width, b->ref_height, &vs[s], &resized) <
                            0)
                                goto next;
                        if (vips_image_hasalpha(resized)) {
                                static const uint8_t white[3] = { 255, 255, 255 };
                                VipsImage *f8 = NULL;

                                if (render_flatten(resized, white, &flat) < 0 ||
                                    vips_cast(flat, &f8, VIPS_FORMAT_UCHAR, NULL) < 0)
                                        goto next;
                                in = vips_image_copy_memory(f8);
                                g_object_unref(f8);
                        } else {
                                in = vips_image_copy_memory(resized);
                        }
                        if (!in)
                                goto next;
                        for (int f = 0; f < n_formats; f++) {
                                struct variant v = vs[s];
                                struct render_output o;
                                struct stats *t = &st[f];
                                uint64_t cpu = 0;
                                double d;

                                if (t->n >= MAX_SAMPLES)
                                        continue;
                                v.format = image_format_from_name(formats[f]);
                                v.quality = (unsigned)fixed_q;
                                snprintf(stem, sizeof stem, "%s_%s", name, sizes[s]);
                                d = run(in, &v, stem, "fixed", &o, &cpu);
                                if (d < 0)
                                        continue;
                                t->bytes[MODE_FIXED] += o.size;
                                t->fixed_size = o.size;
                                t->saving[t->n] = (double)o.size;
                                t->cpu_usec[MODE_FIXED] += cpu;
                                t->dssim[MODE_FIXED][t->n] = d;
                                t->meets_fixed += d <= target;

                                v.quality_auto = true;
                                v.target = target;
                                d = run(in, &v, stem, "auto", &o, &cpu);
                                if (d < 0)
                                        continue;
                                t->bytes[MODE_AUTO] += o.size;
                                t->saving[t->n] = 1 - (double)o.size / t->saving[t->n];
                                t->cpu_usec[MODE_AUTO] += cpu;
                                t->dssim[MODE_AUTO][t->n] = d;
                                t->quality[t->n] = o.quality;
                                t->encodes += o.encodes;
                                t->meets += d <= target;
                                t->reported_off += fabs(d - o.score) > 1e-5;
                                if (levels) {
                                        const uint64_t auto_size = o.size;
                                        const bool auto_meets = d <= target;
                                        uint64_t bytes[N_LEVELS];
                                        unsigned meets[N_LEVELS];
                                        size_t l;

                                        for (l = 0; l < N_LEVELS; l++) {
                                                char mode[32];
                                                uint64_t c2 = 0;
                                                double d2;

                                                v.target = variant_target_from_name(level_names[l]);
                                                /* The level of -t: the output above. */
                                                if (v.target == target) {
                                                        bytes[l] = auto_size;
                                                        meets[l] = auto_meets;
                                                        continue;
                                                }
                                                snprintf(mode, sizeof mode, "auto-%s",
                                                         level_names[l]);
                                                d2 = run(in, &v, stem, mode, &o, &c2);
                                                if (d2 < 0)
                                                        break;
                                                bytes[l] = o.size;
                                                meets[l] = d2 <= v.target;
                                        }
                                        if (l == N_LEVELS) {
                                                for (l = 0; l < N_LEVELS; l++) {
                                                        t->level_bytes[l] += bytes[l];
                                                        t->level_meets[l] += meets[l];
                                                }
                                                t->level_fixed_bytes += (uint64_t)t->fixed_size;
                                                t->level_n++;
                                        }
                                }
                                t->n++;
                        }
                        if (best && best_st.n < MAX_SAMPLES) {
                                struct variant v = vs[s];
                                struct render_output o;
                                uint64_t cpu = 0;
                                double d;

                                v.format = VARIANT_FORMAT_BEST;
                                v.quality_auto = true;
                                v.target = target;
                                v.n_candidates = 3;
                                v.candidates[0] = IMAGE_FORMAT_AVIF;
                                v.candidates[1] = IMAGE_FORMAT_WEBP;
                                v.candidates[2] = IMAGE_FORMAT_JPEG;
                                v.best_time_limit_usec = VARIANT_BEST_TIME_LIMIT_DEFAULT_USEC;
                                d = run(in, &v, stem, "best", &o, &cpu);
                                if (d >= 0) {
                                        best_st.bytes[MODE_AUTO] += o.size;
                                        best_st.cpu_usec[MODE_AUTO] += cpu;
                                        best_st.dssim[MODE_AUTO][best_st.n] = d;
                                        best_st.meets += d <= target;
                                        best_st.n++;
                                        wins[o.format]++;
                                }
                        }
                next:
                        if (in)
                                g_object_unref(in);
                        if (flat)
                                g_object_unref(flat);
                        if (resized)
                                g_object_unref(resized);
                        vips_error_clear();
                }
                render_base_free(b);
                g_free(data);
                fprintf(stderr, ".");
        }
        fprintf(stderr, "\n");

        printf("target DSSIM %g (1/MS-SSIM - 1), fixed quality %d, sizes", target, fixed_q);
        for (int s = 0; s < n_sizes; s++)
                printf(" %s", sizes[s]);
        printf(", outputs in %s\n\n", outdir);
        printf("%-6s %7s %12s %12s %7s %7s %10s %10s %10s %10s %6s %6s %9s %7s %9s %9s %6s\n",
               "format", "outputs", "bytes_q", "bytes_auto", "saving", "med_sav", "dssim_q",
               "max_q", "dssim_auto", "max_auto", "med_q", "meets", "meets_q", "encodes", "cpu_q_s",
               "cpu_auto_s", "ratio");
        for (int f = 0; f < n_formats; f++) {
                struct stats *t = &st[f];
                double mq = 0, mmq, ma, mma;

                if (t->n == 0)
                        continue;
                mmq = largest(t->dssim[MODE_FIXED], t->n);
                mma = largest(t->dssim[MODE_AUTO], t->n);
                mq = median(t->dssim[MODE_FIXED], t->n);
                ma = median(t->dssim[MODE_AUTO], t->n);
                qsort(t->quality, t->n, sizeof(int), cmp_int);
                printf("%-6s %7u %12" PRIu64 " %12" PRIu64 " %6.1f%% %6.1f%% %10.5f %10.5f %10.5f "
                       "%10.5f %6d %3u/%-3u %4u/%-4u %7.2f %9.2f %9.2f %6.2f\n",
                       formats[f], t->n, t->bytes[MODE_FIXED], t->bytes[MODE_AUTO],
                       100.0 * (1 - (double)t->bytes[MODE_AUTO] / (double)t->bytes[MODE_FIXED]),
                       100.0 * median(t->saving, t->n), mq, mmq, ma, mma, t->quality[t->n / 2],
                       t->meets, t->n, t->meets_fixed, t->n, (double)t->encodes / t->n,
                       t->cpu_usec[MODE_FIXED] / 1e6, t->cpu_usec[MODE_AUTO] / 1e6,
                       (double)t->cpu_usec[MODE_AUTO] / (double)MAX(t->cpu_usec[MODE_FIXED], 1));
                if (t->reported_off)
                        printf("       %u outputs' reported score differs from the check\n",
                               t->reported_off);
        }
        printf("\nevidence on bytes: the fixed quality %d against target %g", fixed_q, target);
        if (levels)
                printf("; auto at each level (high %g, good %g, low %g), bytes relative to "
                       "quality %d",
                       variant_target_from_name("high"), variant_target_from_name("good"),
                       variant_target_from_name("low"), fixed_q);
        printf("\n%-6s %7s %9s %9s %9s %9s", "format", "outputs", "dssim_p10", "dssim_med",
               "dssim_p90", "q_misses");
        if (levels)
                for (size_t l = 0; l < N_LEVELS; l++)
                        printf(" %8s %7s", level_names[l], "meets");
        printf("\n");
        for (int f = 0; f < n_formats; f++) {
                struct stats *t = &st[f];

                if (t->n == 0)
                        continue;
                printf("%-6s %7u %9.5f %9.5f %9.5f %8.1f%%", formats[f], t->n,
                       quantile(t->dssim[MODE_FIXED], t->n, 0.1),
                       quantile(t->dssim[MODE_FIXED], t->n, 0.5),
                       quantile(t->dssim[MODE_FIXED], t->n, 0.9),
                       100.0 * (t->n - t->meets_fixed) / t->n);
                if (levels && t->level_n > 0)
                        for (size_t l = 0; l < N_LEVELS; l++)
                                printf(" %+7.1f%% %3u/%-3u",
                                       100.0 * ((double)t->level_bytes[l] /
                                                        (double)t->level_fixed_bytes -
                                                1),
                                       t->level_meets[l], t->level_n);
                printf("\n");
        }
        if (best && best_st.n > 0) {
                printf("\nbest (avif, webp, jpeg): %u outputs, %" PRIu64 " bytes, median DSSIM "
                       "%.5f, %u meet the target, CPU %.2f s; won:",
                       best_st.n, best_st.bytes[MODE_AUTO],
                       median(best_st.dssim[MODE_AUTO], best_st.n), best_st.meets,
                       best_st.cpu_usec[MODE_AUTO] / 1e6);
                for (int f = 0; f < _IMAGE_FORMAT_MAX; f++)
                        if (wins[f])
                                printf(" %s %u", image_format_name(f), wins[f]);
                printf("\n");
        }
        if (log_file)
                fclose(log_file);
        render_shutdown();
        return 0;
}
