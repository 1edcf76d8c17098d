import Control
import JSON
import XCTest

final class HTTPAndJSONTests: XCTestCase {
    func testARequestInPiecesWithAQueryAndABody() {
        let reader = HTTPReader()
        let text = "POST /v1/berth/ports?owner=c%201 HTTP/1.1\r\nHost: berth\r\nContent-Length: 7\r\n\r\n{\"a\":1}"
        let bytes = Array(text.utf8)
        XCTAssertEqual(reader.feed(Array(bytes[0..<20])), .needMore)
        XCTAssertEqual(
            reader.feed(Array(bytes[20...])),
            .request(
                HTTPRequest(
                    method: "POST",
                    path: "/v1/berth/ports",
                    query: ["owner": "c 1"],
                    body: Array("{\"a\":1}".utf8)
                )
            )
        )
    }

    func testMalformedAndOversizedRequestsGetAStatusAndAReason() {
        guard case .bad(400, let why) = HTTPReader().feed(Array("GET / HTTP/1.1\r\nHost berth\r\n\r\n".utf8)) else {
            return XCTFail("a header line without a colon passed")
        }
        XCTAssertTrue(why.hasPrefix("malformed HTTP request: "), why)
        let big = "POST /v1/ports HTTP/1.1\r\nContent-Length: \(HTTPReader.maximumBody + 1)\r\n\r\n"
        let reader = HTTPReader()
        XCTAssertEqual(reader.feed(Array(big.utf8)), .needMore)
        XCTAssertEqual(
            reader.feed([UInt8](repeating: 0x20, count: HTTPReader.maximumBody + 1)),
            .bad(status: 413, message: "request body over 1048576 bytes")
        )
        XCTAssertEqual(HTTPReader().feed(Array("GET /v1/ports HTTP/1.1\r\n".utf8) + []), .needMore)
        let early = HTTPReader()
        _ = early.feed(Array("GET /v1/ports HTTP/1.1\r\n".utf8))
        XCTAssertEqual(early.feed([]), .bad(status: 400, message: "the request ended early"))
    }

    func testAResponseIsReadBack() {
        let response = HTTPResponse.error(409, "80/tcp: bind 0.0.0.0:8080: address already in use")
        XCTAssertEqual(
            HTTPReader(requests: false).feed(response.serialized),
            .response(
                status: 409,
                body: Array(#"{"message":"80/tcp: bind 0.0.0.0:8080: address already in use"}"#.utf8)
            )
        )
    }

    func testJSONRoundTripsAndRefusesWhatIsAmbiguous() throws {
        let text =
            #"{"target":"172.17.0.2","publish":["8080:80","80"],"n":3,"ok":true,"none":null,"s":"a\"b\\c\n\u0001"}"#
        let value = try JSONValue.parse(Array(text.utf8)).get()
        XCTAssertEqual(value.serialized(), text.replacingOccurrences(of: "\\u0001", with: "\\u0001"))
        XCTAssertEqual(try JSONValue.parse(Array(value.serialized().utf8)).get(), value)
        XCTAssertEqual(
            JSONValue.parse(Array(#"{"a":1,"a":2}"#.utf8)),
            .failure(JSONError(#"the field "a" appears twice"#))
        )
        XCTAssertEqual(JSONValue.parse(Array("{".utf8)), .failure(JSONError("the body is not valid JSON")))
        XCTAssertEqual(JSONValue.parse([]), .failure(JSONError("the body is empty: expected a JSON object")))
        XCTAssertEqual(
            try JSONValue.parse(Array(#"{"target":"x","bogus":1}"#.utf8)).get().fields(allowed: ["target"]).map { _ in 0
            },
            .failure(JSONError(#"unknown field "bogus""#))
        )
    }
}
