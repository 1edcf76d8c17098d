// The daemon's request path: fuzz bytes as they would arrive on the control socket, read by
// HTTPReader in two pieces (split where the first byte says), then answered by the PortService
// of a Publisher on 127.0.0.1 (userspace, not running: adds bind and removes close for real).
// Beyond no crash: every answer is a known status with a JSON body, an error's message is one
// line, a body that is not strict JSON (strictJSONViolation: invalid UTF-8, control characters in
// strings, junk after the document) is never accepted, and whatever the input added is removed
// again, so the next input starts from nothing. A body is answered twice: as it is, and spoiled (a
// number no field takes, a NUL or bad byte in a string, junk after the document).

import Control
import FuzzSupport
import Glibc
import JSON
import Mappings
import Publishing

nonisolated(unsafe) let service: PortService = {
    var options = PublishOptions()
    options.mode = .userspace
    options.threads = 1
    var policy = PortService.Policy()
    policy.targets = TargetPolicy(allowed: [AddressRange("127.0.0.0/8")!])
    return PortService(publisher: Publisher(options: options), drain: .zero, policy: policy)
}()

func check(_ response: HTTPResponse, _ what: @autoclosure () -> String) {
    if ![200, 201, 400, 403, 404, 405, 408, 409, 413, 500].contains(response.status) {
        fatalError("\(what()): status \(response.status)")
    }
    if response.body.isEmpty { return }
    guard case .success(let json) = JSONValue.parse(response.body) else {
        fatalError("\(what()): the body is not JSON: \(String(decoding: response.body, as: UTF8.self))")
    }
    if response.status >= 400 {
        guard case .object(let members) = json,
            case .string(let message)? = members.first(where: { $0.0 == "message" })?.1
        else {
            fatalError("\(what()): an error without a message")
        }
        expectOneLine(message, what())
    }
}

/// Removes whatever an input added, through the API as a client would: the list, then a DELETE
/// of each id, each of which must succeed.
func removeEverything() {
    let listing = service.handle(HTTPRequest(method: "GET", path: "/v1/berth/ports"))
    guard listing.status == 200, case .success(.array(let entries)) = JSONValue.parse(listing.body) else {
        fatalError("GET /v1/berth/ports: status \(listing.status)")
    }
    for entry in entries {
        guard case .number(let id)? = entry[member: "id"], let n = Int(exactly: id) else {
            fatalError("an entry without an id: \(String(decoding: listing.body, as: UTF8.self))")
        }
        let removed = service.handle(HTTPRequest(method: "DELETE", path: "/v1/berth/ports/\(n)"))
        if removed.status != 200 { fatalError("DELETE /v1/berth/ports/\(n): status \(removed.status)") }
    }
}

func answer(_ request: HTTPRequest) {
    let response = service.handle(request)
    check(response, "\(request.method) \(request.path)")
    if request.method == "POST", (200..<300).contains(response.status), let why = strictJSONViolation(request.body) {
        fatalError("POST \(request.path) answered \(response.status) to a body with \(why)")
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let input = Array(bytes(data, size))
    let cut = input.isEmpty ? 0 : min(input.count, Int(input[0]))
    let reader = HTTPReader()
    var outcome = reader.feed(Array(input[0..<cut]))
    if outcome == .needMore { outcome = reader.feed(Array(input[cut...])) }
    if outcome == .needMore { outcome = reader.feed([]) }
    switch outcome {
    case .request(let request):
        answer(request)
        if let variant = spoiled(request.body) {
            removeEverything()
            var changed = request
            changed.body = variant
            answer(changed)
        }
    case .bad(let status, let message):
        expectOneLine(message, "the reader's reason")
        check(.error(status, message), "the reader's answer")
    case .needMore, .response:
        break
    }
    removeEverything()
    return 0
}

exit(runFuzzer(testOneInput))
