#ifndef CLIBWEBSOCKETS_SHIM_H
#define CLIBWEBSOCKETS_SHIM_H
#include <libwebsockets.h>

// LWS_PRE is a macro Swift cannot import.
static const int clws_pre = LWS_PRE;

#endif
