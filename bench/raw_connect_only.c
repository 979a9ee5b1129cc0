/* Experiment row (issue 16): libcurl makes the connection (TCP, TLS with peer and host verification, the session
 * cache), and nothing else. CURLOPT_CONNECT_ONLY, then each request is written by hand and its answer read by
 * hand over curl_easy_send / curl_easy_recv: HTTP/1.1, keep-alive, Content-Length answers. What is left of a
 * request's cost once libcurl's per-transfer machinery (its state machine, request formatting, header parsing,
 * per-transfer allocations) is taken away: the floor for a transport that would keep libcurl for connecting only.
 * It is not a client: no chunked answers, no 1xx, no time limits, no caps, no retries beyond reconnecting when the
 * server closes a kept-alive connection between requests (then the GET is sent again).
 *
 *   raw_connect_only BASE_URL TOKEN CALL ID COUNT      (CALL: get_message; BENCH_CAINFO: the CA file for https)
 *
 * Prints one "BENCH requests=N errors=E seconds=S" line.
 */
#define _GNU_SOURCE /* memmem */
#include "common.h"

#include <poll.h>

#define USER_AGENT "leadconnector-bench-raw/1 libcurl"

static CURL *h;
static curl_socket_t fd = CURL_SOCKET_BAD;
static size_t body_at; /* where the last answer's body starts in its buffer */

static int connect_now(const char *url)
{
    CURLcode rc;
    if (h) curl_easy_cleanup(h);
    h = curl_easy_init();
    if (!h) return 0;
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_CONNECT_ONLY, 1L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    if (getenv("BENCH_CAINFO")) curl_easy_setopt(h, CURLOPT_CAINFO, getenv("BENCH_CAINFO"));
    rc = curl_easy_perform(h);
    if (rc != CURLE_OK) {
        fprintf(stderr, "raw_connect_only: connect: %s\n", curl_easy_strerror(rc));
        return 0;
    }
    return curl_easy_getinfo(h, CURLINFO_ACTIVESOCKET, &fd) == CURLE_OK && fd != CURL_SOCKET_BAD;
}

static void wait_for(short events)
{
    struct pollfd p;
    p.fd = fd;
    p.events = events;
    p.revents = 0;
    poll(&p, 1, 10000);
}

/* One exchange: 1 with the answer's status in *status, 0 when the connection closed before any byte of an answer
 * (reconnect and send again), -1 on any other failure. */
static int exchange(const char *req, size_t len, struct body *b, long *status)
{
    size_t off = 0, n;
    char *head_end = NULL;
    long clen = -1;
    int close_after = 0;
    b->len = 0;
    while (off < len) {
        CURLcode rc = curl_easy_send(h, req + off, len - off, &n);
        if (rc == CURLE_AGAIN) { wait_for(POLLOUT); continue; }
        if (rc != CURLE_OK) return 0;
        off += n;
    }
    for (;;) {
        char chunk[16384];
        CURLcode rc = curl_easy_recv(h, chunk, sizeof chunk, &n);
        if (rc == CURLE_AGAIN) { wait_for(POLLIN); continue; }
        if (rc != CURLE_OK || n == 0) return b->len == 0 ? 0 : -1;
        if (body_write(chunk, 1, n, b) != n) return -1;
        if (!head_end) {
            head_end = memmem(b->data, b->len, "\r\n\r\n", 4);
            if (head_end) {
                char *cl = memmem(b->data, (size_t)(head_end - b->data), "\r\nContent-Length: ", 18);
                if (!cl || sscanf(b->data, "HTTP/1.%*d %ld", status) != 1) return -1;
                clen = atol(cl + 18);
                close_after = memmem(b->data, (size_t)(head_end - b->data), "\r\nConnection: close", 19) != NULL;
            }
        }
        if (head_end && b->len >= (size_t)(head_end + 4 - b->data) + (size_t)clen) break;
    }
    body_at = (size_t)(head_end + 4 - b->data);
    if (close_after) fd = CURL_SOCKET_BAD;
    return 1;
}

int main(int argc, char **argv)
{
    struct seq_args args = seq_args(argc, argv);
    const char *base = args.base, *token = args.token, *call = args.call, *id = args.id;
    long count = args.count;
    if (strcmp(call, "get_message") != 0) {
        fprintf(stderr, "raw_connect_only: get_message only\n");
        return 2;
    }
    const char *host = strstr(base, "://");
    if (!host) {
        fprintf(stderr, "bad BASE_URL: %s\n", base);
        return 2;
    }
    host += 3;
    char url[2048], req[4096];
    snprintf(url, sizeof url, "%s/", base);
    int len = snprintf(req, sizeof req,
                       "GET /conversations/messages/%s HTTP/1.1\r\nHost: %s\r\nUser-Agent: %s\r\n"
                       "Authorization: Bearer %s\r\nVersion: 2021-04-15\r\nAccept: application/json\r\n\r\n",
                       id, host, USER_AGENT, token);
    if (len <= 0 || (size_t)len >= sizeof req) return 2;
    (void)api_headers; /* the same headers as the other raw rows, written out by hand above */
    decode_init();
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) return 1;

    struct body b = {NULL, 0, 0};
    long errors = 0;
    double t0 = now_seconds();
    for (long i = 0; i < count; i++) {
        long status = 0;
        int r = 0;
        for (int tries = 0; tries < 2 && r == 0; tries++) {
            if (fd == CURL_SOCKET_BAD && !connect_now(url)) break;
            r = exchange(req, (size_t)len, &b, &status);
            if (r == 0) fd = CURL_SOCKET_BAD; /* closed while idle: a fresh connection, the GET again */
        }
        struct body answer = {b.data + body_at, b.len - body_at, 0};
        if (r != 1 || status != 200 || !answer_ok(&answer, "id")) {
            errors++;
            fd = CURL_SOCKET_BAD;
        }
    }
    double t1 = now_seconds();
    report(count, errors, t1 - t0);
    if (h) curl_easy_cleanup(h);
    free(b.data);
    curl_global_cleanup();
    return 0;
}
