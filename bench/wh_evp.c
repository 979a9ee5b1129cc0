/* Baseline of the webhook rows: a C loop calling OpenSSL's EVP verify directly, as a program written against
 * libcrypto would check an X-GHL-Signature: the key parsed once; per delivery, the base64 signature decoded and
 * one EVP_DigestVerifyInit + EVP_DigestVerify (Ed25519, no digest) over the raw body bytes.
 *
 *   wh_evp PUBLIC_KEY_PEM_FILE BODY_FILE SIGNATURE_B64 COUNT
 *
 * Prints one "BENCH requests=N errors=E seconds=S" line (a request is one verification).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: %s PUBLIC_KEY_PEM_FILE BODY_FILE SIGNATURE_B64 COUNT\n", argv[0]);
        return 2;
    }
    FILE *f = fopen(argv[1], "rb");
    EVP_PKEY *pk = f ? PEM_read_PUBKEY(f, NULL, NULL, NULL) : NULL;
    if (f) fclose(f);
    if (!pk) { fprintf(stderr, "cannot read the key %s\n", argv[1]); return 1; }
    f = fopen(argv[2], "rb");
    if (!f) { fprintf(stderr, "cannot read %s\n", argv[2]); return 1; }
    static unsigned char body[1 << 20];
    size_t blen = fread(body, 1, sizeof body, f);
    fclose(f);
    const char *sig = argv[3];
    size_t slen = strlen(sig);
    long count = strtol(argv[4], NULL, 10);
    if (count <= 0 || slen != 88) { fprintf(stderr, "bad COUNT or signature\n"); return 2; }

    long errors = 0;
    double t0 = now_seconds();
    for (long i = 0; i < count; i++) {
        unsigned char raw[67];
        if (EVP_DecodeBlock(raw, (const unsigned char *)sig, (int)slen) != 66) { errors++; continue; }
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        int ok = ctx && EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, pk) == 1 &&
                 EVP_DigestVerify(ctx, raw, 64, body, blen) == 1;
        EVP_MD_CTX_free(ctx);
        if (!ok) errors++;
    }
    double secs = now_seconds() - t0;
    printf("BENCH requests=%ld errors=%ld seconds=%.6f\n", count, errors, secs);
    EVP_PKEY_free(pk);
    return 0;
}
