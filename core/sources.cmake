list(APPEND EW_SOURCES
  core/error.c core/lasterr.c core/log.c core/sync.c core/time.c core/reconnect.c core/waker.c core/workq.c core/url.c core/hosts.c core/names.c
  core/envelope.c core/codec.c core/codec_msgpack.c core/codec_json.c core/codec_raw.c
  core/manager.c core/worker.c core/send.c core/metrics.c core/trace.c core/outcome.c core/dead_letters.c core/transports.c
  core/options.c core/options_tls.c)
