#ifndef CSANDBOX_H
#define CSANDBOX_H
// Placeholder until the sandbox lands (issue 6): the spawn happens here, in C.
int csandbox_version(void);
#endif
