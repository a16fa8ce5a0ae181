/* SPDX-License-Identifier: MIT */
/*
 * notify.h - telling the service manager how the daemon is doing (sd_notify): READY=1 once
 * the ledger is open, watches are set and workers are up; STATUS= lines; STOPPING=1. Does
 * nothing when not run by systemd (no NOTIFY_SOCKET).
 */
#pragma once

#include <stdint.h>

#include "shared/macro.h"

void notify_ready(void);
void notify_reloading(void); /* RELOADING=1 with MONOTONIC_USEC= */
void notify_watchdog(void);
/* The watchdog interval systemd asked for (WatchdogSec=), 0 if none. */
uint64_t notify_watchdog_usec(void);
void notify_stopping(void);
void notify_status(const char *fmt, ...) _printf_(1, 2);
