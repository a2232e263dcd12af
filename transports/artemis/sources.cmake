# ActiveMQ Artemis management requests and answers, shared by the artemis
# dialects of stomp:// and amqp://. The top level includes it when either
# transport is built.
list(APPEND EW_SOURCES transports/artemis/artm.c)
