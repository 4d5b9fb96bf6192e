/* Shared helpers of the GPU tests: skip (exit 77, which ctest reports as
 * skipped) when no CUDA device is usable, random data, and the GPU-vs-CPU
 * comparison at 1e-4 relative. */
#ifndef KD_GPU_TEST_H
#define KD_GPU_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "kindling.h"
#include "rng.h"

#define GPU_SKIP 77
#define GPU_RTOL 1e-4

/* Exit 77 with "SKIP: no CUDA device: <cudaGetErrorString>" without a device. */
static inline void gpu_require_device(void)
{
    int n = 0;
    if (kd_gpu_device_count(&n) != KD_OK) {
        printf("SKIP: %s\n", kd_last_error());
        fflush(stdout);
        exit(GPU_SKIP);
    }
}

static inline void fill_uniform(float *v, size_t n, float lo, float hi, uint64_t seed)
{
    kd_rng r;
    kd_rng_seed(&r, seed, 7);
    for (size_t i = 0; i < n; i++)
        v[i] = lo + (hi - lo) * (float)kd_rng_uniform(&r);
}

/* |g - c| <= rtol * max(|g|, |c|) + rtol * 0.1 * max|c| over the vector (so
 * entries near zero after cancellation are judged against the vector's scale).
 * Returns 1 when close; reports the worst entry otherwise. */
static inline int close_vec(const char *what, const float *gpu, const float *cpu, size_t n, double rtol)
{
    double scale = 0;
    for (size_t i = 0; i < n; i++)
        if (fabs(cpu[i]) > scale)
            scale = fabs(cpu[i]);
    size_t bad = 0, worst = 0;
    double worst_excess = 0;
    for (size_t i = 0; i < n; i++) {
        double a = gpu[i], b = cpu[i], tol = rtol * fmax(fabs(a), fabs(b)) + rtol * 0.1 * scale;
        double d = fabs(a - b);
        if (!(d <= tol)) {
            bad++;
            if (!(d - tol <= worst_excess)) {
                worst_excess = d - tol;
                worst = i;
            }
        }
    }
    CHECK(bad == 0, "%s: %zu of %zu values differ; worst [%zu] gpu %.9g cpu %.9g", what, bad, n, worst,
          (double)gpu[worst], (double)cpu[worst]);
    return bad == 0;
}

/* The same network twice from one spec and seed: one stays on the CPU, one
 * goes to GPU 0. */
static inline int make_pair(const char *spec, kd_net **cpu, kd_net **gpu)
{
    *cpu = *gpu = NULL;
    CHECK_OK(kd_net_create(spec, 1234, cpu));
    CHECK_OK(kd_net_create(spec, 1234, gpu));
    if (!*cpu || !*gpu)
        return 0;
    kd_context c = {KD_DEVICE_GPU, 0};
    kd_status s = kd_net_set_context(*gpu, c);
    CHECK(s == KD_OK, "moving '%s' to the GPU: %s", spec, kd_last_error());
    return s == KD_OK;
}

#endif
