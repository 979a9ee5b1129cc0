/* Baseline 2: raw libcurl multi interface, CONCURRENCY transfers in flight.
 *
 *   raw_multi BASE_URL TOKEN MESSAGE_ID COUNT CONCURRENCY
 *
 * CONCURRENCY easy handles, each reused: as soon as one GET message finishes
 * it is put back on the multi handle until COUNT requests have been started.
 * Connections come from the multi handle's shared connection cache.
 * Prints one "BENCH requests=N errors=E seconds=S" line.
 */
#include "common.h"

#define USER_AGENT "leadconnector-bench-raw/1 libcurl"

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: %s BASE_URL TOKEN MESSAGE_ID COUNT CONCURRENCY\n", argv[0]);
        return 2;
    }
    const char *base = argv[1], *token = argv[2], *id = argv[3];
    long count = parse_count(argv[4], "COUNT");
    long conc = parse_count(argv[5], "CONCURRENCY");
    if (conc > count)
        conc = count;

    char url[2048];
    snprintf(url, sizeof url, "%s/conversations/messages/%s", base, id);

    decode_init();
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "curl_global_init failed\n");
        return 1;
    }
    CURLM *multi = curl_multi_init();
    struct curl_slist *headers = api_headers(token, 0);
    CURL **handles = calloc((size_t)conc, sizeof *handles);
    struct body *bodies = calloc((size_t)conc, sizeof *bodies);
    if (!multi || !handles || !bodies) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, conc);

    long started = 0, done = 0, errors = 0;
    double t0 = now_seconds();
    for (long i = 0; i < conc; i++) {
        CURL *h = curl_easy_init();
        if (!h) {
            fprintf(stderr, "curl_easy_init failed\n");
            return 1;
        }
        handles[i] = h;
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
        curl_easy_setopt(h, CURLOPT_USERAGENT, USER_AGENT);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, body_write);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &bodies[i]);
        curl_easy_setopt(h, CURLOPT_PRIVATE, &bodies[i]);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_TIMEOUT, 30L);
        curl_multi_add_handle(multi, h);
        started++;
    }

    while (done < count) {
        int running = 0;
        CURLMcode mc = curl_multi_perform(multi, &running);
        if (mc != CURLM_OK) {
            fprintf(stderr, "curl_multi_perform: %s\n", curl_multi_strerror(mc));
            return 1;
        }
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(multi, &left)) != NULL) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            CURL *h = msg->easy_handle;
            CURLcode rc = msg->data.result;
            struct body *b = NULL;
            long status = 0;
            curl_easy_getinfo(h, CURLINFO_PRIVATE, (char **)&b);
            curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
            if (rc != CURLE_OK || status < 200 || status > 299 || !answer_ok(b, "id")) {
                if (errors++ == 0)
                    fprintf(stderr, "raw_multi: first error: %s, HTTP %ld\n",
                            rc != CURLE_OK ? curl_easy_strerror(rc) : "ok", status);
            }
            done++;
            curl_multi_remove_handle(multi, h);
            if (started < count) {
                b->len = 0;
                curl_multi_add_handle(multi, h);
                started++;
                running++;
            }
        }
        if (done < count && running > 0) {
            mc = curl_multi_poll(multi, NULL, 0, 1000, NULL);
            if (mc != CURLM_OK) {
                fprintf(stderr, "curl_multi_poll: %s\n", curl_multi_strerror(mc));
                return 1;
            }
        }
    }
    double elapsed = now_seconds() - t0;
    report(count, errors, elapsed);

    for (long i = 0; i < conc; i++) {
        curl_easy_cleanup(handles[i]);
        free(bodies[i].data);
    }
    free(handles);
    free(bodies);
    curl_slist_free_all(headers);
    curl_multi_cleanup(multi);
    curl_global_cleanup();
    return 0;
}
