# The AMQP 1.0 transport (qpid-proton-c; its rabbitmq dialect administers
# RabbitMQ through transports/rmqadmin, which the top level builds and links).
list(APPEND EW_SOURCES
  transports/amqp/amqp10_options.c
  transports/amqp/amqp10_address.c
  transports/amqp/amqp10_message.c
  transports/amqp/amqp10_declare.c
  transports/amqp/amqp10_link.c
  transports/amqp/amqp10_io.c
  transports/amqp/amqp10_send.c
  transports/amqp/amqp10_recv.c
  transports/amqp/amqp10_fetch.c
  transports/amqp/amqp10_artemis.c
  transports/amqp/amqp10_transport.c)

# Debian's libqpid-proton.pc (0.37) sets prefix=${pcfiledir}/../.., one level
# short, so its include directory (/usr/lib/include) does not exist and CMake
# refuses to generate with it. Keep only include directories that exist (the
# headers are in /usr/include, which the compiler searches anyway).
if(TARGET PkgConfig::PROTON)
  get_target_property(_ew_proton_inc PkgConfig::PROTON INTERFACE_INCLUDE_DIRECTORIES)
  set(_ew_proton_ok)
  foreach(_d IN LISTS _ew_proton_inc)
    if(EXISTS "${_d}")
      list(APPEND _ew_proton_ok "${_d}")
    endif()
  endforeach()
  set_target_properties(PkgConfig::PROTON PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_ew_proton_ok}")
endif()
