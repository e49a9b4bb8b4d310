#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    akgate::cli::main()
}
