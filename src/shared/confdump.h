/* SPDX-License-Identifier: MIT */
/*
 * confdump.h - writes a loaded configuration back as libconfig text (imgd --dump-config):
 * every setting config-schema.c declares, with its default filled in where the file left it
 * out, in the structure of etc/imgd.conf and in the file's units (seconds, milliseconds, MiB,
 * days). config_load() of the text gives a configuration whose dump is the same text. A setting
 * whose "not set" cannot be written as a value (quarantine, hooks, control_group, max_bytes,
 * a watermark) is written as a comment saying so.
 *
 * The settings are walked from tables of (name, kind, offset) entries, one per struct.
 */
#pragma once

#include <stdio.h>

#include "shared/config.h"

/* Writes c to f. Returns 0, or -EIO when f reports a write error. */
int config_dump(const struct config *c, FILE *f);
