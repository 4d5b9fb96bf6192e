"""The one ctypes mirror of include/kindling.h: its constants, structs,
callback types and the signature of every function.

kindling_spark.native (prediction, spool files) and the project's tests
(tests/python/kdlib.py) both use this module; nothing else copies a struct.
tests/python/test_capi_layout.py checks it against the C compiler: every
struct's size and field offsets and every constant, as printed by the
program tests/abi_layout.c, and that every function kindling.h declares
has a signature here.

Field names follow the header, except `in` (a Python keyword), which is
`in_`. Status names come from the library (kd_status_name); `Status` holds
the enum identifiers, checked like the structs.
"""
import ctypes
import enum

c_int, c_uint, c_int32, c_int64, c_uint64 = ctypes.c_int, ctypes.c_uint, ctypes.c_int32, ctypes.c_int64, ctypes.c_uint64
c_double, c_size_t, c_char_p, c_void_p = ctypes.c_double, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p
F32P = ctypes.POINTER(ctypes.c_float)
I32P = ctypes.POINTER(ctypes.c_int32)

KD_MAX_RANK = 4


class Status(enum.IntEnum):
    """kd_status."""
    KD_OK = 0
    KD_ERR_INVALID = 1
    KD_ERR_IO = 2
    KD_ERR_FORMAT = 3
    KD_ERR_SHAPE = 4
    KD_ERR_NOMEM = 5
    KD_ERR_NUMERIC = 6
    KD_ERR_STATE = 7
    KD_ERR_UNSUPPORTED = 8
    KD_ERR_DEVICE = 9


# kd_device_kind
KD_DEVICE_CPU, KD_DEVICE_GPU = 0, 1
# kd_net_to_host buffers
KD_NET_PARAMS, KD_NET_GRADS, KD_NET_STATE, KD_NET_BUFFERS = 1, 2, 4, 7
# kd_optim_kind
KD_OPT_SGD, KD_OPT_MOMENTUM, KD_OPT_ADAM, KD_OPT_ADAMW = 0, 1, 2, 3
# kd_schedule_kind
KD_SCHED_CONSTANT, KD_SCHED_STEP, KD_SCHED_COSINE = 0, 1, 2
# kd_data_format
KD_DATA_IDX, KD_DATA_CSV, KD_DATA_LIBSVM, KD_DATA_SPOOL = 1, 2, 3, 4

# Every constant above, by its C name (the layout test compares them).
CONSTANTS = {name: value for name, value in globals().items()
             if name.startswith("KD_") and isinstance(value, int)}
CONSTANTS.update({s.name: int(s) for s in Status})


# ------------------------------------------------------------------ structs
class Shape(ctypes.Structure):
    _fields_ = [("rank", c_int), ("dim", c_int * KD_MAX_RANK)]

    def dims(self):
        return tuple(self.dim[: self.rank])


class Context(ctypes.Structure):
    _fields_ = [("kind", c_int), ("device_id", c_int)]


class Dataset(ctypes.Structure):
    _fields_ = [("n", c_int64), ("shape", Shape), ("x", F32P), ("y", I32P), ("num_classes", c_int),
                ("mapping", c_void_p)]  # NULL: malloc'd; else x, y are a read-only file mapping


class CsvOptions(ctypes.Structure):
    _fields_ = [("label_col", c_int), ("has_header", c_int), ("delimiter", ctypes.c_char)]


class CsvLayout(ctypes.Structure):
    _fields_ = [("delimiter", ctypes.c_char), ("columns", c_int), ("header_likely", c_int)]


class LayerInfo(ctypes.Structure):
    _fields_ = [("index", c_int), ("name", c_char_p), ("type", c_char_p), ("in_", Shape), ("out", Shape),
                ("weight_offset", c_size_t), ("weight_count", c_size_t), ("weight_rank", c_int),
                ("weight_dims", c_int * KD_MAX_RANK), ("bias_offset", c_size_t), ("bias_count", c_size_t),
                ("state_offset", c_size_t), ("state_count", c_size_t)]


class OptimConfig(ctypes.Structure):
    _fields_ = [("kind", c_int), ("lr", c_double), ("momentum", c_double), ("nesterov", c_int),
                ("beta1", c_double), ("beta2", c_double), ("eps", c_double), ("weight_decay", c_double),
                ("schedule", c_int), ("step_size", c_int64), ("gamma", c_double), ("total_steps", c_int64),
                ("lr_min", c_double), ("warmup_steps", c_int64)]


class EvalResult(ctypes.Structure):
    _fields_ = [("count", c_int64), ("loss", c_double), ("accuracy", c_double), ("num_classes", c_int),
                ("per_class_accuracy", ctypes.POINTER(c_double)), ("per_class_count", ctypes.POINTER(c_int64)),
                ("confusion", ctypes.POINTER(c_int64))]


class EpochRecord(ctypes.Structure):
    _fields_ = [("epoch", c_int32), ("train_loss", c_double), ("train_accuracy", c_double),
                ("test_loss", c_double), ("test_accuracy", c_double), ("seconds", c_double),
                ("learning_rate", c_double), ("val_loss", c_double), ("val_accuracy", c_double)]


class TrainState(ctypes.Structure):
    _fields_ = [("epoch", c_int32), ("step", c_int64), ("seed", c_uint64), ("batch_size", c_int32),
                ("history_len", c_int32), ("history", ctypes.POINTER(EpochRecord))]


class BestEpoch(ctypes.Structure):
    _fields_ = [("epoch", c_int32), ("value", c_double), ("since", c_int32), ("on_val", c_int)]


class Progress(ctypes.Structure):
    _fields_ = [("epoch", c_int32), ("epochs", c_int32), ("step", c_int64), ("steps_per_epoch", c_int64),
                ("samples_done", c_int64), ("samples_per_epoch", c_int64), ("loss", c_double),
                ("accuracy", c_double), ("samples_per_sec", c_double), ("seconds_left", c_double),
                ("epoch_done", c_int), ("record", ctypes.POINTER(EpochRecord)), ("learning_rate", c_double),
                ("seconds", c_double)]


class Step(ctypes.Structure):
    _fields_ = [("index", c_int64), ("samples", c_int32), ("global_samples", c_int64)]


# Callbacks: kd_progress_fn, kd_exchange.step, kd_save_fn, kd_stop_fn.
PROGRESS_FN = ctypes.CFUNCTYPE(c_int, ctypes.POINTER(Progress), c_void_p)
EXCHANGE_STEP_FN = ctypes.CFUNCTYPE(c_int, c_void_p, c_void_p, c_void_p, ctypes.POINTER(Step))
SAVE_FN = ctypes.CFUNCTYPE(c_int, c_void_p, c_void_p, c_void_p, ctypes.POINTER(TrainState))
STOP_FN = ctypes.CFUNCTYPE(c_int, c_void_p)


class Exchange(ctypes.Structure):
    _fields_ = [("name", c_char_p), ("ctx", c_void_p), ("step", EXCHANGE_STEP_FN)]


class TrainConfig(ctypes.Structure):
    _fields_ = [("epochs", c_int32), ("batch_size", c_int32), ("seed", c_uint64), ("shuffle", c_int),
                ("test", ctypes.POINTER(Dataset)), ("checkpoint_path", c_char_p), ("checkpoint_every", c_int64),
                ("progress", PROGRESS_FN), ("progress_user", c_void_p), ("progress_interval", c_double),
                ("exchange", ctypes.POINTER(Exchange)), ("part_index", c_int32), ("part_count", c_int32),
                ("steps_per_epoch", c_int64), ("local_data", c_int), ("save", SAVE_FN), ("save_user", c_void_p),
                ("stop", STOP_FN), ("stop_user", c_void_p), ("val", ctypes.POINTER(Dataset)),
                ("patience", c_int32), ("min_delta", c_double), ("progress_every", c_int64)]


# Each mirrored struct by its C name (the layout test compares them).
STRUCTS = {"kd_shape": Shape, "kd_context": Context, "kd_dataset": Dataset, "kd_csv_options": CsvOptions,
           "kd_csv_layout": CsvLayout, "kd_layer_info": LayerInfo,
           "kd_optim_config": OptimConfig, "kd_eval_result": EvalResult, "kd_epoch_record": EpochRecord,
           "kd_train_state": TrainState, "kd_best_epoch": BestEpoch, "kd_progress": Progress, "kd_step": Step, "kd_exchange": Exchange,
           "kd_train_config": TrainConfig}


# --------------------------------------------------------------- functions
def _p(t):
    return ctypes.POINTER(t)


S = c_int  # kd_status
VP = c_void_p  # kd_net *, kd_optim * (opaque)
DSP = _p(Dataset)

# name: (restype, argtypes), in the header's order. 64-bit sizes and
# pointers must never pass through ctypes' default int.
SIGNATURES = {
    "kd_last_error": (c_char_p, []),
    "kd_status_name": (c_char_p, [c_int]),
    "kd_version": (c_char_p, []),
    "kd_set_threads": (None, [c_int]),
    "kd_blas_corename": (c_char_p, []),
    "kd_blas_better_coretype": (c_char_p, []),
    "kd_shape_size": (c_size_t, [_p(Shape)]),
    "kd_shape_str": (c_char_p, [_p(Shape), c_char_p, c_size_t]),
    "kd_context_parse": (S, [c_char_p, _p(Context)]),
    "kd_context_str": (c_char_p, [Context, c_char_p, c_size_t]),
    "kd_gpu_built": (c_int, []),
    "kd_gpu_device_count": (S, [_p(c_int)]),
    "kd_dataset_alloc": (S, [c_int64, _p(Shape), _p(DSP)]),
    "kd_dataset_free": (None, [DSP]),
    "kd_dataset_load_idx": (S, [c_char_p, c_char_p, _p(DSP)]),
    "kd_dataset_load_csv": (S, [c_char_p, c_int, c_int, _p(Shape), _p(DSP)]),
    "kd_csv_options_default": (CsvOptions, []),
    "kd_dataset_load_csv_opts": (S, [c_char_p, _p(CsvOptions), _p(Shape), _p(DSP)]),
    "kd_dataset_load_csv_ids": (S, [c_char_p, _p(CsvOptions), c_int, _p(Shape), _p(DSP),
                                    _p(ctypes.POINTER(c_char_p))]),
    "kd_csv_sniff": (S, [c_char_p, _p(CsvOptions), _p(CsvLayout)]),
    "kd_data_format_detect": (S, [c_char_p, _p(c_int)]),
    "kd_dataset_load_libsvm": (S, [c_char_p, c_int, _p(DSP)]),
    "kd_dataset_load_spool": (S, [c_char_p, _p(DSP)]),
    "kd_dataset_save_spool": (S, [c_char_p, DSP]),
    "kd_dataset_validate": (S, [DSP, c_int]),
    "kd_dataset_split": (S, [DSP, c_double, c_uint64, _p(DSP), _p(DSP)]),
    "kd_dataset_sample": (S, [DSP, c_int64, c_uint64, _p(DSP)]),
    "kd_set_memory_limit": (None, [c_uint64]),
    "kd_memory_available": (c_uint64, [c_char_p, c_size_t]),
    "kd_convert_idx_to_spool": (S, [c_char_p, c_char_p, c_char_p, _p(c_int64)]),
    "kd_convert_csv_to_spool": (S, [c_char_p, c_int, c_int, _p(Shape), c_char_p, _p(c_int64)]),
    "kd_convert_csv_to_spool_opts": (S, [c_char_p, _p(CsvOptions), _p(Shape), c_char_p, _p(c_int64)]),
    "kd_convert_libsvm_to_spool": (S, [c_char_p, c_int, c_char_p, _p(c_int64)]),
    "kd_net_create": (S, [c_char_p, c_uint64, _p(VP)]),
    "kd_net_create_from_file": (S, [c_char_p, c_uint64, _p(VP)]),
    "kd_net_free": (None, [VP]),
    "kd_net_spec_json": (c_char_p, [VP]),
    "kd_preset_json": (c_char_p, [c_char_p]),
    "kd_net_input_shape": (Shape, [VP]),
    "kd_net_num_classes": (c_int, [VP]),
    "kd_net_init_params": (S, [VP, c_uint64]),
    "kd_net_param_count": (c_size_t, [VP]),
    "kd_net_params": (F32P, [VP]),
    "kd_net_grads": (F32P, [VP]),
    "kd_net_state_count": (c_size_t, [VP]),
    "kd_net_state": (F32P, [VP]),
    "kd_net_to_host": (S, [VP, c_uint]),
    "kd_net_num_layers": (c_int, [VP]),
    "kd_net_layer_info": (S, [VP, c_int, _p(LayerInfo)]),
    "kd_net_forward": (S, [VP, F32P, c_int, c_int]),
    "kd_net_output": (F32P, [VP]),
    "kd_net_loss": (S, [VP, I32P, _p(c_double), _p(c_int)]),
    "kd_net_backward": (S, [VP, I32P]),
    "kd_net_set_noise_seed": (None, [VP, c_uint64, c_int64]),
    "kd_net_predict": (S, [VP, F32P, c_int64, F32P]),
    "kd_net_predict_batched": (S, [VP, F32P, c_int64, c_int, F32P]),
    "kd_net_set_context": (S, [VP, Context]),
    "kd_net_get_context": (Context, [VP]),
    "kd_optim_config_default": (OptimConfig, []),
    "kd_optim_config_validate": (S, [_p(OptimConfig)]),
    "kd_optim_kind_name": (c_char_p, [c_int]),
    "kd_optim_kind_parse": (S, [c_char_p, _p(c_int)]),
    "kd_schedule_kind_name": (c_char_p, [c_int]),
    "kd_schedule_kind_parse": (S, [c_char_p, _p(c_int)]),
    "kd_optim_create": (S, [_p(OptimConfig), c_size_t, _p(VP)]),
    "kd_optim_free": (None, [VP]),
    "kd_optim_get_config": (_p(OptimConfig), [VP]),
    "kd_optim_step": (S, [VP, F32P, F32P]),
    "kd_net_optim_step": (S, [VP, VP]),
    "kd_net_sync": (S, [VP, VP]),
    "kd_optim_current_lr": (c_double, [VP]),
    "kd_optim_steps": (c_int64, [VP]),
    "kd_optim_set_steps": (None, [VP, c_int64]),
    "kd_optim_set_total_steps": (S, [VP, c_int64]),
    "kd_optim_param_count": (c_size_t, [VP]),
    "kd_optim_state": (F32P, [VP, _p(c_size_t)]),
    "kd_optim_state_slots": (c_int, [VP]),
    "kd_optim_state_slot_name": (c_char_p, [VP, c_int]),
    "kd_evaluate": (S, [VP, DSP, c_int, _p(EvalResult)]),
    "kd_eval_result_clear": (None, [_p(EvalResult)]),
    "kd_train_state_init": (None, [_p(TrainState)]),
    "kd_train_state_clear": (None, [_p(TrainState)]),
    "kd_train_state_append": (S, [_p(TrainState), _p(EpochRecord)]),
    "kd_train_state_best": (S, [_p(TrainState), c_double, _p(BestEpoch)]),
    "kd_steps_per_epoch": (c_int64, [c_int64, c_int64]),
    "kd_train_config_default": (TrainConfig, []),
    "kd_train": (S, [VP, VP, DSP, _p(TrainConfig), _p(TrainState)]),
    "kd_checkpoint_save": (S, [c_char_p, VP, VP, _p(TrainState)]),
    "kd_checkpoint_load": (S, [c_char_p, _p(VP), _p(VP), _p(TrainState)]),
    "kd_save_temp_path": (S, [c_char_p, c_char_p, c_size_t]),
    "kd_save_check_path": (S, [c_char_p]),
    "kd_file_copy": (S, [c_char_p, c_char_p]),
}


def declare(lib, missing=None):
    """Set restype/argtypes of every function on a loaded library. A name the
    library lacks (an older build) becomes missing(lib, name), a callable
    that raises when used, if `missing` is given; otherwise AttributeError."""
    for name, (restype, argtypes) in SIGNATURES.items():
        try:
            fn = getattr(lib, name)
        except AttributeError:
            if missing is None:
                raise
            setattr(lib, name, missing(lib, name))
            continue
        fn.restype, fn.argtypes = restype, argtypes
    return lib


def status_name(lib, status):
    """The library's words for a status ("format error"), from kd_status_name."""
    return lib.kd_status_name(int(status)).decode()


def status_id(status):
    """The enum identifier of a status ("KD_ERR_FORMAT"), or its number."""
    try:
        return Status(int(status)).name
    except ValueError:
        return str(int(status))
