/* SPDX-License-Identifier: MIT */
/*
 * meminfo.c - memory pressure from /proc/meminfo; see meminfo.h.
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "daemon/meminfo.h"
#include "shared/fileio.h"
#include "shared/macro.h"

double meminfo_pressure_parse(const char *text)
{
        unsigned long long total = 0, avail = 0, v;

        /* MemTotal and MemAvailable are among the first lines: stop once both are seen. */
        for (const char *line = text; line && *line && (total == 0 || avail == 0);) {
                const char *nl = strchr(line, '\n');

                if (sscanf(line, "MemTotal: %llu kB", &v) == 1)
                        total = v;
                else if (sscanf(line, "MemAvailable: %llu kB", &v) == 1)
                        avail = v;
                line = nl ? nl + 1 : NULL;
        }
        return total > 0 && avail <= total ? 1.0 - (double)avail / (double)total : 0;
}

double meminfo_pressure_read(void)
{
        _cleanup_close_ int fd = open("/proc/meminfo", O_RDONLY | O_CLOEXEC | O_NOCTTY);
        char buf[4096];
        uint64_t off = 0;
        size_t n = 0;
        ssize_t k;

        if (fd < 0)
                return 0;
        while (n < sizeof buf - 1 &&
               (k = read_at_step(fd, buf + n, sizeof buf - 1 - n, &off, 0)) > 0)
                n += (size_t)k;
        buf[n] = '\0';
        return meminfo_pressure_parse(buf);
}
