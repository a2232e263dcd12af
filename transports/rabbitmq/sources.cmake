# rabbitmq:// and rabbitmqs:// — AMQP 0-9-1 through librabbitmq (linked by the top level).
list(APPEND EW_SOURCES
  transports/rabbitmq/rmq_acks.c
  transports/rabbitmq/rmq_conn.c
  transports/rabbitmq/rmq_guard.c
  transports/rabbitmq/rmq_io.c
  transports/rabbitmq/rmq_options.c
  transports/rabbitmq/rmq_props.c
  transports/rabbitmq/rmq_pub.c
  transports/rabbitmq/rmq_topology.c
  transports/rabbitmq/rmq_transport.c
  transports/rabbitmq/rmq_wire.c)
# rabbitmqs:// checks an IP address host through OpenSSL, which the top
# level links.
