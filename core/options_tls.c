/* ewi_tls_check_pair: a client certificate and its key, checked when the
 * manager is made, so that a wrong file is an error at ew_manager_new and
 * not a failed handshake later. OpenSSL is linked with the STOMP and
 * rabbitmq transports; without them the AMQP transport checks the pair
 * through proton when it sets up TLS. */
#include "options.h"

#include <stdio.h>

#if defined(EW_HAVE_STOMP) || defined(EW_HAVE_RABBITMQ)
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

static void reason(char *err, size_t errlen, const char *what, const char *file)
{
    unsigned long e = ERR_peek_last_error();
    char text[256] = "not PEM";
    if (e)
        ERR_error_string_n(e, text, sizeof text);
    ERR_clear_error();
    snprintf(err, errlen, "%s file %s cannot be read: %s", what, file, text);
}

ew_err ewi_tls_check_pair(const char *cert, const char *key, char *err, size_t errlen)
{
    if (!cert && !key)
        return EW_OK;
    if (!cert || !key) {
        snprintf(err, errlen, "cert and key go together");
        return EW_EINVAL;
    }
    ERR_clear_error();
    ew_err rc = EW_EINVAL;
    X509 *x = NULL;
    EVP_PKEY *k = NULL;
    FILE *f = fopen(cert, "r");
    if (f) {
        x = PEM_read_X509(f, NULL, NULL, NULL);
        fclose(f);
    }
    if (!x) {
        reason(err, errlen, "cert", cert);
        goto out;
    }
    /* No passphrase callback: an encrypted key is refused here rather than
     * prompting on the terminal. */
    static char empty[] = "";
    f = fopen(key, "r");
    if (f) {
        k = PEM_read_PrivateKey(f, NULL, NULL, empty);
        fclose(f);
    }
    if (!k) {
        reason(err, errlen, "key", key);
        goto out;
    }
    if (X509_check_private_key(x, k) != 1) {
        ERR_clear_error();
        snprintf(err, errlen, "key %s does not belong to the certificate in %s", key, cert);
        goto out;
    }
    rc = EW_OK;
out:
    X509_free(x);
    EVP_PKEY_free(k);
    return rc;
}
#else
ew_err ewi_tls_check_pair(const char *cert, const char *key, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    (void)cert;
    (void)key;
    return EW_OK;
}
#endif
