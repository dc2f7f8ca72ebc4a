import Assertions
import Testing

@Suite("Assertions: timing percentiles")
struct TimingTests {
    @Test("percentiles by nearest rank")
    func percentiles() {
        let timing = Timing((1...100).map { Duration.milliseconds($0) })
        #expect(timing.p50 == .milliseconds(50))
        #expect(timing.p99 == .milliseconds(99))
        #expect(timing.max == .milliseconds(100))
        #expect(Timing([]).p50 == nil)
    }
}
