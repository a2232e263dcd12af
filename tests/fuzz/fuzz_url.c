/* Fuzz target: transport URL parsing and redaction. Whatever the bytes, the
 * parser returns EW_OK or EW_EINVAL with a reason, never crashes or leaks,
 * and a parsed URL's password never survives redaction. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ewi.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    ewi_url u;
    char err[256];
    ew_err rc = ewi_url_parse(text, &u, err, sizeof err);
    if (rc == EW_OK) {
        if (!u.scheme || !u.host)
            abort();
        long n;
        (void)ewi_url_param(&u, "dialect");
        (void)ewi_url_param_int(&u, "prefetch", 1, 1, 1000, &n);
        char *red = ewi_url_redacted(text);
        /* The raw password text sits between "user:" and the last '@'. */
        if (red && u.password && strlen(u.password) >= 4 && strstr(red, "***") == NULL)
            abort();
        free(red);
        ewi_url_free(&u);
    } else if (rc != EW_EINVAL || err[0] == '\0') {
        abort();
    }
    free(text);
    return 0;
}
