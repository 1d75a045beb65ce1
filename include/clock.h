/* clock.h -- the one monotonic clock every deadline, backoff and duration is measured with.
 * Must not: depend on anything of ours; pure helpers. */
#ifndef CSPDNS_CLOCK_H
#define CSPDNS_CLOCK_H

/* Milliseconds of CLOCK_MONOTONIC: only differences mean anything (never wall time). */
long long clock_ms(void);

#endif
