/* SPDX-License-Identifier: MIT */
/*
 * test-proto.c - the control protocol codec: requests and responses survive a round trip,
 * every malformed request is refused with the right error and a message that says why, and
 * responses are told apart from errors and from garbage.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "shared/macro.h"
#include "shared/proto.h"

/* Parses a request that must be refused with `error`; checks the message mentions `what`. */
static void assert_request_refused(const char *line, size_t n, int error, const char *what)
{
        _cleanup_free_ char *message = NULL;
        json_t *req = (json_t *)0x1;
        const char *cmd = (const char *)0x1;

        assert_int_equal(proto_parse_request(line, n, &req, &cmd, &message), error);
        /* Out-parameters are left alone on failure. */
        assert_ptr_equal(req, (json_t *)0x1);
        assert_ptr_equal(cmd, (const char *)0x1);
        assert_non_null(message);
        if (!strstr(message, what))
                fail_msg("message \"%s\" does not mention \"%s\"", message, what);
}

static void assert_request_refused_str(const char *line, int error, const char *what)
{
        assert_request_refused(line, strlen(line), error, what);
}

/* Strips the newline a formatted line must end with, checking there is exactly one. */
static size_t line_length(const char *line)
{
        size_t n = strlen(line);

        assert_true(n > 0);
        assert_int_equal(line[n - 1], '\n');
        assert_null(memchr(line, '\n', n - 1));
        return n - 1;
}

static void test_request_round_trip(void **state)
{
        _cleanup_free_ char *line = NULL, *error = NULL;
        json_t *req, *parsed = NULL;
        const char *cmd = NULL;

        (void)state;
        req = proto_request_new("jobs");
        assert_non_null(req);
        assert_int_equal(json_object_set_new(req, "state", json_string("dead")), 0);
        assert_int_equal(json_object_set_new(req, "limit", json_integer(10)), 0);

        line = proto_format_request(req);
        assert_non_null(line);
        assert_int_equal(proto_parse_request(line, line_length(line), &parsed, &cmd, &error), 0);
        assert_null(error);
        assert_string_equal(cmd, "jobs");
        assert_true(json_equal(req, parsed));
        assert_int_equal(json_integer_value(json_object_get(parsed, "v")), PROTO_VERSION);
        assert_string_equal(json_string_value(json_object_get(parsed, "state")), "dead");

        json_decref(req);
        json_decref(parsed);
}

static void test_request_accepts_spacing(void **state)
{
        const char *line = "  { \"cmd\" : \"ping\" , \"v\" : 1 }  ";
        json_t *req = NULL;
        const char *cmd = NULL;

        (void)state;
        assert_int_equal(proto_parse_request(line, strlen(line), &req, &cmd, NULL), 0);
        assert_string_equal(cmd, "ping");
        json_decref(req);
}

static void test_request_bad_json(void **state)
{
        (void)state;
        assert_request_refused_str("{\"v\":1,\"cmd\":\"ping\"", -EBADMSG, "not valid JSON");
        assert_request_refused_str("ping", -EBADMSG, "not valid JSON");
        assert_request_refused_str("", -EBADMSG, "request is empty");
        assert_request_refused_str("   ", -EBADMSG, "not valid JSON");
        assert_request_refused_str("{\"v\":1,\"cmd\":\"ping\"} {}", -EBADMSG, "not valid JSON");
        assert_request_refused_str("{\"v\":1,\"cmd\":\"ping\",\"cmd\":\"status\"}", -EBADMSG,
                                   "not valid JSON");
        /* Invalid UTF-8 inside a string. */
        assert_request_refused_str("{\"v\":1,\"cmd\":\"p\xffng\"}", -EBADMSG, "not valid JSON");
}

static void test_request_not_object(void **state)
{
        (void)state;
        assert_request_refused_str("[1,2]", -EBADMSG, "not a JSON object");
        assert_request_refused_str("\"ping\"", -EBADMSG, "not a JSON object");
        assert_request_refused_str("42", -EBADMSG, "not a JSON object");
        assert_request_refused_str("null", -EBADMSG, "not a JSON object");
}

static void test_request_missing_cmd(void **state)
{
        (void)state;
        assert_request_refused_str("{\"v\":1}", -EBADMSG, "\"cmd\"");
        assert_request_refused_str("{\"v\":1,\"cmd\":42}", -EBADMSG, "\"cmd\"");
        assert_request_refused_str("{\"v\":1,\"cmd\":\"\"}", -EBADMSG, "\"cmd\"");
        assert_request_refused_str("{\"v\":1,\"cmd\":null}", -EBADMSG, "\"cmd\"");
        /* An escaped NUL inside the command is refused by the decoder. */
        assert_request_refused_str("{\"v\":1,\"cmd\":\"pi\\u0000ng\"}", -EBADMSG, "JSON");
}

static void test_request_wrong_version(void **state)
{
        (void)state;
        assert_request_refused_str("{\"v\":2,\"cmd\":\"ping\"}", -EPROTONOSUPPORT,
                                   "unsupported protocol version 2 (this imgd speaks 1)");
        assert_request_refused_str("{\"v\":0,\"cmd\":\"ping\"}", -EPROTONOSUPPORT,
                                   "unsupported protocol version 0 (this imgd speaks 1)");
        assert_request_refused_str("{\"v\":\"1\",\"cmd\":\"ping\"}", -EPROTONOSUPPORT,
                                   "unsupported protocol version \"1\"");
        assert_request_refused_str("{\"v\":1.0,\"cmd\":\"ping\"}", -EPROTONOSUPPORT,
                                   "unsupported protocol version");
        assert_request_refused_str("{\"cmd\":\"ping\"}", -EPROTONOSUPPORT,
                                   "unsupported protocol version");
        /* The version is checked before anything else about the request. */
        assert_request_refused_str("{\"v\":7}", -EPROTONOSUPPORT, "this imgd speaks 1");
}

static void test_request_too_long(void **state)
{
        size_t n = PROTO_MAX_LINE + 1;
        _cleanup_free_ char *line = malloc(n);
        const char *head = "{\"v\":1,\"cmd\":\"ping\",\"pad\":\"";
        json_t *req = NULL;
        const char *cmd = NULL;

        (void)state;
        assert_non_null(line);
        memset(line, 'a', n);
        memcpy(line, head, strlen(head));
        memcpy(line + n - 2, "\"}", 2);
        assert_request_refused(line, n, -EBADMSG, "too long");

        /* One byte shorter is fine. */
        memcpy(line + n - 3, "\"}", 2);
        assert_int_equal(proto_parse_request(line, n - 1, &req, &cmd, NULL), 0);
        assert_string_equal(cmd, "ping");
        json_decref(req);
}

static void test_request_embedded_nul(void **state)
{
        static const char line[] = "{\"v\":1,\"cmd\":\"ping\"}\0{\"v\":1,\"cmd\":\"status\"}";

        (void)state;
        assert_request_refused(line, sizeof line - 1, -EBADMSG, "NUL");
        /* Even right at the end. */
        assert_request_refused("{\"v\":1,\"cmd\":\"ping\"}", 21, -EBADMSG, "NUL");
}

static void test_ok_round_trip(void **state)
{
        _cleanup_free_ char *line = NULL, *error = NULL;
        json_t *result, *parsed = NULL, *again;

        (void)state;
        result = json_pack("{s:b, s:[i,i], s:s}", "pong", 1, "list", 1, 2, "name", "caf\xc3\xa9");
        assert_non_null(result);
        line = proto_format_ok(result);
        assert_non_null(line);
        /* Compact: no spaces in the encoding. */
        assert_null(strstr(line, ": "));
        assert_int_equal(proto_parse_response(line, line_length(line), &parsed, &error), 0);
        assert_null(error);
        assert_true(json_equal(result, parsed));
        /* The result was borrowed: neither consumed nor kept. */
        assert_int_equal(result->refcount, 1);
        json_decref(parsed);
        json_decref(result);

        /* NULL result: an empty object. */
        free(line);
        line = proto_format_ok(NULL);
        assert_non_null(line);
        assert_int_equal(proto_parse_response(line, line_length(line), &again, NULL), 0);
        assert_true(json_is_object(again));
        assert_int_equal(json_object_size(again), 0);
        json_decref(again);
}

static void test_error_round_trip(void **state)
{
        _cleanup_free_ char *line = NULL, *error = NULL;
        json_t *result = (json_t *)0x1;

        (void)state;
        line = proto_format_error("no job 42");
        assert_non_null(line);
        assert_string_equal(line, "{\"v\":1,\"ok\":false,\"error\":\"no job 42\"}\n");
        assert_int_equal(proto_parse_response(line, line_length(line), &result, &error),
                         -EREMOTEIO);
        assert_ptr_equal(result, (json_t *)0x1);
        assert_string_equal(error, "no job 42");
}

static void test_error_with_invalid_utf8(void **state)
{
        _cleanup_free_ char *line = NULL, *error = NULL;
        json_t *result = NULL;

        (void)state;
        /* A file name that is not UTF-8 still makes a valid answer. */
        line = proto_format_error("cannot open /up/caf\xe9.jpg");
        assert_non_null(line);
        assert_int_equal(proto_parse_response(line, line_length(line), &result, &error),
                         -EREMOTEIO);
        assert_string_equal(error, "cannot open /up/caf\xef\xbf\xbd.jpg");
}

static void test_string_lossy(void **state)
{
        static const struct {
                const char *in, *out;
        } cases[] = {
                { "", "" },
                { "plain", "plain" },
                { "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80",
                  "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80" },
                { "a\xffz", "a\xef\xbf\xbdz" },
                { "\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd" },                 /* overlong '/' */
                { "\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd" }, /* surrogate */
                { "\xf4\x90\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd" },
                { "end\xe2\x82", "end\xef\xbf\xbd\xef\xbf\xbd" }, /* truncated at the end */
        };

        (void)state;
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                json_t *s = proto_string_lossy(cases[i].in);

                assert_non_null(s);
                assert_string_equal(json_string_value(s), cases[i].out);
                json_decref(s);
        }
}

static void assert_response_garbage(const char *line, const char *what)
{
        _cleanup_free_ char *error = NULL;
        json_t *result = (json_t *)0x1;

        assert_int_equal(proto_parse_response(line, strlen(line), &result, &error), -EBADMSG);
        assert_ptr_equal(result, (json_t *)0x1);
        assert_non_null(error);
        if (!strstr(error, what))
                fail_msg("message \"%s\" does not mention \"%s\"", error, what);
}

static void test_response_garbage(void **state)
{
        (void)state;
        assert_response_garbage("", "response is empty");
        assert_response_garbage("hello", "not valid JSON");
        assert_response_garbage("[true]", "not a JSON object");
        assert_response_garbage("{\"ok\":true,\"result\":{}}", "protocol version");
        assert_response_garbage("{\"v\":2,\"ok\":true,\"result\":{}}", "protocol version 2");
        assert_response_garbage("{\"v\":1,\"result\":{}}", "\"ok\"");
        assert_response_garbage("{\"v\":1,\"ok\":\"yes\",\"result\":{}}", "\"ok\"");
        assert_response_garbage("{\"v\":1,\"ok\":true}", "\"result\"");
        assert_response_garbage("{\"v\":1,\"ok\":false}", "\"error\"");
        assert_response_garbage("{\"v\":1,\"ok\":false,\"error\":7}", "\"error\"");
}

static void test_response_too_long_or_nul(void **state)
{
        size_t n = PROTO_MAX_LINE + 1;
        _cleanup_free_ char *line = malloc(n);
        json_t *result = NULL;

        (void)state;
        assert_non_null(line);
        memset(line, ' ', n);
        memcpy(line, "{\"v\":1,\"ok\":true,\"result\":{}}", 29);
        assert_int_equal(proto_parse_response(line, n, &result, NULL), -EBADMSG);
        assert_int_equal(proto_parse_response(line, n - 1, &result, NULL), 0);
        json_decref(result);
        assert_int_equal(
                proto_parse_response("{\"v\":1,\"ok\":true,\"result\":{}}\0", 30, &result, NULL),
                -EBADMSG);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_request_round_trip),
                cmocka_unit_test(test_request_accepts_spacing),
                cmocka_unit_test(test_request_bad_json),
                cmocka_unit_test(test_request_not_object),
                cmocka_unit_test(test_request_missing_cmd),
                cmocka_unit_test(test_request_wrong_version),
                cmocka_unit_test(test_request_too_long),
                cmocka_unit_test(test_request_embedded_nul),
                cmocka_unit_test(test_ok_round_trip),
                cmocka_unit_test(test_error_round_trip),
                cmocka_unit_test(test_error_with_invalid_utf8),
                cmocka_unit_test(test_string_lossy),
                cmocka_unit_test(test_response_garbage),
                cmocka_unit_test(test_response_too_long_or_nul),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
