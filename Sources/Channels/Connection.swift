internal import CLibWebSockets
import Foundation

/// Bytes queued on all of one endpoint's connections together. Service thread only.
final class QueuedTotal {
    var bytes = 0
}

/// One server-side lws connection. Service thread only.
final class Connection {
    enum Kind { case upgrading, websocket, http }

    struct Outgoing {
        /// `LWS_PRE` bytes of headroom, then the frame payload.
        var bytes: [UInt8]
        var binary: Bool
        var onWritten: (@Sendable (Bool) -> Void)?
    }

    let id: Int
    let wsi: OpaquePointer
    var kind: Kind
    let maxMessageBytes: Int

    // WebSocket
    var endpoint: SocketEndpoint?
    /// Its endpoint's total, kept as this connection's queue grows and shrinks.
    var queuedTotal: QueuedTotal?
    var socket: ChannelSocket?
    /// Messages received and not yet handled.
    let inbox = Inbox()
    var rx: [UInt8] = []
    /// When the WebSocket's idle timeout was last set (`ChannelServer.receive`).
    var idleTimeoutSetAt: ContinuousClock.Instant?
    var rxBinary = false
    private var queue: [Outgoing] = []
    private var head = 0
    private(set) var queuedBytes = 0
    private(set) var closeCode: Int?
    private var closeReason = ""

    // HTTP
    var method = "GET"
    var path = "/"
    var query: [String: String] = [:]
    var headers: [String: String] = [:]
    var body: [UInt8] = []
    var response: HTTPResponse?
    /// The request went to its handler: never twice (lws may still report a body completion for a POST
    /// without a body, after it was dispatched on arrival).
    var dispatched = false
    /// Its answer was written (the connection may carry the next request).
    var answered = false
    /// BODY_COMPLETION calls for this request (see `ChannelServer.callback`).
    var completions = 0
    /// Answer with `Connection: close` (lws will not keep this connection alive).
    var closeAfterResponse = false
    /// A HEAD request: answered as its GET is, headers only (RFC 9110 9.3.2).
    var headersOnly = false

    init(id: Int, wsi: OpaquePointer, kind: Kind, maxMessageBytes: Int) {
        self.id = id
        self.wsi = wsi
        self.kind = kind
        self.maxMessageBytes = maxMessageBytes
    }

    func enqueue(_ payload: [UInt8], binary: Bool, onWritten: (@Sendable (Bool) -> Void)?) {
        var bytes = [UInt8](repeating: 0, count: Int(clws_pre))
        bytes.append(contentsOf: payload)
        queue.append(Outgoing(bytes: bytes, binary: binary, onWritten: onWritten))
        queuedBytes += payload.count
        queuedTotal?.bytes += payload.count
        lws_callback_on_writable(wsi)
    }

    /// Tells everyone waiting on queued frames that they will not be written.
    func failQueue() {
        for o in queue[head...] { o.onWritten?(false) }
        queue = []
        head = 0
        queuedTotal?.bytes -= queuedBytes
        queuedBytes = 0
    }

    /// Asks for a close with `code` once writable; a peer that never reads is cut off after 10 s anyway.
    func requestClose(code: Int, reason: String) {
        guard closeCode == nil else { return }
        closeCode = code
        closeReason = reason
        if code != 1001 { failQueue() }
        lws_callback_on_writable(wsi)
        lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, 10)
    }

    /// Closes from inside a callback: sets the close frame and returns the -1 lws expects.
    func closeNow(code: Int, reason: String) -> Int32 {
        var r = Array(reason.utf8.prefix(120))
        lws_close_reason(wsi, lws_close_status(rawValue: UInt32(code)), &r, r.count)
        return -1
    }

    /// Writes queued frames while the socket takes them. Returns -1 to close.
    func writeFrames() -> Int32 {
        let pre = Int(clws_pre)
        while head < queue.count {
            if lws_send_pipe_choked(wsi) != 0 {
                lws_callback_on_writable(wsi)
                return 0
            }
            let count = queue[head].bytes.count - pre
            let mode = queue[head].binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT
            let written = queue[head].bytes.withUnsafeMutableBufferPointer { b in
                lws_write(wsi, b.baseAddress! + pre, count, mode)
            }
            let item = queue[head]
            queue[head].bytes = []
            head += 1
            queuedBytes -= count
            queuedTotal?.bytes -= count
            if written < count {
                item.onWritten?(false)
                return -1
            }
            item.onWritten?(true)
        }
        queue.removeAll(keepingCapacity: queue.count < 1024)
        head = 0
        if let closeCode { return closeNow(code: closeCode, reason: closeReason) }
        return 0
    }

    /// Writes the whole HTTP response. Returns -1 when the connection should close.
    func writeHTTPResponse() -> Int32 {
        guard let response else { return 0 }
        self.response = nil
        answered = true
        let pre = Int(clws_pre)
        var headerBuffer = [UInt8](repeating: 0, count: pre + 2048)
        let ok: Bool = headerBuffer.withUnsafeMutableBufferPointer { b in
            let start = b.baseAddress! + pre
            let end = b.baseAddress! + b.count
            var p: UnsafeMutablePointer<UInt8>? = start
            guard lws_add_http_common_headers(wsi, UInt32(response.status), response.contentType,
                                              lws_filepos_t(response.body.count), &p, end) == 0 else { return false }
            var headers = response.headers
            if closeAfterResponse { headers.append(("connection", "close")) }
            for (name, value) in headers {
                // The name is a C string (lws reads to its NUL); the value goes with its length.
                let n = Array((name.lowercased() + ":").utf8) + [0], v = Array(value.utf8)
                if lws_add_http_header_by_name(wsi, n, v, Int32(v.count), &p, end) != 0 { return false }
            }
            return lws_finalize_write_http_header(wsi, start, &p, end) == 0
        }
        guard ok else { return -1 }
        if headersOnly {
            // The Content-Length is the GET's; no body follows it.
            if closeAfterResponse { return -1 }
            return lws_http_transaction_completed(wsi) != 0 ? -1 : 0
        }
        var body = [UInt8](repeating: 0, count: pre)
        body.append(contentsOf: response.body)
        let count = response.body.count
        let written = body.withUnsafeMutableBufferPointer { b in
            lws_write(wsi, b.baseAddress! + pre, count, LWS_WRITE_HTTP_FINAL)
        }
        if written < count || closeAfterResponse { return -1 }
        return lws_http_transaction_completed(wsi) != 0 ? -1 : 0
    }
}
