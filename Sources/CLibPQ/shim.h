#ifndef CLIBPQ_SHIM_H
#define CLIBPQ_SHIM_H
// libpq, PostgreSQL's C client (Debian's libpq-dev; pkg-config adds /usr/include/postgresql).
#include <libpq-fe.h>
#endif
