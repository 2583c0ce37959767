// The wire codec on the log path, printed, never asserted: decoding and encoding one `run:log` frame of 5,000
// lines as the worker sends them, against Foundation's JSONSerialization on the same bytes in the same run.
// Run: swift run -c release bench-json [lines] [rounds]
import Channels
import Foundation

let args = CommandLine.arguments.dropFirst().compactMap { Int($0) }
let lines = args.count > 0 ? args[0] : 5000
let rounds = args.count > 1 ? args[1] : 40

let logs = JSON.array((1...lines).map { i in
    ["message": [.string("line \(i) of the step's output, as a job prints it")], "level": "info", "source": "JOB",
     "timestamp": .string("1764633600\(String(format: "%06d", i))"), "step_id": "7b6f1c2e-step", "worker_seq": .int(Int64(i))]
})
let frame = PhoenixMessage(joinRef: "3", ref: "17", topic: "run:7b6f1c2e", event: "run:log",
                           payload: ["run_id": "7b6f1c2e", "logs": logs]).encodeText()

func median(_ body: () throws -> Void) rethrows -> Double {
    var samples: [Double] = []
    for _ in 0..<rounds {
        let t = DispatchTime.now().uptimeNanoseconds
        try body()
        samples.append(Double(DispatchTime.now().uptimeNanoseconds - t) / 1e6)
    }
    return samples.sorted()[samples.count / 2]
}

var sink = 0
let decode = try median { sink &+= try PhoenixMessage.decode(text: frame).topic.count }
let foundation = try median {
    sink &+= (try JSONSerialization.jsonObject(with: Data(frame)) as? [Any])?.count ?? 0
}
let message = try PhoenixMessage.decode(text: frame)
let encode = median { sink &+= message.encodeText().count }
print("one run:log frame: \(lines) lines, \(frame.count) bytes; median of \(rounds)")
print(String(format: "decode  %8.2f ms  %9.0f lines/s   Foundation JSONSerialization %8.2f ms (ours / Foundation %.2f)",
             decode, Double(lines) / decode * 1000, foundation, decode / foundation))
print(String(format: "encode  %8.2f ms  %9.0f lines/s", encode, Double(lines) / encode * 1000))
if sink == 42 { print("") }
