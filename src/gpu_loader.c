/* Finding the CUDA backend. A build with gpu/ puts it in the shared module
 * libkindling_gpu.so, which links cuBLAS, cuDNN, NCCL and the CUDA runtime;
 * libkindling itself does not, so a CPU-only run never loads them (loading
 * cuBLAS alone costs ~0.25 s and ~200 MB at start-up, and its initialiser
 * dlopens the driver). The module is loaded on the first GPU request from,
 * in order: $KD_GPU_MODULE, the directory of the program or library holding
 * this code, the install libdir, the build directory. Without gpu/ there is
 * no backend and a GPU request fails with "Kindling was built without CUDA". */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"

#define KD_NO_CUDA_MSG "Kindling was built without CUDA (rebuild with the CUDA toolkit, cuBLAS and cuDNN installed to use a GPU)"

#ifdef KD_HAVE_CUDA

#define KD_GPU_MODULE_NAME "libkindling_gpu.so"

static const kd_backend *loaded;
static char load_error[1024];
static pthread_once_t load_once = PTHREAD_ONCE_INIT;

static void *try_open(const char *path, char *errors, size_t len)
{
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        size_t used = strlen(errors);
        if (used + 2 < len) /* truncated when long: the first reasons matter most */
            snprintf(errors + used, len - used, "%s%.300s", used ? "; " : "", e ? e : path);
    }
    return h;
}

static void load_module(void)
{
    char errors[sizeof load_error] = "", path[4096];
    void *h = NULL;
    const char *env = getenv("KD_GPU_MODULE");
    if (env && *env)
        h = try_open(env, errors, sizeof errors);
    Dl_info info;
    if (!h && dladdr((void *)&kd_cuda_backend, &info) && info.dli_fname) {
        const char *slash = strrchr(info.dli_fname, '/');
        if (slash) {
            snprintf(path, sizeof path, "%.*s/%s", (int)(slash - info.dli_fname), info.dli_fname, KD_GPU_MODULE_NAME);
            h = try_open(path, errors, sizeof errors);
        }
    }
    if (!h) { /* the running program's directory (dladdr names the main program poorly) */
        ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);
        if (n > 0) {
            path[n] = '\0';
            char *slash = strrchr(path, '/');
            if (slash && (size_t)(slash - path) + sizeof KD_GPU_MODULE_NAME + 1 < sizeof path) {
                strcpy(slash + 1, KD_GPU_MODULE_NAME);
                h = try_open(path, errors, sizeof errors);
            }
        }
    }
#ifdef KD_GPU_MODULE_INSTALLED
    if (!h)
        h = try_open(KD_GPU_MODULE_INSTALLED, errors, sizeof errors);
#endif
#ifdef KD_GPU_MODULE_BUILT
    if (!h)
        h = try_open(KD_GPU_MODULE_BUILT, errors, sizeof errors);
#endif
    if (!h) {
        snprintf(load_error, sizeof load_error, "cannot load the CUDA backend (%s): %.900s", KD_GPU_MODULE_NAME, errors);
        return;
    }
    const kd_backend *(*entry)(const kd_host_api *) =
        (const kd_backend *(*)(const kd_host_api *))dlsym(h, "kd_cuda_backend_module");
    if (!entry) {
        snprintf(load_error, sizeof load_error, "%s has no kd_cuda_backend_module", KD_GPU_MODULE_NAME);
        return;
    }
    static const kd_host_api host = {kd_fail,         kd_fail_context,  kd_calloc,         kd_optim_get_config,
                                     kd_optim_steps,  kd_optim_set_steps, kd_optim_state, kd_optim_current_lr,
                                     kd_shape_size};
    loaded = entry(&host); /* the module stays loaded for the life of the process */
}

const kd_backend *kd_cuda_backend(const char **why)
{
    pthread_once(&load_once, load_module);
    if (why)
        *why = loaded ? NULL : load_error;
    return loaded;
}

int kd_cuda_backend_built(void) { return 1; }

#else

const kd_backend *kd_cuda_backend(const char **why)
{
    if (why)
        *why = KD_NO_CUDA_MSG;
    return NULL;
}

int kd_cuda_backend_built(void) { return 0; }

#endif
