// berth_git_commit (CGitCommit.h) is defined in StampedCommit.swift, which Plugins/VersionStamp writes
// into the build folder at build time; this file only gives the target a source of its own.
