/* SPDX-License-Identifier: MIT */
/*
 * test-log.c - the journal fields of job messages (log.h): imgd's own field names, one fixed
 * MESSAGE_ID= for each kind of job event, and CODE_FILE=/CODE_LINE=/CODE_FUNC= naming the
 * caller of log_job(), not log.c. (test-lifecycle's test_journal_fields receives the same
 * fields from the real daemon, playing journald.)
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shared/log.h"
#include "testutil.h"

/* Field i of f as a NUL-terminated string (a static buffer). */
static const char *field(const struct log_job_fields *f, size_t i)
{
        static char buf[8192];

        assert_true(i < f->n);
        snprintf(buf, sizeof buf, "%.*s", (int)f->iov[i].iov_len, (const char *)f->iov[i].iov_base);
        return buf;
}

/* The value of NAME= in f, or NULL; a static buffer. */
static const char *value_of(const struct log_job_fields *f, const char *name)
{
        size_t n = strlen(name);

        for (size_t i = 0; i < f->n; i++) {
                const char *s = field(f, i);

                if (strncmp(s, name, n) == 0 && s[n] == '=')
                        return s + n + 1;
        }
        return NULL;
}

static void assert_value(const struct log_job_fields *f, const char *name, const char *want)
{
        const char *v = value_of(f, name);

        if (!v || strcmp(v, want) != 0)
                fail_msg("%s=%s, expected %s", name, v ? v : "(missing)", want);
}

static void test_fields(void **state)
{
        const struct log_site site = { "/home/build/imgd/src/scheduler.c", 1021, "job_done" };
        struct log_job_fields f;
        int n;

        (void)state;
        n = log_job_fields(&f, LOG_INFO, "imgd", LOG_JOB_DONE, 42, "/srv/uploads/a.jpg", "avatar",
                           &site, "job 42 /srv/uploads/a.jpg: done");
        assert_int_equal(n, 11);
        assert_string_equal(field(&f, 0), "MESSAGE=job 42 /srv/uploads/a.jpg: done");
        assert_value(&f, "MESSAGE_ID", log_job_message_id(LOG_JOB_DONE));
        assert_value(&f, "PRIORITY", "6");
        assert_value(&f, "SYSLOG_IDENTIFIER", "imgd");
        assert_value(&f, "IMGD_EVENT", "done");
        assert_value(&f, "IMGD_JOB_ID", "42");
        assert_value(&f, "IMGD_SOURCE", "/srv/uploads/a.jpg");
        assert_value(&f, "IMGD_PIPELINE", "avatar");
        assert_value(&f, "CODE_FILE", "src/scheduler.c");
        assert_value(&f, "CODE_LINE", "1021");
        assert_value(&f, "CODE_FUNC", "job_done");
        /* journald's own names are not taken. */
        assert_null(value_of(&f, "JOB_ID"));
        assert_null(value_of(&f, "SOURCE"));

        /* Without a pipeline, no IMGD_PIPELINE=. */
        n = log_job_fields(&f, LOG_ERR, "imgd", LOG_JOB_DEAD, 7, NULL, NULL, &site, "x");
        assert_int_equal(n, 10);
        assert_null(value_of(&f, "IMGD_PIPELINE"));
        assert_value(&f, "IMGD_SOURCE", "");
        assert_value(&f, "PRIORITY", "3");

        assert_int_equal(
                log_job_fields(&f, LOG_INFO, "imgd", _LOG_JOB_EVENT_MAX, 1, NULL, NULL, &site, "x"),
                -EINVAL);
}

/* A message longer than the buffer is cut, and every field after it is still there. */
static void test_long_message(void **state)
{
        const struct log_site site = { "src/main.c", 1, "f" };
        struct log_job_fields f;
        char *msg = malloc(20000);

        (void)state;
        assert_non_null(msg);
        memset(msg, 'x', 19999);
        msg[19999] = '\0';
        assert_true(log_job_fields(&f, LOG_INFO, "imgd", LOG_JOB_QUEUED, 1, "/a", "p", &site, msg) >
                    0);
        for (size_t i = 0; i < f.n; i++)
                assert_true((char *)f.iov[i].iov_base + f.iov[i].iov_len <= f.buf + sizeof f.buf);
        assert_true(strncmp(field(&f, 0), "MESSAGE=xxx", 11) == 0);
        free(msg);
}

/* Each kind has its own well-formed id and name, for good. */
static void test_message_ids(void **state)
{
        (void)state;
        for (int i = 0; i < _LOG_JOB_EVENT_MAX; i++) {
                const char *id = log_job_message_id(i);

                assert_non_null(id);
                assert_non_null(log_job_event_name(i));
                assert_int_equal(strlen(id), 32);
                for (size_t k = 0; k < 32; k++)
                        assert_true(isxdigit((unsigned char)id[k]) &&
                                    !isupper((unsigned char)id[k]));
                for (int j = 0; j < i; j++) {
                        assert_string_not_equal(id, log_job_message_id(j));
                        assert_string_not_equal(log_job_event_name(i), log_job_event_name(j));
                }
        }
        /* Published ids do not change: journalctl queries and alerts depend on them. */
        assert_string_equal(log_job_message_id(LOG_JOB_DONE), "73e4f80e147c457693a399f5f03c80cf");
        assert_string_equal(log_job_message_id(LOG_JOB_DEAD), "233807dbbf69464690c61f4717262301");
        assert_null(log_job_message_id(_LOG_JOB_EVENT_MAX));
}

static void test_code_file(void **state)
{
        (void)state;
        assert_string_equal(log_code_file("/work/wt/x/src/scheduler.c"), "src/scheduler.c");
        assert_string_equal(log_code_file("/home/src/imgd/src/main.c"), "src/main.c");
        assert_string_equal(log_code_file("src/log.c"), "src/log.c");
        assert_string_equal(log_code_file("/b/include/imgd/log.h"), "include/imgd/log.h");
        assert_string_equal(log_code_file("/b/mysrc/x.c"), "/b/mysrc/x.c");
        assert_string_equal(log_code_file("x.c"), "x.c");
        /* As this build compiles it (-fmacro-prefix-map, or the path stripped). */
        assert_string_equal(log_code_file(__FILE__), "tests/unit/test-log.c");
        assert_string_equal(log_code_file("/w/imgd/src/daemon/scheduler.c"),
                            "src/daemon/scheduler.c");
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_fields),
                cmocka_unit_test(test_long_message),
                cmocka_unit_test(test_message_ids),
                cmocka_unit_test(test_code_file),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
