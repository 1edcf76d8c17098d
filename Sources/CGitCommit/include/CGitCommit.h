// The git commit berth was built from, as Mappings' BerthVersion reads it. The definition is
// Swift, in the GitCommit target, generated at build time by Sources/VersionStamp; declaring it
// here in C keeps it out of every Swift module's interface, so a new commit recompiles one
// generated file and relinks, instead of rebuilding every module that imports Mappings.
#ifndef CGITCOMMIT_H
#define CGITCOMMIT_H

/// The commit's hexadecimal digits, `*count` bytes (not terminated); none outside a git checkout.
const unsigned char *_Nonnull berth_git_commit(long *_Nonnull count);

#endif
