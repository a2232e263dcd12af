# RabbitMQ administration over AMQP 0-9-1 (librabbitmq): connection, TLS,
# error mapping and declarations shared by rabbitmq://, and the rabbitmq
# dialects of stomp:// and amqp://. The top level includes it, and links
# librabbitmq and OpenSSL, when any of those transports is built.
list(APPEND EW_SOURCES
  transports/rmqadmin/rmqa_conn.c
  transports/rmqadmin/rmqa_admin.c)
