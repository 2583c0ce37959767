#ifndef COPENSSL_SHIM_H
#define COPENSSL_SHIM_H
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/ssl.h>

// BIO_get_mem_data is a macro Swift cannot import.
static inline long copenssl_bio_get_mem_data(BIO *bio, char **out) { return BIO_get_mem_data(bio, out); }

#endif
