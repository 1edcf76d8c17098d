// Running other programs (nft, ip, nsenter, ourselves) through TestSupport's Subprocess, and
// failing the probe: a failed check prints `FAIL: ...` and exits 1.
import Glibc
import TestSupport

/// Starts `arguments` (a name looked up in PATH), which keeps running; a failure to start ends the probe.
func start(_ arguments: [String]) -> Subprocess {
    do {
        return try Subprocess(arguments[0], Array(arguments.dropFirst()))
    } catch {
        fail("\(error)")
    }
}

/// Runs a command to completion: exit status and its output, stdout then stderr.
@discardableResult
func run(_ arguments: [String]) -> (status: Int32, output: String) {
    let process = start(arguments)
    guard let status = process.waitForExit(seconds: 30) else {
        fail("\(arguments.joined(separator: " ")) did not exit in 30 s")
    }
    return (status, process.stdout + process.stderr)
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

let selfPath = readLink("/proc/self/exe") ?? CommandLine.arguments[0]

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
