//! Every service binary answers `--help` and `--version`, and refuses arguments it does not
//! take, before it starts any work (clap).

/// Parse the command line of a service that takes no arguments: prints help or the version
/// and exits for `--help`/`--version`, exits with a usage error for anything else.
pub fn service(name: &'static str, about: &'static str) {
    clap::Command::new(name)
        .about(about)
        .version(env!("CARGO_PKG_VERSION"))
        .after_help(
            "Settings come from config/defaults.toml and the profile's file (SHOP_PROFILE), then etcd, then \
             SHOP_* environment variables; see the README's configuration section.",
        )
        .get_matches();
}
