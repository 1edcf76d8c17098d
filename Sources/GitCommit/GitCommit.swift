// berth_git_commit (CGitCommit.h) is defined in StampedCommit.swift, which Sources/VersionStamp writes
// into the build folder at build time; this file only gives the target a source of its own.
