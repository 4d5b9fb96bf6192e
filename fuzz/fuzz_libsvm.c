/* Fuzzes kd_dataset_load_libsvm.
 *
 * Input layout:
 *   byte 0   bits 0-6 num_features (0 = infer from the largest index),
 *            bit 7 gzip the text (harness compresses)
 *   rest     the LibSVM text */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int num_features = data[0] & 0x7f;
    int gz = data[0] >> 7;
    data++;
    size--;

    fuzz_file f;
    if (gz) {
        size_t zn;
        unsigned char *z = fuzz_gzip(data, size, &zn);
        fuzz_file_open(&f, z, zn);
        free(z);
    } else {
        fuzz_file_open(&f, data, size);
    }
    kd_dataset *ds = NULL;
    kd_clear_error();
    kd_status s = kd_dataset_load_libsvm(f.path, num_features, &ds);
    fuzz_check_error(s);
    if (s == KD_OK) {
        fuzz_check_dataset(ds, 0);
        if (ds->shape.rank != 1 || (num_features > 0 && ds->shape.dim[0] != num_features))
            abort();
        if (ds->num_classes < 1)
            abort(); /* every LibSVM row starts with a label >= 0 */
    } else if (ds) {
        abort();
    }
    kd_dataset_free(ds);
    fuzz_file_close(&f);
    return 0;
}
