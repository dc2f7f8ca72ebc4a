#ifndef SWALLOW_CFUZZDRIVER_H
#define SWALLOW_CFUZZDRIVER_H
#include <stddef.h>
#include <stdint.h>

// libFuzzer's driver (compiler-rt, LLVM 11 and later), linked in by -sanitize=fuzzer. SwiftPM
// links an executable's `main` to `<Module>_main`, so each harness defines that and hands
// its callback to the driver instead of relying on libFuzzer's own `main`.
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));

#endif
