import CFuzzDriver
import LoadGen

/// A load scenario file: parsed or refused with an error, never a crash. Trace files it names
/// are read relative to a directory that does not exist, so no file is read.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzScenario(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    _ = try? Scenario.parse(text, file: "fuzz", baseDirectory: "/nonexistent-swallow-fuzz")
    return 0
}

/// The executable's entry point (SwiftPM names it `FuzzScenario_main`): libFuzzer's driver.
@_cdecl("FuzzScenario_main")
public func main(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv) { data, size in
        guard let data else { return 0 }
        return fuzzScenario(data, size)
    }
}
