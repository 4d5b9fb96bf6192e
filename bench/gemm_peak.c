/* The dense layer's GEMM rate against plain OpenBLAS, in one process.
 *
 *   gemm_peak THREADS SECONDS BATCH IN OUT [BATCH IN OUT ...]
 *
 * For each shape: times Kindling's dense layer forward + backward (with dx,
 * as for any layer but the first) through its kd_layer_ops, and the same
 * three cblas_sgemm calls alone (y = x W^T, dW = dy^T x, dx = dy W). Then a
 * square 2048^3 sgemm as the machine's practical peak. Prints one JSON
 * object per line with GFLOP/s counted as 2*m*n*k per GEMM.
 *
 * Built by bench/bench_cpu.py against libkindling.so (it uses the internal
 * layer table, so it needs src/ and src/layers/ on the include path). */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kindling.h"
#include "layer.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static float *filled(size_t n, unsigned seed)
{
    float *p = malloc(sizeof(float) * (n ? n : 1));
    if (!p) {
        fprintf(stderr, "gemm_peak: out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        p[i] = (float)((seed >> 9) & 0xffff) / 65536.0f - 0.5f;
    }
    return p;
}

/* Repeat fn until `seconds` have passed (after one warm-up call); returns
 * seconds per call. */
typedef void (*bench_fn)(void *ctx);
static double time_per_call(bench_fn fn, void *ctx, double seconds)
{
    fn(ctx);
    long calls = 0;
    double t0 = now(), t;
    do {
        fn(ctx);
        calls++;
        t = now();
    } while (t - t0 < seconds);
    return (t - t0) / (double)calls;
}

typedef struct dense_case {
    int batch, in, out;
    kd_layer L;
    kd_pass pass;
    float *x, *y, *dy, *dx;
} dense_case;

static void run_layer(void *ctx)
{
    dense_case *c = ctx;
    c->L.ops->forward(&c->L, &c->pass, c->x, c->y);
    c->L.ops->backward(&c->L, &c->pass, c->x, c->y, c->dy, c->dx);
}

static void run_sgemm(void *ctx)
{
    dense_case *c = ctx;
    int n = c->batch, in = c->in, out = c->out;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, out, in, 1.0f, c->x, in, c->pass.W, in,
                0.0f, c->y, out);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, n, 1.0f, c->dy, out, c->x, in,
                0.0f, c->pass.dW, in);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, in, out, 1.0f, c->dy, out, c->pass.W,
                in, 0.0f, c->dx, in);
}

typedef struct square_case {
    int n;
    float *a, *b, *c;
} square_case;

static void run_square(void *ctx)
{
    square_case *s = ctx;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s->n, s->n, s->n, 1.0f, s->a, s->n, s->b,
                s->n, 0.0f, s->c, s->n);
}

static int bench_dense(int batch, int in, int out, double seconds)
{
    dense_case c;
    memset(&c, 0, sizeof c);
    c.batch = batch;
    c.in = in;
    c.out = out;
    c.L.ops = kd_layer_ops_find("dense");
    if (!c.L.ops) {
        fprintf(stderr, "gemm_peak: no dense layer in the library\n");
        return 1;
    }
    c.L.in.rank = 1;
    c.L.in.dim[0] = in;
    cJSON *cfg = cJSON_CreateObject();
    cJSON_AddNumberToObject(cfg, "units", out);
    kd_status s = c.L.ops->setup(&c.L, cfg);
    cJSON_Delete(cfg);
    if (s != KD_OK) {
        fprintf(stderr, "gemm_peak: dense setup: %s\n", kd_last_error());
        return 1;
    }
    size_t saved = c.L.ops->saved_floats ? c.L.ops->saved_floats(&c.L, batch) : 0;
    size_t work = c.L.ops->work_floats ? c.L.ops->work_floats(&c.L, batch) : 0;
    float *W = filled(c.L.weight_count, 1), *B = filled(c.L.bias_count, 2);
    float *dW = filled(c.L.weight_count, 3), *dB = filled(c.L.bias_count, 4);
    float *sv = filled(saved, 5), *wk = filled(work, 6);
    c.x = filled((size_t)batch * in, 7);
    c.y = filled((size_t)batch * out, 8);
    c.dy = filled((size_t)batch * out, 9);
    c.dx = filled((size_t)batch * in, 10);
    c.pass.batch = batch;
    c.pass.training = 1;
    c.pass.W = W;
    c.pass.B = c.L.bias_count ? B : NULL;
    c.pass.dW = dW;
    c.pass.dB = c.L.bias_count ? dB : NULL;
    c.pass.saved = saved ? sv : NULL;
    c.pass.work = work ? wk : NULL;

    double flops = 3.0 * 2.0 * batch * (double)in * out;
    double t_layer = time_per_call(run_layer, &c, seconds);
    double t_gemm = time_per_call(run_sgemm, &c, seconds);
    printf("{\"kind\": \"dense\", \"batch\": %d, \"in\": %d, \"out\": %d, "
           "\"layer_gflops\": %.2f, \"sgemm_gflops\": %.2f}\n",
           batch, in, out, flops / t_layer * 1e-9, flops / t_gemm * 1e-9);
    free(W), free(B), free(dW), free(dB), free(sv), free(wk);
    free(c.x), free(c.y), free(c.dy), free(c.dx);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3 || (argc - 3) % 3 != 0) {
        fprintf(stderr, "usage: %s THREADS SECONDS [BATCH IN OUT]...\n", argv[0]);
        return 2;
    }
    kd_set_threads(atoi(argv[1]));
    double seconds = atof(argv[2]);
    for (int i = 3; i + 2 < argc; i += 3)
        if (bench_dense(atoi(argv[i]), atoi(argv[i + 1]), atoi(argv[i + 2]), seconds))
            return 1;
    square_case sq = {2048, NULL, NULL, NULL};
    size_t nn = (size_t)sq.n * sq.n;
    sq.a = filled(nn, 11), sq.b = filled(nn, 12), sq.c = filled(nn, 13);
    double t = time_per_call(run_square, &sq, seconds);
    printf("{\"kind\": \"square\", \"n\": %d, \"sgemm_gflops\": %.2f}\n", sq.n,
           2.0 * (double)nn * sq.n / t * 1e-9);
    free(sq.a), free(sq.b), free(sq.c);
    return 0;
}
