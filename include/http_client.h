/* http_client.h -- what the HTTP clients (CloudStack, PowerDNS API) share: libcurl's process-wide
 * initialisation, their handles' common options, the part of a URL their messages may show.
 * Must not: own a transfer or know any service's requests. */
#ifndef CSPDNS_HTTP_CLIENT_H
#define CSPDNS_HTTP_CLIENT_H

#include <curl/curl.h>

/* host[:port] of scheme://[userinfo@]host[:port]/path, without the userinfo (which may hold a
 * password), for messages. malloc'ed (caller frees); NULL when memory ran out. */
char *http_client_url_host(const char *url);

/* A libcurl handle set up as every client of ours wants it: http and https only, no signals, no
 * redirects, TCP keepalive, cs-pdns's user agent, the answer handed to on_data(ud), errors written
 * to errbuf (CURL_ERROR_SIZE bytes, kept by the caller). The caller adds its method, timeouts
 * and TLS options. The first call, from whichever client and thread, runs curl_global_init.
 * *out is NULL, and the return value -1, when libcurl failed to initialise; -2 when it lacks one
 * of those options. */
int http_client_easy(curl_write_callback on_data, void *ud, char *errbuf, CURL **out);

#endif
