/* Fuzzes kd_dataset_load_csv_opts, and on the same file kd_csv_sniff and
 * kd_data_format_detect.
 *
 * Input layout:
 *   byte 0   options: bits 0-2 label column (7 = none, i.e. -1),
 *            bit 3 has_header, bit 4 gzip the text (harness compresses),
 *            bits 5-6 sample shape: 0 none, 1 [n], 2 [1, 2, n/2], 3 [n+1]
 *            (the last one never fits, to exercise the shape check),
 *            bit 7 delimiter ';' given (else detected)
 *   byte 1   n for the shape option
 *   rest     the CSV text */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    unsigned opt = data[0], n = data[1] ? data[1] : 1;
    data += 2;
    size -= 2;
    int label_col = (opt & 7) == 7 ? -1 : (int)(opt & 7);
    int has_header = (opt >> 3) & 1;
    kd_shape shape = {0, {0}};
    const kd_shape *shape_p = &shape;
    switch ((opt >> 5) & 3) {
    case 0: shape_p = NULL; break;
    case 1: shape = (kd_shape){1, {(int)n, 0, 0, 0}}; break;
    case 2: shape = (kd_shape){3, {1, 2, (int)(n + 1) / 2, 0}}; break;
    case 3: shape = (kd_shape){1, {(int)n + 1, 0, 0, 0}}; break;
    }

    fuzz_file f;
    if (opt & 16) {
        size_t zn;
        unsigned char *z = fuzz_gzip(data, size, &zn);
        fuzz_file_open(&f, z, zn);
        free(z);
    } else {
        fuzz_file_open(&f, data, size);
    }
    kd_dataset *ds = NULL;
    kd_clear_error();
    kd_csv_options o = {label_col, has_header, (opt & 128) ? ';' : 0};
    kd_status s = kd_dataset_load_csv_opts(f.path, &o, shape_p, &ds);
    fuzz_check_error(s);
    if (s == KD_OK) {
        fuzz_check_dataset(ds, 0);
        if (label_col < 0 && ds->num_classes != 0)
            abort(); /* no label column: every label must be -1 */
        if (label_col >= 0 && ds->num_classes < 1)
            abort(); /* every row has a label >= 0 */
        if (shape_p && kd_shape_size(&ds->shape) != kd_shape_size(shape_p))
            abort();
    } else if (ds) {
        abort();
    }
    kd_dataset_free(ds);
    kd_csv_layout l;
    kd_clear_error();
    kd_status ls = kd_csv_sniff(f.path, &o, &l);
    fuzz_check_error(ls);
    if (ls == KD_OK && (l.columns < 1 || (o.delimiter && l.delimiter != o.delimiter)))
        abort();
    if (s == KD_OK && ls != KD_OK)
        abort(); /* a file that loads can be sniffed */
    kd_data_format fmt;
    kd_clear_error();
    fuzz_check_error(kd_data_format_detect(f.path, &fmt));
    fuzz_file_close(&f);
    return 0;
}
