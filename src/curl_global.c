/* curl_global.c -- libcurl's process-wide initialisation, done once for every HTTP client.
 * Must not: configure or own any transfer; the clients do. */
#include "curl_global.h"

#include <curl/curl.h>
#include <pthread.h>

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_init(void)
{
    (void)curl_global_init(CURL_GLOBAL_DEFAULT);
}

void curl_global_once(void)
{
    pthread_once(&curl_once, curl_init);
}
