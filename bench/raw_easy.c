/* Baseline 1: raw libcurl, one easy handle reused for every request, sequential.
 *
 *   raw_easy BASE_URL TOKEN CALL ID COUNT
 *
 * CALL is one of get_message, send_message, update_message_status,
 * get_conversation, get_messages (a page of 20 of conversation ID), each_message
 * (5 pages of 20 of conversation ID in a row, each following the previous
 * page's lastMessageId, then again from the first; COUNT counts pages): the
 * same HTTP requests the library makes for that method.
 * ID is the message id (or conversation id for get_conversation; ignored for
 * send_message). The handle keeps its connection alive across requests.
 * With an https:// BASE_URL (the TLS rows), BENCH_CAINFO names the CA file the server's certificate is verified
 * against (peer and host, libcurl's defaults); the handle's own TLS session cache resumes a session when the
 * server closes the kept-alive connection.
 * Prints one "BENCH requests=N errors=E seconds=S" line.
 */
#include "common.h"

#define USER_AGENT "leadconnector-bench-raw/1 libcurl"

int main(int argc, char **argv)
{
    struct seq_args args = seq_args(argc, argv);
    const char *base = args.base, *token = args.token, *call = args.call, *id = args.id;
    long count = args.count;

    char url[2048];
    const char *method = "GET", *payload = NULL, *field = "id";
    if (strcmp(call, "get_message") == 0) {
        snprintf(url, sizeof url, "%s/conversations/messages/%s", base, id);
    } else if (strcmp(call, "send_message") == 0) {
        snprintf(url, sizeof url, "%s/conversations/messages", base);
        method = "POST";
        payload = "{\"type\":\"SMS\",\"contactId\":\"contact_demo_1\",\"message\":\"hi\"}";
        field = "messageId";
    } else if (strcmp(call, "update_message_status") == 0) {
        snprintf(url, sizeof url, "%s/conversations/messages/%s/status", base, id);
        method = "PUT";
        payload = "{\"status\":\"read\"}";
        field = "messageId";
    } else if (strcmp(call, "get_conversation") == 0) {
        snprintf(url, sizeof url, "%s/conversations/%s", base, id);
    } else if (strcmp(call, "get_messages") == 0 || strcmp(call, "each_message") == 0) {
        snprintf(url, sizeof url, "%s/conversations/%s/messages?limit=20", base, id);
        field = "messages";
    } else {
        fprintf(stderr, "unknown CALL: %s\n", call);
        return 2;
    }

    decode_init();
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "curl_global_init failed\n");
        return 1;
    }
    CURL *h = curl_easy_init();
    if (!h) {
        fprintf(stderr, "curl_easy_init failed\n");
        return 1;
    }
    struct body body = { 0 };
    struct curl_slist *headers = api_headers(token, payload != NULL);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(h, CURLOPT_USERAGENT, USER_AGENT);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, body_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 30L);
    if (getenv("BENCH_CAINFO"))
        curl_easy_setopt(h, CURLOPT_CAINFO, getenv("BENCH_CAINFO"));
    if (payload) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, payload);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(payload));
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    }

    long errors = 0;
    double t0 = now_seconds();
    int paging = strcmp(call, "each_message") == 0;
    char page_url[2300];
    for (long i = 0; i < count; i++) {
        if (paging) { /* page i % 5: the first, or after the last page's lastMessageId */
            const char *key = "\"lastMessageId\":\"", *p = NULL, *e = NULL;
            if (i % 5 != 0 && body.data && body.len < (1u << 24)) {
                body.data[body.len < body.cap ? body.len : body.cap - 1] = '\0';
                p = strstr(body.data, key);
                if (p) e = strchr(p += strlen(key), '"');
            }
            if (p && e && e - p < 200)
                snprintf(page_url, sizeof page_url, "%s&lastMessageId=%.*s", url, (int)(e - p), p);
            else
                snprintf(page_url, sizeof page_url, "%s", url);
            curl_easy_setopt(h, CURLOPT_URL, page_url);
        }
        body.len = 0;
        CURLcode rc = curl_easy_perform(h);
        long status = 0;
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        if (rc != CURLE_OK || status < 200 || status > 299 || !answer_ok(&body, field)) {
            if (errors++ == 0)
                fprintf(stderr, "raw_easy %s: first error: %s, HTTP %ld\n", call,
                        rc != CURLE_OK ? curl_easy_strerror(rc) : "ok", status);
        }
    }
    double elapsed = now_seconds() - t0;
    report(count, errors, elapsed);

    curl_slist_free_all(headers);
    curl_easy_cleanup(h);
    free(body.data);
    curl_global_cleanup();
    return 0;
}
