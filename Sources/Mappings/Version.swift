import CGitCommit

/// berth's version, written here and nowhere else: `berth --version`, docker-proxy mode's `-v`,
/// `berth-cni --version` and the control API's `/v1/info` all print it, and the Makefile reads it
/// from the built binary for the man pages and the Debian package.
package enum BerthVersion {
    /// The release number.
    package static let number = "0.1.0"

    /// The commit of the git checkout berth was built from (Sources/VersionStamp); empty outside one.
    package static var commit: String {
        var count = 0
        let start = berth_git_commit(&count)
        return String(decoding: UnsafeBufferPointer(start: start, count: count), as: UTF8.self)
    }

    /// The number and the commit: `0.1.0 (git 9930a14c2f1e)`.
    package static var full: String { commit.isEmpty ? number : "\(number) (git \(commit))" }

    /// What `--version` prints: `berth 0.1.0 (git 9930a14c2f1e)`.
    package static func line(_ program: String = "berth") -> String { "\(program) \(full)" }
}
