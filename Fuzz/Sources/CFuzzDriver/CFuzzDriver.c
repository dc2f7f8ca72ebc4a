// The declaration lives in include/CFuzzDriver.h; libFuzzer provides the definition.
