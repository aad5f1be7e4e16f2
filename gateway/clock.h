/* Millisecond clocks. */
#ifndef TIDEGATE_CLOCK_H
#define TIDEGATE_CLOCK_H

#include <stdint.h>

/* Milliseconds since the Unix epoch (wall clock, may jump). */
int64_t clock_realtime_ms(void);

/* Milliseconds on a monotonic clock, for timeouts and intervals. */
int64_t clock_monotonic_ms(void);

#endif
