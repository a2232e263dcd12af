# The STOMP 1.2 transport: a pure frame codec, the dialects' addressing, and
# a client with its own I/O thread (TCP or OpenSSL). The rabbitmq dialect
# declares exchanges over AMQP 0-9-1, so it needs librabbitmq even when the
# rabbitmq:// and amqp:// transports are not built.
list(APPEND EW_SOURCES
  transports/stomp/frame.c
  transports/stomp/options.c
  transports/stomp/dialect.c
  transports/stomp/heartbeat.c
  transports/stomp/message.c
  transports/stomp/sock.c
  transports/stomp/topology.c
  transports/stomp/io.c
  transports/stomp/transport.c)
if(NOT EW_WITH_RABBITMQ AND NOT EW_WITH_AMQP)
  pkg_check_modules(RABBITMQ REQUIRED IMPORTED_TARGET librabbitmq)
  list(APPEND EW_PRIVATE_LIBS PkgConfig::RABBITMQ)
  string(APPEND EW_PC_REQUIRES " librabbitmq")
endif()
