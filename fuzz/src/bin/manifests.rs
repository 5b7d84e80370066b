//! AFL++ binary of `remora_fuzz::manifests`.
fn main() {
    afl::fuzz!(|data: &[u8]| remora_fuzz::manifests(data));
}
