/* http_client.c -- what every HTTP client shares: libcurl's process-wide initialisation, done
 * once, and the host part of a URL for messages. Must not: configure or own any transfer. */
#include "http_client.h"

#include <curl/curl.h>
#include <pthread.h>
#include <string.h>

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_init(void)
{
    (void)curl_global_init(CURL_GLOBAL_DEFAULT);
}

void http_client_global_init(void)
{
    pthread_once(&curl_once, curl_init);
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
