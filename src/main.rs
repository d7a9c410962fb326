fn main() -> std::process::ExitCode {
    sendtime::cli::main()
}
