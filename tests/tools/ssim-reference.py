#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""ssim-reference.py - an independent reference for src/worker/similarity.c: MS-SSIM (Wang,
Simoncelli and Bovik 2003) of the luma of two 8-bit sRGB images and DSSIM = 1/MS-SSIM - 1,
in plain Python (no numpy), written from the paper's definition rather than from the C code:
a 2-D 11x11 Gaussian window (sigma 1.5) summed directly at each valid position, variances as
E[x^2] - E[x]^2, C1 = (0.01*255)^2, C2 = (0.03*255)^2, 2x2 box averaging between scales (an
odd last row or column dropped), Wang's five weights, fewer scales (weights renormalised) when
the image is too small, and negative contrast-structure means counted as 0.

With no arguments it prints the values for the synthetic pair that tests/unit/test-similarity.c
builds (test_reference_pair): the same formulas are written in both files.

    python3 tests/tools/ssim-reference.py
    python3 tests/tools/ssim-reference.py A.ppm B.ppm   # binary P6 files of equal size
"""
import math
import sys

WEIGHTS = [0.0448, 0.2856, 0.3001, 0.2363, 0.1333]
WIN = 11
C1 = (0.01 * 255) ** 2
C2 = (0.03 * 255) ** 2


def pair(w=200, h=190):
    """The synthetic pair: a reference of gradients, products and xor, and a copy with
    deterministic noise (a 31-bit LCG) in [-12, 12] added to every sample, clamped."""
    a, b = [], []
    state = 1
    for y in range(h):
        ra, rb = [], []
        for x in range(w):
            px = ((x * 2 + y) % 256, (x * y // 7) % 256, (x ^ y) & 255)
            q = []
            for c in px:
                state = (state * 1103515245 + 12345) % (1 << 31)
                n = (state >> 16) % 25 - 12
                q.append(min(255, max(0, c + n)))
            ra.append(px)
            rb.append(tuple(q))
        a.append(ra)
        b.append(rb)
    return a, b


def luma(img):
    return [[0.299 * r + 0.587 * g + 0.114 * b for (r, g, b) in row] for row in img]


def window():
    g = [[math.exp(-((i - 5) ** 2 + (j - 5) ** 2) / (2 * 1.5 * 1.5)) for j in range(WIN)]
         for i in range(WIN)]
    s = sum(map(sum, g))
    return [[v / s for v in row] for row in g]


def terms(x, y):
    g = window()
    h, w = len(x), len(x[0])
    cs_sum = l_sum = 0.0
    n = 0
    for i in range(h - WIN + 1):
        for j in range(w - WIN + 1):
            mx = my = xx = yy = xy = 0.0
            for di in range(WIN):
                rx, ry, gr = x[i + di], y[i + di], g[di]
                for dj in range(WIN):
                    a, b, k = rx[j + dj], ry[j + dj], gr[dj]
                    mx += k * a
                    my += k * b
                    xx += k * a * a
                    yy += k * b * b
                    xy += k * a * b
            vx, vy, cov = xx - mx * mx, yy - my * my, xy - mx * my
            cs_sum += (2 * cov + C2) / (vx + vy + C2)
            l_sum += (2 * mx * my + C1) / (mx * mx + my * my + C1)
            n += 1
    return cs_sum / n, l_sum / n


def down(p):
    h, w = len(p) // 2, len(p[0]) // 2
    return [[(p[2 * i][2 * j] + p[2 * i][2 * j + 1] + p[2 * i + 1][2 * j] +
              p[2 * i + 1][2 * j + 1]) / 4 for j in range(w)] for i in range(h)]


def msssim(a, b):
    x, y = luma(a), luma(b)
    cs, ls = [], []
    while True:
        c, l = terms(x, y)
        cs.append(max(c, 0.0))
        ls.append(l)
        if len(cs) == 5 or len(x) // 2 < WIN or len(x[0]) // 2 < WIN:
            break
        x, y = down(x), down(y)
    total = sum(WEIGHTS[:len(cs)])
    r = 1.0
    for s, c in enumerate(cs):
        v = c * max(ls[-1], 0.0) if s == len(cs) - 1 else c
        r *= v ** (WEIGHTS[s] / total)
    return r


def read_ppm(path):
    data = open(path, 'rb').read()
    fields, pos = [], 0
    while len(fields) < 4:
        while data[pos:pos + 1].isspace():
            pos += 1
        if data[pos:pos + 1] == b'#':
            pos = data.index(b'\n', pos)
            continue
        end = pos
        while not data[end:end + 1].isspace():
            end += 1
        fields.append(data[pos:end])
        pos = end
    pos += 1
    assert fields[0] == b'P6' and fields[3] == b'255'
    w, h = int(fields[1]), int(fields[2])
    px = data[pos:pos + w * h * 3]
    return [[tuple(px[(y * w + x) * 3:(y * w + x) * 3 + 3]) for x in range(w)] for y in range(h)]


if __name__ == '__main__':
    if len(sys.argv) == 3:
        a, b = read_ppm(sys.argv[1]), read_ppm(sys.argv[2])
    else:
        a, b = pair()
    m = msssim(a, b)
    print('msssim %.9f dssim %.9f' % (m, 1 / m - 1))
