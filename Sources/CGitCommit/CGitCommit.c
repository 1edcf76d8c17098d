// Only the declaration: GitCommit defines berth_git_commit (see the header).
#include "CGitCommit.h"
