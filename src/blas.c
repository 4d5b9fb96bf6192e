/* OpenBLAS settings. Kindling's heavy work is OpenBLAS GEMM, so the thread
 * count is OpenBLAS's (a per-process setting of that library). */
#include <cblas.h>
#include <string.h>

#include "kindling.h"

/* Not declared in every cblas.h. */
char *openblas_get_corename(void);

void kd_set_threads(int n)
{
    if (n > 0)
        openblas_set_num_threads(n);
}

const char *kd_blas_corename(void) { return openblas_get_corename(); }

const char *kd_blas_better_coretype(void)
{
    /* A DYNAMIC_ARCH OpenBLAS that does not know a CPU model newer than
     * itself (Debian 12's 0.3.21 on Sapphire/Emerald Rapids, for one) falls
     * back to its generic Prescott kernels, several times slower. The
     * instruction sets say which kernel family is safe to ask for. */
    const char *core = openblas_get_corename();
    if (!core || (strcmp(core, "Prescott") != 0 && strcmp(core, "Core2") != 0 && strcmp(core, "Nehalem") != 0))
        return NULL;
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl"))
        return "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return "Haswell";
#endif
    return NULL;
}
