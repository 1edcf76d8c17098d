// Running other programs (nft, ip, nsenter, ourselves) without Foundation's Process, which
// wants a CFRunLoop wakeup socket that is not always available in a fresh namespace.
#if canImport(Glibc)
import Glibc
#endif

/// Starts `arguments` (looked up in PATH) with stdout and stderr on a pipe; returns the pid and
/// the read end.
func spawn(_ arguments: [String]) -> (pid: pid_t, output: Int32) {
    var fds: [Int32] = [0, 0]
    guard pipe(&fds) == 0 else { fatalError("pipe: \(String(cString: strerror(errno)))") }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addclose(&actions, fds[0])
    posix_spawn_file_actions_adddup2(&actions, fds[1], 1)
    posix_spawn_file_actions_adddup2(&actions, fds[1], 2)
    posix_spawn_file_actions_addclose(&actions, fds[1])
    var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
    defer { for p in argv { free(p) } }
    var pid: pid_t = 0
    let rc = posix_spawnp(&pid, arguments[0], &actions, nil, &argv, environ)
    close(fds[1])
    guard rc == 0 else {
        close(fds[0])
        fatalError("spawn \(arguments[0]): \(String(cString: strerror(rc)))")
    }
    return (pid, fds[0])
}

/// Reads one line (without the newline) from `fd`; nil at EOF or after `timeoutMs`.
func readLine(_ fd: Int32, timeoutMs: Int32 = 5_000) -> String? {
    var line: [UInt8] = []
    var byte: UInt8 = 0
    while true {
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        if poll(&pfd, 1, timeoutMs) <= 0 { return nil }
        let got = read(fd, &byte, 1)
        if got <= 0 { return line.isEmpty ? nil : String(decoding: line, as: UTF8.self) }
        if byte == UInt8(ascii: "\n") { return String(decoding: line, as: UTF8.self) }
        line.append(byte)
    }
}

func readAll(_ fd: Int32) -> String {
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let got = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if got < 0 && errno == EINTR { continue }
        if got <= 0 { break }
        bytes += chunk[..<got]
    }
    return String(decoding: bytes, as: UTF8.self)
}

@discardableResult
func wait(_ pid: pid_t) -> Int32 {
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    // WIFEXITED / WEXITSTATUS / WTERMSIG are macros.
    if status & 0x7f == 0 { return (status >> 8) & 0xff }
    return 128 + (status & 0x7f)
}

/// Runs a command to completion: exit status and combined output.
@discardableResult
func run(_ arguments: [String]) -> (status: Int32, output: String) {
    let (pid, fd) = spawn(arguments)
    let output = readAll(fd)
    close(fd)
    return (wait(pid), output)
}

/// Runs a command that must succeed; a failure ends the probe.
@discardableResult
func must(_ arguments: [String]) -> String {
    let (status, output) = run(arguments)
    if status != 0 { fail("\(arguments.joined(separator: " ")) exited \(status): \(output)") }
    return output
}

func fail(_ message: String) -> Never {
    print("FAIL: \(message)")
    fflush(nil)
    exit(1)
}

func check(_ condition: Bool, _ message: @autoclosure () -> String) {
    if !condition { fail(message()) }
}

var selfPath: String {
    var buffer = [CChar](repeating: 0, count: 4096)
    let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    return n > 0
        ? String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : CommandLine.arguments[0]
}

func monotonicMs() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) * 1000 + Double(ts.tv_nsec) / 1_000_000
}

/// Milliseconds since `start`, two decimals.
func elapsed(since start: Double) -> String {
    let ms = (monotonicMs() - start) * 100
    return "\(ms.rounded() / 100)"
}
