/* Batching (src/batch.c): steps per epoch, a worker's part of each global
 * batch, the epoch order and shuffle, local data, resuming mid-epoch. Each
 * sample's first feature is its index, so a gathered batch names the
 * samples it holds. */
#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "check.h"

static kd_dataset *numbered(int64_t n, int features)
{
    kd_shape sh = {1, {features, 0, 0, 0}};
    kd_dataset *ds = NULL;
    if (kd_dataset_alloc(n, &sh, &ds) != KD_OK)
        return NULL;
    for (int64_t i = 0; i < n; i++) {
        for (int j = 0; j < features; j++)
            ds->x[i * features + j] = (float)(i * features + j);
        ds->y[i] = (int32_t)(i % 3);
    }
    ds->num_classes = 3;
    return ds;
}

static kd_train_config batching(int batch, int part, int parts)
{
    kd_train_config c = kd_train_config_default();
    c.batch_size = batch;
    c.part_index = part;
    c.part_count = parts;
    return c;
}

static void test_steps_per_epoch(void)
{
    CHECK(kd_steps_per_epoch(0, 5) == 0, "no samples, no steps");
    CHECK(kd_steps_per_epoch(1, 5) == 1, "one short step");
    CHECK(kd_steps_per_epoch(10, 5) == 2, "exact");
    CHECK(kd_steps_per_epoch(11, 5) == 3, "a partial last step");
    CHECK(kd_steps_per_epoch(5, 0) == 0 && kd_steps_per_epoch(-3, 4) == 0, "nonsense gives 0");
    CHECK(kd_steps_per_epoch(INT64_MAX, 1) == INT64_MAX, "no overflow");
}

/* W workers' parts of every step are disjoint, near-equal, contiguous in
 * the epoch order, and together they are what one process with the W-times
 * larger batch gathers; every sample is used once per epoch. */
static void test_parts_cover_global_batches(const kd_dataset *ds)
{
    enum { W = 3, B = 7 };
    int64_t n = ds->n;
    kd_batcher whole, parts[W];
    kd_train_config wc = batching(B * W, 0, 1);
    CHECK_OK(kd_batcher_init(&whole, ds, &wc));
    for (int w = 0; w < W; w++) {
        kd_train_config pc = batching(B, w, W);
        CHECK_OK(kd_batcher_init(&parts[w], ds, &pc));
        CHECK(parts[w].steps_per_epoch == kd_steps_per_epoch(n, B * W), "part %d: %lld steps", w,
              (long long)parts[w].steps_per_epoch);
        CHECK(kd_batcher_epoch_samples(&parts[w]) == n / W, "part %d: samples per epoch", w);
    }
    int *used = calloc((size_t)n, sizeof *used);
    for (int32_t epoch = 0; epoch < 2 && used; epoch++) {
        memset(used, 0, sizeof *used * (size_t)n);
        kd_batcher_start_epoch(&whole, 9, epoch, 1, 0);
        for (int w = 0; w < W; w++)
            kd_batcher_start_epoch(&parts[w], 9, epoch, 1, 0);
        kd_step ws, ps;
        int64_t steps = 0;
        while (kd_batcher_next(&whole, &ws)) {
            int at = 0, sizes[W];
            for (int w = 0; w < W; w++) {
                CHECK(kd_batcher_next(&parts[w], &ps), "part %d ends early", w);
                CHECK(ps.index == ws.index && ps.global_samples == ws.samples,
                      "step %lld: part %d says global %lld, the whole batch has %d", (long long)ws.index, w,
                      (long long)ps.global_samples, ws.samples);
                sizes[w] = ps.samples;
                for (int j = 0; j < ps.samples; j++, at++) {
                    CHECK(parts[w].x[j] == whole.x[at] && parts[w].y[j] == whole.y[at],
                          "epoch %d step %lld: part %d sample %d is not the merged batch's %d", epoch,
                          (long long)ws.index, w, j, at);
                    int64_t idx = (int64_t)parts[w].x[j];
                    if (idx >= 0 && idx < n)
                        used[idx]++;
                }
            }
            CHECK(at == ws.samples, "step %lld: parts hold %d of %d samples", (long long)ws.index, at, ws.samples);
            CHECK(sizes[W - 1] - sizes[0] <= 1 && sizes[0] - sizes[W - 1] <= 1, "step %lld: parts %d..%d uneven",
                  (long long)ws.index, sizes[0], sizes[W - 1]);
            CHECK(ws.global_samples == ws.samples, "one process: global count is its own");
            steps++;
        }
        for (int w = 0; w < W; w++)
            CHECK(!kd_batcher_next(&parts[w], &ps), "part %d runs past the epoch", w);
        CHECK(steps == whole.steps_per_epoch, "%lld steps", (long long)steps);
        int64_t once = 0;
        for (int64_t i = 0; i < n; i++)
            once += used[i] == 1;
        CHECK(once == n, "epoch %d: %lld of %lld samples used exactly once", epoch, (long long)once, (long long)n);
    }
    free(used);
    kd_batcher_free(&whole);
    for (int w = 0; w < W; w++)
        kd_batcher_free(&parts[w]);
}

/* The order is a permutation from (seed, epoch): the same again for the
 * same pair, another for the next epoch, the identity without shuffle. */
static void test_order(const kd_dataset *ds)
{
    kd_train_config c = batching((int)ds->n, 0, 1);
    kd_batcher a, b;
    CHECK_OK(kd_batcher_init(&a, ds, &c));
    CHECK_OK(kd_batcher_init(&b, ds, &c));
    kd_step s;
    kd_batcher_start_epoch(&a, 5, 1, 1, 0);
    kd_batcher_start_epoch(&b, 5, 1, 1, 0);
    kd_batcher_next(&a, &s);
    kd_batcher_next(&b, &s);
    CHECK(memcmp(a.x, b.x, sizeof(float) * (size_t)ds->n) == 0, "same (seed, epoch), same order");
    kd_batcher_start_epoch(&b, 5, 2, 1, 0);
    kd_batcher_next(&b, &s);
    CHECK(memcmp(a.x, b.x, sizeof(float) * (size_t)ds->n) != 0, "the next epoch is reshuffled");
    kd_batcher_start_epoch(&b, 5, 2, 0, 0);
    kd_batcher_next(&b, &s);
    int identity = 1;
    for (int64_t i = 0; i < ds->n; i++)
        identity &= b.x[i] == (float)i;
    CHECK(identity, "no shuffle: the data's own order");
    kd_batcher_free(&a);
    kd_batcher_free(&b);
}

/* Local data: a worker's own samples in batches of its own, then empty
 * steps up to the agreed count; the global count is left to the exchange. */
static void test_local_data(void)
{
    kd_dataset *ds = numbered(10, 2);
    kd_train_config c = batching(4, 1, 3);
    c.local_data = 1;
    c.steps_per_epoch = 5;
    c.shuffle = 0;
    kd_batcher b;
    CHECK_OK(kd_batcher_init(&b, ds, &c));
    kd_batcher_start_epoch(&b, 1, 0, 0, 0);
    int want[5] = {4, 4, 2, 0, 0}, k = 0;
    kd_step s;
    while (kd_batcher_next(&b, &s) && k < 5) {
        CHECK(s.samples == want[k] && s.global_samples == -1 && s.index == k, "local step %d: %d samples, global %lld",
              k, s.samples, (long long)s.global_samples);
        if (s.samples)
            CHECK(b.x[0] == (float)(8 * k), "local step %d starts at sample %d, got feature %g", k, 4 * k, b.x[0]);
        k++;
    }
    CHECK(k == 5, "%d local steps", k);
    CHECK(kd_batcher_epoch_samples(&b) == 10, "a local worker's epoch is its own data");
    kd_batcher_free(&b);

    c.steps_per_epoch = 2; /* 10 samples need 3 */
    CHECK_FAILS(kd_batcher_init(&b, ds, &c), KD_ERR_INVALID, "cannot cover 10 samples");
    kd_dataset_free(ds);
}

/* A resumed epoch starts at the step it stopped at, in the same order. */
static void test_resume_mid_epoch(const kd_dataset *ds)
{
    kd_train_config c = batching(8, 0, 1);
    kd_batcher a, b;
    CHECK_OK(kd_batcher_init(&a, ds, &c));
    CHECK_OK(kd_batcher_init(&b, ds, &c));
    kd_batcher_start_epoch(&a, 3, 4, 1, 0);
    kd_batcher_start_epoch(&b, 3, 4, 1, 2);
    kd_step sa, sb;
    kd_batcher_next(&a, &sa);
    kd_batcher_next(&a, &sa);
    kd_batcher_next(&a, &sa);
    CHECK(kd_batcher_next(&b, &sb) && sb.index == 2 && sa.index == 2, "resumed at step %lld", (long long)sb.index);
    CHECK(memcmp(a.x, b.x, sizeof(float) * 8) == 0, "the resumed step has the same samples");

    /* Where a run resumes: 50 samples in batches of 8 is 7 steps per epoch. */
    kd_train_state st;
    kd_train_state_init(&st);
    st.epoch = 4;
    st.batch_size = 8;
    st.step = 4 * 7 + 2;
    CHECK(kd_batcher_resume_step(&a, &st) == 2, "same global batch: continue at step 2");
    st.batch_size = 16;
    CHECK(kd_batcher_resume_step(&a, &st) == 0, "another global batch: the epoch starts over");
    st.batch_size = 8;
    st.step = 4 * 7;
    CHECK(kd_batcher_resume_step(&a, &st) == 0, "an epoch boundary starts at step 0");
    st.step = 5 * 7;
    CHECK(kd_batcher_resume_step(&a, &st) == 7, "an epoch whose steps all ran ends without steps");
    st.step = 5 * 7 + 1;
    CHECK(kd_batcher_resume_step(&a, &st) == 0, "a position past the epoch is not this data's: start over");
    kd_batcher_free(&a);
    kd_batcher_free(&b);
}

int main(void)
{
    kd_dataset *ds = numbered(50, 1);
    if (!ds) {
        fprintf(stderr, "cannot make data: %s\n", kd_last_error());
        return 1;
    }
    test_steps_per_epoch();
    test_parts_cover_global_batches(ds);
    test_order(ds);
    test_local_data();
    test_resume_mid_epoch(ds);
    kd_dataset_free(ds);
    return check_summary();
}
