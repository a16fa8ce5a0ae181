/* SPDX-License-Identifier: MIT */
/*
 * fault.c - fault injection points for test builds; see fault.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "shared/fault.h"
#include "shared/time-util.h"

#ifdef IMGD_FAULT_INJECTION
static bool listed(const char *var, const char *name)
{
        const char *list = getenv(var);
        size_t n = strlen(name);

        for (const char *p = list; p && *p;) {
                const char *end = strchr(p, ',');
                size_t len = end ? (size_t)(end - p) : strlen(p);

                if (len == n && strncmp(p, name, n) == 0)
                        return true;
                p = end ? end + 1 : NULL;
        }
        return false;
}

/* With $IMGD_FAULT_ONCE naming a file, only the first process to create it faults. */
static bool first_time(void)
{
        const char *once = getenv("IMGD_FAULT_ONCE");
        int fd;

        if (!once || !*once)
                return true;
        fd = open(once, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0)
                return false;
        close(fd);
        return true;
}

void fault_point(const char *name)
{
        if (listed("IMGD_FAULT", name) && first_time())
                _exit(FAULT_EXIT_STATUS);
}

bool fault_skip(const char *name)
{
        return listed("IMGD_FAULT_SKIP", name);
}

void fault_delay(const char *name)
{
        const char *ms = getenv("IMGD_FAULT_DELAY_MS");
        long n = ms && *ms ? strtol(ms, NULL, 10) : 1000;
        struct timespec left = { .tv_sec = n / (long)MSEC_PER_SEC,
                                 .tv_nsec = (n % (long)MSEC_PER_SEC) * (long)NSEC_PER_MSEC };

        if (!listed("IMGD_FAULT_DELAY", name) || n <= 0 || !first_time())
                return;
        while (nanosleep(&left, &left) < 0 && errno == EINTR)
                ;
}
#endif
