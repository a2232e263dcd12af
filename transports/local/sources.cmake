list(APPEND EW_SOURCES transports/local/local.c)
