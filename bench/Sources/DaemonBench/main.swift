// berth-daemon-bench: how fast a running `berth daemon` adds and removes ports through its
// control API, and what it weighs holding many. It starts the daemon itself (userspace mode,
// on 127.0.0.1, a control socket in a temporary directory), times each request end to end
// (connect, HTTP request, the daemon binding or closing every listener on every loop, answer),
// and prints p50/p99 per batch size, then RSS with --hold ports published. One loop by default:
// each loop has a listener of its own per port, so 10,000 ports on 2 loops need 20,000 sockets,
// the whole descriptor limit of this machine.
//
//   swift run -c release --package-path bench berth-daemon-bench --berth .build/release/berth

import Control
import Glibc
import JSON
import LinuxIO

struct Options {
    var berth = "../.build/release/berth"
    var rounds = 30
    var hold = 10_000
    var threads = 1

    init(_ args: [String]) {
        var i = 0
        while i < args.count {
            let value = i + 1 < args.count ? args[i + 1] : ""
            switch args[i] {
            case "--berth": berth = value
            case "--rounds": rounds = Int(value) ?? rounds
            case "--hold": hold = Int(value) ?? hold
            case "--threads": threads = Int(value) ?? threads
            default:
                fail("unknown option \(args[i])")
                exit(2)
            }
            i += 2
        }
    }
}

func fail(_ text: String) {
    var line = "berth-daemon-bench: " + text + "\n"
    line.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}

/// Two decimals, right-aligned in `width`.
func fixed(_ value: Double, width: Int = 10) -> String {
    let hundredths = Int((value * 100).rounded())
    let text = "\(hundredths / 100).\(hundredths % 100 < 10 ? "0" : "")\(hundredths % 100)"
    return String(repeating: " ", count: max(0, width - text.count)) + text
}

func nanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

func percentile(_ values: [Double], _ p: Double) -> Double {
    let sorted = values.sorted()
    guard !sorted.isEmpty else { return .nan }
    return sorted[min(sorted.count - 1, Int((Double(sorted.count - 1) * p).rounded()))]
}

func rssKiB(_ pid: Int32) -> Int {
    guard let status = FileSystem.readSmallFile("/proc/\(pid)/status") else { return -1 }
    for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
        return Int(line.split(separator: " ").dropFirst().first ?? "") ?? -1
    }
    return -1
}

let options = Options(Array(CommandLine.arguments.dropFirst()))
let directory = String(cString: mkdtemp(strdup("/tmp/berth-daemon-bench-XXXXXX")))
let socket = directory + "/berth.sock"
var pid: pid_t = 0
let argv = [
    options.berth, "daemon", "--mode", "userspace", "--threads", "\(options.threads)", "--control", socket,
    "--allow-target", "127.0.0.0/8",
]
let cArgs = argv.map { strdup($0) } + [nil]
guard posix_spawn(&pid, options.berth, nil, nil, cArgs, environ) == 0 else {
    fail("cannot start \(options.berth)")
    exit(1)
}
defer {
    kill(pid, SIGTERM)
    var status: Int32 = 0
    waitpid(pid, &status, 0)
    rmdir(directory)
}
for _ in 0..<200 where !FileSystem.exists(socket) { usleep(10_000) }
// Ready once it answers.
for _ in 0..<200 where (try? ControlClient.request("GET", "/v1/info", socketPath: socket)) == nil { usleep(10_000) }

func add(_ count: Int, owner: String) -> Bool {
    let specs = (0..<count).map { _ in JSONValue.string("127.0.0.1::80") }
    let body = JSONValue.object([
        ("target", .string("127.0.0.1")), ("publish", .array(specs)), ("owner", .string(owner)),
    ])
    return (try? ControlClient.request("POST", "/v1/berth/ports", body: body, socketPath: socket).status) == 201
}

func remove(owner: String) -> Bool {
    (try? ControlClient.request("DELETE", "/v1/berth/ports?owner=\(owner)", socketPath: socket).status) == 200
}

print("berth daemon control API, \(options.threads) loops, \(options.rounds) rounds a size (\(argv[0]))")
print("ports  add p50 ms  add p99 ms  remove p50 ms  remove p99 ms")
let idle = rssKiB(pid)
for size in [1, 100, 1000] {
    var adds: [Double] = []
    var removes: [Double] = []
    for round in 0..<options.rounds {
        let t0 = nanos()
        guard add(size, owner: "r\(round)") else {
            fail("adding \(size) ports failed")
            exit(1)
        }
        let t1 = nanos()
        guard remove(owner: "r\(round)") else {
            fail("removing \(size) ports failed")
            exit(1)
        }
        let t2 = nanos()
        adds.append(Double(t1 - t0) / 1e6)
        removes.append(Double(t2 - t1) / 1e6)
    }
    let row: [Double] = [
        percentile(adds, 0.5), percentile(adds, 0.99), percentile(removes, 0.5), percentile(removes, 0.99),
    ]
    var line = String(size)
    line += String(repeating: " ", count: max(0, 7 - line.count))
    for value in row { line += fixed(value) + "  " }
    print(line)
}
// Hold many: in adds of 1,000.
var held = 0
while held < options.hold {
    let n = min(1000, options.hold - held)
    guard add(n, owner: "hold") else {
        fail("holding \(held + n) ports failed (ulimit -n?)")
        break
    }
    held += n
}
usleep(200_000)
let full = rssKiB(pid)
let perPort = Double(full - idle) / Double(max(1, held))
print("RSS idle \(idle) KiB; with \(held) ports \(full) KiB: \(fixed(perPort, width: 0)) KiB a port")
