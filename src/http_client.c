/* http_client.c -- what every HTTP client shares: libcurl's process-wide initialisation, done
 * once, the options of every handle, and the host part of a URL for messages.
 * Must not: own a transfer or know any service's requests. */
#include "http_client.h"

#include <curl/curl.h>
#include <pthread.h>
#include <string.h>

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_init(void)
{
    (void)curl_global_init(CURL_GLOBAL_DEFAULT);
}

char *http_client_url_host(const char *url)
{
    const char *h = strstr(url, "://");
    h = h ? h + 3 : url;
    size_t len = strcspn(h, "/?#");
    const char *at = memchr(h, '@', len);
    if (at) {
        len -= (size_t)(at + 1 - h);
        h = at + 1;
    }
    return strndup(h, len);
}

int http_client_easy(curl_write_callback on_data, void *ud, char *errbuf, CURL **out)
{
    pthread_once(&curl_once, curl_init);
    CURL *c = *out = curl_easy_init();
    if (!c)
        return -1;
    CURLcode rc = CURLE_OK;
#if LIBCURL_VERSION_NUM >= 0x075500
    rc |= curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
#else
    rc |= curl_easy_setopt(c, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    rc |= curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    rc |= curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    rc |= curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
    rc |= curl_easy_setopt(c, CURLOPT_USERAGENT, "cs-pdns");
    rc |= curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    rc |= curl_easy_setopt(c, CURLOPT_WRITEDATA, ud);
    rc |= curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    return rc == CURLE_OK ? 0 : -2;
}
