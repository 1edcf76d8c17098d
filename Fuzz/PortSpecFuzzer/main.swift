// The `-p` grammar: no crash; a spec that parses prints (`description`) as a spec that parses back to
// the same value, and expands to mappings; a rejection is one non-empty line.

import FuzzSupport
import Glibc

/// One input. Exported under libFuzzer's name too, for a link that takes libFuzzer's own `main`.
@_cdecl("LLVMFuzzerTestOneInput")
func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    checkPortSpec(text(bytes(data, size)))
    return 0
}

exit(runFuzzer(testOneInput))
