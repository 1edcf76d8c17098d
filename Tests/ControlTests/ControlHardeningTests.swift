// What a hostile or careless client of the control API tried (issue 20), one test a row: JSON
// that is over a limit, has junk after it or strings that alias; targets the daemon should not
// reach; more ports than allowed; what lies at the socket's path; scrapers that never read.

import Glibc
import JSON
import LinuxIO
import Logging
import Mappings
import Publishing
import TestSupport
import XCTest

@testable import Control

final class JSONHardeningTests: XCTestCase {
    private func parse(_ text: String, _ limits: JSONValue.Limits = .request) -> Result<JSONValue, JSONError> {
        JSONValue.parse(Array(text.utf8), limits: limits)
    }

    /// 16,000 members took 11.6 s of the control thread (a linear duplicate search per member).
    func testAnObjectOverTheMemberLimitIsRefused() {
        let members = (0..<16_000).map { "\"m\($0)\":1" }.joined(separator: ",")
        XCTAssertEqual(parse("{\(members)}"), .failure(JSONError("an object has more than 64 members")))
        let list = "[" + Array(repeating: "1", count: 5000).joined(separator: ",") + "]"
        XCTAssertEqual(parse(list), .failure(JSONError("a list has more than 4096 elements")))
        let long = String(repeating: "a", count: 5000)
        XCTAssertEqual(parse("{\"owner\":\"\(long)\"}"), .failure(JSONError("a string is over 4096 bytes")))
        XCTAssertEqual(
            parse(String(repeating: "[", count: 20) + String(repeating: "]", count: 20)),
            .failure(JSONError("the body nests too deeply"))
        )
        // A document's limits are wider, but there.
        let some = (0..<4096).map { "\"m\($0)\":1" }.joined(separator: ",")
        XCTAssertNoThrow(try parse("{\(some)}", .document).get())
        XCTAssertEqual(parse("{\(members)}", .document), .failure(JSONError("an object has more than 4096 members")))
    }

    /// Valid JSON followed by junk was taken (201, the port added).
    func testOnlyWhitespaceMayFollowTheDocument() {
        XCTAssertEqual(parse(#"{"a":1}xyz"#), .failure(JSONError("the body has more after its JSON document")))
        XCTAssertEqual(parse(#"{"a":1}{"b":2}"#), .failure(JSONError("the body has more after its JSON document")))
        XCTAssertEqual(parse("{\"a\":1} \r\n\t"), .success(.object([("a", .number(1))])))
    }

    /// `"web\u0000-other"` was stored as `web`, and invalid UTF-8 was repaired.
    func testNULControlCharactersAndInvalidUTF8AreRefused() {
        XCTAssertEqual(
            parse(#"{"owner":"web\u0000-other"}"#),
            .failure(JSONError("a string holds a NUL character (\\u0000)"))
        )
        XCTAssertEqual(
            parse(#"{"web\u0000":1}"#, .document),
            .failure(JSONError("a string holds a NUL character (\\u0000)"))
        )
        // An escaped backslash and then text is not a NUL.
        XCTAssertEqual(parse(#"{"owner":"a\\u0000"}"#), .success(.object([("owner", .string("a\\u0000"))])))
        XCTAssertEqual(
            parse(#"{"owner":"a\u0007b"}"#),
            .failure(JSONError(#""a\u{7}b" holds a control character"#))
        )
        XCTAssertEqual(
            JSONValue.parse(Array(#"{"owner":"a"#.utf8) + [0xFF, 0xFE] + Array(#""}"#.utf8), limits: .request),
            .failure(JSONError("the body is not valid UTF-8"))
        )
        // What CNIConfigFuzzer found: cJSON reads `\u0` and bad bytes as a NUL and drops the rest.
        XCTAssertEqual(
            JSONValue.parse(Array(#"{"vali\u0"#.utf8) + [0xFF, 0xFF] + Array(#"":1}"#.utf8)),
            .failure(JSONError("a string has a \\u escape without four hex digits"))
        )
        XCTAssertEqual(
            parse(#"{"a\u12":1}"#, .document),
            .failure(JSONError("a string has a \\u escape without four hex digits"))
        )
        XCTAssertEqual(parse(#"{"a\u00e9":1}"#, .document), .success(.object([("aé", .number(1))])))
        XCTAssertEqual(
            JSONValue.parse([0x7B, 0x00, 0x7D], limits: .document),
            .failure(JSONError("the body holds a control character (byte 0)"))
        )
        // A raw tab is whitespace between tokens, never part of a string (JSON has no raw controls there).
        XCTAssertEqual(parse("{\t\"a\":\t1}", .document), .success(.object([("a", .number(1))])))
        XCTAssertEqual(
            parse("{\"a\":\"x\ty\"}", .document),
            .failure(JSONError("the body holds a control character (byte 9)"))
        )
        // Escaped, a document may hold one (CNI passes prevResult through); a request may not.
        XCTAssertEqual(parse(#"{"a":"x\ty"}"#, .document), .success(.object([("a", .string("x\ty"))])))
    }
}

final class ControlPolicyTests: XCTestCase {
    private var publisher: Publisher!

    override func setUp() {
        var options = PublishOptions()
        options.mode = .userspace
        options.threads = 1
        publisher = Publisher(options: options)
    }

    override func tearDown() { publisher.close() }

    private func service(_ configure: (inout PortService.Policy) -> Void = { _ in }) -> PortService {
        var policy = PortService.Policy()
        configure(&policy)
        return PortService(publisher: publisher, drain: .zero, policy: policy)
    }

    private func call(_ service: PortService, _ method: String, _ path: String, _ body: String) -> (Int, String) {
        let response = service.handle(HTTPRequest(method: method, path: path, body: Array(body.utf8)))
        return (response.status, String(decoding: response.body, as: UTF8.self))
    }

    /// Targets 0.0.0.0, 127.0.0.1 and :: were accepted, and through such a port a client reached the
    /// daemon's own loopback-only metrics port.
    func testLoopbackUnspecifiedAndMulticastTargetsAreRefusedUnlessAllowed() {
        let strict = service()
        let cases: [(String, String)] = [
            ("127.0.0.1", "a loopback address"), ("0.0.0.0", "unspecified"), ("::", "unspecified"),
            ("::1", "a loopback address"), ("::ffff:127.0.0.1", "a loopback address"),
            ("224.0.0.1", "a multicast address"), ("ff02::1", "a multicast address"),
            ("255.255.255.255", "the broadcast address"),
        ]
        for (target, kind) in cases {
            let (status, body) = call(
                strict,
                "POST",
                "/v1/berth/ports",
                #"{"target":"\#(target)","publish":["127.0.0.1::80"]}"#
            )
            XCTAssertEqual(status, 400, target)
            XCTAssertTrue(body.contains("target \(target) is \(kind)"), body)
            XCTAssertTrue(body.contains("--allow-target"), body)
            let (rkStatus, rkBody) = call(
                strict,
                "POST",
                "/v1/ports",
                #"{"proto":"tcp","parentIP":"127.0.0.1","childIP":"\#(target)","childPort":80}"#
            )
            XCTAssertEqual(rkStatus, 400, target)
            XCTAssertTrue(rkBody.contains("--allow-target"), rkBody)
        }
        XCTAssertEqual(call(strict, "GET", "/v1/berth/ports", "").1, "[]")
        let allowing = service { $0.targets = TargetPolicy(allowed: [AddressRange("127.0.0.0/8")!]) }
        let (status, body) = call(
            allowing,
            "POST",
            "/v1/berth/ports",
            #"{"target":"127.0.0.2","publish":["127.0.0.1::80"]}"#
        )
        XCTAssertEqual(status, 201, body)
        XCTAssertEqual(
            call(allowing, "POST", "/v1/berth/ports", #"{"target":"::1","publish":["127.0.0.1::80"]}"#).0,
            400
        )
    }

    /// `rootlessctl add-ports 127.0.0.1:8080:80/tcp` (no childIP) goes to --default-target.
    func testARootlessKitAddWithoutChildIPGoesToTheDefaultTarget() throws {
        guard case .daemon(var arguments) = try DaemonArguments.parse(["--default-target", "198.18.0.2"]) else {
            return XCTFail("--default-target did not parse")
        }
        arguments.maxPorts = 8
        let service = PortService(publisher: publisher, drain: .zero, policy: PortService.Policy(arguments))
        let (status, body) = call(
            service,
            "POST",
            "/v1/ports",
            #"{"proto":"tcp","parentIP":"127.0.0.1","childPort":80}"#
        )
        XCTAssertEqual(status, 201, body)
        XCTAssertEqual(publisher.ports.first?.target.description, "198.18.0.2:80")
    }

    /// 3,000 ports in one add, then 1,000 more, until EMFILE: nothing capped the entries.
    func testMorePortsThanMaxPortsAreRefused() {
        let capped = service {
            $0.maxPorts = 5
            $0.targets = TargetPolicy(allowed: [AddressRange("127.0.0.0/8")!])
        }
        let first = call(
            capped,
            "POST",
            "/v1/berth/ports",
            #"{"target":"127.0.0.2","publish":["127.0.0.1::80","127.0.0.1::81","127.0.0.1::82"]}"#
        )
        XCTAssertEqual(first.0, 201, first.1)
        let over = call(
            capped,
            "POST",
            "/v1/berth/ports",
            #"{"target":"127.0.0.2","publish":["127.0.0.1::83","127.0.0.1::84","127.0.0.1::85"]}"#
        )
        XCTAssertEqual(over.0, 400)
        XCTAssertEqual(
            over.1,
            #"{"message":"this add would publish more than 5 ports at once (3 are published): see berth daemon --max-ports"}"#
        )
        XCTAssertEqual(publisher.ports.count, 3)
        XCTAssertEqual(call(capped, "DELETE", "/v1/berth/ports/1", "").0, 200)
        XCTAssertEqual(
            call(
                capped,
                "POST",
                "/v1/berth/ports",
                #"{"target":"127.0.0.2","publish":["127.0.0.1::83","127.0.0.1::84","127.0.0.1::85"]}"#
            ).0,
            201
        )
    }

    /// A shim's request needs its socket; through handle (no descriptor) it is refused.
    func testAShimRequestWithoutASocketIsRefused() {
        let (status, body) = call(
            service(),
            "POST",
            "/v1/berth/shims",
            #"{"proto":"tcp","hostIP":"127.0.0.1","hostPort":8080,"containerIP":"198.18.0.2","containerPort":80}"#
        )
        XCTAssertEqual(status, 400)
        XCTAssertEqual(body, #"{"message":"no socket came with the request: pass the bound socket with SCM_RIGHTS"}"#)
        XCTAssertEqual(call(service(), "GET", "/v1/berth/shims", "").0, 405)
    }

    /// An owner with a NUL aliased another (`DELETE ?owner=web` removed both).
    func testAnOwnerWithANULIsRefusedAndDoesNotAlias() {
        let service = service { $0.targets = TargetPolicy(allowed: [AddressRange("127.0.0.0/8")!]) }
        let (status, body) = call(
            service,
            "POST",
            "/v1/berth/ports",
            #"{"target":"127.0.0.2","publish":["127.0.0.1::80"],"owner":"web\u0000-other"}"#
        )
        XCTAssertEqual(status, 400)
        XCTAssertEqual(body, #"{"message":"a string holds a NUL character (\\u0000)"}"#)
        XCTAssertEqual(call(service, "GET", "/v1/berth/ports", "").1, "[]")
        XCTAssertEqual(
            call(service, "POST", "/v1/berth/ports", #"{"target":"127.0.0.2","publish":["127.0.0.1::80"]}junk"#).0,
            400
        )
    }
}

/// What lies at the control socket's path, and the modes it gets.
final class ControlSocketPathTests: XCTestCase {
    private var directory = ""

    override func setUpWithError() throws { directory = try temporaryDirectory() }

    override func tearDown() {
        _ = try? Subprocess.run("/bin/rm", ["-rf", directory])
    }

    private func refusal(_ path: String) -> String? {
        do {
            _ = try ControlServer.prepare(path, group: nil)
            return nil
        } catch {
            return error.description
        }
    }

    /// A regular file at --control was deleted and replaced by the socket.
    func testAFileOrALinkAtThePathIsLeftAlone() throws {
        let file = directory + "/berth.sock"
        let fd = open(file, O_CREAT | O_WRONLY, 0o600)
        XCTAssertEqual(write(fd, "mine", 4), 4)
        close(fd)
        XCTAssertEqual(
            refusal(file),
            "\(file) is a file, not a socket: left as it is; remove it or choose another --control"
        )
        XCTAssertEqual(readFile(file), "mine")
        let link = directory + "/link.sock"
        XCTAssertEqual(symlink(file, link), 0)
        XCTAssertEqual(
            refusal(link),
            "\(link) is a symbolic link, not a socket: left as it is; remove it or choose another --control"
        )
        XCTAssertEqual(readLink(link), file)
        XCTAssertEqual(readFile(file), "mine")
    }

    /// A listener that never accepts, at the path: the daemon hung at start (connect without a timeout).
    func testASocketWhoseQueueStaysFullIsRefusedNotWaitedFor() throws {
        let path = directory + "/busy.sock"
        let busy = try UnixSocket.listen(path: path, backlog: 0)
        // A backlog of 0 holds one connection; a second connect would block.
        let queued = try UnixSocket.connect(path: path)
        XCTAssertEqual(refusal(path), "something listens on \(path) and does not answer: left as it is")
        XCTAssertEqual(try FileSystem.kind(path), .socket)
        _ = queued
        _ = busy
    }

    func testAStaleSocketIsReplacedAndTheNewOneIsMode0660WhateverTheUmask() throws {
        let path = directory + "/berth.sock"
        do { _ = try UnixSocket.listen(path: path) }
        let old = umask(0)
        defer { umask(old) }
        let socket = try ControlServer.prepare(path, group: nil)
        var info = stat()
        XCTAssertEqual(lstat(path, &info), 0)
        XCTAssertEqual(info.st_mode & S_IFMT, S_IFSOCK)
        XCTAssertEqual(info.st_mode & 0o777, 0o660)
        _ = socket
    }

    /// Under umask 077 a made directory was 0700, which broke --control-group in silence; a
    /// directory that others may write was not refused.
    func testTheDirectoryGetsTheModeItNeedsAndAWorldWritableOneIsRefused() throws {
        let old = umask(0o077)
        defer { umask(old) }
        let made = directory + "/run"
        _ = try ControlServer.prepare(made + "/berth.sock", group: nil)
        XCTAssertEqual(try FileSystem.directoryInfo(made).mode, 0o755)
        let grouped = directory + "/grouped"
        _ = try ControlServer.prepare(grouped + "/berth.sock", group: getegid())
        XCTAssertEqual(try FileSystem.directoryInfo(grouped).mode, 0o750)
        let open = directory + "/open"
        XCTAssertEqual(mkdir(open, 0o777), 0)
        XCTAssertEqual(chmod(open, 0o1777), 0)
        XCTAssertEqual(
            refusal(open + "/berth.sock"),
            "control socket \(open)/berth.sock: its directory \(open) may be written by anyone: choose a directory of its own, such as /run/berth"
        )
        XCTAssertEqual(try FileSystem.kind(open + "/berth.sock"), nil)
    }
}

/// Scrapers share a rendering, made off the control thread.
final class MetricsServingTests: XCTestCase {
    func testScrapersWithinTheIntervalShareOneRendering() {
        let cache = MetricsCache(interval: .seconds(1))
        var got: [[UInt8]] = []
        let t0 = Instant(nanoseconds: 1_000_000_000)
        XCTAssertTrue(cache.request(now: t0) { got.append($0) })
        XCTAssertFalse(cache.request(now: t0 + .milliseconds(10)) { got.append($0) }, "one rendering under way")
        XCTAssertEqual(got.count, 0)
        cache.rendered([1, 2, 3], now: t0 + .milliseconds(500))
        XCTAssertEqual(got, [[1, 2, 3], [1, 2, 3]])
        XCTAssertFalse(cache.request(now: t0 + .milliseconds(1400)) { got.append($0) }, "fresh: from the cache")
        XCTAssertEqual(got.count, 3)
        XCTAssertTrue(cache.request(now: t0 + .milliseconds(1500)) { got.append($0) }, "a second on: render again")
        XCTAssertEqual(cache.renders, 2)
    }

    private func server(
        _ directory: String,
        maxClients: Int = 64,
        metrics: SocketAddress? = nil,
        render: @escaping @Sendable () -> [UInt8]
    ) throws -> ControlServer {
        var options = PublishOptions()
        options.threads = 1
        let publisher = Publisher(options: options)
        var serverOptions = ControlServer.Options()
        serverOptions.maxClients = maxClients
        serverOptions.metrics = metrics
        let server = try ControlServer(
            path: directory + "/berth.sock",
            service: PortService(publisher: publisher, drain: .zero),
            logger: Logger(label: "test"),
            options: serverOptions,
            render: render
        )
        try server.start()
        return server
    }

    /// 40 scrapers that never read made the API answer after 16.8 s: every scrape rendered (and
    /// waited for the loops) on the control thread. Now a rendering that takes as long as it likes
    /// holds up no API client.
    func testASlowRenderingStallsNoAPIClient() throws {
        let directory = try temporaryDirectory()
        let release = Semaphore()
        let server = try server(directory) {
            release.wait()
            return Array("berth_up 1\n".utf8)
        }
        defer {
            release.signal()
            server.stop()
            rmdir(directory)
        }
        let path = directory + "/berth.sock"
        let scrapers = DescriptorSlots(capacity: 10)
        for i in 0..<10 {
            let s = try UnixSocket.connect(path: path, timeoutSeconds: 5)
            let request = Array("GET /metrics HTTP/1.1\r\n\r\n".utf8)
            _ = request.withUnsafeBytes { Glibc.send(s.raw, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            let kept = scrapers.put(s, at: i)
            XCTAssertTrue(kept)
        }
        // The rendering is stuck; the API answers all the same.
        XCTAssertEqual(try ControlClient.request("GET", "/v1/info", socketPath: path, timeoutSeconds: 5).status, 200)
        release.signal()
        for i in 0..<10 {
            guard let s = scrapers.take(i) else { return XCTFail("scraper \(i) is gone") }
            var answer: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = buffer.withUnsafeMutableBytes { recv(s.raw, $0.baseAddress, $0.count, 0) }
                if n <= 0 { break }
                answer += buffer[..<n]
            }
            let text = String(decoding: answer, as: UTF8.self)
            XCTAssertTrue(text.hasPrefix("HTTP/1.1 200 OK\r\n"), text)
            XCTAssertTrue(text.hasSuffix("\r\n\r\nberth_up 1\n"), text)
        }
    }

    /// 1,500 idle connections to --metrics were all accepted, 1,500 descriptors from the relay's limit.
    func testEachListenerServesAtMostMaxClientsAtOnce() throws {
        let directory = try temporaryDirectory()
        let port = freePort()
        let server = try server(directory, maxClients: 8, metrics: SocketAddress(ip: "127.0.0.1", port: port)!) {
            Array("berth_up 1\n".utf8)
        }
        defer {
            server.stop()
            rmdir(directory)
        }
        let before = openDescriptorCount()
        var idle: [TestSocket] = []
        for _ in 0..<40 { idle.append(try TestSocket.connect(SocketAddress(ip: "127.0.0.1", port: port)!)) }
        // Our 40 ends, and at most 8 the server accepted (the rest wait in its backlog).
        XCTAssertTrue(eventually { openDescriptorCount() - before >= 40 + 8 })
        XCTAssertLessThanOrEqual(openDescriptorCount() - before, 40 + 8)
        // The control socket has its own share.
        XCTAssertEqual(
            try ControlClient.request("GET", "/v1/info", socketPath: directory + "/berth.sock", timeoutSeconds: 5)
                .status,
            200
        )
        // A scrape with a body is refused; one that closes lets a waiting one in.
        for s in idle { s.close() }
        let scraper = try TestSocket.connect(SocketAddress(ip: "127.0.0.1", port: port)!)
        try scraper.send("POST /metrics HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcd")
        let text = String(decoding: try scraper.receiveAll(), as: UTF8.self)
        XCTAssertTrue(text.hasPrefix("HTTP/1.1 413"), text)
        XCTAssertTrue(text.hasSuffix(#"{"message":"this request takes no body"}"#), text)
        XCTAssertTrue(eventually { openDescriptorCount() <= before + 1 })
    }
}
