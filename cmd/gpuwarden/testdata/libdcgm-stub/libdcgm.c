/*
 * A stand-in libdcgm.so.4 for the end-to-end test of the real go-dcgm path:
 * Init and the embedded hostengine start, and DCGM sees no GPU. Only the
 * entry points that path calls are here, with DCGM's signatures (simplified
 * to the types' C ABI: a handle is an intptr_t, a return an int).
 */
#include <stdint.h>

int dcgmInit(void) { return 0; }
int dcgmShutdown(void) { return 0; }
int dcgmStartEmbedded(int opMode, intptr_t *handle) { *handle = 1; return 0; }
int dcgmStopEmbedded(intptr_t handle) { return 0; }
int dcgmGetAllSupportedDevices(intptr_t handle, unsigned int *ids, int *count) { *count = 0; return 0; }
const char *errorString(int result) { return result == 0 ? "Success" : "stub error"; }
