/* ActiveMQ Artemis management requests and answers (see artm.h). */
#include "transports/artemis/artm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

void artm_ask_address(artm_req *r, const char *queue)
{
    memset(r, 0, sizeof *r);
    snprintf(r->resource, sizeof r->resource, "queue.%s", queue);
    r->props[0] = "_AMQ_ResourceName";
    r->props[1] = r->resource;
    r->props[2] = "_AMQ_Attribute";
    r->props[3] = "address";
}

/* An operation of resource "broker" with params as its body. */
static ew_err ask_broker(artm_req *r, const char *operation, json_t *params)
{
    memset(r, 0, sizeof *r);
    r->body = params ? json_dumps(params, JSON_COMPACT) : NULL;
    json_decref(params);
    if (!r->body)
        return EW_ENOMEM;
    r->props[0] = "_AMQ_ResourceName";
    r->props[1] = "broker";
    r->props[2] = "_AMQ_OperationName";
    r->props[3] = operation;
    return EW_OK;
}

ew_err artm_ask_create(artm_req *r, const char *queue, const char *address, bool durable,
                       long delay_ms)
{
    /* createQueue(configuration as JSON text, ignoreIfExists) */
    json_t *cfg = json_pack("{s:s, s:s, s:s, s:b, s:b, s:I, s:I, s:b}", "name", queue,
                            "address", address, "routing-type", "MULTICAST", "durable",
                            durable, "auto-delete", 1, "auto-delete-delay",
                            (json_int_t)delay_ms, "auto-delete-message-count",
                            (json_int_t)-1, "auto-create-address", 1);
    char *text = cfg ? json_dumps(cfg, JSON_COMPACT) : NULL;
    json_decref(cfg);
    json_t *params = text ? json_pack("[s, b]", text, 1) : NULL;
    free(text);
    return ask_broker(r, "createQueue", params);
}

ew_err artm_ask_destroy(artm_req *r, const char *queue)
{
    /* destroyQueue(name, removeConsumers, autoDeleteAddress) */
    return ask_broker(r, "destroyQueue", json_pack("[s, b, b]", queue, 1, 0));
}

void artm_req_free(artm_req *r)
{
    free(r->body);
    r->body = NULL;
}

/* The first element of an answer: a string, or NULL (json_decref *root). */
static const char *first_string(const char *reply, json_t **root)
{
    *root = json_loads(reply, 0, NULL);
    return json_string_value(json_array_get(*root, 0));
}

ew_err artm_address_is(const char *reply, const char *address)
{
    json_t *root;
    const char *got = first_string(reply, &root);
    ew_err rc = got && strcmp(got, address) == 0 ? EW_OK : EW_ENOTFOUND;
    json_decref(root);
    return rc;
}

ew_err artm_created(const char *reply)
{
    json_t *root;
    const char *first = first_string(reply, &root);
    json_t *cfg = first ? json_loads(first, 0, NULL) : NULL;
    ew_err rc = json_is_object(cfg) ? EW_OK : EW_EBROKER;
    json_decref(cfg);
    json_decref(root);
    return rc;
}

ew_err artm_destroyed(const char *reply, char *why, size_t whylen)
{
    json_t *root;
    const char *text = first_string(reply, &root);
    ew_err rc = EW_OK;
    if (text && !strstr(text, "AMQ229017")) {
        snprintf(why, whylen, "%s", text);
        rc = EW_EBROKER;
    }
    json_decref(root);
    return rc;
}
