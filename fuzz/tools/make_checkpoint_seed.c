/* Writes the seed checkpoint for fuzz_checkpoint: a tiny network (one of
 * each tensor kind: dense weight and bias, batch-norm state), a momentum
 * optimizer (one state slot) and a two-epoch history, so the seed reaches
 * every group the loader reads. Usage: make_checkpoint_seed OUT */
#include <stdio.h>

#include "kindling.h"

static const char SPEC[] =
    "{\"input\": [3], \"layers\": ["
    "{\"type\": \"dense\", \"units\": 2}, {\"type\": \"batchnorm\"},"
    "{\"type\": \"softmax\"}]}";

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s OUT\n", argv[0]);
        return 2;
    }
    kd_net *net = NULL;
    kd_optim *opt = NULL;
    kd_train_state st;
    kd_train_state_init(&st);
    kd_optim_config cfg = kd_optim_config_default();
    cfg.kind = KD_OPT_MOMENTUM;
    kd_status s = kd_net_create(SPEC, 7, &net);
    if (s == KD_OK)
        s = kd_optim_create(&cfg, kd_net_param_count(net), &opt);
    for (int e = 1; s == KD_OK && e <= 2; e++) {
        kd_epoch_record rec = {e, 1.0 / e, 0.5, 1.1 / e, 0.4, 0.01, 0.001, 1.05 / e, 0.45};
        s = kd_train_state_append(&st, &rec);
    }
    st.epoch = 2;
    st.step = 6;
    st.seed = 42;
    st.batch_size = 4;
    if (s == KD_OK)
        s = kd_checkpoint_save(argv[1], net, opt, &st);
    if (s != KD_OK)
        fprintf(stderr, "%s\n", kd_last_error());
    kd_train_state_clear(&st);
    kd_optim_free(opt);
    kd_net_free(net);
    return s == KD_OK ? 0 : 1;
}
