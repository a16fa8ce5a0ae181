/* SPDX-License-Identifier: MIT */
/*
 * imgd-mksample - writes a photo-like sample image (smooth colour gradients, soft shapes
 * and sensor-like noise, so encoders and resamplers have real work) for the demo, the
 * tests and the benchmarks. Not installed.
 *
 *   imgd-mksample OUT.{jpg,png,webp,tif,gif} WIDTH HEIGHT [--alpha] [--orientation N]
 *                 [--seed N] [--quality Q] [--count N]
 *
 * --count N writes N different images (seeds SEED, SEED+1, ...) in one process: OUT is then a
 * pattern with one %d (or %0Nd) for the number, 0 to N-1, as "small/s%04d.png".
 *
 * --orientation writes an EXIF orientation tag (1-8) into a JPEG, leaving its pixels as they
 * are, as a camera does.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vips/vips.h>

static int usage(void)
{
        fprintf(stderr, "usage: imgd-mksample OUT WIDTH HEIGHT [--alpha] [--orientation N] "
                        "[--seed N] [--quality Q] [--count N]\n");
        return 2;
}

/* Writes one sample image to `out`; exits on a libvips error. */
static int make_one(const char *out, int w, int h, int alpha, int orientation, int seed,
                    int quality)
{
        VipsImage *base, **t;
        char *target;

        base = vips_image_new();
        t = (VipsImage **)vips_object_local_array(VIPS_OBJECT(base), 20);
        double fx = 5.0 + seed % 7, fy = 4.0 + seed % 5;
        /* x, y in [0,1), then three colour bands from sines of them (libvips angles are degrees).
         */
        if (vips_xyz(&t[0], w, h, NULL) ||
            vips_linear(t[0], &t[1], (double[]){ 1.0 / w, 1.0 / h }, (double[]){ 0, 0 }, 2, NULL) ||
            vips_extract_band(t[1], &t[2], 0, NULL) || vips_extract_band(t[1], &t[3], 1, NULL) ||
            vips_linear1(t[2], &t[4], fx * 180.0, seed * 40.0, NULL) ||
            vips_linear1(t[3], &t[5], fy * 180.0, seed * 75.0, NULL) ||
            vips_add(t[4], t[5], &t[6], NULL) ||
            vips_math(t[6], &t[7], VIPS_OPERATION_MATH_SIN, NULL) ||
            vips_math(t[4], &t[8], VIPS_OPERATION_MATH_COS, NULL) ||
            vips_math(t[5], &t[9], VIPS_OPERATION_MATH_SIN, NULL) ||
            vips_bandjoin((VipsImage *[]){ t[7], t[8], t[9] }, &t[10], 3, NULL) ||
            vips_linear1(t[10], &t[11], 100, 128, NULL) ||
            vips_gaussnoise(&t[12], w, h, "sigma", 12.0, "mean", 0.0, "seed", seed, NULL) ||
            vips_add(t[11], t[12], &t[13], NULL) ||
            vips_cast(t[13], &t[14], VIPS_FORMAT_UCHAR, NULL) ||
            vips_copy(t[14], &t[15], "interpretation", VIPS_INTERPRETATION_sRGB, NULL))
                vips_error_exit("%s", out);
        VipsImage *img = t[15];
        if (alpha) {
                /* Opaque in the middle, fading to transparent at the left and right. */
                if (vips_math(t[4], &t[16], VIPS_OPERATION_MATH_SIN, NULL) ||
                    vips_abs(t[16], &t[17], NULL) || vips_linear1(t[17], &t[18], 255, 0, NULL) ||
                    vips_cast(t[18], &t[19], VIPS_FORMAT_UCHAR, NULL) ||
                    vips_bandjoin2(img, t[19], &img, NULL))
                        vips_error_exit("%s", out);
                vips_object_local(base, img);
        }
        if (orientation >= 1 && orientation <= 8) {
                VipsImage *copy;
                if (vips_copy(img, &copy, NULL))
                        vips_error_exit("%s", out);
                vips_object_local(base, copy);
                vips_image_set_int(copy, VIPS_META_ORIENTATION, orientation);
                img = copy;
        }
        if (strstr(out, ".jpg") || strstr(out, ".jpeg"))
                target = g_strdup_printf("%s[Q=%d]", out, quality);
        else
                target = g_strdup(out);
        if (vips_image_write_to_file(img, target, NULL))
                vips_error_exit("%s", out);
        g_free(target);
        g_object_unref(base);
        return 0;
}

int main(int argc, char **argv)
{
        static const struct option options[] = {
                { "alpha", no_argument, NULL, 'a' },
                { "orientation", required_argument, NULL, 'o' },
                { "seed", required_argument, NULL, 's' },
                { "quality", required_argument, NULL, 'q' },
                { "count", required_argument, NULL, 'n' },
                {},
        };
        int alpha = 0, orientation = 0, seed = 1, quality = 90, count = 0, c;

        if (VIPS_INIT(argv[0]))
                vips_error_exit(NULL);
        while ((c = getopt_long(argc, argv, "", options, NULL)) >= 0) {
                switch (c) {
                case 'a':
                        alpha = 1;
                        break;
                case 'o':
                        orientation = atoi(optarg);
                        break;
                case 's':
                        seed = atoi(optarg);
                        break;
                case 'n':
                        count = atoi(optarg);
                        if (count <= 0)
                                return usage();
                        break;
                case 'q':
                        quality = atoi(optarg);
                        break;
                default:
                        return usage();
                }
        }
        if (argc - optind != 3)
                return usage();
        const char *out = argv[optind];
        int w = atoi(argv[optind + 1]), h = atoi(argv[optind + 2]);
        if (w <= 0 || h <= 0)
                return usage();

        if (count == 0) {
                make_one(out, w, h, alpha, orientation, seed, quality);
                vips_shutdown();
                return 0;
        }
        /* One number in the pattern, as %d or %0Nd, and nothing else for printf. */
        const char *pc = strchr(out, '%'), *d = pc ? strchr(pc, 'd') : NULL;
        if (!pc || !d || strchr(pc + 1, '%') ||
            strspn(pc + 1, "0123456789") != (size_t)(d - pc - 1)) {
                fprintf(stderr, "imgd-mksample: with --count, OUT needs one %%d: %s\n", out);
                return 2;
        }
        for (int i = 0; i < count; i++) {
                char *name = g_strdup_printf(out, i);

                make_one(name, w, h, alpha, orientation, seed + i, quality);
                g_free(name);
        }
        vips_shutdown();
        return 0;
}
