// berth-cni's input: fuzz bytes as the plugin configuration on stdin. Beyond no crash: a refusal
// is a CNI error with a known code and a one-line msg and details; a configuration that parses is
// strict JSON (strictJSONViolation) and gives port mappings whose `-p` spec (what the daemon is
// sent) parses back to the same mapping; VERSION always answers; ADD without mappings prints
// prevResult back as JSON; and the bytes read as a berth daemon's port list give ports from 1 to
// 65535 or an error. Each input is checked twice: as it is, and spoiled (a number no field takes, a
// NUL or bad byte in a string, junk after the document: FuzzSupport's spoiled). Nothing here
// reaches a daemon or nftables.

import CNI
import Control
import FuzzSupport
import Glibc
import JSON
import Mappings

func checkError(_ error: CNIError, _ what: String) {
    if ![1, 4, 5, 6, 7, 50, 100, 101, 102].contains(error.code) { fatalError("\(what): code \(error.code)") }
    expectOneLine(error.msg, what)
    if !error.details.isEmpty { expectOneLine(error.details, what) }
}

@_cdecl("LLVMFuzzerTestOneInput")
func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let input = Array(bytes(data, size))
    check(input)
    if let variant = spoiled(input) { check(variant) }
    return 0
}

func check(_ input: [UInt8]) {
    // The same bytes as a berth daemon's port list (what CHECK and GC read from it).
    if case .success(.array(let entries)) = JSONValue.parse(input) {
        do throws(CNIError) {
            for port in try Daemon.ports(entries) where port.hostPort == 0 || port.containerPort == 0 {
                fatalError("the daemon's list read as port 0: \(port)")
            }
        } catch {
            checkError(error, "the daemon's list")
        }
    }
    guard case .success(let version) = Plugin.run(CNIEnvironment(command: .version), stdin: input),
        let text = version.stdout, case .success = JSONValue.parse(Array(text.utf8))
    else { fatalError("VERSION did not answer JSON") }
    let config: PluginConfig
    do throws(CNIError) {
        config = try PluginConfig.parse(input)
    } catch {
        checkError(error, "parse")
        return
    }
    // A document may hold escaped control characters (prevResult is passed through as it came); NUL not.
    if let why = strictJSONViolation(input, escapedControlsAllowed: true) {
        fatalError("parse accepted a configuration with \(why)")
    }
    for entry in config.portMappings {
        guard let spec = try? PortSpec(parsing: entry.spec), spec.proto == entry.proto, spec.hostIP == entry.hostIP,
            spec.hostPorts == PortRange(single: entry.hostPort),
            spec.containerPorts == PortRange(single: entry.containerPort)
        else { fatalError("\(entry): spec \(entry.spec) does not parse back") }
    }
    do throws(CNIError) {
        _ = try config.containerAddresses(ifname: "eth0")
    } catch {
        checkError(error, "containerAddresses")
    }
    if config.portMappings.isEmpty {
        let add = CNIEnvironment(command: .add, containerID: "ctr", netns: "/x", ifname: "eth0")
        switch Plugin.run(add, stdin: input) {
        case .success(let output):
            guard let out = output.stdout, case .success = JSONValue.parse(Array(out.utf8)) else {
                fatalError("ADD printed no JSON")
            }
        case .failure(let error): checkError(error, "ADD")
        }
    }
}

exit(runFuzzer(testOneInput))
