#!/usr/bin/env node
// SPDX-License-Identifier: MIT
// sharp's side of scripts/bench.sh: the same pipelines as imgd's avatar and web, done the way
// a web application would do them in-process with sharp, at its best: one process,
// sharp.cache(false), sharp.concurrency(1) (one libvips thread per pipeline), one input per
// image with clone() for the variants, and a pool of JOBS images in flight (UV_THREADPOOL_SIZE
// should be JOBS too, so at most JOBS pipelines run at once).
//
//   UV_THREADPOOL_SIZE=N NODE_PATH=DIR/node_modules \
//     node scripts/bench-sharp.js --pipeline avatar|web --jobs N --out DIR --manifest FILE FILE...
//
// Outputs are written as DIR/<stem>_<variant>.<ext> (toFile, as an application would). It
// prints one line of key=value figures like imgd-bench-pipeline's: images, outputs, errors,
// wall_s, cpu_s (process.cpuUsage: every thread of this process), maxrss_kb, images_per_s.
// The manifest has a tab-separated line per image ("image", path, -, -, bytes, microseconds)
// and per output ("output", path, variant, width, height, bytes).
'use strict';

const fs = require('fs');
const path = require('path');
const sharp = require('sharp');

function parseArgs(argv) {
    const a = { pipeline: 'avatar', jobs: require('os').availableParallelism(), out: null,
                manifest: null, files: [] };
    for (let i = 0; i < argv.length; i++) {
        const k = argv[i];
        if (k === '--pipeline') a.pipeline = argv[++i];
        else if (k === '--jobs') a.jobs = parseInt(argv[++i], 10);
        else if (k === '--out') a.out = argv[++i];
        else if (k === '--manifest') a.manifest = argv[++i];
        else a.files.push(k);
    }
    if (!a.out || a.files.length === 0 || !(a.jobs >= 1)) {
        console.error('usage: bench-sharp.js --pipeline avatar|web --jobs N --out DIR ' +
                      '[--manifest FILE] FILE...');
        process.exit(2);
    }
    return a;
}

// The inscribed circle as an RGBA raw buffer whose alpha is imgd's anti-aliased disc
// (alpha = clamp(r + 0.5 - d, 0, 1) * 255 with d measured from pixel centres); made once
// per size, so the mask costs sharp as little as it can.
const masks = new Map();
function circleMask(w, h) {
    const key = `${w}x${h}`;
    if (masks.has(key)) return masks.get(key);
    const buf = Buffer.alloc(w * h * 4, 255);
    const r = Math.min(w, h) / 2;
    for (let y = 0; y < h; y++) {
        for (let x = 0; x < w; x++) {
            const dx = x + 0.5 - w / 2, dy = y + 0.5 - h / 2;
            const a = Math.min(1, Math.max(0, r + 0.5 - Math.sqrt(dx * dx + dy * dy)));
            buf[(y * w + x) * 4 + 3] = Math.floor(a * 255);
        }
    }
    const m = { input: buf, raw: { width: w, height: h, channels: 4 }, blend: 'dest-in' };
    masks.set(key, m);
    return m;
}

// Each variant: its name, extension and what to do to a clone of the decoded input.
const pipelines = {
    avatar: [100, 200, 400].map((s, i) => ({
        name: ['small', 'medium', 'large'][i], ext: 'webp',
        apply: (p) => p.resize(s, s, { fit: 'cover', position: 'centre' })
            .composite([circleMask(s, s)]).webp({ quality: 80, effort: 4 }),
    })),
    web: [
        { name: '1600', ext: 'jpg',
          apply: (p) => p.resize(1600, 1600, { fit: 'inside', withoutEnlargement: true })
              .flatten({ background: '#ffffff' }).jpeg({ quality: 82, optimiseCoding: true }) },
        { name: '800', ext: 'jpg',
          apply: (p) => p.resize(800, 800, { fit: 'inside', withoutEnlargement: true })
              .flatten({ background: '#ffffff' }).jpeg({ quality: 82, optimiseCoding: true }) },
        { name: 'card', ext: 'webp',
          apply: (p) => p.resize(320, 320, { fit: 'cover', position: 'centre' })
              .webp({ quality: 80, effort: 4 }) },
    ],
};

async function main() {
    const a = parseArgs(process.argv.slice(2));
    const variants = pipelines[a.pipeline];
    if (!variants) {
        console.error(`bench-sharp.js: no pipeline '${a.pipeline}' (avatar, web)`);
        process.exit(2);
    }
    sharp.cache(false);
    sharp.concurrency(1);
    const lines = [];
    let next = 0, errors = 0, outputs = 0;

    async function one(file) {
        const t0 = process.hrtime.bigint();
        const stem = path.basename(file).replace(/\.[^.]*$/, '');
        // Decoded from the file, auto-rotated by EXIF, sRGB and stripped (sharp's defaults).
        const input = sharp(file, { sequentialRead: true, failOn: 'error' }).rotate();
        const infos = await Promise.all(variants.map((v) =>
            v.apply(input.clone()).toFile(path.join(a.out, `${stem}_${v.name}.${v.ext}`))));
        const us = Number((process.hrtime.bigint() - t0) / 1000n);
        lines.push(`image\t${file}\t-\t-\t${fs.statSync(file).size}\t${us}\n`);
        infos.forEach((info, i) => lines.push(
            `output\t${file}\t${variants[i].name}\t${info.width}\t${info.height}\t${info.size}\n`));
        outputs += infos.length;
    }

    async function worker() {
        while (next < a.files.length) {
            const file = a.files[next++];
            try {
                await one(file);
            } catch (e) {
                errors++;
                console.error(`bench-sharp.js: ${file}: ${e.message}`);
            }
        }
    }

    const c0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    await Promise.all(Array.from({ length: a.jobs }, worker));
    const wall = Number(process.hrtime.bigint() - t0) / 1e9;
    const cpu = process.cpuUsage(c0);
    if (a.manifest) fs.writeFileSync(a.manifest, lines.join(''));
    const images = a.files.length - errors;
    console.log(`images=${images} outputs=${outputs} errors=${errors} jobs=${a.jobs} ` +
                `threads=1 wall_s=${wall.toFixed(3)} ` +
                `cpu_s=${((cpu.user + cpu.system) / 1e6).toFixed(3)} ` +
                `maxrss_kb=${process.resourceUsage().maxRSS} ` +
                `images_per_s=${(images / wall).toFixed(3)} ` +
                `libvips=${sharp.versions.vips} sharp=${sharp.versions.sharp}`);
    process.exit(errors ? 1 : 0);
}

main();
