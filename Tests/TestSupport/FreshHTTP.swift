import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// One HTTP exchange on a connection of its own, never one kept from an earlier request.
///
/// `URLSession.shared` keeps connections per host and port, and the kernel hands a port that an earlier test's server
/// used to a later test's server. A kept connection can then be one the server is closing just as it is used
/// again (its `Connection: close` answer's FIN still on the way), and the request reads back "Empty reply from
/// server": ConsoleTests failed so once in CI. A session per exchange has nothing kept to reuse.
public func freshHTTPExchange(_ request: URLRequest, configuration: URLSessionConfiguration = .ephemeral) async throws
    -> (Data, URLResponse)
{
    let session = URLSession(configuration: configuration)
    defer { session.finishTasksAndInvalidate() }
    return try await session.data(for: request)
}
