/* LeNet on Fashion-MNIST trained on the GPU: >= 0.90 test accuracy with the
 * CPU test's settings (tests/test_fashion_mnist.c: Adam 1e-3, cosine, batch
 * 32, 4 epochs). KD_FASHION_MNIST_DIR overrides the data directory. */
#include "gpu_test.h"

#define EPOCHS 4
#define BATCH 32

static const char *data_dir(void)
{
    const char *d = getenv("KD_FASHION_MNIST_DIR");
    return d && *d ? d : "/usr/share/datasets/fashion-mnist";
}

static kd_status load(const char *prefix, kd_dataset **out)
{
    char img[512], lab[512];
    snprintf(img, sizeof img, "%s/%s-images-idx3-ubyte.gz", data_dir(), prefix);
    snprintf(lab, sizeof lab, "%s/%s-labels-idx1-ubyte.gz", data_dir(), prefix);
    return kd_dataset_load_idx(img, lab, out);
}

static int report(const kd_progress *p, void *user)
{
    (void)user;
    if (p->epoch_done)
        fprintf(stderr, "  lenet (gpu) epoch %d/%d loss %.4f acc %.4f test_acc %.4f %.0f samples/s\n", p->epoch,
                p->epochs, p->loss, p->accuracy, p->record->test_accuracy, p->samples_per_sec);
    return 0;
}

int main(void)
{
    gpu_require_device();
    kd_dataset *train = NULL, *test = NULL;
    CHECK_OK(load("train", &train));
    CHECK_OK(load("t10k", &test));
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
    cfg.progress = report;
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
