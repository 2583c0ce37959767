import ArgumentParser
import JWT

/// Makes the keys Lightning and its workers share (PROTOCOL.md section 8), like Lightning's
/// `mix lightning.gen_worker_keys`.
struct GenWorkerKeys: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gen-worker-keys",
        abstract: "Generate the RSA key pair for attempt tokens and the shared worker secret.",
        discussion: """
            Prints ATTEMPTS_PRIVATE_KEY, WORKER_SECRET and LIGHTNING_PUBLIC_KEY (base64, as the environment \
            variables take them). Lightning needs the first two; workers need the last two.
            With --out DIR it also writes DIR/attempts_private.pem, DIR/attempts_public.pem and \
            DIR/worker_secret, each mode 0600.
            """)

    @Option(name: .long, help: "Also write the key files into this directory (created with mode 0700).")
    var out: String?

    @Flag(name: .long, help: "Replace existing key files in --out.")
    var force = false

    @Option(name: .long, help: "RSA key size: 2048, 3072 or 4096.")
    var bits = 2048

    func validate() throws {
        if bits < 2048 {
            throw ValidationError("--bits \(bits) is too weak: RSA keys must have at least 2048 bits (2048, 3072 or 4096)")
        }
        if !RSAKeyPair.allowedBits.contains(bits) {
            throw ValidationError("--bits must be 2048, 3072 or 4096, not \(bits)")
        }
    }

    func run() throws {
        let keys = try WorkerKeySet.generate(bits: bits)
        if let out {
            // A KeyFileError (e.g. refusing to overwrite) is printed as "Error: ..." with exit status 1.
            let paths = try keys.write(to: out, force: force)
            print(keys.environmentText)
            print("")
            print("# Wrote \(paths.joined(separator: ", ")) (mode 0600).")
        } else {
            print(keys.environmentText)
        }
    }
}

GenWorkerKeys.main()
