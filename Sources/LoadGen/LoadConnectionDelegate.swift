import SMTPClient

/// What a `LoadConnection` tells the sender that owns it. Called on the connection's event loop.
protocol LoadConnectionDelegate: AnyObject {
    /// Banner, EHLO, STARTTLS and AUTH are done: transactions may begin.
    func connectionReady(_ connection: LoadConnection)
    /// The connection could not be readied; no transaction was begun on it.
    func connectionFailed(_ connection: LoadConnection, _ error: SMTPClientError, times: SMTPClientConnection.PhaseTimes)
    /// A transaction ended. `more`: another one is already under way on this connection.
    func transactionEnded(_ connection: LoadConnection, _ transaction: LoadTransaction, _ outcome: SMTPClientConnection.Outcome, more: Bool)
    /// Asked while a message's data is written: the next transaction to pipeline behind it, if
    /// one is ready at once (RFC 2920 lets MAIL follow the end of data in the same group).
    func nextTransaction(_ connection: LoadConnection) -> LoadTransaction?
    /// The channel closed (after `connectionReady` or `connectionFailed`, or after QUIT).
    func connectionClosed(_ connection: LoadConnection)
}
