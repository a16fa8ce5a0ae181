/* SPDX-License-Identifier: MIT */
/*
 * fuzz-proto.c - libFuzzer harness for the control protocol codec (proto.c), the parser of
 * everything a local client sends to imgd and of everything imgctl reads back. Each input is
 * parsed as a request, a response and an event line; what parses must survive a round trip
 * (format, parse again, same command), and every string made from it with
 * proto_string_lossy() must encode as JSON. Inputs over FUZZ_MAX_INPUT are skipped, as the
 * daemon never parses more than PROTO_MAX_LINE bytes.
 *
 *   clang build:  build/tests/fuzz-proto -max_len=65536 tests/fuzz/corpus-proto
 *   any build:    build/tests/fuzz-proto-corpus tests/fuzz/corpus-proto   (ctest runs it)
 */
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "shared/proto.h"

/* A violated invariant: abort, which libFuzzer and ctest both report. */
#define CHECK(x)                                                                                   \
        do {                                                                                       \
                if (!(x))                                                                          \
                        abort();                                                                   \
        } while (0)

static void check_request(const char *line, size_t n)
{
        json_t *req = NULL, *again = NULL;
        const char *cmd = NULL, *cmd2 = NULL;
        char *error = NULL, *formatted;
        int r;

        r = proto_parse_request(line, n, &req, &cmd, &error);
        if (r < 0) {
                CHECK(r == -EBADMSG || r == -EPROTONOSUPPORT || r == -ENOMEM);
                CHECK(r == -ENOMEM || (error && *error));
                free(error);
                return;
        }
        CHECK(req && json_is_object(req) && cmd && *cmd);

        /* What imgd accepted, imgctl's encoder writes back as an acceptable line. */
        formatted = proto_format_request(req);
        CHECK(formatted);
        CHECK(strlen(formatted) > 0 && formatted[strlen(formatted) - 1] == '\n');
        if (strlen(formatted) - 1 <= PROTO_MAX_LINE) {
                CHECK(proto_parse_request(formatted, strlen(formatted) - 1, &again, &cmd2, NULL) ==
                      0);
                CHECK(strcmp(cmd, cmd2) == 0);
                json_decref(again);
        }
        free(formatted);

        /* An answer carrying the request is one well-formed response line. */
        formatted = proto_format_ok(req);
        CHECK(formatted);
        if (strlen(formatted) - 1 <= PROTO_MAX_LINE) {
                CHECK(proto_parse_response(formatted, strlen(formatted) - 1, &again, NULL) == 0);
                CHECK(json_equal(again, req));
                json_decref(again);
        }
        free(formatted);
        json_decref(req);
}

static void check_response(const char *line, size_t n)
{
        json_t *result = NULL;
        char *error = NULL;
        int r = proto_parse_response(line, n, &result, &error);

        if (r == 0) {
                CHECK(result);
                json_decref(result);
                return;
        }
        CHECK(r == -EBADMSG || r == -EREMOTEIO || r == -ENOMEM);
        CHECK(r == -ENOMEM || error);
        free(error);
}

static void check_event(const char *line, size_t n)
{
        json_t *ev = NULL;
        char *error = NULL;
        int r = proto_parse_event(line, n, &ev, &error);

        if (r == 0) {
                char *formatted;

                const char *member =
                        json_is_object(json_object_get(ev, "job")) ? "job" : "reconcile";

                CHECK(json_is_string(json_object_get(ev, "event")));
                CHECK(json_is_object(json_object_get(ev, member)));
                formatted = proto_format_event_of(json_string_value(json_object_get(ev, "event")),
                                                  json_integer_value(json_object_get(ev, "at_us")),
                                                  member, json_object_get(ev, member));
                CHECK(formatted);
                free(formatted);
                json_decref(ev);
                return;
        }
        CHECK(r == -EBADMSG || r == -ENOMEM);
        free(error);
}

/* Text from outside (file names, errors) always becomes an encodable JSON string. */
static void check_lossy(const char *data, size_t size)
{
        char *s = strndup(data, size), *dumped, *line;
        json_t *j;

        CHECK(s);
        j = proto_string_lossy(s);
        CHECK(j);
        dumped = json_dumps(j, JSON_ENCODE_ANY);
        CHECK(dumped);
        free(dumped);
        json_decref(j);
        line = proto_format_error(s);
        CHECK(line);
        if (strlen(line) - 1 <= PROTO_MAX_LINE) /* control characters grow 6-fold */
                CHECK(proto_parse_response(line, strlen(line) - 1, &j, NULL) == -EREMOTEIO);
        free(line);
        free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        const char *line = (const char *)data;

        if (size > FUZZ_MAX_INPUT)
                return 0;
        if (size == 0)
                line = "";
        check_request(line, size);
        check_response(line, size);
        check_event(line, size);
        check_lossy(line, size);
        return 0;
}
