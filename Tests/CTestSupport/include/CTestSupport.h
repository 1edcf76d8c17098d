// Shims only the tests need: GNU extensions that Swift's Glibc module does not export (see
// DESIGN.md's pitfalls). No _GNU_SOURCE here: it is defined for the .c file only, or the module
// clashes with SwiftGlibc.
#ifndef C_TEST_SUPPORT_H
#define C_TEST_SUPPORT_H

#include <spawn.h>

// setns(2) is GNU: tests enter network namespaces they created.
int CTestSupport_setns(int fd, int nstype);
extern const int CTestSupport_CLONE_NEWNET;

// posix_spawn_file_actions_addclosefrom_np is GNU: a child gets only the descriptors it is given.
int CTestSupport_spawn_closefrom(posix_spawn_file_actions_t *actions, int from);

#endif
