/* SPDX-License-Identifier: MIT */
/*
 * notify.h - telling the service manager how the daemon is doing (sd_notify): READY=1 once
 * the ledger is open, watches are set and workers are up; STATUS= lines; STOPPING=1. Does
 * nothing when not run by systemd (no NOTIFY_SOCKET).
 */
#pragma once

#include "macro.h"

void notify_ready(void);
void notify_stopping(void);
void notify_status(const char *fmt, ...) _printf_(1, 2);
