fn main() -> std::process::ExitCode {
    stockshift::cli::main()
}
