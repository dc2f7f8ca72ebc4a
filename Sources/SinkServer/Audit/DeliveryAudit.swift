/// What the sink watches of the application beyond its mail: every delivery attempt (joined
/// into audited deliveries) and the volume over time. One per sink, shared by its connections.
final class DeliveryAudit: Sendable {
    let attempts: AttemptLog
    let timeline: Timeline

    init(settings: AuditSettings, dataDirectory: String?, metrics: SinkMetrics?, health: StorageHealth?) {
        attempts = AttemptLog(settings: settings, dataDirectory: dataDirectory, metrics: metrics, health: health)
        timeline = Timeline(retention: settings.statsRetention, dataDirectory: dataDirectory, health: health)
    }

    /// Every second: `gave-up` decided, and with `--data` what changed written.
    func tick(nowNanos: Int64) {
        attempts.sweep(nowNanos: nowNanos)
        attempts.flush()
        timeline.flush()
    }
}
