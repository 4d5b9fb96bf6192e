/* LeNet on Fashion-MNIST trained on the GPU: >= 0.90 test accuracy with the
 * CPU test's settings (tests/test_fashion_mnist.c: Adam 1e-3, cosine, batch
 * 32, 4 epochs). KD_FASHION_MNIST_DIR overrides the data directory. */
#include "fashion_data.h"
#include "gpu_test.h"

#define EPOCHS 4
#define BATCH 32

int main(void)
{
    gpu_require_device();
    kd_dataset *train = NULL, *test = NULL;
    CHECK_OK(fashion_load("train", &train));
    CHECK_OK(fashion_load("t10k", &test));
    if (!train || !test)
        return check_summary();
    kd_net *net = NULL;
    kd_optim *opt = NULL;
    kd_train_state st;
    kd_train_state_init(&st);
    CHECK_OK(kd_net_create("lenet", 42, &net));
    kd_context ctx = {KD_DEVICE_GPU, 0};
    CHECK_OK(kd_net_set_context(net, ctx));
    kd_optim_config oc = kd_optim_config_default();
    oc.kind = KD_OPT_ADAM;
    oc.lr = 0.001;
    oc.schedule = KD_SCHED_COSINE;
    oc.total_steps = EPOCHS * ((train->n + BATCH - 1) / BATCH);
    CHECK_OK(kd_optim_create(&oc, kd_net_param_count(net), &opt));
    kd_train_config cfg = kd_train_config_default();
    cfg.epochs = EPOCHS;
    cfg.batch_size = BATCH;
    cfg.test = test;
    cfg.progress = fashion_report;
    cfg.progress_user = (void *)"lenet (gpu)";
    double acc = -1;
    if (net && opt && kd_net_get_context(net).kind == KD_DEVICE_GPU) {
        CHECK_OK(kd_train(net, opt, train, &cfg, &st));
        if (st.history_len == EPOCHS)
            acc = st.history[EPOCHS - 1].test_accuracy;
    }
    CHECK(acc >= 0.90, "LeNet on the GPU: test accuracy after %d epochs %.4f, want >= 0.90", EPOCHS, acc);
    printf("fashion-mnist lenet on the GPU: test accuracy %.4f after %d epochs\n", acc, EPOCHS);
    kd_train_state_clear(&st);
    kd_optim_free(opt);
    kd_net_free(net);
    kd_dataset_free(train);
    kd_dataset_free(test);
    return check_summary();
}
