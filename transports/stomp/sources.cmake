# The STOMP 1.2 transport: a pure frame codec, the dialects' addressing, and
# a client with its own I/O thread (on core/sock.c: TCP or OpenSSL). The rabbitmq dialect
# administers RabbitMQ over AMQP 0-9-1 (transports/rmqadmin), which the top
# level builds and links with it.
list(APPEND EW_SOURCES
  transports/stomp/frame.c
  transports/stomp/options.c
  transports/stomp/dialect.c
  transports/stomp/heartbeat.c
  transports/stomp/message.c
  transports/stomp/io.c
  transports/stomp/io_frames.c
  transports/stomp/io_conn.c
  transports/stomp/transport.c)
