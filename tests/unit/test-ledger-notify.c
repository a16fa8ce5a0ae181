/* SPDX-License-Identifier: MIT */
/*
 * test-ledger-notify.c - LISTEN/NOTIFY on the ledger's connection (ledger-notify.c, issue 18),
 * with a second ledger on the same database as the listening node: an enqueue, a retry
 * scheduled and a job handed back each notify the jobs channel when they commit (a claim, a
 * completion and a transition refused do not; a group commit notifies once), events of one
 * node reach the other with their payload (up to the limit; larger ones are refused), a node
 * knows its own notifications, and a listener whose connection was killed listens again on its
 * next connection. On SQLite (one node) there is no channel: -EOPNOTSUPP.
 */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "daemon/ledger.h"
#include "shared/macro.h"

#include "ledger-fixture.h"

/* What a listener received. */
struct heard {
        unsigned jobs, events, own;
        char payload[8192];
};

static void on_note(enum ledger_channel c, const char *payload, bool own, void *userdata)
{
        struct heard *h = userdata;

        if (c == LEDGER_CHANNEL_JOBS)
                h->jobs++;
        else {
                h->events++;
                snprintf(h->payload, sizeof h->payload, "%s", payload);
        }
        h->own += own;
}

static int64_t now_us(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void ledger_freep_(ledger **l)
{
        ledger_free(*l);
}

/* Reads what l heard within timeout_ms (all of it: waits that long when nothing comes). */
static struct heard listen_for(ledger *l, int timeout_ms)
{
        struct heard h = {};
        int64_t deadline = now_us() + (int64_t)timeout_ms * 1000;

        for (;;) {
                int fd = ledger_notify_fd(l, NULL);
                struct pollfd p = { .fd = fd, .events = POLLIN };
                int64_t left = deadline - now_us();

                assert_true(fd >= 0);
                if (left <= 0)
                        break;
                (void)poll(&p, 1, (int)(left / 1000) + 1);
                assert_true(ledger_notifications(l, on_note, &h) >= 0);
        }
        return h;
}

static ledger *open_listener(struct ledfx *f)
{
        ledger *l = NULL;
        _cleanup_free_ char *err = NULL;
        struct ledger_params p = { .engine = LEDGER_ENGINE_POSTGRESQL, .conninfo = f->conninfo };

        assert_int_equal(ledger_open_params(&p, &l, &err), 0);
        assert_int_equal(ledger_listen(l, LEDGER_CHANNEL_JOBS), 0);
        assert_int_equal(ledger_listen(l, LEDGER_CHANNEL_EVENTS), 0);
        return l;
}

static void test_sqlite_has_no_channel(void **state)
{
        struct ledfx *f = *state;
        const char *p = "{}";

        if (f->engine != LEDGER_ENGINE_SQLITE)
                skip();
        assert_int_equal(ledger_listen(f->l, LEDGER_CHANNEL_JOBS), -EOPNOTSUPP);
        assert_int_equal(ledger_notify_fd(f->l, NULL), -EOPNOTSUPP);
        assert_int_equal(ledger_notify(f->l, LEDGER_CHANNEL_EVENTS, &p, 1), -EOPNOTSUPP);
        /* And the transitions that notify on PostgreSQL work as ever. */
        ledfx_enqueue(f->l, "/srv/uploads/a.jpg", "/srv/media/a", 1, 100);
}

static void test_claimable_work_notifies(void **state)
{
        struct ledfx *f = *state;
        _cleanup_(ledger_freep_) ledger *other = NULL;
        struct heard h;
        int64_t a, b, fa, fb;

        if (f->engine != LEDGER_ENGINE_POSTGRESQL)
                skip();
        other = open_listener(f);

        a = ledfx_enqueue(f->l, "/srv/uploads/a.jpg", "/srv/media/a", 1, 100);
        h = listen_for(other, 300);
        assert_int_equal(h.jobs, 1);
        assert_int_equal(h.own, 0);

        /* The same content again (no new job), a claim: nothing claimable came. */
        {
                struct source_info src = ledfx_src_make("/srv/uploads/a.jpg", "/srv/media/a", 1);

                assert_int_equal(ledger_enqueue(f->l, &src, 150, &b), 0);
        }
        a = ledfx_claim(f->l, 200);
        fa = ledfx_fence_of(f->l, a);
        h = listen_for(other, 300);
        assert_int_equal(h.jobs, 0);

        /* A retry scheduled and a job handed back do. */
        assert_int_equal(ledger_fail(f->l, a, fa, "boom", true, 300, 250), 0);
        h = listen_for(other, 300);
        assert_int_equal(h.jobs, 1);
        b = ledfx_enqueue(f->l, "/srv/uploads/b.jpg", "/srv/media/b", 2, 260);
        (void)listen_for(other, 100);
        a = ledfx_claim(f->l, 400);
        fa = ledfx_fence_of(f->l, a);
        b = ledfx_claim(f->l, 400);
        fb = ledfx_fence_of(f->l, b);
        assert_int_equal(ledger_release(f->l, a, fa, 500, 450), 0);
        h = listen_for(other, 300);
        assert_int_equal(h.jobs, 1);

        /* A completion does not; a transition refused (a stale token) notifies nothing. */
        assert_int_equal(ledger_complete(f->l, b, fb, NULL, 0, 600), 0);
        assert_int_equal(ledger_release(f->l, b, fb, 700, 650), -ESTALE);
        h = listen_for(other, 300);
        assert_int_equal(h.jobs, 0);

        /* A group commit of three enqueues notifies once, at its commit. */
        assert_int_equal(ledger_batch_begin(f->l), 0);
        ledfx_enqueue(f->l, "/srv/uploads/c.jpg", "/srv/media/c", 3, 700);
        ledfx_enqueue(f->l, "/srv/uploads/d.jpg", "/srv/media/d", 4, 700);
        ledfx_enqueue(f->l, "/srv/uploads/e.jpg", "/srv/media/e", 5, 700);
        h = listen_for(other, 200);
        assert_int_equal(h.jobs, 0);
        assert_int_equal(ledger_batch_commit(f->l), 0);
        h = listen_for(other, 300);
        assert_int_equal(h.jobs, 1);
}

static void test_events_and_own(void **state)
{
        struct ledfx *f = *state;
        _cleanup_(ledger_freep_) ledger *other = NULL;
        _cleanup_free_ char *big = NULL;
        const char *p[2];
        struct heard h;

        if (f->engine != LEDGER_ENGINE_POSTGRESQL)
                skip();
        other = open_listener(f);

        p[0] = "{\"event\":\"done\",\"job\":{\"id\":1,\"source\":\"/srv/it's \\\"x\\\".jpg\"}}";
        assert_int_equal(ledger_notify(f->l, LEDGER_CHANNEL_EVENTS, p, 1), 0);
        h = listen_for(other, 300);
        assert_int_equal(h.events, 1);
        assert_string_equal(h.payload, p[0]);

        /* The largest payload goes, in one round trip with another; one larger is refused. */
        big = malloc(LEDGER_NOTIFY_PAYLOAD_MAX + 2);
        memset(big, 'x', LEDGER_NOTIFY_PAYLOAD_MAX);
        big[LEDGER_NOTIFY_PAYLOAD_MAX] = '\0';
        p[1] = big;
        assert_int_equal(ledger_notify(f->l, LEDGER_CHANNEL_EVENTS, p, 2), 0);
        h = listen_for(other, 300);
        assert_int_equal(h.events, 2);
        assert_int_equal(strlen(h.payload), LEDGER_NOTIFY_PAYLOAD_MAX);
        big[LEDGER_NOTIFY_PAYLOAD_MAX] = 'x';
        big[LEDGER_NOTIFY_PAYLOAD_MAX + 1] = '\0';
        assert_int_equal(ledger_notify(f->l, LEDGER_CHANNEL_EVENTS, p + 1, 1), -E2BIG);
        h = listen_for(other, 200);
        assert_int_equal(h.events, 0);

        /* A listener hears its own notifications, and knows them. */
        assert_int_equal(ledger_notify(other, LEDGER_CHANNEL_EVENTS, p, 1), 0);
        ledfx_enqueue(other, "/srv/uploads/o.jpg", "/srv/media/o", 9, 100);
        h = listen_for(other, 300);
        assert_int_equal(h.events, 1);
        assert_int_equal(h.jobs, 1);
        assert_int_equal(h.own, 2);
}

static void test_listen_again_after_reconnect(void **state)
{
        struct ledfx *f = *state;
        _cleanup_(ledger_freep_) ledger *other = NULL;
        uint64_t gen0 = 0, gen1 = 0;
        struct heard h = {};
        uint64_t counts[_JOB_STATE_MAX];
        int r;

        if (f->engine != LEDGER_ENGINE_POSTGRESQL)
                skip();
        other = open_listener(f);
        assert_true(ledger_notify_fd(other, &gen0) >= 0);

        /* The server ends the listener's session (a failover, a restart). */
        ledfx_raw_exec(f, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE query LIKE 'LISTEN %'");
        for (int i = 0; i < 50 && (r = ledger_notifications(other, on_note, &h)) >= 0; i++)
                usleep(50 * 1000);
        assert_int_equal(r, -ENOTCONN);
        assert_int_equal(ledger_notify_fd(other, NULL), -ENOTCONN);

        /* Its next transaction connects again, and listens again. */
        assert_int_equal(ledger_counts(other, counts), 0);
        assert_true(ledger_notify_fd(other, &gen1) >= 0);
        assert_true(gen1 != gen0);
        ledfx_enqueue(f->l, "/srv/uploads/a.jpg", "/srv/media/a", 1, 100);
        h = listen_for(other, 300);
        assert_int_equal(h.jobs, 1);
}

int main(void)
{
#define T(t) cmocka_unit_test_setup_teardown(t, ledfx_setup, ledfx_teardown)
        const struct CMUnitTest tests[] = {
                T(test_sqlite_has_no_channel),
                T(test_claimable_work_notifies),
                T(test_events_and_own),
                T(test_listen_again_after_reconnect),
        };
#undef T

        umask(022);
        return ledfx_run("ledger-notify", tests, ELEMENTSOF(tests), NULL, 0);
}
