/* curl_global.h -- libcurl's process-wide initialisation, shared by the HTTP clients
 * (CloudStack, PowerDNS API). Must not: configure or own any transfer. */
#ifndef CSPDNS_CURL_GLOBAL_H
#define CSPDNS_CURL_GLOBAL_H

/* Calls curl_global_init once per process, whichever client comes first and from any thread.
 * A failure there makes the next curl_easy_init return NULL, which the clients report. */
void curl_global_once(void);

#endif
