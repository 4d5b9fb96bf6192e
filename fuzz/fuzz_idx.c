/* Fuzzes kd_dataset_load_idx: IDX images, optionally with a label file,
 * each plain or gzip.
 *
 * Input layout (so one input can describe both files):
 *   byte 0      flags: bit 0 labels file present, bit 1 gzip the images,
 *               bit 2 gzip the labels (the harness compresses, so mutated
 *               content reaches the gzip path intact; a part that itself
 *               starts with 1f 8b tests corrupt gzip streams)
 *   bytes 1-2   length of the images part, little-endian (clamped)
 *   rest        images part, then labels part */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    unsigned flags = data[0];
    size_t img_n = (size_t)data[1] | (size_t)data[2] << 8;
    data += 3;
    size -= 3;
    if (img_n > size)
        img_n = size;

    const uint8_t *parts[2] = {data, data + img_n};
    size_t lens[2] = {img_n, size - img_n};
    fuzz_file files[2];
    for (int i = 0; i < 2; i++) {
        if ((flags & (2u << i)) && lens[i] > 0) {
            size_t zn;
            unsigned char *z = fuzz_gzip(parts[i], lens[i], &zn);
            fuzz_file_open(&files[i], z, zn);
            free(z);
        } else {
            fuzz_file_open(&files[i], parts[i], lens[i]);
        }
    }

    kd_dataset *ds = NULL;
    kd_clear_error();
    kd_status s = kd_dataset_load_idx(files[0].path, (flags & 1) ? files[1].path : NULL, &ds);
    fuzz_check_error(s);
    if (s == KD_OK) {
        fuzz_check_dataset(ds, 0);
        if (!(flags & 1) && ds->num_classes != 0)
            abort(); /* no label file: every label must be -1 */
    } else if (ds) {
        abort(); /* a failed load must leave *out NULL */
    }
    kd_dataset_free(ds);
    fuzz_file_close(&files[0]);
    fuzz_file_close(&files[1]);
    return 0;
}
