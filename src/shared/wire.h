/* SPDX-License-Identifier: MIT */
/*
 * wire.h - messages between the daemon and its worker processes: one JSON object per
 * SOCK_SEQPACKET datagram, with file descriptors passed alongside (SCM_RIGHTS).
 *
 * Daemon -> worker, a job:
 *   {"type":"job", "id":42, "max_pixels":100000000, "max_bytes":268435456,
 *    "variants":[<variant_to_json()>...], "placeholder":true}
 *   with fds [source, output_0, ..., output_{n-1}]: the source open read-only, and one
 *   empty temporary file per variant, open for writing, created by the daemon in the
 *   destination directory. Formats are resolved ("same" never reaches a worker).
 *   "placeholder" (the pipeline's setting) is optional: absent means false.
 *
 * Worker -> daemon, the result:
 *   {"type":"result", "id":42, "ok":true, "source":{"format":"jpeg","width":W,"height":H,
 *    "sha256":"..."}, "outputs":[{"width":W,"height":H,"bytes":N,"sha256":"...",
 *    "quality":Q, "warning":"..."}...],
 *    "placeholder":{"blurhash":"LEHV6nWB2yk8...", "dominant":"#rrggbb",
 *                   "data_uri":"data:image/webp;base64,..."}}
 *   or {"type":"result", "id":42, "ok":false, "error":"...", "permanent":true|false}.
 *   An ok result promises that every output file was written completely, fsynced, read
 *   back, decoded, and found to have the format and dimensions given (width and height are
 *   those of one frame; an animated output has the frames of its source).
 *   Optional members of an ok result:
 *     outputs[i].quality  the encoder quality used (1..100), for outputs encoded with one
 *                         (jpeg, avif, lossy webp); lower than the variant's quality when
 *                         max_bytes made it so.
 *     outputs[i].warning  why the output is not quite what was asked, e.g. "max_bytes 20000
 *                         not reached at the lowest quality 30; published at 24512 bytes".
 *     placeholder         only when the job asked for it: the source's BlurHash (28
 *                         characters, 4 x 3 components or 3 x 4 for portrait images), its
 *                         dominant colour, and a WebP of at most 32 x 32 pixels as a data: URI.
 */
#pragma once

#include <jansson.h>
#include <stddef.h>

#define WIRE_MAX_MESSAGE (256 * 1024)
#define WIRE_MAX_FDS 64

/*
 * Sends msg with n_fds descriptors on sock. Returns 0 or a negative errno (-EMSGSIZE when
 * the encoding exceeds WIRE_MAX_MESSAGE). Descriptors stay owned by the caller.
 */
int wire_send(int sock, const json_t *msg, const int *fds, size_t n_fds);

/*
 * Receives one message. Returns 0 with the message in *ret_msg and the descriptors received
 * in ret_fds[0..*ret_n_fds) (all owned by the caller, O_CLOEXEC set), -ECONNRESET at end of
 * stream, -EAGAIN when nothing is waiting on a non-blocking socket, -EBADMSG for a datagram
 * that is truncated or not a JSON object (any descriptors that came with it are closed).
 */
int wire_recv(int sock, json_t **ret_msg, int ret_fds[static WIRE_MAX_FDS], size_t *ret_n_fds);
