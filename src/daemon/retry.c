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

usec_t retry_backoff_usec(const struct config_retry *r, unsigned attempt, double rnd)
{
        /* In milliseconds, the unit of the settings, so that the rounding stays where it was. */
        double delay_msec = (double)(r->base_delay_usec / USEC_PER_MSEC);
        double max_msec = (double)(r->max_delay_usec / USEC_PER_MSEC);

        for (unsigned i = 1; i < attempt && delay_msec < max_msec; i++)
                delay_msec *= 2;
        if (delay_msec > max_msec)
                delay_msec = max_msec;
        delay_msec *= 1.0 + r->jitter * (2.0 * rnd - 1.0);
        return delay_msec < 0 ? 0 : (usec_t)llround(delay_msec) * USEC_PER_MSEC;
}

double retry_random01(void)
{
        uint64_t x;

        if (getrandom(&x, sizeof x, GRND_NONBLOCK) != sizeof x)
                x = (uint64_t)wall_usec() * 6364136223846793005ULL;
        return (double)(x >> 11) / 9007199254740992.0;
}
