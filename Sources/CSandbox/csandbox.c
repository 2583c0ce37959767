#include "csandbox.h"
int csandbox_version(void) { return 0; }
