/* SPDX-License-Identifier: MIT */
/*
 * retry.c - the retry and block policy of failed jobs; see retry.h.
 */
#include <errno.h>
#include <math.h>
#include <sys/random.h>

#include "daemon/retry.h"
#include "shared/macro.h"
#include "shared/time-util.h"

bool retry_environmental(int r)
{
        switch (-r) {
        case ENOSPC:
        case EDQUOT:
        case EROFS:
        case EACCES:
        case EPERM:
        case EIO:
        case EMFILE:
        case ENFILE:
                return true;
        default:
                return false;
        }
}

enum retry_class retry_classify(int r, bool permanent)
{
        if (permanent)
                return RETRY_CLASS_PERMANENT;
        if (r < 0 && retry_environmental(r))
                return RETRY_CLASS_BLOCKED;
        return RETRY_CLASS_TRANSIENT;
}

enum retry_decision retry_decide(const struct config_retry *r, unsigned attempts, bool permanent)
{
        if (permanent)
                return RETRY_DEAD_PERMANENT;
        if (attempts < r->max_attempts)
                return RETRY_AGAIN;
        return RETRY_DEAD_EXHAUSTED;
}

int64_t retry_backoff_ms(const struct config_retry *r, unsigned attempt, double rnd)
{
        double delay = r->base_delay_ms;

        for (unsigned i = 1; i < attempt && delay < r->max_delay_ms; i++)
                delay *= 2;
        if (delay > r->max_delay_ms)
                delay = r->max_delay_ms;
        delay *= 1.0 + r->jitter * (2.0 * rnd - 1.0);
        return delay < 0 ? 0 : (int64_t)llround(delay);
}

double retry_random01(void)
{
        uint64_t x;

        if (getrandom(&x, sizeof x, GRND_NONBLOCK) != sizeof x)
                x = (uint64_t)wall_usec() * 6364136223846793005ULL;
        return (double)(x >> 11) / 9007199254740992.0;
}
