#!/usr/bin/env node
// SPDX-License-Identifier: MIT
//
// upload-and-wait.js - how an application hands an image to imgd and learns when its
// variants are published, with nothing but Node.js (20; no npm package):
//
//   1. subscribe to imgd's events on its control socket ({"v":1,"cmd":"events"}), before
//      the file appears, so that no event about it can be missed;
//   2. write the upload atomically: under a hidden temporary name in the watched folder
//      (imgd ignores names starting with '.'), flushed to disk, then renamed to its name;
//   3. wait for the `done` (or `dead`) event of that file and print the published variants:
//      one "VARIANT PATH" line each, then "placeholder JSON" and "manifest PATH" when the
//      event carries them.
//
// The protocol is newline-delimited JSON (README.md, "The control protocol"): answers have
// "ok", events have "event"; a job's events name it by "id" and "source" (its path).
//
//   node upload-and-wait.js [--socket PATH] --watch DIR [--name NAME] [--timeout SECONDS] FILE
//
// Exit status: 0 published; 1 the job failed (dead or cancelled) or no event came in time;
// 2 usage error; 3 imgd could not be reached or closed the connection.
'use strict';

const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');

const USAGE =
  'Usage: upload-and-wait.js [--socket PATH] --watch DIR [--name NAME] [--timeout SECONDS] FILE\n' +
  '  --socket PATH      imgd\'s control socket (default: $IMGD_SOCKET or /run/imgd/imgd.sock)\n' +
  '  --watch DIR        the watched upload folder to drop FILE into\n' +
  '  --name NAME        the name to give it there (default: FILE\'s name)\n' +
  '  --timeout SECONDS  give up after this long (default: 120)\n';

class Failure extends Error {
  constructor(message, code) {
    super(message);
    this.code = code;
  }
}

function parseArgs(argv) {
  const opts = {
    socket: process.env.IMGD_SOCKET || '/run/imgd/imgd.sock',
    watch: null,
    name: null,
    timeout: 120,
    file: null,
  };
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i];
    let value = null;
    const eq = arg.indexOf('=');
    if (arg.startsWith('--') && eq > 0) {
      value = arg.slice(eq + 1);
      arg = arg.slice(0, eq);
    }
    const take = () => {
      if (value !== null) return value;
      if (i + 1 >= argv.length) throw new Failure(`${arg} needs a value`, 2);
      return argv[++i];
    };
    switch (arg) {
      case '--socket': opts.socket = take(); break;
      case '--watch': opts.watch = take(); break;
      case '--name': opts.name = take(); break;
      case '--timeout':
        opts.timeout = Number(take());
        if (!(opts.timeout > 0)) throw new Failure('--timeout needs a number of seconds', 2);
        break;
      case '-h':
      case '--help':
        process.stdout.write(USAGE);
        process.exit(0);
        break;
      default:
        if (arg.startsWith('-') || opts.file !== null) throw new Failure(`unexpected argument '${arg}'`, 2);
        opts.file = arg;
    }
  }
  if (!opts.watch || !opts.file) throw new Failure('--watch DIR and FILE are required', 2);
  return opts;
}

// Connects and subscribes; resolves with { socket, lines } once imgd confirms, where
// lines() is an async iterator over the following lines (events, answers).
function subscribe(socketPath) {
  return new Promise((resolve, reject) => {
    const sock = net.createConnection(socketPath);
    let buffer = '';
    const queue = [];
    let waiting = null;
    let ended = null;

    const push = (item) => {
      if (waiting) {
        const w = waiting;
        waiting = null;
        w(item);
      } else {
        queue.push(item);
      }
    };
    sock.setEncoding('utf8');
    sock.on('data', (chunk) => {
      buffer += chunk;
      let nl;
      while ((nl = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        if (line.trim()) push({ line });
      }
    });
    sock.on('error', (err) => {
      ended = new Failure(`cannot talk to imgd at ${socketPath}: ${err.message}`, 3);
      push({ error: ended });
      reject(ended);
    });
    sock.on('close', () => {
      ended = ended || new Failure(`imgd closed the connection (${socketPath})`, 3);
      push({ error: ended });
    });

    const next = () => (queue.length ? Promise.resolve(queue.shift())
      : new Promise((r) => { waiting = r; }));
    // One line, parsed; throws what ended the connection.
    const readMessage = async () => {
      const item = await next();
      if (item.error) throw item.error;
      try {
        return JSON.parse(item.line);
      } catch (e) {
        throw new Failure(`imgd sent a line that is not JSON: ${item.line.slice(0, 200)}`, 3);
      }
    };

    sock.on('connect', async () => {
      sock.write(JSON.stringify({ v: 1, cmd: 'events' }) + '\n');
      try {
        for (;;) {
          const msg = await readMessage();
          if (msg.event !== undefined) continue; // events of others, before our answer
          if (msg.ok === true && msg.result && msg.result.subscribed) break;
          throw new Failure(`imgd refused the subscription: ${msg.error || JSON.stringify(msg)}`, 3);
        }
      } catch (e) {
        sock.destroy();
        reject(e);
        return;
      }
      resolve({ sock, readMessage });
    });
  });
}

// Copies `file` into `watchDir` as `name`: a hidden temporary name, fsync, then rename,
// so that imgd sees the whole file appear at once. Returns the final path.
function dropAtomically(file, watchDir, name) {
  const final = path.join(watchDir, name);
  const tmp = path.join(watchDir, `.${name}.${process.pid}.tmp`);
  const data = fs.readFileSync(file);
  const fd = fs.openSync(tmp, 'wx', 0o644);
  try {
    fs.writeSync(fd, data);
    fs.fsyncSync(fd);
  } catch (e) {
    fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  fs.closeSync(fd);
  fs.renameSync(tmp, final);
  return final;
}

// The same path as imgd may spell it: symbolic links of the folder resolved.
function samePath(a, b) {
  if (typeof a !== 'string') return false;
  if (a === b) return true;
  try {
    return fs.realpathSync(path.dirname(a)) === fs.realpathSync(path.dirname(b)) &&
      path.basename(a) === path.basename(b);
  } catch {
    return false;
  }
}

function printDone(job) {
  const outputs = Array.isArray(job.outputs) ? job.outputs : [];
  for (const o of outputs) {
    if (o && typeof o.path === 'string') {
      console.log(`${o.variant !== undefined ? o.variant : '?'} ${o.path}`);
    }
  }
  // Optional: not every imgd puts these in the event.
  if (job.placeholder !== undefined && job.placeholder !== null) {
    console.log(`placeholder ${JSON.stringify(job.placeholder)}`);
  }
  if (typeof job.manifest === 'string') console.log(`manifest ${job.manifest}`);
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const name = opts.name || path.basename(opts.file);
  const { sock, readMessage } = await subscribe(opts.socket);
  let timer = null;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Failure(
      `timed out after ${opts.timeout} s waiting for imgd to finish ${name} ` +
      '(is the folder watched? an upload whose content imgd has already processed at that ' +
      'path makes no new job)', 1)), opts.timeout * 1000);
  });

  try {
    const source = dropAtomically(opts.file, opts.watch, name);
    let jobId = null;

    const wait = (async () => {
      for (;;) {
        const msg = await readMessage();
        if (msg.event === undefined) {
          // An answer to our own request (the "show" below).
          if (msg.ok && msg.result && msg.result.job && msg.result.job.id === jobId) {
            printDone(msg.result.job);
            return 0;
          }
          continue;
        }
        const job = msg.job || {};
        const ours = (jobId !== null && job.id === jobId) || samePath(job.source, source);
        if (!ours) continue;
        if (jobId === null && job.id !== undefined) jobId = job.id;
        switch (msg.event) {
          case 'done':
            if (job.outputs_omitted) {
              // Too many outputs for one event line: ask for the job.
              sock.write(JSON.stringify({ v: 1, cmd: 'show', id: jobId }) + '\n');
              continue;
            }
            printDone(job);
            return 0;
          case 'dead':
            throw new Failure(`job ${job.id} ${job.source}: dead: ${job.error || 'no error given'}`, 1);
          case 'cancelled':
            throw new Failure(`job ${job.id} ${job.source}: cancelled`, 1);
          case 'retry':
            process.stderr.write(`job ${job.id}: will be retried: ${job.error || ''}\n`);
            continue;
          default:
            continue; // queued, and events this example does not know
        }
      }
    })();
    wait.catch(() => {}); // if the timeout wins, what ends `wait` later is not news
    return await Promise.race([wait, timeout]);
  } finally {
    clearTimeout(timer);
    sock.destroy();
  }
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`upload-and-wait: ${err.message}\n`);
    if (err.code === 2) process.stderr.write(USAGE);
    process.exit(typeof err.code === 'number' ? err.code : 3);
  },
);
