/* Small deterministic RNG (splitmix64 seeding xoshiro256**). Passed
 * explicitly, never global, so runs are reproducible from a seed. */
#ifndef KD_RNG_H
#define KD_RNG_H

#include <stdint.h>

typedef struct kd_rng {
    uint64_t s[4];
} kd_rng;

/* Seed from any number of 64-bit words (seed, epoch, step, ...). */
void kd_rng_seed(kd_rng *r, uint64_t seed, uint64_t stream);
uint64_t kd_rng_next(kd_rng *r);
/* Uniform in [0, 1). */
double kd_rng_uniform(kd_rng *r);
/* Uniform integer in [0, n). */
uint64_t kd_rng_below(kd_rng *r, uint64_t n);
/* Standard normal (Box-Muller). */
double kd_rng_normal(kd_rng *r);
/* Fisher-Yates shuffle of idx[0..n). */
void kd_rng_shuffle(kd_rng *r, int64_t *idx, int64_t n);

#endif
