/* SPDX-License-Identifier: MIT */
/*
 * proto.c - the control protocol codec shared by imgd (control-framing.c, api*.c) and
 * imgctl: one JSON object per line, each at most PROTO_MAX_LINE bytes without its newline.
 * Parsing is left to jansson; this module only decides what a well-formed request or
 * response is and says precisely what is wrong with one that is not. It holds no state.
 *
 *   request:  {"v":1,"cmd":"jobs","state":"dead"}
 *   response: {"v":1,"ok":true,"result":{...}}  or  {"v":1,"ok":false,"error":"..."}
 *   event:    {"v":1,"event":"done","at_us":1763900000000000,"job":{...}}  (to subscribers)
 */
#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "shared/macro.h"
#include "shared/proto.h"

/* Decoding: reject duplicate keys, so that {"cmd":"ping","cmd":"x"} is not ambiguous; decode
 * any value, so that "42" is refused as "not a JSON object" rather than as bad JSON. */
#define PROTO_LOAD_FLAGS (JSON_REJECT_DUPLICATES | JSON_DECODE_ANY)

/* A malloc'd message, or NULL when out of memory (the caller maps that to -ENOMEM). */
static char *msg(const char *fmt, ...) _printf_(1, 2);
static char *msg(const char *fmt, ...)
{
        char *s = NULL;
        va_list ap;

        va_start(ap, fmt);
        if (vasprintf(&s, fmt, ap) < 0)
                s = NULL;
        va_end(ap);
        return s;
}

/* Stores a message for a failure `r` in *ret_error (if wanted) and returns r, or -ENOMEM. */
static int fail(int r, char **ret_error, char *message)
{
        if (!message)
                return -ENOMEM;
        if (ret_error)
                *ret_error = message;
        else
                free(message);
        return r;
}

/* A short rendering of any JSON value for messages, e.g. 2, "1", [...]; never NULL. */
static void describe_value(const json_t *v, char *buf, size_t size)
{
        _cleanup_free_ char *s = NULL;

        if (!v) {
                snprintf(buf, size, "(none)");
                return;
        }
        s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        if (!s)
                snprintf(buf, size, "(?)");
        else if (strlen(s) < size)
                snprintf(buf, size, "%s", s);
        else if (size > 4)
                snprintf(buf, size, "%.*s...", (int)(size - 4), s);
        else if (size > 0)
                buf[0] = '\0';
}

/*
 * Decodes one line into an object. Returns 0 and the object, or -EBADMSG with a message
 * prefixed by `what` ("request", "response").
 */
static int load_object(const char *what, const char *line, size_t n, json_t **ret, char **ret_error)
{
        json_error_t jerr;
        json_t *j;

        if (n > PROTO_MAX_LINE)
                return fail(-EBADMSG, ret_error,
                            msg("%s too long (%zu bytes, at most %d)", what, n, PROTO_MAX_LINE));
        if (n == 0)
                return fail(-EBADMSG, ret_error, msg("%s is empty", what));
        if (memchr(line, '\0', n))
                return fail(-EBADMSG, ret_error, msg("%s contains a NUL byte", what));

        j = json_loadb(line, n, PROTO_LOAD_FLAGS, &jerr);
        if (!j)
                return fail(
                        -EBADMSG, ret_error,
                        msg("%s is not valid JSON: %s at column %d", what, jerr.text, jerr.column));
        if (!json_is_object(j)) {
                json_decref(j);
                return fail(-EBADMSG, ret_error, msg("%s is not a JSON object", what));
        }
        *ret = j;
        return 0;
}

json_t *proto_request_new(const char *cmd)
{
        assert(cmd);
        return json_pack("{s:i, s:s}", "v", PROTO_VERSION, "cmd", cmd);
}

int proto_parse_request(const char *line, size_t n, json_t **ret, const char **ret_cmd,
                        char **ret_error)
{
        _cleanup_(json_decrefp) json_t *req = NULL;
        const json_t *v, *cmd;
        char shown[48];
        int r;

        assert(line || n == 0);
        assert(ret);
        assert(ret_cmd);

        r = load_object("request", line ? line : "", n, &req, ret_error);
        if (r < 0)
                return r;

        /* The version first: a request from a newer client may not look like ours at all. */
        v = json_object_get(req, "v");
        if (!v)
                return fail(-EPROTONOSUPPORT, ret_error,
                            msg("unsupported protocol version (request has no \"v\"; this imgd "
                                "speaks %d)",
                                PROTO_VERSION));
        if (!json_is_integer(v) || json_integer_value(v) != PROTO_VERSION) {
                describe_value(v, shown, sizeof shown);
                return fail(-EPROTONOSUPPORT, ret_error,
                            msg("unsupported protocol version %s (this imgd speaks %d)", shown,
                                PROTO_VERSION));
        }

        cmd = json_object_get(req, "cmd");
        if (!cmd)
                return fail(-EBADMSG, ret_error, msg("request has no \"cmd\""));
        if (!json_is_string(cmd) || json_string_length(cmd) == 0 ||
            strlen(json_string_value(cmd)) != json_string_length(cmd))
                return fail(-EBADMSG, ret_error, msg("request \"cmd\" must be a non-empty string"));

        *ret_cmd = json_string_value(cmd);
        *ret = TAKE_PTR(req);
        return 0;
}

/* Encodes j as one compact line ending in "\n", allocated with malloc; NULL on failure. */
static char *dump_line(const json_t *j)
{
        size_t n, m;
        char *buf;

        n = json_dumpb(j, NULL, 0, JSON_COMPACT);
        if (n == 0)
                return NULL;
        buf = malloc(n + 2);
        if (!buf)
                return NULL;
        m = json_dumpb(j, buf, n, JSON_COMPACT);
        if (m != n) {
                free(buf);
                return NULL;
        }
        buf[n] = '\n';
        buf[n + 1] = '\0';
        return buf;
}

char *proto_format_ok(const json_t *result)
{
        _cleanup_(json_decrefp) json_t *resp = NULL;

        /* "O" takes a reference, which json_decref(resp) gives back: result is unchanged. */
        if (result)
                resp = json_pack("{s:i, s:b, s:O}", "v", PROTO_VERSION, "ok", 1, "result",
                                 (json_t *)result);
        else
                resp = json_pack("{s:i, s:b, s:{}}", "v", PROTO_VERSION, "ok", 1, "result");
        if (!resp)
                return NULL;
        return dump_line(resp);
}

char *proto_format_error(const char *message)
{
        _cleanup_(json_decrefp) json_t *resp = NULL;

        resp = json_pack("{s:i, s:b, s:o}", "v", PROTO_VERSION, "ok", 0, "error",
                         proto_string_lossy(message ? message : "unknown error"));
        if (!resp)
                return NULL;
        return dump_line(resp);
}

char *proto_format_request(const json_t *req)
{
        assert(req);
        return dump_line(req);
}

int proto_parse_response(const char *line, size_t n, json_t **ret, char **ret_error)
{
        _cleanup_(json_decrefp) json_t *resp = NULL;
        const json_t *v, *ok, *result, *error;
        char shown[48];
        char *e;
        int r;

        assert(line || n == 0);
        assert(ret);

        r = load_object("response", line ? line : "", n, &resp, ret_error);
        if (r < 0)
                return r;

        v = json_object_get(resp, "v");
        if (!json_is_integer(v) || json_integer_value(v) != PROTO_VERSION) {
                describe_value(v, shown, sizeof shown);
                return fail(-EBADMSG, ret_error,
                            msg("response has protocol version %s (this imgctl speaks %d)", shown,
                                PROTO_VERSION));
        }

        ok = json_object_get(resp, "ok");
        if (!json_is_boolean(ok))
                return fail(-EBADMSG, ret_error, msg("response has no \"ok\" boolean"));

        if (json_is_false(ok)) {
                error = json_object_get(resp, "error");
                if (!json_is_string(error))
                        return fail(-EBADMSG, ret_error,
                                    msg("error response has no \"error\" string"));
                e = strdup(json_string_value(error));
                return fail(-EREMOTEIO, ret_error, e);
        }

        result = json_object_get(resp, "result");
        if (!result)
                return fail(-EBADMSG, ret_error, msg("response has no \"result\""));

        *ret = json_incref((json_t *)result);
        return 0;
}

char *proto_format_event_of(const char *event, int64_t at_usec, const char *member,
                            const json_t *obj)
{
        _cleanup_(json_decrefp) json_t *ev = NULL;

        assert(event);
        assert(member);
        assert(obj);
        ev = json_pack("{s:i, s:s, s:I, s:O}", "v", PROTO_VERSION, "event", event, "at_us",
                       (json_int_t)at_usec, member, (json_t *)obj);
        if (!ev)
                return NULL;
        return dump_line(ev);
}

char *proto_format_event(const char *event, int64_t at_usec, const json_t *job)
{
        return proto_format_event_of(event, at_usec, "job", job);
}

int proto_parse_event(const char *line, size_t n, json_t **ret, char **ret_error)
{
        _cleanup_(json_decrefp) json_t *ev = NULL;
        const json_t *v, *event;
        char shown[48];
        int r;

        assert(line || n == 0);
        assert(ret);

        r = load_object("event", line ? line : "", n, &ev, ret_error);
        if (r < 0)
                return r;
        v = json_object_get(ev, "v");
        if (!json_is_integer(v) || json_integer_value(v) != PROTO_VERSION) {
                describe_value(v, shown, sizeof shown);
                return fail(-EBADMSG, ret_error,
                            msg("event has protocol version %s (this imgctl speaks %d)", shown,
                                PROTO_VERSION));
        }
        event = json_object_get(ev, "event");
        if (!json_is_string(event) || json_string_length(event) == 0 ||
            strlen(json_string_value(event)) != json_string_length(event))
                return fail(-EBADMSG, ret_error, msg("event has no \"event\" name"));
        if (!json_is_object(json_object_get(ev, "job")) &&
            !json_is_object(json_object_get(ev, "reconcile")))
                return fail(-EBADMSG, ret_error,
                            msg("event has no \"job\" or \"reconcile\" object"));
        *ret = TAKE_PTR(ev);
        return 0;
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if the byte at s does not start one.
 * Rejects overlong forms, surrogates and code points above U+10FFFF (RFC 3629). */
static size_t utf8_seq_len(const unsigned char *s)
{
        unsigned char c = s[0];
        size_t len, i;
        uint32_t cp;

        if (c < 0x80)
                return 1;
        if (c >= 0xc2 && c <= 0xdf) {
                len = 2;
                cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
                len = 3;
                cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
                len = 4;
                cp = c & 0x07;
        } else
                return 0;

        for (i = 1; i < len; i++) {
                if ((s[i] & 0xc0) != 0x80) /* also stops at the terminating NUL */
                        return 0;
                cp = (cp << 6) | (s[i] & 0x3f);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10ffff ||
            (cp >= 0xd800 && cp <= 0xdfff))
                return 0;
        return len;
}

bool proto_utf8_valid(const char *s)
{
        size_t k;

        assert(s);
        for (const unsigned char *p = (const unsigned char *)s; *p; p += k) {
                k = utf8_seq_len(p);
                if (k == 0)
                        return false;
        }
        return true;
}

json_t *proto_string_lossy(const char *s)
{
        static const char replacement[] = "\xef\xbf\xbd"; /* U+FFFD */
        const unsigned char *p;
        _cleanup_free_ char *fixed = NULL;
        size_t n, k, bad = 0;
        char *q;

        assert(s);

        for (p = (const unsigned char *)s; *p; p += k) {
                k = utf8_seq_len(p);
                if (k == 0) {
                        bad++;
                        k = 1;
                }
        }
        if (bad == 0)
                return json_string_nocheck(s);

        n = strlen(s);
        fixed = malloc(n + bad * (sizeof replacement - 2) + 1);
        if (!fixed)
                return NULL;
        q = fixed;
        for (p = (const unsigned char *)s; *p; p += k) {
                k = utf8_seq_len(p);
                if (k == 0) {
                        memcpy(q, replacement, sizeof replacement - 1);
                        q += sizeof replacement - 1;
                        k = 1;
                } else {
                        memcpy(q, p, k);
                        q += k;
                }
        }
        *q = '\0';
        return json_string_nocheck(fixed);
}

char *proto_hex_encode(const char *s)
{
        static const char digits[] = "0123456789abcdef";
        size_t n = strlen(s);
        char *hex = malloc(2 * n + 1);

        if (!hex)
                return NULL;
        for (size_t i = 0; i < n; i++) {
                hex[2 * i] = digits[(unsigned char)s[i] >> 4];
                hex[2 * i + 1] = digits[(unsigned char)s[i] & 0xf];
        }
        hex[2 * n] = '\0';
        return hex;
}

int proto_hex_decode(const char *hex, char **ret)
{
        size_t n = strlen(hex);
        char *s;

        if (n % 2 != 0)
                return -EBADMSG;
        s = malloc(n / 2 + 1);
        if (!s)
                return -ENOMEM;
        for (size_t i = 0; i < n / 2; i++) {
                int hi = unhexchar(hex[2 * i]), lo = unhexchar(hex[2 * i + 1]);

                if (hi < 0 || lo < 0 || (hi | lo) == 0) {
                        free(s);
                        return -EBADMSG;
                }
                s[i] = (char)(hi << 4 | lo);
        }
        s[n / 2] = '\0';
        *ret = s;
        return 0;
}
