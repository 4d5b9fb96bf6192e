/* The C side of the ctypes mirror's check (tests/python/test_capi_layout.py):
 * prints, for every struct of kindling.h, its size and alignment and each
 * field's offset and size, in declaration order, and every constant the
 * mirror (spark-barrier/kindling_spark/capi.py) copies:
 *   struct NAME SIZE ALIGN
 *   field NAME FIELD OFFSET SIZE
 *   const NAME VALUE
 * The test checks that the listed fields tile each struct exactly (up to
 * alignment padding), so a field added to the header and not here fails. */
#include <stdalign.h>
#include <stddef.h>
#include <stdio.h>

#include "kindling.h"

#define STRUCT(T) printf("struct %s %zu %zu\n", #T, sizeof(T), alignof(T))
#define FIELD(T, f) printf("field %s %s %zu %zu\n", #T, #f, offsetof(T, f), sizeof(((T *)0)->f))
#define CONST(c) printf("const %s %lld\n", #c, (long long)(c))

int main(void)
{
    STRUCT(kd_shape);
    FIELD(kd_shape, rank);
    FIELD(kd_shape, dim);

    STRUCT(kd_context);
    FIELD(kd_context, kind);
    FIELD(kd_context, device_id);

    STRUCT(kd_dataset);
    FIELD(kd_dataset, n);
    FIELD(kd_dataset, shape);
    FIELD(kd_dataset, x);
    FIELD(kd_dataset, y);
    FIELD(kd_dataset, num_classes);
    FIELD(kd_dataset, mapping);

    STRUCT(kd_csv_options);
    FIELD(kd_csv_options, label_col);
    FIELD(kd_csv_options, has_header);
    FIELD(kd_csv_options, delimiter);

    STRUCT(kd_csv_layout);
    FIELD(kd_csv_layout, delimiter);
    FIELD(kd_csv_layout, columns);
    FIELD(kd_csv_layout, header_likely);

    STRUCT(kd_layer_info);
    FIELD(kd_layer_info, index);
    FIELD(kd_layer_info, name);
    FIELD(kd_layer_info, type);
    FIELD(kd_layer_info, in);
    FIELD(kd_layer_info, out);
    FIELD(kd_layer_info, weight_offset);
    FIELD(kd_layer_info, weight_count);
    FIELD(kd_layer_info, weight_rank);
    FIELD(kd_layer_info, weight_dims);
    FIELD(kd_layer_info, bias_offset);
    FIELD(kd_layer_info, bias_count);
    FIELD(kd_layer_info, state_offset);
    FIELD(kd_layer_info, state_count);

    STRUCT(kd_optim_config);
    FIELD(kd_optim_config, kind);
    FIELD(kd_optim_config, lr);
    FIELD(kd_optim_config, momentum);
    FIELD(kd_optim_config, nesterov);
    FIELD(kd_optim_config, beta1);
    FIELD(kd_optim_config, beta2);
    FIELD(kd_optim_config, eps);
    FIELD(kd_optim_config, weight_decay);
    FIELD(kd_optim_config, schedule);
    FIELD(kd_optim_config, step_size);
    FIELD(kd_optim_config, gamma);
    FIELD(kd_optim_config, total_steps);
    FIELD(kd_optim_config, lr_min);
    FIELD(kd_optim_config, warmup_steps);

    STRUCT(kd_eval_result);
    FIELD(kd_eval_result, count);
    FIELD(kd_eval_result, loss);
    FIELD(kd_eval_result, accuracy);
    FIELD(kd_eval_result, num_classes);
    FIELD(kd_eval_result, per_class_accuracy);
    FIELD(kd_eval_result, per_class_count);
    FIELD(kd_eval_result, confusion);

    STRUCT(kd_epoch_record);
    FIELD(kd_epoch_record, epoch);
    FIELD(kd_epoch_record, train_loss);
    FIELD(kd_epoch_record, train_accuracy);
    FIELD(kd_epoch_record, test_loss);
    FIELD(kd_epoch_record, test_accuracy);
    FIELD(kd_epoch_record, seconds);
    FIELD(kd_epoch_record, learning_rate);
    FIELD(kd_epoch_record, val_loss);
    FIELD(kd_epoch_record, val_accuracy);

    STRUCT(kd_train_state);
    FIELD(kd_train_state, epoch);
    FIELD(kd_train_state, step);
    FIELD(kd_train_state, seed);
    FIELD(kd_train_state, batch_size);
    FIELD(kd_train_state, history_len);
    FIELD(kd_train_state, history);

    STRUCT(kd_best_epoch);
    FIELD(kd_best_epoch, epoch);
    FIELD(kd_best_epoch, value);
    FIELD(kd_best_epoch, since);
    FIELD(kd_best_epoch, on_val);

    STRUCT(kd_progress);
    FIELD(kd_progress, epoch);
    FIELD(kd_progress, epochs);
    FIELD(kd_progress, step);
    FIELD(kd_progress, steps_per_epoch);
    FIELD(kd_progress, samples_done);
    FIELD(kd_progress, samples_per_epoch);
    FIELD(kd_progress, loss);
    FIELD(kd_progress, accuracy);
    FIELD(kd_progress, samples_per_sec);
    FIELD(kd_progress, seconds_left);
    FIELD(kd_progress, epoch_done);
    FIELD(kd_progress, record);
    FIELD(kd_progress, learning_rate);
    FIELD(kd_progress, seconds);

    STRUCT(kd_step);
    FIELD(kd_step, index);
    FIELD(kd_step, samples);
    FIELD(kd_step, global_samples);

    STRUCT(kd_exchange);
    FIELD(kd_exchange, name);
    FIELD(kd_exchange, ctx);
    FIELD(kd_exchange, step);

    STRUCT(kd_train_config);
    FIELD(kd_train_config, epochs);
    FIELD(kd_train_config, batch_size);
    FIELD(kd_train_config, seed);
    FIELD(kd_train_config, shuffle);
    FIELD(kd_train_config, test);
    FIELD(kd_train_config, checkpoint_path);
    FIELD(kd_train_config, checkpoint_every);
    FIELD(kd_train_config, progress);
    FIELD(kd_train_config, progress_user);
    FIELD(kd_train_config, progress_interval);
    FIELD(kd_train_config, exchange);
    FIELD(kd_train_config, part_index);
    FIELD(kd_train_config, part_count);
    FIELD(kd_train_config, steps_per_epoch);
    FIELD(kd_train_config, local_data);
    FIELD(kd_train_config, save);
    FIELD(kd_train_config, save_user);
    FIELD(kd_train_config, stop);
    FIELD(kd_train_config, stop_user);
    FIELD(kd_train_config, val);
    FIELD(kd_train_config, patience);
    FIELD(kd_train_config, min_delta);
    FIELD(kd_train_config, progress_every);

    CONST(KD_MAX_RANK);
    CONST(KD_OK);
    CONST(KD_ERR_INVALID);
    CONST(KD_ERR_IO);
    CONST(KD_ERR_FORMAT);
    CONST(KD_ERR_SHAPE);
    CONST(KD_ERR_NOMEM);
    CONST(KD_ERR_NUMERIC);
    CONST(KD_ERR_STATE);
    CONST(KD_ERR_UNSUPPORTED);
    CONST(KD_ERR_DEVICE);
    CONST(KD_DEVICE_CPU);
    CONST(KD_DEVICE_GPU);
    CONST(KD_NET_PARAMS);
    CONST(KD_NET_GRADS);
    CONST(KD_NET_STATE);
    CONST(KD_NET_BUFFERS);
    CONST(KD_OPT_SGD);
    CONST(KD_OPT_MOMENTUM);
    CONST(KD_OPT_ADAM);
    CONST(KD_OPT_ADAMW);
    CONST(KD_SCHED_CONSTANT);
    CONST(KD_SCHED_STEP);
    CONST(KD_SCHED_COSINE);
    CONST(KD_DATA_IDX);
    CONST(KD_DATA_CSV);
    CONST(KD_DATA_LIBSVM);
    CONST(KD_DATA_SPOOL);
    return 0;
}
