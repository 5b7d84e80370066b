//! The regex limit the control plane validates against and proxies enforce: one flag, the
//! same for every command that validates routes or writes a bootstrap.

use remora_api::ValidationSettings;

#[derive(clap::Args, Clone, Copy, Debug)]
pub struct RegexLimit {
    /// The largest RE2 program a route's regex may compile to. A route with a larger one is
    /// refused with the field at fault, and every proxy's bootstrap sets the same limit
    /// (Envoy's `re2.max_program_size.error_level`). A proxy keeps the limit it started
    /// with: raise it, then restart the meshed pods, before routes rely on it.
    #[arg(
        long = "max-regex-program-size",
        default_value_t = remora_re2::DEFAULT_MAX_PROGRAM_SIZE,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_regex_program_size: u32,
}

impl RegexLimit {
    /// What validation takes from it.
    pub fn validation(self) -> ValidationSettings {
        ValidationSettings {
            max_regex_program_size: self.max_regex_program_size,
        }
    }
}
