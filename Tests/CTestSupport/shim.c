// _GNU_SOURCE comes from Package.swift's cSettings.
#include "CTestSupport.h"
#include <sched.h>

int CTestSupport_setns(int fd, int nstype) { return setns(fd, nstype); }
const int CTestSupport_CLONE_NEWNET = CLONE_NEWNET;

int CTestSupport_spawn_closefrom(posix_spawn_file_actions_t *actions, int from) {
    return posix_spawn_file_actions_addclosefrom_np(actions, from);
}
