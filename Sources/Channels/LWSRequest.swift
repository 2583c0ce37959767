internal import CLibWebSockets

/// What a request's headers say, read from libwebsockets (service thread: a `wsi` is valid only in its callbacks).
enum LWSRequest {
    static func header(_ wsi: OpaquePointer, _ token: lws_token_indexes) -> String? {
        let n = Int(lws_hdr_total_length(wsi, token))
        guard n > 0 else { return nil }
        var buffer = [CChar](repeating: 0, count: n + 1)
        guard lws_hdr_copy(wsi, &buffer, Int32(n + 1), token) >= 0 else { return nil }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    static func method(_ wsi: OpaquePointer) -> String {
        let methods: [(lws_token_indexes, String)] = [
            (WSI_TOKEN_GET_URI, "GET"), (WSI_TOKEN_POST_URI, "POST"), (WSI_TOKEN_PUT_URI, "PUT"),
            (WSI_TOKEN_PATCH_URI, "PATCH"), (WSI_TOKEN_DELETE_URI, "DELETE"), (WSI_TOKEN_OPTIONS_URI, "OPTIONS"),
            (WSI_TOKEN_HEAD_URI, "HEAD"),
        ]
        return methods.first { lws_hdr_total_length(wsi, $0.0) > 0 }?.1 ?? "GET"
    }

    /// The path as requested (lws has already taken the query off).
    static func path(_ wsi: OpaquePointer) -> String { header(wsi, WSI_TOKEN_GET_URI) ?? "/" }

    static func query(_ wsi: OpaquePointer) -> [String: String] {
        var result: [String: String] = [:]
        var buffer = [CChar](repeating: 0, count: 16 * 1024 + 1)
        var index: Int32 = 0
        while lws_hdr_copy_fragment(wsi, &buffer, Int32(buffer.count), WSI_TOKEN_HTTP_URI_ARGS, index) > 0 {
            let fragment = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if let eq = fragment.firstIndex(of: "=") {
                result[String(fragment[..<eq])] = String(fragment[fragment.index(after: eq)...])
            } else {
                result[fragment] = ""
            }
            index += 1
        }
        return result
    }

    /// The headers the handlers read, by lowercased name.
    static func headers(_ wsi: OpaquePointer) -> [String: String] {
        let wanted: [(lws_token_indexes, String)] = [
            (WSI_TOKEN_HTTP_AUTHORIZATION, "authorization"), (WSI_TOKEN_HTTP_CONTENT_TYPE, "content-type"),
            (WSI_TOKEN_HTTP_CONTENT_LENGTH, "content-length"), (WSI_TOKEN_HTTP_USER_AGENT, "user-agent"),
            (WSI_TOKEN_HTTP_ACCEPT, "accept"), (WSI_TOKEN_HOST, "host"),
            (WSI_TOKEN_HTTP_TRANSFER_ENCODING, "transfer-encoding"), (WSI_TOKEN_X_FORWARDED_FOR, "x-forwarded-for"),
            (WSI_TOKEN_CONNECTION, "connection"),
            // The operator console: its session cookie, and the origin a browser says the request comes from.
            (WSI_TOKEN_HTTP_COOKIE, "cookie"), (WSI_TOKEN_ORIGIN, "origin"),
        ]
        var result: [String: String] = [:]
        for (token, name) in wanted { if let v = header(wsi, token) { result[name] = v } }
        return result
    }

    /// The client's IP address.
    static func peerAddress(_ wsi: OpaquePointer) -> String {
        var buffer = [CChar](repeating: 0, count: 64)
        guard lws_get_peer_simple(wsi, &buffer, buffer.count) != nil else { return "" }
        return String(cString: buffer)
    }

    /// The common name of the client's certificate (mutual TLS).
    static func peerSubject(_ wsi: OpaquePointer) -> String? {
        let size = MemoryLayout<lws_tls_cert_info_results>.size + 256
        let raw = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 8)
        defer { raw.deallocate() }
        let results = raw.bindMemory(to: lws_tls_cert_info_results.self, capacity: 1)
        guard lws_tls_peer_cert_info(wsi, LWS_TLS_CERT_INFO_COMMON_NAME, results, 256) == 0 else { return nil }
        return withUnsafePointer(to: &results.pointee.ns.name) {
            $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
        }
    }
}
