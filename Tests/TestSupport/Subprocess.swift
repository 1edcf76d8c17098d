// Runs the built berth binary the way a user or dockerd would: argv, extra descriptors
// (fd 3 and 4 for the docker-proxy protocol), stdout and stderr captured. Also what
// NetfilterProbe runs (nft, ip, nsenter, itself), without Foundation's Process.

import CBerthLinux
import CTestSupport
import Glibc
import LinuxIO

package final class Subprocess: @unchecked Sendable {
    package let pid: pid_t
    private let stdoutFD: Int32
    private let stderrFD: Int32
    private var stdoutBuffer: [UInt8] = []
    private var stderrBuffer: [UInt8] = []
    private var exitStatus: Int32?

    /// `path`: a file, or a bare name looked up in PATH (`nft`).
    /// `extraFDs`: child fd number → parent fd to dup there (e.g. [3: pipeWriteEnd], or [0: file] for
    /// stdin).
    package init(
        _ path: String,
        _ arguments: [String],
        extraFDs: [Int32: Int32] = [:],
        environment: [String]? = nil
    ) throws {
        var out: [Int32] = [0, 0]
        var err: [Int32] = [0, 0]
        guard CBerthLinux_pipe2(&out, CBerthLinux_O_CLOEXEC) == 0, CBerthLinux_pipe2(&err, CBerthLinux_O_CLOEXEC) == 0
        else { throw TestFailure("pipe: \(errnoText())") }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, out[1], 1)
        posix_spawn_file_actions_adddup2(&actions, err[1], 2)
        for (child, parent) in extraFDs.sorted(by: { $0.key < $1.key }) {
            posix_spawn_file_actions_adddup2(&actions, parent, child)
        }
        CTestSupport_spawn_closefrom(&actions, max(extraFDs.keys.max() ?? 2, 2) + 1)
        // A fresh signal mask: tests may have blocked signals berth must see.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK))

        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        let env = (environment ?? Subprocess.currentEnvironment()).map { strdup($0) } + [nil]
        defer { for p in env { free(p) } }
        var child: pid_t = 0
        let rc = posix_spawnp(&child, path, &actions, &attributes, argv, env)
        close(out[1])
        close(err[1])
        guard rc == 0 else {
            close(out[0])
            close(err[0])
            throw TestFailure("spawn \(path): \(errnoText(rc))")
        }
        pid = child
        stdoutFD = out[0]
        stderrFD = err[0]
    }

    deinit {
        if exitStatus == nil {
            kill(pid, SIGKILL)
            _ = waitForExit(seconds: 5)
        }
        close(stdoutFD)
        close(stderrFD)
    }

    /// This process's environment, `NAME=value` each.
    package static func currentEnvironment() -> [String] {
        var result: [String] = []
        var p = environ
        while let entry = p.pointee {
            result.append(String(cString: entry))
            p += 1
        }
        return result
    }

    /// Reads what is available on stdout and stderr, waiting up to `milliseconds`.
    private func pump(milliseconds: Int32) {
        var fds = [
            pollfd(fd: stdoutFD, events: Int16(POLLIN), revents: 0),
            pollfd(fd: stderrFD, events: Int16(POLLIN), revents: 0),
        ]
        guard poll(&fds, 2, milliseconds) > 0 else { return }
        var chunk = [UInt8](repeating: 0, count: 65536)
        for (i, f) in fds.enumerated() where f.revents != 0 {
            let n = read(f.fd, &chunk, chunk.count)
            if n > 0 {
                if i == 0 { stdoutBuffer += chunk[0..<n] } else { stderrBuffer += chunk[0..<n] }
            }
        }
    }

    package var stdout: String { String(decoding: stdoutBuffer, as: UTF8.self) }
    package var stderr: String { String(decoding: stderrBuffer, as: UTF8.self) }

    package var stdoutLines: [String] { stdout.split(separator: "\n").map(String.init) }

    /// Waits until stdout has `count` complete lines (or the process exits, or time runs out).
    @discardableResult
    package func waitForLines(_ count: Int, seconds: Double = 20) -> [String] {
        let deadline = Instant.now() + .milliseconds(Int(seconds * 1000))
        while Instant.now() < deadline {
            if stdoutBuffer.filter({ $0 == 10 }).count >= count { break }
            if exitStatus != nil || hasExited() {
                pump(milliseconds: 50)
                break
            }
            pump(milliseconds: 50)
        }
        return stdoutLines
    }

    private func hasExited() -> Bool {
        var status: Int32 = 0
        if waitpid(pid, &status, WNOHANG) == pid {
            exitStatus = status
            return true
        }
        return false
    }

    package func signal(_ signal: Int32) { kill(pid, signal) }

    /// Exit code (or 128 + signal), nil if it did not exit in time. Drains stdout/stderr meanwhile.
    package func waitForExit(seconds: Double = 20) -> Int32? {
        let deadline = Instant.now() + .milliseconds(Int(seconds * 1000))
        while exitStatus == nil && Instant.now() < deadline {
            if hasExited() { break }
            pump(milliseconds: 20)
        }
        pump(milliseconds: 0)
        pump(milliseconds: 0)
        guard let status = exitStatus else { return nil }
        let signalled = status & 0x7f
        return signalled == 0 ? (status >> 8) & 0xff : 128 + signalled
    }

    /// Runs to completion: (exit code, stdout, stderr).
    package static func run(
        _ path: String,
        _ arguments: [String],
        seconds: Double = 30
    ) throws -> (code: Int32?, stdout: String, stderr: String) {
        let p = try Subprocess(path, arguments)
        let code = p.waitForExit(seconds: seconds)
        return (code, p.stdout, p.stderr)
    }
}

/// Where the symbolic link at `path` points (`/proc/self/exe`, `/proc/PID/fd/N`); nil if it is none.
package func readLink(_ path: String) -> String? {
    var buffer = [CChar](repeating: 0, count: 4096)
    let n = readlink(path, &buffer, buffer.count - 1)
    guard n > 0 else { return nil }
    return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// The built `berth` binary next to the test bundle (`.build/<triple>/debug/berth`).
package func berthBinary() -> String { builtBinary("berth") }

/// The built executable `name` (`berth`, `berth-cni`) next to the test bundle.
package func builtBinary(_ name: String) -> String {
    var dir = readLink("/proc/self/exe") ?? ""
    while !dir.isEmpty && !dir.hasSuffix("/") { dir.removeLast() }
    // The test bundle is `<dir>/berthPackageTests.xctest`; the executables sit beside it.
    if access(dir + name, X_OK) == 0 { return dir + name }
    let candidate = dir + "../" + name
    return access(candidate, X_OK) == 0 ? candidate : (dir + name)
}

package var isRoot: Bool { geteuid() == 0 }
