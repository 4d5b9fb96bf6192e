/* JSON output of the command-line tool (inspect --json, eval --json, the
 * --metrics file): numbers that read back exactly and null for what was
 * not measured. */
#ifndef KD_CLI_JSON_H
#define KD_CLI_JSON_H

#include <cjson/cJSON.h>

/* The shortest decimal that reads back as exactly v (cJSON's own printing
 * may drop the last bit), or null for NaN and infinities (JSON has neither). */
cJSON *cli_json_number(double v);
/* Adds it to an object; returns the item (NULL when out of memory). */
cJSON *cli_json_add_number(cJSON *object, const char *name, double v);

#endif
