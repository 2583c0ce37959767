// Baseline for bench-channels: a WebSocket echo round trip on raw libwebsockets, no Swift, no Phoenix.
// One process: a server context and a client context on one thread each. Prints p50/p99 in microseconds.
// Build: cc -O2 -o raw_lws_echo raw_lws_echo.c -lwebsockets   Run: raw_lws_echo N SIZE
#include <libwebsockets.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int port, n_total, size, done_count;
static double *samples;
static double sent_at;
static volatile int finished;
static unsigned char sbuf[LWS_PRE + 65536], cbuf[LWS_PRE + 65536], rxbuf[65536];
static size_t slen, rxlen;

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int server_cb(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len) {
    switch (reason) {
    case LWS_CALLBACK_RECEIVE:
        memcpy(rxbuf + rxlen, in, len);
        rxlen += len;
        if (lws_is_final_fragment(wsi) && !lws_remaining_packet_payload(wsi)) {
            memcpy(sbuf + LWS_PRE, rxbuf, rxlen);
            slen = rxlen;
            rxlen = 0;
            lws_callback_on_writable(wsi);
        }
        return 0;
    case LWS_CALLBACK_SERVER_WRITEABLE:
        if (slen) { lws_write(wsi, sbuf + LWS_PRE, slen, LWS_WRITE_TEXT); slen = 0; }
        return 0;
    default:
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    }
}

static int client_cb(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len) {
    switch (reason) {
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
    case LWS_CALLBACK_CLIENT_RECEIVE:
        if (reason == LWS_CALLBACK_CLIENT_RECEIVE) {
            if (!(lws_is_final_fragment(wsi) && !lws_remaining_packet_payload(wsi))) return 0;
            samples[done_count++] = now_us() - sent_at;
            if (done_count == n_total) { finished = 1; return -1; }
        }
        lws_callback_on_writable(wsi);
        return 0;
    case LWS_CALLBACK_CLIENT_WRITEABLE:
        memset(cbuf + LWS_PRE, 'x', size);
        sent_at = now_us();
        lws_write(wsi, cbuf + LWS_PRE, size, LWS_WRITE_TEXT);
        return 0;
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
        fprintf(stderr, "connect failed\n");
        finished = 1;
        return 0;
    default:
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    }
}

static struct lws_protocols sp[] = {{"echo", server_cb, 0, 65536, 0, NULL, 0}, {NULL, NULL, 0, 0, 0, NULL, 0}};
static struct lws_protocols cp[] = {{"echo", client_cb, 0, 65536, 0, NULL, 0}, {NULL, NULL, 0, 0, 0, NULL, 0}};

static void *serve(void *ctx) {
    while (!finished) lws_service((struct lws_context *)ctx, 0);
    return NULL;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    n_total = argc > 1 ? atoi(argv[1]) : 5000;
    size = argc > 2 ? atoi(argv[2]) : 32;
    samples = calloc(n_total, sizeof(double));
    lws_set_log_level(LLL_ERR, NULL);
    struct lws_context_creation_info si = {0}, ci = {0};
    si.port = 0;
    si.iface = "127.0.0.1";
    si.protocols = sp;
    si.vhost_name = "default";
    struct lws_context *sctx = lws_create_context(&si);
    port = lws_get_vhost_listen_port(lws_get_vhost_by_name(sctx, "default"));
    pthread_t t;
    pthread_create(&t, NULL, serve, sctx);
    ci.port = CONTEXT_PORT_NO_LISTEN;
    ci.protocols = cp;
    struct lws_context *cctx = lws_create_context(&ci);
    struct lws_client_connect_info cc = {0};
    cc.context = cctx;
    cc.address = "127.0.0.1";
    cc.port = port;
    cc.path = "/";
    cc.host = "127.0.0.1";
    cc.origin = "127.0.0.1";
    cc.protocol = "echo";
    lws_client_connect_via_info(&cc);
    while (!finished) lws_service(cctx, 0);
    lws_cancel_service(sctx);
    pthread_join(t, NULL);
    qsort(samples, done_count, sizeof(double), cmp);
    if (!done_count) return 1;
    printf("%.1f %.1f %d\n", samples[done_count / 2], samples[done_count * 99 / 100], done_count);
    return 0;
}
