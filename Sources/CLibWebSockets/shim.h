#ifndef CLIBWEBSOCKETS_SHIM_H
#define CLIBWEBSOCKETS_SHIM_H
#include <libwebsockets.h>
#include <openssl/ssl.h>

// Macros and combined masks Swift cannot import, each as a constant or a static inline function.

static const int clws_pre = LWS_PRE;

// Names the calling thread for the kernel (glibc has it, but declares it only under _GNU_SOURCE).
#include <pthread.h>
extern int pthread_setname_np(pthread_t thread, const char *name);
static inline int clws_name_thread(const char *name) { return pthread_setname_np(pthread_self(), name); }

// getrandom(2) (Swift's Glibc module does not export it): the client's masking keys.
#include <sys/random.h>
static inline long clws_getrandom(void *buffer, size_t length) { return (long)getrandom(buffer, length, 0); }

// lws's LWS_WRITE_RAW is a macro naming another constant: the client sends frames it built itself with it.
static const enum lws_write_protocol clws_write_raw = LWS_WRITE_RAW;

static inline unsigned long long clws_server_options(int tls, int require_client_cert) {
    unsigned long long o = LWS_SERVER_OPTION_VALIDATE_UTF8 | LWS_SERVER_OPTION_DISABLE_IPV6;
    if (tls) o |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    if (require_client_cert) o |= LWS_SERVER_OPTION_REQUIRE_VALID_OPENSSL_CLIENT_CERT;
    return o;
}

// DO_SSL_GLOBAL_INIT only for a wss:// client: lws 4.1 takes new OpenSSL ex_data indexes at every context init
// that has it, and a TLS handshake under way in another context then reads its connection back as NULL (a crash
// seen when tests created plain ws:// clients while a TLS test ran).
static inline unsigned long long clws_client_options(int tls) {
    return (tls ? LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT : 0) | LWS_SERVER_OPTION_VALIDATE_UTF8;
}

/// TLS 1.2 is the minimum: everything older is switched off.
static inline long clws_ssl_min_tls12(void) {
    return SSL_OP_NO_SSLv2 | SSL_OP_NO_SSLv3 | SSL_OP_NO_TLSv1 | SSL_OP_NO_TLSv1_1 | SSL_OP_NO_COMPRESSION;
}

static inline int clws_client_ssl_flags(int insecure) {
    int f = LCCSCF_USE_SSL;
    if (insecure) f |= LCCSCF_ALLOW_SELFSIGNED | LCCSCF_SKIP_SERVER_CERT_HOSTNAME_CHECK;
    return f;
}

#endif
