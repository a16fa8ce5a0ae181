/* SPDX-License-Identifier: MIT */
/*
 * proto.h - the control protocol shared by imgd and imgctl: newline-delimited JSON over a
 * Unix stream socket. Each request is one line {"v":1,"cmd":"status", ...arguments}; each
 * response is one line {"v":1,"ok":true,"result":{...}} or {"v":1,"ok":false,"error":"..."}.
 * Lines are at most PROTO_MAX_LINE bytes. See README.md for the commands.
 *
 * A client that sent {"v":1,"cmd":"events"} is a subscriber: after the answer, it also
 * receives one event line per job transition, {"v":1,"event":"done","at_us":...,"job":{...}}.
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PROTO_VERSION 1
#define PROTO_MAX_LINE (64 * 1024)

/* A new request object {"v":1,"cmd":cmd}; NULL on allocation failure. */
json_t *proto_request_new(const char *cmd);

/*
 * Parses one request line (without its newline). Returns 0 with the request object in *ret
 * and its command in *ret_cmd (borrowed from *ret), or -EBADMSG / -EPROTONOSUPPORT with a
 * message in *ret_error (owned by the caller).
 */
int proto_parse_request(const char *line, size_t n, json_t **ret, const char **ret_cmd,
                        char **ret_error);

/* Encodes an ok response carrying `result` (borrowed), or an error response, as one line
 * ending in "\n". Returns a new string or NULL on allocation failure. */
char *proto_format_ok(const json_t *result);
char *proto_format_error(const char *message);

/* Encodes a request as one line ending in "\n". */
char *proto_format_request(const json_t *req);

/*
 * A new JSON string holding s, with every byte that is not part of valid UTF-8 replaced by
 * U+FFFD, for text from outside (file names, error messages) that jansson would refuse.
 * NULL on allocation failure.
 */
json_t *proto_string_lossy(const char *s);

/* Whether s is valid UTF-8 in full, so that JSON can carry it unchanged. */
bool proto_utf8_valid(const char *s);

/* The bytes of s (a name in any encoding) as lowercase hex, which JSON carries exactly; NULL
 * when out of memory. */
char *proto_hex_encode(const char *s);

/* The bytes of hex (proto_hex_encode()'s) back: 0 and *ret (owned by the caller), -EBADMSG
 * when hex is not the hex of bytes without a NUL (odd length, another character), -ENOMEM. */
int proto_hex_decode(const char *hex, char **ret);

/*
 * Parses one response line. Returns 0 with the result in *ret (owned by the caller), or
 * -EREMOTEIO when the daemon answered with an error (message in *ret_error), or -EBADMSG
 * (what was wrong in *ret_error). ret_error may be NULL.
 */
int proto_parse_response(const char *line, size_t n, json_t **ret, char **ret_error);

/*
 * Encodes an event line {"v":1,"event":event,"at_us":at_us,"job":job} ending in "\n"; job is
 * borrowed. Returns a new string, or NULL on allocation failure.
 */
char *proto_format_event(const char *event, int64_t at_usec, const json_t *job);

/* The same with the object under `member`: "job" for a job's transition, "reconcile" for the
 * reconciliation's events ("reconcile-pass", "reconcile-done"). */
char *proto_format_event_of(const char *event, int64_t at_usec, const char *member,
                            const json_t *obj);

/*
 * Parses one event line. Returns 0 with the whole event object in *ret (owned by the
 * caller; "event" is a non-empty string, and "job" or "reconcile" an object), or -EBADMSG
 * with what was wrong in *ret_error (may be NULL). A response line is not an event: -EBADMSG.
 */
int proto_parse_event(const char *line, size_t n, json_t **ret, char **ret_error);
