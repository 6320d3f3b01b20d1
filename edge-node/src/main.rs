//! `hms-edge`: the appliance binary; everything it does is in
//! [`edge_node::cli`].

fn main() -> std::process::ExitCode {
    edge_node::cli::main()
}
