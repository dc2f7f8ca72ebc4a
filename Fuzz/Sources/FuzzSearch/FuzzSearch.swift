import CFuzzDriver
import SinkServer

/// Mailpit's search syntax (`GET /api/v1/search?query=`): any text parses or is refused.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSearch(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    _ = try? SearchQuery(text)
    return 0
}

/// The executable's entry point (SwiftPM names it `FuzzSearch_main`): libFuzzer's driver.
@_cdecl("FuzzSearch_main")
public func main(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv) { data, size in
        guard let data else { return 0 }
        return fuzzSearch(data, size)
    }
}
