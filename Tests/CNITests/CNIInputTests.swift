// What berth-cni makes of numbers, strings and shapes it cannot use, on stdin, in CNI_* and in the
// daemon's answers: a CNI error (code, one-line msg), never a trap.

import Control
import Glibc
import JSON
import LinuxIO
import Mappings
import Synchronization
import TestSupport
import XCTest

@testable import CNI

final class CNIInputTests: XCTestCase {
    /// Numbers a JSON document can hold that no index or port is: out of Int's and UInt16's range,
    /// fractions, and what strtod makes of them.
    private let notIntegers = ["1e300", "-1e19", "1.5", "9223372036854775808", "-9.3e18", "0.5e-3"]
    private let notPorts = [
        "1e300", "-1e19", "1.5", "65536", "4294967296", "9223372036854775808", "0", "-0", "1e-400", "-1",
    ]

    private func config(
        interface: String = "0",
        mappings: String = #"{"hostPort":8080,"containerPort":80}"#,
        control: String = "/run/berth-test-nobody-here.sock"
    ) -> [UInt8] {
        Array(
            """
            {"cniVersion":"1.0.0","name":"berthnet","type":"berth-cni","control":"\(control)",\
            "runtimeConfig":{"portMappings":[\(mappings)]},\
            "prevResult":{"interfaces":[{"name":"eth0","sandbox":"/var/run/netns/ctrA"}],\
            "ips":[{"address":"198.18.1.2/24","interface":\(interface)}]}}
            """.utf8
        )
    }

    private func run(_ command: CNICommand, _ stdin: [UInt8], ifname: String = "eth0") -> CNIError? {
        let environment = CNIEnvironment(
            command: command,
            containerID: "ctrA",
            netns: "/var/run/netns/ctrA",
            ifname: ifname
        )
        if case .failure(let error) = Plugin.run(environment, stdin: stdin) { return error }
        return nil
    }

    // MARK: prevResult

    func testAnInterfaceIndexThatIsNoIntegerIsCode7NotATrap() throws {
        for number in notIntegers {
            let shown = JSONValue.number(Double(number)!).serialized()
            for command in [CNICommand.add, .check] {
                let error = run(command, config(interface: number))
                XCTAssertEqual(error?.code, 7, "\(command) \(number)")
                XCTAssertEqual(
                    error?.msg,
                    "prevResult.ips[0].interface must be an index into prevResult.interfaces, not \(shown)",
                    "\(command) \(number)"
                )
            }
        }
        // An integer that names no interface is skipped, as before; -0 and 1e-400 are index 0.
        for (number, found) in [("1", false), ("-1", false), ("4294967296", false), ("-0", true), ("1e-400", true)] {
            let addresses = try PluginConfig.parse(config(interface: number)).containerAddresses(ifname: "eth0")
            XCTAssertEqual(addresses.v4, found ? IPAddress("198.18.1.2") : nil, number)
        }
        XCTAssertEqual(
            run(.add, config(interface: "1"))?.msg,
            "prevResult has no IP address for interface eth0 in the container"
        )
    }

    /// cJSON reads 1e400 as infinity, which has no JSON spelling: passed through, ADD's result
    /// would not be JSON.
    func testANumberBeyondADoubleIsCode6AndNamesWhere() {
        for number in ["1e400", "-1e400"] {
            let stdin = Array(
                #"{"cniVersion":"1.0.0","name":"n","prevResult":{"ips":[],"dns":{"x":[1,\#(number)]}}}"#.utf8
            )
            let error = run(.add, stdin)
            XCTAssertEqual(error?.code, 6, number)
            XCTAssertEqual(error?.msg, "a number in the network configuration is out of range", number)
            XCTAssertEqual(error?.details, "prevResult.dns.x[1] is \(number.hasPrefix("-") ? "-" : "")infinite")
        }
        let port = run(.add, config(mappings: #"{"hostPort":1e400,"containerPort":80}"#))
        XCTAssertEqual(port?.details, "runtimeConfig.portMappings[0].hostPort is infinite")
    }

    // MARK: runtimeConfig

    func testPortsOutOfRangeAreCode7NamingTheField() {
        for number in notPorts {
            for key in ["hostPort", "containerPort"] {
                let mapping =
                    key == "hostPort"
                    ? #"{"hostPort":\#(number),"containerPort":80}"# : #"{"hostPort":8080,"containerPort":\#(number)}"#
                let error = run(.add, config(mappings: mapping))
                XCTAssertEqual(error?.code, 7, "\(key) \(number)")
                XCTAssertTrue(
                    error?.msg.hasPrefix("\(key) must be a port number from 1 to 65535 in {") == true,
                    "\(key) \(number): \(String(describing: error))"
                )
            }
        }
    }

    // MARK: CNI_IFNAME and control

    func testAnIfnameThatIsNoInterfaceNameIsCode4() {
        for name in [
            "eth0/x", "a b", "a:b", "..", String(repeating: "e", count: 16), "eth\u{1}", "e\u{7f}", "e\u{85}",
            "e\u{2028}",
        ] {
            let env = ["CNI_COMMAND": "ADD", "CNI_CONTAINERID": "ctrA", "CNI_IFNAME": name, "CNI_NETNS": "/x"]
            XCTAssertThrowsError(try CNIEnvironment.read { env[$0] }, String(reflecting: name)) {
                XCTAssertEqual(($0 as? CNIError)?.code, 4)
                XCTAssertEqual(($0 as? CNIError)?.msg, "CNI_IFNAME \(quoted(name)) is not an interface name")
            }
        }
        let env = ["CNI_COMMAND": "DEL", "CNI_CONTAINERID": "ctrA", "CNI_IFNAME": "net1.100_x-y"]
        XCTAssertEqual(try CNIEnvironment.read { env[$0] }.ifname, "net1.100_x-y")
    }

    func testAControlPathWithControlCharactersIsRefused() {
        let stdin = Array(#"{"cniVersion":"1.0.0","name":"n","control":"/run/berth/b\u0001.sock"}"#.utf8)
        XCTAssertEqual(run(.add, stdin)?.msg, "control must be the absolute path of a berth daemon's socket")
    }

    /// A message shows the mapping it refuses; a member name there may hold a line break that JSON
    /// leaves raw (found by CNIConfigFuzzer with its dictionary's "\u2028").
    func testAMessageQuotingInputStaysOneLine() {
        let error = run(.add, config(mappings: #"{"hostPort":0,"containerPort":80,"x\u2028y\u0085":1}"#))
        XCTAssertEqual(
            error?.msg,
            #"hostPort must be a port number from 1 to 65535 in {"hostPort":0,"containerPort":80,"x\u{2028}y\u{85}":1}"#
        )
        XCTAssertEqual(CNIError(5, "a\u{2029}b", details: "c\nd").details, #"c\u{a}d"#)
    }

    // MARK: the daemon's answer

    func testADaemonsPortOutOfRangeIsCode5NotATrap() throws {
        for number in notPorts {
            for key in ["hostPort", "containerPort"] {
                let port =
                    key == "hostPort"
                    ? #"{"proto":"tcp","hostPort":\#(number),"containerPort":80}"#
                    : #"{"proto":"tcp","hostPort":8080,"containerPort":\#(number)}"#
                let daemon = try FakeDaemon(
                    answer: #"[{"owner":"cni/berthnet/ctrA/eth0","target":"198.18.1.2","ports":[\#(port)]}]"#
                )
                defer { daemon.stop() }
                let error = run(.check, config(control: daemon.path))
                XCTAssertEqual(error?.code, 5, "\(key) \(number)")
                XCTAssertEqual(error?.msg, "the berth daemon's port list does not read", "\(key) \(number)")
                XCTAssertTrue(
                    error?.details.hasPrefix("\(key) must be a port number from 1 to 65535 in {") == true,
                    "\(key) \(number): \(String(describing: error))"
                )
            }
        }
    }

    // MARK: the binary

    /// The report's case, as a runtime sees it: the error JSON on stdout and exit status 1, not
    /// SIGILL (132).
    func testTheBinaryAnswers1e300WithTheErrorJSON() throws {
        let binary = builtBinary("berth-cni")
        guard access(binary, X_OK) == 0 else { throw TestFailure("\(binary) is not built (swift build)") }
        let directory = try temporaryDirectory()
        let file = directory + "/stdin.json"
        let bytes = config(interface: "1e300")
        let out = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        XCTAssertEqual(write(out, bytes, bytes.count), bytes.count)
        close(out)
        let input = open(file, O_RDONLY | O_CLOEXEC)
        defer { close(input) }
        let environment = [
            "CNI_COMMAND=ADD", "CNI_CONTAINERID=ctrA", "CNI_NETNS=/var/run/netns/ctrA", "CNI_IFNAME=eth0",
            "CNI_PATH=/opt/cni/bin",
        ]
        let plugin = try Subprocess(binary, [], extraFDs: [0: input], environment: environment)
        let status = plugin.waitForExit(seconds: 20)
        XCTAssertEqual(status, 1, "stderr: \(plugin.stderr)")
        XCTAssertEqual(
            plugin.stdout,
            #"{"cniVersion":"1.0.0","code":7,"msg":"prevResult.ips[0].interface must be an index into prevResult.interfaces, not 1e+300","details":""}"#
                + "\n"
        )
        XCTAssertEqual(
            plugin.stderr,
            "berth-cni: prevResult.ips[0].interface must be an index into prevResult.interfaces, not 1e+300\n"
        )
    }
}

/// A berth daemon that answers every request with 200 and `answer`: what the plugin makes of a
/// daemon's answers, without a daemon. One connection at a time (the plugin makes one at a time).
final class FakeDaemon: @unchecked Sendable {
    let path = "/tmp/berth-cni-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).sock"
    private let listenFD: Int32
    private final class Flag: Sendable { let raised = Atomic<Bool>(false) }
    private let stopping = Flag()
    private var thread: LoopThread?

    init(answer: String) throws {
        let fd = try boundUnixSocket(path, type: SOCK_STREAM)
        guard listen(fd, 16) == 0 else {
            let text = errnoText()
            close(fd)
            throw TestFailure("listen \(path): \(text)")
        }
        listenFD = fd
        let stopping = self.stopping
        let body = Array(answer.utf8)
        let reply =
            Array("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: \(body.count)\r\n\r\n".utf8)
            + body
        thread = try LoopThread(name: "fake-daemon") {
            while true {
                let client = accept(fd, nil, nil)
                if client < 0 { return }
                defer { close(client) }
                if stopping.raised.load(ordering: .acquiring) { return }
                var request: [UInt8] = []
                var chunk = [UInt8](repeating: 0, count: 4096)
                while true {
                    let n = read(client, &chunk, chunk.count)
                    if n <= 0 { break }
                    request += chunk[0..<n]
                    if request.count >= 4, Array(request.suffix(4)) == Array("\r\n\r\n".utf8) { break }
                }
                if !request.isEmpty { _ = write(client, reply, reply.count) }
            }
        }
    }

    func stop() {
        guard let thread else { return }
        stopping.raised.store(true, ordering: .releasing)
        // Wakes the accept: the loop sees `stopping` and returns.
        _ = try? UnixSocket.connect(path: path, timeoutSeconds: 5)
        thread.join()
        self.thread = nil
        close(listenFD)
        unlink(path)
    }

    deinit { stop() }
}
