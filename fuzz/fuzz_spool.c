/* Fuzzes kd_dataset_load_spool.
 *
 * Input layout:
 *   byte 0   bit 0: recompute the header's CRC32 field over the payload
 *            before writing (otherwise almost every mutation of the payload
 *            stops at the CRC check and the label checks are never reached)
 *   rest     the spool file */
#include "fuzz_common.h"

#define SPOOL_HEADER 64
#define SPOOL_CRC_OFFSET 40

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int fix_crc = data[0] & 1;
    data++;
    size--;

    unsigned char *copy = malloc(size ? size : 1);
    if (!copy)
        abort();
    memcpy(copy, data, size);
    if (fix_crc && size >= SPOOL_HEADER) {
        uLong crc = crc32(0L, Z_NULL, 0);
        crc = crc32(crc, copy + SPOOL_HEADER, (uInt)(size - SPOOL_HEADER));
        for (int i = 0; i < 8; i++) /* u64, little-endian, high half 0 */
            copy[SPOOL_CRC_OFFSET + i] = i < 4 ? (unsigned char)(crc >> (8 * i)) : 0;
    }
    fuzz_file f;
    fuzz_file_open(&f, copy, size);
    free(copy);

    kd_dataset *ds = NULL;
    kd_clear_error();
    kd_status s = kd_dataset_load_spool(f.path, &ds);
    fuzz_check_error(s);
    if (s == KD_OK) {
        fuzz_check_dataset(ds, 1);
        /* The format has no slack: the file is exactly header + payload. */
        size_t want = SPOOL_HEADER + (size_t)ds->n * kd_shape_size(&ds->shape) * 4 +
                      (ds->num_classes > 0 ? (size_t)ds->n * 4 : 0);
        if (want != size)
            abort();
    } else if (ds) {
        abort();
    }
    kd_dataset_free(ds);
    fuzz_file_close(&f);
    return 0;
}
