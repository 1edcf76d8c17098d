// The control API's answers, request by request, against a real Publisher on loopback.

import Glibc
import JSON
import LinuxIO
import Mappings
import Publishing
import TestSupport
import XCTest

@testable import Control

final class PortServiceTests: XCTestCase {
    private var publisher: Publisher!
    private var service: PortService!

    override func setUp() {
        var options = PublishOptions()
        options.mode = .userspace
        options.threads = 2
        publisher = Publisher(options: options)
        // These tests' backends listen on loopback: allowed, as `--allow-target` would.
        var policy = PortService.Policy()
        policy.targets = TargetPolicy(allowed: [AddressRange("127.0.0.0/8")!, AddressRange("::1")!])
        service = PortService(publisher: publisher, drain: .zero, policy: policy)
    }

    override func tearDown() {
        publisher.close()
    }

    private func call(
        _ method: String,
        _ path: String,
        _ body: String = "",
        query: [String: String] = [:]
    ) -> (Int, String) {
        let response = service.handle(HTTPRequest(method: method, path: path, query: query, body: Array(body.utf8)))
        return (response.status, String(decoding: response.body, as: UTF8.self))
    }

    func testBerthsOwnAddListAndRemoveByOwner() throws {
        let p = freePort()
        let (status, body) = call(
            "POST",
            "/v1/berth/ports",
            #"{"target":"127.0.0.1","publish":["127.0.0.1:\#(p):80","127.0.0.1::81/udp"],"owner":"c1"}"#
        )
        XCTAssertEqual(status, 201, body)
        let entry = try JSONValue.parse(Array(body.utf8)).get()
        guard case .object(let members) = entry, case .array(let lines)? = members.first(where: { $0.0 == "lines" })?.1
        else {
            return XCTFail(body)
        }
        XCTAssertEqual(lines.first, .string("80/tcp -> 127.0.0.1:\(p)"))
        XCTAssertEqual(lines.count, 2)
        XCTAssertEqual(call("GET", "/v1/berth/ports").0, 200)
        XCTAssertEqual(call("GET", "/v1/berth/ports", query: ["owner": "c1"]).1, "[\(body)]")
        XCTAssertEqual(call("GET", "/v1/berth/ports", query: ["owner": "other"]).1, "[]")
        XCTAssertEqual(call("DELETE", "/v1/berth/ports", query: ["owner": "c1"]).1, #"{"removed":[1]}"#)
        XCTAssertEqual(call("GET", "/v1/berth/ports").1, "[]")
        // The port is free again.
        let again = call("POST", "/v1/berth/ports", #"{"target":"127.0.0.1","publish":["127.0.0.1:\#(p):80"]}"#)
        XCTAssertEqual(again.0, 201, again.1)
    }

    /// All or nothing: a spec whose port is taken fails the whole add, with the line berth run
    /// prints, and the other specs of that add are not left bound.
    func testAnAddIsAllOrNothing() throws {
        let busy = try TestServer.echo()
        let free = freePort()
        let (status, body) = call(
            "POST",
            "/v1/berth/ports",
            #"{"target":"127.0.0.1","publish":["127.0.0.1:\#(free):80","127.0.0.1:\#(busy.address.port):80"]}"#
        )
        XCTAssertEqual(status, 409)
        XCTAssertEqual(body, #"{"message":"80/tcp: bind 127.0.0.1:\#(busy.address.port): address already in use"}"#)
        XCTAssertEqual(call("GET", "/v1/berth/ports").1, "[]")
        let probe = try Socket.make(family: AF_INET, type: Int32(SOCK_STREAM.rawValue))
        XCTAssertNoThrow(
            try Socket.bind(probe.raw, SocketAddress(ip: "127.0.0.1", port: free)!),
            "the first spec's port stayed bound"
        )
    }

    func testBadRequestsGetOneClearLine() {
        let cases: [(String, String, String, Int, String)] = [
            ("POST", "/v1/berth/ports", "{", 400, "the body is not valid JSON"),
            ("POST", "/v1/berth/ports", "", 400, "the body is empty: expected a JSON object"),
            ("POST", "/v1/berth/ports", "[1]", 400, "the body must be a JSON object"),
            (
                "POST", "/v1/berth/ports", #"{"target":"127.0.0.1","publish":["80"],"extra":1}"#, 400,
                #"unknown field \"extra\""#
            ),
            (
                "POST", "/v1/berth/ports", #"{"target":"nope","publish":["80"]}"#, 400,
                "target must be the container's IPv4 or IPv6 address"
            ),
            (
                "POST", "/v1/berth/ports", #"{"target":"127.0.0.1","publish":[]}"#, 400,
                #"publish must be a list of Docker -p specs, such as [\"8080:80\", \"53:53/udp\"]"#
            ),
            ("POST", "/v1/berth/ports", #"{"target":"127.0.0.1","publish":["80:80:80:80"]}"#, 400, ""),
            ("DELETE", "/v1/berth/ports/77", "", 404, "no ports with id 77"),
            ("DELETE", "/v1/berth/ports", "", 400, "give an id (DELETE /v1/berth/ports/ID) or an owner (?owner=NAME)"),
            ("PUT", "/v1/berth/ports", "", 405, "PUT is not allowed on /v1/berth/ports"),
            ("GET", "/v2/anything", "", 404, "no such endpoint: GET /v2/anything"),
            (
                "POST", "/v1/ports", #"{"proto":"sctp","childIP":"127.0.0.1","childPort":80}"#, 400,
                "sctp is not supported"
            ),
            (
                // rootlesskit's usual form has no childIP: without --default-target, the 400 says how.
                "POST", "/v1/ports", #"{"proto":"tcp","childPort":80}"#, 400,
                "childIP is required: berth forwards to an address, so give one, or start the daemon with --default-target ADDRESS"
            ),
            (
                "POST", "/v1/ports", #"{"proto":"tcp","childIP":"nope","childPort":80}"#, 400,
                "childIP must be the container's IPv4 or IPv6 address"
            ),
            (
                "POST", "/v1/ports", #"{"proto":"tcp4","parentIP":"::1","childIP":"127.0.0.1","childPort":80}"#, 400,
                "parentIP ::1 is not an IPv4 address, as tcp4 asks"
            ),
            (
                "POST", "/v1/ports", #"{"proto":"tcp","childIP":"127.0.0.1","childPort":70000}"#, 400,
                "childPort must be a whole number from 1 to 65535"
            ),
            ("DELETE", "/v1/ports/9", "", 400, "no ports with id 9"),
        ]
        for (method, path, body, status, message) in cases {
            let (got, text) = call(method, path, body)
            XCTAssertEqual(got, status, "\(method) \(path) \(body): \(text)")
            if message.isEmpty {
                XCTAssertTrue(text.hasPrefix(#"{"message":""#) && !text.contains("\\n"), text)
            } else {
                XCTAssertEqual(text, #"{"message":"\#(message)"}"#, "\(method) \(path) \(body)")
            }
        }
    }

    /// What rootlesskit's client (rootlessctl, Docker's rootless port driver) sends, in order.
    func testRootlessKitsSequence() throws {
        let (infoStatus, info) = call("GET", "/v1/info")
        XCTAssertEqual(infoStatus, 200)
        XCTAssertTrue(
            info.contains(#""apiVersion":"1.1.1""#)
                && info.contains(#""protos":["tcp","tcp4","tcp6","udp","udp4","udp6"]"#),
            info
        )
        let p = freePort()
        let spec = #"{"proto":"tcp","parentIP":"127.0.0.1","parentPort":\#(p),"childIP":"127.0.0.1","childPort":80}"#
        let (status, body) = call("POST", "/v1/ports", spec)
        XCTAssertEqual(status, 201, body)
        XCTAssertEqual(body, #"{"id":1,"spec":\#(spec)}"#)
        XCTAssertEqual(call("GET", "/v1/ports").1, "[\(body)]")
        // The same port again: rootlesskit answers 400 with the reason, and so does berth (409 is berth's own API's).
        let (dupStatus, dup) = call("POST", "/v1/ports", spec)
        XCTAssertEqual(dupStatus, 409, dup)
        XCTAssertEqual(call("DELETE", "/v1/ports/1").0, 200)
        XCTAssertEqual(call("GET", "/v1/ports").1, "[]")
        // parentPort 0: a free port, reported back.
        let (s0, b0) = call("POST", "/v1/ports", #"{"proto":"udp4","childIP":"127.0.0.1","childPort":53}"#)
        XCTAssertEqual(s0, 201, b0)
        XCTAssertFalse(b0.contains(#""parentPort":0"#), b0)
    }

    /// Found by ControlRequestFuzzer: a path with a form feed (percent-decoded) came back bare in
    /// the 404 message, which then spanned two lines.
    func testAPathWithALineBreakIsQuotedInTheMessage() {
        let (status, body) = call("DELETE", "/vh/p\u{0C}rts")
        XCTAssertEqual(status, 404)
        XCTAssertEqual(body, #"{"message":"no such endpoint: DELETE \"/vh/p\\u{c}rts\""}"#)
    }

    /// The status of a failed add comes from why the bind failed, not from the words of the message.
    func testAFailedAddsStatusFollowsItsErrno() {
        XCTAssertEqual(
            PortService.status(of: PublishError("80/tcp: bind 0.0.0.0:80: in use", bindErrno: .addressInUse)),
            409
        )
        XCTAssertEqual(
            PortService.status(of: PublishError("80/tcp: bind 0.0.0.0:80: denied", bindErrno: .permissionDenied)),
            403
        )
        XCTAssertEqual(PortService.status(of: PublishError("a message saying address already in use")), 400)
        XCTAssertEqual(PortService.status(of: PublishError("nftables: add", isKernelPathFailure: true)), 500)
    }
}
