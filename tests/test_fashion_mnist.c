/* Accuracy on the real Fashion-MNIST test set (Debian's
 * dataset-fashion-mnist): MLP >= 0.88 within 5 epochs, LeNet >= 0.90.
 * KD_FASHION_MNIST_DIR overrides the data directory. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "fashion_data.h"
#include "kindling.h"

#define LENET_EPOCHS 4
#define LENET_BATCH 32

static double train_preset(const char *preset, kd_optim_config oc, int epochs, int batch, const kd_dataset *train,
                           const kd_dataset *test)
{
    kd_net *net = NULL;
    kd_optim *opt = NULL;
    kd_train_state st;
    kd_train_state_init(&st);
    double acc = -1;
    CHECK_OK(kd_net_create(preset, 42, &net));
    CHECK_OK(kd_optim_create(&oc, net ? kd_net_param_count(net) : 0, &opt));
    kd_train_config cfg = kd_train_config_default();
    cfg.epochs = epochs;
    cfg.batch_size = batch;
    cfg.test = test;
    cfg.progress = fashion_report;
    cfg.progress_user = (void *)preset;
    if (net && opt) {
        CHECK_OK(kd_train(net, opt, train, &cfg, &st));
        if (st.history_len == epochs)
            acc = st.history[epochs - 1].test_accuracy;
    }
    kd_train_state_clear(&st);
    kd_optim_free(opt);
    kd_net_free(net);
    return acc;
}

int main(void)
{
    kd_set_threads(2);
    kd_dataset *train = NULL, *test = NULL;
    CHECK_OK(fashion_load("train", &train));
    CHECK_OK(fashion_load("t10k", &test));
    if (!train || !test)
        return check_summary();
    CHECK(train->n == 60000 && test->n == 10000, "sizes %lld %lld", (long long)train->n, (long long)test->n);

    /* The CLI's defaults: Adam 1e-3 with a cosine schedule over the run. */
    kd_optim_config oc = kd_optim_config_default();
    oc.kind = KD_OPT_ADAM;
    oc.lr = 0.001;
    oc.schedule = KD_SCHED_COSINE;
    oc.total_steps = 5 * ((train->n + 31) / 32);
    double mlp = train_preset("mlp", oc, 5, 32, train, test);
    CHECK(mlp >= 0.88, "MLP test accuracy after 5 epochs %.4f, want >= 0.88", mlp);

    oc.total_steps = LENET_EPOCHS * ((train->n + LENET_BATCH - 1) / LENET_BATCH);
    double lenet = train_preset("lenet", oc, LENET_EPOCHS, LENET_BATCH, train, test);
    CHECK(lenet >= 0.90, "LeNet test accuracy after %d epochs %.4f, want >= 0.90", LENET_EPOCHS, lenet);
    printf("fashion-mnist test accuracy: mlp %.4f (5 epochs), lenet %.4f (%d epochs)\n", mlp, lenet, LENET_EPOCHS);
    kd_dataset_free(train);
    kd_dataset_free(test);
    return check_summary();
}
