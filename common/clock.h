/*
 * clock: the monotonic clock every timeout, deadline and speed figure is
 * measured with.
 */
#ifndef MC_CLOCK_H
#define MC_CLOCK_H

#include <stdint.h>
#include <time.h>

// Milliseconds (fractional) since an arbitrary start.
static inline double mc_clock_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

// Seconds (fractional) since an arbitrary start.
static inline double mc_clock_s(void) { return mc_clock_ms() * 1e-3; }

// Whole microseconds since an arbitrary start.
static inline uint64_t mc_clock_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

#endif
