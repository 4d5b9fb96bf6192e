/* JSON numbers of the command-line tool; see cli_json.h. */
#include "cli_json.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

cJSON *cli_json_number(double v)
{
    if (!isfinite(v))
        return cJSON_CreateNull();
    char buf[40];
    /* 17 significant digits always read back; fewer usually do and read better. */
    for (int digits = 15; digits <= 17; digits++) {
        snprintf(buf, sizeof buf, "%.*g", digits, v);
        if (strtod(buf, NULL) == v)
            break;
    }
    return cJSON_CreateRaw(buf);
}

cJSON *cli_json_add_number(cJSON *object, const char *name, double v)
{
    cJSON *item = cli_json_number(v);
    if (item && !cJSON_AddItemToObject(object, name, item)) {
        cJSON_Delete(item);
        return NULL;
    }
    return item;
}
