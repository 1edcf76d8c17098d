// What the fuzzers share: libFuzzer's driver, splitting fuzz bytes into argv, and the checks that make
// a finding a crash. Built only by `make fuzz` (BERTH_FUZZ=1, -sanitize=fuzzer): see Package.swift.

import Mappings

/// libFuzzer's own entry point (FuzzerDriver.cpp). SwiftPM gives every executable target a `main` of its
/// own, so libFuzzer's `main` is never linked in: each fuzzer's main.swift calls this instead.
@_silgen_name("LLVMFuzzerRunDriver")
private func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
) -> CInt

/// Runs libFuzzer with the process's command line (`-max_total_time=60 CORPUS...`), calling `test`
/// with each input; returns libFuzzer's exit status.
public func runFuzzer(_ test: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt {
    var argc = CommandLine.argc
    var argv = CommandLine.unsafeArgv
    return LLVMFuzzerRunDriver(&argc, &argv, test)
}

/// The input as bytes (libFuzzer may pass a null pointer for the empty input).
public func bytes(_ data: UnsafePointer<UInt8>?, _ size: Int) -> UnsafeBufferPointer<UInt8> {
    UnsafeBufferPointer(start: size == 0 ? nil : data, count: size)
}

/// The input as one string (invalid UTF-8 repaired, as `CommandLine.arguments` repairs it).
public func text(_ input: UnsafeBufferPointer<UInt8>) -> String {
    String(decoding: input, as: UTF8.self)
}

/// The input as an argv: split on NUL or newline, empty pieces kept (`""` is an argument too).
public func arguments(_ input: UnsafeBufferPointer<UInt8>) -> [String] {
    guard !input.isEmpty else { return [] }
    return input.split(omittingEmptySubsequences: false) { $0 == 0 || $0 == UInt8(ascii: "\n") }
        .map { String(decoding: $0, as: UTF8.self) }
}

/// Traps (a finding) when `message`, which the user would see, is empty or more than one line. Any
/// scalar that a terminal or a log reader may take as a line break counts: \n, \r, VT, FF, NEL, U+2028,
/// U+2029.
public func expectOneLine(_ message: String, _ what: @autoclosure () -> String) {
    if message.isEmpty { fatalError("\(what()): empty message") }
    for scalar in message.unicodeScalars {
        switch scalar.value {
        case 0x0a, 0x0b, 0x0c, 0x0d, 0x85, 0x2028, 0x2029:
            fatalError("\(what()): message is more than one line: \(String(reflecting: message))")
        default: continue
        }
    }
}

/// Traps (a finding) unless `a == b`.
public func expectEqual<T: Equatable>(_ a: T, _ b: T, _ what: @autoclosure () -> String) {
    if a != b { fatalError("\(what()): \(String(reflecting: a)) != \(String(reflecting: b))") }
}

/// PortSpecFuzzer's checks for one `-p` value; RunArgumentsFuzzer makes them for every `-p` it reads.
public func checkPortSpec(_ spec: String) {
    let parsed: PortSpec
    do {
        parsed = try PortSpec(parsing: spec)
    } catch {
        expectOneLine(error.description, "PortSpec(parsing: \(String(reflecting: spec)))")
        return
    }
    let printed = parsed.description
    do {
        expectEqual(try PortSpec(parsing: printed), parsed, "round trip of \(String(reflecting: spec)) as \(printed)")
    } catch {
        fatalError("\(String(reflecting: spec)) parses, but its description \(printed) does not: \(error)")
    }
    let mappings = parsed.mappings(to: .loopbackV4)
    expectEqual(mappings.count, parsed.containerPorts.count, "mappings of \(printed)")
}

/// What a JSON reader must refuse (berth's rule, stricter than cJSON): invalid UTF-8, a control
/// character in a string (raw, or escaped as `\u0000` to `\u001f`), and anything but whitespace
/// after the document (an object or array: what berth reads). Returns why `bytes` breaks it, or
/// nil. A fuzzer traps when it sees an input that this names accepted. `escapedControlsAllowed`: a
/// document (CNI stdin, passed through) may hold escaped control characters, `\u0000` excepted.
public func strictJSONViolation(_ bytes: [UInt8], escapedControlsAllowed: Bool = false) -> String? {
    if String(validating: bytes, as: UTF8.self) == nil { return "invalid UTF-8" }
    let whitespace: [UInt8] = [0x20, 0x09, 0x0a, 0x0d]
    var depth = 0
    var inString = false
    var escaped = false
    for (index, byte) in bytes.enumerated() {
        if inString {
            if escaped {
                escaped = false
                let digits = bytes.dropFirst(index + 1).prefix(4)
                if byte == UInt8(ascii: "u"), let value = UInt32(String(decoding: digits, as: UTF8.self), radix: 16),
                    digits.count == 4, value < 0x20, value == 0 || !escapedControlsAllowed
                {
                    return "an escaped control character in a string"
                }
            } else if byte == UInt8(ascii: "\\") {
                escaped = true
            } else if byte == UInt8(ascii: "\"") {
                inString = false
            } else if byte < 0x20 {
                return "a control character in a string"
            }
            continue
        }
        switch byte {
        case UInt8(ascii: "\""): inString = true
        case UInt8(ascii: "{"), UInt8(ascii: "["): depth += 1
        case UInt8(ascii: "}"), UInt8(ascii: "]"):
            depth -= 1
            if depth == 0 {
                return bytes.dropFirst(index + 1).allSatisfy { whitespace.contains($0) }
                    ? nil : "something after the document"
            }
        default: break
        }
    }
    return nil
}

/// Numbers no field takes, as JSON spells them: beyond Int, UInt32, UInt16, a double; fractions; zeros.
public let extremeNumbers = [
    "1e300", "-1e19", "1e400", "-1e400", "1e-400", "-0", "1.5", "65536", "4294967296", "9223372036854775808",
    "-9223372036854775809",
]

/// `json` made wrong in one way that a reader must catch, picked by a hash of the bytes: one of its
/// numbers made one no field takes (`extremeNumbers`), a NUL, a control character or an invalid UTF-8
/// byte put into one of its strings, or junk after the document. A fuzzer that checks this variant too
/// tries every field of its corpus with such values without waiting for mutations to write them (the
/// control characters are what strictJSONViolation names). nil for an input with no document.
public func spoiled(_ json: [UInt8]) -> [UInt8]? {
    var numbers: [Range<Int>] = []
    var strings: [Int] = []  // where each string's content starts
    var inString = false
    var escaped = false
    var index = 0
    while index < json.count {
        let byte = json[index]
        if inString {
            if escaped {
                escaped = false
            } else if byte == UInt8(ascii: "\\") {
                escaped = true
            } else if byte == UInt8(ascii: "\"") {
                inString = false
            }
            index += 1
            continue
        }
        if byte == UInt8(ascii: "\"") {
            inString = true
            strings.append(index + 1)
        } else if byte == UInt8(ascii: "-") || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) {
            let start = index
            while index < json.count, "0123456789+-.eE".utf8.contains(json[index]) { index += 1 }
            numbers.append(start..<index)
            continue
        }
        index += 1
    }
    guard json.contains(where: { $0 == UInt8(ascii: "{") || $0 == UInt8(ascii: "[") }) else { return nil }
    let hash = json.reduce(UInt64(14_695_981_039_346_656_037)) { ($0 ^ UInt64($1)) &* 1_099_511_628_211 }
    func pick<T>(_ list: [T], _ salt: UInt64) -> T { list[Int((hash / salt) % UInt64(list.count))] }
    var out = json
    switch hash % 8 {
    case 0..<4 where !numbers.isEmpty:
        out.replaceSubrange(pick(numbers, 8), with: Array(pick(extremeNumbers, 8 * 64).utf8))
    case 4..<7 where !strings.isEmpty:
        // After the string's first byte, so that a reader that stops at a NUL keeps a non-empty value.
        let start = pick(strings, 8)
        let at =
            start < json.count && json[start] != UInt8(ascii: "\"") && json[start] != UInt8(ascii: "\\")
            ? start + 1 : start
        out.insert(contentsOf: pick([Array("\\u0000".utf8), Array("\\u001f".utf8), [0x01], [0xff]], 8 * 64), at: at)
    default:
        out += Array(pick([" x", "{}", "\u{0}", "]"], 8).utf8)
    }
    return out
}
