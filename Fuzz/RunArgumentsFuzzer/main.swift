// `berth run`'s command line: no crash; a command line that parses, written back out, parses to the
// same value; every `-p` it reads passes PortSpecFuzzer's checks; a rejection is one non-empty line.
// Fuzz bytes become argv, split on NUL or newline.

import FuzzSupport
import Glibc
import Mappings

/// The command line that asks for `arguments`, every option spelled out.
func commandLine(_ arguments: RunArguments) -> [String] {
    var args: [String] = []
    for spec in arguments.specs { args += ["-p", spec] }
    args += [
        "--connect-timeout", "\(arguments.connectTimeout)",
        "--half-close-timeout=\(arguments.halfCloseTimeout)",
        "--udp-timeout", "\(arguments.udpTimeout)",
        "--udp-max-flows", "\(arguments.udpMaxFlows)",
        "--busy-poll", "\(arguments.busyPoll)",
        "--pipe-size", "\(arguments.pipeSize)",
        "--bulk-after", "\(arguments.bulkAfter)",
        "--bulk-nice", "\(arguments.bulkNice)",
        "--log-level", arguments.logLevel,
    ]
    if let bulkLoops = arguments.bulkLoops { args += ["--bulk-loops", "\(bulkLoops)"] }
    if let unreplied = arguments.udpTimeoutUnreplied { args += ["--udp-timeout-unreplied", "\(unreplied)"] }
    if let answered = arguments.udpMaxAnswered { args += ["--udp-max-answered", "\(answered)"] }
    if let threads = arguments.threads { args += ["--threads", "\(threads)"] }
    if let mode = arguments.mode { args += ["--mode", mode.rawValue] }
    if let nftTable = arguments.nftTable { args += ["--nft-table", nftTable] }
    if let logFile = arguments.logFile { args += ["--log-file", logFile] }
    if let socket = arguments.logSyslog { args += ["--log-syslog-socket", socket] }
    if let version = arguments.proxyProtocol { args += ["--proxy-protocol", version.rawValue] }
    if arguments.proxyProtocolUDP { args += ["--proxy-protocol-udp", "v2"] }
    return args + ["--", arguments.target.description]
}

/// One input. Exported under libFuzzer's name too, for a link that takes libFuzzer's own `main`.
@_cdecl("LLVMFuzzerTestOneInput")
func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let args = arguments(bytes(data, size))
    let command: RunCommand
    do {
        command = try RunArguments.parse(args)
    } catch {
        expectOneLine(error.message, "RunArguments.parse(\(args))")
        return 0
    }
    guard case .run(let parsed) = command else { return 0 }
    let again = commandLine(parsed)
    do {
        expectEqual(try RunArguments.parse(again), command, "round trip of \(args) as \(again)")
    } catch {
        fatalError("\(args) parses, but \(again) does not: \(error)")
    }
    for spec in parsed.specs { checkPortSpec(spec) }
    return 0
}

exit(runFuzzer(testOneInput))
