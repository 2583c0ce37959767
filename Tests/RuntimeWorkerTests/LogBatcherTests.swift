import Channels
import Foundation
import LightningProtocol
import Testing
@testable import RuntimeWorker

/// How the worker cuts a step's lines into `run:log` batches.
@Suite("Log batches")
struct LogBatcherTests {
    func batcher(_ sink: Recorder) -> LogBatcher {
        LogBatcher(attemptID: "a1", events: sink, scrubber: CredentialScrubber(credentialBodies: []), maxBytes: 100_000_000)
    }

    /// The encoded size of each `run:log` payload sent, and every line's `worker_seq` in the order sent.
    func sent(_ sink: Recorder) -> (sizes: [Int], lines: Int, seqs: [Int]) {
        let batches = sink.payloads("run:log")
        let sizes = batches.map { $0.encoded().count }
        let logs = batches.flatMap { $0["logs"]?.arrayValue ?? [] }
        return (sizes, logs.count, logs.compactMap { $0["worker_seq"]?.intValue }.map { Int($0) })
    }

    @Test("lines of 900 KB: batches stay near 2 MB, far under a server's message limit (11 MB for ours until now), every line sent once in order")
    func bigLines() async {
        let sink = Recorder()
        let logs = batcher(sink)
        let line = String(repeating: "x", count: 900_000)
        logs.add(Array(repeating: (StepStream.stdout, line), count: 30), stepID: "s1", control: StepControl())
        await logs.flush()
        let (sizes, count, seqs) = sent(sink)
        #expect(count == 30 && seqs == Array(1...30))
        #expect(sizes.allSatisfy { $0 <= 2_000_000 + 1_000_000 }, "\(sizes)")
        #expect(sizes.count >= 10, "\(sizes.count) batches")
    }

    @Test("one line over the batch size still goes, alone")
    func hugeLine() async {
        let sink = Recorder()
        let logs = batcher(sink)
        logs.add([(.stdout, "before"), (.stdout, String(repeating: "y", count: 2_500_000)), (.stdout, "after")], stepID: "s1",
                 control: StepControl())
        await logs.flush()
        let (_, count, seqs) = sent(sink)
        #expect(count == 3 && seqs == [1, 2, 3])
        #expect(sink.payloads("run:log").contains { $0["logs"]?.arrayValue?.count == 1 && $0.encoded().count > 2_500_000 })
    }

    @Test("many small lines: batches of at most 10,000 lines")
    func smallLines() async {
        let sink = Recorder()
        let logs = batcher(sink)
        for chunk in 0..<25 {
            logs.add((0..<1000).map { (StepStream.stdout, "line \(chunk * 1000 + $0)") }, stepID: "s1", control: StepControl())
        }
        await logs.flush()
        let batches = sink.payloads("run:log").map { $0["logs"]?.arrayValue?.count ?? 0 }
        #expect(batches.reduce(0, +) == 25_000 && batches.allSatisfy { $0 <= 10_000 }, "\(batches)")
        #expect(sent(sink).seqs == Array(1...25_000))
    }

    @Test("under a peer's message limit: a line that is over it once escaped goes as a notice with its number, batches stay under it")
    func messageLimit() async {
        let sink = Recorder()
        let limit = 300_000
        let logs = LogBatcher(attemptID: "a1", events: sink, scrubber: CredentialScrubber(credentialBodies: []), maxBytes: 100_000_000,
                              messageLimit: limit)
        // 200,000 quotes: under the limit as text, 400,000 bytes escaped. Then lines that fit, 60 KB each.
        let quotes = String(repeating: "\"", count: 200_000)
        logs.add([(.stdout, "first"), (.stderr, quotes)] + Array(repeating: (StepStream.stdout, String(repeating: "z", count: 60_000)), count: 12),
                 stepID: "s1", control: StepControl())
        await logs.flush()
        let (sizes, count, seqs) = sent(sink)
        #expect(count == 14 && seqs == Array(1...14))
        #expect(sizes.allSatisfy { $0 <= limit }, "\(sizes)")
        let lines = sink.payloads("run:log").flatMap { $0["logs"]?.arrayValue ?? [] }
        let notice = lines[1]
        #expect(notice["level"] == "error")
        #expect(notice["message"]?[0]?.stringValue?.contains("a log line of 200000 bytes was removed") == true, "\(notice)")
        #expect(lines.dropFirst(2).allSatisfy { $0["message"]?[0]?.stringValue?.utf8.count == 60_000 })
    }
}
