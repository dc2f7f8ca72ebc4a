import CFuzzDriver
import SinkServer

/// A fault rule document (`--faults FILE`, `PUT /api/v1/faults`, YAML or JSON): parsed or
/// refused with an error, never a crash.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRules(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    _ = try? FaultRuleSet.parse(text, file: "fuzz", acceptingReadOnlyKeys: size % 2 == 0)
    return 0
}

/// The executable's entry point (SwiftPM names it `FuzzRules_main`): libFuzzer's driver.
@_cdecl("FuzzRules_main")
public func main(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv) { data, size in
        guard let data else { return 0 }
        return fuzzRules(data, size)
    }
}
