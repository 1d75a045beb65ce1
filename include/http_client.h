/* http_client.h -- what the HTTP clients (CloudStack, PowerDNS API) share: libcurl's process-wide
 * initialisation and the part of a URL their messages may show. Must not: own any transfer. */
#ifndef CSPDNS_HTTP_CLIENT_H
#define CSPDNS_HTTP_CLIENT_H

/* Calls curl_global_init once per process, whichever client comes first and from any thread.
 * A failure there makes the next curl_easy_init return NULL, which the clients report. */
void http_client_global_init(void);

/* host[:port] of scheme://[userinfo@]host[:port]/path, without the userinfo (which may hold a
 * password), for messages. malloc'ed (caller frees); NULL when memory ran out. */
char *http_client_url_host(const char *url);

#endif
