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
