/* SPDX-License-Identifier: MIT */
/*
 * blurhash.c - the BlurHash encoder; see blurhash.h. Follows the published algorithm: for
 * each component (i, j), the average over all pixels of the linear-light colour times
 * cos(pi i x / width) cos(pi j y / height) (times 2 for the AC components); the DC component
 * is written back as sRGB, the AC components are normalised by their largest magnitude,
 * square-root companded and quantised to 19 levels per channel.
 */
#include <errno.h>
#include <math.h>

#include "worker/blurhash.h"

static const char alphabet[] =
        "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz#$%*+,-.:;=?@[]^_{|}~";

size_t blurhash_length(unsigned x_components, unsigned y_components)
{
        return 1 + 1 + 4 + 2 * ((size_t)x_components * y_components - 1);
}

double blurhash_srgb_to_linear(uint8_t v)
{
        double x = v / 255.0;

        return x <= 0.04045 ? x / 12.92 : pow((x + 0.055) / 1.055, 2.4);
}

uint8_t blurhash_linear_to_srgb(double v)
{
        double x = v < 0.0 ? 0.0 : v > 1.0 ? 1.0 : v;
        double s = x <= 0.0031308 ? x * 12.92 : 1.055 * pow(x, 1.0 / 2.4) - 0.055;
        long r = lround(s * 255.0);

        return (uint8_t)(r < 0 ? 0 : r > 255 ? 255 : r);
}

/* Writes value as `n` base-83 digits, most significant first. */
static char *encode83(unsigned long value, unsigned n, char *out)
{
        for (unsigned i = n; i > 0; i--) {
                out[i - 1] = alphabet[value % 83];
                value /= 83;
        }
        return out + n;
}

long blurhash_decode83(const char *s, size_t n)
{
        long value = 0;

        for (size_t i = 0; i < n; i++) {
                long digit = -1;

                for (long d = 0; d < 83; d++)
                        if (alphabet[d] == s[i]) {
                                digit = d;
                                break;
                        }
                if (digit < 0 || s[i] == '\0')
                        return -1;
                value = value * 83 + digit;
        }
        return value;
}

/* sign(x) |x|^e */
static double sign_pow(double x, double e)
{
        return copysign(pow(fabs(x), e), x);
}

static unsigned long quantise_ac(const double c[3], double maximum)
{
        unsigned long q[3];

        for (int k = 0; k < 3; k++) {
                double v = floor(sign_pow(c[k] / maximum, 0.5) * 9.0 + 9.5);

                q[k] = (unsigned long)(v < 0.0 ? 0.0 : v > 18.0 ? 18.0 : v);
        }
        return q[0] * 19 * 19 + q[1] * 19 + q[2];
}

int blurhash_encode(const uint8_t *pixels, unsigned width, unsigned height, size_t stride,
                    unsigned channels, unsigned x_components, unsigned y_components,
                    char ret[static BLURHASH_MAX])
{
        double factors[BLURHASH_COMPONENTS_MAX * BLURHASH_COMPONENTS_MAX][3] = {};
        double linear[256], cos_x[BLURHASH_COMPONENTS_MAX], maximum = 1.0;
        unsigned n = x_components * y_components;
        char *out = ret;

        if (!pixels || width == 0 || height == 0 || (channels != 3 && channels != 4) ||
            stride < (size_t)width * channels || x_components < 1 ||
            x_components > BLURHASH_COMPONENTS_MAX || y_components < 1 ||
            y_components > BLURHASH_COMPONENTS_MAX)
                return -EINVAL;

        for (int v = 0; v < 256; v++)
                linear[v] = blurhash_srgb_to_linear((uint8_t)v);

        for (unsigned y = 0; y < height; y++) {
                const uint8_t *row = pixels + (size_t)y * stride;

                for (unsigned x = 0; x < width; x++) {
                        const uint8_t *px = row + (size_t)x * channels;
                        double l[3] = { linear[px[0]], linear[px[1]], linear[px[2]] };

                        for (unsigned i = 0; i < x_components; i++)
                                cos_x[i] = cos(M_PI * i * x / width);
                        for (unsigned j = 0; j < y_components; j++) {
                                double cy = cos(M_PI * j * y / height);

                                for (unsigned i = 0; i < x_components; i++) {
                                        double basis = cos_x[i] * cy;
                                        double *f = factors[j * x_components + i];

                                        f[0] += basis * l[0];
                                        f[1] += basis * l[1];
                                        f[2] += basis * l[2];
                                }
                        }
                }
        }
        for (unsigned c = 0; c < n; c++) {
                double scale = (c == 0 ? 1.0 : 2.0) / ((double)width * height);

                for (int k = 0; k < 3; k++)
                        factors[c][k] *= scale;
        }

        out = encode83((x_components - 1) + (y_components - 1) * 9, 1, out);
        if (n > 1) {
                double actual = 0.0;
                double q;

                for (unsigned c = 1; c < n; c++)
                        for (int k = 0; k < 3; k++)
                                actual = fmax(actual, fabs(factors[c][k]));
                q = floor(actual * 166.0 - 0.5);
                q = q < 0.0 ? 0.0 : q > 82.0 ? 82.0 : q;
                maximum = (q + 1.0) / 166.0;
                out = encode83((unsigned long)q, 1, out);
        } else {
                out = encode83(0, 1, out);
        }
        out = encode83((unsigned long)blurhash_linear_to_srgb(factors[0][0]) << 16 |
                               (unsigned long)blurhash_linear_to_srgb(factors[0][1]) << 8 |
                               blurhash_linear_to_srgb(factors[0][2]),
                       4, out);
        for (unsigned c = 1; c < n; c++)
                out = encode83(quantise_ac(factors[c], maximum), 2, out);
        *out = '\0';
        return (int)(out - ret);
}
