/* Fuzzes kd_checkpoint_load on raw bytes (an HDF5 file, mutated).
 *
 * Beyond "no crash", it checks that the loader closes every HDF5 object it
 * opened, on success and on every error path: a leaked identifier would
 * keep the file open inside HDF5 for the life of the process. */
#include "fuzz_common.h"

#include <hdf5.h>

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    /* Nobody else opens the harness's private temporary files. */
    setenv("HDF5_USE_FILE_LOCKING", "FALSE", 1);
    H5open();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_file f;
    fuzz_file_open_disk(&f, data, size);

    kd_net *net = NULL;
    kd_optim *opt = NULL;
    kd_train_state st;
    kd_clear_error();
    kd_status s = kd_checkpoint_load(f.path, &net, &opt, &st);
    fuzz_check_error(s);
    if (s == KD_OK) {
        if (!net)
            abort();
        if (opt && kd_optim_param_count(opt) != kd_net_param_count(net))
            abort();
        if (st.history_len < 0 || (st.history_len > 0 && !st.history))
            abort();
        /* Touch the loaded tensors so ASan sees their true extent. */
        volatile float sink = 0.0f;
        const float *p = kd_net_params(net);
        for (size_t i = 0; i < kd_net_param_count(net); i++)
            sink += p[i];
        (void)sink;
        kd_train_state_clear(&st);
    } else if (net || opt) {
        abort(); /* a failed load must leave the outputs empty */
    }
    kd_net_free(net);
    kd_optim_free(opt);

    ssize_t open_objects = H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL);
    if (open_objects != 0) {
        fprintf(stderr, "kd_checkpoint_load left %zd HDF5 objects open (status %s: %s)\n",
                open_objects, kd_status_name(s), kd_last_error());
        abort();
    }
    fuzz_file_close(&f);
    return 0;
}
