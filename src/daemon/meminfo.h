/* SPDX-License-Identifier: MIT */
/*
 * meminfo.h - memory pressure from /proc/meminfo: the share of memory that is not
 * available (1 - MemAvailable / MemTotal), an input of the health score. The parser is a
 * pure function of the file's text; the reader reads the file once per call.
 */
#pragma once

/*
 * The share of memory not available in `text` (the content of /proc/meminfo, "Name: value
 * kB" lines): 1 - MemAvailable / MemTotal, from the first line naming each. 0 when MemTotal
 * is missing or 0, or MemAvailable is over MemTotal; a missing MemAvailable counts as none
 * available (1: kernels before 3.14 do not have the line).
 */
double meminfo_pressure_parse(const char *text);

/* meminfo_pressure_parse() of /proc/meminfo (its first 4 KiB); 0 if it cannot be read. */
double meminfo_pressure_read(void);
