// The git commit berth is built from, for `berth --version` (Mappings' BerthVersion): a build
// command writes StampedCommit.swift, the definition of berth_git_commit (Sources/CGitCommit), for the
// GitCommit target. It runs again whenever HEAD moves (its inputs are HEAD and HEAD's reflog, which
// every commit, checkout and reset appends to) and rewrites the file only when the commit changed.
// Outside a git checkout of this package (a tarball, a folder inside another repository) the
// commit is empty. (SwiftPM keeps a plugin's commands between builds, so a prebuild command, which
// would run at every build, is not run again after a commit: hence a build command with inputs.)

import Foundation
import PackagePlugin

@main
struct VersionStamp: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        let package = context.package.directoryURL
        let output = context.pluginWorkDirectoryURL.appending(path: "StampedCommit.swift")
        return [
            .buildCommand(
                displayName: "Stamping the git commit into \(target.name)",
                executable: URL(filePath: "/bin/sh"),
                arguments: ["-c", Self.script, "stamp", package.path, output.path],
                inputFiles: Self.headFiles(package),
                outputFiles: [output]
            )
        ]
    }

    /// `.git/HEAD` and `.git/logs/HEAD` of the package's own checkout, a worktree's (`.git` is then
    /// a file naming its git directory) included; none outside a checkout.
    static func headFiles(_ package: URL) -> [URL] {
        let dotGit = package.appending(path: ".git")
        var gitDirectory = dotGit
        if let text = try? String(contentsOf: dotGit, encoding: .utf8), text.hasPrefix("gitdir: ") {
            let path = text.dropFirst("gitdir: ".count).trimmingCharacters(in: .whitespacesAndNewlines)
            gitDirectory = path.hasPrefix("/") ? URL(filePath: path) : package.appending(path: path)
        }
        return ["HEAD", "logs/HEAD"].map { gitDirectory.appending(path: $0) }
            .filter { FileManager.default.fileExists(atPath: $0.path) }
    }

    /// $1: the package, $2: the file to write.
    static let script = """
        top=$(git -C "$1" rev-parse --show-toplevel 2>/dev/null) && \
        [ "$(cd "$top" && pwd -P)" = "$(cd "$1" && pwd -P)" ] && \
        commit=$(git -C "$1" rev-parse --short=12 HEAD 2>/dev/null) || commit=
        {
            echo '// Generated at build time by Sources/VersionStamp: the commit of the checkout berth is built from.'
            echo '@_cdecl("berth_git_commit")'
            echo 'public func berthGitCommit(_ count: UnsafeMutablePointer<Int>) -> UnsafePointer<UInt8> {'
            printf '    let commit: StaticString = "%s"\\n' "$commit"
            echo '    count.pointee = commit.utf8CodeUnitCount'
            echo '    return commit.utf8Start'
            echo '}'
        } > "$2.new" &&
        if cmp -s "$2.new" "$2"; then rm -f "$2.new"; else mv "$2.new" "$2"; fi
        """
}
