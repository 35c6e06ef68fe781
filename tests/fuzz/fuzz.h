/*
 * fuzz.h - the libFuzzer entry point of the codec fuzz target. Built with clang it links
 * against -fsanitize=fuzzer; built with gcc, fuzz_driver.c supplies main().
 */
#ifndef GW_FUZZ_H
#define GW_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
