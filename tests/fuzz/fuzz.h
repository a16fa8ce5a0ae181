/* SPDX-License-Identifier: MIT */
/*
 * fuzz.h - the libFuzzer entry point every harness under tests/fuzz/ defines. Built with
 * clang, a harness links libFuzzer (-fsanitize=fuzzer); with any compiler, fuzz-main.c drives
 * it over a seed corpus so that ctest exercises it.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* The largest input a harness looks at; longer inputs are skipped. */
#define FUZZ_MAX_INPUT (64 * 1024)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
