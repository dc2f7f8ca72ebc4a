import CFuzzDriver
import MailMessage

/// A captured message's bytes through the MIME parse and everything the API derives from it:
/// text, HTML, attachments, decoded bodies, the summary.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzMIME(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let parsed = ParsedMessage(bytes: Array(UnsafeBufferPointer(start: data, count: size)))
    _ = parsed.text
    _ = parsed.html
    for attachment in parsed.attachments + parsed.inline {
        if let part = parsed.part(id: attachment.partID) { _ = parsed.decodedBody(part) }
    }
    _ = parsed.headers["Subject"]
    return 0
}

/// The executable's entry point (SwiftPM names it `FuzzMIME_main`): libFuzzer's driver.
@_cdecl("FuzzMIME_main")
public func main(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv) { data, size in
        guard let data else { return 0 }
        return fuzzMIME(data, size)
    }
}
